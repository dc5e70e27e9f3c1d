//! See [`Client`](super::Client).
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};

use super::client_config::{log_event, ClientConfig, ClientStats};
use super::conn::READ_CHUNK;
use super::unix_nanos;
use crate::parse::{ParseStats, Parser};
use crate::sequence::SequenceTracker;
use crate::session::{Action, ClientEvent, ClientSession, ClientState, IoFailure, Lost, Time};
use crate::wire::Message;

/// How long [`Client::run`] sleeps at most between checks of its callback's
/// wishes when nothing happens.
const RUN_WAIT: Duration = Duration::from_millis(100);

/// Why [`Client::run`] returned an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// Retries are exhausted.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// How the last one ended.
        last: Lost,
    },
    /// The poll itself failed (not a connection error: those reconnect).
    Io(io::Error),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::GaveUp { attempts, last } => {
                write!(f, "gave up after {attempts} attempts; last: {last}")
            }
            ClientError::Io(e) => write!(f, "poll failed: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(e) => Some(e),
            ClientError::GaveUp { .. } => None,
        }
    }
}

/// The reference client.
///
/// The reference client: a thin mio loop around a
/// [`ClientSession`](crate::session::ClientSession), which holds every rule
/// (states, backoff, liveness, the Login's sequence, gaps, new sessions).
/// This file connects, reads into the parser, writes the Login, and sleeps
/// until the session's next deadline.
///
/// ```text
///  Action::Connect ─▶ TcpStream::connect ─writable─▶ handle_connected ─▶ Action::Send(Login)
///  readable ─▶ read into Parser::spare ─▶ handle_bytes, handle_event ─▶ ClientEvent to you
///  EOF / error ─▶ handle_lost           poll_timeout ─▶ sleep ─▶ handle_timeout
///  Action::Close ─▶ drop the socket; the next connection gets a fresh parser
/// ```
///
/// Within the server's retention nothing is lost and nothing is delivered
/// twice across reconnects; a range the server no longer has arrives as a
/// [`ClientEvent::Gap`] with exact bounds. Bytes that are not frames are
/// discarded and reported ([`ClientEvent::Discarded`]) while the connection
/// stays up. A client whose data was skipped for being slow sees the
/// skipped range as a gap; to recover it, log in again from the first
/// missing sequence (a new client with [`ClientConfig::from`] set to it)
/// while the server still retains it.
///
/// ```no_run
/// use std::ops::ControlFlow;
/// use tickwire::net::{Client, ClientConfig};
/// use tickwire::session::ClientEvent;
/// use tickwire::Message;
///
/// let mut client = Client::new(ClientConfig::new("127.0.0.1:7878"))?;
/// client.run(|event| {
///     match event {
///         ClientEvent::Frame(Message::Quote(q)) => println!("{} {}", q.bid_price(), q.ask_price()),
///         ClientEvent::Gap(gap) => eprintln!("lost {}..={}", gap.first, gap.last),
///         ClientEvent::State { to, .. } => eprintln!("now {to:?}"),
///         _ => {}
///     }
///     ControlFlow::Continue(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Client {
    poll: Poll,
    events: Events,
    link: Link,
}

impl Client {
    /// A client for `config`; it connects on the first [`poll`](Client::poll).
    ///
    /// # Errors
    /// The poll could not be created; the config has
    /// [`credentials`](ClientConfig::credentials) and a server that is not a
    /// loopback address without
    /// [`allow_plain_auth`](ClientConfig::allow_plain_auth).
    pub fn new(config: ClientConfig) -> io::Result<Client> {
        config.check_plain_auth()?;
        Ok(Client {
            poll: Poll::new()?,
            events: Events::with_capacity(64),
            link: Link::new(config, Instant::now()),
        })
    }

    /// The current state.
    pub fn state(&self) -> ClientState {
        self.link.session.state()
    }

    /// The sequence tracker (the next sequence needed, the session).
    pub fn tracker(&self) -> &SequenceTracker {
        self.link.session.tracker()
    }

    /// The protocol state machine this client drives.
    pub fn session(&self) -> &ClientSession {
        &self.link.session
    }

    /// The counters.
    pub fn stats(&self) -> ClientStats {
        self.link.stats()
    }

    /// Whether the client has stopped for good (gave up, stopped after an
    /// EndOfSession as configured, or [`disconnect`](Client::disconnect)ed).
    pub fn is_stopped(&self) -> bool {
        self.link.session.is_stopped()
    }

