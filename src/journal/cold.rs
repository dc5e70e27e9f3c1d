//! [`JournalCold`]: the journal as the server core's cold source
//! ([`session::cold`](crate::session::cold)): replays and retransmission
//! replies read what the in-memory retention no longer holds from here.
//!
//! **Zero-copy replay, and why it is safe.** A connection whose driver
//! sends file ranges itself (the mio server over plain TCP on Linux:
//! `sendfile`) asks with [`ColdReader::read_range`]. `sendfile` does not
//! look at the bytes, and damage in the middle of a journal must stop a
//! replay, never reach a client (protocol section 4.3). So a range is
//! handed out as a [`JournalFile`] range only where every frame of it has
//! already been read and checked (checksum, data frame, sequence order) by
//! a reader of the same `JournalCold` in this process; any other range is
//! read into user space and checked, that checked copy is what the client
//! gets, and its bytes join the verified regions of their segment
//! ([`Verified`]: byte intervals per segment, shared by every reader). The
//! first replay of a region pays the checked read once; every later one
//! goes from the page cache to the socket. Ranges end on frame
//! boundaries either way ([`JournalReader::next_range`]).
//!
//! What this does not see: bytes changed on disk after they were verified
//! (another process writing into a segment, or a medium that returns other
//! bytes without an I/O error). The writer never rewrites what it
//! appended, and a client checks every frame's checksum (it would see
//! discarded bytes, never a wrong frame); the checked path, and a new
//! process, see such damage.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::session::cold::{
    ColdChunk, ColdError, ColdFile, ColdRange, ColdRead, ColdReader, ColdSource,
};

use super::{Journal, JournalError, JournalReader, SyncHandle};

/// A segment file of a journal, as the [`ColdFile`] of the ranges a
/// [`JournalCold`] hands out: the driver that sends a range finds it with
/// [`ColdFile::as_any`] and sends from [`file`](Self::file) (with
/// [`send_range`](super::send_range)).
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-jfile-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use tickwire::journal::{Journal, JournalCold, JournalConfig, JournalFile};
/// use tickwire::session::cold::{ColdRead, ColdSource};
/// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
/// let (mut journal, _) = Journal::open(&dir, JournalConfig::default())?;
/// journal.start_session(9, 1)?;
/// let mut bytes = vec![0u8; 4 * 44];
/// Sequencer::new().encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 4], &mut bytes);
/// journal.append(&Batch::new(bytes)?)?;
/// let cold = JournalCold::new(&journal);
/// let mut buf = Vec::new();
/// // The first read of these frames checks them (a copy) ...
/// let first = cold.open(9, 1)?.read_range(5, 1 << 20, &mut buf)?.unwrap();
/// assert!(matches!(first, ColdRead::Copied(_)));
/// // ... every later one is a range of the segment file.
/// let Some(ColdRead::Range(range, chunk)) = cold.open(9, 1)?.read_range(5, 1 << 20, &mut buf)? else {
///     panic!("a range");
/// };
/// assert_eq!((range.len, chunk.frames), (4 * 44, 4));
/// let file: &JournalFile = range.file.as_any().downcast_ref().unwrap();
/// assert!(file.file().metadata()?.len() >= 4 * 44);
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct JournalFile(Arc<File>);

impl JournalFile {
    /// The segment file, opened read-only.
    #[must_use]
    pub fn file(&self) -> &File {
        &self.0
    }
}

impl ColdFile for JournalFile {
    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
}

/// The regions of a journal's segments that a reader has checked, frame by
/// frame: byte intervals per segment (session, number), merged. Bounded:
/// at most [`MAX_SEGMENTS`] segments (the oldest numbers forgotten first)
/// and [`MAX_INTERVALS`] intervals each (a region not recorded is checked
/// again, nothing worse).
#[derive(Debug, Default)]
struct Verified {
    segments: BTreeMap<(u64, u64), Vec<(u64, u64)>>,
}

/// The most bytes [`ColdReader::read_range`] copies at a time (where the
/// region is not verified yet), however large a range it was asked for.
const COPY_MAX: u64 = 256 << 10;

const MAX_SEGMENTS: usize = 4096;
const MAX_INTERVALS: usize = 64;

impl Verified {
    fn contains(&self, segment: (u64, u64), start: u64, end: u64) -> bool {
        self.segments
            .get(&segment)
            .is_some_and(|v| v.iter().any(|&(a, b)| a <= start && end <= b))
    }

    /// How many bytes from `at` on are verified, if `at` is.
    fn room(&self, segment: (u64, u64), at: u64) -> Option<u64> {
        self.segments
            .get(&segment)?
            .iter()
            .find(|&&(a, b)| a <= at && at < b)
            .map(|&(_, b)| b - at)
    }

