//! [`ServerSession`]: the server side of one TCP connection (protocol
//! section 4), as a state machine that owns no socket and reads no clock.
//!
//! ```text
//!            Login (within login_timeout)             replay reached the live edge
//!  AwaitingLogin ───────────────────────▶ Replaying ─────────────────────────▶ Live
//!        │ timeout, garbage, other frame     │ slow: no progress            │ slow: backlog over the
//!        ▼                                   ▼                              ▼ threshold for slow_grace
//!     Closed(reason)                    marked slow (Skip) / Closed (Disconnect)
//!                          shutdown(): EndOfSession queued ─▶ Closing ─▶ Closed(Shutdown)
//!
//!            Retransmit first (within login_timeout)
//!  AwaitingLogin ───────────────────────▶ Retransmitting (section 9: replies only, never live data)
//! ```
//!
//! Retransmission connections (protocol section 9): a connection whose first
//! frame is a Retransmit gets, for each request, in order and with nothing in
//! between, LoginAccepted (`sequence` f), the retained data frames of f..=e
//! byte for byte (shared segments of the retention, not copies), and a
//! Heartbeat ending the reply (`sequence` e + 1, or f if f > e), where
//! e = min(s + count − 1, s + cap − 1, last published) and f = max(s, oldest
//! retained). The cap is
//! [`retransmit_cap`](ServerSessionConfig::retransmit_cap) (10,000 frames by
//! default, [`RETRANSMIT_CAP`]). A request for another session (a non-zero
//! `session_id` other than this server's) is answered LoginAccepted(own
//! session_id, s) then Heartbeat(s). Each reply is queued when its request is
//! read (so e is the last sequence published then); between replies the
//! connection gets idle Heartbeats carrying the next live sequence. A Login,
//! a data frame, a Retransmit with `sequence` 0 or `count` 0, or bytes that
//! are not frames close it; so does a client whose unread replies would pass
//! [`queue_limit`](ServerSessionConfig::queue_limit) (closed as
//! [`CloseReason::Slow`]: it has no live data to skip). The no-progress rule
//! applies as to logged-in clients; the slow-backlog rules do not (there is no
//! live data to hold back).
//!
//! A driver (the mio server, or your own) calls, for each connection:
//!
//! | when | call |
//! |------|------|
//! | a frame (or discard) was parsed from the client's bytes | [`handle_event`](ServerSession::handle_event) |
//! | a batch was published (after [`Retention::push`]) | [`handle_published`](ServerSession::handle_published) |
//! | the time [`poll_timeout`](ServerSession::poll_timeout) named has come | [`handle_timeout`](ServerSession::handle_timeout), with the kernel's send-queue length |
//! | the socket can take bytes | [`poll_transmit`](ServerSession::poll_transmit), write, then [`transmitted`](ServerSession::transmitted) |
//! | after any of these | [`poll_close`](ServerSession::poll_close), [`poll_event`](ServerSession::poll_event) |
//!
//! Replay is pulled from the [`Retention`] only as the socket takes bytes, a
//! bounded amount per [`poll_transmit`](ServerSession::poll_transmit), so a
//! replaying client costs the event loop what its socket takes and nothing
//! more; live batches are queued as shared [`Segment`]s, never copied.
//!
//! Slow clients: a live client whose pending bytes (queued here plus the
//! kernel send queue the driver reports) stay over
//! [`slow_threshold`](ServerSessionConfig::slow_threshold), without
//! shrinking, for [`slow_grace`](ServerSessionConfig::slow_grace), or whose queue would pass
//! [`queue_limit`](ServerSessionConfig::queue_limit), is slow; so is a
//! replaying client whose socket takes nothing for `slow_grace`. Under
//! [`SlowPolicy::Skip`] a slow live client gets no live data until its
//! backlog falls under half the threshold (it then sees a gap, and can log in
//! again to replay it); under [`SlowPolicy::Disconnect`] it is closed. The
//! grace is what lets a client that has just caught up from a replay, its
//! kernel queue still full of replayed bytes, drain it at full speed without
//! being called slow.
//!
//! No progress: a logged-in client that owes bytes (queued here, or in the
//! kernel's send queue the driver reports) and takes none of them, under
//! either policy, for
//! [`no_progress_intervals`](ServerSessionConfig::no_progress_intervals)
//! heartbeat intervals (5) is closed with [`CloseReason::NoProgress`]: a
//! peer that vanished without a FIN or RST (half-open), or one that stopped
//! reading. Taking is measured as bytes written minus the kernel's send
//! queue: the bytes the peer acknowledged. The kernel's queue is known only
//! at checks: heartbeat deadlines, backlog checks while bytes wait here,
//! and once per heartbeat interval (and at the deadline itself) while bytes
//! are known to be owed; progress restarts the window from the check that
//! saw it. Bytes written are owed until a check finds the kernel's queue
//! empty, so a client that is written to is checked once per heartbeat
//! interval; even an idle feed owes the client its Heartbeats. A vanished
//! client is found within about `no_progress_intervals + 1` intervals,
//! whether it is sent data continuously or only Heartbeats (the mio server
//! also sets `TCP_USER_TIMEOUT` as a backstop).
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::fmt;
use core::time::Duration;

use super::outbound::{ColdCursor, OutQueue, Piece};
pub use super::outbound::{FileFront, OwnedTransmit, Transmit};
use super::retention::{Batch, Retention, Segment};
use super::Time;

mod replay;
use crate::encode::{encode, Payload};
use crate::parse::Event;
use crate::wire::{Message, RejectReason, Retransmit, MAX_FRAME_LEN};
pub use replay::ColdFetch;
use replay::{read_cold, PendingReply};

/// The default limit on the frames one Retransmit reply covers (protocol
/// section 9.2's cap): 10,000 frames, at most 440,000 bytes.
pub const RETRANSMIT_CAP: u64 = 10_000;

