//! [`ClientSession`]: the client side of the protocol (sections 3 and 4) as
//! a state machine that owns no socket and reads no clock: connection
//! states, reconnect backoff, liveness, the Login it must send, sequence
//! tracking across reconnects, exact gaps, new sessions.
//!
//! ```text
//!              connect()                     socket connected: Login sent
//!  DISCONNECTED ────────▶ CONNECTING ───────────────────────────────────▶ CONNECTED
//!       ▲                  │    ▲                                            │ LoginAccepted
//!       │ max retries      │    │ backoff delay over                         ▼
//!       │ (GaveUp)         ▼    │                                         LOGGED_IN
//!       └──────────────── RECONNECTING ◀── connect failed / timeout, ─────────┘
//!                                          closed, error, 3 silent heartbeat intervals,
//!                                          EndOfSession, a restarted server (resync)
//! ```
//!
//! A driver calls, for its one connection:
//!
//! | when | call |
//! |------|------|
//! | to start (and after a user stop) | [`connect`](ClientSession::connect) |
//! | the socket connected | [`handle_connected`](ClientSession::handle_connected) |
//! | bytes were read (any number) | [`handle_bytes`](ClientSession::handle_bytes) |
//! | the parser produced an event | [`handle_event`](ClientSession::handle_event) |
//! | the connection failed or ended | [`handle_lost`](ClientSession::handle_lost) |
//! | the time [`poll_timeout`](ClientSession::poll_timeout) named has come | [`handle_timeout`](ClientSession::handle_timeout) |
//! | after each of these | [`poll_action`](ClientSession::poll_action) until `None`: connect, send, close |
//!
//! Every `handle_*` method reports what it did through `emit`, a
//! [`ClientEvent`] at a time; data frames are passed through borrowed from
//! the parser's buffer, never copied.
//!
//! Sequencing has one owner, the session's [`SequenceTracker`]: it survives
//! reconnects, so the Login asks for exactly the next sequence needed; a
//! range the server no longer retains arrives as one exact
//! [`ClientEvent::Gap`]; a new `session_id` restarts tracking
//! ([`ClientEvent::NewSession`]), and a client that was resuming a session
//! logs in again from the new session's first sequence. The driver's parser
//! is a fresh one per connection; its own sequence events (gaps, new
//! sessions) are ignored here.
//!
//! Skips heal: a gap that shows while logged in (the server skipped this
//! client as slow, protocol section 4.5) is not delivered as a gap but
//! filled by logging in again from its first sequence
//! ([`ClientEvent::Healing`]); only what the server no longer retains is
//! reported. See [the rules](ClientSession#healing-skipped-ranges).
//!
//! Fail-over: the session can rotate over a list of servers of one session
//! (the origin and its relays); the driver connects to the one
//! [`ClientSession::server`] names. See [its rules](ClientSession#fail-over).
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use core::fmt;
use core::time::Duration;

use super::auth::ClientKey;
use super::Time;
use crate::encode::{encode, Payload};
use crate::parse::{Discard, Event};
use crate::policy::{Backoff, Liveness};
use crate::sequence::{Gap, SequenceTracker, Verdict};
use crate::wire::{Message, RejectReason, MAX_FRAME_LEN};
use alloc::vec::Vec;

/// Client settings that are rules, not I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClientSessionConfig {
    /// The first sequence wanted at the first login (0: live data only).
    pub from: u64,
    /// The server's heartbeat interval: silence for three of them means the
    /// connection is dead (1 s).
    pub heartbeat_interval: Duration,
    /// Give up a connection attempt after this long (5 s).
    pub connect_timeout: Duration,
    /// Reconnect delays and the retry limit (100 ms doubling to 30 s, unlimited).
    pub backoff: Backoff,
    /// After an EndOfSession, reconnect (true, the default) or stop.
    pub reconnect_after_end: bool,
    /// How many servers of the session the driver can connect to (the
    /// origin and its relays; 1, the default; 0 counts as 1). See
    /// [fail-over](ClientSession#fail-over): the session names the one to
    /// use next ([`ClientSession::server`]).
    pub servers: usize,
    /// Heal gaps that show while logged in (a slow client the server
    /// skipped): log in again from the first missing sequence instead of
    /// reporting the gap, so that only ranges the server no longer retains
    /// are reported (true, the default). Off: every gap is reported as it
    /// shows, and live data goes on at once (for a client that wants the
    /// freshest data rather than all of it). See
    /// [the rules](ClientSession#healing-skipped-ranges).
    #[cfg_attr(feature = "serde", serde(default = "heal_by_default"))]
    pub heal_gaps: bool,
    /// Credentials to present (protocol section 11): an Auth is sent first
    /// on every connection, then the Login. `None` (the default): no Auth.
    /// Never serialized; `Debug` shows the key id only.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub credentials: Option<ClientKey>,
    /// The session [`from`](Self::from) belongs to, for a receiver that
    /// resumes where it left off (a relay restarted on its journal): the
    /// tracker starts in that session, expecting `from`, so a LoginAccepted
    /// of the same session continues it (no [`ClientEvent::NewSession`]; a
    /// later `sequence` than asked is a [`ClientEvent::Gap`]), and one of
    /// another session is a new session (the server restarted: logged in
    /// again from its first sequence, as after any restart). `None` (the
    /// default): the first LoginAccepted names the session. Ignored when
    /// `from` is 0.
    ///
    /// ```
    /// use tickwire::session::{ClientSession, ClientSessionConfig};
    /// let config = ClientSessionConfig { from: 501, resume_session: Some(0xfeed), ..ClientSessionConfig::default() };
    /// let client = ClientSession::new(config);
    /// assert_eq!((client.tracker().session(), client.tracker().expected()), (Some(0xfeed), Some(501)));
    /// ```
    #[cfg_attr(feature = "serde", serde(default))]
    pub resume_session: Option<u64>,
}