    fn insert(&mut self, segment: (u64, u64), start: u64, end: u64) {
        if start >= end {
            return;
        }
        if !self.segments.contains_key(&segment) && self.segments.len() >= MAX_SEGMENTS {
            let oldest = self.segments.keys().next().copied();
            if let Some(oldest) = oldest {
                self.segments.remove(&oldest);
            }
        }
        let v = self.segments.entry(segment).or_default();
        let (mut a, mut b) = (start, end);
        // Merge with every interval it touches.
        v.retain(|&(x, y)| {
            if y < a || b < x {
                true
            } else {
                a = a.min(x);
                b = b.max(y);
                false
            }
        });
        if v.len() >= MAX_INTERVALS {
            return;
        }
        let at = v.partition_point(|&(x, _)| x < a);
        v.insert(at, (a, b));
    }
}

/// Called with each error a reader of a [`JournalCold`] meets (for the log).
pub type ErrorHook = Arc<dyn Fn(&JournalError) + Send + Sync>;

/// The journal in `dir` as a [`ColdSource`]: each replaying connection
/// gets its own [`JournalReader`] (read-only descriptors, no lock), which
/// copies and checks every frame ([`JournalReader::read`]). It serves the
/// session the writer appends to now, from the oldest sequence the journal
/// holds of it; the writer's owner calls [`update`](Self::update) after
/// each append (cheap: two atomics).
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-cold-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use tickwire::journal::{Journal, JournalCold, JournalConfig};
/// use tickwire::session::cold::ColdSource;
/// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
/// let (mut journal, _) = Journal::open(&dir, JournalConfig::default())?;
/// journal.start_session(9, 1)?;
/// let mut bytes = vec![0u8; 4 * 44];
/// Sequencer::new().encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 4], &mut bytes);
/// journal.append(&Batch::new(bytes)?)?;
/// let cold = JournalCold::new(&journal);
/// assert_eq!((cold.oldest(9), cold.oldest(8)), (Some(1), None));
/// let mut reader = cold.open(9, 2)?;
/// let mut buf = Vec::new();
/// let chunk = reader.read(4, 1 << 20, &mut buf)?.unwrap();
/// assert_eq!((chunk.first, chunk.end, chunk.frames), (2, 4, 2));
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JournalCold {
    dir: PathBuf,
    writer: SyncHandle,
    /// The session appended to now (0: none).
    session: AtomicU64,
    /// Its oldest sequence in the journal (0: none).
    oldest: AtomicU64,
    on_error: Option<ErrorHook>,
    verified: Arc<Mutex<Verified>>,
}

