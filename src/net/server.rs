//! The reference server: one mio event loop that owns the listener and
//! every client, logs clients in, replays from its retention ring, broadcasts
//! published frames, sends heartbeats, and protects itself from slow and bad
//! clients.
//!
//! ```text
//!  publisher threads ──Publisher::publish──▶ bounded queue ──wake──┐
//!                                                                  ▼
//!  listener ──accept──▶ clients ◀── event loop (epoll / kqueue, edge-triggered, 10 ms tick)
//!                         │            │ encode batch ─▶ retention ring ─▶ each live client
//!                         │            │ replay: ring ─▶ client queue, until caught up, then live
//!                         ▼            │ heartbeats, login timeouts, slow clients, accept backoff
//!  per client: AwaitingLogin ─Login─▶ Replaying ─caught up─▶ Live
//! ```
//!
//! Session (protocol section 4): a client sends one Login within the login
//! timeout; the server answers LoginAccepted with this run's `session_id` and
//! the first sequence it will send (the requested one if retained, the oldest
//! retained if older, the next live one for 0 or beyond), then the replay and
//! live data with no gap or repeat at the seam. Anything but Heartbeats after
//! the Login, bytes that are not frames, or a second Login close that
//! connection only.
//!
//! Slow clients: each client has a bounded outbound queue. A client whose
//! pending bytes (its queue plus, on Linux, the kernel send queue read with
//! `TIOCOUTQ`) pass [`ServerConfig::slow_threshold`], or whose queue is full,
//! is marked slow. [`SlowPolicy::Skip`] stops sending it live data until it
//! has drained below half the threshold (it then sees a gap and may log in
//! again to replay it); [`SlowPolicy::Disconnect`] closes it. Either way it
//! never slows the others and never grows the server's memory past the cap.
//!
//! ```
//! use tickwire::io::FrameReader;
//! use tickwire::net::{Server, ServerConfig};
//! use tickwire::parse::Event;
//! use tickwire::{encode::QuoteFields, Message, Payload};
//! use std::io::Write;
//!
//! let config = ServerConfig { listen: "127.0.0.1:0".parse()?, ..ServerConfig::default() };
//! let server = Server::bind(config)?.spawn()?;
//! let publisher = server.publisher();
//! publisher.publish(vec![(1, Payload::Quote(QuoteFields::default())); 3])?;
//!
//! // A client: log in from sequence 1, read the replay.
//! let mut socket = std::net::TcpStream::connect(server.local_addr())?;
//! let mut login = [0u8; 24];
//! tickwire::encode(&Payload::Login, 1, 0, &mut login)?;
//! socket.write_all(&login)?;
//! let mut reader = FrameReader::new(socket);
//! let mut quotes = 0;
//! while quotes < 3 {
//!     match reader.next_event()? {
//!         Some(Event::Frame(Message::Quote(_))) => quotes += 1,
//!         Some(_) => {}
//!         None => break,
//!     }
//! }
//! assert_eq!(quotes, 3);
//! let stats = server.shutdown()?;
//! assert_eq!(stats.frames_published, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::conn::Connection;
use super::retention::Retention;
use crate::encode::{encode, Payload, Sequencer};
use crate::parse::Event;
use crate::wire::{Message, MAX_FRAME_LEN};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CLIENT: usize = 2;
/// Timers (heartbeats, login timeouts, slow checks, replay) run this often.
const TICK: Duration = Duration::from_millis(10);
/// How long accepting pauses after EMFILE / ENFILE.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Replay copies at most this much into a client's queue at a time.
const REPLAY_CHUNK: usize = 256 << 10;
/// Batches taken from the publisher queue per loop iteration.
const BATCHES_PER_TURN: usize = 256;
/// How long a graceful shutdown waits for queues to drain.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// What to do with a slow client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowPolicy {
    /// Stop sending it live data until it drains; it sees a gap.
    Skip,
    /// Close its connection.
    Disconnect,
}

/// Where the server's log lines go.
#[derive(Clone)]
pub struct LogSink(pub Arc<dyn Fn(&str) + Send + Sync>);

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogSink(..)")
    }
}