#[cfg(feature = "serde")]
fn heal_by_default() -> bool {
    true
}

impl Default for ClientSessionConfig {
    fn default() -> ClientSessionConfig {
        ClientSessionConfig {
            from: 0,
            heartbeat_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            reconnect_after_end: true,
            servers: 1,
            heal_gaps: true,
            credentials: None,
            resume_session: None,
        }
    }
}

/// The connection states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ClientState {
    /// Not connected and not trying (initially, after a stop, or after giving up).
    Disconnected,
    /// A connection attempt is under way.
    Connecting,
    /// Connected; the Login has been sent, no answer yet.
    Connected,
    /// The server accepted the Login: frames flow.
    LoggedIn,
    /// Waiting out the backoff delay before the next attempt.
    Reconnecting,
}

/// What failed in an I/O operation, as far as the protocol cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum IoFailure {
    /// Connection refused.
    Refused,
    /// Connection reset by the peer.
    Reset,
    /// Connection aborted.
    Aborted,
    /// The operation timed out.
    TimedOut,
    /// Host or network unreachable, or the address is not available.
    Unreachable,
    /// Broken pipe (the peer closed while we wrote).
    BrokenPipe,
    /// The server's host name did not resolve (or resolved to no address;
    /// see `net::ServerAddr`).
    Unresolved,
    /// Anything else.
    Other,
}

impl IoFailure {
    /// A short description.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            IoFailure::Refused => "connection refused",
            IoFailure::Reset => "connection reset",
            IoFailure::Aborted => "connection aborted",
            IoFailure::TimedOut => "timed out",
            IoFailure::Unreachable => "unreachable",
            IoFailure::BrokenPipe => "broken pipe",
            IoFailure::Unresolved => "host name not resolved",
            IoFailure::Other => "i/o error",
        }
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "std")]
impl From<std::io::ErrorKind> for IoFailure {
    fn from(kind: std::io::ErrorKind) -> IoFailure {
        use std::io::ErrorKind as K;
        match kind {
            K::ConnectionRefused => IoFailure::Refused,
            K::ConnectionReset => IoFailure::Reset,
            K::ConnectionAborted => IoFailure::Aborted,
            K::TimedOut => IoFailure::TimedOut,
            K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
                IoFailure::Unreachable
            }
            K::BrokenPipe => IoFailure::BrokenPipe,
            _ => IoFailure::Other,
        }
    }
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Lost {
    /// The connection attempt failed.
    ConnectFailed(IoFailure),
    /// The connection attempt took longer than the connect timeout.
    ConnectTimeout,
    /// The server closed the connection.
    Closed,
    /// A socket error.
    Error(IoFailure),
    /// Nothing heard for three heartbeat intervals.
    Silent,
    /// The server ended the session.
    EndOfSession,
    /// The server restarted with a new session: logging in again from its
    /// first sequence.
    Resync,
    /// Closed by the client to fill a gap the server skipped: logging in
    /// again from its first sequence ([`ClientEvent::Healing`]).
    Heal,
    /// The server refused the connection with a Rejected (protocol section
    /// 11): that server is not tried again with this configuration.
    Rejected(RejectReason),
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            Lost::ConnectTimeout => f.write_str("connect timed out"),
            Lost::Closed => f.write_str("server closed the connection"),
            Lost::Error(e) => write!(f, "connection error: {e}"),
            Lost::Silent => f.write_str("no bytes for three heartbeat intervals"),
            Lost::EndOfSession => f.write_str("end of session"),
            Lost::Resync => f.write_str("new session: logging in again from its start"),
            Lost::Heal => f.write_str("closed to fill a skipped range: logging in again"),
            Lost::Rejected(reason) => write!(f, "rejected by the server: {reason}"),
        }
    }
}

