//! [`Journal`]: the writer (open and recovery, append, roll, sessions,
//! retention, clean close).
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use crate::session::Batch;

use super::layout::{
    self, create_new, fsync_code, unix_nanos, write_at, Entry, EntryKind, Header, Manifest,
    ENTRY_LEN, HEADER_LEN, INDEX_EXT, LAYOUT_VERSION, PROTOCOL_REVISION, SEGMENT_EXT,
};
use super::reader::JournalReader;
use super::sync::{Mark, Shared, SyncHandle};
use super::{FsyncMode, JournalConfig, JournalError, JournalStats, Ticket, WriteMode};

mod behind;
mod in_place;
mod open;

pub(crate) use behind::Wake;

/// A segment of the journal, oldest first.
#[derive(Clone, Debug)]
struct Seg {
    session_id: u64,
    first: u64,
    segment: PathBuf,
    index: PathBuf,
    bytes: u64,
}

/// The segment being appended to.
#[derive(Debug)]
struct Active {
    seg: Arc<File>,
    idx: Arc<File>,
    len: u64,
    idx_len: u64,
    /// Offset of the last position entry (0: none yet).
    last_entry_at: u64,
    /// Position entries not written to the index yet (a mapped segment's:
    /// written [`PENDING`] at a time, and before a seal, a close or a
    /// drop; an index that lags is rebuilt from the segment at recovery).
    pending: Vec<u8>,
    /// The segment mapped, written in place (see [`in_place`]).
    mapped: Option<in_place::Mapped>,
    /// Bytes of the file whose blocks are reserved ([`WriteMode::Behind`]:
    /// past `len` with the file's size kept at its content).
    reserved: u64,
}

impl Active {
    /// Writes the pending position entries to the index.
    fn flush_index(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        write_at(&self.idx, &self.pending, self.idx_len)?;
        self.idx_len += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

/// Position entries a mapped segment writes at a time.
const PENDING: usize = 16;

/// The journal's writer: one per directory (a lock file says so).
///
/// ```
/// use tickwire::journal::{Journal, JournalConfig};
/// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
///
/// let dir = std::env::temp_dir().join(format!("tw-doc-journal-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let batch = |first: u64, n: usize| {
///     let mut bytes = vec![0u8; n * 44];
///     Sequencer::starting_at(first)
///         .encode_batch(&vec![(0, Payload::Quote(QuoteFields::default())); n], &mut bytes);
///     Batch::new(bytes)
/// };
/// let (mut journal, recovered) = Journal::open(&dir, JournalConfig::default())?;
/// assert!(recovered.session.is_none());
/// journal.start_session(0xfeed, 1)?;
/// journal.append(&batch(1, 3)?)?;
/// journal.append(&batch(4, 2)?)?;
/// drop(journal); // a crash: nothing synced, nothing lost (the page cache has it)
///
/// let (journal, recovered) = Journal::open(&dir, JournalConfig::default())?;
/// let session = recovered.session.unwrap();
/// assert_eq!((session.session_id, session.next, session.oldest), (0xfeed, 6, 1));
/// assert_eq!((journal.session_id(), journal.next_sequence()), (Some(0xfeed), 6));
/// journal.close()?; // everything synced: the next open continues even after a reboot
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    config: JournalConfig,
    manifest: Manifest,
    boot_id: [u8; 16],
    _lock: File,
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
    segments: VecDeque<Seg>,
    /// The last segment's session and the first sequence of the run of
    /// segments of that session at the back: what `oldest_of` answers on
    /// every append (the cold source's update), kept here so that it does
    /// not walk the segments each time. Set by `set_back_run` after every
    /// change of `segments`.
    back_run: Option<(u64, u64)>,
    active: Option<Active>,
    next_number: u64,
    session: Option<u64>,
    next: u64,
    new_session_required: bool,
    poisoned: bool,
    stats: JournalStats,
    pos: u64,
    epoch: u64,
    /// The writer thread ([`WriteMode::Behind`], started at the first
    /// batch written behind) and the ops of the append under way.
    behind: Option<behind::Behind>,
    ops: Vec<behind::Op>,
    /// Writing behind cannot be done here (no reservation, no thread).
    behind_off: bool,
    /// What the writer thread calls after each pass.
    wake: Option<behind::WakeFn>,
}

/// `ReadOnly` for the errors a read-only directory gives, `Io` otherwise.
fn write_error(op: &'static str, path: &Path, e: io::Error) -> JournalError {
    let read_only = e.kind() == io::ErrorKind::ReadOnlyFilesystem
        || e.kind() == io::ErrorKind::PermissionDenied;
    if read_only {
        JournalError::ReadOnly {
            path: path.to_path_buf(),
            source: e,
        }
    } else {
        JournalError::io(op, path, e)
    }
}

impl Journal {
    /// Starts session `session_id` at sequence `next` (at least 1) in a new
    /// segment: a new journal, a new session after a reboot
    /// ([`Recovered::new_session_required`](super::Recovered::new_session_required)), a relay's upstream changing
    /// sessions, the start of a trading day. The previous segment is sealed.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("tw-doc-start-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// use tickwire::journal::{Journal, JournalConfig};
    /// let (mut journal, _) = Journal::open(&dir, JournalConfig::default())?;
    /// journal.start_session(42, 1)?;
    /// assert_eq!((journal.session_id(), journal.next_sequence(), journal.oldest()), (Some(42), 1, 1));
    /// journal.start_session(43, 100)?; // a relay whose upstream moved on
    /// assert_eq!((journal.session_id(), journal.next_sequence()), (Some(43), 100));
    /// # drop(journal);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`JournalError::Io`] if the segment cannot be created (nothing
    /// changes then), [`JournalError::Poisoned`].
    pub fn start_session(&mut self, session_id: u64, next: u64) -> Result<(), JournalError> {
        self.check_poisoned()?;
        // The marks are set here: the writer thread's come first.
        self.drain()?;
        let next = next.max(1);
        self.roll(session_id, next)?;
        self.session = Some(session_id);
        self.next = next;
        self.new_session_required = false;
        self.epoch += 1;
        let mut st = self.shared.lock();
        st.written = Mark {
            pos: self.pos,
            end: next,
            epoch: self.epoch,
        };
        st.epoch_start = next;
        Ok(())
    }

