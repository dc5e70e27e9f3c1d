//! The journal in the servers (issue 24), tried as a user would: `serve
//! --journal` killed with SIGKILL twenty times under a `record --from 1`
//! client; a login from 1 long after the retention served from disk across
//! both seams (disk to memory, replay to live) on the mio and the tokio
//! servers; a full disk while serving (a 1 MiB tmpfs: root, skipped with
//! the reason otherwise, a failure under `TICKWIRE_REQUIRE_PRIVILEGED=1`);
//! a graceful stop that keeps the session, then a start that continues it;
//! a damaged journal stopping a replay with a reason; clear errors at start.
//!
//! `cargo test --features cli,tokio --test journal_server`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

#[path = "common/mod.rs"]
mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tickwire::journal::{FsyncMode, JournalConfig, WriteMode};
use tickwire::net::{JournalSettings, PublishError, Server, ServerConfig};
use tickwire::parse::{Event, SliceParser};
use tickwire::session::CloseReason;
use tickwire::{Message, Payload};

use common::{expected_bytes, messages};
#[path = "common/fs.rs"]
mod fs_util;
use fs_util::{skip_unprivileged, Mount, TempDir};

/// A journal in `dir` with small segments (so replays cross several).
fn settings(dir: &Path, fsync: FsyncMode) -> JournalSettings {
    let mut s = JournalSettings::new(dir);
    s.config = JournalConfig {
        fsync,
        segment_bytes: 64 << 10,
        index_every: 4 << 10,
        ..JournalConfig::default()
    };
    s
}

// ---------------------------------------------------------------------------
// The two servers behind one face.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Mio,
    /// The mio server with its journal written behind
    /// ([`WriteMode::Behind`]): the loop releases batches once written.
    MioBehind,
    Tokio,
}

/// A publisher of either driver.
type Publish = Box<dyn Fn(Vec<(u64, Payload)>) -> Result<(), PublishError> + Send>;

/// A running server of either driver.
enum Running {
    Mio(tickwire::net::ServerHandle),
    Tokio(
        Option<tickwire::tokio::ServerHandle>,
        tokio::runtime::Runtime,
    ),
}

impl Running {
    fn start(driver: Driver, config: ServerConfig) -> std::io::Result<Running> {
        match driver {
            Driver::Mio => Ok(Running::Mio(Server::bind(config)?.spawn()?)),
            Driver::MioBehind => {
                let mut config = config;
                if let Some(journal) = config.journal.as_mut() {
                    journal.config.writes = WriteMode::Behind;
                }
                Ok(Running::Mio(Server::bind(config)?.spawn()?))
            }
            Driver::Tokio => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                let server = rt.block_on(async {
                    tickwire::tokio::Server::bind(config)
                        .await
                        .map(tickwire::tokio::Server::spawn)
                })?;
                Ok(Running::Tokio(Some(server), rt))
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Running::Mio(s) => s.local_addr(),
            Running::Tokio(s, _) => s.as_ref().unwrap().local_addr(),
        }
    }

    fn session_id(&self) -> u64 {
        match self {
            Running::Mio(s) => s.session_id(),
            Running::Tokio(s, _) => s.as_ref().unwrap().session_id(),
        }
    }

    fn next_sequence(&self) -> u64 {
        match self {
            Running::Mio(s) => s.next_sequence(),
            Running::Tokio(s, _) => s.as_ref().unwrap().next_sequence(),
        }
    }

    fn publisher(&self) -> Publish {
        match self {
            Running::Mio(s) => {
                let p = s.publisher();
                Box::new(move |b| p.publish(b))
            }
            Running::Tokio(s, _) => {
                let p = s.as_ref().unwrap().publisher();
                Box::new(move |b| p.publish(b))
            }
        }
    }

    fn stats(&self) -> tickwire::net::ServerStats {
        match self {
            Running::Mio(s) => s.stats(),
            Running::Tokio(s, _) => s.as_ref().unwrap().stats(),
        }
    }

    fn shutdown(self) {
        match self {
            Running::Mio(s) => {
                s.shutdown().unwrap();
            }
            Running::Tokio(mut s, rt) => {
                let s = s.take().unwrap();
                rt.block_on(s.shutdown());
            }
        }
    }
}

fn config(dir: &Path, retain: usize, fsync: FsyncMode) -> ServerConfig {
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        journal: Some(settings(dir, fsync)),
        ..ServerConfig::default()
    };
    config.core.retain = retain;
    config.core.session.heartbeat_interval = Duration::from_millis(200);
    config
}

// ---------------------------------------------------------------------------
// A raw client: Login, then frames until a condition or the deadline.

struct Raw {
    socket: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn login(addr: SocketAddr, from: u64) -> Raw {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut login = [0u8; 24];
        tickwire::encode(&Payload::Login, from, 0, &mut login).unwrap();
        socket.write_all(&login).unwrap();
        Raw {
            socket,
            buf: Vec::new(),
        }
    }

    /// Reads until `done(bytes so far)` or EOF or `limit`; whether the
    /// peer closed.
    fn read_until(&mut self, limit: Duration, mut done: impl FnMut(&[u8]) -> bool) -> bool {
        let start = Instant::now();
        let mut chunk = vec![0u8; 1 << 16];
        while !done(&self.buf) {
            assert!(start.elapsed() < limit, "timed out after {limit:?}");
            match self.socket.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("read: {e}"),
            }
        }
        false
    }
}

/// The frames in `bytes`: (type, sequence, bytes).
fn frames(bytes: &[u8]) -> Vec<(u8, u64, Vec<u8>)> {
    SliceParser::new(bytes)
        .filter_map(|e| match e {
            Event::Frame(m) => Some((m.msg_type() as u8, m.sequence(), m.as_bytes().to_vec())),
            _ => None,
        })
        .collect()
}

/// The data frames of `bytes`, concatenated, and their sequences.
fn data(bytes: &[u8]) -> (Vec<u8>, Vec<u64>) {
    let mut out = Vec::new();
    let mut seqs = Vec::new();
    for event in SliceParser::new(bytes) {
        if let Event::Frame(m) = event {
            if m.msg_type().is_data() {
                out.extend_from_slice(m.as_bytes());
                seqs.push(m.sequence());
            }
        }
    }
    (out, seqs)
}

fn data_count(bytes: &[u8]) -> usize {
    SliceParser::new(bytes)
        .filter(|e| matches!(e, Event::Frame(m) if m.msg_type().is_data()))
        .count()
}

fn has_end_of_session(bytes: &[u8]) -> bool {
    SliceParser::new(bytes).any(|e| matches!(e, Event::Frame(Message::EndOfSession(_))))
}

fn login_accepted(bytes: &[u8]) -> Option<(u64, u64)> {
    SliceParser::new(bytes).find_map(|e| match e {
        Event::Frame(Message::LoginAccepted(la)) => Some((la.session_id(), la.sequence())),
        _ => None,
    })
}

// ---------------------------------------------------------------------------

/// A login from 1, long after the retention dropped the start, while
/// batches keep coming: everything from the journal up to the retention's
/// oldest frame, then the retention, then live data, each frame once, in
/// order, byte for byte; a login in the middle of the journal starts there.
fn replay_from_disk_across_both_seams(driver: Driver, fsync: FsyncMode) {
    let dir = TempDir::new("seams", false);
    let server = Running::start(driver, config(dir.path(), 500, fsync)).unwrap();
    let publish = server.publisher();
    let msgs = messages(24, 16_000);
    let expected = expected_bytes(&msgs, 1);
    let (before, during) = msgs.split_at(10_000);
    for chunk in before.chunks(100) {
        publish(chunk.to_vec()).unwrap();
    }
    assert_eq!(server.next_sequence(), 10_001);
    // Publishing goes on while the client replays.
    let during = during.to_vec();
    let publishing = thread::spawn(move || {
        for chunk in during.chunks(60) {
            publish(chunk.to_vec()).unwrap();
            thread::sleep(Duration::from_micros(300));
        }
    });
    let mut from_1 = Raw::login(server.addr(), 1);
    let mut middle = Raw::login(server.addr(), 4_321);
    from_1.read_until(Duration::from_secs(20), |b| data_count(b) >= 16_000);
    middle.read_until(Duration::from_secs(20), |b| data_count(b) >= 16_000 - 4_320);
    publishing.join().unwrap();
    let (session, first) = login_accepted(&from_1.buf).unwrap();
    assert_eq!((session, first), (server.session_id(), 1));
    let (bytes, seqs) = data(&from_1.buf);
    assert_eq!(seqs, (1..=16_000).collect::<Vec<_>>(), "{driver:?}");
    assert_eq!(bytes, expected, "{driver:?}: byte for byte");
    assert_eq!(login_accepted(&middle.buf).unwrap().1, 4_321);
    let (_, seqs) = data(&middle.buf);
    assert_eq!(seqs, (4_321..=16_000).collect::<Vec<_>>(), "{driver:?}");
    let stats = server.stats();
    assert_eq!(stats.replay_trimmed, 0);
    assert_eq!(stats.closed_for(CloseReason::ReplayFailed), 0);
    // Once publishing stopped: a replay from 1 checks what the first ones
    // did not, and the next one sends the whole disk part (everything
    // below the retention's 500 frames) with sendfile on mio, none on tokio.
    let want = expected_bytes(&msgs, 1);
    let disk_bytes = common::expected_frames(&msgs)[..16_000 - 500]
        .iter()
        .map(Vec::len)
        .sum::<usize>() as u64;
    for round in 0..2 {
        let before = server.stats().file_bytes_sent;
        let mut again = Raw::login(server.addr(), 1);
        again.read_until(Duration::from_secs(20), |b| data_count(b) >= 16_000);
        assert_eq!(
            data(&again.buf).0,
            want,
            "{driver:?}: round {round} byte for byte"
        );
        let sent = server.stats().file_bytes_sent - before;
        match (driver, round) {
            (Driver::Tokio, _) => assert_eq!(sent, 0, "tokio: checked bytes"),
            (_, 1) => assert_eq!(sent, disk_bytes, "mio: all of the disk part"),
            (_, _) => {}
        }
    }
    // A retransmission request from the start is answered from disk too.
    let mut retransmit = TcpStream::connect(server.addr()).unwrap();
    let mut request = [0u8; 40];
    tickwire::encode(
        &Payload::Retransmit {
            session_id: session,
            count: 700,
        },
        2,
        0,
        &mut request,
    )
    .unwrap();
    retransmit.write_all(&request).unwrap();
    let mut raw = Raw {
        socket: retransmit,
        buf: Vec::new(),
    };
    raw.socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    raw.read_until(Duration::from_secs(10), |b| {
        frames(b).iter().any(|f| f.0 == 0x01) // the closing Heartbeat
    });
    let (bytes, seqs) = data(&raw.buf);
    assert_eq!(seqs, (2..=701).collect::<Vec<_>>());
    let want: Vec<u8> = common::expected_frames(&msgs)[1..701].concat();
    assert_eq!(bytes, want, "{driver:?}: the reply byte for byte");
    if driver != Driver::Tokio {
        assert!(
            server.stats().file_bytes_sent > disk_bytes,
            "the reply with sendfile"
        );
    }
    server.shutdown();
}

#[test]
fn a_login_from_1_is_served_from_disk_across_both_seams_on_mio() {
    replay_from_disk_across_both_seams(Driver::Mio, FsyncMode::Never);
}

