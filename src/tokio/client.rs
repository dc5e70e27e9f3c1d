//! [`Client`]: the async client, a `Stream` of owned [`ClientEvent`]s
//! driven by a [`ClientSession`].
#![forbid(unsafe_code)]

use std::boxed::Box;
use std::vec::Vec;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ::tokio::net::TcpStream;
use ::tokio::time::{Instant, Sleep};
use bytes::BytesMut;
use futures_core::Stream;
use tokio_util::codec::Decoder;

use super::codec::{Frame, FrameCodec, Item};
use crate::net::{unix_nanos, ClientConfig, ClientStats, ServerAddr};
use crate::parse::{Discard, ParseStats};
use crate::sequence::{Gap, SequenceTracker};
use crate::session::{self, Action, ClientSession, ClientState, IoFailure, Lost, Time};

/// Bytes the receive buffer is asked to have free before each read.
const READ_RESERVE: usize = 256 << 10;
/// Steps of one [`Client::poll_next`] call before it yields to the runtime.
const STEPS_PER_POLL: usize = 64;

/// What the client did or received: the owned counterpart of
/// [`session::ClientEvent`], with frames as [`Frame`]s (shared bytes, no copy).
///
/// ```
/// use tickwire::session::ClientState;
/// use tickwire::tokio::ClientEvent;
/// let e = ClientEvent::State { from: ClientState::Connecting, to: ClientState::Connected };
/// assert!(e.frame().is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
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
    /// A new frame (data, or a Heartbeat).
    Frame(Frame),
    /// Sequences that will not arrive.
    Gap(Gap),
    /// A range the server skipped, healed by logging in again from its
    /// first sequence after `delay` (see [`session::ClientEvent::Healing`]).
    Healing {
        /// The missing range as it showed.
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
    /// Fail-over to the next server of [`ClientConfig::with_servers`]'s
    /// list (see [`session::ClientEvent::Failover`]).
    Failover {
        /// The server whose connection ended.
        from: usize,
        /// The server tried next.
        to: usize,
    },
    /// The server refused the connection (protocol section 11); see
    /// [`session::ClientEvent::Rejected`](crate::session::ClientEvent::Rejected).
    Rejected {
        /// The server that refused (an index into the fail-over list).
        server: usize,
        /// Why.
        reason: crate::wire::RejectReason,
    },
    /// Retries are exhausted: the client is disconnected for good (the
    /// stream ends after this event).
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// How the last one ended.
        last: Lost,
    },
}

impl ClientEvent {
    /// The frame of a [`ClientEvent::Frame`].
    #[must_use]
    pub fn frame(&self) -> Option<&Frame> {
        match self {
            ClientEvent::Frame(f) => Some(f),
            _ => None,
        }
    }

    /// The owned event, except for frames: the driver moves the decoded
    /// [`Frame`] into place itself (`None` here).
    fn own(event: session::ClientEvent<'_>) -> Option<ClientEvent> {
        use session::ClientEvent as E;
        // The connection's life at debug level, as the mio client logs it.
        crate::net::log_event(&"tokio client", &event);
        Some(match event {
            E::State { from, to } => ClientEvent::State { from, to },
            E::LoggedIn {
                session_id,
                sequence,
            } => ClientEvent::LoggedIn {
                session_id,
                sequence,
            },
            E::Frame(_) => return None,
            E::Gap(gap) => ClientEvent::Gap(gap),
            E::Healing { gap, delay } => ClientEvent::Healing { gap, delay },
            E::NewSession {
                session_id,
                sequence,
            } => ClientEvent::NewSession {
                session_id,
                sequence,
            },
            E::Duplicate { sequence } => ClientEvent::Duplicate { sequence },
            E::Discarded(d) => ClientEvent::Discarded(d),
            E::EndOfSession { sequence } => ClientEvent::EndOfSession { sequence },
            E::Lost(why) => ClientEvent::Lost(why),
            E::Retrying { attempt, delay } => ClientEvent::Retrying { attempt, delay },
            E::GaveUp { attempts, last } => ClientEvent::GaveUp { attempts, last },
            E::Rejected { server, reason } => ClientEvent::Rejected { server, reason },
            E::Failover { from, to } => ClientEvent::Failover { from, to },
        })
    }
}

