//! [`RetransmitClient`]: the client side of a retransmission connection
//! (protocol section 9) beside a [`DatagramReceiver`], as a state machine
//! that owns no socket and reads no clock.
//!
//! ```text
//!  DatagramReceiver::poll_action ─▶ handle_request ─▶ Retransmit frames, held until connected
//!                                                        │
//!   poll_action ─▶ Connect ─▶ driver ─▶ handle_connected / handle_lost
//!               ─▶ Send(Retransmit frames) ─▶ driver writes them (handle_lost if it cannot)
//!               ─▶ Close, and Reset / Unavailable for the receiver
//!   bytes read ─▶ handle_bytes (the replies themselves go to
//!                 DatagramReceiver::handle_retransmission)
//!   poll_timeout / handle_timeout: connect timeout, liveness, back-off, idle close
//! ```
//!
//! The rules:
//!
//! * **Connect on demand.** No connection is held until a request is due;
//!   the first one connects ([`RetransmitAction::Connect`]). Requests made
//!   while connecting (or waiting to connect again) are held and written
//!   together once connected; while connected, every request is written at
//!   the next [`poll_action`](RetransmitClient::poll_action) (those made
//!   between two polls in one write). The server answers them in order
//!   (section 9.4): requests are pipelined, never waited for.
//! * **Connect timeout.** A connection not made within
//!   [`connect_timeout`](RetransmitClientConfig::connect_timeout) (5 s) is
//!   given up.
//! * **Liveness.** A connection that brought no byte for three heartbeat
//!   intervals ([`Liveness`]; the server sends idle Heartbeats on it,
//!   section 9.4) is dead.
//! * **Lost.** A connection given up, dead, closed by the server or failed
//!   is closed ([`RetransmitAction::Close`]); the requests it had not
//!   answered and those held for it are dropped and the receiver is told
//!   ([`RetransmitAction::Reset`]: it asks for them again, and they still
//!   become gaps at their first deadline unless filled first). The next
//!   connection is made after the [`Backoff`] delay, when a request is
//!   held by then; a backoff out of retries leaves it idle (the next
//!   request connects). A connection made resets the backoff.
//! * **Idle close.** A connection that carried no request for
//!   [`idle`](RetransmitClientConfig::idle) (30 s) while no reply is
//!   awaited is closed ([`RetransmitAction::Close`]): a multicast feed's
//!   receivers do not each hold a server slot for good. The next request
//!   connects again.
//! * **No server.** Without one ([`set_server`](RetransmitClient::set_server)
//!   `false`), requests are dropped and the receiver told
//!   ([`RetransmitAction::Unavailable`]: holes become gaps at its deadline).
//!
//! ```
//! use core::time::Duration;
//! use tickwire::session::datagram::DatagramAction;
//! use tickwire::session::retransmit_client::{
//!     RetransmitAction, RetransmitClient, RetransmitClientConfig, RetransmitState,
//! };
//! use tickwire::session::Time;
//!
//! let ms = |ms| Time::new(Duration::from_millis(ms), 0);
//! let mut retx = RetransmitClient::new(RetransmitClientConfig::default(), true);
//!
//! // The receiver asks for 10..=14: connect, then write the request.
//! let ask = DatagramAction::Retransmit { session_id: 9, first: 10, count: 5 };
//! retx.handle_request(ask, ms(0));
//! assert_eq!(retx.poll_action(), Some(RetransmitAction::Connect));
//! retx.handle_connected(ms(3));
//! let Some(RetransmitAction::Send(frames)) = retx.poll_action() else { panic!() };
//! assert_eq!(frames.len(), 40); // one Retransmit frame
//!
//! // No byte for three heartbeat intervals (1 s): dead, closed, connected
//! // again after the backoff (100 ms) when a request is held by then.
//! assert_eq!(retx.poll_timeout(1), Some(Duration::from_millis(3003)));
//! retx.handle_timeout(ms(3003), 1);
//! assert_eq!(retx.poll_action(), Some(RetransmitAction::Close));
//! assert_eq!(retx.poll_action(), Some(RetransmitAction::Reset));
//! assert_eq!(retx.state(), RetransmitState::Waiting);
//! assert_eq!(retx.poll_timeout(0), Some(Duration::from_millis(3103)));
//! ```
//!
//! [`DatagramReceiver`]: super::datagram::DatagramReceiver
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::time::Duration;

