//! [`ServerCore`]: every decision of a server that spans connections, over
//! one [`ServerSession`] per connection: the role quinn-proto's `Endpoint`
//! plays there. No socket, clock, thread or lock.
//!
//! The core owns the [`Retention`], each connection's parser and session
//! (behind a [`ConnId`]), admission and every limit (connections that have
//! not logged in, overall and per peer address; logged-in clients;
//! retransmission connections), fan-out of published batches, relay control
//! (holes, a new upstream session) and the shutdown drain. A driver (the
//! tokio server, a simulation, your own) only moves bytes and time:
//!
//! | when | call |
//! |------|------|
//! | a connection was accepted | [`accept`](ServerCore::accept) (read its bytes at once: see below) |
//! | bytes arrived on it | [`handle_input`](ServerCore::handle_input) (or [`input_buffer`](ServerCore::input_buffer) + [`input_committed`](ServerCore::input_committed)) |
//! | its peer closed, or reading or writing failed | [`handle_eof`](ServerCore::handle_eof), [`handle_failure`](ServerCore::handle_failure) |
//! | a batch was published | [`publish`](ServerCore::publish) |
//! | its socket can take bytes | [`poll_transmit`](ServerCore::poll_transmit), write, [`transmitted`](ServerCore::transmitted) |
//! | the time [`conn_timeout`](ServerCore::conn_timeout) named has come | [`handle_conn_timeout`](ServerCore::handle_conn_timeout), with the kernel's send-queue length |
//! | the time [`poll_timeout`](ServerCore::poll_timeout) named has come | [`handle_timeout`](ServerCore::handle_timeout) (admission), then [`poll_expired`](ServerCore::poll_expired) for each due connection |
//! | after any of these | [`poll_ready`](ServerCore::poll_ready) (who has bytes to write or must close), [`poll_event`](ServerCore::poll_event) (what to log) |
//! | a connection must close ([`close_reason`](ServerCore::close_reason) is `Some`) | close the socket, then [`release`](ServerCore::release) |
//!
//! **No silent loss.** Every published batch is handed to every session at
//! once ([`publish`](ServerCore::publish) is the fan-out); a session that
//! was not handed some batches catches up from the retention exactly as a
//! replay does. Only the slow-client rules skip data, and every skipped
//! frame is counted ([`CoreStats::skipped_frames`]) and reported to the
//! client as a gap; frames the retention dropped before a replay reached
//! them are counted too ([`CoreStats::replay_trimmed`]).
//!
//! **Admission reads first.** A new connection does not count against the
//! limits on connections that have not logged in
//! ([`CoreConfig::max_unauthenticated`],
//! [`CoreConfig::max_unauthenticated_per_peer`]) during
//! [`CoreConfig::admission_grace`]: a client whose Login is in flight, or
//! already in the kernel's buffer (the driver reads a connection's bytes as
//! soon as it is accepted), logs in without ever counting, so a burst of
//! real clients from one address is never displaced by the rule meant for
//! idle connections. After the grace, a connection that has still not
//! logged in enters the set, displacing the oldest one there past a limit;
//! at most `max_clients + max_unauthenticated` connections wait in the
//! grace at once (beyond it the oldest enters the set early: a burst of
//! real clients can be as large as the clients the server takes, and no
//! larger), so the connections that have not logged in are bounded by
//! `max_clients + 2 × max_unauthenticated`.
//!
//! ```
//! use core::time::Duration;
//! use std::sync::Arc;
//! use tickwire::session::{Batch, CoreConfig, ServerCore, Time};
//! use tickwire::{encode::QuoteFields, parse::{Event, SliceParser}, Payload, Sequencer};
//!
//! let t = Time::new(Duration::ZERO, 0);
//! let mut core = ServerCore::new(CoreConfig::new(42), t);
//! let conn = core.accept("127.0.0.1:40000".parse()?, t);
//! let mut login = [0u8; 24];
//! tickwire::encode(&Payload::Login, 0, 0, &mut login)?;
//! core.handle_input(conn, &login, t);
//!
//! let mut seq = Sequencer::new();
//! let mut bytes = vec![0u8; 2 * 44];
//! let done = seq.encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 2], &mut bytes);
//! bytes.truncate(done.bytes);
//! core.publish(Arc::new(Batch::new(bytes)?), t);
//!
//! // The driver writes what the core says, to whom it says.
//! let mut wire = Vec::new();
//! while let Some(ready) = core.poll_ready() {
//!     assert_eq!(ready, conn);
//!     while let Some(tx) = core.poll_transmit(ready, t) {
//!         let n = tx.len();
//!         tx.slices().for_each(|s| wire.extend_from_slice(s));
//!         core.transmitted(ready, n, t);
//!     }
//! }
//! let sequences: Vec<u64> = SliceParser::new(&wire)
//!     .filter_map(|e| match e { Event::Frame(m) => Some(m.sequence()), _ => None })
//!     .collect();
//! assert_eq!(sequences, [1, 1, 2]); // LoginAccepted, then the two quotes
//! assert_eq!(core.stats().clients, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::{BinaryHeap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use super::admission::{Admission, Limit};
use super::auth::{Identity, LockOut, LockOutConfig, Request, Verifier};
use super::retention::{Batch, Retention};
use super::server::{
    CloseReason, ServerEvent, ServerPhase, ServerSession, ServerSessionConfig, ServerSessionStats,
    Transmit,
};
use super::Time;
use crate::parse::{Discard, DiscardReason, Event, Parser};
use crate::sequence::SequenceTracker;
use crate::wire::{Message, RejectReason};

mod cold;

/// How long a [`shutdown`](ServerCore::shutdown) waits for connections to
/// take what they were sent (EndOfSession last) before it closes the rest:
/// 1 s.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// The most bytes a driver writes to one connection before it lets the
/// others have their turn (1 MiB): the same on every driver.
pub const WRITE_BUDGET: usize = 1 << 20;

/// Each connection's receive buffer: clients send only Logins, Heartbeats
/// and Retransmits (24 bytes each).
const INPUT_BUFFER: usize = 4096;

/// The server-wide rules. [`CoreConfig::new`] gives the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CoreConfig {
    /// The rules of each connection (its `session_id` is the server's).
    pub session: ServerSessionConfig,
    /// Data frames kept for replay (1,048,576).
    pub retain: usize,
    /// Logged-in clients beyond this many are closed at their Login with
    /// [`CloseReason::MaxClients`] (1,024).
    pub max_clients: usize,
    /// Retransmission connections (protocol section 9) beyond this many are
    /// closed at their first request with [`CloseReason::MaxClients`]
    /// (4,096); they do not take a client's place.
    pub max_retransmission_connections: usize,
    /// Connections that have not logged in, past their admission grace, at
    /// most (128; at least 1): a newer one displaces the oldest with
    /// [`CloseReason::UnauthenticatedLimit`].
    pub max_unauthenticated: usize,
    /// The same, per peer IP address (16; at least 1).
    pub max_unauthenticated_per_peer: usize,
    /// How long a new connection may take to log in before it counts
    /// against the two limits above (250 ms): see the [module docs](self).
    pub admission_grace: Duration,
    /// Failed authentications per address before its new connections are
    /// refused for a while (protocol section 11; with a verifier only, see
    /// [`ServerCore::set_verifier`]).
    pub lockout: LockOutConfig,
}

