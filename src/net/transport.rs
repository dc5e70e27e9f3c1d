//! A server connection's byte stream for the mio event loops: plain TCP, or
//! TLS over it (protocol section 12, through rustls's own sans-IO
//! `ServerConnection`). Either way the bytes inside are the core's: reads go
//! into [`ServerCore::input_buffer`], writes come from
//! [`ServerCore::poll_transmit`]. The plain path is the one the server had:
//! reads straight into the core's buffer, vectored writes of the shared
//! segments; and, on Linux with the journal, replays from disk go from the
//! page cache to the socket with `sendfile` ([`SENDS_FILES`]): the core
//! queues verified ranges of the journal's segment files for a plain
//! connection ([`ServerCore::set_file_ranges`]), and a write turn whose
//! front piece is one sends it with [`journal::send_range`](crate::journal::send_range)
//! (a partial send advances the range, as a partial `writev` does). A TLS
//! connection gets checked bytes, as every connection does elsewhere.
//!
//! ```text
//!  socket ──read──▶ [rustls: records ─▶ plaintext] ──▶ core.input_buffer / input_committed
//!  core.poll_transmit ──▶ [rustls: plaintext ─▶ records] ──write(v)──▶ socket
//!                    └──▶ front is a file range (plain) ──sendfile──▶ socket
//! ```
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;

use mio::net::TcpStream;

use super::{close_reason, sys};
use crate::session::{CloseReason, ConnId, ServerCore, Time};

/// Slices per `writev`.
const MAX_SLICES: usize = 64;

/// Whether a plain connection sends the journal's file ranges itself
/// (`sendfile` from the page cache: Linux and Android, with the journal).
pub(super) const SENDS_FILES: bool = cfg!(all(
    feature = "journal",
    any(target_os = "linux", target_os = "android")
));

/// One client connection's stream.
#[derive(Debug)]
pub(super) struct Stream {
    tcp: TcpStream,
    #[cfg(feature = "tls")]
    tls: Option<Box<Tls>>,
}

#[cfg(feature = "tls")]
#[derive(Debug)]
struct Tls {
    conn: rustls::ServerConnection,
    /// The handshake is done and its ALPN was checked.
    checked: bool,
}

/// What a read turn found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Read_ {
    /// Drained (or closed by the core).
    Done,
    /// TLS records are waiting to be written (a handshake's): flush.
    Flush,
}

impl Stream {
    /// A plain TCP stream.
    pub(super) fn plain(tcp: TcpStream) -> Stream {
        Stream {
            tcp,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// A TLS stream: the handshake runs as the bytes come.
    #[cfg(feature = "tls")]
    pub(super) fn tls(
        tcp: TcpStream,
        config: &std::sync::Arc<rustls::ServerConfig>,
    ) -> io::Result<Stream> {
        let conn = rustls::ServerConnection::new(std::sync::Arc::clone(config))
            .map_err(io::Error::other)?;
        Ok(Stream {
            tcp,
            tls: Some(Box::new(Tls {
                conn,
                checked: false,
            })),
        })
    }

    /// Whether the bytes go to the socket as they are (no TLS): the core
    /// may then queue file ranges for it ([`SENDS_FILES`]).
    pub(super) fn is_plain(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return false;
        }
        true
    }

    /// The socket, to register with the poll.
    pub(super) fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// The kernel's send queue (bytes not yet acknowledged), for the
    /// core's slow and no-progress rules.
    pub(super) fn kernel_backlog(&self) -> usize {
        sys::unsent_bytes(self.tcp.as_fd()).unwrap_or(0)
    }

    /// Reads what the client sent into the core; a plain stream stops at a
    /// short read unless the peer's FIN or an error came with the wake-up
    /// (`closing`), as the client does.
    pub(super) fn read_into(
        &mut self,
        core: &mut ServerCore,
        id: ConnId,
        time: Time,
        closing: bool,
    ) -> Read_ {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            return read_tls(&mut self.tcp, tls, core, id, time);
        }
        // Until the core closed it (no buffer), or the socket is drained.
        while let Some(spare) = core.input_buffer(id) {
            let room = spare.len();
            match self.tcp.read(spare) {
                Ok(0) => {
                    core.handle_eof(id, time);
                    break;
                }
                Ok(n) => {
                    core.input_committed(id, n, time);
                    if n < room && !closing {
                        break; // drained (see `Client::on_readable`)
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    core.handle_failure(id, close_reason(&e));
                    break;
                }
            }
        }
        Read_::Done
    }

    /// Writes what the core has for `id` until the socket would block, the
    /// queue is empty, or `budget` is spent; returns whether the budget ran
    /// out with bytes left (call again next turn) and the bytes written.
    /// Once everything is written and the core asks
    /// ([`ServerCore::poll_write_shutdown`], after a Rejected), the sending
    /// side is shut down.
    pub(super) fn write_some(
        &mut self,
        core: &mut ServerCore,
        id: ConnId,
        time: Time,
        budget: usize,
    ) -> io::Result<(bool, usize)> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            return write_tls(&mut self.tcp, tls, core, id, time, budget);
        }
        let mut written = 0;
        while written < budget {
            let Some(transmit) = core.poll_transmit(id, time) else {
                if core.poll_write_shutdown(id) {
                    // After a Rejected (section 11): reading goes on until
                    // the client closes.
                    let _ = self.tcp.shutdown(std::net::Shutdown::Write);
                }
                return Ok((false, written));
            };
            if let Some(front) = transmit.file() {
                match send_file(&self.tcp, front, budget - written) {
                    Ok(n) => {
                        core.transmitted(id, n, time);
                        written += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, written)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        // The file ends inside a range it held when it was
                        // verified (cut by another process): the client may
                        // have part of a frame; close it, with the reason.
                        log::warn!("closed {}: replay from disk: {e}", peer(core, id));
                        core.handle_failure(id, CloseReason::ReplayFailed);
                        return Ok((false, written));
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (place, bytes) in slices.iter_mut().zip(transmit.slices()) {
                *place = IoSlice::new(bytes);
                count += 1;
            }
            match self
                .tcp
                .write_vectored(slices.get(..count).unwrap_or_default())
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    core.transmitted(id, n, time);
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, written)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((core.wants_write(id), written))
    }

    /// The end of a graceful close (after EndOfSession): TLS's close_notify
    /// if any, then the FIN, so the client reads everything first.
    pub(super) fn close_write(&mut self) {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.conn.send_close_notify();
            let _ = flush_records(&mut self.tcp, &mut tls.conn);
        }
        let _ = self.tcp.shutdown(std::net::Shutdown::Write);
    }
}

