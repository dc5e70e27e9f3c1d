//! [`JournalReader`]: replay from any sequence the journal holds, as byte
//! ranges on frame boundaries (for `sendfile`) or checked copies.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::parse::{DiscardReason, Event, SliceParser};
use crate::wire::MAX_DATA_FRAME_LEN;

use super::layout::{
    self, read_at, Entry, EntryKind, Header, Listed, Manifest, ENTRY_LEN, HEADER_LEN,
};
use super::sync::Shared;
use super::tail::discard_why;
use super::{JournalError, SyncHandle};

/// The most bytes read into user space at a time when a reader must look
/// at frames (the edges of a range, between index entries).
const CHUNK: usize = 256 << 10;

/// Whole frames of one segment file: `len` bytes at `offset`, holding
/// every frame the journal has with `first <= sequence < end`, in order.
/// Send it with [`send_range`] (`sendfile`), or read it yourself.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-{}-{}", "filerange", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use tickwire::journal::{Journal, JournalConfig};
/// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
/// let batch = |first: u64, n: usize| {
///     let mut bytes = vec![0u8; n * 44];
///     Sequencer::starting_at(first)
///         .encode_batch(&vec![(0, Payload::Quote(QuoteFields::default())); n], &mut bytes);
///     Batch::new(bytes)
/// };
/// let (mut journal, _) = Journal::open(&dir, JournalConfig::default())?;
/// journal.start_session(1, 1)?;
/// journal.append(&batch(1, 10)?)?;
/// let mut reader = journal.reader(4)?;
/// let range = reader.next_range(journal.durable_end(), 1 << 20)?.unwrap();
/// assert_eq!((range.offset, range.len, range.first, range.end), (3 * 44, 7 * 44, 4, 11));
/// let mut bytes = vec![0u8; range.len];
/// # #[cfg(unix)]
/// std::os::unix::fs::FileExt::read_exact_at(&*range.file, &mut bytes, range.offset)?;
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct FileRange {
    /// The segment file, opened read-only.
    pub file: Arc<File>,
    /// Where the range starts (a frame boundary).
    pub offset: u64,
    /// How many bytes (whole frames).
    pub len: usize,
    /// The reader's position when the range was taken: no frame of the
    /// session between it and the range's first frame exists.
    pub first: u64,
    /// The sequence after the range: the reader's next position.
    pub end: u64,
}

/// What [`JournalReader::read`] copied into the caller's buffer: whole,
/// checked frames with `first <= sequence < end`.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-{}-{}", "chunk", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use tickwire::journal::{Journal, JournalConfig};
/// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
/// let batch = |first: u64, n: usize| {
///     let mut bytes = vec![0u8; n * 44];
///     Sequencer::starting_at(first)
///         .encode_batch(&vec![(0, Payload::Quote(QuoteFields::default())); n], &mut bytes);
///     Batch::new(bytes)
/// };
/// let (mut journal, _) = Journal::open(&dir, JournalConfig::default())?;
/// journal.start_session(1, 1)?;
/// journal.append(&batch(1, 10)?)?;
/// let mut reader = journal.reader(1)?;
/// let mut buf = Vec::new();
/// // Up to the limit only (a durable end of 6, say).
/// let chunk = reader.read(6, 1 << 20, &mut buf)?.unwrap();
/// assert_eq!((chunk.first, chunk.end, chunk.frames, buf.len()), (1, 6, 5, 220));
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Chunk {
    /// The reader's position before the chunk.
    pub first: u64,
    /// The sequence after the chunk.
    pub end: u64,
    /// Frames in it.
    pub frames: u64,
}

/// The segment a reader is in.
#[derive(Debug)]
struct Cursor {
    number: u64,
    path: PathBuf,
    index_path: PathBuf,
    file: Arc<File>,
    idx: File,
    entries: Vec<Entry>,
    idx_read: u64,
    offset: u64,
    /// No frame at or after `offset` has a sequence below this.
    seq: u64,
}

