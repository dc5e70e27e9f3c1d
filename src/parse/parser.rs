//! [`Parser`]: the streaming parser over a fixed buffer.
#![forbid(unsafe_code)]

use core::ops::ControlFlow;

use crate::sequence::SequenceTracker;
use crate::wire::MAX_FRAME_LEN;

use super::engine::{Engine, Found};
#[cfg(feature = "alloc")]
use super::DEFAULT_CAPACITY;
use super::{Event, ParseError, ParseStats};

/// Unconsumed bytes up to this size are moved to the front on [`Parser::spare`]
/// even when there is still room behind them.
const COMPACT_MAX: usize = 4 << 10;

/// The received, not yet consumed bytes of a parser's buffer. A free
/// function so that callers can borrow the buffer and the engine apart.
#[inline(always)]
fn unconsumed<B: AsRef<[u8]>>(buf: &B, start: usize, end: usize) -> &[u8] {
    buf.as_ref().get(start..end).unwrap_or_default()
}

/// The streaming parser over a fixed buffer `B` (`&mut [u8]`, `Box<[u8]>`,
/// `Vec<u8>`, `[u8; N]`…).
///
/// ```
/// use tickwire::parse::{Event, Parser};
/// use tickwire::{Message, Payload, Sequencer};
///
/// // Three frames, then damage, then one more frame, split into odd reads.
/// let mut wire = [0u8; 256];
/// let mut seq = Sequencer::new();
/// let mut n = 0;
/// for _ in 0..3 {
///     n += seq.encode(&Payload::Heartbeat, 0, &mut wire[n..])?;
/// }
/// wire[n..n + 5].copy_from_slice(b"junk!");
/// n += 5;
/// n += seq.encode(&Payload::EndOfSession, 0, &mut wire[n..])?;
///
/// let mut storage = [0u8; 128];
/// let mut parser = Parser::new(&mut storage[..])?;
/// let (mut frames, mut discarded) = (0, 0);
/// for read in wire[..n].chunks(7) {
///     // A socket would `read(parser.spare())` here.
///     parser.spare()[..read.len()].copy_from_slice(read);
///     parser.commit(read.len())?;
///     while let Some(event) = parser.next_event() {
///         match event {
///             Event::Frame(_) => frames += 1,
///             Event::Discarded(d) => discarded += d.bytes,
///             _ => {}
///         }
///     }
/// }
/// parser.finish();
/// while let Some(_event) = parser.next_event() {}
/// assert_eq!((frames, discarded), (4, 5));
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Parser<B> {
    buf: B,
    start: usize,
    end: usize,
    engine: Engine,
}

