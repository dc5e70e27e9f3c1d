//! The files of a journal directory: the manifest, segment and index names,
//! the index header and entries, the Linux boot id. See PROTOCOL.md,
//! appendix A, for the layout in the protocol's terms.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::checksum::crc32c;
use crate::wire::{Message, MAX_DATA_FRAME_LEN};

use super::FsyncMode;

/// The manifest's file name.
pub(crate) const MANIFEST: &str = "JOURNAL";
/// The writer's lock file.
pub(crate) const LOCK: &str = "LOCK";
/// Segment files: plain data frames (a recording).
pub(crate) const SEGMENT_EXT: &str = "twr";
/// Index files: a header and fixed-size entries.
pub(crate) const INDEX_EXT: &str = "twi";
/// The layout version written in the manifest and each index header.
pub(crate) const LAYOUT_VERSION: u16 = 1;
/// The protocol revision of the frames this crate writes (PROTOCOL.md).
pub(crate) const PROTOCOL_REVISION: u8 = 3;
/// Index header length.
pub(crate) const HEADER_LEN: usize = 128;
/// Index entry length (a 4 KiB page holds whole entries after the header).
pub(crate) const ENTRY_LEN: usize = 32;
const INDEX_MAGIC: [u8; 4] = *b"TWJI";

/// The manifest: written once, when the journal is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub(crate) layout: u16,
    pub(crate) protocol: u8,
    pub(crate) revision: u8,
    pub(crate) journal_id: [u8; 16],
    pub(crate) server: String,
}

impl Manifest {
    pub(crate) fn new(server: &str) -> Manifest {
        Manifest {
            layout: LAYOUT_VERSION,
            protocol: crate::wire::VERSION,
            revision: PROTOCOL_REVISION,
            journal_id: random_id(),
            server: server.to_owned(),
        }
    }

    pub(crate) fn to_text(&self) -> String {
        format!(
            "tickwire-journal {}\nprotocol {} {}\nid {}\nserver {}\n",
            self.layout,
            self.protocol,
            self.revision,
            hex(&self.journal_id),
            self.server
        )
    }

