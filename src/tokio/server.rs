//! [`Server`]: the async server, one task per connection around a
//! [`ServerSession`], all sharing one [`Retention`].
#![forbid(unsafe_code)]

use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::tokio::net::{TcpListener, TcpSocket, TcpStream};
use ::tokio::sync::{watch, Notify};
use ::tokio::task::JoinSet;
use ::tokio::time::Instant;

use crate::encode::Sequencer;
use crate::net::datagram::DatagramOutput;
use crate::net::{
    new_session_id, sys, unix_nanos, Counters, Messages, PublishError, ServerConfig, ServerStats,
};
use crate::parse::{Event, Parser};
use crate::sequence::SequenceTracker;
use crate::session::admission::{Admission, Limit};
use crate::session::{
    Batch, CloseReason, Retention, ServerEvent, ServerPhase, ServerSession, ServerSessionConfig,
    Time,
};
use crate::wire::MAX_FRAME_LEN;

/// Slices per `writev`.
const MAX_SLICES: usize = 64;
/// Bytes one connection writes before it lets the others run.
const WRITE_BUDGET: usize = 1 << 20;
/// Published batches kept for the connection tasks to pick up (they take
/// every batch newer than the last they saw, under one lock).
const RECENT_BATCHES: usize = 4096;
/// How long shutdown waits for EndOfSession to be written everywhere.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// What the publishers and every connection task share.
#[derive(Debug)]
struct Hub {
    sequencer: Sequencer,
    retention: Retention,
    /// The last published batches, for the connection tasks to hand to
    /// their sessions (`Arc`s of the retained ones: no copy).
    recent: VecDeque<Arc<Batch>>,
}

#[derive(Debug)]
struct Shared {
    hub: Mutex<Hub>,
    /// `retention.next()` after each publish: wakes the connection tasks.
    published: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    session: ServerSessionConfig,
    epoch: Instant,
    /// The mio server's counters, read the same way.
    counters: Arc<Counters>,
    /// The datagram feed ([`ServerConfig::datagrams`]): sent by the
    /// publishing thread, in sequence order (taken under the hub's lock,
    /// sent after it); idle Packet-only datagrams and the final
    /// EndOfSession by the server's tasks.
    datagrams: Option<Mutex<DatagramOutput>>,
    /// Clients past their Login (`max_clients` counts these).
    logged_in: AtomicU64,
    /// The connections that have not logged in.
    gate: Mutex<Gate>,
    /// The settings (limits, socket options of accepted connections).
    config: ServerConfig,
}

/// The connections that have not logged in, under the limits of
/// [`ServerConfig::max_unauthenticated`] and
/// [`ServerConfig::max_unauthenticated_per_peer`], as in the mio server: a
/// newcomer past a limit displaces the oldest one counting against it. Every
/// connection task holds a key (reused after it ends) and is told through
/// its [`Notify`] when it was displaced.
#[derive(Debug)]
struct Gate {
    admission: Admission,
    /// Each open connection's displacement signal, by key (`None`: free).
    displace: Vec<Option<Arc<Notify>>>,
    free: Vec<usize>,
}

