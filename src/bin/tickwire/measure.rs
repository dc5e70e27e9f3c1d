//! Measurements shared by `tickwire bench`, `tickwire demo` and `benches/`.
//! Every figure runs the real path: the public API on real buffers and real
//! loopback sockets.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::panic
)]
// Each user (the CLI, each bench) takes what it needs; failures here are
// failures of the measurement setup, which may panic.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use tickwire::net::{
    unix_nanos, Client, ClientConfig, Connection, LoopOptions, Server, ServerConfig, ServerHandle,
};
use tickwire::parse::{Event, SliceParser};
use tickwire::session::{ClientEvent, CoreConfig};
use tickwire::synth::Feed;
use tickwire::{encode, Message, Payload, Sequencer};

/// One timed case: the best and the median of several rounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
    pub(crate) best: Duration,
    pub(crate) median: Duration,
}

impl Sample {
    pub(crate) fn frames_per_sec(&self) -> f64 {
        self.frames as f64 / self.best.as_secs_f64()
    }
    pub(crate) fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.best.as_secs_f64()
    }
    pub(crate) fn median_frames_per_sec(&self) -> f64 {
        self.frames as f64 / self.median.as_secs_f64()
    }
}

/// Runs `f` `rounds` times; `f` returns the frames it handled.
pub(crate) fn time_rounds(rounds: usize, bytes: u64, mut f: impl FnMut() -> u64) -> Sample {
    let mut times = Vec::with_capacity(rounds);
    let mut frames = 0;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        frames = black_box(f());
        times.push(t.elapsed());
    }
    times.sort();
    Sample {
        frames,
        bytes,
        best: times[0],
        median: times[times.len() / 2],
    }
}

/// A seeded stream of the 60/30/10 mix filling `bytes`, numbered as a
/// publisher would, and its messages with their timestamps.
pub(crate) fn synthetic_stream(bytes: usize, seed: u64) -> (Vec<u8>, Vec<(u64, Payload)>) {
    let mut feed = Feed::new(seed, 500);
    let mut batch = Vec::new();
    let mut total = 0;
    loop {
        let payload = feed.next_payload();
        if total + payload.frame_len() > bytes {
            break;
        }
        total += payload.frame_len();
        batch.push((1_700_000_000_000_000_000 + batch.len() as u64, payload));
    }
    let mut buf = vec![0u8; total];
    let done = Sequencer::new().encode_batch(&batch, &mut buf);
    buf.truncate(done.bytes);
    (buf, batch)
}

/// Checked decode (frame, CRC, sequence tracking) through
/// `SliceParser::for_each`, touching every quote's bid size.
pub(crate) fn checked_decode(data: &[u8]) -> u64 {
    checked_fold(SliceParser::new(data))
}

/// [`checked_decode`] with the given parser (the benchmark's portable row).
pub(crate) fn checked_fold(parser: SliceParser<'_>) -> u64 {
    let mut frames = 0u64;
    let mut sum = 0u64;
    parser.for_each(|event| {
        if let Event::Frame(m) = event {
            frames += 1;
            if let Message::Quote(q) = m {
                sum = sum.wrapping_add(u64::from(q.bid_size()));
            }
        }
    });
    black_box(sum);
    frames
}

/// Encodes the messages back to back with `Sequencer::encode_batch`.
pub(crate) fn encode_all(batch: &[(u64, Payload)], out: &mut [u8]) -> u64 {
    let done = Sequencer::new().encode_batch(batch, out);
    black_box(&out[..done.bytes]);
    done.frames as u64
}

/// memchr over the whole buffer for the sync byte: the scanning baseline.
pub(crate) fn memchr_count(data: &[u8]) -> u64 {
    memchr::memchr_iter(0xA5, data).count() as u64
}

