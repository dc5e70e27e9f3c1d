//! The journal: every published batch on disk, in wire format, so that a
//! server restarts in the same session and replays the whole day from disk
//! (issue 24). `journal` feature.
//!
//! ```text
//!  publisher ──encode──▶ Batch ──(publish lock)──▶ Journal::append ──pwrite──▶ segment file
//!                                                     │ Ticket                 (plain frames)
//!                                                     ▼                          + sparse index
//!        SyncHandle::wait(ticket)   (no lock held) ──▶ one fdatasync per group of waiters
//!                                                     │
//!                         durable_end() ─────────────▶ the core releases frames up to it
//!
//!  DIR/JOURNAL                                          manifest: layout, protocol, id, server
//!  DIR/LOCK                                             the writer's lock (flock)
//!  DIR/0000000001-<session:16 hex>-<first:20 digits>.twr   segment: data frames back to back
//!  DIR/0000000001-<session:16 hex>-<first:20 digits>.twi   its index: header + entries
//!  DIR/0000000002-…                                       the next segment (rolled at segment_bytes)
//!
//!  JournalReader::next_range(limit) ──▶ FileRange (file, offset, len) ──send_range──▶ socket (sendfile)
//!  JournalReader::read(limit, buf)  ──▶ bytes copied, every frame's CRC checked
//! ```
//!
//! * [`Journal`] is the writer, designed for the server core to call:
//!   [`open`](Journal::open) recovers (a torn tail is cut at the first byte
//!   the resynchronizing parser discards, and reported), then
//!   [`start_session`](Journal::start_session) and
//!   [`append`](Journal::append) (a batch is written whole or not at all;
//!   a failed write leaves no trace and consumes no sequence).
//! * [`SyncHandle`]: group commit for [`FsyncMode::Always`], and the
//!   durable watermark ([`SyncHandle::durable_end`]) up to which frames may
//!   reach clients.
//! * [`JournalReader`]: replay from any sequence the journal holds, as byte
//!   ranges on frame boundaries ([`send_range`] sends one with `sendfile`
//!   on Linux) or as checked copies; usable while the writer appends.
//! * [`check`]: every checksum, index entry and segment boundary, for
//!   `tickwire journal DIR`; [`Recording`]: a journal as one recording, for
//!   `dump` and `export`.
//!
//! The on-disk layout is documented in PROTOCOL.md, appendix A: a
//! segment's bytes are plain data frames back to back, so `tickwire dump`,
//! `export` and `tickwire.read` read a segment unchanged.
//!
//! ## Durability modes and the default
//!
//! * [`FsyncMode::Always`]: a batch counts as durable once an
//!   `fdatasync` that began after it was written has returned; the owner
//!   releases frames to clients only up to [`SyncHandle::durable_end`].
//!   Group commit makes the cost one sync per group of concurrent
//!   publishers, but every publish waits for a disk flush.
//! * [`FsyncMode::Interval`]: a background thread syncs at least every
//!   interval while anything is unsynced; frames are released as soon as
//!   they are written (handed to the OS).
//! * [`FsyncMode::Never`]: the OS writes back when it likes.
//!
//! In every mode a **killed process loses nothing it appended**: the bytes
//! are in the page cache. What differs is an operating system crash or a
//! power loss. Then, unless the mode was `Always`, frames that clients may
//! have received may be missing from the journal, so the next
//! [`open`](Journal::open) in another boot (Linux: the `boot_id` in the
//! segment's index header differs) says a new session is required
//! ([`Recovered::new_session_required`]): those sequence numbers must not
//! be given to other content. A writer that was closed with
//! [`Journal::close`] (everything synced) continues its session after a
//! reboot in any mode.
//!
//! **The default is `Interval(1 s)`.** A market data feed is latency
//! bound: `Always` puts a disk flush (0.1 to 10 ms) between every publish
//! and its clients. The protocol already has the answer to an operating
//! system crash (a new session: clients restart their sequence tracking,
//! section 3), and the common failure, a killed or crashed process, loses
//! nothing in any mode. One sync a second costs nothing measurable and
//! bounds what a power loss takes from the day's journal (kept for replay
//! and audit) to about a second, where `Never` leaves it to the kernel's
//! writeback (30 s by default on Linux). The interval is driven by a thread
//! of the journal (not by the caller's clock): `fdatasync` blocks for
//! milliseconds and must never run on an event loop, and a thread needs no
//! cooperation from the drivers.
//!
//! ## Recovery is bounded
//!
//! [`Journal::open`] reads each segment's 128-byte index header and the
//! last segment's index and tail only: from its last index entry that
//! points at a valid frame (entries are written every
//! [`JournalConfig::index_every`] bytes, at a batch start), the tail is
//! parsed to its end. Sealed segments (every one but the last) were synced
//! in full before the writer moved on (except with `Never`). Damage in the
//! middle of the journal is found by [`check`] and stops a reader; it is
//! never truncated away.
//!
//! ## Failures
//!
//! * A failed `append` (a full disk, an I/O error) truncates the segment
//!   and the index back to where the batch began: the journal is as it was
//!   and the sequence numbers are not consumed; append again later.
//! * A failed `fdatasync` poisons the journal ([`JournalError::SyncFailed`]
//!   then [`JournalError::Poisoned`]): after one, Linux may have dropped
//!   the pages it could not write, so nothing after the last good sync can
//!   be trusted; reopen (recovery re-reads the tail).
//! * Another protocol version, another journal's or another server's files,
//!   a directory that cannot be written, another writer holding the lock:
//!   a clear error at [`open`](Journal::open), before anything is touched.
// `deny`, not `forbid`: `map.rs` (Linux) is the one module with `unsafe`;
// every other file of the journal forbids it.
#![deny(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

