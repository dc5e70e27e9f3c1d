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
use alloc::sync::Arc;
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

    /// A reader of session `session_id`, from `from`.
    ///
    /// # Errors
    /// The source cannot be read from there, or no longer holds `from`
    /// (older than its oldest: deleted since the caller chose it). Never a
    /// reader that starts later than `from`: its frames would be a gap
    /// that no client is told about.
    fn open(&self, session_id: u64, from: u64) -> Result<Box<dyn ColdReader>, ColdError>;
}

/// A file of a cold source (a journal segment), opaque to the core: a
/// [`ColdRange`] names bytes of it that a driver sends without copying them
/// through user space (the mio server: `sendfile` from the page cache to
/// the socket). The driver finds the concrete type with
/// [`as_any`](Self::as_any) (the crate's journal:
/// `tickwire::journal::JournalFile`).
///
/// ```
/// use tickwire::session::cold::ColdFile;
/// #[derive(Debug)]
/// struct Bytes(Vec<u8>);
/// impl ColdFile for Bytes {
///     fn as_any(&self) -> &dyn core::any::Any {
///         self
///     }
/// }
/// let file: &dyn ColdFile = &Bytes(vec![1, 2, 3]);
/// assert_eq!(file.as_any().downcast_ref::<Bytes>().map(|b| b.0.len()), Some(3));
/// ```
pub trait ColdFile: Send + Sync + fmt::Debug + 'static {
    /// The concrete type, for the driver that sends it.
    fn as_any(&self) -> &dyn core::any::Any;
}

/// Whole data frames of a [`ColdFile`]: `len` bytes at `offset`, starting
/// and ending on frame boundaries, every frame already checked by the
/// source (see [`ColdReader::read_range`]).
///
/// ```
/// use std::sync::Arc;
/// use tickwire::session::cold::{ColdRange, VecCold};
/// let range = ColdRange { file: VecCold::new(Vec::new()).file(), offset: 44, len: 88 };
/// assert_eq!((range.offset, range.len), (44, 88));
/// ```
#[derive(Clone, Debug)]
pub struct ColdRange {
    /// The file (shared: it stays open while the range is queued, even if
    /// the source deletes it meanwhile).
    pub file: Arc<dyn ColdFile>,
    /// Where the bytes start (a frame boundary).
    pub offset: u64,
    /// How many bytes (whole frames).
    pub len: usize,
}

/// What [`ColdReader::read_range`] produced.
///
/// ```
/// use tickwire::session::cold::{ColdChunk, ColdRead};
/// let read = ColdRead::Copied(ColdChunk { first: 1, end: 3, frames: 2 });
/// assert_eq!(read.chunk().end, 3);
/// ```
#[derive(Clone, Debug)]
pub enum ColdRead {
    /// The frames were copied into the caller's buffer and checked.
    Copied(ColdChunk),
    /// The frames are a range of a file, to be sent as they are.
    Range(ColdRange, ColdChunk),
}

impl ColdRead {
    /// The frames read, either way.
    #[must_use]
    pub fn chunk(&self) -> ColdChunk {
        match self {
            ColdRead::Copied(chunk) | ColdRead::Range(_, chunk) => *chunk,
        }
    }
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

    /// Like [`read`](Self::read), for a connection whose driver can send
    /// file ranges itself (`sendfile`): the reader may hand out a
    /// [`ColdRange`] instead of copying, but only of frames whose checksums
    /// it has verified (a source that cannot vouch for its bytes copies and
    /// checks them, as `read` does). A range's [`ColdChunk::frames`] may
    /// count the sequences it covers rather than its frames (a relay's
    /// holes inside it counted). The default copies.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    fn read_range(
        &mut self,
        limit: u64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<ColdRead>, ColdError> {
        Ok(self.read(limit, max_bytes, buf)?.map(ColdRead::Copied))
    }
}

