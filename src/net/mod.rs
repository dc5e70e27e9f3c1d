//! Networking: the reference server and client on [`mio`] (epoll on
//! Linux, kqueue on BSD and macOS; `net` feature), and what they share with
//! their twins in [`tokio`](crate#features) (`tokio` feature).
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
//! ## What is here, by feature
//!
//! With `net` or `tokio` (what both drivers share; no mio):
//! [`ServerConfig`] (around the core's [`CoreConfig`](crate::session::CoreConfig)),
//! [`ClientConfig`], [`ServerAddr`], [`ServerStats`], [`ClientStats`],
//! [`DatagramOutputConfig`] and the datagram sizes, [`Messages`],
//! [`PublishError`], [`classify`] and [`IoClass`], [`unix_nanos`]; inside,
//! the datagram output (plain `std` UDP), the socket options and the one
//! module of system calls (`sys`: the kernel send queue, `sendmmsg`).
//!
//! With `net` only (mio): [`Server`], [`ServerHandle`], [`StopHandle`],
//! [`Publisher`], [`LoopOptions`] ([`ServerConfig::mio`]) and
//! [`DatagramSender`]; [`Client`], [`ClientSet`], [`ClientError`];
//! [`Connection`]; [`DatagramClient`]; [`Relay`] and [`RelayFeed`].
//!
//! ```text
//!  blocking:      FrameReader<R: Read>  ──▶ Event      FrameWriter<W: Write> ◀── Payload
//!                 (tickwire::io, `std` only: no mio)
//!  non-blocking:  Connection (mio TcpStream, edge-triggered; read/write until WouldBlock),
//!                 for programs of your own
//!  server:        mio event loops around one ServerCore each (session::ServerCore)
//!  client:        one mio loop around a ClientSession
//!  datagrams:     the server's optional UDP output (ServerConfig::datagrams, both servers);
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

// With `tokio` alone, the docs here still name the mio drivers (`Server`,
// `LoopOptions`…) that exist with `net`: those links have no target then.
#![cfg_attr(not(feature = "net"), allow(rustdoc::broken_intra_doc_links))]

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

mod addr;
mod client_config;
mod datagram_output;
#[cfg(feature = "journal")]
mod journaled;
#[cfg(not(feature = "journal"))]
#[path = "no_journal.rs"]
mod journaled;
mod publish;
mod server_config;
mod stats;
pub(crate) mod sys;

#[cfg(feature = "net")]
mod client;
#[cfg(feature = "net")]
mod conn;
#[cfg(feature = "net")]
mod datagram;
#[cfg(feature = "net")]
mod feed;
#[cfg(feature = "net")]
mod publisher;
#[cfg(feature = "net")]
mod queue;
#[cfg(feature = "net")]
mod relay;
#[cfg(feature = "net")]
mod server;
#[cfg(feature = "net")]
mod transport;

pub use addr::ServerAddr;
#[cfg(feature = "tokio")]
pub(crate) use client_config::log_event;
pub use client_config::{ClientConfig, ClientStats};
#[cfg(feature = "tokio")]
pub(crate) use datagram_output::DatagramOutput;
pub use datagram_output::{
    DatagramOutputConfig, DEFAULT_DATAGRAM_SIZE, MAX_DATAGRAM_SIZE, MIN_DATAGRAM_SIZE,
};
#[cfg(feature = "journal")]
pub use journaled::JournalSettings;
pub(crate) use journaled::{open_for as open_journal, Wal};
pub use publish::{Messages, PublishError};
pub use server_config::ServerConfig;
#[cfg(feature = "net")]
pub use server_config::{DatagramSender, LoopOptions};
pub use stats::ServerStats;
#[cfg(feature = "tokio")]
pub(crate) use stats::Shared as Counters;

#[cfg(feature = "net")]
pub use client::{Client, ClientError, ClientId, ClientSet};
#[cfg(feature = "net")]
pub use conn::{Connection, ReadOutcome, WriteOutcome};
#[cfg(feature = "net")]
pub use datagram::{
    DatagramClient, DatagramClientConfig, DatagramClientError, DatagramClientStats,
};
pub(crate) use publish::not_journaled;
#[cfg(feature = "net")]
pub use publisher::Publisher;
#[cfg(feature = "net")]
pub use relay::{Relay, RelayConfig, RelayError, RelayFeed};
#[cfg(feature = "net")]
pub use server::{Server, ServerHandle, StopHandle};

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
            crate::session::ServerEvent::ReplayFailed { at } => {
                log::warn!("{peer}: its replay from the journal stopped at sequence {at}");
            }
        },
        crate::session::CoreEvent::Closed { peer, reason, .. } => {
            if reason != crate::session::CloseReason::Shutdown {
                log::info!("closed {peer}: {reason}");
            }
        }
    }
}
