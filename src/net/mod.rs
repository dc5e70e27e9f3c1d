//! Networking on [`mio`] (epoll on Linux, kqueue on BSD and macOS):
//! non-blocking connections, the reference [`Server`] and [`Client`].
//!
//! The blocking adapters over any `Read`/`Write`
//! ([`FrameReader`](crate::io::FrameReader),
//! [`FrameWriter`](crate::io::FrameWriter)) are not here but in
//! [`tickwire::io`](crate::io), which needs only the `std` feature.
//!
//! Everything here is a thin loop over the sans-IO core: bytes are read
//! straight into a [`Parser`](crate::parse::Parser)'s buffer, its events go
//! to the protocol's state machines in [`session`](crate::session), and
//! what those ask for (bytes to write, connections to open or close, the
//! next deadline to sleep until) is carried out here. Every public item is
//! reachable as `tickwire::net::Name`; the session types it reports
//! ([`ClientEvent`](crate::session::ClientEvent),
//! [`CloseReason`](crate::session::CloseReason)…) are in `tickwire::session`.
//!
//! ```text
//!  blocking:      FrameReader<R: Read>  ──▶ Event      FrameWriter<W: Write> ◀── Payload
//!                 (tickwire::io, `std` only: no mio)
//!  non-blocking:  Connection (mio TcpStream, edge-triggered; read/write until WouldBlock)
//!  server:        one mio event loop around a ServerSession per client and one Retention
//!  client:        one mio loop around a ClientSession
//!  datagrams:     the server's optional UDP output (ServerConfig::datagrams);
//!                 DatagramClient: UDP lines A/B ─▶ DatagramReceiver, one TCP
//!                 retransmission connection for what both lines lost
//!  relays:        Relay: a Client of the upstream (fail-over list) ─▶ RelayFeed ─▶
//!                 a Server serving the same session, frames byte for byte
//! ```
//!
//! I/O errors are sorted by [`classify`]: `WouldBlock` means wait for the
//! next readiness event, `Interrupted` means retry at once, and broken pipe,
//! reset, abort and timeout mean the peer is gone (a client reconnects).
//!
//! Every module here forbids `unsafe` except `sys` (the kernel send queue,
//! batched datagram calls, a forced receive buffer).

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

mod addr;
mod client;
mod conn;
pub(crate) mod datagram;
mod feed;
mod publisher;
mod queue;
mod relay;
mod server;
mod server_config;
mod stats;
pub(crate) mod sys;

pub use addr::ServerAddr;
#[cfg(feature = "tokio")]
pub(crate) use client::log_event;
pub use client::{Client, ClientConfig, ClientError, ClientId, ClientSet, ClientStats};
pub use conn::{Connection, ReadOutcome, WriteOutcome};
pub use datagram::{
    DatagramClient, DatagramClientConfig, DatagramClientError, DatagramClientStats,
    DatagramOutputConfig, DatagramSender, DEFAULT_DATAGRAM_SIZE, MAX_DATAGRAM_SIZE,
    MIN_DATAGRAM_SIZE,
};
pub use publisher::{Messages, PublishError, Publisher};
pub use relay::{Relay, RelayConfig, RelayError, RelayFeed};
#[cfg(feature = "tokio")]
pub(crate) use server::new_session_id;
pub use server::{Server, ServerConfig, ServerHandle, StopHandle};
pub use stats::ServerStats;
#[cfg(feature = "tokio")]
pub(crate) use stats::Shared as Counters;

/// Nanoseconds since the Unix epoch, now (0 before 1970, saturating far after).
///
/// ```
/// assert!(tickwire::net::unix_nanos() > 1_700_000_000_000_000_000);
/// ```
#[must_use]
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What an I/O error means for a connection.
///
/// ```
/// use std::io::{Error, ErrorKind};
/// use tickwire::net::{classify, IoClass};
/// assert_eq!(classify(&Error::from(ErrorKind::WouldBlock)), IoClass::Wait);
/// assert_eq!(classify(&Error::from(ErrorKind::ConnectionReset)), IoClass::Gone);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoClass {
    /// EAGAIN / EWOULDBLOCK: nothing to do until the next readiness event.
    Wait,
    /// EINTR: retry the call now.
    Retry,
    /// EPIPE, ECONNRESET, ECONNABORTED, ETIMEDOUT, end of stream: the
    /// connection is gone; reconnect.
    Gone,
    /// Anything else: close the connection and report the error.
    Fatal,
}

/// Sorts an I/O error into what to do about it.
#[must_use]
pub fn classify(error: &io::Error) -> IoClass {
    use io::ErrorKind as K;
    match error.kind() {
        K::WouldBlock => IoClass::Wait,
        K::Interrupted => IoClass::Retry,
        K::BrokenPipe
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::TimedOut
        | K::UnexpectedEof
        | K::NotConnected => IoClass::Gone,
        _ => IoClass::Fatal,
    }
}

/// Why a failed read or write closes a server's connection: the peer going
/// away is not an error of ours (the mio and tokio servers).
pub(crate) fn close_reason(error: &io::Error) -> crate::session::CloseReason {
    match classify(error) {
        IoClass::Gone => crate::session::CloseReason::PeerClosed,
        _ => crate::session::CloseReason::IoError,
    }
}

/// One log line per event of a server core (the mio and tokio servers).
pub(crate) fn log_core_event(
    event: &crate::session::CoreEvent,
    policy: crate::session::SlowPolicy,
) {
    match *event {
        crate::session::CoreEvent::Session { peer, event, .. } => match event {
            crate::session::ServerEvent::LoggedIn {
                wanted,
                start,
                oldest,
                next_live,
            } => log::info!(
                "login {peer}: wanted {wanted}, sending from {start} (oldest {oldest}, next live {next_live})"
            ),
            crate::session::ServerEvent::Slow { reason, pending } => log::warn!(
                "{peer} is slow ({}, {pending} bytes pending): {}",
                reason.as_str(),
                match policy {
                    crate::session::SlowPolicy::Disconnect => "disconnecting it",
                    _ => "skipping it",
                }
            ),
            crate::session::ServerEvent::Drained { pending } => {
                log::info!("{peer} drained ({pending} bytes pending): live data resumes");
            }
            crate::session::ServerEvent::Retransmitted {
                wanted,
                count,
                first,
                end,
                frames,
            } => log::info!(
                "retransmit {peer}: wanted {count} from {wanted}, sent {frames} frames of {first}..{end}"
            ),
            crate::session::ServerEvent::Authenticated { key_id } => {
                log::info!("authenticated {peer} as {key_id}");
            }
            crate::session::ServerEvent::Rejected { reason } => {
                log::info!("rejected {peer}: {reason}");
            }
        },
        crate::session::CoreEvent::Closed { peer, reason, .. } => {
            if reason != crate::session::CloseReason::Shutdown {
                log::info!("closed {peer}: {reason}");
            }
        }
    }
}
