//! Shared by the socket tests (`tests/client.rs`, `tests/tokio.rs`): the
//! fault-injecting TCP proxy on 127.0.0.1, the mio client driver that logs
//! events (`net` feature), the seeded messages and their expected bytes.
//! Every loop is bounded in time.
#![allow(
    dead_code, // each test binary uses its own part
    unreachable_pub,
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

#[cfg(feature = "net")]
use tickwire::net::{Client, Server, ServerHandle};
use tickwire::net::{ClientConfig, ServerConfig, ServerStats};
use tickwire::policy::Backoff;
use tickwire::session::{ClientEvent, ClientState, CloseReason, Lost};
use tickwire::synth::Feed;
use tickwire::{Payload, Sequencer};

pub const T0: u64 = 1_700_000_000_000_000_000;

#[cfg(feature = "net")]
pub fn server_on(listen: SocketAddr, tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    let mut config = ServerConfig {
        listen,
        ..ServerConfig::default()
    };
    tweak(&mut config);
    Server::bind(config).unwrap().spawn().unwrap()
}

pub fn messages(seed: u64, n: usize) -> Vec<(u64, Payload)> {
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

/// The bytes a server sends for `messages` numbered from `first`.
pub fn expected_bytes(messages: &[(u64, Payload)], first: u64) -> Vec<u8> {
    let mut seq = Sequencer::starting_at(first);
    let mut out = vec![0u8; messages.len() * 44];
    let done = seq.encode_batch(messages, &mut out);
    out.truncate(done.bytes);
    out
}

/// Each published frame's bytes, by sequence (index 0 is sequence 1).
pub fn expected_frames(msgs: &[(u64, Payload)]) -> Vec<Vec<u8>> {
    let mut seq = Sequencer::new();
    msgs.iter()
        .map(|(ts, p)| {
            let mut b = [0u8; 44];
            let n = seq.encode(p, *ts, &mut b).unwrap();
            b[..n].to_vec()
        })
        .collect()
}

/// Publishes `msgs` in batches of `batch` through `publish`, pausing
/// `pause` between them.
pub fn publish_paced(
    mut publish: impl FnMut(Vec<(u64, Payload)>) + Send + 'static,
    msgs: Vec<(u64, Payload)>,
    batch: usize,
    pause: Duration,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for chunk in msgs.chunks(batch) {
            publish(chunk.to_vec());
            thread::sleep(pause);
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    Rst,
    Fin,
}

/// Faults applied to the server → client direction.
#[derive(Default)]
pub struct Faults {
    /// Forward in pieces of 1–7 bytes.
    pub fragment: bool,
    /// Close the connection after this many bytes (then take the next value).
    pub cuts: Vec<(usize, Cut)>,
    /// Stop forwarding after this many bytes, on the first connection only.
    pub blackhole_after: Option<usize>,
    /// Flip one bit every this many bytes.
    pub corrupt_every: Option<usize>,
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub stop: Arc<AtomicBool>,
    pub connections: Arc<AtomicUsize>,
    pub blackholed_at: Arc<Mutex<Option<Instant>>>,
    pub thread: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, faults: Faults) -> Proxy {
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
pub struct Log {
    pub frames: Vec<(u64, Vec<u8>)>,
    pub gaps: Vec<(u64, u64)>,
    pub sessions: Vec<(u64, u64)>,
    pub lost: Vec<(Instant, Lost)>,
    pub retrying: Vec<(Instant, Duration)>,
    pub states: Vec<(Instant, ClientState)>,
    pub discarded: u64,
    pub duplicates: u64,
    pub gave_up: Option<Lost>,
}

#[cfg(feature = "net")]
pub fn drive(client: &mut Client, limit: Duration, mut done: impl FnMut(&Log) -> bool) -> Log {
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
            .poll(Some(Duration::from_millis(20)), |event| log.record(event))
            .unwrap();
    }
    log
}

impl Log {
    /// Adds what `event` says to the log.
    pub fn record(&mut self, event: ClientEvent<'_>) {
        let now = Instant::now();
        match event {
            ClientEvent::Frame(m) if m.is_data() => {
                self.frames.push((m.sequence(), m.as_bytes().to_vec()))
            }
            ClientEvent::Gap(g) => self.gaps.push((g.first, g.last)),
            ClientEvent::NewSession {
                session_id,
                sequence,
            } => self.sessions.push((session_id, sequence)),
            ClientEvent::Lost(why) => self.lost.push((now, why)),
            ClientEvent::Retrying { delay, .. } => self.retrying.push((now, delay)),
            ClientEvent::State { to, .. } => self.states.push((now, to)),
            ClientEvent::Discarded(d) => self.discarded += d.bytes,
            ClientEvent::Duplicate { .. } => self.duplicates += 1,
            ClientEvent::GaveUp { last, .. } => self.gave_up = Some(last),
            _ => {}
        }
    }
}

pub fn fast_config(addr: SocketAddr) -> ClientConfig {
    let mut c = ClientConfig::new(addr);
    c.from = 1;
    c.backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
    c
}

pub fn assert_exactly_once_in_order(log: &Log, want: &[Vec<u8>]) {
    assert_eq!(log.frames.len(), want.len(), "frame count");
    for (i, (seq, bytes)) in log.frames.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "in order, exactly once");
        assert!(bytes == &want[i], "frame {seq} byte for byte");
    }
}