/// A connection: plain TCP, or TLS over it ([`ClientConfig::tls`]).
enum Conn {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

type Connecting = Pin<Box<dyn Future<Output = Result<Conn, IoFailure>> + Send>>;

/// One connection attempt to `server`: a name is resolved now (without
/// blocking the runtime), then each of its addresses is tried in turn;
/// with `tls`, the handshake on the one that answered.
///
/// `loopback_only`: credentials go in clear, so only loopback addresses
/// are tried ([`ClientConfig::allow_plain_auth`]).
async fn connect(
    server: ServerAddr,
    loopback_only: bool,
    #[cfg(feature = "tls")] tls: Option<crate::tls::TlsClient>,
) -> Result<Conn, IoFailure> {
    let stream = connect_tcp(&server, loopback_only).await?;
    let _ = stream.set_nodelay(true);
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        return tls::handshake(&server, stream, &tls)
            .await
            .map(|stream| Conn::Tls(Box::new(stream)));
    }
    Ok(Conn::Plain(stream))
}

async fn connect_tcp(server: &ServerAddr, loopback_only: bool) -> Result<TcpStream, IoFailure> {
    let mut addrs: Vec<SocketAddr> = match server {
        ServerAddr::Socket(addr) => std::vec![*addr],
        ServerAddr::Name(name) => match ::tokio::net::lookup_host(name.as_str()).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                log::debug!("{server}: {e}");
                return Err(IoFailure::Unresolved);
            }
        },
    };
    if loopback_only {
        addrs.retain(|a| a.ip().is_loopback());
        if addrs.is_empty() {
            log::error!(
                "{server}: not a loopback address: credentials are not sent in clear \
                 (allow_plain_auth)"
            );
            return Err(IoFailure::Other);
        }
    }
    let mut failure = IoFailure::Unresolved; // (resolved to no address)
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => failure = e.kind().into(),
        }
    }
    Err(failure)
}

/// The async client: a [`Stream`] of [`ClientEvent`]s around a
/// [`ClientSession`], which holds every rule (states, backoff, liveness,
/// the Login's sequence, gaps, new sessions), exactly as the mio
/// [`net::Client`](crate::net::Client) does. Deadlines are on tokio's clock
/// ([`tokio::time`](::tokio::time)), so a test with paused time runs them
/// exactly and instantly.
///
/// ```text
///  poll_next ─▶ Action::Connect ─▶ TcpStream::connect ─▶ handle_connected ─▶ Login written
///             ─▶ socket readable ─▶ BytesMut ─▶ FrameCodec ─▶ handle_event ─▶ ClientEvent
///             ─▶ sleep until poll_timeout ─▶ handle_timeout (connect timeout, liveness, backoff)
/// ```
///
/// Cancel-safe: all state lives in the client (the pending connect, the
/// unread bytes, the events not yet returned), so dropping a `next()`
/// future (in `select!`, or under a timeout) loses nothing; the next call
/// goes on where it left off. The stream ends once the client stops
/// (gave up, or an EndOfSession with
/// [`reconnect_after_end`](ClientConfig::reconnect_after_end) off).
///
/// ```
/// use futures_util::StreamExt;
/// use tickwire::net::ClientConfig;
/// use tickwire::session::Lost;
/// use tickwire::tokio::{Client, ClientEvent};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// // Nobody listens there: the client retries twice, then gives up.
/// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
/// let mut config = ClientConfig::new(port);
/// config.backoff = tickwire::policy::Backoff::new(
///     std::time::Duration::from_millis(1), std::time::Duration::from_millis(2))
///     .with_max_retries(Some(2));
/// let mut client = Client::new(config);
/// let mut lost = 0;
/// while let Some(event) = client.next().await {
///     match event {
///         ClientEvent::Frame(frame) => println!("{:?}", frame.message()),
///         ClientEvent::Lost(Lost::ConnectFailed(_)) => lost += 1,
///         _ => {}
///     }
/// }
/// assert_eq!(lost, 3);
/// # Ok::<(), std::io::Error>(())
/// # })?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # TLS
///
/// With [`ClientConfig::tls`] (`tls` feature) every connection attempt,
/// to every server of the fail-over list, runs inside TLS (protocol
/// section 12), through `tokio_rustls::TlsConnector`: the server's
/// certificate is verified against the configured roots and the name of
/// [`TlsClient::server_name_for`](crate::tls::TlsClient::server_name_for)
/// the host dialled (a name without its port, or a socket address's IP,
/// unless [`TlsClient::server_name`](crate::tls::TlsClient::server_name)
/// says otherwise), then the ALPN `tickwire/1` is checked. The handshake
/// is part of the connection attempt (within
/// [`connect_timeout`](ClientConfig::connect_timeout)): a failure is a
/// failed attempt ([`Lost::ConnectFailed`](crate::session::Lost::ConnectFailed)),
/// retried by the backoff like any other and logged at warn with rustls's
/// reason (an unknown issuer, a name the certificate is not valid for, an
/// expired certificate, a plain listener…); it never falls back to plain.
/// Inside TLS, credentials go to any address
/// ([`allow_plain_auth`](ClientConfig::allow_plain_auth) is for plain
/// connections), and resuming after a cut is as outside it. A plain
/// client that gets a TLS answer (an alert) names it in its log.
#[cfg_attr(
    feature = "tls",
    doc = r#"