/// How long a rejected connection is drained at most (protocol section 11):
/// 1 s.
pub const REJECT_DRAIN: Duration = Duration::from_secs(1);
/// How many of a rejected client's bytes are read and discarded at most:
/// 4 KiB.
pub const REJECT_DRAIN_BYTES: usize = 4096;

/// How often the backlog of a client with bytes pending is checked.
pub const BACKLOG_CHECK: Duration = Duration::from_millis(10);
/// What to do with a slow client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SlowPolicy {
    /// Send it no live data until it drains; it sees a gap.
    Skip,
    /// Close its connection.
    Disconnect,
}

/// Why a connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// The server shut down (after EndOfSession).
    Shutdown,
    /// Over the server's limit on logged-in clients.
    MaxClients,
    /// Logged in, with bytes owed, and the peer took none of them for
    /// [`no_progress_intervals`](ServerSessionConfig::no_progress_intervals)
    /// heartbeat intervals: a vanished (half-open) or frozen client.
    NoProgress,
    /// Not logged in, and displaced by a newer connection when the server's
    /// limit on connections that have not logged in (overall or per peer
    /// address) was reached: the oldest such connection goes first.
    UnauthenticatedLimit,
    /// Sent Rejected (protocol section 11: authentication required, not
    /// authorized or not permitted), then drained: the peer closed, or 1 s
    /// or 4 KiB of its bytes passed.
    Rejected,
    /// Its address was locked out after failed authentications (protocol
    /// section 11): closed at its accept, nothing read or written.
    LockedOut,
    /// Its replay needed frames from the cold source behind the retention
    /// (the journal) and reading them failed: damage in the middle of the
    /// journal, a segment deleted under the reader, an I/O error. The
    /// replay stops there rather than send a gap (protocol section 4.3).
    ReplayFailed,
}

impl CloseReason {
    /// Every reason, in declaration order (the order of
    /// [`CloseReason::index`]).
    pub const ALL: [CloseReason; 14] = [
        CloseReason::PeerClosed,
        CloseReason::LoginTimeout,
        CloseReason::BadData,
        CloseReason::UnexpectedFrame,
        CloseReason::SecondLogin,
        CloseReason::Slow,
        CloseReason::IoError,
        CloseReason::Shutdown,
        CloseReason::MaxClients,
        CloseReason::NoProgress,
        CloseReason::UnauthenticatedLimit,
        CloseReason::Rejected,
        CloseReason::LockedOut,
        CloseReason::ReplayFailed,
    ];

    /// The position of this reason in [`CloseReason::ALL`].
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short name for logs and status lines.
    ///
    /// ```
    /// assert_eq!(tickwire::session::CloseReason::LoginTimeout.as_str(), "login timeout");
    /// ```
    #[must_use]
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
            CloseReason::NoProgress => "no progress",
            CloseReason::UnauthenticatedLimit => "unauthenticated limit",
            CloseReason::Rejected => "rejected",
            CloseReason::LockedOut => "locked out",
            CloseReason::ReplayFailed => "replay failed",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rules of one server connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ServerSessionConfig {
    /// The session id sent in LoginAccepted.
    pub session_id: u64,
    /// Close a connection that sends no Login within this time (5 s).
    pub login_timeout: Duration,
    /// Send a Heartbeat after this long without sending anything (1 s).
    pub heartbeat_interval: Duration,
    /// Pending bytes (queued here + kernel send queue) over which a live
    /// client is slow once `slow_grace` has passed (1 MiB).
    pub slow_threshold: usize,
    /// How long a backlog may stay over the threshold, or a replaying
    /// client's socket take nothing, before the client is slow (100 ms).
    pub slow_grace: Duration,
    /// The most bytes queued here for one client (4 MiB): the memory bound.
    pub queue_limit: usize,
    /// What happens to a slow client ([`SlowPolicy::Skip`]).
    pub slow_policy: SlowPolicy,
    /// A logged-in client that owes bytes (queued here or in the kernel's
    /// send queue) and takes none of them for this many heartbeat intervals
    /// is closed with [`CloseReason::NoProgress`], under either slow policy
    /// (5; 0 turns the rule off). Taking means the peer acknowledged bytes:
    /// bytes written minus the kernel's send queue grew (where the driver
    /// cannot read the kernel queue it reports 0, and writes count).
    pub no_progress_intervals: u32,
    /// The most data frames one Retransmit reply covers (protocol section
    /// 9.2's cap; [`RETRANSMIT_CAP`], at least 1 is used).
    pub retransmit_cap: u64,
}

impl ServerSessionConfig {
    /// The defaults, for `session_id`.
    ///
    /// ```
    /// let c = tickwire::session::ServerSessionConfig::new(7);
    /// assert_eq!(c.login_timeout, core::time::Duration::from_secs(5));
    /// ```
    #[must_use]
    pub const fn new(session_id: u64) -> ServerSessionConfig {
        ServerSessionConfig {
            session_id,
            login_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            slow_threshold: 1 << 20,
            slow_grace: Duration::from_millis(100),
            queue_limit: 4 << 20,
            slow_policy: SlowPolicy::Skip,
            no_progress_intervals: 5,
            retransmit_cap: RETRANSMIT_CAP,
        }
    }

