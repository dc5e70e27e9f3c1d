//! The reference server over real sockets on 127.0.0.1. Every loop is
//! bounded in count and time (socket read timeouts, deadlines).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(clippy::cast_possible_truncation)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tickwire::io::FrameReader;
use tickwire::net::{LoopOptions, PublishError, Server, ServerConfig, ServerHandle};
use tickwire::parse::Event;
use tickwire::session::{CloseReason, CoreConfig, SlowPolicy};
use tickwire::{encode, Message, MsgType, Payload};

mod common;
mod netns;
use common::{
    assert_nobody_made_room, closed_by_server, connect_from, expected_bytes, idle_connections,
    messages, rerun_with_descriptor_limit, wait_until, T0,
};
use netns::{run_command, skip_unprivileged, ChildGuard, Netns};

/// Held while a server thread starts, so a test can tell its own server's
/// thread from those of tests running beside it.
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start(tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    let _starting = STARTING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    start_unlocked(tweak)
}

fn start_unlocked(tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        core: CoreConfig::new(77),
        ..ServerConfig::default()
    };
    tweak(&mut config);
    Server::bind(config).unwrap().spawn().unwrap()
}

fn publish_all(server: &ServerHandle, messages: &[(u64, Payload)], batch: usize) {
    let publisher = server.publisher();
    for chunk in messages.chunks(batch) {
        publisher.publish(chunk.to_vec()).unwrap();
    }
}

