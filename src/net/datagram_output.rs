//! The server's datagram feed (protocol section 8), besides TCP:
//! [`DatagramOutputConfig`] (where and how) and the output both servers
//! (mio and tokio) send it with. Plain `std` UDP, and `sendmmsg` on Linux
//! through [`sys`](super::sys).
//!
//! ```text
//!  published batch ─▶ Packetizer (sans-IO: cut into datagrams, idle Packets,
//!                     EndOfSession) ─▶ send_to / sendmmsg ─▶ line A (and line B)
//! ```
//!
//! Sending: on Linux one `sendmmsg` call per 64 datagrams (every line's
//! copy counts; [`DatagramOutputConfig::batch_syscalls`]), elsewhere one
//! `send_to` per datagram and line.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stats::{add, Shared};
use super::unix_nanos;
use crate::session::packetizer::{Datagrams, Packetizer, PacketizerConfig};
use crate::session::{Batch, Time};

pub use crate::session::packetizer::{DEFAULT_DATAGRAM_SIZE, MAX_DATAGRAM_SIZE, MIN_DATAGRAM_SIZE};

/// Where and how a server sends its datagram feed.
///
/// ```
/// use tickwire::net::DatagramOutputConfig;
/// let c = DatagramOutputConfig::new("239.1.2.3:7879".parse()?);
/// assert_eq!((c.max_datagram, c.ttl, c.loopback), (1472, 1, true));
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DatagramOutputConfig {
    /// Line A: a unicast address or an IP multicast group, with its port.
    pub line_a: SocketAddr,
    /// Line B, if any: every datagram is also sent here, byte-identical.
    /// Same address family as line A.
    pub line_b: Option<SocketAddr>,
    /// The local address to send from (`None`: any address, a free port).
    pub bind: Option<SocketAddr>,
    /// The largest datagram, in bytes (1,472; clamped to 128..=65,507).
    pub max_datagram: usize,
    /// Multicast TTL (IPv6: hop limit), and the unicast TTL (1: the local
    /// network only).
    pub ttl: u32,
    /// The IPv4 interface (its address) multicast leaves by (`None`: the
    /// routing table's choice).
    pub interface: Option<Ipv4Addr>,
    /// Whether this host's own multicast receivers get the datagrams (true).
    pub loopback: bool,
    /// `SO_SNDBUF` (`None`: the kernel's default).
    pub send_buffer: Option<usize>,
    /// On Linux, hand the kernel up to 64 datagrams (every line's copy) per
    /// `sendmmsg` call (true); elsewhere, or when false, one `send_to` per
    /// datagram and line.
    pub batch_syscalls: bool,
}

impl DatagramOutputConfig {
    /// Line A only, 1,472-byte datagrams, TTL 1, loopback on.
    #[must_use]
    pub fn new(line_a: SocketAddr) -> DatagramOutputConfig {
        DatagramOutputConfig {
            line_a,
            line_b: None,
            bind: None,
            max_datagram: DEFAULT_DATAGRAM_SIZE,
            ttl: 1,
            interface: None,
            loopback: true,
            send_buffer: None,
            batch_syscalls: true,
        }
    }

    /// The destinations, line A first.
    fn lines(&self) -> impl Iterator<Item = SocketAddr> {
        std::iter::once(self.line_a).chain(self.line_b)
    }
}

/// The server's datagram output: a [`Packetizer`] (which cuts each
/// published batch into datagrams, makes the idle Packets and the final
/// EndOfSession: section 8) and the socket that sends what it makes, on
/// every line.
///
/// Shared, behind a lock, by the publishing threads, which send each
/// batch's datagrams right after numbering it (in sequence order), and the
/// server, which sends the idle Packet-only datagrams and the final
/// EndOfSession (the mio server's first event loop, or a task of the tokio
/// server). The mio server can also send the batches' datagrams from its
/// event loop instead
/// ([`LoopOptions::datagram_sender`](super::LoopOptions::datagram_sender)).
#[derive(Debug)]
pub(crate) struct DatagramOutput {
    packetizer: Packetizer,
    lines: Lines,
    heartbeat: Duration,
    /// The server's epoch (monotonic time zero).
    epoch: Instant,
    shared: Arc<Shared>,
}