/// Server settings. `ServerConfig::default()` is what `tickwire serve` uses.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:7878`; loopback only).
    pub listen: SocketAddr,
    /// Close connections that send no Login within this time (5 s).
    pub login_timeout: Duration,
    /// Send a Heartbeat to a client that was sent nothing for this long (1 s).
    pub heartbeat_interval: Duration,
    /// Data frames kept for replay (1,048,576).
    pub retain: usize,
    /// Pending bytes (user queue + kernel send queue) that make a client slow (1 MiB).
    pub slow_threshold: usize,
    /// Cap of each client's user-space queue (4 MiB): the memory bound per client.
    pub client_queue: usize,
    /// What happens to slow clients.
    pub slow_policy: SlowPolicy,
    /// Connections beyond this many are closed at once (1024).
    pub max_clients: usize,
    /// Batches the publisher queue holds before `publish` blocks (1024).
    pub publish_queue: usize,
    /// `SO_SNDBUF` for client sockets, if set (the kernel's default otherwise).
    pub send_buffer: Option<usize>,
    /// The session id; a fresh random one per server run if `None`.
    pub session_id: Option<u64>,
    /// Log lines (client closed and why, slow marks, accept backoff…).
    pub log: Option<LogSink>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            login_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            retain: 1 << 20,
            slow_threshold: 1 << 20,
            client_queue: 4 << 20,
            slow_policy: SlowPolicy::Skip,
            max_clients: 1024,
            publish_queue: 1024,
            send_buffer: None,
            session_id: None,
            log: None,
        }
    }
}

/// Why the server closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed it.
    PeerClosed,
    /// No Login within the login timeout.
    LoginTimeout,
    /// Bytes that are not frames.
    BadData,
    /// A frame other than Login first, or other than Heartbeat after it.
    UnexpectedFrame,
    /// A second Login.
    SecondLogin,
    /// Slow, under [`SlowPolicy::Disconnect`].
    Slow,
    /// A socket error.
    IoError,
    /// The server shut down.
    Shutdown,
    /// Over [`ServerConfig::max_clients`].
    MaxClients,
}

const REASONS: usize = 9;

impl CloseReason {
    fn index(self) -> usize {
        self as usize
    }

    /// A short name for logs and status lines.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer closed",
            CloseReason::LoginTimeout => "login timeout",
            CloseReason::BadData => "bad data",
            CloseReason::UnexpectedFrame => "unexpected frame",
            CloseReason::SecondLogin => "second login",
            CloseReason::Slow => "slow",
            CloseReason::IoError => "i/o error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::MaxClients => "max clients",
        }
    }
}

/// A snapshot of the server's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connected clients now.
    pub clients: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Data frames published.
    pub frames_published: u64,
    /// Frames sent (queued whole) to clients, replay included.
    pub frames_sent: u64,
    /// Bytes written to client sockets.
    pub bytes_sent: u64,
    /// Times a client was marked slow.
    pub slow_marks: u64,
    /// Batches a slow client was skipped for.
    pub skipped_batches: u64,
    /// Times accepting paused on EMFILE / ENFILE.
    pub accept_pauses: u64,
    /// The most bytes ever queued in user space for one client (never more
    /// than [`ServerConfig::client_queue`]).
    pub peak_client_queue: u64,
    /// Connections closed, by [`CloseReason`] (in declaration order).
    pub closed: [u64; REASONS],
}

impl ServerStats {
    /// Connections closed for `reason`.
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed.get(reason.index()).copied().unwrap_or(0)
    }
}

/// Counters shared with handles on other threads.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    clients: AtomicU64,
    accepted: AtomicU64,
    frames_published: AtomicU64,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    slow_marks: AtomicU64,
    skipped_batches: AtomicU64,
    accept_pauses: AtomicU64,
    peak_client_queue: AtomicU64,
    closed: [AtomicU64; REASONS],
}

impl Shared {
    fn count_close(&self, reason: CloseReason) {
        if let Some(counter) = self.closed.get(reason.index()) {
            add(counter, 1);
        }
    }

