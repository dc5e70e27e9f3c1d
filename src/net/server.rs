//! See [`Server`](super::Server).
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use super::datagram_output::DatagramOutput;
use super::feed::{DirectWrite, Handoff, Numbering, RelayControl, ToLoop, LAZY_TICK};
use super::publisher::Publisher;
use super::server_config::{DatagramSender, ServerConfig};
use super::stats::{add, ServerStats, Shared};
use super::transport::{Read_, Stream};
use super::{close_reason, unix_nanos, Wal};
use crate::encode::Sequencer;
use crate::session::cold::ColdSource;
use crate::session::{
    Batch, CloseReason, ConnId, CoreConfig, ServerCore, ServerPhase, Time, SHUTDOWN_DRAIN,
    WRITE_BUDGET,
};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CLIENT: usize = 2;
/// How long accepting pauses after EMFILE / ENFILE (or another failure).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The most connections accepted in one loop turn; more are accepted on
/// the next turn, without waiting for the listener's next readiness event.
const ACCEPTS_PER_TURN: usize = 1024;
/// Batches taken from the publisher queue per loop turn.
const BATCHES_PER_TURN: usize = 256;
/// Published bytes taken before they are written to every client.
const COALESCE: usize = 256 << 10;
/// How long one loop turn writes to clients before it takes newly
/// published batches (and readiness, and timers) again; the clients not
/// reached yet are written first on the next turn, with everything
/// published until then. A pass over many clients thus never leaves data
/// published during it for the next pass: each client's write carries
/// what was published up to about this long before it.
const FLUSH_SLICE: Duration = Duration::from_millis(1);
/// At most about this many slices per pass: when passes grow long (more
/// published than the loop writes), slices grow with them, so the batches
/// queued to a client between two of its writes (one queue entry and one
/// `writev` slice each) and the work of taking them stay bounded per pass.
const SLICES_PER_PASS: u32 = 16;
/// A pass that took this long means the loop is overloaded (it writes less
/// than is published): the next pass is not cut into slices. Taking new
/// batches between slices then only adds queue entries and work (at 80K
/// msg/s to 1,000 clients on two cores, sliced passes sometimes fell behind
/// and had clients skipped as slow where whole passes kept up). At 5K msg/s
/// the passes stay well under it.
const WHOLE_PASSES_AFTER: Duration = Duration::from_millis(100);
/// Replayed bytes written per flush, over all replaying clients: live data
/// goes out first and a crowd of replays cannot hold it up for longer than
/// it takes to write this much (replays rotate for it, turn by turn).
const REPLAY_BUDGET: usize = 1 << 20;
/// The most replayed bytes written to one replaying client at a time (a
/// live client gets up to [`WRITE_BUDGET`]): a live batch published during
/// a pass waits for at most one such write before the loop takes it (the
/// pass ends there when batches wait, and the next one writes the live
/// clients before the replays).
const REPLAY_WRITE: usize = 256 << 10;
/// Up to this many logged-in connections, a publisher that finds the loop
/// idle writes its batch to them itself (see [`Server::publish_direct`]).
const DIRECT_MAX_CLIENTS: usize = 8;
/// Batches larger than this go through the loop even then: their writes
/// cost more than a wake-up, and the loop writes one while the publisher
/// encodes the next.
const DIRECT_MAX_BYTES: usize = 64 << 10;

/// Another event loop of the server: its queue, its waker, and the loop
/// itself until it runs on its own thread.
#[derive(Debug)]
struct Worker {
    tx: SyncSender<ToLoop>,
    waker: Arc<Waker>,
    server: Option<Server>,
    thread: Option<JoinHandle<io::Result<ServerStats>>>,
}

/// One connected client's socket: its state is the core's, under `id`.
#[derive(Debug)]
struct Slot {
    stream: Stream,
    id: ConnId,
    /// In the flush list.
    flushing: bool,
    /// Its timer came due while it was in the flush list: handled right
    /// after its write (see `run_timers`).
    timer_due: bool,
}