use super::datagram::DatagramAction;
use super::Time;
use crate::encode::{encode, Payload};
use crate::policy::{Backoff, Liveness};
use crate::wire::MsgType;

const REQUEST_LEN: usize = MsgType::Retransmit.frame_len();

/// A [`RetransmitClient`]'s settings.
///
/// ```
/// use core::time::Duration;
/// let c = tickwire::session::retransmit_client::RetransmitClientConfig::default();
/// assert_eq!(c.connect_timeout, Duration::from_secs(5));
/// assert_eq!(c.idle, Some(Duration::from_secs(30)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetransmitClientConfig {
    /// Reconnect delays (100 ms doubling to 30 s, no limit).
    pub backoff: Backoff,
    /// The server's heartbeat interval (1 s): a connection silent for three
    /// of them is dead.
    pub heartbeat_interval: Duration,
    /// Give up a connection attempt after this long (5 s).
    pub connect_timeout: Duration,
    /// Close a connection that carried no request for this long while no
    /// reply is awaited (30 s; `None`: keep it).
    pub idle: Option<Duration>,
}

impl Default for RetransmitClientConfig {
    fn default() -> Self {
        RetransmitClientConfig {
            backoff: Backoff::default(),
            heartbeat_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            idle: Some(Duration::from_secs(30)),
        }
    }
}

/// What the driver does for a [`RetransmitClient`], in order.
///
/// ```
/// use tickwire::session::retransmit_client::RetransmitAction;
/// fn describe(a: &RetransmitAction) -> &'static str {
///     match a {
///         RetransmitAction::Connect => "connect",
///         RetransmitAction::Send(_) => "write",
///         RetransmitAction::Close => "close",
///         RetransmitAction::Reset => "receiver.retransmission_reset()",
///         RetransmitAction::Unavailable => "receiver.retransmission_unavailable()",
///     }
/// }
/// assert_eq!(describe(&RetransmitAction::Connect), "connect");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetransmitAction {
    /// Open a connection to the server (non-blocking), then report
    /// [`handle_connected`](RetransmitClient::handle_connected) or
    /// [`handle_lost`](RetransmitClient::handle_lost).
    Connect,
    /// Write these Retransmit frames on the connection; if they cannot be
    /// written (or queued), report
    /// [`handle_lost`](RetransmitClient::handle_lost).
    Send(Vec<u8>),
    /// Close the connection, if there is one.
    Close,
    /// The requests not answered yet never will be: tell the receiver
    /// ([`DatagramReceiver::retransmission_reset`](super::datagram::DatagramReceiver::retransmission_reset)),
    /// which asks for them again.
    Reset,
    /// There is no server: tell the receiver
    /// ([`DatagramReceiver::retransmission_unavailable`](super::datagram::DatagramReceiver::retransmission_unavailable)),
    /// whose holes become gaps at their deadline.
    Unavailable,
}

/// Where a [`RetransmitClient`]'s connection is.
///
/// ```
/// use tickwire::session::retransmit_client::{RetransmitClient, RetransmitState};
/// let retx = RetransmitClient::new(Default::default(), true);
/// assert_eq!(retx.state(), RetransmitState::Idle);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetransmitState {
    /// No connection; one is made when a request is due.
    Idle,
    /// Connecting.
    Connecting,
    /// Connected.
    Connected,
    /// Waiting out the backoff before connecting again.
    Waiting,
}

/// A [`RetransmitClient`]'s counters.
///
/// ```
/// let s = tickwire::session::retransmit_client::RetransmitClientStats::default();
/// assert_eq!(s.connects, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetransmitClientStats {
    /// Connections made.
    pub connects: u64,
    /// Connections closed for being idle.
    pub idle_closes: u64,
    /// Connections (or attempts) lost: failed, timed out, silent, closed.
    pub lost: u64,
    /// Retransmit frames handed to the driver to write.
    pub requests: u64,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Idle,
    Connecting {
        since: Duration,
    },
    Connected {
        liveness: Liveness,
        /// When the connection was made or last carried a request.
        last_request: Duration,
    },
    Waiting {
        until: Duration,
    },
}

