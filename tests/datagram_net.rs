//! The datagram feed over real UDP and TCP sockets on 127.0.0.1: the
//! server's datagram output → a seeded fault injector (a forwarder thread
//! per line that drops, duplicates and reorders) → `DatagramClient`, which
//! recovers what both lines lost from the same server over TCP (protocol
//! sections 8 and 9). Every loop is bounded in count and time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(clippy::cast_possible_truncation)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

mod common;
mod netns;
use common::{
    assert_exactly_once_in_order, drive, expected_bytes, expected_frames, fast_config, messages,
};
use netns::{skip_unprivileged, ChildGuard, Netns};

use tickwire::io::FrameReader;
use tickwire::net::{
    Client, DatagramClient, DatagramClientConfig, DatagramOutputConfig, DatagramSender, Server,
    ServerConfig, ServerHandle,
};
use tickwire::parse::Event;
use tickwire::sequence::Gap;
use tickwire::session::datagram::DatagramEvent;
use tickwire::session::CoreConfig;
use tickwire::{encode, Message, Payload};

/// What the injector does to one line.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    drop: f64,
    duplicate: f64,
    reorder: f64,
}

/// One datagram the injector saw: its Packet's sequence, data frames, and
/// whether it was passed on.
#[derive(Clone, Copy, Debug)]
struct Seen {
    line: usize,
    sequence: u64,
    frames: u64,
    passed: bool,
}

/// A forwarder per line: receives the server's datagrams on its own port
/// and passes them to the client's, with seeded faults.
struct Injector {
    inputs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    blackhole: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Injector {
    fn new(seed: u64, to: &[SocketAddr], faults: &[Faults]) -> Injector {
        let stop = Arc::new(AtomicBool::new(false));
        let blackhole = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut inputs = Vec::new();
        let mut threads = Vec::new();
        for (line, (&to, &faults)) in to.iter().zip(faults).enumerate() {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            inputs.push(socket.local_addr().unwrap());
            let (stop, blackhole, seen) =
                (Arc::clone(&stop), Arc::clone(&blackhole), Arc::clone(&seen));
            let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(line as u64 * 7919));
            threads.push(thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                let mut held: Option<Vec<u8>> = None;
                // Bounded: the test sets `stop`, and every wait is 5 ms.
                while !stop.load(Ordering::SeqCst) {
                    let n = match socket.recv(&mut buf) {
                        Ok(n) => n,
                        Err(_) => {
                            // Idle: a held datagram goes out now.
                            if let Some(d) = held.take() {
                                let _ = socket.send_to(&d, to);
                            }
                            continue;
                        }
                    };
                    let datagram = buf[..n].to_vec();
                    let sequence = u64::from_le_bytes(datagram[4..12].try_into().unwrap());
                    let frames = data_frames(&datagram);
                    // Faults hit data datagrams only: the Packet-only and
                    // EndOfSession ones pass (not resent, by the protocol).
                    let passed = frames == 0
                        || (!blackhole.load(Ordering::SeqCst) && rng.f64() >= faults.drop);
                    if frames > 0 {
                        seen.lock().unwrap().push(Seen {
                            line,
                            sequence,
                            frames,
                            passed,
                        });
                    }
                    if !passed {
                        continue;
                    }
                    let copies = if rng.f64() < faults.duplicate { 2 } else { 1 };
                    if held.is_none() && rng.f64() < faults.reorder {
                        held = Some(datagram); // goes out after the next one
                        continue;
                    }
                    for _ in 0..copies {
                        let _ = socket.send_to(&datagram, to);
                    }
                    if let Some(d) = held.take() {
                        let _ = socket.send_to(&d, to);
                    }
                }
            }));
        }
        Injector {
            inputs,
            stop,
            blackhole,
            seen,
            threads,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Data frames in a datagram (after its Packet).
fn data_frames(datagram: &[u8]) -> u64 {
    let mut at = 32;
    let mut frames = 0;
    while at + 4 <= datagram.len() {
        if datagram[at + 2] >= 0x10 {
            frames += 1;
        }
        at += usize::from(datagram[at + 3]).max(1);
    }
    frames
}

/// The settings of a server whose datagrams go to `lines` (the injector's inputs).
fn server_config(lines: &[SocketAddr]) -> ServerConfig {
    let mut output = DatagramOutputConfig::new(lines[0]);
    output.line_b = lines.get(1).copied();
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        core: CoreConfig::new(0x5EED),
        datagrams: Some(output),
        ..ServerConfig::default()
    };
    config.core.session.heartbeat_interval = Duration::from_millis(100);
    config
}

/// A server whose datagrams go to the injector's inputs.
fn server(lines: &[SocketAddr], tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    let mut config = server_config(lines);
    tweak(&mut config);
    Server::bind(config).unwrap().spawn().unwrap()
}

/// The server of a datagram test: the mio one, or the tokio one on a
/// runtime of its own.
enum Origin {
    Mio(ServerHandle),
    #[cfg(feature = "tokio")]
    Tokio(tokio::runtime::Runtime, tickwire::tokio::ServerHandle),
}

/// Publishes one batch.
type PublishFn = Box<dyn FnMut(Vec<(u64, Payload)>) + Send>;

fn mio_publisher(server: &ServerHandle) -> PublishFn {
    let publisher = server.publisher();
    Box::new(move |batch| publisher.publish(batch).unwrap())
}

impl Origin {
    fn local_addr(&self) -> SocketAddr {
        match self {
            Origin::Mio(server) => server.local_addr(),
            #[cfg(feature = "tokio")]
            Origin::Tokio(_, server) => server.local_addr(),
        }
    }

    fn publisher(&self) -> PublishFn {
        match self {
            Origin::Mio(server) => mio_publisher(server),
            #[cfg(feature = "tokio")]
            Origin::Tokio(_, server) => {
                let publisher = server.publisher();
                Box::new(move |batch| publisher.publish(batch).unwrap())
            }
        }
    }

    fn shutdown(self) -> tickwire::net::ServerStats {
        match self {
            Origin::Mio(server) => server.shutdown().unwrap(),
            #[cfg(feature = "tokio")]
            Origin::Tokio(rt, server) => rt.block_on(server.shutdown()),
        }
    }
}

/// A client on free unicast ports, one per line.
fn client(lines: usize) -> DatagramClient {
    let mut config = DatagramClientConfig::new("127.0.0.1:0".parse().unwrap());
    if lines == 2 {
        config.line_b = Some("127.0.0.1:0".parse().unwrap());
    }
    config.heartbeat_interval = Duration::from_millis(100);
    DatagramClient::new(config).unwrap()
}

/// `client` with the retransmission server set (its line sockets, bound
/// before the server existed, stay).
fn with_retransmit(mut client: DatagramClient, server: SocketAddr) -> DatagramClient {
    client.set_retransmit(Some(server));
    client
}

#[derive(Default)]
struct Received {
    bytes: Vec<u8>,
    sequences: Vec<u64>,
    gaps: Vec<Gap>,
    end: Option<u64>,
}

