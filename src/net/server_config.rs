//! [`ServerConfig`]: the settings of the reference servers (the mio
//! [`Server`](super::Server) with the `net` feature,
//! `tickwire::tokio::Server` with `tokio`): what a driver needs (where to
//! listen, socket options, a datagram feed), the rules of the server core
//! both run ([`CoreConfig`], embedded whole), and with `net` the mio event
//! loops' own options ([`LoopOptions`]).
#![forbid(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::datagram_output::DatagramOutputConfig;
use super::unix_nanos;
use crate::session::auth::Verifier;
use crate::session::CoreConfig;

/// Server settings. `ServerConfig::default()` is what `tickwire serve` uses.
///
/// Every field here means the same on both servers. The rules of the
/// protocol are the core's: [`core`](Self::core) holds them all, and its
/// [`session`](CoreConfig::session) the rules of each connection. What is
/// left here is what a driver does with sockets. Settings only the mio
/// event loops have are in [`mio`](Self::mio) (`net` feature).
///
/// ```
/// use std::time::Duration;
/// use tickwire::net::ServerConfig;
/// use tickwire::session::SlowPolicy;
///
/// let mut config = ServerConfig { listen: "127.0.0.1:0".parse()?, ..ServerConfig::default() };
/// config.core.max_clients = 64;
/// config.core.session.heartbeat_interval = Duration::from_millis(250);
/// config.core.session.slow_policy = SlowPolicy::Disconnect;
/// config.core.session.session_id = 0xfeed; // 0, the default: a random one per run
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
///
/// Accepted client sockets get, from the core's connection rules, TCP
/// keepalive (idle time and probe interval: the heartbeat interval, at
/// least 1 s; [`no_progress_intervals`](crate::session::ServerSessionConfig::no_progress_intervals)
/// probes) and, on Linux, `TCP_USER_TIMEOUT` of twice the no-progress
/// window: a backstop after the core's rule (which says why it closed), so
/// the kernel also gives up on a vanished peer, and on its unsent bytes
/// after the close, instead of retransmitting for many minutes. None of
/// this when the rule is off (`no_progress_intervals` 0).
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:7878`; loopback only).
    pub listen: SocketAddr,
    /// The listen queue: connections the kernel completes before the
    /// server accepts them (1,024; the kernel caps it, at
    /// `net.core.somaxconn` on Linux). Both servers accept until the queue
    /// is empty.
    pub listen_backlog: u32,
    /// `SO_SNDBUF` for client sockets, if set (the kernel's default otherwise).
    pub send_buffer: Option<usize>,
    /// Every rule the server core decides, the same on both servers: the
    /// retention, the limits (clients, retransmission connections,
    /// connections that have not logged in, overall and per address), the
    /// admission grace, the lock-out of addresses whose authentications
    /// fail, and in [`core.session`](CoreConfig::session) the
    /// rules of each connection (login timeout, heartbeats, slow clients,
    /// no progress, the Retransmit cap). Defaults: [`CoreConfig::new`]`(0)`.
    ///
    /// **The session id** is `core.session.session_id`, and 0 (the
    /// default) means a fresh random one each time a server binds. One
    /// field, no override beside it: 0 is no session in the protocol (a
    /// Retransmit for session 0 asks for whatever session the server holds,
    /// and a server that holds none answers 0, section 9), so no server
    /// serves it, and any other value is served as it is. A relay serves
    /// its upstream's session whatever this says.
    pub core: CoreConfig,
    /// A datagram feed of the same session (protocol section 8), besides
    /// TCP: every published batch cut into datagrams by the publishing
    /// thread (the mio server can leave it to its event loop:
    /// [`LoopOptions::datagram_sender`]), a Packet-only datagram after each
    /// idle heartbeat interval, EndOfSession at shutdown (`None`, the
    /// default: TCP only). TCP clients can ask this server to retransmit
    /// what they lost (section 9), from the same retention.
    pub datagrams: Option<DatagramOutputConfig>,
    /// The mio event loops' own settings (threads, busy polling, the
    /// publish queue, publisher writes, who sends datagrams): the tokio
    /// server runs on tokio's runtime and has none of these, so they are
    /// not on the shared part (only with the `net` feature).
    #[cfg(feature = "net")]
    #[cfg_attr(docsrs, doc(cfg(feature = "net")))]
    #[cfg_attr(feature = "serde", serde(default))]
    pub mio: LoopOptions,
    /// Require every TCP connection to authenticate first (protocol
    /// section 11) with this verifier, e.g. a
    /// [`Credentials`](crate::session::auth::Credentials) file; `None` (the
    /// default): no authentication (an Auth sent first is ignored). The
    /// lock-out of failing addresses is `core.lockout`. Not serialized.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub auth: Option<Arc<dyn Verifier>>,
    /// Serve inside TLS (protocol section 12; see [`crate::tls`]): the
    /// listener is TLS only. `None` (the default): plain TCP. Not
    /// serialized.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    #[cfg_attr(feature = "serde", serde(skip))]
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Journal every published batch (write-ahead), continue the session
    /// after a restart, and serve logins older than the retention from
    /// disk: see [`JournalSettings`](super::JournalSettings) (`journal`
    /// feature). `None` (the default): nothing is kept beyond the
    /// retention, and every start is a new session.
    #[cfg(feature = "journal")]
    #[cfg_attr(docsrs, doc(cfg(feature = "journal")))]
    #[cfg_attr(feature = "serde", serde(default))]
    pub journal: Option<super::JournalSettings>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            listen_backlog: 1024,
            send_buffer: None,
            core: CoreConfig::new(0),
            datagrams: None,
            #[cfg(feature = "net")]
            mio: LoopOptions::default(),
            auth: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "journal")]
            journal: None,
        }
    }
}

impl ServerConfig {
    /// The core's configuration for one run: [`core`](Self::core), with a
    /// fresh random session id if its id is 0 (see there).
    pub(crate) fn core_for_run(&self) -> CoreConfig {
        let mut core = self.core;
        if core.session.session_id == 0 {
            core.session.session_id = new_session_id();
        }
        core
    }

    /// Keepalive, `TCP_USER_TIMEOUT` (see the [type's docs](Self)) and the
    /// send buffer for an accepted client socket (the mio and tokio servers).
    pub(crate) fn apply_socket_options(&self, socket: &socket2::SockRef<'_>) {
        if let Some(size) = self.send_buffer {
            let _ = socket.set_send_buffer_size(size);
        }
        let rules = &self.core.session;
        let Some(window) = rules.no_progress_window() else {
            return;
        };
        // TCP_KEEPIDLE and TCP_KEEPINTVL are whole seconds.
        let interval = rules.heartbeat_interval.max(Duration::from_secs(1));
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(interval)
            .with_interval(interval);
        #[cfg(any(
            target_os = "android",
            target_os = "freebsd",
            target_os = "linux",
            target_os = "macos",
            target_os = "netbsd"
        ))]
        let keepalive = keepalive.with_retries(rules.no_progress_intervals);
        let _ = socket.set_tcp_keepalive(&keepalive);
        #[cfg(any(target_os = "android", target_os = "linux"))]
        let _ = socket.set_tcp_user_timeout(Some(window.saturating_mul(2)));
        #[cfg(not(any(target_os = "android", target_os = "linux")))]
        let _ = window;
    }
}

/// A session id unique to this run, never 0: the process's random hash
/// keys mixed with the time and the process id.
pub(crate) fn new_session_id() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(unix_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}

/// The mio server's event loops: [`ServerConfig::mio`]. The tokio server
/// has no counterpart of any of them: tokio's runtime owns the threads and
/// the polling, its publisher hands each batch to the server core itself
/// (no queue to bound, no loop to wake or to write for), and sends the
/// batch's datagrams itself.
///
/// ```
/// use tickwire::net::{LoopOptions, ServerConfig};
/// let config = ServerConfig {
///     mio: LoopOptions { threads: 4, ..LoopOptions::default() },
///     ..ServerConfig::default()
/// };
/// assert_eq!((config.mio.threads, config.mio.publish_queue), (4, 1024));
/// ```
#[cfg(feature = "net")]
#[cfg_attr(docsrs, doc(cfg(feature = "net")))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LoopOptions {
    /// Event loops sending to clients (1). With more, the first accepts
    /// connections and runs logins, and hands each logged-in client to the
    /// loops in turn (itself included), a client logging in to a replay to
    /// the other loops only (replays keep a loop busy; the first one keeps
    /// the live edge); every loop gets every published batch (shared, not
    /// copied: one retention's bytes, an index per loop).
    pub threads: usize,
    /// After any activity, keep polling without sleeping for this long
    /// before sleeping in epoll again (`None`, the default: always sleep).
    /// Spends one core to save the wake-up between a `publish` and the
    /// write: see the latency benchmark for what it buys on your machine.
    pub busy_poll: Option<Duration>,
    /// Batches the publisher queue holds before
    /// [`Publisher::publish`](super::Publisher::publish) blocks (and
    /// [`try_publish`](super::Publisher::try_publish) returns
    /// [`PublishError::Full`](super::PublishError::Full)) (1,024).
    pub publish_queue: usize,
    /// A publisher that finds the event loop asleep, with no earlier batch
    /// waiting, writes its batch to the TCP clients itself inside
    /// [`Publisher::publish`](super::Publisher::publish) (true): the loop's
    /// wake-up leaves the path from publish to client. Only while the
    /// first loop has at most 8 logged-in connections (more make one
    /// publish a whole pass of writes, which the loop does), none of them
    /// replaying (the loop paces replays) and batches of at most 64 KiB (a
    /// larger one is written by the loop while the publisher encodes the
    /// next); `publish` then takes the writes' time. With several loops
    /// ([`threads`](Self::threads)) the publisher also hands the batch to
    /// the other loops, as the first would: clients logging in to a replay
    /// go to those, so the first loop's live clients are written by the
    /// publisher while the others replay. False: the loops always write.
    pub publisher_writes: bool,
    /// Which thread sends the datagram feed's batches
    /// ([`ServerConfig::datagrams`]): the publishing thread (the default,
    /// as the tokio server always does) or the event loop.
    pub datagram_sender: DatagramSender,
}