    /// Appends a published batch, whole or not at all. It must start at
    /// [`next_sequence`](Self::next_sequence) or later (later: a relay's
    /// hole). A failed write (a full disk: [`JournalError::io_kind`] is
    /// `StorageFull`; an I/O error) truncates the segment and index back to
    /// where the batch began and leaves the next sequence as it was: the
    /// caller may append the same batch again later.
    ///
    /// Nothing is synced here: with [`FsyncMode::Always`], the caller waits
    /// with [`SyncHandle::wait`] on the returned ticket after releasing its
    /// own lock, and releases the frames to clients up to
    /// [`durable_end`](Self::durable_end).
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("tw-doc-{}-{}", "append", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// use tickwire::journal::{Journal, JournalConfig};
    /// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
    /// let batch = |first: u64, n: usize| {
    ///     let mut bytes = vec![0u8; n * 44];
    ///     Sequencer::starting_at(first)
    ///         .encode_batch(&vec![(0, Payload::Quote(QuoteFields::default())); n], &mut bytes);
    ///     Batch::new(bytes)
    /// };
    /// use tickwire::journal::JournalError;
    /// let (mut journal, _) = Journal::open(&dir, JournalConfig::default())?;
    /// assert!(matches!(journal.append(&batch(1, 1)?), Err(JournalError::NoSession)));
    /// journal.start_session(1, 1)?;
    /// let ticket = journal.append(&batch(1, 4)?)?;
    /// assert_eq!((ticket.end(), journal.next_sequence()), (5, 5));
    /// assert!(matches!(journal.append(&batch(3, 1)?), Err(JournalError::OutOfOrder { next: 5, first: 3 })));
    /// journal.append(&batch(9, 1)?)?; // later: a hole (a relay's journal)
    /// assert_eq!(journal.next_sequence(), 10);
    /// # drop(journal);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`JournalError::NoSession`], [`JournalError::NewSessionRequired`],
    /// [`JournalError::OutOfOrder`], [`JournalError::Io`],
    /// [`JournalError::Poisoned`] (reopen).
    pub fn append(&mut self, batch: &Batch) -> Result<Ticket, JournalError> {
        let session = self.ready(batch.first())?;
        // Written here, after what the writer thread still has to write.
        self.drain()?;
        let bytes = batch.bytes();
        let n = bytes.len() as u64;
        self.roll_if_full(session, n)?;
        let Some(active) = self.active.as_mut() else {
            return Err(JournalError::NoSession);
        };
        let Some(seg) = self.segments.back() else {
            return Err(JournalError::NoSession);
        };
        let start = active.len;
        if active.mapped.as_ref().is_some_and(|m| !m.fits(start, n)) {
            // Larger than the mapping has room for: this segment goes on
            // with `pwrite`.
            if let Some(mut m) = active.mapped.take() {
                m.trim()
                    .map_err(|e| JournalError::io("truncate", &seg.segment, e))?;
            }
        }
        let written = match active.mapped.as_mut() {
            Some(m) => m
                .write(start, bytes.len(), |dst| {
                    dst.copy_from_slice(bytes);
                    bytes.len()
                })
                .map(drop),
            None => write_at(&active.seg, bytes, start),
        };
        if let Err(e) = written {
            self.stats.failed_appends += 1;
            if active.mapped.is_none() && active.seg.set_len(start).is_err() {
                self.poisoned = true;
            }
            return Err(JournalError::io("append to", &seg.segment, e));
        }
        let time = first_timestamp(bytes);
        self.commit(start, n, batch.first(), batch.frames(), time)
    }

    /// Numbers and encodes a batch straight into the mapped segment
    /// (`encode` gets room for `max` bytes and says how many bytes and
    /// frames it wrote, from sequence `first`): the batch returned holds
    /// the journal's bytes. `Ok(None)` when the segment is not mapped (see
    /// [`JournalConfig::in_place`]) or the batch may not fit it: the caller
    /// encodes into its own buffer and calls [`append`](Self::append).
    /// Errors and what stays unchanged: as for `append` (nothing is
    /// committed; a full disk fails before `encode` runs).
    #[cfg_attr(not(feature = "net"), allow(dead_code))]
    pub(crate) fn append_in_place(
        &mut self,
        first: u64,
        max: usize,
        encode: impl FnOnce(&mut [u8]) -> (usize, u64),
    ) -> Result<Option<(Ticket, Batch)>, JournalError> {
        if self.config.writes != WriteMode::InPlace {
            return Ok(None);
        }
        let session = self.ready(first)?;
        self.roll_if_full(session, max as u64)?;
        let Some(active) = self.active.as_mut() else {
            return Err(JournalError::NoSession);
        };
        let Some(seg) = self.segments.back() else {
            return Err(JournalError::NoSession);
        };
        let start = active.len;
        let Some(m) = active.mapped.as_mut().filter(|m| m.fits(start, max as u64)) else {
            return Ok(None);
        };
        let mut frames = 0;
        let mut time = 0;
        let n = match m.write(start, max, |dst| {
            let (n, f) = encode(dst);
            frames = f;
            time = first_timestamp(dst.get(..n).unwrap_or_default());
            n
        }) {
            Ok(n) => n,
            Err(e) => {
                self.stats.failed_appends += 1;
                return Err(JournalError::io("append to", &seg.segment, e));
            }
        };
        let shared = m.shared();
        let at = usize::try_from(start)
            .map_err(|e| JournalError::io("append to", &seg.segment, io::Error::other(e)))?;
        if frames == 0 {
            return Err(JournalError::io(
                "append to",
                &seg.segment,
                io::Error::other("an empty batch"),
            ));
        }
        let ticket = self.commit(start, n as u64, first, frames, time)?;
        let batch = Batch::shared(first, frames, shared, at, n);
        Ok(Some((ticket, batch)))
    }

    /// Appends a published batch to be written behind by the journal's
    /// writer thread ([`WriteMode::Behind`]): its blocks are reserved (a
    /// full disk refuses it here, nothing committed), its numbers taken,
    /// its bytes (shared, not copied), index entries and mark queued, for
    /// the writer thread once [`kick`](Self::kick)ed. It is in the journal
    /// once [`durable_end`](Self::durable_end) covers it; the caller
    /// releases it to nobody before. `Ok(None)`: not written
    /// behind (another mode, `always`, or a file system that cannot
    /// reserve): the caller calls [`append`](Self::append).
    #[cfg_attr(not(feature = "net"), allow(dead_code))]
    pub(crate) fn append_behind(
        &mut self,
        batch: &Arc<Batch>,
    ) -> Result<Option<Ticket>, JournalError> {
        if !self.wants_behind() {
            return Ok(None);
        }
        let session = self.ready(batch.first())?;
        let bytes = batch.bytes();
        let n = bytes.len() as u64;
        self.roll_if_full(session, n)?;
        if self.behind.is_none() && !self.start_behind() {
            return Ok(None);
        }
        let (Some(active), Some(seg)) = (self.active.as_mut(), self.segments.back()) else {
            return Err(JournalError::NoSession);
        };
        let start = active.len;
        if active.reserved < start + n {
            let need = start + n - active.reserved;
            let len = behind::RESERVE.max(need);
            // A disk nearly full: what this batch needs, if the chunk
            // does not fit.
            let reserved = behind::reserve(&active.seg, active.reserved, len)
                .map(|()| len)
                .or_else(|e| match e.kind() {
                    io::ErrorKind::StorageFull if need < len => {
                        behind::reserve(&active.seg, active.reserved, need).map(|()| need)
                    }
                    _ => Err(e),
                });
            match reserved {
                Ok(len) => active.reserved += len,
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    // Cannot reserve: written on the publishing thread from
                    // now on (after what is queued).
                    self.behind_off = true;
                    return Ok(None);
                }
                Err(e) => {
                    self.stats.failed_appends += 1;
                    return Err(JournalError::io("reserve blocks in", &seg.segment, e));
                }
            }
        }
        self.ops.push(behind::Op::Write {
            file: Arc::clone(&active.seg),
            at: start,
            batch: Arc::clone(batch),
        });
        self.commit(
            start,
            n,
            batch.first(),
            batch.frames(),
            first_timestamp(bytes),
        )
        .map(Some)
    }