/// Polls until `done` or the deadline (bounded in time and count).
fn receive_until(
    client: &mut DatagramClient,
    got: &mut Received,
    within: Duration,
    done: impl Fn(&Received) -> bool,
) {
    let deadline = Instant::now() + within;
    for _ in 0..1_000_000 {
        if done(got) || Instant::now() >= deadline {
            return;
        }
        client
            .poll(Some(Duration::from_millis(10)), |e| match e {
                DatagramEvent::Frame(f) => {
                    got.sequences.push(f.sequence());
                    got.bytes.extend_from_slice(f.as_bytes());
                }
                DatagramEvent::Gap(g) => got.gaps.push(g),
                DatagramEvent::EndOfSession { sequence } => got.end = Some(sequence),
                _ => {}
            })
            .unwrap();
    }
}

/// Publishes in batches of `batch`, one batch a millisecond (a pace the
/// debug-built test keeps up with without kernel drops), on its own thread.
fn publish_paced(server: &ServerHandle, msgs: Vec<(u64, Payload)>, batch: usize) -> JoinHandle<()> {
    publish_paced_with(mio_publisher(server), msgs, batch)
}

/// [`publish_paced`] through `publish`.
fn publish_paced_with(
    mut publish: PublishFn,
    msgs: Vec<(u64, Payload)>,
    batch: usize,
) -> JoinHandle<()> {
    thread::spawn(move || {
        for chunk in msgs.chunks(batch) {
            publish(chunk.to_vec());
            thread::sleep(Duration::from_millis(1));
        }
    })
}

/// Publishes `n` messages of `seed` paced, receives them on `client`,
/// and checks every data frame arrived once, in order, byte-identical, with
/// no gap.
fn publish_and_receive_whole(
    publish: PublishFn,
    client: &mut DatagramClient,
    seed: u64,
    n: usize,
) -> Received {
    let msgs = messages(seed, n);
    let expected = expected_bytes(&msgs, 1);
    let publishing = publish_paced_with(publish, msgs, 40);
    let mut got = Received::default();
    receive_until(client, &mut got, Duration::from_secs(30), |g| {
        g.sequences.len() >= n
    });
    publishing.join().unwrap();
    assert!(got.gaps.is_empty(), "gaps: {:?}", got.gaps);
    assert_eq!(got.sequences.len(), n);
    assert!(got.sequences.iter().zip(1..).all(|(&s, i)| s == i));
    assert!(
        got.bytes == expected,
        "delivered bytes differ from published"
    );
    got
}

/// One line dropping 10%, duplicating 5% and reordering 10% of the
/// datagrams: every data frame arrives once, in order, byte-identical to
/// what was published; the losses came back by retransmission; the idle
/// Packet-only datagrams keep coming; shutdown's EndOfSession arrives
/// after the last frame.
#[test]
fn one_lossy_line_every_frame_once_in_order() {
    one_lossy_line(|lines| Origin::Mio(server(lines, |_| {})));
}

/// The same with the datagrams sent by the event loop.
#[test]
fn one_lossy_line_sent_by_the_event_loop() {
    one_lossy_line(|lines| {
        Origin::Mio(server(lines, |config| {
            config.mio.datagram_sender = DatagramSender::EventLoop;
        }))
    });
}

/// The same from the tokio server: its datagram output, its idle Packets,
/// its retransmission connections and its EndOfSession.
#[cfg(feature = "tokio")]
#[test]
fn one_lossy_line_from_the_tokio_server() {
    one_lossy_line(|lines| {
        let (rt, server) = common::tokio_server(server_config(lines));
        Origin::Tokio(rt, server)
    });
}

fn one_lossy_line(start: impl FnOnce(&[SocketAddr]) -> Origin) {
    let mut c = client(1);
    let injector = Injector::new(
        11,
        c.local_addrs(),
        &[Faults {
            drop: 0.10,
            duplicate: 0.05,
            reorder: 0.10,
        }],
    );
    let server = start(&injector.inputs);
    c = with_retransmit(c, server.local_addr());
    let n = 20_000;
    let mut got = publish_and_receive_whole(server.publisher(), &mut c, 1, n);
    let stats = c.stats();
    assert!(stats.receiver.requests > 0 && stats.receiver.recovered > 0);
    assert!(stats.receiver.duplicates[0] > 0 && stats.receiver.reordered > 0);
    assert_eq!(stats.connects, 1, "one reused retransmission connection");
    assert_eq!(stats.requests_sent, stats.receiver.requests);
    // Idle: Packet-only datagrams every 100 ms.
    let before = c.stats().receiver.datagrams[0];
    receive_until(&mut c, &mut got, Duration::from_millis(650), |_| false);
    let idle = c.stats().receiver.datagrams[0] - before;
    assert!(idle >= 3, "{idle} idle datagrams in 650 ms");
    // Shutdown: EndOfSession, after the last frame.
    let server_stats = server.shutdown();
    assert_eq!(server_stats.datagrams_dropped, 0);
    assert!(server_stats.datagrams_sent > 0);
    receive_until(&mut c, &mut got, Duration::from_secs(2), |g| {
        g.end.is_some()
    });
    assert_eq!(got.end, Some(n as u64 + 1));
}

/// Lines A and B each drop 20% of the datagrams, independently: the
/// receiver asks for retransmission only where both lost the same
/// datagram, and recovers exactly those frames.
#[test]
fn two_lines_retransmit_only_what_both_lost() {
    let mut c = client(2);
    let lossy = Faults {
        drop: 0.20,
        ..Faults::default()
    };
    let injector = Injector::new(22, c.local_addrs(), &[lossy, lossy]);
    let server = server(&injector.inputs, |_| {});
    c = with_retransmit(c, server.local_addr());
    publish_and_receive_whole(mio_publisher(&server), &mut c, 2, 20_000);

    // The datagrams both lines lost, and their runs (adjacent ones form one
    // hole, asked for in one request).
    let seen = injector.seen();
    let mut lost: std::collections::BTreeMap<u64, (u64, [bool; 2])> = Default::default();
    for s in &seen {
        let entry = lost.entry(s.sequence).or_insert((s.frames, [false; 2]));
        entry.1[s.line] = !s.passed;
    }
    let both: Vec<(u64, u64)> = lost
        .iter()
        .filter(|(_, (_, l))| l[0] && l[1])
        .map(|(&seq, &(frames, _))| (seq, frames))
        .collect();
    let both_frames: u64 = both.iter().map(|&(_, f)| f).sum();
    let runs = both
        .iter()
        .zip(both.iter().skip(1))
        .filter(|((s, f), (next, _))| s + f != *next)
        .count()
        + usize::from(!both.is_empty());
    let stats = c.stats().receiver;
    let datagrams = lost.len();
    eprintln!(
        "{datagrams} data datagrams; lost on both lines: {} ({both_frames} frames) in {runs} runs; \
         requests {}, recovered {}, duplicates {:?}",
        both.len(),
        stats.requests,
        stats.recovered,
        stats.duplicates
    );
    // About 4% of the datagrams (0.2 × 0.2).
    assert!(both.len() * 100 > datagrams * 2 && both.len() * 100 < datagrams * 7);
    let runs = runs as u64;
    assert!(
        stats.requests >= runs && stats.requests <= runs + 2 + runs / 20,
        "requests {} for {runs} runs lost on both lines",
        stats.requests
    );
    assert!(
        stats.recovered >= both_frames && stats.recovered <= both_frames + 200,
        "recovered {} of {both_frames} lost on both lines",
        stats.recovered
    );
    assert!(stats.duplicates[0] > 0 && stats.duplicates[1] > 0);
}