mod check;
mod cold;
mod layout;
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod map;
mod reader;
mod sync;
mod tail;
mod writer;

pub use check::{check, is_journal, CheckReport, Damage, Recording, SegmentReport, SessionReport};
pub use cold::{ErrorHook, JournalCold, JournalFile};
pub use reader::{send_range, Chunk, FileRange, JournalReader};
pub use sync::SyncHandle;
pub use writer::Journal;
pub(crate) use writer::Wake;

/// When appended batches are synced to disk. See the [module docs](self)
/// for what each mode promises and why the default is `Interval(1 s)`.
///
/// ```
/// use std::time::Duration;
/// use tickwire::journal::FsyncMode;
/// assert_eq!(FsyncMode::default(), FsyncMode::Interval(Duration::from_secs(1)));
/// assert_eq!("always".parse::<FsyncMode>(), Ok(FsyncMode::Always));
/// assert_eq!("interval:250".parse::<FsyncMode>(), Ok(FsyncMode::Interval(Duration::from_millis(250))));
/// assert_eq!(FsyncMode::Never.to_string(), "never");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FsyncMode {
    /// Every batch is synced before it counts as durable (group commit).
    Always,
    /// A background thread syncs at least this often while anything is
    /// unsynced.
    Interval(Duration),
    /// Never synced by the journal (the kernel writes back when it likes).
    Never,
}

impl Default for FsyncMode {
    fn default() -> FsyncMode {
        FsyncMode::Interval(Duration::from_secs(1))
    }
}

impl fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncMode::Always => f.write_str("always"),
            FsyncMode::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            FsyncMode::Never => f.write_str("never"),
        }
    }
}

impl std::str::FromStr for FsyncMode {
    type Err = String;

    /// `always`, `never`, or `interval:MS` (milliseconds, at least 1).
    fn from_str(s: &str) -> Result<FsyncMode, String> {
        match s {
            "always" => Ok(FsyncMode::Always),
            "never" => Ok(FsyncMode::Never),
            _ => s
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map(|ms| FsyncMode::Interval(Duration::from_millis(ms)))
                .ok_or_else(|| format!("`{s}`: expected always, never or interval:MS (MS ≥ 1)")),
        }
    }
}

/// How a [`Journal`] writes. Build it with struct update syntax from
/// [`JournalConfig::default`].
///
/// ```
/// use tickwire::journal::{FsyncMode, JournalConfig};
/// let config = JournalConfig {
///     fsync: FsyncMode::Always,
///     retain_bytes: Some(50 << 30),
///     server: "feed-a".into(),
///     ..JournalConfig::default()
/// };
/// assert_eq!(config.segment_bytes, 1 << 30);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct JournalConfig {
    /// When batches are synced (`Interval(1 s)`).
    pub fsync: FsyncMode,
    /// A segment is rolled before a batch would take it past this size
    /// (1 GiB; a batch larger than it gets a segment of its own).
    pub segment_bytes: u64,
    /// An index entry is written at the first batch start at least this
    /// many bytes after the previous one (64 KiB): recovery and a reader's
    /// seek read at most about this much (plus one batch) of a segment.
    pub index_every: u64,
    /// Whole oldest segments are deleted while the journal holds more than
    /// this many bytes (`None`: no limit). The segment being written is
    /// never deleted.
    pub retain_bytes: Option<u64>,
    /// Whole segments last written longer ago than this are deleted
    /// (`None`: kept). Checked at each roll, at open and by
    /// [`Journal::apply_retention`].
    pub retain_age: Option<Duration>,
    /// The server's identity, recorded when the journal is created: a
    /// journal created by another server (another name) is refused at open
    /// (`"tickwire"`).
    pub server: String,
    /// How batches reach the segment file ([`WriteMode::InPlace`]).
    #[cfg_attr(feature = "serde", serde(default))]
    pub writes: WriteMode,
}

