//! [`check`]: every checksum, index entry and segment boundary of a
//! journal; [`Recording`]: a journal as one recording.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::encode::{encode, Payload};
use crate::parse::{Event, Parser};

use super::layout::{self, read_at, read_index, EntryKind, Listed, FSYNC_ALWAYS, MANIFEST};
use super::reader::read_manifest;
use super::tail::{self, discard_why};
use super::{JournalError, Truncation};

/// What [`check`] found in a journal.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-check-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use tickwire::journal::{check, Journal, JournalConfig};
/// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
/// let (mut journal, _) = Journal::open(&dir, JournalConfig::default())?;
/// journal.start_session(9, 1)?;
/// let mut bytes = vec![0u8; 10 * 44];
/// Sequencer::new().encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 10], &mut bytes);
/// journal.append(&Batch::new(bytes)?)?;
/// let report = check(&dir)?;
/// assert!(!report.is_damaged());
/// let session = &report.sessions[0];
/// assert_eq!((session.session_id, session.first, session.end, session.frames), (9, 1, 11, 10));
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CheckReport {
    /// The directory.
    pub dir: PathBuf,
    /// The journal's id (hex).
    pub journal_id: String,
    /// The server that created it.
    pub server: String,
    /// The protocol version and revision of its manifest.
    pub protocol: (u8, u8),
    /// Its sessions, oldest first.
    pub sessions: Vec<SessionReport>,
    /// Damage: bytes that are not frames, frames out of order, index
    /// entries that do not match the frames, missing segments. A reader
    /// stops at each.
    pub damage: Vec<Damage>,
    /// The last segment's torn tail: what the next open cuts (not damage:
    /// what a crash in the middle of a write leaves).
    pub torn_tail: Option<Truncation>,
    /// Why the torn tail was not a good frame.
    pub torn_why: Option<String>,
    /// Files a writer's open removes: an index left without its segment by
    /// an interrupted creation or deletion.
    pub leftovers: Vec<PathBuf>,
}

impl CheckReport {
    /// Whether there is damage (a torn tail is not).
    #[must_use]
    pub fn is_damaged(&self) -> bool {
        !self.damage.is_empty()
    }
}

/// One session of a journal.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-{}-{}", "sessionreport", std::process::id()));
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
/// journal.append(&batch(1, 4)?)?;
/// journal.append(&batch(8, 2)?)?; // a relay's hole: 5..=7 never arrived
/// let report = tickwire::journal::check(&dir)?;
/// let s = &report.sessions[0];
/// assert_eq!((s.first, s.end, s.frames, s.holes, s.missing), (1, 10, 6, 1, 3));
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SessionReport {
    /// The session id.
    pub session_id: u64,
    /// The oldest sequence held.
    pub first: u64,
    /// The sequence after the last frame held.
    pub end: u64,
    /// Data frames.
    pub frames: u64,
    /// Bytes of segments.
    pub bytes: u64,
    /// Holes between frames (a relay's journal: ranges it never received).
    pub holes: u64,
    /// Sequences in those holes.
    pub missing: u64,
    /// Its segments, in order.
    pub segments: Vec<SegmentReport>,
}

/// One segment of a journal.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-{}-{}", "segmentreport", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use tickwire::journal::{Journal, JournalConfig};
/// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
/// let batch = |first: u64, n: usize| {
///     let mut bytes = vec![0u8; n * 44];
///     Sequencer::starting_at(first)
///         .encode_batch(&vec![(0, Payload::Quote(QuoteFields::default())); n], &mut bytes);
///     Batch::new(bytes)
/// };
/// let config = JournalConfig { segment_bytes: 440, ..JournalConfig::default() };
/// let (mut journal, _) = Journal::open(&dir, config)?;
/// journal.start_session(1, 1)?;
/// for first in (1..=30).step_by(10) {
///     journal.append(&batch(first, 10)?)?;
/// }
/// let report = tickwire::journal::check(&dir)?;
/// let segments = &report.sessions[0].segments;
/// assert_eq!(segments.len(), 3);
/// assert_eq!((segments[1].first, segments[1].end, segments[1].bytes, segments[1].sealed), (11, 21, 440, true));
/// assert!(!segments[2].sealed);
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SegmentReport {
    /// The segment file.
    pub path: PathBuf,
    /// Its number.
    pub number: u64,
    /// The session's next sequence when it was created.
    pub first: u64,
    /// The sequence after its last frame.
    pub end: u64,
    /// Data frames.
    pub frames: u64,
    /// Bytes.
    pub bytes: u64,
    /// Whether the writer moved on from it (wrote its seal).
    pub sealed: bool,
    /// Whether the writer closed it cleanly (everything synced).
    pub closed: bool,
    /// When it was created (Unix nanoseconds).
    pub created: u64,
    /// Written with `FsyncMode::Always`.
    pub fsync_always: bool,
    /// The writer's boot id (hex; zeros: unknown).
    pub boot_id: String,
    /// Index entries.
    pub index_entries: u64,
}

