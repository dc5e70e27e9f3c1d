//! [`DatagramClient`]: the subscriber side of a datagram feed (protocol
//! sections 8 and 9) on mio; the server's side is the
//! [datagram output](super::DatagramOutputConfig).
//!
//! Every rule lives in a sans-IO session; this module moves their bytes and
//! time: the client feeds a
//! [`DatagramReceiver`](crate::session::datagram::DatagramReceiver)
//! (ordering, lines, holes) and drives its retransmission connection by a
//! [`RetransmitClient`](crate::session::retransmit_client::RetransmitClient)
//! (connect timeout, backoff, liveness, idle close).
//!
//! ```text
//!  Server ── publish(batch) ──▶ Packetizer ──datagrams──send_to──▶ line A (and line B)
//!     ▲   (Packet + whole frames, ≤ max_datagram)          │  (unicast or multicast)
//!     │   idle: Packet-only datagram per heartbeat interval │
//!     │   shutdown: Packet + EndOfSession                   ▼
//!     │                                        DatagramClient: UDP socket per line
//!     │                                            │ handle_datagram(line, bytes, now)
//!     │                                            ▼
//!     │                                   DatagramReceiver (sans-IO) ──poll_event──▶ user
//!     │                                            │ poll_action: Retransmit{first, count}
//!     │                                            ▼
//!     │                                   RetransmitClient (sans-IO): Connect / Send / Close
//!     └──── one reused TCP connection ◀────────────┘  replies ─▶ handle_retransmission
//!           (first frame a Retransmit: section 9)
//! ```
//!
//! Receiving: on Linux one `recvmmsg` call per batch of datagrams, elsewhere
//! one `recv` per datagram.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::conn::Connection;
use super::unix_nanos;
use crate::parse::Event;
use crate::policy::Backoff;
use crate::session::datagram::{
    DatagramConfig, DatagramEvent, DatagramReceiver, DatagramStats, Line,
};
use crate::session::packetizer::MAX_DATAGRAM_SIZE;
use crate::session::retransmit_client::{
    RetransmitAction, RetransmitClient, RetransmitClientConfig, RetransmitState,
};
use crate::session::Time;
use crate::wire::MsgType;

/// How a [`DatagramClient`] receives and recovers a feed.
///
/// ```
/// use tickwire::net::DatagramClientConfig;
/// let c = DatagramClientConfig::new("127.0.0.1:0".parse()?);
/// assert!(c.line_b.is_none() && c.retransmit.is_none());
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Clone, Debug)]
pub struct DatagramClientConfig {
    /// Line A: an IP multicast group and port to join, or a local unicast
    /// address to bind (port 0: any free port, see
    /// [`DatagramClient::local_addrs`]).
    pub line_a: SocketAddr,
    /// Line B, the same way.
    pub line_b: Option<SocketAddr>,
    /// The IPv4 interface (its address) multicast groups are joined on
    /// (`None`: the routing table's choice).
    pub interface: Option<Ipv4Addr>,
    /// The TCP retransmission server (section 9): the publishing server or
    /// any server holding the session. `None`: no retransmission (holes
    /// become gaps at the receiver's deadline).
    pub retransmit: Option<SocketAddr>,
    /// The receiver's settings (reorder window, retransmission wait and
    /// deadline, start). Size the window to the feed: it must hold what
    /// arrives during the retransmission wait plus a round trip (at 4 M
    /// frames/s, 2 ms is 8,000 frames), or a hole is given up as a gap
    /// when the window fills, before it was ever requested.
    pub receiver: DatagramConfig,
    /// Reconnect delays for the retransmission connection.
    pub backoff: Backoff,
    /// The server's heartbeat interval (1 s): a retransmission connection
    /// silent for three of them is dropped and connected again, and a line
    /// silent for three of them is reported silent (this sets the
    /// receiver's [`lines`](DatagramConfig::lines) and
    /// [`silence`](DatagramConfig::silence)).
    pub heartbeat_interval: Duration,
    /// Give up a connection attempt after this long (5 s).
    pub connect_timeout: Duration,
    /// `SO_RCVBUF` of each line's socket (8 MiB; the kernel caps it at
    /// `net.core.rmem_max` unless
    /// [`force_recv_buffer`](Self::force_recv_buffer)). The buffer is what
    /// absorbs the receiver's scheduling delays: at millions of frames per
    /// second a few MiB last milliseconds.
    pub recv_buffer: Option<usize>,
    /// Set [`recv_buffer`](Self::recv_buffer) past `net.core.rmem_max`
    /// (`SO_RCVBUFFORCE`, Linux; needs `CAP_NET_ADMIN`, e.g. root).
    /// `false` by default; without the privilege, or elsewhere, the capped
    /// size is used and a warning logged.
    pub force_recv_buffer: bool,
    /// Receive up to 32 datagrams per system call with `recvmmsg` (Linux;
    /// `true`). Elsewhere, or `false`: one `recv` per datagram.
    pub batch_syscalls: bool,
    /// Close the retransmission connection once it has carried no request
    /// for this long and no reply is awaited (30 s; `None`: keep it open).
    /// Losses are rare on a healthy network: without this, every receiver
    /// of a multicast feed would hold a TCP connection to the server (a
    /// client slot, and a Heartbeat each interval) for good. The next
    /// request opens a new one.
    pub retransmit_idle: Option<Duration>,
    /// Credentials for the retransmission connection (protocol section 11):
    /// an Auth first on each. A server that refuses them (a Rejected) is
    /// not asked again: holes become gaps at their deadline. `Debug` shows
    /// the key id only.
    pub retransmit_credentials: Option<crate::session::auth::ClientKey>,
}

