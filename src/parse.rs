//! The resynchronizing stream parser (protocol section 5), sans-IO.
//!
//! The caller reads from its socket (or file) straight into the parser's free
//! space, commits the number of bytes read, then pulls events until there are
//! none:
//!
//! ```text
//!   ┌──────────── buffer (fixed, caller-provided or owned) ─────────────┐
//!   │ consumed │ buffered: frames not yet pulled  │ spare: read into it │
//!   └──────────┴──────────────────────────────────┴─────────────────────┘
//!              ▲ start                            ▲ end
//!   spare() ─▶ &mut [u8] (compacts first if needed); commit(n) moves `end`;
//!   next_event() moves `start`; finish() marks the end of the stream.
//! ```
//!
//! Events come out in stream order:
//!
//! * [`Event::Frame`]: a checked frame, borrowed zero-copy from the buffer;
//! * [`Event::Duplicate`]: a checked data frame whose sequence was already passed
//!   (duplicate or late); it is not a new frame;
//! * [`Event::Gap`]: data sequences that never arrived, reported just before
//!   the frame that revealed them (a data frame, or a Heartbeat/EndOfSession
//!   carrying a later next-sequence);
//! * [`Event::NewSession`]: a LoginAccepted with a new `session_id`, reported
//!   just before that frame; sequence tracking restarted;
//! * [`Event::Discarded`]: a run of bytes that are not frames, with the
//!   reason its first candidate failed.
//!
//! ## Resynchronization
//!
//! The parser looks for the 0xA5 sync byte with `memchr`, checks the header as
//! soon as its bytes are there, waits for the whole frame, and verifies the
//! checksum. On any failure it discards **one** byte and searches again, so a
//! truncated frame never swallows the good frame after it. Consecutive
//! discarded bytes form one run, reported when a valid frame ends it, at the
//! end of the stream, or every [`DISCARD_REPORT_MAX`] bytes, so the event
//! sequence does not depend on how the bytes were split into reads.
//!
//! ## Memory
//!
//! The buffer is fixed: a caller's `&mut [u8]` (`no_std`), or with `alloc` an
//! owned `Box<[u8]>` (`Parser::with_capacity`, [`DEFAULT_CAPACITY`] by
//! default). Frames are borrowed from it; nothing is copied except the
//! unconsumed tail (at most a partial frame when events are drained between
//! reads) when [`Parser::spare`] compacts.
#![forbid(unsafe_code)]

use core::fmt;

use crate::checksum::{Accel, Crc32c, Kernel};
use crate::sequence::{Gap, SequenceTracker, Verdict};
use crate::wire::{check_frame, view, DecodeError, Message, MsgType, MAGIC, MAX_FRAME_LEN};

/// Default capacity of an owned buffer: 4 MiB, the seed sizing
/// (500K msg/s × 44 B × 100 ms burst × 2, rounded up).
pub const DEFAULT_CAPACITY: usize = 4 << 20;

/// A discarded run is reported at the latest when it reaches this length.
pub const DISCARD_REPORT_MAX: u64 = 64 << 10;

/// Unconsumed bytes up to this size are moved to the front on [`Parser::spare`]
/// even when there is still room behind them.
const COMPACT_MAX: usize = 4 << 10;

/// Why the bytes of a discarded run were discarded: why its first candidate
/// frame failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DiscardReason {
    /// No 0xA5 sync byte: the bytes could not start a frame.
    NoSync,
    /// A sync byte followed by a version other than 1.
    BadVersion,
    /// A sync byte followed by an unknown message type.
    UnknownType,
    /// A length byte that is not the exact length of the frame's type.
    BadLength,
    /// A complete candidate whose CRC-32C does not match.
    BadChecksum,
    /// The stream ended inside a candidate frame.
    Truncated,
}

impl DiscardReason {
    /// A stable `snake_case` name, used in JSON lines.
    ///
    /// ```
    /// assert_eq!(tickwire::parse::DiscardReason::BadChecksum.as_str(), "bad_checksum");
    /// ```
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DiscardReason::NoSync => "no_sync",
            DiscardReason::BadVersion => "bad_version",
            DiscardReason::UnknownType => "unknown_type",
            DiscardReason::BadLength => "bad_length",
            DiscardReason::BadChecksum => "bad_checksum",
            DiscardReason::Truncated => "truncated",
        }
    }

    fn of(err: DecodeError) -> DiscardReason {
        match err {
            DecodeError::BadMagic { .. } => DiscardReason::NoSync,
            DecodeError::BadVersion { .. } => DiscardReason::BadVersion,
            DecodeError::UnknownType { .. } => DiscardReason::UnknownType,
            DecodeError::BadLength { .. } => DiscardReason::BadLength,
            DecodeError::BadChecksum { .. } => DiscardReason::BadChecksum,
            DecodeError::Incomplete { .. } => DiscardReason::Truncated,
        }
    }
}

