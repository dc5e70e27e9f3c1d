//! [`ServerConfig`]: the settings of the reference servers (mio and tokio),
//! and the server-core and session rules they give.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use super::datagram::DatagramOutputConfig;
use crate::session::{ServerSessionConfig, SlowPolicy};

/// Server settings. `ServerConfig::default()` is what `tickwire serve` uses.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:7878`; loopback only).
    pub listen: SocketAddr,
    /// Close connections that send no Login within this time (5 s).
    pub login_timeout: Duration,
    /// Send a Heartbeat to a client that was sent nothing for this long (1 s).
    pub heartbeat_interval: Duration,
    /// Data frames kept for replay (1,048,576).
    pub retain: usize,
    /// Pending bytes (user queue + kernel send queue) that make a client
    /// slow once they last [`slow_grace`](Self::slow_grace) (1 MiB).
    pub slow_threshold: usize,
    /// How long a backlog may stay over the threshold (or a replay make no
    /// progress) before the client is slow (100 ms).
    pub slow_grace: Duration,
    /// Cap of each client's user-space queue (4 MiB): the memory bound per client.
    pub client_queue: usize,
    /// What happens to slow clients.
    pub slow_policy: SlowPolicy,
    /// Logged-in clients beyond this many are closed at their Login (1024).
    /// Connections that have not logged in are limited separately
    /// ([`max_unauthenticated`](Self::max_unauthenticated)), and so are
    /// retransmission connections
    /// ([`max_retransmission_connections`](Self::max_retransmission_connections)).
    pub max_clients: usize,
    /// Retransmission connections (protocol section 9: the first frame a
    /// Retransmit) beyond this many are closed at their first request, as
    /// [`CloseReason::MaxClients`](crate::session::CloseReason::MaxClients) (4,096). They do not take a client's
    /// place: when a switch drops a datagram, every receiver of a multicast
    /// feed asks at once.
    pub max_retransmission_connections: usize,
    /// Batches the publisher queue holds before `publish` blocks (1024).
    pub publish_queue: usize,
    /// `SO_SNDBUF` for client sockets, if set (the kernel's default otherwise).
    pub send_buffer: Option<usize>,
    /// The session id; a fresh random one per server run if `None`.
    pub session_id: Option<u64>,
    /// After any activity, keep polling without sleeping for this long
    /// before sleeping in epoll again (`None`, the default: always sleep).
    /// Spends one core to save the wake-up between a `publish` and the
    /// write: see the latency benchmark for what it buys on your machine.
    pub busy_poll: Option<Duration>,
    /// Event loops sending to clients (1). With more, the first accepts
    /// connections and runs logins, and hands each logged-in client to the
    /// loops in turn (itself included); every loop gets every published
    /// batch (shared, not copied: one retention's bytes, an index per loop).
    pub threads: usize,
    /// The listen queue: connections the kernel completes before the loop
    /// accepts them (1,024; the kernel caps it, at `net.core.somaxconn` on
    /// Linux). The loop accepts until the queue is empty on every wake-up.
    pub listen_backlog: u32,
    /// Connections that have not logged in, at most (128; at least 1).
    /// A newer one past the limit displaces the oldest, which is closed
    /// with [`CloseReason::UnauthenticatedLimit`](crate::session::CloseReason::UnauthenticatedLimit): idle connections cannot
    /// lock logged-in clients out, and a client that logs in at once gets in.
    pub max_unauthenticated: usize,
    /// Connections that have not logged in from one peer IP address, at
    /// most (16; at least 1): past it, that peer's oldest such connection
    /// is displaced first.
    pub max_unauthenticated_per_peer: usize,
    /// Liveness: a logged-in client that takes none of the bytes it owes
    /// for this many heartbeat intervals is closed with
    /// [`CloseReason::NoProgress`](crate::session::CloseReason::NoProgress) (5; 0 turns the rule and the socket
    /// timeouts below off). Client sockets also get TCP keepalive (idle and
    /// probe interval: the heartbeat interval, at least 1 s; this many
    /// probes) and, on Linux, `TCP_USER_TIMEOUT` of twice the rule's
    /// window: a backstop after the rule (which says why it closed), so
    /// the kernel also gives up on a vanished peer, and on its unsent bytes
    /// after the close, instead of retransmitting for many minutes.
    pub no_progress_intervals: u32,
    /// A datagram feed of the same session (protocol section 8), besides
    /// TCP: every published batch cut into datagrams (by the publishing
    /// thread, or by the first event loop: [`DatagramOutputConfig::sender`]),
    /// a Packet-only datagram after each idle heartbeat interval,
    /// EndOfSession at shutdown (`None`, the default: TCP only).
    /// TCP clients can ask this server to retransmit what they lost
    /// (section 9), from the same retention.
    pub datagrams: Option<DatagramOutputConfig>,
    /// A publisher that finds the event loop asleep, with no earlier batch
    /// waiting, writes its batch to the TCP clients itself inside
    /// [`Publisher::publish`](super::Publisher::publish) (true): the loop's wake-up leaves the path
    /// from publish to client. Only with one event loop, at most 8
    /// logged-in connections (more make one publish a whole pass of
    /// writes, which the loop does), none of them replaying (the loop
    /// paces replays) and batches of at most 64 KiB (a
    /// larger one is written by the loop while the publisher encodes the
    /// next); `publish` then takes the writes' time. False: the loop
    /// always writes.
    #[cfg_attr(feature = "serde", serde(default = "publisher_writes_default"))]
    pub publisher_writes: bool,
    /// The most data frames one Retransmit reply covers (protocol section
    /// 9.2's cap: [`RETRANSMIT_CAP`](crate::session::RETRANSMIT_CAP), 10,000).
    #[cfg_attr(feature = "serde", serde(default = "retransmit_cap_default"))]
    pub retransmit_cap: u64,
    /// How long a new connection may take to log in before it counts
    /// against [`max_unauthenticated`](Self::max_unauthenticated) and
    /// [`max_unauthenticated_per_peer`](Self::max_unauthenticated_per_peer)
    /// (250 ms; see [`CoreConfig::admission_grace`](crate::session::CoreConfig::admission_grace)).
    #[cfg_attr(feature = "serde", serde(default = "admission_grace_default"))]
    pub admission_grace: Duration,
}