    /// How long a client may owe bytes without taking any:
    /// [`no_progress_intervals`](Self::no_progress_intervals) heartbeat
    /// intervals, `None` when the rule is off.
    ///
    /// ```
    /// use core::time::Duration;
    /// let mut c = tickwire::session::ServerSessionConfig::new(7);
    /// assert_eq!(c.no_progress_window(), Some(Duration::from_secs(5)));
    /// c.no_progress_intervals = 0;
    /// assert_eq!(c.no_progress_window(), None);
    /// ```
    #[must_use]
    pub fn no_progress_window(&self) -> Option<Duration> {
        (self.no_progress_intervals > 0).then(|| {
            self.heartbeat_interval
                .saturating_mul(self.no_progress_intervals)
        })
    }
}

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerPhase {
    /// Connected, no Login yet.
    AwaitingLogin,
    /// Logged in, sending retained frames.
    Replaying,
    /// Logged in, sending live data.
    Live,
    /// A retransmission connection (its first frame was a Retransmit,
    /// protocol section 9): replies to requests, never live data.
    Retransmitting,
    /// EndOfSession queued; closes once it is written.
    Closing,
    /// Rejected queued (protocol section 11): once it is written the
    /// sending side is shut down and the client's bytes are discarded until
    /// it closes (at most [`REJECT_DRAIN`] or [`REJECT_DRAIN_BYTES`]).
    Rejected,
    /// Closed (see [`ServerSession::poll_close`]).
    Closed,
}

/// Why a client was marked slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SlowReason {
    /// Its backlog stayed over the threshold for the grace period.
    Backlog,
    /// Its queue would have passed the limit.
    QueueFull,
    /// Replaying, its socket took nothing for the grace period.
    Stalled,
}

impl SlowReason {
    /// A short description for logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SlowReason::Backlog => "backlog over the threshold",
            SlowReason::QueueFull => "queue full",
            SlowReason::Stalled => "replay stalled",
        }
    }
}

/// Something a driver may want to log or count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A Login was accepted.
    LoggedIn {
        /// The sequence the client asked for.
        wanted: u64,
        /// The first sequence this connection gets.
        start: u64,
        /// The oldest retained sequence then.
        oldest: u64,
        /// The next live sequence then.
        next_live: u64,
    },
    /// The client was marked slow.
    Slow {
        /// Why.
        reason: SlowReason,
        /// Bytes pending (queued here + kernel).
        pending: usize,
    },
    /// A slow client drained; live data resumes.
    Drained {
        /// Bytes pending.
        pending: usize,
    },
    /// A Retransmit request was answered (its reply is queued).
    Retransmitted {
        /// The request's `sequence` (s).
        wanted: u64,
        /// The request's `count`.
        count: u64,
        /// The first sequence the reply covers (f, its LoginAccepted's).
        first: u64,
        /// The ending Heartbeat's `sequence` (e + 1, or f if f > e).
        end: u64,
        /// Data frames sent in the reply.
        frames: u64,
    },
    /// The connection presented valid credentials (protocol section 11).
    Authenticated {
        /// The key it authenticated with (never its secret).
        key_id: crate::wire::KeyId,
    },
    /// The connection was refused with a Rejected (protocol section 11).
    Rejected {
        /// Why.
        reason: RejectReason,
    },
    /// Reading the cold source (the journal) for its replay or
    /// retransmission reply failed at sequence `at`: the connection is
    /// closed ([`CloseReason::ReplayFailed`]); the source says why.
    ReplayFailed {
        /// The first sequence that could not be read.
        at: u64,
    },
}

/// Counters of one session since the last [`ServerSession::take_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ServerSessionStats {
    /// Data frames queued whole (replay included).
    pub frames_queued: u64,
    /// Bytes the driver reported written.
    pub bytes_sent: u64,
    /// Live batches skipped for a slow client.
    pub skipped_batches: u64,
    /// Data frames skipped for a slow client (the frames of
    /// [`skipped_batches`](Self::skipped_batches), and any the session had
    /// not been handed before them): the gap its client is told of.
    pub skipped_frames: u64,
    /// Times marked slow.
    pub slow_marks: u64,
    /// Frames a replay could not send because the retention dropped them first.
    pub replay_trimmed: u64,
    /// Of [`bytes_sent`](Self::bytes_sent), those of file ranges (the
    /// driver sent them with `sendfile`: see
    /// [`ServerSession::set_file_ranges`]).
    pub file_bytes_sent: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitingLogin {
        deadline: Duration,
        /// Whether a frame was read (an Auth is ignored only as the first).
        first_read: bool,
    },
    Rejected {
        until: Duration,
        discarded: usize,
        write_shut: bool,
        /// The client closed its side (its FIN was read).
        peer_closed: bool,
    },
    Replaying {
        next: u64,
    },
    Live {
        next: u64,
    },
    Retransmitting,
    /// Closes with this reason once the queue is written (EndOfSession
    /// last, or the frames a failed replay read before its failure).
    Closing(CloseReason),
    Closed(CloseReason),
}