```
use futures_util::StreamExt;
use tickwire::net::{ClientConfig, ServerConfig};
use tickwire::session::Lost;
use tickwire::tls::{TlsClientFiles, TlsServerFiles};
use tickwire::tokio::{Client, ClientEvent, Server};

# tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");
// A server whose certificate comes from a CA the client does not trust.
let rogue = TlsServerFiles::new(format!("{dir}/rogue-server.pem"), format!("{dir}/rogue-server.key"));
let config = ServerConfig { listen: "127.0.0.1:0".parse()?, tls: Some(rogue.load()?), ..Default::default() };
let server = Server::bind(config).await?.spawn();

let mut config = ClientConfig::new(server.local_addr());
config.tls = Some(TlsClientFiles::new(format!("{dir}/ca.pem")).load()?);
config.backoff = tickwire::policy::Backoff::new(
    std::time::Duration::from_millis(1), std::time::Duration::from_millis(2))
    .with_max_retries(Some(1));
let mut client = Client::new(config);
let mut failed = 0;
while let Some(event) = client.next().await {
    match event {
        ClientEvent::LoggedIn { .. } => unreachable!("never logged in"),
        // Logged: "…: TLS handshake failed: invalid peer certificate: UnknownIssuer …"
        ClientEvent::Lost(Lost::ConnectFailed(_)) => failed += 1,
        _ => {}
    }
}
assert_eq!(failed, 2);
server.shutdown().await;
# Ok::<(), Box<dyn std::error::Error>>(())
# })?;
# Ok::<(), Box<dyn std::error::Error>>(())
```
"#
)]
pub struct Client {
    config: ClientConfig,
    session: ClientSession,
    codec: FrameCodec,
    buf: BytesMut,
    stream: Option<Conn>,
    /// Nothing was read on this connection yet (a plain connection's
    /// first bytes are checked for a TLS server's answer).
    first_read: bool,
    connecting: Option<Connecting>,
    /// Bytes of the Login not yet written.
    out: Vec<u8>,
    sleep: Option<Pin<Box<Sleep>>>,
    sleep_at: Option<Instant>,
    epoch: Option<Instant>,
    events: VecDeque<ClientEvent>,
    /// The time of the last read while its bytes may still hold frames
    /// not decoded yet (decoded one at a time, as the events are taken).
    undecoded: Option<Time>,
    closed_stats: ParseStats,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .field("session", &self.session)
            .field("connected", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `config` (the mio client's settings;
    /// [`busy_poll`](ClientConfig::busy_poll) is not used); it connects
    /// when first polled.
    ///
    /// ```
    /// let client = tickwire::tokio::Client::new(tickwire::net::ClientConfig::new("127.0.0.1:7878"));
    /// assert_eq!(client.state(), tickwire::session::ClientState::Disconnected);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn new(config: ClientConfig) -> Client {
        let session = ClientSession::new(config.session());
        Client {
            buf: BytesMut::with_capacity(config.read_buffer.min(READ_RESERVE)),
            config,
            session,
            codec: FrameCodec::new(),
            stream: None,
            first_read: false,
            connecting: None,
            out: Vec::new(),
            sleep: None,
            sleep_at: None,
            epoch: None,
            events: VecDeque::new(),
            undecoded: None,
            closed_stats: ParseStats::default(),
        }
    }

    /// The current state.
    ///
    /// ```
    /// # let client = tickwire::tokio::Client::new(tickwire::net::ClientConfig::new("127.0.0.1:7878"));
    /// assert_eq!(client.state(), tickwire::session::ClientState::Disconnected);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn state(&self) -> ClientState {
        self.session.state()
    }

