//! The retention ring: the last N published data frames, by sequence, kept
//! as the batches they were published in and shared (never copied) with
//! every connection that sends them.
//!
//! ```text
//!  Publisher ──Batch (frames first..first+n, encoded once)──▶ Arc<Batch>
//!                                                              │
//!          Retention: [ chunk │ chunk │ chunk … ]  ◀── push ───┤
//!                       ▲ trimmed frame by frame at the front   │
//!                       └─ segment_from(seq) ─▶ Segment ─┐     └─ live: Segment::whole
//!                                                        ▼
//!                         each ServerSession's queue: Arc + byte range, no copy
//! ```
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use super::cold::ColdSource;
use crate::parse::{Event, SliceParser};

/// Encoded data frames with consecutive sequences `first..first + frames`,
/// back to back: one published batch.
///
/// ```
/// use tickwire::session::Batch;
/// use tickwire::{encode::QuoteFields, Payload, Sequencer};
///
/// let mut seq = Sequencer::new();
/// let mut bytes = vec![0u8; 2 * 44];
/// let done = seq.encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 2], &mut bytes);
/// bytes.truncate(done.bytes);
/// let batch = Batch::new(bytes)?;
/// assert_eq!((batch.first(), batch.frames(), batch.end()), (1, 2, 3));
/// # Ok::<(), tickwire::session::BatchError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    first: u64,
    frames: u64,
    bytes: Storage,
}

/// Bytes a [`Batch`] shares with the longer-lived thing that holds them:
/// the journal's mapped segment, into which the publisher encoded the
/// batch (the retention then keeps the journal's own pages, not a copy).
#[cfg(feature = "journal")]
pub(crate) trait SharedBytes: Send + Sync + fmt::Debug {
    /// The bytes `at..at + len` (empty if they are not there).
    fn get(&self, at: usize, len: usize) -> &[u8];
}

/// Where a batch's bytes live.
#[derive(Clone)]
enum Storage {
    Owned(Vec<u8>),
    #[cfg(feature = "journal")]
    Shared {
        owner: Arc<dyn SharedBytes>,
        at: usize,
        len: usize,
    },
}

impl Storage {
    fn as_slice(&self) -> &[u8] {
        match self {
            Storage::Owned(v) => v,
            #[cfg(feature = "journal")]
            Storage::Shared { owner, at, len } => owner.get(*at, *len),
        }
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl PartialEq for Storage {
    fn eq(&self, other: &Storage) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Storage {}

/// Why bytes are not a [`Batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchError {
    /// No frames.
    Empty,
    /// Bytes that are not whole, valid frames (checksums included).
    NotFrames,
    /// A control frame: only data frames are retained.
    NotData,
    /// Sequences that do not follow each other.
    NotConsecutive,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BatchError::Empty => "a batch holds at least one frame",
            BatchError::NotFrames => "bytes that are not whole, valid frames",
            BatchError::NotData => "a control frame in a batch of data frames",
            BatchError::NotConsecutive => "sequences that do not follow each other",
        })
    }
}

impl core::error::Error for BatchError {}

impl Batch {
    /// Checks that `bytes` are whole, valid data frames with consecutive
    /// sequences (checksums included) and wraps them.
    ///
    /// # Errors
    /// A [`BatchError`] saying what is wrong.
    pub fn new(bytes: Vec<u8>) -> Result<Batch, BatchError> {
        let mut parser = SliceParser::new(&bytes);
        let (mut first, mut next) = (None, 0u64);
        for event in parser.by_ref() {
            let m = match event {
                Event::Frame(m) => m,
                Event::Gap(_) | Event::Duplicate(_) => return Err(BatchError::NotConsecutive),
                _ => return Err(BatchError::NotFrames),
            };
            if !m.msg_type().is_data() {
                return Err(BatchError::NotData);
            }
            match first {
                None => first = Some(m.sequence()),
                Some(_) if m.sequence() != next => return Err(BatchError::NotConsecutive),
                Some(_) => {}
            }
            next = m.sequence().saturating_add(1);
        }
        if !parser.remaining().is_empty() {
            return Err(BatchError::NotFrames);
        }
        let first = first.ok_or(BatchError::Empty)?;
        Ok(Batch {
            first,
            frames: next - first,
            bytes: Storage::Owned(bytes),
        })
    }