    /// Hands the writer thread what [`append_behind`](Self::append_behind)
    /// queued: call it once the batch is where whoever the thread wakes
    /// (see [`set_wake`](Self::set_wake)) will find it, under the same lock
    /// as the append (the server's numbering lock), so that the batches
    /// go in the order numbered.
    #[cfg_attr(not(feature = "net"), allow(dead_code))]
    pub(crate) fn kick(&mut self) {
        if let Some(b) = &self.behind {
            b.push(&mut self.ops);
        }
    }

    /// Whether batches are to be written behind.
    fn wants_behind(&self) -> bool {
        self.config.writes == WriteMode::Behind
            && self.config.fsync != FsyncMode::Always
            && !self.behind_off
    }

    /// Whether readers of this process are bounded by the content mark
    /// (`Shared::content`) rather than the file's size: the segment is
    /// written behind (or is to be: set before the first batch).
    fn bounds_readers(&self) -> bool {
        self.behind.is_some() || self.wants_behind()
    }

    /// Starts the writer thread (false: it cannot be, writing behind is
    /// off). Nothing is queued yet: the readers' bound is set here.
    fn start_behind(&mut self) -> bool {
        match behind::Behind::spawn(&self.shared) {
            Ok(b) => {
                if let Some(wake) = &self.wake {
                    b.set_wake(wake.clone());
                }
                self.behind = Some(b);
                if let Some(active) = &self.active {
                    self.shared.lock().content = Some((self.next_number - 1, active.len));
                }
                true
            }
            Err(_) => {
                self.behind_off = true;
                false
            }
        }
    }