    /// The sequence tracker (the next sequence needed, the session).
    ///
    /// ```
    /// # let client = tickwire::tokio::Client::new(tickwire::net::ClientConfig::new("127.0.0.1:7878"));
    /// assert_eq!(client.tracker().expected(), None); // live data only
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn tracker(&self) -> &SequenceTracker {
        self.session.tracker()
    }

    /// The protocol state machine this client drives.
    ///
    /// ```
    /// # let client = tickwire::tokio::Client::new(tickwire::net::ClientConfig::new("127.0.0.1:7878"));
    /// assert!(!client.session().is_stopped());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    /// The counters (as the mio client's).
    ///
    /// ```
    /// # let client = tickwire::tokio::Client::new(tickwire::net::ClientConfig::new("127.0.0.1:7878"));
    /// assert_eq!(client.stats().connects, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn stats(&self) -> ClientStats {
        let mut parse = self.closed_stats;
        if self.stream.is_some() {
            parse += self.codec.stats();
        }
        ClientStats::of(parse, &self.session)
    }

    /// Closes the connection and stops: the stream ends after the events
    /// this produced.
    ///
    /// ```
    /// # let mut client = tickwire::tokio::Client::new(tickwire::net::ClientConfig::new("127.0.0.1:7878"));
    /// client.disconnect();
    /// assert!(client.session().is_stopped());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn disconnect(&mut self) {
        let events = &mut self.events;
        self.session
            .stop(&mut |e| events.extend(ClientEvent::own(e)));
        self.apply_actions();
    }

    /// The next event; `None` once the client has stopped. Cancel-safe.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let mut client = tickwire::tokio::Client::new(tickwire::net::ClientConfig::new("127.0.0.1:7878"));
    /// client.disconnect();
    /// assert_eq!(client.next_event().await, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    fn time(&mut self) -> Time {
        let now = Instant::now();
        let epoch = *self.epoch.get_or_insert(now);
        Time::new(now.saturating_duration_since(epoch), unix_nanos())
    }

    /// Carries out what the session asked for: connect, send, close.
    fn apply_actions(&mut self) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Connect => {
                    self.close_stream();
                    let plain_auth_only = self.config.credentials.is_some()
                        && !self.config.allow_plain_auth
                        && !self.config.uses_tls();
                    self.connecting = Some(Box::pin(connect(
                        self.config.server_at(self.session.server()).clone(),
                        plain_auth_only,
                        #[cfg(feature = "tls")]
                        self.config.tls.clone(),
                    )));
                }
                Action::Send(frame) => self.out.extend_from_slice(frame.as_bytes()),
                Action::Close => self.close_stream(),
            }
        }
    }

    fn close_stream(&mut self) {
        self.connecting = None;
        if self.stream.take().is_some() {
            self.closed_stats += self.codec.stats();
        }
        // A fresh decoder and buffer for the next connection: no byte of
        // this one carries over.
        self.codec = FrameCodec::new();
        self.buf.clear();
        self.undecoded = None;
        self.out.clear();
    }

    fn lost(&mut self, why: Lost) {
        let time = self.time();
        let events = &mut self.events;
        self.session
            .handle_lost(why, time, &mut |e| events.extend(ClientEvent::own(e)));
        self.apply_actions();
    }

    /// One step; `Ready(())` when something happened (look again),
    /// `Pending` when every source is waiting with a waker registered.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.session.state() == ClientState::Disconnected {
            if self.session.is_stopped() {
                return Poll::Pending;
            }
            let time = self.time();
            let events = &mut self.events;
            self.session
                .connect(time, &mut |e| events.extend(ClientEvent::own(e)));
            self.apply_actions();
            return Poll::Ready(());
        }
        if let Some(connecting) = self.connecting.as_mut() {
            if let Poll::Ready(result) = connecting.as_mut().poll(cx) {
                self.connecting = None;
                match result {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        self.first_read = true;
                        let time = self.time();
                        let events = &mut self.events;
                        self.session.handle_connected(time, &mut |e| {
                            events.extend(ClientEvent::own(e));
                        });
                        self.apply_actions();
                    }
                    Err(failure) => self.lost(Lost::ConnectFailed(failure)),
                }
                return Poll::Ready(());
            }
        }
        #[cfg(feature = "tls")]
        if let Some(Conn::Tls(stream)) = self.stream.as_mut() {
            if let Poll::Ready(wrote) = tls::poll_out(stream, cx, &self.out) {
                match wrote {
                    Ok(n) => {
                        self.out.drain(..n.min(self.out.len()));
                    }
                    Err(e) => {
                        tls::log_error(self.config.server_at(self.session.server()), &e);
                        self.lost(Lost::Error(e.kind().into()));
                    }
                }
                return Poll::Ready(());
            }
        }
        if let Some(Conn::Plain(stream)) = self.stream.as_ref() {
            if !self.out.is_empty() {
                match stream.try_write(&self.out) {
                    Ok(n) => {
                        self.out.drain(..n.min(self.out.len()));
                        return Poll::Ready(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if stream.poll_write_ready(cx).is_ready() {
                            return Poll::Ready(());
                        }
                    }
                    Err(e) => {
                        self.lost(Lost::Error(e.kind().into()));
                        return Poll::Ready(());
                    }
                }
            }
        }
        // The frames of the last read before the next read: one at a time,
        // so each frame is handed out as soon as it is decoded, not after
        // the whole read is (the mio client's callback sees each frame as
        // it is parsed, too).
        if let Some(time) = self.undecoded {
            if self.decode_one(time) {
                return Poll::Ready(());
            }
            self.undecoded = None;
        }
        if let Some(stream) = self.stream.as_mut() {
            if self.buf.capacity() - self.buf.len() < READ_RESERVE / 4 {
                self.buf.reserve(READ_RESERVE);
            }
            // Through `AsyncRead`: tokio clears the readiness on a short
            // read, so a drained socket costs no extra WouldBlock read.
            let read = match stream {
                Conn::Plain(stream) => {
                    tokio_util::io::poll_read_buf(Pin::new(stream), cx, &mut self.buf)
                }
                #[cfg(feature = "tls")]
                Conn::Tls(stream) => {
                    tokio_util::io::poll_read_buf(Pin::new(&mut **stream), cx, &mut self.buf)
                }
            };
            if let Poll::Ready(read) = read {
                if std::mem::take(&mut self.first_read) {
                    self.check_first_bytes();
                }
                match read {
                    Ok(0) => {
                        self.decode_to_end();
                        self.lost(Lost::Closed);
                    }
                    // A TLS server that closed without close_notify: the
                    // end of the stream all the same.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        self.decode_to_end();
                        self.lost(Lost::Closed);
                    }
                    Ok(_) => {
                        let time = self.time();
                        self.session.handle_bytes(time);
                        self.undecoded = Some(time);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        #[cfg(feature = "tls")]
                        tls::log_error(self.config.server_at(self.session.server()), &e);
                        self.lost(Lost::Error(e.kind().into()));
                    }
                }
                return Poll::Ready(());
            }
        }
        let deadline = self.session.poll_timeout().map(|at| {
            let epoch = *self.epoch.get_or_insert_with(Instant::now);
            epoch + at
        });
        let Some(deadline) = deadline else {
            self.sleep_at = None;
            return Poll::Pending;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(::tokio::time::sleep_until(deadline)));
        // A later deadline (liveness moves on with every read) keeps the
        // timer where it is: waking early is harmless (the session checks
        // the time), and it spares a timer-wheel update per read.
        if self.sleep_at.is_none_or(|at| at > deadline) {
            sleep.as_mut().reset(deadline);
            self.sleep_at = Some(deadline);
        }
        if sleep.as_mut().poll(cx).is_ready() {
            self.sleep_at = None;
            let time = self.time();
            let events = &mut self.events;
            self.session
                .handle_timeout(time, &mut |e| events.extend(ClientEvent::own(e)));
            self.apply_actions();
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// The first bytes of a plain connection: a TLS record (an alert, a
    /// ServerHello) means the server listens in TLS; named in the log, as
    /// the parser only sees bytes that are not frames.
    fn check_first_bytes(&self) {
        if !matches!(self.stream, Some(Conn::Plain(_))) {
            return;
        }
        if let Some([0x14..=0x17, 0x03, ..]) = self.buf.get(..2) {
            log::error!(
                "{}: the server answered in TLS: it is a TLS listener (set ClientConfig::tls)",
                self.config.server_at(self.session.server())
            );
        }
    }

    /// Decodes the next item of the buffer (read at `time`) and hands it to
    /// the session; `false` when no complete item is left.
    fn decode_one(&mut self, time: Time) -> bool {
        if !self.receiving() {
            return false;
        }
        let Ok(Some(item)) = self.codec.decode(&mut self.buf) else {
            return false;
        };
        self.handle_item(item, time);
        true
    }

    /// At the end of the stream: every item left, an incomplete frame
    /// discarded.
    fn decode_to_end(&mut self) {
        let time = self.time();
        while self.receiving() {
            let Ok(Some(item)) = self.codec.decode_eof(&mut self.buf) else {
                break;
            };
            self.handle_item(item, time);
        }
        self.undecoded = None;
    }

    /// Whether the session still takes this connection's frames (not after
    /// it closed it: EndOfSession, a resync).
    fn receiving(&self) -> bool {
        matches!(
            self.session.state(),
            ClientState::Connected | ClientState::LoggedIn
        )
    }

    fn handle_item(&mut self, item: Item, time: Time) {
        let events = &mut self.events;
        // Where the frame goes among the events, if the session passes
        // it on: moved there afterwards, not cloned.
        let mut frame_at = None;
        self.session.handle_event(item.as_event(), time, &mut |e| {
            if let session::ClientEvent::Frame(_) = e {
                frame_at = Some(events.len());
            } else {
                events.extend(ClientEvent::own(e));
            }
        });
        if let (Some(at), Item::Frame(frame) | Item::Duplicate(frame)) = (frame_at, item) {
            self.events.insert(at, ClientEvent::Frame(frame));
        }
        // A Close (EndOfSession, a resync) drops the stream, the buffer and
        // the decoder: nothing more of this connection is decoded.
        self.apply_actions();
    }
}

