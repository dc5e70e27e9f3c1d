//! [`ClientConfig`] and [`ClientStats`]: the settings and counters of the
//! reference clients (the mio [`Client`](super::Client) with the `net`
//! feature, `tickwire::tokio::Client` with `tokio`), and the log lines
//! both write for a client's events.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::time::Duration;
#[cfg(feature = "net")]
use std::{io, net::SocketAddr};

use super::ServerAddr;
use crate::parse::ParseStats;
use crate::policy::Backoff;
use crate::session::{ClientEvent, ClientSession, ClientSessionConfig};

/// Client settings.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClientConfig {
    /// The server (the first of the fail-over list): an address, or a
    /// host name resolved at each connection attempt ([`ServerAddr`]).
    pub server: ServerAddr,
    /// More servers of the same session (relays, or the origin), tried in
    /// order after [`server`](Self::server) when a connection fails: see
    /// [`ClientConfig::with_servers`] and the
    /// [fail-over rules](crate::session::ClientSession#fail-over). Empty by default.
    #[cfg_attr(feature = "serde", serde(default))]
    pub fallbacks: Vec<ServerAddr>,
    /// The first sequence wanted at the first login (0: live data only).
    pub from: u64,
    /// The server's heartbeat interval: silence for three of them means the
    /// connection is dead (1 s).
    pub heartbeat_interval: Duration,
    /// Give up a connection attempt after this long (5 s).
    pub connect_timeout: Duration,
    /// Reconnect delays and the retry limit.
    pub backoff: Backoff,
    /// After an EndOfSession, reconnect (true, the default) or stop.
    pub reconnect_after_end: bool,
    /// Heal a gap the server skipped while this client was slow by logging
    /// in again from its first sequence (true, the default); off: report it
    /// and go on with live data. See
    /// [`ClientSessionConfig::heal_gaps`] and
    /// [the rules](crate::session::ClientSession#healing-skipped-ranges).
    ///
    /// ```
    /// let mut config = tickwire::net::ClientConfig::new("127.0.0.1:7878");
    /// assert!(config.heal_gaps);
    /// config.heal_gaps = false; // the freshest data, gaps and all
    /// ```
    #[cfg_attr(feature = "serde", serde(default = "heal_by_default"))]
    pub heal_gaps: bool,
    /// Receive buffer (the parser's), 4 MiB.
    pub read_buffer: usize,
    /// Make the mio [`Client::run`](super::Client::run) busy-poll (never
    /// sleep in epoll): one core spins and the wake-up cost leaves the
    /// latency. Off by default. The tokio client does not read it (tokio's
    /// runtime does the polling).
    pub busy_poll: bool,
    /// Credentials to present (protocol section 11): an Auth first on every
    /// connection. Never serialized; `Debug` shows the key id only. A
    /// server that refuses them (a Rejected) is not tried again; see
    /// [`ClientEvent::Rejected`](crate::session::ClientEvent::Rejected).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub credentials: Option<crate::session::auth::ClientKey>,
    /// Send credentials over a plain (not TLS) connection to a server that
    /// is not a loopback address (false): the secret is a bearer token that
    /// anyone on the path could reuse (protocol section 11). Without it,
    /// such a connection attempt fails before connecting.
    #[cfg_attr(feature = "serde", serde(default))]
    pub allow_plain_auth: bool,
    /// Connect inside TLS (protocol section 12; see [`crate::tls`]) to
    /// every server of the list: never plain, for any of them. The
    /// server's certificate is checked against the roots and the name
    /// (`server_name`, else the host dialled). Not serialized.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    #[cfg_attr(feature = "serde", serde(skip))]
    pub tls: Option<crate::tls::TlsClient>,
    /// The session [`from`](Self::from) belongs to, to resume it where a
    /// previous run left off (a relay restarted on its journal does): a
    /// LoginAccepted of that session continues it, with no
    /// [`NewSession`](crate::session::ClientEvent::NewSession); one of
    /// another session is new. `None` (the default): the first login names
    /// the session. See [`ClientSessionConfig::resume_session`](crate::session::ClientSessionConfig::resume_session).
    ///
    /// ```
    /// let mut config = tickwire::net::ClientConfig::new("127.0.0.1:7878");
    /// (config.from, config.resume_session) = (1_001, Some(0xfeed)); // 1..=1000 kept from before
    /// assert_eq!(config.resume_session, Some(0xfeed));
    /// ```
    #[cfg_attr(feature = "serde", serde(default))]
    pub resume_session: Option<u64>,
}