/// Damage in a journal.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-{}-{}", "damage", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use tickwire::journal::{Journal, JournalConfig};
/// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
/// let batch = |first: u64, n: usize| {
///     let mut bytes = vec![0u8; n * 44];
///     Sequencer::starting_at(first)
///         .encode_batch(&vec![(0, Payload::Quote(QuoteFields::default())); n], &mut bytes);
///     Batch::new(bytes)
/// };
/// let config = JournalConfig { segment_bytes: 440, ..JournalConfig::default() };
/// let (mut journal, _) = Journal::open(&dir, config)?;
/// journal.start_session(1, 1)?;
/// for first in (1..=30).step_by(10) {
///     journal.append(&batch(first, 10)?)?;
/// }
/// let first = tickwire::journal::check(&dir)?.sessions[0].segments[0].path.clone();
/// let mut bytes = std::fs::read(&first)?;
/// bytes[100] ^= 1; // a bit flipped in the first (sealed) segment
/// std::fs::write(&first, bytes)?;
/// let report = tickwire::journal::check(&dir)?;
/// assert!(report.is_damaged() && report.torn_tail.is_none());
/// assert_eq!((report.damage[0].offset, report.damage[0].path.clone()), (88, first));
/// // A reader stops there.
/// let mut reader = journal.reader(1)?;
/// let mut buf = Vec::new();
/// assert!(matches!(reader.read(31, 1 << 20, &mut buf), Err(tickwire::journal::JournalError::Damaged { .. })));
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Damage {
    /// The file.
    pub path: PathBuf,
    /// Where.
    pub offset: u64,
    /// How many bytes (0 when it is not a run of bytes).
    pub bytes: u64,
    /// What.
    pub why: String,
}

/// Reads every byte of the journal in `dir` and checks it: each frame's
/// checksum, that it is a data frame in sequence order, each index entry
/// against the frames, each seal against its segment's length, and that
/// each segment of a session starts where the one before ended. Damage is
/// reported, not returned as an error; the last segment's torn tail (what
/// the next open cuts) is reported apart.
///
/// ```
/// assert!(tickwire::journal::check(std::env::temp_dir()).is_err()); // not a journal
/// ```
///
/// # Errors
/// [`JournalError::Foreign`] when `dir` is not a journal;
/// [`JournalError::Io`] when a file cannot be read.
pub fn check(dir: impl AsRef<Path>) -> Result<CheckReport, JournalError> {
    let dir = dir.as_ref();
    let manifest = read_manifest(dir)?;
    let listed = layout::list(dir).map_err(|e| JournalError::io("list", dir, e))?;
    let mut report = CheckReport {
        dir: dir.to_path_buf(),
        journal_id: layout::hex(&manifest.journal_id),
        server: manifest.server.clone(),
        protocol: (manifest.protocol, manifest.revision),
        sessions: Vec::new(),
        damage: Vec::new(),
        torn_tail: None,
        torn_why: None,
        leftovers: Vec::new(),
    };
    let pairs = listed
        .iter()
        .filter(|l| l.segment.is_some() && l.index.is_some())
        .count();
    let mut seen_pair = 0;
    let mut prev: Option<(u64, u64, u64)> = None; // number, session, end
    for (i, l) in listed.iter().enumerate() {
        match (&l.segment, &l.index) {
            (Some(_), Some(_)) => {}
            (Some(segment), None) => {
                report
                    .damage
                    .push(damage(segment, 0, 0, "a segment without its index"));
                continue;
            }
            (None, Some(index)) => {
                if seen_pair == 0 || seen_pair == pairs && i + 1 == listed.len() {
                    report.leftovers.push(index.clone());
                } else {
                    report.damage.push(damage(
                        index,
                        0,
                        0,
                        "an index whose segment is missing (deleted in the middle of the journal)",
                    ));
                }
                continue;
            }
            (None, None) => continue,
        }
        seen_pair += 1;
        let last = seen_pair == pairs;
        let Some(seg) = check_segment(l, &manifest.journal_id, last, &mut report)? else {
            continue;
        };
        if let Some((number, session, end)) = prev {
            if session == l.session_id && (l.number != number + 1 || l.first != end) {
                report.damage.push(damage(
                    &seg.path,
                    0,
                    0,
                    &format!(
                        "segment {} of session {:016x} starts at {}, the segment before it \
                         (number {number}) ended at {end}: segments are missing",
                        l.number, l.session_id, l.first
                    ),
                ));
            }
        }
        prev = Some((l.number, l.session_id, seg.end));
        let (holes, missing) = (seg.holes, seg.missing);
        match report.sessions.last_mut() {
            Some(s) if s.session_id == l.session_id => {
                s.end = seg.end.max(s.end);
                s.frames += seg.frames;
                s.bytes += seg.bytes;
                s.holes += holes;
                s.missing += missing;
                s.segments.push(seg.report);
            }
            _ => report.sessions.push(SessionReport {
                session_id: l.session_id,
                first: l.first,
                end: seg.end,
                frames: seg.frames,
                bytes: seg.bytes,
                holes,
                missing,
                segments: vec![seg.report],
            }),
        }
    }
    Ok(report)
}

