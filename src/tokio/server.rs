//! [`Server`]: the async server, a thin driver around one
//! [`ServerCore`]: one task per connection moves its bytes, one timer task
//! moves time, and every decision is the core's.
#![forbid(unsafe_code)]

use std::string::ToString;
use std::vec;
use std::vec::Vec;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::tokio::net::{TcpListener, TcpSocket, TcpStream};
use ::tokio::sync::{watch, Notify};
use ::tokio::task::JoinSet;
use ::tokio::time::Instant;

use crate::encode::Sequencer;
use crate::net::{
    close_reason, open_journal, sys, unix_nanos, Counters, DatagramOutput, Messages, PublishError,
    ServerConfig, ServerStats, Wal,
};
use crate::session::{Batch, CloseReason, ConnId, ServerCore, Time, SHUTDOWN_DRAIN, WRITE_BUDGET};
use crate::wire::MAX_DATA_FRAME_LEN;

/// Slices per `writev`.
const MAX_SLICES: usize = 64;

/// The TLS path of a connection (`tls` feature, [`ServerConfig::tls`]).
#[cfg(feature = "tls")]
#[path = "server_tls.rs"]
mod tls;

/// The core and what the driver keeps beside it, under one lock.
#[derive(Debug)]
struct State {
    core: ServerCore,
    sequencer: Sequencer,
    /// Each open connection's wake-up, by [`ConnId::index`].
    wakers: Vec<Option<Arc<Notify>>>,
    /// The deadline the timer task sleeps until (`None`: none).
    timer_planned: Option<Duration>,
    /// With a journal in `fsync always` mode: batches appended and not yet
    /// durable, in order; whichever publisher's wait ends first hands the
    /// core every batch the journal's sync covered.
    held: VecDeque<Arc<Batch>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the timer task when the core's earliest deadline moved earlier.
    timer: Notify,
    stop: watch::Sender<bool>,
    epoch: Instant,
    /// Counters the core does not keep (datagrams).
    counters: Arc<Counters>,
    /// The datagram feed ([`ServerConfig::datagrams`]): sent by the
    /// publishing thread, in sequence order (taken under the state's lock,
    /// sent after it); idle Packet-only datagrams and the final
    /// EndOfSession by the server's tasks.
    datagrams: Option<Mutex<DatagramOutput>>,
    /// The settings (socket options of accepted connections, logs).
    config: ServerConfig,
    /// The journal every batch is appended to first (`ServerConfig::journal`).
    wal: Option<Arc<Wal>>,
}