/// Publishes `msgs` in batches of `batch` every millisecond on a thread of
/// its own (`250` a batch: 250,000 frames/s, a pace debug-built readers
/// keep up with).
fn publish_paced(
    server: &ServerHandle,
    msgs: &[(u64, Payload)],
    batch: usize,
) -> thread::JoinHandle<()> {
    let msgs = msgs.to_vec();
    let publisher = server.publisher();
    thread::spawn(move || {
        for chunk in msgs.chunks(batch) {
            publisher.publish(chunk.to_vec()).unwrap();
            thread::sleep(Duration::from_millis(1));
        }
    })
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Connects and logs in wanting `from`.
fn login(addr: SocketAddr, from: u64) -> FrameReader<TcpStream> {
    let mut s = connect(addr);
    let mut frame = [0u8; 24];
    encode(&Payload::Login, from, 0, &mut frame).unwrap();
    s.write_all(&frame).unwrap();
    FrameReader::new(s)
}

/// What a test client saw.
#[derive(Default, Debug)]
struct Seen {
    accepted: Option<(u64, u64)>,
    data: Vec<u8>,
    sequences: Vec<u64>,
    heartbeats: Vec<u64>,
    end_of_session: Option<u64>,
    gaps: u64,
    gap_ranges: Vec<(u64, u64)>,
    discarded: u64,
    closed: bool,
}

/// Reads until `stop` says so, the stream ends, or the read timeout hits.
fn read_until(reader: &mut FrameReader<TcpStream>, mut stop: impl FnMut(&Seen) -> bool) -> Seen {
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stop(&seen) {
        assert!(
            Instant::now() < deadline,
            "read_until timed out: {} data frames, {} gaps, {} heartbeats",
            seen.sequences.len(),
            seen.gaps,
            seen.heartbeats.len()
        );
        match reader.next_event() {
            Ok(Some(Event::Frame(m))) => match m {
                Message::LoginAccepted(la) => {
                    seen.accepted = Some((la.session_id(), la.sequence()))
                }
                Message::Heartbeat(h) => seen.heartbeats.push(h.sequence()),
                Message::EndOfSession(e) => seen.end_of_session = Some(e.sequence()),
                m if m.is_data() => {
                    seen.sequences.push(m.sequence());
                    seen.data.extend_from_slice(m.as_bytes());
                }
                _ => {}
            },
            Ok(Some(Event::Gap(g))) => {
                seen.gaps += 1;
                seen.gap_ranges.push((g.first, g.last));
            }
            Ok(Some(Event::Discarded(d))) => seen.discarded += d.bytes,
            Ok(Some(_)) => {}
            Ok(None) => {
                seen.closed = true;
                break;
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
    seen
}

/// Five clients: the publishing thread writes most batches to them itself
/// (the loop asleep), and the late ones replay from the loop meanwhile.
#[test]
fn several_clients_get_the_identical_complete_stream() {
    let stats = identical_complete_stream(|_| {});
    assert!(stats.direct_batches > 0, "{stats:?}");
}

/// The same with every batch written by the event loop.
#[test]
fn several_clients_get_the_identical_stream_from_the_loop_alone() {
    let stats = identical_complete_stream(|c| c.mio.publisher_writes = false);
    assert_eq!(stats.direct_batches, 0);
}

/// Clients spread over three loops (the first hands each login to the
/// next loop in turn, a replaying one to the other two): the same
/// complete, identical stream for everyone, replay included. The
/// publishing thread writes most batches to the first loop's client itself
/// and hands them to the other loops from there, while they replay.
#[test]
fn three_sender_loops_send_every_client_the_identical_stream() {
    let stats = identical_complete_stream(|c| c.mio.threads = 3);
    assert!(stats.direct_batches > 0, "{stats:?}");
}

/// Clients come and go across the number (8) up to which publishers
/// write to them themselves, while the feed runs: four stay from the
/// first frame to the last, twelve more log in from the next sequence,
/// read a while and hang up. Every client gets a gapless, repeat-free,
/// byte-identical run of the feed from where it logged in, and both
/// paths (the publisher's writes and the loop's) carried batches.
#[test]
fn clients_crossing_the_publisher_write_limit_lose_and_repeat_nothing() {
    let server = start(|_| {});
    let addr = server.local_addr();
    let msgs = messages(21, 30_000);
    let want = std::sync::Arc::new(expected_bytes(&msgs, 1));
    let n = msgs.len();
    // Where frame i + 1 starts in `want` (byte 3 of a frame is its length).
    let mut starts = Vec::with_capacity(n);
    let mut at = 0;
    while at < want.len() {
        starts.push(at);
        at += usize::from(want[at + 3]);
    }
    let starts = std::sync::Arc::new(starts);
    let check = move |seen: &Seen, first: u64, want: &[u8], starts: &[usize]| {
        assert!(
            seen.sequences.first() == Some(&first)
                && seen.sequences.windows(2).all(|w| w[1] == w[0] + 1),
            "from {first}, no gap, no repeat: {:?}",
            (seen.sequences.first(), seen.sequences.len())
        );
        assert_eq!((seen.gaps, seen.discarded), (0, 0));
        let offset = starts[first as usize - 1];
        assert!(
            seen.data == want[offset..offset + seen.data.len()],
            "byte-identical"
        );
    };
    let stayers: Vec<_> = (0..4)
        .map(|_| {
            let mut reader = login(addr, 1);
            assert!(read_until(&mut reader, |s| s.accepted.is_some())
                .accepted
                .is_some());
            let (want, starts) = (want.clone(), starts.clone());
            thread::spawn(move || {
                let seen = read_until(&mut reader, |s| s.sequences.len() >= n);
                check(&seen, 1, &want, &starts);
            })
        })
        .collect();
    let publisher = publish_paced(&server, &msgs, 10);
    let mut visitors = Vec::new();
    for round in 0..3 {
        // Four at a time, each for about half a second: 8, 12, 16 logged
        // in, then back to 4.
        for _ in 0..4 {
            let from = server.stats().frames_published + 1;
            let mut reader = login(addr, from);
            let (want, starts) = (want.clone(), starts.clone());
            visitors.push(thread::spawn(move || {
                let seen = read_until(&mut reader, |s| s.sequences.len() >= 5_000);
                check(&seen, from, &want, &starts);
            }));
        }
        thread::sleep(Duration::from_millis(200 + 50 * round));
    }
    for v in visitors {
        v.join().unwrap();
    }
    publisher.join().unwrap();
    for s in stayers {
        s.join().unwrap();
    }
    let stats = server.shutdown().unwrap();
    let batches = (n / 10) as u64;
    assert!(
        stats.direct_batches > 0 && stats.direct_batches < batches,
        "both paths carried batches: {} of {batches} by the publisher",
        stats.direct_batches
    );
}

/// A shutdown while a publisher writes to the clients itself: `publish`
/// ends with `Closed`, never hangs, and the client's stream ends with an
/// EndOfSession right after the last frame it got, with nothing lost
/// before it.
#[test]
fn a_shutdown_under_publisher_writes_ends_every_stream_cleanly() {
    let server = start(|_| {});
    let mut reader = login(server.local_addr(), 1);
    assert!(read_until(&mut reader, |s| s.accepted.is_some())
        .accepted
        .is_some());
    let publisher = server.publisher();
    let feed = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut batches = 0u64;
        loop {
            assert!(Instant::now() < deadline, "publish never saw the shutdown");
            match publisher.publish(messages(batches, 20)) {
                Ok(()) => batches += 1,
                Err(PublishError::Closed) => return batches,
                Err(e) => panic!("{e}"),
            }
            thread::sleep(Duration::from_micros(200));
        }
    });
    wait_until("a feed", Duration::from_secs(10), || {
        server.stats().direct_batches > 100
    });
    let stats = server.shutdown().unwrap();
    let batches = feed.join().unwrap();
    assert!(batches > 100);
    let seen = read_until(&mut reader, |s| s.end_of_session.is_some());
    let last = seen.sequences.last().copied().unwrap_or(0);
    assert!(seen.sequences.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(seen.gaps, 0);
    assert_eq!(
        seen.end_of_session,
        Some(last + 1),
        "the end right after the last frame"
    );
    assert_eq!(
        last, stats.frames_published,
        "every published frame arrived"
    );
}

#[test]
fn a_busy_polling_server_sends_the_same_and_sleeps_when_idle() {
    identical_complete_stream(|c| c.mio.busy_poll = Some(Duration::from_millis(1)));
    // Idle, it must sleep again: its thread's CPU time stays flat.
    let (server, tid) = {
        let _starting = STARTING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = server_threads();
        let server = start_unlocked(|c| c.mio.busy_poll = Some(Duration::from_millis(1)));
        // The thread names itself once running: look for a bounded while.
        let mut tid = None;
        wait_until("the new server's thread", Duration::from_secs(5), || {
            tid = server_threads().into_iter().find(|t| !before.contains(t));
            tid.is_some()
        });
        let tid = tid.unwrap();
        (server, tid)
    };
    let _client = login(server.local_addr(), 1);
    publish_all(&server, &messages(2, 1000), 100);
    thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(&tid);
    thread::sleep(Duration::from_millis(500));
    let spent = cpu_ticks(&tid) - before;
    // A spinning thread would spend about 50 ticks (10 ms each) here.
    assert!(
        spent <= 10,
        "an idle busy-polling server kept spinning: {spent} ticks"
    );
    server.shutdown().unwrap();
}

/// The ids of this process's threads named `tickwire-server`.
fn server_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| {
            let path = task.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            (comm.trim() == "tickwire-server")
                .then(|| path.file_name()?.to_str().map(str::to_owned))?
        })
        .collect()
}

/// User + system CPU time of a thread of this process, in clock ticks.
fn cpu_ticks(tid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // pid (comm) state ppid …: utime and stime are the 12th and 13th
    // fields after the closing parenthesis.
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn identical_complete_stream(tweak: impl FnOnce(&mut ServerConfig)) -> tickwire::net::ServerStats {
    let server = start(tweak);
    let addr = server.local_addr();
    let mut early: Vec<_> = (0..3).map(|_| login(addr, 1)).collect();
    // Wait until the server has logged them in (an accepted client is live).
    let accepted: Vec<_> = early
        .iter_mut()
        .map(|r| read_until(r, |s| s.accepted.is_some()).accepted)
        .collect();
    assert!(accepted.iter().all(|a| *a == Some((77, 1))), "{accepted:?}");

    let msgs = messages(1, 50_000);
    let want = std::sync::Arc::new(expected_bytes(&msgs, 1));
    let n = msgs.len();
    // Every client reads on its own thread, as real consumers do.
    let spawn_reader = |mut reader: FrameReader<TcpStream>| {
        let want = want.clone();
        thread::spawn(move || {
            let seen = read_until(&mut reader, |s| s.sequences.len() >= n);
            assert_eq!(seen.sequences.len(), n);
            assert!(
                seen.sequences.windows(2).all(|w| w[1] == w[0] + 1),
                "no gap, no repeat"
            );
            assert_eq!((seen.gaps, seen.discarded), (0, 0));
            assert!(
                seen.data == *want,
                "byte-for-byte identical to the published stream"
            );
        })
    };
    let mut readers: Vec<_> = early.into_iter().map(spawn_reader).collect();
    let publisher = publish_paced(&server, &msgs, 250);
    // A late client logs in from 1 while the feed runs: replay, then live.
    wait_until("some frames", Duration::from_secs(10), || {
        server.stats().frames_published > 5000
    });
    // Two of them: with three loops, one replays on a worker loop.
    readers.push(spawn_reader(login(addr, 1)));
    readers.push(spawn_reader(login(addr, 1)));
    publisher.join().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.frames_published, 50_000);
    assert_eq!(stats.slow_marks, 0);
    stats
}

/// Issue 9's seam: a client logging in from 1 into a running feed, with a
/// kernel send queue (4 MiB) larger than the slow threshold (1 MiB), so at
/// the switch to live data its pending bytes are over the threshold while
/// it drains them at full speed. It must get every frame once, in order,
/// and never be marked slow.
#[test]
fn a_client_catching_up_from_a_replay_is_not_slow() {
    let server = start(|c| {
        c.send_buffer = Some(4 << 20);
        c.core.session.slow_threshold = 1 << 20;
    });
    let addr = server.local_addr();
    let msgs = messages(11, 300_000); // about 12 MB
    let (before, after) = msgs.split_at(150_000);
    publish_all(&server, before, 500);
    let publisher = publish_paced(&server, after, 250);
    let mut reader = login(addr, 1);
    let seen = read_until(&mut reader, |s| s.sequences.len() >= msgs.len());
    publisher.join().unwrap();
    assert_eq!(seen.accepted, Some((77, 1)));
    assert_eq!(seen.sequences.len(), msgs.len());
    assert!(
        seen.sequences.iter().zip(1..).all(|(&s, want)| s == want),
        "every frame from 1, once, in order"
    );
    assert_eq!((seen.gaps, seen.discarded), (0, 0));
    assert!(seen.data == expected_bytes(&msgs, 1), "byte-identical");
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.slow_marks, 0, "a client catching up is not slow");
}