/// The first data sequence a Retransmit request to `server` gets back now:
/// the oldest retained (f of section 9.2).
fn oldest_retained(server: SocketAddr) -> u64 {
    let mut socket = TcpStream::connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = [0u8; 40];
    encode(
        &Payload::Retransmit {
            session_id: 0,
            count: 1,
        },
        1,
        0,
        &mut request,
    )
    .unwrap();
    socket.write_all(&request).unwrap();
    let mut reader = FrameReader::new(socket);
    for _ in 0..10 {
        if let Some(Event::Frame(Message::LoginAccepted(la))) = reader.next_event().unwrap() {
            return la.sequence();
        }
    }
    panic!("no LoginAccepted");
}

/// A range lost on the line and gone from the server's retention is one
/// gap with exactly those bounds; what the retention still holds comes
/// back by retransmission.
#[test]
fn gap_exactly_where_the_retention_no_longer_has_it() {
    let mut c = client(1);
    let injector = Injector::new(33, c.local_addrs(), &[Faults::default()]);
    let server = server(&injector.inputs, |config| config.core.retain = 1000);
    c = with_retransmit(c, server.local_addr());
    let msgs = messages(3, 2600);
    let expected = expected_bytes(&msgs, 1);
    let publisher = server.publisher();
    let mut got = Received::default();
    for chunk in msgs[..500].chunks(50) {
        publisher.publish(chunk.to_vec()).unwrap();
    }
    receive_until(&mut c, &mut got, Duration::from_secs(10), |g| {
        g.sequences.len() >= 500
    });
    assert_eq!(got.sequences.len(), 500);
    // 501..=2500 lost on the line; the retention keeps the last 1,000.
    injector.blackhole.store(true, Ordering::SeqCst);
    for chunk in msgs[500..2500].chunks(50) {
        publisher.publish(chunk.to_vec()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats().frames_published < 2500 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(oldest_retained(server.local_addr()), 1501);
    thread::sleep(Duration::from_millis(20)); // the last blackholed datagrams
    injector.blackhole.store(false, Ordering::SeqCst);
    publisher.publish(msgs[2500..].to_vec()).unwrap();
    receive_until(&mut c, &mut got, Duration::from_secs(10), |g| {
        g.sequences.last() == Some(&2600)
    });
    // The retention when the client's request was read: nothing was
    // published since (the last 100 frames moved it to 1601).
    let oldest = oldest_retained(server.local_addr());
    assert_eq!(oldest, 1601);
    assert_eq!(
        got.gaps,
        [Gap {
            first: 501,
            last: oldest - 1
        }]
    );
    let want: Vec<u64> = (1..=500).chain(oldest..=2600).collect();
    assert_eq!(got.sequences, want);
    // Quotes are 44 bytes and trades 40: pick the expected frames one by one.
    let mut want_bytes = Vec::new();
    let mut at = 0;
    for (i, _) in msgs.iter().enumerate() {
        let len = usize::from(expected[at + 3]);
        let seq = i as u64 + 1;
        if seq <= 500 || seq >= oldest {
            want_bytes.extend_from_slice(&expected[at..at + len]);
        }
        at += len;
    }
    assert!(got.bytes == want_bytes);
    let stats = c.stats();
    assert_eq!(stats.receiver.recovered, 2500 - oldest + 1);
    assert_eq!(stats.receiver.unrecoverable, oldest - 501);
}

/// Receives the datagrams waiting on `socket`: until 100 ms of silence,
/// `max` datagrams, or 400 ms.
fn drain_socket(socket: &UdpSocket, max: usize) -> Vec<Vec<u8>> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_millis(400);
    while out.len() < max && Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => out.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    out
}

/// Section 8 byte for byte, on two raw sockets as lines A and B: each
/// datagram is a Packet (the session, the first data frame's sequence)
/// and whole consecutive frames within the configured size; both lines get
/// the same bytes; the data is the published bytes; an idle interval
/// brings a Packet-only datagram with the next sequence; shutdown a Packet
/// and an EndOfSession, both with the next sequence.
#[test]
fn datagrams_follow_section_8() {
    section_8(true);
}

/// The same with one `send_to` per datagram and line, sent by the first of
/// two event loops.
#[test]
fn datagrams_follow_section_8_unbatched() {
    section_8(false);
}

/// The data frames of `datagrams` (each a Packet, then frames), back to back.
fn data_of(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut data = Vec::new();
    for d in datagrams {
        let mut rest = &d[..];
        while !rest.is_empty() {
            let (m, after) = Message::decode(rest).expect("whole, valid frames");
            if m.is_data() {
                data.extend_from_slice(m.as_bytes());
            }
            rest = after;
        }
    }
    data
}

/// A batch's datagrams leave from the publishing thread, within `publish`:
/// here the event loop never runs, and the datagrams arrive all the same.
#[test]
fn datagrams_leave_from_the_publishing_thread() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        datagrams: Some(DatagramOutputConfig::new(a.local_addr().unwrap())),
        ..ServerConfig::default()
    })
    .unwrap(); // bound, never run
    let msgs = messages(9, 120);
    server.publisher().publish(msgs.clone()).unwrap();
    let got = drain_socket(&a, 100);
    assert!(got.len() >= 4, "{} datagrams", got.len()); // 120 frames in 1,472-byte datagrams
    assert!(data_of(&got) == expected_bytes(&msgs, 1));
}