/// Sends at most `max` bytes of the file range at the front of a
/// connection's queue with `sendfile`: how many went (`WouldBlock` when the
/// socket takes none, `UnexpectedEof` when the file ends before the range).
#[cfg(all(feature = "journal", any(target_os = "linux", target_os = "android")))]
fn send_file(
    tcp: &TcpStream,
    front: crate::session::FileFront<'_>,
    max: usize,
) -> io::Result<usize> {
    let Some(file) = front
        .file
        .as_any()
        .downcast_ref::<crate::journal::JournalFile>()
    else {
        return Err(io::Error::other(
            "a file range of a cold source other than the journal",
        ));
    };
    match crate::journal::send_range(file.file(), front.offset, front.len.min(max), tcp)? {
        0 if front.len > 0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the segment file ends before byte {} of a verified range",
                front.offset
            ),
        )),
        n => Ok(n),
    }
}

/// No file ranges are queued here ([`SENDS_FILES`] is false).
#[cfg(not(all(feature = "journal", any(target_os = "linux", target_os = "android"))))]
fn send_file(_: &TcpStream, _: crate::session::FileFront<'_>, _: usize) -> io::Result<usize> {
    Err(io::Error::other("file ranges are not sent on this system"))
}

/// Writes the TLS records rustls holds; `Ok(false)` when the socket would
/// block first.
#[cfg(feature = "tls")]
fn flush_records(tcp: &mut TcpStream, conn: &mut rustls::ServerConnection) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(tcp) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(feature = "tls")]
fn read_tls(
    tcp: &mut TcpStream,
    tls: &mut Tls,
    core: &mut ServerCore,
    id: ConnId,
    time: Time,
) -> Read_ {
    loop {
        let eof = match tls.conn.read_tls(tcp) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                core.handle_failure(id, close_reason(&e));
                return Read_::Done;
            }
        };
        if let Err(e) = tls.conn.process_new_packets() {
            // Not TLS (a plain client on a TLS port), or a bad handshake:
            // rustls's alert goes out, the connection closes.
            log::info!("closed {}: TLS: {e}", peer(core, id));
            let _ = flush_records(tcp, &mut tls.conn);
            core.handle_failure(id, CloseReason::BadData);
            return Read_::Done;
        }
        if !tls.checked && !tls.conn.is_handshaking() {
            tls.checked = true;
            if let Err(e) = crate::tls::check_alpn(&tls.conn) {
                log::info!("closed {}: {e}", peer(core, id));
                core.handle_failure(id, CloseReason::BadData);
                return Read_::Done;
            }
        }
        // The plaintext, into the core.
        loop {
            let Some(spare) = core.input_buffer(id) else {
                return Read_::Done; // closed
            };
            match tls.conn.reader().read(spare) {
                Ok(0) => {
                    core.handle_eof(id, time); // close_notify
                    return Read_::Done;
                }
                Ok(n) => core.input_committed(id, n, time),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The peer closed without close_notify: its end of
                    // stream all the same.
                    core.handle_eof(id, time);
                    return Read_::Done;
                }
            }
        }
        if eof {
            core.handle_eof(id, time);
            return Read_::Done;
        }
    }
    if tls.conn.wants_write() {
        Read_::Flush
    } else {
        Read_::Done
    }
}

#[cfg(feature = "tls")]
fn write_tls(
    tcp: &mut TcpStream,
    tls: &mut Tls,
    core: &mut ServerCore,
    id: ConnId,
    time: Time,
    budget: usize,
) -> io::Result<(bool, usize)> {
    let mut written = 0;
    if !flush_records(tcp, &mut tls.conn)? {
        return Ok((false, 0)); // the socket's writable event comes back
    }
    while written < budget {
        let Some(transmit) = core.poll_transmit(id, time) else {
            if core.poll_write_shutdown(id) {
                tls.conn.send_close_notify();
                let _ = flush_records(tcp, &mut tls.conn);
                let _ = tcp.shutdown(std::net::Shutdown::Write);
            }
            return Ok((false, written));
        };
        // Into rustls (it encrypts at once, up to its buffer limit), then
        // out to the socket.
        let mut taken = 0;
        for bytes in transmit.slices() {
            let n = tls.conn.writer().write(bytes)?;
            taken += n;
            if n < bytes.len() {
                break;
            }
        }
        if taken > 0 {
            core.transmitted(id, taken, time);
            written += taken;
        }
        if !flush_records(tcp, &mut tls.conn)? {
            return Ok((false, written));
        }
        if taken == 0 {
            break; // rustls took nothing and holds nothing: try again later
        }
    }
    Ok((core.wants_write(id), written))
}

fn peer(core: &ServerCore, id: ConnId) -> String {
    core.peer(id)
        .map_or_else(|| "a client".to_owned(), |p| p.to_string())
}