/// How a [`Journal`] gets each batch into its segment file
/// ([`JournalConfig::writes`]). Every mode keeps the journal's rules: a
/// batch is in the journal before any client or datagram line sees it, and
/// a full disk refuses the very batch (nothing numbered, nothing sent).
///
/// ```
/// use tickwire::journal::{JournalConfig, WriteMode};
/// let config = JournalConfig { writes: WriteMode::Behind, ..JournalConfig::default() };
/// assert_eq!(JournalConfig::default().writes, WriteMode::InPlace);
/// assert_ne!(config, JournalConfig::default());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum WriteMode {
    /// The segment being appended to is written in place (Linux, 64-bit):
    /// it is mapped into memory, a thread writes zeros ahead of the
    /// content (up to 16 MiB, never past the segment size: the pages enter
    /// the page cache and the file system reserves their blocks off the
    /// publishing thread; a full disk refuses a batch before any byte of it
    /// is written), and the mio server's publisher encodes each batch
    /// straight into it: no copy and no system call per batch, and the
    /// in-memory retention holds the journal's own (file-backed) pages
    /// instead of a second copy. The segment being written then ends in
    /// zeros until it is sealed or closed: recovery cuts them without
    /// reporting them and every reader stops at them. With
    /// [`FsyncMode::Always`] (which waits for the disk on every batch
    /// anyway, and would sync the zeros ahead with it) or elsewhere: as
    /// [`Direct`](Self::Direct). With `Interval`, zeros written ahead may
    /// reach the disk before the data that replaces them (at a low
    /// publishing rate, up to twice the bytes written to the disk). The
    /// fastest for bursts that fit in the page cache's dirty limits.
    #[default]
    InPlace,
    /// Written behind the publisher by a thread of the journal (Linux): the
    /// mio server's publisher encodes each batch into its own buffer and
    /// reserves its blocks (`fallocate` with `FALLOC_FL_KEEP_SIZE`, a few
    /// MiB at a time: a full disk refuses the very batch, synchronously);
    /// the thread writes the batches queued since its last pass with one
    /// `pwritev`, then their index entries, and only then does the event
    /// loop release them to clients and datagram lines (write-ahead kept:
    /// one more hop of latency, no direct write from the publishing thread).
    /// Each byte crosses memory once, beside the publisher: the shape of
    /// the floor of any journal that goes through the page cache, for a
    /// server that publishes past the kernel's dirty limits (all day at
    /// full rate). A write error there (not space) poisons the journal: the
    /// batches queued are never released and publishing fails from then
    /// on. The segment's file size is its content (no zero tail). With
    /// [`FsyncMode::Always`], in the tokio server, for relays, or
    /// elsewhere: as [`Direct`](Self::Direct).
    Behind,
    /// Each batch is written with `pwrite` on the publishing thread.
    Direct,
}

impl fmt::Display for WriteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteMode::InPlace => "in-place",
            WriteMode::Behind => "behind",
            WriteMode::Direct => "direct",
        })
    }
}

impl std::str::FromStr for WriteMode {
    type Err = String;

    /// `in-place`, `behind` or `direct`.
    ///
    /// ```
    /// use tickwire::journal::WriteMode;
    /// assert_eq!("behind".parse::<WriteMode>(), Ok(WriteMode::Behind));
    /// assert_eq!(WriteMode::InPlace.to_string(), "in-place");
    /// assert!("mapped".parse::<WriteMode>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<WriteMode, String> {
        match s {
            "in-place" => Ok(WriteMode::InPlace),
            "behind" => Ok(WriteMode::Behind),
            "direct" => Ok(WriteMode::Direct),
            _ => Err(format!("`{s}`: expected in-place, behind or direct")),
        }
    }
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            fsync: FsyncMode::default(),
            segment_bytes: 1 << 30,
            index_every: 64 << 10,
            retain_bytes: None,
            retain_age: None,
            server: "tickwire".into(),
            writes: WriteMode::InPlace,
        }
    }
}