    /// Parses a manifest; `Err` says what is wrong.
    pub(crate) fn parse(text: &str) -> Result<Manifest, String> {
        let mut lines = text.lines();
        let layout = lines
            .next()
            .and_then(|l| l.strip_prefix("tickwire-journal "))
            .and_then(|v| v.trim().parse::<u16>().ok())
            .ok_or("it does not begin with `tickwire-journal N`")?;
        let (mut protocol, mut id, mut server) = (None, None, None);
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "protocol" => {
                    let mut parts = value.split_whitespace().map(str::parse::<u8>);
                    if let (Some(Ok(v)), Some(Ok(r))) = (parts.next(), parts.next()) {
                        protocol = Some((v, r));
                    }
                }
                "id" => id = parse_hex16(value.trim()),
                "server" => server = Some(value.to_owned()),
                _ => {}
            }
        }
        let (protocol, revision) = protocol.ok_or("no `protocol VERSION REVISION` line")?;
        Ok(Manifest {
            layout,
            protocol,
            revision,
            journal_id: id.ok_or("no `id` line of 32 hex digits")?,
            server: server.ok_or("no `server` line")?,
        })
    }

    /// Reads `dir`'s manifest: `Ok(None)` when there is none.
    pub(crate) fn read(dir: &Path) -> io::Result<Option<Result<Manifest, String>>> {
        match fs::read_to_string(dir.join(MANIFEST)) {
            Ok(text) => Ok(Some(Manifest::parse(&text))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the manifest atomically: a temporary file, synced, renamed,
    /// and the directory synced.
    pub(crate) fn write(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(self.to_text().as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dir.join(MANIFEST))?;
        sync_dir(dir)
    }
}

/// Syncs a directory (its entries: created, renamed, removed files). A
/// platform that cannot open a directory as a file has nothing to sync.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(d) => match d.sync_all() {
            // Some file systems do not sync directories; nothing to do then.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
            other => other,
        },
        Err(_) if cfg!(not(unix)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The index header: which session and journal a segment belongs to, and
/// who wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) layout: u16,
    pub(crate) protocol: u8,
    pub(crate) revision: u8,
    pub(crate) session_id: u64,
    /// The session's next sequence when the segment was created: every
    /// frame in it has this sequence or a later one.
    pub(crate) first: u64,
    pub(crate) number: u64,
    pub(crate) journal_id: [u8; 16],
    pub(crate) boot_id: [u8; 16],
    pub(crate) created: u64,
    pub(crate) fsync: u8,
    pub(crate) index_every: u32,
}

/// Why 128 bytes are not a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Short,
    Magic,
    Checksum,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        put(&mut b, 0, &INDEX_MAGIC);
        put(&mut b, 4, &self.layout.to_le_bytes());
        put(&mut b, 6, &[self.protocol, self.revision]);
        put(&mut b, 8, &self.session_id.to_le_bytes());
        put(&mut b, 16, &self.first.to_le_bytes());
        put(&mut b, 24, &self.number.to_le_bytes());
        put(&mut b, 32, &self.journal_id);
        put(&mut b, 48, &self.boot_id);
        put(&mut b, 64, &self.created.to_le_bytes());
        put(&mut b, 72, &[self.fsync]);
        put(&mut b, 76, &self.index_every.to_le_bytes());
        let crc = crc32c(b.get(..HEADER_LEN - 4).unwrap_or_default());
        put(&mut b, HEADER_LEN - 4, &crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Header, HeaderError> {
        let b = b.get(..HEADER_LEN).ok_or(HeaderError::Short)?;
        if b.get(..4) != Some(&INDEX_MAGIC[..]) {
            return Err(HeaderError::Magic);
        }
        if crc32c(b.get(..HEADER_LEN - 4).unwrap_or_default()) != u32_at(b, HEADER_LEN - 4) {
            return Err(HeaderError::Checksum);
        }
        Ok(Header {
            layout: u16::from_le_bytes([byte(b, 4), byte(b, 5)]),
            protocol: byte(b, 6),
            revision: byte(b, 7),
            session_id: u64_at(b, 8),
            first: u64_at(b, 16),
            number: u64_at(b, 24),
            journal_id: arr16(b, 32),
            boot_id: arr16(b, 48),
            created: u64_at(b, 64),
            fsync: byte(b, 72),
            index_every: u32_at(b, 76),
        })
    }
}

/// What an index entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A frame with exactly `sequence` starts at `offset` (written at a
    /// batch start, every `index_every` bytes).
    Position = 1,
    /// The segment is complete: `offset` is its length, `sequence` the
    /// session's next sequence (written when the writer moves on).
    Seal = 2,
    /// Everything up to `offset` was synced and the writer closed cleanly
    /// (`sequence`: the next sequence).
    Synced = 3,
}

/// An index entry: a frame boundary of the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) sequence: u64,
    pub(crate) offset: u64,
    /// Position: the frame's timestamp; others: the writer's clock.
    pub(crate) time: u64,
    pub(crate) kind: EntryKind,
}

impl Entry {
    pub(crate) fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        put(&mut b, 0, &self.sequence.to_le_bytes());
        put(&mut b, 8, &self.offset.to_le_bytes());
        put(&mut b, 16, &self.time.to_le_bytes());
        put(&mut b, 24, &(self.kind as u32).to_le_bytes());
        let crc = crc32c(b.get(..ENTRY_LEN - 4).unwrap_or_default());
        put(&mut b, ENTRY_LEN - 4, &crc.to_le_bytes());
        b
    }

    /// `None` for bytes that are not a whole, valid entry.
    pub(crate) fn decode(b: &[u8]) -> Option<Entry> {
        let b = b.get(..ENTRY_LEN)?;
        if crc32c(b.get(..ENTRY_LEN - 4)?) != u32_at(b, ENTRY_LEN - 4) {
            return None;
        }
        let kind = match u32_at(b, 24) {
            1 => EntryKind::Position,
            2 => EntryKind::Seal,
            3 => EntryKind::Synced,
            _ => return None,
        };
        Some(Entry {
            sequence: u64_at(b, 0),
            offset: u64_at(b, 8),
            time: u64_at(b, 16),
            kind,
        })
    }
}