impl Cursor {
    fn sealed(&self) -> Option<Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.kind == EntryKind::Seal)
            .copied()
    }

    /// Reads the entries the writer appended since the last look (a torn
    /// or half-written last entry is left for later).
    fn refresh(&mut self) -> io::Result<()> {
        let mut buf = [0u8; ENTRY_LEN * 64];
        loop {
            let got = read_at(&self.idx, &mut buf, self.idx_read)?;
            let mut used = 0;
            while let Some(e) = buf.get(used..got).and_then(Entry::decode) {
                self.entries.push(e);
                used += ENTRY_LEN;
            }
            self.idx_read += used as u64;
            if got < buf.len() || used < got {
                return Ok(());
            }
        }
    }
}

/// How a walk over frames ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stop {
    /// The next frame has a sequence at or past the limit.
    Limit,
    /// The byte budget is used.
    Budget,
    /// The end of the file, on a frame boundary.
    End,
    /// The end of the file inside a frame.
    Torn,
    /// Bytes that are not frames, or frames out of order.
    Damage { offset: u64, why: String },
}

#[derive(Clone, Debug)]
struct Walk {
    bytes: u64,
    frames: u64,
    /// No frame after the walk has a sequence below this.
    end: u64,
    stop: Stop,
}

/// A reader of one session of a journal, from any sequence it holds.
/// It opens the segments read-only and takes no lock: it runs while the
/// writer appends (give it a `limit`: [`SyncHandle::durable_end`](super::SyncHandle::durable_end)
/// in the same process), in another process, or on a copy.
///
/// [`next_range`](Self::next_range) hands out byte ranges that start and end
/// on frame boundaries, found from the index without reading the frames
/// in between, for [`send_range`] (`sendfile` from the page cache to a
/// socket: the frames are not checked on the way, the receiver checks
/// every checksum); [`read`](Self::read) copies a range into a buffer and
/// checks every frame (the path for TLS, and for other systems).
///
/// A reader never serves a silent gap: damage in the middle (bytes that are
/// not frames, a segment shorter than its index or its seal, a segment
/// missing between two others) is a [`JournalError::Damaged`] or
/// [`JournalError::Missing`], and the reader stays stopped there. A segment
/// deleted while the reader is in it is read to its end (the open
/// descriptor keeps its bytes); a segment it still needs that was deleted
/// is [`JournalError::Missing`].
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-reader-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use tickwire::journal::{Journal, JournalConfig, JournalReader};
/// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
/// let (mut journal, _) = Journal::open(&dir, JournalConfig::default())?;
/// journal.start_session(5, 1)?;
/// let mut seq = Sequencer::new();
/// for _ in 0..10 {
///     let mut bytes = vec![0u8; 100 * 44];
///     seq.encode_batch(&vec![(0, Payload::Quote(QuoteFields::default())); 100], &mut bytes);
///     journal.append(&Batch::new(bytes)?)?;
/// }
/// let mut reader = JournalReader::open(&dir, 250)?;
/// assert_eq!((reader.session_id(), reader.oldest(), reader.position()), (5, 1, 250));
/// let mut buf = Vec::new();
/// let chunk = reader.read(journal.durable_end(), 1 << 20, &mut buf)?.unwrap();
/// assert_eq!((chunk.first, chunk.end, chunk.frames), (250, 1001, 751));
/// assert_eq!(buf.len(), 751 * 44);
/// assert!(reader.read(journal.durable_end(), 1 << 20, &mut buf)?.is_none()); // caught up
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct JournalReader {
    dir: PathBuf,
    journal_id: [u8; 16],
    session_id: u64,
    oldest: u64,
    position: u64,
    cur: Cursor,
    failed: Option<(PathBuf, u64, String)>,
    scratch: Vec<u8>,
    /// The writer of this process, if any: it says where the segment it
    /// writes in place ends (see [`Shared::readable`]).
    writer: Option<Arc<Shared>>,
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest, JournalError> {
    match std::fs::metadata(dir) {
        Err(e) => return Err(JournalError::io("open", dir, e)),
        Ok(m) if !m.is_dir() => {
            return Err(JournalError::Foreign {
                path: dir.to_path_buf(),
                why: "not a journal (not a directory)".into(),
            })
        }
        Ok(_) => {}
    }
    match Manifest::read(dir) {
        Err(e) => Err(JournalError::io("read", dir.join(layout::MANIFEST), e)),
        Ok(None) => Err(JournalError::Foreign {
            path: dir.to_path_buf(),
            why: format!("not a journal (no {} manifest)", layout::MANIFEST),
        }),
        Ok(Some(Err(why))) => Err(JournalError::Foreign {
            path: dir.join(layout::MANIFEST),
            why: format!("not a tickwire journal manifest ({why})"),
        }),
        Ok(Some(Ok(m))) => Ok(m),
    }
}

/// The segments of one session with both their files, in order.
fn session_segments(dir: &Path, session_id: u64) -> Result<Vec<Listed>, JournalError> {
    Ok(layout::list(dir)
        .map_err(|e| JournalError::io("list", dir, e))?
        .into_iter()
        .filter(|l| l.session_id == session_id && l.segment.is_some() && l.index.is_some())
        .collect())
}

impl JournalReader {
    /// A reader of the newest session in `dir`, from `from` (clamped to the
    /// oldest sequence held; 0 is the oldest).
    ///
    /// # Errors
    /// [`JournalError::Foreign`] (not a journal), [`JournalError::Missing`]
    /// (no segment), [`JournalError::Io`].
    pub fn open(dir: impl AsRef<Path>, from: u64) -> Result<JournalReader, JournalError> {
        let dir = dir.as_ref();
        read_manifest(dir)?;
        let listed = layout::list(dir).map_err(|e| JournalError::io("list", dir, e))?;
        let session = listed
            .iter()
            .rev()
            .find(|l| l.segment.is_some() && l.index.is_some())
            .map(|l| l.session_id)
            .ok_or_else(|| JournalError::Missing {
                sequence: from,
                why: "the journal holds no segment".into(),
            })?;
        JournalReader::open_session(dir, session, from)
    }

    /// A reader of session `session_id` in `dir`, from `from` (clamped to
    /// the oldest sequence held; 0 is the oldest).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_session(
        dir: impl AsRef<Path>,
        session_id: u64,
        from: u64,
    ) -> Result<JournalReader, JournalError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = read_manifest(&dir)?;
        let segments = session_segments(&dir, session_id)?;
        let oldest = segments
            .first()
            .map(|l| l.first)
            .ok_or_else(|| JournalError::Missing {
                sequence: from,
                why: format!("the journal holds no segment of session {session_id:016x}"),
            })?;
        let position = from.max(oldest);
        let start = segments
            .iter()
            .rev()
            .find(|l| l.first <= position)
            .or(segments.first())
            .ok_or(JournalError::NoSession)?;
        let cur = open_cursor(start, &manifest.journal_id, position)?;
        Ok(JournalReader {
            dir,
            journal_id: manifest.journal_id,
            session_id,
            oldest,
            position,
            cur,
            failed: None,
            scratch: Vec::new(),
            writer: None,
        })
    }

    /// Reads no further than `writer` has committed (a segment written in
    /// place ends in reserved zeros and the batch being encoded).
    pub(crate) fn bounded_by(mut self, writer: &SyncHandle) -> JournalReader {
        self.writer = Some(Arc::clone(&writer.shared));
        self
    }

    /// The session read.
    #[must_use]
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The oldest sequence the journal held of the session when the reader
    /// was opened.
    #[must_use]
    pub fn oldest(&self) -> u64 {
        self.oldest
    }

    /// The next sequence the reader hands out (or a later one: a hole).
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next range of frames from [`position`](Self::position), before
    /// `limit` (exclusive: the durable end), of at most `max_bytes` (at
    /// least one frame); `None` when there is nothing more before `limit`
    /// yet. The reader moves past the range: send all of it.
    ///
    /// Between index entries the range is found from the index alone; the
    /// frames at its edges are read and parsed.
    ///
    /// # Errors
    /// [`JournalError::Damaged`] or [`JournalError::Missing`] (the reader
    /// stays stopped), [`JournalError::Io`].
    pub fn next_range(
        &mut self,
        limit: u64,
        max_bytes: usize,
    ) -> Result<Option<FileRange>, JournalError> {
        self.next_range_capped(limit, max_bytes, &|_, _| None)
    }

    /// [`next_range`](Self::next_range), of at most `cap(segment, offset)`
    /// bytes where that says (at least one frame), for the segment and
    /// the offset the range starts at.
    pub(crate) fn next_range_capped(
        &mut self,
        limit: u64,
        max_bytes: usize,
        cap: &dyn Fn(u64, u64) -> Option<u64>,
    ) -> Result<Option<FileRange>, JournalError> {
        if let Some((path, offset, why)) = &self.failed {
            return Err(JournalError::Damaged {
                path: path.clone(),
                offset: *offset,
                why: why.clone(),
            });
        }
        let floor = MAX_DATA_FRAME_LEN as u64;
        let max_bytes = max_bytes.max(MAX_DATA_FRAME_LEN) as u64;
        loop {
            if self.position >= limit {
                return Ok(None);
            }
            if self.cur.seq < self.position {
                let walk = self.walk(self.position, u64::MAX)?;
                self.cur.offset += walk.bytes;
                self.cur.seq = if walk.stop == Stop::Limit {
                    self.position
                } else {
                    walk.end
                };
                match walk.stop {
                    Stop::Limit => {}
                    Stop::End | Stop::Torn | Stop::Budget => {
                        if self.next_segment(walk.stop == Stop::Torn)? {
                            continue;
                        }
                        return Ok(None);
                    }
                    Stop::Damage { offset, why } => return Err(self.fail(offset, why)),
                }
            }
            self.cur
                .refresh()
                .map_err(|e| JournalError::io("read", &self.cur.index_path, e))?;
            let (offset, seq) = (self.cur.offset, self.cur.seq);
            let max_bytes =
                cap(self.cur.number, offset).map_or(max_bytes, |c| max_bytes.min(c.max(floor)));
            let bulk = self
                .cur
                .entries
                .iter()
                .rev()
                .find(|e| {
                    e.offset > offset
                        && e.offset - offset <= max_bytes
                        && e.sequence <= limit
                        && e.sequence >= seq
                })
                .copied();
            if let Some(e) = bulk {
                let file_len = self.file_len()?;
                if e.offset > file_len {
                    let why = format!(
                        "the segment is {file_len} bytes, its index has a frame boundary at {}",
                        e.offset
                    );
                    return Err(self.fail(file_len, why));
                }
                return Ok(Some(self.take(e.offset - offset, e.sequence)));
            }
            let walk = self.walk(limit, max_bytes)?;
            if walk.frames > 0 {
                return Ok(Some(self.take(walk.bytes, walk.end)));
            }
            match walk.stop {
                Stop::Limit => {
                    self.cur.seq = self.cur.seq.max(limit);
                    self.position = limit;
                    return Ok(None);
                }
                Stop::End | Stop::Torn | Stop::Budget => {
                    if self.next_segment(walk.stop == Stop::Torn)? {
                        continue;
                    }
                    return Ok(None);
                }
                Stop::Damage { offset, why } => return Err(self.fail(offset, why)),
            }
        }
    }

    /// Like [`next_range`](Self::next_range), but the bytes are copied into
    /// `buf` (replacing its content) and every frame is checked: its
    /// checksum, that it is a data frame, and its sequence order.
    ///
    /// # Errors
    /// As [`next_range`](Self::next_range); a frame that does not check is
    /// [`JournalError::Damaged`] and stops the reader.
    pub fn read(
        &mut self,
        limit: u64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Chunk>, JournalError> {
        let Some(range) = self.next_range(limit, max_bytes)? else {
            return Ok(None);
        };
        self.check_range(&range, buf).map(Some)
    }

    /// The segment the last range came from (its number in the journal).
    pub(crate) fn segment(&self) -> u64 {
        self.cur.number
    }

    /// Copies `range` (the last one [`next_range`](Self::next_range)
    /// handed out) into `buf` and checks every frame, as
    /// [`read`](Self::read) does.
    pub(crate) fn check_range(
        &mut self,
        range: &FileRange,
        buf: &mut Vec<u8>,
    ) -> Result<Chunk, JournalError> {
        buf.clear();
        buf.resize(range.len, 0);
        let got = read_at(&range.file, buf, range.offset)
            .map_err(|e| JournalError::io("read", &self.cur.path, e))?;
        if got < range.len {
            buf.truncate(got);
            let why = format!(
                "the segment ends at {}, inside a range its index vouches for",
                range.offset + got as u64
            );
            return Err(self.fail(range.offset + got as u64, why));
        }
        let (mut at, mut next, mut frames) = (0u64, range.first, 0u64);
        for event in SliceParser::new(buf) {
            let why = match event {
                Event::Frame(m) if m.msg_type().is_data() && m.sequence() >= next => {
                    if m.sequence() >= range.end {
                        format!(
                            "sequence {} past the range's end {}",
                            m.sequence(),
                            range.end
                        )
                    } else {
                        at += m.len() as u64;
                        next = m.sequence() + 1;
                        frames += 1;
                        continue;
                    }
                }
                Event::Gap(_) => continue,
                Event::Discarded(d) => discard_why(d.reason, d.bytes),
                Event::Frame(m) if !m.msg_type().is_data() => {
                    format!("a {:?} control frame", m.msg_type())
                }
                Event::Frame(m) | Event::Duplicate(m) => {
                    format!("sequence {} after {}", m.sequence(), next.saturating_sub(1))
                }
                _ => "an unexpected event".into(),
            };
            return Err(self.fail(range.offset + at, why));
        }
        Ok(Chunk {
            first: range.first,
            end: range.end,
            frames,
        })
    }

    fn take(&mut self, len: u64, end: u64) -> FileRange {
        let range = FileRange {
            file: Arc::clone(&self.cur.file),
            offset: self.cur.offset,
            len: usize::try_from(len).unwrap_or(usize::MAX),
            first: self.position,
            end,
        };
        self.cur.offset += len;
        self.cur.seq = end;
        self.position = end;
        range
    }

    fn fail(&mut self, offset: u64, why: String) -> JournalError {
        let path = self.cur.path.clone();
        self.failed = Some((path.clone(), offset, why.clone()));
        JournalError::Damaged { path, offset, why }
    }

    fn file_len(&self) -> Result<u64, JournalError> {
        let len = self
            .cur
            .file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| JournalError::io("read", &self.cur.path, e))?;
        Ok(match &self.writer {
            Some(w) => w.readable(self.cur.number, len),
            None => len,
        })
    }

    /// Walks the frames from the cursor, before `limit`, within `budget`
    /// bytes (without moving the cursor).
    fn walk(&mut self, limit: u64, budget: u64) -> Result<Walk, JournalError> {
        let file_len = self.file_len()?;
        let mut walk = Walk {
            bytes: 0,
            frames: 0,
            end: self.cur.seq,
            stop: Stop::End,
        };
        loop {
            let at = self.cur.offset + walk.bytes;
            let left = budget - walk.bytes;
            if left == 0 {
                walk.stop = Stop::Budget;
                return Ok(walk);
            }
            let want = usize::try_from(left.min(file_len.saturating_sub(at)))
                .unwrap_or(CHUNK)
                .min(CHUNK);
            if want == 0 {
                walk.stop = Stop::End;
                return Ok(walk);
            }
            self.scratch.resize(CHUNK, 0);
            let got = read_at(
                &self.cur.file,
                self.scratch.get_mut(..want).unwrap_or_default(),
                at,
            )
            .map_err(|e| JournalError::io("read", &self.cur.path, e))?;
            if got == 0 {
                walk.stop = Stop::End;
                return Ok(walk);
            }
            let data = self.scratch.get(..got).unwrap_or_default();
            let mut used = 0u64;
            let mut partial = false;
            for event in SliceParser::new(data) {
                match event {
                    Event::Frame(m) if m.msg_type().is_data() && m.sequence() >= walk.end => {
                        if m.sequence() >= limit {
                            walk.bytes += used;
                            walk.stop = Stop::Limit;
                            return Ok(walk);
                        }
                        used += m.len() as u64;
                        walk.frames += 1;
                        walk.end = m.sequence() + 1;
                    }
                    Event::Gap(_) => {}
                    Event::Discarded(d)
                        if d.reason == DiscardReason::Truncated && used + d.bytes == got as u64 =>
                    {
                        partial = true;
                    }
                    Event::Discarded(_)
                        if usize::try_from(used).ok().and_then(|u| data.get(u)) == Some(&0) =>
                    {
                        // A zero byte where a frame starts: the end of what
                        // was written of a segment written in place (its
                        // reserved blocks), read without its writer's mark.
                        walk.bytes += used;
                        walk.stop = Stop::End;
                        return Ok(walk);
                    }
                    other => {
                        let why = match other {
                            Event::Discarded(d) => discard_why(d.reason, d.bytes),
                            Event::Frame(m) if !m.msg_type().is_data() => {
                                format!("a {:?} control frame", m.msg_type())
                            }
                            Event::Frame(m) | Event::Duplicate(m) => format!(
                                "sequence {} after {}",
                                m.sequence(),
                                walk.end.saturating_sub(1)
                            ),
                            _ => "an unexpected event".into(),
                        };
                        walk.bytes += used;
                        walk.stop = Stop::Damage {
                            offset: at + used,
                            why,
                        };
                        return Ok(walk);
                    }
                }
            }
            walk.bytes += used;
            if partial {
                // A frame cut by the end of the file, or by the chunk or
                // the budget.
                walk.stop = if at + got as u64 >= file_len {
                    Stop::Torn
                } else {
                    Stop::Budget
                };
                if used == 0 || walk.stop == Stop::Torn {
                    return Ok(walk);
                }
            }
        }
    }

    /// Moves to the session's next segment: `false` when there is none
    /// (yet). `torn`: the segment ended inside a frame.
    fn next_segment(&mut self, torn: bool) -> Result<bool, JournalError> {
        if self
            .writer
            .as_ref()
            .is_some_and(|w| w.writing(self.cur.number))
        {
            // The writer of this process is still on this segment: a next
            // one may exist (created at a roll, written behind) but this
            // one is not finished.
            return Ok(false);
        }
        self.cur
            .refresh()
            .map_err(|e| JournalError::io("read", &self.cur.index_path, e))?;
        let file_len = self.file_len()?;
        if let Some(seal) = self.cur.sealed() {
            if torn || seal.offset != file_len || self.cur.offset != file_len {
                let why = format!(
                    "the sealed segment is {file_len} bytes, its seal says {} (read to {})",
                    seal.offset, self.cur.offset
                );
                return Err(self.fail(self.cur.offset, why));
            }
            self.cur.seq = self.cur.seq.max(seal.sequence);
        }
        let segments = session_segments(&self.dir, self.session_id)?;
        let Some(next) = segments.iter().find(|l| l.number > self.cur.number) else {
            return Ok(false);
        };
        if torn || self.cur.offset != file_len {
            let why = "the segment ends inside a frame, and another follows it".to_string();
            return Err(self.fail(self.cur.offset, why));
        }
        if next.number != self.cur.number + 1 || next.first != self.cur.seq {
            let err = JournalError::Missing {
                sequence: self.cur.seq,
                why: format!(
                    "segment {} ends before sequence {}, and the next segment held is number {} \
                     from sequence {}: the segments between were deleted (retention, or by hand)",
                    self.cur.number, self.cur.seq, next.number, next.first
                ),
            };
            self.failed = Some((self.cur.path.clone(), self.cur.offset, err.to_string()));
            return Err(err);
        }
        let cur = open_cursor(next, &self.journal_id, self.position)?;
        self.cur = cur;
        Ok(true)
    }
}

