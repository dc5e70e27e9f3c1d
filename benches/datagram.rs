//! Datagram feed over loopback: the reference server's datagram output →
//! `DatagramClient` (with retransmission from the same server), frames/s
//! delivered in order, datagrams/s, system calls per datagram sent.
//!
//! `cargo bench --bench datagram --features cli`
//!
//! Cases (each `SECONDS` long, one run): `sendmmsg` and `send_to`, one line
//! and two (A/B, the receiver keeping the first copy); the publisher
//! publishes batches of `BATCH` quotes as fast as the server takes them.
//! The publishing thread sends the datagrams (`DatagramSender::Publisher`,
//! each batch cut on its own), except in the cases named "by the loop"
//! (`DatagramSender::EventLoop`: batches waiting together cut together);
//! cases named "full" publish batches of as many quotes as one datagram
//! holds instead of `BATCH`.
//! Frames the kernel dropped (receive buffer full) come back by
//! retransmission or are reported as gaps: both are counted. Then
//! fan-out: one multicast group on 127.0.0.1 to 1, 8 and 64 receivers.
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

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tickwire::encode::QuoteFields;
use tickwire::net::{
    DatagramClient, DatagramClientConfig, DatagramOutputConfig, DatagramSender, LoopOptions,
    Server, ServerConfig,
};
use tickwire::session::datagram::DatagramEvent;
use tickwire::Payload;

#[path = "../tests/netns/mod.rs"]
mod netns;

const SECONDS: f64 = 3.0;
const BATCH: usize = 256;

/// Whether the command line asks for the case `name` (any argument that
/// is part of its name; no arguments: every case).
fn wanted(name: &str) -> bool {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    only.is_empty() || only.iter().any(|o| name.contains(o.as_str()))
}

fn case(name: &str, lines: usize, batch_syscalls: bool, rate: Option<f64>) {
    sized_case(name, lines, batch_syscalls, rate, 1472);
}

fn sized_case(name: &str, lines: usize, batch_syscalls: bool, rate: Option<f64>, size: usize) {
    let sender = if name.contains("by the loop") {
        DatagramSender::EventLoop
    } else {
        DatagramSender::Publisher
    };
    // "full": batches of as many quotes as one datagram holds.
    let batch = if name.contains("full") {
        (size - 32) / 44
    } else {
        BATCH
    };
    sender_case(name, lines, batch_syscalls, rate, size, sender, batch);
}