/// Positions and state, never the buffer's bytes: they may hold an Auth
/// frame's secret (protocol section 11).
impl<B> core::fmt::Debug for Parser<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Parser")
            .field("start", &self.start)
            .field("end", &self.end)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Parser<B> {
    /// A parser reading into `buf`, which must hold at least
    /// [`MAX_FRAME_LEN`] bytes (size it for your largest burst).
    ///
    /// # Errors
    /// [`ParseError::BufferTooSmall`].
    pub fn new(buf: B) -> Result<Parser<B>, ParseError> {
        Parser::with_tracker(buf, SequenceTracker::new())
    }

    /// A parser whose sequence tracking starts from `tracker` (for example
    /// [`SequenceTracker::expecting`] the sequence a client asked for).
    ///
    /// # Errors
    /// [`ParseError::BufferTooSmall`].
    pub fn with_tracker(buf: B, tracker: SequenceTracker) -> Result<Parser<B>, ParseError> {
        let capacity = buf.as_ref().len();
        if capacity < MAX_FRAME_LEN {
            return Err(ParseError::BufferTooSmall {
                capacity,
                minimum: MAX_FRAME_LEN,
            });
        }
        Ok(Parser {
            buf,
            start: 0,
            end: 0,
            engine: Engine::new(tracker),
        })
    }

    /// The free space to read into; pass the number of bytes read to
    /// [`commit`](Parser::commit).
    ///
    /// Moves the unconsumed bytes to the front first when that is cheap or
    /// needed. Empty only when the buffer is full of unconsumed bytes: pull
    /// events first. (Do not hand an empty slice to `read`: it returns 0,
    /// which looks like end of stream.)
    pub fn spare(&mut self) -> &mut [u8] {
        let capacity = self.buf.as_ref().len();
        let buffered = self.end.saturating_sub(self.start);
        if buffered == 0 {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && (buffered <= COMPACT_MAX || self.end >= capacity) {
            self.buf.as_mut().copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = buffered;
        }
        self.buf.as_mut().get_mut(self.end..).unwrap_or_default()
    }

    /// Marks `n` bytes written into [`spare`](Parser::spare) as received.
    ///
    /// # Errors
    /// [`ParseError::Overfill`] if `n` is more than the spare space (nothing
    /// is committed then); [`ParseError::Finished`] after [`finish`](Parser::finish).
    pub fn commit(&mut self, n: usize) -> Result<(), ParseError> {
        if self.engine.eof {
            return Err(ParseError::Finished);
        }
        let spare = self.buf.as_ref().len().saturating_sub(self.end);
        if n > spare {
            return Err(ParseError::Overfill {
                committed: n,
                spare,
            });
        }
        self.end += n;
        Ok(())
    }

    /// Copies as much of `data` as fits into the spare space and commits it;
    /// returns how many bytes were taken. For bytes that are already in
    /// memory; sockets should read into [`spare`](Parser::spare) directly.
    pub fn fill_from(&mut self, data: &[u8]) -> usize {
        if self.engine.eof {
            return 0;
        }
        let spare = self.spare();
        let n = spare.len().min(data.len());
        if let (Some(dst), Some(src)) = (spare.get_mut(..n), data.get(..n)) {
            dst.copy_from_slice(src);
            self.end += n;
            n
        } else {
            0
        }
    }

    /// The next event, or `None` when more bytes are needed (or, after
    /// [`finish`](Parser::finish), when the stream is exhausted).
    #[inline]
    pub fn next_event(&mut self) -> Option<Event<'_>> {
        let data = unconsumed(&self.buf, self.start, self.end);
        let (event, used) = self.engine.next(data);
        self.start += used;
        event
    }

    /// Hands every event available now to `sink`, in order: the same events
    /// as calling [`next_event`](Parser::next_event) until it returns `None`,
    /// in one loop that is compiled together with `sink` (the fastest way to
    /// consume a parser).
    ///
    /// ```
    /// use tickwire::parse::{Event, Parser};
    /// use tickwire::{Payload, Sequencer};
    /// let mut parser = Parser::new(vec![0u8; 1024])?;
    /// let mut seq = Sequencer::new();
    /// let mut wire = [0u8; 48];
    /// let n = seq.encode(&Payload::Heartbeat, 0, &mut wire)?;
    /// let n = n + seq.encode(&Payload::Heartbeat, 0, &mut wire[n..])?;
    /// parser.fill_from(&wire[..n]);
    /// let mut frames = 0;
    /// parser.drain(|event| {
    ///     if let Event::Frame(_) = event {
    ///         frames += 1;
    ///     }
    /// });
    /// assert_eq!(frames, 2);
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    #[inline]
    pub fn drain<F: FnMut(Event<'_>)>(&mut self, mut sink: F) {
        let data = unconsumed(&self.buf, self.start, self.end);
        let (used, ()) = self.engine.fold(data, (), |(), event| {
            sink(event);
            ControlFlow::Continue(())
        });
        self.start += used;
    }

    /// [`drain`](Parser::drain) that stops early: hands the events
    /// available now to `sink` until it returns [`ControlFlow::Break`].
    /// The events after that one stay in the parser, for the next call (or
    /// [`next_event`](Parser::next_event)): nothing is skipped. Returns
    /// `Break` if `sink` stopped it, `Continue` once every available event
    /// was handed out.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use tickwire::parse::{Event, Parser};
    /// use tickwire::{Payload, Sequencer};
    /// let mut parser = Parser::new(vec![0u8; 1024])?;
    /// let mut seq = Sequencer::new();
    /// let mut wire = [0u8; 240];
    /// let mut n = 0;
    /// for _ in 0..10 {
    ///     n += seq.encode(&Payload::Heartbeat, 0, &mut wire[n..])?;
    /// }
    /// parser.fill_from(&wire[..n]);
    /// let mut seen = Vec::new();
    /// let flow = parser.try_drain(|event| {
    ///     if let Event::Frame(m) = event {
    ///         seen.push(m.sequence());
    ///     }
    ///     if seen.len() == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    /// });
    /// assert!(flow.is_break());
    /// assert_eq!(parser.stats().frames(), 3);
    /// // The other seven are still there.
    /// let mut rest = 0;
    /// assert!(parser.try_drain(|_| { rest += 1; ControlFlow::Continue(()) }).is_continue());
    /// assert_eq!(rest, 7);
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    #[inline]
    pub fn try_drain<F: FnMut(Event<'_>) -> ControlFlow<()>>(
        &mut self,
        mut sink: F,
    ) -> ControlFlow<()> {
        let data = unconsumed(&self.buf, self.start, self.end);
        let (used, flow) = self.engine.fold(
            data,
            ControlFlow::Continue(()),
            #[inline(always)]
            |_, event| match sink(event) {
                ControlFlow::Continue(()) => ControlFlow::Continue(ControlFlow::Continue(())),
                ControlFlow::Break(()) => ControlFlow::Break(ControlFlow::Break(())),
            },
        );
        self.start += used;
        flow
    }

    /// Folds the events available now into `acc`, in order, up to and
    /// including the first one for which `fold` returns `Break`; the events
    /// after it stay in the parser. The loop keeps `acc` in registers: for
    /// a driver's state that changes with every frame (the client's steady
    /// run).
    #[inline]
    #[cfg_attr(not(feature = "net"), allow(dead_code))] // used by the mio client
    pub(crate) fn fold_until<A>(
        &mut self,
        acc: A,
        fold: impl FnMut(A, Event<'_>) -> ControlFlow<A, A>,
    ) -> A {
        let data = unconsumed(&self.buf, self.start, self.end);
        let (used, acc) = self.engine.fold(data, acc, fold);
        self.start += used;
        acc
    }

    /// The next event, calling `fill` to read more bytes into the spare space
    /// whenever the buffered ones are used up: the blocking style, for a
    /// reader that owns its input. `fill` returns how many bytes it wrote;
    /// 0 means the end of the stream (as with `std::io::Read`).
    ///
    /// Returns `Ok(None)` only once the stream has ended and every event has
    /// been delivered.
    ///
    /// # Errors
    /// Whatever `fill` returns; the parser is unchanged by a failed fill and
    /// the call can be retried.
    ///
    /// ```
    /// use tickwire::parse::{Event, Parser};
    /// use tickwire::{Payload, Sequencer};
    /// let mut wire = [0u8; 48];
    /// let mut seq = Sequencer::new();
    /// let n = seq.encode(&Payload::Heartbeat, 0, &mut wire)?;
    /// let n = n + seq.encode(&Payload::EndOfSession, 0, &mut wire[n..])?;
    /// let mut input = &wire[..n];
    /// let mut parser = Parser::new([0u8; 128])?;
    /// let mut read = |spare: &mut [u8]| -> Result<usize, ()> {
    ///     let k = spare.len().min(input.len()).min(5); // 5 bytes per "read"
    ///     spare[..k].copy_from_slice(&input[..k]);
    ///     input = &input[k..];
    ///     Ok(k)
    /// };
    /// let mut frames = 0;
    /// while let Some(event) = parser.next_event_with(&mut read).unwrap() {
    ///     assert!(matches!(event, Event::Frame(_)));
    ///     frames += 1;
    /// }
    /// assert_eq!(frames, 2);
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    pub fn next_event_with<E>(
        &mut self,
        mut fill: impl FnMut(&mut [u8]) -> Result<usize, E>,
    ) -> Result<Option<Event<'_>>, E> {
        let found = loop {
            let data = unconsumed(&self.buf, self.start, self.end);
            let (event, used) = self.engine.next(data);
            let found = event.map(|event| Found::of(&event, self.start + used));
            self.start += used;
            if found.is_some() || self.engine.eof {
                break found;
            }
            let spare = self.spare();
            let room = spare.len();
            if room == 0 {
                // Cannot happen: without an event, at most a partial frame
                // is buffered. End the stream rather than spin.
                self.finish();
                continue;
            }
            match fill(spare)? {
                0 => self.finish(),
                n => self.end += n.min(room),
            }
        };
        Ok(found.map(|found| found.event(self.buf.as_ref())))
    }

    /// Marks the end of the stream: an incomplete candidate at the end now
    /// fails (and is discarded one byte at a time, so complete frames after
    /// it are still delivered) and the last discarded run is reported.
    pub fn finish(&mut self) {
        self.engine.eof = true;
    }

    /// Whether [`finish`](Parser::finish) was called.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.engine.eof
    }

    /// Bytes received but not yet consumed by events.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// The bytes received but not yet consumed by events, as they are.
    /// For a caller that must look at a stream's first bytes before
    /// parsing it (a server checking that a connection starts with an Auth,
    /// protocol section 11); then [`consume`](Parser::consume) what it
    /// handled itself.
    ///
    /// ```
    /// use tickwire::parse::Parser;
    /// let mut storage = [0u8; 128];
    /// let mut parser = Parser::new(&mut storage[..])?;
    /// assert_eq!(parser.fill_from(b"abc"), 3);
    /// assert_eq!(parser.unparsed(), b"abc");
    /// parser.consume(2);
    /// assert_eq!(parser.unparsed(), b"c");
    /// # Ok::<(), tickwire::parse::ParseError>(())
    /// ```
    #[must_use]
    pub fn unparsed(&self) -> &[u8] {
        unconsumed(&self.buf, self.start, self.end)
    }

    /// Drops the first `n` [`unparsed`](Parser::unparsed) bytes (at most
    /// all of them) without parsing them: they are not counted as frames or
    /// discards. Only between events (no event borrows the buffer then);
    /// meant for the start of a stream.
    pub fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
    }

    /// The buffer's total size.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.as_ref().len()
    }

    /// Frame and discard counters.
    #[must_use]
    pub fn stats(&self) -> ParseStats {
        self.engine.stats()
    }

    /// The sequence tracker (its counters, the expected sequence, the session).
    #[must_use]
    pub fn tracker(&self) -> &SequenceTracker {
        &self.engine.tracker
    }

    /// Starts a new stream in the same buffer: buffered bytes are dropped,
    /// counters and tracking start from `tracker` (for example, a client's
    /// next connection: no byte of the last one carries over).
    ///
    /// ```
    /// use tickwire::{parse::Parser, sequence::SequenceTracker};
    /// let mut storage = [0u8; 128];
    /// let mut parser = Parser::new(&mut storage[..])?;
    /// parser.spare()[..3].copy_from_slice(b"abc");
    /// parser.commit(3)?;
    /// parser.reset(SequenceTracker::new());
    /// assert_eq!(parser.buffered(), 0);
    /// # Ok::<(), tickwire::parse::ParseError>(())
    /// ```
    pub fn reset(&mut self, tracker: SequenceTracker) {
        self.start = 0;
        self.end = 0;
        self.engine = Engine::new(tracker);
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }
}