/// Opens a segment and positions at the last index entry at or before
/// `position` (or the segment's start).
fn open_cursor(l: &Listed, journal_id: &[u8; 16], position: u64) -> Result<Cursor, JournalError> {
    let (Some(path), Some(index_path)) = (l.segment.clone(), l.index.clone()) else {
        return Err(JournalError::Missing {
            sequence: position,
            why: format!("segment {} has lost a file", l.number),
        });
    };
    let gone = |e: io::Error, path: &Path| {
        if e.kind() == io::ErrorKind::NotFound {
            JournalError::Missing {
                sequence: position.max(l.first),
                why: format!("{} was deleted", path.display()),
            }
        } else {
            JournalError::io("open", path, e)
        }
    };
    let idx = File::open(&index_path).map_err(|e| gone(e, &index_path))?;
    let file = File::open(&path).map_err(|e| gone(e, &path))?;
    let mut head = [0u8; HEADER_LEN];
    let got = read_at(&idx, &mut head, 0).map_err(|e| JournalError::io("read", &index_path, e))?;
    let header = Header::decode(head.get(..got).unwrap_or_default()).map_err(|why| {
        JournalError::Damaged {
            path: index_path.clone(),
            offset: 0,
            why: format!("index header unreadable ({why:?})"),
        }
    })?;
    if header.journal_id != *journal_id {
        return Err(JournalError::Foreign {
            path: index_path,
            why: "it belongs to another journal".into(),
        });
    }
    let mut cur = Cursor {
        number: l.number,
        path,
        index_path,
        file: Arc::new(file),
        idx,
        entries: Vec::new(),
        idx_read: HEADER_LEN as u64,
        offset: 0,
        seq: header.first,
    };
    cur.refresh()
        .map_err(|e| JournalError::io("read", &cur.index_path, e))?;
    if let Some(e) = cur
        .entries
        .iter()
        .rev()
        .find(|e| e.sequence <= position && e.sequence >= header.first)
    {
        cur.offset = e.offset;
        cur.seq = e.sequence;
    }
    Ok(cur)
}