/// One connection's protocol state. See the [module docs](self).
///
/// ```
/// use core::time::Duration;
/// use std::sync::Arc;
/// use tickwire::parse::{Event, SliceParser};
/// use tickwire::session::{Batch, Retention, ServerSession, ServerSessionConfig, Time};
/// use tickwire::{encode::QuoteFields, Payload, Sequencer};
///
/// let mut retention = Retention::new(1000);
/// let mut seq = Sequencer::new();
/// let mut bytes = vec![0u8; 3 * 44];
/// let done = seq.encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 3], &mut bytes);
/// bytes.truncate(done.bytes);
/// retention.push(Arc::new(Batch::new(bytes)?));
///
/// let t = Time::new(Duration::ZERO, 0);
/// let mut session = ServerSession::new(ServerSessionConfig::new(42), t);
/// // The client's Login for sequence 2, as the driver's parser delivers it.
/// let mut login = [0u8; 24];
/// tickwire::encode(&Payload::Login, 2, 0, &mut login)?;
/// for event in SliceParser::new(&login) {
///     session.handle_event(&event, t, &retention);
/// }
/// // What the driver writes: LoginAccepted, then frames 2 and 3.
/// let mut wire = Vec::new();
/// while let Some(tx) = session.poll_transmit(t, &retention) {
///     let n = tx.len();
///     tx.slices().for_each(|s| wire.extend_from_slice(s));
///     session.transmitted(n, t);
/// }
/// let sequences: Vec<u64> = SliceParser::new(&wire)
///     .filter_map(|e| match e { Event::Frame(m) => Some(m.sequence()), _ => None })
///     .collect();
/// assert_eq!(sequences, [2, 2, 3]); // LoginAccepted carries the first sequence
/// assert_eq!(session.poll_close(), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ServerSession {
    config: ServerSessionConfig,
    state: State,
    out: OutQueue,
    /// When something was last queued (heartbeats are due an interval later).
    last_queued: Duration,
    /// When the socket last took bytes, or the queue last became non-empty.
    progress_at: Duration,
    last_check: Duration,
    kernel_backlog: usize,
    /// Pending bytes at the last backlog check.
    last_pending: usize,
    over_since: Option<Duration>,
    slow: bool,
    /// Bytes the driver reported written, ever.
    written: u64,
    /// Bytes the peer had taken (written − kernel backlog) at the last check.
    taken: u64,
    /// Since when the client has owed bytes without taking any (`None`:
    /// nothing is known to be owed: all written, with the kernel's queue
    /// empty at the last check).
    owed_since: Option<Duration>,
    /// When the peer's progress was last checked.
    progress_checked: Duration,
    events: VecDeque<ServerEvent>,
    stats: ServerSessionStats,
    /// The replay's reader of the retention's cold source, while it reads there.
    cold: ColdCursor,
    /// The driver sends file ranges itself (`sendfile`): cold frames may
    /// be queued as [`Piece::File`].
    file_ranges: bool,
    /// The driver reads the cold source itself, outside its lock
    /// ([`take_cold_read`](Self::take_cold_read)): a refill never does.
    cold_by_driver: bool,
    /// A [`ColdFetch`] of this replay is out (with the reader).
    cold_out: bool,
    /// A retransmission request whose reply waits for the driver's read of
    /// the cold source (`cold_by_driver`).
    reply_pending: Option<PendingReply>,
    /// `config.no_progress_window()`, computed once (a division each time:
    /// the deadlines are computed per write and per published batch).
    no_progress_window: Option<Duration>,
}

impl ServerSession {
    /// A session for a connection accepted at `time`.
    #[must_use]
    pub fn new(config: ServerSessionConfig, time: Time) -> ServerSession {
        let now = time.monotonic;
        ServerSession {
            no_progress_window: config.no_progress_window(),
            config,
            state: State::AwaitingLogin {
                deadline: now.saturating_add(config.login_timeout),
                first_read: false,
            },
            out: OutQueue::default(),
            last_queued: now,
            progress_at: now,
            last_check: now,
            kernel_backlog: 0,
            last_pending: 0,
            over_since: None,
            slow: false,
            written: 0,
            taken: 0,
            owed_since: None,
            progress_checked: now,
            events: VecDeque::new(),
            stats: ServerSessionStats::default(),
            cold: ColdCursor::default(),
            file_ranges: false,
            cold_by_driver: false,
            cold_out: false,
            reply_pending: None,
        }
    }

    /// Where the connection is.
    #[must_use]
    pub fn phase(&self) -> ServerPhase {
        match self.state {
            State::AwaitingLogin { .. } => ServerPhase::AwaitingLogin,
            State::Replaying { .. } => ServerPhase::Replaying,
            State::Live { .. } => ServerPhase::Live,
            State::Retransmitting => ServerPhase::Retransmitting,
            State::Closing(_) => ServerPhase::Closing,
            State::Rejected { .. } => ServerPhase::Rejected,
            State::Closed(_) => ServerPhase::Closed,
        }
    }

    /// Whether the client is marked slow.
    #[must_use]
    pub fn is_slow(&self) -> bool {
        self.slow
    }