#[test]
fn login_replays_as_the_protocol_says() {
    let server = start(|c| c.core.retain = 1000);
    let addr = server.local_addr();
    let msgs = messages(2, 3000);
    publish_all(&server, &msgs, 100);
    wait_until("publish", Duration::from_secs(10), || {
        server.stats().frames_published == 3000
    });
    let all = expected_bytes(&msgs, 1);
    let frame_at = |seq: u64| {
        // Offsets of frames in `all`, by sequence.
        let mut at = 0;
        for (i, (_, p)) in msgs.iter().enumerate() {
            if i as u64 + 1 == seq {
                return at;
            }
            at += p.frame_len();
        }
        at
    };

    // From the middle of the retention window: exactly what was asked.
    let mut mid = login(addr, 2500);
    let seen = read_until(&mut mid, |s| s.sequences.len() >= 501);
    assert_eq!(seen.accepted, Some((77, 2500)));
    assert_eq!(seen.sequences.first(), Some(&2500));
    assert_eq!(seen.data, all[frame_at(2500)..]);

    // From before the window: the oldest retained, and the client sees the gap.
    let mut old = login(addr, 1);
    let seen = read_until(&mut old, |s| s.sequences.len() >= 1000);
    assert_eq!(seen.accepted, Some((77, 2001)));
    assert_eq!(seen.sequences, (2001..=3000).collect::<Vec<_>>());

    // Live only (0) and beyond the next live sequence: from 3001.
    let mut live = login(addr, 0);
    let mut beyond = login(addr, 999_999);
    let a = read_until(&mut live, |s| s.accepted.is_some());
    let b = read_until(&mut beyond, |s| s.accepted.is_some());
    assert_eq!(
        (a.accepted, b.accepted),
        (Some((77, 3001)), Some((77, 3001)))
    );

    // Then live data continues for everyone, with no gap at the seam.
    let more = messages(3, 10);
    publish_all(&server, &more, 10);
    for reader in [&mut mid, &mut old, &mut live, &mut beyond] {
        let seen = read_until(reader, |s| s.sequences.len() >= 10);
        assert_eq!(seen.sequences, (3001..=3010).collect::<Vec<_>>());
    }
}

#[test]
fn idle_feed_sends_heartbeats_with_the_next_sequence() {
    let server = start(|c| c.core.session.heartbeat_interval = Duration::from_millis(50));
    let mut client = login(server.local_addr(), 0);
    read_until(&mut client, |s| s.accepted.is_some());
    publish_all(&server, &messages(4, 5), 5);
    let seen = read_until(&mut client, |s| s.heartbeats.len() >= 3);
    assert_eq!(seen.sequences, vec![1, 2, 3, 4, 5]);
    assert!(
        seen.heartbeats.iter().all(|&h| h == 6),
        "{:?}",
        seen.heartbeats
    );
}

#[test]
fn connections_without_login_time_out_and_garbage_is_closed() {
    let server = start(|c| c.core.session.login_timeout = Duration::from_millis(200));
    let addr = server.local_addr();
    let mut good = login(addr, 0);
    read_until(&mut good, |s| s.accepted.is_some());

    let started = Instant::now();
    let mut idle = connect(addr);
    let mut buf = [0u8; 64];
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "closed by the server");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    let mut garbage = connect(addr);
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        garbage.read(&mut buf).unwrap_or(0),
        0,
        "closed by the server"
    );

    // A Trade from a client is not allowed either.
    let mut rogue = login(addr, 0);
    read_until(&mut rogue, |s| s.accepted.is_some());
    let mut trade = [0u8; 44];
    let n = encode(&Payload::Trade(Default::default()), 1, 0, &mut trade).unwrap();
    rogue.get_mut().write_all(&trade[..n]).unwrap();
    let seen = read_until(&mut rogue, |_| false);
    assert!(seen.closed);

    // The logged-in client is unaffected.
    publish_all(&server, &messages(5, 100), 100);
    let seen = read_until(&mut good, |s| s.sequences.len() >= 100);
    assert_eq!(seen.sequences.len(), 100);
    let stats = server.stats();
    assert_eq!(stats.closed_for(CloseReason::LoginTimeout), 1);
    assert_eq!(stats.closed_for(CloseReason::BadData), 1);
    assert_eq!(stats.closed_for(CloseReason::UnexpectedFrame), 1);
}