/// Bytes per second from `write_all` of `stream` to a `read` loop over
/// loopback TCP, no parsing.
pub(crate) fn raw_loopback(stream: &[u8], seconds: f64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let data = stream.to_vec();
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
    while started.elapsed().as_secs_f64() < seconds {
        total += s.read(&mut buf).unwrap_or(0) as u64;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(s);
    let _ = writer.join();
    rate
}

/// Data batches of `size` messages, cycled by fast publishers.
pub(crate) fn batches(count: usize, size: usize) -> Vec<Vec<(u64, Payload)>> {
    let mut feed = Feed::new(9, 500);
    (0..count)
        .map(|_| {
            let mut b = Vec::with_capacity(size);
            while b.len() < size {
                let p = feed.next_payload();
                if p.msg_type().is_data() {
                    b.push((1_700_000_000_000_000_000, p));
                }
            }
            b
        })
        .collect()
}

fn login(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut frame = [0u8; 24];
    encode(&Payload::Login, 0, 0, &mut frame).unwrap();
    s.write_all(&frame).unwrap();
    s
}

/// A running reference server publishing batches of 4096 messages as fast
/// as its queue takes them, at most [`FanOutFeed::WINDOW`] frames ahead of
/// the slowest live receiver (`slowest`, which the receivers update).
pub(crate) struct FanOutFeed {
    pub(crate) server: ServerHandle,
    stop: Arc<AtomicBool>,
    pub(crate) slowest: Arc<std::sync::atomic::AtomicU64>,
    publisher: Option<thread::JoinHandle<()>>,
}

impl FanOutFeed {
    /// Flow control: the publisher stays at most this many frames ahead of
    /// the slowest live receiver, so that the figure is what is delivered
    /// without loss (an unthrottled publisher would get a lagging receiver
    /// skipped).
    pub(crate) const WINDOW: u64 = 1 << 20;

    /// The server (with `stalled` logged-in clients that never read, kept
    /// in the returned vector) and its config's `loop_writes`; the
    /// publisher starts at [`FanOutFeed::start`].
    pub(crate) fn bind(stalled: usize, loop_writes: bool) -> (FanOutFeed, Vec<TcpStream>) {
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            mio: LoopOptions {
                publisher_writes: !loop_writes,
                publish_queue: 64,
                ..LoopOptions::default()
            },
            ..ServerConfig::default()
        };
        config.core.session.slow_threshold = if stalled > 0 { 8 << 20 } else { 64 << 20 };
        config.core.session.queue_limit = if stalled > 0 { 16 << 20 } else { 128 << 20 };
        let server = Server::bind(config).unwrap().spawn().unwrap();
        let addr = server.local_addr();
        let stalled: Vec<TcpStream> = (0..stalled).map(|_| login(addr)).collect();
        let feed = FanOutFeed {
            server,
            stop: Arc::new(AtomicBool::new(false)),
            slowest: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            publisher: None,
        };
        (feed, stalled)
    }

    /// Waits (at most 5 s) until the server counts `clients` logged in.
    pub(crate) fn wait_for(&self, clients: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.server.stats().clients < clients as u64 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the publisher thread.
    pub(crate) fn start(&mut self) {
        let publisher = self.server.publisher();
        let pool = batches(64, 4096);
        let (stop, slowest) = (self.stop.clone(), self.slowest.clone());
        let thread = thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                let mut i = 0;
                let mut published = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if published.saturating_sub(slowest.load(Ordering::Relaxed))
                        > FanOutFeed::WINDOW
                    {
                        thread::sleep(Duration::from_micros(10));
                        continue;
                    }
                    let batch = pool[i % pool.len()].clone();
                    published += batch.len() as u64;
                    if publisher.publish(batch).is_err() {
                        break;
                    }
                    i += 1;
                }
            })
            .unwrap();
        self.publisher = Some(thread);
    }

    /// Stops the publisher and the server.
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.server.shutdown();
        if let Some(p) = self.publisher {
            let _ = p.join();
        }
    }
}

/// The reference server publishing as fast as its queue takes batches of
/// 4096 messages to `clients` receivers (one mio thread, every CRC checked)
/// and `stalled` clients that never read. Returns each live client's data
/// frames per second. `loop_writes`: the event loop writes every batch
/// (`ServerConfig::publisher_writes` off).
pub(crate) fn fan_out(clients: usize, stalled: usize, seconds: f64, loop_writes: bool) -> Vec<f64> {
    fan_out_cpu(clients, stalled, seconds, loop_writes).0
}