impl CoreConfig {
    /// The defaults, for `session_id`.
    ///
    /// ```
    /// let c = tickwire::session::CoreConfig::new(7);
    /// assert_eq!((c.session.session_id, c.max_clients), (7, 1024));
    /// ```
    #[must_use]
    pub const fn new(session_id: u64) -> CoreConfig {
        CoreConfig {
            session: ServerSessionConfig::new(session_id),
            retain: 1 << 20,
            max_clients: 1024,
            max_retransmission_connections: 4096,
            max_unauthenticated: 128,
            max_unauthenticated_per_peer: 16,
            admission_grace: Duration::from_millis(250),
            lockout: LockOutConfig::DEFAULT,
        }
    }
}

/// A connection of a [`ServerCore`]: an index (reused after
/// [`release`](ServerCore::release)) and a generation telling reuses apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// The dense index (below the most connections ever open at once), for
    /// a driver's own table of sockets.
    ///
    /// ```
    /// use core::time::Duration;
    /// use tickwire::session::{CoreConfig, ServerCore, Time};
    /// let t = Time::new(Duration::ZERO, 0);
    /// let mut core = ServerCore::new(CoreConfig::new(1), t);
    /// assert_eq!(core.accept("127.0.0.1:40000".parse().unwrap(), t).index(), 0);
    /// ```
    #[must_use]
    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

/// What a connection counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Not logged in, within its admission grace: counts against nothing.
    Fresh,
    /// Not logged in, in the admission set.
    Pending,
    /// Logged in (one of `max_clients`).
    Client,
    /// A retransmission connection.
    Retransmission,
}

/// Where a connection is with its credentials (protocol section 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthStep {
    /// The server requires none (an Auth first is ignored).
    Open,
    /// The first frame must be an Auth.
    Awaiting,
    /// Its Auth was valid: the Login or Retransmit that follows is checked.
    Authenticated(Identity),
}

#[derive(Debug)]
struct Conn {
    session: ServerSession,
    parser: Parser<Box<[u8]>>,
    peer: SocketAddr,
    generation: u32,
    role: Role,
    auth: AuthStep,
    /// The timer entry in the heap that counts, if any.
    scheduled: Option<Duration>,
    /// In the ready queue.
    ready: bool,
    /// Closed, not yet released by the driver.
    closed: Option<CloseReason>,
}

/// Something worth logging or counting, about one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreEvent {
    /// What its session reported (a login, a slow mark, a retransmission…).
    Session {
        /// The connection.
        conn: ConnId,
        /// Its peer address.
        peer: SocketAddr,
        /// The event.
        event: ServerEvent,
    },
    /// It was closed (the driver closes the socket and releases it).
    Closed {
        /// The connection.
        conn: ConnId,
        /// Its peer address.
        peer: SocketAddr,
        /// Why.
        reason: CloseReason,
    },
}

/// The core's counters (totals since it was made, and levels now).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CoreStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now (not closed).
    pub open: u64,
    /// Of those, logged-in clients.
    pub clients: u64,
    /// Of those, retransmission connections.
    pub retransmission_connections: u64,
    /// Of those, connections in the admission set (not logged in, past
    /// their grace).
    pub unauthenticated: u64,
    /// Connections not logged in and still within their admission grace.
    pub in_grace: u64,
    /// Data frames published.
    pub frames_published: u64,
    /// Data frames queued to clients (replay included).
    pub frames_sent: u64,
    /// Bytes the driver reported written.
    pub bytes_sent: u64,
    /// Of those, bytes of file ranges (sent with `sendfile`: see
    /// [`ServerCore::set_file_ranges`]).
    pub file_bytes_sent: u64,
    /// Times a client was marked slow.
    pub slow_marks: u64,
    /// Batches slow clients were skipped for.
    pub skipped_batches: u64,
    /// Data frames slow clients were skipped for (each one a gap its client
    /// was told of).
    pub skipped_frames: u64,
    /// Frames replays could not send because the retention dropped them first.
    pub replay_trimmed: u64,
    /// Connections displaced by the per-peer limit on connections that
    /// have not logged in.
    pub displaced_per_peer: u64,
    /// Connections displaced by the overall limit.
    pub displaced_overall: u64,
    /// The most bytes ever queued for one connection.
    pub peak_queue: u64,
    /// Connections that presented valid credentials (protocol section 11).
    pub authenticated: u64,
    /// Failed authentications (Rejected with reason 2).
    pub auth_failures: u64,
    /// Connections refused a request their credentials do not permit
    /// (Rejected with reason 3).
    pub not_permitted: u64,
    /// Connections closed, by [`CloseReason::index`].
    pub closed: [u64; CloseReason::ALL.len()],
}

impl CoreStats {
    fn add_session(&mut self, s: &ServerSessionStats) {
        self.frames_sent += s.frames_queued;
        self.bytes_sent += s.bytes_sent;
        self.file_bytes_sent += s.file_bytes_sent;
        self.slow_marks += s.slow_marks;
        self.skipped_batches += s.skipped_batches;
        self.skipped_frames += s.skipped_frames;
        self.replay_trimmed += s.replay_trimmed;
    }

    /// Connections closed for `reason`.
    ///
    /// ```
    /// let stats = tickwire::session::CoreStats::default();
    /// assert_eq!(stats.closed_for(tickwire::session::CloseReason::Slow), 0);
    /// ```
    #[must_use]
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed.get(reason.index()).copied().unwrap_or(0)
    }
}

/// Every server decision that spans connections. See the [module docs](self).
pub struct ServerCore {
    config: CoreConfig,
    retention: Retention,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    generations: u32,
    admission: Admission,
    /// Connections within their admission grace, by when it ends (in
    /// accept order, so in deadline order).
    fresh: VecDeque<(Duration, ConnId)>,
    /// Connections' deadlines: (when, index, generation).
    timers: BinaryHeap<Reverse<(Duration, u32, u32)>>,
    /// Connections with bytes to write or a close to act on.
    ready: VecDeque<ConnId>,
    events: VecDeque<CoreEvent>,
    stats: CoreStats,
    shutting_down: bool,
    /// When a shutdown stops waiting for connections to drain.
    drain_deadline: Option<Duration>,
    /// Logged-in clients other cores hold (a driver with several event
    /// loops): they count against `max_clients` too.
    clients_elsewhere: u64,
    /// Checks credentials, when the server requires them.
    verifier: Option<Arc<dyn Verifier>>,
    lockout: LockOut,
}