/// The same with the journal written behind, in both modes the loop
/// releases from (the written mark, with and without interval syncs).
#[test]
fn a_login_from_1_is_served_from_disk_across_both_seams_written_behind() {
    replay_from_disk_across_both_seams(Driver::MioBehind, FsyncMode::Never);
    replay_from_disk_across_both_seams(
        Driver::MioBehind,
        FsyncMode::Interval(Duration::from_millis(5)),
    );
}

#[test]
fn a_login_from_1_is_served_from_disk_across_both_seams_on_tokio() {
    replay_from_disk_across_both_seams(Driver::Tokio, FsyncMode::Never);
}

/// Several mio event loops: a client handed to another loop mid-replay
/// carries its journal reader with it.
#[test]
fn a_login_from_1_is_served_from_disk_with_two_event_loops() {
    let dir = TempDir::new("loops", false);
    let mut cfg = config(dir.path(), 300, FsyncMode::Never);
    cfg.mio.threads = 2;
    let server = Running::start(Driver::Mio, cfg).unwrap();
    let publish = server.publisher();
    let msgs = messages(3, 8_000);
    for chunk in msgs.chunks(200) {
        publish(chunk.to_vec()).unwrap();
    }
    wait_published(&server, 8_000);
    let mut clients: Vec<Raw> = (0..3).map(|_| Raw::login(server.addr(), 1)).collect();
    for c in &mut clients {
        c.read_until(Duration::from_secs(20), |b| data_count(b) >= 8_000);
        assert_eq!(data(&c.buf).0, expected_bytes(&msgs, 1));
    }
    // Verified by now: these go with sendfile, on whichever loop they land.
    let before = server.stats().file_bytes_sent;
    let mut clients: Vec<Raw> = (0..3).map(|_| Raw::login(server.addr(), 1)).collect();
    for c in &mut clients {
        c.read_until(Duration::from_secs(20), |b| data_count(b) >= 8_000);
        assert_eq!(data(&c.buf).0, expected_bytes(&msgs, 1));
    }
    let disk_bytes = expected_bytes(&msgs[..8_000 - 300], 1).len() as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().file_bytes_sent - before < 3 * disk_bytes {
        assert!(Instant::now() < deadline, "{:?}", server.stats());
        thread::sleep(Duration::from_millis(10));
    }
    server.shutdown();
}

/// A relay with a journal: restarted, it serves the same session, what it
/// held from disk, and does not journal twice what its upstream sends it
/// again.
#[test]
fn a_relay_restarted_on_its_journal_serves_the_same_session_from_disk() {
    use tickwire::net::{Relay, RelayConfig};
    let dir = TempDir::new("relay", false);
    let origin = Running::start(
        Driver::Mio,
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let publish = origin.publisher();
    let msgs = messages(11, 3_000);
    let expected = expected_bytes(&msgs, 1);
    publish(msgs[..2_000].to_vec()).unwrap();
    let start_relay = || {
        let mut config =
            RelayConfig::new(&[origin.addr()], "127.0.0.1:0".parse().unwrap()).unwrap();
        config.server.core.retain = 100;
        config.server.journal = Some(settings(dir.path(), FsyncMode::Never));
        Relay::start(config).unwrap()
    };
    let relay = start_relay();
    let mut client = Raw::login(relay.local_addr(), 1);
    client.read_until(Duration::from_secs(10), |b| data_count(b) >= 2_000);
    relay.shutdown().unwrap();
    publish(msgs[2_000..].to_vec()).unwrap();
    let relay = start_relay();
    assert_eq!(relay.session_id(), origin.session_id());
    let mut client = Raw::login(relay.local_addr(), 1);
    client.read_until(Duration::from_secs(10), |b| data_count(b) >= 3_000);
    assert_eq!(data(&client.buf).0, expected, "byte for byte, once each");
    relay.shutdown().unwrap();
    let report = tickwire::journal::check(dir.path()).unwrap();
    assert!(!report.is_damaged());
    assert_eq!(report.sessions.len(), 1);
    assert_eq!(report.sessions[0].frames, 3_000, "nothing journaled twice");
    origin.shutdown();
}

#[test]
fn fsync_always_serves_the_same_on_both_drivers() {
    replay_from_disk_across_both_seams(Driver::Mio, FsyncMode::Always);
    replay_from_disk_across_both_seams(Driver::Tokio, FsyncMode::Always);
}

/// A graceful stop with a journal sends no EndOfSession: the clients are
/// closed after what was queued for them, the next start serves the same
/// session from the next sequence, and a login from 1 gets both runs'
/// frames with no gap. With `end_session_on_stop`, EndOfSession is sent.
fn a_graceful_stop_keeps_the_session(driver: Driver) {
    let dir = TempDir::new("stop", false);
    let msgs = messages(5, 300);
    let expected = expected_bytes(&msgs, 1);
    let server = Running::start(driver, config(dir.path(), 100, FsyncMode::default())).unwrap();
    let session = server.session_id();
    let publish = server.publisher();
    publish(msgs[..200].to_vec()).unwrap();
    let mut live = Raw::login(server.addr(), 1);
    live.read_until(Duration::from_secs(5), |b| data_count(b) >= 200);
    server.shutdown();
    assert!(live.read_until(Duration::from_secs(5), |_| false), "closed");
    assert!(
        !has_end_of_session(&live.buf),
        "{driver:?}: no EndOfSession"
    );

    let server = Running::start(driver, config(dir.path(), 100, FsyncMode::default())).unwrap();
    assert_eq!(server.session_id(), session, "{driver:?}: the same session");
    assert_eq!(server.next_sequence(), 201);
    server.publisher()(msgs[200..].to_vec()).unwrap();
    let mut again = Raw::login(server.addr(), 1);
    again.read_until(Duration::from_secs(5), |b| data_count(b) >= 300);
    assert_eq!(login_accepted(&again.buf), Some((session, 1)));
    let (bytes, _) = data(&again.buf);
    assert_eq!(bytes, expected, "{driver:?}");
    server.shutdown();

    // Told to end the session: EndOfSession, and the next start is a new one.
    let mut cfg = config(dir.path(), 100, FsyncMode::default());
    cfg.journal.as_mut().unwrap().end_session_on_stop = true;
    let server = Running::start(driver, cfg).unwrap();
    assert_eq!(server.session_id(), session);
    let mut live = Raw::login(server.addr(), 0);
    live.read_until(Duration::from_secs(5), |b| login_accepted(b).is_some());
    server.shutdown();
    live.read_until(Duration::from_secs(5), has_end_of_session);
    assert!(has_end_of_session(&live.buf));
    // Ended: the next start is a new session, from 1.
    let server = Running::start(driver, config(dir.path(), 100, FsyncMode::default())).unwrap();
    assert_ne!(server.session_id(), session, "{driver:?}: a new session");
    assert_eq!(server.next_sequence(), 1);
    server.shutdown();
}

#[test]
fn a_graceful_stop_keeps_the_session_on_mio() {
    a_graceful_stop_keeps_the_session(Driver::Mio);
    a_graceful_stop_keeps_the_session(Driver::MioBehind);
}

#[test]
fn a_graceful_stop_keeps_the_session_on_tokio() {
    a_graceful_stop_keeps_the_session(Driver::Tokio);
}

/// Damage in the middle of the journal: a replay that reaches it is closed
/// with a reason (`ReplayFailed`), having been sent only whole frames
/// before it: never a silent gap.
#[test]
fn damage_in_the_middle_stops_a_replay_with_a_reason() {
    damage_in_the_middle(Driver::Mio);
}

/// The same on tokio, whose replays read the journal outside the server's
/// lock (the failure comes back with the read).
#[test]
fn damage_in_the_middle_stops_a_tokio_replay_with_a_reason() {
    damage_in_the_middle(Driver::Tokio);
}

fn damage_in_the_middle(driver: Driver) {
    let dir = TempDir::new("damage", false);
    let msgs = messages(8, 6_000);
    {
        let server =
            Running::start(Driver::Mio, config(dir.path(), 100, FsyncMode::Never)).unwrap();
        let publish = server.publisher();
        for chunk in msgs.chunks(100) {
            publish(chunk.to_vec()).unwrap();
        }
        server.shutdown();
    }
    // A byte of the second segment flipped.
    let mut segments: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "twr"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let mut bytes = fs::read(&segments[1]).unwrap();
    bytes[1000] ^= 0x40;
    fs::write(&segments[1], &bytes).unwrap();
    let server = Running::start(driver, config(dir.path(), 100, FsyncMode::Never)).unwrap();
    let mut client = Raw::login(server.addr(), 1);
    assert!(
        client.read_until(Duration::from_secs(10), |_| false),
        "closed"
    );
    let (_, seqs) = data(&client.buf);
    assert!(!seqs.is_empty() && seqs.len() < 6_000);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().closed_for(CloseReason::ReplayFailed) == 0 {
        assert!(Instant::now() < deadline, "{:?}", server.stats());
        thread::sleep(Duration::from_millis(10));
    }
    server.shutdown();
}

// ---------------------------------------------------------------------------
// Write-ahead, from outside.

/// Every frame a live client has received is in the journal's files at
/// that moment (read by a reader of its own, not the server's), while the
/// publisher runs at full rate and segments roll.
fn clients_get_only_what_the_journal_holds(driver: Driver) {
    let dir = TempDir::new("ahead", false);
    let mut cfg = config(dir.path(), 1_000, FsyncMode::Never);
    cfg.journal.as_mut().unwrap().config.segment_bytes = 1 << 20;
    let server = Running::start(driver, cfg).unwrap();
    let mut live = Raw::login(server.addr(), 0);
    live.read_until(Duration::from_secs(5), |b| login_accepted(b).is_some());
    let publish = server.publisher();
    const N: u64 = 150_000;
    let msgs = messages(11, N as usize);
    let publishing = thread::spawn(move || {
        for chunk in msgs.chunks(64) {
            publish(chunk.to_vec()).unwrap();
        }
    });
    let (mut parsed, mut last, mut checks) = (0usize, 0u64, 0u32);
    let deadline = Instant::now() + Duration::from_secs(60);
    while last < N {
        assert!(
            Instant::now() < deadline,
            "{driver:?}: {last} of {N} frames"
        );
        let before = live.buf.len();
        live.read_until(Duration::from_secs(10), |b| b.len() > before);
        for event in SliceParser::new(&live.buf[parsed..]) {
            match event {
                Event::Frame(m) => {
                    parsed += m.len();
                    if m.msg_type().is_data() {
                        assert_eq!(m.sequence(), last + 1, "{driver:?}: in order");
                        last = m.sequence();
                    }
                }
                // Reported before the LoginAccepted (no bytes of its own);
                // a gap shows in the order check above.
                Event::NewSession { .. } | Event::Gap(_) => {}
                _ => break, // the rest of a frame: read more
            }
        }
        if last == 0 {
            continue;
        }
        let mut reader = tickwire::journal::JournalReader::open(dir.path(), last).unwrap();
        let mut buf = Vec::new();
        let got = reader.read(u64::MAX, 1 << 12, &mut buf).unwrap();
        let first = SliceParser::new(&buf).find_map(|e| match e {
            Event::Frame(m) => Some(m.sequence()),
            _ => None,
        });
        assert!(
            got.is_some() && first == Some(last),
            "{driver:?}: frame {last} reached a client before the journal held it ({first:?})"
        );
        checks += 1;
    }
    publishing.join().unwrap();
    assert!(checks >= 10, "{driver:?}: only {checks} checks");
    server.shutdown();
}

#[test]
fn clients_get_only_what_the_journal_holds_on_every_driver() {
    clients_get_only_what_the_journal_holds(Driver::Mio);
    clients_get_only_what_the_journal_holds(Driver::MioBehind);
    clients_get_only_what_the_journal_holds(Driver::Tokio);
}

// ---------------------------------------------------------------------------
// A full disk while serving (root: a 1 MiB tmpfs).

fn a_full_disk_while_serving(driver: Driver) {
    const TEST: &str = "a_full_disk_fails_publish_and_the_session_goes_on_with_no_gap";
    let fs_ = match Mount::small_tmpfs() {
        Ok(m) => m,
        Err(why) => return skip_unprivileged(TEST, &why),
    };
    let filler = fs_.0.path().join("filler");
    fs::write(&filler, vec![1u8; 256 << 10]).unwrap();
    let dir = fs_.0.path().join("journal");
    let server = Running::start(driver, config(&dir, 1_000, FsyncMode::Never)).unwrap();
    let session = server.session_id();
    let publish = server.publisher();
    let mut live = Raw::login(server.addr(), 0);
    live.read_until(Duration::from_secs(5), |b| login_accepted(b).is_some());
    let msgs = messages(9, 100);
    let mut published = 0u64;
    let refused = loop {
        match publish(msgs.clone()) {
            Ok(()) => published += 100,
            Err(e) => break e,
        }
        assert!(published < 100_000, "the disk never filled");
    };
    assert!(
        matches!(&refused, PublishError::Journal(why) if why.contains("No space left")),
        "{refused}"
    );
    assert_eq!(server.next_sequence(), published + 1, "no number consumed");
    // Still full: still refused; the server is up and the live client with it.
    assert!(publish(msgs.clone()).is_err());
    let mut probe = Raw::login(server.addr(), 0);
    probe.read_until(Duration::from_secs(5), |b| login_accepted(b).is_some());
    // Space returns: the same session goes on, no gap.
    fs::remove_file(&filler).unwrap();
    publish(msgs.clone()).unwrap();
    published += 100;
    live.read_until(Duration::from_secs(10), |b| {
        data(b).1.last().copied() == Some(published)
    });
    let (_, seqs) = data(&live.buf);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "{driver:?}: no gap"
    );
    assert_eq!(server.session_id(), session);
    let mut from_1 = Raw::login(server.addr(), 1);
    from_1.read_until(Duration::from_secs(10), |b| {
        data_count(b) as u64 >= published
    });
    assert_eq!(data(&from_1.buf).1, (1..=published).collect::<Vec<_>>());
    server.shutdown();
}