/// The reference server.
///
/// The reference server: one mio event loop that accepts connections, reads
/// each client's bytes into its parser, and runs one
/// [`ServerSession`](crate::session::ServerSession) per client over the
/// shared [`Retention`](crate::session::Retention). The protocol's rules
/// (login and its timeout, replay and the seam to live data, heartbeats,
/// slow clients, graceful EndOfSession) live in the session; this loop only
/// moves bytes and time.
///
/// ```text
///  publisher threads ──Publisher::publish──▶ bounded queue of Arc<Batch> ──wake──┐
///                                                                                ▼
///  listener ──accept──▶ clients ◀── event loop (epoll / kqueue, edge-triggered)
///                         │   readable: read into the Parser ─▶ session.handle_event
///                         │   batch: retention.push, then every session.handle_published
///                         │   writable / queued: session.poll_transmit ─▶ writev ─▶ transmitted
///                         │   sleeps until the earliest session.poll_timeout (no fixed tick)
///                         ▼
///  per client: AwaitingLogin ─Login─▶ Replaying ─caught up─▶ Live
/// ```
///
/// Fairness: the loop writes to its clients in passes, oldest waiting
/// first, at most 1 MiB to any one client per pass (a client with more to
/// send is served again in the next pass without waiting for readiness), so
/// a replay never holds the loop while live data waits. A pass over many
/// clients is cut into slices of about a millisecond, and newly published
/// batches are taken between slices, so every write carries what was
/// published until just before it: no client's data waits for the next
/// pass.
///
/// Few clients, small batches: the loop's state sits behind a lock that it
/// holds only while it works, not while it sleeps in epoll. A publisher
/// that takes the lock (the loop asleep), with nothing queued before its
/// batch, runs the loop's own steps for the batch on its thread (into the
/// retention, to every session, one write slice) and wakes the loop only
/// if something is left for it; see [`LoopOptions::publisher_writes`](super::LoopOptions::publisher_writes).
///
/// ```
/// use tickwire::io::FrameReader;
/// use tickwire::net::{Server, ServerConfig};
/// use tickwire::parse::Event;
/// use tickwire::{encode::QuoteFields, Message, Payload};
/// use std::io::Write;
///
/// let config = ServerConfig { listen: "127.0.0.1:0".parse()?, ..ServerConfig::default() };
/// let server = Server::bind(config)?.spawn()?;
/// let publisher = server.publisher();
/// publisher.publish(vec![(1, Payload::Quote(QuoteFields::default())); 3])?;
///
/// // A client: log in from sequence 1, read the replay.
/// let mut socket = std::net::TcpStream::connect(server.local_addr())?;
/// let mut login = [0u8; 24];
/// tickwire::encode(&Payload::Login, 1, 0, &mut login)?;
/// socket.write_all(&login)?;
/// let mut reader = FrameReader::new(socket);
/// let mut quotes = 0;
/// while quotes < 3 {
///     match reader.next_event()? {
///         Some(Event::Frame(Message::Quote(_))) => quotes += 1,
///         Some(_) => {}
///         None => break,
///     }
/// }
/// assert_eq!(quotes, 3);
/// let stats = server.shutdown()?;
/// assert_eq!(stats.frames_published, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Server {
    /// Taken by [`run`](Server::run), which sleeps in it without holding
    /// the rest (publishers may write to the clients meanwhile).
    poll: Option<Poll>,
    /// The poll's registry (sockets are registered while the loop runs).
    registry: Registry,
    /// What the sleeping loop waits for: `Some(None)` no deadline,
    /// `Some(Some(at))` until `at` (monotonic); `None` while it runs.
    asleep_until: Option<Option<Duration>>,
    /// `None` for a worker loop (only the first loop accepts).
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    numbering: Arc<Numbering>,
    rx: Receiver<ToLoop>,
    /// The other event loops (`LoopOptions::threads`), fed by this one.
    workers: Vec<Worker>,
    /// Round-robin over this loop (0) and the workers for each new login.
    next_loop: usize,
    /// The worker the last replaying client went to (see `hand_off`).
    next_worker: usize,
    /// A worker: told to stop through its queue, after every batch.
    stop_received: bool,
    /// More messages were waiting than one turn takes.
    more_waiting: bool,
    /// Sockets by [`ConnId::index`] (the core's connections).
    slots: Vec<Option<Slot>>,
    /// Clients with bytes to write, in the order they are written: the
    /// first `pass_left` make up the pass under way (see `flush_all`).
    flush: VecDeque<usize>,
    /// Clients of the pass under way not written yet.
    pass_left: usize,
    /// Replayed bytes the pass under way may still write.
    replay_budget: usize,
    /// When the pass under way started, and how long the last one took.
    pass_started: Instant,
    last_pass: Duration,
    /// Replaying clients left out of a pass for want of replay budget:
    /// first in line in the next pass.
    starved: Vec<usize>,
    /// The pass under way (or the last one) wrote to a replaying client:
    /// the next pass puts the live clients first.
    replays_in_pass: bool,
    /// Batches taken from the publishers in one turn (kept for its capacity).
    taken: Vec<Arc<Batch>>,
    /// With `fsync always` or written behind (`hold`): batches taken from
    /// the publishers and not yet durable (or written), in order (released
    /// as the journal's durable end covers them; their publishers, or the
    /// journal's writer thread, wake the loop once it does).
    held: VecDeque<Arc<Batch>>,
    hold: bool,
    /// Every decision about the connections (admission, limits, fan-out,
    /// timers, shutdown): this loop only moves bytes and time for it.
    core: ServerCore,
    /// This loop's number (0: the first, which accepts).
    loop_index: usize,
    config: ServerConfig,
    shared: Arc<Shared>,
    accept_paused_until: Option<Duration>,
    epoch: Instant,
    /// When a batch was last taken from the publishers (monotonic).
    last_taken: Duration,
}

/// A loop not woken per batch (see `Numbering::eager`) goes back to being
/// woken per batch, and to sleeping until then, after this long without
/// one.
const LAZY_IDLE: Duration = Duration::from_millis(20);

/// Up to this many logged-in connections, a loop with a datagram output
/// looks whether any is a TCP subscriber (and not a retransmission
/// connection) before it stops being woken per batch.
const LAZY_MAX_CONNECTIONS: usize = 8;

/// Where a server's session starts: the next sequence (a session
/// continued from its journal goes on from there) and the cold source
/// behind each loop's retention.
struct Resume {
    next: u64,
    cold: Option<Arc<dyn ColdSource>>,
}