#[cfg(feature = "alloc")]
impl Parser<alloc::boxed::Box<[u8]>> {
    /// A parser with an owned, zeroed buffer of `capacity` bytes.
    ///
    /// ```
    /// let parser = tickwire::Parser::with_capacity(1 << 20)?;
    /// assert_eq!(parser.capacity(), 1 << 20);
    /// # Ok::<(), tickwire::parse::ParseError>(())
    /// ```
    ///
    /// # Errors
    /// [`ParseError::BufferTooSmall`] below [`MAX_FRAME_LEN`].
    pub fn with_capacity(capacity: usize) -> Result<Self, ParseError> {
        Parser::new(alloc::vec![0u8; capacity].into_boxed_slice())
    }

    /// A parser with an owned buffer of `capacity` bytes, raised to
    /// [`MAX_FRAME_LEN`] if smaller (so it cannot fail).
    pub(crate) fn owned_at_least(capacity: usize, tracker: SequenceTracker) -> Self {
        Parser {
            buf: alloc::vec![0u8; capacity.max(MAX_FRAME_LEN)].into_boxed_slice(),
            start: 0,
            end: 0,
            engine: Engine::new(tracker),
        }
    }

    /// A parser with an owned buffer of [`DEFAULT_CAPACITY`] (4 MiB).
    ///
    /// ```
    /// assert_eq!(tickwire::Parser::owned().capacity(), 4 << 20);
    /// ```
    #[must_use]
    pub fn owned() -> Self {
        Parser {
            buf: alloc::vec![0u8; DEFAULT_CAPACITY].into_boxed_slice(),
            start: 0,
            end: 0,
            engine: Engine::new(SequenceTracker::new()),
        }
    }
}