/// The retransmission connection's rules. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct RetransmitClient {
    config: RetransmitClientConfig,
    backoff: Backoff,
    state: State,
    server: bool,
    /// Retransmit frames not written yet.
    pending: Vec<u8>,
    actions: VecDeque<RetransmitAction>,
    /// The latest time an input brought.
    now: Duration,
    stats: RetransmitClientStats,
}

impl RetransmitClient {
    /// Idle; `server`: whether there is a server to ask (see
    /// [`set_server`](Self::set_server)).
    ///
    /// ```
    /// use tickwire::session::retransmit_client::RetransmitClient;
    /// let retx = RetransmitClient::new(Default::default(), true);
    /// assert!(!retx.is_connected());
    /// ```
    #[must_use]
    pub fn new(config: RetransmitClientConfig, server: bool) -> RetransmitClient {
        RetransmitClient {
            backoff: config.backoff,
            config,
            state: State::Idle,
            server,
            pending: Vec::new(),
            actions: VecDeque::new(),
            now: Duration::ZERO,
            stats: RetransmitClientStats::default(),
        }
    }

    /// Where the connection is.
    ///
    /// ```
    /// # use tickwire::session::retransmit_client::{RetransmitClient, RetransmitState};
    /// assert_eq!(RetransmitClient::new(Default::default(), true).state(), RetransmitState::Idle);
    /// ```
    #[must_use]
    pub fn state(&self) -> RetransmitState {
        match self.state {
            State::Idle => RetransmitState::Idle,
            State::Connecting { .. } => RetransmitState::Connecting,
            State::Connected { .. } => RetransmitState::Connected,
            State::Waiting { .. } => RetransmitState::Waiting,
        }
    }

    /// Whether the connection is up.
    ///
    /// ```
    /// # use tickwire::session::retransmit_client::RetransmitClient;
    /// assert!(!RetransmitClient::new(Default::default(), true).is_connected());
    /// ```
    #[must_use]
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// The counters now.
    ///
    /// ```
    /// # use tickwire::session::retransmit_client::RetransmitClient;
    /// assert_eq!(RetransmitClient::new(Default::default(), true).stats().lost, 0);
    /// ```
    #[must_use]
    pub fn stats(&self) -> RetransmitClientStats {
        self.stats
    }

    /// Retransmit frames held, not yet handed to the driver.
    ///
    /// ```
    /// # use tickwire::session::retransmit_client::RetransmitClient;
    /// assert_eq!(RetransmitClient::new(Default::default(), true).held_requests(), 0);
    /// ```
    #[must_use]
    pub fn held_requests(&self) -> usize {
        self.pending.len() / REQUEST_LEN
    }

    /// Whether there is a server to ask (another one, or one at all): a
    /// connection to the old one is closed, held requests are dropped, the
    /// backoff starts over and the receiver is told
    /// ([`RetransmitAction::Reset`]: it asks again, and the next request
    /// connects at once; or [`RetransmitAction::Unavailable`]).
    ///
    /// ```
    /// use tickwire::session::retransmit_client::{RetransmitAction, RetransmitClient};
    /// let mut retx = RetransmitClient::new(Default::default(), true);
    /// retx.set_server(false);
    /// assert_eq!(retx.poll_action(), Some(RetransmitAction::Unavailable));
    /// ```
    pub fn set_server(&mut self, available: bool) {
        self.close();
        self.state = State::Idle;
        self.pending.clear();
        self.backoff.reset();
        self.server = available;
        self.actions.push_back(if available {
            RetransmitAction::Reset
        } else {
            RetransmitAction::Unavailable
        });
    }