    /// What the writer thread calls after each pass (the server's event
    /// loop: batches it holds may be released).
    #[cfg_attr(not(feature = "net"), allow(dead_code))]
    pub(crate) fn set_wake(&mut self, wake: Wake) {
        let wake = behind::WakeFn(wake);
        if let Some(b) = &self.behind {
            b.set_wake(wake.clone());
        }
        self.wake = Some(wake);
    }

    /// Tests: stalls the writer thread (`true`: it takes nothing queued)
    /// or lets it go on.
    #[cfg(test)]
    pub(crate) fn pause_writer(&mut self, paused: bool) {
        if self.behind.is_none() && self.wants_behind() {
            self.start_behind();
        }
        if let Some(b) = &self.behind {
            b.pause(paused);
        }
    }

    /// Waits until the writer thread ([`WriteMode::Behind`]) has written
    /// everything queued: [`durable_end`](Self::durable_end) then covers
    /// every batch appended.
    #[cfg_attr(not(feature = "net"), allow(dead_code))]
    pub(crate) fn write_queued(&mut self) -> Result<(), JournalError> {
        self.drain()
    }

    /// Waits until the writer thread has written everything queued (what
    /// was not handed to it yet first).
    fn drain(&mut self) -> Result<(), JournalError> {
        self.kick();
        if let Some(why) = self.behind.as_ref().and_then(|b| b.drain().err()) {
            self.poisoned = true;
            let path = self
                .segments
                .back()
                .map(|s| s.segment.clone())
                .unwrap_or_default();
            return Err(JournalError::io(
                "write behind to",
                &path,
                io::Error::other(why),
            ));
        }
        Ok(())
    }