/// Something the client did or received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent<'a> {
    /// A state transition.
    State {
        /// The state left.
        from: ClientState,
        /// The state entered.
        to: ClientState,
    },
    /// The server accepted the login; it sends from `sequence` on.
    LoggedIn {
        /// The server's session.
        session_id: u64,
        /// The first sequence of this connection.
        sequence: u64,
    },
    /// A new frame (data, or a Heartbeat), borrowed from the receive buffer.
    Frame(Message<'a>),
    /// Sequences that will not arrive (the server no longer has them, or
    /// they were lost to damage; with
    /// [`heal_gaps`](ClientSessionConfig::heal_gaps) off, also ranges a
    /// server skipped).
    Gap(Gap),
    /// Sequences `gap` showed missing while logged in (the server skipped
    /// this client as slow): not delivered as a gap; the connection is
    /// closed ([`Lost::Heal`]) and the client logs in again from
    /// `gap.first` after `delay` (zero unless heals follow each other
    /// closely). Whatever the server no longer retains of the range is then
    /// reported as a [`Gap`](ClientEvent::Gap).
    Healing {
        /// The missing range as it showed (the server may have sent more
        /// since).
        gap: Gap,
        /// How long until the new connection attempt.
        delay: Duration,
    },
    /// A new session: sequence tracking restarted.
    NewSession {
        /// The new session.
        session_id: u64,
        /// Its first sequence on this connection.
        sequence: u64,
    },
    /// A data frame already delivered, dropped.
    Duplicate {
        /// Its sequence.
        sequence: u64,
    },
    /// Bytes that were not frames.
    Discarded(Discard),
    /// The server is shutting down; the next data sequence would have been `sequence`.
    EndOfSession {
        /// The next data sequence.
        sequence: u64,
    },
    /// The connection ended.
    Lost(Lost),
    /// The next attempt comes after `delay`.
    Retrying {
        /// Attempts since the last accepted login.
        attempt: u32,
        /// The backoff delay.
        delay: Duration,
    },
    /// Fail-over: the connection to server `from` ended and the next
    /// attempt goes to server `to` (indexes into the driver's list), at once
    /// unless a whole round of servers has failed (then after the backoff
    /// delay, reported by [`Retrying`](ClientEvent::Retrying)).
    Failover {
        /// The server whose connection ended.
        from: usize,
        /// The server tried next.
        to: usize,
    },
    /// The server refused the connection (protocol section 11): `server`
    /// (an index into the driver's list) is not tried again with this
    /// configuration; the next one of the list is, if any (a
    /// [`Failover`](ClientEvent::Failover) follows), else the client gives
    /// up ([`GaveUp`](ClientEvent::GaveUp) with [`Lost::Rejected`]).
    Rejected {
        /// The server that refused.
        server: usize,
        /// Why (codes other than 1, 2 and 3 are read as 2).
        reason: RejectReason,
    },
    /// Retries are exhausted: the client is disconnected for good.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// How the last one ended.
        last: Lost,
    },
}

/// A control frame to send, encoded. `Debug` shows its type and length,
/// never its bytes (an Auth carries a secret).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ControlFrame {
    bytes: [u8; MAX_FRAME_LEN],
    len: usize,
}

impl fmt::Debug for ControlFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.bytes.get(2).copied().and_then(crate::MsgType::from_u8);
        f.debug_struct("ControlFrame")
            .field("msg_type", &kind)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl ControlFrame {
    fn new(payload: &Payload, sequence: u64, timestamp: u64) -> ControlFrame {
        let mut bytes = [0u8; MAX_FRAME_LEN];
        let len = encode(payload, sequence, timestamp, &mut bytes).unwrap_or(0);
        ControlFrame { bytes, len }
    }

    /// The frame's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// What the driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Open a connection to the server (non-blocking), then report
    /// [`handle_connected`](ClientSession::handle_connected) or
    /// [`handle_lost`](ClientSession::handle_lost).
    Connect,
    /// Write this frame on the connection.
    Send(ControlFrame),
    /// Close the connection (if any) and drop its unread bytes; a new
    /// connection gets a fresh parser.
    Close,
}

/// Counters of a [`ClientSession`] (sequence counters are in its tracker).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClientSessionStats {
    /// Connections made (Logins sent).
    pub connects: u64,
    /// Logins accepted.
    pub logins: u64,
    /// Reconnect attempts scheduled.
    pub reconnects: u64,
    /// Switches to another server of the list ([`ClientEvent::Failover`]).
    pub failovers: u64,
    /// Gaps healed by logging in again ([`ClientEvent::Healing`]).
    #[cfg_attr(feature = "serde", serde(default))]
    pub heals: u64,
    /// Connections the server refused with a Rejected (protocol section 11).
    #[cfg_attr(feature = "serde", serde(default))]
    pub rejected: u64,
}

/// The frames a logged-in session takes with no decision: Quotes, Trades
/// and Heartbeats carrying the next sequence (what
/// [`ClientSession::handle_event`] would track in order and emit as they
/// are). A driver takes a run of them from its parser with the expected
/// sequence and the counts in registers
/// ([`take`](SteadyRun::take)), hands anything else to the session after
/// [`ClientSession::end_steady`], and starts a new run from
/// [`ClientSession::steady`]: the sequence is checked once per frame, with
/// no write to the session until the run ends.
#[cfg_attr(not(feature = "net"), allow(dead_code))] // used by the mio client
#[derive(Clone, Copy, Debug)]
pub(crate) struct SteadyRun {
    /// The next sequence; `None`: not logged in, nothing is taken.
    expected: Option<u64>,
    in_order: u64,
    control: u64,
}

impl SteadyRun {
    /// `event`'s message if the session would take it as it is (and now
    /// has), else `None` (the event is the session's to handle).
    #[inline(always)]
    #[cfg_attr(not(feature = "net"), allow(dead_code))] // used by the mio client
    pub(crate) fn take<'a>(&mut self, event: &Event<'a>) -> Option<Message<'a>> {
        let (
            Some(expected),
            Event::Frame(m @ (Message::Quote(_) | Message::Trade(_) | Message::Heartbeat(_))),
        ) = (self.expected, event)
        else {
            return None;
        };
        if m.sequence() != expected {
            return None;
        }
        let data = u64::from(m.is_data());
        self.expected = Some(expected.saturating_add(data));
        self.in_order += data;
        self.control += 1 - data;
        Some(*m)
    }
}