/// The seams of the event loop's two modes with a datagram output: while
/// the feed flows with no TCP subscriber, the publishers do not wake the
/// loop per batch (it takes them within a millisecond by itself); after a
/// pause it is woken per batch again. A subscriber logging in from 1
/// mid-feed gets every frame once, in order; after the pause, a single
/// batch reaches the loop at once, not at its next timer (heartbeats 5 s
/// apart here).
#[test]
fn a_tcp_subscriber_of_a_datagram_server_misses_nothing() {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = server(&[sink.local_addr().unwrap()], |c| {
        c.core.session.heartbeat_interval = Duration::from_secs(5);
    });
    let published = |server: &ServerHandle, want: u64| {
        let deadline = Instant::now() + Duration::from_secs(2);
        while server.stats().frames_published < want && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        server.stats().frames_published
    };
    let msgs = messages(11, 4_000);
    let publisher = server.publisher();
    // The feed flows with datagram receivers only.
    for chunk in msgs[..1_000].chunks(20) {
        publisher.publish(chunk.to_vec()).unwrap();
        thread::sleep(Duration::from_micros(500));
    }
    assert_eq!(published(&server, 1_000), 1_000);
    // A subscriber logs in from 1 while it flows on.
    let rest = msgs[1_000..].to_vec();
    let p = publisher.clone();
    let feeding = thread::spawn(move || {
        for chunk in rest.chunks(20) {
            p.publish(chunk.to_vec()).unwrap();
            thread::sleep(Duration::from_micros(500));
        }
    });
    let mut client = Client::new(fast_config(server.local_addr())).unwrap();
    let log = drive(&mut client, Duration::from_secs(30), |l| {
        l.frames.len() >= 4_000
    });
    feeding.join().unwrap();
    assert_exactly_once_in_order(&log, &expected_frames(&msgs));
    assert!(log.gaps.is_empty());
    drop(client);
    // The subscriber gone and the feed paused for longer than the loop
    // stays in its lazy mode: a single batch must wake it.
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    publisher.publish(messages(12, 3)).unwrap();
    assert_eq!(published(&server, 4_003), 4_003);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a batch after a pause waited {:?} for the loop",
        started.elapsed()
    );
    // And again with no subscriber ever (the lazy mode from the start).
    for chunk in messages(13, 400).chunks(20) {
        publisher.publish(chunk.to_vec()).unwrap();
    }
    assert_eq!(published(&server, 4_403), 4_403);
}

/// A relay's server (fed by a `RelayFeed`) whose upstream session changes:
/// its datagrams carry the old session's frames, then a Packet and an
/// EndOfSession with the old session's next sequence, then the new
/// session's frames under the new id (protocol section 10.4); with either
/// sending thread.
#[test]
fn a_relay_feed_session_change_reaches_the_datagram_lines_in_order() {
    for sender in [DatagramSender::Publisher, DatagramSender::EventLoop] {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = server(&[a.local_addr().unwrap()], |c| {
            c.core.session.heartbeat_interval = Duration::from_secs(5);
            c.core.session.session_id = 0x01D;
            c.mio.datagram_sender = sender;
        });
        let feed = server.relay_feed();
        let old = messages(21, 30);
        let new = messages(22, 20);
        feed.publish(tickwire::session::Batch::new(expected_bytes(&old, 1)).unwrap())
            .unwrap();
        feed.new_session(0x2E3, 1).unwrap();
        feed.publish(tickwire::session::Batch::new(expected_bytes(&new, 1)).unwrap())
            .unwrap();
        let got = drain_socket(&a, 100);
        // (session of the Packet, data bytes, EndOfSession's sequence)
        let mut seen: Vec<(u64, Vec<u8>, Option<u64>)> = Vec::new();
        for d in &got {
            let (Message::Packet(p), mut rest) = Message::decode(d).unwrap() else {
                panic!("a datagram begins with a Packet");
            };
            let mut data = Vec::new();
            let mut end = None;
            while !rest.is_empty() {
                let (m, after) = Message::decode(rest).unwrap();
                if m.is_data() {
                    data.extend_from_slice(m.as_bytes());
                } else if let Message::EndOfSession(e) = m {
                    end = Some(e.sequence());
                }
                rest = after;
            }
            seen.push((p.session_id(), data, end));
        }
        let old_data: Vec<u8> = seen
            .iter()
            .filter(|s| s.0 == 0x01D)
            .flat_map(|s| s.1.clone())
            .collect();
        let new_data: Vec<u8> = seen
            .iter()
            .filter(|s| s.0 == 0x2E3)
            .flat_map(|s| s.1.clone())
            .collect();
        assert!(
            old_data == expected_bytes(&old, 1),
            "{sender:?}: the old session's frames"
        );
        assert!(
            new_data == expected_bytes(&new, 1),
            "{sender:?}: the new session's frames"
        );
        // The old session ends after its last frame and before the new
        // session's first datagram, with its next sequence (31).
        let ends: Vec<usize> = (0..seen.len()).filter(|&i| seen[i].2.is_some()).collect();
        assert!(!ends.is_empty(), "{sender:?}: no EndOfSession");
        for &i in &ends {
            assert_eq!(seen[i].0, 0x01D);
            assert_eq!(seen[i].2, Some(31));
        }
        let last_old = seen.iter().rposition(|s| s.0 == 0x01D && !s.1.is_empty());
        let first_new = seen.iter().position(|s| s.0 == 0x2E3).unwrap();
        assert!(last_old.unwrap() < ends[0] && ends[ends.len() - 1] < first_new);
        drop(server);
    }
}

/// The lazy/eager seam under a flowing feed, again and again: a TCP
/// subscriber logs in from the next sequence it needs, reads a few hundred
/// frames and hangs up, twenty times, while the feed flows and a lossy
/// datagram receiver recovers from the same server. Every TCP connection's
/// frames follow on from the last one's without a gap or a repeat, and the
/// datagram receiver gets every frame once, in order.
#[test]
fn subscribers_coming_and_going_at_the_lazy_seam_lose_nothing() {
    let mut c = client(1);
    let injector = Injector::new(
        91,
        c.local_addrs(),
        &[Faults {
            drop: 0.05,
            ..Faults::default()
        }],
    );
    let server = server(&injector.inputs, |_| {});
    c = with_retransmit(c, server.local_addr());
    let n = 30_000;
    let msgs = messages(17, n);
    let expected = expected_bytes(&msgs, 1);
    let publishing = publish_paced(&server, msgs, 40);
    let addr = server.local_addr();
    let subscriber = thread::spawn(move || {
        let mut next = 1u64;
        let mut logins = 0;
        let expected_next = |m: &Message<'_>, next: &mut u64| {
            assert_eq!(m.sequence(), *next, "a gap or a repeat across logins");
            *next += 1;
        };
        while next <= n as u64 && logins < 200 {
            logins += 1;
            let mut socket = TcpStream::connect(addr).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut login = [0u8; 24];
            encode(&Payload::Login, next, 0, &mut login).unwrap();
            socket.write_all(&login).unwrap();
            let mut reader = FrameReader::new(socket);
            // A few hundred frames on the first 20 connections, then all.
            let take = if logins <= 20 { 300 } else { usize::MAX };
            let mut taken = 0;
            while taken < take && next <= n as u64 {
                match reader.next_event().unwrap() {
                    Some(Event::Frame(m)) if m.is_data() => {
                        expected_next(&m, &mut next);
                        taken += 1;
                    }
                    Some(e @ (Event::Gap(_) | Event::Duplicate(_) | Event::Discarded(_))) => {
                        panic!("{e:?}")
                    }
                    Some(_) => {} // control frames, the session
                    None => break,
                }
            }
            // Hang up; a pause now and then lets the loop go lazy.
            if logins % 4 == 0 {
                thread::sleep(Duration::from_millis(30));
            }
        }
        (next, logins)
    });
    let mut got = Received::default();
    receive_until(&mut c, &mut got, Duration::from_secs(60), |g| {
        g.sequences.len() >= n
    });
    publishing.join().unwrap();
    let (next, logins) = subscriber.join().unwrap();
    assert_eq!(next, n as u64 + 1, "after {logins} logins");
    assert!(logins > 20);
    assert!(got.gaps.is_empty(), "gaps: {:?}", got.gaps);
    assert!(got.bytes == expected);
}

