//! Many clients: 1,000 live clients of the reference server at 5K msg/s
//! (every client must receive every frame; p99 delivery latency and login
//! latency reported), then the rate doubled until they no longer all keep
//! up; with the server on one event loop, then on two
//! (`ServerConfig::threads`).
//!
//! `cargo bench --bench clients --features cli` (needs about 2,100 file
//! descriptors: `ulimit -n`; `TICKWIRE_BENCH_CLIENTS=N` for another count,
//! `TICKWIRE_BENCH_THREADS=1` for one server-loop count only,
//! `TICKWIRE_BENCH_MAX_RATE=5000` to stop at that rate,
//! `TICKWIRE_BENCH_SECONDS=S` to measure longer than 3 s per rate).
//!
//! Keeping up: every client received every frame from its first one to the
//! last published, with no gap, within a second of the feed stopping.
//!
//! First, issue 22's target at 5K msg/s: the server (one event loop)
//! against the raw fan-out floor, alternately (`TICKWIRE_BENCH_ROUNDS`
//! rounds each, 3 by default): the same paced feed, encoded on its thread
//! and handed over a channel to one thread that writes each batch (those
//! waiting, together) to the same 1,000 non-blocking sockets in a plain
//! loop, read by the same receivers, measured the same way
//! (`measure::raw_fan_out`). Printed: each round's p50/p99 of both, the
//! median p99 ratio (target: at most 1.25x) and whether every client got
//! every frame, and the CPU time of the threads that fan out (feed and
//! writer; the server's loop and its publishing thread) per message and
//! client, less sensitive to the machine's other load than the latencies. Arguments: `pairs` for only that part, `table`
//! for only the rates table.
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

const CLIENTS: usize = 1000;
const SECONDS: f64 = 3.0;

/// A number from the environment, if set and valid.
fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    let clients = env("TICKWIRE_BENCH_CLIENTS").unwrap_or(CLIENTS);
    let seconds = env("TICKWIRE_BENCH_SECONDS").unwrap_or(SECONDS);
    let max_rate = env("TICKWIRE_BENCH_MAX_RATE").unwrap_or(1_000_000);
    let loops: Vec<usize> = env("TICKWIRE_BENCH_THREADS").map_or(vec![1, 2], |t| vec![t]);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only = |what: &str| {
        !args.iter().any(|a| a == "pairs" || a == "table") || args.iter().any(|a| a == what)
    };
    if only("pairs") {
        pairs(clients, seconds);
    }
    if !only("table") {
        return;
    }
    println!(
        "{clients} live clients over loopback, {seconds} s per rate once all are logged in (logins happen under the feed)"
    );
    println!(
        "{:>7} {:>10} {:>8} {:>12} {:>9} {:>9} {:>9} {:>11} {:>11} {:>6}",
        "threads",
        "msg/s",
        "kept up",
        "slowest/s",
        "p50 µs",
        "p99 µs",
        "max µs",
        "login p50",
        "login p99",
        "slow"
    );
    for threads in loops {
        rates(clients, threads, seconds, max_rate);
    }
}

/// The server (one loop) and the raw fan-out floor at 5K msg/s,
/// alternately; the median p99 ratio.
fn pairs(clients: usize, seconds: f64) {
    let rounds: usize = env("TICKWIRE_BENCH_ROUNDS").unwrap_or(3);
    let rate = 5_000;
    let us = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{clients} clients at {rate} msg/s: the server (1 loop) and a raw fan-out loop over the same sockets, alternately, {rounds} rounds"
    );
    println!(
        "{:>6} {:>22} {:>22} {:>14} {:>16} {:>22}",
        "round",
        "raw p50/p99 µs",
        "server p50/p99 µs",
        "p99 ratio",
        "kept up raw/srv",
        "fan-out CPU raw/srv"
    );
    let mut ratios = Vec::new();
    let mut all_kept_up = true;
    for round in 0..rounds {
        let raw = || measure::many_clients(clients, rate, seconds, measure::FanOut::Raw);
        let server = || measure::many_clients(clients, rate, seconds, measure::FanOut::Server(1));
        let (r, s) = if round % 2 == 0 {
            let r = raw();
            (r, server())
        } else {
            let s = server();
            (raw(), s)
        };
        let ratio = us(&s.latency, 0.99) / us(&r.latency, 0.99);
        all_kept_up &= s.kept_up == clients;
        println!(
            "{:>6} {:>22} {:>22} {:>13.2}x {:>16} {:>22}",
            round + 1,
            format!("{:.0}/{:.0}", us(&r.latency, 0.5), us(&r.latency, 0.99)),
            format!("{:.0}/{:.0}", us(&s.latency, 0.5), us(&s.latency, 0.99)),
            ratio,
            format!("{}/{}", r.kept_up, s.kept_up),
            format!("{:.0}/{:.0} ns", r.fan_out_cpu, s.fan_out_cpu)
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    let median = (ratios[(ratios.len() - 1) / 2] + ratios[ratios.len() / 2]) / 2.0;
    println!(
        "server p99 / raw fan-out p99, median of {rounds} same-run ratios: {median:.2}x (target <= 1.25x: {}); every client every frame from the server: {}",
        if median <= 1.25 { "met" } else { "missed" },
        if all_kept_up { "yes" } else { "no" }
    );
}

/// From 5K msg/s, doubling until not every client keeps up (or `max_rate`).
fn rates(clients: usize, threads: usize, seconds: f64, max_rate: u64) {
    let us = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut rate = 5_000;
    loop {
        let m = measure::many_clients(clients, rate, seconds, measure::FanOut::Server(threads));
        println!(
            "{:>7} {:>10} {:>8} {:>12.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}µs {:>9.0}µs {:>6}",
            threads,
            rate,
            m.kept_up,
            m.slowest_rate,
            us(&m.latency, 0.5),
            us(&m.latency, 0.99),
            m.latency.max() as f64 / 1000.0,
            us(&m.login, 0.5),
            us(&m.login, 0.99),
            m.slow_marks
        );
        if m.kept_up < clients || rate >= max_rate {
            break;
        }
        rate *= 2;
    }
}