impl DatagramClientConfig {
    /// Line A only, no retransmission, default receiver and backoff.
    #[must_use]
    pub fn new(line_a: SocketAddr) -> DatagramClientConfig {
        DatagramClientConfig {
            line_a,
            line_b: None,
            interface: None,
            retransmit: None,
            receiver: DatagramConfig::default(),
            backoff: Backoff::default(),
            heartbeat_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            recv_buffer: Some(8 << 20),
            force_recv_buffer: false,
            batch_syscalls: true,
            retransmit_idle: Some(Duration::from_secs(30)),
            retransmit_credentials: None,
        }
    }
}

/// A [`DatagramClient`]'s counters.
///
/// ```
/// let s = tickwire::net::DatagramClientStats::default();
/// assert_eq!(s.connects, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramClientStats {
    /// The receiver's counters (datagrams per line, duplicates, requests…).
    pub receiver: DatagramStats,
    /// Retransmission connections made.
    pub connects: u64,
    /// Retransmission connections lost (closed, failed, silent, timed out)
    /// or closed for being idle.
    pub disconnects: u64,
    /// Retransmission connections closed for being idle
    /// ([`DatagramClientConfig::retransmit_idle`]).
    pub idle_closes: u64,
    /// Retransmit frames written.
    pub requests_sent: u64,
    /// Datagrams longer than the receive buffer (truncated: discarded).
    pub oversized: u64,
    /// Receive system calls made on the lines (`recvmmsg` or `recv`,
    /// including the last one of each read that found nothing).
    pub recv_calls: u64,
}

/// Datagrams read from one line per [`DatagramClient::poll`]: a flood on
/// one line cannot hold up the other, the retransmission connection or the
/// timers (the rest is read on the next poll, which then does not wait).
const READS_PER_POLL: usize = 4096;

const LINE_A: Token = Token(0);
const LINE_B: Token = Token(1);
const TCP: Token = Token(2);