fn section_8(batch_syscalls: bool) {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let lines = [a.local_addr().unwrap(), b.local_addr().unwrap()];
    let server = server(&lines, |config| {
        config.core.session.heartbeat_interval = Duration::from_millis(250);
        if let Some(d) = &mut config.datagrams {
            d.max_datagram = 128; // a Packet and two frames at most
            d.batch_syscalls = batch_syscalls;
        }
        if !batch_syscalls {
            config.mio.threads = 2; // with a second event loop, the same datagrams
            config.mio.datagram_sender = DatagramSender::EventLoop; // and from the loop
        }
    });
    let msgs = messages(4, 300);
    let expected = expected_bytes(&msgs, 1);
    let publisher = server.publisher();
    for chunk in msgs.chunks(7) {
        publisher.publish(chunk.to_vec()).unwrap();
    }
    let on_a = drain_socket(&a, 10_000);
    let on_b = drain_socket(&b, 10_000);
    assert_eq!(on_a, on_b, "lines A and B carry identical datagrams");
    let mut data = Vec::new();
    let mut next = 1;
    let mut idle = 0;
    for d in &on_a {
        assert!(d.len() <= 128 && d.len() >= 32);
        let mut first = true;
        let mut count = 0;
        let mut rest = &d[..];
        while !rest.is_empty() {
            let (m, after) = Message::decode(rest).expect("whole, valid frames");
            rest = after;
            if first {
                let Message::Packet(p) = m else {
                    panic!("a datagram begins with {m:?}")
                };
                assert_eq!(p.session_id(), 0x5EED);
                assert_eq!(p.sequence(), next);
                first = false;
                continue;
            }
            assert!(m.is_data());
            assert_eq!(m.sequence(), next);
            data.extend_from_slice(m.as_bytes());
            next += 1;
            count += 1;
        }
        assert!(!first);
        if count == 0 {
            idle += 1;
        } else {
            // A third frame never fits in 128 bytes (32 + 3 × 40 > 128).
            assert!(count <= 2);
        }
    }
    assert_eq!(next, 301);
    assert!(data == expected);
    let _ = idle; // an idle Packet may or may not fall in this window
                  // Idle: Packet-only datagrams carrying the next sequence.
    thread::sleep(Duration::from_millis(600));
    let idle = drain_socket(&a, 100);
    assert!(idle.len() >= 2, "{} idle datagrams", idle.len());
    for d in &idle {
        assert_eq!(d.len(), 32);
        let m = Message::decode(d).unwrap().0;
        assert!(matches!(m, Message::Packet(p) if p.sequence() == 301));
    }
    let _ = drain_socket(&b, 100);
    let stats = server.shutdown().unwrap();
    assert!(stats.datagrams_sent >= 2 * on_a.len() as u64);
    assert_eq!(stats.datagrams_dropped, 0);
    if batch_syscalls && cfg!(target_os = "linux") {
        // Several datagrams (both lines' copies) per sendmmsg.
        assert!(
            stats.datagram_syscalls * 3 < stats.datagrams_sent,
            "{stats:?}"
        );
    } else {
        assert_eq!(stats.datagram_syscalls, stats.datagrams_sent);
    }
    let end = drain_socket(&b, 100);
    let last = end.last().expect("the EndOfSession datagram");
    assert_eq!(last.len(), 32 + 24);
    // Three identical copies of it, the last three datagrams.
    assert!(end.len() >= 3);
    assert!(end[end.len() - 3..].iter().all(|d| d == last), "{end:?}");
    let m = Message::decode(&last[..32]).unwrap().0;
    assert!(matches!(m, Message::Packet(p) if p.sequence() == 301));
    let m = Message::decode(&last[32..]).unwrap().0;
    assert!(matches!(m, Message::EndOfSession(e) if e.sequence() == 301));
}

/// A TCP forwarder to `server` whose connections the test can cut.
struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The next bytes from the client are swallowed and the connection cut
    /// (requests lost with their connection); then cleared.
    swallow: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    fn new(server: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (stop2, open2) = (Arc::clone(&stop), Arc::clone(&open));
        let swallow = Arc::new(AtomicBool::new(false));
        let swallow2 = Arc::clone(&swallow);
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(2));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let upstream = TcpStream::connect(server).unwrap();
                for (upward, (mut from, mut to)) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream.try_clone().unwrap(), client.try_clone().unwrap()),
                ]
                .into_iter()
                .enumerate()
                .map(|(i, p)| (i == 0, p))
                {
                    let swallow = Arc::clone(&swallow2);
                    // Each ends when its socket is cut or closed.
                    thread::spawn(move || {
                        use std::io::Read;
                        let mut buf = [0u8; 4096];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if upward && swallow.swap(false, Ordering::SeqCst) {
                                let _ = from.shutdown(std::net::Shutdown::Both);
                                break;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                open2.lock().unwrap().extend([client, upstream]);
            }
        });
        Proxy {
            addr,
            stop,
            swallow,
            open,
            thread: Some(thread),
        }
    }

    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The retransmission connection is cut between two lossy stretches: the
/// client connects again (after its backoff) when it next needs it, and
/// every frame still arrives once, in order.
#[test]
fn retransmission_connection_is_made_again_when_lost() {
    let mut c = client(1);
    let injector = Injector::new(
        55,
        c.local_addrs(),
        &[Faults {
            drop: 0.10,
            ..Faults::default()
        }],
    );
    let server = server(&injector.inputs, |_| {});
    let proxy = Proxy::new(server.local_addr());
    c = with_retransmit(c, proxy.addr);
    let msgs = messages(5, 10_000);
    let expected = expected_bytes(&msgs, 1);
    let mut got = Received::default();
    // Received while published: a client that read 5,000 frames at once
    // would pass its 4,096-frame window and give the oldest holes up.
    let publishing = publish_paced(&server, msgs[..5000].to_vec(), 40);
    receive_until(&mut c, &mut got, Duration::from_secs(20), |g| {
        g.sequences.len() >= 5000
    });
    publishing.join().unwrap();
    assert_eq!(
        got.sequences.len(),
        5000,
        "{:?} {:?} {:?}",
        got.gaps,
        c.stats(),
        c.receiver().expected()
    );
    assert_eq!(c.stats().connects, 1);
    proxy.cut();
    receive_until(&mut c, &mut got, Duration::from_secs(2), |_| false);
    assert!(!c.is_retransmission_connected());
    assert_eq!(c.stats().disconnects, 1);
    let publishing = publish_paced(&server, msgs[5000..].to_vec(), 40);
    receive_until(&mut c, &mut got, Duration::from_secs(20), |g| {
        g.sequences.len() >= 10_000
    });
    publishing.join().unwrap();
    assert!(got.gaps.is_empty(), "gaps: {:?}", got.gaps);
    assert!(got.bytes == expected);
    assert_eq!(c.stats().connects, 2);
}