#[test]
fn a_full_disk_fails_publish_and_the_session_goes_on_with_no_gap() {
    a_full_disk_while_serving(Driver::Mio);
    a_full_disk_while_serving(Driver::MioBehind);
    a_full_disk_while_serving(Driver::Tokio);
}

// ---------------------------------------------------------------------------
// The command line.

fn tickwire() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tickwire"))
}

/// A port on 127.0.0.1 free now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) takes plain integers and touches no memory of ours;
    // the pid is our own child's, not yet reaped.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill failed");
}

fn wait_for(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        thread::sleep(Duration::from_millis(5));
    }
    panic!("child still running after {limit:?}");
}

/// `serve --journal` on `port`, once it listens.
fn serve(dir: &Path, port: u16, extra: &[&str]) -> Proc {
    let mut args = vec!["--rate", "20000", "--retain", "2000", "--fsync", "never"];
    args.extend(["--journal-segment", "256K"]);
    args.extend(extra);
    serve_journal(dir, port, &args)
}

/// SIGKILL at twenty random moments under `record --from 1`: the recording
/// holds every sequence from 1 to its end exactly once, in one session,
/// and its data frames are byte-identical to what `record --from 1 --count
/// N` gets from the journal after the last restart.
#[test]
fn serve_killed_twenty_times_under_a_recorder_loses_and_repeats_nothing() {
    killed_twenty_times_under_a_recorder(&[]);
}

/// The same with the journal written behind (`--journal-writes behind`).
#[test]
fn serve_written_behind_killed_twenty_times_under_a_recorder_loses_and_repeats_nothing() {
    killed_twenty_times_under_a_recorder(&["--journal-writes", "behind"]);
}

fn killed_twenty_times_under_a_recorder(extra: &[&str]) {
    let tmp = TempDir::new(&format!("kill{}", extra.len()), false);
    fs::create_dir_all(tmp.path()).unwrap();
    let journal = tmp.path().join("journal");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = serve(&journal, port, extra);
    let recording = tmp.path().join("rec.twr");
    let mut recorder = Proc(
        tickwire()
            .args(["record", "--connect", &addr, "--from", "1", "-o"])
            .arg(&recording)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut rng = fastrand::Rng::with_seed(24);
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(rng.u64(50..350)));
        server.0.kill().unwrap(); // SIGKILL
        server.0.wait().unwrap();
        server = serve(&journal, port, extra);
    }
    // Let the recorder catch up with the last run, then stop it.
    thread::sleep(Duration::from_millis(800));
    signal(&recorder.0, libc::SIGINT);
    assert!(wait_for(&mut recorder.0, Duration::from_secs(10)).success());
    let recorded = fs::read(&recording).unwrap();
    let logins: Vec<_> = frames(&recorded)
        .into_iter()
        .filter(|f| f.0 == 0x03)
        .collect();
    assert_eq!(logins.len(), 1, "one session: one LoginAccepted");
    let (bytes, seqs) = data(&recorded);
    let n = seqs.len() as u64;
    assert!(n > 20_000, "recorded only {n}");
    assert_eq!(
        seqs,
        (1..=n).collect::<Vec<_>>(),
        "every sequence once, in order"
    );
    // What the journal serves after the last restart, byte for byte.
    let fresh = tmp.path().join("fresh.twr");
    let status = tickwire()
        .args(["record", "--connect", &addr, "--from", "1", "--count"])
        .arg(n.to_string())
        .arg("-o")
        .arg(&fresh)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (fresh_bytes, _) = data(&fs::read(&fresh).unwrap());
    assert_eq!(fresh_bytes.len(), bytes.len());
    assert!(fresh_bytes == bytes, "byte-identical");
    // The journal holds one session and checks clean (a torn tail at most).
    signal(&server.0, libc::SIGTERM);
    assert!(wait_for(&mut server.0, Duration::from_secs(10)).success());
    let out = tickwire().arg("journal").arg(&journal).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.matches("\nsession ").count(), 1, "{listing}");
}

/// SIGTERM stops `serve --journal` with exit status 0 and no EndOfSession,
/// and the next start continues the session: a client from 1 sees one
/// session, every sequence once, across the stop; `--end-session` sends
/// EndOfSession.
#[test]
fn serve_stopped_by_sigterm_continues_its_session_at_the_next_start() {
    stopped_by_a_signal_continues_its_session(libc::SIGTERM, "sigterm");
}

/// SIGINT (Ctrl-C): the same.
#[test]
fn serve_stopped_by_sigint_continues_its_session_at_the_next_start() {
    stopped_by_a_signal_continues_its_session(libc::SIGINT, "sigint");
}

fn stopped_by_a_signal_continues_its_session(sig: libc::c_int, name: &str) {
    let tmp = TempDir::new(name, false);
    fs::create_dir_all(tmp.path()).unwrap();
    let journal = tmp.path().join("journal");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = serve(&journal, port, &[]);
    let mut client = Raw::login(addr, 0);
    client.read_until(Duration::from_secs(5), |b| data_count(b) > 100);
    let (session, _) = login_accepted(&client.buf).unwrap();
    signal(&server.0, sig);
    let status = wait_for(&mut server.0, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        client.read_until(Duration::from_secs(5), |_| false),
        "closed"
    );
    assert!(!has_end_of_session(&client.buf), "{name} ends no session");
    let last = *data(&client.buf).1.last().unwrap();
    // The next start: a client from 1 gets the first run from disk and
    // the second's, one session, every sequence once.
    let mut server = serve(&journal, port, &[]);
    let mut client = Raw::login(addr, 1);
    client.read_until(Duration::from_secs(10), |b| {
        data_count(b) as u64 > last + 200
    });
    let accepted: Vec<_> = SliceParser::new(&client.buf)
        .filter_map(|e| match e {
            Event::Frame(Message::LoginAccepted(la)) => Some(la.session_id()),
            _ => None,
        })
        .collect();
    assert_eq!(accepted, vec![session], "one session");
    let seqs = data(&client.buf).1;
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "every sequence once"
    );
    signal(&server.0, sig);
    let status = wait_for(&mut server.0, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        client.read_until(Duration::from_secs(5), |_| false),
        "closed"
    );
    assert!(!has_end_of_session(&client.buf), "{name} ends no session");
    // With --end-session, the signal sends it.
    let last = *data(&client.buf).1.last().unwrap();
    let mut server = serve(&journal, port, &["--end-session"]);
    let mut client = Raw::login(addr, last + 1);
    client.read_until(Duration::from_secs(5), |b| data_count(b) > 100);
    assert_eq!(login_accepted(&client.buf), Some((session, last + 1)));
    assert_eq!(data(&client.buf).1[0], last + 1, "no gap");
    signal(&server.0, sig);
    let status = wait_for(&mut server.0, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}");
    client.read_until(Duration::from_secs(5), has_end_of_session);
    assert!(has_end_of_session(&client.buf), "--end-session sends it");
}

/// Each file in `dir`: name, size, modification time.
fn listing(dir: &Path) -> Vec<(std::ffi::OsString, u64, std::time::SystemTime)> {
    let mut all: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (e.file_name(), meta.len(), meta.modified().unwrap())
        })
        .collect();
    all.sort();
    all
}