#[cfg(feature = "serde")]
fn retransmit_cap_default() -> u64 {
    crate::session::RETRANSMIT_CAP
}

#[cfg(feature = "serde")]
fn admission_grace_default() -> Duration {
    crate::session::CoreConfig::new(0).admission_grace
}

#[cfg(feature = "serde")]
fn publisher_writes_default() -> bool {
    true
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        let session = ServerSessionConfig::new(0);
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            login_timeout: session.login_timeout,
            heartbeat_interval: session.heartbeat_interval,
            retain: 1 << 20,
            slow_threshold: session.slow_threshold,
            slow_grace: session.slow_grace,
            client_queue: session.queue_limit,
            slow_policy: session.slow_policy,
            max_clients: 1024,
            max_retransmission_connections: 4096,
            publish_queue: 1024,
            send_buffer: None,
            session_id: None,
            busy_poll: None,
            threads: 1,
            listen_backlog: 1024,
            max_unauthenticated: 128,
            max_unauthenticated_per_peer: 16,
            no_progress_intervals: session.no_progress_intervals,
            datagrams: None,
            publisher_writes: true,
            retransmit_cap: session.retransmit_cap,
            admission_grace: crate::session::CoreConfig::new(0).admission_grace,
        }
    }
}

impl ServerConfig {
    /// The per-connection rules these settings give (the mio and tokio
    /// servers both run their sessions with it).
    pub(crate) fn session(&self, session_id: u64) -> ServerSessionConfig {
        let mut c = ServerSessionConfig::new(session_id);
        c.login_timeout = self.login_timeout;
        c.heartbeat_interval = self.heartbeat_interval;
        c.slow_threshold = self.slow_threshold;
        c.slow_grace = self.slow_grace;
        c.queue_limit = self.client_queue;
        c.slow_policy = self.slow_policy;
        c.no_progress_intervals = self.no_progress_intervals;
        c.retransmit_cap = self.retransmit_cap;
        c
    }

    /// The server-wide rules these settings give, for `session_id`: the
    /// configuration of the [`ServerCore`](crate::session::ServerCore) both
    /// servers run (for a driver of your own, or a simulation, that must
    /// behave as they do).
    ///
    /// ```
    /// let config = tickwire::net::ServerConfig { max_clients: 7, ..Default::default() };
    /// let core = config.core(42);
    /// assert_eq!((core.max_clients, core.session.session_id), (7, 42));
    /// ```
    #[must_use]
    pub fn core(&self, session_id: u64) -> crate::session::CoreConfig {
        let mut c = crate::session::CoreConfig::new(session_id);
        c.session = self.session(session_id);
        c.retain = self.retain;
        c.max_clients = self.max_clients;
        c.max_retransmission_connections = self.max_retransmission_connections;
        c.max_unauthenticated = self.max_unauthenticated;
        c.max_unauthenticated_per_peer = self.max_unauthenticated_per_peer;
        c.admission_grace = self.admission_grace;
        c
    }

    /// Keepalive, `TCP_USER_TIMEOUT` (see
    /// [`no_progress_intervals`](Self::no_progress_intervals)) and the send
    /// buffer for an accepted client socket (the mio and tokio servers).
    pub(crate) fn apply_socket_options(&self, socket: &socket2::SockRef<'_>) {
        if let Some(size) = self.send_buffer {
            let _ = socket.set_send_buffer_size(size);
        }
        let Some(window) = self.session(0).no_progress_window() else {
            return;
        };
        // TCP_KEEPIDLE and TCP_KEEPINTVL are whole seconds.
        let interval = self.heartbeat_interval.max(Duration::from_secs(1));
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
        let keepalive = keepalive.with_retries(self.no_progress_intervals);
        let _ = socket.set_tcp_keepalive(&keepalive);
        #[cfg(any(target_os = "android", target_os = "linux"))]
        let _ = socket.set_tcp_user_timeout(Some(window.saturating_mul(2)));
        #[cfg(not(any(target_os = "android", target_os = "linux")))]
        let _ = window;
    }
}