/// The datagram subscriber: a mio loop around a
/// [`DatagramReceiver`](crate::session::datagram::DatagramReceiver), with
/// one UDP socket per line and one reused TCP retransmission connection.
///
/// ```
/// use std::time::Duration;
/// use tickwire::net::{DatagramClient, DatagramClientConfig, DatagramOutputConfig, Server, ServerConfig};
/// use tickwire::session::datagram::DatagramEvent;
/// use tickwire::{encode::QuoteFields, Payload};
///
/// // A subscriber on a free unicast port, then a server sending to it.
/// let mut client = DatagramClient::new(DatagramClientConfig::new("127.0.0.1:0".parse()?))?;
/// let line_a = client.local_addrs()[0];
/// let config = ServerConfig {
///     listen: "127.0.0.1:0".parse()?,
///     datagrams: Some(DatagramOutputConfig::new(line_a)),
///     ..ServerConfig::default()
/// };
/// let server = Server::bind(config)?.spawn()?;
/// server.publisher().publish(vec![(1, Payload::Quote(QuoteFields::default())); 3])?;
/// let mut got = Vec::new();
/// for _ in 0..100 {
///     client.poll(Some(Duration::from_millis(20)), |e| {
///         if let DatagramEvent::Frame(f) = e {
///             got.push(f.sequence());
///         }
///     })?;
///     if got.len() == 3 {
///         break;
///     }
/// }
/// assert_eq!(got, [1, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DatagramClient {
    config: DatagramClientConfig,
    poll: Poll,
    events: Events,
    lines: Vec<mio::net::UdpSocket>,
    local: Vec<SocketAddr>,
    /// [`RECV_BATCH`](super::sys::RECV_BATCH) receive slots of [`SLOT`] bytes.
    buf: Box<[u8]>,
    lens: [usize; super::sys::RECV_BATCH],
    batch_syscalls: bool,
    receiver: DatagramReceiver,
    /// The retransmission connection's rules (section 9).
    retx: RetransmitClient,
    /// The retransmission connection, while connecting or connected.
    conn: Option<Connection>,
    /// Counters kept here: `disconnects` and `requests_sent` (what the
    /// socket did); the others come from the receiver and `retx`.
    stats: DatagramClientStats,
    /// Lines whose socket may hold more datagrams (the read budget ran out).
    unread: [bool; 2],
    epoch: Instant,
}

/// Why a [`DatagramClient`] could not be created.
#[derive(Debug)]
#[non_exhaustive]
pub enum DatagramClientError {
    /// A socket could not be opened, bound or joined to its group.
    Io(io::Error),
}

impl fmt::Display for DatagramClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatagramClientError::Io(e) => write!(f, "datagram socket: {e}"),
        }
    }
}

impl std::error::Error for DatagramClientError {}

/// Bytes of one receive slot: the largest datagram and one more byte, so
/// that a longer (truncated) one is recognized.
const SLOT: usize = MAX_DATAGRAM_SIZE + 1;

/// One batch of datagrams from `socket`: datagram `i` into `buf` at
/// `i * SLOT`, its length into `lens[i]`; `recvmmsg` on Linux when `batch`,
/// else one `recv`.
fn recv_batch(
    socket: &mio::net::UdpSocket,
    batch: bool,
    buf: &mut [u8],
    lens: &mut [usize; super::sys::RECV_BATCH],
) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    if batch {
        use std::os::fd::AsFd;
        return super::sys::recv_datagrams(socket.as_fd(), buf, SLOT, lens);
    }
    let _ = batch;
    let n = socket.recv(buf.get_mut(..SLOT).unwrap_or_default())?;
    if let Some(len) = lens.first_mut() {
        *len = n;
    }
    Ok(1)
}