/// `serve --journal DIR` with DIR on a read-only bind mount (root writes
/// through file modes, hence the mount): exit status non-zero within
/// seconds, an error naming the directory and saying it is read-only,
/// nothing in the directory changed, nothing listened.
#[test]
fn serve_on_a_read_only_journal_directory_fails_clearly_untouched() {
    const TEST: &str = "serve_on_a_read_only_journal_directory_fails_clearly_untouched";
    let source = TempDir::new("ro-serve", false);
    let journal = source.path().join("journal");
    let out = tickwire()
        .args(["serve", "--listen", "127.0.0.1:0", "--rate", "2000"])
        .args(["--duration", "1", "--journal"])
        .arg(&journal)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = listing(&journal);
    assert!(before.len() >= 3, "a journal: {before:?}");
    let src = source.path().to_str().unwrap().to_owned();
    let ro = match Mount::new("ro-serve-mnt", &["--bind", &src]) {
        Ok(m) => m,
        Err(why) => return skip_unprivileged(TEST, &why),
    };
    let target = ro.0.arg().to_owned();
    if let Err(why) = fs_util::run("mount", &["-o", "remount,bind,ro", &target]) {
        return skip_unprivileged(TEST, &why);
    }
    let dir = ro.path().join("journal");
    let mut child = tickwire()
        .args(["serve", "--listen", "127.0.0.1:0", "--journal"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let mut child = Proc(child);
    let status = wait_for(&mut child.0, Duration::from_secs(5));
    let (mut out, mut err) = (String::new(), String::new());
    stdout.read_to_string(&mut out).unwrap();
    stderr.read_to_string(&mut err).unwrap();
    assert!(!status.success(), "{status}");
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(!out.contains("listening"), "{out}");
    assert!(err.contains(dir.to_str().unwrap()), "names it: {err}");
    assert!(err.contains("cannot be written"), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!err.contains("cannot listen"), "{err}");
    assert_eq!(listing(&journal), before, "nothing changed");
    drop(ro);
}

/// A directory that is not this server's journal: a clear error, exit
/// status 1, nothing touched.
#[test]
fn serve_refuses_a_foreign_journal_untouched() {
    let tmp = TempDir::new("foreign", false);
    let dir = tmp.path().join("j");
    fs::create_dir_all(&dir).unwrap();
    let stray = dir.join("0000000001-00000000000000aa-00000000000000000001.twr");
    fs::write(&stray, b"not frames").unwrap();
    let out = tickwire()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "1",
            "--journal",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without a JOURNAL manifest"), "{err}");
    assert!(!err.contains("cannot listen"), "{err}");
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "nothing added: {names:?}");
    assert_eq!(fs::read(&stray).unwrap(), b"not frames");
    // A fixed other server name would be another error; a flag without
    // --journal is refused by the parser.
    let out = tickwire()
        .args(["serve", "--fsync", "always", "--duration", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

// ---------------------------------------------------------------------------
// Issue 24, point 5: a journaled relay resumes upstream from its journal.

/// `tickwire relay --journal DIR` of `upstream` on `port`, once it listens.
fn relay_cli(dir: &Path, upstream: SocketAddr, port: u16) -> Proc {
    let mut child = tickwire()
        .args(["relay", "--connect", &upstream.to_string()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--retain", "500", "--fsync", "never"])
        .args(["--journal-segment", "64K", "--journal"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening "), "{line:?}");
    Proc(child)
}

/// A client of the relay on `port`, from 1, on a thread: its log once it
/// has `want` data frames (bounded by 60 s); `got` counts them meanwhile.
fn relay_client(
    port: u16,
    want: usize,
) -> (thread::JoinHandle<common::Log>, std::sync::Arc<AtomicU64>) {
    let got = std::sync::Arc::new(AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&got);
    let thread = thread::spawn(move || {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut config = common::fast_config(addr);
        config.heartbeat_interval = Duration::from_millis(500);
        let mut client = tickwire::net::Client::new(config).unwrap();
        common::drive(&mut client, Duration::from_secs(60), |log| {
            counter.store(log.frames.len() as u64, Ordering::SeqCst);
            log.frames.len() >= want
        })
    });
    (thread, got)
}

/// Polls `done` every 20 ms until it holds, failing after `limit`.
fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A relay with a journal, killed with SIGKILL mid-stream while the origin
/// (with its own journal) keeps publishing, then started again on the same
/// journal: it asks its upstream from its journal's last sequence + 1 in
/// the same session (the origin sends it exactly what it lacked, not the
/// whole day), its client (reconnecting on its own) gets every sequence
/// once, byte for byte, in one session, and the relay's journal checks
/// clean with one session and no hole.
#[test]
fn a_relay_killed_mid_stream_resumes_upstream_from_its_journal() {
    let tmp = TempDir::new("relay-kill", false);
    let origin = Running::start(
        Driver::Mio,
        config(&tmp.path().join("origin"), 100_000, FsyncMode::Never),
    )
    .unwrap();
    let relay_dir = tmp.path().join("relay");
    let port = free_port();
    let n = 30_000;
    let msgs = messages(51, n);
    // 10 k frames/s: the relay is down for a good part of a second.
    let publish = origin.publisher();
    let publisher = common::publish_paced(
        move |batch| publish(batch).unwrap(),
        msgs.clone(),
        50,
        Duration::from_millis(5),
    );
    let mut relay = relay_cli(&relay_dir, origin.addr(), port);
    let (client, got) = relay_client(port, n);
    eventually(
        "the relay's client receives",
        Duration::from_secs(20),
        || got.load(Ordering::SeqCst) > 5_000,
    );
    relay.0.kill().unwrap(); // SIGKILL
    relay.0.wait().unwrap();
    eventually(
        "the origin drops the relay",
        Duration::from_secs(10),
        || origin.stats().clients == 0,
    );
    let sent_before = origin.stats().frames_sent;
    let report = tickwire::journal::check(&relay_dir).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    assert_eq!(report.sessions.len(), 1);
    let held_end = report.sessions[0].end;
    assert!(held_end > 5_000);
    thread::sleep(Duration::from_millis(400)); // the origin goes on
    let mut relay = relay_cli(&relay_dir, origin.addr(), port);
    publisher.join().unwrap();
    let log = client.join().unwrap();
    common::assert_exactly_once_in_order(&log, &common::expected_frames(&msgs));
    assert!(log.gaps.is_empty(), "no gap: {:?}", log.gaps);
    assert_eq!(
        log.sessions,
        [(origin.session_id(), 1)],
        "one session, no NewSession after the restart"
    );
    // The origin sent the restarted relay what it lacked, not the whole day.
    let lacked = n as u64 + 1 - held_end;
    eventually("the relay caught up", Duration::from_secs(10), || {
        origin.stats().frames_sent - sent_before >= lacked
    });
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        origin.stats().frames_sent - sent_before,
        lacked,
        "asked from {held_end}, the journal's last + 1"
    );
    signal(&relay.0, libc::SIGTERM);
    assert!(wait_for(&mut relay.0, Duration::from_secs(10)).success());
    let report = tickwire::journal::check(&relay_dir).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    assert_eq!(report.sessions.len(), 1, "one session");
    let s = &report.sessions[0];
    assert_eq!(
        (s.session_id, s.first, s.end, s.frames, s.holes),
        (origin.session_id(), 1, n as u64 + 1, n as u64, 0),
        "every frame once, no hole"
    );
    let out = tickwire().arg("journal").arg(&relay_dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    origin.shutdown();
}

/// The origin restarted as a new session (no journal of its own) while a
/// journaled relay was down: the relay, started again, resumes its
/// journal's session upstream, is answered with another session, starts a
/// new session in its journal, and its client sees NewSession and the new
/// session's frames from 1.
#[test]
fn a_relay_restarted_after_its_origin_started_a_new_session_starts_one_too() {
    let tmp = TempDir::new("relay-new", false);
    let relay_dir = tmp.path().join("relay");
    let (origin_port, port) = (free_port(), free_port());
    let origin_addr: SocketAddr = format!("127.0.0.1:{origin_port}").parse().unwrap();
    let origin_config = || {
        let mut config = ServerConfig {
            listen: origin_addr,
            ..ServerConfig::default()
        };
        config.core.session.heartbeat_interval = Duration::from_millis(200);
        config
    };
    let first = Running::start(Driver::Mio, origin_config()).unwrap();
    let (msgs_a, msgs_b) = (messages(61, 1_000), messages(62, 500));
    first.publisher()(msgs_a.clone()).unwrap();
    let mut relay = relay_cli(&relay_dir, origin_addr, port);
    let (client, got) = relay_client(port, 1_500);
    eventually(
        "the relay's client receives",
        Duration::from_secs(20),
        || got.load(Ordering::SeqCst) == 1_000,
    );
    relay.0.kill().unwrap(); // SIGKILL
    relay.0.wait().unwrap();
    let old = first.session_id();
    first.shutdown();
    let second = Running::start(Driver::Mio, origin_config()).unwrap();
    assert_ne!(second.session_id(), old);
    second.publisher()(msgs_b.clone()).unwrap();
    let mut relay = relay_cli(&relay_dir, origin_addr, port);
    let log = client.join().unwrap();
    assert_eq!(
        log.sessions,
        [(old, 1), (second.session_id(), 1)],
        "the client sees the new session"
    );
    let seqs: Vec<u64> = log.frames.iter().map(|f| f.0).collect();
    let want: Vec<u64> = (1..=1_000).chain(1..=500).collect();
    assert_eq!(seqs, want);
    let bytes: Vec<Vec<u8>> = log.frames.iter().map(|f| f.1.clone()).collect();
    let mut expected = common::expected_frames(&msgs_a);
    expected.extend(common::expected_frames(&msgs_b));
    assert!(bytes == expected, "byte for byte");
    signal(&relay.0, libc::SIGTERM);
    assert!(wait_for(&mut relay.0, Duration::from_secs(10)).success());
    let report = tickwire::journal::check(&relay_dir).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    let sessions: Vec<_> = report
        .sessions
        .iter()
        .map(|s| (s.session_id, s.first, s.end, s.frames))
        .collect();
    assert_eq!(
        sessions,
        [(old, 1, 1_001, 1_000), (second.session_id(), 1, 501, 500)],
        "a new session in the relay's journal"
    );
    second.shutdown();
}

/// Retention by age on a quiet journal: the segments older than it go
/// while nothing is published (the server's retention thread), the active
/// one stays, and a login from 1 then starts at the oldest frame left.
fn retention_by_age_on_a_quiet_journal(driver: Driver) {
    let dir = TempDir::new("age", false);
    let mut config = config(dir.path(), 100, FsyncMode::Never);
    if let Some(journal) = config.journal.as_mut() {
        journal.config.retain_age = Some(Duration::from_secs(1));
    }
    let server = Running::start(driver, config).unwrap();
    let publish = server.publisher();
    let msgs = messages(71, 6_000);
    for chunk in msgs.chunks(500) {
        publish(chunk.to_vec()).unwrap();
    }
    let segments = || {
        fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "twr"))
            })
            .count()
    };
    assert!(segments() >= 3, "{} segments", segments());
    // Quiet from here on: no roll, no restart.
    eventually("old segments deleted", Duration::from_secs(10), || {
        segments() == 1
    });
    let report = tickwire::journal::check(dir.path()).unwrap();
    assert!(!report.is_damaged());
    let oldest = report.sessions[0].first;
    assert!(oldest > 1 && report.sessions[0].end == 6_001, "{report:?}");
    let mut client = Raw::login(server.addr(), 1);
    client.read_until(Duration::from_secs(5), |b| {
        data_count(b) >= (6_001 - oldest) as usize
    });
    assert_eq!(
        login_accepted(&client.buf),
        Some((server.session_id(), oldest))
    );
    let (_, seqs) = data(&client.buf);
    assert_eq!(seqs, (oldest..6_001).collect::<Vec<_>>());
    server.shutdown();
}

#[test]
fn retention_by_age_applies_on_a_quiet_journal_on_both_drivers() {
    retention_by_age_on_a_quiet_journal(Driver::Mio);
    retention_by_age_on_a_quiet_journal(Driver::Tokio);
}

// Replay from disk with sendfile (the mio server, plain TCP, Linux).

/// Publishes `msgs` into a fresh mio server on `dir` (retaining 100 frames,
/// 64 KiB segments), then replays it once from 1 so that every region is
/// verified: later replays go out with sendfile.
#[cfg(target_os = "linux")]
fn served_and_verified(
    dir: &Path,
    msgs: &[(u64, Payload)],
    tweak: impl FnOnce(&mut ServerConfig),
) -> Running {
    let mut cfg = config(dir, 100, FsyncMode::Never);
    tweak(&mut cfg);
    let server = Running::start(Driver::Mio, cfg).unwrap();
    let publish = server.publisher();
    for chunk in msgs.chunks(500) {
        publish(chunk.to_vec()).unwrap();
    }
    wait_published(&server, msgs.len() as u64);
    let mut first = Raw::login(server.addr(), 1);
    first.read_until(Duration::from_secs(30), |b| data_count(b) >= msgs.len());
    assert_eq!(data(&first.buf).0, expected_bytes(msgs, 1));
    server
}

/// Until the event loop has taken `n` frames into its retention (a login
/// before that would get the rest live, from memory, not from disk).
fn wait_published(server: &Running, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats().frames_published < n {
        assert!(Instant::now() < deadline, "{:?}", server.stats());
        thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(target_os = "linux")]
fn no_discards(bytes: &[u8]) -> bool {
    !SliceParser::new(bytes).any(|e| matches!(e, Event::Discarded(_)))
}

/// A client that reads slowly through a small receive buffer, from a
/// server with a small send buffer: sendfile sends part of a range at a
/// time, and the stream is still every frame once, byte for byte.
#[cfg(target_os = "linux")]
#[test]
fn a_slow_reader_gets_partial_sendfiles_byte_for_byte() {
    let dir = TempDir::new("slow", false);
    let msgs = messages(12, 20_000);
    let server = served_and_verified(dir.path(), &msgs, |c| c.send_buffer = Some(16 << 10));
    let before = server.stats().file_bytes_sent;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(8 << 10).unwrap();
    socket
        .connect_timeout(&server.addr().into(), Duration::from_secs(5))
        .unwrap();
    let mut socket: TcpStream = socket.into();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut login = [0u8; 24];
    tickwire::encode(&Payload::Login, 1, 0, &mut login).unwrap();
    socket.write_all(&login).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 3_000];
    let (start, mut reads) = (Instant::now(), 0u32);
    while data_count(&buf) < msgs.len() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out");
        match socket.read(&mut chunk) {
            Ok(0) => panic!("closed after {} frames", data_count(&buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        reads += 1;
        if reads % 4 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(data(&buf).0, expected_bytes(&msgs, 1), "byte for byte");
    let sent = server.stats().file_bytes_sent - before;
    assert!(
        sent > 500_000,
        "the replay went with sendfile: {sent} bytes"
    );
    assert_eq!(server.stats().closed_for(CloseReason::ReplayFailed), 0);
    server.shutdown();
}

/// Damage where no replay has been yet: the replay that reaches it (after
/// sending the verified regions before it with sendfile) stops with
/// ReplayFailed, and nothing damaged reaches the client.
#[cfg(target_os = "linux")]
#[test]
fn damage_past_the_verified_regions_stops_a_sendfile_replay_with_nothing_damaged_sent() {
    let dir = TempDir::new("damage-sf", false);
    let msgs = messages(13, 8_000);
    let (early, late) = msgs.split_at(3_000);
    let server = served_and_verified(dir.path(), early, |_| {});
    // More frames (new segments), never replayed: not verified.
    let publish = server.publisher();
    for chunk in late.chunks(500) {
        publish(chunk.to_vec()).unwrap();
    }
    wait_published(&server, msgs.len() as u64);
    let mut segments: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "twr"))
        .collect();
    segments.sort();
    let early_bytes = expected_bytes(early, 1).len() as u64;
    // A byte flipped in a segment that starts after the verified part.
    let mut at = 0u64;
    let target = segments
        .iter()
        .find(|p| {
            let start = at;
            at += fs::metadata(p).unwrap().len();
            start > early_bytes + 1_000 && p != &segments.last().unwrap()
        })
        .expect("a segment past the verified ones")
        .clone();
    let file = fs::OpenOptions::new().write(true).open(&target).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xA5], 700).unwrap();
    drop(file);
    let before = server.stats().file_bytes_sent;
    let mut client = Raw::login(server.addr(), 1);
    assert!(
        client.read_until(Duration::from_secs(10), |_| false),
        "closed"
    );
    let (_, seqs) = data(&client.buf);
    assert!(
        seqs.len() >= early.len() && seqs.len() < msgs.len(),
        "{}",
        seqs.len()
    );
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap");
    assert!(no_discards(&client.buf), "nothing damaged sent");
    assert!(!has_end_of_session(&client.buf));
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().closed_for(CloseReason::ReplayFailed) == 0 {
        assert!(Instant::now() < deadline, "{:?}", server.stats());
        thread::sleep(Duration::from_millis(10));
    }
    let sent = server.stats().file_bytes_sent - before;
    assert!(
        sent >= early_bytes / 2,
        "sendfile first: {sent} of {early_bytes}"
    );
    server.shutdown();
}

/// Segments deleted while a client replays through sendfile: it gets the
/// frames up to the hole, whole, then a close with ReplayFailed (never a
/// silent gap); the server goes on serving.
#[cfg(target_os = "linux")]
#[test]
fn a_segment_deleted_while_a_client_replays_closes_it_clearly() {
    let dir = TempDir::new("deleted", false);
    let msgs = messages(14, 60_000);
    let server = served_and_verified(dir.path(), &msgs, |c| c.send_buffer = Some(16 << 10));
    segment_deleted_under_a_replay(server, dir.path(), &msgs);
}

/// The same on tokio (no sendfile: replay chunks read on the blocking
/// pool).
#[test]
fn a_segment_deleted_while_a_tokio_client_replays_closes_it_clearly() {
    let dir = TempDir::new("deleted-tokio", false);
    let msgs = messages(14, 60_000);
    let mut cfg = config(dir.path(), 100, FsyncMode::Never);
    cfg.send_buffer = Some(16 << 10);
    let server = Running::start(Driver::Tokio, cfg).unwrap();
    let publish = server.publisher();
    for chunk in msgs.chunks(500) {
        publish(chunk.to_vec()).unwrap();
    }
    wait_published(&server, msgs.len() as u64);
    segment_deleted_under_a_replay(server, dir.path(), &msgs);
}

/// A client replaying `msgs` from 1 (slowly: a small receive buffer), the
/// journal's middle segments deleted under it: whole frames up to the
/// hole, byte for byte, then a close with ReplayFailed, no EndOfSession;
/// then a live client gets the next 10. Shuts `server` down.
fn segment_deleted_under_a_replay(server: Running, dir: &Path, msgs: &[(u64, Payload)]) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(8 << 10).unwrap();
    socket
        .connect_timeout(&server.addr().into(), Duration::from_secs(5))
        .unwrap();
    let socket: TcpStream = socket.into();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut login = [0u8; 24];
    tickwire::encode(&Payload::Login, 1, 0, &mut login).unwrap();
    (&socket).write_all(&login).unwrap();
    let mut client = Raw {
        socket,
        buf: Vec::new(),
    };
    client.read_until(Duration::from_secs(10), |b| data_count(b) >= 100);
    // Everything but the first eight segments and the one written now.
    let mut segments: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "twr" || e == "twi"))
        .collect();
    segments.sort();
    let stems: std::collections::BTreeSet<_> =
        segments.iter().map(|p| p.with_extension("")).collect();
    let stems: Vec<_> = stems.into_iter().collect();
    assert!(stems.len() > 20, "{}", stems.len());
    for stem in &stems[8..stems.len() - 1] {
        for ext in ["twr", "twi"] {
            let _ = fs::remove_file(stem.with_extension(ext));
        }
    }
    assert!(
        client.read_until(Duration::from_secs(20), |_| false),
        "closed"
    );
    let (bytes, seqs) = data(&client.buf);
    assert!(
        seqs.len() >= 100 && seqs.len() < msgs.len(),
        "{}",
        seqs.len()
    );
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap");
    assert_eq!(
        bytes,
        expected_bytes(&msgs[..seqs.len()], 1),
        "whole frames, byte for byte"
    );
    assert!(
        !SliceParser::new(&client.buf).any(|e| matches!(e, Event::Discarded(_))),
        "nothing torn or damaged"
    );
    assert!(!has_end_of_session(&client.buf));
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().closed_for(CloseReason::ReplayFailed) == 0 {
        assert!(Instant::now() < deadline, "{:?}", server.stats());
        thread::sleep(Duration::from_millis(10));
    }
    // Still serving: live data to a new client.
    let mut live = Raw::login(server.addr(), 0);
    live.read_until(Duration::from_secs(5), |b| login_accepted(b).is_some());
    server.publisher()(messages(15, 10)).unwrap();
    live.read_until(Duration::from_secs(5), |b| data_count(b) >= 10);
    assert_eq!(
        data(&live.buf).1,
        (msgs.len() as u64 + 1..=msgs.len() as u64 + 10).collect::<Vec<_>>()
    );
    server.shutdown();
}