impl Gate {
    /// A new connection from `peer`: its key and its signal. The connection
    /// it displaces, if any, is signalled.
    fn enter(&mut self, peer: IpAddr, counters: &Counters) -> (usize, Arc<Notify>) {
        let key = self.free.pop().unwrap_or(self.displace.len());
        let signal = Arc::new(Notify::new());
        match self.displace.get_mut(key) {
            Some(place) => *place = Some(Arc::clone(&signal)),
            None => self.displace.push(Some(Arc::clone(&signal))),
        }
        if let Some(evicted) = self.admission.admit(key, peer) {
            if evicted.limit == Limit::PerPeer {
                counters.displaced_per_peer.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(Some(other)) = self.displace.get(evicted.key) {
                // Stored as a permit if the task is not waiting right now.
                other.notify_one();
            }
        }
        self.count(counters);
        (key, signal)
    }

    /// Connection `key` logged in (or asked for a retransmission): it no
    /// longer counts against the limits.
    fn authenticated(&mut self, key: usize, counters: &Counters) {
        if self.admission.remove(key) {
            self.count(counters);
        }
    }

    /// Connection `key` ended: its key is free again.
    fn leave(&mut self, key: usize, counters: &Counters) {
        self.admission.remove(key);
        if let Some(place) = self.displace.get_mut(key) {
            if place.take().is_some() {
                self.free.push(key);
            }
        }
        self.count(counters);
    }

    fn count(&self, counters: &Counters) {
        counters
            .unauthenticated
            .store(self.admission.len() as u64, Ordering::Relaxed);
    }
}

impl Shared {
    fn hub(&self) -> MutexGuard<'_, Hub> {
        // A panic elsewhere cannot leave the hub half-updated in a way
        // that matters more than stopping would: keep serving.
        self.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn datagrams(&self) -> Option<MutexGuard<'_, DatagramOutput>> {
        self.datagrams
            .as_ref()
            .map(|d| d.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn time(&self) -> Time {
        Time::new(
            Instant::now().saturating_duration_since(self.epoch),
            unix_nanos(),
        )
    }

    fn stats(&self) -> ServerStats {
        self.counters.snapshot()
    }
}

/// Publishes data frames into a running tokio [`Server`] from any task or
/// thread; clone it freely. Not async: the batch is numbered and encoded
/// on the caller's thread (once), pushed into the shared retention, and
/// every connection task is woken (one wake-up per batch and connection,
/// no message per frame). There is no publish queue to fill: slow
/// clients are the sessions' business (skipped or disconnected).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// use tickwire::{encode::QuoteFields, Payload};
/// let config = tickwire::net::ServerConfig { listen: "127.0.0.1:0".parse()?, ..Default::default() };
/// let server = tickwire::tokio::Server::bind(config).await?.spawn();
/// server.publisher().publish(vec![(1, Payload::Quote(QuoteFields::default())); 3])?;
/// assert_eq!(server.publisher().next_sequence(), 4);
/// server.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Publisher {
    shared: Arc<Shared>,
}

impl Publisher {
    /// Numbers, encodes and publishes `(timestamp, payload)` pairs; only
    /// data payloads are sent, numbered 1, 2, 3… across all publishers.
    ///
    /// # Errors
    /// [`PublishError::Closed`] once the server is shutting down.
    pub fn publish(&self, mut batch: Messages) -> Result<(), PublishError> {
        if *self.shared.stop.borrow() {
            return Err(PublishError::Closed);
        }
        batch.retain(|(_, payload)| payload.msg_type().is_data());
        if batch.is_empty() {
            return Ok(());
        }
        let mut bytes = vec![0u8; batch.len() * MAX_FRAME_LEN];
        let (next, datagrams) = {
            let mut hub = self.shared.hub();
            let first = hub.sequencer.next_sequence();
            let done = hub.sequencer.encode_batch(&batch, &mut bytes);
            bytes.truncate(done.bytes);
            let frames = done.frames as u64;
            let encoded = Arc::new(Batch::encoded(first, frames, bytes));
            hub.retention.push(Arc::clone(&encoded));
            if hub.recent.len() >= RECENT_BATCHES {
                hub.recent.pop_front();
            }
            hub.recent.push_back(Arc::clone(&encoded));
            self.shared
                .counters
                .frames_published
                .fetch_add(frames, Ordering::Relaxed);
            // Taken before the hub is let go: batches reach the lines in
            // sequence order; sent after, so that the connection tasks do
            // not wait for the system calls.
            let datagrams = self.shared.datagrams().map(|d| (d, encoded));
            (hub.retention.next(), datagrams)
        };
        self.shared.published.send_replace(next);
        if let Some((mut output, batch)) = datagrams {
            let time = output.now();
            output.publish(&batch, time);
        }
        Ok(())
    }