struct Checked {
    path: PathBuf,
    end: u64,
    frames: u64,
    bytes: u64,
    holes: u64,
    missing: u64,
    report: SegmentReport,
}

fn damage(path: &Path, offset: u64, bytes: u64, why: &str) -> Damage {
    Damage {
        path: path.to_path_buf(),
        offset,
        bytes,
        why: why.to_owned(),
    }
}

/// Checks one segment and its index; `None` when it cannot be checked
/// (its header is unreadable or of another journal: damage reported).
#[allow(clippy::too_many_lines)]
fn check_segment(
    l: &Listed,
    journal_id: &[u8; 16],
    last: bool,
    report: &mut CheckReport,
) -> Result<Option<Checked>, JournalError> {
    let (Some(path), Some(index_path)) = (&l.segment, &l.index) else {
        return Ok(None);
    };
    let index = match read_index(index_path) {
        Err(e) => return Err(JournalError::io("read", index_path, e)),
        Ok(Err(why)) => {
            report.damage.push(damage(
                index_path,
                0,
                0,
                &format!("index header unreadable ({why:?})"),
            ));
            return Ok(None);
        }
        Ok(Ok(index)) => index,
    };
    let header = index.header;
    if header.journal_id != *journal_id {
        report.damage.push(damage(
            index_path,
            0,
            0,
            &format!(
                "it belongs to journal {}, not this one (another server's files mixed in?)",
                layout::hex(&header.journal_id)
            ),
        ));
        return Ok(None);
    }
    if (header.number, header.session_id, header.first) != (l.number, l.session_id, l.first) {
        report.damage.push(damage(
            index_path,
            0,
            0,
            "its header does not match its name (segment number, session, first sequence)",
        ));
        return Ok(None);
    }
    let file = File::open(path).map_err(|e| JournalError::io("open", path, e))?;
    let mut len = file
        .metadata()
        .map_err(|e| JournalError::io("read", path, e))?
        .len();
    let mut parse_end = len;
    if last {
        let t = tail::scan(&file, len, header.first, &index.entries, u64::MAX)
            .map_err(|e| JournalError::io("read", path, e))?;
        if t.good_end < len {
            parse_end = t.good_end;
        }
        if t.zeros {
            // Reserved zeros (a segment being written in place): not the
            // segment's bytes.
            len = t.good_end;
        } else if t.good_end < len {
            report.torn_tail = Some(Truncation {
                path: path.clone(),
                offset: t.good_end,
                bytes: len - t.good_end,
            });
            report.torn_why = t.stop;
        }
    }
    if index.valid_len < index.file_len && !last {
        report.damage.push(damage(
            index_path,
            index.valid_len,
            index.file_len - index.valid_len,
            "index entries that do not check",
        ));
    }
    // Position entries must name frame boundaries; the seal, the end.
    let mut positions = index
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Position && e.offset < parse_end)
        .peekable();
    let mut parser = Parser::with_capacity(1 << 20)
        .map_err(io::Error::other)
        .map_err(|e| JournalError::io("read", path, e))?;
    let (mut read_to, mut at) = (0u64, 0u64);
    let (mut next, mut frames, mut holes, mut missing) = (header.first, 0u64, 0u64, 0u64);
    let mut pending: Option<Damage> = None;
    let flush = |pending: &mut Option<Damage>, report: &mut CheckReport| {
        if let Some(d) = pending.take() {
            report.damage.push(d);
        }
    };
    loop {
        let spare = parser.spare();
        let want = usize::try_from(parse_end - read_to)
            .unwrap_or(usize::MAX)
            .min(spare.len());
        let n = read_at(&file, spare.get_mut(..want).unwrap_or_default(), read_to)
            .map_err(|e| JournalError::io("read", path, e))?;
        if n == 0 {
            parser.finish();
        } else {
            parser
                .commit(n)
                .map_err(io::Error::other)
                .map_err(|e| JournalError::io("read", path, e))?;
            read_to += n as u64;
        }
        while let Some(event) = parser.next_event() {
            match event {
                Event::Frame(m) | Event::Duplicate(m) => {
                    let len = m.len() as u64;
                    while let Some(e) = positions.next_if(|e| e.offset <= at) {
                        if e.offset != at || e.sequence != m.sequence() {
                            report.damage.push(damage(
                                index_path,
                                e.offset,
                                0,
                                &format!(
                                    "index entry for sequence {} at byte {} of the segment does \
                                     not point at that frame",
                                    e.sequence, e.offset
                                ),
                            ));
                        }
                    }
                    if !m.msg_type().is_data() {
                        flush(&mut pending, report);
                        report.damage.push(damage(
                            path,
                            at,
                            len,
                            &format!("a {:?} control frame", m.msg_type()),
                        ));
                    } else if m.sequence() < next {
                        flush(&mut pending, report);
                        report.damage.push(damage(
                            path,
                            at,
                            len,
                            &format!(
                                "sequence {} after {} (out of order)",
                                m.sequence(),
                                next.saturating_sub(1)
                            ),
                        ));
                    } else {
                        flush(&mut pending, report);
                        // A hole, also where a segment starts (a relay's
                        // segment is named after the next sequence it
                        // expected, its first frame after the hole).
                        if m.sequence() > next {
                            holes += 1;
                            missing += m.sequence() - next;
                        }
                        next = m.sequence() + 1;
                        frames += 1;
                    }
                    at += len;
                }
                Event::Discarded(d) => {
                    match &mut pending {
                        Some(p) if p.offset + p.bytes == at => p.bytes += d.bytes,
                        _ => {
                            flush(&mut pending, report);
                            pending =
                                Some(damage(path, at, d.bytes, &discard_why(d.reason, d.bytes)));
                        }
                    }
                    at += d.bytes;
                }
                _ => {}
            }
        }
        if parser.is_finished() {
            break;
        }
    }
    flush(&mut pending, report);
    for e in positions {
        report.damage.push(damage(
            index_path,
            e.offset,
            0,
            &format!(
                "index entry for sequence {} points past the frames",
                e.sequence
            ),
        ));
    }
    let seal = index.entries.iter().find(|e| e.kind == EntryKind::Seal);
    if let Some(seal) = seal {
        if seal.offset != len || seal.sequence < next {
            report.damage.push(damage(
                path,
                seal.offset.min(len),
                0,
                &format!(
                    "the segment is {len} bytes and ends before sequence {next}; its seal says \
                     {} bytes, before sequence {}",
                    seal.offset, seal.sequence
                ),
            ));
        } else {
            next = seal.sequence;
        }
    }
    let closed = index
        .entries
        .last()
        .is_some_and(|e| e.kind == EntryKind::Synced && e.offset == len);
    Ok(Some(Checked {
        path: path.clone(),
        end: next,
        frames,
        bytes: len,
        holes,
        missing,
        report: SegmentReport {
            path: path.clone(),
            number: l.number,
            first: header.first,
            end: next,
            frames,
            bytes: len,
            sealed: seal.is_some(),
            closed,
            created: header.created,
            fsync_always: header.fsync == FSYNC_ALWAYS,
            boot_id: layout::hex(&header.boot_id),
            index_entries: index.entries.len() as u64,
        },
    }))
}