/// Under TLS the mio server replays from disk through the checked read
/// path: the same stream, no sendfile.
#[test]
fn a_tls_client_replays_from_disk_through_the_checked_path() {
    use tickwire::net::{Client, ClientConfig};
    use tickwire::tls::{TlsClientFiles, TlsServerFiles};
    const TLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");
    let dir = TempDir::new("tls", false);
    let msgs = messages(16, 6_000);
    let files = TlsServerFiles::new(format!("{TLS}/server.pem"), format!("{TLS}/server.key"));
    let tls = files.load().unwrap();
    // Verified first by a plain replay (another server on the same
    // journal would not share it: the same server, a TLS listener only).
    let mut cfg = config(dir.path(), 100, FsyncMode::Never);
    cfg.tls = Some(tls);
    let server = Running::start(Driver::Mio, cfg).unwrap();
    let publish = server.publisher();
    for chunk in msgs.chunks(500) {
        publish(chunk.to_vec()).unwrap();
    }
    let want = common::expected_frames(&msgs);
    for _ in 0..2 {
        let mut config = ClientConfig::new(server.addr());
        config.from = 1;
        config.tls = Some(TlsClientFiles::new(format!("{TLS}/ca.pem")).load().unwrap());
        let mut client = Client::new(config).unwrap();
        let log = common::drive(&mut client, Duration::from_secs(30), |l| {
            l.frames.len() >= 6_000
        });
        common::assert_exactly_once_in_order(&log, &want);
    }
    let stats = server.stats();
    assert_eq!(stats.file_bytes_sent, 0, "TLS: checked bytes only");
    assert!(stats.bytes_sent > 6_000 * 30);
    server.shutdown();
}

// ---------------------------------------------------------------------------
// Issue 24, point 5, for a datagram feed: a journaled relay of datagrams
// resumes its journal's session.

/// A free UDP port on 127.0.0.1 (the relay's line: the origin sends there).
fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// An origin on `listen` sending its datagrams to `line` (unicast), with a
/// 100 ms heartbeat (Packet-only datagrams while idle).
fn datagram_origin(listen: SocketAddr, line: SocketAddr) -> tickwire::net::ServerHandle {
    let mut config = ServerConfig {
        listen,
        datagrams: Some(tickwire::net::DatagramOutputConfig::new(line)),
        ..ServerConfig::default()
    };
    config.core.session.heartbeat_interval = Duration::from_millis(100);
    config.core.retain = 100_000;
    Server::bind(config).unwrap().spawn().unwrap()
}

/// A journaled relay (in `dir`) of the datagrams on `line`, recovering from
/// `retransmit`, serving on `port`.
fn datagram_relay(
    dir: &Path,
    line: SocketAddr,
    retransmit: SocketAddr,
    port: u16,
) -> tickwire::net::Relay {
    datagram_relay_with_window(dir, line, retransmit, port, 1 << 16)
}

/// The same with a reorder window of `window` frames.
fn datagram_relay_with_window(
    dir: &Path,
    line: SocketAddr,
    retransmit: SocketAddr,
    port: u16,
    window: usize,
) -> tickwire::net::Relay {
    let mut feed = tickwire::net::DatagramClientConfig::new(line);
    feed.retransmit = Some(retransmit);
    feed.heartbeat_interval = Duration::from_millis(100);
    feed.receiver.window = window;
    // From 1 at the first start (a restart resumes from the journal).
    feed.receiver.start = Some(1);
    let listen = format!("127.0.0.1:{port}").parse().unwrap();
    let mut config = tickwire::net::RelayConfig::from_datagrams(feed, listen);
    config.server.core.retain = 500;
    config.server.journal = Some(settings(dir, FsyncMode::Never));
    tickwire::net::Relay::start(config).unwrap()
}

