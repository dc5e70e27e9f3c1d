//! The tokio driver against the mio one, in the same run.
//!
//! `cargo bench --bench tokio --features tokio,cli`
//!
//! Throughput (each case `SECONDS` long): a server publishing batches of
//! 4096 messages as fast as the slowest receiver allows (at most `WINDOW`
//! frames ahead) to 1 and 16 receivers (one mio thread reading every
//! connection, every CRC checked), for
//! - the mio reference server (`net::Server`);
//! - the tokio server (`tokio::Server`, a 2-worker multi-thread runtime);
//! - a textbook tokio server as the baseline: a `broadcast` channel of one
//!   `Bytes` per frame, each connection task writing through
//!   `FramedWrite<TcpStream, LengthDelimitedCodec>` (`feed` per frame, a
//!   flush when the channel is empty), its receivers parsing the 4-byte
//!   length prefix and checking each frame's CRC.
//!
//! Latency at 500K msg/s from the mio server (publish timestamp to the
//! client's parse): the mio client (`net::Client::poll`) and the tokio
//! client (`tokio::Client`, current-thread runtime).
//!
//! Arguments select cases by name (`-- latency`, `-- 16`).
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

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mio::{Events, Interest, Poll, Token};
use tickwire::net::{unix_nanos, ClientConfig, Connection, LoopOptions, ServerConfig};
use tickwire::parse::Event;
use tickwire::{encode, Message, Payload, Sequencer};
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

const SECONDS: f64 = 3.0;
/// The publisher stays at most this many frames ahead of the slowest receiver.
const WINDOW: u64 = 1 << 20;
const RATE: u64 = 500_000;
/// Latency rounds (mio, then tokio, alternating).
const ROUNDS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Mio,
    Tokio,
    Baseline,
}

type Publish = Box<dyn FnMut(Vec<(u64, Payload)>) -> bool + Send>;

/// A running server of `kind`: its address, a publish function, a clients
/// counter, and how to stop it.
struct Running {
    addr: SocketAddr,
    publish: Option<Publish>,
    stop: Box<dyn FnOnce()>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn server_config() -> ServerConfig {
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        mio: LoopOptions {
            publish_queue: 64, // the mio server's; the tokio server has no queue
            ..LoopOptions::default()
        },
        ..ServerConfig::default()
    };
    config.core.session.slow_threshold = 64 << 20;
    config.core.session.queue_limit = 128 << 20;
    config
}