/// An index file read whole: its header and its valid entries.
#[derive(Clone, Debug)]
pub(crate) struct Index {
    pub(crate) header: Header,
    /// The entries up to the first invalid one (or a torn one at the end),
    /// in file order.
    pub(crate) entries: Vec<Entry>,
    /// Bytes of the file that hold the header and those entries.
    pub(crate) valid_len: u64,
    /// The file's length.
    pub(crate) file_len: u64,
}

/// Reads an index file's header only.
pub(crate) fn read_header(path: &Path) -> io::Result<Result<Header, HeaderError>> {
    let mut file = File::open(path)?;
    let mut b = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match file.read(b.get_mut(got..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Header::decode(b.get(..got).unwrap_or_default()))
}

/// Reads a whole index file: `Ok(Err(_))` when its header is not valid.
pub(crate) fn read_index(path: &Path) -> io::Result<Result<Index, HeaderError>> {
    let bytes = fs::read(path)?;
    let header = match Header::decode(&bytes) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let mut entries = Vec::new();
    let mut at = HEADER_LEN;
    while let Some(entry) = bytes.get(at..).and_then(Entry::decode) {
        entries.push(entry);
        at += ENTRY_LEN;
    }
    Ok(Ok(Index {
        header,
        entries,
        valid_len: at as u64,
        file_len: bytes.len() as u64,
    }))
}

/// A segment's file stem: segment number, session id, first sequence,
/// fixed widths, so that names sort in the order they were written.
pub(crate) fn stem(number: u64, session_id: u64, first: u64) -> String {
    format!("{number:010}-{session_id:016x}-{first:020}")
}

/// The parts of a segment stem.
pub(crate) fn parse_stem(stem: &str) -> Option<(u64, u64, u64)> {
    let mut parts = stem.split('-');
    let (n, s, f) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || n.len() != 10 || s.len() != 16 || f.len() != 20 {
        return None;
    }
    let digits = |t: &str| t.bytes().all(|c| c.is_ascii_digit());
    if !digits(n) || !digits(f) {
        return None;
    }
    Some((
        n.parse().ok()?,
        u64::from_str_radix(s, 16).ok()?,
        f.parse().ok()?,
    ))
}

/// One segment of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) number: u64,
    pub(crate) session_id: u64,
    pub(crate) first: u64,
    pub(crate) segment: Option<PathBuf>,
    pub(crate) index: Option<PathBuf>,
}

/// The segments of `dir`, by number (two stems with one number are both
/// listed: the caller refuses them); files whose names are not segment
/// names are not listed.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<Listed>> {
    let mut found: BTreeMap<(u64, u64, u64), Listed> = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if ext != SEGMENT_EXT && ext != INDEX_EXT {
            continue;
        }
        let Some((number, session_id, first)) = parse_stem(stem) else {
            continue;
        };
        let listed = found
            .entry((number, session_id, first))
            .or_insert_with(|| Listed {
                number,
                session_id,
                first,
                segment: None,
                index: None,
            });
        if ext == SEGMENT_EXT {
            listed.segment = Some(path);
        } else {
            listed.index = Some(path);
        }
    }
    Ok(found.into_values().collect())
}

/// The Linux boot id (`/proc/sys/kernel/random/boot_id`); zeros where
/// there is none (other systems): unknown.
pub(crate) fn boot_id() -> [u8; 16] {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|s| parse_hex16(&s.trim().replace('-', "")))
        .unwrap_or([0; 16])
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A fresh 128-bit id (not a secret: it tells journals apart).
fn random_id() -> [u8; 16] {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut id = [0u8; 16];
    for (i, half) in id.chunks_mut(8).enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(unix_nanos());
        h.write_u32(std::process::id());
        h.write_usize(i);
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    id
}