/// A server running on its own thread.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    session_id: u64,
    publisher: Publisher,
    stop: StopHandle,
    thread: Option<JoinHandle<io::Result<ServerStats>>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The session id served now (a relay's follows its upstream's).
    pub fn session_id(&self) -> u64 {
        match self.stop.shared.session_id.load(Ordering::SeqCst) {
            0 => self.session_id,
            id => id,
        }
    }

    /// A publisher for this server.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// The sequence the next published frame gets: 1 for a new session;
    /// after a restart on a journal whose session goes on
    /// ([`ServerConfig::journal`]), the one after the last frame it holds.
    pub fn next_sequence(&self) -> u64 {
        self.publisher.next_sequence()
    }

    /// What a relay feed needs of this server (see `relay.rs`).
    pub(super) fn feed_parts(&self) -> (Arc<Numbering>, Arc<Shared>) {
        (
            Arc::clone(&self.publisher.numbering),
            Arc::clone(&self.stop.shared),
        )
    }

    /// The counters now.
    pub fn stats(&self) -> ServerStats {
        self.stop.shared.snapshot_of_loops()
    }

    /// Shuts down gracefully (EndOfSession to every client, then close) and
    /// waits for the loop to end.
    ///
    /// # Errors
    /// The loop's I/O error, if it failed.
    pub fn shutdown(mut self) -> io::Result<ServerStats> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<ServerStats> {
        self.stop.stop();
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("server thread panicked"))?,
            None => Ok(self.stop.shared.snapshot_of_loops()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// The loop's state, locked (a panic while it was held stopped that thread;
/// the state itself is whole between calls).
pub(super) fn lock(core: &Mutex<Server>) -> MutexGuard<'_, Server> {
    core.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Asks a [`Server::run`] loop on another thread to shut down gracefully.
#[derive(Clone, Debug)]
pub struct StopHandle {
    shared: Arc<Shared>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Requests a graceful shutdown.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

impl Server {
    /// Binds the listener and prepares the loop (nothing runs until
    /// [`run`](Server::run) or [`spawn`](Server::spawn)).
    ///
    /// # Errors
    /// Binding or poll creation failed.
    pub fn bind(config: ServerConfig) -> io::Result<Server> {
        // Listening first: a busy port leaves the journal untouched.
        let listener = listen(config.listen, config.listen_backlog)?;
        let journal = super::open_journal(&config, config.core.session.session_id)?;
        Server::bind_on(listener, config, journal)
    }

    /// [`bind`](Self::bind) on a journal opened already (a relay's, opened
    /// before its upstream login), whose session and next sequence it
    /// serves.
    pub(super) fn bind_with(
        config: ServerConfig,
        journal: Option<super::journaled::Opened>,
    ) -> io::Result<Server> {
        let listener = listen(config.listen, config.listen_backlog)?;
        Server::bind_on(listener, config, journal)
    }

    fn bind_on(
        mut listener: TcpListener,
        config: ServerConfig,
        journal: Option<super::journaled::Opened>,
    ) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        // One session id for every loop (a random one if the config says 0),
        // or the journal's, whose session goes on.
        let mut core = config.core_for_run();
        let (wal, next) = match journal {
            Some(opened) => {
                core.session.session_id = opened.session_id;
                (Some(opened.wal), opened.next)
            }
            None => (None, 1),
        };
        let resume = Resume {
            next,
            cold: wal.as_ref().map(|w| w.cold()),
        };
        let session_id = core.session.session_id;
        let shared = Arc::new(Shared::default());
        shared.session_id.store(session_id, Ordering::SeqCst);
        shared.keep_session.store(
            wal.as_ref().is_some_and(|w| !w.ends_session()),
            Ordering::SeqCst,
        );
        let epoch = Instant::now();
        let workers = (1..config.mio.threads.max(1))
            .map(|index| {
                let worker = Server::event_loop(
                    config.clone(),
                    (local_addr, index),
                    (core, &resume, None),
                    &shared,
                    epoch,
                    None,
                )?;
                Ok(Worker {
                    tx: worker.numbering.tx.clone(),
                    waker: Arc::clone(&worker.waker),
                    server: Some(worker),
                    thread: None,
                })
            })
            .collect::<io::Result<Vec<Worker>>>()?;
        let datagrams = match &config.datagrams {
            Some(output) => {
                let mut output = DatagramOutput::new(
                    output,
                    session_id,
                    core.session.heartbeat_interval,
                    epoch,
                    &shared,
                )?;
                output.advance(next); // a session continued from its journal
                log::info!(
                    "datagrams from {:?}",
                    output.local_addr().map(|a| a.to_string())
                );
                Some(output)
            }
            None => None,
        };
        let mut server = Server::event_loop(
            config,
            (local_addr, 0),
            (core, &resume, wal),
            &shared,
            epoch,
            datagrams,
        )?;
        server
            .registry
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        server.listener = Some(listener);
        server.workers = workers;
        Ok(server)
    }

    /// One event loop, without a listener.
    fn event_loop(
        config: ServerConfig,
        (local_addr, loop_index): (SocketAddr, usize),
        (core, resume, wal): (CoreConfig, &Resume, Option<Arc<Wal>>),
        shared: &Arc<Shared>,
        epoch: Instant,
        datagrams: Option<DatagramOutput>,
    ) -> io::Result<Server> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::sync_channel(config.mio.publish_queue.max(1));
        let wake_at = (config.mio.publish_queue / 4).clamp(1, 64);
        let time = Time::new(Duration::ZERO, unix_nanos());
        let mut core = ServerCore::new(core, time);
        core.set_verifier(config.auth.clone());
        if resume.next > 1 {
            core.continue_at(resume.next);
        }
        core.set_cold(resume.cold.clone());
        // `fsync always`: batches wait here until durable, and the loop
        // sends their datagrams when it releases them; written behind,
        // until written (the journal's writer thread wakes the loop).
        let hold = wal.as_ref().is_some_and(|w| w.holds());
        if let Some(wal) = wal.as_ref().filter(|w| w.holds()) {
            let waker = Arc::clone(&waker);
            wal.set_wake(Arc::new(move || {
                let _ = waker.wake();
            }));
        }
        shared.set_core(loop_index, core.stats());
        Ok(Server {
            local_addr,
            poll: Some(poll),
            registry,
            asleep_until: None,
            listener: None,
            numbering: Arc::new(Numbering {
                sequencer: Mutex::new(Sequencer::starting_at(resume.next)),
                tx,
                waker: Arc::clone(&waker),
                direct: datagrams.is_some()
                    && config.mio.datagram_sender == DatagramSender::Publisher
                    && !hold,
                direct_tcp: std::sync::OnceLock::new(),
                datagrams: datagrams.map(Mutex::new),
                pending: AtomicUsize::new(0),
                eager: AtomicBool::new(true),
                wake_at,
                capacity: config.mio.publish_queue.max(1),
                wal,
            }),
            waker,
            rx,
            workers: Vec::new(),
            next_loop: 0,
            next_worker: usize::MAX,
            stop_received: false,
            more_waiting: false,
            slots: Vec::new(),
            flush: VecDeque::new(),
            pass_left: 0,
            replay_budget: REPLAY_BUDGET,
            pass_started: epoch,
            last_pass: Duration::ZERO,
            starved: Vec::new(),
            replays_in_pass: false,
            taken: Vec::new(),
            held: VecDeque::new(),
            hold,
            core,
            loop_index,
            config,
            shared: Arc::clone(shared),
            accept_paused_until: None,
            epoch,
            last_taken: Duration::ZERO,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This run's session id (until a [`RelayFeed`](super::RelayFeed) changes it).
    pub fn session_id(&self) -> u64 {
        self.core.session_id()
    }

    /// A publisher for this server.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            numbering: Arc::clone(&self.numbering),
        }
    }

    /// What a relay feed needs of this server (see `relay.rs`).
    pub(super) fn feed_parts(&self) -> (Arc<Numbering>, Arc<Shared>) {
        (Arc::clone(&self.numbering), Arc::clone(&self.shared))
    }

    /// A handle that stops [`run`](Server::run) from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            shared: Arc::clone(&self.shared),
            waker: Arc::clone(&self.waker),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> ServerStats {
        self.shared.snapshot_of_loops()
    }

    /// Runs the loop on a new thread.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(self) -> io::Result<ServerHandle> {
        let (local_addr, session_id) = (self.local_addr, self.core.session_id());
        let publisher = self.publisher();
        let stop = self.stop_handle();
        let thread = std::thread::Builder::new()
            .name("tickwire-server".into())
            .spawn(move || self.run())?;
        Ok(ServerHandle {
            local_addr,
            session_id,
            publisher,
            stop,
            thread: Some(thread),
        })
    }

    fn time(&self) -> Time {
        Time::new(self.epoch.elapsed(), unix_nanos())
    }

    /// Runs the event loop until a [`StopHandle`] asks it to stop, then shuts
    /// down gracefully.
    ///
    /// # Errors
    /// The poll failed.
    pub fn run(mut self) -> io::Result<ServerStats> {
        for (i, worker) in self.workers.iter_mut().enumerate() {
            if let Some(server) = worker.server.take() {
                worker.thread = Some(
                    std::thread::Builder::new()
                        .name(format!("tickwire-send{}", i + 1))
                        .spawn(move || server.run())?,
                );
            }
        }
        let mut poll = self
            .poll
            .take()
            .ok_or_else(|| io::Error::other("the loop runs only once"))?;
        // With workers too: the batch reaches this loop's clients from the
        // publishing thread and goes on to the workers from there (in the
        // order this loop would forward it: under its lock, nothing queued
        // before it), so a live client here never waits for a loop busy
        // with replays (those go to the workers).
        let direct = self.listener.is_some();
        let numbering = Arc::clone(&self.numbering);
        let core = Arc::new(Mutex::new(self));
        if direct {
            // Publishers write to few clients themselves while the loop sleeps.
            let core: Arc<Mutex<dyn DirectWrite>> = Arc::clone(&core) as _;
            let _ = numbering.direct_tcp.set(Arc::downgrade(&core));
        }
        let mut events = Events::with_capacity(1024);
        // Busy polling: until then, poll without sleeping.
        let mut spin_until = Duration::ZERO;
        let mut timeout = lock(&core).plan_sleep(spin_until);
        loop {
            match poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            let mut server = lock(&core);
            if let Some(stats) = server.turn(&events, &mut poll, &mut spin_until) {
                return Ok(stats);
            }
            timeout = server.plan_sleep(spin_until);
        }
    }

    /// How long the loop may sleep now; from here until its next turn, a
    /// publisher that writes to the clients itself wakes it if it needs to
    /// be up earlier.
    fn plan_sleep(&mut self, spin_until: Duration) -> Option<Duration> {
        let now = self.epoch.elapsed();
        let due = self.poll_timeout(now);
        let mut timeout = self.lazy(due);
        if self.config.mio.busy_poll.is_some() && now < spin_until {
            timeout = Some(Duration::ZERO);
        }
        self.asleep_until = Some(timeout.map(|t| now.saturating_add(t)));
        timeout
    }

    /// One turn of the loop after a wake-up: `events`, then the batches
    /// waiting, timers, writes, accepts. The final counters once it stopped.
    fn turn(
        &mut self,
        events: &Events,
        poll: &mut Poll,
        spin_until: &mut Duration,
    ) -> Option<ServerStats> {
        self.asleep_until = None;
        let time = self.time();
        if let (Some(spin), false) = (self.config.mio.busy_poll, events.is_empty()) {
            *spin_until = time.monotonic + spin;
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept(time),
                WAKER => {}
                Token(token) => {
                    let index = token - FIRST_CLIENT;
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        let closing = event.is_read_closed() || event.is_error();
                        self.on_readable(index, time, closing);
                    }
                    if event.is_writable() {
                        self.want_flush(index);
                    }
                }
            }
        }
        // Batches waiting are taken together: small ones are merged
        // into one (a single copy here instead of one queue entry, and
        // a sliver of a write, per batch and client), and each group of
        // about COALESCE bytes is written at once, one write per client,
        // so receivers start on large batches while the next are taken.
        let mut taken = std::mem::take(&mut self.taken);
        let mut adopt = None;
        let mut relay = None;
        self.more_waiting = true;
        for _ in 0..BATCHES_PER_TURN {
            match self.rx.try_recv() {
                Ok(ToLoop::Batch(batch)) => {
                    // Batches queued by publishers (to the first loop) were
                    // counted; a worker's come from the first loop, uncounted.
                    if self.listener.is_some() {
                        self.numbering.batch_gone();
                    }
                    self.last_taken = time.monotonic;
                    if self.hold {
                        self.held.push_back(batch);
                    } else {
                        taken.push(batch);
                    }
                }
                Ok(ToLoop::Client(slot)) => {
                    // After the batches before it, before those after.
                    adopt = Some(slot);
                    break;
                }
                Ok(ToLoop::Relay(control)) => {
                    relay = Some(control); // in order, as a client is
                    break;
                }
                Ok(ToLoop::Stop) => {
                    self.stop_received = true;
                    self.more_waiting = false;
                    break;
                }
                Err(_) => {
                    self.more_waiting = false;
                    break;
                }
            }
        }
        if let Some(wal) = self.numbering.wal.as_ref().filter(|_| self.hold) {
            // In order, as far as the journal's last sync covers.
            let durable = wal.durable_end();
            while self.held.front().is_some_and(|b| b.end() <= durable) {
                if let Some(batch) = self.held.pop_front() {
                    taken.push(batch);
                }
            }
        }
        if let (Some(spin), false) = (self.config.mio.busy_poll, taken.is_empty()) {
            *spin_until = time.monotonic + spin;
        }
        let mut group: std::ops::Range<usize> = 0..0;
        let mut group_bytes = 0;
        for (i, batch) in taken.iter().enumerate() {
            let follows = taken
                .get(group.end.wrapping_sub(1))
                .is_some_and(|last| last.end() == batch.first());
            if !group.is_empty() && (group_bytes + batch.bytes().len() > COALESCE || !follows) {
                self.publish_group(taken.get(group.clone()).unwrap_or_default(), time);
                self.flush_all(time, None);
                group = i..i;
                group_bytes = 0;
            }
            group.end = i + 1;
            group_bytes += batch.bytes().len();
        }
        if !group.is_empty() {
            self.publish_group(taken.get(group).unwrap_or_default(), time);
        }
        taken.clear();
        self.taken = taken;
        if let Some(handoff) = adopt {
            self.adopt(*handoff, time);
        }
        if let Some(control) = relay {
            self.relay(control, time);
        }
        self.core
            .set_upstream_alive(!self.shared.upstream_down.load(Ordering::SeqCst));
        if self.listener.is_some() && !self.workers.is_empty() {
            self.core
                .set_clients_elsewhere(self.shared.clients_of_workers());
        }
        self.run_timers(time);
        // Held by a publisher: it is sending, so nothing is idle.
        if let Some(Ok(mut output)) = self.numbering.try_datagrams() {
            if self.core.retention().upstream_alive() {
                output.handle_timeout(time);
            } else {
                output.skip_idle(time.monotonic);
            }
        }
        self.flush_all(time, Some(FLUSH_SLICE));
        if self
            .accept_paused_until
            .is_some_and(|until| time.monotonic >= until)
        {
            self.accept(time);
        }
        let stop = if self.listener.is_some() {
            self.shared.stop.load(Ordering::SeqCst)
        } else {
            self.stop_received
        };
        if stop {
            for worker in &mut self.workers {
                // After every batch this loop forwarded; the loops
                // then drain their clients side by side.
                if worker.tx.send(ToLoop::Stop).is_ok() {
                    let _ = worker.waker.wake();
                }
            }
            self.shutdown(poll);
            for worker in &mut self.workers {
                if let Some(thread) = worker.thread.take() {
                    let _ = thread.join();
                }
            }
            self.shared.set_core(self.loop_index, self.core.stats());
            return Some(self.shared.snapshot_of_loops());
        }
        None
    }

    /// Logged-in connections of this loop (clients and retransmission
    /// connections).
    fn logged_in(&self) -> u64 {
        let stats = self.core.stats();
        stats.clients + stats.retransmission_connections
    }

    /// With a datagram output and no TCP subscriber, while batches flow:
    /// the publishers stop waking the loop per batch (their datagrams are
    /// out already) and the loop takes them within [`LAZY_TICK`] by itself
    /// (`timeout` capped). Otherwise (or after [`LAZY_IDLE`] without a
    /// batch) the loop is woken per batch again.
    fn lazy(&self, timeout: Option<Duration>) -> Option<Duration> {
        let n = &self.numbering;
        if !n.direct {
            return timeout;
        }
        let lazy = self.workers.is_empty()
            && self.epoch.elapsed() < self.last_taken.saturating_add(LAZY_IDLE)
            && !self.has_subscribers();
        n.eager.store(!lazy, Ordering::SeqCst);
        // SeqCst: a batch queued while `eager` was false is seen here.
        if lazy || n.pending.load(Ordering::SeqCst) > 0 {
            Some(timeout.map_or(LAZY_TICK, |t| t.min(LAZY_TICK)))
        } else {
            timeout
        }
    }

    /// Whether a logged-in TCP client (replaying, live or closing, not a
    /// retransmission connection) is connected; `true` beyond
    /// [`LAZY_MAX_CONNECTIONS`] logged-in connections without looking.
    fn has_subscribers(&self) -> bool {
        match self.logged_in() {
            0 => false,
            n if n > LAZY_MAX_CONNECTIONS as u64 => true,
            _ => self.core.has_subscribers(),
        }
    }

    /// Until the earliest deadline of any session (or the accept backoff);
    /// zero while a client still has bytes to write this turn or batches
    /// are waiting.
    fn poll_timeout(&mut self, now: Duration) -> Option<Duration> {
        if !self.flush.is_empty() || self.more_waiting {
            return Some(Duration::ZERO);
        }
        let mut timer = self.core.poll_timeout();
        // Held by a publisher sending now: the idle deadline is a heartbeat
        // interval away at the earliest.
        let idle = match self.numbering.try_datagrams() {
            Some(Ok(output)) => Some(output.poll_timeout()),
            Some(Err(())) => Some(now.saturating_add(self.config.core.session.heartbeat_interval)),
            None => None,
        };
        if let Some(due) = idle {
            timer = Some(timer.map_or(due, |t| t.min(due)));
        }
        let earliest = match (timer, self.accept_paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        earliest.map(|at| at.saturating_sub(now))
    }

    fn accept(&mut self, time: Time) {
        if self
            .accept_paused_until
            .is_some_and(|until| time.monotonic < until)
        {
            return;
        }
        self.accept_paused_until = None;
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, time),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) if is_descriptor_exhaustion(&e) => {
                    // Pending connections stay in the backlog; with edge
                    // triggering nothing wakes us for them, so the loop
                    // retries after the backoff. Existing clients are served
                    // meanwhile.
                    self.accept_paused_until = Some(time.monotonic + ACCEPT_BACKOFF);
                    add(&self.shared.accept_pauses, 1);
                    log::warn!("accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    return;
                }
                Err(e) => {
                    // Edge-triggered: connections left in the queue would
                    // wait for the next one to arrive; retry after the backoff.
                    self.accept_paused_until = Some(time.monotonic + ACCEPT_BACKOFF);
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
        // More may be waiting: accept them next turn, after serving the
        // clients (the loop does not sleep while this is due).
        self.accept_paused_until = Some(time.monotonic);
    }

    fn admit(&mut self, tcp: TcpStream, peer: SocketAddr, time: Time) {
        let _ = tcp.set_nodelay(true);
        self.config
            .apply_socket_options(&socket2::SockRef::from(&tcp));
        let id = self.core.accept(peer, time);
        let index = id.index();
        #[cfg(feature = "tls")]
        let stream = match &self.config.tls {
            Some(tls) => Stream::tls(tcp, tls),
            None => Ok(Stream::plain(tcp)),
        };
        #[cfg(not(feature = "tls"))]
        let stream = io::Result::Ok(Stream::plain(tcp));
        let registered = stream.and_then(|mut stream| {
            self.registry
                .register(
                    stream.tcp_mut(),
                    Token(index + FIRST_CLIENT),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map(|()| stream)
        });
        let stream = match registered {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!("closed {peer}: register failed: {e}");
                self.core.handle_failure(id, CloseReason::IoError);
                self.core.release(id);
                self.drain_core();
                return;
            }
        };
        if super::transport::SENDS_FILES && stream.is_plain() {
            // Replays from the journal go out with `sendfile`.
            self.core.set_file_ranges(id, true);
        }
        self.put(Slot {
            stream,
            id,
            flushing: false,
            timer_due: false,
        });
        // Admission reads first: a client sends its Login right after
        // connecting, so a burst of logins from one host logs in without
        // ever counting against the limits meant for idle connections.
        self.on_readable(index, time, false);
    }

    /// Puts a socket in its place (the core's index for it).
    fn put(&mut self, slot: Slot) {
        let index = slot.id.index();
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        if let Some(place) = self.slots.get_mut(index) {
            *place = Some(slot);
        }
    }

    /// After any call into the core: the connections it has something for
    /// go into the flush list (or are closed, if it closed them), and what
    /// it reports is logged.
    fn drain_core(&mut self) {
        while let Some(id) = self.core.poll_ready() {
            if self.core.close_reason(id).is_some() {
                self.close(id);
            } else {
                self.want_flush(id.index());
            }
        }
        while let Some(event) = self.core.poll_event() {
            super::log_core_event(&event, self.config.core.session.slow_policy);
        }
        // The counters others read, as of now: before the bytes this turn
        // writes reach anyone who could then ask for them.
        self.shared.set_core(self.loop_index, self.core.stats());
    }

    fn want_flush(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) {
            if !slot.flushing {
                slot.flushing = true;
                self.flush.push_back(index);
            }
        }
    }

    /// The core closed `id`: its socket goes (after EndOfSession, the write
    /// side first, so the client reads everything before the FIN).
    fn close(&mut self, id: ConnId) {
        let graceful = self.core.close_reason(id) == Some(CloseReason::Shutdown);
        if let Some(place) = self.slots.get_mut(id.index()) {
            if place.as_ref().is_some_and(|slot| slot.id == id) {
                if let Some(mut slot) = place.take() {
                    let _ = self.registry.deregister(slot.stream.tcp_mut());
                    if graceful {
                        slot.stream.close_write();
                    }
                }
            }
        }
        self.core.release(id);
    }

    /// Reads what the client sent into the core; stops at a short read
    /// unless the peer's FIN or an error came with the wake-up (`closing`),
    /// as the client does.
    fn on_readable(&mut self, index: usize, time: Time, closing: bool) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let id = slot.id;
        let awaiting = self.core.phase(id) == Some(ServerPhase::AwaitingLogin);
        if slot.stream.read_into(&mut self.core, id, time, closing) == Read_::Flush {
            // A TLS handshake's records to send.
            self.want_flush(index);
        }
        let logged_in = awaiting
            && self.core.phase(id).is_some_and(|p| {
                matches!(
                    p,
                    ServerPhase::Replaying | ServerPhase::Live | ServerPhase::Retransmitting
                )
            });
        self.drain_core();
        if logged_in {
            self.hand_off(id);
        }
    }

    /// With several loops, a client that just logged in goes to the next
    /// one in turn (this one included): its socket and its state (detached
    /// from this loop's core) move as they are, behind every batch this
    /// loop has forwarded, so the worker's retention is where this one's
    /// was at the login. A client that logged in to a replay goes to the
    /// next worker in turn, never to this loop:
    /// replays keep a loop busy (reading the journal, copying), and this
    /// one, which takes every batch first and serves its live clients,
    /// stays free for the live edge.
    fn hand_off(&mut self, id: ConnId) {
        if self.workers.is_empty() {
            return;
        }
        let replaying = self.core.phase(id) == Some(ServerPhase::Replaying);
        let target = if replaying {
            self.next_worker = self.next_worker.wrapping_add(1);
            1 + self.next_worker % self.workers.len()
        } else {
            let target = self.next_loop % (self.workers.len() + 1);
            self.next_loop = self.next_loop.wrapping_add(1);
            target
        };
        let Some(worker) = target.checked_sub(1).and_then(|w| self.workers.get(w)) else {
            return; // this loop's turn
        };
        let Some(place) = self.slots.get_mut(id.index()) else {
            return;
        };
        if place.as_ref().is_none_or(|slot| slot.id != id) {
            return;
        }
        let Some(conn) = self.core.detach(id) else {
            return; // closing, or not a logged-in connection
        };
        let Some(mut slot) = place.take() else {
            return;
        };
        let _ = self.registry.deregister(slot.stream.tcp_mut());
        let peer = conn.peer();
        let handoff = Handoff {
            stream: slot.stream,
            conn,
        };
        if worker.tx.send(ToLoop::Client(Box::new(handoff))).is_ok() {
            let _ = worker.waker.wake();
        } else {
            // The worker is gone (shutting down): the client goes too.
            log::info!("closed {peer}: {}", CloseReason::Shutdown);
        }
    }

    /// A client handed over by the first loop: attached to this loop's
    /// core, its socket registered, written what its session has queued.
    fn adopt(&mut self, handoff: Handoff, time: Time) {
        let Handoff { mut stream, conn } = handoff;
        let peer = conn.peer();
        let id = self.core.attach(conn, time);
        if let Err(e) = self.registry.register(
            stream.tcp_mut(),
            Token(id.index() + FIRST_CLIENT),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("closed {peer}: register failed: {e}");
            self.core.handle_failure(id, CloseReason::IoError);
            self.core.release(id);
            self.drain_core();
            return;
        }
        self.put(Slot {
            stream,
            id,
            flushing: false,
            timer_due: false,
        });
        self.want_flush(id.index());
        self.drain_core();
    }

    /// A relay's control message (after the batches before it): forwarded
    /// to the workers, then applied to this loop's core.
    fn relay(&mut self, control: RelayControl, time: Time) {
        for worker in &self.workers {
            if worker.tx.send(ToLoop::Relay(control)).is_ok() {
                let _ = worker.waker.wake();
            }
        }
        match control {
            RelayControl::Advance(next) => {
                self.core.advance(next);
                if let Some(mut output) = self.numbering.loop_datagrams() {
                    output.advance(next);
                }
            }
            RelayControl::Session { session_id, next } => {
                // Section 10.4: EndOfSession (the old session's next
                // sequence) to every client, which then closes; datagrams
                // carry the new session from now on (told here or, sent
                // by the publishing thread, by the RelayFeed).
                if let Some(mut output) = self.numbering.loop_datagrams() {
                    output.new_session(time, session_id, next);
                }
                log::info!(
                    "upstream session changed: {:#018x} -> {session_id:#018x} from {next}",
                    self.core.session_id()
                );
                self.core.new_session(session_id, next, time);
                self.drain_core();
            }
        }
    }

    /// Publishes consecutive batches as one (merged when there are several).
    fn publish_group(&mut self, group: &[Arc<Batch>], time: Time) {
        match group {
            [] => {}
            [one] => self.publish(one, time),
            [first, ..] => {
                let total = group.iter().map(|b| b.bytes().len()).sum();
                let mut bytes = Vec::with_capacity(total);
                let mut frames = 0;
                for batch in group {
                    bytes.extend_from_slice(batch.bytes());
                    frames += batch.frames();
                }
                let merged = Arc::new(Batch::encoded(first.first(), frames, bytes));
                self.publish(&merged, time);
            }
        }
    }

    fn publish(&mut self, batch: &Arc<Batch>, time: Time) {
        if let Some(mut output) = self.numbering.loop_datagrams() {
            output.publish(batch, time);
        }
        self.core.publish(Arc::clone(batch), time);
        // The shared counters count the batch published (`drain_core`)
        // before a worker can deliver it: a client served by a worker
        // never sees frames the server's stats do not count yet.
        self.drain_core();
        for worker in &self.workers {
            // Blocks while a worker is a whole queue behind: back-pressure,
            // as for the publishers.
            if worker.tx.send(ToLoop::Batch(Arc::clone(batch))).is_ok() {
                let _ = worker.waker.wake();
            }
        }
    }

    /// Writes what each client in the flush list has, up to the per-client
    /// budget, in passes: a pass is the clients in the list when it starts,
    /// in order; clients that get bytes (or have some left) meanwhile are
    /// written in the next pass. With `slice`, the call stops after that
    /// long (after one client at least) and the pass goes on at the next
    /// call; without, it finishes the pass under way (or a new one).
    /// Replays share [`REPLAY_BUDGET`] per pass; those left out go first in
    /// the next.
    fn flush_all(&mut self, time: Time, slice: Option<Duration>) {
        if self.pass_left == 0 {
            if std::mem::take(&mut self.replays_in_pass) {
                self.live_first();
            }
            self.pass_left = self.flush.len();
            self.replay_budget = REPLAY_BUDGET;
            self.pass_started = Instant::now();
        }
        // An overloaded loop (its last pass took this long) writes whole
        // passes, as it did before passes were cut into slices.
        let started = slice
            .filter(|_| self.last_pass < WHOLE_PASSES_AFTER)
            .map(|limit| (Instant::now(), limit.max(self.last_pass / SLICES_PER_PASS)));
        let mut written_to = 0usize;
        while self.pass_left > 0 {
            if written_to > 0 && started.is_some_and(|(at, limit)| at.elapsed() >= limit) {
                break;
            }
            self.pass_left -= 1;
            let Some(index) = self.flush.pop_front() else {
                self.pass_left = 0;
                break;
            };
            let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            let id = slot.id;
            let replaying = self.core.phase(id) == Some(ServerPhase::Replaying);
            if replaying && self.replay_budget == 0 {
                self.starved.push(index); // still flushing
                continue;
            }
            slot.flushing = false;
            written_to += 1;
            let budget = if replaying {
                self.replays_in_pass = true;
                self.replay_budget.min(REPLAY_WRITE)
            } else {
                WRITE_BUDGET
            };
            match slot.stream.write_some(&mut self.core, id, time, budget) {
                Ok((more, written)) => {
                    if replaying {
                        self.replay_budget = self.replay_budget.saturating_sub(written);
                    }
                    if more {
                        slot.flushing = true;
                        self.flush.push_back(index);
                    }
                }
                Err(e) => self.core.handle_failure(id, close_reason(&e)),
            }
            if slot.timer_due {
                // Put off until after the write, which may have made it
                // moot (the backlog check of a queue now empty): no
                // `TIOCOUTQ` then.
                slot.timer_due = false;
                if self.core.timeout_due(id, time.monotonic) {
                    self.timeout(index, time);
                }
            }
            self.drain_core();
            if replaying && self.listener.is_some() && self.numbering.batches_waiting() {
                // Live data waits for this loop: the pass ends here (the
                // clients not reached stay in line, in order), the turn
                // takes the batches and the next pass writes the live
                // clients first.
                self.pass_left = 0;
                break;
            }
        }
        if self.pass_left == 0 {
            self.last_pass = self.pass_started.elapsed();
            // The next pass starts with the replays this one left out, in order.
            while let Some(index) = self.starved.pop() {
                self.flush.push_front(index);
            }
        }
    }

    /// Puts the clients waiting to be written that are not replaying
    /// ahead of those that are, each in its order: after a pass with
    /// replays, live data goes out first.
    fn live_first(&mut self) {
        let Server {
            flush, slots, core, ..
        } = self;
        let replaying = |index: &usize| {
            slots
                .get(*index)
                .and_then(Option::as_ref)
                .is_some_and(|slot| core.phase(slot.id) == Some(ServerPhase::Replaying))
        };
        flush.make_contiguous().sort_by_key(replaying);
    }

    fn run_timers(&mut self, time: Time) {
        self.core.handle_timeout(time); // admission graces
        while let Some(id) = self.core.poll_expired(time.monotonic) {
            let index = id.index();
            let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            if slot.flushing {
                // Bytes wait for this turn's writes: the session would count
                // them as a backlog (and check again every BACKLOG_CHECK
                // while the loop is still on its way to this client, which
                // with many clients is every time: a TIOCOUTQ per client
                // per turn). The timer is handled right after its write,
                // where its queue holds what the socket did not take.
                slot.timer_due = true;
                continue;
            }
            self.timeout(index, time);
        }
        self.drain_core();
    }

    /// The connection's timer: its deadlines and checks, with the kernel's
    /// send-queue length; whatever it queues (a Heartbeat) is written next.
    fn timeout(&mut self, index: usize, time: Time) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        slot.timer_due = false;
        let backlog = slot.stream.kernel_backlog();
        self.core.handle_conn_timeout(slot.id, time, backlog);
    }

    /// EndOfSession to every client, a bounded wait for queues to drain,
    /// then close.
    fn shutdown(&mut self, poll: &mut Poll) {
        let time = self.time();
        if let Some(wal) = self.numbering.wal.as_ref().filter(|_| self.hold) {
            // What the journal holds by now goes out before the end (the
            // writer thread writes what is queued first).
            wal.write_queued();
            let durable = wal.durable_end();
            while let Some(batch) = self.held.pop_front().filter(|b| b.end() <= durable) {
                self.publish_group(std::slice::from_ref(&batch), time);
            }
        }
        // With a journal the session goes on at the next start: no
        // EndOfSession (unless told), clients resume then.
        if self.ends_session() {
            if let Some(mut output) = self.numbering.datagrams() {
                output.end_of_session(time);
            }
            self.core.shutdown(time);
        } else {
            self.core.shutdown_keeping_session(time);
        }
        self.drain_core();
        // The core closes what is left SHUTDOWN_DRAIN after its shutdown;
        // this bound only guards against a clock that does not move.
        let deadline = Instant::now() + SHUTDOWN_DRAIN * 2;
        let mut events = Events::with_capacity(256);
        loop {
            let time = self.time();
            self.core.handle_timeout(time);
            self.drain_core();
            for index in 0..self.slots.len() {
                if let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) {
                    let id = slot.id;
                    if let Err(e) = slot
                        .stream
                        .write_some(&mut self.core, id, time, WRITE_BUDGET)
                    {
                        self.core.handle_failure(id, close_reason(&e));
                    }
                }
                self.drain_core();
            }
            if self.slots.iter().all(Option::is_none) || Instant::now() >= deadline {
                break;
            }
            let _ = poll.poll(&mut events, Some(Duration::from_millis(10)));
        }
        for index in 0..self.slots.len() {
            if let Some(id) = self.slots.get(index).and_then(Option::as_ref).map(|s| s.id) {
                self.core.handle_failure(id, CloseReason::Shutdown);
            }
        }
        self.drain_core();
        if let Some(wal) = &self.numbering.wal {
            wal.close();
        }
        log::info!("shut down");
    }

    /// Whether a graceful stop ends the session: always without a journal;
    /// with one, only when its settings say so (the shared stop flag tells
    /// a worker, which has no journal of its own).
    fn ends_session(&self) -> bool {
        !self.shared.keep_session.load(Ordering::SeqCst)
    }
}