/// Requests lost with their connection (the proxy swallows them and cuts
/// it) are asked again on the next connection: the hole is filled, not
/// reported as a gap at the deadline.
/// A retransmission connection that carried no request for
/// `retransmit_idle` (1 s here) is closed (the server's slot and Heartbeats freed),
/// and the next loss opens a new one: every frame arrives either side.
#[test]
fn an_idle_retransmission_connection_is_closed_and_made_again() {
    let mut config = DatagramClientConfig::new("127.0.0.1:0".parse().unwrap());
    config.heartbeat_interval = Duration::from_millis(100);
    config.retransmit_idle = Some(Duration::from_secs(1));
    let mut c = DatagramClient::new(config).unwrap();
    let injector = Injector::new(
        77,
        c.local_addrs(),
        &[Faults {
            drop: 0.10,
            ..Faults::default()
        }],
    );
    let server = server(&injector.inputs, |_| {});
    c = with_retransmit(c, server.local_addr());
    let msgs = messages(8, 6_000);
    let expected = expected_bytes(&msgs, 1);
    let mut got = Received::default();
    let publishing = publish_paced(&server, msgs[..3000].to_vec(), 40);
    receive_until(&mut c, &mut got, Duration::from_secs(20), |g| {
        g.sequences.len() >= 3000
    });
    publishing.join().unwrap();
    assert_eq!(got.sequences.len(), 3000, "{:?}", got.gaps);
    assert_eq!(c.stats().connects, 1);
    assert!(c.is_retransmission_connected());
    // Idle (Heartbeats still arrive on it): closed after 1 s, not before.
    receive_until(&mut c, &mut got, Duration::from_millis(150), |_| false);
    assert!(
        c.is_retransmission_connected(),
        "closed before it was idle for 1 s"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while c.is_retransmission_connected() && Instant::now() < deadline {
        receive_until(&mut c, &mut got, Duration::from_millis(50), |_| false);
    }
    assert!(!c.is_retransmission_connected());
    assert_eq!((c.stats().idle_closes, c.stats().disconnects), (1, 1));
    let publishing = publish_paced(&server, msgs[3000..].to_vec(), 40);
    receive_until(&mut c, &mut got, Duration::from_secs(20), |g| {
        g.sequences.len() >= 6000
    });
    publishing.join().unwrap();
    assert!(got.gaps.is_empty(), "gaps: {:?}", got.gaps);
    assert!(got.bytes == expected);
    assert_eq!(c.stats().connects, 2);
}

#[test]
fn requests_lost_with_the_connection_are_asked_again() {
    let mut c = client(1);
    let injector = Injector::new(56, c.local_addrs(), &[Faults::default()]);
    let server = server(&injector.inputs, |_| {});
    let proxy = Proxy::new(server.local_addr());
    c = with_retransmit(c, proxy.addr);
    let msgs = messages(6, 900);
    let expected = expected_bytes(&msgs, 1);
    let mut got = Received::default();
    publish_paced(&server, msgs[..300].to_vec(), 30)
        .join()
        .unwrap();
    receive_until(&mut c, &mut got, Duration::from_secs(10), |g| {
        g.sequences.len() >= 300
    });
    assert_eq!(got.sequences.len(), 300);
    // 301..=600 never arrive on the line; the request for them is lost.
    proxy.swallow.store(true, Ordering::SeqCst);
    injector.blackhole.store(true, Ordering::SeqCst);
    publish_paced(&server, msgs[300..600].to_vec(), 30)
        .join()
        .unwrap();
    thread::sleep(Duration::from_millis(20));
    injector.blackhole.store(false, Ordering::SeqCst);
    publish_paced(&server, msgs[600..].to_vec(), 30)
        .join()
        .unwrap();
    receive_until(&mut c, &mut got, Duration::from_secs(10), |g| {
        g.sequences.len() >= 900 || !g.gaps.is_empty()
    });
    let stats = c.stats();
    assert!(got.gaps.is_empty(), "gaps: {:?} {stats:?}", got.gaps);
    assert_eq!(got.sequences.len(), 900, "{stats:?}");
    assert!(got.bytes == expected);
    assert!(
        !proxy.swallow.load(Ordering::SeqCst),
        "a request was swallowed"
    );
    assert_eq!((stats.connects, stats.disconnects), (2, 1), "{stats:?}");
    assert!(stats.receiver.recovered >= 300, "{stats:?}");
}

/// Section 8.7 over sockets: the server sends to line A only; line B is
/// reported silent after three heartbeat intervals while A's idle
/// Packet-only datagrams keep A alive; when the server is gone, A is silent
/// too and the feed dead.
#[test]
fn silent_line_and_dead_feed_over_sockets() {
    let mut c = client(2);
    let a = c.local_addrs()[0];
    let server = server(&[a], |_| {});
    server.publisher().publish(messages(7, 10)).unwrap();
    let mut events = Vec::new();
    let poll_for = |c: &mut DatagramClient, ms: u64, events: &mut Vec<String>| {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            c.poll(Some(Duration::from_millis(10)), |e| match e {
                DatagramEvent::LineSilent { line } => events.push(format!("silent {line:?}")),
                DatagramEvent::LineAlive { line } => events.push(format!("alive {line:?}")),
                DatagramEvent::FeedDead => events.push("dead".into()),
                _ => {}
            })
            .unwrap();
        }
    };
    poll_for(&mut c, 700, &mut events);
    assert_eq!(events, ["silent B"], "A keeps talking (idle Packets)");
    drop(server);
    poll_for(&mut c, 700, &mut events);
    assert_eq!(events, ["silent B", "silent A", "dead"]);
}

/// The receive buffer: capped at `net.core.rmem_max` by default; past it
/// with `force_recv_buffer` (root: `SO_RCVBUFFORCE`).
#[test]
fn receive_buffer_capped_or_forced() {
    const TEST: &str = "receive_buffer_capped_or_forced";
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let want = (rmem_max + (1 << 20)).max(64 << 20);
    let mut config = DatagramClientConfig::new("127.0.0.1:0".parse().unwrap());
    config.recv_buffer = Some(want);
    let capped = DatagramClient::new(config.clone())
        .unwrap()
        .recv_buffer_sizes()[0];
    if rmem_max > 0 {
        // Linux reports twice the size set.
        assert!(capped <= 2 * rmem_max, "{capped} > 2 × {rmem_max}");
    }
    config.force_recv_buffer = true;
    let forced = DatagramClient::new(config).unwrap().recv_buffer_sizes()[0];
    if forced < want {
        return skip_unprivileged(TEST, &format!("SO_RCVBUFFORCE refused: {forced} bytes"));
    }
    assert!(
        forced >= want && forced > capped,
        "{forced} {capped} {want}"
    );
}