    /// Closes the connection and stops.
    pub fn disconnect(&mut self, mut on_event: impl FnMut(ClientEvent<'_>)) {
        self.link
            .stop(self.poll.registry(), Token(0), &mut |e| on_event(e));
    }

    /// Runs the state machine once: waits at most `timeout` for readiness
    /// or the session's next deadline, handles what happened, and reports
    /// it to `on_event`.
    ///
    /// # Errors
    /// The poll itself failed (not a connection error: those are events).
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        mut on_event: impl FnMut(ClientEvent<'_>),
    ) -> io::Result<()> {
        let epoch = self.link.epoch;
        poll_links(
            &mut self.poll,
            &mut self.events,
            epoch,
            std::slice::from_mut(&mut self.link),
            timeout,
            &mut |_, event| {
                on_event(event);
                ControlFlow::Continue(())
            },
        )
        .map(|_| ())
    }

    /// The blocking convenience: polls until `on_event` returns
    /// [`ControlFlow::Break`] or the client stops.
    ///
    /// `on_event` is not called again after it returned `Break`: the events
    /// not yet handed out (the rest of the receive buffer, the socket's
    /// unread bytes, what the session reported in the same step) stay with
    /// the client, and the next `run` (or [`poll`](Client::poll)) hands
    /// them out first, in order. Nothing is lost or repeated between calls.
    ///
    /// ```no_run
    /// use std::ops::ControlFlow;
    /// use tickwire::net::{Client, ClientConfig};
    /// use tickwire::session::ClientEvent;
    ///
    /// let mut config = ClientConfig::new("127.0.0.1:7878");
    /// config.from = 1;
    /// let mut client = Client::new(config)?;
    /// let mut data = 0;
    /// // The first ten data frames...
    /// client.run(|event| {
    ///     if matches!(event, ClientEvent::Frame(m) if m.is_data()) {
    ///         data += 1;
    ///     }
    ///     if data == 10 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    /// })?;
    /// // ...and the next one is sequence 11.
    /// client.run(|event| match event {
    ///     ClientEvent::Frame(m) if m.is_data() => {
    ///         assert_eq!(m.sequence(), 11);
    ///         ControlFlow::Break(())
    ///     }
    ///     _ => ControlFlow::Continue(()),
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ClientError::GaveUp`] when retries are exhausted,
    /// [`ClientError::Io`] if the poll fails.
    pub fn run(
        &mut self,
        mut on_event: impl FnMut(ClientEvent<'_>) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        let wait = if self.link.config.busy_poll {
            Duration::ZERO
        } else {
            RUN_WAIT
        };
        while !self.link.session.is_stopped() || self.link.has_backlog() {
            let epoch = self.link.epoch;
            let flow = poll_links(
                &mut self.poll,
                &mut self.events,
                epoch,
                std::slice::from_mut(&mut self.link),
                Some(wait),
                &mut |_, event| on_event(event),
            )
            .map_err(ClientError::Io)?;
            if flow.is_break() {
                return Ok(());
            }
        }
        let session = &self.link.session;
        match (session.is_stopped(), session.last_lost()) {
            (true, Some(last))
                if last != Lost::EndOfSession || self.link.config.reconnect_after_end =>
            {
                Err(ClientError::GaveUp {
                    attempts: session.attempts(),
                    last,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Which client of a [`ClientSet`] an event or a question is about: the
/// value [`ClientSet::add`] returned (ids count up from 0 and are never
/// reused).
pub type ClientId = usize;

/// Many reference clients driven by one thread: one mio poll, one
/// [`ClientSession`](crate::session::ClientSession), socket and parser per
/// client.
///
/// Each client behaves exactly as a [`Client`] with the same
/// [`ClientConfig`] (the same driver code runs both: states, backoff,
/// liveness, fail-over, resume, gaps); only the thread is shared. A
/// consumer of many feeds, or of one feed over several connections, saves
/// a thread and a wake-up per connection: one `epoll_wait` reports every
/// connection that has data, and a busy feed's connections are read one
/// after the other in the same wake-up. Clients that are ready together are
/// handled in turn, so the last waits for the others' reads and callbacks
/// (`tickwire demo`'s four clients at 500K msg/s in one set: p50 38 to 56 µs from
/// the first to the last); a client's slow callback delays the others of
/// its set: give a consumer that may block a [`Client`] of its own.
///
/// Clients are added with [`add`](ClientSet::add) (they connect on the next
/// [`poll`](ClientSet::poll)) and stopped with
/// [`disconnect`](ClientSet::disconnect); a stopped client keeps its id
/// and its counters. Each poll costs O(clients) for the earliest deadline
/// besides the work of the connections that are ready.
///
/// ```no_run
/// use tickwire::net::{ClientConfig, ClientSet};
/// use tickwire::session::ClientEvent;
///
/// let mut set = ClientSet::new()?;
/// let a = set.add(ClientConfig::new("127.0.0.1:7001"));
/// let b = set.add(ClientConfig::new("127.0.0.1:7002"));
/// loop {
///     set.poll(None, |id, event| match event {
///         ClientEvent::Frame(m) if m.is_data() => println!("client {id}: {}", m.sequence()),
///         ClientEvent::Gap(gap) => eprintln!("client {id} lost {}..={}", gap.first, gap.last),
///         _ => {}
///     })?;
///     if set.all_stopped() {
///         break;
///     }
/// }
/// # let _ = (a, b);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ClientSet {
    poll: Poll,
    events: Events,
    links: Vec<Link>,
    epoch: Instant,
}

impl ClientSet {
    /// An empty set.
    ///
    /// ```
    /// let set = tickwire::net::ClientSet::new()?;
    /// assert!(set.is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// The poll could not be created.
    pub fn new() -> io::Result<ClientSet> {
        Ok(ClientSet {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            links: Vec::new(),
            epoch: Instant::now(),
        })
    }