/// One line's socket: joined to its group, or bound to its unicast address.
fn line_socket(
    addr: SocketAddr,
    interface: Option<Ipv4Addr>,
    recv_buffer: Option<usize>,
    force: bool,
) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(size) = recv_buffer {
        #[cfg(target_os = "linux")]
        let forced = force
            && match super::sys::force_recv_buffer(std::os::fd::AsFd::as_fd(&socket), size) {
                Ok(()) => true,
                Err(e) => {
                    log::warn!("line {addr}: receive buffer of {size} bytes not forced: {e}");
                    false
                }
            };
        #[cfg(not(target_os = "linux"))]
        let forced = {
            if force {
                log::warn!("line {addr}: forcing the receive buffer needs Linux");
            }
            false
        };
        if !forced {
            // The kernel caps it at net.core.rmem_max; a smaller buffer works.
            let _ = socket.set_recv_buffer_size(size);
        }
    }
    match addr.ip() {
        IpAddr::V4(group) if group.is_multicast() => {
            socket.set_reuse_address(true)?;
            // Bound to the group (not the wildcard) and, on Linux, only the
            // groups this socket joined: lines A and B on one port stay apart.
            #[cfg(target_os = "linux")]
            {
                socket.set_multicast_all_v4(false)?;
                socket.bind(&addr.into())?;
            }
            #[cfg(not(target_os = "linux"))]
            socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())).into())?;
            socket.join_multicast_v4(&group, &interface.unwrap_or(Ipv4Addr::UNSPECIFIED))?;
        }
        IpAddr::V6(group) if group.is_multicast() => {
            socket.set_reuse_address(true)?;
            socket
                .bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, addr.port())).into())?;
            socket.join_multicast_v6(&group, 0)?;
        }
        _ => socket.bind(&addr.into())?,
    }
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl DatagramClient {
    /// Opens the line sockets (joining multicast groups, or binding unicast
    /// addresses). The retransmission connection is made when the first
    /// request is due, and reused.
    ///
    /// # Errors
    /// A socket could not be opened, bound or joined.
    pub fn new(config: DatagramClientConfig) -> Result<DatagramClient, DatagramClientError> {
        let io = DatagramClientError::Io;
        let poll = Poll::new().map_err(io)?;
        let mut lines = Vec::new();
        let mut local = Vec::new();
        for (addr, token) in std::iter::once(config.line_a)
            .chain(config.line_b)
            .zip([LINE_A, LINE_B])
        {
            let socket = line_socket(
                addr,
                config.interface,
                config.recv_buffer,
                config.force_recv_buffer,
            )
            .map_err(io)?;
            local.push(socket.local_addr().map_err(io)?);
            let mut socket = mio::net::UdpSocket::from_std(socket);
            poll.registry()
                .register(&mut socket, token, Interest::READABLE)
                .map_err(io)?;
            lines.push(socket);
        }
        Ok(DatagramClient {
            batch_syscalls: config.batch_syscalls,
            receiver: DatagramReceiver::new(DatagramConfig {
                lines: lines.len(),
                silence: Some(config.heartbeat_interval.saturating_mul(3)),
                ..config.receiver
            }),
            retx: RetransmitClient::new(
                RetransmitClientConfig {
                    backoff: config.backoff,
                    heartbeat_interval: config.heartbeat_interval,
                    connect_timeout: config.connect_timeout,
                    idle: config.retransmit_idle,
                    credentials: config.retransmit_credentials,
                },
                config.retransmit.is_some(),
            ),
            conn: None,
            config,
            poll,
            events: Events::with_capacity(16),
            lines,
            local,
            buf: vec![0u8; SLOT * super::sys::RECV_BATCH].into_boxed_slice(),
            lens: [0; super::sys::RECV_BATCH],
            stats: DatagramClientStats::default(),
            unread: [false; 2],
            epoch: Instant::now(),
        })
    }

    /// The local address of each line's socket, line A first (for unicast
    /// lines bound to port 0: the port the kernel chose).
    #[must_use]
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// The receiver (session, next expected sequence, counters).
    #[must_use]
    pub fn receiver(&self) -> &DatagramReceiver {
        &self.receiver
    }

    /// The counters now.
    #[must_use]
    pub fn stats(&self) -> DatagramClientStats {
        let retx = self.retx.stats();
        DatagramClientStats {
            receiver: *self.receiver.stats(),
            connects: retx.connects,
            idle_closes: retx.idle_closes,
            ..self.stats
        }
    }

    /// The receive buffer of each line's socket in bytes, line A first, as
    /// the kernel reports it (Linux reports twice what was set: half is its
    /// bookkeeping), e.g. to check what
    /// [`recv_buffer`](DatagramClientConfig::recv_buffer) became.
    ///
    /// ```
    /// use tickwire::net::{DatagramClient, DatagramClientConfig};
    /// let client = DatagramClient::new(DatagramClientConfig::new("127.0.0.1:0".parse()?))?;
    /// assert!(client.recv_buffer_sizes()[0] > 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn recv_buffer_sizes(&self) -> Vec<usize> {
        self.lines
            .iter()
            .map(|s| socket2::SockRef::from(s).recv_buffer_size().unwrap_or(0))
            .collect()
    }

    /// Changes the retransmission server (e.g. to another server of the
    /// same session, or once the server's address is known): a connection
    /// to the old one is closed, and requests it had not answered are
    /// asked again of the new one, which is connected at once if any are
    /// due. `None`: no retransmission from now on.
    ///
    /// ```
    /// use tickwire::net::{DatagramClient, DatagramClientConfig};
    /// let mut client = DatagramClient::new(DatagramClientConfig::new("127.0.0.1:0".parse()?))?;
    /// client.set_retransmit(Some("127.0.0.1:9".parse()?));
    /// assert!(!client.is_retransmission_connected());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_retransmit(&mut self, server: Option<SocketAddr>) {
        self.config.retransmit = server;
        self.retx.set_server(server.is_some());
        self.run_retx();
    }

    /// Whether the retransmission connection is up.
    #[must_use]
    pub fn is_retransmission_connected(&self) -> bool {
        self.retx.is_connected()
    }

    fn time(&self) -> Time {
        Time::new(self.epoch.elapsed(), unix_nanos())
    }

    /// The earliest deadline: the receiver's, or the connection's.
    fn deadline(&self) -> Option<Duration> {
        let retx = self.retx.poll_timeout(self.receiver.requests_outstanding());
        match (self.receiver.poll_timeout(), retx) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Waits at most `timeout` for datagrams, retransmission replies or the
    /// next deadline, handles them, and reports the receiver's events
    /// (frames in order, gaps, new sessions, EndOfSession, discards) to
    /// `on_event`.
    ///
    /// # Errors
    /// The poll itself failed. Socket errors of the retransmission
    /// connection are not errors: it is connected again with the backoff.
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        mut on_event: impl FnMut(DatagramEvent),
    ) -> io::Result<()> {
        let now = self.epoch.elapsed();
        let mut wait = match (timeout, self.deadline()) {
            (Some(t), Some(d)) => Some(t.min(d.saturating_sub(now))),
            (t, d) => t.or(d.map(|d| d.saturating_sub(now))),
        };
        if self.unread.contains(&true) {
            wait = Some(Duration::ZERO);
        }
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let result = self.poll.poll(&mut events, wait);
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                self.events = events;
                return Err(e);
            }
        }
        for event in events.iter() {
            match event.token() {
                LINE_A => self.unread[0] = true,
                LINE_B => self.unread[1] = true,
                TCP => self.tcp_ready(event.is_writable()),
                _ => {}
            }
        }
        self.events = events;
        for line in [Line::A, Line::B] {
            if self.unread.get(line.index()) == Some(&true) {
                self.read_line(line, &mut on_event);
            }
        }
        let time = self.time();
        self.receiver.handle_timeout(time);
        self.retx
            .handle_timeout(time, self.receiver.requests_outstanding());
        self.run_retx();
        self.drain(&mut on_event);
        Ok(())
    }

    /// Reads one line's socket until it would block (or the budget is spent):
    /// `recvmmsg` batches on Linux, one `recv` per datagram elsewhere.
    fn read_line(&mut self, line: Line, on_event: &mut impl FnMut(DatagramEvent)) {
        let mut budget = READS_PER_POLL;
        while budget > 0 {
            let Some(socket) = self.lines.get(line.index()) else {
                break;
            };
            self.stats.recv_calls += 1;
            let got = recv_batch(socket, self.batch_syscalls, &mut self.buf, &mut self.lens);
            match got {
                Ok(n) => {
                    budget = budget.saturating_sub(n.max(1));
                    let time = Time::new(self.epoch.elapsed(), unix_nanos());
                    for i in 0..n {
                        let len = self.lens.get(i).copied().unwrap_or(0);
                        if len > MAX_DATAGRAM_SIZE {
                            self.stats.oversized += 1;
                            continue;
                        }
                        let at = i * SLOT;
                        let datagram = self.buf.get(at..at + len).unwrap_or_default();
                        self.receiver.handle_datagram(line, datagram, time);
                    }
                    self.drain(on_event);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        // ICMP errors of earlier sends and the like: the
                        // socket stays usable.
                        log::debug!("line {line:?}: {e}");
                    }
                    if let Some(unread) = self.unread.get_mut(line.index()) {
                        *unread = false;
                    }
                    return;
                }
            }
        }
    }

    /// Events to the user; requests to the retransmission connection.
    fn drain(&mut self, on_event: &mut impl FnMut(DatagramEvent)) {
        while let Some(event) = self.receiver.poll_event() {
            on_event(event);
        }
        let mut requested = false;
        while let Some(action) = self.receiver.poll_action() {
            self.retx.handle_request(action, self.time());
            requested = true;
        }
        if requested {
            self.run_retx();
        }
    }

    /// Does what the retransmission rules say, until they say nothing more.
    fn run_retx(&mut self) {
        while let Some(action) = self.retx.poll_action() {
            match action {
                RetransmitAction::Connect => self.connect(),
                RetransmitAction::Send(frames) => self.send(&frames),
                RetransmitAction::Close => self.close_connection(),
                RetransmitAction::Reset => self.receiver.retransmission_reset(),
                RetransmitAction::Unavailable => self.receiver.retransmission_unavailable(),
            }
        }
    }

    fn connect(&mut self) {
        let Some(server) = self.config.retransmit else {
            self.retx.handle_lost(self.time());
            return;
        };
        match mio::net::TcpStream::connect(server) {
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                if let Err(e) = self.poll.registry().register(
                    &mut stream,
                    TCP,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    log::debug!("retransmission connection: {e}");
                    self.retx.handle_lost(self.time());
                    return;
                }
                self.conn = Some(Connection::new(stream, 64 << 10, 4 << 20));
            }
            Err(e) => {
                log::debug!("retransmission connection to {server}: {e}");
                self.retx.handle_lost(self.time());
            }
        }
    }

    /// Closes the retransmission connection, if any.
    fn close_connection(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut stream = conn.into_stream();
            let _ = self.poll.registry().deregister(&mut stream);
            self.stats.disconnects += 1;
        }
    }

    /// Writes (or queues) Retransmit frames; a connection that cannot take
    /// them is lost.
    fn send(&mut self, frames: &[u8]) {
        let sent = self.conn.as_mut().map(|conn| conn.send(frames));
        if let Some(Ok(true)) = sent {
            self.stats.requests_sent += (frames.len() / MsgType::Retransmit.frame_len()) as u64;
        } else {
            self.retx.handle_lost(self.time());
        }
    }

    fn tcp_ready(&mut self, writable: bool) {
        let time = self.time();
        let Some(conn) = &self.conn else {
            return;
        };
        if self.retx.state() == RetransmitState::Connecting {
            let stream = conn.stream();
            match (stream.take_error(), stream.peer_addr()) {
                (Ok(None), Ok(_)) => self.retx.handle_connected(time),
                (_, Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
                _ => self.retx.handle_lost(time),
            }
            self.run_retx();
        }
        if !self.retx.is_connected() {
            return;
        }
        let Some(conn) = &mut self.conn else {
            return;
        };
        if writable && conn.write_ready().is_err() {
            self.retx.handle_lost(time);
            self.run_retx();
            return;
        }
        let receiver = &mut self.receiver;
        let mut refused = None;
        let outcome = conn.read_ready(|event| match event {
            Event::Frame(crate::Message::Rejected(r)) => refused = Some(r.reason()),
            Event::Frame(m) | Event::Duplicate(m) => receiver.handle_retransmission(&m, time),
            _ => {}
        });
        if let Some(reason) = refused {
            log::error!("the retransmission server refused us: {reason}; not asking it again");
            self.retx.handle_rejected(reason, time);
            self.run_retx();
            return;
        }
        match outcome {
            Ok(o) => {
                if o.bytes > 0 {
                    self.retx.handle_bytes(time);
                }
                if o.closed {
                    self.retx.handle_lost(time);
                }
            }
            Err(_) => self.retx.handle_lost(time),
        }
        self.run_retx();
    }
}
