//! Server → client throughput over loopback TCP, CRC-verified at the
//! receiver, against a raw loopback socket copying the same bytes.
//!
//! `cargo bench --bench loopback --features cli`
//!
//! Cases (each `SECONDS` long, all in one run so the ratios compare):
//! - raw: one thread `write_all`s the encoded stream, another reads it (no parsing);
//! - 1 client: the reference server publishing as fast as its publisher
//!   queue allows, one receiver parsing and checking every frame;
//! - 16 and 64 clients: aggregate frames/s delivered (one receiver thread
//!   polling every connection with mio);
//! - 16 clients + 1 stalled: the fastest and slowest live client while one
//!   client never reads;
//! - reference Client vs Connection: one receiver that is the reference
//!   `net::Client` (its session's rules on every frame) against one bare
//!   mio `Connection` receiver, alternating, `CLIENT_ROUNDS` rounds each;
//!   prints each round's ratio and the median ratio (issue 22's target:
//!   at least 0.85x).
//!
//! Arguments select cases by name: `cargo bench --bench loopback -- 16`
//! runs the cases whose name contains "16" (the raw case always runs: the
//! ratios are to it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

#[path = "../src/bin/tickwire/measure.rs"]
mod measure;

const SECONDS: f64 = 3.0;
/// Rounds of the reference Client against a bare Connection.
const CLIENT_ROUNDS: usize = 5;

/// `TICKWIRE_BENCH_SECONDS` / `TICKWIRE_BENCH_ROUNDS` if set (for a short
/// run under a profiler), else the defaults.
fn seconds() -> f64 {
    std::env::var("TICKWIRE_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SECONDS)
}

fn client_rounds() -> usize {
    std::env::var("TICKWIRE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CLIENT_ROUNDS)
}

fn main() {
    let secs = seconds();
    let (stream, batch) = measure::synthetic_stream(16 << 20, 9);
    let avg = stream.len() as f64 / batch.len() as f64;
    println!(
        "loopback, {secs} s per case, average frame {avg:.1} bytes, CRC-32C backend {}",
        tickwire::checksum::backend()
    );
    let raw_frames = measure::raw_loopback(&stream, secs) / avg;
    println!(
        "{:<52} {:>12} {:>9} {:>9}",
        "case", "Mframes/s", "GB/s", "vs raw"
    );
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let row = |name: &str, frames: f64| {
        println!(
            "{:<52} {:>12.1} {:>9.2} {:>8.2}x",
            name,
            frames / 1e6,
            frames * avg / 1e9,
            frames / raw_frames
        );
    };
    row("raw loopback socket, same bytes (no parsing)", raw_frames);
    if wanted("server -> 1 client, CRC-checked") {
        row(
            "server -> 1 client, CRC-checked",
            measure::fan_out(1, 0, secs, false)[0],
        );
    }
    if wanted("server -> 1 client, CRC-checked, the loop writes") {
        row(
            "server -> 1 client, CRC-checked, the loop writes",
            measure::fan_out(1, 0, secs, true)[0],
        );
    }
    for n in [16, 64] {
        let name = format!("server -> {n} clients, aggregate");
        if wanted(&name) {
            row(&name, measure::fan_out(n, 0, secs, false).iter().sum());
        }
    }
    if wanted("reference Client vs Connection") {
        client_vs_connection(&row);
    }
    if !wanted("server -> 16 clients + 1 stalled") {
        return;
    }
    let rates = measure::fan_out(16, 1, secs, false);
    row(
        "server -> 16 clients + 1 stalled, fastest client",
        rates.iter().copied().fold(0.0, f64::max),
    );
    row(
        "server -> 16 clients + 1 stalled, slowest live client",
        rates.iter().copied().fold(f64::MAX, f64::min),
    );
}

/// The reference `Client` against a bare `Connection` receiver, one client
/// each, alternating (which goes first alternates too): each round's pair,
/// ratio and the receiving thread's CPU time per frame (less sensitive to
/// the machine's other load than the rates), then the medians and the
/// median ratio.
fn client_vs_connection(row: &dyn Fn(&str, f64)) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
    };
    let (mut clients, mut conns, mut ratios, mut cpu_ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (rounds, seconds) = (client_rounds(), seconds());
    for round in 0..rounds {
        let connection = || {
            let (rates, cpu) = measure::fan_out_cpu(1, 0, seconds, false);
            (rates[0], cpu)
        };
        let ((client, client_cpu), (conn, conn_cpu)) = if round % 2 == 0 {
            let c = measure::fan_out_client(seconds);
            (c, connection())
        } else {
            let n = connection();
            (measure::fan_out_client(seconds), n)
        };
        println!(
            "  round {}: reference Client {:.3}, Connection {:.3} Mframes/s: {:.2}x; receiver CPU {:.1} vs {:.1} ns/frame: {:.2}x",
            round + 1,
            client / 1e6,
            conn / 1e6,
            client / conn,
            client_cpu,
            conn_cpu,
            client_cpu / conn_cpu
        );
        clients.push(client);
        conns.push(conn);
        ratios.push(client / conn);
        cpu_ratios.push(client_cpu / conn_cpu);
    }
    row("server -> 1 reference Client (median)", median(clients));
    row("server -> 1 Connection receiver (median)", median(conns));
    println!(
        "reference Client / Connection, median of {rounds} same-run ratios: {:.2}x (target >= 0.85x); receiver CPU per frame {:.2}x",
        median(ratios),
        median(cpu_ratios)
    );
}