impl fmt::Debug for ServerCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCore")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .field("requires_auth", &self.verifier.is_some())
            .finish_non_exhaustive()
    }
}

/// A logged-in connection taken out of one core to be attached to another
/// (a driver with several event loops hands each login to one of them):
/// its session and parser as they are, its peer. Dropping it without
/// attaching it counts as nothing: the source core closed it already as
/// [`CloseReason::Shutdown`] if [`attach`](ServerCore::attach) fails.
#[derive(Debug)]
pub struct Detached {
    session: ServerSession,
    parser: Parser<Box<[u8]>>,
    peer: SocketAddr,
    role: Role,
}

impl Detached {
    /// Its peer address.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use tickwire::session::{CoreConfig, ServerCore, Time};
    /// let t = Time::new(Duration::ZERO, 0);
    /// let mut core = ServerCore::new(CoreConfig::new(1), t);
    /// let conn = core.accept("127.0.0.1:40000".parse().unwrap(), t);
    /// assert!(core.detach(conn).is_none()); // not logged in: stays
    /// ```
    #[must_use]
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl ServerCore {
    /// A core with an empty retention, at `time`.
    #[must_use]
    pub fn new(config: CoreConfig, time: Time) -> ServerCore {
        let _ = time;
        ServerCore {
            retention: Retention::new(config.retain),
            admission: Admission::new(
                config.max_unauthenticated,
                config.max_unauthenticated_per_peer,
            ),
            config,
            conns: Vec::new(),
            free: Vec::new(),
            generations: 0,
            fresh: VecDeque::new(),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            events: VecDeque::new(),
            stats: CoreStats::default(),
            shutting_down: false,
            drain_deadline: None,
            clients_elsewhere: 0,
            verifier: None,
            lockout: LockOut::new(config.lockout),
        }
    }

    /// Requires every new connection to authenticate first (protocol
    /// section 11) with `verifier`; `None`: no authentication (an Auth sent
    /// first is then ignored, as the protocol says). Applies to connections
    /// accepted from now on. See [`auth`](super::auth) for the rules.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tickwire::session::auth::Credentials;
    /// use tickwire::session::{CoreConfig, ServerCore, Time};
    /// let mut core = ServerCore::new(CoreConfig::new(7), Time::default());
    /// core.set_verifier(Some(Arc::new(Credentials::default())));
    /// assert!(core.requires_auth());
    /// ```
    pub fn set_verifier(&mut self, verifier: Option<Arc<dyn Verifier>>) {
        self.verifier = verifier;
    }

    /// Whether new connections must authenticate.
    #[must_use]
    pub fn requires_auth(&self) -> bool {
        self.verifier.is_some()
    }

    /// Connections refused at their accept because their address was
    /// locked out, and addresses with failures tracked now.
    #[must_use]
    pub fn lockout_stats(&self) -> (u64, usize) {
        (self.lockout.refused(), self.lockout.tracked())
    }

    /// Logged-in clients that other cores of the same server hold now: the
    /// limit [`CoreConfig::max_clients`] counts them too (a driver with
    /// several event loops sets it before each turn).
    pub fn set_clients_elsewhere(&mut self, clients: u64) {
        self.clients_elsewhere = clients;
    }

    /// Whether any connection is replaying (catching up from the
    /// retention).
    #[must_use]
    pub fn any_replaying(&self) -> bool {
        self.conns
            .iter()
            .flatten()
            .any(|c| c.closed.is_none() && c.session.phase() == ServerPhase::Replaying)
    }

    /// Whether any logged-in subscriber (not a retransmission connection)
    /// is connected: replaying, live, or closing.
    #[must_use]
    pub fn has_subscribers(&self) -> bool {
        self.conns.iter().flatten().any(|c| {
            c.closed.is_none()
                && matches!(
                    c.session.phase(),
                    ServerPhase::Replaying | ServerPhase::Live | ServerPhase::Closing
                )
        })
    }

    /// Takes a logged-in connection (a client or a retransmission
    /// connection, not closing) out of this core, for another core of the
    /// same server to [`attach`](Self::attach); `None` (and nothing
    /// changes) for any other. The driver then moves its socket too;
    /// `id` is released here.
    pub fn detach(&mut self, id: ConnId) -> Option<Detached> {
        let conn = self.conn(id)?;
        if conn.closed.is_some() || !matches!(conn.role, Role::Client | Role::Retransmission) {
            return None;
        }
        let conn = self.conns.get_mut(id.index()).and_then(Option::take)?;
        self.free.push(id.index);
        self.stats.open = self.stats.open.saturating_sub(1);
        match conn.role {
            Role::Client => self.stats.clients = self.stats.clients.saturating_sub(1),
            _ => {
                self.stats.retransmission_connections =
                    self.stats.retransmission_connections.saturating_sub(1);
            }
        }
        let mut session = conn.session;
        let stats = session.take_stats();
        self.stats.add_session(&stats);
        Some(Detached {
            session,
            parser: conn.parser,
            peer: conn.peer,
            role: conn.role,
        })
    }

    /// A connection [`detach`](Self::detach)ed from another core of the
    /// same server (whose retention was where this one's is now when it
    /// was detached): it goes on here as it was.
    pub fn attach(&mut self, detached: Detached, time: Time) -> ConnId {
        let _ = time;
        self.stats.open += 1;
        match detached.role {
            Role::Client => self.stats.clients += 1,
            _ => self.stats.retransmission_connections += 1,
        }
        let id = self.new_id();
        let conn = Conn {
            session: detached.session,
            parser: detached.parser,
            peer: detached.peer,
            generation: id.generation,
            role: detached.role,
            auth: AuthStep::Open, // detached after its login: checked already
            scheduled: None,
            ready: false,
            closed: None,
        };
        if let Some(place) = self.conns.get_mut(id.index()) {
            *place = Some(conn);
        }
        self.settle(id);
        self.mark_ready(id);
        id
    }

    fn new_id(&mut self) -> ConnId {
        self.generations = self.generations.wrapping_add(1);
        let generation = self.generations;
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.conns.push(None);
                u32::try_from(self.conns.len() - 1).unwrap_or(u32::MAX)
            }
        };
        ConnId { index, generation }
    }

    /// The rules.
    #[must_use]
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The session id served now (a relay's follows its upstream's).
    #[must_use]
    pub fn session_id(&self) -> u64 {
        self.config.session.session_id
    }

    /// The retained frames.
    #[must_use]
    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// The counters now.
    #[must_use]
    pub fn stats(&self) -> CoreStats {
        let mut stats = self.stats;
        stats.unauthenticated = self.admission.len() as u64;
        stats.in_grace = self.fresh.len() as u64;
        stats
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns
            .get(id.index())
            .and_then(Option::as_ref)
            .filter(|c| c.generation == id.generation)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .filter(|c| c.generation == id.generation)
    }

    /// A new connection from `peer`. The driver then reads whatever it has
    /// sent already and hands it to [`handle_input`](Self::handle_input)
    /// before waiting for anything else: a client that sent its Login with
    /// the connection never counts against the admission limits.
    pub fn accept(&mut self, peer: SocketAddr, time: Time) -> ConnId {
        self.stats.accepted += 1;
        self.stats.open += 1;
        let id = self.new_id();
        let generation = id.generation;
        let mut session = ServerSession::new(self.config.session, time);
        if self.shutting_down {
            session.shutdown(time, &self.retention);
        }
        let conn = Conn {
            session,
            parser: Parser::owned_at_least(INPUT_BUFFER, SequenceTracker::new()),
            peer,
            generation,
            role: Role::Fresh,
            auth: if self.verifier.is_some() {
                AuthStep::Awaiting
            } else {
                AuthStep::Open
            },
            scheduled: None,
            ready: false,
            closed: None,
        };
        if let Some(place) = self.conns.get_mut(id.index()) {
            *place = Some(conn);
        }
        self.fresh.push_back((
            time.monotonic.saturating_add(self.config.admission_grace),
            id,
        ));
        // At most `max_clients + max_unauthenticated` wait in the grace (a
        // burst of real clients can be as large as the clients the server
        // takes): the oldest beyond it counts from now on.
        let cap = self
            .config
            .max_clients
            .saturating_add(self.config.max_unauthenticated)
            .max(1);
        while self.fresh.len() > cap {
            if let Some((_, oldest)) = self.fresh.pop_front() {
                self.enter_admission(oldest);
            }
        }
        if self.verifier.is_some() && self.lockout.is_locked(peer.ip(), time.monotonic) {
            // Section 11: closed without reading or writing.
            self.lockout.count_refused();
            self.close(id, CloseReason::LockedOut);
            return id;
        }
        self.settle(id);
        id
    }

    /// A connection leaves its grace without having logged in: it counts
    /// against the limits now, displacing the oldest one past a limit.
    fn enter_admission(&mut self, id: ConnId) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if conn.role != Role::Fresh || conn.closed.is_some() {
            return;
        }
        conn.role = Role::Pending;
        let peer = conn.peer.ip();
        if let Some(evicted) = self.admission.admit(id.index(), peer) {
            match evicted.limit {
                Limit::PerPeer => self.stats.displaced_per_peer += 1,
                Limit::Overall => self.stats.displaced_overall += 1,
            }
            let victim = self
                .conns
                .get(evicted.key)
                .and_then(Option::as_ref)
                .map(|c| ConnId {
                    index: u32::try_from(evicted.key).unwrap_or(u32::MAX),
                    generation: c.generation,
                });
            if let Some(victim) = victim {
                if let Some(conn) = self.conn_mut(victim) {
                    conn.role = Role::Fresh; // out of the set already
                }
                self.close(victim, CloseReason::UnauthenticatedLimit);
            }
        }
    }

    /// The connection's receive buffer, to read into directly; then call
    /// [`input_committed`](Self::input_committed). `None` for an unknown
    /// or closed connection.
    pub fn input_buffer(&mut self, id: ConnId) -> Option<&mut [u8]> {
        let conn = self.conn_mut(id)?;
        if conn.closed.is_some() {
            return None;
        }
        Some(conn.parser.spare())
    }

    /// `n` bytes were read into [`input_buffer`](Self::input_buffer): their
    /// frames go to the connection's session. Bytes that are not frames
    /// close it at once ([`CloseReason::BadData`]), even before the parser
    /// has reported the whole run they belong to; so does a full buffer.
    pub fn input_committed(&mut self, id: ConnId, n: usize, time: Time) {
        let retention = &self.retention;
        let verifier = self.verifier.as_deref();
        let Some(conn) = open_conn(&mut self.conns, id) else {
            return;
        };
        if conn.session.phase() == ServerPhase::Rejected {
            // Drained, never acted on (section 11).
            let _ = conn.parser.commit(n);
            conn.parser.consume(usize::MAX);
            conn.session.discard_input(n);
        } else if conn.parser.commit(n).is_err() {
            conn.session
                .handle_event(&garbage(n as u64), time, retention);
        } else {
            if let (AuthStep::Awaiting, Some(verifier)) = (conn.auth, verifier) {
                match check_auth(conn, verifier, time, retention) {
                    Gate::Wait => {}
                    Gate::Passed(identity) => {
                        self.stats.authenticated += 1;
                        self.events.push_back(CoreEvent::Session {
                            conn: id,
                            peer: conn.peer,
                            event: ServerEvent::Authenticated {
                                key_id: identity.key_id,
                            },
                        });
                    }
                    Gate::Failed => {
                        self.stats.auth_failures += 1;
                        self.lockout.failed(conn.peer.ip(), time.monotonic);
                    }
                    Gate::NotAuth => {}
                }
                if conn.session.phase() == ServerPhase::Rejected {
                    // Nothing after the rejected frame is parsed: the rest
                    // is drained, and the buffer is free for what follows.
                    let rest = conn.parser.buffered();
                    conn.parser.consume(rest);
                    conn.session.discard_input(rest);
                }
            }
            let session = &mut conn.session;
            match (conn.auth, verifier) {
                (AuthStep::Authenticated(identity), Some(verifier))
                    if session.phase() == ServerPhase::AwaitingLogin =>
                {
                    // The request that follows a valid Auth is authorized.
                    let mut refused = false;
                    conn.parser.drain(|event| {
                        let request = match &event {
                            Event::Frame(Message::Login(_)) => Some(Request::Subscribe),
                            Event::Frame(Message::Retransmit(_)) => Some(Request::Retransmit),
                            _ => None,
                        };
                        let awaiting = session.phase() == ServerPhase::AwaitingLogin;
                        match request {
                            Some(r) if awaiting && !verifier.authorize(&identity, r) => {
                                refused = true;
                                session.reject(RejectReason::NotPermitted, time);
                            }
                            _ => session.handle_event(&event, time, retention),
                        }
                    });
                    if refused {
                        self.stats.not_permitted += 1;
                    }
                }
                (AuthStep::Awaiting, _) => {} // nothing is parsed before the Auth
                _ => conn
                    .parser
                    .drain(|event| session.handle_event(&event, time, retention)),
            }
            let discarded = conn.parser.stats().discarded_bytes;
            if discarded > 0 {
                conn.session
                    .handle_event(&garbage(discarded), time, retention);
            } else if conn.parser.spare().is_empty() {
                // Every event is drained after each read: a full buffer
                // holds something that is not a frame.
                conn.session
                    .handle_event(&garbage(conn.parser.buffered() as u64), time, retention);
            }
        }
        self.settle(id);
    }

    /// Bytes the connection's peer sent (copied into its buffer; see
    /// [`input_committed`](Self::input_committed) for the rules).
    pub fn handle_input(&mut self, id: ConnId, mut bytes: &[u8], time: Time) {
        while !bytes.is_empty() {
            let Some(spare) = self.input_buffer(id) else {
                return;
            };
            let n = spare.len().min(bytes.len());
            let (now, rest) = bytes.split_at(n);
            if let Some(place) = spare.get_mut(..n) {
                place.copy_from_slice(now);
            }
            bytes = rest;
            self.input_committed(id, n, time);
        }
    }

    /// The peer closed its side: what it sent before is handled, then the
    /// connection closes ([`CloseReason::PeerClosed`], unless its session
    /// had another reason).
    pub fn handle_eof(&mut self, id: ConnId, time: Time) {
        let retention = &self.retention;
        if let Some(conn) = open_conn(&mut self.conns, id) {
            if conn.session.phase() == ServerPhase::Rejected {
                // Closed once its Rejected is written (section 11).
                conn.session.handle_peer_closed();
                self.settle(id);
                return;
            }
            conn.parser.finish();
            let session = &mut conn.session;
            if conn.auth != AuthStep::Awaiting {
                conn.parser
                    .drain(|event| session.handle_event(&event, time, retention));
            } // else its first frame is incomplete: no Rejected (section 11)
        }
        self.settle(id);
        self.close(id, CloseReason::PeerClosed);
    }

    /// Reading or writing failed (`reason`: [`CloseReason::PeerClosed`]
    /// when the peer went away, [`CloseReason::IoError`] otherwise).
    pub fn handle_failure(&mut self, id: ConnId, reason: CloseReason) {
        self.close(id, reason);
    }

    /// A published batch: into the retention, then to every session (the
    /// fan-out: shared, not copied). Connections that got bytes to write
    /// come out of [`poll_ready`](Self::poll_ready).
    pub fn publish(&mut self, batch: Arc<Batch>, time: Time) {
        self.stats.frames_published += batch.frames();
        self.retention.push(Arc::clone(&batch));
        for index in 0..self.conns.len() {
            let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            if conn.closed.is_some() {
                continue;
            }
            let before = conn.session.queued();
            let last_queued = conn.session.last_queued();
            conn.session.handle_published(&batch, time);
            let queued = conn.session.queued();
            if queued > before
                && conn.role == Role::Client
                && conn.session.phase() == ServerPhase::Live
                && !conn.session.has_events()
            {
                // The common case, the batch queued to a live client: what
                // `settle` does then (counters, timer, ready queue), without
                // looking the connection up again.
                let stats = conn.session.take_stats();
                // Queued behind bytes already waiting, at a time not before
                // the last: its deadline only moved later (the next
                // Heartbeat; the backlog and progress checks were set when
                // those bytes were queued), so an armed timer stays right.
                let later = before > 0 && time.monotonic >= last_queued;
                if let (true, Some(s)) = (later, conn.scheduled) {
                    debug_assert!(conn.session.poll_timeout().is_none_or(|at| at >= s));
                } else if let Some(at) = conn.session.poll_timeout() {
                    if conn.scheduled.is_none_or(|s| at < s) {
                        conn.scheduled = Some(at);
                        let index = u32::try_from(index).unwrap_or(u32::MAX);
                        self.timers.push(Reverse((at, index, conn.generation)));
                    }
                }
                self.stats.add_session(&stats);
                self.stats.peak_queue = self.stats.peak_queue.max(queued as u64);
                if !conn.ready {
                    conn.ready = true;
                    self.ready.push_back(ConnId {
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        generation: conn.generation,
                    });
                }
                continue;
            }
            let changed = queued != before
                || conn.session.phase() == ServerPhase::Replaying
                || conn.session.poll_close().is_some()
                || conn.session.has_events();
            if changed {
                let id = ConnId {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    generation: conn.generation,
                };
                self.settle(id);
            }
        }
    }

    /// The next data sequence: what the next published batch starts with.
    #[must_use]
    pub fn next_sequence(&self) -> u64 {
        self.retention.next()
    }

    /// Continues a session at sequence `next` (its frames before `next`
    /// were published by an earlier run: a server restarted on its
    /// journal, issue 24): the retention is emptied and its next live
    /// sequence is `next`. Call before any connection logs in.
    pub fn continue_at(&mut self, next: u64) {
        self.retention.reset(next);
    }

    /// Frames older than the retention's are read from `cold` (the
    /// journal; see [`cold`](super::cold)), for replays and retransmission
    /// replies; `None`: what the retention dropped is gone (the default).
    pub fn set_cold(&mut self, cold: Option<Arc<dyn super::cold::ColdSource>>) {
        self.retention.set_cold(cold);
    }

    /// A relay's upstream said that sequences before `next` that were not
    /// published never will be (a hole): Heartbeats carry it from now on.
    pub fn advance(&mut self, next: u64) {
        self.retention.advance(next);
    }

    /// A relay's upstream is lost (`false`) or back: while lost, no idle
    /// Heartbeats (protocol section 10.3).
    pub fn set_upstream_alive(&mut self, alive: bool) {
        self.retention.set_upstream_alive(alive);
    }

    /// A relay's upstream started a new session: EndOfSession to every
    /// client (they close once it is written), then `session_id` is served
    /// from `next`, with an empty retention.
    pub fn new_session(&mut self, session_id: u64, next: u64, time: Time) {
        self.end_sessions(time);
        self.config.session.session_id = session_id;
        self.retention.reset(next);
    }

    /// Graceful shutdown: EndOfSession to every logged-in client (each
    /// closes once it is written), connections that have not logged in
    /// close at once, and so do those accepted from now on. The driver
    /// keeps writing (and calling [`handle_timeout`](Self::handle_timeout)
    /// when [`poll_timeout`](Self::poll_timeout) says) until
    /// [`is_drained`](Self::is_drained): [`SHUTDOWN_DRAIN`] after this call
    /// the core closes whatever is still open.
    ///
    /// ```
    /// use core::time::Duration;
    /// use tickwire::session::{CloseReason, CoreConfig, ServerCore, Time, SHUTDOWN_DRAIN};
    /// use tickwire::Payload;
    /// let t = Time::new(Duration::ZERO, 0);
    /// let mut core = ServerCore::new(CoreConfig::new(1), t);
    /// let c = core.accept("127.0.0.1:40000".parse()?, t);
    /// let mut login = [0u8; 24];
    /// tickwire::encode(&Payload::Login, 0, 0, &mut login)?;
    /// core.handle_input(c, &login, t);
    /// core.shutdown(t); // the client never reads its EndOfSession
    /// assert_eq!(core.poll_timeout(), Some(SHUTDOWN_DRAIN));
    /// core.handle_timeout(Time::new(SHUTDOWN_DRAIN, 0));
    /// assert!(core.is_drained());
    /// assert_eq!(core.close_reason(c), Some(CloseReason::Shutdown));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(&mut self, time: Time) {
        self.shutting_down = true;
        if self.drain_deadline.is_none() {
            self.drain_deadline = Some(time.monotonic.saturating_add(SHUTDOWN_DRAIN));
        }
        self.end_sessions(time);
    }

    /// Graceful shutdown that does **not** end the session: a server whose
    /// journal continues the session at its next start (issue 24). Each
    /// logged-in client is written what is queued for it and closed
    /// ([`CloseReason::Shutdown`]) without EndOfSession, so it reconnects
    /// and resumes with no gap; otherwise as [`shutdown`](Self::shutdown).
    ///
    /// ```
    /// use core::time::Duration;
    /// use tickwire::parse::{Event, SliceParser};
    /// use tickwire::session::{CloseReason, CoreConfig, ServerCore, Time};
    /// use tickwire::{Message, Payload};
    /// let t = Time::new(Duration::ZERO, 0);
    /// let mut core = ServerCore::new(CoreConfig::new(1), t);
    /// let c = core.accept("127.0.0.1:40000".parse()?, t);
    /// let mut login = [0u8; 24];
    /// tickwire::encode(&Payload::Login, 0, 0, &mut login)?;
    /// core.handle_input(c, &login, t);
    /// core.shutdown_keeping_session(t);
    /// let mut wire = Vec::new();
    /// while let Some(tx) = core.poll_transmit(c, t) {
    ///     let n = tx.len();
    ///     tx.slices().for_each(|s| wire.extend_from_slice(s));
    ///     core.transmitted(c, n, t);
    /// }
    /// // LoginAccepted (32 bytes) only: no EndOfSession.
    /// assert_eq!(wire.len(), 32);
    /// assert!(!SliceParser::new(&wire).any(|e| matches!(e, Event::Frame(Message::EndOfSession(_)))));
    /// assert_eq!(core.close_reason(c), Some(CloseReason::Shutdown));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown_keeping_session(&mut self, time: Time) {
        self.shutting_down = true;
        if self.drain_deadline.is_none() {
            self.drain_deadline = Some(time.monotonic.saturating_add(SHUTDOWN_DRAIN));
        }
        for index in 0..self.conns.len() {
            let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            if conn.closed.is_some() {
                continue;
            }
            conn.session.stop_keeping_session();
            let id = ConnId {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                generation: conn.generation,
            };
            self.settle(id);
        }
    }

    fn end_sessions(&mut self, time: Time) {
        for index in 0..self.conns.len() {
            let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            if conn.closed.is_some() {
                continue;
            }
            conn.session.shutdown(time, &self.retention);
            let id = ConnId {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                generation: conn.generation,
            };
            self.settle(id);
        }
    }

    /// No connection is open any more (all closed; the driver may still
    /// have to release some).
    #[must_use]
    pub fn is_drained(&self) -> bool {
        self.stats.open == 0
    }

    /// What to write next on `id`, or `None` when it has nothing to write
    /// (or is closed). Write what the socket takes of
    /// [`Transmit::slices`] (or send the [`Transmit::file`] range at the
    /// front, on a connection [`set_file_ranges`](Self::set_file_ranges)),
    /// then call [`transmitted`](Self::transmitted).
    pub fn poll_transmit(&mut self, id: ConnId, time: Time) -> Option<Transmit<'_>> {
        let retention = &self.retention;
        let timers = &mut self.timers;
        let conn = open_conn(&mut self.conns, id)?;
        let before = conn.session.queued();
        if conn.session.refill_replay(time, retention) {
            // Its replay failed (the journal): the frames read before go
            // out, then it closes (at once if there are none).
            self.settle(id);
        } else if conn.session.queued() != before {
            // A replay refilled its queue, which can bring its next check
            // closer (bytes now wait): its timer first.
            if let Some(at) = conn.session.poll_timeout() {
                if conn.scheduled.is_none_or(|s| at < s) {
                    conn.scheduled = Some(at);
                    timers.push(Reverse((at, id.index, id.generation)));
                }
            }
        }
        let retention = &self.retention;
        let conn = open_conn(&mut self.conns, id)?;
        conn.session.poll_transmit(time, retention)
    }

    /// The driver wrote the first `n` bytes of the last
    /// [`poll_transmit`](Self::poll_transmit) on `id`.
    ///
    /// Writing changes nothing else a driver acts on (no event, no new
    /// bytes), but for the end of a graceful close (its EndOfSession
    /// written: it comes out of [`poll_ready`](Self::poll_ready) to be
    /// closed): `id` is not put back in the ready queue for having written
    /// (the driver that wrote knows whether it stopped for want of room or
    /// of budget); its counters and its deadline are kept up.
    pub fn transmitted(&mut self, id: ConnId, n: usize, time: Time) {
        let timers = &mut self.timers;
        let Some(conn) = self
            .conns
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .filter(|c| c.generation == id.generation)
        else {
            return;
        };
        conn.session.transmitted(n, time);
        if conn.session.poll_close().is_some() {
            // The last of a graceful close (EndOfSession) went out.
            self.settle(id);
            return;
        }
        let stats = conn.session.take_stats();
        // A write at a time not before the last bytes were queued moves no
        // deadline earlier (the backlog check goes with an emptied queue;
        // bytes now owed are checked a heartbeat interval from now, not
        // before the next Heartbeat is due): an armed timer stays right.
        let later = time.monotonic >= conn.session.last_queued();
        if let (true, Some(s)) = (later, conn.scheduled) {
            debug_assert!(conn.session.poll_timeout().is_none_or(|at| at >= s));
        } else if let Some(at) = conn.session.poll_timeout() {
            if conn.scheduled.is_none_or(|s| at < s) {
                conn.scheduled = Some(at);
                timers.push(Reverse((at, id.index, id.generation)));
            }
        }
        self.stats.add_session(&stats);
    }

    /// Whether `id` has bytes to write now (queued, or a replay to pull).
    #[must_use]
    pub fn wants_write(&self, id: ConnId) -> bool {
        self.conn(id).is_some_and(|c| {
            c.closed.is_none()
                && (c.session.queued() > 0 || c.session.phase() == ServerPhase::Replaying)
        })
    }

    /// Where `id` is (`None` once released).
    #[must_use]
    pub fn phase(&self, id: ConnId) -> Option<ServerPhase> {
        self.conn(id).map(|c| c.session.phase())
    }

    /// Its peer address.
    #[must_use]
    pub fn peer(&self, id: ConnId) -> Option<SocketAddr> {
        self.conn(id).map(|c| c.peer)
    }

    /// `Some(reason)` once `id` must be closed (and for an unknown one:
    /// [`CloseReason::Shutdown`]): the driver closes the socket (after the
    /// bytes it wrote, which for a graceful close end with EndOfSession)
    /// and calls [`release`](Self::release).
    #[must_use]
    pub fn close_reason(&self, id: ConnId) -> Option<CloseReason> {
        match self.conn(id) {
            Some(conn) => conn.closed,
            None => Some(CloseReason::Shutdown),
        }
    }

    /// The driver closed `id`'s socket: its index may be reused.
    pub fn release(&mut self, id: ConnId) {
        if self.conn(id).is_none() {
            return;
        }
        self.close(id, CloseReason::IoError); // a no-op if closed already
        if let Some(place) = self.conns.get_mut(id.index()) {
            *place = None;
            self.free.push(id.index);
        }
    }

    /// When [`handle_conn_timeout`](Self::handle_conn_timeout) must be
    /// called for `id` next.
    #[must_use]
    pub fn conn_timeout(&self, id: ConnId) -> Option<Duration> {
        self.conn(id)
            .filter(|c| c.closed.is_none())
            .and_then(|c| c.session.poll_timeout())
    }

    /// `id`'s deadline came, with the bytes in the kernel's send queue of
    /// its socket (0 where unknown): login timeout, heartbeats, the
    /// slow-client and no-progress rules.
    pub fn handle_conn_timeout(&mut self, id: ConnId, time: Time, kernel_backlog: usize) {
        let retention = &self.retention;
        if let Some(conn) = open_conn(&mut self.conns, id) {
            conn.session.handle_timeout(time, retention, kernel_backlog);
        }
        self.settle(id);
    }

    /// The earliest deadline of the core: a connection's (see
    /// [`poll_expired`](Self::poll_expired)) or the end of an admission
    /// grace (see [`handle_timeout`](Self::handle_timeout)). Exact: entries
    /// whose connection's deadline moved later since (a backlog check
    /// scheduled while a batch waited, written since) move with it first,
    /// so a driver never wakes early for nothing (a publisher writing to a
    /// sleeping loop's clients wakes it only for a real deadline).
    pub fn poll_timeout(&mut self) -> Option<Duration> {
        while let Some(&Reverse((at, index, generation))) = self.timers.peek() {
            let id = ConnId { index, generation };
            let Some(conn) = self
                .conns
                .get_mut(id.index())
                .and_then(Option::as_mut)
                .filter(|c| c.generation == generation && c.closed.is_none())
            else {
                self.timers.pop(); // gone
                continue;
            };
            if conn.scheduled != Some(at) {
                self.timers.pop(); // superseded
                continue;
            }
            match conn.session.poll_timeout() {
                Some(later) if later > at => {
                    self.timers.pop();
                    conn.scheduled = Some(later);
                    self.timers.push(Reverse((later, index, generation)));
                }
                None => {
                    self.timers.pop();
                    conn.scheduled = None;
                }
                Some(_) => break,
            }
        }
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        let grace = self.fresh.front().map(|(at, _)| *at);
        let drain = self.drain_deadline.filter(|_| !self.is_drained());
        [timer, grace, drain].into_iter().flatten().min()
    }

    /// The admission graces that ended by `time`: those connections count
    /// against the limits from now on (displacing older ones past a limit).
    /// After a [`shutdown`](Self::shutdown), once [`SHUTDOWN_DRAIN`] has
    /// passed, every connection still open is closed
    /// ([`CloseReason::Shutdown`]).
    pub fn handle_timeout(&mut self, time: Time) {
        if self.drain_deadline.is_some_and(|at| time.monotonic >= at) {
            for index in 0..self.conns.len() {
                let id = self
                    .conns
                    .get(index)
                    .and_then(Option::as_ref)
                    .map(|c| ConnId {
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        generation: c.generation,
                    });
                if let Some(id) = id {
                    self.close(id, CloseReason::Shutdown);
                }
            }
        }
        while let Some(&(at, id)) = self.fresh.front() {
            if at > time.monotonic {
                break;
            }
            self.fresh.pop_front();
            self.enter_admission(id);
        }
    }

    /// A connection whose deadline ([`conn_timeout`](Self::conn_timeout))
    /// is at or before `now`, for the driver to call
    /// [`handle_conn_timeout`](Self::handle_conn_timeout) with its kernel
    /// backlog; `None` when none is due. (A driver that keeps a timer per
    /// connection uses `conn_timeout` instead.)
    pub fn poll_expired(&mut self, now: Duration) -> Option<ConnId> {
        while let Some(&Reverse((at, index, generation))) = self.timers.peek() {
            if at > now {
                return None;
            }
            self.timers.pop();
            let id = ConnId { index, generation };
            let Some(conn) = self.conn_mut(id) else {
                continue;
            };
            if conn.scheduled != Some(at) || conn.closed.is_some() {
                continue; // superseded by an earlier entry
            }
            conn.scheduled = None;
            match conn.session.poll_timeout() {
                // Its deadline moved later since: the entry moves with it.
                Some(later) if later > now => {
                    conn.scheduled = Some(later);
                    self.timers.push(Reverse((later, index, generation)));
                }
                None => {}
                Some(_) => return Some(id),
            }
        }
        None
    }

    /// Whether connection `id`'s deadline has come by `now`; if it has
    /// not (or `id` is gone), its timer is set again for when it comes.
    ///
    /// For a driver that put off a timer [`poll_expired`](Self::poll_expired)
    /// returned until after the connection's write (its bytes were waiting
    /// for their turn): the write may have made it moot (a backlog check
    /// with the queue now empty), and then reading the kernel's send queue
    /// for [`handle_conn_timeout`](Self::handle_conn_timeout) would be a
    /// system call for nothing.
    ///
    /// ```
    /// use tickwire::session::{CoreConfig, ServerCore, Time};
    /// use std::time::Duration;
    /// let t = Time::new(Duration::ZERO, 0);
    /// let mut core = ServerCore::new(CoreConfig::new(1), t);
    /// let id = core.accept("127.0.0.1:5000".parse()?, t);
    /// // Not logged in: its deadline is the login timeout, not now.
    /// assert!(!core.timeout_due(id, Duration::ZERO));
    /// assert!(core.poll_timeout().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timeout_due(&mut self, id: ConnId, now: Duration) -> bool {
        let due = self
            .conn(id)
            .filter(|c| c.closed.is_none())
            .and_then(|c| c.session.poll_timeout())
            .is_some_and(|at| at <= now);
        if !due {
            self.settle(id);
        }
        due
    }

    /// A connection that has bytes to write, or must be closed
    /// ([`close_reason`](Self::close_reason)), in the order they became so;
    /// each once until something new happens to it.
    pub fn poll_ready(&mut self) -> Option<ConnId> {
        while let Some(id) = self.ready.pop_front() {
            if let Some(conn) = self.conn_mut(id) {
                conn.ready = false;
                return Some(id);
            }
        }
        None
    }

    /// The next thing worth logging.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    fn close(&mut self, id: ConnId, reason: CloseReason) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if conn.closed.is_some() {
            return;
        }
        conn.closed = Some(reason);
        let (role, peer) = (conn.role, conn.peer);
        let stats = conn.session.take_stats();
        self.stats.add_session(&stats);
        match role {
            Role::Fresh => self.fresh.retain(|&(_, f)| f != id),
            Role::Pending => {
                self.admission.remove(id.index());
            }
            Role::Client => self.stats.clients = self.stats.clients.saturating_sub(1),
            Role::Retransmission => {
                self.stats.retransmission_connections =
                    self.stats.retransmission_connections.saturating_sub(1);
            }
        }
        if let Some(counter) = self.stats.closed.get_mut(reason.index()) {
            *counter += 1;
        }
        self.stats.open = self.stats.open.saturating_sub(1);
        self.events.push_back(CoreEvent::Closed {
            conn: id,
            peer,
            reason,
        });
        self.mark_ready(id);
    }

    /// `true`, once, when the driver must shut down the sending side of
    /// `id`'s socket (`shutdown(Write)`), then go on reading it: its
    /// Rejected is written (protocol section 11; see
    /// [`ServerSession::reject`]). Ask after writing what
    /// [`poll_transmit`](Self::poll_transmit) gave, when it gives nothing
    /// more.
    pub fn poll_write_shutdown(&mut self, id: ConnId) -> bool {
        // Also once the core closed it (its client closed, or sent all it
        // may): the Rejected is written, then the sending side shut down,
        // then the socket closed.
        self.conn_mut(id)
            .is_some_and(|c| c.session.poll_write_shutdown())
    }

    fn mark_ready(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id) {
            if !conn.ready {
                conn.ready = true;
                self.ready.push_back(id);
            }
        }
    }

    /// After anything happened to `id`: its limits at login, its events,
    /// its counters, its close, its timer and its place in the ready queue.
    fn settle(&mut self, id: ConnId) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if conn.closed.is_some() {
            return;
        }
        let peer = conn.peer;
        let phase = conn.session.phase();
        let queued = conn.session.queued() as u64;
        let role = conn.role;
        let stats = conn.session.take_stats();
        self.stats.add_session(&stats);
        let events = &mut self.events;
        if let Some(conn) = self.conns.get_mut(id.index()).and_then(Option::as_mut) {
            while let Some(event) = conn.session.poll_event() {
                events.push_back(CoreEvent::Session {
                    conn: id,
                    peer,
                    event,
                });
            }
        }
        self.stats.peak_queue = self.stats.peak_queue.max(queued);
        if let Some(reason) = self.conn(id).and_then(|c| c.session.poll_close()) {
            self.close(id, reason);
            return;
        }
        if matches!(role, Role::Fresh | Role::Pending)
            && matches!(
                phase,
                ServerPhase::Replaying
                    | ServerPhase::Live
                    | ServerPhase::Retransmitting
                    | ServerPhase::Closing
            )
        {
            // Logged in (or asked for a retransmission): out of admission,
            // one of max_clients (or of the retransmission connections).
            match role {
                Role::Fresh => self.fresh.retain(|&(_, f)| f != id),
                _ => {
                    self.admission.remove(id.index());
                }
            }
            let over = if phase == ServerPhase::Retransmitting {
                self.stats.retransmission_connections += 1;
                self.stats.retransmission_connections
                    > self.config.max_retransmission_connections as u64
            } else {
                self.stats.clients += 1;
                self.stats.clients.saturating_add(self.clients_elsewhere)
                    > self.config.max_clients as u64
            };
            if let Some(conn) = self.conn_mut(id) {
                conn.role = if phase == ServerPhase::Retransmitting {
                    Role::Retransmission
                } else {
                    Role::Client
                };
            }
            if over {
                self.close(id, CloseReason::MaxClients);
                return;
            }
        }
        let timers = &mut self.timers;
        let Some(conn) = self
            .conns
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .filter(|c| c.generation == id.generation)
        else {
            return;
        };
        if let Some(at) = conn.session.poll_timeout() {
            if conn.scheduled.is_none_or(|s| at < s) {
                conn.scheduled = Some(at);
                timers.push(Reverse((at, id.index, id.generation)));
            }
        }
        let wants = conn.session.queued() > 0 || conn.session.phase() == ServerPhase::Replaying;
        if wants {
            self.mark_ready(id);
        }
    }
}