/// The socket and where it sends.
#[derive(Debug)]
struct Lines {
    socket: UdpSocket,
    lines: Vec<SocketAddr>,
    /// The same, for `sendmmsg`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    addrs: Vec<socket2::SockAddr>,
    batch: bool,
}

impl DatagramOutput {
    pub(crate) fn new(
        config: &DatagramOutputConfig,
        session_id: u64,
        heartbeat: Duration,
        epoch: Instant,
        shared: &Arc<Shared>,
    ) -> io::Result<DatagramOutput> {
        use socket2::{Domain, Protocol, Socket, Type};
        let v6 = config.line_a.is_ipv6();
        if config.lines().any(|l| l.is_ipv6() != v6) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "lines A and B must be of one address family",
            ));
        }
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        let bind = config.bind.unwrap_or(if v6 {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
        });
        if v6 {
            socket.set_multicast_hops_v6(config.ttl)?;
            socket.set_unicast_hops_v6(config.ttl)?;
            socket.set_multicast_loop_v6(config.loopback)?;
        } else {
            socket.set_multicast_ttl_v4(config.ttl)?;
            socket.set_ttl(config.ttl)?;
            socket.set_multicast_loop_v4(config.loopback)?;
            if let Some(interface) = config.interface {
                socket.set_multicast_if_v4(&interface)?;
            }
        }
        if let Some(size) = config.send_buffer {
            socket.set_send_buffer_size(size)?;
        }
        socket.bind(&bind.into())?;
        socket.set_nonblocking(true)?;
        let packetizer_config = PacketizerConfig {
            max_datagram: config.max_datagram,
            heartbeat_interval: heartbeat,
        };
        let now = Time::new(epoch.elapsed(), unix_nanos());
        Ok(DatagramOutput {
            packetizer: Packetizer::new(session_id, packetizer_config, now),
            lines: Lines {
                socket: socket.into(),
                lines: config.lines().collect(),
                addrs: config.lines().map(socket2::SockAddr::from).collect(),
                batch: config.batch_syscalls && cfg!(target_os = "linux"),
            },
            heartbeat,
            epoch,
            shared: Arc::clone(shared),
        })
    }

    /// Now, on the server's clocks.
    pub(crate) fn now(&self) -> Time {
        Time::new(self.epoch.elapsed(), unix_nanos())
    }

    /// The address datagrams are sent from.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.lines.socket.local_addr()
    }

    /// Sends `batch`'s datagrams on every line.
    pub(crate) fn publish(&mut self, batch: &Batch, time: Time) {
        self.packetizer.publish(batch, time);
        self.send_all();
    }

    /// When a Packet-only datagram is due (monotonic); once the session
    /// ended, a heartbeat interval from now (nothing is sent then).
    pub(crate) fn poll_timeout(&self) -> Duration {
        self.packetizer
            .poll_timeout()
            .unwrap_or_else(|| self.epoch.elapsed().saturating_add(self.heartbeat))
    }

    /// Sends a Packet-only datagram if one is due.
    pub(crate) fn handle_timeout(&mut self, time: Time) {
        self.packetizer.handle_timeout(time);
        self.send_all();
    }

    /// A relay's upstream will never send the frames before `next`.
    pub(crate) fn advance(&mut self, next: u64) {
        self.packetizer.advance(next);
    }

    /// A relay's new session (protocol section 10.4): EndOfSession for the
    /// old one is sent, then the next datagrams' Packets carry `session_id`.
    pub(crate) fn new_session(&mut self, time: Time, session_id: u64, next: u64) {
        self.packetizer.new_session(session_id, next, time);
        self.send_all();
    }

    /// A relay whose upstream is lost sends no Packet-only datagram.
    pub(crate) fn skip_idle(&mut self, now: Duration) {
        self.packetizer.skip_idle(now);
    }

    /// Sends the last datagram (Packet + EndOfSession, in copies); nothing
    /// is sent after it.
    pub(crate) fn end_of_session(&mut self, time: Time) {
        self.packetizer.end_of_session(time);
        self.send_all();
    }

    /// Sends every datagram the packetizer made, on every line.
    fn send_all(&mut self) {
        let datagrams = self.packetizer.datagrams();
        if datagrams.len() == 0 {
            return;
        }
        let (sent, dropped, calls) = if self.lines.batch {
            self.lines.send_batched(datagrams)
        } else {
            self.lines.send_each(datagrams)
        };
        add(&self.shared.datagrams_sent, sent);
        add(&self.shared.datagrams_dropped, dropped);
        add(&self.shared.datagram_syscalls, calls);
    }
}