/// A client that logs in and then never reads, with a tiny receive buffer.
fn stalled_client(addr: SocketAddr) -> socket2::Socket {
    stalled_client_from(addr, 0)
}

/// A client that logs in wanting `from` and then never reads.
fn stalled_client_from(addr: SocketAddr, from: u64) -> socket2::Socket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut frame = [0u8; 24];
    encode(&Payload::Login, from, 0, &mut frame).unwrap();
    (&socket).write_all(&frame).unwrap();
    socket
}

fn slow_client_case(policy: SlowPolicy) {
    let server = start(|c| {
        c.core.session.slow_policy = policy;
        c.core.session.slow_threshold = 256 << 10;
        c.core.session.queue_limit = 1 << 20;
        c.send_buffer = Some(64 << 10);
    });
    let addr = server.local_addr();
    let mut fast = login(addr, 0);
    read_until(&mut fast, |s| s.accepted.is_some());
    let _stalled = stalled_client(addr);
    wait_until("logins", Duration::from_secs(5), || {
        server.stats().clients == 2
    });
    thread::sleep(Duration::from_millis(50));

    let msgs = messages(6, 200_000); // about 8 MB, far over the threshold
    let started = Instant::now();
    let publisher = publish_paced(&server, &msgs, 250);
    let mut marked_after = None;
    let seen = read_until(&mut fast, |s| {
        if marked_after.is_none() && server.stats().slow_marks > 0 {
            marked_after = Some(started.elapsed());
        }
        s.sequences.len() >= msgs.len()
    });
    publisher.join().unwrap();
    wait_until("slow mark", Duration::from_secs(1), || {
        server.stats().slow_marks > 0
    });
    let marked_after = marked_after.unwrap_or_else(|| started.elapsed());
    assert!(
        marked_after < Duration::from_secs(1),
        "marked slow after {marked_after:?}"
    );
    // The fast client got everything, in order, unslowed by the stalled one.
    assert_eq!(seen.sequences.len(), msgs.len());
    assert!(seen.sequences.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(seen.data, expected_bytes(&msgs, 1));
    let stats = server.stats();
    assert!(
        stats.peak_client_queue <= 1 << 20,
        "memory cap: {}",
        stats.peak_client_queue
    );
    match policy {
        SlowPolicy::Skip => assert!(stats.skipped_batches > 0 && stats.clients == 2),
        SlowPolicy::Disconnect => {
            wait_until("disconnect", Duration::from_secs(2), || {
                server.stats().closed_for(CloseReason::Slow) == 1
            });
        }
        other => panic!("no test for {other:?}"),
    }
}

#[test]
fn slow_client_is_skipped_and_never_slows_the_others() {
    slow_client_case(SlowPolicy::Skip);
}

#[test]
fn slow_client_is_disconnected_under_that_policy() {
    slow_client_case(SlowPolicy::Disconnect);
}

#[test]
fn graceful_shutdown_sends_end_of_session_to_everyone() {
    graceful_shutdown(|_| {});
}

/// With sender threads, clients logged in on every loop get every frame,
/// then EndOfSession after the last one, from whichever loop has them.
#[test]
fn graceful_shutdown_with_three_loops() {
    graceful_shutdown(|c| c.mio.threads = 3);
}

fn graceful_shutdown(tweak: impl FnOnce(&mut ServerConfig)) {
    let server = start(tweak);
    let addr = server.local_addr();
    let mut clients: Vec<_> = (0..7).map(|_| login(addr, 0)).collect();
    for c in &mut clients {
        read_until(c, |s| s.accepted.is_some());
    }
    publish_all(&server, &messages(7, 42), 42);
    wait_until("publish", Duration::from_secs(5), || {
        server.stats().frames_published == 42
    });
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.closed_for(CloseReason::Shutdown), 7);
    for c in &mut clients {
        let seen = read_until(c, |_| false);
        assert_eq!(seen.sequences.len(), 42);
        assert_eq!(seen.end_of_session, Some(43));
        assert!(seen.closed);
    }
}

/// Child side of the EMFILE test: a server under a low descriptor limit
/// (`ulimit -n` set by the parent), publishing every 5 ms until stdin closes.
#[test]
fn emfile_child() {
    if std::env::var_os("TICKWIRE_EMFILE_CHILD").is_none() {
        return;
    }
    let server = start(|c| {
        c.core.session.heartbeat_interval = Duration::from_millis(20);
        // The hogs must run the descriptors out: no limit closes them first.
        c.core.max_unauthenticated = 1000;
        c.core.max_unauthenticated_per_peer = 1000;
    });
    println!("listening {}", server.local_addr());
    let publisher = server.publisher();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
        publisher
            .publish(vec![(T0 + i, Payload::Trade(Default::default()))])
            .unwrap();
        i += 1;
        thread::sleep(Duration::from_millis(5));
    }
    let stats = server.shutdown().unwrap();
    println!("accept_pauses {}", stats.accept_pauses);
    drop(watcher);
}