fn sender_case(
    name: &str,
    lines: usize,
    batch_syscalls: bool,
    rate: Option<f64>,
    size: usize,
    sender: DatagramSender,
    batch_len: usize,
) {
    if !wanted(name) {
        return;
    }
    let mut config = DatagramClientConfig::new("127.0.0.1:0".parse().unwrap());
    if lines == 2 {
        config.line_b = Some("127.0.0.1:0".parse().unwrap());
    }
    config.recv_buffer = Some(64 << 20);
    // Past net.core.rmem_max when run as root (SO_RCVBUFFORCE); the size
    // the kernel reports is printed with the case.
    config.force_recv_buffer = true;
    // At millions of frames/s the default 4,096-frame window passes in
    // under a millisecond, before the 2 ms retransmission wait: a kernel
    // drop would become a gap for a full window instead of a request.
    config.receiver.window = 1 << 18;
    let probe = DatagramClient::new(config.clone()).unwrap();
    let addrs = probe.local_addrs().to_vec();
    drop(probe);
    let mut output = DatagramOutputConfig::new(addrs[0]);
    output.line_b = addrs.get(1).copied();
    output.batch_syscalls = batch_syscalls;
    output.max_datagram = size;
    output.send_buffer = Some(16 << 20);
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        datagrams: Some(output),
        mio: LoopOptions {
            datagram_sender: sender,
            ..LoopOptions::default()
        },
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    config.line_a = addrs[0];
    config.line_b = addrs.get(1).copied();
    config.retransmit = Some(server.local_addr());
    let mut client = DatagramClient::new(config).unwrap();
    let rcvbuf = client.recv_buffer_sizes()[0] >> 20;

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = server.publisher();
    let stop2 = Arc::clone(&stop);
    let batch: Vec<(u64, Payload)> = (0..batch_len)
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
    let publishing = std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let mut published = 0u64;
            let start = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                if let Some(rate) = rate {
                    // Ahead of the rate: wait (bounded by `stop`).
                    if published as f64 > rate * start.elapsed().as_secs_f64() {
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                }
                if publisher.publish(batch.clone()).is_err() {
                    break;
                }
                published += batch_len as u64;
            }
            published
        })
        .unwrap();
    let cpu0 = [
        thread_cpu("tickwire-server"),
        thread_cpu("publisher"),
        own_cpu(),
    ];
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
    let cpu1 = [
        thread_cpu("tickwire-server"),
        thread_cpu("publisher"),
        own_cpu(),
    ];
    let cpu: Vec<f64> = cpu1
        .iter()
        .zip(cpu0)
        .map(|(b, a)| (b - a) / elapsed * 100.0)
        .collect();
    stop.store(true, Ordering::Relaxed);
    let published = publishing.join().unwrap();
    let after = server.stats();
    let stats = client.stats();
    let sent = after.datagrams_sent - before.datagrams_sent;
    let calls = after.datagram_syscalls - before.datagram_syscalls;
    println!(
        "{name:<34} {:>9.2} {:>10.0} {:>8.3} {:>9.2} {:>9} {:>7} {:>9} {:>6} {:>4.0}/{:>3.0}/{:>3.0}% {rcvbuf:>5}",
        frames as f64 / elapsed / 1e6,
        sent as f64 / elapsed,
        calls as f64 / sent.max(1) as f64,
        published as f64 / elapsed / 1e6,
        stats.receiver.recovered,
        gaps,
        lost,
        out_of_order,
        cpu[0],
        cpu[1],
        cpu[2],
    );
    drop(server);
}

/// CPU seconds (user + system) the thread named `name` has used so far
/// (Linux `/proc`; 0 elsewhere).
fn thread_cpu(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ticks = 100.0; // USER_HZ on Linux
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the ")" that ends the name: state is 3rd, utime 14th.
        let rest = stat.rsplit(')').next().unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        return (utime + stime) / ticks;
    }
    0.0
}

