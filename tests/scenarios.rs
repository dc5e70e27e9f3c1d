//! One scenario suite, several drivers (issue 22, point 2): every scenario
//! is one generic function over a [`Driver`] (a server: start, publish,
//! stats, connect a client, sleep, shut down) and its [`Conn`] (a client
//! speaking the protocol: send bytes, read frames until something holds or
//! a time passes, stop reading, close), run with the same assertions against
//! - `mio_`: the mio server (`tickwire::net::Server`, one event loop, as
//!   `tickwire serve` runs it) over 127.0.0.1, the client a blocking std
//!   `TcpStream`, real time with bounded waits;
//! - `mio2_`: the same with two event loops (`mio.threads: 2`) and
//!   loop-only writes (`mio.publisher_writes: false`); these two with the
//!   `net` feature only;
//! - `tokio_`: the tokio server (`tickwire::tokio::Server`, on a runtime of
//!   its own) over 127.0.0.1, the same client;
//! - `sim_`: a simulated driver, one `ServerCore` and in-memory byte pipes
//!   (the server's send buffer plus the client's receive buffer, bounded:
//!   a client that stops reading fills them and its backlog is what the
//!   core is told the kernel holds) in virtual time: no socket, thread or
//!   clock, the same every run.
//!
//! Each scenario `x` is instantiated as `mio_::x`, `mio2_::x`, `tokio_::x`
//! and `sim_::x` by [`scenarios!`]; every one ends by checking the server's
//! close counters exactly. Run one driver's scenarios, or one scenario on
//! every driver:
//! ```text
//! cargo test --all-features --test scenarios mio_
//! cargo test --all-features --test scenarios tokio_
//! cargo test --all-features --test scenarios sim_
//! cargo test --all-features --test scenarios slow_client_skip
//! cargo test --all-features --test scenarios -- --ignored   # the known bugs
//! ```
//! The whole file (30 scenarios × 4 drivers) takes about 6 s in debug on
//! 2 cores (11 s with `--test-threads 1`); the timing bounds hold with three
//! copies running at once.
//!
//! Scenarios: 1-12 as issue 22's review listed them (replay then live,
//! live only, login before the retention, idle heartbeats, login timeout,
//! garbage, second Login, `max_clients`, slow client skipped, retransmission,
//! graceful shutdown, a burst of 200 logins from one address), then the
//! publish/login race, shutdown of every kind of connection, slow client
//! disconnected, idle connections displaced, Heartbeat before Login,
//! fragmented Login, close during replay, Disconnect counting, Login from
//! beyond the edge, retransmission edge cases and limit, no silent loss
//! over 20,000 frames (a new client every 10 batches), and no loss while the server's threads
//! are stalled ([`Driver::stall`]); then authenticated logins (protocol
//! section 11, `ServerConfig::auth`): a Login first, bad credentials, a
//! valid key, a key asking what it may not, the lock-out of one address
//! while another logs in; each Rejected alone on the connection and the
//! stream ending cleanly (no reset), read off the raw socket.
//!
//! Behaviour that differs between drivers, or from the docs (the tests are
//! `#[ignore]`d with the details):
//! - `login_after_publish_returned` (mio only): `net::Publisher::publish`
//!   returns before the event loop has the batch, so a Login from 0 handled
//!   in between is answered with the batch's first sequence and sent the
//!   batch; on tokio and the simulation, a batch whose `publish` returned
//!   is never sent to a later Login from 0. The other scenarios wait for
//!   `frames_published` ([`taken`]) before a Login, to test the rest alike.
//! - `disconnect_skips_nothing` found that under `SlowPolicy::Disconnect`
//!   the batch that overflowed a client's queue was counted as skipped
//!   though the client was closed, not told of a gap (the core, so every
//!   driver); fixed in `ServerSession::handle_published`, it now passes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tickwire::net::{Messages, ServerConfig, ServerStats};
use tickwire::parse::{Event, Parser};
use tickwire::session::{
    Batch, CloseReason, ConnId, CoreConfig, CoreStats, ServerCore, SlowPolicy, Time,
};
use tickwire::{Message, MsgType, Payload, Sequencer};

const MS: Duration = Duration::from_millis(1);
const SESSION: u64 = 0x5ce0_a410;
/// The receive buffer of every client socket (and of the simulated pipes).
const CLIENT_RCVBUF: usize = 16 << 10;

// ---------------------------------------------------------------------------
// What a client saw.

/// One frame a client read.
#[derive(Clone, Debug)]
struct Rx {
    ty: MsgType,
    seq: u64,
    /// LoginAccepted's session id.
    session_id: Option<u64>,
    bytes: Vec<u8>,
    /// The parser called it a duplicate (a data sequence already passed).
    dup: bool,
    /// When it was read, from the connect (real or virtual time).
    at: Duration,
}

/// Everything a client read, and whether the server closed the connection.
#[derive(Clone, Debug, Default)]
struct Log {
    frames: Vec<Rx>,
    closed: bool,
    /// When the close was seen, from the connect.
    closed_at: Option<Duration>,
    discarded: u64,
    /// The connection ended with a reset (RST), not a clean end of stream.
    reset: bool,
}

impl Log {
    fn data(&self) -> impl Iterator<Item = &Rx> {
        self.frames.iter().filter(|f| f.ty.is_data())
    }

    fn last_data_seq(&self) -> u64 {
        self.data().last().map_or(0, |f| f.seq)
    }

    fn first_at(&self, ty: MsgType) -> Duration {
        self.frames
            .iter()
            .find(|f| f.ty == ty)
            .expect("received")
            .at
    }

    fn count(&self, ty: MsgType) -> usize {
        self.frames.iter().filter(|f| f.ty == ty).count()
    }
}

/// The client side's parser, the same for every driver.
struct Decoder {
    parser: Parser<Box<[u8]>>,
    log: Log,
}

impl Decoder {
    fn new() -> Decoder {
        Decoder {
            parser: Parser::new(vec![0u8; 64 << 10].into_boxed_slice()).unwrap(),
            log: Log::default(),
        }
    }

    fn close(&mut self, at: Duration) {
        self.log.closed = true;
        self.log.closed_at = Some(at);
    }

    fn feed(&mut self, mut bytes: &[u8], at: Duration) {
        while !bytes.is_empty() {
            let spare = self.parser.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.parser.commit(n).unwrap();
            let log = &mut self.log;
            self.parser.drain(|event| match event {
                Event::Frame(m) => log.frames.push(rx(&m, false, at)),
                Event::Duplicate(m) => log.frames.push(rx(&m, true, at)),
                Event::Discarded(d) => log.discarded += d.bytes,
                _ => {}
            });
        }
    }
}

fn rx(m: &Message<'_>, dup: bool, at: Duration) -> Rx {
    Rx {
        ty: m.msg_type(),
        seq: m.sequence(),
        session_id: match m {
            Message::LoginAccepted(la) => Some(la.session_id()),
            _ => None,
        },
        bytes: m.as_bytes().to_vec(),
        dup,
        at,
    }
}

// ---------------------------------------------------------------------------
// The abstraction.

/// The counters every driver reports (from `ServerStats` or `CoreStats`).
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    accepted: u64,
    frames_published: u64,
    slow_marks: u64,
    skipped_batches: u64,
    skipped_frames: u64,
    replay_trimmed: u64,
    closed: [u64; CloseReason::ALL.len()],
}

impl Stats {
    fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()]
    }
}

impl From<ServerStats> for Stats {
    fn from(s: ServerStats) -> Stats {
        Stats {
            accepted: s.accepted,
            frames_published: s.frames_published,
            slow_marks: s.slow_marks,
            skipped_batches: s.skipped_batches,
            skipped_frames: s.skipped_frames,
            replay_trimmed: s.replay_trimmed,
            closed: s.closed,
        }
    }
}

impl From<CoreStats> for Stats {
    fn from(s: CoreStats) -> Stats {
        Stats {
            accepted: s.accepted,
            frames_published: s.frames_published,
            slow_marks: s.slow_marks,
            skipped_batches: s.skipped_batches,
            skipped_frames: s.skipped_frames,
            replay_trimmed: s.replay_trimmed,
            closed: s.closed,
        }
    }
}