    /// Bytes queued here, not yet written.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.out.bytes
    }

    /// The next data sequence this connection will be sent (once logged in).
    #[must_use]
    pub fn next_sequence(&self) -> Option<u64> {
        match self.state {
            State::Replaying { next } | State::Live { next } => Some(next),
            _ => None,
        }
    }

    /// Call with every event the driver's parser produced from the client's
    /// bytes, in order. A Login is answered (LoginAccepted, then replay from
    /// where section 4.2 says); Heartbeats after it are accepted; a first
    /// Retransmit makes this a retransmission connection (section 9, see the
    /// [module docs](self)); anything else closes the connection
    /// ([`poll_close`](Self::poll_close)).
    ///
    /// An Auth as the connection's first frame is ignored (protocol section
    /// 11, rule 3: checking credentials is the
    /// [`ServerCore`](super::ServerCore)'s, before the session sees the
    /// frame); a second Auth is an unexpected frame.
    pub fn handle_event(&mut self, event: &Event<'_>, time: Time, retention: &Retention) {
        if matches!(self.state, State::Closed(_) | State::Rejected { .. }) {
            return; // nothing read after a Rejected is acted on
        }
        if let State::AwaitingLogin { first_read, .. } = &mut self.state {
            if let Event::Frame(message) = event {
                let first = !*first_read;
                *first_read = true;
                if first && matches!(message, Message::Auth(_)) {
                    return;
                }
            }
        }
        let logged_in = !matches!(self.state, State::AwaitingLogin { .. });
        if matches!(
            self.state,
            State::AwaitingLogin { .. } | State::Retransmitting
        ) {
            if let Event::Frame(Message::Retransmit(request)) = event {
                self.retransmit(request, time, retention);
                return;
            }
        }
        if matches!(self.state, State::Retransmitting) {
            match event {
                Event::Frame(Message::Heartbeat(_)) => {}
                Event::Discarded(_) => self.close(CloseReason::BadData),
                Event::Frame(_) | Event::Duplicate(_) => self.close(CloseReason::UnexpectedFrame),
                _ => {}
            }
            return;
        }
        match event {
            Event::Discarded(_) => self.close(CloseReason::BadData),
            Event::Frame(Message::Login(login)) if !logged_in => {
                self.login(login.sequence(), time, retention);
            }
            Event::Frame(Message::Login(_)) => self.close(CloseReason::SecondLogin),
            Event::Frame(Message::Heartbeat(_)) if logged_in => {}
            Event::Frame(_) | Event::Duplicate(_) => self.close(CloseReason::UnexpectedFrame),
            // Sequence bookkeeping of the client's own frames: nothing to do.
            _ => {}
        }
    }

    fn login(&mut self, wanted: u64, time: Time, retention: &Retention) {
        // The oldest held: in the retention, or in the cold source behind it.
        let (oldest, next_live) = (
            retention.oldest_held(self.config.session_id),
            retention.next(),
        );
        // Section 4.2: the requested sequence if retained, the oldest if
        // older, the next live one for 0 or anything beyond.
        let start = if wanted == 0 || wanted >= next_live {
            next_live
        } else {
            wanted.max(oldest)
        };
        let accepted = Payload::LoginAccepted {
            session_id: self.config.session_id,
        };
        self.queue_control(&accepted, start, time);
        self.state = if start < next_live {
            State::Replaying { next: start }
        } else {
            State::Live { next: start }
        };
        self.events.push_back(ServerEvent::LoggedIn {
            wanted,
            start,
            oldest,
            next_live,
        });
    }

    /// Answers one Retransmit (protocol section 9.2, 9.3), or closes the
    /// connection for a request with `sequence` 0 or `count` 0 (9.5).
    fn retransmit(&mut self, request: &Retransmit, time: Time, retention: &Retention) {
        let (wanted, count) = (request.sequence(), request.count());
        if wanted == 0 || count == 0 {
            self.close(CloseReason::UnexpectedFrame);
            return;
        }
        self.state = State::Retransmitting;
        let own = self.config.session_id;
        let session = request.session_id();
        if session != 0 && session != own {
            // Not the session asked for: say so, send nothing (9.3).
            self.send_reply(wanted, count, wanted, wanted, VecDeque::new(), time);
            return;
        }
        let cap = self.config.retransmit_cap.max(1);
        let last = (wanted.saturating_add(count - 1))
            .min(wanted.saturating_add(cap - 1))
            .min(retention.next().saturating_sub(1));
        let first = wanted.max(retention.oldest_held(own));
        let stop = last.saturating_add(1);
        let reply = PendingReply {
            wanted,
            count,
            first,
            last,
            stop,
        };
        let mut segments = VecDeque::new();
        let mut next = first;
        let mut bytes = 0usize;
        if next < stop && next < retention.oldest() {
            if self.cold_by_driver {
                // The driver reads it, outside its lock (`take_cold_read`);
                // the reply is queued when it hands the read back.
                self.reply_pending = Some(reply);
                return;
            }
            // Older than the retention: from the cold source, up to the
            // retention's oldest frame (the seam), at most the cap.
            let limit = stop.min(retention.oldest());
            match read_cold(retention, own, next, limit, self.file_ranges) {
                Ok((pieces, end)) => {
                    for (piece, frames) in pieces {
                        bytes = bytes.saturating_add(piece.len());
                        segments.push_back((piece, frames));
                    }
                    next = end.max(retention.oldest()).min(stop);
                }
                Err(at) => {
                    self.events.push_back(ServerEvent::ReplayFailed { at });
                    self.close(CloseReason::ReplayFailed);
                    return;
                }
            }
        }
        self.reply_from_retention(reply, segments, bytes, next, time, retention);
    }

    /// The rest of a retransmission reply from `next` on, from the
    /// retention, after `segments` (`bytes` long) from the cold source;
    /// then the reply is queued (or the client closed as slow).
    fn reply_from_retention(
        &mut self,
        reply: PendingReply,
        mut segments: VecDeque<(Piece, u64)>,
        mut bytes: usize,
        mut next: u64,
        time: Time,
        retention: &Retention,
    ) {
        let PendingReply {
            wanted,
            count,
            first,
            last,
            stop,
        } = reply;
        while next < stop {
            let Some(segment) = retention.segment_from(next, usize::MAX) else {
                break;
            };
            let segment = segment.head(stop);
            if segment.frames() == 0 {
                break;
            }
            next = segment.end();
            bytes = bytes.saturating_add(segment.bytes().len());
            let frames = segment.frames();
            segments.push_back((Piece::Data(segment), frames));
        }
        if self.out.bytes.saturating_add(bytes) > self.config.queue_limit {
            // Replies it does not read: a slow client, with nothing to skip.
            self.close(CloseReason::Slow);
            return;
        }
        let end = if first > last { first } else { stop };
        self.send_reply(wanted, count, first, end, segments, time);
    }

    /// A retransmission reply queued: LoginAccepted at `first`, the frames,
    /// a Heartbeat at `end` (section 9.2).
    fn send_reply(
        &mut self,
        wanted: u64,
        count: u64,
        first: u64,
        end: u64,
        segments: VecDeque<(Piece, u64)>,
        time: Time,
    ) {
        let own = self.config.session_id;
        let accepted = Payload::LoginAccepted { session_id: own };
        self.queue_control(&accepted, first, time);
        let mut frames = 0;
        for (piece, n) in segments {
            frames += n;
            self.stats.frames_queued += n;
            self.queue(piece, time.monotonic);
        }
        self.queue_control(&Payload::Heartbeat, end, time);
        self.events.push_back(ServerEvent::Retransmitted {
            wanted,
            count,
            first,
            end,
            frames,
        });
    }

    fn queue_control(&mut self, payload: &Payload, sequence: u64, time: Time) {
        let mut frame = [0u8; MAX_FRAME_LEN];
        if let Ok(len) = encode(payload, sequence, time.unix_nanos, &mut frame) {
            self.queue(Piece::Control { frame, len }, time.monotonic);
        }
    }

    fn queue(&mut self, piece: Piece, now: Duration) {
        if self.out.bytes == 0 {
            self.progress_at = now;
            if !self.watching_backlog() {
                // Bytes start to wait: the backlog is checked once they
                // have waited BACKLOG_CHECK (not at once because the last
                // check was long ago: a queue the driver empties within
                // that time is no backlog, and costs no `TIOCOUTQ`).
                self.last_check = now;
            }
        }
        if self.owed_since.is_none() {
            self.owed_since = Some(now);
            self.progress_checked = now;
        }
        self.out.push(piece);
        self.last_queued = now;
    }

    /// Call for every published batch, after pushing it into the
    /// [`Retention`]. A live client gets it queued (shared, not copied); a
    /// replaying one will read it from the retention; a slow one skips it.
    pub fn handle_published(&mut self, batch: &Arc<Batch>, time: Time) {
        let State::Live { next } = self.state else {
            return;
        };
        if batch.end() <= next {
            return; // already sent, by the replay that just reached the live edge
        }
        if self.slow {
            // Skipped: this connection's next sequence moves past it, so a
            // Heartbeat (or the next frame) tells the client of the gap even
            // if nothing more is ever published.
            self.stats.skipped_batches += 1;
            self.stats.skipped_frames += batch.end() - next;
            self.state = State::Live { next: batch.end() };
            return;
        }
        if batch.first() > next {
            // Frames between `next` and this batch were never handed to this
            // session (a driver that fell behind the publishers, or a
            // relay's hole): catch up from the retention exactly as a replay
            // does, so nothing the retention holds is lost on the way.
            self.state = State::Replaying { next };
            return;
        }
        let segment = if batch.first() < next {
            Segment::tail(batch, next)
        } else {
            Segment::whole(batch)
        };
        if self.out.bytes + segment.bytes().len() > self.config.queue_limit {
            if self.config.slow_policy == SlowPolicy::Skip {
                // Skipped, and told of the gap by what comes next.
                self.stats.skipped_batches += 1;
                self.stats.skipped_frames += batch.end() - next;
                self.state = State::Live { next: batch.end() };
            }
            // Under Disconnect the client is closed, not told of a gap:
            // nothing is counted as skipped.
            self.mark_slow(SlowReason::QueueFull, time.monotonic);
            return;
        }
        self.stats.frames_queued += segment.frames();
        self.state = State::Live { next: batch.end() };
        self.queue(Piece::Data(segment), time.monotonic);
    }

    /// What to write next, or `None` when nothing is queued. A replaying
    /// client's queue is refilled here from the retention (at most 256 KiB
    /// per call); reaching the live edge switches it to live data, with no
    /// gap and no repeat. Write what the socket takes of
    /// [`Transmit::slices`], then call [`transmitted`](Self::transmitted).
    pub fn poll_transmit(&mut self, time: Time, retention: &Retention) -> Option<Transmit<'_>> {
        self.refill_replay(time, retention);
        if self.out.bytes == 0 || matches!(self.state, State::Closed(_)) {
            return None;
        }
        Some(Transmit { queue: &self.out })
    }

    /// The driver wrote the first `n` bytes of the last
    /// [`Transmit`].
    pub fn transmitted(&mut self, n: usize, time: Time) {
        if n > 0 {
            let file = self.out.consume(n);
            self.stats.file_bytes_sent += file as u64;
            self.stats.bytes_sent += n as u64;
            self.written += n as u64;
            self.progress_at = time.monotonic;
            if self.owed_since.is_none() {
                // Written is not taken: these bytes are owed until a check
                // (one heartbeat interval from now) finds the kernel's
                // queue holds none of them. So a peer that vanished is
                // found while data flows to it, before its kernel queue fills.
                self.owed_since = Some(time.monotonic);
                self.progress_checked = time.monotonic;
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next:
    /// the login deadline, the next heartbeat, the next backlog check, or
    /// the next check of a client that owes bytes (once per heartbeat
    /// interval, and at its no-progress deadline).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        match self.state {
            State::AwaitingLogin { deadline, .. } => Some(deadline),
            State::Rejected { until, .. } => Some(until),
            State::Retransmitting => {
                let next = self
                    .last_queued
                    .saturating_add(self.config.heartbeat_interval);
                Some(match self.progress_deadline() {
                    Some(deadline) => next.min(deadline),
                    None => next,
                })
            }
            State::Replaying { .. } | State::Live { .. } => {
                let mut next = self
                    .last_queued
                    .saturating_add(self.config.heartbeat_interval);
                if self.watching_backlog() {
                    next = next.min(self.last_check.saturating_add(BACKLOG_CHECK));
                }
                if let Some(deadline) = self.progress_deadline() {
                    next = next.min(deadline);
                }
                Some(next)
            }
            // A failed replay's last frames: bounded by the no-progress rule.
            State::Closing(CloseReason::ReplayFailed) => self.progress_deadline(),
            State::Closing(_) | State::Closed(_) => None,
        }
    }

    /// While the client owes bytes: the next progress check, one heartbeat
    /// interval after the last, or its no-progress deadline if sooner.
    fn progress_deadline(&self) -> Option<Duration> {
        let since = self.owed_since?;
        let window = self.no_progress_window?;
        let check = self
            .progress_checked
            .saturating_add(self.config.heartbeat_interval);
        Some(since.saturating_add(window).min(check))
    }

    fn watching_backlog(&self) -> bool {
        self.out.bytes > 0 || self.slow || self.over_since.is_some()
    }

    /// Call at (or after) the time [`poll_timeout`](Self::poll_timeout)
    /// named, with the bytes in the kernel's send queue for this socket
    /// (`TIOCOUTQ` on Linux, `SO_NWRITE` on macOS, `FIONWRITE` on FreeBSD; 0
    /// where unknown). Closes a connection that did
    /// not log in in time, closes a client that took none of the bytes it
    /// owes for [`no_progress_window`](ServerSessionConfig::no_progress_window),
    /// queues a Heartbeat after an idle interval, and applies the
    /// slow-client rules.
    pub fn handle_timeout(&mut self, time: Time, retention: &Retention, kernel_backlog: usize) {
        let now = time.monotonic;
        self.kernel_backlog = kernel_backlog;
        let logged_in = matches!(
            self.state,
            State::Replaying { .. }
                | State::Live { .. }
                | State::Retransmitting
                | State::Closing(CloseReason::ReplayFailed)
        );
        if logged_in && self.no_progress(now) {
            self.close(CloseReason::NoProgress);
            return;
        }
        match self.state {
            State::AwaitingLogin { deadline, .. } if now >= deadline => {
                self.close(CloseReason::LoginTimeout);
            }
            State::Rejected { until, .. } if now >= until => {
                self.close(CloseReason::Rejected);
            }
            State::Retransmitting => {
                let idle = now
                    >= self
                        .last_queued
                        .saturating_add(self.config.heartbeat_interval);
                if idle && self.out.bytes == 0 && retention.upstream_alive() {
                    // Between replies: the next live data sequence (9.4).
                    self.queue_control(&Payload::Heartbeat, retention.next(), time);
                } else if idle {
                    self.last_queued = now; // a reply is still going out
                }
            }
            State::Replaying { next } | State::Live { next } => {
                if now
                    >= self
                        .last_queued
                        .saturating_add(self.config.heartbeat_interval)
                {
                    if self.out.bytes == 0 && retention.upstream_alive() {
                        // The next data sequence this connection will get;
                        // a skipped (slow) client is told where live data
                        // is, and so is a live one after a relay's hole
                        // ([`Retention::advance`]).
                        let sequence = if self.slow {
                            next.max(retention.next())
                        } else if matches!(self.state, State::Live { .. }) {
                            next.max(retention.advanced())
                        } else {
                            next
                        };
                        self.queue_control(&Payload::Heartbeat, sequence, time);
                    } else if self.out.bytes == 0 {
                        // A relay whose upstream is lost stays silent
                        // (section 10.3): its clients' liveness reflects the source.
                        self.last_queued = now;
                    } else {
                        self.last_queued = now; // data is waiting to go: no heartbeat needed
                    }
                }
                if self.watching_backlog() && now >= self.last_check.saturating_add(BACKLOG_CHECK) {
                    self.check_backlog(now);
                }
                if !self.watching_backlog() {
                    self.last_check = now;
                }
            }
            _ => {}
        }
    }

    /// Checks whether the peer took any of the bytes it owes (queued here
    /// or in the kernel) since the last check; `true` when it owed some
    /// and took none for the whole no-progress window.
    fn no_progress(&mut self, now: Duration) -> bool {
        self.progress_checked = now;
        let backlog = u64::try_from(self.kernel_backlog).unwrap_or(u64::MAX);
        let taken = self.written.saturating_sub(backlog);
        if self.out.bytes == 0 && self.kernel_backlog == 0 {
            self.owed_since = None;
        } else if taken > self.taken || self.owed_since.is_none() {
            self.owed_since = Some(now);
        }
        self.taken = self.taken.max(taken);
        match (self.owed_since, self.no_progress_window) {
            (Some(since), Some(window)) => now >= since.saturating_add(window),
            _ => false,
        }
    }

    fn check_backlog(&mut self, now: Duration) {
        self.last_check = now;
        let pending = self.out.bytes + self.kernel_backlog;
        let last_pending = core::mem::replace(&mut self.last_pending, pending);
        let threshold = self.config.slow_threshold;
        let grace = self.config.slow_grace;
        if self.slow {
            // Drained: a replay moving again (its backlog is always small:
            // it is pulled as the socket takes it, so size says nothing), or
            // a live backlog under half the threshold.
            let drained = match self.state {
                State::Replaying { .. } => now.saturating_sub(self.progress_at) < grace,
                _ => pending < threshold / 2,
            };
            if drained {
                self.slow = false;
                self.over_since = None;
                self.events.push_back(ServerEvent::Drained { pending });
            }
            return;
        }
        match self.state {
            State::Replaying { .. } => {
                self.over_since = None;
                if self.out.bytes > 0 && now.saturating_sub(self.progress_at) >= grace {
                    self.mark_slow(SlowReason::Stalled, now);
                }
            }
            // A backlog that is shrinking is a client catching up (for
            // example, on the replayed bytes still in its kernel queue), not
            // a slow one: the grace starts over.
            _ if pending > threshold && pending < last_pending => {
                self.over_since = Some(now);
            }
            _ if pending > threshold => {
                let since = *self.over_since.get_or_insert(now);
                if now.saturating_sub(since) >= grace {
                    self.mark_slow(SlowReason::Backlog, now);
                }
            }
            _ => self.over_since = None,
        }
    }

    fn mark_slow(&mut self, reason: SlowReason, now: Duration) {
        if self.slow {
            return;
        }
        self.stats.slow_marks += 1;
        let pending = self.out.bytes + self.kernel_backlog;
        self.events.push_back(ServerEvent::Slow { reason, pending });
        match self.config.slow_policy {
            SlowPolicy::Skip => {
                self.slow = true;
                self.last_check = now;
            }
            SlowPolicy::Disconnect => self.close(CloseReason::Slow),
        }
    }

    /// Graceful shutdown: EndOfSession is queued for a logged-in client (its
    /// `sequence` the next live one), and the session closes with
    /// [`CloseReason::Shutdown`] once it is written; a client that never
    /// logged in is closed at once.
    pub fn shutdown(&mut self, time: Time, retention: &Retention) {
        match self.state {
            State::Replaying { .. } | State::Live { .. } | State::Retransmitting => {
                self.queue_control(&Payload::EndOfSession, retention.next(), time);
                self.state = State::Closing(CloseReason::Shutdown);
            }
            State::AwaitingLogin { .. } => self.close(CloseReason::Shutdown),
            // Its drain is bounded (1 s) and sends nothing more.
            State::Rejected { .. } | State::Closing(_) | State::Closed(_) => {}
        }
    }

    /// A graceful stop that does not end the session (a server with a
    /// journal continues it at its next start, and datagram receivers never
    /// return to a session they were told ended, section 8): a logged-in
    /// client's queued bytes are written, then the session closes with
    /// [`CloseReason::Shutdown`], without EndOfSession; the client
    /// reconnects and resumes where it was. A client that never logged in
    /// is closed at once.
    pub fn stop_keeping_session(&mut self) {
        match self.state {
            State::Replaying { .. } | State::Live { .. } | State::Retransmitting => {
                self.cold.0 = None;
                self.state = State::Closing(CloseReason::Shutdown);
            }
            State::AwaitingLogin { .. } => self.close(CloseReason::Shutdown),
            State::Rejected { .. } | State::Closing(_) | State::Closed(_) => {}
        }
    }

    fn close(&mut self, reason: CloseReason) {
        self.state = State::Closed(reason);
        self.out.clear();
        self.cold.0 = None;
    }

    /// Refuses the connection (protocol section 11): one Rejected with
    /// `reason` is queued, and nothing else is ever sent. Once it is
    /// written, [`poll_write_shutdown`](Self::poll_write_shutdown) tells the
    /// driver to shut down its sending side; the client's bytes are then
    /// discarded ([`discard_input`](Self::discard_input)) until it closes,
    /// [`REJECT_DRAIN`] passes or [`REJECT_DRAIN_BYTES`] were read, and the
    /// session closes with [`CloseReason::Rejected`]. Only a connection
    /// that has not logged in can be rejected.
    ///
    /// ```
    /// use tickwire::session::{ServerPhase, ServerSession, ServerSessionConfig, Retention, Time};
    /// use tickwire::wire::RejectReason;
    /// let (retention, t) = (Retention::new(16), Time::default());
    /// let mut s = ServerSession::new(ServerSessionConfig::new(7), t);
    /// s.reject(RejectReason::AuthenticationRequired, t);
    /// assert_eq!(s.phase(), ServerPhase::Rejected);
    /// let tx = s.poll_transmit(t, &retention).ok_or("nothing to send")?;
    /// assert_eq!((tx.len(), tx.slices().next().map(|b| b[2])), (32, Some(0x08)));
    /// s.transmitted(32, t);
    /// assert!(s.poll_write_shutdown());
    /// assert!(!s.poll_write_shutdown()); // once
    /// s.discard_input(4096);
    /// assert_eq!(s.poll_close(), Some(tickwire::session::CloseReason::Rejected));
    /// # Ok::<(), &str>(())
    /// ```
    pub fn reject(&mut self, reason: RejectReason, time: Time) {
        if !matches!(self.state, State::AwaitingLogin { .. }) {
            return;
        }
        self.out.clear();
        self.queue_control(&Payload::Rejected { reason }, 0, time);
        self.state = State::Rejected {
            until: time.monotonic.saturating_add(REJECT_DRAIN),
            discarded: 0,
            write_shut: false,
            peer_closed: false,
        };
        self.events.push_back(ServerEvent::Rejected { reason });
    }

    /// `true`, once, when the driver must shut down the connection's
    /// sending side: its Rejected is written (see [`reject`](Self::reject)).
    pub fn poll_write_shutdown(&mut self) -> bool {
        let written = self.out.bytes == 0;
        match &mut self.state {
            State::Rejected { write_shut, .. } if written && !*write_shut => {
                *write_shut = true;
                true
            }
            _ => false,
        }
    }

    /// `n` bytes the client sent after its connection was rejected, read
    /// and thrown away; past [`REJECT_DRAIN_BYTES`] the session closes once
    /// its Rejected is written. (Outside [`ServerPhase::Rejected`] this does
    /// nothing.)
    pub fn discard_input(&mut self, n: usize) {
        if let State::Rejected { discarded, .. } = &mut self.state {
            *discarded = discarded.saturating_add(n);
        }
    }

    /// The client closed its side of a rejected connection: the session
    /// closes once its Rejected is written (at most [`REJECT_DRAIN`] after
    /// the rejection). (Outside [`ServerPhase::Rejected`] this does
    /// nothing: a driver closes other connections at their peer's close.)
    pub fn handle_peer_closed(&mut self) {
        if let State::Rejected { peer_closed, .. } = &mut self.state {
            *peer_closed = true;
        }
    }

    /// `Some(reason)` once the connection must be closed: the driver closes
    /// the socket and drops the session.
    #[must_use]
    pub fn poll_close(&self) -> Option<CloseReason> {
        match self.state {
            State::Closed(reason) => Some(reason),
            State::Closing(reason) if self.out.bytes == 0 => Some(reason),
            // Written, and the client closed or sent all it may.
            State::Rejected {
                discarded,
                peer_closed,
                ..
            } if self.out.bytes == 0 && (peer_closed || discarded >= REJECT_DRAIN_BYTES) => {
                Some(CloseReason::Rejected)
            }
            _ => None,
        }
    }

    /// When bytes were last queued (the next Heartbeat is due a heartbeat
    /// interval after).
    pub(crate) fn last_queued(&self) -> Duration {
        self.last_queued
    }

    /// Whether [`poll_event`](Self::poll_event) has something.
    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next thing worth logging, if any.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The counters accumulated since the last call, reset to zero.
    pub fn take_stats(&mut self) -> ServerSessionStats {
        core::mem::take(&mut self.stats)
    }
}
