//! Server → client throughput over loopback TCP, CRC-verified at the
//! receiver, against a raw loopback socket copying the same bytes.
//!
//! `cargo bench --bench loopback --features net,synth`
//!
//! Cases (each `SECONDS` long, all in one run so the ratios compare):
//! - raw: one thread `write_all`s the encoded stream, another reads it (no parsing);
//! - 1 client: the reference server publishing as fast as its publisher
//!   queue allows, one receiver parsing and checking every frame;
//! - 16 and 64 clients: aggregate frames/s delivered (one receiver thread
//!   polling every connection with mio);
//! - 16 clients + 1 stalled: the fastest and slowest live client while one
//!   client never reads.
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

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use tickwire::net::{Connection, Server, ServerConfig, ServerHandle};
use tickwire::parse::Event;
use tickwire::synth::Feed;
use tickwire::{encode, Payload, Sequencer};

const SECONDS: f64 = 3.0;
const BATCH: usize = 4096;

/// Pre-generated data batches, cycled by the publisher.
fn batches() -> Vec<Vec<(u64, Payload)>> {
    let mut feed = Feed::new(9, 500);
    (0..64)
        .map(|_| {
            let mut b = Vec::with_capacity(BATCH);
            while b.len() < BATCH {
                let p = feed.next_payload();
                if p.msg_type().is_data() {
                    b.push((1_700_000_000_000_000_000, p));
                }
            }
            b
        })
        .collect()
}

fn avg_frame_len(batches: &[Vec<(u64, Payload)>]) -> f64 {
    let (n, bytes) = batches
        .iter()
        .flatten()
        .fold((0usize, 0usize), |(n, b), (_, p)| {
            (n + 1, b + p.frame_len())
        });
    bytes as f64 / n as f64
}

/// Raw loopback: bytes/s of `write_all` → `read`, no parsing.
fn raw_loopback(stream_bytes: &[u8]) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let data = stream_bytes.to_vec();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(&data).is_err() {
                    break;
                }
            }
        })
    };
    let (mut s, _) = listener.accept().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let started = Instant::now();
    let mut total = 0u64;
    while started.elapsed().as_secs_f64() < SECONDS {
        total += s.read(&mut buf).unwrap() as u64;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(s);
    writer.join().unwrap();
    rate
}

fn start_server(stalled_safe: bool) -> ServerHandle {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        retain: 1 << 20,
        publish_queue: 64,
        slow_threshold: if stalled_safe { 8 << 20 } else { 64 << 20 },
        client_queue: if stalled_safe { 16 << 20 } else { 128 << 20 },
        ..ServerConfig::default()
    };
    Server::bind(config).unwrap().spawn().unwrap()
}

/// Publishes as fast as the server's queue takes batches, until `stop`.
fn run_publisher(server: &ServerHandle, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    let publisher = server.publisher();
    let pool = batches();
    thread::spawn(move || {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            if publisher.publish(pool[i % pool.len()].clone()).is_err() {
                break;
            }
            i += 1;
        }
    })
}

fn login(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut frame = [0u8; 24];
    encode(&Payload::Login, 0, 0, &mut frame).unwrap();
    s.write_all(&frame).unwrap();
    s
}

/// `clients` receivers on one mio thread (plus `stalled` that never read);
/// returns each live client's checked data frames per second.
fn fan_out(clients: usize, stalled: usize) -> Vec<f64> {
    let server = start_server(stalled > 0);
    let addr = server.local_addr();
    let _stalled: Vec<TcpStream> = (0..stalled).map(|_| login(addr)).collect();
    let mut poll = Poll::new().unwrap();
    let mut conns: Vec<Connection> = (0..clients)
        .map(|i| {
            let s = login(addr);
            s.set_nonblocking(true).unwrap();
            let mut c = Connection::new(mio::net::TcpStream::from_std(s), 4 << 20, 1024);
            poll.registry()
                .register(c.stream_mut(), Token(i), Interest::READABLE)
                .unwrap();
            c
        })
        .collect();
    // Wait for every login before the clock starts.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().clients < (clients + stalled) as u64 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = run_publisher(&server, stop.clone());
    let mut frames = vec![0u64; clients];
    let mut bad = 0u64;
    let mut events = Events::with_capacity(1024);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < SECONDS {
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        for event in events.iter() {
            let i = event.token().0;
            let count = &mut frames[i];
            conns[i]
                .read_ready(|e| match e {
                    Event::Frame(m) if m.is_data() => *count += 1,
                    Event::Discarded(_) | Event::Gap(_) => bad += 1,
                    _ => {}
                })
                .unwrap();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(conns);
    let _ = server.shutdown();
    publisher.join().unwrap();
    if stalled == 0 {
        assert_eq!(bad, 0, "damage or gaps on loopback");
    }
    frames.iter().map(|&n| n as f64 / elapsed).collect()
}

fn main() {
    let pool = batches();
    let avg = avg_frame_len(&pool);
    let mut seq = Sequencer::new();
    let mut encoded = vec![0u8; 64 * BATCH * 44];
    let mut at = 0;
    for b in &pool {
        at += seq.encode_batch(b, &mut encoded[at..]).bytes;
    }
    encoded.truncate(at);

    println!(
        "loopback, {SECONDS} s per case, average frame {avg:.1} bytes, CRC-32C backend {}",
        tickwire::checksum::backend()
    );
    let raw = raw_loopback(&encoded);
    let raw_frames = raw / avg;
    println!(
        "{:<52} {:>12} {:>9} {:>9}",
        "case", "Mframes/s", "GB/s", "vs raw"
    );
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
    let one = fan_out(1, 0);
    row("server -> 1 client, CRC-checked", one[0]);
    for n in [16, 64] {
        let rates = fan_out(n, 0);
        row(
            &format!("server -> {n} clients, aggregate"),
            rates.iter().sum(),
        );
    }
    let rates = fan_out(16, 1);
    let fastest = rates.iter().cloned().fold(0.0, f64::max);
    let slowest = rates.iter().cloned().fold(f64::MAX, f64::min);
    row("server -> 16 clients + 1 stalled, fastest client", fastest);
    row(
        "server -> 16 clients + 1 stalled, slowest live client",
        slowest,
    );
}