/// What [`Journal::append`] hands back: where the batch ends, for
/// [`SyncHandle::wait`].
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-ticket-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use tickwire::journal::{Journal, JournalConfig};
/// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
/// let (mut journal, _) = Journal::open(&dir, JournalConfig::default())?;
/// journal.start_session(1, 1)?;
/// let mut bytes = vec![0u8; 88];
/// Sequencer::new().encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 2], &mut bytes);
/// let ticket = journal.append(&Batch::new(bytes)?)?;
/// assert_eq!(ticket.end(), 3);
/// journal.sync_handle().wait(ticket)?;
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub(crate) position: u64,
    pub(crate) end: u64,
}

impl Ticket {
    /// The sequence after the batch's last frame.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// What [`Journal::open`] found.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-recovered-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use tickwire::journal::{Journal, JournalConfig};
/// let (journal, recovered) = Journal::open(&dir, JournalConfig::default())?;
/// assert!(recovered.session.is_none()); // a new journal
/// assert!(recovered.truncated.is_none() && !recovered.new_session_required);
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovered {
    /// The session of the last segment (`None`: a new, empty journal).
    pub session: Option<RecoveredSession>,
    /// Bytes cut from the last segment's tail.
    pub truncated: Option<Truncation>,
    /// The last segment was written in another boot, not with
    /// [`FsyncMode::Always`], and not closed cleanly: frames clients saw
    /// may be missing, so [`Journal::start_session`] must start a new
    /// session before anything is appended.
    pub new_session_required: bool,
    /// The last segment was written in another boot (or the boot id is
    /// unknown: not Linux).
    pub boot_changed: bool,
    /// Segments in the journal.
    pub segments: usize,
    /// Bytes in them.
    pub bytes: u64,
    /// Leftover files removed: an index created without its segment (a
    /// crash while a segment was being created) or left by an interrupted
    /// deletion.
    pub removed: Vec<PathBuf>,
    /// What else open found and worked around: an index header that does
    /// not check (a reader stops at that segment; `check` reports it).
    pub warnings: Vec<String>,
}

/// The session a journal holds, as [`Journal::open`] found it.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-{}-{}", "recsession", std::process::id()));
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
/// journal.start_session(77, 1)?;
/// journal.append(&batch(1, 5)?)?;
/// drop(journal);
/// let (_journal, recovered) = Journal::open(&dir, JournalConfig::default())?;
/// let s = recovered.session.unwrap();
/// assert_eq!((s.session_id, s.next, s.oldest), (77, 6, 1));
/// # drop(_journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveredSession {
    /// Its id.
    pub session_id: u64,
    /// The next sequence to publish.
    pub next: u64,
    /// The oldest sequence the journal holds of it.
    pub oldest: u64,
}

/// Bytes cut from a segment's tail at recovery.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-{}-{}", "truncation", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use std::io::Write;
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
/// drop(journal);
/// // A crash in the middle of the next write: half a frame at the end.
/// let segment = std::fs::read_dir(&dir)?
///     .map(|e| e.unwrap().path())
///     .find(|p| p.extension().is_some_and(|e| e == "twr"))
///     .unwrap();
/// std::fs::OpenOptions::new().append(true).open(&segment)?.write_all(&[0xa5, 0x01, 0x10])?;
/// let (journal, recovered) = Journal::open(&dir, JournalConfig::default())?;
/// let cut = recovered.truncated.unwrap();
/// assert_eq!((cut.offset, cut.bytes), (132, 3));
/// assert_eq!(journal.next_sequence(), 4);
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Truncation {
    /// The segment.
    pub path: PathBuf,
    /// Where it was cut: the end of its last good frame.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
}

/// Counters of a [`Journal`].
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-{}-{}", "stats", std::process::id()));
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
/// journal.append(&batch(4, 2)?)?;
/// let stats = journal.stats();
/// assert_eq!((stats.appends, stats.frames, stats.bytes, stats.segments_created), (2, 5, 220, 1));
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct JournalStats {
    /// Batches appended.
    pub appends: u64,
    /// Frames appended.
    pub frames: u64,
    /// Bytes appended (segments only).
    pub bytes: u64,
    /// Appends that failed and were rolled back.
    pub failed_appends: u64,
    /// Index entries written.
    pub index_entries: u64,
    /// Segments created.
    pub segments_created: u64,
    /// Segments deleted by retention.
    pub segments_deleted: u64,
    /// Sync calls (see [`SyncHandle::syncs`]).
    pub syncs: u64,
    /// Passes of the writer thread ([`WriteMode::Behind`]): each wrote
    /// every batch queued since the one before.
    pub behind_passes: u64,
    /// `pwritev` calls of the writer thread (one per run of contiguous
    /// bytes of a pass, segment and index apart).
    pub behind_writes: u64,
}