    fn snapshot(&self) -> ServerStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            clients: get(&self.clients),
            accepted: get(&self.accepted),
            frames_published: get(&self.frames_published),
            frames_sent: get(&self.frames_sent),
            bytes_sent: get(&self.bytes_sent),
            slow_marks: get(&self.slow_marks),
            skipped_batches: get(&self.skipped_batches),
            accept_pauses: get(&self.accept_pauses),
            peak_client_queue: get(&self.peak_client_queue),
            closed: std::array::from_fn(|i| self.closed.get(i).map_or(0, get)),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A batch of `(timestamp, payload)` data messages.
type Batch = Vec<(u64, Payload)>;

/// Why a batch was not published.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The queue is full (back-pressure): the batch is handed back.
    Full(Batch),
    /// The server has stopped.
    Closed,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Full(b) => write!(
                f,
                "publisher queue full ({} messages handed back): the server is behind; retry or slow down",
                b.len()
            ),
            PublishError::Closed => f.write_str("the server has stopped"),
        }
    }
}

impl std::error::Error for PublishError {}

/// Frames encoded by a publisher, numbered from `first`.
#[derive(Debug)]
struct Encoded {
    first: u64,
    frames: u64,
    bytes: Vec<u8>,
}

/// What all publishers of one server share: the numbering, under a lock
/// that also orders their batches in the queue.
#[derive(Debug)]
struct Numbering {
    sequencer: std::sync::Mutex<Sequencer>,
    tx: SyncSender<Encoded>,
    waker: Arc<Waker>,
}

/// Publishes data frames into a running server from any thread. Clone it
/// freely; it feeds the event loop through a bounded queue and wakes it.
///
/// Frames are numbered and encoded (CRC included) on the publishing thread,
/// under a lock that keeps every publisher's batches in sequence order, so
/// the event loop only stores and sends bytes.
#[derive(Clone, Debug)]
pub struct Publisher {
    numbering: Arc<Numbering>,
}

impl Publisher {
    /// Queues a batch, blocking while the queue is full. Each message is
    /// `(timestamp, payload)`; only data payloads (Quote, Trade) are sent,
    /// numbered 1, 2, 3… across all publishers of the server. Timestamps are
    /// nanoseconds since the Unix epoch (see [`unix_nanos`]).
    ///
    /// # Errors
    /// [`PublishError::Closed`] once the server has stopped.
    pub fn publish(&self, batch: Batch) -> Result<(), PublishError> {
        self.send(batch, true)
    }

    /// Queues a batch if there is room now.
    ///
    /// # Errors
    /// [`PublishError::Full`] with the batch when the queue is full (the
    /// server is behind: this is the back-pressure signal; nothing was
    /// numbered); [`PublishError::Closed`] once the server has stopped.
    pub fn try_publish(&self, batch: Batch) -> Result<(), PublishError> {
        self.send(batch, false)
    }

    fn send(&self, mut batch: Batch, block: bool) -> Result<(), PublishError> {
        batch.retain(|(_, payload)| payload.msg_type().is_data());
        if batch.is_empty() {
            return Ok(());
        }
        let n = &self.numbering;
        let mut sequencer = n.sequencer.lock().map_err(|_| PublishError::Closed)?;
        let before = *sequencer;
        let mut bytes = vec![0u8; batch.len() * MAX_FRAME_LEN];
        let done = sequencer.encode_batch(&batch, &mut bytes);
        bytes.truncate(done.bytes);
        let encoded = Encoded {
            first: before.next_sequence(),
            frames: done.frames as u64,
            bytes,
        };
        let sent = if block {
            n.tx.send(encoded).map_err(|_| PublishError::Closed)
        } else {
            n.tx.try_send(encoded).map_err(|e| match e {
                TrySendError::Full(_) => PublishError::Full(Vec::new()),
                TrySendError::Disconnected(_) => PublishError::Closed,
            })
        };
        match sent {
            Ok(()) => {
                drop(sequencer);
                // A failed wake only delays the batch to the next 10 ms tick.
                let _ = n.waker.wake();
                Ok(())
            }
            Err(PublishError::Full(_)) => {
                *sequencer = before; // nothing was published: take the numbers back
                Err(PublishError::Full(batch))
            }
            Err(e) => Err(e),
        }
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitingLogin { deadline: Instant },
    Replaying { next: u64 },
    Live,
}

#[derive(Debug)]
struct Client {
    conn: Connection,
    peer: SocketAddr,
    state: State,
    last_sent: Instant,
    last_slow_check: Instant,
    slow: bool,
}

/// What a client's bytes asked for.
#[derive(Clone, Copy, Debug)]
enum Request {
    Login(u64),
    Heartbeat,
    Close(CloseReason),
}

/// The reference server. See the [module docs](self).
#[derive(Debug)]
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    numbering: Arc<Numbering>,
    rx: Receiver<Encoded>,
    clients: Vec<Option<Client>>,
    free: Vec<usize>,
    retention: Retention,
    session_id: u64,
    config: ServerConfig,
    shared: Arc<Shared>,
    accept_paused_until: Option<Instant>,
    scratch: Vec<u8>,
    requests: Vec<Request>,
}