/// A journal read as one recording: for each session, oldest first, a
/// LoginAccepted frame (its session id, its first sequence held, the
/// timestamp its first segment was created), then its segments' bytes
/// unchanged. That is what `tickwire record` writes for a feed; `dump` and
/// `export` read a journal directory through it.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-recording-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use std::io::Read;
/// use tickwire::journal::{Journal, JournalConfig, Recording};
/// use tickwire::parse::{Event, SliceParser};
/// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
/// let (mut journal, _) = Journal::open(&dir, JournalConfig::default())?;
/// journal.start_session(3, 1)?;
/// let mut bytes = vec![0u8; 2 * 44];
/// Sequencer::new().encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 2], &mut bytes);
/// journal.append(&Batch::new(bytes)?)?;
/// let mut all = Vec::new();
/// Recording::open(&dir)?.read_to_end(&mut all)?;
/// let events: Vec<_> = SliceParser::new(&all).collect();
/// assert!(matches!(events[0], Event::NewSession { session_id: 3, sequence: 1 }));
/// assert_eq!(events.len(), 4); // NewSession, LoginAccepted, 2 quotes
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Recording {
    parts: VecDeque<Part>,
    current: Option<(io::Take<File>, PathBuf)>,
    bytes: u64,
}

#[derive(Debug)]
enum Part {
    Frame(Vec<u8>, usize),
    /// A segment, and how much of it to read.
    File(PathBuf, u64),
}

