//! Datagram feed over loopback: the reference server's datagram output →
//! `DatagramClient` (with retransmission from the same server), frames/s
//! delivered in order, datagrams/s, system calls per datagram sent.
//!
//! `flock /work/bench.lock cargo bench --bench datagram --features cli`
//!
//! Cases (each `SECONDS` long, one run): `sendmmsg` and `send_to`, one line
//! and two (A/B, the receiver keeping the first copy); the publisher
//! publishes batches of `BATCH` quotes as fast as the server takes them.
//! Frames the kernel dropped (receive buffer full) come back by
//! retransmission or are reported as gaps: both are counted.
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tickwire::encode::QuoteFields;
use tickwire::net::{
    DatagramClient, DatagramClientConfig, DatagramOutputConfig, Server, ServerConfig,
};
use tickwire::session::datagram::DatagramEvent;
use tickwire::Payload;

const SECONDS: f64 = 3.0;
const BATCH: usize = 256;

fn case(name: &str, lines: usize, batch_syscalls: bool, pace: Option<Duration>) {
    let mut config = DatagramClientConfig::new("127.0.0.1:0".parse().unwrap());
    if lines == 2 {
        config.line_b = Some("127.0.0.1:0".parse().unwrap());
    }
    config.recv_buffer = Some(64 << 20);
    let probe = DatagramClient::new(config.clone()).unwrap();
    let addrs = probe.local_addrs().to_vec();
    drop(probe);
    let mut output = DatagramOutputConfig::new(addrs[0]);
    output.line_b = addrs.get(1).copied();
    output.batch_syscalls = batch_syscalls;
    output.send_buffer = Some(16 << 20);
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        datagrams: Some(output),
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    config.line_a = addrs[0];
    config.line_b = addrs.get(1).copied();
    config.retransmit = Some(server.local_addr());
    let mut client = DatagramClient::new(config).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = server.publisher();
    let stop2 = Arc::clone(&stop);
    let batch: Vec<(u64, Payload)> = (0..BATCH)
        .map(|i| {
            (
                1,
                Payload::Quote(QuoteFields {
                    instrument_id: i as u32,
                    ..QuoteFields::default()
                }),
            )
        })
        .collect();
    let publishing = std::thread::spawn(move || {
        let mut published = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            if publisher.publish(batch.clone()).is_err() {
                break;
            }
            published += BATCH as u64;
            if let Some(p) = pace {
                std::thread::sleep(p);
            }
        }
        published
    });
    let start = Instant::now();
    let (mut frames, mut gaps, mut lost) = (0u64, 0u64, 0u64);
    let mut next = 1u64;
    let mut out_of_order = 0u64;
    let before = server.stats();
    while start.elapsed().as_secs_f64() < SECONDS {
        client
            .poll(Some(Duration::from_millis(5)), |e| match e {
                DatagramEvent::Frame(f) => {
                    if f.sequence() != next {
                        out_of_order += 1;
                    }
                    next = f.sequence() + 1;
                    frames += 1;
                }
                DatagramEvent::Gap(g) => {
                    gaps += 1;
                    lost += g.last - g.first + 1;
                    next = g.last + 1;
                }
                _ => {}
            })
            .unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let published = publishing.join().unwrap();
    let after = server.stats();
    let stats = client.stats();
    let sent = after.datagrams_sent - before.datagrams_sent;
    let calls = after.datagram_syscalls - before.datagram_syscalls;
    println!(
        "{name:<34} {:>9.2} {:>10.0} {:>8.3} {:>9.2} {:>9} {:>7} {:>9} {:>6}",
        frames as f64 / elapsed / 1e6,
        sent as f64 / elapsed,
        calls as f64 / sent.max(1) as f64,
        published as f64 / elapsed / 1e6,
        stats.receiver.recovered,
        gaps,
        lost,
        out_of_order
    );
    drop(server);
}

fn main() {
    println!(
        "datagram feed over loopback, {SECONDS} s per case, {BATCH}-quote batches (44-byte frames, 1,472-byte datagrams)"
    );
    println!(
        "{:<34} {:>9} {:>10} {:>8} {:>9} {:>9} {:>7} {:>9} {:>6}",
        "case", "Mframes/s", "dgrams/s", "sys/dg", "Mpub/s", "recovered", "gaps", "lost", "order!"
    );
    let paced = Some(Duration::from_micros(200));
    case("1 line, sendmmsg, unpaced", 1, true, None);
    case("1 line, send_to, unpaced", 1, false, None);
    case("2 lines, sendmmsg, unpaced", 2, true, None);
    case("2 lines, send_to, unpaced", 2, false, None);
    case("1 line, sendmmsg, 1.28 M/s paced", 1, true, paced);
    case("1 line, send_to, 1.28 M/s paced", 1, false, paced);
}