impl fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run of discarded bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Discard {
    /// How many bytes.
    pub bytes: u64,
    /// Why the first candidate of the run failed ([`DiscardReason::NoSync`]
    /// if the run held no sync byte).
    pub reason: DiscardReason,
}

/// One thing the parser found, in stream order. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A checked, new frame.
    Frame(Message<'a>),
    /// A checked data frame whose sequence was already passed.
    Duplicate(Message<'a>),
    /// Missing data sequences, reported before the frame that revealed them.
    Gap(Gap),
    /// A new session started, reported before its LoginAccepted frame.
    NewSession {
        /// The new session.
        session_id: u64,
        /// Its first data sequence on this connection.
        sequence: u64,
    },
    /// Bytes that are not frames.
    Discarded(Discard),
}

/// Errors of [`Parser`] operations (not of the data: damage is an event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The buffer cannot hold the largest frame.
    BufferTooSmall {
        /// The buffer's length.
        capacity: usize,
        /// The minimum ([`MAX_FRAME_LEN`]).
        minimum: usize,
    },
    /// [`Parser::commit`] was told more bytes than [`Parser::spare`] offered.
    Overfill {
        /// Bytes committed.
        committed: usize,
        /// Free bytes there were.
        spare: usize,
    },
    /// Bytes were committed after [`Parser::finish`].
    Finished,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParseError::BufferTooSmall { capacity, minimum } => write!(
                f,
                "parser buffer of {capacity} bytes is too small: it must hold at least {minimum}"
            ),
            ParseError::Overfill { committed, spare } => write!(
                f,
                "committed {committed} bytes but only {spare} were free: read into `spare()` and \
                 drain events with `next_event()` before reading more"
            ),
            ParseError::Finished => {
                f.write_str("bytes committed after `finish()`: the stream already ended")
            }
        }
    }
}

impl core::error::Error for ParseError {}

/// Counters kept by the parser.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseStats {
    /// Heartbeat frames.
    pub heartbeats: u64,
    /// Login frames.
    pub logins: u64,
    /// LoginAccepted frames.
    pub login_accepted: u64,
    /// EndOfSession frames.
    pub end_of_session: u64,
    /// Quote frames (duplicates included).
    pub quotes: u64,
    /// Trade frames (duplicates included).
    pub trades: u64,
    /// Bytes in checked frames.
    pub frame_bytes: u64,
    /// Bytes discarded.
    pub discarded_bytes: u64,
    /// Discarded runs reported.
    pub discard_runs: u64,
}

impl core::ops::AddAssign for ParseStats {
    /// Adds another parser's counters (for example across the connections
    /// of one client).
    fn add_assign(&mut self, other: ParseStats) {
        self.heartbeats += other.heartbeats;
        self.logins += other.logins;
        self.login_accepted += other.login_accepted;
        self.end_of_session += other.end_of_session;
        self.quotes += other.quotes;
        self.trades += other.trades;
        self.frame_bytes += other.frame_bytes;
        self.discarded_bytes += other.discarded_bytes;
        self.discard_runs += other.discard_runs;
    }
}

impl ParseStats {
    /// All checked frames.
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.heartbeats
            + self.logins
            + self.login_accepted
            + self.end_of_session
            + self.quotes
            + self.trades
    }
}

/// Frames counted by type.
#[derive(Clone, Copy, Debug, Default)]
struct FrameCounts {
    heartbeats: u64,
    logins: u64,
    login_accepted: u64,
    end_of_session: u64,
    quotes: u64,
    trades: u64,
    bytes: u64,
}

impl FrameCounts {
    #[inline(always)]
    fn count(&mut self, message: &Message<'_>) {
        match message {
            Message::Quote(_) => self.quotes += 1,
            Message::Trade(_) => self.trades += 1,
            Message::Heartbeat(_) => self.heartbeats += 1,
            Message::Login(_) => self.logins += 1,
            Message::LoginAccepted(_) => self.login_accepted += 1,
            Message::EndOfSession(_) => self.end_of_session += 1,
        }
        self.bytes += message.len() as u64;
    }
}