    /// Frames the caller encoded itself with a [`Sequencer`](crate::Sequencer)
    /// (not checked again).
    #[cfg(any(feature = "net", feature = "tokio"))]
    pub(crate) fn encoded(first: u64, frames: u64, bytes: Vec<u8>) -> Batch {
        Batch {
            first,
            frames,
            bytes: Storage::Owned(bytes),
        }
    }

    /// Frames encoded with a [`Sequencer`](crate::Sequencer) into
    /// `owner`'s bytes `at..at + len` (not checked again).
    #[cfg(feature = "journal")]
    #[cfg_attr(
        not(all(target_os = "linux", target_pointer_width = "64")),
        allow(dead_code)
    )]
    pub(crate) fn shared(
        first: u64,
        frames: u64,
        owner: Arc<dyn SharedBytes>,
        at: usize,
        len: usize,
    ) -> Batch {
        Batch {
            first,
            frames,
            bytes: Storage::Shared { owner, at, len },
        }
    }

    /// The first sequence.
    #[must_use]
    pub fn first(&self) -> u64 {
        self.first
    }

    /// How many frames.
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The sequence after the last one.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.first + self.frames
    }

    /// The encoded frames.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

/// Byte length of the frame at the start of `bytes` (its fourth byte), at least 1.
fn frame_len(bytes: &[u8]) -> usize {
    bytes.get(3).map_or(1, |&len| usize::from(len).max(1))
}

/// Whole frames `first..first + frames` of a shared [`Batch`]: what a
/// connection sends, without a copy.
#[derive(Clone, Debug)]
pub struct Segment {
    batch: Arc<Batch>,
    start: usize,
    end: usize,
    first: u64,
    frames: u64,
}

impl Segment {
    /// All of `batch`.
    #[must_use]
    pub fn whole(batch: &Arc<Batch>) -> Segment {
        Segment {
            start: 0,
            end: batch.bytes().len(),
            first: batch.first,
            frames: batch.frames,
            batch: Arc::clone(batch),
        }
    }

    /// The frames of `batch` from sequence `from` on (all of them if `from`
    /// is before the batch, none if after).
    #[must_use]
    pub fn tail(batch: &Arc<Batch>, from: u64) -> Segment {
        let from = from.clamp(batch.first, batch.end());
        let mut start = 0;
        for _ in batch.first..from {
            start += frame_len(batch.bytes().get(start..).unwrap_or_default());
        }
        Segment {
            start: start.min(batch.bytes().len()),
            end: batch.bytes().len(),
            first: from,
            frames: batch.end() - from,
            batch: Arc::clone(batch),
        }
    }

    /// The frames of this segment before sequence `end` (all of them if
    /// `end` is past the segment, none if before it).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tickwire::session::{Batch, Segment};
    /// use tickwire::{encode::QuoteFields, Payload, Sequencer};
    /// let mut bytes = vec![0u8; 3 * 44];
    /// Sequencer::new().encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 3], &mut bytes);
    /// let head = Segment::whole(&Arc::new(Batch::new(bytes)?)).head(3);
    /// assert_eq!((head.first(), head.frames(), head.bytes().len()), (1, 2, 88));
    /// # Ok::<(), tickwire::session::BatchError>(())
    /// ```
    #[must_use]
    pub fn head(mut self, end: u64) -> Segment {
        let keep = end.clamp(self.first, self.end()) - self.first;
        let mut at = self.start;
        for _ in 0..keep {
            at += frame_len(self.batch.bytes().get(at..).unwrap_or_default());
        }
        self.end = at.min(self.end);
        self.frames = keep;
        self
    }