    /// Whether a batch from `first` may be appended now; the session.
    fn ready(&self, first: u64) -> Result<u64, JournalError> {
        self.check_poisoned()?;
        if self.new_session_required {
            return Err(JournalError::NewSessionRequired);
        }
        let Some(session) = self.session else {
            return Err(JournalError::NoSession);
        };
        if first < self.next {
            return Err(JournalError::OutOfOrder {
                next: self.next,
                first,
            });
        }
        Ok(session)
    }

    /// Rolls before `n` more bytes would take a non-empty segment past the
    /// segment size.
    fn roll_if_full(&mut self, session: u64, n: u64) -> Result<(), JournalError> {
        let full = self
            .active
            .as_ref()
            .is_none_or(|a| a.len > 0 && a.len + n > self.config.segment_bytes);
        if full {
            self.roll(session, self.next)?;
        }
        Ok(())
    }

    /// The index entry of a batch written at `start` (`n` bytes, frames
    /// `first..first + frames`), then the bookkeeping: the batch is in.
    /// A failed index entry (`pwrite` mode) undoes the batch's bytes.
    fn commit(
        &mut self,
        start: u64,
        n: u64,
        first: u64,
        frames: u64,
        time: u64,
    ) -> Result<Ticket, JournalError> {
        let bound = self.bounds_readers();
        let Some(active) = self.active.as_mut() else {
            return Err(JournalError::NoSession);
        };
        let Some(seg) = self.segments.back_mut() else {
            return Err(JournalError::NoSession);
        };
        let due = start > 0 && start - active.last_entry_at >= self.config.index_every;
        let entry = Entry {
            sequence: first,
            offset: start,
            time,
            kind: EntryKind::Position,
        };
        let queued = !self.ops.is_empty();
        if due && queued {
            // Written behind, after the batch's bytes.
            self.ops.push(behind::Op::Index {
                file: Arc::clone(&active.idx),
                at: active.idx_len,
                entries: entry.encode().to_vec(),
            });
            active.idx_len += ENTRY_LEN as u64;
            active.last_entry_at = start;
            self.stats.index_entries += 1;
        } else if due && active.mapped.is_some() {
            // A system call saved per entry: written a few at a time once
            // their batches are in (a failure leaves the index lagging,
            // which recovery rebuilds from the segment, and is retried).
            active.pending.extend_from_slice(&entry.encode());
            active.last_entry_at = start;
            self.stats.index_entries += 1;
            if active.pending.len() >= PENDING * ENTRY_LEN {
                let _ = active.flush_index();
            }
        } else if due {
            let flushed = active.flush_index();
            if let Err(e) =
                flushed.and_then(|()| write_at(&active.idx, &entry.encode(), active.idx_len))
            {
                // `pwrite` mode (a mapped segment's entries wait above):
                // the batch's bytes go with its entry.
                self.stats.failed_appends += 1;
                if active.idx.set_len(active.idx_len).is_err() || active.seg.set_len(start).is_err()
                {
                    self.poisoned = true;
                }
                return Err(JournalError::io("append to", &seg.index, e));
            }
            active.idx_len += ENTRY_LEN as u64;
            active.last_entry_at = start;
            self.stats.index_entries += 1;
        }
        if let Some(m) = active.mapped.as_mut() {
            m.commit(start + n);
        }
        active.len += n;
        seg.bytes = active.len;
        self.next = first + frames;
        self.pos += n;
        self.stats.appends += 1;
        self.stats.frames += frames;
        self.stats.bytes += n;
        let content =
            (active.mapped.is_some() || bound).then_some((self.next_number - 1, active.len));
        let mark = Mark {
            pos: self.pos,
            end: self.next,
            epoch: self.epoch,
        };
        match content.filter(|_| queued) {
            // The writer thread sets it once the batch is in.
            Some(content) => self.ops.push(behind::Op::Mark { mark, content }),
            None => {
                let mut st = self.shared.lock();
                st.written = mark;
                st.content = content;
            }
        }
        Ok(Ticket {
            position: self.pos,
            end: self.next,
        })
    }

