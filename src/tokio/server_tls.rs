//! A connection of the tokio [`Server`](super::Server) inside TLS
//! (protocol section 12; [`ServerConfig::tls`](crate::net::ServerConfig::tls)),
//! through `tokio-rustls`: the same core-driven loop as a plain one, over
//! the `TlsStream`'s `AsyncRead`/`AsyncWrite`.
//!
//! ```text
//!  accept ─▶ core.accept (the login timeout runs from here) ─▶ TlsAcceptor::accept
//!           (selected against the connection's waker: the core's timer may close it)
//!        ─▶ check_alpn ─▶ loop:
//!      poll_read  ─▶ local buffer ─▶ core.handle_input            (the lock: no await)
//!      core.poll_transmit ─▶ to_owned ─▶ poll_write_vectored (rustls encrypts, writes)
//!      nothing to write: poll_flush what rustls still holds
//!      core.poll_write_shutdown (after a Rejected) ─▶ poll_shutdown: close_notify + FIN
//!  close: close_notify + FIN (bounded), as the plain path's FIN
//! ```
//!
//! Bytes rustls accepted are "transmitted" for the core; what it still
//! holds of them (at most its buffer limit, 64 KiB) is not in the kernel's
//! send queue the slow-client rules see.
#![forbid(unsafe_code)]

use std::string::{String, ToString};

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use ::tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use ::tokio::net::TcpStream;
use ::tokio::sync::Notify;
use rustls::{Error as TlsError, InvalidMessage};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{cold_read, release, Shared, MAX_SLICES};
use crate::net::{close_reason, sys};
use crate::session::{CloseReason, ConnId, WRITE_BUDGET};

type Tls = TlsStream<TcpStream>;

/// What one read takes from rustls: a client sends little (Auth, Login or
/// Retransmit, Heartbeats).
const READ_CHUNK: usize = 4096;

/// The longest a closing connection waits for its last records (its
/// EndOfSession, the close_notify) to leave.
const CLOSE_FLUSH: Duration = Duration::from_millis(250);

/// The sending side: open, shutting down after a Rejected, or shut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteSide {
    Open,
    Closing,
    Shut,
}

/// What one wait of the loop saw.
enum Step {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    ShutDown,
    Woken,
}

/// One TLS connection, from its accept until the core closes it.
pub(super) async fn connection(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    id: ConnId,
    waker: Arc<Notify>,
    shared: Arc<Shared>,
) {
    let (reason, tls) = match handshake(stream, config, id, &waker, &shared).await {
        Ok(mut tls) => {
            let (reason, side) = run(&mut tls, id, &waker, &shared).await;
            (reason, (side != WriteSide::Shut).then_some(tls))
        }
        Err(reason) => (reason, None),
    };
    release(id, reason, &shared);
    if let Some(mut tls) = tls {
        match reason {
            // Nobody reads any more, or nobody will: just closed.
            CloseReason::PeerClosed
            | CloseReason::IoError
            | CloseReason::Slow
            | CloseReason::NoProgress => {}
            // What rustls still holds (a graceful close's EndOfSession),
            // then close_notify and the FIN, as the plain path's FIN.
            _ => {
                let _ = ::tokio::time::timeout(CLOSE_FLUSH, tls.shutdown()).await;
            }
        }
    }
}

/// Deadlines and the close: `handle_conn_timeout` when the connection's
/// deadline came (the login timeout, from the accept, during the
/// handshake), then the reason if the core closed it.
fn tick(id: ConnId, shared: &Shared, backlog: impl FnOnce() -> usize) -> Option<CloseReason> {
    let mut state = shared.state();
    let time = shared.time();
    if state
        .core
        .conn_timeout(id)
        .is_some_and(|at| at <= time.monotonic)
    {
        state.core.handle_conn_timeout(id, time, backlog());
    }
    shared.dispatch(&mut state);
    state.core.close_reason(id)
}

/// The TLS handshake, within the core's login timeout: the connection's
/// waker is selected against it, so a client that never finishes is closed
/// by the core's timer (and so is one the shutdown closes). Then the ALPN.
async fn handshake(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    id: ConnId,
    waker: &Notify,
    shared: &Shared,
) -> Result<Tls, CloseReason> {
    let mut accept = TlsAcceptor::from(config).accept(stream);
    loop {
        if let Some(reason) = tick(id, shared, || 0) {
            return Err(reason);
        }
        ::tokio::select! {
            biased;
            done = &mut accept => {
                let refused = match done {
                    Ok(tls) => match crate::tls::check_alpn(tls.get_ref().1) {
                        Ok(()) => return Ok(tls),
                        Err(e) => (e.to_string(), CloseReason::BadData),
                    },
                    Err(e) => (describe(&e), handshake_close_reason(&e)),
                };
                let (why, reason) = refused;
                let mut state = shared.state();
                if let Some(peer) = state.core.peer(id) {
                    log::info!("closed {peer}: TLS: {why}");
                }
                state.core.handle_failure(id, reason);
                shared.dispatch(&mut state);
                return Err(reason);
            }
            () = waker.notified() => {}
        }
    }
}

/// The rustls error inside an I/O error of `tokio-rustls`, if any.
fn tls_error(e: &io::Error) -> Option<&TlsError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>())
}