impl DirectWrite for Server {
    /// Whether a publisher may write `batch` to the clients itself now
    /// (see [`publish_direct`](Self::publish_direct); only the first loop
    /// is offered batches, which it forwards to the workers as its turn
    /// would): it is not stopping, at most [`DIRECT_MAX_CLIENTS`]
    /// connections are logged in (with more, one publish would be a whole
    /// pass of writes: the loop does those) and none of them is replaying
    /// (bulk writes, the loop's), and the batch is at most
    /// [`DIRECT_MAX_BYTES`].
    fn direct_ok(&self, batch: &Batch) -> bool {
        self.config.mio.publisher_writes
            && batch.bytes().len() <= DIRECT_MAX_BYTES
            && !self.shared.stop.load(Ordering::SeqCst)
            && self.logged_in() <= DIRECT_MAX_CLIENTS as u64
            && !self.core.any_replaying()
    }

    /// On a publishing thread, with the loop asleep (the caller holds the
    /// loop's state, and no earlier batch waits in the queue): what the
    /// loop's turn would do with `batch` (into the retention, to every
    /// session, then one write slice), without waking it. Returns whether
    /// the loop must be woken anyway: a write is left over, or something
    /// is now due before the deadline it sleeps until.
    fn publish_direct(&mut self, batch: &Arc<Batch>) -> bool {
        let time = self.time();
        self.last_taken = time.monotonic;
        add(&self.shared.direct_batches, 1);
        self.publish(batch, time);
        self.flush_all(time, Some(FLUSH_SLICE));
        // On the clock reading the plan used: an unchanged deadline is equal.
        let due = self
            .poll_timeout(time.monotonic)
            .map(|t| time.monotonic.saturating_add(t));
        match (self.asleep_until, due) {
            (_, None) | (None, _) => false,
            (Some(None), Some(_)) => true,
            (Some(Some(until)), Some(due)) => due < until,
        }
    }
}