    /// A new segment for `session_id` from `first`; the active one (if
    /// any) is sealed. On failure nothing changes.
    fn roll(&mut self, session_id: u64, first: u64) -> Result<(), JournalError> {
        // Written behind: the old segment is finished first (the writer
        // thread writes what is queued: a wait once per segment), so that
        // every reader, of this process or not, finds a segment whole
        // before the next one exists.
        self.drain()?;
        // The blocks reserved past the old segment's content go first: a
        // sealed segment's size is its content.
        if let (Some(old), Some(old_seg)) = (self.active.as_mut(), self.segments.back()) {
            if old.reserved > old.len {
                // The same size: the blocks reserved past it go (ext4,
                // tmpfs and xfs free a file's blocks past its size here).
                old.seg
                    .set_len(old.len)
                    .map_err(|e| JournalError::io("truncate", &old_seg.segment, e))?;
                old.reserved = old.len;
            }
            if let Some(m) = old.mapped.as_mut() {
                m.trim()
                    .map_err(|e| JournalError::io("truncate", &old_seg.segment, e))?;
            }
            old.flush_index()
                .map_err(|e| JournalError::io("write", &old_seg.index, e))?;
        }
        let number = self.next_number;
        let stem = layout::stem(number, session_id, first);
        let index = self.dir.join(format!("{stem}.{INDEX_EXT}"));
        let segment = self.dir.join(format!("{stem}.{SEGMENT_EXT}"));
        let header = Header {
            layout: LAYOUT_VERSION,
            protocol: crate::wire::VERSION,
            revision: PROTOCOL_REVISION,
            session_id,
            first,
            number,
            journal_id: self.manifest.journal_id,
            boot_id: self.boot_id,
            created: unix_nanos(),
            fsync: fsync_code(self.config.fsync),
            index_every: u32::try_from(self.config.index_every).unwrap_or(u32::MAX),
        };
        let idx = create_new(&index).map_err(|e| write_error("create", &index, e))?;
        let undo = |e: JournalError| {
            let _ = fs::remove_file(&segment);
            let _ = fs::remove_file(&index);
            e
        };
        write_at(&idx, &header.encode(), 0)
            .map_err(|e| undo(JournalError::io("write", &index, e)))?;
        let seg = create_new(&segment).map_err(|e| undo(write_error("create", &segment, e)))?;
        let bound = self.bounds_readers();
        if let (Some(old), Some(old_seg)) = (&self.active, self.segments.back()) {
            let entry = Entry {
                sequence: self.next,
                offset: old.len,
                time: unix_nanos(),
                kind: EntryKind::Seal,
            };
            if let Err(e) = write_at(&old.idx, &entry.encode(), old.idx_len) {
                let _ = old.idx.set_len(old.idx_len);
                return Err(undo(JournalError::io("seal", &old_seg.index, e)));
            }
        }
        let (seg, idx) = (Arc::new(seg), Arc::new(idx));
        let old = self.active.replace(Active {
            mapped: in_place::Mapped::new(&self.config, &seg, 0),
            seg: Arc::clone(&seg),
            idx: Arc::clone(&idx),
            len: 0,
            idx_len: HEADER_LEN as u64,
            last_entry_at: 0,
            pending: Vec::new(),
            reserved: 0,
        });
        self.segments.push_back(Seg {
            session_id,
            first,
            segment,
            index,
            bytes: 0,
        });
        self.set_back_run();
        self.next_number += 1;
        self.stats.segments_created += 1;
        {
            let mut st = self.shared.lock();
            if self.config.fsync != FsyncMode::Never {
                if let Some(old) = old {
                    st.retired.push(old.seg);
                    st.retired.push(old.idx);
                }
                st.retired.push(idx);
                st.dir_dirty = true;
            }
            st.current = Some(seg);
            st.content = self
                .active
                .as_ref()
                .filter(|a| a.mapped.is_some() || bound)
                .map(|a| (number, a.len));
        }
        // A failed deletion is retried at the next roll; it never fails
        // the batch that rolled.
        let _ = self.apply_retention(SystemTime::now());
        Ok(())
    }