    /// The frames' bytes.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        self.batch
            .bytes()
            .get(self.start..self.end)
            .unwrap_or_default()
    }

    /// The first sequence.
    #[must_use]
    pub fn first(&self) -> u64 {
        self.first
    }

    /// How many frames.
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The sequence after the last one.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.first + self.frames
    }
}

/// One retained batch, its oldest frames possibly trimmed.
#[derive(Debug)]
struct Chunk {
    batch: Arc<Batch>,
    /// First retained sequence.
    first: u64,
    /// Byte offset of `first` in the batch.
    start: usize,
}

/// Published data frames `oldest()..next()`, at most `capacity` of them.
///
/// An origin's retention is contiguous. A relay's may have holes (protocol
/// section 10.2: a range it could not recover upstream stays missing, never
/// renumbered): [`push`](Self::push) accepts a batch that starts after
/// [`next`](Self::next), and [`advance`](Self::advance) moves the next live
/// sequence past a range that will never come. Replays and retransmission
/// replies skip the holes ([`segment_from`](Self::segment_from) starts at the
/// first retained frame at or after the sequence asked for), so a client sees
/// them as the same gap the relay saw. [`set_upstream_alive`](Self::set_upstream_alive)
/// tells the sessions whether their idle Heartbeats may be sent (section 10.3).
///
/// ```
/// use std::sync::Arc;
/// use tickwire::session::{Batch, Retention};
/// use tickwire::{encode::QuoteFields, Payload, Sequencer};
///
/// let mut seq = Sequencer::new();
/// let mut frames = |n: usize| -> Result<Arc<Batch>, tickwire::session::BatchError> {
///     let mut bytes = vec![0u8; n * 44];
///     let done = seq.encode_batch(&vec![(0, Payload::Quote(QuoteFields::default())); n], &mut bytes);
///     bytes.truncate(done.bytes);
///     Ok(Arc::new(Batch::new(bytes)?))
/// };
/// let mut relay = Retention::new(100);
/// relay.push(frames(2)?);         // 1, 2
/// let _lost_upstream = frames(3)?; // 3..=5 never reached the relay
/// relay.push(frames(2)?);         // 6, 7: a hole before them
/// assert_eq!((relay.oldest(), relay.next(), relay.len()), (1, 8, 4));
/// let after_hole = relay.segment_from(3, 1 << 20).unwrap();
/// assert_eq!(after_hole.first(), 6);
/// relay.advance(10);              // upstream said 8, 9 are gone too
/// assert_eq!(relay.next(), 10);
/// assert!(relay.segment_from(8, 1 << 20).is_none());
/// # Ok::<(), tickwire::session::BatchError>(())
/// ```
///
/// ```
/// use std::sync::Arc;
/// use tickwire::session::{Batch, Retention};
/// use tickwire::{encode::QuoteFields, Payload, Sequencer};
///
/// let mut seq = Sequencer::new();
/// let mut retention = Retention::new(3);
/// for _ in 0..2 {
///     let mut bytes = vec![0u8; 2 * 44];
///     let done = seq.encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 2], &mut bytes);
///     bytes.truncate(done.bytes);
///     retention.push(Arc::new(Batch::new(bytes)?));
/// }
/// assert_eq!((retention.oldest(), retention.next()), (2, 5)); // frame 1 fell out
/// let replay = retention.segment_from(1, 1 << 20).unwrap();  // clamped to the oldest
/// assert_eq!((replay.first(), replay.frames()), (2, 1));       // the rest of the first batch
/// # Ok::<(), tickwire::session::BatchError>(())
/// ```
#[derive(Debug)]
pub struct Retention {
    chunks: VecDeque<Chunk>,
    retained: u64,
    next: u64,
    capacity: u64,
    upstream_alive: bool,
    /// The highest `next` set by [`advance`](Self::advance): live sessions'
    /// Heartbeats carry at least this.
    advanced: u64,
    /// Where older frames than these are (a journal), if anywhere.
    cold: Option<Arc<dyn ColdSource>>,
}