    /// The sequence the next published frame gets.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let config = tickwire::net::ServerConfig { listen: "127.0.0.1:0".parse()?, ..Default::default() };
    /// let server = tickwire::tokio::Server::bind(config).await?.spawn();
    /// assert_eq!(server.publisher().next_sequence(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn next_sequence(&self) -> u64 {
        self.shared.hub().sequencer.next_sequence()
    }
}

/// The async server: the mio [`net::Server`](crate::net::Server)'s
/// protocol on tokio, with the same [`ServerConfig`] and the same rules,
/// because they are the same [`ServerSession`]s.
///
/// ```text
///  Publisher::publish ─▶ encode once ─▶ Arc<Batch> ─▶ Retention (+ recent batches), watch ──wake──┐
///  accept task ─▶ one task per connection:                                                       ▼
///      readable ─▶ Parser ─▶ session.handle_event     woken ─▶ session.handle_published(&Arc<Batch>)
///      session.poll_transmit ─▶ try_write_vectored ─▶ transmitted (writable ─▶ again)
///      sleep until session.poll_timeout ─▶ handle_timeout(kernel backlog: TIOCOUTQ)
/// ```
///
/// One task per connection, not one for all: each connection waits on its
/// own socket, timer and wake-up with `select!`, tokio's scheduler spreads
/// the tasks over its worker threads, and a batch reaches every task as one
/// shared `Arc` (the tasks take the batches newer than the last they saw,
/// under one lock per wake-up). As in the mio server, connections that have
/// not logged in are limited ([`ServerConfig::max_unauthenticated`], per
/// peer too; the oldest is displaced), and accepted sockets get the send
/// buffer, TCP keepalive and `TCP_USER_TIMEOUT` of [`ServerConfig`]. A
/// datagram feed ([`ServerConfig::datagrams`], protocol section 8) is sent
/// by the publishing thread inside [`Publisher::publish`] (whatever
/// [`DatagramOutputConfig::sender`](crate::net::DatagramOutputConfig::sender)
/// says: there is no event loop), its idle Packet-only datagrams by a task
/// of the server, its EndOfSession by [`ServerHandle::shutdown`]; the
/// connections serve retransmission requests (section 9) from the same
/// retention. Not implemented (mio server only): `threads`, `busy_poll`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// use futures_util::StreamExt;
/// use tickwire::tokio::{Client, ClientEvent, Server};
/// use tickwire::{encode::QuoteFields, net::{ClientConfig, ServerConfig}, Payload};
///
/// let config = ServerConfig { listen: "127.0.0.1:0".parse()?, ..ServerConfig::default() };
/// let server = Server::bind(config).await?.spawn();
/// server.publisher().publish(vec![(1, Payload::Quote(QuoteFields::default())); 3])?;
/// let mut client_config = ClientConfig::new(server.local_addr());
/// client_config.from = 1; // replay from the first frame
/// let mut client = Client::new(client_config);
/// let mut sequences = Vec::new();
/// while sequences.len() < 3 {
///     if let Some(ClientEvent::Frame(frame)) = client.next().await {
///         sequences.push(frame.sequence());
///     }
/// }
/// assert_eq!(sequences, [1, 2, 3]);
/// let stats = server.shutdown().await;
/// assert_eq!(stats.frames_published, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds the listening socket (with `config.listen_backlog`). Must be
    /// called within a tokio runtime.
    ///
    /// # Errors
    /// The socket could not be bound.
    pub async fn bind(config: ServerConfig) -> io::Result<Server> {
        let socket = if config.listen.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(config.listen)?;
        let listener = socket.listen(config.listen_backlog)?;
        let session_id = config.session_id.unwrap_or_else(new_session_id);
        let session = config.session(session_id);
        let epoch = Instant::now();
        let counters = Arc::new(Counters::default());
        let datagrams = config
            .datagrams
            .as_ref()
            .map(|output| {
                DatagramOutput::new(
                    output,
                    session_id,
                    config.heartbeat_interval,
                    epoch.into_std(),
                    &counters,
                )
            })
            .transpose()?
            .map(Mutex::new);
        let shared = Arc::new(Shared {
            hub: Mutex::new(Hub {
                sequencer: Sequencer::new(),
                retention: Retention::new(config.retain),
                recent: VecDeque::new(),
            }),
            published: watch::Sender::new(1),
            stop: watch::Sender::new(false),
            session,
            epoch,
            counters,
            datagrams,
            logged_in: AtomicU64::new(0),
            gate: Mutex::new(Gate {
                admission: Admission::new(
                    config.max_unauthenticated,
                    config.max_unauthenticated_per_peer,
                ),
                displace: Vec::new(),
                free: Vec::new(),
            }),
            config,
        });
        Ok(Server { listener, shared })
    }

    /// The address the server listens on.
    ///
    /// # Errors
    /// The socket's address could not be read.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Spawns the accept task (and, from it, a task per connection) on the
    /// current runtime.
    #[must_use]
    pub fn spawn(self) -> ServerHandle {
        let local_addr = self
            .listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let shared = Arc::clone(&self.shared);
        let task = ::tokio::spawn(accept_loop(self.listener, Arc::clone(&shared)));
        if shared.datagrams.is_some() {
            // Ends with the server (on stop).
            drop(::tokio::spawn(idle_datagrams(Arc::clone(&shared))));
        }
        ServerHandle {
            local_addr,
            shared,
            task,
        }
    }
}