    /// A request of the receiver
    /// ([`DatagramReceiver::poll_action`](super::datagram::DatagramReceiver::poll_action)):
    /// its Retransmit frame (timestamped `time`) is written now if
    /// connected, else held; an idle client connects.
    ///
    /// ```
    /// use tickwire::session::datagram::DatagramAction;
    /// use tickwire::session::retransmit_client::{RetransmitAction, RetransmitClient};
    /// let mut retx = RetransmitClient::new(Default::default(), true);
    /// let ask = DatagramAction::Retransmit { session_id: 0, first: 1, count: 1 };
    /// retx.handle_request(ask, Default::default());
    /// assert_eq!(retx.held_requests(), 1);
    /// assert_eq!(retx.poll_action(), Some(RetransmitAction::Connect));
    /// ```
    pub fn handle_request(&mut self, request: DatagramAction, time: Time) {
        self.now = self.now.max(time.monotonic);
        let DatagramAction::Retransmit {
            session_id,
            first,
            count,
        } = request;
        let at = self.pending.len();
        self.pending.resize(at + REQUEST_LEN, 0);
        if let Some(out) = self.pending.get_mut(at..) {
            // A Retransmit always fits its own length.
            let _ = encode(
                &Payload::Retransmit { session_id, count },
                first,
                time.unix_nanos,
                out,
            );
        }
        if matches!(self.state, State::Idle) {
            self.connect(time.monotonic);
        }
    }

    /// The connection is made: liveness starts, the backoff starts over and
    /// the held requests are written.
    ///
    /// ```
    /// use tickwire::session::retransmit_client::RetransmitClient;
    /// use tickwire::session::datagram::DatagramAction;
    /// let mut retx = RetransmitClient::new(Default::default(), true);
    /// retx.handle_request(DatagramAction::Retransmit { session_id: 0, first: 1, count: 1 }, Default::default());
    /// retx.handle_connected(Default::default());
    /// assert!(retx.is_connected());
    /// ```
    pub fn handle_connected(&mut self, time: Time) {
        let now = time.monotonic;
        self.now = self.now.max(now);
        if !matches!(self.state, State::Connecting { .. }) {
            return;
        }
        self.state = State::Connected {
            liveness: Liveness::new(self.config.heartbeat_interval, now),
            last_request: now,
        };
        self.stats.connects += 1;
        self.backoff.reset();
    }

    /// Bytes arrived on the connection: the server is alive.
    ///
    /// ```
    /// # use tickwire::session::retransmit_client::RetransmitClient;
    /// let mut retx = RetransmitClient::new(Default::default(), true);
    /// retx.handle_bytes(Default::default()); // not connected: nothing
    /// ```
    pub fn handle_bytes(&mut self, time: Time) {
        self.now = self.now.max(time.monotonic);
        if let State::Connected { liveness, .. } = &mut self.state {
            liveness.heard(time.monotonic);
        }
    }

    /// The connection (or the attempt) failed or ended: it is closed,
    /// requests are dropped ([`RetransmitAction::Reset`]), and the next
    /// attempt waits the backoff.
    ///
    /// ```
    /// use core::time::Duration;
    /// use tickwire::session::datagram::DatagramAction;
    /// use tickwire::session::retransmit_client::{RetransmitClient, RetransmitState};
    /// use tickwire::session::Time;
    /// let mut retx = RetransmitClient::new(Default::default(), true);
    /// retx.handle_request(DatagramAction::Retransmit { session_id: 0, first: 1, count: 1 }, Time::default());
    /// retx.handle_lost(Time::default()); // refused
    /// assert_eq!(retx.state(), RetransmitState::Waiting);
    /// assert_eq!(retx.poll_timeout(0), Some(Duration::from_millis(100)));
    /// ```
    pub fn handle_lost(&mut self, time: Time) {
        self.now = self.now.max(time.monotonic);
        if matches!(
            self.state,
            State::Connecting { .. } | State::Connected { .. }
        ) {
            self.lost(time.monotonic);
        }
    }

