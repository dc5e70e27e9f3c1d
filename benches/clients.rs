//! Many clients: 1,000 live clients of the reference server at 5K msg/s
//! (every client must receive every frame; p99 delivery latency and login
//! latency reported), then the rate doubled until they no longer all keep
//! up; with the server on one event loop, then on two
//! (`ServerConfig::threads`).
//!
//! `cargo bench --bench clients --features cli` (needs about 2,100 file
//! descriptors: `ulimit -n`; `TICKWIRE_BENCH_CLIENTS=N` for another count).
//!
//! Keeping up: every client received every frame from its first one to the
//! last published, with no gap, within a second of the feed stopping.
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

fn main() {
    let clients = std::env::var("TICKWIRE_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CLIENTS);
    println!(
        "{clients} live clients over loopback, {SECONDS} s per rate once all are logged in (logins happen under the feed)"
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
    for threads in [1, 2] {
        rates(clients, threads);
    }
}

/// From 5K msg/s, doubling until not every client keeps up.
fn rates(clients: usize, threads: usize) {
    let us = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut rate = 5_000;
    loop {
        let m = measure::many_clients(clients, rate, SECONDS, threads);
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
        if m.kept_up < clients || rate >= 1_000_000 {
            break;
        }
        rate *= 2;
    }
}