/// A connection to `addr` from the local address `source` (127.0.0.x).
pub fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Whether the server has closed `stream` (it sends nothing to a
/// connection that has not logged in, so any end of stream is a close).
/// Waits up to the stream's read timeout for a close that may be on its
/// way when `wait` is set; otherwise only looks.
pub fn closed_by_server(stream: &TcpStream, wait: bool) -> bool {
    stream.set_nonblocking(!wait).unwrap();
    let mut buf = [0u8; 64];
    let closed = match (&*stream).read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("a connection that did not log in was sent {n} bytes"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => false,
        Err(e) => panic!("read: {e}"),
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// After a real client logged in at once past the unauthenticated limit,
/// on a server whose admission reads first (the server core): it never
/// counted against the limit, so it displaced nobody: every idle connection
/// in `newest` stays, and the counters are those from before it.
pub fn assert_nobody_made_room(
    newest: &[TcpStream],
    stats: &ServerStats,
    displaced: u64,
    limit: usize,
) {
    assert!(newest.iter().all(|s| !closed_by_server(s, false)));
    assert_eq!(
        stats.closed_for(CloseReason::UnauthenticatedLimit),
        displaced
    );
    assert_eq!(
        stats.unauthenticated, limit as u64,
        "the real one never counted"
    );
}

/// Waits until `done` (polling every 5 ms), failing after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Opens `count` idle connections to `addr`, `source(i)` the address of
/// the i-th, in waves of 100 the server is seen to accept (`accepted`: its
/// count of accepted connections) before the next, so the order the
/// server accepts them in is the order they were opened.
pub fn idle_connections(
    addr: SocketAddr,
    accepted: impl Fn() -> u64,
    count: usize,
    source: impl Fn(usize) -> [u8; 4],
) -> Vec<TcpStream> {
    let before = accepted();
    let mut idle = Vec::with_capacity(count);
    for i in 0..count {
        idle.push(connect_from(source(i), addr));
        if idle.len() % 100 == 0 || idle.len() == count {
            let want = before + idle.len() as u64;
            wait_until("accepts", Duration::from_secs(10), || accepted() >= want);
        }
    }
    idle
}

/// A tokio server with `config` on a runtime of its own (two workers), for
/// tests that talk to it from blocking code.
#[cfg(feature = "tokio")]
pub fn tokio_server(
    config: ServerConfig,
) -> (tokio::runtime::Runtime, tickwire::tokio::ServerHandle) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server =
        rt.block_on(async { tickwire::tokio::Server::bind(config).await.unwrap().spawn() });
    (rt, server)
}

/// This process's soft limit on open descriptors (`/proc/self/limits`).
pub fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Runs the test `name` of this binary again in a child whose descriptor
/// soft limit is `limit` (`ulimit -Sn`: up to the hard limit), and asserts that it
/// passed. Returns `false` when this process's own limit is high enough,
/// and the caller should run the test itself.
pub fn rerun_with_descriptor_limit(name: &str, limit: u64) -> bool {
    if std::env::var_os("TICKWIRE_RAISED_LIMIT").is_some()
        || descriptor_limit().is_some_and(|n| n >= limit)
    {
        return false;
    }
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn {limit} && exec \"$0\" --exact {name} --nocapture --test-threads 1"
        ))
        .arg(std::env::current_exe().unwrap())
        .env("TICKWIRE_RAISED_LIMIT", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{name} with `ulimit -Sn {limit}`: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

/// `clients` connections from 127.0.0.1 to `addr`, opened at once by 8
/// threads, each sending its Login (from 0) right after connecting; then
/// the answers are read. How many got LoginAccepted, and the sockets.
pub fn burst_of_logins(addr: SocketAddr, clients: usize) -> (usize, Vec<TcpStream>) {
    use tickwire::parse::{Event, SliceParser};
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let n = clients / 8 + usize::from(t < clients % 8);
            thread::spawn(move || {
                let mut login = [0u8; 24];
                tickwire::encode(&Payload::Login, 0, 0, &mut login).unwrap();
                let mut sockets: Vec<_> = (0..n)
                    .map(|_| {
                        let mut s = connect_from([127, 0, 0, 1], addr);
                        s.write_all(&login).unwrap();
                        s
                    })
                    .collect();
                let mut accepted = 0;
                for s in &mut sockets {
                    let mut frame = [0u8; 32];
                    let answered = s.read_exact(&mut frame).is_ok()
                        && SliceParser::new(&frame).any(|e| {
                            matches!(e, Event::Frame(m) if m.msg_type() == tickwire::MsgType::LoginAccepted)
                        });
                    accepted += usize::from(answered);
                }
                (accepted, sockets)
            })
        })
        .collect();
    let mut accepted = 0;
    let mut sockets = Vec::new();
    for t in threads {
        let (n, s) = t.join().unwrap();
        accepted += n;
        sockets.extend(s);
    }
    (accepted, sockets)
}