/// The client's protocol state. See the [module docs](self).
///
/// # Fail-over
///
/// With [`ClientSessionConfig::servers`] > 1 the driver holds a list of
/// servers of one session (the origin and its relays, protocol section 10)
/// and connects to the one [`server`](Self::server) names. The rules:
///
/// - The first attempt goes to server 0.
/// - When a connection ends for any reason (connect failed or timed out,
///   closed, error, silent for three heartbeat intervals, EndOfSession), the
///   next server of the list (in order, wrapping) is tried **at once**
///   ([`ClientEvent::Failover`]), with a Login for the next sequence needed:
///   nothing is lost, and frames a server that is behind sends again are
///   dropped as duplicates (section 3; [`ClientEvent::Duplicate`]).
/// - Only when every server of the list has failed since the last accepted
///   login (a whole round) does the client wait out the
///   [backoff](ClientSessionConfig::backoff) delay, then starts the next
///   round at the next server. The retry limit counts rounds, so with one
///   server everything is as without fail-over.
/// - An accepted login ends the round and resets the backoff.
/// - A server that answers with a new session (a restarted origin) is
///   logged in to again at once, from its first sequence: no fail-over.
/// - A server that answers with a Rejected (protocol section 11: the
///   [credentials](ClientSessionConfig::credentials) are missing, not
///   valid, or not enough) is never tried again by this session: the next
///   server that did not refuse is tried at once, and when every server has
///   refused the client gives up ([`ClientEvent::GaveUp`] with
///   [`Lost::Rejected`]). A refusal does not count as a failure of the
///   round.
///
/// # Healing skipped ranges
///
/// A server skips a live client that is slow (protocol section 4.5): it
/// gets no live data until it drains, then sees a gap although the server
/// still retains the range. With
/// [`heal_gaps`](ClientSessionConfig::heal_gaps) on (the default), the
/// rules are:
///
/// - A data frame or Heartbeat that shows missing sequences while logged
///   in (and not right after bytes the parser discarded: a gap after
///   damage is reported, and the connection kept, as before) is not
///   delivered and not reported as a gap: the session emits
///   [`ClientEvent::Healing`] and [`Lost::Heal`], closes the connection and
///   logs in again to the same server with a Login for the first missing
///   sequence. The server replays from there and joins the live stream
///   (section 4.3): every frame arrives once, in order; frames already
///   delivered are never asked for.
/// - What the server no longer retains is reported exactly as after any
///   login answered from later than asked: one [`ClientEvent::Gap`]. So is
///   a range the server does not have although it has later frames (a
///   relay's hole): when the same gap shows again right after a heal's
///   login, nothing delivered since, it is reported, not healed again.
///   Only such gaps, gaps right after damage, and an EndOfSession's are
///   reported.
/// - One heal at a time, and no loop: the first heal reconnects at once; a
///   heal that starts within ten heartbeat intervals (10 s) of the previous
///   heal's accepted login waits the [backoff](ClientSessionConfig::backoff)
///   delays (100 ms, 200 ms, … 30 s by default; the retry limit does not
///   apply), which start over after a calm spell. A server that keeps
///   skipping thus costs at most one reconnect per 30 s, and nothing is
///   lost while the server retains the range.
/// - Healing reconnects count in [`ClientSessionStats::heals`], not as
///   failures: fail-over and the retry limit are not involved.
///
/// ```
/// use core::time::Duration;
/// use tickwire::encode::{encode, Payload, QuoteFields};
/// use tickwire::parse::{Event, SliceParser};
/// use tickwire::session::{Action, ClientEvent, ClientSession, ClientSessionConfig, Lost, Time};
///
/// let mut config = ClientSessionConfig::default();
/// config.from = 1;
/// let mut client = ClientSession::new(config);
/// let t = |ms| Time::new(Duration::from_millis(ms), 0);
/// let mut ignore = |_: ClientEvent<'_>| {};
/// client.connect(t(0), &mut ignore);
/// client.handle_connected(t(1), &mut ignore);
/// while client.poll_action().is_some() {} // Connect, then the Login for 1
///
/// // The server accepts from 1, sends 1, skips 2..=4 and goes on with 5.
/// let quote = Payload::Quote(QuoteFields { instrument_id: 1, bid_price: 1, ask_price: 2, bid_size: 1, ask_size: 1 });
/// let mut bytes = vec![0u8; 256];
/// let mut n = encode(&Payload::LoginAccepted { session_id: 7 }, 1, 0, &mut bytes)?;
/// n += encode(&quote, 1, 0, &mut bytes[n..])?;
/// n += encode(&quote, 5, 0, &mut bytes[n..])?;
/// let mut events = Vec::new();
/// for event in SliceParser::new(&bytes[..n]) {
///     if matches!(event, Event::Frame(_)) {
///         client.handle_event(event, t(2), &mut |e| events.push(format!("{e:?}")));
///     }
/// }
/// // Frame 1 is delivered; frame 5 is not: the client heals 2..=4 at once.
/// assert!(events.iter().any(|e| e.starts_with("Healing { gap: Gap { first: 2, last: 4 }")));
/// assert!(events.iter().all(|e| !e.starts_with("Gap")));
/// assert_eq!(client.last_lost(), Some(Lost::Heal));
/// assert_eq!(client.poll_action(), Some(Action::Close));
/// assert_eq!(client.poll_action(), Some(Action::Connect));
/// assert_eq!(client.tracker().expected(), Some(2)); // the next Login asks for 2
/// assert_eq!(client.stats().heals, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ```
/// use core::time::Duration;
/// use tickwire::session::{Action, ClientEvent, ClientSession, ClientSessionConfig, IoFailure, Lost, Time};
///
/// let mut config = ClientSessionConfig::default();
/// config.servers = 3;
/// let mut client = ClientSession::new(config);
/// let t = |ms| Time::new(Duration::from_millis(ms), 0);
/// let mut events = Vec::new();
/// client.connect(t(0), &mut |e: ClientEvent<'_>| events.push(format!("{e:?}")));
/// assert_eq!((client.poll_action(), client.server()), (Some(Action::Connect), 0));
/// // Server 0 refuses: server 1 is tried at once, then server 2.
/// for next in [1, 2] {
///     client.handle_lost(Lost::ConnectFailed(IoFailure::Refused), t(1), &mut |_| {});
///     assert_eq!(client.poll_action(), Some(Action::Close));
///     assert_eq!((client.poll_action(), client.server()), (Some(Action::Connect), next));
/// }
/// // The whole round failed: back off (100 ms), then server 0 again.
/// client.handle_lost(Lost::ConnectFailed(IoFailure::Refused), t(2), &mut |_| {});
/// assert_eq!(client.poll_action(), Some(Action::Close));
/// assert_eq!(client.poll_action(), None);
/// assert_eq!((client.server(), client.poll_timeout()), (0, Some(Duration::from_millis(102))));
/// ```
///
/// ```
/// use core::time::Duration;
/// use tickwire::session::{Action, ClientSession, ClientSessionConfig, ClientState, Time};
///
/// let mut config = ClientSessionConfig::default();
/// config.from = 1;
/// let mut client = ClientSession::new(config);
/// let t = |ms| Time::new(Duration::from_millis(ms), 0);
/// let mut ignore = |_| {};
/// client.connect(t(0), &mut ignore);
/// assert_eq!(client.poll_action(), Some(Action::Connect));
/// client.handle_connected(t(1), &mut ignore);
/// assert!(matches!(client.poll_action(), Some(Action::Send(_)))); // Login, sequence 1
/// assert_eq!(client.state(), ClientState::Connected);
/// // The server never answers: dead after three 1 s heartbeat intervals.
/// assert_eq!(client.poll_timeout(), Some(Duration::from_millis(3001) + Duration::from_nanos(1)));
/// client.handle_timeout(t(3002), &mut ignore);
/// assert_eq!(client.poll_action(), Some(Action::Close));
/// assert_eq!(client.state(), ClientState::Reconnecting);
/// assert_eq!(client.poll_timeout(), Some(Duration::from_millis(3102))); // backoff: 100 ms
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ClientSession {
    config: ClientSessionConfig,
    state: ClientState,
    tracker: SequenceTracker,
    backoff: Backoff,
    liveness: Liveness,
    retry_at: Option<Duration>,
    connect_deadline: Option<Duration>,
    actions: VecDeque<Action>,
    /// The first sequence to ask for while no frame has set an expectation.
    from: u64,
    /// The sequence asked for in the last Login.
    wanted: u64,
    /// The session of the last accepted login.
    session: Option<u64>,
    last_lost: Option<Lost>,
    stopped: bool,
    stats: ClientSessionStats,
    /// The server to connect to (an index into the driver's list).
    server: usize,
    /// Servers that failed since the last accepted login or the last
    /// backoff delay: a round is over when all of them have.
    failed_in_round: usize,
    /// The delays between heals that follow each other closely.
    heal_backoff: Backoff,
    /// A heal's connection is under way (until its login is accepted).
    healing: bool,
    /// When the login of the last heal was accepted.
    healed_at: Option<Duration>,
    /// Bytes were discarded on this connection since the last frame: a gap
    /// now is damage, not a skip.
    damaged: bool,
    /// The servers that sent a Rejected (by index): never tried again.
    rejected: Vec<bool>,
    /// The first sequence the last heal asked for: a gap that shows again
    /// there, nothing delivered since, is a range the server does not have
    /// (a relay's hole), reported rather than healed again.
    healed_from: Option<u64>,
}