impl Lines {
    /// One `send_to` of `datagram` to `line`: whether it was sent.
    fn send_one(&self, datagram: &[u8], line: SocketAddr, quiet: bool) -> bool {
        loop {
            match self.socket.send_to(datagram, line) {
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Full send buffer (WouldBlock, ENOBUFS) or an
                    // unreachable line: the datagram is lost on this line;
                    // receivers recover it (section 9).
                    if !quiet {
                        log::debug!("datagram to {line}: {e}");
                    }
                    return false;
                }
            }
        }
    }

    /// One `send_to` per datagram and line: (sent, dropped, system calls).
    fn send_each(&self, datagrams: Datagrams<'_>) -> (u64, u64, u64) {
        let (mut sent, mut dropped, mut calls) = (0, 0, 0);
        for datagram in datagrams {
            for &line in &self.lines {
                calls += 1;
                if self.send_one(datagram, line, dropped > 0) {
                    sent += 1;
                } else {
                    dropped += 1;
                }
            }
        }
        (sent, dropped, calls)
    }

    /// `sendmmsg`, up to 64 datagrams a call, every line's copy in turn.
    #[cfg(target_os = "linux")]
    fn send_batched(&self, datagrams: Datagrams<'_>) -> (u64, u64, u64) {
        use std::os::fd::AsFd;
        let (mut sent, mut dropped, mut calls) = (0, 0, 0);
        let mut all = datagrams
            .flat_map(|d| self.addrs.iter().map(move |a| (d, a)))
            .peekable();
        let Some(&first) = all.peek() else {
            return (0, 0, 0);
        };
        let mut messages = [first; super::sys::SEND_BATCH];
        while all.peek().is_some() {
            let mut n = 0;
            for (place, message) in messages.iter_mut().zip(all.by_ref()) {
                *place = message;
                n += 1;
            }
            let chunk = messages.get(..n).unwrap_or_default();
            let mut done = 0;
            while done < chunk.len() {
                let rest = chunk.get(done..).unwrap_or_default();
                calls += 1;
                match super::sys::send_datagrams(self.socket.as_fd(), rest) {
                    Ok(k) if k > 0 => {
                        sent += k as u64;
                        done += k;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    _ => {
                        // The first one failed: send_to says why (and
                        // sends it if the condition has passed).
                        if let Some((datagram, addr)) = rest.first() {
                            calls += 1;
                            let sent_now = addr
                                .as_socket()
                                .is_some_and(|line| self.send_one(datagram, line, dropped > 0));
                            if sent_now {
                                sent += 1;
                            } else {
                                dropped += 1;
                            }
                        }
                        done += 1;
                    }
                }
            }
        }
        (sent, dropped, calls)
    }

    #[cfg(not(target_os = "linux"))]
    fn send_batched(&self, datagrams: Datagrams<'_>) -> (u64, u64, u64) {
        self.send_each(datagrams)
    }
}