impl Recording {
    /// The journal in `dir` as one recording.
    ///
    /// # Errors
    /// [`JournalError::Foreign`] when `dir` is not a journal,
    /// [`JournalError::Io`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Recording, JournalError> {
        let dir = dir.as_ref();
        read_manifest(dir)?;
        let listed = layout::list(dir).map_err(|e| JournalError::io("list", dir, e))?;
        let last = listed
            .iter()
            .rev()
            .find(|l| l.segment.is_some() && l.index.is_some())
            .map(|l| l.number);
        let mut parts = VecDeque::new();
        let mut bytes = 0u64;
        let mut session = None;
        for l in listed {
            let (Some(segment), Some(index)) = (l.segment, l.index) else {
                continue;
            };
            if session != Some(l.session_id) {
                session = Some(l.session_id);
                let created = match layout::read_header(&index) {
                    Ok(Ok(h)) => h.created,
                    _ => 0,
                };
                let mut frame = vec![0u8; 32];
                let n = encode(
                    &Payload::LoginAccepted {
                        session_id: l.session_id,
                    },
                    l.first,
                    created,
                    &mut frame,
                )
                .map_err(|e| JournalError::io("encode", &index, io::Error::other(e)))?;
                frame.truncate(n);
                bytes += n as u64;
                parts.push_back(Part::Frame(frame, 0));
            }
            let mut len = std::fs::metadata(&segment).map_or(0, |m| m.len());
            if last == Some(l.number) {
                len = written_len(&segment, &index, len);
            }
            bytes += len;
            parts.push_back(Part::File(segment, len));
        }
        Ok(Recording {
            parts,
            current: None,
            bytes,
        })
    }

    /// Its length in bytes when it was opened.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Whether it holds no byte.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
}

/// The bytes of the last segment up to its reserved zeros, if it ends in
/// some (a segment being written in place, or one whose writer was killed):
/// what a reader of the recording should read. Anything else (a torn
/// frame, damage) is left for the reader's parser to report.
fn written_len(segment: &Path, index: &Path, len: u64) -> u64 {
    let Ok(Ok(index)) = read_index(index) else {
        return len;
    };
    let Ok(file) = File::open(segment) else {
        return len;
    };
    match tail::scan(&file, len, index.header.first, &index.entries, u64::MAX) {
        Ok(t) if t.zeros => t.good_end,
        _ => len,
    }
}

impl Read for Recording {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((file, path)) = &mut self.current {
                let file: &mut io::Take<File> = file;
                match file.read(buf) {
                    Ok(0) => self.current = None,
                    Ok(n) => return Ok(n),
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("cannot read {}: {e}", path.display()),
                        ))
                    }
                }
                continue;
            }
            match self.parts.front_mut() {
                None => return Ok(0),
                Some(Part::Frame(frame, at)) => {
                    let rest = frame.get(*at..).unwrap_or_default();
                    let n = rest.len().min(buf.len());
                    if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                    *at += n;
                    if *at >= frame.len() {
                        self.parts.pop_front();
                    }
                    return Ok(n);
                }
                Some(Part::File(path, len)) => {
                    let (path, len) = (path.clone(), *len);
                    self.parts.pop_front();
                    let file = File::open(&path).map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
                    })?;
                    self.current = Some((file.take(len), path));
                }
            }
        }
    }
}

/// Whether `dir` holds a journal (a manifest): what `dump` and `export`
/// ask of a directory.
///
/// ```
/// assert!(!tickwire::journal::is_journal(std::env::temp_dir()));
/// ```
#[must_use]
pub fn is_journal(dir: impl AsRef<Path>) -> bool {
    dir.as_ref().join(MANIFEST).is_file()
}