    /// What to do next, in order. Call until `None` after every other call.
    ///
    /// ```
    /// # use tickwire::session::retransmit_client::RetransmitClient;
    /// assert_eq!(RetransmitClient::new(Default::default(), true).poll_action(), None);
    /// ```
    pub fn poll_action(&mut self) -> Option<RetransmitAction> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        let State::Connected { last_request, .. } = &mut self.state else {
            return None;
        };
        if self.pending.is_empty() {
            return None;
        }
        *last_request = self.now;
        let frames = core::mem::take(&mut self.pending);
        self.stats.requests += (frames.len() / REQUEST_LEN) as u64;
        Some(RetransmitAction::Send(frames))
    }

    /// The next deadline (monotonic): the connect timeout, the liveness or
    /// idle deadline, or the end of the backoff. `awaiting` is how many
    /// replies the receiver still waits for
    /// ([`DatagramReceiver::requests_outstanding`](super::datagram::DatagramReceiver::requests_outstanding)):
    /// a connection is idle only when none is.
    ///
    /// ```
    /// # use tickwire::session::retransmit_client::RetransmitClient;
    /// assert_eq!(RetransmitClient::new(Default::default(), true).poll_timeout(0), None);
    /// ```
    #[must_use]
    pub fn poll_timeout(&self, awaiting: usize) -> Option<Duration> {
        match self.state {
            State::Idle => None,
            State::Connecting { since } => Some(since.saturating_add(self.config.connect_timeout)),
            State::Connected { liveness, .. } => {
                let dead = liveness.deadline();
                Some(
                    self.idle_deadline(awaiting)
                        .map_or(dead, |idle| idle.min(dead)),
                )
            }
            State::Waiting { until } => Some(until),
        }
    }

    /// Acts on the deadlines due at `time` (see [`poll_timeout`](Self::poll_timeout)).
    ///
    /// ```
    /// # use tickwire::session::retransmit_client::RetransmitClient;
    /// let mut retx = RetransmitClient::new(Default::default(), true);
    /// retx.handle_timeout(Default::default(), 0);
    /// assert_eq!(retx.poll_action(), None);
    /// ```
    pub fn handle_timeout(&mut self, time: Time, awaiting: usize) {
        let now = time.monotonic;
        self.now = self.now.max(now);
        if self.is_connected() && self.idle_deadline(awaiting).is_some_and(|at| now >= at) {
            self.close();
            self.state = State::Idle;
            self.stats.idle_closes += 1;
            return;
        }
        match self.state {
            State::Connecting { since }
                if now >= since.saturating_add(self.config.connect_timeout) =>
            {
                self.lost(now);
            }
            State::Connected { liveness, .. } if now >= liveness.deadline() => self.lost(now),
            State::Waiting { until } if now >= until => {
                self.state = State::Idle;
                if !self.pending.is_empty() {
                    self.connect(now);
                }
            }
            _ => {}
        }
    }

    /// When an idle connection is closed: nothing held, no reply awaited,
    /// and a closing time configured.
    fn idle_deadline(&self, awaiting: usize) -> Option<Duration> {
        let idle = self.config.idle?;
        let State::Connected { last_request, .. } = self.state else {
            return None;
        };
        (self.pending.is_empty() && awaiting == 0).then(|| last_request.saturating_add(idle))
    }

    fn connect(&mut self, now: Duration) {
        if !self.server {
            // Nothing to ask: the receiver's deadline turns holes into gaps.
            self.pending.clear();
            self.actions.push_back(RetransmitAction::Unavailable);
            return;
        }
        self.actions.push_back(RetransmitAction::Connect);
        self.state = State::Connecting { since: now };
    }

    /// Closes the connection, if any (the state is the caller's).
    fn close(&mut self) {
        if matches!(
            self.state,
            State::Connecting { .. } | State::Connected { .. }
        ) {
            self.actions.push_back(RetransmitAction::Close);
        }
    }

    fn lost(&mut self, now: Duration) {
        self.close();
        self.stats.lost += 1;
        self.pending.clear();
        self.actions.push_back(RetransmitAction::Reset);
        self.state = match self.backoff.next_delay() {
            Some(delay) => State::Waiting {
                until: now.saturating_add(delay),
            },
            None => State::Idle,
        };
    }
}