    /// Deletes whole oldest segments (never the one being written) while
    /// the journal holds more than [`JournalConfig::retain_bytes`] or the
    /// oldest was last written longer than [`JournalConfig::retain_age`]
    /// before `now`. Called at open and at each roll; call it now and then
    /// for the age limit on a quiet journal. How many were deleted.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("tw-doc-retain-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// use std::time::{Duration, SystemTime};
    /// use tickwire::journal::{Journal, JournalConfig};
    /// let config = JournalConfig { retain_age: Some(Duration::from_secs(3600)), ..JournalConfig::default() };
    /// let (mut journal, _) = Journal::open(&dir, config)?;
    /// journal.start_session(1, 1)?;
    /// journal.start_session(2, 1)?;
    /// let tomorrow = SystemTime::now() + Duration::from_secs(86_400);
    /// assert_eq!(journal.apply_retention(tomorrow)?, 1); // session 1's segment; never the active one
    /// # drop(journal);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`JournalError::Io`] if a file cannot be deleted.
    pub fn apply_retention(&mut self, now: SystemTime) -> Result<usize, JournalError> {
        let mut deleted = 0;
        while let Some(front) = self.expired_front(now) {
            // The segment first: an index alone is a leftover open removes.
            for path in [&front.segment, &front.index] {
                match fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(JournalError::io("delete", path, e)),
                }
            }
            self.pop_front_segment();
            deleted += 1;
        }
        Ok(deleted)
    }

    /// [`apply_retention`](Self::apply_retention) without deleting: the
    /// oldest segments beyond the retention leave the journal (its
    /// [`oldest`](Self::oldest) moves on) and their files (segment first,
    /// then index) are returned for the caller to delete where no lock is
    /// held (a server's retention thread: the publishers never wait for an
    /// `unlink`). Never the active segment.
    #[cfg_attr(not(any(feature = "net", feature = "tokio")), allow(dead_code))]
    pub(crate) fn expire(&mut self, now: SystemTime) -> Vec<PathBuf> {
        let mut files = Vec::new();
        while self.expired_front(now).is_some() {
            if let Some(gone) = self.pop_front_segment() {
                files.push(gone.segment);
                files.push(gone.index);
            }
        }
        files
    }