impl Stream for Client {
    type Item = ClientEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        let this = self.get_mut();
        for _ in 0..STEPS_PER_POLL {
            if let Some(event) = this.events.pop_front() {
                return Poll::Ready(Some(event));
            }
            if this.session.is_stopped() && this.session.state() == ClientState::Disconnected {
                this.close_stream();
                return Poll::Ready(None);
            }
            if this.step(cx).is_pending() {
                return match this.events.pop_front() {
                    Some(event) => Poll::Ready(Some(event)),
                    None => Poll::Pending,
                };
            }
        }
        if let Some(event) = this.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        // Busy for a while without an event to show: let others run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The TLS side of the client (`tls` feature, [`ClientConfig::tls`]).
#[cfg(feature = "tls")]
mod tls {
    use std::borrow::ToOwned;
    use std::string::{String, ToString};

    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use ::tokio::io::AsyncWrite;
    use ::tokio::net::TcpStream;
    use rustls::{CertificateError, Error as TlsError, InvalidMessage};
    use tokio_rustls::client::TlsStream;
    use tokio_rustls::TlsConnector;

    use crate::net::ServerAddr;
    use crate::session::IoFailure;
    use crate::tls::TlsClient;

    /// The host part of the address dialled: a name without its port, a
    /// socket address's IP. What the server's certificate must name,
    /// unless [`TlsClient::server_name`] says otherwise.
    fn host(server: &ServerAddr) -> String {
        match server {
            ServerAddr::Socket(addr) => addr.ip().to_string(),
            ServerAddr::Name(name) => name
                .rsplit_once(':')
                .map_or(name.as_str(), |(host, _)| host)
                .to_owned(),
        }
    }