/// The CPU time run so far by this process's threads whose name starts
/// with one of `names`, in nanoseconds (Linux; 0 elsewhere).
pub(crate) fn threads_cpu_ns(names: &[&str]) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| names.iter().any(|n| comm.starts_with(n)))
        })
        .filter_map(|task| {
            std::fs::read_to_string(task.path().join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The CPU time this thread has run, in nanoseconds (Linux:
/// `/proc/thread-self/schedstat`; 0 elsewhere): a receiver's cost that the
/// machine's other load does not inflate the way it does wall time.
pub(crate) fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// [`fan_out`], and the receiving thread's CPU time per data frame in
/// nanoseconds.
pub(crate) fn fan_out_cpu(
    clients: usize,
    stalled: usize,
    seconds: f64,
    loop_writes: bool,
) -> (Vec<f64>, f64) {
    let (mut feed, _stalled) = FanOutFeed::bind(stalled, loop_writes);
    let addr = feed.server.local_addr();
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
    feed.wait_for(clients + stalled);
    feed.start();
    let mut frames = vec![0u64; clients];
    // Progress for flow control: frames received plus frames reported
    // missing, so that a live client skipped for a moment (possible beside a
    // stalled one on a busy machine) does not hold the publisher back forever.
    let mut progress = vec![0u64; clients];
    let (mut bad, mut skipped) = (0u64, 0u64);
    let mut events = Events::with_capacity(1024);
    let started = Instant::now();
    let cpu = thread_cpu_ns();
    while started.elapsed().as_secs_f64() < seconds {
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        for event in events.iter() {
            let i = event.token().0;
            let (count, done) = (&mut frames[i], &mut progress[i]);
            let _ = conns[i].read_ready(|e| match e {
                Event::Frame(m) if m.is_data() => {
                    *count += 1;
                    *done += 1;
                }
                Event::Gap(g) => {
                    *done += g.len();
                    skipped += g.len();
                }
                Event::Discarded(_) => bad += 1,
                _ => {}
            });
        }
        feed.slowest.store(
            progress.iter().copied().min().unwrap_or(0),
            Ordering::Relaxed,
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_ns().saturating_sub(cpu) as f64;
    drop(conns);
    feed.stop();
    assert!(bad == 0, "damage on loopback");
    if skipped > 0 && stalled == 0 {
        // A receiver starved of CPU on a loaded machine is skipped as slow
        // (the server's policy), told with a gap: said, not hidden.
        eprintln!(
            "fan-out: {skipped} frames skipped to receivers that fell behind (a loaded machine)"
        );
    }
    let total: u64 = frames.iter().sum();
    (
        frames.iter().map(|&n| n as f64 / elapsed).collect(),
        cpu / total.max(1) as f64,
    )
}

/// [`fan_out`] to one receiver that is the reference [`Client`]
/// (`Client::poll`, live data, its session's rules: gaps, discards,
/// duplicates, session changes) instead of a bare [`Connection`]: the
/// client's data frames per second, and its thread's CPU time per data
/// frame in nanoseconds.
pub(crate) fn fan_out_client(seconds: f64) -> (f64, f64) {
    let (mut feed, _) = FanOutFeed::bind(0, false);
    let mut client = Client::new(ClientConfig::new(feed.server.local_addr())).unwrap();
    let mut logged_in = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !logged_in && Instant::now() < deadline {
        client
            .poll(Some(Duration::from_millis(10)), |e| {
                logged_in |= matches!(e, ClientEvent::LoggedIn { .. });
            })
            .unwrap();
    }
    feed.wait_for(1);
    feed.start();
    let (mut frames, mut progress, mut bad) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let cpu = thread_cpu_ns();
    while started.elapsed().as_secs_f64() < seconds {
        client
            .poll(Some(Duration::from_millis(10)), |e| match e {
                ClientEvent::Frame(m) if m.is_data() => {
                    frames += 1;
                    progress += 1;
                }
                ClientEvent::Gap(g) => {
                    progress += g.len();
                    bad += 1;
                }
                ClientEvent::Discarded(_) | ClientEvent::Lost(_) => bad += 1,
                _ => {}
            })
            .unwrap();
        feed.slowest.store(progress, Ordering::Relaxed);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_ns().saturating_sub(cpu) as f64;
    drop(client);
    feed.stop();
    assert!(bad == 0, "damage, gaps or a lost connection on loopback");
    (frames as f64 / elapsed, cpu / frames.max(1) as f64)
}

/// Messages due after `started` at `rate` per second.
fn due(started: Instant, rate: u64) -> u64 {
    u64::try_from(started.elapsed().as_nanos() * u128::from(rate) / 1_000_000_000)
        .unwrap_or(u64::MAX)
}

/// Publishes `rate` msg/s in a batch every 100 µs, stamped when handed to
/// the server, until `stop`.
pub(crate) fn paced_publisher(
    server: &ServerHandle,
    rate: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<u64> {
    let publisher = server.publisher();
    thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let mut feed = Feed::new(seed, 500);
            let started = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = due(started, rate);
                if due > sent {
                    let now = unix_nanos();
                    let mut batch = Vec::with_capacity((due - sent).min(1 << 16) as usize);
                    while (batch.len() as u64) < (due - sent).min(1 << 16) {
                        let p = feed.next_payload();
                        if p.msg_type().is_data() {
                            batch.push((now, p));
                        }
                    }
                    sent += batch.len() as u64;
                    if publisher.publish(batch).is_err() {
                        break;
                    }
                }
                thread::sleep(Duration::from_micros(100));
            }
            sent
        })
        .unwrap()
}

/// A latency histogram in nanoseconds, 100 ns to 10 s, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(100, 10_000_000_000, 3).unwrap()
}

/// What a [`latency`] run varies (all off by default: one client sleeping
/// in epoll, the server's defaults).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LatencyCase {
    /// Another client logged in that never reads.
    pub(crate) stalled: bool,
    /// The client busy-polls instead of sleeping in epoll.
    pub(crate) spin: bool,
    /// The server busy-polls (`ServerConfig::busy_poll`).
    pub(crate) server_spin: bool,
    /// Through a relay of the server.
    pub(crate) relayed: bool,
    /// The event loop writes every batch (`ServerConfig::publisher_writes`
    /// off).
    pub(crate) loop_writes: bool,
}

/// The server core's configuration for the latency rows: the default, with
/// the retention set by `TICKWIRE_BENCH_RETAIN` (frames) when given.
fn bench_core() -> CoreConfig {
    let mut core = CoreConfig::new(0);
    if let Some(retain) = std::env::var("TICKWIRE_BENCH_RETAIN")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        core.retain = retain;
    }
    core
}

/// Latency from publish timestamp to client parse at `rate` msg/s for
/// `seconds` after a 0.5 s warm-up, in the situation `case` describes.
pub(crate) fn latency(rate: u64, seconds: f64, case: LatencyCase) -> (Histogram<u64>, u64) {
    let LatencyCase {
        stalled,
        spin,
        server_spin,
        relayed,
        loop_writes,
    } = case;
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        mio: LoopOptions {
            busy_poll: server_spin.then_some(Duration::from_millis(1)),
            publisher_writes: !loop_writes,
            ..LoopOptions::default()
        },
        core: bench_core(),
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    let _stalled = stalled.then(|| login(server.local_addr()));
    // Through a relay (protocol section 10) of the server, when asked.
    let relay = relayed.then(|| {
        let config =
            tickwire::net::RelayConfig::new(&[server.local_addr()], "127.0.0.1:0".parse().unwrap())
                .unwrap();
        tickwire::net::Relay::start(config).unwrap()
    });
    let addr = relay
        .as_ref()
        .map_or_else(|| server.local_addr(), tickwire::net::Relay::local_addr);
    let mut client = Client::new(ClientConfig::new(addr)).unwrap();
    let mut logged_in = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !logged_in && Instant::now() < deadline {
        client
            .poll(Some(Duration::from_millis(10)), |e| {
                logged_in |= matches!(e, ClientEvent::LoggedIn { .. })
            })
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = paced_publisher(&server, rate, 5, stop.clone());
    let mut window = Window::new(seconds, spin);
    while window.open() {
        client
            .poll(Some(window.wait), |e| {
                if let ClientEvent::Frame(m) = e {
                    if m.is_data() {
                        window.record(m.timestamp());
                    }
                }
            })
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.join();
    let _ = server.shutdown();
    (window.hist, window.frames)
}

/// The measuring window of [`latency`] and [`datagram_latency`]: 0.5 s of
/// warm-up, then `seconds` of frames recorded; the client's poll timeout.
struct Window {
    hist: Histogram<u64>,
    frames: u64,
    warmup: Instant,
    end: Instant,
    wait: Duration,
}

impl Window {
    fn new(seconds: f64, spin: bool) -> Window {
        let warmup = Instant::now() + Duration::from_millis(500);
        Window {
            hist: histogram(),
            frames: 0,
            warmup,
            end: warmup + Duration::from_secs_f64(seconds),
            wait: if spin {
                Duration::ZERO
            } else {
                Duration::from_millis(10)
            },
        }
    }

    fn open(&self) -> bool {
        Instant::now() < self.end
    }

    /// A data frame stamped `timestamp` arrived now.
    fn record(&mut self, timestamp: u64) {
        if Instant::now() >= self.warmup {
            self.frames += 1;
            let _ = self
                .hist
                .record(unix_nanos().saturating_sub(timestamp).max(100));
        }
    }
}

/// [`latency`] over the datagram path: the server's datagram output
/// (UDP unicast on 127.0.0.1, 1,472-byte datagrams; sent by the publishing
/// thread, or by the event loop if `by_loop`) to a `DatagramClient` (with
/// retransmission from the same server), sleeping in epoll or
/// busy-polling; the same paced publisher and clock.
pub(crate) fn datagram_latency(
    rate: u64,
    seconds: f64,
    spin: bool,
    by_loop: bool,
) -> (Histogram<u64>, u64) {
    use tickwire::net::{
        DatagramClient, DatagramClientConfig, DatagramOutputConfig, DatagramSender,
    };
    use tickwire::session::datagram::DatagramEvent;
    let mut config = DatagramClientConfig::new("127.0.0.1:0".parse().unwrap());
    let probe = DatagramClient::new(config.clone()).unwrap();
    let line = probe.local_addrs()[0];
    drop(probe);
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        datagrams: Some(DatagramOutputConfig::new(line)),
        mio: LoopOptions {
            datagram_sender: if by_loop {
                DatagramSender::EventLoop
            } else {
                DatagramSender::Publisher
            },
            ..LoopOptions::default()
        },
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    config.line_a = line;
    config.retransmit = Some(server.local_addr());
    let mut client = DatagramClient::new(config).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = paced_publisher(&server, rate, 5, stop.clone());
    let mut window = Window::new(seconds, spin);
    while window.open() {
        client
            .poll(Some(window.wait), |e| {
                if let Some(m) = match &e {
                    DatagramEvent::Frame(f) => f.message(),
                    _ => None,
                } {
                    window.record(m.timestamp());
                }
            })
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.join();
    let _ = server.shutdown();
    (window.hist, window.frames)
}

/// The floor issue 22 names for [`latency`]: a raw loopback socket paced
/// the same way, with no server and no session. One writer thread makes a
/// batch every 100 µs as [`paced_publisher`] does (the same feed, stamped
/// at the same point), encodes it with `Sequencer::encode_batch` and writes
/// it with one `write`; one reader sleeps in epoll (mio, edge-triggered,
/// the same 10 ms timeout as the client's) and drains a [`Parser`] after
/// each read, recording each data frame as [`latency`] does (the clock
/// read per frame). Returns the histogram and the frames recorded.
///
/// [`Parser`]: tickwire::Parser
pub(crate) fn floor_latency(rate: u64, seconds: f64) -> (Histogram<u64>, u64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = s.set_nodelay(true);
            let mut feed = Feed::new(5, 500);
            let mut sequencer = Sequencer::new();
            let started = Instant::now();
            let mut sent = 0u64;
            let mut bytes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let due = due(started, rate);
                if due > sent {
                    let now = unix_nanos();
                    let mut batch = Vec::with_capacity((due - sent).min(1 << 16) as usize);
                    while (batch.len() as u64) < (due - sent).min(1 << 16) {
                        let p = feed.next_payload();
                        if p.msg_type().is_data() {
                            batch.push((now, p));
                        }
                    }
                    sent += batch.len() as u64;
                    bytes.resize(batch.len() * tickwire::wire::MAX_DATA_FRAME_LEN, 0);
                    let done = sequencer.encode_batch(&batch, &mut bytes);
                    if s.write_all(&bytes[..done.bytes]).is_err() {
                        break;
                    }
                }
                thread::sleep(Duration::from_micros(100));
            }
        })
    };
    let (s, _) = listener.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    let mut stream = mio::net::TcpStream::from_std(s);
    let mut poll = Poll::new().unwrap();
    poll.registry()
        .register(&mut stream, Token(0), Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(64);
    let mut parser = tickwire::Parser::with_capacity(4 << 20).unwrap();
    let mut window = Window::new(seconds, false);
    while window.open() {
        poll.poll(&mut events, Some(window.wait)).unwrap();
        loop {
            match stream.read(parser.spare()) {
                Ok(0) => break,
                Ok(n) => {
                    parser.commit(n).unwrap();
                    parser.drain(|e| {
                        if let Event::Frame(m) = e {
                            if m.is_data() {
                                window.record(m.timestamp());
                            }
                        }
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(stream);
    let _ = writer.join();
    (window.hist, window.frames)
}

/// One-way latency of a raw loopback socket at the same pacing as
/// [`latency`]: 8-byte timestamps written in a batch every 100 µs, read and
/// compared by the receiver (a blocking `read`, no epoll, no parsing): the
/// floor of the floor, below [`floor_latency`].
pub(crate) fn raw_latency(rate: u64, seconds: f64) -> Histogram<u64> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = s.set_nodelay(true);
            let started = Instant::now();
            let mut sent = 0u64;
            let mut buf = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let due = due(started, rate);
                if due > sent {
                    let now = unix_nanos();
                    buf.clear();
                    for _ in sent..due {
                        buf.extend_from_slice(&now.to_le_bytes());
                    }
                    sent = due;
                    if s.write_all(&buf).is_err() {
                        break;
                    }
                }
                thread::sleep(Duration::from_micros(100));
            }
        })
    };
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut hist = histogram();
    let mut buf = vec![0u8; 1 << 16];
    let mut carry = Vec::new();
    let warmup = Instant::now() + Duration::from_millis(500);
    let end = warmup + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        let n = s.read(&mut buf).unwrap_or(0);
        carry.extend_from_slice(&buf[..n]);
        let whole = carry.len() / 8 * 8;
        let now = unix_nanos();
        if Instant::now() >= warmup {
            for ts in carry[..whole].chunks_exact(8) {
                let ts = u64::from_le_bytes(ts.try_into().unwrap());
                let _ = hist.record(now.saturating_sub(ts).max(100));
            }
        }
        carry.drain(..whole);
    }
    stop.store(true, Ordering::Relaxed);
    drop(s);
    let _ = writer.join();
    hist
}

/// What [`many_clients`] measured.
pub(crate) struct ManyClients {
    /// Connect to LoginAccepted, per client, in nanoseconds.
    pub(crate) login: Histogram<u64>,
    /// Publish timestamp to parse, over every data frame of every client.
    pub(crate) latency: Histogram<u64>,
    /// Messages published while every client was logged in.
    pub(crate) published: u64,
    /// Clients that received every frame from their first one to the last
    /// published, without a gap, within a second of the feed stopping.
    pub(crate) kept_up: usize,
    /// The smallest per-client receive rate (frames/s over the feed's time).
    pub(crate) slowest_rate: f64,
    /// Slow marks by the server.
    pub(crate) slow_marks: u64,
    /// CPU time of the threads that fan the feed out (the server's loops
    /// and the publishing thread, or the raw loop) over the measured
    /// window, per message and client, in nanoseconds.
    pub(crate) fan_out_cpu: f64,
}

/// One receiving client of [`many_clients`].
struct Receiver {
    conn: Connection,
    started: Instant,
    logged_in: bool,
    first: Option<u64>,
    last: u64,
    gaps: u64,
}

/// Who serves [`many_clients`]' clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FanOut {
    /// The reference server with this many event loops, fed by
    /// [`paced_publisher`].
    Server(usize),
    /// The baseline: [`raw_fan_out`], one thread writing each encoded batch
    /// to every socket in a plain loop; no server, no session.
    Raw,
}

/// `clients` clients (live only) logging in, a few at a time, while `by`
/// publishes `rate` msg/s (paced: a batch every 100 µs), spread over two
/// receiver threads that poll their connections with mio; latency is
/// measured for `seconds` from a second after every client is in.
pub(crate) fn many_clients(clients: usize, rate: u64, seconds: f64, by: FanOut) -> ManyClients {
    let stop_feed = Arc::new(AtomicBool::new(false));
    let (server, addr, publisher) = match by {
        FanOut::Server(threads) => {
            let server = Server::bind(ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                core: CoreConfig {
                    max_clients: clients + 16,
                    ..CoreConfig::new(0)
                },
                mio: LoopOptions {
                    threads,
                    ..LoopOptions::default()
                },
                ..ServerConfig::default()
            })
            .unwrap()
            .spawn()
            .unwrap();
            let addr = server.local_addr();
            let publisher = paced_publisher(&server, rate, 3, stop_feed.clone());
            (Some(server), addr, publisher)
        }
        FanOut::Raw => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            (
                None,
                addr,
                raw_fan_out(listener, rate, 3, stop_feed.clone()),
            )
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let logged_in = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let threads = 2;
    let receivers: Vec<_> = (0..threads)
        .map(|t| {
            let n = clients / threads + usize::from(t < clients % threads);
            let (stop, logged_in, measuring) = (stop.clone(), logged_in.clone(), measuring.clone());
            thread::spawn(move || receive_many(addr, n, &stop, &measuring, &logged_in))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while logged_in.load(Ordering::Relaxed) < clients && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(logged_in.load(Ordering::Relaxed), clients, "logins");
    // A second for the backlog of the logins to clear, then measure.
    thread::sleep(Duration::from_secs(1));
    measuring.store(true, Ordering::Relaxed);
    let first_published = server.as_ref().map_or(0, |s| s.stats().frames_published);
    const FANNING: [&str; 4] = [
        "tickwire-server",
        "tickwire-send",
        "publisher",
        "raw-fan-out",
    ];
    let cpu = threads_cpu_ns(&FANNING);
    let started = Instant::now();
    thread::sleep(Duration::from_secs_f64(seconds));
    let cpu = threads_cpu_ns(&FANNING).saturating_sub(cpu) as f64;
    let elapsed = started.elapsed().as_secs_f64();
    stop_feed.store(true, Ordering::Relaxed);
    let sent = publisher.join().unwrap();
    // A second to catch up, then stop.
    let drain = Instant::now() + Duration::from_secs(1);
    while Instant::now() < drain {
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let mut login = histogram();
    let mut latency = histogram();
    let mut kept_up = 0;
    let mut slowest_rate = f64::MAX;
    for r in receivers {
        let (l, lat, conns) = r.join().unwrap();
        login.add(l).unwrap();
        latency.add(lat).unwrap();
        for c in conns {
            let frames = c.first.map_or(0, |f| c.last + 1 - f);
            if c.gaps == 0 && c.last == sent {
                kept_up += 1;
            }
            slowest_rate = slowest_rate.min(frames as f64 / elapsed);
        }
    }
    let slow_marks = server.map_or(0, |s| s.shutdown().unwrap().slow_marks);
    ManyClients {
        login,
        latency,
        published: sent.saturating_sub(first_published),
        kept_up,
        slowest_rate,
        slow_marks,
        fan_out_cpu: cpu / (rate as f64 * elapsed * clients as f64).max(1.0),
    }
}

/// The fan-out floor for [`many_clients`]: the same paced feed (a thread
/// that makes a batch every 100 µs as [`paced_publisher`] does, stamps it
/// at the same point and encodes it with `Sequencer::encode_batch`), handed
/// over a channel to one thread that writes each batch to every connected
/// non-blocking socket in a plain loop: the batches that wait when it
/// comes back are written together, as the server's loop does; what a
/// socket does not take now waits in a buffer of its own, written first
/// next time. It accepts connections as they come, answering each with a
/// LoginAccepted for the next sequence it will write, without reading its
/// Login. No server, no session, no retention, no timers. Returns the
/// messages sent, numbered from 1 as the server numbers them.
pub(crate) fn raw_fan_out(
    listener: TcpListener,
    rate: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<u64> {
    listener.set_nonblocking(true).unwrap();
    // (first sequence, frames, encoded bytes)
    let (tx, rx) = std::sync::mpsc::channel::<(u64, u64, Vec<u8>)>();
    let fan = thread::Builder::new()
        .name("raw-fan-out".into())
        .spawn(move || {
            let mut conns: Vec<(TcpStream, Vec<u8>)> = Vec::new();
            let mut next = 1u64;
            let mut data = Vec::new();
            loop {
                while let Ok((mut s, _)) = listener.accept() {
                    s.set_nonblocking(true).unwrap();
                    let _ = s.set_nodelay(true);
                    let mut frame = [0u8; 32];
                    let n = encode(
                        &Payload::LoginAccepted { session_id: 1 },
                        next,
                        unix_nanos(),
                        &mut frame,
                    )
                    .unwrap();
                    let mut pending = Vec::new();
                    if raw_write(&mut s, &mut pending, &frame[..n]) {
                        conns.push((s, pending));
                    }
                }
                // Sleep until a batch comes (at most 1 ms: newcomers).
                let (first, frames, bytes) = match rx.recv_timeout(Duration::from_millis(1)) {
                    Ok(batch) => batch,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                };
                data.clear();
                data.extend_from_slice(&bytes);
                next = first + frames;
                while let Ok((first, frames, bytes)) = rx.try_recv() {
                    data.extend_from_slice(&bytes);
                    next = first + frames;
                }
                conns.retain_mut(|(s, pending)| raw_write(s, pending, &data));
            }
        })
        .unwrap();
    thread::Builder::new()
        .name("raw-publisher".into())
        .spawn(move || {
            let mut feed = Feed::new(seed, 500);
            let mut sequencer = Sequencer::new();
            let started = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = due(started, rate);
                if due > sent {
                    let now = unix_nanos();
                    let mut batch = Vec::with_capacity((due - sent).min(1 << 16) as usize);
                    while (batch.len() as u64) < (due - sent).min(1 << 16) {
                        let p = feed.next_payload();
                        if p.msg_type().is_data() {
                            batch.push((now, p));
                        }
                    }
                    sent += batch.len() as u64;
                    let first = sequencer.next_sequence();
                    let mut bytes = vec![0u8; batch.len() * tickwire::wire::MAX_DATA_FRAME_LEN];
                    let done = sequencer.encode_batch(&batch, &mut bytes);
                    bytes.truncate(done.bytes);
                    if tx.send((first, done.frames as u64, bytes)).is_err() {
                        break;
                    }
                }
                thread::sleep(Duration::from_micros(100));
            }
            drop(tx);
            let _ = fan.join();
            sent
        })
        .unwrap()
}

/// [`raw_fan_out`]'s write: `data` after what `pending` holds (straight
/// from `data` when nothing is pending); what the socket does not take
/// now is kept in `pending`. False once the socket failed.
fn raw_write(s: &mut TcpStream, pending: &mut Vec<u8>, data: &[u8]) -> bool {
    let mut rest = data;
    if !pending.is_empty() {
        pending.extend_from_slice(data);
        rest = &[];
    }
    loop {
        let out: &[u8] = if pending.is_empty() { rest } else { pending };
        if out.is_empty() {
            return true;
        }
        match s.write(out) {
            Ok(0) => return false,
            Ok(n) if pending.is_empty() => rest = &rest[n..],
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                pending.extend_from_slice(rest);
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// One receiver thread of [`many_clients`]: connects and logs in `n`
/// clients, then reads until `stop`. The clock is read once per wake-up of
/// a connection, at its first data frame (the frames of one wake-up are
/// parsed within microseconds of each other), and latency is recorded once
/// per run of frames that share a publish timestamp (one batch).
fn receive_many(
    addr: SocketAddr,
    n: usize,
    stop: &AtomicBool,
    measuring: &AtomicBool,
    logged_in: &std::sync::atomic::AtomicUsize,
) -> (Histogram<u64>, Histogram<u64>, Vec<Receiver>) {
    let mut poll = Poll::new().unwrap();
    let mut conns: Vec<Receiver> = Vec::with_capacity(n);
    let mut login_hist = histogram();
    let mut latency = histogram();
    let mut events = Events::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        // Clients arrive a few at a time while the others are served.
        for _ in 0..8 {
            if conns.len() == n {
                break;
            }
            let started = Instant::now();
            let s = login(addr);
            s.set_nonblocking(true).unwrap();
            let mut conn = Connection::new(mio::net::TcpStream::from_std(s), 64 << 10, 1024);
            poll.registry()
                .register(conn.stream_mut(), Token(conns.len()), Interest::READABLE)
                .unwrap();
            conns.push(Receiver {
                conn,
                started,
                logged_in: false,
                first: None,
                last: 0,
                gaps: 0,
            });
        }
        let wait = if conns.len() < n {
            Duration::ZERO
        } else {
            Duration::from_millis(5)
        };
        poll.poll(&mut events, Some(wait)).unwrap();
        let measure = measuring.load(Ordering::Relaxed);
        for event in events.iter() {
            let r = &mut conns[event.token().0];
            let mut run = (0u64, 0u64, 0u64); // (timestamp, latency, frames)
            let mut now = None;
            let mut accepted = false;
            let _ = r.conn.read_ready(|e| match e {
                Event::Frame(Message::LoginAccepted(_)) => accepted = true,
                Event::Frame(m) if m.is_data() => {
                    r.first.get_or_insert(m.sequence());
                    r.last = m.sequence();
                    if !measure {
                    } else if m.timestamp() == run.0 && run.2 > 0 {
                        run.2 += 1;
                    } else {
                        if run.2 > 0 {
                            let _ = latency.record_n(run.1, run.2);
                        }
                        let now = *now.get_or_insert_with(unix_nanos);
                        let ns = now.saturating_sub(m.timestamp()).max(100);
                        run = (m.timestamp(), ns, 1);
                    }
                }
                Event::Gap(_) => r.gaps += 1,
                _ => {}
            });
            if run.2 > 0 {
                let _ = latency.record_n(run.1, run.2);
            }
            if accepted && !r.logged_in {
                r.logged_in = true;
                let _ = login_hist.record(r.started.elapsed().as_nanos() as u64);
                logged_in.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    (login_hist, latency, conns)
}