#[cfg(feature = "net")]
impl Default for LoopOptions {
    fn default() -> LoopOptions {
        LoopOptions {
            threads: 1,
            busy_poll: None,
            publish_queue: 1024,
            publisher_writes: true,
            datagram_sender: DatagramSender::Publisher,
        }
    }
}

/// Which thread of the mio server sends the datagram feed's batches
/// ([`LoopOptions::datagram_sender`]).
///
/// ```
/// use tickwire::net::{DatagramSender, LoopOptions};
/// let mut options = LoopOptions::default();
/// assert_eq!(options.datagram_sender, DatagramSender::Publisher);
/// options.datagram_sender = DatagramSender::EventLoop; // publish() only queues
/// ```
#[cfg(feature = "net")]
#[cfg_attr(docsrs, doc(cfg(feature = "net")))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DatagramSender {
    /// The publishing thread, within [`Publisher::publish`](super::Publisher::publish)
    /// (the default): a batch's datagrams leave as soon as it is numbered,
    /// without waiting for the event loop to wake up, and while only
    /// datagram receivers (no TCP subscriber) are served the loop is not
    /// woken per batch either. `publish` takes longer by the system calls,
    /// and each batch is cut on its own (its last datagram may be short).
    #[default]
    Publisher,
    /// The event loop: `publish` only queues the batch; batches that wait
    /// together are cut into datagrams together (fuller datagrams, fewer
    /// system calls), once the loop has woken up.
    EventLoop,
}