/// A journaled relay of a datagram feed (unicast, with retransmission from
/// the origin) stopped mid-stream while the origin keeps publishing, then
/// started again on the same journal: it serves the journal's session at
/// once, its receiver resumes at the journal's last sequence + 1 in that
/// session, and what it lacked (the outage) is fetched by retransmission,
/// nothing more; its client gets every sequence once, byte for byte, in
/// one session, with no gap; the journal checks clean.
#[test]
fn a_datagram_relay_stopped_mid_stream_resumes_from_its_journal() {
    datagram_relay_stopped_mid_stream(1 << 16);
}

/// The same with an outage (about 4,000 frames) far longer than the
/// relay's reorder window (256 frames): the receiver could not hold the
/// range, so the relay catches up over TCP from the origin first, from the
/// journal's next sequence, and the datagrams take over near their live
/// edge: still every sequence once, no gap, one session, a clean journal,
/// nothing the journal held fetched again.
#[test]
fn a_datagram_relay_down_longer_than_its_window_catches_up_over_tcp() {
    datagram_relay_stopped_mid_stream(256);
}

fn datagram_relay_stopped_mid_stream(window: usize) {
    let tmp = TempDir::new("dgram-relay-stop", false);
    let relay_dir = tmp.path().join("relay");
    let line = free_udp();
    let origin = datagram_origin("127.0.0.1:0".parse().unwrap(), line);
    let port = free_port();
    let n = 30_000;
    let msgs = messages(71, n);
    let relay = datagram_relay_with_window(&relay_dir, line, origin.local_addr(), port, window);
    assert_eq!(relay.session_id(), origin.session_id());
    let (client, got) = relay_client(port, n);
    // 10 k frames/s: the relay is down for a good part of a second.
    let publish = origin.publisher();
    let publisher = common::publish_paced(
        move |batch| publish.publish(batch).unwrap(),
        msgs.clone(),
        50,
        Duration::from_millis(5),
    );
    eventually(
        "the relay's client receives",
        Duration::from_secs(20),
        || got.load(Ordering::SeqCst) > 5_000,
    );
    relay.shutdown().unwrap();
    let report = tickwire::journal::check(&relay_dir).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    assert_eq!(report.sessions.len(), 1);
    let held_end = report.sessions[0].end;
    assert!(held_end > 5_000);
    thread::sleep(Duration::from_millis(400)); // the origin goes on
    let sent_before = origin.stats().frames_sent;
    let relay = datagram_relay_with_window(&relay_dir, line, origin.local_addr(), port, window);
    assert_eq!(relay.session_id(), origin.session_id(), "the journal's");
    assert_eq!(relay.start_sequence(), 1, "the journal's oldest");
    publisher.join().unwrap();
    let log = client.join().unwrap();
    common::assert_exactly_once_in_order(&log, &common::expected_frames(&msgs));
    assert!(log.gaps.is_empty(), "no gap: {:?}", log.gaps);
    assert_eq!(
        log.sessions,
        [(origin.session_id(), 1)],
        "one session, no NewSession after the restart"
    );
    // What the restarted relay received: exactly held_end..=n, the outage
    // recovered through the retransmission connection (the origin's only
    // TCP frames), nothing the journal held fetched again.
    let lacked = n as u64 + 1 - held_end;
    eventually("the relay caught up", Duration::from_secs(10), || {
        relay.stats().frames_published == lacked
    });
    thread::sleep(Duration::from_millis(200));
    let stats = relay.datagram_stats().unwrap();
    assert_eq!((stats.receiver.gaps, stats.receiver.unrecoverable), (0, 0));
    assert_eq!(stats.receiver.dropped_on_new_session, 0);
    let sent = origin.stats().frames_sent - sent_before;
    if window >= 1 << 16 {
        assert_eq!(stats.receiver.delivered, lacked, "{stats:?}");
        assert!(
            stats.receiver.recovered > 0 && stats.receiver.recovered < lacked,
            "the outage, by retransmission: {stats:?}"
        );
        assert_eq!(
            sent, stats.receiver.recovered,
            "the origin retransmitted only what the relay recovered"
        );
    } else {
        // Over TCP first: the datagrams delivered the rest only.
        let over_tcp = lacked - stats.receiver.delivered;
        assert!(
            over_tcp > window as u64 && stats.receiver.delivered > 0,
            "caught up over TCP: {over_tcp} of {lacked}; {stats:?}"
        );
        // What the origin sent over TCP: the catch-up, the datagrams'
        // retransmissions, and at most what was in flight when the relay
        // hung up on the catch-up (its socket buffers).
        assert!(
            sent >= over_tcp + stats.receiver.recovered
                && sent <= over_tcp + stats.receiver.recovered + 20_000,
            "{sent} sent over TCP, {over_tcp} caught up, {stats:?}"
        );
    }
    assert_eq!(relay.stats().frames_published, lacked);
    relay.shutdown().unwrap();
    let report = tickwire::journal::check(&relay_dir).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    assert_eq!(report.sessions.len(), 1, "one session");
    let s = &report.sessions[0];
    assert_eq!(
        (s.session_id, s.first, s.end, s.frames, s.holes),
        (origin.session_id(), 1, n as u64 + 1, n as u64, 0),
        "every frame once, no hole"
    );
    origin.shutdown().unwrap();
}

/// The origin of a datagram feed restarted as a new session while its
/// journaled relay was down: the relay, started again, resumes its
/// journal's session, receives datagrams of another session, starts a new
/// session in its journal, and its client sees the session change.
#[test]
fn a_datagram_relay_restarted_after_its_origin_started_a_new_session_starts_one_too() {
    origin_restarted_while_the_datagram_relay_was_down(0);
}

/// The same with 300 frames of the new session published while the relay
/// was still down (their datagrams lost): the relay, seeing another
/// session on the lines, fetches it over TCP from its first frame, then
/// the datagrams take over: the client gets all of it, no gap.
#[test]
fn a_datagram_relay_restarted_after_its_origin_published_a_new_session_fetches_it_from_1() {
    origin_restarted_while_the_datagram_relay_was_down(300);
}

fn origin_restarted_while_the_datagram_relay_was_down(early: usize) {
    let tmp = TempDir::new("dgram-relay-new", false);
    let relay_dir = tmp.path().join("relay");
    let line = free_udp();
    let origin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let port = free_port();
    let first = datagram_origin(origin_addr, line);
    let (msgs_a, msgs_b) = (messages(72, 1_000), messages(73, 500));
    let relay = datagram_relay(&relay_dir, line, origin_addr, port);
    let (client, got) = relay_client(port, 1_500);
    first.publisher().publish(msgs_a.clone()).unwrap();
    eventually(
        "the relay's client receives",
        Duration::from_secs(20),
        || got.load(Ordering::SeqCst) == 1_000,
    );
    relay.shutdown().unwrap();
    let old = first.session_id();
    first.shutdown().unwrap();
    let second = datagram_origin(origin_addr, line);
    assert_ne!(second.session_id(), old);
    let (before, after) = msgs_b.split_at(early);
    if !before.is_empty() {
        second.publisher().publish(before.to_vec()).unwrap();
        // Taken by the origin's loop (its retention) before the relay asks.
        let deadline = Instant::now() + Duration::from_secs(5);
        while second.stats().frames_published < early as u64 {
            assert!(Instant::now() < deadline);
            thread::sleep(Duration::from_millis(2));
        }
    }
    let relay = datagram_relay(&relay_dir, line, origin_addr, port);
    // (It served the journal's session until the first datagram, which
    // started the new one before `start` returned.)
    second.publisher().publish(after.to_vec()).unwrap();
    let log = client.join().unwrap();
    assert_eq!(relay.session_id(), second.session_id());
    assert_eq!(
        log.sessions,
        [(old, 1), (second.session_id(), 1)],
        "the client sees the new session"
    );
    assert!(log.gaps.is_empty(), "no gap: {:?}", log.gaps);
    let seqs: Vec<u64> = log.frames.iter().map(|f| f.0).collect();
    let want: Vec<u64> = (1..=1_000).chain(1..=500).collect();
    assert_eq!(seqs, want);
    let bytes: Vec<Vec<u8>> = log.frames.iter().map(|f| f.1.clone()).collect();
    let mut expected = common::expected_frames(&msgs_a);
    expected.extend(common::expected_frames(&msgs_b));
    assert!(bytes == expected, "byte for byte");
    let stats = relay.datagram_stats().unwrap();
    assert_eq!(stats.receiver.gaps, 0, "{stats:?}");
    relay.shutdown().unwrap();
    let report = tickwire::journal::check(&relay_dir).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    let sessions: Vec<_> = report
        .sessions
        .iter()
        .map(|s| (s.session_id, s.first, s.end, s.frames))
        .collect();
    assert_eq!(
        sessions,
        [(old, 1, 1_001, 1_000), (second.session_id(), 1, 501, 500)],
        "a new session in the relay's journal"
    );
    second.shutdown().unwrap();
}