/// A running tokio [`Server`]: its address, its publisher, its counters,
/// and a graceful [`shutdown`](ServerHandle::shutdown) (EndOfSession to
/// every client). Dropping it without `shutdown` leaves the server running
/// until the runtime ends.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    task: ::tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The session id sent in LoginAccepted.
    #[must_use]
    pub fn session_id(&self) -> u64 {
        self.shared.session.session_id
    }

    /// A publisher for this server.
    #[must_use]
    pub fn publisher(&self) -> Publisher {
        Publisher {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> ServerStats {
        self.shared.stats()
    }

    /// Stops accepting, sends EndOfSession to every logged-in client, waits
    /// (at most 1 s) for it to be written, closes every connection, and
    /// returns the counters.
    pub async fn shutdown(self) -> ServerStats {
        self.shared.stop.send_replace(true);
        if let Some(mut output) = self.shared.datagrams() {
            let time = output.now();
            output.end_of_session(time);
        }
        let _ = self.task.await;
        self.shared.stats()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut tasks = JoinSet::new();
    loop {
        ::tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    shared.config.apply_socket_options(&socket2::SockRef::from(&stream));
                    shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    // Counted before it runs: it may displace an older one.
                    shared.counters.clients.fetch_add(1, Ordering::Relaxed);
                    let (key, displaced) = shared.gate().enter(peer.ip(), &shared.counters);
                    tasks.spawn(connection(stream, peer, (key, displaced), Arc::clone(&shared)));
                }
                // Out of descriptors, or a connection reset before it was
                // accepted: wait a little rather than spin.
                Err(e) => {
                    log::warn!("accept failed: {e}; retrying in 10 ms");
                    ::tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let drained = ::tokio::time::timeout(SHUTDOWN_DRAIN, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.shutdown().await;
    }
}

/// A Packet-only datagram after each heartbeat interval without one
/// (protocol section 8), until the server stops.
async fn idle_datagrams(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let epoch = shared.epoch;
    loop {
        let Some(due) = shared.datagrams().map(|d| d.poll_timeout()) else {
            return;
        };
        ::tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            () = ::tokio::time::sleep_until(epoch + due) => {
                if let Some(mut output) = shared.datagrams() {
                    let time = output.now();
                    output.handle_timeout(time);
                }
            }
        }
    }
}

/// One connection, until its session closes it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    (key, displaced): (usize, Arc<Notify>),
    shared: Arc<Shared>,
) {
    let seen = shared.hub().retention.next();
    let mut conn = Conn {
        session: ServerSession::new(shared.session, shared.time()),
        parser: Parser::owned_at_least(4096, SequenceTracker::new()),
        seen,
        logged_in: false,
        retransmission: false,
        key,
        displaced,
        authenticated: false,
        stream,
        peer,
        shared,
    };
    let reason = conn.run().await;
    let shared = &conn.shared;
    let stats = conn.session.take_stats();
    let c = &shared.counters;
    c.add_session(&stats);
    c.count_close(reason);
    if conn.logged_in {
        shared.logged_in.fetch_sub(1, Ordering::Relaxed);
    }
    if conn.retransmission {
        c.retransmission_connections.fetch_sub(1, Ordering::Relaxed);
    }
    c.clients.fetch_sub(1, Ordering::Relaxed);
    shared.gate().leave(conn.key, c);
    if reason != CloseReason::Shutdown {
        log::info!("closed {peer}: {reason}");
    }
    if reason == CloseReason::Shutdown {
        let _ = conn
            .stream
            .into_std()
            .map(|s| s.shutdown(std::net::Shutdown::Write));
    }
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    session: ServerSession,
    parser: Parser<Box<[u8]>>,
    /// The end of the last published batch handed to the session.
    seen: u64,
    logged_in: bool,
    /// Counted as a retransmission connection (section 9).
    retransmission: bool,
    /// Its key in the [`Gate`].
    key: usize,
    /// Signalled when a newer connection displaced it (it had not logged in).
    displaced: Arc<Notify>,
    /// Out of the gate's set (past its Login or first Retransmit).
    authenticated: bool,
}

impl Conn {
    async fn run(&mut self) -> CloseReason {
        let mut published = self.shared.published.subscribe();
        let mut stop = self.shared.stop.subscribe();
        let epoch = self.shared.epoch;
        let mut stopping = false;
        let mut drain_deadline = None;
        loop {
            if let Err(e) = self.write_some() {
                return close_reason(&e);
            }
            if let Some(reason) = self.settle() {
                return reason;
            }
            let deadline = self
                .session
                .poll_timeout()
                .map(|at| epoch + at)
                .into_iter()
                .chain(drain_deadline)
                .min();
            let want_write =
                self.session.queued() > 0 || self.session.phase() == ServerPhase::Replaying;
            ::tokio::select! {
                biased;
                () = self.displaced.notified(), if !self.authenticated => {
                    return CloseReason::UnauthenticatedLimit;
                }
                () = stopped(&mut stop), if !stopping => {
                    stopping = true;
                    drain_deadline = Some(Instant::now() + SHUTDOWN_DRAIN);
                    let time = self.shared.time();
                    let hub = self.shared.hub();
                    self.session.shutdown(time, &hub.retention);
                }
                ready = self.stream.readable() => {
                    if ready.is_err() {
                        return CloseReason::IoError;
                    }
                    if let Some(reason) = self.read() {
                        return reason;
                    }
                }
                changed = published.changed() => {
                    if changed.is_ok() {
                        self.take_published();
                    }
                }
                _ = self.stream.writable(), if want_write => {}
                () = sleep_until_some(deadline) => {
                    if drain_deadline.is_some_and(|d| Instant::now() >= d) {
                        return CloseReason::Shutdown;
                    }
                    let time = self.shared.time();
                    let backlog = sys::unsent_bytes(self.stream.as_fd()).unwrap_or(0);
                    let hub = self.shared.hub();
                    self.session.handle_timeout(time, &hub.retention, backlog);
                }
            }
        }
    }

    /// Reads the client's bytes (its Login, its Heartbeats) and hands their
    /// events to the session. `Some(reason)` when the connection ended.
    fn read(&mut self) -> Option<CloseReason> {
        loop {
            let spare = self.parser.spare();
            if spare.is_empty() {
                return Some(CloseReason::BadData); // cannot happen: events are drained
            }
            match self.stream.try_read(spare) {
                Ok(0) => {
                    self.parser.finish();
                    self.handle_events();
                    return Some(self.session.poll_close().unwrap_or(CloseReason::PeerClosed));
                }
                Ok(n) => {
                    if self.parser.commit(n).is_err() {
                        return Some(CloseReason::BadData);
                    }
                    self.handle_events();
                    if let Some(reason) = self.session.poll_close() {
                        return Some(reason);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(close_reason(&e)),
            }
        }
    }

    fn handle_events(&mut self) {
        let time = self.shared.time();
        let hub = self.shared.hub();
        let session = &mut self.session;
        while let Some(event) = self.parser.next_event() {
            session.handle_event(&event, time, &hub.retention);
            if let Event::Discarded(_) = event {
                break;
            }
        }
    }

    /// Hands the session every batch published since the last call (shared,
    /// not copied).
    fn take_published(&mut self) {
        let time = self.shared.time();
        let hub = self.shared.hub();
        let seen = self.seen;
        let start = hub.recent.partition_point(|b| b.end() <= seen);
        for batch in hub.recent.range(start..) {
            self.session.handle_published(batch, time);
        }
        self.seen = hub.retention.next();
    }

    /// Writes what the session has until the socket would block or the
    /// budget is spent.
    fn write_some(&mut self) -> io::Result<()> {
        let mut written = 0;
        while written < WRITE_BUDGET {
            let time = self.shared.time();
            let hub = self.shared.hub();
            let Some(transmit) = self.session.poll_transmit(time, &hub.retention) else {
                return Ok(());
            };
            drop(hub);
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (place, bytes) in slices.iter_mut().zip(transmit.slices()) {
                *place = IoSlice::new(bytes);
                count += 1;
            }
            match self
                .stream
                .try_write_vectored(slices.get(..count).unwrap_or_default())
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.session.transmitted(n, time);
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// What the session reported; `Some(reason)` once it must close.
    fn settle(&mut self) -> Option<CloseReason> {
        while let Some(event) = self.session.poll_event() {
            let peer = self.peer;
            match &event {
                ServerEvent::LoggedIn {
                    wanted,
                    start,
                    oldest,
                    next_live,
                } => log::info!(
                    "login {peer}: wanted {wanted}, sending from {start} (oldest {oldest}, next live {next_live})"
                ),
                ServerEvent::Slow { reason, pending } => log::warn!(
                    "{peer} is slow ({}, {pending} bytes pending)",
                    reason.as_str()
                ),
                ServerEvent::Drained { pending } => {
                    log::info!("{peer} drained ({pending} bytes pending): live data resumes");
                }
                ServerEvent::Retransmitted {
                    wanted,
                    count,
                    frames,
                    ..
                } => log::info!("retransmit {peer}: wanted {count} from {wanted}, sent {frames} frames"),
            }
            if let ServerEvent::LoggedIn { .. } = event {
                self.logged_in = true;
                let before = self.shared.logged_in.fetch_add(1, Ordering::Relaxed);
                if usize::try_from(before).unwrap_or(usize::MAX) >= self.shared.config.max_clients {
                    return Some(CloseReason::MaxClients);
                }
            }
            if let (ServerEvent::Retransmitted { .. }, false) = (&event, self.retransmission) {
                // Limited apart from the clients, as in the mio server.
                self.retransmission = true;
                let now = self
                    .shared
                    .counters
                    .retransmission_connections
                    .fetch_add(1, Ordering::Relaxed);
                if usize::try_from(now).unwrap_or(usize::MAX)
                    >= self.shared.config.max_retransmission_connections
                {
                    return Some(CloseReason::MaxClients);
                }
            }
        }
        if !self.authenticated && self.session.phase() != ServerPhase::AwaitingLogin {
            self.authenticated = true;
            self.shared
                .gate()
                .authenticated(self.key, &self.shared.counters);
        }
        self.session.poll_close()
    }
}

/// Until the server is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Sleeps until `deadline`, or forever.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => ::tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Why a failed write or read closes a client: the peer going away is not
/// an error of ours.
fn close_reason(error: &io::Error) -> CloseReason {
    match crate::net::classify(error) {
        crate::net::IoClass::Gone => CloseReason::PeerClosed,
        _ => CloseReason::IoError,
    }
}
