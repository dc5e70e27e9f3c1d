//! Latency from a frame's timestamp (taken when the publisher hands the
//! message to the server) to the client's parse of it, over loopback, at the
//! design rate of 500K msg/s; then the same with another client stalled.
//!
//! `cargo bench --bench latency --features net,synth`
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

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tickwire::net::client::{Client, ClientConfig, ClientEvent};
use tickwire::net::server::unix_nanos;
use tickwire::net::{Server, ServerConfig};
use tickwire::synth::Feed;
use tickwire::{encode, Payload};

const RATE: u64 = 500_000;
const SECONDS: u64 = 5;

fn run(stalled: bool, spin: bool) -> (Histogram<u64>, u64) {
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    let addr = server.local_addr();
    let _stalled = stalled.then(|| {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut login = [0u8; 24];
        encode(&Payload::Login, 0, 0, &mut login).unwrap();
        s.write_all(&login).unwrap();
        s
    });
    let mut client = Client::new(ClientConfig::new(addr)).unwrap();
    let mut logged_in = false;
    while !logged_in {
        client
            .poll(Some(Duration::from_millis(10)), |e| {
                logged_in |= matches!(e, ClientEvent::LoggedIn { .. })
            })
            .unwrap();
    }
    // Publisher: one batch per 100 µs tick, stamped when handed over.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let publisher = server.publisher();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut feed = Feed::new(5, 500);
            let started = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = started.elapsed().as_nanos() as u64 * RATE / 1_000_000_000;
                if due > sent {
                    let now = unix_nanos();
                    let mut batch = Vec::with_capacity((due - sent) as usize);
                    while (batch.len() as u64) < due - sent {
                        let p = feed.next_payload();
                        if p.msg_type().is_data() {
                            batch.push((now, p));
                        }
                    }
                    sent = due;
                    publisher.publish(batch).unwrap();
                }
                thread::sleep(Duration::from_micros(100));
            }
        })
    };
    let mut hist = Histogram::<u64>::new_with_bounds(100, 10_000_000_000, 3).unwrap();
    let mut frames = 0u64;
    let warmup = Instant::now() + Duration::from_millis(500);
    let end = warmup + Duration::from_secs(SECONDS);
    let wait = if spin {
        Duration::ZERO
    } else {
        Duration::from_millis(10)
    };
    while Instant::now() < end {
        client
            .poll(Some(wait), |e| {
                if let ClientEvent::Frame(m) = e {
                    if m.is_data() {
                        let now = unix_nanos();
                        if Instant::now() >= warmup {
                            frames += 1;
                            let _ = hist.record(now.saturating_sub(m.timestamp()).max(100));
                        }
                    }
                }
            })
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let _ = server.shutdown();
    (hist, frames)
}

fn main() {
    println!("latency at {RATE} msg/s over loopback, {SECONDS} s after 0.5 s warm-up (timestamp at publish -> client parse)");
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "case", "frames", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
    );
    for (name, stalled, spin) in [
        ("one client", false, false),
        ("one client, another stalled", true, false),
        ("one client, busy-polling", false, true),
        ("busy-polling, another stalled", true, true),
    ] {
        let (h, frames) = run(stalled, spin);
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<34} {:>10} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            name,
            frames,
            us(0.5),
            us(0.99),
            us(0.999),
            h.max() as f64 / 1000.0
        );
    }
}