/// The receiver alone (no sockets): in-order datagrams of `size` bytes
/// built once, fed to a `DatagramReceiver` and every event polled.
fn receiver_only(size: usize) {
    use tickwire::session::datagram::{DatagramConfig, DatagramReceiver, Line};
    use tickwire::session::Time;
    if !wanted("receiver only") {
        return;
    }
    let total = 20_000_000u64;
    let mut datagrams = Vec::new();
    let mut next = 1u64;
    while next <= total {
        let mut d = vec![0u8; size];
        let mut at = tickwire::encode(&Payload::Packet { session_id: 1 }, next, 0, &mut d).unwrap();
        while at + 44 <= size && next <= total {
            let q = Payload::Quote(QuoteFields {
                instrument_id: next as u32,
                ..QuoteFields::default()
            });
            at += tickwire::encode(&q, next, next, &mut d[at..]).unwrap();
            next += 1;
        }
        d.truncate(at);
        datagrams.push(d);
    }
    let mut rx = DatagramReceiver::new(DatagramConfig::default());
    let t = Time::new(Duration::ZERO, 0);
    let mut frames = 0u64;
    let mut sum = 0u64;
    let start = Instant::now();
    for d in &datagrams {
        rx.handle_datagram(Line::A, d, t);
        while let Some(e) = rx.poll_event() {
            if let DatagramEvent::Frame(f) = e {
                frames += 1;
                sum = sum.wrapping_add(f.sequence());
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(frames, total, "{sum}");
    println!(
        "receiver only, {size:>5} B datagrams        {:>9.2} Mframes/s ({:.1} ns a frame)",
        frames as f64 / elapsed / 1e6,
        elapsed * 1e9 / frames as f64
    );
}

/// CPU seconds (user + system) the calling thread has used so far.
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (utime + stime) / 100.0
}

/// One multicast group on 127.0.0.1 to `receivers` subscribers (a thread
/// each), paced: the publisher's CPU per second (server and publishing threads), and the slowest
/// receiver's share.
fn fan_out(receivers: usize, group_port: u16) {
    if !wanted("fan-out") {
        return;
    }
    let group: std::net::SocketAddr = format!("239.255.42.1:{group_port}").parse().unwrap();
    let mut output = DatagramOutputConfig::new(group);
    output.interface = Some(std::net::Ipv4Addr::LOCALHOST);
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        datagrams: Some(output),
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(std::sync::Barrier::new(receivers + 1));
    let threads: Vec<_> = (0..receivers)
        .map(|_| {
            let mut config = DatagramClientConfig::new(group);
            config.interface = Some(std::net::Ipv4Addr::LOCALHOST);
            config.retransmit = Some(server.local_addr());
            config.recv_buffer = Some(16 << 20);
            let (stop, ready) = (Arc::clone(&stop), Arc::clone(&ready));
            std::thread::spawn(move || {
                let mut client = DatagramClient::new(config).unwrap();
                ready.wait();
                let (mut frames, mut lost) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    client
                        .poll(Some(Duration::from_millis(5)), |e| match e {
                            DatagramEvent::Frame(_) => frames += 1,
                            DatagramEvent::Gap(g) => lost += g.last - g.first + 1,
                            _ => {}
                        })
                        .unwrap();
                }
                (frames, lost, client.stats().receiver.recovered)
            })
        })
        .collect();
    ready.wait();
    let publisher = server.publisher();
    let batch: Vec<(u64, Payload)> = vec![(1, Payload::Quote(QuoteFields::default())); 64];
    let cpu0 = thread_cpu("tickwire-server") + own_cpu();
    let start = Instant::now();
    let mut published = 0u64;
    // 64 frames every 200 µs at most: about 300K frames/s here.
    while start.elapsed().as_secs_f64() < SECONDS {
        publisher.publish(batch.clone()).unwrap();
        published += 64;
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = thread_cpu("tickwire-server") + own_cpu() - cpu0;
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(u64, u64, u64)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let slowest = results.iter().map(|r| r.0).min().unwrap_or(0);
    let lost: u64 = results.iter().map(|r| r.1).sum();
    let recovered: u64 = results.iter().map(|r| r.2).sum();
    println!(
        "multicast 127.0.0.1, {receivers:>2} receivers     {:>9.3} Mpub/s  publisher CPU {:>5.1}%  slowest got {:>6.2}%  recovered {recovered:>7} lost {lost}",
        published as f64 / elapsed / 1e6,
        cpu / elapsed * 100.0,
        slowest as f64 / published as f64 * 100.0,
    );
}

/// Fan-out over a veth pair into a network namespace (root, `ip`): the
/// publisher here sends one multicast feed; `receivers` subscribers run in
/// a child process inside the namespace, so the kernel copies each datagram
/// for them on the namespace's side of the link, as a switch would. The
/// publisher's cost: the CPU per second of the server's thread and of the
/// publishing thread (which sends the datagrams, `DatagramSender::Publisher`).
fn fan_out_veth(receivers: usize, rate: f64) {
    if !wanted("fan-out") {
        return;
    }
    let ns = match netns::Netns::create("fo", 197) {
        Ok(ns) => ns,
        Err(why) => {
            println!("fan-out over veth: SKIPPED (needs root and `ip`): {why}");
            return;
        }
    };
    // The machine split in two, as a host and its network: this process
    // (publisher and server) on CPU 0; the namespace's side of the link
    // (its packet processing, steered there by RPS) and the receivers on
    // CPU 1. Without this, the veth hands each datagram to the namespace's
    // stack inside the sender's system call, and the sender pays for every
    // copy as on loopback.
    let peer = format!("twfoc{}", std::process::id());
    let split = std::process::Command::new("taskset")
        .args(["-a", "-p", "1", &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && ns
            .command(std::path::Path::new("sh"))
            .args([
                "-c",
                &format!("echo 2 > /sys/class/net/{peer}/queues/rx-0/rps_cpus"),
            ])
            .status()
            .is_ok_and(|s| s.success());
    let port = 25_000 + u16::from(ns.n);
    let group: std::net::SocketAddr = format!("239.197.{}.1:{port}", ns.n).parse().unwrap();
    let mut output = DatagramOutputConfig::new(group);
    output.interface = Some(ns.host_ip());
    output.loopback = false;
    let server = Server::bind(ServerConfig {
        listen: std::net::SocketAddr::from((ns.host_ip(), 0)),
        datagrams: Some(output),
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    let mut command = ns.command(std::path::Path::new("taskset"));
    command.arg("2").arg(std::env::current_exe().unwrap());
    let mut child = netns::ChildGuard(
        command
            .env(
                "TICKWIRE_FANOUT_CHILD",
                format!(
                    "{group} {} {} {receivers}",
                    ns.inside_ip(),
                    server.local_addr()
                ),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("READY") {
        line.clear();
    }
    let publisher = server.publisher();
    let batch: Vec<(u64, Payload)> = vec![(1, Payload::Quote(QuoteFields::default())); 64];
    let cpu0 = thread_cpu("tickwire-server") + own_cpu();
    let start = Instant::now();
    let mut published = 0u64;
    while start.elapsed().as_secs_f64() < SECONDS {
        if published as f64 > rate * start.elapsed().as_secs_f64() {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        publisher.publish(batch.clone()).unwrap();
        published += 64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = thread_cpu("tickwire-server") + own_cpu() - cpu0;
    let stats = server.stats();
    // The child stops after 1 s of silence and reports.
    line.clear();
    while out.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("RESULT") {
        line.clear();
    }
    let slowest: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    println!(
        "multicast over veth, {receivers:>2} receivers     {:>9.3} Mpub/s  publisher CPU {:>5.1}%  {:>6} dgrams/s  {:>5.1} µs CPU a datagram  slowest got {:>6.2}%{}",
        published as f64 / elapsed / 1e6,
        cpu / elapsed * 100.0,
        (stats.datagrams_sent as f64 / elapsed) as u64,
        cpu * 1e6 / stats.datagrams_sent.max(1) as f64,
        slowest as f64 / published as f64 * 100.0,
        if split { "" } else { "  (CPUs not split: taskset or RPS failed)" }
    );
    drop(server);
    // Back to both CPUs for what follows.
    let _ = std::process::Command::new("taskset")
        .args(["-a", "-p", "3", &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status();
}

/// The receivers of [`fan_out_veth`], inside the namespace: `spec` is
/// "GROUP IFADDR RETRANSMIT RECEIVERS"; prints READY once all joined, then
/// the slowest receiver's frame count once the feed has been silent 1 s.
fn fan_out_child(spec: &str) {
    let parts: Vec<&str> = spec.split(' ').collect();
    let group: std::net::SocketAddr = parts[0].parse().unwrap();
    let iface: std::net::Ipv4Addr = parts[1].parse().unwrap();
    let retransmit: std::net::SocketAddr = parts[2].parse().unwrap();
    let receivers: usize = parts[3].parse().unwrap();
    let ready = Arc::new(std::sync::Barrier::new(receivers + 1));
    let threads: Vec<_> = (0..receivers)
        .map(|_| {
            let mut config = DatagramClientConfig::new(group);
            config.interface = Some(iface);
            config.retransmit = Some(retransmit);
            config.recv_buffer = Some(16 << 20);
            let ready = Arc::clone(&ready);
            std::thread::spawn(move || {
                let mut client = DatagramClient::new(config).unwrap();
                ready.wait();
                let mut frames = 0u64;
                let mut last = Instant::now();
                let begun = Instant::now();
                // Bounded: 60 s at most, and 1 s of silence after data ends it.
                while begun.elapsed() < Duration::from_secs(60)
                    && (frames == 0 || last.elapsed() < Duration::from_secs(1))
                {
                    client
                        .poll(Some(Duration::from_millis(20)), |e| {
                            if let DatagramEvent::Frame(_) = e {
                                frames += 1;
                                last = Instant::now();
                            }
                        })
                        .unwrap();
                }
                frames
            })
        })
        .collect();
    ready.wait();
    println!("READY");
    let slowest = threads.into_iter().map(|t| t.join().unwrap()).min();
    println!("RESULT {}", slowest.unwrap_or(0));
}

fn main() {
    if let Ok(spec) = std::env::var("TICKWIRE_FANOUT_CHILD") {
        fan_out_child(&spec);
        return;
    }
    println!(
        "datagram feed over loopback, {SECONDS} s per case, {BATCH}-quote batches (44-byte frames, 1,472-byte datagrams)"
    );
    println!(
        "{:<34} {:>9} {:>10} {:>8} {:>9} {:>9} {:>7} {:>9} {:>6} {:>13} {:>10}",
        "case",
        "Mframes/s",
        "dgrams/s",
        "sys/dg",
        "Mpub/s",
        "recovered",
        "gaps",
        "lost",
        "order!",
        "CPU srv/pub/rx",
        "rcvbuf MiB"
    );

    receiver_only(1472);
    receiver_only(8972);
    case("1 line, sendmmsg, unpaced", 1, true, None);
    case("1 line, sendmmsg, unpaced, by the loop", 1, true, None);
    case("1 line, send_to, unpaced", 1, false, None);
    case("2 lines, sendmmsg, unpaced", 2, true, None);
    case("2 lines, send_to, unpaced", 2, false, None);
    for (rate, label) in [(1e6, "1"), (2e6, "2"), (4e6, "4")] {
        case(
            &format!("1 line, sendmmsg, {label} M/s paced"),
            1,
            true,
            Some(rate),
        );
        case(
            &format!("1 line, send_to, {label} M/s paced"),
            1,
            false,
            Some(rate),
        );
    }
    case("2 lines, sendmmsg, 2 M/s paced", 2, true, Some(2e6));
    // Larger datagrams: jumbo frames (MTU 9,000) and loopback's largest.
    for size in [8_972, 65_507] {
        sized_case(
            &format!("1 line, sendmmsg, {size} B, unpaced"),
            1,
            true,
            None,
            size,
        );
        sized_case(
            &format!("1 line, sendmmsg, {size} B, 16 M/s"),
            1,
            true,
            Some(16e6),
            size,
        );
        sized_case(
            &format!("1 line, sendmmsg, {size} B, 20 M/s"),
            1,
            true,
            Some(20e6),
            size,
        );
        sized_case(
            &format!("1 line, sendmmsg, {size} B, 20 M/s, full"),
            1,
            true,
            Some(20e6),
            size,
        );
        sized_case(
            &format!("1 line, sendmmsg, {size} B, 20 M/s, by the loop"),
            1,
            true,
            Some(20e6),
            size,
        );
    }
    println!("fan-out: one multicast feed, paced; on loopback the kernel delivers every copy in the sender's system call, so the sender pays per receiver here (on a network, the switch does)");
    for (i, receivers) in [1usize, 8, 64].into_iter().enumerate() {
        fan_out(receivers, 24_000 + i as u16);
    }
    println!("fan-out over a veth pair into a network namespace: the copies are made on the receivers' side, as by a switch");
    for receivers in [1usize, 8, 64] {
        fan_out_veth(receivers, 300_000.0);
    }
}