impl Shared {
    /// The state, locked. A panic while it was held stopped that task; the
    /// core is whole between its calls, so the others keep serving (the one
    /// rule for a poisoned lock in this server).
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn datagrams(&self) -> Option<MutexGuard<'_, DatagramOutput>> {
        self.datagrams
            .as_ref()
            .map(|d| d.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn time(&self) -> Time {
        Time::new(
            Instant::now().saturating_duration_since(self.epoch),
            unix_nanos(),
        )
    }

    /// After any call into the core (the lock held): wake the connections
    /// it has something for, log what it reports, and wake the timer task
    /// if the core's earliest deadline moved before the one it sleeps until.
    fn dispatch(&self, state: &mut State) {
        while let Some(id) = state.core.poll_ready() {
            if let Some(Some(waker)) = state.wakers.get(id.index()) {
                waker.notify_one();
            }
        }
        while let Some(event) = state.core.poll_event() {
            crate::net::log_core_event(&event, self.config.core.session.slow_policy);
        }
        let due = state.core.poll_timeout();
        let earlier = match (due, state.timer_planned) {
            (Some(due), Some(planned)) => due < planned,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if earlier {
            state.timer_planned = due;
            self.timer.notify_one();
        }
    }

    fn stats(&self) -> ServerStats {
        let core = self.state().core.stats();
        self.counters.snapshot_with(&core)
    }

    /// `fsync always`: the held batches the journal's last sync covers go
    /// to the core, in order; their datagrams, taken under the state's
    /// lock (sequence order), are for the caller to send after it.
    fn release_durable(
        &self,
        wal: &Wal,
    ) -> Option<(MutexGuard<'_, DatagramOutput>, Vec<Arc<Batch>>)> {
        let durable = wal.durable_end();
        let mut state = self.state();
        let mut released = Vec::new();
        while state.held.front().is_some_and(|b| b.end() <= durable) {
            if let Some(batch) = state.held.pop_front() {
                state.core.publish(Arc::clone(&batch), self.time());
                released.push(batch);
            }
        }
        if released.is_empty() {
            return None;
        }
        self.dispatch(&mut state);
        self.datagrams().map(|d| (d, released))
    }
}

/// Publishes data frames into a running tokio [`Server`] from any task or
/// thread; clone it freely. Not async: the batch is numbered and encoded
/// on the caller's thread (once), handed to the server core, which queues
/// it to every session (shared, not copied), and the connections that got
/// bytes are woken. Nothing waits in between, so nothing can be lost in
/// between: a connection task that runs late finds everything in its
/// session's queue, or catches up from the retention. The publisher pays
/// for the fan-out (one queue entry per connection): that is its
/// back-pressure; slow clients are the core's business (skipped, counted
/// and told of the gap, or disconnected).
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
    /// data payloads are sent, numbered 1, 2, 3… across all publishers
    /// (after a restart on a journal, from where the session stopped).
    /// With a journal ([`ServerConfig::journal`]) the batch is appended to
    /// it first; with `fsync always` this returns once the batch is
    /// durable, and only then do the connections and datagram lines get it.
    ///
    /// # Errors
    /// [`PublishError::Closed`] once the server is shutting down;
    /// [`PublishError::Journal`] when the journal refused the batch (a full
    /// disk: nothing was numbered or sent, the server goes on).
    pub fn publish(&self, mut batch: Messages) -> Result<(), PublishError> {
        if *self.shared.stop.borrow() {
            return Err(PublishError::Closed);
        }
        batch.retain(|(_, payload)| payload.msg_type().is_data());
        if batch.is_empty() {
            return Ok(());
        }
        let mut bytes = vec![0u8; batch.len() * MAX_DATA_FRAME_LEN];
        let (datagrams, ticket) = {
            let mut state = self.shared.state();
            if state.core.is_shutting_down() {
                return Err(PublishError::Closed);
            }
            let before = state.sequencer;
            let first = state.sequencer.next_sequence();
            let done = state.sequencer.encode_batch(&batch, &mut bytes);
            bytes.truncate(done.bytes);
            let encoded = Arc::new(Batch::encoded(first, done.frames as u64, bytes));
            // Write-ahead: in the journal before anything else sees it.
            let ticket = match &self.shared.wal {
                Some(wal) => match wal.append(&encoded) {
                    Ok(ticket) => wal.always().then_some((wal, ticket)),
                    Err(e) => {
                        state.sequencer = before; // nothing published: the numbers go back
                        return Err(e);
                    }
                },
                None => None,
            };
            if ticket.is_some() {
                // `fsync always`: to the core once durable (below).
                state.held.push_back(encoded);
                (None, ticket)
            } else {
                state.core.publish(Arc::clone(&encoded), self.shared.time());
                self.shared.dispatch(&mut state);
                // Taken before the state is let go: batches reach the lines in
                // sequence order; sent after, so that the connection tasks do
                // not wait for the system calls.
                (self.shared.datagrams().map(|d| (d, vec![encoded])), None)
            }
        };
        let datagrams = match ticket {
            // Group commit, no lock held; then every batch the sync covered.
            Some((wal, ticket)) => {
                let durable = wal.wait(ticket);
                let released = self.shared.release_durable(wal);
                durable?;
                released
            }
            None => datagrams,
        };
        if let Some((mut output, batches)) = datagrams {
            let time = output.now();
            for batch in &batches {
                output.publish(batch, time);
            }
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
        self.shared.state().sequencer.next_sequence()
    }
}

/// The input of a relay's tokio server, as the mio server's
/// [`net::RelayFeed`](crate::net::RelayFeed) is of its: data frames that
/// already carry their sequences, timestamps and checksums (sent byte for
/// byte), the holes between them, the session they belong to, and whether
/// their source is alive (protocol section 10). Each call is one step of
/// the server core, on the caller's thread; clone it freely.
///
/// With a journal ([`ServerConfig::journal`](crate::net::ServerConfig::journal)),
/// a relay restarted on it resumes its upstream from the journal: bind
/// with the upstream's session id, then subscribe upstream from
/// [`ServerHandle::next_sequence`] in [`ServerHandle::session_id`]'s
/// session ([`ClientConfig::resume_session`](crate::net::ClientConfig::resume_session));
/// frames the journal holds already are dropped here rather than
/// journaled twice, and an upstream session change goes to
/// [`new_session`](Self::new_session), which starts a journal session.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// use tickwire::session::Batch;
/// use tickwire::{encode::QuoteFields, Payload, Sequencer};
///
/// let config = tickwire::net::ServerConfig { listen: "127.0.0.1:0".parse()?, ..Default::default() };
/// let server = tickwire::tokio::Server::bind(config).await?.spawn();
/// let feed = server.relay_feed();
/// let mut seq = Sequencer::starting_at(5); // 1..=4 are gone upstream
/// let mut bytes = vec![0u8; 2 * 44];
/// let done = seq.encode_batch(&[(7, Payload::Quote(QuoteFields::default())); 2], &mut bytes);
/// bytes.truncate(done.bytes);
/// feed.advance(5)?;
/// feed.publish(Batch::new(bytes)?)?;
/// assert_eq!(server.stats().frames_published, 2);
/// feed.new_session(0xfeed, 1)?; // the upstream restarted
/// assert_eq!(server.session_id(), 0xfeed);
/// server.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct RelayFeed {
    shared: Arc<Shared>,
}

impl RelayFeed {
    /// Publishes frames numbered upstream (consecutive within the batch).
    /// A batch starting after the end of the previous one leaves a hole;
    /// one starting before it starts a new sequence space (use
    /// [`new_session`](Self::new_session) for that).
    ///
    /// # Errors
    /// [`PublishError::Closed`] once the server is shutting down.
    pub fn publish(&self, batch: Batch) -> Result<(), PublishError> {
        if let Some(wal) = &self.shared.wal {
            return self.publish_journaled(batch, wal);
        }
        let batch = Arc::new(batch);
        {
            let mut state = self.shared.state();
            if state.core.is_shutting_down() {
                return Err(PublishError::Closed);
            }
            // Datagrams first, under the state: in sequence order, and out
            // before the batch counts as published.
            if let Some(mut output) = self.shared.datagrams() {
                let time = output.now();
                output.publish(&batch, time);
            }
            state.core.publish(batch, self.shared.time());
            self.shared.dispatch(&mut state);
        }
        Ok(())
    }