    /// Adds a client for `config`; it connects on the next
    /// [`poll`](ClientSet::poll). Returns its id.
    ///
    /// ```
    /// use tickwire::net::{ClientConfig, ClientSet};
    /// use tickwire::session::ClientState;
    /// let mut set = ClientSet::new()?;
    /// let id = set.add(ClientConfig::new("127.0.0.1:7001"));
    /// assert_eq!((id, set.len()), (0, 1));
    /// assert_eq!(set.state(id), Some(ClientState::Disconnected));
    /// assert_eq!(set.state(id + 1), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add(&mut self, config: ClientConfig) -> ClientId {
        self.links.push(Link::new(config, self.epoch));
        self.links.len() - 1
    }

    /// How many clients were added.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether no client was added.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Client `id`'s state (`None`: no such client).
    pub fn state(&self, id: ClientId) -> Option<ClientState> {
        self.session(id).map(ClientSession::state)
    }

    /// The protocol state machine of client `id` (its tracker, last loss,
    /// attempts).
    pub fn session(&self, id: ClientId) -> Option<&ClientSession> {
        self.links.get(id).map(|link| &link.session)
    }

    /// Client `id`'s counters.
    pub fn stats(&self, id: ClientId) -> Option<ClientStats> {
        self.links.get(id).map(Link::stats)
    }

    /// Whether client `id` has stopped for good (as
    /// [`Client::is_stopped`]); true for an id that was never added.
    pub fn is_stopped(&self, id: ClientId) -> bool {
        self.session(id).is_none_or(ClientSession::is_stopped)
    }

    /// Whether every client has stopped (true for an empty set).
    pub fn all_stopped(&self) -> bool {
        self.links.iter().all(|link| link.session.is_stopped())
    }