/// A running server, however it is driven.
trait Driver: Sized {
    type Client: Conn;
    /// Starts a server with `config` (its `listen` is replaced by
    /// 127.0.0.1:0 for the real drivers).
    fn start(config: ServerConfig) -> Self;
    fn publish(&mut self, msgs: Messages);
    fn stats(&mut self) -> Stats;
    /// A new connection to the server.
    fn connect(&mut self) -> Self::Client {
        self.connect_from(Ipv4Addr::LOCALHOST)
    }
    /// A new connection from `ip` (a loopback address: 127.x.y.z).
    fn connect_from(&mut self, ip: Ipv4Addr) -> Self::Client;
    /// Lets `d` pass (real or virtual time).
    fn sleep(&mut self, d: Duration);
    /// Keeps the server's own threads busy with other work for `d` from
    /// now, without waiting for it (`publish` still works: it runs on the
    /// caller's thread). The mio loop cannot be blocked from outside: a
    /// no-op there.
    fn stall(&mut self, _d: Duration) {}
    /// Graceful shutdown (returns once the server has drained or given up).
    fn shutdown(&mut self);
}

/// A client connection.
trait Conn {
    fn send(&mut self, bytes: &[u8]);
    /// Reads (resuming reading if stopped) until `done` holds, the
    /// connection closed, or `timeout` passed; whether `done` held. A zero
    /// `timeout` reads what has arrived, without waiting.
    fn read_until(&mut self, timeout: Duration, done: &mut dyn FnMut(&Log) -> bool) -> bool;
    fn log(&self) -> Log;
    /// Stops taking bytes off the connection until the next `read_until`.
    fn stop_reading(&mut self);
    /// Closes the connection.
    fn close(&mut self);
}

// ---------------------------------------------------------------------------
// The real drivers: the client is a blocking std TcpStream.

struct TcpClient {
    stream: TcpStream,
    decoder: Decoder,
    connected: Instant,
}

fn tcp_connect(addr: SocketAddr, from: Ipv4Addr) -> TcpClient {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(CLIENT_RCVBUF).unwrap();
    if from != Ipv4Addr::LOCALHOST {
        socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    }
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap();
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).unwrap();
    TcpClient {
        stream,
        decoder: Decoder::new(),
        connected: Instant::now(),
    }
}

impl Conn for TcpClient {
    fn send(&mut self, bytes: &[u8]) {
        // The server may have closed already (a scenario checks that).
        let _ = self.stream.write_all(bytes);
    }

