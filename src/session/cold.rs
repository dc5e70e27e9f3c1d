//! A durable, "cold" source of old frames behind the in-memory
//! [`Retention`](super::Retention): what a replay or a retransmission reply
//! reads when it asks for frames the retention has already dropped (issue
//! 24: a login from the start of the day, served from the journal).
//!
//! The core stays sans-IO: it only knows these two traits. The crate's
//! journal implements them under `std` (`journal` feature,
//! `tickwire::journal::JournalCold`); a test can implement them over a
//! `Vec`.
//!
//! ```text
//!  Login(from) older than retention.oldest()
//!      │ ColdSource::open(from) ─▶ ColdReader (one per replaying connection)
//!      ▼
//!  refill: ColdReader::read(limit = retention.oldest(), 256 KiB) ─▶ whole checked frames
//!      │   … until the reader reaches the retention's oldest frame (the seam)
//!      ▼
//!  refill: Retention::segment_from(next) ─▶ shared segments … ─▶ live
//! ```
//!
//! **The seam.** A cold source holds every frame the retention holds (it
//! is written first: write-ahead), so a replay reads from it only below
//! [`Retention::oldest`](super::Retention::oldest), as that is at each
//! refill, and then goes on from the retention at exactly the sequence the
//! cold reader stopped at: no gap, no repeat, whichever batches were
//! published and trimmed meanwhile.
//!
//! **Failures.** A reader that fails (damage in the middle of a journal, a
//! segment deleted under it) ends that replay: its connection is closed
//! with [`CloseReason::ReplayFailed`](super::CloseReason::ReplayFailed),
//! never sent a silent gap (protocol section 4.3: an origin has none).
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Why a cold read failed: a message for the log (the connection is
/// closed with [`CloseReason::ReplayFailed`](super::CloseReason::ReplayFailed)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColdError(pub String);

impl fmt::Display for ColdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for ColdError {}

/// What [`ColdReader::read`] copied: whole data frames with
/// `first <= sequence < end` (consecutive, except across a relay's holes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColdChunk {
    /// The reader's position before the chunk.
    pub first: u64,
    /// The sequence after the chunk: the reader's next position.
    pub end: u64,
    /// Data frames in it.
    pub frames: u64,
}

/// A durable store of the current session's published frames (a journal),
/// shared by every connection of a server core. See the [module docs](self).
pub trait ColdSource: Send + Sync + fmt::Debug {
    /// The oldest sequence of session `session_id` that the source holds,
    /// `None` when it holds none of it.
    fn oldest(&self, session_id: u64) -> Option<u64>;

    /// A reader of session `session_id`, from `from` (clamped to the
    /// oldest held).
    ///
    /// # Errors
    /// The source cannot be read from there.
    fn open(&self, session_id: u64, from: u64) -> Result<Box<dyn ColdReader>, ColdError>;
}

/// One connection's position in a [`ColdSource`].
pub trait ColdReader: Send + fmt::Debug {
    /// Copies the next whole frames before `limit` (exclusive), at most
    /// `max_bytes` of them (at least one frame), into `buf` (its content
    /// replaced), checking each; `None` when there is nothing before
    /// `limit` (the position then moves to `limit`).
    ///
    /// # Errors
    /// Damage, a missing segment, an I/O error: the replay stops.
    fn read(
        &mut self,
        limit: u64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<ColdChunk>, ColdError>;
}

/// A [`ColdSource`] over frames in memory, for tests and examples: the
/// data frames of one session (any session id is served them).
///
/// ```
/// use tickwire::session::cold::{ColdSource, VecCold};
/// use tickwire::{encode::QuoteFields, Payload, Sequencer};
/// let mut bytes = vec![0u8; 5 * 44];
/// Sequencer::new().encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 5], &mut bytes);
/// let cold = VecCold::new(bytes);
/// assert_eq!(cold.oldest(7), Some(1));
/// let mut reader = cold.open(7, 2)?;
/// let mut buf = Vec::new();
/// let chunk = reader.read(4, 1 << 20, &mut buf)?.unwrap();
/// assert_eq!((chunk.first, chunk.end, chunk.frames, buf.len()), (2, 4, 2, 88));
/// # Ok::<(), tickwire::session::cold::ColdError>(())
/// ```
#[derive(Clone, Debug)]
pub struct VecCold {
    bytes: alloc::sync::Arc<Vec<u8>>,
    /// (sequence, offset, length) of each data frame.
    frames: alloc::sync::Arc<Vec<(u64, usize, usize)>>,
}

impl VecCold {
    /// The data frames in `bytes` (anything else is skipped).
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> VecCold {
        let mut frames = Vec::new();
        let mut at = 0usize;
        for event in crate::parse::SliceParser::new(&bytes) {
            if let crate::parse::Event::Frame(m) = event {
                if m.msg_type().is_data() {
                    frames.push((m.sequence(), at, m.len()));
                }
                at += m.len();
            }
        }
        VecCold {
            bytes: alloc::sync::Arc::new(bytes),
            frames: alloc::sync::Arc::new(frames),
        }
    }
}

impl ColdSource for VecCold {
    fn oldest(&self, _session_id: u64) -> Option<u64> {
        self.frames.first().map(|&(s, _, _)| s)
    }

    fn open(&self, _session_id: u64, from: u64) -> Result<Box<dyn ColdReader>, ColdError> {
        let oldest = self.frames.first().map_or(from, |&(s, _, _)| s);
        Ok(Box::new(VecReader {
            cold: self.clone(),
            position: from.max(oldest),
        }))
    }
}

#[derive(Debug)]
struct VecReader {
    cold: VecCold,
    position: u64,
}

impl ColdReader for VecReader {
    fn read(
        &mut self,
        limit: u64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<ColdChunk>, ColdError> {
        buf.clear();
        let frames = &self.cold.frames;
        let start = frames.partition_point(|&(s, _, _)| s < self.position);
        let first = self.position;
        let mut end = first;
        let mut count = 0;
        for &(sequence, offset, len) in frames.iter().skip(start) {
            if sequence >= limit {
                break;
            }
            if count > 0 && buf.len() + len > max_bytes {
                break;
            }
            buf.extend_from_slice(
                self.cold
                    .bytes
                    .get(offset..offset + len)
                    .unwrap_or_default(),
            );
            end = sequence + 1;
            count += 1;
        }
        if count == 0 {
            self.position = self.position.max(limit);
            return Ok(None);
        }
        self.position = end;
        Ok(Some(ColdChunk {
            first,
            end,
            frames: count,
        }))
    }
}