/// Why a journal operation failed.
///
/// ```
/// use tickwire::journal::JournalError;
/// let e = JournalError::OutOfOrder { next: 10, first: 3 };
/// assert_eq!(e.to_string(), "a batch starting at 3 is before the journal's next sequence 10");
/// assert_eq!(JournalError::NoSession.io_kind(), None);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum JournalError {
    /// A file operation failed (`io_kind()` tells a full disk apart).
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The directory cannot be written (read-only file system, permissions).
    ReadOnly {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Another writer holds the journal's lock.
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// Not this journal's files: another server's journal, another
    /// journal's segments mixed in, a directory that is not a journal.
    Foreign {
        /// The file.
        path: PathBuf,
        /// What does not match.
        why: String,
    },
    /// A journal written in a layout or protocol version this crate does
    /// not read.
    Version {
        /// The file.
        path: PathBuf,
        /// What it says.
        found: String,
    },
    /// Damage that is not a torn tail: a reader stops at it.
    Damaged {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What.
        why: String,
    },
    /// A segment a reader needs is gone (retention, or by hand).
    Missing {
        /// The first sequence that cannot be read.
        sequence: u64,
        /// What is missing.
        why: String,
    },
    /// No session started: [`Journal::start_session`] first.
    NoSession,
    /// A new session must be started first (see
    /// [`Recovered::new_session_required`]).
    NewSessionRequired,
    /// A batch that starts before the journal's next sequence.
    OutOfOrder {
        /// The journal's next sequence.
        next: u64,
        /// The batch's first.
        first: u64,
    },
    /// An `fdatasync` failed: reopen the journal.
    SyncFailed {
        /// The error.
        why: String,
    },
    /// A previous failure left the journal in a state it cannot vouch for
    /// (a failed sync, or a failed write that could not be undone): reopen it.
    Poisoned,
    /// A configuration value out of range.
    Config(String),
}

impl JournalError {
    /// The I/O error kind, for [`Io`](Self::Io) and
    /// [`ReadOnly`](Self::ReadOnly) (`StorageFull` is a full disk).
    #[must_use]
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            JournalError::Io { source, .. } | JournalError::ReadOnly { source, .. } => {
                Some(source.kind())
            }
            _ => None,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> JournalError {
        JournalError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { op, path, source } => {
                write!(f, "journal: cannot {op} {}: {source}", path.display())
            }
            JournalError::ReadOnly { path, source } => {
                write!(f, "journal {} cannot be written: {source}", path.display())
            }
            JournalError::Locked { path } => write!(
                f,
                "journal {} is in use by another writer (its lock is held)",
                path.display()
            ),
            JournalError::Foreign { path, why } => write!(f, "{}: {why}", path.display()),
            JournalError::Version { path, found } => write!(
                f,
                "{}: {found}, which this version of tickwire does not read",
                path.display()
            ),
            JournalError::Damaged { path, offset, why } => write!(
                f,
                "journal damaged: {} at byte {offset}: {why}",
                path.display()
            ),
            JournalError::Missing { sequence, why } => {
                write!(f, "journal: sequence {sequence} cannot be read: {why}")
            }
            JournalError::NoSession => {
                f.write_str("journal: no session started (start_session first)")
            }
            JournalError::NewSessionRequired => f.write_str(
                "journal: the last session was written in another boot without fsync always: \
                 a new session must be started",
            ),
            JournalError::OutOfOrder { next, first } => write!(
                f,
                "a batch starting at {first} is before the journal's next sequence {next}"
            ),
            JournalError::SyncFailed { why } => write!(
                f,
                "journal: fdatasync failed ({why}): what is on disk is unknown, reopen the journal"
            ),
            JournalError::Poisoned => f.write_str(
                "journal: an earlier failure left it in an unknown state: reopen the journal",
            ),
            JournalError::Config(why) => write!(f, "journal configuration: {why}"),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JournalError::Io { source, .. } | JournalError::ReadOnly { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<JournalError> for io::Error {
    /// The error as an `io::Error` of a fitting kind, its message kept.
    fn from(e: JournalError) -> io::Error {
        let kind = match &e {
            JournalError::Io { source, .. } | JournalError::ReadOnly { source, .. } => {
                source.kind()
            }
            JournalError::Damaged { .. } | JournalError::Version { .. } => {
                io::ErrorKind::InvalidData
            }
            JournalError::Foreign { .. } | JournalError::Config(_) => io::ErrorKind::InvalidInput,
            JournalError::Missing { .. } => io::ErrorKind::NotFound,
            JournalError::Locked { .. } => io::ErrorKind::ResourceBusy,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e.to_string())
    }
}