    fn read_until(&mut self, timeout: Duration, done: &mut dyn FnMut(&Log) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 64 << 10];
        if timeout.is_zero() {
            // What is there now, without waiting.
            self.stream.set_nonblocking(true).unwrap();
            while !self.decoder.log.closed && !done(&self.decoder.log) {
                match self.stream.read(&mut buf) {
                    Ok(0) => self.decoder.close(self.connected.elapsed()),
                    Ok(n) => self.decoder.feed(&buf[..n], self.connected.elapsed()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => self.decoder.close(self.connected.elapsed()),
                }
            }
            self.stream.set_nonblocking(false).unwrap();
            return done(&self.decoder.log);
        }
        loop {
            if done(&self.decoder.log) {
                return true;
            }
            let now = Instant::now();
            if self.decoder.log.closed || now >= deadline {
                return false;
            }
            let wait = (deadline - now).clamp(MS, 20 * MS);
            self.stream.set_read_timeout(Some(wait)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => self.decoder.close(self.connected.elapsed()),
                Ok(n) => self.decoder.feed(&buf[..n], self.connected.elapsed()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.decoder.log.reset = true;
                    self.decoder.close(self.connected.elapsed());
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn log(&self) -> Log {
        self.decoder.log.clone()
    }

    fn stop_reading(&mut self) {}

    fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn real_config(mut config: ServerConfig) -> ServerConfig {
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config
}

/// The mio server; `THREADS` event loops (`LoopOptions::threads`), the
/// loop the only writer with `THREADS` > 1 (`publisher_writes: false`).
#[cfg(feature = "net")]
struct MioN<const THREADS: usize> {
    handle: Option<tickwire::net::ServerHandle>,
    addr: SocketAddr,
    last: Stats,
}

/// The mio server as `tickwire serve` runs it: one event loop.
#[cfg(feature = "net")]
type Mio = MioN<1>;

#[cfg(feature = "net")]
impl<const THREADS: usize> Driver for MioN<THREADS> {
    type Client = TcpClient;

    fn start(mut config: ServerConfig) -> Self {
        if THREADS > 1 {
            config.mio.threads = THREADS;
            config.mio.publisher_writes = false;
        }
        let handle = tickwire::net::Server::bind(real_config(config))
            .unwrap()
            .spawn()
            .unwrap();
        MioN {
            addr: handle.local_addr(),
            handle: Some(handle),
            last: Stats::default(),
        }
    }

    fn publish(&mut self, msgs: Messages) {
        let handle = self.handle.as_ref().expect("running");
        handle.publisher().publish(msgs).unwrap();
    }

    fn stats(&mut self) -> Stats {
        if let Some(handle) = &self.handle {
            self.last = handle.stats().into();
        }
        self.last
    }

    fn connect_from(&mut self, ip: Ipv4Addr) -> TcpClient {
        tcp_connect(self.addr, ip)
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn shutdown(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.last = handle.shutdown().unwrap().into();
        }
    }
}

/// The tokio server, on a runtime of its own (two workers).
struct Tokio {
    handle: Option<tickwire::tokio::ServerHandle>,
    addr: SocketAddr,
    last: Stats,
    rt: tokio::runtime::Runtime,
}

impl Driver for Tokio {
    type Client = TcpClient;

    fn start(config: ServerConfig) -> Tokio {
        let (rt, handle) = common::tokio_server(real_config(config));
        Tokio {
            addr: handle.local_addr(),
            handle: Some(handle),
            last: Stats::default(),
            rt,
        }
    }

    fn publish(&mut self, msgs: Messages) {
        let handle = self.handle.as_ref().expect("running");
        handle.publisher().publish(msgs).unwrap();
    }

    fn stats(&mut self) -> Stats {
        if let Some(handle) = &self.handle {
            self.last = handle.stats().into();
        }
        self.last
    }

    fn connect_from(&mut self, ip: Ipv4Addr) -> TcpClient {
        tcp_connect(self.addr, ip)
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn shutdown(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.last = self.rt.block_on(handle.shutdown()).into();
        }
    }

    /// Both runtime workers block in a `std::thread::sleep` (what an
    /// application's task does now and then).
    fn stall(&mut self, d: Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let tx = tx.clone();
            drop(self.rt.spawn(async move {
                tx.send(()).unwrap();
                std::thread::sleep(d);
            }));
        }
        for _ in 0..2 {
            rx.recv_timeout(WAIT).expect("both workers blocked");
        }
    }
}

impl Drop for Tokio {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------
// The simulated driver: a ServerCore and in-memory pipes in virtual time.

const UNIX0: u64 = 1_700_000_000_000_000_000;

/// One simulated connection: the bytes the server wrote that the client
/// has not read (its socket's send queue and the client's receive buffer,
/// `World::pipe_cap` at most), and the client's side.
struct SimConn {
    id: Option<ConnId>,
    connected: Duration,
    pipe: VecDeque<u8>,
    reading: bool,
    server_closed: bool,
    /// The server shut down its sending side (after a Rejected).
    write_shut: bool,
    decoder: Decoder,
}

struct World {
    core: ServerCore,
    now: Duration,
    sequencer: Sequencer,
    conns: Vec<SimConn>,
    pipe_cap: usize,
    /// What the driver would do with the listener after shutdown: refuse.
    shut: bool,
    /// Until then the server moves nothing (no writes, closes or timers):
    /// [`Driver::stall`].
    stalled_until: Duration,
}

impl World {
    fn time(&self) -> Time {
        Time::new(self.now, UNIX0 + self.now.as_nanos() as u64)
    }

    /// Moves bytes until nothing moves: each connection's bytes into its
    /// pipe while there is room, closes, and the reading clients' reads.
    fn pump(&mut self) {
        let t = self.time();
        loop {
            let mut moved = false;
            while self.core.poll_ready().is_some() {}
            while self.core.poll_event().is_some() {}
            let World {
                core,
                conns,
                pipe_cap,
                now,
                stalled_until,
                ..
            } = self;
            let stalled = *now < *stalled_until;
            for conn in conns.iter_mut() {
                if let Some(id) = conn.id.filter(|_| !stalled) {
                    loop {
                        let room = pipe_cap.saturating_sub(conn.pipe.len());
                        if room == 0 {
                            break;
                        }
                        let Some(tx) = core.poll_transmit(id, t) else {
                            break;
                        };
                        let mut n = 0;
                        for slice in tx.slices() {
                            let take = slice.len().min(room - n);
                            conn.pipe.extend(&slice[..take]);
                            n += take;
                            if n == room {
                                break;
                            }
                        }
                        core.transmitted(id, n, t);
                        moved = true;
                    }
                    if core.poll_write_shutdown(id) {
                        conn.write_shut = true;
                        moved = true;
                    }
                    if core.close_reason(id).is_some() {
                        core.release(id);
                        conn.id = None;
                        conn.server_closed = true;
                        moved = true;
                    }
                }
                if conn.reading && !conn.pipe.is_empty() {
                    let (a, b) = conn.pipe.as_slices();
                    let at = now.saturating_sub(conn.connected);
                    conn.decoder.feed(a, at);
                    conn.decoder.feed(b, at);
                    conn.pipe.clear();
                    moved = true;
                }
                if conn.reading
                    && (conn.server_closed || conn.write_shut)
                    && conn.pipe.is_empty()
                    && !conn.decoder.log.closed
                {
                    conn.decoder.close(now.saturating_sub(conn.connected));
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs the core's timers due at or before `to`, then sets the clock to `to`.
    fn advance(&mut self, to: Duration) {
        if self.now < self.stalled_until {
            self.now = to.min(self.stalled_until);
            self.pump(); // the clients' reads only
            if self.now == to {
                return;
            }
        }
        for _ in 0..1_000_000 {
            self.pump();
            match self.core.poll_timeout() {
                Some(at) if at <= to => {
                    self.now = self.now.max(at);
                    let t = self.time();
                    self.core.handle_timeout(t);
                    while let Some(id) = self.core.poll_expired(self.now) {
                        let backlog = self
                            .conns
                            .iter()
                            .find(|c| c.id == Some(id))
                            .map_or(0, |c| c.pipe.len());
                        self.core.handle_conn_timeout(id, t, backlog);
                    }
                }
                _ => {
                    self.now = self.now.max(to);
                    self.pump();
                    return;
                }
            }
        }
        panic!("the core's timers never settle at {:?}", self.now);
    }
}

struct Sim {
    world: Rc<RefCell<World>>,
}

struct SimClient {
    world: Rc<RefCell<World>>,
    index: usize,
}

impl Driver for Sim {
    type Client = SimClient;

    fn start(config: ServerConfig) -> Sim {
        // The simulation takes the real drivers' settings the way they do
        // (its own session id where they would pick a random one).
        let mut core = config.core;
        if core.session.session_id == 0 {
            core.session.session_id = SESSION;
        }
        let t = Time::new(Duration::ZERO, UNIX0);
        let mut core = ServerCore::new(core, t);
        core.set_verifier(config.auth.clone());
        let world = World {
            core,
            now: Duration::ZERO,
            sequencer: Sequencer::new(),
            conns: Vec::new(),
            pipe_cap: config.send_buffer.unwrap_or(1 << 20) + CLIENT_RCVBUF,
            shut: false,
            stalled_until: Duration::ZERO,
        };
        Sim {
            world: Rc::new(RefCell::new(world)),
        }
    }

    fn publish(&mut self, msgs: Messages) {
        let mut w = self.world.borrow_mut();
        let mut bytes = vec![0u8; msgs.len() * tickwire::wire::MAX_DATA_FRAME_LEN];
        let done = w.sequencer.encode_batch(&msgs, &mut bytes);
        bytes.truncate(done.bytes);
        let t = w.time();
        w.core.publish(Arc::new(Batch::new(bytes).unwrap()), t);
        w.pump();
    }

    fn stats(&mut self) -> Stats {
        self.world.borrow().core.stats().into()
    }

    fn connect_from(&mut self, ip: Ipv4Addr) -> SimClient {
        let mut w = self.world.borrow_mut();
        assert!(!w.shut, "connect after shutdown");
        let index = w.conns.len();
        let peer = SocketAddr::from((ip, 20_000 + index as u16));
        let t = w.time();
        let id = w.core.accept(peer, t);
        w.conns.push(SimConn {
            id: Some(id),
            connected: t.monotonic,
            pipe: VecDeque::new(),
            reading: true,
            server_closed: false,
            write_shut: false,
            decoder: Decoder::new(),
        });
        w.pump();
        SimClient {
            world: Rc::clone(&self.world),
            index,
        }
    }

    fn sleep(&mut self, d: Duration) {
        let mut w = self.world.borrow_mut();
        let to = w.now + d;
        w.advance(to);
    }

    fn stall(&mut self, d: Duration) {
        let mut w = self.world.borrow_mut();
        w.stalled_until = w.now + d;
    }

    fn shutdown(&mut self) {
        let mut w = self.world.borrow_mut();
        let t = w.time();
        w.shut = true;
        w.core.shutdown(t);
        // As the real drivers: write until drained, at most 1 s.
        let end = w.now + Duration::from_secs(1);
        while !w.core.is_drained() && w.now < end {
            let to = (w.now + MS).min(end);
            w.advance(to);
        }
    }
}

impl Conn for SimClient {
    fn send(&mut self, bytes: &[u8]) {
        let mut w = self.world.borrow_mut();
        let t = w.time();
        if let Some(id) = w.conns[self.index].id {
            w.core.handle_input(id, bytes, t);
        }
        w.pump();
    }

    fn read_until(&mut self, timeout: Duration, done: &mut dyn FnMut(&Log) -> bool) -> bool {
        let mut w = self.world.borrow_mut();
        w.conns[self.index].reading = true;
        let end = w.now + timeout;
        loop {
            w.pump();
            let log = &w.conns[self.index].decoder.log;
            if done(log) {
                return true;
            }
            if log.closed || w.now >= end {
                return false;
            }
            let next = if w.now < w.stalled_until {
                w.stalled_until.min(end)
            } else {
                w.core.poll_timeout().map_or(end, |at| at.clamp(w.now, end))
            };
            // A due timer is run by `advance` without moving the clock;
            // otherwise the clock moves to the next deadline.
            w.advance(next);
            if next == w.now && w.core.poll_timeout().is_some_and(|at| at <= w.now) {
                // Still due after running: move on by a nanosecond.
                let to = w.now + Duration::from_nanos(1);
                w.advance(to);
            }
        }
    }

    fn log(&self) -> Log {
        self.world.borrow().conns[self.index].decoder.log.clone()
    }

    fn stop_reading(&mut self) {
        self.world.borrow_mut().conns[self.index].reading = false;
    }

    fn close(&mut self) {
        let mut w = self.world.borrow_mut();
        let t = w.time();
        if let Some(id) = w.conns[self.index].id {
            w.core.handle_eof(id, t);
        }
        w.pump();
    }
}

// ---------------------------------------------------------------------------
// Scenario helpers.

fn config() -> ServerConfig {
    let mut config = ServerConfig {
        core: CoreConfig::new(SESSION),
        ..ServerConfig::default()
    };
    config.core.session.login_timeout = Duration::from_secs(2);
    config
}

/// [`config`], changed by `tweak`.
fn config_with(tweak: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut config = config();
    tweak(&mut config);
    config
}

fn login(from: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    tickwire::encode(&Payload::Login, from, 0, &mut b).unwrap();
    b
}

fn retransmit(from: u64, count: u64) -> [u8; 40] {
    let mut b = [0u8; 40];
    tickwire::encode(
        &Payload::Retransmit {
            session_id: 0,
            count,
        },
        from,
        0,
        &mut b,
    )
    .unwrap();
    b
}

/// Published messages and their frames' bytes, by sequence.
struct Feed {
    msgs: Messages,
    frames: Vec<Vec<u8>>,
}

impl Feed {
    fn new(n: usize) -> Feed {
        let msgs = common::messages(22, n);
        let frames = common::expected_frames(&msgs);
        Feed { msgs, frames }
    }

    /// Publishes sequences `from..from + n` in batches of `batch`.
    fn publish<D: Driver>(&self, d: &mut D, from: u64, n: usize, batch: usize) {
        let start = from as usize - 1;
        for chunk in self.msgs[start..start + n].chunks(batch) {
            d.publish(chunk.to_vec());
        }
    }
}

/// Checks the data frames of `log`: in order, no duplicate, each byte for
/// byte what was published under its sequence, from `first` through
/// `last`; the number of frames missing in between (the gaps).
fn check_data(log: &Log, feed: &Feed, first: u64, last: u64) -> u64 {
    let mut expect = first;
    let mut gaps = 0;
    for f in log.data() {
        assert!(!f.dup, "duplicate data frame {}", f.seq);
        assert!(
            f.seq >= expect,
            "frame {} out of order (expected {expect})",
            f.seq
        );
        gaps += f.seq - expect;
        assert!(
            f.bytes == feed.frames[f.seq as usize - 1],
            "frame {} byte for byte",
            f.seq
        );
        expect = f.seq + 1;
    }
    assert_eq!(expect, last + 1, "data through {last}");
    gaps
}

fn wait_stats<D: Driver>(
    d: &mut D,
    timeout: Duration,
    mut done: impl FnMut(&Stats) -> bool,
) -> Stats {
    let mut waited = Duration::ZERO;
    loop {
        let s = d.stats();
        if done(&s) || waited >= timeout {
            return s;
        }
        d.sleep(5 * MS);
        waited += 5 * MS;
    }
}

/// Waits until the server's close counters are exactly `want` (every
/// other reason 0), and asserts it.
fn assert_closes<D: Driver>(d: &mut D, want: &[(CloseReason, u64)]) -> Stats {
    let mut expected = [0u64; CloseReason::ALL.len()];
    for &(reason, n) in want {
        expected[reason.index()] = n;
    }
    let s = wait_stats(d, WAIT, |s| s.closed == expected);
    let named: Vec<_> = CloseReason::ALL
        .iter()
        .zip(s.closed)
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(s.closed, expected, "closes: {named:?}");
    s
}

/// Waits until the server has taken `n` published frames in (the mio
/// driver's `publish` returns before its event loop has: see
/// [`login_after_publish_returned`]), so that what a Login is answered
/// with is the same on every driver.
fn taken<D: Driver>(d: &mut D, n: u64) {
    let s = wait_stats(d, WAIT, |s| s.frames_published >= n);
    assert_eq!(s.frames_published, n);
}

fn got(ty: MsgType) -> impl FnMut(&Log) -> bool {
    move |l: &Log| l.count(ty) > 0
}

fn closed(l: &Log) -> bool {
    l.closed
}

const WAIT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// The scenarios.

/// 1. Login from 1 after 1,000 published: LoginAccepted carries 1, then the
///    replay and live data, every frame once, in order.
fn replay_then_live<D: Driver>() {
    let feed = Feed::new(1100);
    let mut d = D::start(config());
    feed.publish(&mut d, 1, 1000, 100);
    taken(&mut d, 1000);
    let mut c = d.connect();
    c.send(&login(1));
    assert!(c.read_until(WAIT, &mut |l| l.last_data_seq() >= 500));
    feed.publish(&mut d, 1001, 100, 10);
    assert!(c.read_until(WAIT, &mut |l| l.last_data_seq() >= 1100));
    let log = c.log();
    let la = &log.frames[0];
    assert_eq!(la.ty, MsgType::LoginAccepted, "LoginAccepted first");
    assert_eq!((la.seq, la.session_id), (1, Some(SESSION)));
    assert_eq!(check_data(&log, &feed, 1, 1100), 0, "no gap");
    assert_eq!(log.data().count(), 1100);
    assert!(!log.closed);
    assert_eq!(d.stats().frames_published, 1100);
    assert_closes(&mut d, &[]);
}

/// 2. Login from 0: live only, from the next published sequence.
fn live_only<D: Driver>() {
    let feed = Feed::new(110);
    let mut d = D::start(config());
    feed.publish(&mut d, 1, 100, 10);
    taken(&mut d, 100);
    let mut c = d.connect();
    c.send(&login(0));
    assert!(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    feed.publish(&mut d, 101, 10, 5);
    assert!(c.read_until(WAIT, &mut |l| l.last_data_seq() >= 110));
    let log = c.log();
    assert_eq!(log.frames[0].ty, MsgType::LoginAccepted);
    assert_eq!(log.frames[0].seq, 101, "starts at the next published");
    assert_eq!(check_data(&log, &feed, 101, 110), 0);
    assert_closes(&mut d, &[]);
}

/// 3. Login older than the retention: LoginAccepted carries the oldest
///    retained sequence (the gap the client sees, exactly), then every
///    retained frame.
fn login_before_retention<D: Driver>() {
    let feed = Feed::new(1000);
    let mut d = D::start(config_with(|c| {
        c.core.retain = 100;
    }));
    feed.publish(&mut d, 1, 1000, 10);
    taken(&mut d, 1000);
    let mut c = d.connect();
    c.send(&login(1));
    assert!(c.read_until(WAIT, &mut |l| l.last_data_seq() >= 1000));
    let log = c.log();
    let la = &log.frames[0];
    assert_eq!(la.ty, MsgType::LoginAccepted);
    assert_eq!(la.seq, 901, "the oldest retained of 100, in batches of 10");
    assert_eq!(check_data(&log, &feed, la.seq, 1000), 0);
    assert_eq!(log.data().count(), 100);
    assert_closes(&mut d, &[]);
}

/// 4. An idle logged-in client gets a Heartbeat one `heartbeat_interval`
///    (100 ms) after the last frame it was sent, carrying the next sequence.
fn heartbeat_when_idle<D: Driver>() {
    let feed = Feed::new(10);
    let mut d = D::start(config_with(|c| {
        c.core.session.heartbeat_interval = 100 * MS;
    }));
    feed.publish(&mut d, 1, 10, 10);
    taken(&mut d, 10);
    let mut c = d.connect();
    c.send(&login(0));
    assert!(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    let first = c.read_until(250 * MS, &mut got(MsgType::Heartbeat));
    assert!(
        first,
        "a Heartbeat within the interval (+150 ms: a loaded machine)"
    );
    assert!(c.read_until(800 * MS, &mut |l| l.count(MsgType::Heartbeat) >= 3));
    let log = c.log();
    let beats: Vec<_> = log
        .frames
        .iter()
        .filter(|f| f.ty == MsgType::Heartbeat)
        .collect();
    assert!(beats.iter().all(|h| h.seq == 11), "the next sequence");
    assert_eq!(log.data().count(), 0);
    // Each one interval after the frame before, as the client saw them
    // (its reads may be late too on a loaded machine: -30/+150 ms).
    let mut last = log.first_at(MsgType::LoginAccepted);
    for h in &beats {
        let gap = h.at.saturating_sub(last);
        assert!(
            gap >= 70 * MS && gap <= 250 * MS,
            "Heartbeat {gap:?} after the frame before"
        );
        last = h.at;
    }
    assert_closes(&mut d, &[]);
}

/// 5. A connection that sends nothing is closed at the login timeout
///    (200 ms), as `LoginTimeout`.
fn login_timeout<D: Driver>() {
    let mut d = D::start(config_with(|c| {
        c.core.session.login_timeout = 200 * MS;
    }));
    let mut c = d.connect();
    assert!(c.read_until(WAIT, &mut closed), "closed at the timeout");
    let waited = c.log().closed_at.unwrap();
    assert!(
        waited >= 180 * MS && waited <= 450 * MS,
        "closed {waited:?} after the connect (timeout 200 ms)"
    );
    assert!(c.log().frames.is_empty(), "nothing sent before login");
    assert_closes(&mut d, &[(CloseReason::LoginTimeout, 1)]);
}

/// 6. Bytes that are not frames, before any Login: closed, `BadData`.
fn garbage_before_login<D: Driver>() {
    let mut d = D::start(config());
    let mut c = d.connect();
    c.send(&[0xab; 64]);
    assert!(c.read_until(WAIT, &mut closed));
    assert!(c.log().frames.is_empty());
    assert_closes(&mut d, &[(CloseReason::BadData, 1)]);
}

/// 7. A second Login: closed, `SecondLogin`.
fn second_login<D: Driver>() {
    let mut d = D::start(config());
    let mut c = d.connect();
    c.send(&login(0));
    assert!(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    c.send(&login(0));
    assert!(c.read_until(WAIT, &mut closed));
    assert_eq!(c.log().count(MsgType::LoginAccepted), 1);
    assert_closes(&mut d, &[(CloseReason::SecondLogin, 1)]);
}

/// 8. `max_clients` = 1: a second client is closed at its Login
///    (`MaxClients`, no LoginAccepted); the first is served on.
fn max_clients<D: Driver>() {
    let feed = Feed::new(5);
    let mut d = D::start(config_with(|c| {
        c.core.max_clients = 1;
    }));
    let mut a = d.connect();
    a.send(&login(0));
    assert!(a.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    let mut b = d.connect();
    b.send(&login(0));
    assert!(b.read_until(WAIT, &mut closed));
    assert_eq!(b.log().count(MsgType::LoginAccepted), 0, "{:?}", b.log());
    assert_closes(&mut d, &[(CloseReason::MaxClients, 1)]);
    feed.publish(&mut d, 1, 5, 5);
    assert!(a.read_until(WAIT, &mut |l| l.last_data_seq() >= 5));
    assert_eq!(check_data(&a.log(), &feed, 1, 5), 0);
}

/// 9. A client that stops reading under `SlowPolicy::Skip` (small
///    threshold, queue and send buffer) while 200 batches are published:
///    marked slow, skipped; reading again, it sees frames and gaps that
///    together are exactly the published range, the gaps being the frames
///    the server counts as skipped.
fn slow_client_skip<D: Driver>() {
    const BATCHES: usize = 200;
    const BATCH: usize = 50;
    let total = BATCHES * BATCH + 10;
    let feed = Feed::new(total);
    let mut d = D::start(config_with(|c| {
        c.core.session.slow_policy = SlowPolicy::Skip;
        c.core.session.slow_threshold = 8 << 10;
        c.core.session.slow_grace = 20 * MS;
        c.core.session.queue_limit = 16 << 10;
        c.send_buffer = Some(8 << 10);
    }));
    let mut c = d.connect();
    c.send(&login(0));
    assert!(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    c.stop_reading();
    for i in 0..BATCHES {
        feed.publish(&mut d, (i * BATCH) as u64 + 1, BATCH, BATCH);
        d.sleep(2 * MS);
    }
    let s = wait_stats(&mut d, WAIT, |s| s.slow_marks >= 1 && s.skipped_frames > 0);
    assert!(s.slow_marks >= 1, "{s:?}");
    assert!(s.skipped_frames > 0, "{s:?}");
    // Reading again: what is queued, then one more batch, live.
    c.read_until(300 * MS, &mut |_| false);
    feed.publish(&mut d, (BATCHES * BATCH) as u64 + 1, 10, 10);
    let last = total as u64;
    assert!(
        c.read_until(WAIT, &mut |l| l.last_data_seq() >= last),
        "caught up to {last}: {}",
        c.log().last_data_seq()
    );
    let log = c.log();
    assert_eq!(log.frames[0].seq, 1);
    let gaps = check_data(&log, &feed, 1, last);
    let frames = log.data().count() as u64;
    assert_eq!(frames + gaps, last, "frames + gaps = the published range");
    assert!(gaps > 0, "a gap");
    let s = d.stats();
    assert_eq!(
        gaps,
        s.skipped_frames + s.replay_trimmed,
        "every skipped frame is a gap: {s:?}"
    );
    assert!(!log.closed);
    eprintln!(
        "slow_client_skip: {frames} frames, {gaps} missing, slow_marks {}, skipped batches {} frames {}",
        s.slow_marks, s.skipped_batches, s.skipped_frames
    );
    assert_closes(&mut d, &[]);
}

/// 10. A retransmission request (section 9): LoginAccepted with its first
///     sequence, the frames, and a Heartbeat after the last, nothing else;
///     the connection stays open.
fn retransmission<D: Driver>() {
    let feed = Feed::new(1000);
    let mut d = D::start(config());
    feed.publish(&mut d, 1, 1000, 100);
    taken(&mut d, 1000);
    let mut c = d.connect();
    c.send(&retransmit(101, 50));
    assert!(c.read_until(WAIT, &mut got(MsgType::Heartbeat)));
    let log = c.log();
    let kinds: Vec<_> = log.frames.iter().map(|f| (f.ty, f.seq)).collect();
    assert_eq!(kinds.len(), 52, "{kinds:?}");
    assert_eq!(kinds[0], (MsgType::LoginAccepted, 101));
    assert_eq!(log.frames[0].session_id, Some(SESSION));
    assert_eq!(kinds[51], (MsgType::Heartbeat, 151), "the ending Heartbeat");
    assert_eq!(check_data(&log, &feed, 101, 150), 0);
    assert!(!log.closed, "open for more requests");
    c.close();
    assert_closes(&mut d, &[(CloseReason::PeerClosed, 1)]);
}

/// 11. Graceful shutdown: EndOfSession to a logged-in client after its
///     data, then the connection closes.
fn graceful_shutdown<D: Driver>() {
    let feed = Feed::new(10);
    let mut d = D::start(config());
    let mut c = d.connect();
    c.send(&login(0));
    assert!(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    feed.publish(&mut d, 1, 10, 10);
    assert!(c.read_until(WAIT, &mut |l| l.last_data_seq() >= 10));
    d.shutdown();
    assert!(c.read_until(WAIT, &mut closed), "closed after EndOfSession");
    let log = c.log();
    assert_eq!(check_data(&log, &feed, 1, 10), 0);
    let last = log.frames.last().unwrap();
    assert_eq!(
        (last.ty, last.seq),
        (MsgType::EndOfSession, 11),
        "{:?}",
        log.frames
    );
    assert_eq!(log.count(MsgType::EndOfSession), 1);
    assert_closes(&mut d, &[(CloseReason::Shutdown, 1)]);
}

/// 12. 200 connections from one address, each sending its Login at once:
///     all get LoginAccepted (admission reads first), nobody is displaced.
fn burst_of_logins<D: Driver>() {
    const N: usize = 200;
    let mut d = D::start(config());
    let mut clients: Vec<_> = (0..N)
        .map(|_| {
            let mut c = d.connect();
            c.send(&login(0));
            c
        })
        .collect();
    let mut accepted = 0;
    for c in &mut clients {
        accepted += usize::from(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    }
    let s = d.stats();
    assert_eq!(accepted, N, "{s:?}");
    assert_eq!(s.accepted, N as u64);
    assert_closes(&mut d, &[]);
}

/// 13. What `publish` returned from is published: a client that logs in
///     from 0 afterwards gets LoginAccepted with the sequence after it, and
///     is not sent it (50 rounds, a new client each).
fn login_after_publish_returned<D: Driver>() {
    const ROUNDS: u64 = 50;
    let feed = Feed::new(ROUNDS as usize * 10);
    let mut d = D::start(config());
    let mut early = Vec::new();
    for round in 0..ROUNDS {
        feed.publish(&mut d, round * 10 + 1, 10, 10);
        let mut c = d.connect();
        c.send(&login(0));
        assert!(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
        let start = c.log().frames[0].seq;
        if start != round * 10 + 11 {
            early.push((round * 10 + 11, start));
        }
        c.close();
    }
    assert!(
        early.is_empty(),
        "{} of {ROUNDS} logins from 0 after publish returned got LoginAccepted before the batch \
         (wanted, got): {early:?}",
        early.len()
    );
}

/// 14. Shutdown with a logged-in client, a connection that has not logged
///     in and a retransmission connection: EndOfSession to the two that
///     are in a session, then each closes; the third is closed with nothing.
fn shutdown_closes_everyone<D: Driver>() {
    let feed = Feed::new(10);
    let mut d = D::start(config());
    feed.publish(&mut d, 1, 10, 10);
    taken(&mut d, 10);
    let mut a = d.connect();
    a.send(&login(0));
    assert!(a.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    let mut r = d.connect();
    r.send(&retransmit(1, 5));
    assert!(r.read_until(WAIT, &mut got(MsgType::Heartbeat)));
    let mut b = d.connect();
    wait_stats(&mut d, WAIT, |s| s.accepted == 3);
    d.shutdown();
    for (name, c) in [("logged in", &mut a), ("retransmission", &mut r)] {
        assert!(c.read_until(WAIT, &mut closed), "{name}: closed");
        let log = c.log();
        let last = log.frames.last().unwrap();
        assert_eq!((last.ty, last.seq), (MsgType::EndOfSession, 11), "{name}");
    }
    assert!(b.read_until(WAIT, &mut closed), "not logged in: closed");
    assert!(b.log().frames.is_empty(), "{:?}", b.log());
    assert_closes(&mut d, &[(CloseReason::Shutdown, 3)]);
}

/// 15. A client that stops reading under `SlowPolicy::Disconnect`: closed
///     as `Slow`; what it had been sent is a gap-free prefix of the feed,
///     and no EndOfSession.
fn slow_client_disconnect<D: Driver>() {
    const BATCHES: usize = 200;
    const BATCH: usize = 50;
    let feed = Feed::new(BATCHES * BATCH);
    let mut d = D::start(config_with(|c| {
        c.core.session.slow_policy = SlowPolicy::Disconnect;
        c.core.session.slow_threshold = 8 << 10;
        c.core.session.slow_grace = 20 * MS;
        c.core.session.queue_limit = 16 << 10;
        c.send_buffer = Some(8 << 10);
    }));
    let mut c = d.connect();
    c.send(&login(0));
    assert!(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    c.stop_reading();
    for i in 0..BATCHES {
        feed.publish(&mut d, (i * BATCH) as u64 + 1, BATCH, BATCH);
        d.sleep(2 * MS);
    }
    let s = wait_stats(&mut d, WAIT, |s| s.closed_for(CloseReason::Slow) == 1);
    assert!(s.slow_marks >= 1, "{s:?}");
    assert!(c.read_until(WAIT, &mut closed));
    let log = c.log();
    let last = log.last_data_seq();
    assert_eq!(check_data(&log, &feed, 1, last), 0, "a prefix, no gap");
    assert!(last < (BATCHES * BATCH) as u64);
    assert_eq!(log.count(MsgType::EndOfSession), 0);
    assert_closes(&mut d, &[(CloseReason::Slow, 1)]);
}

/// 20. Under `SlowPolicy::Disconnect` nothing is skipped: a slow client is
///     closed, never told of a gap, so `skipped_batches` and
///     `skipped_frames` ("the gaps they were told of") stay 0.
fn disconnect_skips_nothing<D: Driver>() {
    const BATCH: usize = 50;
    let feed = Feed::new(100 * BATCH);
    let mut d = D::start(config_with(|c| {
        c.core.session.slow_policy = SlowPolicy::Disconnect;
        c.core.session.slow_threshold = 8 << 10;
        c.core.session.slow_grace = 20 * MS;
        c.core.session.queue_limit = 16 << 10;
        c.send_buffer = Some(8 << 10);
    }));
    let mut c = d.connect();
    c.send(&login(0));
    assert!(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    c.stop_reading();
    for i in 0..100 {
        feed.publish(&mut d, (i * BATCH) as u64 + 1, BATCH, BATCH);
        d.sleep(2 * MS);
    }
    let s = wait_stats(&mut d, WAIT, |s| s.closed_for(CloseReason::Slow) == 1);
    assert_eq!(s.closed_for(CloseReason::Slow), 1);
    assert_eq!(
        (s.skipped_batches, s.skipped_frames),
        (0, 0),
        "nothing skipped under Disconnect"
    );
}

/// 16. Idle connections from one address past `max_unauthenticated_per_peer`
///     (2), once their admission grace (50 ms) is over: the oldest are
///     displaced (`UnauthenticatedLimit`); the newest stay, and a real
///     client still logs in.
fn idle_connections_displaced<D: Driver>() {
    let mut d = D::start(config_with(|c| {
        c.core.max_unauthenticated_per_peer = 2;
        c.core.admission_grace = 50 * MS;
    }));
    let mut idle = Vec::new();
    for i in 0..5 {
        idle.push(d.connect());
        wait_stats(&mut d, WAIT, |s| s.accepted == i + 1);
    }
    d.sleep(150 * MS);
    for (i, c) in idle.iter_mut().enumerate() {
        let gone = c.read_until(20 * MS, &mut closed);
        assert_eq!(
            gone,
            i < 3,
            "idle connection {i}: displaced only if among the 3 oldest"
        );
        assert!(c.log().frames.is_empty());
    }
    let mut real = d.connect();
    real.send(&login(0));
    assert!(real.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    assert_closes(&mut d, &[(CloseReason::UnauthenticatedLimit, 3)]);
}

/// 17. A Heartbeat before any Login: closed, `UnexpectedFrame`.
fn heartbeat_before_login<D: Driver>() {
    let mut d = D::start(config());
    let mut c = d.connect();
    let mut hb = [0u8; 24];
    tickwire::encode(&Payload::Heartbeat, 0, 0, &mut hb).unwrap();
    c.send(&hb);
    assert!(c.read_until(WAIT, &mut closed));
    assert!(c.log().frames.is_empty());
    assert_closes(&mut d, &[(CloseReason::UnexpectedFrame, 1)]);
}

/// 18. A Login in two pieces 50 ms apart is one Login; half a Login and
///     then silence is a login timeout, not bad data.
fn fragmented_login<D: Driver>() {
    let mut d = D::start(config_with(|c| {
        c.core.session.login_timeout = 300 * MS;
    }));
    let bytes = login(0);
    let mut whole = d.connect();
    whole.send(&bytes[..10]);
    d.sleep(50 * MS);
    whole.send(&bytes[10..]);
    assert!(whole.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    let mut half = d.connect();
    half.send(&bytes[..12]);
    assert!(half.read_until(WAIT, &mut closed));
    assert!(half.log().frames.is_empty());
    assert_closes(&mut d, &[(CloseReason::LoginTimeout, 1)]);
}

/// 19. A client that closes in the middle of its replay: `PeerClosed`;
///     the others are served on.
fn close_during_replay<D: Driver>() {
    let feed = Feed::new(20_000);
    let mut d = D::start(config());
    feed.publish(&mut d, 1, 20_000, 500);
    taken(&mut d, 20_000);
    let mut c = d.connect();
    c.send(&login(1));
    assert!(c.read_until(WAIT, &mut |l| l.last_data_seq() >= 100));
    c.close();
    let mut other = d.connect();
    other.send(&login(19_001));
    assert!(other.read_until(WAIT, &mut |l| l.last_data_seq() >= 20_000));
    assert_eq!(check_data(&other.log(), &feed, 19_001, 20_000), 0);
    assert_closes(&mut d, &[(CloseReason::PeerClosed, 1)]);
}

/// 21. A Login from beyond the live edge is a Login from 0 (section 4.2).
fn login_from_future<D: Driver>() {
    let feed = Feed::new(110);
    let mut d = D::start(config());
    feed.publish(&mut d, 1, 100, 10);
    taken(&mut d, 100);
    let mut c = d.connect();
    c.send(&login(500));
    assert!(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    feed.publish(&mut d, 101, 10, 10);
    assert!(c.read_until(WAIT, &mut |l| l.last_data_seq() >= 110));
    let log = c.log();
    assert_eq!(
        (log.frames[0].ty, log.frames[0].seq),
        (MsgType::LoginAccepted, 101)
    );
    assert_eq!(check_data(&log, &feed, 101, 110), 0);
    assert_closes(&mut d, &[]);
}

/// 22. Retransmission edge cases (section 9.2, 9.3) on one connection,
///     answered in order: beyond the cap (`retransmit_cap` 20), another
///     session's id (no data), older than the retention (from the oldest),
///     beyond the live edge (nothing).
fn retransmission_edges<D: Driver>() {
    let feed = Feed::new(1000);
    let mut d = D::start(config_with(|c| {
        c.core.retain = 500;
        c.core.session.retransmit_cap = 20;
    }));
    feed.publish(&mut d, 1, 1000, 100);
    taken(&mut d, 1000);
    let mut c = d.connect();
    let other = {
        let mut b = [0u8; 40];
        let p = Payload::Retransmit {
            session_id: SESSION + 1,
            count: 10,
        };
        tickwire::encode(&p, 700, 0, &mut b).unwrap();
        b
    };
    let requests: [&[u8]; 4] = [
        &retransmit(600, 100),
        &other,
        &retransmit(1, 10),
        &retransmit(2000, 5),
    ];
    for r in requests {
        c.send(r);
    }
    assert!(c.read_until(WAIT, &mut |l| l.count(MsgType::Heartbeat) >= 4));
    let log = c.log();
    // Split into replies, each LoginAccepted … Heartbeat.
    let mut replies: Vec<Vec<&Rx>> = Vec::new();
    for f in &log.frames {
        if f.ty == MsgType::LoginAccepted {
            replies.push(Vec::new());
        }
        replies
            .last_mut()
            .expect("a reply starts with LoginAccepted")
            .push(f);
    }
    let shape: Vec<_> = replies
        .iter()
        .map(|r| {
            let (first, last) = (r[0], r[r.len() - 1]);
            (first.seq, first.session_id, r.len() - 2, last.ty, last.seq)
        })
        .collect();
    let hb = MsgType::Heartbeat;
    assert_eq!(
        shape,
        [
            (600, Some(SESSION), 20, hb, 620),
            (700, Some(SESSION), 0, hb, 700),
            (501, Some(SESSION), 0, hb, 501),
            (2000, Some(SESSION), 0, hb, 2000),
        ],
        "(LoginAccepted seq, session, data frames, end, its seq) per reply"
    );
    assert_eq!(check_data(&log, &feed, 600, 619), 0);
    assert!(!log.closed);
    assert_closes(&mut d, &[]);
}

/// 23. `max_retransmission_connections` = 1: a second retransmission
///     connection is closed at its request (`MaxClients`), without a reply;
///     a client still logs in.
fn max_retransmission_connections<D: Driver>() {
    let feed = Feed::new(100);
    let mut d = D::start(config_with(|c| {
        c.core.max_retransmission_connections = 1;
    }));
    feed.publish(&mut d, 1, 100, 100);
    taken(&mut d, 100);
    let mut a = d.connect();
    a.send(&retransmit(1, 10));
    assert!(a.read_until(WAIT, &mut got(MsgType::Heartbeat)));
    let mut b = d.connect();
    b.send(&retransmit(1, 10));
    assert!(b.read_until(WAIT, &mut closed));
    assert!(b.log().frames.is_empty(), "{:?}", b.log().frames);
    let mut c = d.connect();
    c.send(&login(0));
    assert!(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    assert_closes(&mut d, &[(CloseReason::MaxClients, 1)]);
}

/// 24. No silent loss (issue 22, point 3): 20,000 frames in batches of
///     seeded sizes (1 to 400), a client logging in every 10 batches (from
///     0, 1 or a retained sequence), every client reading a little between
///     batches: each gets every frame from its LoginAccepted's sequence on,
///     once, in order; nobody is slow or skipped.
fn no_silent_loss<D: Driver>() {
    const TOTAL: usize = 20_000;
    let feed = Feed::new(TOTAL);
    let mut d = D::start(config());
    let mut rng = 0x22u64;
    let mut next = 1usize;
    let mut clients = Vec::new();
    let mut round = 0;
    while next <= TOTAL {
        if round % 10 == 0 {
            taken(&mut d, next as u64 - 1);
            let from = match clients.len() % 3 {
                0 => 0,
                1 => 1,
                _ => (next as u64 / 2).max(1),
            };
            let want = if from == 0 { next as u64 } else { from };
            let mut c = d.connect();
            c.send(&login(from));
            // Answered before the next batch (a Login from 0 starts where
            // the server is when it reads it).
            assert!(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
            clients.push((c, want));
        }
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let n = (1 + (rng >> 33) % 400).min((TOTAL + 1 - next) as u64) as usize;
        feed.publish(&mut d, next as u64, n, n);
        next += n;
        round += 1;
        d.sleep(MS);
        for (c, _) in &mut clients {
            c.read_until(Duration::ZERO, &mut |_| false);
        }
    }
    for (i, (c, want)) in clients.iter_mut().enumerate() {
        assert!(
            c.read_until(WAIT, &mut |l| l.last_data_seq() >= TOTAL as u64),
            "client {i} caught up: {}",
            c.log().last_data_seq()
        );
        let log = c.log();
        let la = &log.frames[0];
        assert_eq!(
            (la.ty, la.seq),
            (MsgType::LoginAccepted, *want),
            "client {i}"
        );
        assert_eq!(
            check_data(&log, &feed, *want, TOTAL as u64),
            0,
            "client {i}"
        );
    }
    let s = d.stats();
    assert_eq!(
        (s.slow_marks, s.skipped_frames, s.replay_trimmed),
        (0, 0, 0)
    );
    assert_closes(&mut d, &[]);
}

/// 25. No loss while the server's threads are busy elsewhere (issue 22's
///     tokio case): 10,000 one-message batches published during a 300 ms
///     stall of the server (both tokio workers blocked; the simulated core
///     not driven; a no-op on mio), then the client gets every one, and
///     nobody is marked slow.
fn stalled_server_loses_nothing<D: Driver>() {
    const TOTAL: usize = 10_000;
    let feed = Feed::new(TOTAL);
    let mut d = D::start(config());
    let mut c = d.connect();
    c.send(&login(0));
    assert!(c.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    d.stall(300 * MS);
    feed.publish(&mut d, 1, TOTAL, 1);
    d.sleep(300 * MS);
    assert!(
        c.read_until(WAIT, &mut |l| l.last_data_seq() >= TOTAL as u64),
        "caught up: {}",
        c.log().last_data_seq()
    );
    assert_eq!(check_data(&c.log(), &feed, 1, TOTAL as u64), 0);
    let s = d.stats();
    assert_eq!((s.slow_marks, s.skipped_frames), (0, 0));
    assert_closes(&mut d, &[]);
}

/// `mio_<name>`, `tokio_<name>` and `sim_<name>` for each scenario
/// (`#[mio(…)]` before a name: an attribute for its mio test only;
/// `#[all(…)]`: for all three).
macro_rules! scenarios {
    ($($(#[mio($mio:meta)])? $(#[all($all:meta)])? $name:ident),* $(,)?) => {
        #[cfg(feature = "net")]
        mod mio_ {
            $( #[test] $(#[$mio])? $(#[$all])? fn $name() { super::$name::<super::Mio>(); } )*
        }
        #[cfg(feature = "net")]
        mod mio2_ {
            $( #[test] $(#[$mio])? $(#[$all])? fn $name() { super::$name::<super::MioN<2>>(); } )*
        }
        mod tokio_ { $( #[test] $(#[$all])? fn $name() { super::$name::<super::Tokio>(); } )* }
        mod sim_ { $( #[test] $(#[$all])? fn $name() { super::$name::<super::Sim>(); } )* }
    };
}

scenarios!(
    replay_then_live,
    live_only,
    login_before_retention,
    heartbeat_when_idle,
    login_timeout,
    garbage_before_login,
    second_login,
    max_clients,
    slow_client_skip,
    retransmission,
    graceful_shutdown,
    burst_of_logins,
    #[mio(
        ignore = "by design (documented on net::Publisher): the mio Publisher::publish returns once the batch is queued to the \
        event loop, before the core has it; a Login from 0 the loop handles in between gets \
        LoginAccepted with the batch's first sequence and is then sent the batch as live \
        (one loop with publisher writes: 0-7 of 50 rounds; two loops, loop-only writes: 39 \
        of 50), while on the tokio and simulated drivers a batch whose publish returned is \
        never sent to a later login from 0"
    )]
    login_after_publish_returned,
    shutdown_closes_everyone,
    slow_client_disconnect,
    idle_connections_displaced,
    heartbeat_before_login,
    fragmented_login,
    close_during_replay,
    disconnect_skips_nothing,
    login_from_future,
    retransmission_edges,
    max_retransmission_connections,
    no_silent_loss,
    stalled_server_loses_nothing,
    auth_login_first_is_rejected_cleanly,
    auth_bad_credentials_are_rejected_cleanly,
    auth_valid_key_is_served,
    auth_not_permitted_gets_no_data,
    auth_lockout_spares_other_addresses,
);

// ---------------------------------------------------------------------------
// Authenticated logins (protocol section 11), on every driver.

const ALICE: [u8; 32] = [0xa1; 32];
const SUB: [u8; 32] = [0x5b; 32];

fn auth_config(tweak: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    use tickwire::session::auth::{Credentials, Permissions};
    use tickwire::wire::{KeyId, Secret};
    let lines = [
        Credentials::line(&KeyId::new("alice").unwrap(), &Secret::new(ALICE), None),
        Credentials::line(
            &KeyId::new("sub-only").unwrap(),
            &Secret::new(SUB),
            Some(Permissions::SUBSCRIBE),
        ),
    ];
    config_with(|c| {
        c.auth = Some(Arc::new(Credentials::parse(&lines.join("\n")).unwrap()));
        tweak(c);
    })
}

fn auth_frame(key: &str, secret: [u8; 32]) -> [u8; 72] {
    use tickwire::wire::{KeyId, Secret};
    let mut b = [0u8; 72];
    tickwire::encode(
        &Payload::auth(&KeyId::new(key).unwrap(), Secret::new(secret)),
        0,
        0,
        &mut b,
    )
    .unwrap();
    b
}

/// Exactly one Rejected with `reason`, then the end of the stream.
fn rejected_once(log: &Log, reason: u8) {
    let kinds: Vec<MsgType> = log.frames.iter().map(|f| f.ty).collect();
    assert_eq!(kinds, [MsgType::Rejected], "{log:?}");
    assert_eq!(log.frames[0].bytes[20], reason, "{log:?}");
    assert!(log.closed && !log.reset, "a clean end of stream: {log:?}");
    assert_eq!(log.discarded, 0);
}

/// A Login (and data) before any Auth, in one write: one Rejected 1, the
/// stream ends cleanly (no reset), nothing else ever written.
fn auth_login_first_is_rejected_cleanly<D: Driver>() {
    let feed = Feed::new(10);
    let mut d = D::start(auth_config(|_| {}));
    feed.publish(&mut d, 1, 10, 5);
    taken(&mut d, 10);
    let mut c = d.connect();
    c.send(&[login(1).as_slice(), &login(1), &[0u8; 100]].concat());
    assert!(c.read_until(WAIT, &mut closed));
    rejected_once(&c.log(), 1);
    c.close();
    assert_closes(&mut d, &[(CloseReason::Rejected, 1)]);
}

/// Wrong secret, unknown key, two Auths' worth of a broken one: each one
/// Rejected 2 and a clean end, also with the Login in the same write.
fn auth_bad_credentials_are_rejected_cleanly<D: Driver>() {
    let mut d = D::start(auth_config(|_| {}));
    let mut broken = auth_frame("alice", ALICE);
    broken[40] ^= 1; // the checksum no longer holds
    for (i, bytes) in [
        auth_frame("alice", SUB).to_vec(),
        auth_frame("mallory", ALICE).to_vec(),
        broken.to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = d.connect_from(Ipv4Addr::new(127, 0, 1, i as u8 + 1));
        c.send(&[bytes.as_slice(), &login(0)].concat());
        assert!(c.read_until(WAIT, &mut closed), "case {i}");
        rejected_once(&c.log(), 2);
        c.close();
    }
    assert_closes(&mut d, &[(CloseReason::Rejected, 3)]);
}

/// A valid Auth and its Login in one write: served as without
/// authentication, replay then live.
fn auth_valid_key_is_served<D: Driver>() {
    let feed = Feed::new(20);
    let mut d = D::start(auth_config(|_| {}));
    feed.publish(&mut d, 1, 10, 5);
    taken(&mut d, 10);
    let mut c = d.connect();
    c.send(&[auth_frame("alice", ALICE).as_slice(), &login(1)].concat());
    assert!(c.read_until(WAIT, &mut |l| l.last_data_seq() >= 10));
    feed.publish(&mut d, 11, 10, 5);
    assert!(c.read_until(WAIT, &mut |l| l.last_data_seq() >= 20));
    assert_eq!(check_data(&c.log(), &feed, 1, 20), 0);
    assert_eq!(c.log().count(MsgType::Rejected), 0);
    c.close();
    assert_closes(&mut d, &[(CloseReason::PeerClosed, 1)]);
}

/// A valid key asking what it may not (a subscribe-only key opening a
/// retransmission connection): Rejected 3 in place of LoginAccepted, never
/// a data frame.
fn auth_not_permitted_gets_no_data<D: Driver>() {
    let feed = Feed::new(10);
    let mut d = D::start(auth_config(|_| {}));
    feed.publish(&mut d, 1, 10, 5);
    taken(&mut d, 10);
    let mut c = d.connect();
    c.send(&[auth_frame("sub-only", SUB).as_slice(), &retransmit(1, 5)].concat());
    assert!(c.read_until(WAIT, &mut closed));
    rejected_once(&c.log(), 3);
    c.close();
    assert_closes(&mut d, &[(CloseReason::Rejected, 1)]);
}

/// Three failures from 127.0.0.9 lock it out: its next connections are
/// closed at the accept with nothing written; 127.0.0.10 logs in.
fn auth_lockout_spares_other_addresses<D: Driver>() {
    let mut d = D::start(auth_config(|c| {
        c.core.lockout.max_failures = 3;
    }));
    let bad = Ipv4Addr::new(127, 0, 0, 9);
    for _ in 0..3 {
        let mut c = d.connect_from(bad);
        c.send(&auth_frame("alice", SUB));
        assert!(c.read_until(WAIT, &mut closed));
        rejected_once(&c.log(), 2);
        c.close();
    }
    wait_stats(&mut d, WAIT, |s| s.closed_for(CloseReason::Rejected) == 3);
    for _ in 0..2 {
        let mut c = d.connect_from(bad);
        assert!(c.read_until(WAIT, &mut closed));
        assert!(c.log().frames.is_empty(), "{:?}", c.log());
    }
    let mut good = d.connect_from(Ipv4Addr::new(127, 0, 0, 10));
    good.send(&[auth_frame("alice", ALICE).as_slice(), &login(0)].concat());
    assert!(good.read_until(WAIT, &mut got(MsgType::LoginAccepted)));
    assert_closes(
        &mut d,
        &[(CloseReason::Rejected, 3), (CloseReason::LockedOut, 2)],
    );
}