/// The listening socket, bound with `backlog` (mio's own bind uses 128).
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As mio and std do: rebinding right after a restart must not fail on
    // connections of the previous run still in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(TcpListener::from_std(socket.into()))
}

fn is_descriptor_exhaustion(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(code) if code == libc::EMFILE || code == libc::ENFILE)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::encode::{encode, Payload, QuoteFields};
    use crate::net::DatagramOutputConfig;
    use std::io::{Read as _, Write as _};

    /// Publishes a small batch every half millisecond until `done` says
    /// so (at most 2,000 times); whether it did.
    fn publish_until(publisher: &Publisher, mut done: impl FnMut() -> bool) -> bool {
        let batch = vec![(1, Payload::Quote(QuoteFields::default())); 10];
        for _ in 0..2_000 {
            publisher.publish(batch.clone()).unwrap();
            std::thread::sleep(Duration::from_micros(500));
            if done() {
                return true;
            }
        }
        false
    }

    /// While only datagram receivers are served, publishers stop waking the
    /// loop per batch (`eager` clears while batches flow); a TCP subscriber
    /// makes it eager again, and its leaving lazy again. With the loop
    /// sending the datagrams, it is always woken per batch.
    #[test]
    fn the_loop_is_woken_per_batch_only_while_it_has_to_be() {
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = |sender| {
            let output = DatagramOutputConfig::new(sink.local_addr().unwrap());
            let mut config = ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                datagrams: Some(output),
                ..ServerConfig::default()
            };
            config.mio.datagram_sender = sender;
            Server::bind(config).unwrap().spawn().unwrap()
        };
        let server = start(DatagramSender::Publisher);
        let publisher = server.publisher();
        let eager = || publisher.numbering.eager.load(Ordering::SeqCst);
        assert!(publish_until(&publisher, || !eager()), "never lazy");
        // A subscriber logs in: woken per batch again.
        let mut stream = std::net::TcpStream::connect(server.local_addr()).unwrap();
        let mut login = [0u8; 24];
        encode(&Payload::Login, 0, 0, &mut login).unwrap();
        stream.write_all(&login).unwrap();
        let mut accepted = [0u8; 32];
        stream.read_exact(&mut accepted).unwrap();
        assert!(publish_until(&publisher, eager), "a subscriber, still lazy");
        for _ in 0..20 {
            publish_until(&publisher, || true);
            assert!(eager(), "lazy with a subscriber");
        }
        drop(stream);
        assert!(publish_until(&publisher, || !eager()), "never lazy again");
        drop(server);
        // The loop sends: never lazy.
        let server = start(DatagramSender::EventLoop);
        let publisher = server.publisher();
        assert!(!publish_until(&publisher, || !publisher
            .numbering
            .eager
            .load(Ordering::SeqCst)));
    }

    /// With two loops, logins to a replay go to the worker and live logins
    /// take turns over both loops: the first loop keeps the live edge.
    #[test]
    fn replaying_logins_go_to_the_workers() {
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        };
        config.mio.threads = 2;
        let server = Server::bind(config).unwrap().spawn().unwrap();
        let publisher = server.publisher();
        let batch = vec![(1, Payload::Quote(QuoteFields::default())); 1000];
        for _ in 0..20 {
            publisher.publish(batch.clone()).unwrap();
        }
        let login = |from: u64| {
            let mut stream = std::net::TcpStream::connect(server.local_addr()).unwrap();
            let mut frame = [0u8; 24];
            encode(&Payload::Login, from, 0, &mut frame).unwrap();
            stream.write_all(&frame).unwrap();
            let mut accepted = [0u8; 32];
            stream.read_exact(&mut accepted).unwrap();
            stream
        };
        // Replays of 20,000 frames (the first loop has taken the batches
        // once a live login sees the live edge after them).
        let live = [login(0), login(0)];
        let replays: Vec<_> = (0..4).map(|_| login(1)).collect();
        let per_loop = || {
            let cores = server.stop.shared.cores.lock().unwrap();
            cores.iter().map(|c| c.clients).collect::<Vec<_>>()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while per_loop() != [1, 5] && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Live: one on each loop in turn; the four replays on the worker.
        assert_eq!(per_loop(), [1, 5]);
        drop((live, replays));
    }
}