    /// [`publish`](Self::publish) with a journal: appended first (what it
    /// holds already, from before a restart, is left out), then as a
    /// publisher's batch (with `fsync always`, once durable).
    fn publish_journaled(&self, batch: Batch, wal: &Arc<Wal>) -> Result<(), PublishError> {
        let ticket = {
            let mut state = self.shared.state();
            if state.core.is_shutting_down() {
                return Err(PublishError::Closed);
            }
            let Some(batch) = crate::net::not_journaled(batch, wal.next_sequence()) else {
                return Ok(());
            };
            let batch = Arc::new(batch);
            let ticket = wal.append(&batch)?;
            if wal.always() {
                state.held.push_back(batch);
                ticket
            } else {
                if let Some(mut output) = self.shared.datagrams() {
                    let time = output.now();
                    output.publish(&batch, time);
                }
                state.core.publish(batch, self.shared.time());
                self.shared.dispatch(&mut state);
                return Ok(());
            }
        };
        let durable = wal.wait(ticket);
        if let Some((mut output, batches)) = self.shared.release_durable(wal) {
            let time = output.now();
            for batch in &batches {
                output.publish(batch, time);
            }
        }
        durable
    }

    /// The next data sequence is `next` (if higher than now): the frames
    /// before it that were not published never will be.
    ///
    /// # Errors
    /// [`PublishError::Closed`] once the server is shutting down.
    pub fn advance(&self, next: u64) -> Result<(), PublishError> {
        let mut state = self.shared.state();
        if state.core.is_shutting_down() {
            return Err(PublishError::Closed);
        }
        state.core.advance(next);
        if let Some(mut output) = self.shared.datagrams() {
            output.advance(next);
        }
        Ok(())
    }

    /// The upstream session changed to `session_id`, whose next data
    /// sequence is `next`: every TCP client gets EndOfSession and is closed
    /// (they log in again and see the new session), the retention is
    /// emptied, and datagrams carry the new session id.
    ///
    /// # Errors
    /// [`PublishError::Closed`] once the server is shutting down.
    pub fn new_session(&self, session_id: u64, next: u64) -> Result<(), PublishError> {
        let mut state = self.shared.state();
        if state.core.is_shutting_down() {
            return Err(PublishError::Closed);
        }
        if let Some(wal) = &self.shared.wal {
            wal.start_session(session_id, next)?;
        }
        let time = self.shared.time();
        if let Some(mut output) = self.shared.datagrams() {
            output.new_session(time, session_id, next);
        }
        log::info!(
            "upstream session changed: {:#018x} -> {session_id:#018x} from {next}",
            state.core.session_id()
        );
        state.core.new_session(session_id, next, time);
        self.shared.dispatch(&mut state);
        Ok(())
    }