fn start(kind: Kind) -> Running {
    match kind {
        Kind::Mio => {
            let server = tickwire::net::Server::bind(server_config())
                .unwrap()
                .spawn()
                .unwrap();
            let publisher = server.publisher();
            Running {
                addr: server.local_addr(),
                publish: Some(Box::new(move |batch| publisher.publish(batch).is_ok())),
                stop: Box::new(move || {
                    let _ = server.shutdown();
                }),
            }
        }
        Kind::Tokio => {
            let rt = runtime();
            let server = rt.block_on(async {
                tickwire::tokio::Server::bind(server_config())
                    .await
                    .unwrap()
                    .spawn()
            });
            let publisher = server.publisher();
            Running {
                addr: server.local_addr(),
                publish: Some(Box::new(move |batch| publisher.publish(batch).is_ok())),
                stop: Box::new(move || {
                    rt.block_on(server.shutdown());
                }),
            }
        }
        Kind::Baseline => {
            let rt = runtime();
            let (tx, _) = tokio::sync::broadcast::channel::<Bytes>(1 << 16);
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let addr = listener.local_addr().unwrap();
            let accept_tx = tx.clone();
            rt.spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let mut rx = accept_tx.subscribe();
                    tokio::spawn(async move {
                        use tokio::io::AsyncReadExt;
                        let mut login = [0u8; 24];
                        if socket.read_exact(&mut login).await.is_err() {
                            return;
                        }
                        let _ = socket.set_nodelay(true);
                        let mut sink = FramedWrite::new(socket, LengthDelimitedCodec::new());
                        loop {
                            match rx.recv().await {
                                Ok(frame) => {
                                    if sink.feed(frame).await.is_err() {
                                        return;
                                    }
                                    if rx.is_empty()
                                        && SinkExt::<Bytes>::flush(&mut sink).await.is_err()
                                    {
                                        return;
                                    }
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            });
            let mut sequencer = Sequencer::new();
            Running {
                addr,
                publish: Some(Box::new(move |batch| {
                    for (ts, payload) in batch {
                        let mut frame = [0u8; 44];
                        let n = sequencer.encode(&payload, ts, &mut frame).unwrap();
                        // A full channel overwrites the oldest: lagging
                        // receivers lose frames (the flow control below
                        // keeps them from lagging).
                        let _ = tx.send(Bytes::copy_from_slice(&frame[..n]));
                    }
                    true
                })),
                stop: Box::new(move || drop(rt)),
            }
        }
    }
}

fn login(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut frame = [0u8; 24];
    encode(&Payload::Login, 0, 0, &mut frame).unwrap();
    s.write_all(&frame).unwrap();
    s
}

/// A receiver of the baseline's length-delimited frames: 4-byte big-endian
/// length, then one tickwire frame, CRC-checked.
struct Delimited {
    stream: mio::net::TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Delimited {
    fn read_ready(&mut self, mut on_frame: impl FnMut(Message<'_>)) {
        loop {
            if self.buf.len() - self.end < 64 << 10 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
            while self.end - self.start >= 4 {
                let len =
                    u32::from_be_bytes(self.buf[self.start..self.start + 4].try_into().unwrap())
                        as usize;
                if self.end - self.start < 4 + len {
                    break;
                }
                let frame = &self.buf[self.start + 4..self.start + 4 + len];
                if let Ok((m, _)) = Message::decode(frame) {
                    on_frame(m);
                }
                self.start += 4 + len;
            }
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Conn {
    Tickwire(Connection),
    Delimited(Delimited),
}

/// Data frames per second delivered to each of `clients` receivers.
fn fan_out(kind: Kind, clients: usize, seconds: f64) -> Vec<f64> {
    let mut running = start(kind);
    let addr = running.addr;
    let mut poll = Poll::new().unwrap();
    let mut conns: Vec<Conn> = (0..clients)
        .map(|i| {
            let s = login(addr);
            s.set_nonblocking(true).unwrap();
            let stream = mio::net::TcpStream::from_std(s);
            let mut conn = if kind == Kind::Baseline {
                Conn::Delimited(Delimited {
                    stream,
                    buf: vec![0u8; 4 << 20],
                    start: 0,
                    end: 0,
                })
            } else {
                Conn::Tickwire(Connection::new(stream, 4 << 20, 1024))
            };
            let source = match &mut conn {
                Conn::Tickwire(c) => c.stream_mut(),
                Conn::Delimited(d) => &mut d.stream,
            };
            poll.registry()
                .register(source, Token(i), Interest::READABLE)
                .unwrap();
            conn
        })
        .collect();
    // Every client logged in before publishing starts.
    thread::sleep(Duration::from_millis(300));
    let stop = Arc::new(AtomicBool::new(false));
    let slowest = Arc::new(AtomicU64::new(0));
    let publisher = {
        let mut publish = running.publish.take().unwrap();
        let pool = measure::batches(64, 4096);
        let (stop, slowest) = (stop.clone(), slowest.clone());
        thread::spawn(move || {
            let mut i = 0;
            let mut published = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if published.saturating_sub(slowest.load(Ordering::Relaxed)) > WINDOW {
                    thread::sleep(Duration::from_micros(10));
                    continue;
                }
                let batch = pool[i % pool.len()].clone();
                published += batch.len() as u64;
                if !publish(batch) {
                    break;
                }
                i += 1;
            }
        })
    };
    let mut frames = vec![0u64; clients];
    let mut events = Events::with_capacity(1024);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        for event in events.iter() {
            let i = event.token().0;
            let count = &mut frames[i];
            match &mut conns[i] {
                Conn::Tickwire(c) => {
                    let _ = c.read_ready(|e| {
                        if let Event::Frame(m) = e {
                            if m.is_data() {
                                *count += 1;
                            }
                        }
                    });
                }
                Conn::Delimited(d) => d.read_ready(|m| {
                    if m.is_data() {
                        *count += 1;
                    }
                }),
            }
        }
        slowest.store(frames.iter().copied().min().unwrap_or(0), Ordering::Relaxed);
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(conns);
    let _ = publisher.join();
    (running.stop)();
    frames.iter().map(|&n| n as f64 / elapsed).collect()
}

/// Latency of the tokio client from the mio server at `rate` msg/s.
fn tokio_latency(rate: u64, seconds: f64) -> (hdrhistogram::Histogram<u64>, u64) {
    let server = tickwire::net::Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    let addr = server.local_addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (hist, frames) = rt.block_on(async {
        let mut client = tickwire::tokio::Client::new(ClientConfig::new(addr));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(tickwire::tokio::ClientEvent::LoggedIn { .. })) =
                tokio::time::timeout(Duration::from_millis(100), client.next()).await
            {
                break;
            }
        }
        let publisher = measure::paced_publisher(&server, rate, 5, stop.clone());
        let mut hist = measure::histogram();
        let mut frames = 0u64;
        let warmup = Instant::now() + Duration::from_millis(500);
        let end = warmup + Duration::from_secs_f64(seconds);
        // One timeout for the whole run, not one per event: a `timeout`
        // per event reads the clock and clones the runtime handle for every
        // frame (measured: ~50 ns a frame, several µs at the median frame of
        // a 75-frame batch), which the mio client's loop does not pay.
        let _ = tokio::time::timeout_at(end.into(), async {
            while let Some(event) = client.next().await {
                if let tickwire::tokio::ClientEvent::Frame(f) = event {
                    if f.msg_type().is_data() && Instant::now() >= warmup {
                        frames += 1;
                        let _ = hist.record(unix_nanos().saturating_sub(f.timestamp()).max(100));
                    }
                }
            }
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        let _ = publisher.join();
        (hist, frames)
    });
    let _ = server.shutdown();
    (hist, frames)
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    println!(
        "tokio vs mio, {SECONDS} s per case, CRC-32C backend {}",
        tickwire::checksum::backend()
    );
    println!(
        "{:<44} {:>12} {:>10} {:>12}",
        "case", "Mframes/s", "vs mio", "vs baseline"
    );
    for clients in [1usize, 16] {
        let name = format!("server -> {clients} client(s), aggregate");
        if !wanted(&name) {
            continue;
        }
        let total = |kind| fan_out(kind, clients, SECONDS).iter().sum::<f64>();
        let mio = total(Kind::Mio);
        let tokio = total(Kind::Tokio);
        let baseline = total(Kind::Baseline);
        for (label, rate) in [
            ("mio", mio),
            ("tokio", tokio),
            ("baseline broadcast+LDC", baseline),
        ] {
            println!(
                "{:<44} {:>12.2} {:>9.2}x {:>11.2}x",
                format!("{label}: {clients} client(s)"),
                rate / 1e6,
                rate / mio,
                rate / baseline
            );
        }
    }
    if wanted("latency") {
        println!("latency at {RATE} msg/s from the mio server, {SECONDS} s after 0.5 s warm-up");
        println!(
            "{:<20} {:>10} {:>10} {:>10} {:>10} {:>12}",
            "client", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "frames"
        );
        // Alternating rounds: on a noisy machine one pair says little.
        let mut ratios = Vec::new();
        for round in 1..=ROUNDS {
            let (mio, mio_frames) =
                measure::latency(RATE, SECONDS, measure::LatencyCase::default());
            let (tokio, tokio_frames) = tokio_latency(RATE, SECONDS);
            for (label, h, n) in [
                ("mio client", &mio, mio_frames),
                ("tokio client", &tokio, tokio_frames),
            ] {
                println!(
                    "{:<20} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>12}",
                    format!("{label} #{round}"),
                    h.value_at_quantile(0.5) as f64 / 1e3,
                    h.value_at_quantile(0.99) as f64 / 1e3,
                    h.value_at_quantile(0.999) as f64 / 1e3,
                    h.max() as f64 / 1e3,
                    n
                );
            }
            ratios.push(tokio.value_at_quantile(0.99) as f64 / mio.value_at_quantile(0.99) as f64);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "tokio p99 / mio p99 by round (sorted): {:.2?}; median {:.2}",
            ratios,
            ratios[ratios.len() / 2]
        );
    }
}