/// The publisher restarts with a new session on the same destinations:
/// the subscriber reports the old session's EndOfSession, then the new
/// session (`NewSession`), whose frames start again at 1.
#[test]
fn a_restarted_publisher_is_a_new_session() {
    let mut c = client(1);
    let injector = Injector::new(66, c.local_addrs(), &[Faults::default()]);
    let first = server(&injector.inputs, |config| {
        config.core.session.session_id = 1
    });
    c = with_retransmit(c, first.local_addr());
    let msgs = messages(7, 200);
    let mut got = Received::default();
    let mut sessions = Vec::new();
    let publisher = first.publisher();
    publisher.publish(msgs[..100].to_vec()).unwrap();
    let mut poll =
        |c: &mut DatagramClient, got: &mut Received, until: &dyn Fn(&Received) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !until(got) && Instant::now() < deadline {
                c.poll(Some(Duration::from_millis(10)), |e| match e {
                    DatagramEvent::Frame(f) => got.sequences.push(f.sequence()),
                    DatagramEvent::Gap(g) => got.gaps.push(g),
                    DatagramEvent::EndOfSession { sequence } => got.end = Some(sequence),
                    DatagramEvent::NewSession {
                        session_id,
                        sequence,
                    } => {
                        sessions.push((session_id, sequence));
                    }
                    _ => {}
                })
                .unwrap();
            }
        };
    poll(&mut c, &mut got, &|g| g.sequences.len() >= 100);
    first.shutdown().unwrap();
    poll(&mut c, &mut got, &|g| g.end.is_some());
    assert_eq!(got.end, Some(101));
    let second = server(&injector.inputs, |config| {
        config.core.session.session_id = 2
    });
    second.publisher().publish(msgs[100..].to_vec()).unwrap();
    poll(&mut c, &mut got, &|g| g.sequences.len() >= 200);
    assert!(got.gaps.is_empty(), "{:?}", got.gaps);
    let want: Vec<u64> = (1..=100).chain(1..=100).collect();
    assert_eq!(got.sequences, want);
    // The first session is not a change: only the second is reported.
    assert_eq!(sessions, [(2, 1)]);
    assert_eq!(c.receiver().session(), Some(2));
}

/// Datagrams built by hand: `frames[i]` data frames in datagram `i`
/// (`usize::MAX`: as many as fit in 65,507 bytes), numbered on from 1, each
/// behind its Packet; and the bytes of all the data frames.
fn datagrams(frames: &[usize]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let msgs = messages(11, frames.iter().map(|&n| n.min(2_000)).sum());
    let mut out = Vec::new();
    let mut next = 1u64;
    for &n in frames {
        let mut d = vec![0u8; 65_507];
        let mut at = encode(&Payload::Packet { session_id: 77 }, next, 1, &mut d).unwrap();
        for _ in 0..n.min(2_000) {
            let (ts, p) = &msgs[(next - 1) as usize];
            let Ok(len) = encode(p, next, *ts, &mut d[at..]) else {
                break;
            };
            at += len;
            next += 1;
        }
        d.truncate(at);
        out.push(d);
    }
    let sent = (next - 1) as usize;
    (out, expected_bytes(&msgs[..sent], 1))
}

/// The batched receive path (`recvmmsg`, 32 datagrams a call into 64 KiB
/// slots) against one `recv` per datagram, on the same datagrams sent
/// before the first poll so that batches are full: the same frames, bytes
/// and discards, a datagram of the largest size (65,507 bytes) whole, an
/// empty datagram and a junk one discarded at the seams between slots, and
/// fewer system calls.
#[test]
fn batched_receive_is_exactly_one_by_one() {
    let mut sizes: Vec<usize> = (0..300).map(|i| 1 + i % 33).collect();
    // The largest datagram: a Packet and as many frames as fit in 65,507.
    sizes[150] = usize::MAX;
    let (dgrams, want_bytes) = datagrams(&sizes);
    assert!(
        dgrams[150].len() > 65_460 && dgrams[150].len() <= 65_507,
        "{}",
        dgrams[150].len()
    );
    let total: usize = dgrams.iter().map(|d| data_frames(d) as usize).sum();
    let mut results = Vec::new();
    for batch in [true, false] {
        let mut config = DatagramClientConfig::new("127.0.0.1:0".parse().unwrap());
        config.batch_syscalls = batch;
        config.recv_buffer = Some(32 << 20);
        let mut c = DatagramClient::new(config).unwrap();
        let to = c.local_addrs()[0];
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for (i, d) in dgrams.iter().enumerate() {
            tx.send_to(d, to).unwrap();
            if i == 40 {
                tx.send_to(&[], to).unwrap();
            }
            if i == 41 {
                tx.send_to(&[0xAB; 100], to).unwrap();
            }
        }
        let mut got = Received::default();
        let mut discarded = 0u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.sequences.len() < total && Instant::now() < deadline {
            c.poll(Some(Duration::from_millis(10)), |e| match e {
                DatagramEvent::Frame(f) => {
                    got.sequences.push(f.sequence());
                    got.bytes.extend_from_slice(f.as_bytes());
                }
                DatagramEvent::Gap(g) => got.gaps.push(g),
                DatagramEvent::Discarded { discard, .. } => discarded += discard.bytes,
                _ => {}
            })
            .unwrap();
        }
        let stats = c.stats();
        assert_eq!(got.sequences.len(), total, "batch {batch}: {stats:?}");
        assert!(got.bytes == want_bytes, "batch {batch}: bytes differ");
        assert!(got.gaps.is_empty(), "batch {batch}: {:?}", got.gaps);
        assert_eq!(discarded, 100, "batch {batch}: the junk datagram, whole");
        assert_eq!(stats.receiver.datagrams[0], 302, "batch {batch}");
        assert_eq!(stats.receiver.discarded_datagrams, 2, "batch {batch}");
        assert_eq!(stats.oversized, 0);
        results.push(stats.recv_calls);
    }
    let (batched, single) = (results[0], results[1]);
    assert!(
        single > 302,
        "one recv per datagram and one that would block: {single}"
    );
    assert!(
        batched * 4 < single,
        "recvmmsg takes many datagrams per call: {batched} calls against {single}"
    );
}

// ---------------------------------------------------------------------------
// Real multicast between network namespaces (root, `ip`, `nft`).

/// Drops `percent`% of the UDP datagrams to `port` entering `ns`, at random
/// (nftables `numgen random`).
fn drop_udp(ns: &Netns, port: u16, percent: u32) -> Result<(), String> {
    ns.nft(&["add", "table", "inet", "tickwire_mc"])?;
    ns.nft(&[
        "add",
        "chain",
        "inet",
        "tickwire_mc",
        "input",
        "{ type filter hook input priority 0; policy accept; }",
    ])?;
    let rule = format!("udp dport {port} numgen random mod 100 < {percent} drop");
    let mut args = vec!["add", "rule", "inet", "tickwire_mc", "input"];
    args.extend(rule.split(' '));
    ns.nft(&args)
}