impl Engine {
    fn stats(&self) -> ParseStats {
        let c = &self.counts;
        ParseStats {
            heartbeats: c.heartbeats,
            logins: c.logins,
            login_accepted: c.login_accepted,
            end_of_session: c.end_of_session,
            quotes: c.quotes,
            trades: c.trades,
            frame_bytes: c.bytes,
            discarded_bytes: self.discarded_bytes,
            discard_runs: self.discard_runs,
        }
    }
}

/// An event found by [`Parser::next_event_with`], without its borrow.
enum Found {
    Frame {
        at: usize,
        code: u8,
        len: usize,
        duplicate: bool,
    },
    Other(Event<'static>),
}

impl Found {
    /// `end` is the buffer position just after the bytes the event consumed.
    fn of(event: &Event<'_>, end: usize) -> Found {
        match *event {
            Event::Frame(m) | Event::Duplicate(m) => Found::Frame {
                at: end.saturating_sub(m.len()),
                code: m.msg_type().code(),
                len: m.len(),
                duplicate: matches!(event, Event::Duplicate(_)),
            },
            Event::Gap(gap) => Found::Other(Event::Gap(gap)),
            Event::NewSession {
                session_id,
                sequence,
            } => Found::Other(Event::NewSession {
                session_id,
                sequence,
            }),
            Event::Discarded(discard) => Found::Other(Event::Discarded(discard)),
        }
    }

    fn event(self, buf: &[u8]) -> Event<'_> {
        match self {
            Found::Frame {
                at,
                code,
                len,
                duplicate,
            } => {
                match buf.get(at..).and_then(|frame| view(code, frame)) {
                    Some(m) if duplicate => Event::Duplicate(m),
                    Some(m) => Event::Frame(m),
                    // The frame is where it was found; this cannot happen.
                    None => Event::Discarded(Discard {
                        bytes: len as u64,
                        reason: DiscardReason::BadLength,
                    }),
                }
            }
            Found::Other(event) => event,
        }
    }
}

/// An event waiting behind the frame it precedes.
#[derive(Clone, Copy, Debug)]
enum Pre {
    Discard(Discard),
    Gap(Gap),
    NewSession { session_id: u64, sequence: u64 },
}

impl Pre {
    fn event<'a>(self) -> Event<'a> {
        match self {
            Pre::Discard(d) => Event::Discarded(d),
            Pre::Gap(g) => Event::Gap(g),
            Pre::NewSession {
                session_id,
                sequence,
            } => Event::NewSession {
                session_id,
                sequence,
            },
        }
    }
}

/// The parsing state machine shared by [`Parser`] and [`SliceParser`]: it
/// looks at the unconsumed bytes and says what it found and how many bytes
/// that consumed.
#[derive(Clone, Debug)]
struct Engine {
    tracker: SequenceTracker,
    counts: FrameCounts,
    discarded_bytes: u64,
    discard_runs: u64,
    run: u64,
    run_reason: DiscardReason,
    /// Events to deliver before the held frame, front first.
    pre: [Option<Pre>; 2],
    /// A checked frame at the front of the data, delivered after `pre`.
    held: Option<(MsgType, bool)>,
    eof: bool,
    accel: Accel,
}

/// One call of [`Engine::next_with`], as a [`Kernel`] so that it is compiled
/// for the CRC implementation detected when the parser was made.
struct Step<'e, 'a> {
    engine: &'e mut Engine,
    data: &'a [u8],
}

impl<'a> Kernel for Step<'_, 'a> {
    type Output = (Option<Event<'a>>, usize);

    #[inline(always)]
    fn run<C: Crc32c>(self, crc: C) -> Self::Output {
        self.engine.next_with(self.data, crc)
    }
}

/// Every event in `data`, folded into `acc` in one loop compiled for the CRC
/// implementation: the push-style fast path. Returns the bytes consumed.
struct Drain<'e, 'a, B, F> {
    engine: &'e mut Engine,
    data: &'a [u8],
    acc: B,
    fold: F,
}

impl<'a, B, F: FnMut(B, Event<'a>) -> B> Kernel for Drain<'_, 'a, B, F> {
    type Output = (usize, B);