impl fmt::Debug for JournalCold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalCold")
            .field("dir", &self.dir)
            .field("session", &self.session.load(Ordering::Relaxed))
            .field("oldest", &self.oldest.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl JournalCold {
    /// The cold source of `journal`'s directory, as the journal is now.
    #[must_use]
    pub fn new(journal: &Journal) -> JournalCold {
        let cold = JournalCold {
            dir: journal.dir().to_path_buf(),
            writer: journal.sync_handle(),
            session: AtomicU64::new(0),
            oldest: AtomicU64::new(0),
            on_error: None,
            verified: Arc::default(),
        };
        cold.update(journal);
        cold
    }

    /// The same, calling `hook` with every error its readers meet.
    #[must_use]
    pub fn with_error_hook(journal: &Journal, hook: ErrorHook) -> JournalCold {
        JournalCold {
            on_error: Some(hook),
            ..JournalCold::new(journal)
        }
    }

    /// After an append, a new session or a roll: the session and its
    /// oldest sequence, as the journal says now.
    pub fn update(&self, journal: &Journal) {
        let session = journal.session_id().unwrap_or(0);
        let oldest = if session == 0 || journal.oldest() >= journal.next_sequence() {
            0 // nothing of it yet
        } else {
            journal.oldest()
        };
        // Called on every append, where neither changes but at a roll, a
        // new session or the first append of one: a load is cheaper than
        // a SeqCst store (a locked instruction). Callers holding `&Journal`
        // at the same time compute the same values (changing it takes
        // `&mut`), so skipping an equal one changes nothing readers see.
        if self.session.load(Ordering::Relaxed) != session {
            self.session.store(session, Ordering::SeqCst);
        }
        if self.oldest.load(Ordering::Relaxed) != oldest {
            self.oldest.store(oldest, Ordering::SeqCst);
        }
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn error(&self, e: &JournalError) -> ColdError {
        if let Some(hook) = &self.on_error {
            hook(e);
        }
        ColdError(e.to_string())
    }
}

impl ColdSource for JournalCold {
    fn oldest(&self, session_id: u64) -> Option<u64> {
        if session_id == 0 || self.session.load(Ordering::SeqCst) != session_id {
            return None;
        }
        match self.oldest.load(Ordering::SeqCst) {
            0 => None,
            oldest => Some(oldest),
        }
    }

    fn open(&self, session_id: u64, from: u64) -> Result<Box<dyn ColdReader>, ColdError> {
        let reader = JournalReader::open_session(&self.dir, session_id, from)
            .map_err(|e| self.error(&e))?
            .bounded_by(&self.writer);
        if from < reader.oldest() {
            // Retention deleted `from`'s segment after the caller chose it
            // (a login accepted at the oldest held, a moment before): the
            // reader would start later, a gap nobody is told about.
            return Err(self.error(&JournalError::Missing {
                sequence: from,
                why: format!(
                    "the journal no longer holds it (retention deleted it; the oldest held is \
                     now {})",
                    reader.oldest()
                ),
            }));
        }
        Ok(Box::new(ColdJournalReader {
            reader,
            on_error: self.on_error.clone(),
            verified: Arc::clone(&self.verified),
        }))
    }
}

/// One connection's [`JournalReader`].
struct ColdJournalReader {
    reader: JournalReader,
    on_error: Option<ErrorHook>,
    verified: Arc<Mutex<Verified>>,
}

impl fmt::Debug for ColdJournalReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColdJournalReader")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl ColdJournalReader {
    /// The journal holds everything the retention does (it is written
    /// first): ending before `limit` is a range missing.
    fn missing(&self, limit: u64) -> JournalError {
        JournalError::Missing {
            sequence: self.reader.position(),
            why: format!(
                "the journal ends before sequence {limit}, which the server still retains"
            ),
        }
    }

    fn error(&self, e: &JournalError) -> ColdError {
        if let Some(hook) = &self.on_error {
            hook(e);
        }
        ColdError(e.to_string())
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, Verified> {
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ColdReader for ColdJournalReader {
    fn read(
        &mut self,
        limit: u64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<ColdChunk>, ColdError> {
        let result = match self.reader.read(limit, max_bytes, buf) {
            Ok(None) if self.reader.position() < limit => Err(self.missing(limit)),
            other => other,
        };
        match result {
            Ok(chunk) => Ok(chunk.map(|c| ColdChunk {
                first: c.first,
                end: c.end,
                frames: c.frames,
            })),
            Err(e) => Err(self.error(&e)),
        }
    }

    /// A range of the segment file where a reader of this source checked
    /// every frame before; otherwise a checked copy, whose region then
    /// counts as checked (see the [module docs](self)).
    fn read_range(
        &mut self,
        limit: u64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<ColdRead>, ColdError> {
        // Within a verified region, a range that ends at its end at most
        // (a frame boundary: regions are unions of ranges), so that a
        // region verified in part is sent in part with sendfile.
        let session = self.reader.session_id();
        let verified = Arc::clone(&self.verified);
        let cap = move |segment: u64, at: u64| {
            let verified = verified.lock().unwrap_or_else(PoisonError::into_inner);
            // Not verified there: a checked copy, of at most COPY_MAX.
            Some(verified.room((session, segment), at).unwrap_or(COPY_MAX))
        };
        let range = match self.reader.next_range_capped(limit, max_bytes, &cap) {
            Ok(None) if self.reader.position() < limit => Err(self.missing(limit)),
            other => other,
        };
        let range = match range {
            Ok(Some(range)) => range,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.error(&e)),
        };
        let segment = (self.reader.session_id(), self.reader.segment());
        let (start, end) = (range.offset, range.offset.saturating_add(range.len as u64));
        let chunk = |frames| ColdChunk {
            first: range.first,
            end: range.end,
            frames,
        };
        if self.verified().contains(segment, start, end) {
            // Checked before. Its frames are not counted here (that
            // would read them): the sequences it covers stand for them (a
            // relay's holes inside it, if any, counted as frames).
            let frames = range.end.saturating_sub(range.first);
            let file = Arc::new(JournalFile(Arc::clone(&range.file)));
            return Ok(Some(ColdRead::Range(
                ColdRange {
                    file,
                    offset: range.offset,
                    len: range.len,
                },
                chunk(frames),
            )));
        }
        match self.reader.check_range(&range, buf) {
            Ok(c) => {
                self.verified().insert(segment, start, end);
                Ok(Some(ColdRead::Copied(chunk(c.frames))))
            }
            Err(e) => Err(self.error(&e)),
        }
    }
}