    /// Whether the upstream is alive: while it is not, the server sends no
    /// idle Heartbeats and no Packet-only datagrams (section 10.3). Alive
    /// initially.
    pub fn set_upstream_alive(&self, alive: bool) {
        let mut state = self.shared.state();
        state.core.set_upstream_alive(alive);
        self.shared.dispatch(&mut state);
    }
}

/// The async server: the protocol of the mio
/// [`net::Server`](crate::net::Server) on tokio, with the same
/// [`ServerConfig`] and the same rules, because every rule is the
/// [`ServerCore`]'s.
///
/// ```text
///  Publisher::publish ─▶ encode once ─▶ Arc<Batch> ─▶ core.publish (retention, every session) ─▶ wake the ready
///  accept task ─▶ one task per connection: core.accept, read at once (admission reads first)
///      readable ─▶ core.input_buffer / input_committed      woken ─▶ core.poll_transmit ─▶ try_write_vectored
///      timer task: sleeps until core.poll_timeout ─▶ admission graces, wakes the connections due
///      ─▶ core.handle_conn_timeout(kernel backlog: TIOCOUTQ)
/// ```
///
/// The core sits behind one lock, taken for each step (a read, a write, a
/// publish) and never across an `.await`. Connections that have not logged
/// in are limited as the core says
/// ([`CoreConfig::max_unauthenticated`](crate::session::CoreConfig::max_unauthenticated),
/// per peer too, after
/// [`CoreConfig::admission_grace`](crate::session::CoreConfig::admission_grace)),
/// and accepted sockets get the send buffer, TCP keepalive and
/// `TCP_USER_TIMEOUT` of [`ServerConfig`]. A datagram feed
/// ([`ServerConfig::datagrams`], protocol section 8) is sent by the
/// publishing thread inside [`Publisher::publish`] (there is no event loop
/// to send it), its idle Packet-only datagrams by a task of the server, its
/// EndOfSession by [`ServerHandle::shutdown`]; the connections serve
/// retransmission requests (section 9) from the same retention. Every field
/// of [`ServerConfig`] means here what it means to the mio server; the mio
/// event loops' own settings (`ServerConfig::mio`, `net` feature) are not
/// read.
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
///
/// # TLS
///
/// With [`ServerConfig::tls`] (`tls` feature) the listener is TLS only
/// (protocol section 12). Each connection's task runs the handshake
/// (`tokio_rustls::TlsAcceptor`) within the login timeout, which runs from
/// the TCP accept and covers the handshake, the Auth and the Login: the
/// core's timer closes a client that never finishes it. The ALPN
/// `tickwire/1` is checked once the handshake is done; then the same
/// core-driven loop runs over the TLS stream, and the bytes inside are
/// exactly those of a plain connection. A failed handshake closes the
/// connection as bad data with a log line that says why (`closed PEER:
/// TLS: …`: a plain client on this listener, a client certificate
/// required and absent ([`TlsServerFiles::client_ca`](crate::tls::TlsServerFiles::client_ca)),
/// the client's alert…). A Rejected (section 11) is followed by
/// close_notify and the FIN, then reading goes on until the client
/// closes; a graceful shutdown's EndOfSession too. The slow-client rules
/// see the kernel's send queue of the socket; beyond it, rustls may hold
/// up to its buffer limit (64 KiB) of a client's bytes, encrypted. A plain
/// listener names a TLS handshake it receives in its log before closing
/// the connection.
#[cfg_attr(
    feature = "tls",
    doc = r#"
```
# tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
use futures_util::StreamExt;
use tickwire::tls::{TlsClientFiles, TlsServerFiles};
use tickwire::tokio::{Client, ClientEvent, Server};
use tickwire::{encode::QuoteFields, net::{ClientConfig, ServerConfig}, Payload};

let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");
let tls = TlsServerFiles::new(format!("{dir}/server.pem"), format!("{dir}/server.key"));
let config = ServerConfig {
    listen: "127.0.0.1:0".parse()?,
    tls: Some(tls.load()?),
    ..ServerConfig::default()
};
let server = Server::bind(config).await?.spawn();
server.publisher().publish(vec![(1, Payload::Quote(QuoteFields::default())); 3])?;

// The certificate is for localhost, 127.0.0.1 and ::1, by the test CA:
// the client checks it against the host it dials.
let mut client_config = ClientConfig::new(format!("localhost:{}", server.local_addr().port()));
client_config.tls = Some(TlsClientFiles::new(format!("{dir}/ca.pem")).load()?);
client_config.from = 1;
let mut client = Client::new(client_config);
let mut sequences = Vec::new();
while sequences.len() < 3 {
    if let Some(ClientEvent::Frame(frame)) = client.next().await {
        sequences.push(frame.sequence());
    }
}
assert_eq!(sequences, [1, 2, 3]);
assert_eq!(server.stats().clients, 1);
server.shutdown().await;
# Ok::<(), Box<dyn std::error::Error>>(())
# })?;
# Ok::<(), Box<dyn std::error::Error>>(())
```
"#
)]
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
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
        let local_addr = listener.local_addr()?;
        // A random session id if the config says 0 (see ServerConfig::core),
        // or the journal's, whose session goes on.
        let mut core = config.core_for_run();
        let (wal, next) = match open_journal(&config, config.core.session.session_id)? {
            Some(opened) => {
                core.session.session_id = opened.session_id;
                (Some(opened.wal), opened.next)
            }
            None => (None, 1),
        };
        let session_id = core.session.session_id;
        let epoch = Instant::now();
        let counters = Arc::new(Counters::default());
        let datagrams = config
            .datagrams
            .as_ref()
            .map(|output| {
                DatagramOutput::new(
                    output,
                    session_id,
                    core.session.heartbeat_interval,
                    epoch.into_std(),
                    &counters,
                )
                .map(|mut output| {
                    output.advance(next); // a session continued from its journal
                    output
                })
            })
            .transpose()?;
        if let Some(output) = &datagrams {
            log::info!(
                "datagrams from {:?}",
                output.local_addr().map(|a| a.to_string())
            );
        }
        let datagrams = datagrams.map(Mutex::new);
        let time = Time::new(Duration::ZERO, unix_nanos());
        let mut core = ServerCore::new(core, time);
        core.set_verifier(config.auth.clone());
        if next > 1 {
            core.continue_at(next);
        }
        core.set_cold(wal.as_ref().map(|w| w.cold()));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core,
                sequencer: Sequencer::starting_at(next),
                wakers: Vec::new(),
                timer_planned: None,
                held: VecDeque::new(),
            }),
            timer: Notify::new(),
            stop: watch::Sender::new(false),
            epoch,
            counters,
            datagrams,
            config,
            wal,
        });
        Ok(Server {
            listener,
            local_addr,
            shared,
        })
    }

    /// The address the server listens on (as the mio server's
    /// [`local_addr`](crate::net::Server::local_addr)).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Spawns the accept task (and, from it, a task per connection) and the
    /// timer task on the current runtime.
    #[must_use]
    pub fn spawn(self) -> ServerHandle {
        let local_addr = self.local_addr;
        let shared = Arc::clone(&self.shared);
        let task = ::tokio::spawn(accept_loop(self.listener, Arc::clone(&shared)));
        drop(::tokio::spawn(timers(Arc::clone(&shared))));
        if shared.datagrams.is_some() {
            // Ends with the server (on stop).
            drop(::tokio::spawn(idle_datagrams(Arc::clone(&shared))));
        }
        ServerHandle {
            local_addr,
            shared,
            task: Some(task),
        }
    }
}