#[test]
fn descriptor_exhaustion_does_not_stop_the_server() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 48 && exec \"$0\" --exact emfile_child --nocapture --test-threads 1")
        .arg(&exe)
        .env("TICKWIRE_EMFILE_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
        // libtest prints "test emfile_child ... " on the same line.
        if let Some(addr) = line.split("listening ").nth(1) {
            break addr.trim().parse().unwrap();
        }
    };
    let result = std::panic::catch_unwind(|| {
        let mut first = login(addr, 0);
        read_until(&mut first, |s| s.accepted.is_some());
        // Far more connections than the child has descriptors for.
        let hogs: Vec<TcpStream> = (0..80).map(|_| connect(addr)).collect();
        thread::sleep(Duration::from_millis(300));
        // The logged-in client is still served (live trades keep coming).
        let seen = read_until(&mut first, |s| s.sequences.len() >= 20);
        assert!(seen.sequences.len() >= 20);
        drop(hogs);
        // Descriptors free up (hogs time out of login or close): accepting resumes.
        thread::sleep(Duration::from_millis(300));
        let mut later = login(addr, 0);
        let seen = read_until(&mut later, |s| {
            s.accepted.is_some() && s.sequences.len() >= 5
        });
        assert!(seen.accepted.is_some());
    });
    drop(child.stdin.take()); // tells the child to stop
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    let status = child.wait().unwrap();
    if let Err(panic) = result {
        let _ = child.kill();
        std::panic::resume_unwind(panic);
    }
    assert!(status.success(), "child: {rest}");
    let pauses: u64 = rest
        .lines()
        .find_map(|l| l.split("accept_pauses ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .expect("child printed its stats");
    assert!(pauses > 0, "the child hit EMFILE and backed off: {rest}");
}

#[test]
fn publisher_back_pressure_is_visible() {
    // A server whose loop is not running: its queue fills and says so.
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        mio: LoopOptions {
            publish_queue: 2,
            ..LoopOptions::default()
        },
        ..ServerConfig::default()
    })
    .unwrap();
    let publisher = server.publisher();
    let one = || vec![(T0, Payload::Trade(Default::default()))];
    publisher.try_publish(one()).unwrap();
    publisher.try_publish(one()).unwrap();
    match publisher.try_publish(one()) {
        Err(PublishError::Full(batch)) => assert_eq!(batch.len(), 1),
        other => panic!("{other:?}"),
    }
    drop(server);
    assert!(matches!(
        publisher.try_publish(one()),
        Err(PublishError::Closed)
    ));
    let _ = MsgType::Trade;
}

/// Issue 9: a crowd of clients that log in from sequence 1 and never read.
/// Their replays are paced (a shared budget per flush, live data first),
/// each is marked slow once its replay stops moving, no client queue holds
/// more than a bounded amount, and a healthy live client loses nothing.
#[test]
fn stalled_replaying_clients_cost_a_live_client_nothing() {
    const STALLED: usize = 100;
    let server = start(|c| {
        c.send_buffer = Some(64 << 10);
        c.core.retain = 1 << 20;
    });
    let addr = server.local_addr();
    let history = messages(12, 200_000); // 8 MB to replay, for each of them
    publish_all(&server, &history, 1000);
    // All of it in the retention before the live client logs in: its live
    // data starts at 200,001 (publish only queues for the loop).
    wait_until("the history taken", Duration::from_secs(10), || {
        server.stats().frames_published == 200_000
    });
    let mut live = login(addr, 0);
    read_until(&mut live, |s| s.accepted.is_some());
    let stalled: Vec<_> = (0..STALLED).map(|_| stalled_client_from(addr, 1)).collect();
    wait_until("logins", Duration::from_secs(10), || {
        server.stats().clients == STALLED as u64 + 1
    });
    let msgs = messages(13, 100_000);
    let publisher = publish_paced(&server, &msgs, 250);
    let seen = read_until(&mut live, |s| s.sequences.len() >= msgs.len());
    publisher.join().unwrap();
    assert_eq!(seen.sequences.len(), msgs.len());
    assert!(
        seen.sequences
            .iter()
            .zip(200_001..)
            .all(|(&s, want)| s == want),
        "the live client got every frame once, in order"
    );
    assert_eq!((seen.gaps, seen.discarded), (0, 0));
    wait_until(
        "every stalled replay marked slow",
        Duration::from_secs(5),
        || server.stats().slow_marks >= STALLED as u64,
    );
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.slow_marks, STALLED as u64, "only the stalled ones");
    assert!(
        stats.peak_client_queue <= 1 << 20,
        "replays are pulled as sockets take them: peak queue {}",
        stats.peak_client_queue
    );
    drop(stalled);
}

/// Many tiny batches published faster than the loop turns are merged into
/// larger ones (one queue entry and one write per client per group): the
/// stream stays byte-identical, live and replayed, whatever was merged.
#[test]
fn tiny_batches_merged_by_the_server_keep_the_stream_identical() {
    for threads in [1, 2] {
        tiny_batches_merged(threads);
    }
}

fn tiny_batches_merged(threads: usize) {
    let server = start(|c| {
        c.mio.publish_queue = 100_000;
        c.mio.threads = threads;
    });
    let addr = server.local_addr();
    let mut live = login(addr, 0);
    read_until(&mut live, |s| s.accepted.is_some());
    let msgs = messages(14, 20_000);
    // One message per batch, as fast as they go: the loop takes many at once.
    publish_all(&server, &msgs, 1);
    let want = expected_bytes(&msgs, 1);
    let seen = read_until(&mut live, |s| s.sequences.len() >= msgs.len());
    assert!(seen.data == want, "live: byte-identical");
    assert_eq!((seen.gaps, seen.discarded), (0, 0));
    // The retention holds the merged batches; a replay from any point
    // (here, mid-way through some merged batch) is identical too.
    for from in [1, 7_777] {
        let mut late = login(addr, from);
        let seen = read_until(&mut late, |s| s.sequences.len() as u64 > 20_000 - from);
        assert_eq!(seen.accepted, Some((77, from)));
        let offset: usize = msgs[..(from - 1) as usize]
            .iter()
            .map(|(_, p)| p.frame_len())
            .sum();
        assert!(
            seen.data == want[offset..],
            "replay from {from}: byte-identical"
        );
    }
    server.shutdown().unwrap();
}

/// Many clients: a pass over them lasts longer than one slice of the loop
/// (about 1 ms), so batches published during a pass are taken between its
/// slices and reach the clients not written yet in the same pass. Every
/// client still gets the whole stream once, in order, byte for byte.
#[test]
fn passes_cut_into_slices_keep_every_stream_identical() {
    const CLIENTS: usize = 200;
    let server = start(|c| c.core.max_clients = CLIENTS + 8);
    let addr = server.local_addr();
    let mut readers: Vec<_> = (0..CLIENTS).map(|_| login(addr, 0)).collect();
    for reader in &mut readers {
        read_until(reader, |s| s.accepted.is_some());
    }
    // About 200 KB a client: within the kernel's and the server's queues
    // (under the slow threshold) while the clients are read one by one.
    let msgs = messages(21, 5_000);
    let publisher = publish_paced(&server, &msgs, 25);
    publisher.join().unwrap();
    let want = expected_bytes(&msgs, 1);
    for (i, reader) in readers.iter_mut().enumerate() {
        let seen = read_until(reader, |s| s.sequences.len() >= msgs.len());
        assert!(seen.data == want, "client {i}: byte-identical");
        assert_eq!((seen.gaps, seen.discarded), (0, 0), "client {i}");
    }
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.slow_marks, 0);
}