fn garbage(bytes: u64) -> Event<'static> {
    Event::Discarded(Discard {
        bytes,
        reason: DiscardReason::NoSync,
    })
}

/// The open connection `id` names (a free function over the slots, so that
/// a caller can hold the retention or the verifier at the same time).
fn open_conn(conns: &mut [Option<Conn>], id: ConnId) -> Option<&mut Conn> {
    conns
        .get_mut(id.index())
        .and_then(Option::as_mut)
        .filter(|c| c.generation == id.generation && c.closed.is_none())
}

/// What [`check_auth`] found.
enum Gate {
    /// Not all of the Auth is here yet.
    Wait,
    /// A valid Auth, consumed.
    Passed(Identity),
    /// An Auth that is not well-formed or not valid: Rejected 2 queued.
    Failed,
    /// Not an Auth: Rejected 1 queued.
    NotAuth,
}

/// The first bytes of a connection that must authenticate (protocol section
/// 11): no resynchronizing before the Auth; anything but its first four
/// bytes is answered at once, an Auth once its 72 bytes are here.
fn check_auth(conn: &mut Conn, verifier: &dyn Verifier, time: Time, retention: &Retention) -> Gate {
    const LEN: usize = crate::wire::MsgType::Auth.frame_len();
    let head = crate::wire::MsgType::Auth.head_word().to_le_bytes();
    let bytes = conn.parser.unparsed();
    let seen = bytes.len().min(head.len());
    if bytes.get(..seen) != head.get(..seen) {
        conn.session
            .reject(RejectReason::AuthenticationRequired, time);
        return Gate::NotAuth;
    }
    let Some(frame) = bytes.get(..LEN) else {
        return Gate::Wait;
    };
    let identity = match Message::decode(frame) {
        Ok((message @ Message::Auth(auth), _)) if auth.is_well_formed() => {
            let identity = auth
                .key_id()
                .ok()
                .and_then(|key_id| verifier.authenticate(&key_id, &auth.secret(), conn.peer.ip()));
            if identity.is_some() {
                // Its first frame, for the session's rule on a second Auth.
                conn.session
                    .handle_event(&Event::Frame(message), time, retention);
            }
            identity
        }
        _ => None,
    };
    conn.parser.consume(LEN);
    match identity {
        Some(identity) => {
            conn.auth = AuthStep::Authenticated(identity);
            Gate::Passed(identity)
        }
        None => {
            conn.session.reject(RejectReason::NotAuthorized, time);
            Gate::Failed
        }
    }
}