/// Sends `len` bytes of `file` from `offset` to `out` (a socket): with
/// `sendfile(2)` on Linux and Android (page cache to socket, no copy
/// through user space), elsewhere one `pread` and one `write` of at most
/// 64 KiB. How many bytes were sent (fewer than `len` when the socket is
/// full; `WouldBlock` when it takes none).
///
/// ```
/// # #[cfg(unix)] {
/// use std::io::{Read, Write};
/// use std::net::{TcpListener, TcpStream};
/// let path = std::env::temp_dir().join(format!("tw-doc-send-{}", std::process::id()));
/// std::fs::write(&path, b"0123456789")?;
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let out = TcpStream::connect(listener.local_addr()?)?;
/// let (mut peer, _) = listener.accept()?;
/// let file = std::fs::File::open(&path)?;
/// let sent = tickwire::journal::send_range(&file, 2, 5, &out)?;
/// assert_eq!(sent, 5);
/// let mut got = [0u8; 5];
/// peer.read_exact(&mut got)?;
/// assert_eq!(&got, b"23456");
/// # std::fs::remove_file(&path)?;
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// The system call's error.
#[cfg(unix)]
pub fn send_range(
    file: &File,
    offset: u64,
    len: usize,
    out: &impl std::os::fd::AsFd,
) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut at = offset;
        loop {
            match rustix::fs::sendfile(out, file, Some(&mut at), len) {
                Err(e) if e == rustix::io::Errno::INTR => {}
                other => return other.map_err(io::Error::from),
            }
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let mut buf = vec![0u8; len.min(64 << 10)];
        let got = read_at(file, &mut buf, offset)?;
        loop {
            match rustix::io::write(out, buf.get(..got).unwrap_or_default()) {
                Err(e) if e == rustix::io::Errno::INTR => {}
                other => return other.map_err(io::Error::from),
            }
        }
    }
}