impl Retention {
    /// Keeps the last `capacity` frames (at least 1).
    #[must_use]
    pub fn new(capacity: usize) -> Retention {
        Retention {
            chunks: VecDeque::new(),
            retained: 0,
            next: 1,
            capacity: (capacity.max(1)) as u64,
            upstream_alive: true,
            advanced: 0,
            cold: None,
        }
    }

    /// Frames older than the retained ones are read from `cold` (a
    /// journal: see [`cold`](super::cold)), by replays and retransmission
    /// replies; `None` (the default): what the retention dropped is gone.
    pub fn set_cold(&mut self, cold: Option<Arc<dyn ColdSource>>) {
        self.cold = cold;
    }

    /// The cold source behind the retention, if any.
    #[must_use]
    pub fn cold(&self) -> Option<&Arc<dyn ColdSource>> {
        self.cold.as_ref()
    }

    /// The oldest sequence of session `session_id` that can be sent: the
    /// cold source's oldest when it holds older frames than the retention,
    /// else [`oldest`](Self::oldest).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tickwire::session::{cold::VecCold, Batch, Retention};
    /// use tickwire::{encode::QuoteFields, Payload, Sequencer};
    /// let mut seq = Sequencer::new();
    /// let mut all = Vec::new();
    /// let mut retention = Retention::new(2);
    /// for _ in 0..3 {
    ///     let mut bytes = vec![0u8; 2 * 44];
    ///     seq.encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 2], &mut bytes);
    ///     all.extend_from_slice(&bytes);
    ///     retention.push(Arc::new(Batch::new(bytes)?));
    /// }
    /// assert_eq!((retention.oldest(), retention.oldest_held(9)), (5, 5));
    /// retention.set_cold(Some(Arc::new(VecCold::new(all))));
    /// assert_eq!(retention.oldest_held(9), 1); // the journal has them all
    /// # Ok::<(), tickwire::session::BatchError>(())
    /// ```
    #[must_use]
    pub fn oldest_held(&self, session_id: u64) -> u64 {
        let oldest = self.oldest();
        self.cold
            .as_ref()
            .and_then(|c| c.oldest(session_id))
            .map_or(oldest, |cold| cold.min(oldest))
    }

    /// Whether the source of these frames is alive: always for an origin; a
    /// relay clears it while its upstream is lost, and the sessions then
    /// send no idle Heartbeats (protocol section 10.3), so their clients'
    /// liveness reflects the source. True initially.
    #[must_use]
    pub fn upstream_alive(&self) -> bool {
        self.upstream_alive
    }

    /// Sets [`upstream_alive`](Self::upstream_alive).
    pub fn set_upstream_alive(&mut self, alive: bool) {
        self.upstream_alive = alive;
    }

    /// Moves the next live sequence to `next` (if it is higher): the range
    /// before it that was not pushed is a hole that will never be filled
    /// (a relay whose upstream said so, by a Heartbeat or a LoginAccepted
    /// from later than asked). Heartbeats then carry `next`.
    pub fn advance(&mut self, next: u64) {
        self.next = self.next.max(next);
        self.advanced = self.advanced.max(next);
    }

    /// The highest sequence [`advance`](Self::advance) moved to: a live
    /// session's Heartbeat carries at least this (a batch pushed but not
    /// yet handed to the sessions does not count: they will be sent it).
    pub(crate) fn advanced(&self) -> u64 {
        self.advanced
    }

    /// Drops everything and starts a new sequence space whose next live
    /// sequence is `next` (at least 1): a relay whose upstream session changed.
    pub fn reset(&mut self, next: u64) {
        self.chunks.clear();
        self.retained = 0;
        self.next = next.max(1);
        self.advanced = 0;
    }