/// `tickwire relay --upstream-udp LINE --connect ORIGIN --journal DIR`,
/// killed with SIGKILL mid-stream and started again on the same journal:
/// the command line takes the same path (its client gets every sequence
/// once in one session; the origin retransmits only part of the outage's
/// range, never what the journal holds; the journal checks clean).
#[test]
fn a_datagram_relay_cli_killed_mid_stream_resumes_from_its_journal() {
    let tmp = TempDir::new("dgram-relay-kill", false);
    let relay_dir = tmp.path().join("relay");
    let line = free_udp();
    let origin = datagram_origin("127.0.0.1:0".parse().unwrap(), line);
    let port = free_port();
    let n = 30_000;
    let msgs = messages(74, n);
    let relay_cli = || {
        let mut child = tickwire()
            .args(["relay", "--connect", &origin.local_addr().to_string()])
            .args(["--upstream-udp", &line.to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--retain", "500", "--fsync", "never"])
            .args(["--journal-segment", "64K", "--journal"])
            .arg(&relay_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening "), "{line:?}");
        Proc(child)
    };
    let mut relay = relay_cli();
    let (client, got) = relay_client(port, n);
    let publish = origin.publisher();
    let publisher = common::publish_paced(
        move |batch| publish.publish(batch).unwrap(),
        msgs.clone(),
        50,
        Duration::from_millis(5),
    );
    eventually(
        "the relay's client receives",
        Duration::from_secs(20),
        || got.load(Ordering::SeqCst) > 5_000,
    );
    relay.0.kill().unwrap(); // SIGKILL
    relay.0.wait().unwrap();
    let report = tickwire::journal::check(&relay_dir).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    assert_eq!(report.sessions.len(), 1);
    let held_end = report.sessions[0].end;
    assert!(held_end > 5_000);
    thread::sleep(Duration::from_millis(400)); // the origin goes on
    let sent_before = origin.stats().frames_sent;
    let mut relay = relay_cli();
    publisher.join().unwrap();
    let log = client.join().unwrap();
    common::assert_exactly_once_in_order(&log, &common::expected_frames(&msgs));
    assert!(log.gaps.is_empty(), "no gap: {:?}", log.gaps);
    assert_eq!(log.sessions, [(origin.session_id(), 1)], "one session");
    let lacked = n as u64 + 1 - held_end;
    let retransmitted = origin.stats().frames_sent - sent_before;
    assert!(
        retransmitted > 0 && retransmitted < lacked,
        "the outage by retransmission, not the journal's frames: {retransmitted} of {lacked}"
    );
    signal(&relay.0, libc::SIGTERM);
    assert!(wait_for(&mut relay.0, Duration::from_secs(10)).success());
    let report = tickwire::journal::check(&relay_dir).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    assert_eq!(report.sessions.len(), 1, "one session");
    let s = &report.sessions[0];
    assert_eq!(
        (s.session_id, s.first, s.end, s.frames, s.holes),
        (origin.session_id(), 1, n as u64 + 1, n as u64, 0),
        "every frame once, no hole"
    );
    origin.shutdown().unwrap();
}

// ---------------------------------------------------------------------------
// Issue 24, point 5: a journaled relay's journal holds the gaps it received
// from upstream (section 10.2), and serves them from disk as the same gaps.

/// The reference client logged in to `addr` from `from`: its log once it
/// has `want` data frames, plus whatever comes in the 300 ms after that
/// (nothing may: no frame twice).
fn client_log(addr: SocketAddr, from: u64, want: usize) -> common::Log {
    let mut config = common::fast_config(addr);
    config.from = from;
    let mut client = tickwire::net::Client::new(config).unwrap();
    let mut log = common::drive(&mut client, Duration::from_secs(20), |l| {
        l.frames.len() >= want
    });
    let until = Instant::now() + Duration::from_millis(300);
    let more = common::drive(&mut client, Duration::from_secs(5), |_| {
        Instant::now() >= until
    });
    log.frames.extend(more.frames);
    log.gaps.extend(more.gaps);
    log.sessions.extend(more.sessions);
    log.duplicates += more.duplicates;
    log.discarded += more.discarded;
    log
}

/// Publishes `msgs` into `publish` 100 at a time, 2 ms apart (a live
/// relay keeps up: the origin never skips it as slow).
fn publish_gently(publish: &Publish, msgs: &[(u64, Payload)]) {
    for chunk in msgs.chunks(100) {
        publish(chunk.to_vec()).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
}

/// A journaled relay (the command line) whose upstream reports a gap: the
/// origin (no journal, 1,000 frames retained) publishes 1,701..=4,700
/// while the relay is down, so the relay, restarted on its journal and
/// asking from 1,701, is answered from 3,701 (the origin's own gap notice:
/// LoginAccepted with a later sequence). Its journal keeps the hole (inside
/// its second segment). A client logging in to the relay from 1 (its
/// memory holds 500 frames: the start, the hole and what follows come from
/// disk) gets 1..=1,700, the gap 1,701..=3,700 exactly, then every frame to
/// the live edge, once each, byte for byte, in one session; one logging in
/// inside the hole gets the rest of it as a gap. The same after the relay
/// is killed (SIGKILL) and started again, all of it from disk then. The
/// journal lists the hole.
#[test]
fn a_journaled_relay_serves_the_gap_it_got_from_upstream_from_disk_across_restarts() {
    const HOLE: (u64, u64) = (1_701, 3_700);
    let tmp = TempDir::new("relay-gap", false);
    let relay_dir = tmp.path().join("relay");
    let mut origin_config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    origin_config.core.retain = 1_000;
    origin_config.core.session.heartbeat_interval = Duration::from_millis(200);
    let origin = Running::start(Driver::Mio, origin_config).unwrap();
    let session = origin.session_id();
    let publish = origin.publisher();
    let msgs = messages(81, 6_200);
    let want = common::expected_frames(&msgs);
    let port = free_port();
    let relay_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // 1..=1,700 through the relay, live; a client of the relay has them
    // all, so its journal does (write-ahead).
    let mut relay = relay_cli(&relay_dir, origin.addr(), port);
    publish_gently(&publish, &msgs[..1_700]);
    let mut seen = Raw::login(relay_addr, 1);
    seen.read_until(Duration::from_secs(10), |b| data_count(b) >= 1_700);
    assert_eq!(data(&seen.buf).1, (1..=1_700).collect::<Vec<_>>());
    relay.0.kill().unwrap(); // SIGKILL
    relay.0.wait().unwrap();
    let report = tickwire::journal::check(&relay_dir).unwrap();
    assert_eq!(
        (report.sessions.len(), report.sessions[0].end),
        (1, 1_701),
        "{report:?}"
    );

    // Meanwhile the origin goes on past its retention: 1,701..=3,700 are
    // gone from it, and it says so to anyone asking from 1,701.
    for chunk in msgs[1_700..4_700].chunks(500) {
        publish(chunk.to_vec()).unwrap();
    }
    wait_published(&origin, 4_700);
    let mut direct = Raw::login(origin.addr(), HOLE.0);
    direct.read_until(Duration::from_secs(5), |b| login_accepted(b).is_some());
    assert_eq!(
        login_accepted(&direct.buf),
        Some((session, HOLE.1 + 1)),
        "the upstream's gap"
    );
    drop(direct);

    // The relay restarted on its journal asks from 1,701 and gets the gap.
    let mut relay = relay_cli(&relay_dir, origin.addr(), port);
    publish_gently(&publish, &msgs[4_700..5_700]);
    let check = |log: &common::Log, seqs: &[u64], gap: (u64, u64), what: &str| {
        assert_eq!(log.gaps, [gap], "{what}: the upstream's gap, exactly");
        let got: Vec<u64> = log.frames.iter().map(|f| f.0).collect();
        assert!(got == seqs, "{what}: every frame once, in order: {got:?}");
        for (seq, bytes) in &log.frames {
            assert!(
                bytes == &want[*seq as usize - 1],
                "{what}: frame {seq} byte for byte"
            );
        }
        assert_eq!(log.duplicates, 0, "{what}: nothing repeated");
        assert_eq!(log.discarded, 0, "{what}");
        assert!(
            log.sessions.iter().all(|s| s.0 == session),
            "{what}: one session: {:?}",
            log.sessions
        );
    };
    let inside = 2_500;
    for (round, end) in [(0, 5_700u64), (1, 6_200)] {
        if round == 1 {
            // Killed again and restarted: nothing in memory, all of it from
            // disk; the upstream still holds 4,701..=5,700, so no new gap.
            relay.0.kill().unwrap(); // SIGKILL
            relay.0.wait().unwrap();
            relay = relay_cli(&relay_dir, origin.addr(), port);
            publish_gently(&publish, &msgs[5_700..]);
        }
        let seqs: Vec<u64> = (1..HOLE.0).chain(HOLE.1 + 1..=end).collect();
        let log = client_log(relay_addr, 1, seqs.len());
        check(&log, &seqs, HOLE, &format!("round {round}, from 1"));
        assert_eq!(log.sessions, [(session, 1)]);
        let after = &seqs[HOLE.0 as usize - 1..];
        let log = client_log(relay_addr, inside, after.len());
        check(
            &log,
            after,
            (inside, HOLE.1),
            &format!("round {round}, from inside the hole"),
        );
        // The wire itself: LoginAccepted from 1, then the frames with the
        // hole, byte for byte as the origin numbered them.
        let mut raw = Raw::login(relay_addr, 1);
        raw.read_until(Duration::from_secs(10), |b| data_count(b) >= seqs.len());
        assert_eq!(login_accepted(&raw.buf), Some((session, 1)));
        let (bytes, got) = data(&raw.buf);
        assert!(got == seqs, "round {round}, raw: {got:?}");
        let held: Vec<u8> = seqs
            .iter()
            .flat_map(|&s| want[s as usize - 1].clone())
            .collect();
        assert!(bytes == held, "round {round}, raw: byte for byte");
    }
    signal(&relay.0, libc::SIGTERM);
    assert!(wait_for(&mut relay.0, Duration::from_secs(10)).success());
    let out = tickwire().arg("journal").arg(&relay_dir).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    let report = tickwire::journal::check(&relay_dir).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    assert_eq!(report.sessions.len(), 1, "one session: {listing}");
    let s = &report.sessions[0];
    assert_eq!(
        (s.session_id, s.first, s.end, s.frames, s.holes, s.missing),
        (session, 1, 6_201, 4_200, 1, 2_000),
        "the hole kept as a hole: {listing}"
    );
    assert!(
        listing.contains("1..=6200 (4200 frames")
            && listing.contains("1 holes, 2000 sequences missing"),
        "{listing}"
    );
    origin.shutdown();
}

// ---------------------------------------------------------------------------
// `serve --journal-retain` through the command line: old segments go while
// the server runs.

/// `tickwire serve --journal DIR` on `port` with `args` (nothing else set),
/// once it listens.
fn serve_journal(dir: &Path, port: u16, args: &[&str]) -> Proc {
    let mut child = tickwire()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--journal",
        ])
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening "), "{line:?}");
    Proc(child)
}

/// A segment file of a journal (PROTOCOL.md A.1: `NUMBER-SESSION-FIRST.twr`).
#[derive(Debug)]
struct SegmentFile {
    name: String,
    number: u64,
    first: u64,
    bytes: u64,
    modified: std::time::SystemTime,
}

/// The segment files in `dir` now, oldest first (one deleted while listed
/// is left out).
fn segment_files(dir: &Path) -> Vec<SegmentFile> {
    let mut files: Vec<SegmentFile> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_str()?.to_owned();
            let stem = name.strip_suffix(".twr")?;
            let mut parts = stem.split('-');
            let number = parts.next()?.parse().unwrap();
            let first = parts.nth(1)?.parse().unwrap();
            let meta = e.metadata().ok()?;
            Some(SegmentFile {
                name,
                number,
                first,
                bytes: meta.len(),
                modified: meta.modified().unwrap(),
            })
        })
        .collect();
    files.sort_by_key(|f| f.number);
    files
}

/// A login from 1 to a running `serve` whose retention has deleted the
/// start of its journal: LoginAccepted names the oldest sequence the
/// journal holds (the protocol's gap notice, section 4.2: 1 up to it is
/// gone), the first sequence of a segment on disk when it logged in, then
/// every frame from it, in order, once each, across the seams (disk,
/// memory, live). A replay closed because retention deleted its segment
/// under it (a clear close, never a silent gap) is tried again, at most 5
/// times. The session and the last sequence received.
fn login_from_1_starts_at_the_oldest_held(addr: SocketAddr, dir: &Path) -> (u64, u64) {
    for _ in 0..5 {
        let before = segment_files(dir);
        let (oldest, newest) = (before[0].first, before.last().unwrap().first);
        let want = (newest - oldest) as usize + 2_000;
        let mut raw = Raw::login(addr, 1);
        if raw.read_until(Duration::from_secs(10), |b| data_count(b) >= want) {
            continue; // closed: its segment went meanwhile
        }
        let after = segment_files(dir);
        let (session, s) = login_accepted(&raw.buf).unwrap();
        assert!(
            s > 1 && before.iter().any(|f| f.first == s),
            "LoginAccepted {s}: the first sequence of a segment on disk {before:?}"
        );
        assert!(
            oldest <= s && s <= after[0].first,
            "the oldest held: {oldest} <= {s} <= {}",
            after[0].first
        );
        let (_, seqs) = data(&raw.buf);
        assert_eq!(seqs[0], s, "the first frame is the one announced");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "every frame from {s} once, in order"
        );
        return (session, *seqs.last().unwrap());
    }
    panic!("five replays from 1 closed");
}

/// What a `--journal-retain` keeps.
#[derive(Clone, Copy, Debug)]
enum Keep {
    Size(u64),
    Age(Duration),
}

const RETAIN_SEGMENT: u64 = 32 << 10;

