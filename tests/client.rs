//! The reference client against the reference server through a
//! fault-injecting TCP proxy on 127.0.0.1: fragmentation, cuts mid-frame,
//! blackholes, corruption, server restarts. Every loop is bounded in time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(clippy::cast_possible_truncation)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use std::ops::ControlFlow;
use tickwire::net::{Client, ClientConfig, ClientError, Server, ServerConfig, ServerHandle};
use tickwire::policy::Backoff;
use tickwire::session::{ClientEvent, ClientState, Lost};
use tickwire::synth::Feed;
use tickwire::{Payload, Sequencer};

const T0: u64 = 1_700_000_000_000_000_000;

fn server_on(listen: SocketAddr, tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    let mut config = ServerConfig {
        listen,
        ..ServerConfig::default()
    };
    tweak(&mut config);
    Server::bind(config).unwrap().spawn().unwrap()
}

fn messages(seed: u64, n: usize) -> Vec<(u64, Payload)> {
    let mut feed = Feed::new(seed, 50);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let p = feed.next_payload();
        if p.msg_type().is_data() {
            out.push((T0 + out.len() as u64, p));
        }
    }
    out
}

/// Each published frame's bytes, by sequence (index 0 is sequence 1).
fn expected_frames(msgs: &[(u64, Payload)]) -> Vec<Vec<u8>> {
    let mut seq = Sequencer::new();
    msgs.iter()
        .map(|(ts, p)| {
            let mut b = [0u8; 44];
            let n = seq.encode(p, *ts, &mut b).unwrap();
            b[..n].to_vec()
        })
        .collect()
}

