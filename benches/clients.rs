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

/// From 5K msg/s, doubling until not every client keeps up (or `max_rate`).
fn rates(clients: usize, threads: usize, seconds: f64, max_rate: u64) {
    let us = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut rate = 5_000;
    loop {
        let m = measure::many_clients(clients, rate, seconds, threads);
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