    /// The handshake on a connected socket, then the ALPN. A failure is a
    /// failed connection attempt (retried by the backoff like any other,
    /// never in clear), logged with rustls's reason.
    pub(super) async fn handshake(
        server: &ServerAddr,
        stream: TcpStream,
        tls: &TlsClient,
    ) -> Result<TlsStream<TcpStream>, IoFailure> {
        let name = tls.server_name_for(&host(server)).map_err(|e| {
            log::error!("{server}: {e}");
            IoFailure::Other
        })?;
        match TlsConnector::from(Arc::clone(&tls.config))
            .connect(name, stream)
            .await
        {
            Ok(stream) => match crate::tls::check_alpn(stream.get_ref().1) {
                Ok(()) => Ok(stream),
                Err(e) => {
                    log::error!("{server}: TLS: {e}");
                    Err(IoFailure::Other)
                }
            },
            Err(e) => {
                log::warn!("{server}: TLS handshake failed: {}", describe(&e));
                Err(e.kind().into())
            }
        }
    }

    fn tls_error(e: &io::Error) -> Option<&TlsError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<TlsError>())
    }

    /// rustls's words, and what a mismatch most likely is.
    fn describe(e: &io::Error) -> String {
        match tls_error(e) {
            Some(TlsError::InvalidMessage(InvalidMessage::InvalidContentType)) => {
                std::format!("{e} (not TLS: a plain listener?)")
            }
            Some(TlsError::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                std::format!("{e} (the certificate's CA is not among the roots)")
            }
            Some(_) => e.to_string(),
            None if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) =>
            {
                "the server closed the connection during the handshake (a plain listener?)"
                    .to_owned()
            }
            None => e.to_string(),
        }
    }

    /// An error of an established TLS connection (an alert: a client
    /// certificate the server refused, say), logged with rustls's words.
    pub(super) fn log_error(server: &ServerAddr, e: &io::Error) {
        if let Some(tls) = tls_error(e) {
            log::warn!("{server}: TLS: {tls}");
        }
    }

    /// Writes `out` (the Login) into the TLS stream, or the records rustls
    /// still holds: `Ready` with the bytes of `out` taken (0 for a flush)
    /// when something moved, `Pending` when there is nothing to do or the
    /// socket is full.
    pub(super) fn poll_out(
        stream: &mut TlsStream<TcpStream>,
        cx: &mut Context<'_>,
        out: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !out.is_empty() {
            return match Pin::new(&mut *stream).poll_write(cx, out) {
                Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                other => other,
            };
        }
        if stream.get_ref().1.wants_write() {
            return Pin::new(&mut *stream).poll_flush(cx).map_ok(|()| 0);
        }
        Poll::Pending
    }
}