// Hostile connections and liveness (issue 9) --------------------------------

/// A connection from `source` (any 127.0.0.x: all of 127/8 is loopback on
/// Linux) that never logs in.
#[test]
fn idle_connections_cannot_lock_a_real_client_out() {
    if rerun_with_descriptor_limit("idle_connections_cannot_lock_a_real_client_out", 4096) {
        return;
    }
    const IDLE: usize = 1100;
    // More connections than max_clients (1,024) allowed in all before; the
    // login timeout is long, so only the new limit closes them.
    let server = start(|c| c.core.session.login_timeout = Duration::from_secs(60));
    let limit = ServerConfig::default().core.max_unauthenticated;
    assert_eq!(limit, 128);
    // Spread over 100 source addresses: 11 each, under the per-peer limit.
    let idle = idle_connections(
        server.local_addr(),
        || server.stats().accepted,
        IDLE,
        |i| [127, 0, 0, 2 + (i % 100) as u8],
    );
    let displaced = (IDLE - limit) as u64;
    wait_until("the overall limit", Duration::from_secs(10), || {
        let s = server.stats();
        s.closed_for(CloseReason::UnauthenticatedLimit) == displaced
            && s.unauthenticated == limit as u64
    });
    let stats = server.stats();
    assert_eq!(stats.unauthenticated, limit as u64);
    assert_eq!(stats.clients, limit as u64);
    assert_eq!(stats.displaced_per_peer, 0);
    // The oldest went first: the first 972 are closed, the newest 128 open.
    let (old, new) = idle.split_at(IDLE - limit);
    assert!(old.iter().all(|s| closed_by_server(s, true)));
    assert!(new.iter().all(|s| !closed_by_server(s, false)));

    // A real client still gets in, and gets data.
    let mut real = login(server.local_addr(), 0);
    assert_eq!(
        read_until(&mut real, |s| s.accepted.is_some()).accepted,
        Some((77, 1))
    );
    publish_all(&server, &messages(9, 100), 100);
    let seen = read_until(&mut real, |s| s.sequences.len() >= 100);
    assert_eq!(seen.sequences, (1..=100).collect::<Vec<_>>());
    let stats = server.stats();
    // It logged in at once: read before it could count, it displaced nobody.
    assert_nobody_made_room(new, &stats, displaced, limit);
    assert_eq!(stats.closed_for(CloseReason::MaxClients), 0);
    drop(idle);
}

#[test]
fn one_peer_cannot_take_every_unauthenticated_place() {
    let server = start(|c| c.core.session.login_timeout = Duration::from_secs(60));
    let per_peer = ServerConfig::default().core.max_unauthenticated_per_peer;
    assert_eq!(per_peer, 16);
    // 20 from 127.0.0.2, then 5 from 127.0.0.3.
    let accepted = || server.stats().accepted;
    let two = idle_connections(server.local_addr(), accepted, 20, |_| [127, 0, 0, 2]);
    let three = idle_connections(server.local_addr(), accepted, 5, |_| [127, 0, 0, 3]);
    wait_until("the per-peer limit", Duration::from_secs(10), || {
        let s = server.stats();
        s.closed_for(CloseReason::UnauthenticatedLimit) == 4 && s.unauthenticated == 21
    });
    let stats = server.stats();
    assert_eq!(stats.displaced_per_peer, 4);
    assert_eq!(stats.unauthenticated, 21);
    // 127.0.0.2's oldest four went, nobody else.
    assert!(two[..4].iter().all(|s| closed_by_server(s, true)));
    assert!(two[4..].iter().all(|s| !closed_by_server(s, false)));
    assert!(three.iter().all(|s| !closed_by_server(s, false)));

    // A real client from the crowded address still logs in.
    let mut socket = connect_from([127, 0, 0, 2], server.local_addr());
    let mut frame = [0u8; 24];
    encode(&Payload::Login, 0, 0, &mut frame).unwrap();
    socket.write_all(&frame).unwrap();
    let mut real = FrameReader::new(socket);
    assert!(read_until(&mut real, |s| s.accepted.is_some())
        .accepted
        .is_some());
    publish_all(&server, &messages(10, 10), 10);
    assert_eq!(
        read_until(&mut real, |s| s.sequences.len() >= 10)
            .sequences
            .len(),
        10
    );
    // It logged in at once: read before it could count, it displaced nobody.
    assert!(two[4..].iter().all(|s| !closed_by_server(s, false)));
    assert!(three.iter().all(|s| !closed_by_server(s, false)));
    let stats = server.stats();
    assert_eq!(stats.displaced_per_peer, 4);
    assert_eq!(stats.unauthenticated, 21);
}

#[test]
fn the_listen_backlog_holds_what_the_loop_has_not_accepted_yet() {
    // A server whose loop is not running: only the kernel's listen queue
    // holds connections, up to the backlog (plus one, on Linux).
    let try_connect = |addr: SocketAddr| {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .connect_timeout(&addr.into(), Duration::from_millis(300))
            .map(|()| socket)
    };
    let small = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        listen_backlog: 16,
        ..ServerConfig::default()
    })
    .unwrap();
    let held: Vec<_> = (0..17)
        .map(|_| try_connect(small.local_addr()).unwrap())
        .collect();
    assert!(try_connect(small.local_addr()).is_err(), "the 18th waits");
    drop(held);

    // The default (1,024) holds far more than mio's own 128.
    let default = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    })
    .unwrap();
    assert_eq!(ServerConfig::default().listen_backlog, 1024);
    let held: Vec<_> = (0..300)
        .map(|_| try_connect(default.local_addr()).unwrap())
        .collect();
    assert_eq!(held.len(), 300);
}

/// From now on every packet into or out of `ns` is dropped: its peers
/// vanish without a FIN or RST.
fn drop_everything(ns: &Netns) -> Result<(), String> {
    ns.nft(&["add", "table", "inet", "tickwire_half_open"])?;
    for hook in ["input", "output"] {
        let chain = format!("{{ type filter hook {hook} priority 0; policy drop; }}");
        ns.nft(&["add", "chain", "inet", "tickwire_half_open", hook, &chain])?;
    }
    Ok(())
}