    #[inline(always)]
    fn run<C: Crc32c>(mut self, crc: C) -> (usize, B) {
        // Work on a local copy so that the optimizer can keep the state in
        // registers for the whole loop; write it back at the end.
        let mut engine = self.engine.clone();
        let mut consumed = 0;
        loop {
            if engine.is_steady() {
                // Steady state: valid frames in sequence order, nothing pending.
                // Anything else falls through to the general step below.
                let mut tracker = engine.tracker;
                let mut counts = engine.counts;
                while let Some(rest) = self.data.get(consumed..) {
                    let Ok(message) = check_frame(rest, crc) else {
                        break;
                    };
                    if tracker
                        .observe_in_order(message.msg_type(), message.sequence())
                        .is_none()
                    {
                        break;
                    }
                    counts.count(&message);
                    consumed += message.len();
                    self.acc = (self.fold)(self.acc, Event::Frame(message));
                }
                engine.tracker = tracker;
                engine.counts = counts;
            }
            let rest = self.data.get(consumed..).unwrap_or_default();
            let (event, used) = engine.next_with(rest, crc);
            consumed += used;
            match event {
                Some(event) => self.acc = (self.fold)(self.acc, event),
                None => {
                    *self.engine = engine;
                    return (consumed, self.acc);
                }
            }
        }
    }
}

impl Engine {
    fn new(tracker: SequenceTracker) -> Engine {
        Engine {
            tracker,
            counts: FrameCounts::default(),
            discarded_bytes: 0,
            discard_runs: 0,
            run: 0,
            run_reason: DiscardReason::NoSync,
            pre: [None, None],
            held: None,
            eof: false,
            accel: Accel::detect(),
        }
    }

    /// The next event in `data`, and how many bytes of `data` it consumed.
    #[inline]
    fn next<'a>(&mut self, data: &'a [u8]) -> (Option<Event<'a>>, usize) {
        let accel = self.accel;
        accel.run(Step { engine: self, data })
    }

    /// Folds every event in `data` into `acc`; returns the bytes consumed.
    #[inline]
    fn fold<'a, B>(
        &mut self,
        data: &'a [u8],
        acc: B,
        fold: impl FnMut(B, Event<'a>) -> B,
    ) -> (usize, B) {
        let accel = self.accel;
        accel.run(Drain {
            engine: self,
            data,
            acc,
            fold,
        })
    }

    #[inline(always)]
    fn next_with<'a, C: Crc32c>(&mut self, data: &'a [u8], crc: C) -> (Option<Event<'a>>, usize) {
        if self.held.is_some() {
            if let Some(released) = self.release(data) {
                return released;
            }
        }
        let mut pos = 0;
        loop {
            let rest = data.get(pos..).unwrap_or_default();
            if rest.is_empty() {
                if self.eof && self.run > 0 {
                    return (Some(self.end_run()), pos);
                }
                return (None, pos);
            }
            match check_frame(rest, crc) {
                Ok(message) => {
                    let verdict = self.tracker.observe_message(&message);
                    if self.run == 0 {
                        let fresh = matches!(verdict, Verdict::InOrder | Verdict::Control);
                        if fresh || verdict == Verdict::Duplicate {
                            self.count(&message);
                            let used = pos + message.len();
                            let event = if fresh {
                                Event::Frame(message)
                            } else {
                                Event::Duplicate(message)
                            };
                            return (Some(event), used);
                        }
                    }
                    return (self.hold(&message, verdict), pos);
                }
                Err(DecodeError::Incomplete { .. }) if !self.eof => return (None, pos),
                Err(err) => {
                    // Discard the failed candidate's sync byte, or everything
                    // up to the next sync byte; never past the report limit.
                    let skip = match rest.split_first() {
                        Some((&MAGIC, _)) => 1,
                        Some((_, tail)) => {
                            memchr::memchr(MAGIC, tail).map_or(rest.len(), |i| i + 1)
                        }
                        None => rest.len(),
                    };
                    let room = DISCARD_REPORT_MAX.saturating_sub(self.run);
                    let skip = usize::try_from(room).map_or(skip, |room| skip.min(room));
                    let reason = DiscardReason::of(err);
                    if self.run == 0 || (self.run_reason == DiscardReason::NoSync) {
                        self.run_reason = reason;
                    }
                    self.run += skip as u64;
                    self.discarded_bytes += skip as u64;
                    pos += skip;
                    if self.run >= DISCARD_REPORT_MAX {
                        return (Some(self.end_run()), pos);
                    }
                }
            }
        }
    }

    /// Slow path: a checked frame must wait behind a discard report, a gap
    /// or a new-session event.
    #[inline(always)]
    fn hold<'a>(&mut self, message: &Message<'_>, verdict: Verdict) -> Option<Event<'a>> {
        let discard = if self.run > 0 {
            Some(Pre::Discard(self.take_run()))
        } else {
            None
        };
        let sequence = match verdict {
            Verdict::Gap(gap) => Some(Pre::Gap(gap)),
            Verdict::NewSession {
                session_id,
                sequence,
            } => Some(Pre::NewSession {
                session_id,
                sequence,
            }),
            _ => None,
        };
        self.pre = [discard, sequence];
        self.held = Some((message.msg_type(), verdict == Verdict::Duplicate));
        self.pop_pre()
    }

    #[inline(always)]
    fn pop_pre<'a>(&mut self) -> Option<Event<'a>> {
        let [first, second] = self.pre;
        let event = first.or(second)?;
        self.pre = if first.is_some() {
            [second, None]
        } else {
            [None, None]
        };
        Some(event.event())
    }

    /// Delivers the pending pre-events, then the held frame.
    #[inline(always)]
    /// `None` if there was nothing to release after all (the held frame is
    /// then parsed again).
    fn release<'a>(&mut self, data: &'a [u8]) -> Option<(Option<Event<'a>>, usize)> {
        if let Some(event) = self.pop_pre() {
            return Some((Some(event), 0));
        }
        let (msg_type, duplicate) = self.held.take()?;
        // The frame was checked when it was first seen and the data did not change.
        let message = view(msg_type.code(), data)?;
        self.count(&message);
        let event = if duplicate {
            Event::Duplicate(message)
        } else {
            Event::Frame(message)
        };
        Some((Some(event), message.len()))
    }

    #[inline(always)]
    fn take_run(&mut self) -> Discard {
        let discard = Discard {
            bytes: self.run,
            reason: self.run_reason,
        };
        self.run = 0;
        self.run_reason = DiscardReason::NoSync;
        self.discard_runs += 1;
        discard
    }

    #[inline(always)]
    fn end_run<'a>(&mut self) -> Event<'a> {
        Event::Discarded(self.take_run())
    }

    #[inline(always)]
    fn count(&mut self, message: &Message<'_>) {
        self.counts.count(message);
    }

    /// Nothing pending: the next event can only come from the bytes.
    #[inline(always)]
    fn is_steady(&self) -> bool {
        self.held.is_none() && self.run == 0
    }
}

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
#[derive(Clone, Debug)]
pub struct Parser<B> {
    buf: B,
    start: usize,
    end: usize,
    engine: Engine,
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
        let (used, ()) = self.engine.fold(data, (), |(), event| sink(event));
        self.start += used;
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
    /// let mut parser = Parser::new([0u8; 64])?;
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
    #[cfg(feature = "std")]
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

/// Parses a complete stream that is already in memory (a recording, a
/// datagram, a memory-mapped file): an iterator of events borrowing from it.
///
/// The end of the slice is the end of the stream.
///
/// ```
/// use tickwire::parse::{Event, SliceParser};
/// use tickwire::{Payload, Sequencer};
/// let mut wire = [0u8; 100];
/// let mut seq = Sequencer::new();
/// let n = seq.encode(&Payload::Heartbeat, 0, &mut wire)?;
/// let events: Vec<_> = SliceParser::new(&wire[..n + 3]).collect();
/// assert!(matches!(events[0], Event::Frame(_)));
/// assert!(matches!(events[1], Event::Discarded(d) if d.bytes == 3));
/// # Ok::<(), tickwire::EncodeError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SliceParser<'a> {
    data: &'a [u8],
    engine: Engine,
}