/// A [`ColdSource`] over frames in memory, for tests and examples: the
/// data frames of one session (any session id is served them). Made
/// [`with_ranges`](Self::with_ranges), its readers hand out
/// [`ColdRange`]s of a [`VecFile`] to [`read_range`](ColdReader::read_range)
/// (what a journal does on Linux), which a test driver copies from.
///
/// ```
/// use tickwire::session::cold::{ColdRead, ColdSource, VecCold, VecFile};
/// use tickwire::{encode::QuoteFields, Payload, Sequencer};
/// let mut bytes = vec![0u8; 5 * 44];
/// Sequencer::new().encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 5], &mut bytes);
/// let cold = VecCold::new(bytes);
/// assert_eq!(cold.oldest(7), Some(1));
/// let mut reader = cold.open(7, 2)?;
/// let mut buf = Vec::new();
/// let chunk = reader.read(4, 1 << 20, &mut buf)?.unwrap();
/// assert_eq!((chunk.first, chunk.end, chunk.frames, buf.len()), (2, 4, 2, 88));
/// // With ranges: frames 4 and 5 as 88 bytes at offset 132 of the file.
/// let mut reader = cold.with_ranges().open(7, 4)?;
/// let Some(ColdRead::Range(range, chunk)) = reader.read_range(6, 1 << 20, &mut buf)? else {
///     panic!("a range");
/// };
/// assert_eq!((range.offset, range.len, chunk.first, chunk.end), (132, 88, 4, 6));
/// let file = range.file.as_any().downcast_ref::<VecFile>().unwrap();
/// assert_eq!(file.bytes().len(), 220);
/// # Ok::<(), tickwire::session::cold::ColdError>(())
/// ```
#[derive(Clone, Debug)]
pub struct VecCold {
    bytes: Arc<VecFile>,
    /// (sequence, offset, length) of each data frame.
    frames: Arc<Vec<(u64, usize, usize)>>,
    ranges: bool,
}

/// The bytes of a [`VecCold`], as the [`ColdFile`] of its ranges.
///
/// ```
/// use tickwire::session::cold::{ColdFile, VecCold, VecFile};
/// let file = VecCold::new(vec![0u8; 3]).file();
/// assert_eq!(file.as_any().downcast_ref::<VecFile>().map(|f| f.bytes().len()), Some(3));
/// ```
#[derive(Debug)]
pub struct VecFile(Vec<u8>);

impl VecFile {
    /// All of it.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl ColdFile for VecFile {
    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
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
            bytes: Arc::new(VecFile(bytes)),
            frames: Arc::new(frames),
            ranges: false,
        }
    }

    /// The same source, whose readers hand out ranges to
    /// [`read_range`](ColdReader::read_range).
    #[must_use]
    pub fn with_ranges(&self) -> VecCold {
        VecCold {
            ranges: true,
            ..self.clone()
        }
    }

    /// Its bytes, as a file.
    #[must_use]
    pub fn file(&self) -> Arc<dyn ColdFile> {
        Arc::clone(&self.bytes) as Arc<dyn ColdFile>
    }
}

impl ColdSource for VecCold {
    fn oldest(&self, _session_id: u64) -> Option<u64> {
        self.frames.first().map(|&(s, _, _)| s)
    }

    fn open(&self, _session_id: u64, from: u64) -> Result<Box<dyn ColdReader>, ColdError> {
        let oldest = self.frames.first().map_or(from, |&(s, _, _)| s);
        if from < oldest {
            return Err(ColdError(alloc::format!(
                "sequence {from} is no longer held (the oldest is {oldest})"
            )));
        }
        Ok(Box::new(VecReader {
            cold: self.clone(),
            position: from,
        }))
    }
}

#[derive(Debug)]
struct VecReader {
    cold: VecCold,
    position: u64,
}

impl VecReader {
    /// The next frames before `limit`, at most `max_bytes` (at least one):
    /// their byte span, and the chunk; `None` when there are none.
    fn next(&mut self, limit: u64, max_bytes: usize) -> Option<(usize, usize, ColdChunk)> {
        let frames = &self.cold.frames;
        let start = frames.partition_point(|&(s, _, _)| s < self.position);
        let first = self.position;
        let (mut end, mut count) = (first, 0);
        let (mut from, mut len) = (0, 0);
        for &(sequence, offset, frame_len) in frames.iter().skip(start) {
            if sequence >= limit || (count > 0 && len + frame_len > max_bytes) {
                break;
            }
            if count == 0 {
                from = offset;
            }
            if offset != from + len {
                break; // not adjacent: the next read goes on from there
            }
            len += frame_len;
            end = sequence + 1;
            count += 1;
        }
        if count == 0 {
            self.position = self.position.max(limit);
            return None;
        }
        self.position = end;
        Some((
            from,
            len,
            ColdChunk {
                first,
                end,
                frames: count,
            },
        ))
    }
}

impl ColdReader for VecReader {
    fn read(
        &mut self,
        limit: u64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<ColdChunk>, ColdError> {
        buf.clear();
        let Some((from, len, chunk)) = self.next(limit, max_bytes) else {
            return Ok(None);
        };
        buf.extend_from_slice(self.cold.bytes.0.get(from..from + len).unwrap_or_default());
        Ok(Some(chunk))
    }

    fn read_range(
        &mut self,
        limit: u64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<ColdRead>, ColdError> {
        if !self.cold.ranges {
            return Ok(self.read(limit, max_bytes, buf)?.map(ColdRead::Copied));
        }
        Ok(self.next(limit, max_bytes).map(|(from, len, chunk)| {
            let range = ColdRange {
                file: self.cold.file(),
                offset: from as u64,
                len,
            };
            ColdRead::Range(range, chunk)
        }))
    }
}
