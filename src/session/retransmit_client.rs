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
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use super::datagram::DatagramAction;
use super::Time;
use crate::encode::{encode, Payload};
use crate::policy::{Backoff, Liveness};
use crate::wire::{MsgType, RejectReason};

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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// Credentials to present (protocol section 11): an Auth first on every
    /// connection. Never serialized; `Debug` shows the key id only.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub credentials: Option<super::auth::ClientKey>,
}

impl Default for RetransmitClientConfig {
    fn default() -> Self {
        RetransmitClientConfig {
            backoff: Backoff::default(),
            heartbeat_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            idle: Some(Duration::from_secs(30)),
            credentials: None,
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
///         _ => "new in a later version",
///     }
/// }
/// assert_eq!(describe(&RetransmitAction::Connect), "connect");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RetransmitClientStats {
    /// Connections made.
    pub connects: u64,
    /// Connections closed for being idle.
    pub idle_closes: u64,
    /// Connections (or attempts) lost: failed, timed out, silent, closed.
    pub lost: u64,
    /// Retransmit frames handed to the driver to write.
    pub requests: u64,
    /// Times the server refused the connection with a Rejected (protocol
    /// section 11).
    #[cfg_attr(feature = "serde", serde(default))]
    pub rejected: u64,
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
    /// The connection's Auth is still to be written (before any request).
    auth_due: bool,
    /// Why the server refused us, if it did (we do not ask it again).
    rejected: Option<RejectReason>,
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
            auth_due: false,
            rejected: None,
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
        self.rejected = None;
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
        self.auth_due = self.config.credentials.is_some();
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
        let requests = core::mem::take(&mut self.pending);
        self.stats.requests += (requests.len() / REQUEST_LEN) as u64;
        match self
            .config
            .credentials
            .filter(|_| core::mem::take(&mut self.auth_due))
        {
            // Section 11: the Auth first, in the same write.
            Some(key) => {
                let mut frames = vec![0u8; MsgType::Auth.frame_len()];
                let _ = encode(&Payload::auth(&key.key_id, key.secret), 0, 0, &mut frames);
                frames.extend_from_slice(&requests);
                Some(RetransmitAction::Send(frames))
            }
            None => Some(RetransmitAction::Send(requests)),
        }
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

    /// The server answered with a Rejected (protocol section 11): it is
    /// not asked again (until [`set_server`](Self::set_server) names one):
    /// the connection is closed, requests are dropped and the receiver is
    /// told there is no server ([`RetransmitAction::Unavailable`]: its
    /// holes become gaps at their deadline).
    ///
    /// ```
    /// use tickwire::session::datagram::DatagramAction;
    /// use tickwire::session::retransmit_client::{RetransmitAction, RetransmitClient, RetransmitState};
    /// use tickwire::wire::RejectReason;
    /// let mut retx = RetransmitClient::new(Default::default(), true);
    /// retx.handle_request(DatagramAction::Retransmit { session_id: 0, first: 1, count: 1 }, Default::default());
    /// retx.handle_connected(Default::default());
    /// while retx.poll_action().is_some() {}
    /// retx.handle_rejected(RejectReason::NotPermitted, Default::default());
    /// assert_eq!(retx.poll_action(), Some(RetransmitAction::Close));
    /// assert_eq!(retx.poll_action(), Some(RetransmitAction::Unavailable));
    /// assert_eq!((retx.state(), retx.rejected()), (RetransmitState::Idle, Some(RejectReason::NotPermitted)));
    /// ```
    pub fn handle_rejected(&mut self, reason: RejectReason, time: Time) {
        self.now = self.now.max(time.monotonic);
        self.close();
        self.state = State::Idle;
        self.pending.clear();
        self.server = false;
        self.rejected = Some(reason);
        self.stats.rejected += 1;
        self.actions.push_back(RetransmitAction::Unavailable);
    }

    /// Why the server refused this client, if it did.
    #[must_use]
    pub fn rejected(&self) -> Option<RejectReason> {
        self.rejected
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::wire::Message;
    use RetransmitAction::{Close, Connect, Reset, Unavailable};

    const NS: Duration = Duration::from_nanos(1);

    fn ms(ms: u64) -> Time {
        Time::new(Duration::from_millis(ms), 1_000 + ms)
    }

    fn at(d: Duration) -> Time {
        Time::new(d, 0)
    }

    fn ask(first: u64, count: u64) -> DatagramAction {
        DatagramAction::Retransmit {
            session_id: 9,
            first,
            count,
        }
    }

    fn actions(r: &mut RetransmitClient) -> Vec<RetransmitAction> {
        core::iter::from_fn(|| r.poll_action()).collect()
    }

    /// The Retransmit frames of a Send: (session_id, first, count, timestamp).
    fn requests(frames: &[u8]) -> Vec<(u64, u64, u64, u64)> {
        assert_eq!(frames.len() % REQUEST_LEN, 0);
        frames
            .chunks(REQUEST_LEN)
            .map(|f| match Message::decode(f).unwrap().0 {
                Message::Retransmit(r) => (r.session_id(), r.sequence(), r.count(), r.timestamp()),
                other => panic!("not a Retransmit: {other:?}"),
            })
            .collect()
    }

    fn sent(actions: &[RetransmitAction]) -> Vec<(u64, u64, u64, u64)> {
        actions
            .iter()
            .flat_map(|a| match a {
                RetransmitAction::Send(frames) => requests(frames),
                _ => Vec::new(),
            })
            .collect()
    }

    fn connected_at(t: Time) -> RetransmitClient {
        let mut r = RetransmitClient::new(RetransmitClientConfig::default(), true);
        r.handle_request(ask(1, 1), t);
        r.handle_connected(t);
        assert_eq!(actions(&mut r).len(), 2); // Connect, Send
        r
    }

    /// No connection until a request is due; requests made while connecting
    /// are held and written together, in order, once connected.
    #[test]
    fn connects_on_demand_and_writes_held_requests_together() {
        let mut r = RetransmitClient::new(RetransmitClientConfig::default(), true);
        assert_eq!((r.poll_timeout(0), r.poll_action()), (None, None));
        r.handle_request(ask(10, 5), ms(1));
        assert_eq!(actions(&mut r), [Connect]);
        r.handle_request(ask(20, 1), ms(2));
        r.handle_request(ask(30, 2), ms(3));
        assert_eq!(
            (r.state(), r.held_requests()),
            (RetransmitState::Connecting, 3)
        );
        assert_eq!(actions(&mut r), [], "one connection at a time");
        r.handle_connected(ms(4));
        let done = actions(&mut r);
        assert_eq!(done.len(), 1, "one write");
        assert_eq!(
            sent(&done),
            [(9, 10, 5, 1001), (9, 20, 1, 1002), (9, 30, 2, 1003)]
        );
        assert_eq!(r.held_requests(), 0);
        let stats = r.stats();
        assert_eq!((stats.connects, stats.requests, stats.lost), (1, 3, 0));
    }

    /// While connected, requests are pipelined: written at the next poll
    /// (those of one poll in one write), without waiting for replies.
    #[test]
    fn requests_are_pipelined_while_connected() {
        let mut r = connected_at(ms(0));
        r.handle_request(ask(5, 1), ms(10));
        r.handle_request(ask(7, 3), ms(10));
        let done = actions(&mut r);
        assert_eq!(sent(&done), [(9, 5, 1, 1010), (9, 7, 3, 1010)]);
        assert_eq!(done.len(), 1);
        r.handle_request(ask(20, 1), ms(11));
        assert_eq!(sent(&actions(&mut r)), [(9, 20, 1, 1011)]);
        assert_eq!(r.stats().requests, 4);
        assert_eq!((r.is_connected(), r.stats().connects), (true, 1));
    }

    /// A connection not made within the connect timeout (5 s) is given up
    /// exactly then: closed, requests dropped, the next attempt after the
    /// backoff's first delay (100 ms).
    #[test]
    fn connect_timeout_is_exact() {
        let mut r = RetransmitClient::new(RetransmitClientConfig::default(), true);
        r.handle_request(ask(1, 1), ms(10));
        assert_eq!(actions(&mut r), [Connect]);
        assert_eq!(r.poll_timeout(0), Some(Duration::from_millis(5010)));
        r.handle_timeout(at(Duration::from_millis(5010) - NS), 0);
        assert_eq!(actions(&mut r), []);
        r.handle_timeout(ms(5010), 0);
        assert_eq!(actions(&mut r), [Close, Reset]);
        assert_eq!(
            (r.state(), r.held_requests()),
            (RetransmitState::Waiting, 0)
        );
        assert_eq!(r.poll_timeout(0), Some(Duration::from_millis(5110)));
        assert_eq!(r.stats().lost, 1);
        // A late "connected" for the abandoned attempt changes nothing.
        r.handle_connected(ms(5050));
        assert_eq!(r.state(), RetransmitState::Waiting);
    }

    /// Back-off: each failure waits twice as long (100, 200, 400 ms); the
    /// next attempt is made when the wait ends if a request is held by then
    /// (the receiver asks again after a Reset), else the client goes idle
    /// and the next request connects at once; a connection made starts the
    /// backoff over.
    #[test]
    fn backoff_doubles_and_starts_over_once_connected() {
        let mut r = RetransmitClient::new(RetransmitClientConfig::default(), true);
        r.handle_request(ask(1, 1), ms(0));
        assert_eq!(actions(&mut r), [Connect]);
        let mut now = 0;
        for delay in [100, 200, 400] {
            r.handle_lost(ms(now)); // refused
            assert_eq!(actions(&mut r), [Close, Reset]);
            assert_eq!(r.poll_timeout(0), Some(Duration::from_millis(now + delay)));
            r.handle_request(ask(1, 1), ms(now + 1)); // asked again: held
            assert_eq!(actions(&mut r), []);
            r.handle_timeout(at(Duration::from_millis(now + delay) - NS), 0);
            assert_eq!(actions(&mut r), []);
            now += delay;
            r.handle_timeout(ms(now), 0);
            assert_eq!(actions(&mut r), [Connect]);
        }
        r.handle_connected(ms(now));
        assert_eq!(sent(&actions(&mut r)).len(), 1);
        r.handle_lost(ms(now + 1)); // closed by the server
        assert_eq!(actions(&mut r), [Close, Reset]);
        assert_eq!(r.poll_timeout(0), Some(Duration::from_millis(now + 101)));
        // The wait ends with nothing held: idle, no connection.
        r.handle_timeout(ms(now + 101), 0);
        assert_eq!(
            (r.state(), actions(&mut r).len()),
            (RetransmitState::Idle, 0)
        );
        r.handle_request(ask(2, 1), ms(now + 500));
        assert_eq!(actions(&mut r), [Connect]);
        assert_eq!(r.stats().lost, 4);
    }

    /// A backoff out of retries leaves the client idle: the next request
    /// tries again.
    #[test]
    fn a_backoff_out_of_retries_leaves_it_idle() {
        let config = RetransmitClientConfig {
            backoff: Backoff::default().with_max_retries(Some(1)),
            ..RetransmitClientConfig::default()
        };
        let mut r = RetransmitClient::new(config, true);
        r.handle_request(ask(1, 1), ms(0));
        r.handle_lost(ms(1));
        assert_eq!(actions(&mut r), [Connect, Close, Reset]);
        r.handle_timeout(ms(101), 0);
        assert_eq!(actions(&mut r), []);
        r.handle_request(ask(1, 1), ms(102));
        assert_eq!(actions(&mut r), [Connect]);
        r.handle_lost(ms(103));
        assert_eq!(actions(&mut r), [Close, Reset]);
        assert_eq!(
            (r.state(), r.poll_timeout(0)),
            (RetransmitState::Idle, None)
        );
    }

    /// Liveness: a connection that brought no byte for three heartbeat
    /// intervals is lost exactly then; each byte moves the deadline.
    #[test]
    fn a_silent_connection_is_lost_after_three_intervals() {
        let mut r = connected_at(ms(0));
        assert_eq!(r.poll_timeout(1), Some(Duration::from_secs(3)));
        r.handle_bytes(ms(2000));
        assert_eq!(r.poll_timeout(1), Some(Duration::from_secs(5)));
        r.handle_bytes(ms(1000)); // never backwards
        r.handle_timeout(at(Duration::from_secs(5) - NS), 1);
        assert_eq!((r.is_connected(), actions(&mut r).len()), (true, 0));
        r.handle_timeout(ms(5000), 1);
        assert_eq!(actions(&mut r), [Close, Reset]);
        assert_eq!(r.poll_timeout(0), Some(Duration::from_millis(5100)));
    }

    /// Idle close: no request for `idle` (30 s) and no reply awaited, while
    /// the server's Heartbeats keep it alive: closed exactly then, without a
    /// Reset (nothing was lost); a reply awaited or a request held keeps it.
    #[test]
    fn an_idle_connection_is_closed_exactly_when_idle() {
        let mut r = connected_at(ms(0));
        r.handle_request(ask(5, 1), ms(1000));
        actions(&mut r);
        for s in 1..=40 {
            r.handle_bytes(ms(s * 1000)); // Heartbeats
                                          // A reply awaited: never idle.
            r.handle_timeout(ms(s * 1000), 1);
            assert!(r.is_connected());
        }
        // The request was written at 1 s: idle from 31 s once nothing is awaited.
        assert_eq!(r.poll_timeout(0), Some(Duration::from_secs(31)));
        let mut r = connected_at(ms(0));
        r.handle_request(ask(5, 1), ms(1000));
        actions(&mut r);
        for s in 1..=30 {
            r.handle_bytes(ms(s * 1000));
        }
        r.handle_timeout(at(Duration::from_secs(31) - NS), 0);
        assert_eq!(actions(&mut r), []);
        r.handle_timeout(ms(31_000), 0);
        assert_eq!(actions(&mut r), [Close]);
        assert_eq!(
            (r.state(), r.poll_timeout(0)),
            (RetransmitState::Idle, None)
        );
        let stats = r.stats();
        assert_eq!((stats.idle_closes, stats.lost), (1, 0));
        // The next request connects at once (no backoff).
        r.handle_request(ask(9, 1), ms(40_000));
        assert_eq!(actions(&mut r), [Connect]);
    }

    /// `idle: None` keeps a connection for good.
    #[test]
    fn no_idle_close_when_not_asked() {
        let config = RetransmitClientConfig {
            idle: None,
            ..RetransmitClientConfig::default()
        };
        let mut r = RetransmitClient::new(config, true);
        r.handle_request(ask(1, 1), ms(0));
        r.handle_connected(ms(0));
        actions(&mut r);
        for s in 1..=100 {
            r.handle_bytes(ms(s * 1000));
            r.handle_timeout(ms(s * 1000), 0);
        }
        assert!(r.is_connected());
        assert_eq!(r.poll_timeout(0), Some(Duration::from_secs(103)));
    }

    /// Without a server, requests are dropped and the receiver told.
    #[test]
    fn without_a_server_requests_are_unavailable() {
        let mut r = RetransmitClient::new(RetransmitClientConfig::default(), false);
        r.handle_request(ask(1, 1), ms(0));
        assert_eq!(actions(&mut r), [Unavailable]);
        assert_eq!((r.state(), r.held_requests()), (RetransmitState::Idle, 0));
        r.set_server(true);
        assert_eq!(actions(&mut r), [Reset]);
        r.handle_request(ask(1, 1), ms(1));
        assert_eq!(actions(&mut r), [Connect]);
    }

    /// Another server: the connection closes, held requests go, the backoff
    /// starts over and the next request connects at once, even in the
    /// middle of a backoff.
    #[test]
    fn another_server_starts_over() {
        let mut r = connected_at(ms(0));
        r.set_server(true);
        assert_eq!(actions(&mut r), [Close, Reset]);
        assert_eq!(r.state(), RetransmitState::Idle);
        r.handle_request(ask(1, 1), ms(1));
        r.handle_lost(ms(2));
        assert_eq!(actions(&mut r), [Connect, Close, Reset]);
        assert_eq!(r.state(), RetransmitState::Waiting);
        r.set_server(true);
        assert_eq!(actions(&mut r), [Reset]);
        r.handle_request(ask(1, 1), ms(3));
        assert_eq!(actions(&mut r), [Connect]);
        r.set_server(false);
        assert_eq!(actions(&mut r), [Close, Unavailable]);
        // A loss reported for the closed connection changes nothing.
        r.handle_lost(ms(4));
        assert_eq!(
            (r.state(), actions(&mut r).len()),
            (RetransmitState::Idle, 0)
        );
    }
}