/// A server running on its own thread.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    session_id: u64,
    publisher: Publisher,
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<io::Result<ServerStats>>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This run's session id.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// A publisher for this server.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// The counters now.
    pub fn stats(&self) -> ServerStats {
        self.shared.snapshot()
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
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("server thread panicked"))?,
            None => Ok(self.shared.snapshot()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Asks a [`Server::run`] loop on another thread to shut down.
#[derive(Clone, Debug)]
pub struct Shutdown {
    shared: Arc<Shared>,
    waker: Arc<Waker>,
}

impl Shutdown {
    /// Requests a graceful shutdown.
    pub fn shutdown(&self) {
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
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::sync_channel(config.publish_queue.max(1));
        let session_id = config.session_id.unwrap_or_else(new_session_id);
        Ok(Server {
            local_addr: listener.local_addr()?,
            poll,
            listener,
            numbering: Arc::new(Numbering {
                sequencer: std::sync::Mutex::new(Sequencer::new()),
                tx,
                waker: Arc::clone(&waker),
            }),
            waker,
            rx,
            clients: Vec::new(),
            free: Vec::new(),
            retention: Retention::new(config.retain),
            session_id,
            config,
            shared: Arc::new(Shared::default()),
            accept_paused_until: None,
            scratch: Vec::new(),
            requests: Vec::new(),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This run's session id.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// A publisher for this server.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            numbering: Arc::clone(&self.numbering),
        }
    }

    /// A handle that stops [`run`](Server::run) from another thread.
    pub fn shutdown_handle(&self) -> Shutdown {
        Shutdown {
            shared: Arc::clone(&self.shared),
            waker: Arc::clone(&self.waker),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> ServerStats {
        self.shared.snapshot()
    }

    /// Runs the loop on a new thread.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(self) -> io::Result<ServerHandle> {
        let (local_addr, session_id) = (self.local_addr, self.session_id);
        let publisher = self.publisher();
        let shared = Arc::clone(&self.shared);
        let waker = Arc::clone(&self.waker);
        let thread = std::thread::Builder::new()
            .name("tickwire-server".into())
            .spawn(move || self.run())?;
        Ok(ServerHandle {
            local_addr,
            session_id,
            publisher,
            shared,
            waker,
            thread: Some(thread),
        })
    }

    /// Runs the event loop until a [`Shutdown`] is requested, then shuts
    /// down gracefully.
    ///
    /// # Errors
    /// The poll failed.
    pub fn run(mut self) -> io::Result<ServerStats> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now();
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    Token(token) => {
                        let index = token - FIRST_CLIENT;
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(index, now);
                        }
                        if event.is_writable() {
                            self.on_writable(index);
                        }
                    }
                }
            }
            for _ in 0..BATCHES_PER_TURN {
                match self.rx.try_recv() {
                    Ok(batch) => self.broadcast(batch, now),
                    Err(_) => break,
                }
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                self.shutdown();
                return Ok(self.shared.snapshot());
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
        }
    }

    fn log(&self, args: fmt::Arguments<'_>) {
        if let Some(LogSink(log)) = &self.config.log {
            log(&args.to_string());
        }
    }

    fn accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|until| now < until) {
            return;
        }
        self.accept_paused_until = None;
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) if is_descriptor_exhaustion(&e) => {
                    // Pending connections stay in the backlog; with edge
                    // triggering nothing wakes us for them, so the tick
                    // retries after the backoff. Existing clients are served
                    // meanwhile.
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    add(&self.shared.accept_pauses, 1);
                    self.log(format_args!(
                        "accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?}"
                    ));
                    return;
                }
                Err(e) => {
                    self.log(format_args!("accept failed: {e}"));
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        add(&self.shared.accepted, 1);
        let connected = self.clients.len() - self.free.len();
        if connected >= self.config.max_clients {
            self.shared.count_close(CloseReason::MaxClients);
            self.log(format_args!(
                "closed {peer}: {}",
                CloseReason::MaxClients.as_str()
            ));
            return;
        }
        let _ = stream.set_nodelay(true);
        if let Some(size) = self.config.send_buffer {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(size);
        }
        let index = self.free.pop().unwrap_or(self.clients.len());
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(index + FIRST_CLIENT),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.log(format_args!("closed {peer}: register failed: {e}"));
            return;
        }
        let client = Client {
            conn: Connection::new(stream, 4096, self.config.client_queue),
            peer,
            state: State::AwaitingLogin {
                deadline: now + self.config.login_timeout,
            },
            last_sent: now,
            last_slow_check: now,
            slow: false,
        };
        if index == self.clients.len() {
            self.clients.push(Some(client));
        } else if let Some(slot) = self.clients.get_mut(index) {
            *slot = Some(client);
        }
        add(&self.shared.clients, 1);
    }

    fn close(&mut self, index: usize, reason: CloseReason) {
        let Some(mut client) = self.clients.get_mut(index).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(client.conn.stream_mut());
        self.free.push(index);
        self.shared.clients.fetch_sub(1, Ordering::Relaxed);
        self.shared.count_close(reason);
        if reason != CloseReason::Shutdown {
            self.log(format_args!("closed {}: {}", client.peer, reason.as_str()));
        }
    }

    fn on_readable(&mut self, index: usize, now: Instant) {
        let Some(client) = self.clients.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let mut requests = std::mem::take(&mut self.requests);
        requests.clear();
        let outcome = client.conn.read_ready(|event| {
            requests.push(match event {
                Event::Frame(Message::Login(login)) => Request::Login(login.sequence()),
                Event::Frame(Message::Heartbeat(_)) => Request::Heartbeat,
                Event::Frame(_) | Event::Duplicate(_) => {
                    Request::Close(CloseReason::UnexpectedFrame)
                }
                Event::Discarded(_) => Request::Close(CloseReason::BadData),
                // Gaps and sessions only concern data frames, which clients do not send.
                _ => Request::Heartbeat,
            });
        });
        let mut close = match outcome {
            // Bytes that are not frames close the connection at once, even
            // before the parser reports the run they belong to.
            Ok(_) if client.conn.stats().discarded_bytes > 0 => Some(CloseReason::BadData),
            Ok(outcome) if outcome.closed => Some(CloseReason::PeerClosed),
            Ok(_) => None,
            Err(e) => Some(close_reason(&e)),
        };
        for request in requests.drain(..) {
            if close.is_some() {
                break;
            }
            close = self.on_request(index, request, now).err();
        }
        self.requests = requests;
        if let Some(reason) = close {
            self.close(index, reason);
        }
    }

    fn on_request(
        &mut self,
        index: usize,
        request: Request,
        now: Instant,
    ) -> Result<(), CloseReason> {
        let next_live = self.retention.next();
        let oldest = self.retention.oldest();
        let session_id = self.session_id;
        let Some(client) = self.clients.get_mut(index).and_then(Option::as_mut) else {
            return Ok(());
        };
        match (request, client.state) {
            (Request::Close(reason), _) => Err(reason),
            (Request::Heartbeat, State::AwaitingLogin { .. }) => Err(CloseReason::UnexpectedFrame),
            (Request::Heartbeat, _) => Ok(()),
            (Request::Login(_), State::Replaying { .. } | State::Live) => {
                Err(CloseReason::SecondLogin)
            }
            (Request::Login(wanted), State::AwaitingLogin { .. }) => {
                let start = if wanted == 0 || wanted >= next_live {
                    next_live
                } else {
                    wanted.max(oldest)
                };
                let mut frame = [0u8; MAX_FRAME_LEN];
                let accepted = Payload::LoginAccepted { session_id };
                let n = encode(&accepted, start, unix_nanos(), &mut frame)
                    .map_err(|_| CloseReason::IoError)?;
                client.state = if start < next_live {
                    State::Replaying { next: start }
                } else {
                    State::Live
                };
                client.last_sent = now;
                match client.conn.send(frame.get(..n).unwrap_or_default()) {
                    Ok(true) => {}
                    Ok(false) => return Err(CloseReason::Slow),
                    Err(_) => return Err(CloseReason::IoError),
                }
                let peer = client.peer;
                self.log(format_args!(
                    "login {peer}: wanted {wanted}, sending from {start} (oldest {oldest}, next live {next_live})"
                ));
                self.pump_replay(index);
                Ok(())
            }
        }
    }

    fn on_writable(&mut self, index: usize) {
        let Some(client) = self.clients.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let before = client.conn.pending();
        let result = client.conn.write_ready();
        let written = before.saturating_sub(client.conn.pending());
        add(&self.shared.bytes_sent, written as u64);
        if let Err(e) = result {
            self.close(index, close_reason(&e));
            return;
        }
        self.pump_replay(index);
    }

    /// Copies retained frames into a replaying client's queue while the
    /// socket takes them; switches it to live data once caught up.
    fn pump_replay(&mut self, index: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut close = None;
        if let Some(client) = self.clients.get_mut(index).and_then(Option::as_mut) {
            while let State::Replaying { next } = client.state {
                if next >= self.retention.next() {
                    client.state = State::Live;
                    break;
                }
                if client.conn.pending() > 0 {
                    break; // wait until the socket takes what is queued
                }
                scratch.clear();
                let after = self.retention.copy_from(next, REPLAY_CHUNK, &mut scratch);
                let skipped_to = next.max(self.retention.oldest());
                match client.conn.send(&scratch) {
                    Ok(true) => {
                        let written = scratch.len().saturating_sub(client.conn.pending());
                        add(&self.shared.bytes_sent, written as u64);
                        add(&self.shared.frames_sent, after - skipped_to);
                        client.state = State::Replaying { next: after };
                        client.last_sent = Instant::now();
                    }
                    Ok(false) => break,
                    Err(e) => {
                        close = Some(close_reason(&e));
                        break;
                    }
                }
            }
        }
        self.scratch = scratch;
        if let Some(reason) = close {
            self.close(index, reason);
        }
    }

    fn broadcast(&mut self, batch: Encoded, now: Instant) {
        let Encoded {
            first,
            frames,
            bytes,
        } = batch;
        let scratch = Arc::new(bytes);
        self.retention.push(first, frames, Arc::clone(&scratch));
        add(&self.shared.frames_published, frames);
        let mut to_close = Vec::new();
        for index in 0..self.clients.len() {
            let Some(client) = self.clients.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            if client.state != State::Live {
                continue;
            }
            if client.slow {
                add(&self.shared.skipped_batches, 1);
                continue;
            }
            let before = client.conn.pending();
            match client.conn.send(&scratch) {
                Ok(true) => {
                    let written = (before + scratch.len()).saturating_sub(client.conn.pending());
                    add(&self.shared.bytes_sent, written as u64);
                    add(&self.shared.frames_sent, frames);
                    client.last_sent = now;
                    let queued = client.conn.pending() as u64;
                    self.shared
                        .peak_client_queue
                        .fetch_max(queued, Ordering::Relaxed);
                    if queued > 0 {
                        if let Some(reason) = self.check_slow(index, now, true) {
                            to_close.push((index, reason));
                        }
                    }
                }
                Ok(false) => {
                    add(&self.shared.skipped_batches, 1);
                    if let Some(reason) = self.mark_slow(index, "queue full") {
                        to_close.push((index, reason));
                    }
                }
                Err(e) => to_close.push((index, close_reason(&e))),
            }
        }
        for (index, reason) in to_close {
            self.close(index, reason);
        }
    }

    /// Marks the client slow if its pending bytes are over the threshold;
    /// un-marks it below half. Returns a close reason under the disconnect policy.
    fn check_slow(&mut self, index: usize, now: Instant, force: bool) -> Option<CloseReason> {
        let threshold = self.config.slow_threshold;
        let client = self.clients.get_mut(index).and_then(Option::as_mut)?;
        if !force && now.duration_since(client.last_slow_check) < TICK {
            return None;
        }
        client.last_slow_check = now;
        let pending = client.conn.pending() + client.conn.kernel_pending().unwrap_or(0);
        if client.slow && pending < threshold / 2 {
            client.slow = false;
            let peer = client.peer;
            self.log(format_args!(
                "{peer} drained ({pending} bytes pending): live data resumes"
            ));
            None
        } else if !client.slow && pending > threshold {
            self.mark_slow(index, "over the pending threshold")
        } else {
            None
        }
    }

    fn mark_slow(&mut self, index: usize, why: &str) -> Option<CloseReason> {
        let policy = self.config.slow_policy;
        let client = self.clients.get_mut(index).and_then(Option::as_mut)?;
        if client.slow {
            return None;
        }
        add(&self.shared.slow_marks, 1);
        let peer = client.peer;
        let pending = client.conn.pending();
        match policy {
            SlowPolicy::Skip => {
                client.slow = true;
                self.log(format_args!(
                    "{peer} is slow ({why}, {pending} bytes queued): skipping it"
                ));
                None
            }
            SlowPolicy::Disconnect => Some(CloseReason::Slow),
        }
    }

    fn tick(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|until| now >= until) {
            self.accept(now);
        }
        let heartbeat = self.config.heartbeat_interval;
        let next = self.retention.next();
        let mut beat = [0u8; MAX_FRAME_LEN];
        let beat_len = encode(&Payload::Heartbeat, next, unix_nanos(), &mut beat).unwrap_or(0);
        let beat = beat.get(..beat_len).unwrap_or_default();
        let mut to_close = Vec::new();
        for index in 0..self.clients.len() {
            let Some(client) = self.clients.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            match client.state {
                State::AwaitingLogin { deadline } if now >= deadline => {
                    to_close.push((index, CloseReason::LoginTimeout));
                    continue;
                }
                State::AwaitingLogin { .. } => continue,
                State::Replaying { .. } => {
                    self.pump_replay(index);
                    continue;
                }
                State::Live => {}
            }
            if now.duration_since(client.last_sent) >= heartbeat && client.conn.pending() == 0 {
                client.last_sent = now;
                if let Err(e) = client.conn.send(beat) {
                    to_close.push((index, close_reason(&e)));
                    continue;
                }
            }
            if let Some(reason) = self.check_slow(index, now, false) {
                to_close.push((index, reason));
            }
        }
        for (index, reason) in to_close {
            self.close(index, reason);
        }
    }

    /// EndOfSession to every client, a bounded wait for queues to drain,
    /// then close.
    fn shutdown(&mut self) {
        let next = self.retention.next();
        let mut end = [0u8; MAX_FRAME_LEN];
        let end_len = encode(&Payload::EndOfSession, next, unix_nanos(), &mut end).unwrap_or(0);
        for client in self.clients.iter_mut().flatten() {
            if !matches!(client.state, State::AwaitingLogin { .. }) {
                let _ = client.conn.send(end.get(..end_len).unwrap_or_default());
            }
        }
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        let mut events = Events::with_capacity(256);
        while Instant::now() < deadline
            && self.clients.iter().flatten().any(|c| c.conn.pending() > 0)
        {
            let _ = self.poll.poll(&mut events, Some(TICK));
            for client in self.clients.iter_mut().flatten() {
                let _ = client.conn.write_ready();
            }
        }
        for index in 0..self.clients.len() {
            if let Some(client) = self.clients.get_mut(index).and_then(Option::as_mut) {
                let _ = client.conn.stream().shutdown(std::net::Shutdown::Write);
            }
            self.close(index, CloseReason::Shutdown);
        }
        self.log(format_args!("shut down"));
    }
}

/// Why a failed write or read closes a client: the peer going away is not
/// an error of ours.
fn close_reason(error: &io::Error) -> CloseReason {
    match super::classify(error) {
        super::IoClass::Gone => CloseReason::PeerClosed,
        _ => CloseReason::IoError,
    }
}

fn is_descriptor_exhaustion(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(code) if code == libc::EMFILE || code == libc::ENFILE)
}

/// A session id unique to this run: the process's random hash keys mixed
/// with the time and the process id.
fn new_session_id() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(unix_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}