/// Child side of the half-open test, run inside the namespace: logs in to
/// the server named by `TICKWIRE_HALF_OPEN_SERVER`, says so, then waits
/// (reading nothing more) until it is killed.
#[test]
fn half_open_child() {
    let Some(addr) = std::env::var_os("TICKWIRE_HALF_OPEN_SERVER") else {
        return;
    };
    let addr: SocketAddr = addr.to_str().unwrap().parse().unwrap();
    let mut client = login(addr, 0);
    let seen = read_until(&mut client, |s| s.accepted.is_some());
    println!("logged in {:?}", seen.accepted);
    thread::sleep(Duration::from_secs(30));
}

/// What the half-open scenario needs of a server: the mio one or the tokio one.
trait Served {
    fn addr(&self) -> SocketAddr;
    fn stats(&self) -> tickwire::net::ServerStats;
    fn publish(&self, batch: Vec<(u64, Payload)>);
}

impl Served for ServerHandle {
    fn addr(&self) -> SocketAddr {
        self.local_addr()
    }
    fn stats(&self) -> tickwire::net::ServerStats {
        ServerHandle::stats(self)
    }
    fn publish(&self, batch: Vec<(u64, Payload)>) {
        self.publisher().publish(batch).unwrap();
    }
}

/// The tokio server on a runtime of its own.
#[cfg(feature = "tokio")]
struct TokioServed {
    _rt: tokio::runtime::Runtime,
    server: tickwire::tokio::ServerHandle,
}

#[cfg(feature = "tokio")]
impl Served for TokioServed {
    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
    fn stats(&self) -> tickwire::net::ServerStats {
        self.server.stats()
    }
    fn publish(&self, batch: Vec<(u64, Payload)>) {
        self.server.publisher().publish(batch).unwrap();
    }
}

#[test]
fn a_half_open_client_is_closed_for_making_no_progress() {
    half_open_scenario(
        "a_half_open_client_is_closed_for_making_no_progress",
        ("ho", 199),
        |tweak| Box::new(start(tweak)),
    );
}

/// The same on the tokio server: the session's no-progress rule, fed the
/// kernel's send queue by the tokio driver.
#[cfg(feature = "tokio")]
#[test]
fn a_half_open_client_of_the_tokio_server_is_closed_for_making_no_progress() {
    half_open_scenario(
        "a_half_open_client_of_the_tokio_server_is_closed_for_making_no_progress",
        ("hot", 195),
        |tweak| {
            let mut config = ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                core: CoreConfig::new(77),
                ..ServerConfig::default()
            };
            tweak(&mut config);
            let (rt, server) = common::tokio_server(config);
            Box::new(TokioServed { _rt: rt, server })
        },
    );
}