impl ClientConfig {
    /// Defaults for `server`: live data, 1 s heartbeats, 5 s connect
    /// timeout, default backoff with unlimited retries.
    ///
    /// `server` is anything that converts into a [`ServerAddr`]: a
    /// [`SocketAddr`](std::net::SocketAddr), or a `"host:port"` string whose name is resolved
    /// again at each connection attempt (a name that does not resolve
    /// fails the attempt, which is retried by the backoff).
    ///
    /// ```
    /// use tickwire::net::{ClientConfig, ServerAddr};
    /// let by_name = ClientConfig::new("localhost:7878");
    /// assert_eq!(by_name.server, ServerAddr::Name("localhost:7878".into()));
    /// let addr: std::net::SocketAddr = "127.0.0.1:7878".parse()?;
    /// assert_eq!(ClientConfig::new(addr).server, addr);
    /// assert_eq!(ClientConfig::new("127.0.0.1:7878").server, addr);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(server: impl Into<ServerAddr>) -> ClientConfig {
        let rules = ClientSessionConfig::default();
        ClientConfig {
            server: server.into(),
            fallbacks: Vec::new(),
            from: rules.from,
            heartbeat_interval: rules.heartbeat_interval,
            connect_timeout: rules.connect_timeout,
            backoff: rules.backoff,
            reconnect_after_end: rules.reconnect_after_end,
            heal_gaps: rules.heal_gaps,
            read_buffer: 4 << 20,
            busy_poll: false,
            credentials: None,
            allow_plain_auth: false,
            #[cfg(feature = "tls")]
            tls: None,
            resume_session: rules.resume_session,
        }
    }

    /// Defaults for a fail-over list: the origin and relays of one session
    /// (protocol section 10), in the order they are tried; `None` when the
    /// list is empty. When a connection fails the client logs in to the next
    /// one at once, for the next sequence it needs; it backs off only after
    /// every server failed in turn (the
    /// [rules](crate::session::ClientSession#fail-over)).
    ///
    /// The servers are anything that converts into a [`ServerAddr`]
    /// (socket addresses, `"host:port"` strings).
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use tickwire::net::{ClientConfig, ServerAddr};
    /// let a: SocketAddr = "127.0.0.1:7001".parse()?;
    /// let b: SocketAddr = "127.0.0.1:7002".parse()?;
    /// let config = ClientConfig::with_servers(&[a, b]).ok_or("empty")?;
    /// let servers: Vec<&ServerAddr> = config.servers().collect();
    /// assert_eq!(servers, [&ServerAddr::from(a), &ServerAddr::from(b)]);
    /// let named = ClientConfig::with_servers(&["localhost:7001", "backup.example:7001"]).ok_or("empty")?;
    /// assert_eq!(named.fallbacks, [ServerAddr::Name("backup.example:7001".into())]);
    /// assert!(ClientConfig::with_servers::<SocketAddr>(&[]).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_servers<A: Clone + Into<ServerAddr>>(servers: &[A]) -> Option<ClientConfig> {
        let (first, rest) = servers.split_first()?;
        let mut config = ClientConfig::new(first.clone());
        config.fallbacks = rest.iter().cloned().map(Into::into).collect();
        Some(config)
    }

    /// Every server, in the order they are tried:
    /// [`server`](Self::server), then the [`fallbacks`](Self::fallbacks).
    pub fn servers(&self) -> impl Iterator<Item = &ServerAddr> + '_ {
        std::iter::once(&self.server).chain(self.fallbacks.iter())
    }

    /// Server `index` of [`servers`](Self::servers) (the first one if out of range).
    pub(crate) fn server_at(&self, index: usize) -> &ServerAddr {
        index
            .checked_sub(1)
            .and_then(|i| self.fallbacks.get(i))
            .unwrap_or(&self.server)
    }

    /// Whether connections go inside TLS.
    pub(crate) fn uses_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// The rule of [`allow_plain_auth`](Self::allow_plain_auth) for the
    /// servers given as addresses (names are checked at each attempt, once
    /// resolved): the mio client checks it when it is made.
    #[cfg(feature = "net")]
    pub(crate) fn check_plain_auth(&self) -> io::Result<()> {
        if self.credentials.is_none() || self.allow_plain_auth || self.uses_tls() {
            return Ok(());
        }
        for server in self.servers() {
            if let ServerAddr::Socket(addr) = server {
                if !addr.ip().is_loopback() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "credentials would cross the network in clear to {addr}: \
                             use a loopback address, or allow_plain_auth"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Keeps only the addresses credentials may be sent to in clear.
    #[cfg(feature = "net")]
    pub(crate) fn plain_auth_filter(&self, addrs: &mut Vec<SocketAddr>) {
        if self.credentials.is_some() && !self.allow_plain_auth && !self.uses_tls() {
            addrs.retain(|a| a.ip().is_loopback());
        }
    }

    pub(crate) fn session(&self) -> ClientSessionConfig {
        ClientSessionConfig {
            from: self.from,
            heartbeat_interval: self.heartbeat_interval,
            connect_timeout: self.connect_timeout,
            backoff: self.backoff,
            reconnect_after_end: self.reconnect_after_end,
            servers: 1 + self.fallbacks.len(),
            heal_gaps: self.heal_gaps,
            credentials: self.credentials,
            resume_session: self.resume_session,
        }
    }
}

#[cfg(feature = "serde")]
fn heal_by_default() -> bool {
    true
}

/// Client counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClientStats {
    /// Frames and bytes received, discards (all connections).
    pub parse: ParseStats,
    /// Gaps reported.
    pub gaps: u64,
    /// Sequences reported missing.
    pub missing: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Connections made (logins sent).
    pub connects: u64,
    /// Reconnect attempts scheduled.
    pub reconnects: u64,
    /// Switches to the next server of the fail-over list.
    #[cfg_attr(feature = "serde", serde(default))]
    pub failovers: u64,
    /// Gaps the server skipped that were healed by logging in again.
    #[cfg_attr(feature = "serde", serde(default))]
    pub heals: u64,
}

impl ClientStats {
    /// The counters of a driver of `session` whose parsers counted `parse`
    /// (the mio and tokio clients both report through this).
    pub(crate) fn of(parse: ParseStats, session: &ClientSession) -> ClientStats {
        let t = session.tracker().stats();
        let s = session.stats();
        ClientStats {
            parse,
            gaps: t.gaps,
            missing: t.missing,
            duplicates: t.duplicates,
            connects: s.connects,
            reconnects: s.reconnects,
            failovers: s.failovers,
            heals: s.heals,
        }
    }
}

/// The client's own events through the `log` facade, at debug level: the
/// application gets each of them as a [`ClientEvent`] anyway and reports
/// what matters to it (the CLI does); the log shows the connection's life
/// (`tickwire subscribe -v`). Frames are not logged.
#[inline]
pub(crate) fn log_event(server: &dyn core::fmt::Display, event: &ClientEvent<'_>) {
    // Frames (nearly every event) are never logged: no call for them.
    if !matches!(event, ClientEvent::Frame(_)) {
        log_control_event(server, event);
    }
}

#[cold]
#[inline(never)]
fn log_control_event(server: &dyn core::fmt::Display, event: &ClientEvent<'_>) {
    match event {
        ClientEvent::State { from, to } => log::debug!("{server}: {from:?} -> {to:?}"),
        ClientEvent::LoggedIn {
            session_id,
            sequence,
        } => log::debug!("{server}: logged in to session {session_id:#018x} from {sequence}"),
        ClientEvent::NewSession {
            session_id,
            sequence,
        } => log::debug!("{server}: new session {session_id:#018x} at {sequence}"),
        ClientEvent::Gap(gap) => log::debug!(
            "{server}: missing {}..={} ({} frames)",
            gap.first,
            gap.last,
            gap.len()
        ),
        ClientEvent::Discarded(d) => {
            log::debug!("{server}: discarded {} bytes ({:?})", d.bytes, d.reason)
        }
        ClientEvent::EndOfSession { sequence } => {
            log::debug!("{server}: end of session (next {sequence})");
        }
        ClientEvent::Healing { gap, delay } => log::debug!(
            "{server}: skipped {}..={} ({} frames): logging in again from {} in {delay:?}",
            gap.first,
            gap.last,
            gap.len(),
            gap.first
        ),
        ClientEvent::Lost(why) => log::debug!("{server}: connection lost: {why}"),
        ClientEvent::Retrying { attempt, delay } => {
            log::debug!("{server}: retry {attempt} in {delay:?}");
        }
        ClientEvent::Failover { from, to } => {
            log::debug!("{server}: failing over from server {from} to server {to}");
        }
        ClientEvent::GaveUp { attempts, last } => {
            log::debug!("{server}: gave up after {attempts} attempts (last: {last})");
        }
        _ => {}
    }
}