/// Publishes `msgs` in batches of `batch`, pausing `pause` between them.
fn publish_paced(
    server: &ServerHandle,
    msgs: Vec<(u64, Payload)>,
    batch: usize,
    pause: Duration,
) -> thread::JoinHandle<()> {
    let publisher = server.publisher();
    thread::spawn(move || {
        for chunk in msgs.chunks(batch) {
            publisher.publish(chunk.to_vec()).unwrap();
            thread::sleep(pause);
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    Rst,
    Fin,
}

/// Faults applied to the server → client direction.
#[derive(Default)]
struct Faults {
    /// Forward in pieces of 1–7 bytes.
    fragment: bool,
    /// Close the connection after this many bytes (then take the next value).
    cuts: Vec<(usize, Cut)>,
    /// Stop forwarding after this many bytes, on the first connection only.
    blackhole_after: Option<usize>,
    /// Flip one bit every this many bytes.
    corrupt_every: Option<usize>,
}

struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    blackholed_at: Arc<Mutex<Option<Instant>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: SocketAddr, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let blackholed_at = Arc::new(Mutex::new(None));
        let faults = Arc::new(Mutex::new(faults));
        let thread = {
            let (stop, connections, blackholed_at) =
                (stop.clone(), connections.clone(), blackholed_at.clone());
            thread::spawn(move || {
                let mut pumps = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let Ok(server) = TcpStream::connect(upstream) else {
                                continue; // upstream down: the client sees a close
                            };
                            let n = connections.fetch_add(1, Ordering::SeqCst);
                            pumps.push(pump_pair(
                                client,
                                server,
                                n,
                                &faults,
                                &stop,
                                &blackholed_at,
                            ));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
                for p in pumps {
                    let _ = p.join();
                }
            })
        };
        Proxy {
            addr,
            stop,
            connections,
            blackholed_at,
            thread: Some(thread),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pump_pair(
    client: TcpStream,
    server: TcpStream,
    index: usize,
    faults: &Arc<Mutex<Faults>>,
    stop: &Arc<AtomicBool>,
    blackholed_at: &Arc<Mutex<Option<Instant>>>,
) -> thread::JoinHandle<()> {
    let cut = {
        let mut f = faults.lock().unwrap();
        if f.cuts.is_empty() {
            None
        } else {
            Some(f.cuts.remove(0))
        }
    };
    let (fragment, corrupt_every, blackhole) = {
        let f = faults.lock().unwrap();
        (
            f.fragment,
            f.corrupt_every,
            if index == 0 { f.blackhole_after } else { None },
        )
    };
    let stop = stop.clone();
    let blackholed_at = blackholed_at.clone();
    // Client → server: plain copy on its own thread.
    {
        let (mut from, mut to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let stop = stop.clone();
        thread::spawn(move || {
            from.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        });
    }
    // Server → client, with the faults.
    thread::spawn(move || {
        let (mut from, mut to) = (server, client);
        from.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut buf = [0u8; 65536];
        let mut forwarded = 0usize;
        let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ index as u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut until_corrupt = corrupt_every.unwrap_or(usize::MAX);
        while !stop.load(Ordering::SeqCst) {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => break,
            };
            let mut data = buf[..n].to_vec();
            if let Some(every) = corrupt_every {
                let mut at = 0;
                while at + until_corrupt <= data.len() {
                    at += until_corrupt;
                    data[at - 1] ^= 1 << (next() % 8);
                    until_corrupt = every;
                }
                until_corrupt -= data.len() - at;
            }
            if let Some(limit) = blackhole {
                if forwarded + data.len() >= limit {
                    let keep = limit - forwarded;
                    let _ = to.write_all(&data[..keep]);
                    *blackholed_at.lock().unwrap() = Some(Instant::now());
                    // Silently drop everything from now on, keeping both sockets open.
                    while !stop.load(Ordering::SeqCst) {
                        match from.read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                    }
                    return;
                }
            }
            if let Some((limit, how)) = cut {
                if forwarded + data.len() >= limit {
                    let _ = to.write_all(&data[..limit - forwarded]);
                    if how == Cut::Rst {
                        let _ = socket2::SockRef::from(&to).set_linger(Some(Duration::ZERO));
                    } else {
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    }
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
            let mut rest = &data[..];
            while !rest.is_empty() {
                let piece = if fragment {
                    1 + (next() % 7) as usize
                } else {
                    rest.len()
                };
                let piece = piece.min(rest.len());
                if to.write_all(&rest[..piece]).is_err() {
                    return;
                }
                rest = &rest[piece..];
            }
            forwarded += n;
        }
    })
}

/// Runs `client` until `done` says so (or `limit` passes), collecting events.
#[derive(Default, Debug)]
struct Log {
    frames: Vec<(u64, Vec<u8>)>,
    gaps: Vec<(u64, u64)>,
    sessions: Vec<(u64, u64)>,
    lost: Vec<(Instant, Lost)>,
    retrying: Vec<(Instant, Duration)>,
    states: Vec<(Instant, ClientState)>,
    discarded: u64,
    duplicates: u64,
    gave_up: Option<Lost>,
}

fn drive(client: &mut Client, limit: Duration, mut done: impl FnMut(&Log) -> bool) -> Log {
    let mut log = Log::default();
    let deadline = Instant::now() + limit;
    while !done(&log) && !client.is_stopped() {
        assert!(
            Instant::now() < deadline,
            "timed out; so far: {} frames, lost {:?}, states {:?}, state now {:?}",
            log.frames.len(),
            log.lost,
            log.states.iter().map(|s| s.1).collect::<Vec<_>>(),
            client.state()
        );
        client
            .poll(Some(Duration::from_millis(20)), |event| {
                let now = Instant::now();
                match event {
                    ClientEvent::Frame(m) if m.is_data() => {
                        log.frames.push((m.sequence(), m.as_bytes().to_vec()))
                    }
                    ClientEvent::Gap(g) => log.gaps.push((g.first, g.last)),
                    ClientEvent::NewSession {
                        session_id,
                        sequence,
                    } => log.sessions.push((session_id, sequence)),
                    ClientEvent::Lost(why) => log.lost.push((now, why)),
                    ClientEvent::Retrying { delay, .. } => log.retrying.push((now, delay)),
                    ClientEvent::State { to, .. } => log.states.push((now, to)),
                    ClientEvent::Discarded(d) => log.discarded += d.bytes,
                    ClientEvent::Duplicate { .. } => log.duplicates += 1,
                    ClientEvent::GaveUp { last, .. } => log.gave_up = Some(last),
                    _ => {}
                }
            })
            .unwrap();
    }
    log
}

fn fast_config(addr: SocketAddr) -> ClientConfig {
    let mut c = ClientConfig::new(addr);
    c.from = 1;
    c.backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
    c
}

fn assert_exactly_once_in_order(log: &Log, want: &[Vec<u8>]) {
    assert_eq!(log.frames.len(), want.len(), "frame count");
    for (i, (seq, bytes)) in log.frames.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "in order, exactly once");
        assert!(bytes == &want[i], "frame {seq} byte for byte");
    }
}

/// Publishes `n` messages (in batches of `batch`, `pause` apart) through a
/// proxy with `faults` to a quickly reconnecting client that wants them all;
/// returns what the client saw, what was published, and the proxy.
fn through_proxy(
    faults: Faults,
    (seed, n, batch, pause): (u64, usize, usize, Duration),
    heartbeat: Option<Duration>,
    until: impl FnMut(&Log) -> bool,
) -> (Log, Vec<Vec<u8>>, Proxy) {
    let server = server_on("127.0.0.1:0".parse().unwrap(), |c| {
        if let Some(hb) = heartbeat {
            c.heartbeat_interval = hb;
        }
    });
    let proxy = Proxy::start(server.local_addr(), faults);
    let msgs = messages(seed, n);
    let want = expected_frames(&msgs);
    let publisher = publish_paced(&server, msgs, batch, pause);
    let mut config = fast_config(proxy.addr);
    if let Some(hb) = heartbeat {
        config.heartbeat_interval = hb;
    }
    let mut client = Client::new(config).unwrap();
    let log = drive(&mut client, Duration::from_secs(60), until);
    publisher.join().unwrap();
    (log, want, proxy)
}

#[test]
fn fragmented_stream_gives_identical_frames() {
    let faults = Faults {
        fragment: true,
        ..Faults::default()
    };
    let (log, want, _proxy) = through_proxy(
        faults,
        (1, 3000, 100, Duration::from_millis(1)),
        None,
        |l| l.frames.len() >= 3000,
    );
    assert_exactly_once_in_order(&log, &want);
    assert_eq!((log.discarded, log.gaps.len(), log.lost.len()), (0, 0, 0));
}

#[test]
fn repeated_cuts_mid_frame_lose_nothing_and_repeat_nothing() {
    // Cut every connection after an odd number of bytes, alternating RST and FIN.
    let cuts = (0..8)
        .map(|i| {
            (
                3_001 + i * 7_919,
                if i % 2 == 0 { Cut::Rst } else { Cut::Fin },
            )
        })
        .collect();
    let faults = Faults {
        cuts,
        ..Faults::default()
    };
    let (log, want, proxy) = through_proxy(
        faults,
        (2, 20_000, 200, Duration::from_millis(2)),
        None,
        |l| l.frames.len() >= 20_000,
    );
    assert_exactly_once_in_order(&log, &want);
    assert!(log.lost.len() >= 8, "cut {} times", log.lost.len());
    assert!(proxy.connections.load(Ordering::SeqCst) >= 9);
    assert!(
        log.gaps.is_empty(),
        "replay filled every cut: {:?}",
        log.gaps
    );
    assert_eq!(log.sessions.len(), 1, "one session throughout");
}

#[test]
fn blackhole_is_detected_by_liveness_then_resumed() {
    let hb = Duration::from_millis(100);
    let faults = Faults {
        blackhole_after: Some(20_000),
        ..Faults::default()
    };
    let (log, want, proxy) = through_proxy(
        faults,
        (3, 5_000, 50, Duration::from_millis(2)),
        Some(hb),
        |l| l.frames.len() >= 5_000,
    );
    assert_exactly_once_in_order(&log, &want);
    let (detected, why) = log.lost[0];
    assert_eq!(why, Lost::Silent);
    let started = proxy.blackholed_at.lock().unwrap().expect("blackholed");
    let took = detected.duration_since(started);
    assert!(
        took <= 3 * hb + Duration::from_millis(150),
        "detected after {took:?}"
    );
    assert!(
        took >= 2 * hb,
        "not before the silence was long enough: {took:?}"
    );
}

#[test]
fn server_restart_backs_off_then_finds_the_new_session() {
    let first = server_on("127.0.0.1:0".parse().unwrap(), |c| c.session_id = Some(1));
    let addr = first.local_addr();
    let mut config = ClientConfig::new(addr);
    config.from = 1;
    let mut client = Client::new(config).unwrap(); // default backoff: 100 ms, 200 ms, 400 ms…
    first.publisher().publish(messages(4, 10)).unwrap();
    let log = drive(&mut client, Duration::from_secs(10), |l| {
        l.frames.len() >= 10
    });
    assert_eq!(log.sessions, vec![(1, 1)]);
    drop(first); // graceful: EndOfSession, then the port is closed
                 // Let the client retry into a closed port for about 1.4 s: 100 + 200 + 400 + 800 ms.
    let log = drive(&mut client, Duration::from_secs(10), |l| {
        l.retrying.len() >= 4
    });
    let delays: Vec<u128> = log.retrying.iter().map(|(_, d)| d.as_millis()).collect();
    assert_eq!(delays, vec![100, 200, 400, 800]);
    // Attempts really are that far apart (connecting is immediate on loopback).
    let connects: Vec<Instant> = log
        .states
        .iter()
        .filter(|(_, s)| *s == ClientState::Connecting)
        .map(|(t, _)| *t)
        .collect();
    for (i, pair) in connects.windows(2).enumerate() {
        let gap = pair[1].duration_since(pair[0]).as_millis();
        let want = delays[i + 1];
        assert!(
            gap + 5 >= want && gap <= want + 80,
            "attempt {i}: {gap} ms, want {want} ms"
        );
    }
    let second = server_on(addr, |c| c.session_id = Some(2));
    second.publisher().publish(messages(5, 5)).unwrap();
    let log = drive(&mut client, Duration::from_secs(10), |l| {
        l.frames.len() >= 5
    });
    assert_eq!(
        log.sessions,
        vec![(2, 1)],
        "the new session is detected and reported"
    );
    assert_eq!(
        log.frames.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
}

#[test]
fn server_gone_for_good_gives_up_after_max_retries() {
    // A port nobody listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = ClientConfig::new(addr);
    config.backoff = Backoff::default().with_max_retries(Some(3));
    let mut client = Client::new(config).unwrap();
    let started = Instant::now();
    let result = client.run(|_| ControlFlow::Continue(()));
    let err = result.expect_err("gives up");
    let ClientError::GaveUp { attempts, last } = err else {
        panic!("{err}");
    };
    assert_eq!(attempts, 3);
    assert!(matches!(last, Lost::ConnectFailed(_)), "{last}");
    assert_eq!(client.state(), ClientState::Disconnected);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn corrupted_bytes_are_reported_and_intact_frames_delivered() {
    let faults = Faults {
        corrupt_every: Some(9_973),
        ..Faults::default()
    };
    let (log, want, proxy) = through_proxy(
        faults,
        (6, 10_000, 100, Duration::from_millis(1)),
        None,
        |l| l.frames.last().is_some_and(|f| f.0 >= 10_000),
    );
    // Every delivered frame is intact and in order; what is missing is reported.
    let mut last = 0;
    for (seq, bytes) in &log.frames {
        assert!(*seq > last);
        last = *seq;
        assert!(bytes == &want[*seq as usize - 1], "frame {seq} intact");
    }
    let missing: u64 = log.gaps.iter().map(|(a, b)| b - a + 1).sum();
    assert_eq!(log.frames.len() as u64 + missing, 10_000);
    assert!(log.discarded > 0 && !log.gaps.is_empty());
    assert!(
        log.lost.is_empty(),
        "the client stays connected: {:?}",
        log.lost
    );
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn a_range_the_server_no_longer_has_is_reported_exactly() {
    let server = server_on("127.0.0.1:0".parse().unwrap(), |c| c.retain = 100);
    server.publisher().publish(messages(7, 300)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().frames_published < 300 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(5));
    }
    let mut client = Client::new(fast_config(server.local_addr())).unwrap();
    let log = drive(&mut client, Duration::from_secs(10), |l| {
        l.frames.len() >= 100
    });
    assert_eq!(log.gaps, vec![(1, 200)]);
    assert_eq!(log.frames.first().map(|f| f.0), Some(201));
    assert_eq!(client.stats().missing, 200);
}

/// A server that sends its last frames and closes at once: the client
/// stops reading at a short read (one system call per wake-up) but must
/// still see the close that came with the data, not wait for liveness
/// (here 3 × 10 s).
#[test]
fn a_close_right_after_data_is_seen_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        for _ in 0..20 {
            let (mut s, _) = listener.accept().unwrap();
            let mut login = [0u8; 24];
            s.read_exact(&mut login).unwrap();
            let mut out = vec![0u8; 64 + 10 * 44];
            let mut n = tickwire::encode(&Payload::LoginAccepted { session_id: 5 }, 1, 0, &mut out)
                .unwrap();
            let msgs = messages(3, 10);
            n += Sequencer::new().encode_batch(&msgs, &mut out[n..]).bytes;
            s.write_all(&out[..n]).unwrap(); // data and FIN together
        }
    });
    let mut config = fast_config(addr);
    config.heartbeat_interval = Duration::from_secs(10);
    let mut client = Client::new(config).unwrap();
    let started = Instant::now();
    let log = drive(&mut client, Duration::from_secs(10), |log| {
        log.lost.len() >= 20
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "each close seen with its data: {:?}",
        started.elapsed()
    );
    assert!(
        log.lost.iter().all(|(_, why)| *why == Lost::Closed),
        "{:?}",
        log.lost
    );
    server.join().unwrap();
}