/// A client in a namespace logs in and takes data; then every packet of
/// the namespace is dropped (its host vanished: no FIN, no RST). The server
/// closes it for making no progress within the rule's window, under the
/// skip policy (where it used to stay until the kernel gave up).
fn half_open_scenario(
    test: &str,
    (tag, subnet): (&str, u8),
    start: impl FnOnce(&mut dyn FnMut(&mut ServerConfig)) -> Box<dyn Served>,
) {
    let ns = match Netns::create(tag, subnet) {
        Ok(ns) => ns,
        Err(why) => return skip_unprivileged(test, &why),
    };
    if let Err(why) = run_command("nft", &["--version"]) {
        return skip_unprivileged(test, &why);
    }
    let heartbeat = Duration::from_millis(100);
    let host = ns.host_ip();
    let server = start(&mut |c: &mut ServerConfig| {
        c.listen = SocketAddr::from((host, 0));
        c.core.session.heartbeat_interval = heartbeat;
        c.core.session.slow_policy = SlowPolicy::Skip; // the policy under which it used to stay
    });
    let window = heartbeat * ServerConfig::default().core.session.no_progress_intervals;
    let mut child = ChildGuard(
        ns.command(&std::env::current_exe().unwrap())
            .args([
                "--exact",
                "half_open_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("TICKWIRE_HALF_OPEN_SERVER", server.addr().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("logged in") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
    }
    assert!(line.contains("logged in Some"), "{line}");
    wait_until("the login", Duration::from_secs(5), || {
        let s = server.stats();
        s.clients == 1 && s.unauthenticated == 0
    });
    // Data flows and is acknowledged; then the client's host vanishes.
    for chunk in messages(11, 1000).chunks(100) {
        server.publish(chunk.to_vec());
    }
    thread::sleep(heartbeat * 3);
    assert_eq!(server.stats().clients, 1, "a healthy client stays");
    drop_everything(&ns).unwrap();
    let vanished = Instant::now();
    drop(child); // its FIN or RST never arrives either
    wait_until("the close", Duration::from_secs(10), || {
        server.stats().clients == 0
    });
    let after = vanished.elapsed();
    let stats = server.stats();
    eprintln!("half-open client closed {after:?} after it vanished");
    assert_eq!(stats.closed_for(CloseReason::NoProgress), 1, "{stats:?}");
    assert!(
        after >= window - heartbeat && after < window * 4,
        "closed {after:?} after the peer vanished (window {window:?})"
    );
    drop(server);
    drop(ns);
}

#[test]
fn max_clients_counts_logged_in_clients_only() {
    let server = start(|c| {
        c.core.max_clients = 1;
        c.core.session.login_timeout = Duration::from_secs(60);
    });
    let addr = server.local_addr();
    // Idle connections take no client place…
    let idle = idle_connections(
        server.local_addr(),
        || server.stats().accepted,
        5,
        |_| [127, 0, 0, 1],
    );
    let mut first = login(addr, 0);
    assert!(read_until(&mut first, |s| s.accepted.is_some())
        .accepted
        .is_some());
    // …but a second client that logs in is one too many: closed at its Login.
    let mut second = login(addr, 0);
    let seen = read_until(&mut second, |_| false);
    assert!(seen.closed && seen.accepted.is_none(), "{seen:?}");
    wait_until("the count", Duration::from_secs(5), || {
        server.stats().closed_for(CloseReason::MaxClients) == 1
    });
    let stats = server.stats();
    assert_eq!(stats.closed_for(CloseReason::MaxClients), 1);
    assert_eq!(stats.unauthenticated, 5);
    assert!(idle.iter().all(|s| !closed_by_server(s, false)));
    publish_all(&server, &messages(12, 10), 10);
    assert_eq!(
        read_until(&mut first, |s| s.sequences.len() >= 10)
            .sequences
            .len(),
        10
    );
}

/// Retransmission connections (protocol section 9) have a limit of their
/// own and take no client's place: with `max_clients` 1 and
/// `max_retransmission_connections` 2, two retransmission connections and
/// a subscriber are served; a third retransmission connection is closed at
/// its request; closing one makes room for another.
#[test]
fn retransmission_connections_are_limited_apart_from_clients() {
    let server = start(|c| {
        c.core.max_clients = 1;
        c.core.max_retransmission_connections = 2;
    });
    let addr = server.local_addr();
    publish_all(&server, &messages(31, 10), 10);
    // In the retention before anyone asks (section 9.2: what the server
    // has published when it reads the request).
    wait_until("the batch taken", Duration::from_secs(5), || {
        server.stats().frames_published == 10
    });
    let retransmit = || {
        let mut s = connect(addr);
        let mut frame = [0u8; 40];
        let payload = Payload::Retransmit {
            session_id: 0,
            count: 5,
        };
        encode(&payload, 1, 0, &mut frame).unwrap();
        s.write_all(&frame).unwrap();
        FrameReader::new(s)
    };
    let replied = |r: &mut FrameReader<TcpStream>| {
        let seen = read_until(r, |s| !s.heartbeats.is_empty() || s.closed);
        assert!(!seen.closed, "closed instead of a reply: {seen:?}");
        assert_eq!(seen.sequences, vec![1, 2, 3, 4, 5]);
    };
    let mut r1 = retransmit();
    replied(&mut r1);
    let mut r2 = retransmit();
    replied(&mut r2);
    // Not a client: the one client place is still free.
    let mut sub = login(addr, 1);
    let seen = read_until(&mut sub, |s| s.sequences.len() >= 10 || s.closed);
    assert_eq!(seen.sequences, (1..=10).collect::<Vec<_>>());
    // A third retransmission connection is one too many.
    let mut r3 = retransmit();
    let seen = read_until(&mut r3, |_| false);
    assert!(seen.closed && seen.accepted.is_none(), "{seen:?}");
    wait_until("the count", Duration::from_secs(5), || {
        server.stats().closed_for(CloseReason::MaxClients) == 1
    });
    assert_eq!(server.stats().retransmission_connections, 2);
    // One goes: room for another.
    drop(r1);
    wait_until("the close", Duration::from_secs(5), || {
        server.stats().retransmission_connections == 1
    });
    let mut r4 = retransmit();
    replied(&mut r4);
    assert_eq!(server.stats().retransmission_connections, 2);
    assert_eq!(server.stats().closed_for(CloseReason::MaxClients), 1);
    drop((r2, r4, sub));
}

/// Issue 9: a client skipped for being slow is told so by an exact gap in
/// its sequence, and recovers the range by logging in again from the gap's
/// first sequence (what a subscriber does with `--from FIRST`): it gets
/// exactly the frames it missed, byte-identical.
#[test]
fn a_skipped_client_recovers_the_gap_by_logging_in_again() {
    let server = start(|c| {
        c.core.session.slow_threshold = 64 << 10;
        c.core.session.slow_grace = Duration::from_millis(20);
        c.core.session.queue_limit = 256 << 10;
        c.send_buffer = Some(64 << 10);
    });
    let addr = server.local_addr();
    let mut slow = {
        let socket = stalled_client(addr);
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        FrameReader::new(stream)
    };
    wait_until("login", Duration::from_secs(5), || {
        server.stats().clients == 1
    });
    let msgs = messages(15, 100_000);
    let publisher = publish_paced(&server, &msgs, 500);
    wait_until("skipped", Duration::from_secs(10), || {
        server.stats().skipped_batches > 0
    });
    publisher.join().unwrap();
    // Now it reads: what it was sent, a gap, then live data to the end.
    // With nothing published after the skip, a Heartbeat carries the gap.
    let seen = read_until(&mut slow, |s| {
        s.sequences.last() == Some(&100_000) || s.gap_ranges.last().is_some_and(|g| g.1 == 100_000)
    });
    assert!(!seen.gap_ranges.is_empty(), "told by a gap");
    let mut got: Vec<u64> = seen.sequences.clone();
    for &(first, last) in &seen.gap_ranges {
        let mut again = login(addr, first);
        let want = (last - first + 1) as usize;
        let replay = read_until(&mut again, |s| s.sequences.len() >= want);
        assert_eq!(replay.accepted, Some((77, first)), "still retained");
        assert!(replay.sequences[..want].iter().copied().eq(first..=last));
        let offset: usize = msgs[..(first - 1) as usize]
            .iter()
            .map(|(_, p)| p.frame_len())
            .sum();
        let len: usize = msgs[(first - 1) as usize..last as usize]
            .iter()
            .map(|(_, p)| p.frame_len())
            .sum();
        let all = expected_bytes(&msgs, 1);
        assert!(
            replay.data[..len] == all[offset..offset + len],
            "byte-identical"
        );
        got.extend(first..=last);
    }
    got.sort_unstable();
    assert!(
        got.iter().copied().eq(1..=100_000),
        "nothing missing in the end"
    );
    server.shutdown().unwrap();
}

/// A burst of 1,000 clients connecting at once from one address, each
/// sending its Login at once, all log in on the mio server: admission reads
/// a connection's bytes before it counts against the per-address limit (16),
/// and a Login still in flight has the admission grace.
#[test]
fn a_burst_of_logins_from_one_address_all_get_in() {
    if rerun_with_descriptor_limit("a_burst_of_logins_from_one_address_all_get_in", 4096) {
        return;
    }
    const CLIENTS: usize = 1_000;
    let server = start(|_| {});
    let (accepted, sockets) = common::burst_of_logins(server.local_addr(), CLIENTS);
    let stats = server.stats();
    assert_eq!(stats.closed_for(CloseReason::UnauthenticatedLimit), 0);
    assert_eq!(accepted, CLIENTS, "every client got LoginAccepted");
    drop(sockets);
}