/// Why a handshake failed, for the log: rustls's words, and what a
/// mismatch most likely is.
fn describe(e: &io::Error) -> String {
    match tls_error(e) {
        Some(TlsError::InvalidMessage(InvalidMessage::InvalidContentType)) => {
            std::format!("{e} (not TLS: a plain client on this TLS listener?)")
        }
        Some(TlsError::NoCertificatesPresented) => {
            std::format!("{e} (this listener requires a client certificate)")
        }
        Some(_) => e.to_string(),
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            "the client closed during the handshake".to_string()
        }
        None => std::format!("during the handshake: {e}"),
    }
}

/// A TLS error is bad data; a peer that went away closed it.
fn handshake_close_reason(e: &io::Error) -> CloseReason {
    if tls_error(e).is_some() {
        CloseReason::BadData
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        CloseReason::PeerClosed
    } else {
        close_reason(e)
    }
}

/// Moves the connection's bytes and time until the core closes it; the
/// reason, and how far the sending side was shut down.
async fn run(
    tls: &mut Tls,
    id: ConnId,
    waker: &Notify,
    shared: &Shared,
) -> (CloseReason, WriteSide) {
    let mut buf = [0u8; READ_CHUNK];
    let mut side = WriteSide::Open;
    let mut written = 0;
    loop {
        if let Some(reason) = tick(id, shared, || {
            sys::unsent_bytes(tls.get_ref().0.as_fd()).unwrap_or(0)
        }) {
            return (reason, side);
        }
        if side == WriteSide::Open {
            cold_read(id, shared).await;
        }
        // What to write, owned (shared segments, not bytes): written
        // without holding the core, as the plain path does.
        let (transmit, time) = {
            let mut state = shared.state();
            let time = shared.time();
            let transmit = match side {
                WriteSide::Open => state
                    .core
                    .poll_transmit(id, time)
                    .map(|tx| tx.to_owned(MAX_SLICES)),
                WriteSide::Closing | WriteSide::Shut => None,
            };
            if transmit.is_none() && side == WriteSide::Open && state.core.poll_write_shutdown(id) {
                // After a Rejected (section 11): close_notify and the FIN,
                // then reading goes on until the client closes.
                side = WriteSide::Closing;
            }
            shared.dispatch(&mut state);
            if let Some(reason) = state.core.close_reason(id) {
                return (reason, side);
            }
            (transmit, time)
        };
        if written >= WRITE_BUDGET {
            // The others have their turn.
            written = 0;
            ::tokio::task::yield_now().await;
        }
        let mut woken = pin!(waker.notified());
        let step = poll_fn(|cx| {
            if let Some(transmit) = &transmit {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for (place, bytes) in slices.iter_mut().zip(transmit.slices()) {
                    *place = IoSlice::new(bytes);
                    count += 1;
                }
                let slices = slices.get(..count).unwrap_or_default();
                if let Poll::Ready(wrote) = Pin::new(&mut *tls).poll_write_vectored(cx, slices) {
                    return Poll::Ready(Step::Wrote(wrote));
                }
            } else if side == WriteSide::Closing {
                if Pin::new(&mut *tls).poll_shutdown(cx).is_ready() {
                    return Poll::Ready(Step::ShutDown);
                }
            } else if tls.get_ref().1.wants_write() {
                // Records rustls holds (the socket was full): out first.
                if let Poll::Ready(Err(e)) = Pin::new(&mut *tls).poll_flush(cx) {
                    return Poll::Ready(Step::Wrote(Err(e)));
                }
            }
            let mut read = ReadBuf::new(&mut buf);
            if let Poll::Ready(result) = Pin::new(&mut *tls).poll_read(cx, &mut read) {
                let n = read.filled().len();
                return Poll::Ready(Step::Read(result.map(|()| n)));
            }
            woken.as_mut().poll(cx).map(|()| Step::Woken)
        })
        .await;
        match step {
            Step::Wrote(Ok(0)) => {
                shared.state().core.handle_failure(id, CloseReason::IoError);
            }
            Step::Wrote(Ok(n)) => {
                let mut state = shared.state();
                state.core.transmitted(id, n, time);
                shared.dispatch(&mut state);
                written += n;
            }
            Step::Wrote(Err(e)) => {
                shared.state().core.handle_failure(id, close_reason(&e));
            }
            // An error shutting down is the peer's going: reading says so.
            Step::ShutDown => side = WriteSide::Shut,
            Step::Read(result) => {
                let mut state = shared.state();
                let time = shared.time();
                match result {
                    Ok(0) => state.core.handle_eof(id, time), // close_notify
                    Ok(n) => state
                        .core
                        .handle_input(id, buf.get(..n).unwrap_or_default(), time),
                    // The peer closed without close_notify: its end of
                    // stream all the same.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        state.core.handle_eof(id, time);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let reason = if tls_error(&e).is_some() {
                            if let Some(peer) = state.core.peer(id) {
                                log::info!("closed {peer}: TLS: {e}");
                            }
                            CloseReason::BadData
                        } else {
                            close_reason(&e)
                        };
                        state.core.handle_failure(id, reason);
                    }
                }
                shared.dispatch(&mut state);
            }
            Step::Woken => {}
        }
    }
}
