//! Blocking adapters over any [`Read`] or [`Write`]: a file, a pipe, a
//! `std::net::TcpStream`, an in-memory slice.
//!
//! [`FrameReader`] reads straight into a [`Parser`]'s buffer and yields its
//! events; [`FrameWriter`] encodes frames into large batched writes. Both
//! need only the `std` feature (not `net`), so decoding a recording does not
//! pull in mio.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::io::{self, Read, Write};

use crate::encode::{encode, EncodeError, Payload, Sequencer};
use crate::parse::{Event, ParseError, ParseStats, Parser};
use crate::sequence::SequenceTracker;
use crate::wire::MAX_FRAME_LEN;

/// Default buffer of a [`FrameReader`]: 1 MiB.
pub const READER_CAPACITY: usize = 1 << 20;

/// Reads events from any byte source, straight into the parser's buffer.
///
/// Retries `Interrupted`, treats the end of the input as the end of the
/// stream (an incomplete frame there is reported as discarded) and yields
/// borrowed frames, discards, gaps and new sessions.
///
/// ```
/// use tickwire::io::FrameReader;
/// use tickwire::parse::Event;
/// use tickwire::{Payload, Sequencer};
///
/// let mut wire = Vec::new();
/// let mut seq = Sequencer::new();
/// let mut buf = [0u8; 64];
/// for _ in 0..3 {
///     let n = seq.encode(&Payload::Heartbeat, 0, &mut buf)?;
///     wire.extend_from_slice(&buf[..n]);
/// }
/// let mut reader = FrameReader::new(&wire[..]);
/// let mut frames = 0;
/// while let Some(event) = reader.next_event()? {
///     if let Event::Frame(_) = event {
///         frames += 1;
///     }
/// }
/// assert_eq!(frames, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    parser: Parser<Box<[u8]>>,
}

impl<R: Read> FrameReader<R> {
    /// A reader with a [`READER_CAPACITY`] buffer.
    pub fn new(inner: R) -> FrameReader<R> {
        let parser = Parser::owned_at_least(READER_CAPACITY, SequenceTracker::new());
        FrameReader { inner, parser }
    }

    /// A reader whose buffer holds `capacity` bytes.
    ///
    /// # Errors
    /// [`ParseError::BufferTooSmall`] below 72 bytes ([`MAX_FRAME_LEN`]).
    pub fn with_capacity(inner: R, capacity: usize) -> Result<FrameReader<R>, ParseError> {
        Ok(FrameReader {
            inner,
            parser: Parser::with_capacity(capacity)?,
        })
    }

    /// A reader whose sequence tracking starts from `tracker`.
    ///
    /// # Errors
    /// [`ParseError::BufferTooSmall`] below 72 bytes ([`MAX_FRAME_LEN`]).
    pub fn with_tracker(
        inner: R,
        capacity: usize,
        tracker: SequenceTracker,
    ) -> Result<FrameReader<R>, ParseError> {
        let buf = vec![0u8; capacity].into_boxed_slice();
        Ok(FrameReader {
            inner,
            parser: Parser::with_tracker(buf, tracker)?,
        })
    }

