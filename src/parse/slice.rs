//! [`SliceParser`]: a whole stream already in memory, as an iterator of events.
#![forbid(unsafe_code)]

use core::ops::ControlFlow;

use crate::sequence::SequenceTracker;

use super::engine::Engine;
use super::{Event, ParseStats};

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
#[derive(Clone)]
pub struct SliceParser<'a> {
    data: &'a [u8],
    engine: Engine,
}

/// The length left and the state, never the bytes: they may hold an Auth
/// frame's secret (protocol section 11).
impl core::fmt::Debug for SliceParser<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SliceParser")
            .field("remaining", &self.data.len())
            .field("engine", &self.engine)
            .finish()
    }
}

impl<'a> SliceParser<'a> {
    /// Parses `data` as a whole stream.
    #[must_use]
    pub fn new(data: &'a [u8]) -> SliceParser<'a> {
        let mut engine = Engine::new(SequenceTracker::new());
        engine.eof = true;
        SliceParser { data, engine }
    }

    /// The same parser, computing CRC-32C with the portable implementation
    /// even where the CPU has CRC instructions: for benchmarks and
    /// differential tests of the two code paths. Not part of the stable API.
    ///
    /// ```
    /// use tickwire::parse::SliceParser;
    /// let mut buf = [0u8; 64];
    /// let n = tickwire::encode(&tickwire::Payload::Heartbeat, 1, 0, &mut buf).unwrap();
    /// let fast: Vec<_> = SliceParser::new(&buf[..n]).collect();
    /// let portable: Vec<_> = SliceParser::with_portable_crc(&buf[..n]).collect();
    /// assert_eq!(fast, portable);
    /// ```
    #[doc(hidden)]
    #[must_use]
    pub fn with_portable_crc(data: &'a [u8]) -> SliceParser<'a> {
        let mut engine = Engine::portable(SequenceTracker::new());
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
    /// loop compiled together with `g` (see [`Parser::drain`](super::Parser::drain)).
    #[inline]
    fn fold<B, G: FnMut(B, Event<'a>) -> B>(mut self, init: B, g: G) -> B {
        let data = self.data;
        let mut g = g;
        self.engine
            .fold(data, init, |acc, event| {
                ControlFlow::Continue(g(acc, event))
            })
            .1
    }
}