/// A running tokio [`Server`]: its address, its publisher, its counters,
/// and a graceful [`shutdown`](ServerHandle::shutdown) (EndOfSession to
/// every client). Dropping it shuts the server down the same way, as
/// dropping the mio [`ServerHandle`](crate::net::ServerHandle) does,
/// without waiting for the connections to drain (their tasks end within a
/// second on the runtime).
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// The accept task (taken by `shutdown`).
    task: Option<::tokio::task::JoinHandle<()>>,
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
        self.shared.state().core.session_id()
    }

    /// A publisher for this server.
    #[must_use]
    pub fn publisher(&self) -> Publisher {
        Publisher {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The sequence the next published frame gets: 1 for a new session;
    /// after a restart on a journal whose session goes on
    /// ([`ServerConfig::journal`]), the one after the last frame it holds.
    #[must_use]
    pub fn next_sequence(&self) -> u64 {
        self.shared.state().sequencer.next_sequence()
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> ServerStats {
        self.shared.stats()
    }

    /// The input of a relay: frames that already carry their sequences,
    /// holes, session changes, upstream liveness (see [`RelayFeed`]); do not
    /// also publish with a [`Publisher`]: the two numberings would clash.
    #[must_use]
    pub fn relay_feed(&self) -> RelayFeed {
        RelayFeed {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops accepting, sends EndOfSession to every logged-in client, waits
    /// (at most 1 s) for it to be written, closes every connection, and
    /// returns the counters.
    pub async fn shutdown(mut self) -> ServerStats {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.shared.stats()
    }

    /// Tells every task to stop (once): EndOfSession queued to every
    /// logged-in client, the datagram feed's EndOfSession sent. With a
    /// journal, the session goes on at the next start: the clients are
    /// closed without EndOfSession (unless its settings say to end it),
    /// and the journal is closed cleanly.
    fn stop(&self) {
        if self.shared.stop.send_replace(true) {
            return; // stopped already
        }
        let end = self.shared.wal.as_ref().is_none_or(|w| w.ends_session());
        {
            let mut state = self.shared.state();
            if end {
                state.core.shutdown(self.shared.time());
            } else {
                state.core.shutdown_keeping_session(self.shared.time());
            }
            self.shared.dispatch(&mut state);
        }
        if let Some(mut output) = self.shared.datagrams().filter(|_| end) {
            let time = output.now();
            output.end_of_session(time);
        }
        if let Some(wal) = &self.shared.wal {
            // Publishing has stopped (the core is shutting down).
            wal.close();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
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
                    // Into the core in accept order (admission is by age).
                    let waker = Arc::new(Notify::new());
                    let id = {
                        let mut state = shared.state();
                        let id = state.core.accept(peer, shared.time());
                        // Replays read the journal outside the lock
                        // (`Shared::cold_read`).
                        state.core.set_cold_by_driver(id, true);
                        if state.wakers.len() <= id.index() {
                            state.wakers.resize(id.index() + 1, None);
                        }
                        if let Some(place) = state.wakers.get_mut(id.index()) {
                            *place = Some(Arc::clone(&waker));
                        }
                        shared.dispatch(&mut state);
                        id
                    };
                    tasks.spawn(connection(stream, id, waker, Arc::clone(&shared)));
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
    // Each connection ends by itself within SHUTDOWN_DRAIN; a little more
    // for the tasks to be scheduled.
    let drained = ::tokio::time::timeout(SHUTDOWN_DRAIN * 2, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.shutdown().await;
    }
}

/// The core's clock: sleeps until its earliest deadline, ends admission
/// graces, and wakes each connection whose deadline came.
///
/// After a stop it goes on until the core is drained: the core's shutdown
/// drain ends by its own deadline ([`SHUTDOWN_DRAIN`]).
async fn timers(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut stopping = false;
    loop {
        let deadline = {
            let mut state = shared.state();
            let time = shared.time();
            state.core.handle_timeout(time);
            if stopping && state.core.is_drained() {
                shared.dispatch(&mut state);
                return;
            }
            while let Some(id) = state.core.poll_expired(time.monotonic) {
                if let Some(Some(waker)) = state.wakers.get(id.index()) {
                    waker.notify_one();
                }
            }
            state.timer_planned = state.core.poll_timeout();
            shared.dispatch(&mut state);
            state.timer_planned
        };
        ::tokio::select! {
            biased;
            () = stopped(&mut stop), if !stopping => stopping = true,
            () = shared.timer.notified() => {}
            () = sleep_until_some(deadline.map(|at| shared.epoch + at)) => {}
        }
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
                // A relay's lost upstream: no Packet-only datagrams (10.3).
                let alive = shared.state().core.retention().upstream_alive();
                if let Some(mut output) = shared.datagrams() {
                    let time = output.now();
                    if alive {
                        output.handle_timeout(time);
                    } else {
                        output.skip_idle(time.monotonic);
                    }
                }
            }
        }
    }
}

/// One connection, until the core closes it.
async fn connection(stream: TcpStream, id: ConnId, waker: Arc<Notify>, shared: Arc<Shared>) {
    #[cfg(feature = "tls")]
    if let Some(config) = shared.config.tls.clone() {
        tls::connection(stream, config, id, waker, shared).await;
        return;
    }
    let fresh = {
        // Admission reads first: a Login that came with the connection is
        // read before anything else happens to it.
        let mut state = shared.state();
        let fresh = read_first(&mut state, id, &stream, &shared);
        shared.dispatch(&mut state);
        fresh
    };
    let reason = run(&stream, id, &waker, &shared, fresh).await;
    release(id, reason, &shared);
    if reason == CloseReason::Shutdown {
        let _ = stream
            .into_std()
            .map(|s| s.shutdown(std::net::Shutdown::Write));
    }
}

/// The connection's socket is (about to be) closed: out of the core.
fn release(id: ConnId, reason: CloseReason, shared: &Shared) {
    let mut state = shared.state();
    state.core.handle_failure(id, reason);
    state.core.release(id);
    if let Some(place) = state.wakers.get_mut(id.index()) {
        *place = None;
    }
    shared.dispatch(&mut state);
}

/// Moves the connection's bytes and time until the core closes it; the
/// reason.
///
/// `fresh`: nothing was read yet (see [`read_first`]).
async fn run(
    stream: &TcpStream,
    id: ConnId,
    waker: &Notify,
    shared: &Shared,
    mut fresh: bool,
) -> CloseReason {
    loop {
        {
            let mut state = shared.state();
            let time = shared.time();
            if state
                .core
                .conn_timeout(id)
                .is_some_and(|at| at <= time.monotonic)
            {
                let backlog = sys::unsent_bytes(stream.as_fd()).unwrap_or(0);
                state.core.handle_conn_timeout(id, time, backlog);
                shared.dispatch(&mut state);
            }
        }
        // Read (the journal) and written without holding the core:
        // publishers and the other connections go on meanwhile.
        cold_read(id, shared).await;
        if let Err(e) = write_some(id, stream, shared) {
            shared.state().core.handle_failure(id, close_reason(&e));
        }
        let want_write = {
            let mut state = shared.state();
            shared.dispatch(&mut state);
            if let Some(reason) = state.core.close_reason(id) {
                return reason;
            }
            state.core.wants_write(id)
        };
        ::tokio::select! {
            biased;
            ready = stream.readable() => {
                let mut state = shared.state();
                if ready.is_err() {
                    state.core.handle_failure(id, CloseReason::IoError);
                } else if fresh {
                    fresh = read_first(&mut state, id, stream, shared);
                } else {
                    read(&mut state, id, stream, shared);
                }
                shared.dispatch(&mut state);
            }
            () = waker.notified() => {}
            _ = stream.writable(), if want_write => {}
        }
    }
}

/// Reads a plain connection until its first bytes came: as [`read`], and
/// a TLS handshake record first (a client configured for TLS on this plain
/// listener) is named in the log before the core closes the connection
/// for it. Whether nothing came yet.
fn read_first(state: &mut State, id: ConnId, stream: &TcpStream, shared: &Shared) -> bool {
    let Some(spare) = state.core.input_buffer(id) else {
        return false;
    };
    match stream.try_read(spare) {
        Ok(0) => {
            state.core.handle_eof(id, shared.time());
            return false;
        }
        Ok(n) => {
            if let Some([0x16, 0x03, ..]) = spare.get(..n) {
                if let Some(peer) = state.core.peer(id) {
                    log::info!(
                        "{peer}: a TLS handshake on this plain listener (a client configured for TLS?)"
                    );
                }
            }
            state.core.input_committed(id, n, shared.time());
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
        Err(e) => {
            state.core.handle_failure(id, close_reason(&e));
            return false;
        }
    }
    read(state, id, stream, shared);
    false
}

/// Reads what the peer sent into the core until the socket would block.
fn read(state: &mut State, id: ConnId, stream: &TcpStream, shared: &Shared) {
    loop {
        let Some(spare) = state.core.input_buffer(id) else {
            return; // closed
        };
        match stream.try_read(spare) {
            Ok(0) => {
                state.core.handle_eof(id, shared.time());
                return;
            }
            Ok(n) => state.core.input_committed(id, n, shared.time()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                state.core.handle_failure(id, close_reason(&e));
                return;
            }
        }
    }
}

/// Writes what the core has for `id` until the socket would block or the
/// budget is spent: the core's lock is taken to see what to write (an owned
/// copy of the front of the queue: shared segments, not bytes) and to say
/// what was written, never across the system call.
fn write_some(id: ConnId, stream: &TcpStream, shared: &Shared) -> io::Result<()> {
    let mut written = 0;
    while written < WRITE_BUDGET {
        let time = shared.time();
        let Some(transmit) = shared
            .state()
            .core
            .poll_transmit(id, time)
            .map(|tx| tx.to_owned(MAX_SLICES))
        else {
            if shared.state().core.poll_write_shutdown(id) {
                // After a Rejected (section 11): reading goes on until the
                // client closes.
                let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
            }
            return Ok(());
        };
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut count = 0;
        for (place, bytes) in slices.iter_mut().zip(transmit.slices()) {
            *place = IoSlice::new(bytes);
            count += 1;
        }
        match stream.try_write_vectored(slices.get(..count).unwrap_or_default()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let mut state = shared.state();
                state.core.transmitted(id, n, time);
                shared.dispatch(&mut state);
                written += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Budget spent: the socket is still writable, so the task comes back
    // after the others had their turn.
    Ok(())
}

/// The journal read `id` needs now, if any (a replay's next chunk, or the
/// older part of a retransmission reply): taken from the core, run on the
/// blocking pool with no lock held (file reads and checksum checks: the
/// other connections, the publishers and this runtime's workers go on
/// meanwhile, however long the disk takes), handed back.
async fn cold_read(id: ConnId, shared: &Shared) {
    let fetch = shared.state().core.take_cold_read(id);
    let Some(mut fetch) = fetch else {
        return;
    };
    let done = ::tokio::task::spawn_blocking(move || {
        fetch.read();
        fetch
    })
    .await;
    let mut state = shared.state();
    match done {
        Ok(fetch) => state.core.finish_cold_read(id, fetch, shared.time()),
        // The read panicked, or the runtime is shutting down: the replay
        // cannot go on.
        Err(_) => state.core.handle_failure(id, CloseReason::ReplayFailed),
    }
    shared.dispatch(&mut state);
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::encode::{encode, Payload, QuoteFields};
    use crate::io::FrameReader;
    use crate::parse::Event;
    use crate::session::cold::{ColdChunk, ColdError, ColdReader, ColdSource, VecCold};
    use crate::wire::Message;
    use crate::Sequencer;
    use std::boxed::Box;
    use std::io::Write as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Condvar;
    use std::vec::Vec;

    /// A cold source whose reads wait until the test opens its gate (a
    /// journal on a stalled disk).
    #[derive(Debug)]
    struct Gated {
        inner: VecCold,
        gate: Arc<(Mutex<bool>, Condvar)>,
        reads: Arc<AtomicUsize>,
    }

    #[derive(Debug)]
    struct GatedReader {
        inner: Box<dyn ColdReader>,
        gate: Arc<(Mutex<bool>, Condvar)>,
        reads: Arc<AtomicUsize>,
    }

    impl ColdSource for Gated {
        fn oldest(&self, session_id: u64) -> Option<u64> {
            self.inner.oldest(session_id)
        }

        fn open(&self, session_id: u64, from: u64) -> Result<Box<dyn ColdReader>, ColdError> {
            Ok(Box::new(GatedReader {
                inner: self.inner.open(session_id, from)?,
                gate: Arc::clone(&self.gate),
                reads: Arc::clone(&self.reads),
            }))
        }
    }

    impl ColdReader for GatedReader {
        fn read(
            &mut self,
            limit: u64,
            max_bytes: usize,
            buf: &mut Vec<u8>,
        ) -> Result<Option<ColdChunk>, ColdError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let (open, cv) = &*self.gate;
            let guard = open.lock().unwrap();
            let (guard, _) = cv
                .wait_timeout_while(guard, Duration::from_secs(20), |open| !*open)
                .unwrap();
            drop(guard);
            self.inner.read(limit, max_bytes, buf)
        }
    }

    fn login(addr: SocketAddr, from: u64) -> FrameReader<std::net::TcpStream> {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut frame = [0u8; 24];
        encode(&Payload::Login, from, 0, &mut frame).unwrap();
        stream.write_all(&frame).unwrap();
        FrameReader::new(stream)
    }

    /// The data sequences `reader` gets until `last` (panics on a read
    /// error or timeout: the test's bound).
    fn sequences_until(reader: &mut FrameReader<std::net::TcpStream>, last: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        while seen.last() != Some(&last) {
            match reader.next_event() {
                Ok(Some(Event::Frame(m))) if m.msg_type().is_data() => seen.push(m.sequence()),
                Ok(Some(Event::Frame(Message::EndOfSession(_))) | None) => {
                    panic!("ended after {:?}", seen.last())
                }
                Ok(Some(_)) => {}
                Err(e) => panic!("after {:?}: {e}", seen.last()),
            }
        }
        seen
    }

    /// A tokio server (on its own runtime) that published 1..=2,000 and
    /// retains the last 100; its "journal", a cold source holding them
    /// all, reads only once the test opens `gate` (`reads` counts the
    /// reads begun).
    struct Stalled {
        runtime: ::tokio::runtime::Runtime,
        server: ServerHandle,
        publisher: Publisher,
        gate: Arc<(Mutex<bool>, Condvar)>,
        reads: Arc<AtomicUsize>,
    }

    fn stalled() -> Stalled {
        let runtime = ::tokio::runtime::Builder::new_multi_thread()
            .worker_threads(3)
            .enable_all()
            .build()
            .unwrap();
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        };
        config.core.retain = 100;
        let server = runtime.block_on(async { Server::bind(config).await.unwrap().spawn() });
        let msgs: Vec<_> = (0..2_000u64)
            .map(|i| (1_000 + i, Payload::Quote(QuoteFields::default())))
            .collect();
        let mut bytes = vec![0u8; msgs.len() * 64];
        let done = Sequencer::new().encode_batch(&msgs, &mut bytes);
        bytes.truncate(done.bytes);
        let publisher = server.publisher();
        for chunk in msgs.chunks(100) {
            publisher.publish(chunk.to_vec()).unwrap();
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let reads = Arc::new(AtomicUsize::new(0));
        server.shared.state().core.set_cold(Some(Arc::new(Gated {
            inner: VecCold::new(bytes),
            gate: Arc::clone(&gate),
            reads: Arc::clone(&reads),
        })));
        Stalled {
            runtime,
            server,
            publisher,
            gate,
            reads,
        }
    }

    /// Until the stalled source's first read has begun.
    fn wait_for_the_read(reads: &AtomicUsize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while reads.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the journal was never read");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// With the read stalled: a live client logs in (the server then
    /// counts `clients`), a batch is published (the publisher is not held
    /// up) and reaches it.
    fn live_goes_on(server: &ServerHandle, publisher: &Publisher, clients: u64) {
        let mut live = login(server.local_addr(), 0);
        let started = Instant::now();
        while server.shared.state().core.stats().clients < clients {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the live login waits"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let extra: Vec<_> = (0..10u64)
            .map(|i| (9_000 + i, Payload::Quote(QuoteFields::default())))
            .collect();
        publisher.publish(extra).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the publisher waited for the stalled read"
        );
        assert_eq!(
            sequences_until(&mut live, 2_010),
            (2_001..=2_010).collect::<Vec<_>>()
        );
    }

    /// A retransmission request older than the retention whose reply's
    /// journal read stalls (as the replay's in the test below): the live
    /// client and the publisher go on; then the reply comes whole
    /// (LoginAccepted, the frames asked for, the Heartbeat after them).
    #[test]
    fn a_stalled_journal_read_of_a_retransmission_holds_up_nothing() {
        let Stalled {
            runtime,
            server,
            publisher,
            gate,
            reads,
        } = stalled();
        let addr = server.local_addr();
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = [0u8; 40];
        let n = encode(
            &Payload::Retransmit {
                session_id: server.session_id(),
                count: 500,
            },
            10,
            0,
            &mut request,
        )
        .unwrap();
        stream.write_all(&request[..n]).unwrap();
        let mut reply = FrameReader::new(stream);
        wait_for_the_read(&reads);
        live_goes_on(&server, &publisher, 1);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let mut got = Vec::new();
        loop {
            match reply.next_event().unwrap() {
                Some(Event::Frame(m)) => {
                    got.push((m.msg_type(), m.sequence()));
                    if matches!(m, Message::Heartbeat(_)) {
                        break;
                    }
                }
                Some(_) => {}
                None => panic!("closed after {got:?}"),
            }
        }
        let mut want = vec![(crate::wire::MsgType::LoginAccepted, 10)];
        want.extend((10..510).map(|s| (crate::wire::MsgType::Quote, s)));
        want.push((crate::wire::MsgType::Heartbeat, 510));
        assert_eq!(got, want);
        runtime.block_on(server.shutdown());
    }

    /// A replay reading the journal on a stalled disk (its read blocked
    /// for as long as the test likes) holds nothing the server shares: a
    /// live client still logs in and gets every published frame at once,
    /// the publisher is not held up, and the replay then completes, from
    /// the journal to the retention to live, no gap, no repeat.
    #[test]
    fn a_stalled_journal_read_holds_up_neither_the_live_clients_nor_the_publisher() {
        let Stalled {
            runtime,
            server,
            publisher,
            gate,
            reads,
        } = stalled();
        let addr = server.local_addr();

        let mut replaying = login(addr, 1);
        wait_for_the_read(&reads);
        // The replay's read is blocked now. A live client logs in, and a
        // batch published meanwhile reaches it.
        live_goes_on(&server, &publisher, 2);
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "still the one blocked read"
        );

        // The disk comes back: the replay completes.
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        assert_eq!(
            sequences_until(&mut replaying, 2_010),
            (1..=2_010).collect::<Vec<_>>()
        );
        runtime.block_on(server.shutdown());
    }
}