    /// The next event, reading as needed; `Ok(None)` once the input has
    /// ended and every event was delivered.
    ///
    /// # Errors
    /// Read errors other than `Interrupted` (which is retried).
    pub fn next_event(&mut self) -> io::Result<Option<Event<'_>>> {
        let inner = &mut self.inner;
        self.parser
            .next_event_with(|spare| read_retrying(inner, spare))
    }

    /// Frame and discard counters.
    pub fn stats(&self) -> ParseStats {
        self.parser.stats()
    }

    /// The sequence tracker.
    pub fn tracker(&self) -> &SequenceTracker {
        self.parser.tracker()
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying reader, mutably (bytes read from it directly bypass the parser).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Gives the reader back.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// `read`, retried on `Interrupted`.
pub(crate) fn read_retrying<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Default batch of a [`FrameWriter`]: 64 KiB per `write`.
pub const WRITER_BATCH: usize = 64 << 10;

/// Writes frames to any byte sink, batching them into large writes.
///
/// Frames are encoded straight into the batch buffer; the batch is written
/// when the next frame would not fit, and on [`flush`](FrameWriter::flush).
///
/// ```
/// use tickwire::io::FrameWriter;
/// use tickwire::{Payload, Sequencer};
///
/// let mut writer = FrameWriter::new(Vec::new());
/// let mut seq = Sequencer::new();
/// writer.write_sequenced(&mut seq, &Payload::Heartbeat, 7)?;
/// writer.write_payload(&Payload::Login, 0, 7)?;
/// writer.flush()?;
/// assert_eq!(writer.get_ref().len(), 48);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct FrameWriter<W: Write> {
    inner: W,
    batch: Vec<u8>,
    limit: usize,
}

/// The writer and the batch's length, never its bytes: they may hold an
/// Auth frame's secret (protocol section 11).
impl<W: Write + core::fmt::Debug> core::fmt::Debug for FrameWriter<W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameWriter")
            .field("inner", &self.inner)
            .field("batched", &self.batch.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl<W: Write> FrameWriter<W> {
    /// A writer batching up to [`WRITER_BATCH`] bytes.
    pub fn new(inner: W) -> FrameWriter<W> {
        FrameWriter::with_batch(inner, WRITER_BATCH)
    }

    /// A writer batching up to `limit` bytes (at least one frame).
    pub fn with_batch(inner: W, limit: usize) -> FrameWriter<W> {
        let limit = limit.max(MAX_FRAME_LEN);
        FrameWriter {
            inner,
            batch: Vec::with_capacity(limit),
            limit,
        }
    }

    /// Encodes one frame with the given header fields.
    ///
    /// # Errors
    /// Write errors of a batch that had to be written first.
    pub fn write_payload(
        &mut self,
        payload: &Payload,
        sequence: u64,
        timestamp: u64,
    ) -> io::Result<()> {
        self.put(|out| encode(payload, sequence, timestamp, out))
    }

    /// Encodes one frame numbered by `sequencer`.
    ///
    /// # Errors
    /// Write errors of a batch that had to be written first.
    pub fn write_sequenced(
        &mut self,
        sequencer: &mut Sequencer,
        payload: &Payload,
        timestamp: u64,
    ) -> io::Result<()> {
        self.put(|out| sequencer.encode(payload, timestamp, out))
    }

    /// Appends already encoded bytes.
    ///
    /// # Errors
    /// Write errors.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.batch.len() + bytes.len() > self.limit {
            self.write_batch()?;
        }
        if bytes.len() > self.limit {
            return self.inner.write_all(bytes);
        }
        self.batch.extend_from_slice(bytes);
        Ok(())
    }

    fn put(
        &mut self,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
    ) -> io::Result<()> {
        if self.batch.len() + MAX_FRAME_LEN > self.limit {
            self.write_batch()?;
        }
        let at = self.batch.len();
        self.batch.resize(at + MAX_FRAME_LEN, 0);
        let written = encode(self.batch.get_mut(at..).unwrap_or_default());
        self.batch.truncate(at + written.as_ref().map_or(0, |n| *n));
        written.map(drop).map_err(io::Error::other)
    }

    fn write_batch(&mut self) -> io::Result<()> {
        if !self.batch.is_empty() {
            self.inner.write_all(&self.batch)?;
            self.batch.clear();
        }
        Ok(())
    }

    /// Writes the pending batch and flushes the sink.
    ///
    /// # Errors
    /// Write errors.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_batch()?;
        self.inner.flush()
    }

    /// Bytes encoded but not yet written.
    pub fn pending(&self) -> usize {
        self.batch.len()
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying writer, mutably.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}
