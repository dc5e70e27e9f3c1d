//! [`Stepper`]: the parsing engine over bytes the caller keeps, one event
//! at a time, for drivers that own their buffer (the tokio codec splits
//! each frame off its `BytesMut`).
#![forbid(unsafe_code)]

use crate::sequence::SequenceTracker;

use super::engine::Engine;
use super::{Event, ParseStats};

/// The same state machine as [`Parser`](super::Parser) and
/// [`SliceParser`](super::SliceParser), with the buffer left to the caller:
/// [`next`](Stepper::next) looks at the unconsumed bytes and says what it
/// found and how many of them that consumed. A frame event's bytes are
/// always the last `len` of the consumed ones.
#[derive(Clone, Debug)]
pub(crate) struct Stepper {
    engine: Engine,
}

impl Stepper {
    pub(crate) fn new() -> Stepper {
        Stepper {
            engine: Engine::new(SequenceTracker::new()),
        }
    }

    /// The next event in `data` (the unconsumed bytes) and how many bytes
    /// of `data` to consume (also when there is no event: discarded bytes).
    pub(crate) fn next<'a>(&mut self, data: &'a [u8]) -> (Option<Event<'a>>, usize) {
        self.engine.next(data)
    }

    /// The end of the stream: an incomplete frame left is discarded.
    pub(crate) fn finish(&mut self) {
        self.engine.eof = true;
    }

    pub(crate) fn stats(&self) -> ParseStats {
        self.engine.stats()
    }

    pub(crate) fn tracker(&self) -> &SequenceTracker {
        &self.engine.tracker
    }
}