    /// Closes client `id`'s connection and stops it (nothing for an id
    /// that was never added).
    pub fn disconnect(&mut self, id: ClientId, mut on_event: impl FnMut(ClientEvent<'_>)) {
        if let Some(link) = self.links.get_mut(id) {
            link.stop(self.poll.registry(), Token(id), &mut |e| on_event(e));
        }
    }

    /// Runs every client's state machine once: waits at most `timeout` for
    /// readiness or the earliest deadline of any client, handles what
    /// happened, and reports it to `on_event` with the client's id.
    ///
    /// # Errors
    /// The poll itself failed (not a connection error: those are events).
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        mut on_event: impl FnMut(ClientId, ClientEvent<'_>),
    ) -> io::Result<()> {
        poll_links(
            &mut self.poll,
            &mut self.events,
            self.epoch,
            &mut self.links,
            timeout,
            &mut |id, event| {
                on_event(id, event);
                ControlFlow::Continue(())
            },
        )
        .map(|_| ())
    }

    /// [`poll`](ClientSet::poll) that stops when `on_event` returns
    /// [`ControlFlow::Break`]: it is not called again in this poll, and the
    /// events not handed out yet (of every client) stay in the set for the
    /// next `poll` or `try_poll`, which hands them out first, in order.
    /// Returns `Break` if `on_event` stopped it.
    ///
    /// ```no_run
    /// use std::ops::ControlFlow;
    /// use tickwire::net::{ClientConfig, ClientSet};
    /// use tickwire::session::ClientEvent;
    ///
    /// let mut set = ClientSet::new()?;
    /// set.add(ClientConfig::new("127.0.0.1:7001"));
    /// set.add(ClientConfig::new("127.0.0.1:7002"));
    /// let mut frames = 0;
    /// // Exactly 100 frames (of either client), whatever the reads brought.
    /// while frames < 100 {
    ///     set.try_poll(None, |_id, event| {
    ///         if let ClientEvent::Frame(_) = event {
    ///             frames += 1;
    ///         }
    ///         if frames == 100 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    ///     })?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// The poll itself failed (not a connection error: those are events).
    pub fn try_poll(
        &mut self,
        timeout: Option<Duration>,
        mut on_event: impl FnMut(ClientId, ClientEvent<'_>) -> ControlFlow<()>,
    ) -> io::Result<ControlFlow<()>> {
        poll_links(
            &mut self.poll,
            &mut self.events,
            self.epoch,
            &mut self.links,
            timeout,
            &mut on_event,
        )
    }
}

/// An event the application has not taken yet: it came after its callback
/// returned [`ControlFlow::Break`], in the same step of the session. Handed
/// out first by the next poll.
#[derive(Debug)]
enum Held {
    /// Anything but a frame (they borrow nothing).
    Event(ClientEvent<'static>),
    /// A frame's bytes (its event borrows the receive buffer, which moves on).
    Frame(Box<[u8]>),
}

impl Held {
    fn of(event: ClientEvent<'_>) -> Held {
        match event {
            ClientEvent::Frame(m) => Held::Frame(m.as_bytes().into()),
            ClientEvent::State { from, to } => Held::Event(ClientEvent::State { from, to }),
            ClientEvent::LoggedIn {
                session_id,
                sequence,
            } => Held::Event(ClientEvent::LoggedIn {
                session_id,
                sequence,
            }),
            ClientEvent::Gap(gap) => Held::Event(ClientEvent::Gap(gap)),
            ClientEvent::Healing { gap, delay } => Held::Event(ClientEvent::Healing { gap, delay }),
            ClientEvent::NewSession {
                session_id,
                sequence,
            } => Held::Event(ClientEvent::NewSession {
                session_id,
                sequence,
            }),
            ClientEvent::Duplicate { sequence } => Held::Event(ClientEvent::Duplicate { sequence }),
            ClientEvent::Discarded(d) => Held::Event(ClientEvent::Discarded(d)),
            ClientEvent::EndOfSession { sequence } => {
                Held::Event(ClientEvent::EndOfSession { sequence })
            }
            ClientEvent::Lost(why) => Held::Event(ClientEvent::Lost(why)),
            ClientEvent::Retrying { attempt, delay } => {
                Held::Event(ClientEvent::Retrying { attempt, delay })
            }
            ClientEvent::Failover { from, to } => Held::Event(ClientEvent::Failover { from, to }),
            ClientEvent::GaveUp { attempts, last } => {
                Held::Event(ClientEvent::GaveUp { attempts, last })
            }
            ClientEvent::Rejected { server, reason } => {
                Held::Event(ClientEvent::Rejected { server, reason })
            }
        }
    }

    /// Hands the event to `on_event`.
    fn deliver(
        &self,
        on_event: &mut impl FnMut(ClientEvent<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        match self {
            Held::Event(event) => on_event(*event),
            // The bytes were a checked frame: decoding them again cannot fail.
            Held::Frame(bytes) => match Message::decode(bytes) {
                Ok((m, _)) => on_event(ClientEvent::Frame(m)),
                Err(_) => ControlFlow::Continue(()),
            },
        }
    }
}

/// Keeps `event` for the next poll (out of the event path: rare).
#[cold]
#[inline(never)]
fn hold(held: &mut VecDeque<Held>, event: ClientEvent<'_>) {
    held.push_back(Held::of(event));
}

/// `on_event` for client `id` while the application takes events; once it
/// returned `Break` (`stop` set), the events are held in `held` instead.
struct Gate<'s, F> {
    id: ClientId,
    held: &'s mut VecDeque<Held>,
    stop: &'s Cell<bool>,
    on_event: &'s mut F,
}

impl<F: FnMut(ClientId, ClientEvent<'_>) -> ControlFlow<()>> Gate<'_, F> {
    /// Hands `event` to the application, or holds it after a `Break`.
    #[inline(always)]
    fn emit(&mut self, event: ClientEvent<'_>) {
        if self.stop.get() {
            hold(self.held, event);
        } else if (self.on_event)(self.id, event).is_break() {
            self.stop.set(true);
        }
    }

    /// A frame for the application when it has not asked to stop (the
    /// caller knows: it stops at a `Break`): handed straight to it, not
    /// logged (frames never are); whether it asked to stop now.
    #[inline(always)]
    fn frame(&mut self, message: Message<'_>) -> bool {
        let stop = (self.on_event)(self.id, ClientEvent::Frame(message)).is_break();
        if stop {
            self.stop.set(true);
        }
        stop
    }
}

/// Runs `$step` on `$link` with its events through a [`Gate`] (a macro,
/// not a function taking a closure, so that the event path stays statically
/// dispatched).
macro_rules! gated {
    ($link:expr, $id:expr, $stop:expr, $on_event:expr, |$l:ident, $e:ident| $step:expr) => {{
        let link: &mut Link = $link;
        let mut held = std::mem::take(&mut link.held);
        {
            let $e = &mut Gate {
                id: $id,
                held: &mut held,
                stop: $stop,
                on_event: $on_event,
            };
            let $l = &mut *link;
            $step;
        }
        held.append(&mut link.held);
        link.held = held;
    }};
}

/// One poll of `links` (each registered under its index as token): hand
/// out what an earlier call held back (events, then the rest of a receive
/// buffer), start the ones that are disconnected, sleep until readiness or
/// the earliest deadline (at most `timeout`), handle the ready ones, then
/// the due deadlines. [`Client`] is this over one link, [`ClientSet`] over
/// many.
///
/// Once `on_event` returns [`ControlFlow::Break`] it is not called again:
/// the session's events of the same step are held, the receive buffer and
/// the socket keep the rest, and the call returns `Break` after finishing
/// the step (readiness not handled yet is remembered as a backlog).
fn poll_links(
    poll: &mut Poll,
    events: &mut Events,
    epoch: Instant,
    links: &mut [Link],
    timeout: Option<Duration>,
    on_event: &mut impl FnMut(ClientId, ClientEvent<'_>) -> ControlFlow<()>,
) -> io::Result<ControlFlow<()>> {
    let stop = Cell::new(false);
    let registry = poll.registry();
    // What earlier calls did not hand out, first.
    let mut handed = false;
    for (id, link) in links.iter_mut().enumerate() {
        while let Some(event) = link.held.pop_front() {
            handed = true;
            if event.deliver(&mut |e| on_event(id, e)).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        if link.backlog {
            handed = true;
            link.backlog = false;
            gated!(link, id, &stop, on_event, |link, gate| link.resume(
                registry,
                Token(id),
                gate
            ));
            if stop.get() {
                return Ok(ControlFlow::Break(()));
            }
        }
    }
    for (id, link) in links.iter_mut().enumerate() {
        if link.session.is_stopped() || link.session.state() != ClientState::Disconnected {
            continue;
        }
        gated!(link, id, &stop, on_event, |link, gate| link.start(
            registry,
            Token(id),
            &mut |e| gate.emit(e)
        ));
        if stop.get() {
            return Ok(ControlFlow::Break(()));
        }
    }
    let now = epoch.elapsed();
    let next = links
        .iter()
        .filter(|link| !link.session.is_stopped())
        .filter_map(|link| link.session.poll_timeout())
        .min();
    let wait = match (timeout, next) {
        (Some(t), Some(at)) => Some(t.min(at.saturating_sub(now))),
        (t, at) => t.or(at.map(|at| at.saturating_sub(now))),
    };
    // Events were handed out: look at the sockets without sleeping.
    let wait = if handed { Some(Duration::ZERO) } else { wait };
    if links.iter().all(|link| link.session.is_stopped()) {
        return Ok(ControlFlow::Continue(()));
    }
    match poll.poll(events, wait) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => return Err(e),
    }
    let registry = poll.registry();
    for event in events.iter() {
        let id = event.token().0;
        let Some(link) = links.get_mut(id) else {
            continue;
        };
        let ready = Ready {
            readable: event.is_readable() || event.is_read_closed() || event.is_error(),
            writable: event.is_writable(),
            closing: event.is_read_closed() || event.is_error(),
        };
        // After a Break the readiness is still handled (a connect finishes,
        // an edge is not lost): reads stop at once and become a backlog.
        gated!(link, id, &stop, on_event, |link, gate| link.ready(
            ready,
            registry,
            event.token(),
            gate
        ));
    }
    if stop.get() {
        // The deadlines wait for the next call.
        return Ok(ControlFlow::Break(()));
    }
    let now = epoch.elapsed();
    for (id, link) in links.iter_mut().enumerate() {
        if link.session.poll_timeout().is_some_and(|at| at <= now) {
            gated!(link, id, &stop, on_event, |link, gate| link.timeout(
                registry,
                Token(id),
                &mut |e| gate.emit(e)
            ));
            if stop.get() {
                return Ok(ControlFlow::Break(()));
            }
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// What a readiness event said about a connection.
#[derive(Clone, Copy, Debug)]
struct Ready {
    readable: bool,
    writable: bool,
    /// The peer's FIN or an error came with it: read to the end.
    closing: bool,
}

/// One connection's driver: the session, its socket, its parser. The
/// single-connection [`Client`] and the many-connection [`ClientSet`] run
/// the same code through it; every method carries out the session's actions
/// before it returns.
#[derive(Debug)]
struct Link {
    config: ClientConfig,
    session: ClientSession,
    stream: Option<TcpStream>,
    /// The receive buffer, reused by each connection's fresh parser.
    parser: Parser<Box<[u8]>>,
    /// Bytes of the Login not yet written.
    out: Vec<u8>,
    /// Zero of the session's monotonic time (the owner's).
    epoch: Instant,
    /// Parser counters of closed connections.
    closed_stats: ParseStats,
    /// Events the application has not taken yet (after a Break).
    held: VecDeque<Held>,
    /// Reading stopped at a Break: the parser may hold events and the
    /// socket bytes for which no new readiness edge will come.
    backlog: bool,
    /// The addresses of the current attempt's server not tried yet (a name
    /// can resolve to several).
    candidates: VecDeque<SocketAddr>,
    /// The connection's TLS state (protocol section 12), when
    /// [`ClientConfig::tls`] is set.
    #[cfg(feature = "tls")]
    tls: Option<Box<ClientTls>>,
}

/// A client connection's TLS (rustls's sans-IO connection over the socket).
#[cfg(feature = "tls")]
#[derive(Debug)]
struct ClientTls {
    conn: rustls::ClientConnection,
    /// The handshake is done and its ALPN was checked.
    checked: bool,
}

/// A connection's first bytes are a TLS record (an alert or a handshake:
/// 0x15 or 0x16, then version 3.x) rather than a frame: the server speaks
/// TLS to a plain client.
fn looks_like_tls(parser: &Parser<Box<[u8]>>) -> bool {
    parser.stats().frames() == 0 && matches!(parser.unparsed(), [0x15 | 0x16, 0x03, ..])
}

/// Plaintext bytes from the connection into `spare`: straight from the
/// socket, or through TLS (reading records until some plaintext comes or
/// the socket would block). `Ok(0)` is the end of the stream.
fn fill(stream: &mut TcpStream, tls: Option<&mut TlsState>, spare: &mut [u8]) -> io::Result<usize> {
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        return fill_tls(stream, tls, spare);
    }
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    stream.read(spare)
}

#[cfg(feature = "tls")]
type TlsState = ClientTls;
#[cfg(not(feature = "tls"))]
type TlsState = ();

#[cfg(feature = "tls")]
fn fill_tls(stream: &mut TcpStream, tls: &mut ClientTls, spare: &mut [u8]) -> io::Result<usize> {
    loop {
        match tls.conn.reader().read(spare) {
            Ok(n) => return Ok(n), // 0: close_notify
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        if tls.conn.read_tls(stream)? == 0 {
            return Ok(0);
        }
        if let Err(e) = tls.conn.process_new_packets() {
            // rustls's alert goes out; the error says what was wrong (an
            // unknown issuer, a name, an expired certificate; or a server
            // that does not speak TLS).
            let _ = tls.conn.write_tls(stream);
            log::error!("TLS: {e}");
            return Err(io::Error::other(e));
        }
        if !tls.checked && !tls.conn.is_handshaking() {
            tls.checked = true;
            if let Err(e) = crate::tls::check_alpn(&tls.conn) {
                log::error!("{e}");
                return Err(io::Error::other(e));
            }
        }
        flush_tls(stream, &mut tls.conn)?;
    }
}

/// Writes the TLS records rustls holds, until the socket would block.
#[cfg(feature = "tls")]
fn flush_tls(stream: &mut TcpStream, conn: &mut rustls::ClientConnection) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Link {
    fn new(config: ClientConfig, epoch: Instant) -> Link {
        Link {
            session: ClientSession::new(config.session()),
            parser: Parser::owned_at_least(config.read_buffer, SequenceTracker::new()),
            config,
            stream: None,
            out: Vec::new(),
            epoch,
            closed_stats: ParseStats::default(),
            held: VecDeque::new(),
            backlog: false,
            candidates: VecDeque::new(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Whether events wait for the application (held ones, or a backlog).
    fn has_backlog(&self) -> bool {
        self.backlog || !self.held.is_empty()
    }

    fn stats(&self) -> ClientStats {
        let mut parse = self.closed_stats;
        if self.stream.is_some() {
            parse += self.parser.stats();
        }
        ClientStats::of(parse, &self.session)
    }

    fn time(&self) -> Time {
        Time::new(self.epoch.elapsed(), unix_nanos())
    }

    /// `on_event` with the client's own events logged first.
    fn logged<'e>(
        &self,
        on_event: &'e mut impl FnMut(ClientEvent<'_>),
    ) -> impl FnMut(ClientEvent<'_>) + 'e {
        let server = self.config.server_at(self.session.server()).clone();
        #[inline(always)]
        move |event| {
            log_event(&server, &event);
            on_event(event);
        }
    }

    /// Connects a client that is disconnected and not stopped (the first
    /// poll, or after [`ClientSession::connect`]'s rules).
    fn start(
        &mut self,
        registry: &Registry,
        token: Token,
        on_event: &mut impl FnMut(ClientEvent<'_>),
    ) {
        if self.session.is_stopped() || self.session.state() != ClientState::Disconnected {
            return;
        }
        let on_event = &mut self.logged(on_event);
        let time = self.time();
        self.session.connect(time, on_event);
        self.apply_actions(registry, token, on_event);
    }

    /// Closes the connection and stops the session.
    fn stop(
        &mut self,
        registry: &Registry,
        token: Token,
        on_event: &mut impl FnMut(ClientEvent<'_>),
    ) {
        let on_event = &mut self.logged(on_event);
        self.session.stop(on_event);
        self.apply_actions(registry, token, on_event);
    }

    /// The session's deadline came (or may have).
    fn timeout(
        &mut self,
        registry: &Registry,
        token: Token,
        on_event: &mut impl FnMut(ClientEvent<'_>),
    ) {
        let on_event = &mut self.logged(on_event);
        let time = self.time();
        self.session.handle_timeout(time, on_event);
        self.apply_actions(registry, token, on_event);
    }

    /// Goes on where a Break stopped reading: the parser's events, then the
    /// socket (read to the end: no edge tells whether it has more).
    fn resume<F: FnMut(ClientId, ClientEvent<'_>) -> ControlFlow<()>>(
        &mut self,
        registry: &Registry,
        token: Token,
        gate: &mut Gate<'_, F>,
    ) {
        if self.stream.is_none() {
            return;
        }
        self.on_readable(true, registry, token, gate);
    }

    /// The socket is ready: finish a connect, write the rest of the Login,
    /// read.
    fn ready<F: FnMut(ClientId, ClientEvent<'_>) -> ControlFlow<()>>(
        &mut self,
        ready: Ready,
        registry: &Registry,
        token: Token,
        gate: &mut Gate<'_, F>,
    ) {
        if self.stream.is_none() || !(ready.readable || ready.writable) {
            return;
        }
        {
            let on_event = &mut |e: ClientEvent<'_>| gate.emit(e);
            let on_event = &mut self.logged(on_event);
            if self.session.state() == ClientState::Connecting {
                self.finish_connect(registry, token, on_event);
            }
            if ready.writable {
                if let Err(e) = self.write_out() {
                    let time = self.time();
                    self.session
                        .handle_lost(Lost::Error(e.kind().into()), time, on_event);
                    self.apply_actions(registry, token, on_event);
                }
            }
        }
        if ready.readable && self.stream.is_some() {
            self.on_readable(ready.closing, registry, token, gate);
        }
    }

    /// Carries out what the session asked for: connect, send, close.
    fn apply_actions(
        &mut self,
        registry: &Registry,
        token: Token,
        on_event: &mut impl FnMut(ClientEvent<'_>),
    ) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Connect => self.open(registry, token, on_event),
                Action::Send(frame) => {
                    self.out.extend_from_slice(frame.as_bytes());
                    if let Err(e) = self.write_out() {
                        let time = self.time();
                        self.session
                            .handle_lost(Lost::Error(e.kind().into()), time, on_event);
                    }
                }
                Action::Close => self.drop_stream(registry),
            }
        }
    }

    /// A new connection attempt: resolves the server (a name, again each
    /// time) and connects to its first address.
    fn open(
        &mut self,
        registry: &Registry,
        token: Token,
        on_event: &mut impl FnMut(ClientEvent<'_>),
    ) {
        self.drop_stream(registry);
        let server = self.config.server_at(self.session.server());
        match server.resolve() {
            Ok(mut addrs) => {
                self.config.plain_auth_filter(&mut addrs);
                if addrs.is_empty() {
                    log::error!(
                        "{server}: not a loopback address: credentials are not sent in clear \
                         (allow_plain_auth)"
                    );
                }
                self.candidates = addrs.into();
                self.connect_next(registry, token, on_event);
            }
            Err(e) => {
                log::debug!("{server}: {e}");
                self.candidates.clear();
                let time = self.time();
                self.session.handle_lost(
                    Lost::ConnectFailed(IoFailure::Unresolved),
                    time,
                    on_event,
                );
            }
        }
    }

    /// Connects to the next address of the attempt; when none is left, the
    /// attempt failed with `last`'s error.
    fn connect_next(
        &mut self,
        registry: &Registry,
        token: Token,
        on_event: &mut impl FnMut(ClientEvent<'_>),
    ) {
        let mut failure = IoFailure::Other;
        while let Some(addr) = self.candidates.pop_front() {
            let opened = TcpStream::connect(addr).and_then(|mut stream| {
                registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
                Ok(stream)
            });
            match opened {
                Ok(stream) => {
                    self.stream = Some(stream);
                    return;
                }
                Err(e) => failure = e.kind().into(),
            }
        }
        let time = self.time();
        self.session
            .handle_lost(Lost::ConnectFailed(failure), time, on_event);
    }

    fn drop_stream(&mut self, registry: &Registry) {
        if let Some(mut stream) = self.stream.take() {
            let _ = registry.deregister(&mut stream);
            self.closed_stats += self.parser.stats();
            // A fresh parser (same buffer) for the next connection: no byte
            // of this one carries over.
            self.parser.reset(SequenceTracker::new());
        }
        self.out.clear();
        self.backlog = false;
        #[cfg(feature = "tls")]
        {
            self.tls = None;
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            // Into rustls (held until the handshake is done), then out.
            if !self.out.is_empty() {
                tls.conn.writer().write_all(&self.out)?;
                self.out.clear();
            }
            return flush_tls(stream, &mut tls.conn);
        }
        while !self.out.is_empty() {
            match stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn finish_connect(
        &mut self,
        registry: &Registry,
        token: Token,
        on_event: &mut impl FnMut(ClientEvent<'_>),
    ) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        let failed = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e.kind()),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // still connecting
                Err(e) => Some(e.kind()),
            },
        };
        let time = self.time();
        match failed {
            Some(_) if !self.candidates.is_empty() => {
                // The name has more addresses: the same attempt tries the next.
                if let Some(mut stream) = self.stream.take() {
                    let _ = registry.deregister(&mut stream);
                }
                self.connect_next(registry, token, on_event);
            }
            Some(kind) => {
                self.session.handle_lost(
                    Lost::ConnectFailed(IoFailure::from(kind)),
                    time,
                    on_event,
                );
            }
            None => {
                self.candidates.clear();
                let _ = stream.set_nodelay(true);
                #[cfg(feature = "tls")]
                if let Err(e) = self.start_tls() {
                    log::error!("{}: TLS: {e}", self.config.server_at(self.session.server()));
                    self.session
                        .handle_lost(Lost::ConnectFailed(IoFailure::Other), time, on_event);
                    self.apply_actions(registry, token, on_event);
                    return;
                }
                self.session.handle_connected(time, on_event);
            }
        }
        self.apply_actions(registry, token, on_event);
    }

    /// With [`ClientConfig::tls`]: the connection's TLS client, for the
    /// name of the server dialled (or the configured one).
    #[cfg(feature = "tls")]
    fn start_tls(&mut self) -> Result<(), crate::tls::TlsError> {
        let Some(settings) = &self.config.tls else {
            return Ok(());
        };
        let host = match self.config.server_at(self.session.server()) {
            super::ServerAddr::Socket(addr) => addr.ip().to_string(),
            super::ServerAddr::Name(name) => name
                .rsplit_once(':')
                .map_or(name.as_str(), |(host, _)| host)
                .to_owned(),
        };
        let name = settings.server_name_for(&host)?;
        let conn = rustls::ClientConnection::new(std::sync::Arc::clone(&settings.config), name)?;
        self.tls = Some(Box::new(ClientTls {
            conn,
            checked: false,
        }));
        Ok(())
    }

    /// Hands the parser's events to the session until the application
    /// asks to stop; `Break` then (the rest stays in the parser). Steady
    /// frames go straight to the application (the session's `SteadyRun`);
    /// the events the session emits otherwise are logged first (`server`).
    fn drain<F: FnMut(ClientId, ClientEvent<'_>) -> ControlFlow<()>>(
        &mut self,
        time: Time,
        gate: &mut Gate<'_, F>,
        server: &super::ServerAddr,
    ) -> ControlFlow<()> {
        let session = &mut self.session;
        // The steady frames skip the session's bookkeeping (kept in
        // registers, written back once) and the logging; anything else is
        // the session's. (A drain starts only while the application takes
        // events, and stops at its first Break.)
        let run = session.steady();
        let (run, stopped) = self.parser.fold_until(
            (run, false),
            #[inline(always)]
            |(mut run, _), event| {
                let stop = if let Some(m) = run.take(&event) {
                    gate.frame(m)
                } else {
                    session.end_steady(run);
                    session.handle_event(event, time, &mut |e| {
                        log_event(server, &e);
                        gate.emit(e);
                    });
                    run = session.steady();
                    gate.stop.get()
                };
                if stop {
                    ControlFlow::Break((run, true))
                } else {
                    ControlFlow::Continue((run, false))
                }
            },
        );
        session.end_steady(run);
        if stopped {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// Reads what the socket has. A short read means the receive queue is
    /// empty and a later arrival raises a new edge, so the read that would
    /// only say WouldBlock is skipped (one system call per wake-up instead
    /// of two, as tokio does for TCP) unless the peer's FIN or an error
    /// came with the wake-up (`closing`): then reading goes on to the end.
    ///
    /// When the application asks to stop, reading stops after the event it
    /// asked at and the connection is marked as a backlog: the next poll
    /// [`resume`](Link::resume)s here, with the parser's remaining events
    /// first.
    fn on_readable<F: FnMut(ClientId, ClientEvent<'_>) -> ControlFlow<()>>(
        &mut self,
        closing: bool,
        registry: &Registry,
        token: Token,
        gate: &mut Gate<'_, F>,
    ) {
        let server = self.config.server_at(self.session.server()).clone();
        let mut ended = None;
        let mut stopped = gate.stop.get();
        if !stopped && self.parser.buffered() > 0 {
            // Left by a Break (resume): these come before any new byte.
            let time = self.time();
            stopped = self.drain(time, gate, &server).is_break();
            if !stopped && self.parser.is_finished() {
                ended = Some(Lost::Closed);
            }
        }
        while !stopped && ended.is_none() && self.connection_open() {
            let Some(stream) = self.stream.as_mut() else {
                return;
            };
            let spare = self.parser.spare();
            let room = spare.len().min(READ_CHUNK);
            let Some(spare) = spare.get_mut(..room).filter(|s| !s.is_empty()) else {
                ended = Some(Lost::Error(IoFailure::Other)); // cannot happen: events are drained
                break;
            };
            #[cfg(feature = "tls")]
            let tls = self.tls.as_deref_mut();
            #[cfg(not(feature = "tls"))]
            let tls: Option<&mut TlsState> = None;
            let through_tls = tls.is_some();
            let read = fill(stream, tls, spare);
            let time = self.time();
            match read {
                Ok(0) => {
                    self.parser.finish();
                    stopped = self.drain(time, gate, &server).is_break();
                    if !stopped {
                        ended = Some(Lost::Closed);
                    }
                }
                Ok(n) => {
                    if self.parser.commit(n).is_err() {
                        ended = Some(Lost::Error(IoFailure::Other));
                        break;
                    }
                    if !through_tls && looks_like_tls(&self.parser) {
                        log::error!(
                            "{}: the server answered with TLS: connect with TLS (ClientConfig::tls, --tls)",
                            self.config.server_at(self.session.server())
                        );
                    }
                    self.session.handle_bytes(time);
                    stopped = self.drain(time, gate, &server).is_break();
                    if n < room && !closing && !through_tls {
                        break; // drained: no new edge is missed
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    ended = Some(Lost::Error(e.kind().into()));
                    break;
                }
            }
        }
        let on_event = &mut |e: ClientEvent<'_>| {
            log_event(&server, &e);
            gate.emit(e);
        };
        if let Some(why) = ended {
            let time = self.time();
            self.session.handle_lost(why, time, on_event);
        }
        self.apply_actions(registry, token, on_event);
        // Stopped with the connection still up: come back for the rest.
        self.backlog = stopped && self.stream.is_some() && self.connection_open();
    }

    /// Whether the session still takes this connection's bytes (not after
    /// it closed it: EndOfSession, a resync).
    fn connection_open(&self) -> bool {
        matches!(
            self.session.state(),
            ClientState::Connected | ClientState::LoggedIn
        )
    }
}