/// Lower-case hex digits of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The fsync mode's code in an index header.
pub(crate) fn fsync_code(mode: FsyncMode) -> u8 {
    match mode {
        FsyncMode::Never => 0,
        FsyncMode::Interval(_) => 1,
        FsyncMode::Always => 2,
    }
}

/// The code of [`FsyncMode::Always`] in an index header.
pub(crate) const FSYNC_ALWAYS: u8 = 2;

/// Opens a file for reading and writing (not created).
pub(crate) fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Creates a new file (refusing an existing one).
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

/// Writes all of `buf` at `offset`.
pub(crate) fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut buf, mut offset) = (buf, offset);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_write(file, buf, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = buf.get(n..).unwrap_or_default();
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Reads up to `buf.len()` bytes at `offset` (fewer only at the end of
/// the file): how many.
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let spare = buf.get_mut(got..).unwrap_or_default();
        #[cfg(unix)]
        let r = std::os::unix::fs::FileExt::read_at(file, spare, offset + got as u64);
        #[cfg(windows)]
        let r = std::os::windows::fs::FileExt::seek_read(file, spare, offset + got as u64);
        match r {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The data frame starting at `offset` of `file`, if there is a valid one:
/// its sequence and length.
pub(crate) fn data_frame_at(file: &File, offset: u64) -> io::Result<Option<(u64, usize)>> {
    let mut b = [0u8; MAX_DATA_FRAME_LEN];
    let got = read_at(file, &mut b, offset)?;
    Ok(match Message::decode(b.get(..got).unwrap_or_default()) {
        Ok((m, _)) if m.msg_type().is_data() => Some((m.sequence(), m.len())),
        _ => None,
    })
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(dst) = b.get_mut(at..at + v.len()) {
        dst.copy_from_slice(v);
    }
}

fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

fn arr16(b: &[u8], at: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Some(src) = b.get(at..at + 16) {
        out.copy_from_slice(src);
    }
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut out = [0u8; 4];
    if let Some(src) = b.get(at..at + 4) {
        out.copy_from_slice(src);
    }
    u32::from_le_bytes(out)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut out = [0u8; 8];
    if let Some(src) = b.get(at..at + 8) {
        out.copy_from_slice(src);
    }
    u64::from_le_bytes(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn headers_entries_names_and_manifests_round_trip() {
        let h = Header {
            layout: 1,
            protocol: 1,
            revision: 3,
            session_id: 0x0123_4567_89ab_cdef,
            first: 42,
            number: 7,
            journal_id: [9; 16],
            boot_id: [3; 16],
            created: 1_700_000_000_000_000_000,
            fsync: 2,
            index_every: 65536,
        };
        let b = h.encode();
        assert_eq!(Header::decode(&b), Ok(h));
        let mut bad = b;
        bad[20] ^= 1;
        assert_eq!(Header::decode(&bad), Err(HeaderError::Checksum));
        let e = Entry {
            sequence: 5,
            offset: 4096,
            time: 1,
            kind: EntryKind::Seal,
        };
        assert_eq!(Entry::decode(&e.encode()), Some(e));
        assert_eq!(Entry::decode(&e.encode()[..31]), None);
        assert_eq!((4096 - HEADER_LEN) % ENTRY_LEN, 0);
        let s = stem(7, 0xabc, 42);
        assert_eq!(s, "0000000007-0000000000000abc-00000000000000000042");
        assert_eq!(parse_stem(&s), Some((7, 0xabc, 42)));
        assert_eq!(
            parse_stem("0000000007-0000000000000abc-0000000000000000004x"),
            None
        );
        let m = Manifest::new("a b");
        assert_eq!(Manifest::parse(&m.to_text()), Ok(m));
        assert!(Manifest::parse("hello").is_err());
    }
}