/// `serve --journal-segment 32K` with `retain` (the `--journal-retain`
/// flags), publishing 20,000 msg/s (a segment every ~40 ms): while it runs
/// the oldest whole segments are deleted so that `binding` holds (checked
/// every 50 ms on the files), a login from 1 starts at the oldest held and
/// gets every frame after it; stopped (SIGTERM: no retention at a stop),
/// `tickwire journal DIR --json` lists exactly the files on disk, one
/// session, no damage, no hole, the frames the client got, and `binding`
/// exactly: by size, the sealed segments hold at most the limit and more
/// than the limit less a segment (the last deletion was needed); by age,
/// the oldest segment was last written within the age (less a segment's
/// time) before the newest, and not much more.
fn serve_with_retention(retain: &[&str], binding: Keep) {
    let tmp = TempDir::new("retain", true);
    let dir = tmp.path().join("journal");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut args = vec!["--rate", "20000", "--retain", "1000", "--fsync", "never"];
    args.extend(["--journal-segment", "32K"]);
    for r in retain {
        args.extend(["--journal-retain", r]);
    }
    let started = Instant::now();
    let mut server = serve_journal(&dir, port, &args);
    // How long it runs, and when the client logs in (well after the first
    // deletions).
    let (run, login_at) = match binding {
        Keep::Size(_) => (Duration::from_millis(2_500), Duration::from_millis(1_500)),
        Keep::Age(age) => (
            age + Duration::from_millis(1_500),
            age + Duration::from_millis(1_000),
        ),
    };
    let (mut samples, mut highest, mut login) = (0u32, 0u64, None);
    while started.elapsed() < run {
        let files = segment_files(&dir);
        highest = highest.max(files.last().map_or(0, |f| f.number));
        match binding {
            // The active segment (up to a segment with its reserved zeros)
            // and one sealed segment a roll has not deleted yet, at most.
            Keep::Size(max) => {
                let total: u64 = files.iter().map(|f| f.bytes).sum();
                assert!(
                    total <= max + 2 * RETAIN_SEGMENT,
                    "{total} bytes on disk: {files:?}"
                );
            }
            // Deleted at the first roll past the age (a segment's time),
            // or by the retention thread within a second.
            Keep::Age(age) if started.elapsed() > age + Duration::from_millis(500) => {
                let oldest = files[0].modified.elapsed().unwrap_or_default();
                assert!(
                    oldest <= age + Duration::from_secs(1),
                    "the oldest segment was written {oldest:?} ago: {files:?}"
                );
            }
            Keep::Age(_) => {}
        }
        samples += 1;
        if login.is_none() && started.elapsed() > login_at {
            login = Some(login_from_1_starts_at_the_oldest_held(addr, &dir));
        }
        thread::sleep(Duration::from_millis(50));
    }
    let (session, received) = login.expect("logged in");
    signal(&server.0, libc::SIGTERM);
    assert!(wait_for(&mut server.0, Duration::from_secs(10)).success());
    assert!(samples >= 20, "{samples} samples");
    let files = segment_files(&dir);
    assert!(
        files[0].number > 10 && highest >= 40,
        "old segments deleted while it ran: segments {}..={highest} written, {:?} left",
        files[0].number,
        files.iter().map(|f| f.number).collect::<Vec<_>>()
    );
    let out = tickwire()
        .arg("journal")
        .arg(&dir)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["damage"].as_array().unwrap().len(), 0, "{v}");
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "one session: {v}");
    let s = &sessions[0];
    assert_eq!(s["session_id"], session);
    let (first, end) = (s["first"].as_u64().unwrap(), s["end"].as_u64().unwrap());
    assert_eq!(first, files[0].first, "the session from the oldest segment");
    assert_eq!(s["frames"].as_u64().unwrap(), end - first, "no hole");
    assert_eq!(s["holes"], 0);
    assert!(end > received, "the newest frames kept: {end} > {received}");
    let listed: Vec<(String, u64)> = s["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let path = PathBuf::from(g["path"].as_str().unwrap());
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            (name, g["bytes"].as_u64().unwrap())
        })
        .collect();
    let on_disk: Vec<(String, u64)> = files.iter().map(|f| (f.name.clone(), f.bytes)).collect();
    assert_eq!(listed, on_disk, "the listing is the files on disk");
    let sealed = &files[..files.len() - 1];
    match binding {
        Keep::Size(max) => {
            let bytes: u64 = sealed.iter().map(|f| f.bytes).sum();
            assert!(
                bytes <= max && bytes + RETAIN_SEGMENT > max,
                "sealed segments: {bytes} bytes for a limit of {max}: {files:?}"
            );
        }
        Keep::Age(age) => {
            let newest = files.last().unwrap().modified;
            let span = newest.duration_since(files[0].modified).unwrap();
            assert!(
                span + Duration::from_millis(500) > age && span <= age + Duration::from_secs(1),
                "the oldest segment written {span:?} before the newest, for an age of {age:?}"
            );
        }
    }
}

/// `serve --journal-retain 160K`: the journal stays within 160 KiB while
/// the server runs (see [`serve_with_retention`]).
#[test]
fn serve_journal_retain_by_size_deletes_the_oldest_segments_while_it_runs() {
    serve_with_retention(&["160K"], Keep::Size(160 << 10));
}

/// `serve --journal-retain 2s`: segments last written more than 2 s ago go
/// while the server runs.
#[test]
fn serve_journal_retain_by_age_deletes_old_segments_while_it_runs() {
    serve_with_retention(&["2s"], Keep::Age(Duration::from_secs(2)));
}

/// Both given (the flag twice): the size limit binds when it is the
/// tighter, the age limit when it is, whichever comes first on the command
/// line (the binding one first, then last: neither the first nor the last
/// flag alone wins).
#[test]
fn serve_journal_retain_by_size_and_age_applies_both() {
    serve_with_retention(&["160K", "2s"], Keep::Size(160 << 10));
    serve_with_retention(&["64M", "2s"], Keep::Age(Duration::from_secs(2)));
}

// ---------------------------------------------------------------------------
// The datagram lines of a journaled origin across a SIGKILL.

/// What a datagram receiver saw: each Packet's session, and each data
/// frame's sequence and bytes, in arrival order.
#[derive(Default, Debug)]
struct Datagrams {
    sessions: Vec<u64>,
    packets: Vec<u64>,
    frames: Vec<(u64, Vec<u8>)>,
}

impl Datagrams {
    /// Receives on `socket` for `limit` (the sender running), or with
    /// `drain` until it has been quiet for 200 ms (the sender gone: what
    /// was on its way; at most 5 s).
    fn receive(&mut self, socket: &std::net::UdpSocket, limit: Duration, drain: bool) {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let start = Instant::now();
        let mut quiet_since = Instant::now();
        let mut buf = vec![0u8; 65_536];
        loop {
            if drain {
                if quiet_since.elapsed() >= Duration::from_millis(200) {
                    return;
                }
                assert!(start.elapsed() < Duration::from_secs(5), "never quiet");
            } else if start.elapsed() >= limit {
                return;
            }
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("recv: {e}"),
            };
            quiet_since = Instant::now();
            let (first, mut rest) = Message::decode(&buf[..n]).expect("a valid datagram");
            let Message::Packet(p) = first else {
                panic!("a datagram begins with {first:?}");
            };
            self.sessions.push(p.session_id());
            self.packets.push(p.sequence());
            while !rest.is_empty() {
                let (m, after) = Message::decode(rest).expect("whole, valid frames");
                assert!(m.is_data(), "no EndOfSession: {m:?}");
                self.frames.push((m.sequence(), m.as_bytes().to_vec()));
                rest = after;
            }
        }
    }
}

/// Every data frame of the journal in `dir` (its last session), by
/// sequence.
fn journal_frames(dir: &Path) -> std::collections::BTreeMap<u64, Vec<u8>> {
    let mut reader = tickwire::journal::JournalReader::open(dir, 1).unwrap();
    let (mut all, mut buf) = (std::collections::BTreeMap::new(), Vec::new());
    for _ in 0..100_000 {
        if reader.read(u64::MAX, 1 << 20, &mut buf).unwrap().is_none() {
            return all;
        }
        for (kind, seq, bytes) in frames(&buf) {
            assert!(kind >= 0x10, "data frames only");
            assert!(all.insert(seq, bytes).is_none(), "{seq} twice");
        }
    }
    panic!("the journal never ended");
}

/// `serve --journal DIR --udp ADDR` killed with SIGKILL mid-stream and
/// started again on DIR: the datagram receiver sees one session, the
/// second run's datagrams continuing at the journal's next sequence (no
/// number sent twice), and every frame it received, from either run, is
/// byte for byte the frame the journal holds for that sequence after the
/// second run (write-ahead: nothing sent that the journal did not hold, so
/// no number reused for other content).
#[test]
fn serve_journal_datagrams_across_a_sigkill_reuse_no_sequence() {
    let tmp = TempDir::new("dgram-kill", true);
    let dir = tmp.path().join("journal");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20);
    let line = socket.local_addr().unwrap().to_string();
    let port = free_port();
    let args = [
        "--rate",
        "20000",
        "--retain",
        "1000",
        "--fsync",
        "never",
        "--journal-segment",
        "64K",
        "--udp",
        &line,
    ];
    let mut first = Datagrams::default();
    let mut server = serve_journal(&dir, port, &args);
    first.receive(&socket, Duration::from_millis(700), false);
    server.0.kill().unwrap(); // SIGKILL
    server.0.wait().unwrap();
    first.receive(&socket, Duration::ZERO, true); // what was on its way
    let held_end = tickwire::journal::check(&dir).unwrap().sessions[0].end;
    let mut second = Datagrams::default();
    let mut server = serve_journal(&dir, port, &args);
    second.receive(&socket, Duration::from_millis(700), false);
    signal(&server.0, libc::SIGTERM);
    assert!(wait_for(&mut server.0, Duration::from_secs(10)).success());
    second.receive(&socket, Duration::ZERO, true);

    let session = first.sessions[0];
    assert!(
        first
            .sessions
            .iter()
            .chain(&second.sessions)
            .all(|&s| s == session),
        "one session"
    );
    let seqs = |d: &Datagrams| d.frames.iter().map(|f| f.0).collect::<Vec<_>>();
    let (a, b) = (seqs(&first), seqs(&second));
    assert!(
        a.len() > 5_000 && b.len() > 5_000,
        "{} and {}",
        a.len(),
        b.len()
    );
    assert_eq!(a[0], 1);
    for run in [&a, &b] {
        assert!(
            run.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, once each, nothing lost on loopback"
        );
    }
    assert!(
        *a.last().unwrap() < held_end,
        "sent only what the journal held: {} sent, {held_end} held",
        a.last().unwrap()
    );
    assert_eq!(
        (second.packets[0], b[0]),
        (held_end, held_end),
        "the second run goes on at the journal's next sequence"
    );
    let journal = journal_frames(&dir);
    assert_eq!(journal.keys().next(), Some(&1));
    for (seq, bytes) in first.frames.iter().chain(&second.frames) {
        assert!(
            journal.get(seq) == Some(bytes),
            "sequence {seq}: sent with other content than the journal holds"
        );
    }
    let report = tickwire::journal::check(&dir).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    assert_eq!(report.sessions.len(), 1, "one session");
    let s = &report.sessions[0];
    assert_eq!((s.session_id, s.first, s.holes), (session, 1, 0));
    assert_eq!(
        s.end,
        *b.last().unwrap() + 1,
        "everything sent, nothing more"
    );
}