impl<'a> SliceParser<'a> {
    /// Parses `data` as a whole stream.
    #[must_use]
    pub fn new(data: &'a [u8]) -> SliceParser<'a> {
        let mut engine = Engine::new(SequenceTracker::new());
        engine.eof = true;
        SliceParser { data, engine }
    }

    /// Frame and discard counters so far.
    #[must_use]
    pub fn stats(&self) -> ParseStats {
        self.engine.stats()
    }

    /// The sequence tracker.
    #[must_use]
    pub fn tracker(&self) -> &SequenceTracker {
        &self.engine.tracker
    }

    /// The bytes not parsed yet.
    #[must_use]
    pub fn remaining(&self) -> &'a [u8] {
        self.data
    }
}

impl<'a> Iterator for SliceParser<'a> {
    type Item = Event<'a>;

    #[inline]
    fn next(&mut self) -> Option<Event<'a>> {
        let (event, used) = self.engine.next(self.data);
        self.data = self.data.get(used..).unwrap_or_default();
        event
    }

    /// The fast path behind `for_each`, `count`, `filter(..).count()`…: one
    /// loop compiled together with `g` (see [`Parser::drain`]).
    #[inline]
    fn fold<B, G: FnMut(B, Event<'a>) -> B>(mut self, init: B, g: G) -> B {
        let data = self.data;
        self.engine.fold(data, init, g).1
    }
}