impl ClientSession {
    /// A disconnected session; [`connect`](Self::connect) starts it.
    #[must_use]
    pub fn new(config: ClientSessionConfig) -> ClientSession {
        let resumed = config.resume_session.filter(|_| config.from != 0);
        ClientSession {
            tracker: match resumed {
                Some(session) => SequenceTracker::resuming(session, config.from),
                None => fresh_tracker(config.from),
            },
            backoff: config.backoff,
            liveness: Liveness::new(config.heartbeat_interval, Duration::ZERO),
            from: config.from,
            config,
            state: ClientState::Disconnected,
            retry_at: None,
            connect_deadline: None,
            actions: VecDeque::with_capacity(4),
            wanted: 0,
            session: resumed,
            last_lost: None,
            stopped: false,
            stats: ClientSessionStats::default(),
            server: 0,
            failed_in_round: 0,
            heal_backoff: config.backoff.with_max_retries(None),
            healing: false,
            healed_at: None,
            damaged: false,
            healed_from: None,
            rejected: Vec::new(),
        }
    }

    /// The server the current (or next) connection attempt goes to: an
    /// index below [`ClientSessionConfig::servers`] into the driver's list.
    /// Read it when [`Action::Connect`] comes out of
    /// [`poll_action`](Self::poll_action).
    #[must_use]
    pub fn server(&self) -> usize {
        self.server
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The sequence tracker: the next sequence needed, the session, the
    /// gap and duplicate counters.
    #[must_use]
    pub fn tracker(&self) -> &SequenceTracker {
        &self.tracker
    }

    /// Connection counters.
    #[must_use]
    pub fn stats(&self) -> ClientSessionStats {
        self.stats
    }

    /// Stopped for good: gave up, stopped after an EndOfSession as
    /// configured, or [`stop`](Self::stop)ped.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// How the last connection ended.
    #[must_use]
    pub fn last_lost(&self) -> Option<Lost> {
        self.last_lost
    }

    /// Attempts since the last accepted login.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.backoff.attempts()
    }