    /// The sequence the next published frame has (the next live one).
    #[must_use]
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The oldest retained sequence (`next()` when nothing is retained).
    #[must_use]
    pub fn oldest(&self) -> u64 {
        self.chunks.front().map_or(self.next, |c| c.first)
    }

    /// Frames retained.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.retained
    }

    /// Nothing retained.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.retained == 0
    }

    /// Appends a published batch; the oldest frames fall out beyond the
    /// capacity. A batch that starts after [`next`](Self::next) leaves a
    /// hole before it (a relay's missing range); one that starts before it
    /// starts the retention over (a new sequence space is never mixed with
    /// the old).
    pub fn push(&mut self, batch: Arc<Batch>) {
        if batch.first < self.next {
            self.chunks.clear();
            self.retained = 0;
            self.advanced = 0;
        }
        self.retained += batch.frames;
        self.next = batch.end();
        self.chunks.push_back(Chunk {
            first: batch.first,
            start: 0,
            batch,
        });
        while self.retained > self.capacity {
            let excess = self.retained - self.capacity;
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let front_frames = front.batch.end() - front.first;
            if front_frames <= excess {
                self.retained -= front_frames;
                self.chunks.pop_front();
            } else {
                for _ in 0..excess {
                    let rest = front.batch.bytes().get(front.start..).unwrap_or_default();
                    front.start += frame_len(rest);
                }
                front.first += excess;
                self.retained -= excess;
            }
        }
    }

    /// The retained frames from `from` on (clamped to the oldest, and past
    /// a hole to the first frame after it), as one zero-copy [`Segment`] of
    /// one batch holding at most `max_bytes` (but at least one frame);
    /// `None` when nothing from `from` on is retained.
    #[must_use]
    pub fn segment_from(&self, from: u64, max_bytes: usize) -> Option<Segment> {
        let from = from.max(self.oldest());
        if from >= self.next {
            return None;
        }
        let index = self.chunks.partition_point(|c| c.batch.end() <= from);
        let chunk = self.chunks.get(index)?;
        let from = from.max(chunk.first);
        let bytes = chunk.batch.bytes();
        let mut at = chunk.start;
        for _ in chunk.first..from {
            at += frame_len(bytes.get(at..).unwrap_or_default());
        }
        let start = at;
        let mut next = from;
        while next < chunk.batch.end() {
            let len = frame_len(bytes.get(at..).unwrap_or_default());
            if at > start && at - start + len > max_bytes {
                break;
            }
            at += len;
            next += 1;
        }
        Some(Segment {
            batch: Arc::clone(&chunk.batch),
            start,
            end: at.min(bytes.len()),
            first: from,
            frames: next - from,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::encode::{QuoteFields, TradeFields};
    use crate::{Payload, Sequencer};

    fn batch(seq: &mut Sequencer, n: usize) -> Arc<Batch> {
        let msgs: Vec<(u64, Payload)> = (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    (i as u64, Payload::Quote(QuoteFields::default()))
                } else {
                    (i as u64, Payload::Trade(TradeFields::default()))
                }
            })
            .collect();
        let mut bytes = alloc::vec![0u8; n * 44];
        let done = seq.encode_batch(&msgs, &mut bytes);
        bytes.truncate(done.bytes);
        Arc::new(Batch::new(bytes).unwrap())
    }

    fn sequences(segment: &Segment) -> Vec<u64> {
        SliceParser::new(segment.bytes())
            .map(|e| match e {
                Event::Frame(m) => m.sequence(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn keeps_exactly_the_last_frames_and_hands_out_whole_frames() {
        let mut seq = Sequencer::new();
        let mut r = Retention::new(10);
        for _ in 0..5 {
            r.push(batch(&mut seq, 4));
        }
        assert_eq!((r.oldest(), r.next(), r.len()), (11, 21, 10));
        let s = r.segment_from(3, 1 << 20).unwrap();
        assert_eq!(
            sequences(&s),
            [11, 12],
            "clamped to the oldest, rest of its batch"
        );
        let s = r.segment_from(13, 1 << 20).unwrap();
        assert_eq!(sequences(&s), [13, 14, 15, 16]);
        // 44 + 40 bytes fit in 90, the third frame would not.
        let s = r.segment_from(13, 90).unwrap();
        assert_eq!((sequences(&s), s.end()), (alloc::vec![13, 14], 15));
        // At least one frame, whatever the limit.
        assert_eq!(sequences(&r.segment_from(13, 1).unwrap()), [13]);
        assert!(r.segment_from(21, 100).is_none());
        // One batch larger than the capacity is trimmed inside.
        let mut r = Retention::new(3);
        r.push(batch(&mut seq, 8));
        assert_eq!((r.oldest(), r.next()), (26, 29));
        assert_eq!(
            sequences(&r.segment_from(1, 1 << 20).unwrap()),
            [26, 27, 28]
        );
    }

    #[test]
    fn holes_are_kept_and_skipped() {
        let mut seq = Sequencer::new();
        let mut r = Retention::new(6);
        r.push(batch(&mut seq, 2)); // 1, 2
        let _ = batch(&mut seq, 3); // 3..=5 lost
        r.push(batch(&mut seq, 3)); // 6..=8
        assert_eq!((r.oldest(), r.next(), r.len()), (1, 9, 5));
        assert_eq!(sequences(&r.segment_from(2, 1 << 20).unwrap()), [2]);
        assert_eq!(sequences(&r.segment_from(3, 1 << 20).unwrap()), [6, 7, 8]);
        assert_eq!(sequences(&r.segment_from(7, 1 << 20).unwrap()), [7, 8]);
        r.advance(12);
        r.advance(10); // never backwards
        assert_eq!(r.next(), 12);
        assert!(r.segment_from(9, 1 << 20).is_none());
        let _ = batch(&mut seq, 3); // 9..=11 lost
        r.push(batch(&mut seq, 3)); // 12..=14: the capacity drops 1, 2
        assert_eq!((r.oldest(), r.len()), (6, 6));
        assert_eq!(sequences(&r.segment_from(1, 1 << 20).unwrap()), [6, 7, 8]);
        assert_eq!(
            sequences(&r.segment_from(9, 1 << 20).unwrap()),
            [12, 13, 14]
        );
        r.reset(5);
        assert_eq!((r.oldest(), r.next(), r.len()), (5, 5, 0));
    }

    #[test]
    fn a_new_numbering_starts_over() {
        let mut seq = Sequencer::new();
        let mut r = Retention::new(100);
        r.push(batch(&mut seq, 4));
        let mut other = Sequencer::new();
        r.push(batch(&mut other, 2));
        assert_eq!((r.oldest(), r.next()), (1, 3));
    }

    #[test]
    fn batches_are_checked() {
        assert_eq!(Batch::new(Vec::new()), Err(BatchError::Empty));
        let mut seq = Sequencer::new();
        let b = batch(&mut seq, 3);
        let mut bytes = b.bytes().to_vec();
        bytes[30] ^= 1;
        assert_eq!(Batch::new(bytes), Err(BatchError::NotFrames));
        let mut two = batch(&mut seq, 1).bytes().to_vec();
        let _skipped = batch(&mut seq, 1);
        two.extend_from_slice(batch(&mut seq, 1).bytes());
        assert_eq!(Batch::new(two), Err(BatchError::NotConsecutive));
        let mut hb = [0u8; 24];
        crate::encode(&Payload::Heartbeat, 1, 0, &mut hb).unwrap();
        assert_eq!(Batch::new(hb.to_vec()), Err(BatchError::NotData));
    }
}
