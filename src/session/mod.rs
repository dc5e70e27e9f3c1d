//! The protocol's connection rules as pure state machines (`alloc`, no
//! socket, no clock): the server side of one connection
//! ([`ServerSession`]), every server decision that spans connections
//! ([`ServerCore`]: admission and limits, fan-out, timers, shutdown), the
//! client ([`ClientSession`]), and the [`Retention`] of published batches
//! they share; for datagram feeds (sections 8 and 9), the sender's
//! [`packetizer`], the receiver ([`datagram`]) and its retransmission
//! connection ([`retransmit_client`]).
//!
//! This is the shape of quinn-proto: time comes in as an argument
//! ([`Time`]), bytes come in through `handle_*` methods, and what to do comes
//! out of `poll_*` methods (`poll_transmit`, `poll_action`, `poll_timeout`,
//! `poll_close`, `poll_event`). A driver is a thin loop around them: the mio
//! server and client in [`net`](crate#features) are one; a simulated-time
//! test harness is another, which is how every timing rule is tested
//! exactly and instantly.
//!
//! ```text
//!  Publisher ─▶ Arc<Batch> ─▶ Retention ─────────────┐ segments (shared, no copy)
//!                   │                                 ▼
//!                   └──── handle_published ──▶ ServerSession ─▶ poll_transmit ─▶ socket
//!  socket ─▶ Parser ─▶ Event ─▶ handle_event ─┘     poll_timeout / handle_timeout: login
//!                                                    timeout, heartbeats, slow clients
//!
//!  socket ─▶ Parser ─▶ Event ─▶ ClientSession::handle_event ─▶ ClientEvent (frames, gaps…)
//!                               poll_action ─▶ Connect / Send(Login) / Close
//!                               poll_timeout ─▶ connect timeout, liveness, backoff
//!
//!  Batch ─▶ Packetizer::publish ─▶ poll_datagram ─▶ UDP (idle Packets, EndOfSession by time)
//!  UDP ─▶ DatagramReceiver ─▶ poll_action: Retransmit ─▶ RetransmitClient ─▶ Connect / Send / Close
//! ```
#![forbid(unsafe_code)]

use core::time::Duration;

pub(crate) mod admission;
pub mod auth;
pub mod client;
pub mod cold;
pub mod datagram;
mod outbound;
pub mod packetizer;
pub mod retention;
pub mod retransmit_client;
pub mod server;
pub mod server_core;

pub use client::{
    Action, ClientEvent, ClientSession, ClientSessionConfig, ClientSessionStats, ClientState,
    ControlFrame, IoFailure, Lost,
};
#[cfg(feature = "journal")]
pub(crate) use retention::SharedBytes;
pub use retention::{Batch, BatchError, Retention, Segment};
pub use server::{
    CloseReason, ColdFetch, FileFront, OwnedTransmit, ServerEvent, ServerPhase, ServerSession,
    ServerSessionConfig, ServerSessionStats, SlowPolicy, SlowReason, Transmit, RETRANSMIT_CAP,
};
pub use server_core::{
    ConnId, CoreConfig, CoreEvent, CoreStats, Detached, ServerCore, SHUTDOWN_DRAIN, WRITE_BUDGET,
};

/// Now, as the sessions see it: a monotonic time for every deadline, and the
/// wall-clock time written into the frames they make (Unix nanoseconds).
///
/// ```
/// use core::time::Duration;
/// let t = tickwire::session::Time::new(Duration::from_millis(5), 1_700_000_000_000_000_000);
/// assert_eq!(t.monotonic, Duration::from_millis(5));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    /// Monotonic time since an epoch of the driver's choosing.
    pub monotonic: Duration,
    /// Nanoseconds since the Unix epoch, for frame timestamps.
    pub unix_nanos: u64,
}

impl Time {
    /// A time from its two clocks.
    #[must_use]
    pub const fn new(monotonic: Duration, unix_nanos: u64) -> Time {
        Time {
            monotonic,
            unix_nanos,
        }
    }
}
