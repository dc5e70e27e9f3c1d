//! A non-blocking, edge-triggered connection on mio.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::io::{self, Read};
use std::os::fd::AsFd;

use mio::net::TcpStream;

use super::queue::{write_some, Flushed, OutQueue};
use super::sys;
use crate::parse::{Event, ParseStats, Parser};
use crate::sequence::SequenceTracker;

/// The most bytes one `read` call takes (see [`Connection::read_ready`]).
pub(crate) const READ_CHUNK: usize = 128 << 10;

/// What [`Connection::read_ready`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Bytes read by this call.
    pub bytes: usize,
    /// The peer closed its side: the stream ended (the parser was finished).
    pub closed: bool,
}

/// What [`Connection::write_ready`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Everything queued was written.
    Done,
    /// The socket would block; bytes remain queued until the next writable event.
    Blocked,
}

/// A TCP connection driven by readiness events: reads go straight into the
/// parser's buffer until `WouldBlock`; writes go through a bounded queue
/// that survives partial writes and `WouldBlock`.
///
/// Register [`stream_mut`](Connection::stream_mut) with a `mio::Poll` for
/// `READABLE | WRITABLE` (edge-triggered), then call
/// [`read_ready`](Connection::read_ready) on readable events and
/// [`write_ready`](Connection::write_ready) on writable ones.
///
/// ```no_run
/// use mio::{Events, Interest, Poll, Token};
/// use tickwire::net::Connection;
/// use tickwire::parse::Event;
///
/// let stream = mio::net::TcpStream::connect("127.0.0.1:7000".parse()?)?;
/// let mut conn = Connection::new(stream, 1 << 20, 64 << 10);
/// let mut poll = Poll::new()?;
/// poll.registry().register(conn.stream_mut(), Token(0), Interest::READABLE | Interest::WRITABLE)?;
/// let mut events = Events::with_capacity(16);
/// loop {
///     poll.poll(&mut events, None)?;
///     let outcome = conn.read_ready(|event| {
///         if let Event::Frame(m) = event {
///             println!("{}", tickwire::json::JsonMessage(&m));
///         }
///     })?;
///     conn.write_ready()?;
///     if outcome.closed {
///         break;
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    parser: Parser<Box<[u8]>>,
    out: OutQueue,
}

impl Connection {
    /// Wraps a connected stream with a `read_capacity`-byte parser buffer
    /// and an outbound queue of at most `write_capacity` bytes.
    pub fn new(stream: TcpStream, read_capacity: usize, write_capacity: usize) -> Connection {
        Connection::with_tracker(
            stream,
            read_capacity,
            write_capacity,
            SequenceTracker::new(),
        )
    }

    /// As [`new`](Connection::new), with sequence tracking starting from `tracker`.
    pub fn with_tracker(
        stream: TcpStream,
        read_capacity: usize,
        write_capacity: usize,
        tracker: SequenceTracker,
    ) -> Connection {
        Connection {
            stream,
            parser: Parser::owned_at_least(read_capacity, tracker),
            out: OutQueue::new(write_capacity),
        }
    }

    /// The stream, for registration with a poll.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The stream, mutably, for registration with a poll.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads until the socket would block, handing every event to `on_event`.
    ///
    /// Each `read` takes at most 128 KiB, however large the buffer, so that
    /// the parser checks the bytes the kernel has just copied while they are
    /// still in the CPU's cache (a 4 MiB read would not fit in L2).
    ///
    /// # Errors
    /// Read errors other than `WouldBlock` and `Interrupted`; see
    /// [`classify`](super::classify).
    pub fn read_ready(&mut self, mut on_event: impl FnMut(Event<'_>)) -> io::Result<ReadOutcome> {
        let mut bytes = 0;
        loop {
            let spare = self.parser.spare();
            let room = spare.len().min(READ_CHUNK);
            let spare = spare.get_mut(..room).unwrap_or_default();
            if spare.is_empty() {
                // Every event is drained after each read, which leaves at
                // most a partial frame, so this cannot happen; but never hand
                // `read` an empty buffer (0 would read as end of stream) and
                // never spin.
                return Err(io::Error::other("parser buffer full of unconsumed bytes"));
            }
            match self.stream.read(spare) {
                Ok(0) => {
                    self.parser.finish();
                    self.parser.drain(&mut on_event);
                    return Ok(ReadOutcome {
                        bytes,
                        closed: true,
                    });
                }
                Ok(n) => {
                    bytes += n;
                    self.parser.commit(n).map_err(io::Error::other)?;
                    self.parser.drain(&mut on_event);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadOutcome {
                        bytes,
                        closed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues `bytes` (whole frames) and writes what the socket takes now.
    /// Returns `false`, queuing nothing, if they do not fit under the cap.
    ///
    /// # Errors
    /// Write errors other than `WouldBlock` and `Interrupted`.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<bool> {
        if self.out.is_empty() {
            let written = write_some(&mut self.stream, bytes)?;
            let rest = bytes.get(written..).unwrap_or_default();
            return Ok(rest.is_empty() || self.out.push(rest));
        }
        if !self.out.push(bytes) {
            return Ok(false);
        }
        self.write_ready()?;
        Ok(true)
    }

    /// Writes queued bytes until done or the socket would block.
    ///
    /// # Errors
    /// Write errors other than `WouldBlock` and `Interrupted`.
    pub fn write_ready(&mut self) -> io::Result<WriteOutcome> {
        match self.out.flush_into(&mut self.stream)?.0 {
            Flushed::Done => Ok(WriteOutcome::Done),
            Flushed::Blocked => Ok(WriteOutcome::Blocked),
        }
    }

    /// Bytes queued in user space.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Bytes in the kernel's send queue, where the platform can tell (Linux,
    /// macOS, FreeBSD).
    pub fn kernel_pending(&self) -> Option<usize> {
        sys::unsent_bytes(self.stream.as_fd())
    }

    /// Frame and discard counters of the inbound stream.
    pub fn stats(&self) -> ParseStats {
        self.parser.stats()
    }

    /// The inbound sequence tracker.
    pub fn tracker(&self) -> &SequenceTracker {
        self.parser.tracker()
    }

    /// Gives the stream back.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}