    /// The next action for the driver, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called: the
    /// connect deadline, the liveness deadline, or the end of the backoff.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        match self.state {
            ClientState::Connecting => self.connect_deadline,
            ClientState::Connected | ClientState::LoggedIn => Some(
                self.liveness
                    .deadline()
                    .saturating_add(Duration::from_nanos(1)),
            ),
            ClientState::Reconnecting => self.retry_at,
            ClientState::Disconnected => None,
        }
    }

    fn set_state<'a>(&mut self, to: ClientState, emit: &mut impl FnMut(ClientEvent<'a>)) {
        let from = self.state;
        if from != to {
            self.state = to;
            emit(ClientEvent::State { from, to });
        }
    }

    /// Starts connecting (from `Disconnected`, including after a stop or
    /// after giving up: the retry count starts over).
    pub fn connect<'a>(&mut self, time: Time, emit: &mut impl FnMut(ClientEvent<'a>)) {
        if self.state != ClientState::Disconnected {
            return;
        }
        if self.stopped {
            self.stopped = false;
            self.backoff.reset();
            self.failed_in_round = 0;
        }
        self.start_attempt(time.monotonic, emit);
    }

    fn start_attempt<'a>(&mut self, now: Duration, emit: &mut impl FnMut(ClientEvent<'a>)) {
        self.retry_at = None;
        self.connect_deadline = Some(now.saturating_add(self.config.connect_timeout));
        self.set_state(ClientState::Connecting, emit);
        self.actions.push_back(Action::Connect);
    }

    /// Stops: closes the connection, no more attempts until
    /// [`connect`](Self::connect).
    pub fn stop<'a>(&mut self, emit: &mut impl FnMut(ClientEvent<'a>)) {
        if self.state != ClientState::Disconnected {
            self.actions.push_back(Action::Close);
        }
        self.retry_at = None;
        self.connect_deadline = None;
        self.set_state(ClientState::Disconnected, emit);
        self.stopped = true;
    }

    /// The socket connected: the Login for the next sequence needed is
    /// queued ([`Action::Send`]) and liveness starts.
    pub fn handle_connected<'a>(&mut self, time: Time, emit: &mut impl FnMut(ClientEvent<'a>)) {
        if self.state != ClientState::Connecting {
            return;
        }
        self.connect_deadline = None;
        self.damaged = false;
        self.wanted = self.tracker.expected().unwrap_or(self.from);
        if let Some(key) = self.config.credentials {
            // Section 11: the Auth first, the Login after it (one write).
            self.actions.push_back(Action::Send(ControlFrame::new(
                &Payload::auth(&key.key_id, key.secret),
                0,
                time.unix_nanos,
            )));
        }
        self.actions.push_back(Action::Send(ControlFrame::new(
            &Payload::Login,
            self.wanted,
            time.unix_nanos,
        )));
        self.stats.connects += 1;
        self.liveness = Liveness::new(self.config.heartbeat_interval, time.monotonic);
        self.set_state(ClientState::Connected, emit);
    }

    /// Bytes arrived on the connection (whole frames or not): the server is alive.
    pub fn handle_bytes(&mut self, time: Time) {
        self.liveness.heard(time.monotonic);
    }

    /// An event of the driver's parser, in order. Frames are tracked and
    /// passed to `emit`; the Login's answer, EndOfSession and a restarted
    /// server are acted on.
    ///
    /// Nearly every event is a Quote, Trade or Heartbeat with the next
    /// sequence on a logged-in connection: that case is handled here, small
    /// enough to be compiled into the driver's parsing loop (with the
    /// message's type known there, it costs one compare); everything else
    /// goes through the general rules out of line.
    #[inline(always)]
    pub fn handle_event<'a>(
        &mut self,
        event: Event<'a>,
        time: Time,
        emit: &mut impl FnMut(ClientEvent<'a>),
    ) {
        if let Event::Frame(m @ (Message::Quote(_) | Message::Trade(_) | Message::Heartbeat(_))) =
            event
        {
            // What the general rules do for this frame: not a gap to heal
            // (its sequence is the expected one), tracked in order, emitted.
            if self.state == ClientState::LoggedIn
                && self
                    .tracker
                    .observe_in_order(m.msg_type(), m.sequence())
                    .is_some()
            {
                self.damaged = false;
                emit(ClientEvent::Frame(m));
                return;
            }
        }
        self.handle_any_event(event, time, emit);
    }

    /// The session's steady state as a value a driver keeps in registers
    /// while it drains a parser: see [`SteadyRun`]. Hand it back with
    /// [`end_steady`](Self::end_steady) before any other call.
    #[inline(always)]
    #[cfg_attr(not(feature = "net"), allow(dead_code))] // used by the mio client
    pub(crate) fn steady(&self) -> SteadyRun {
        SteadyRun {
            expected: if self.state == ClientState::LoggedIn {
                self.tracker.expected()
            } else {
                None
            },
            in_order: 0,
            control: 0,
        }
    }

    /// Records the frames `run` took, as [`handle_event`](Self::handle_event)
    /// would have one by one.
    #[inline(always)]
    #[cfg_attr(not(feature = "net"), allow(dead_code))] // used by the mio client
    pub(crate) fn end_steady(&mut self, run: SteadyRun) {
        if let (Some(expected), true) = (run.expected, run.in_order + run.control > 0) {
            self.tracker
                .commit_in_order(expected, run.in_order, run.control);
            self.damaged = false;
        }
    }

    /// [`handle_event`](Self::handle_event)'s general rules.
    #[inline(never)]
    fn handle_any_event<'a>(
        &mut self,
        event: Event<'a>,
        time: Time,
        emit: &mut impl FnMut(ClientEvent<'a>),
    ) {
        if !matches!(self.state, ClientState::Connected | ClientState::LoggedIn) {
            return; // the connection is being abandoned
        }
        match event {
            Event::Frame(Message::LoginAccepted(la))
            | Event::Duplicate(Message::LoginAccepted(la)) => {
                self.login_accepted(la.session_id(), la.sequence(), time, emit);
            }
            Event::Frame(Message::Rejected(r)) | Event::Duplicate(Message::Rejected(r)) => {
                let reason = r.reason();
                emit(ClientEvent::Rejected {
                    server: self.server,
                    reason,
                });
                self.stats.rejected += 1;
                let servers = self.config.servers.max(1);
                if self.rejected.len() < servers {
                    self.rejected.resize(servers, false);
                }
                if let Some(place) = self.rejected.get_mut(self.server) {
                    *place = true;
                }
                self.lost(Lost::Rejected(reason), time.monotonic, emit);
            }
            Event::Frame(m) | Event::Duplicate(m) if self.heals(&m) => {
                self.heal(m.sequence(), time.monotonic, emit);
            }
            Event::Frame(m) | Event::Duplicate(m) => {
                self.damaged = false;
                match self.tracker.observe_message(&m) {
                    Verdict::Duplicate => emit(ClientEvent::Duplicate {
                        sequence: m.sequence(),
                    }),
                    Verdict::Gap(gap) => {
                        emit(ClientEvent::Gap(gap));
                        self.frame(m, time, emit);
                    }
                    _ => self.frame(m, time, emit),
                }
            }
            Event::Discarded(d) => {
                self.damaged = true;
                emit(ClientEvent::Discarded(d));
            }
            // The per-connection parser's own sequence view: the tracker
            // here is the one that counts.
            _ => {}
        }
    }

    /// Whether `m` shows a gap to heal: healing is on, the client is logged
    /// in, no bytes were discarded since the last frame (a gap after damage
    /// is reported), the last heal did not ask for the same sequence (the
    /// server does not have it), and `m` is a data frame or Heartbeat past
    /// the next sequence expected.
    fn heals(&self, m: &Message<'_>) -> bool {
        self.config.heal_gaps
            && self.state == ClientState::LoggedIn
            && !self.damaged
            && self.tracker.expected() != self.healed_from
            && (m.is_data() || matches!(m, Message::Heartbeat(_)))
            && self
                .tracker
                .expected()
                .is_some_and(|expected| m.sequence() > expected)
    }

    /// Closes the connection to log in again from the next sequence
    /// expected, the first of the range up to `seen` (excluded) that the
    /// server skipped; the tracker is left as it was.
    fn heal<'a>(&mut self, seen: u64, now: Duration, emit: &mut impl FnMut(ClientEvent<'a>)) {
        let Some(first) = self.tracker.expected() else {
            return;
        };
        let gap = Gap {
            first,
            last: seen.saturating_sub(1),
        };
        let calm = self.config.heartbeat_interval.saturating_mul(HEAL_CALM);
        let close = self
            .healed_at
            .is_some_and(|at| now.saturating_sub(at) < calm);
        let delay = if close {
            self.heal_backoff.next_delay().unwrap_or(Duration::ZERO)
        } else {
            self.heal_backoff.reset();
            Duration::ZERO
        };
        self.stats.heals += 1;
        self.healing = true;
        self.healed_from = Some(first);
        emit(ClientEvent::Healing { gap, delay });
        self.actions.push_back(Action::Close);
        self.last_lost = Some(Lost::Heal);
        emit(ClientEvent::Lost(Lost::Heal));
        self.stats.reconnects += 1;
        if delay.is_zero() {
            self.start_attempt(now, emit);
        } else {
            self.set_state(ClientState::Reconnecting, emit);
            emit(ClientEvent::Retrying {
                attempt: self.heal_backoff.attempts(),
                delay,
            });
            self.retry_at = Some(now.saturating_add(delay));
        }
    }

    fn frame<'a>(&mut self, m: Message<'a>, time: Time, emit: &mut impl FnMut(ClientEvent<'a>)) {
        if let Message::EndOfSession(e) = m {
            emit(ClientEvent::EndOfSession {
                sequence: e.sequence(),
            });
            self.lost(Lost::EndOfSession, time.monotonic, emit);
        } else {
            emit(ClientEvent::Frame(m));
        }
    }

    fn login_accepted<'a>(
        &mut self,
        session_id: u64,
        sequence: u64,
        time: Time,
        emit: &mut impl FnMut(ClientEvent<'a>),
    ) {
        let restarted = self.session.is_some_and(|previous| previous != session_id);
        if restarted && self.from != 0 && sequence > 1 {
            // A restarted server: our sequence meant nothing to it. Log in
            // again from its first sequence (a live-only client just goes on).
            self.tracker = fresh_tracker(1);
            self.from = 1;
            self.session = None;
            self.actions.push_back(Action::Close);
            self.last_lost = Some(Lost::Resync);
            emit(ClientEvent::Lost(Lost::Resync));
            self.set_state(ClientState::Reconnecting, emit);
            self.retry_at = Some(time.monotonic);
            return;
        }
        // A first login answered from later than asked (section 4.2): the
        // range before is gone from the server; say so exactly.
        let first_gap = if self.tracker.session().is_none() && self.wanted != 0 {
            self.tracker.skip_to(sequence)
        } else {
            None
        };
        let verdict = self
            .tracker
            .observe(crate::MsgType::LoginAccepted, sequence, session_id);
        if let Verdict::NewSession {
            session_id,
            sequence,
        } = verdict
        {
            emit(ClientEvent::NewSession {
                session_id,
                sequence,
            });
        }
        self.session = Some(session_id);
        self.backoff.reset();
        self.failed_in_round = 0;
        self.stats.logins += 1;
        if core::mem::take(&mut self.healing) {
            self.healed_at = Some(time.monotonic);
        }
        self.set_state(ClientState::LoggedIn, emit);
        emit(ClientEvent::LoggedIn {
            session_id,
            sequence,
        });
        if let Some(gap) = first_gap {
            emit(ClientEvent::Gap(gap));
        }
        if let Verdict::Gap(gap) = verdict {
            emit(ClientEvent::Gap(gap));
        }
    }

    /// The connection failed or ended (connect error, end of stream, socket
    /// error): a retry is scheduled after the backoff delay, or the client
    /// gives up.
    pub fn handle_lost<'a>(
        &mut self,
        why: Lost,
        time: Time,
        emit: &mut impl FnMut(ClientEvent<'a>),
    ) {
        if matches!(
            self.state,
            ClientState::Connecting | ClientState::Connected | ClientState::LoggedIn
        ) {
            self.lost(why, time.monotonic, emit);
        }
    }

    /// Call when [`poll_timeout`](Self::poll_timeout)'s time has come: a
    /// connect that took too long or a silent connection is given up, a
    /// backoff that is over starts the next attempt.
    pub fn handle_timeout<'a>(&mut self, time: Time, emit: &mut impl FnMut(ClientEvent<'a>)) {
        let now = time.monotonic;
        match self.state {
            ClientState::Connecting if self.connect_deadline.is_some_and(|d| now >= d) => {
                self.lost(Lost::ConnectTimeout, now, emit);
            }
            ClientState::Connected | ClientState::LoggedIn if self.liveness.is_dead(now) => {
                self.lost(Lost::Silent, now, emit);
            }
            ClientState::Reconnecting if self.retry_at.is_some_and(|at| now >= at) => {
                self.start_attempt(now, emit);
            }
            _ => {}
        }
    }

    fn lost<'a>(&mut self, why: Lost, now: Duration, emit: &mut impl FnMut(ClientEvent<'a>)) {
        self.actions.push_back(Action::Close);
        self.connect_deadline = None;
        self.last_lost = Some(why);
        emit(ClientEvent::Lost(why));
        if why == Lost::EndOfSession && !self.config.reconnect_after_end {
            self.set_state(ClientState::Disconnected, emit);
            self.stopped = true;
            return;
        }
        let servers = self.config.servers.max(1);
        let refused = self.rejected.iter().filter(|&&r| r).count();
        if refused >= servers {
            // Every server refused these credentials (section 11, rule 5).
            self.set_state(ClientState::Disconnected, emit);
            self.stopped = true;
            emit(ClientEvent::GaveUp {
                attempts: self.backoff.attempts(),
                last: why,
            });
            return;
        }
        if !matches!(why, Lost::Rejected(_)) {
            // (A server that refused is out of every round from now on.)
            self.failed_in_round += 1;
        }
        if servers > 1 {
            let from = self.server;
            let mut to = (from + 1) % servers;
            while self.rejected.get(to).copied().unwrap_or(false) {
                to = (to + 1) % servers;
            }
            self.server = to;
            self.stats.failovers += 1;
            emit(ClientEvent::Failover {
                from,
                to: self.server,
            });
            if self.failed_in_round < servers - refused {
                // Another server of the round is left: try it at once.
                self.stats.reconnects += 1;
                self.start_attempt(now, emit);
                return;
            }
        }
        // A whole round failed (with one server: its one attempt): back off.
        self.failed_in_round = 0;
        match self.backoff.next_delay() {
            Some(delay) => {
                self.stats.reconnects += 1;
                self.set_state(ClientState::Reconnecting, emit);
                emit(ClientEvent::Retrying {
                    attempt: self.backoff.attempts(),
                    delay,
                });
                self.retry_at = Some(now.saturating_add(delay));
            }
            None => {
                self.set_state(ClientState::Disconnected, emit);
                self.stopped = true;
                emit(ClientEvent::GaveUp {
                    attempts: self.backoff.attempts(),
                    last: why,
                });
            }
        }
    }
}

/// Heals within this many heartbeat intervals of the previous heal's login
/// wait the backoff delays.
const HEAL_CALM: u32 = 10;

/// A tracker for a client that wants `from` (0: live only, no expectation).
fn fresh_tracker(from: u64) -> SequenceTracker {
    if from == 0 {
        SequenceTracker::new()
    } else {
        SequenceTracker::expecting(from)
    }
}