/// From now on every datagram to `group` entering `ns` is dropped: that
/// line is down.
fn drop_group(ns: &Netns, group: std::net::Ipv4Addr) -> Result<(), String> {
    let rule = format!("ip daddr {group} drop");
    let mut args = vec!["insert", "rule", "inet", "tickwire_mc", "input"];
    args.extend(rule.split(' '));
    ns.nft(&args)
}

/// Multicast on two groups (lines A and B) from this namespace into
/// another over a veth pair, `percent`% of the datagrams dropped at random
/// by nftables on the way in; optionally line A taken down entirely
/// halfway, and optionally the publisher restarted (a new session on the
/// same groups and TCP address) after its first 20,000 frames. The
/// subscriber inside gets every frame once, in order, per session,
/// recovering over TCP what both lines lost.
fn multicast_scenario(test: &str, subnet: u8, percent: u32, a_down: bool, restart: bool) {
    use std::io::BufRead;
    let ns = match Netns::create(&format!("m{subnet}"), subnet) {
        Ok(ns) => ns,
        Err(why) => return skip_unprivileged(test, &why),
    };
    let port = 20_000 + u16::from(subnet) * 8 + u16::from(ns.n % 8);
    if let Err(why) = drop_udp(&ns, port, percent) {
        return skip_unprivileged(test, &why);
    }
    let groups = [
        SocketAddr::from(([239, subnet, ns.n, 1], port)),
        SocketAddr::from(([239, subnet, ns.n, 2], port)),
    ];
    let host = ns.host_ip();
    let tweak = move |listen: SocketAddr, session: u64| {
        move |config: &mut ServerConfig| {
            config.listen = listen;
            config.core.session.session_id = session;
            if let Some(d) = &mut config.datagrams {
                d.interface = Some(host);
                d.loopback = false;
            }
        }
    };
    let mut server = server(&groups, tweak(SocketAddr::from((ns.host_ip(), 0)), 1));
    let (n, n2) = (20_000, if restart { 5_000 } else { 0 });
    let mut child = ChildGuard(
        ns.command(&std::env::current_exe().unwrap())
            .args([
                "--exact",
                "multicast_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(
                "TICKWIRE_MC_CHILD",
                format!(
                    "{} {} {} {} {n} {n2}",
                    groups[0],
                    groups[1],
                    ns.inside_ip(),
                    server.local_addr()
                ),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..1000 {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
        // The harness prints "test multicast_child ... " before it.
        if line.contains("READY") {
            break;
        }
    }
    let msgs = messages(6, n);
    publish_paced(&server, msgs[..n / 2].to_vec(), 40)
        .join()
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    if a_down {
        drop_group(&ns, std::net::Ipv4Addr::new(239, subnet, ns.n, 1)).unwrap();
    }
    publish_paced(&server, msgs[n / 2..].to_vec(), 40)
        .join()
        .unwrap();
    if restart {
        // Every frame of the first session is in before it ends.
        thread::sleep(Duration::from_millis(500));
        let listen = server.local_addr();
        drop(server);
        server = self::server(&groups, tweak(listen, 2));
        // The new session starts where its first Packet seen says: let
        // idle Packets (sequence 1, every 100 ms) announce it first, so
        // that losing the first data datagram on both lines is recovered.
        thread::sleep(Duration::from_millis(350));
        publish_paced(&server, messages(8, n2), 40).join().unwrap();
    }
    for _ in 0..1000 {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
        if let Some(at) = line.find("RESULT") {
            line = line[at..].to_owned();
            break;
        }
    }
    eprintln!("{test}: {}", line.trim());
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.split('=').nth(1).unwrap().parse().unwrap())
        .collect();
    let [delivered, in_order, gaps, requests, recovered, a, b, sessions] = fields[..] else {
        panic!("{line}");
    };
    assert_eq!(delivered, (n + n2) as u64, "{line}");
    assert_eq!(in_order, 1, "{line}");
    assert_eq!(gaps, 0, "{line}");
    assert_eq!(sessions, u64::from(restart), "{line}");
    if a_down {
        assert!(a > 0 && b > a + a / 2, "A down for the second half: {line}");
    }
    // At 10% both lines lose the same datagram many times over; at 1% (a
    // one-in-10,000 coincidence per datagram) rarely, and A/B alone fills
    // the holes.
    if percent >= 10 {
        assert!(
            requests > 0 && recovered > 0,
            "both lines lost some: {line}"
        );
    }
}

/// 10% dropped on both lines, and line A down for the second half.
#[test]
fn multicast_between_namespaces_with_random_drop() {
    multicast_scenario(
        "multicast_between_namespaces_with_random_drop",
        198,
        10,
        true,
        false,
    );
}

/// 1% dropped on both lines, then the publisher restarts: a new session,
/// every frame of both delivered once, in order.
#[test]
fn multicast_between_namespaces_1_percent_then_a_restart() {
    multicast_scenario(
        "multicast_between_namespaces_1_percent_then_a_restart",
        196,
        1,
        false,
        true,
    );
}

/// Child side of the namespace tests: joins the two groups inside the
/// namespace, says READY, receives until every frame of both sessions or
/// 30 s, prints the outcome.
#[test]
fn multicast_child() {
    let Some(spec) = std::env::var_os("TICKWIRE_MC_CHILD") else {
        return;
    };
    let spec = spec.to_str().unwrap().to_owned();
    let parts: Vec<&str> = spec.split(' ').collect();
    let mut config = DatagramClientConfig::new(parts[0].parse().unwrap());
    config.line_b = Some(parts[1].parse().unwrap());
    config.interface = Some(parts[2].parse().unwrap());
    config.retransmit = Some(parts[3].parse().unwrap());
    config.heartbeat_interval = Duration::from_millis(100);
    // From the first frame: should both lines lose the first datagram, the
    // receiver recovers it rather than starting at the first it sees.
    config.receiver.start = Some(1);
    let n: usize = parts[4].parse().unwrap();
    let n2: usize = parts[5].parse().unwrap();
    let mut c = DatagramClient::new(config).unwrap();
    println!("READY");
    let (mut sequences, mut gaps, mut sessions) = (Vec::new(), 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sequences.len() < n + n2 && Instant::now() < deadline {
        c.poll(Some(Duration::from_millis(10)), |e| match e {
            DatagramEvent::Frame(f) => sequences.push(f.sequence()),
            DatagramEvent::Gap(_) => gaps += 1,
            DatagramEvent::NewSession { .. } => sessions += 1,
            _ => {}
        })
        .unwrap();
    }
    let want: Vec<u64> = (1..=n as u64).chain(1..=n2 as u64).collect();
    let s = c.stats().receiver;
    println!(
        "RESULT delivered={} in_order={} gaps={gaps} requests={} recovered={} a={} b={} sessions={sessions}",
        sequences.len(),
        u8::from(sequences == want),
        s.requests,
        s.recovered,
        s.datagrams[0],
        s.datagrams[1]
    );
}