    /// Syncs everything and marks the segment as closed cleanly: the next
    /// open continues the session even after a reboot, in any mode. (A
    /// journal that is just dropped is like a killed process: nothing it
    /// appended is lost, but after an operating system crash a session
    /// not written with [`FsyncMode::Always`] cannot continue.)
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("tw-doc-{}-{}", "close", std::process::id()));
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
    /// journal.append(&batch(1, 3)?)?;
    /// journal.close()?;
    /// let report = tickwire::journal::check(&dir)?;
    /// assert!(report.sessions[0].segments[0].closed);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`JournalError::SyncFailed`], [`JournalError::Io`].
    pub fn close(mut self) -> Result<(), JournalError> {
        self.check_poisoned()?;
        self.trim_active()?;
        self.shared.sync_now()?;
        if let (Some(active), Some(seg)) = (&self.active, self.segments.back()) {
            if self.session.is_some() {
                let entry = Entry {
                    sequence: self.next,
                    offset: active.len,
                    time: unix_nanos(),
                    kind: EntryKind::Synced,
                };
                write_at(&active.idx, &entry.encode(), active.idx_len)
                    .and_then(|()| active.idx.sync_data())
                    .map_err(|e| JournalError::io("write", &seg.index, e))?;
            }
        }
        Ok(())
    }

    /// Cuts the active segment back to its content (the blocks reserved
    /// ahead of a mapped segment go).
    fn trim_active(&mut self) -> Result<(), JournalError> {
        self.drain()?;
        if let (Some(active), Some(seg)) = (self.active.as_mut(), self.segments.back()) {
            if active.reserved > active.len {
                // The same size: the blocks reserved past it go.
                active
                    .seg
                    .set_len(active.len)
                    .map_err(|e| JournalError::io("truncate", &seg.segment, e))?;
                active.reserved = active.len;
            }
            if let Some(m) = active.mapped.as_mut() {
                m.trim()
                    .map_err(|e| JournalError::io("truncate", &seg.segment, e))?;
            }
            active
                .flush_index()
                .map_err(|e| JournalError::io("write", &seg.index, e))?;
        }
        Ok(())
    }

    /// A handle for the threads that wait for durability.
    #[must_use]
    pub fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The sequence up to which (exclusive) frames may be released to
    /// clients: see [`SyncHandle::durable_end`].
    #[must_use]
    pub fn durable_end(&self) -> u64 {
        self.sync_handle().durable_end()
    }

    /// A reader of the current session from `from` (clamped to the oldest
    /// sequence held), with its own read-only descriptors.
    ///
    /// # Errors
    /// [`JournalError::NoSession`], or what [`JournalReader::open_session`] says.
    pub fn reader(&self, from: u64) -> Result<JournalReader, JournalError> {
        let session = self.session.ok_or(JournalError::NoSession)?;
        Ok(JournalReader::open_session(&self.dir, session, from)?.bounded_by(&self.sync_handle()))
    }

    /// The current session (`None`: none started, or a new one is required).
    #[must_use]
    pub fn session_id(&self) -> Option<u64> {
        self.session
    }

    /// The sequence the next batch starts with (or later).
    #[must_use]
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    /// The oldest sequence the journal holds of the current session
    /// ([`next_sequence`](Self::next_sequence) when it holds none).
    #[must_use]
    pub fn oldest(&self) -> u64 {
        self.session
            .and_then(|s| self.oldest_of(s))
            .unwrap_or(self.next)
    }

    /// The oldest sequence the journal holds of session `session_id` when
    /// it is the last session (also one that cannot continue as it is: a
    /// relay's, after a reboot).
    #[cfg_attr(not(feature = "net"), allow(dead_code))]
    pub(crate) fn oldest_of_last(&self, session_id: u64) -> Option<u64> {
        self.oldest_of(session_id)
    }

    /// The oldest segment when the retention says it goes (too many
    /// bytes in all, or older than the age limit at `now`); never the
    /// active (last) one.
    fn expired_front(&self, now: SystemTime) -> Option<&Seg> {
        let front = self.segments.front().filter(|_| self.segments.len() > 1)?;
        let too_big = self
            .config
            .retain_bytes
            .is_some_and(|max| self.total_bytes() > max);
        let too_old = self.config.retain_age.is_some_and(|age| {
            fs::metadata(&front.segment)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t + age < now)
        });
        (too_big || too_old).then_some(front)
    }

    /// Takes the oldest segment out of the journal (its files are the
    /// caller's), keeping what depends on the list up to date.
    fn pop_front_segment(&mut self) -> Option<Seg> {
        let gone = self.segments.pop_front()?;
        self.set_back_run();
        self.stats.segments_deleted += 1;
        Some(gone)
    }

    fn oldest_of(&self, session_id: u64) -> Option<u64> {
        self.back_run
            .filter(|&(s, _)| s == session_id)
            .map(|(_, first)| first)
    }

    fn set_back_run(&mut self) {
        let Some(session_id) = self.segments.back().map(|s| s.session_id) else {
            self.back_run = None;
            return;
        };
        self.back_run = self
            .segments
            .iter()
            .rev()
            .take_while(|s| s.session_id == session_id)
            .last()
            .map(|s| (session_id, s.first));
    }

    fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Segments in the journal.
    #[must_use]
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> JournalStats {
        let (behind_passes, behind_writes) = self.behind.as_ref().map_or((0, 0), |b| b.counts());
        JournalStats {
            syncs: self.shared.lock().syncs,
            behind_passes,
            behind_writes,
            ..self.stats
        }
    }

    fn check_poisoned(&self) -> Result<(), JournalError> {
        if self.poisoned
            || self.shared.broken()
            || self.behind.as_ref().is_some_and(behind::Behind::broken)
        {
            return Err(JournalError::Poisoned);
        }
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Tidy, not needed: a killed process's zero tail is cut at open.
        let _ = self.trim_active();
        self.behind = None; // its thread, joined (it wrote everything queued)
        self.shared.stop();
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
    }
}

/// The timestamp of the first frame of a batch.
fn first_timestamp(bytes: &[u8]) -> u64 {
    let mut t = [0u8; 8];
    if let Some(src) = bytes.get(12..20) {
        t.copy_from_slice(src);
    }
    u64::from_le_bytes(t)
}
