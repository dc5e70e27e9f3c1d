//! The journal (issue 24), tried to break: torn tails cut at every byte of
//! the last frames, damage in the middle, random cuts and corruptions
//! (proptest), a full disk (a 1 MiB tmpfs) and a read-only bind mount
//! (root: skipped with the reason otherwise, a failure under
//! `TICKWIRE_REQUIRE_PRIVILEGED=1`), group commit counted, roll and
//! retention, restart and reboot, foreign files, readers racing the writer
//! and retention, `sendfile` to a socket.
//!
//! `cargo test --features journal --test journal`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use tickwire::encode::{QuoteFields, TradeFields};
use tickwire::journal::{
    check, FsyncMode, Journal, JournalConfig, JournalError, JournalReader, Recording, WriteMode,
};
use tickwire::parse::{Event, SliceParser};
use tickwire::session::Batch;
use tickwire::{Payload, Sequencer};

#[path = "common/fs.rs"]
mod fs_util;
use fs_util::{run, skip_unprivileged, Mount, TempDir};

const T0: u64 = 1_700_000_000_000_000_000;
const BOOT_A: [u8; 16] = [0xa; 16];
const BOOT_B: [u8; 16] = [0xb; 16];

/// Frames `first..first + n`, quotes and trades mixed, deterministic.
fn frames(first: u64, n: usize) -> Vec<u8> {
    let msgs: Vec<(u64, Payload)> = (0..n as u64)
        .map(|i| {
            let s = first + i;
            let p = if s.is_multiple_of(3) {
                Payload::Trade(TradeFields {
                    instrument_id: (s % 7) as u32,
                    price: s as i32,
                    size: 1,
                    side: 1,
                    flags: 0,
                })
            } else {
                Payload::Quote(QuoteFields {
                    instrument_id: (s % 11) as u32,
                    bid_price: s as i32,
                    ask_price: s as i32 + 1,
                    bid_size: 10,
                    ask_size: 20,
                })
            };
            (T0 + s, p)
        })
        .collect();
    let mut out = vec![0u8; n * 44];
    let done = Sequencer::starting_at(first).encode_batch(&msgs, &mut out);
    out.truncate(done.bytes);
    out
}

fn batch(first: u64, n: usize) -> Batch {
    Batch::new(frames(first, n)).unwrap()
}

fn config(fsync: FsyncMode) -> JournalConfig {
    JournalConfig {
        fsync,
        ..JournalConfig::default()
    }
}

fn small(segment_bytes: u64, index_every: u64) -> JournalConfig {
    JournalConfig {
        fsync: FsyncMode::Never,
        segment_bytes,
        index_every,
        ..JournalConfig::default()
    }
}

/// Appends batches of the given sizes from sequence 1: the bytes written.
fn fill(journal: &mut Journal, sizes: &[usize]) -> Vec<u8> {
    let mut all = Vec::new();
    for &n in sizes {
        let b = batch(journal.next_sequence(), n);
        all.extend_from_slice(b.bytes());
        journal.append(&b).unwrap();
    }
    all
}

/// Everything a reader of the newest session gives from `from`, through
/// the checked read path, and how it ended.
fn read_all(dir: &Path, from: u64) -> (Vec<u8>, Result<(), JournalError>) {
    let mut reader = match JournalReader::open(dir, from) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let (mut out, mut buf) = (Vec::new(), Vec::new());
    loop {
        match reader.read(u64::MAX, 64 << 10, &mut buf) {
            Ok(Some(_)) => out.extend_from_slice(&buf),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
}

/// Data frame sequences of `bytes`, which must be whole frames.
fn sequences(bytes: &[u8]) -> Vec<u64> {
    SliceParser::new(bytes)
        .filter_map(|e| match e {
            Event::Frame(m) => Some(m.sequence()),
            Event::Gap(_) => None,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// The segment files of `dir`, in order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "twr"))
        .collect();
    v.sort();
    v
}

fn index_of(segment: &Path) -> PathBuf {
    segment.with_extension("twi")
}

/// Every file of `dir` and its bytes (to see that nothing was touched).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().is_some_and(|n| n != "LOCK") {
            fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_restart_continues_the_session_where_it_stopped() {
    let dir = TempDir::new("restart", false);
    let (mut j, rec) = Journal::open(dir.path(), JournalConfig::default()).unwrap();
    assert!(rec.session.is_none());
    assert!(matches!(
        j.append(&batch(1, 1)),
        Err(JournalError::NoSession)
    ));
    j.start_session(0xabc, 1).unwrap();
    let mut all = fill(&mut j, &[1, 5, 64, 3]);
    assert_eq!((j.next_sequence(), j.oldest()), (74, 1));
    drop(j); // a kill: nothing closed, nothing synced
    let (mut j, rec) = Journal::open(dir.path(), JournalConfig::default()).unwrap();
    let s = rec.session.unwrap();
    assert_eq!((s.session_id, s.next, s.oldest), (0xabc, 74, 1));
    assert!(rec.truncated.is_none() && !rec.new_session_required);
    assert_eq!((j.session_id(), j.next_sequence()), (Some(0xabc), 74));
    // The same numbers continue; an earlier one is refused.
    assert!(matches!(
        j.append(&batch(70, 2)),
        Err(JournalError::OutOfOrder {
            next: 74,
            first: 70
        })
    ));
    all.extend(fill(&mut j, &[10, 1]));
    j.close().unwrap();
    let (j, _) = Journal::open(dir.path(), JournalConfig::default()).unwrap();
    assert_eq!(j.next_sequence(), 85);
    let (read, end) = read_all(dir.path(), 1);
    end.unwrap();
    assert_eq!(read, all, "byte-identical, in order, once each");
    assert!(!check(dir.path()).unwrap().is_damaged());
}

#[test]
fn a_reboot_needs_a_new_session_unless_always_or_closed() {
    // Never, killed, another boot: clients may have seen frames the disk lost.
    let dir = TempDir::new("reboot", false);
    let (mut j, _) = Journal::open_in_boot(dir.path(), config(FsyncMode::Never), BOOT_A).unwrap();
    j.start_session(1, 1).unwrap();
    fill(&mut j, &[10]);
    drop(j);
    let (mut j, rec) = Journal::open_in_boot(dir.path(), config(FsyncMode::Never), BOOT_A).unwrap();
    assert!(
        !rec.new_session_required && !rec.boot_changed,
        "same boot: continues"
    );
    fill(&mut j, &[5]);
    drop(j);
    let (mut j, rec) = Journal::open_in_boot(dir.path(), config(FsyncMode::Never), BOOT_B).unwrap();
    assert!(rec.new_session_required && rec.boot_changed);
    assert_eq!(rec.session.unwrap().next, 16);
    assert_eq!(j.session_id(), None);
    assert!(matches!(
        j.append(&batch(16, 1)),
        Err(JournalError::NewSessionRequired)
    ));
    j.start_session(2, 1).unwrap();
    fill(&mut j, &[3]);
    drop(j);
    // The old session is still there for replay, untouched.
    let mut r = JournalReader::open_session(dir.path(), 1, 1).unwrap();
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    while r.read(u64::MAX, 1 << 20, &mut buf).unwrap().is_some() {
        seen.extend(sequences(&buf));
    }
    assert_eq!(seen, (1..16).collect::<Vec<_>>());

    // Interval, killed, another boot: the thread's syncs bound what a
    // power loss takes, they do not make it nothing (frames written after
    // the last sync reached clients): a new session, even when that sync
    // covered every frame. Only a clean close (or always) continues.
    let dir = TempDir::new("reboot-interval", false);
    let interval = || config(FsyncMode::Interval(Duration::from_millis(5)));
    let (mut j, _) = Journal::open_in_boot(dir.path(), interval(), BOOT_A).unwrap();
    j.start_session(1, 1).unwrap();
    fill(&mut j, &[10]);
    let sync = j.sync_handle();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sync.synced_end() < 11 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(sync.synced_end(), 11, "the interval thread synced");
    drop(j);
    let (mut j, rec) = Journal::open_in_boot(dir.path(), interval(), BOOT_A).unwrap();
    assert!(
        !rec.new_session_required && !rec.boot_changed,
        "same boot: continues"
    );
    assert_eq!((j.session_id(), j.next_sequence()), (Some(1), 11));
    fill(&mut j, &[5]);
    drop(j);
    let (mut j, rec) = Journal::open_in_boot(dir.path(), interval(), BOOT_B).unwrap();
    assert!(rec.new_session_required && rec.boot_changed);
    assert_eq!(rec.session.unwrap().next, 16);
    assert_eq!(j.session_id(), None);
    assert!(matches!(
        j.append(&batch(16, 1)),
        Err(JournalError::NewSessionRequired)
    ));
    j.start_session(2, 1).unwrap();
    fill(&mut j, &[3]);
    drop(j);
    let report = check(dir.path()).unwrap();
    let sessions: Vec<_> = report
        .sessions
        .iter()
        .map(|s| (s.session_id, s.first, s.end))
        .collect();
    assert_eq!(sessions, [(1, 1, 16), (2, 1, 4)], "the old session kept");

    // Always: whatever reached a client was synced; the session continues.
    let dir = TempDir::new("reboot-always", false);
    let (mut j, _) = Journal::open_in_boot(dir.path(), config(FsyncMode::Always), BOOT_A).unwrap();
    j.start_session(1, 1).unwrap();
    fill(&mut j, &[10]);
    drop(j);
    let (j, rec) = Journal::open_in_boot(dir.path(), config(FsyncMode::Always), BOOT_B).unwrap();
    assert!(rec.boot_changed && !rec.new_session_required);
    assert_eq!((j.session_id(), j.next_sequence()), (Some(1), 11));
    // A new writer (another boot) gets a segment of its own.
    assert_eq!(segments(dir.path()).len(), 2);
    drop(j);

    // Closed cleanly (everything synced): continues in any mode.
    let dir = TempDir::new("reboot-closed", false);
    let (mut j, _) = Journal::open_in_boot(dir.path(), config(FsyncMode::Never), BOOT_A).unwrap();
    j.start_session(1, 1).unwrap();
    fill(&mut j, &[10]);
    j.close().unwrap();
    let (j, rec) = Journal::open_in_boot(dir.path(), config(FsyncMode::Never), BOOT_B).unwrap();
    assert!(rec.boot_changed && !rec.new_session_required);
    assert_eq!(j.next_sequence(), 11);
}

/// A journal of `sizes` batches in one segment with an index entry every
/// `index_every` bytes: the directory and the bytes.
fn one_segment(tag: &str, sizes: &[usize], index_every: u64) -> (TempDir, Vec<u8>) {
    let dir = TempDir::new(tag, false);
    let (mut j, _) = Journal::open(dir.path(), small(1 << 30, index_every)).unwrap();
    j.start_session(7, 1).unwrap();
    let all = fill(&mut j, sizes);
    drop(j);
    (dir, all)
}

/// Frame boundaries of `bytes` (whole frames): (offset, sequence).
fn boundaries(bytes: &[u8]) -> Vec<(usize, u64)> {
    let mut at = 0;
    SliceParser::new(bytes)
        .filter_map(|e| match e {
            Event::Frame(m) => {
                let b = (at, m.sequence());
                at += m.len();
                Some(b)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_tail_cut_at_every_byte_of_its_last_frames_recovers_the_frames_before() {
    let sizes = [3, 1, 7, 2, 1, 1, 4, 1, 1, 2];
    let (dir, all) = one_segment("cut", &sizes, 128);
    let bounds = boundaries(&all);
    // The last six frames (and the end of the one before).
    let from = bounds[bounds.len() - 6].0 - 1;
    for cut in from..=all.len() {
        let work = TempDir::new("cut-work", false);
        copy_dir(dir.path(), work.path());
        let seg = &segments(work.path())[0];
        fs::OpenOptions::new()
            .write(true)
            .open(seg)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let whole: Vec<&(usize, u64)> = bounds
            .iter()
            .filter(|(at, s)| at + if s % 3 == 0 { 40 } else { 44 } <= cut)
            .collect();
        let good_end = whole
            .last()
            .map_or(0, |(at, s)| at + if s % 3 == 0 { 40 } else { 44 });
        let next = whole.last().map_or(1, |(_, s)| s + 1);
        let (mut j, rec) = Journal::open(work.path(), small(1 << 30, 128)).unwrap();
        assert_eq!(rec.session.unwrap().next, next, "cut at {cut}");
        match rec.truncated {
            None => assert_eq!(cut, good_end, "cut at {cut}"),
            Some(t) => assert_eq!(
                (t.offset, t.bytes),
                (good_end as u64, (cut - good_end) as u64),
                "cut at {cut}"
            ),
        }
        // The journal goes on with the very numbers that were cut.
        let rest = batch(next, 3);
        j.append(&rest).unwrap();
        drop(j);
        let report = check(work.path()).unwrap();
        assert!(
            !report.is_damaged() && report.torn_tail.is_none(),
            "{report:?}"
        );
        let (read, end) = read_all(work.path(), 1);
        end.unwrap();
        let mut expected = all[..good_end].to_vec();
        expected.extend_from_slice(rest.bytes());
        assert_eq!(read, expected, "cut at {cut}");
    }
}

#[test]
fn a_byte_damaged_in_the_tail_cuts_the_tail_from_its_frame() {
    let (dir, all) = one_segment("tailflip", &[5, 5, 5, 5], 100);
    let bounds = boundaries(&all);
    let (last_at, last_seq) = bounds[bounds.len() - 1];
    for offset in last_at..all.len() {
        let work = TempDir::new("tailflip-work", false);
        copy_dir(dir.path(), work.path());
        flip(&segments(work.path())[0], offset as u64);
        let (j, rec) = Journal::open(work.path(), small(1 << 30, 100)).unwrap();
        assert_eq!(j.next_sequence(), last_seq, "flip at {offset}");
        let t = rec.truncated.unwrap();
        assert_eq!(
            (t.offset, t.bytes),
            (last_at as u64, (all.len() - last_at) as u64)
        );
    }
}

#[test]
fn damage_in_the_middle_is_reported_by_check_and_stops_a_reader() {
    let dir = TempDir::new("middle", false);
    let (mut j, _) = Journal::open(dir.path(), small(4096, 512)).unwrap();
    j.start_session(9, 1).unwrap();
    let all = fill(&mut j, &[10; 40]);
    let segs = segments(dir.path());
    assert!(segs.len() >= 4, "{segs:?}");
    // A bit flipped in the second segment (sealed, not the tail).
    flip(&segs[1], 1000);
    let report = check(dir.path()).unwrap();
    assert!(report.is_damaged());
    assert_eq!(report.damage[0].path, segs[1]);
    assert!(report.damage[0].offset <= 1000 && report.damage[0].offset + 44 > 1000);
    // The checked read path stops at the damaged frame: what came before it
    // is whole, nothing after it is served, no silent gap.
    let (read, end) = read_all(dir.path(), 1);
    assert!(
        matches!(end, Err(JournalError::Damaged { ref path, .. }) if *path == segs[1]),
        "{end:?}"
    );
    let before = fs::metadata(&segs[0]).unwrap().len() as usize;
    assert!(read.len() <= before + 1000 && all.starts_with(&read));
    let seqs = sequences(&read);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // The writer does not read the middle: it opens and appends at once.
    let more = batch(j.next_sequence(), 2);
    j.append(&more).unwrap();
    drop(j);
    let (j, rec) = Journal::open(dir.path(), small(4096, 512)).unwrap();
    assert!(rec.truncated.is_none());
    assert_eq!(j.next_sequence(), 403);
    drop(j);

    // A middle segment cut short: both paths stop, `sendfile`'s too.
    let dir = TempDir::new("middle-cut", false);
    let (mut j, _) = Journal::open(dir.path(), small(4096, 512)).unwrap();
    j.start_session(9, 1).unwrap();
    fill(&mut j, &[10; 40]);
    let segs = segments(dir.path());
    let len = fs::metadata(&segs[1]).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&segs[1])
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    assert!(check(dir.path()).unwrap().is_damaged());
    let mut r = JournalReader::open(dir.path(), 1).unwrap();
    let mut result = Ok(None);
    for _ in 0..1000 {
        result = r.next_range(u64::MAX, 1 << 20);
        if !matches!(result, Ok(Some(_))) {
            break;
        }
    }
    assert!(
        matches!(result, Err(JournalError::Damaged { .. })),
        "{result:?}"
    );
    // It stays stopped.
    assert!(r.next_range(u64::MAX, 1 << 20).is_err());

    // A segment deleted by hand in the middle: check says so, a reader
    // reaching it stops with Missing, the writer still opens.
    let dir = TempDir::new("middle-gone", false);
    let (mut j, _) = Journal::open(dir.path(), small(4096, 512)).unwrap();
    j.start_session(9, 1).unwrap();
    fill(&mut j, &[10; 40]);
    drop(j);
    let segs = segments(dir.path());
    fs::remove_file(&segs[2]).unwrap();
    fs::remove_file(index_of(&segs[2])).unwrap();
    let report = check(dir.path()).unwrap();
    assert!(report.is_damaged(), "{report:?}");
    let (read, end) = read_all(dir.path(), 1);
    assert!(matches!(end, Err(JournalError::Missing { .. })), "{end:?}");
    let seqs = sequences(&read);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    Journal::open(dir.path(), small(4096, 512)).unwrap();
}

#[derive(Clone, Debug)]
enum Harm {
    /// Cut the last segment at this fraction of its length.
    Cut(f64),
    /// Flip a byte at this fraction of the whole journal.
    Flip(f64),
    /// Junk appended to the last segment.
    Junk(Vec<u8>),
    /// The index of the last segment cut at this fraction.
    CutIndex(f64),
    /// Flip a byte at this fraction of all the indexes (headers included).
    FlipIndex(f64),
}

fn harm() -> impl Strategy<Value = Harm> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Harm::Cut),
        (0.0..1.0f64).prop_map(Harm::Flip),
        proptest::collection::vec(any::<u8>(), 1..100).prop_map(Harm::Junk),
        (0.0..1.0f64).prop_map(Harm::CutIndex),
        (0.0..1.0f64).prop_map(Harm::FlipIndex),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("TICKWIRE_JOURNAL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    /// Whatever is cut or damaged: open never fails nor panics; afterwards
    /// there is no torn tail; a reader from 1 gives a prefix of what was
    /// written, byte for byte, with no gap, and ends either cleanly (then
    /// it holds everything the writer recovered) or with an error; the
    /// writer continues from the recovered next sequence.
    #[test]
    fn random_cuts_and_corruptions_never_serve_a_silent_gap(
        sizes in proptest::collection::vec(1usize..40, 1..40),
        segment_kib in 1u64..8,
        index_every in prop_oneof![Just(64u64), Just(300), Just(4096)],
        harms in proptest::collection::vec(harm(), 1..4),
    ) {
        let dir = TempDir::new("prop", false);
        let cfg = small(segment_kib << 10, index_every);
        let (mut j, _) = Journal::open(dir.path(), cfg.clone()).unwrap();
        j.start_session(5, 1).unwrap();
        let all = fill(&mut j, &sizes);
        drop(j);
        let segs = segments(dir.path());
        let last = segs.last().unwrap().clone();
        for h in &harms {
            match h {
                Harm::Cut(f) => {
                    let len = fs::metadata(&last).unwrap().len();
                    let f2 = fs::OpenOptions::new().write(true).open(&last).unwrap();
                    f2.set_len((len as f64 * f) as u64).unwrap();
                }
                Harm::Flip(f) => {
                    let total: u64 = segs.iter().map(|s| fs::metadata(s).unwrap().len()).sum();
                    let mut at = (total as f64 * f) as u64;
                    for s in &segs {
                        let len = fs::metadata(s).unwrap().len();
                        if at < len { flip(s, at); break; }
                        at -= len;
                    }
                }
                Harm::Junk(junk) => {
                    let mut bytes = fs::read(&last).unwrap();
                    bytes.extend_from_slice(junk);
                    fs::write(&last, bytes).unwrap();
                }
                Harm::FlipIndex(f) => {
                    let idxs: Vec<PathBuf> = segs.iter().map(|s| index_of(s)).collect();
                    let total: u64 = idxs.iter().map(|s| fs::metadata(s).unwrap().len()).sum();
                    let mut at = (total as f64 * f) as u64;
                    for s in &idxs {
                        let len = fs::metadata(s).unwrap().len();
                        if at < len { flip(s, at); break; }
                        at -= len;
                    }
                }
                Harm::CutIndex(f) => {
                    let idx = index_of(&last);
                    let len = fs::metadata(&idx).unwrap().len();
                    let keep = (128 + ((len - 128) as f64 * f) as u64).min(len);
                    fs::OpenOptions::new().write(true).open(&idx).unwrap().set_len(keep).unwrap();
                }
            }
        }
        let (mut j, rec) = Journal::open(dir.path(), cfg.clone()).unwrap();
        let next = rec.session.unwrap().next;
        let report = check(dir.path()).unwrap();
        prop_assert!(report.torn_tail.is_none(), "{:?}", report);
        let (read, end) = read_all(dir.path(), 1);
        prop_assert!(all.starts_with(&read), "served bytes that were never written");
        let seqs = sequences(&read);
        prop_assert_eq!(&seqs, &(1..=seqs.len() as u64).collect::<Vec<_>>());
        // A reader that stops has met damage `check` reports; a journal
        // `check` finds whole is read whole, up to what open recovered.
        if end.is_err() {
            prop_assert!(report.is_damaged(), "a reader error without damage found: {:?}", end);
        }
        if !report.is_damaged() {
            prop_assert!(end.is_ok(), "{:?}", end);
            prop_assert_eq!(seqs.len() as u64 + 1, next);
        }
        // The journal goes on from `next` (or in a new session when the
        // last segment's writer can no longer be told: its header was hit).
        let next = if rec.new_session_required {
            j.start_session(6, 1).unwrap();
            1
        } else {
            next
        };
        let b = batch(next, 2);
        j.append(&b).unwrap();
        drop(j);
        let (j, _) = Journal::open(dir.path(), cfg).unwrap();
        prop_assert_eq!(j.next_sequence(), next + 2);
    }
}

#[test]
fn a_torn_or_lagging_index_is_rebuilt_from_the_tail() {
    let (dir, all) = one_segment("index", &[20; 30], 256);
    let seg = &segments(dir.path())[0];
    let idx = index_of(seg);
    let full = fs::read(&idx).unwrap();
    assert!(full.len() > 128 + 32 * 5, "{}", full.len());
    // Half an entry torn off, then garbage after a valid prefix, then no entries.
    for keep in [full.len() - 16, 128 + 32 * 2 + 7, 128] {
        let work = TempDir::new("index-work", false);
        copy_dir(dir.path(), work.path());
        let idx = index_of(&segments(work.path())[0]);
        let mut bytes = full[..keep].to_vec();
        bytes.extend_from_slice(&[0x55; 40]);
        fs::write(&idx, bytes).unwrap();
        let (j, rec) = Journal::open(work.path(), small(1 << 30, 256)).unwrap();
        assert!(rec.truncated.is_none());
        assert_eq!(j.next_sequence(), 601);
        drop(j);
        assert!(!check(work.path()).unwrap().is_damaged());
        assert!(fs::metadata(&idx).unwrap().len() >= 128 + 32 * 5, "rebuilt");
        let mut r = JournalReader::open(work.path(), 333).unwrap();
        let mut buf = Vec::new();
        let c = r.read(u64::MAX, 1 << 20, &mut buf).unwrap().unwrap();
        assert_eq!((c.first, sequences(&buf)[0]), (333, 333));
        let at = boundaries(&all)[332].0;
        assert_eq!(buf, all[at..at + buf.len()]);
    }
}

#[test]
fn segments_roll_and_retention_deletes_whole_oldest_segments() {
    let dir = TempDir::new("retain", false);
    let cfg = JournalConfig {
        retain_bytes: Some(20_000),
        ..small(4096, 1024)
    };
    let (mut j, _) = Journal::open(dir.path(), cfg.clone()).unwrap();
    j.start_session(3, 1).unwrap();
    let all = fill(&mut j, &[20; 100]); // ~86 KB
    let segs = segments(dir.path());
    let total: u64 = segs.iter().map(|s| fs::metadata(s).unwrap().len()).sum();
    assert!(total <= 20_000 + 4096, "{total}");
    assert!(segs.len() >= 5, "{segs:?}");
    for s in &segs {
        assert!(fs::metadata(s).unwrap().len() <= 4096);
    }
    assert!(j.stats().segments_deleted > 0);
    let oldest = j.oldest();
    assert!(oldest > 1);
    // Names sort in order; each starts where the one before ended.
    let firsts: Vec<u64> = segs
        .iter()
        .map(|s| {
            s.file_stem().unwrap().to_str().unwrap()[28..]
                .parse()
                .unwrap()
        })
        .collect();
    assert!(firsts.windows(2).all(|w| w[0] < w[1]) && firsts[0] == oldest);
    // A reader from 1 starts at the oldest held (as a login older than the
    // retention does, protocol section 4.2).
    let r = JournalReader::open(dir.path(), 1).unwrap();
    assert_eq!((r.position(), r.oldest()), (oldest, oldest));
    let (read, end) = read_all(dir.path(), 1);
    end.unwrap();
    assert!(all.ends_with(&read) && sequences(&read)[0] == oldest);
    assert!(!check(dir.path()).unwrap().is_damaged());
    drop(j);

    // By age: everything but the segment being written.
    let cfg = JournalConfig {
        retain_age: Some(Duration::from_secs(60)),
        ..small(4096, 1024)
    };
    let (mut j, _) = Journal::open(dir.path(), cfg).unwrap();
    let n = j.segments();
    assert_eq!(j.apply_retention(SystemTime::now()).unwrap(), 0);
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(j.apply_retention(later).unwrap(), n - 1);
    assert_eq!(segments(dir.path()).len(), 1);
    fill(&mut j, &[1]);
}

/// The server's cold source opened at a sequence retention deleted after
/// the server chose it (a login accepted at the oldest held, the oldest
/// segment deleted a moment later, before the replay opens it): an error,
/// which closes that replay clearly, never a reader that starts at the new
/// oldest (a gap no client is told about). Found by
/// `tests/journal_server.rs::serve_journal_retain_*` under load.
#[test]
fn the_cold_source_refuses_a_start_that_retention_deleted_meanwhile() {
    use tickwire::journal::JournalCold;
    use tickwire::session::cold::ColdSource;
    let dir = TempDir::new("cold-deleted", false);
    let (mut j, _) = Journal::open(dir.path(), small(4096, 1024)).unwrap();
    j.start_session(6, 1).unwrap();
    fill(&mut j, &[10; 60]);
    let cold = JournalCold::new(&j);
    let oldest = cold.oldest(6).unwrap();
    assert_eq!(oldest, 1);
    assert!(cold.open(6, oldest).is_ok());
    // Retention deletes the oldest segment (as `expire` does: both files).
    let segs = segments(dir.path());
    fs::remove_file(&segs[0]).unwrap();
    fs::remove_file(index_of(&segs[0])).unwrap();
    let err = cold.open(6, oldest).expect_err("refused");
    assert!(err.to_string().contains("no longer holds"), "{err}");
    // From a sequence still held: a reader from exactly there.
    let second: u64 = segs[1].file_stem().unwrap().to_str().unwrap()[28..]
        .parse()
        .unwrap();
    let mut r = cold.open(6, second).unwrap();
    let mut buf = Vec::new();
    let c = r.read(u64::MAX, 1 << 20, &mut buf).unwrap().unwrap();
    assert_eq!((c.first, sequences(&buf)[0]), (second, second));
}

#[test]
fn a_reader_keeps_its_segment_when_it_is_deleted_and_stops_at_a_missing_one() {
    let dir = TempDir::new("deleted", false);
    let (mut j, _) = Journal::open(dir.path(), small(4096, 1024)).unwrap();
    j.start_session(4, 1).unwrap();
    let all = fill(&mut j, &[10; 60]);
    let mut r = JournalReader::open(dir.path(), 1).unwrap();
    let mut buf = Vec::new();
    let mut got = Vec::new();
    r.read(u64::MAX, 1000, &mut buf).unwrap().unwrap();
    got.extend_from_slice(&buf);
    // Retention (or a hand) deletes the segment it reads and the next one.
    let segs = segments(dir.path());
    let first_len = fs::metadata(&segs[0]).unwrap().len();
    for s in &segs[..2] {
        fs::remove_file(s).unwrap();
        fs::remove_file(index_of(s)).unwrap();
    }
    let err = loop {
        match r.read(u64::MAX, 1000, &mut buf) {
            Ok(Some(_)) => got.extend_from_slice(&buf),
            Ok(None) => panic!("a silent end"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, JournalError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("deleted"), "{err}");
    // What it served is the whole first segment, from its open descriptor.
    assert_eq!(got.len() as u64, first_len);
    assert!(all.starts_with(&got));
    let seqs = sequences(&got);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // A new reader starts at the oldest segment still there.
    let r = JournalReader::open(dir.path(), 1).unwrap();
    assert!(r.position() > seqs.len() as u64);
}

#[test]
fn foreign_files_other_versions_and_a_second_writer_are_refused_untouched() {
    let dir = TempDir::new("foreign", false);
    let (mut j, _) = Journal::open(dir.path(), small(4096, 1024)).unwrap();
    j.start_session(1, 1).unwrap();
    fill(&mut j, &[10; 20]);
    // A second writer.
    assert!(matches!(
        Journal::open(dir.path(), small(4096, 1024)),
        Err(JournalError::Locked { .. })
    ));
    drop(j);
    let before = snapshot(dir.path());
    // Another server's name.
    let other = JournalConfig {
        server: "feed-b".into(),
        ..small(4096, 1024)
    };
    let e = Journal::open(dir.path(), other).unwrap_err();
    assert!(matches!(e, JournalError::Foreign { .. }), "{e}");
    assert!(e.to_string().contains("feed-b"), "{e}");
    // Another journal's segment mixed in (numbered after ours).
    let theirs = TempDir::new("foreign-theirs", false);
    let (mut t, _) = Journal::open(theirs.path(), small(4096, 1024)).unwrap();
    t.start_session(1, 1).unwrap();
    fill(&mut t, &[10]);
    drop(t);
    let their_seg = &segments(theirs.path())[0];
    let name = |ext: &str| {
        dir.path().join(format!(
            "0000000099-0000000000000001-00000000000000000201.{ext}"
        ))
    };
    fs::copy(their_seg, name("twr")).unwrap();
    fs::copy(index_of(their_seg), name("twi")).unwrap();
    let before_mixed = snapshot(dir.path());
    let e = Journal::open(dir.path(), small(4096, 1024)).unwrap_err();
    assert!(matches!(e, JournalError::Foreign { .. }), "{e}");
    assert!(
        e.to_string().contains("another journal") || e.to_string().contains("belongs to journal"),
        "{e}"
    );
    assert_eq!(snapshot(dir.path()), before_mixed, "nothing touched");
    fs::remove_file(name("twr")).unwrap();
    fs::remove_file(name("twi")).unwrap();
    // A segment without its index.
    fs::copy(their_seg, name("twr")).unwrap();
    assert!(matches!(
        Journal::open(dir.path(), small(4096, 1024)),
        Err(JournalError::Damaged { .. })
    ));
    fs::remove_file(name("twr")).unwrap();
    assert_eq!(snapshot(dir.path()), before);
    // Another layout or protocol version.
    let manifest = dir.path().join("JOURNAL");
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(&manifest, text.replace("protocol 1 3", "protocol 2 0")).unwrap();
    let e = Journal::open(dir.path(), small(4096, 1024)).unwrap_err();
    assert!(matches!(e, JournalError::Version { .. }), "{e}");
    fs::write(&manifest, text.replace("protocol 1 3", "protocol 1 9")).unwrap();
    assert!(matches!(
        Journal::open(dir.path(), small(4096, 1024)),
        Err(JournalError::Version { .. })
    ));
    fs::write(&manifest, &text).unwrap();
    assert_eq!(snapshot(dir.path()), before);
    // Segments without a manifest; a file where the directory should be.
    let bare = TempDir::new("foreign-bare", false);
    copy_dir(dir.path(), bare.path());
    fs::remove_file(bare.path().join("JOURNAL")).unwrap();
    assert!(matches!(
        Journal::open(bare.path(), small(4096, 1024)),
        Err(JournalError::Foreign { .. })
    ));
    let file = bare.path().join("JOURNAL-not-a-dir");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(
        Journal::open(&file, small(4096, 1024)),
        Err(JournalError::Foreign { .. })
    ));
    // Ours still opens.
    Journal::open(dir.path(), small(4096, 1024)).unwrap();
}

#[test]
fn a_crash_while_creating_a_segment_leaves_an_index_that_open_removes() {
    let dir = TempDir::new("orphan", false);
    let (mut j, _) = Journal::open(dir.path(), small(4096, 1024)).unwrap();
    j.start_session(1, 1).unwrap();
    fill(&mut j, &[10; 20]);
    drop(j);
    let segs = segments(dir.path());
    let last = segs.last().unwrap();
    // The next segment's index was created, its segment not yet.
    let stem = last.file_stem().unwrap().to_str().unwrap();
    let number: u64 = stem[..10].parse().unwrap();
    let orphan = dir
        .path()
        .join(format!("{:010}{}.twi", number + 1, &stem[10..]));
    fs::copy(index_of(last), &orphan).unwrap();
    let (j, rec) = Journal::open(dir.path(), small(4096, 1024)).unwrap();
    assert_eq!(rec.removed, vec![orphan.clone()]);
    assert!(!orphan.exists());
    assert_eq!(j.next_sequence(), 201);
}

#[test]
fn an_unreadable_index_header_stops_readers_but_not_the_writer() {
    let dir = TempDir::new("header", false);
    let (mut j, _) = Journal::open(dir.path(), small(4096, 1024)).unwrap();
    j.start_session(1, 1).unwrap();
    fill(&mut j, &[10; 40]);
    drop(j);
    let segs = segments(dir.path());
    // In the middle: open goes on (warning), readers and check stop there.
    flip(&index_of(&segs[1]), 20);
    let (j, rec) = Journal::open(dir.path(), small(4096, 1024)).unwrap();
    assert_eq!(rec.warnings.len(), 1, "{:?}", rec.warnings);
    assert_eq!(j.next_sequence(), 401);
    drop(j);
    assert!(check(dir.path()).unwrap().is_damaged());
    let (read, end) = read_all(dir.path(), 1);
    assert!(matches!(end, Err(JournalError::Damaged { .. })), "{end:?}");
    assert_eq!(read.len() as u64, fs::metadata(&segs[0]).unwrap().len());
    // The last one: rewritten from its name, its writer unknown, so a new
    // session is required (what reached clients cannot be vouched for).
    let last = segments(dir.path()).last().unwrap().clone();
    flip(&index_of(&last), 40);
    let (mut j, rec) = Journal::open(dir.path(), small(4096, 1024)).unwrap();
    assert!(rec.new_session_required, "{rec:?}");
    assert_eq!(rec.session.unwrap().next, 401);
    j.start_session(2, 1).unwrap();
    fill(&mut j, &[1]);
}

#[test]
fn holes_are_kept_as_holes_and_out_of_order_batches_refused() {
    let dir = TempDir::new("holes", false);
    let (mut j, _) = Journal::open(dir.path(), small(1 << 20, 256)).unwrap();
    j.start_session(8, 1).unwrap();
    j.append(&batch(1, 5)).unwrap();
    // A relay's hole: 6..=9 never arrived upstream.
    j.append(&batch(10, 5)).unwrap();
    assert!(matches!(
        j.append(&batch(12, 1)),
        Err(JournalError::OutOfOrder {
            next: 15,
            first: 12
        })
    ));
    let report = check(dir.path()).unwrap();
    assert!(!report.is_damaged());
    assert_eq!(
        (report.sessions[0].holes, report.sessions[0].missing),
        (1, 4)
    );
    let mut r = JournalReader::open(dir.path(), 7).unwrap();
    let mut buf = Vec::new();
    let c = r.read(u64::MAX, 1 << 20, &mut buf).unwrap().unwrap();
    assert_eq!((c.first, c.end), (7, 15));
    assert_eq!(sequences(&buf), (10..15).collect::<Vec<_>>());
    drop(j);
    let (j, _) = Journal::open(dir.path(), small(1 << 20, 256)).unwrap();
    assert_eq!(j.next_sequence(), 15);
}

#[test]
fn ranges_are_whole_frames_below_the_limit_and_sendfile_delivers_them() {
    use std::net::{TcpListener, TcpStream};
    let dir = TempDir::new("ranges", false);
    let (mut j, _) = Journal::open(dir.path(), small(64 << 10, 4096)).unwrap();
    j.start_session(2, 1).unwrap();
    let sizes: Vec<usize> = (0..300).map(|i| 1 + (i * 37) % 90).collect();
    let all = fill(&mut j, &sizes);
    let last = j.next_sequence();
    let bounds = boundaries(&all);
    let offset_of = |seq: u64| bounds.get(seq as usize - 1).map_or(all.len(), |b| b.0);
    // Random starts and limits, read by ranges: whole frames, in [first, end), never past the limit.
    let mut rng = 12345u64;
    for _ in 0..50 {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let from = 1 + (rng >> 33) % (last - 1);
        let limit = from + (rng >> 13) % (last - from + 1);
        let mut r = j.reader(from).unwrap();
        let mut got = Vec::new();
        while let Some(range) = r
            .next_range(limit, 1 + ((rng >> 40) % 100_000) as usize)
            .unwrap()
        {
            assert!(range.end <= limit.max(range.first));
            let mut b = vec![0u8; range.len];
            range.file.read_exact_at_compat(&mut b, range.offset);
            for s in sequences(&b) {
                assert!(s >= range.first && s < range.end);
            }
            got.extend(b);
        }
        assert_eq!(
            got,
            &all[offset_of(from)..offset_of(limit)],
            "{from}..{limit}"
        );
    }
    // The whole journal through sendfile to a socket.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let out = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    let receiver = std::thread::spawn(move || {
        let mut v = Vec::new();
        peer.read_to_end(&mut v).unwrap();
        v
    });
    let mut r = j.reader(1).unwrap();
    while let Some(range) = r.next_range(j.durable_end(), 1 << 20).unwrap() {
        let mut done = 0;
        while done < range.len {
            done += tickwire::journal::send_range(
                &range.file,
                range.offset + done as u64,
                range.len - done,
                &out,
            )
            .unwrap();
        }
    }
    drop(out);
    assert_eq!(receiver.join().unwrap(), all);
}

/// `read_exact_at` on every platform the tests run on.
trait ReadAtCompat {
    fn read_exact_at_compat(&self, buf: &mut [u8], offset: u64);
}

impl ReadAtCompat for fs::File {
    fn read_exact_at_compat(&self, buf: &mut [u8], offset: u64) {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset).unwrap();
    }
}

#[test]
fn group_commit_syncs_fewer_times_than_batches_and_every_publish_is_durable() {
    let dir = TempDir::new("group", false);
    let (mut j, _) = Journal::open(dir.path(), config(FsyncMode::Always)).unwrap();
    j.start_session(6, 1).unwrap();
    let sync = j.sync_handle();
    let syncs_before = sync.syncs();
    let journal = Arc::new(Mutex::new(j));
    const THREADS: u64 = 8;
    const BATCHES: u64 = 100;
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (journal, sync) = (Arc::clone(&journal), sync.clone());
            std::thread::spawn(move || {
                for _ in 0..BATCHES {
                    let ticket = {
                        let mut j = journal.lock().unwrap();
                        let b = batch(j.next_sequence(), 4);
                        j.append(&b).unwrap()
                    };
                    // Released to clients only once durable.
                    sync.wait(ticket).unwrap();
                    assert!(sync.durable_end() >= ticket.end());
                    assert!(sync.synced_end() >= ticket.end());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let syncs = sync.syncs() - syncs_before;
    let batches = THREADS * BATCHES;
    eprintln!("{batches} batches from {THREADS} threads: {syncs} fdatasyncs");
    assert!(syncs < batches, "{syncs} syncs for {batches} batches");
    assert_eq!(sync.durable_end(), batches * 4 + 1);
    // The sync needs no publish lock: hold it while another thread waits.
    let ticket = {
        let mut j = journal.lock().unwrap();
        let b = batch(j.next_sequence(), 1);
        j.append(&b).unwrap()
    };
    let held = journal.lock().unwrap();
    let waiter = {
        let sync = sync.clone();
        std::thread::spawn(move || sync.wait(ticket))
    };
    let started = Instant::now();
    while !waiter.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the sync waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    waiter.join().unwrap().unwrap();
    drop(held);
    drop(Arc::try_unwrap(journal).unwrap());
    // Everything returned is there after a reopen.
    let (j, _) = Journal::open(dir.path(), config(FsyncMode::Always)).unwrap();
    assert_eq!(j.next_sequence(), batches * 4 + 2);
    let (read, end) = read_all(dir.path(), 1);
    end.unwrap();
    assert_eq!(sequences(&read).len() as u64, batches * 4 + 1);
}

#[test]
fn interval_mode_syncs_in_the_background_and_never_waits_for_nothing() {
    let dir = TempDir::new("interval", false);
    let (mut j, _) = Journal::open(
        dir.path(),
        config(FsyncMode::Interval(Duration::from_millis(20))),
    )
    .unwrap();
    j.start_session(1, 1).unwrap();
    let sync = j.sync_handle();
    let before = sync.syncs();
    fill(&mut j, &[10]);
    // Released at once (written), synced within the interval.
    assert_eq!(sync.durable_end(), 11);
    let started = Instant::now();
    while sync.synced_end() < 11 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no background sync"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(sync.syncs() > before);
    // Quiet: no sync for nothing.
    let quiet = sync.syncs();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sync.syncs(), quiet);
    // Never: waits return at once and nothing is synced.
    let dir = TempDir::new("never", false);
    let (mut j, _) = Journal::open(dir.path(), config(FsyncMode::Never)).unwrap();
    j.start_session(1, 1).unwrap();
    let t = j.append(&batch(1, 3)).unwrap();
    j.sync_handle().wait(t).unwrap();
    assert_eq!((j.durable_end(), j.sync_handle().syncs()), (4, 0));
}

#[test]
fn recovery_reads_the_tail_only() {
    // Damage in an old segment is not seen by open (it does not read it):
    // the proof that recovery is bounded by the tail and the indexes.
    let dir = TempDir::new("bounded", false);
    let (mut j, _) = Journal::open(dir.path(), small(8192, 1024)).unwrap();
    j.start_session(1, 1).unwrap();
    fill(&mut j, &[50; 40]);
    drop(j);
    let segs = segments(dir.path());
    flip(&segs[0], 500);
    flip(&segs[segs.len() / 2], 4000);
    let (j, rec) = Journal::open(dir.path(), small(8192, 1024)).unwrap();
    assert!(rec.truncated.is_none());
    assert_eq!(j.next_sequence(), 2001);
    assert_eq!(check(dir.path()).unwrap().damage.len(), 2);
}

#[test]
fn a_journal_reads_as_one_recording() {
    let dir = TempDir::new("recording", false);
    let (mut j, _) = Journal::open(dir.path(), small(4096, 1024)).unwrap();
    j.start_session(0x11, 1).unwrap();
    let a = fill(&mut j, &[10; 20]);
    j.start_session(0x22, 1).unwrap();
    let b = fill(&mut j, &[10; 3]);
    drop(j);
    let mut rec = Recording::open(dir.path()).unwrap();
    let mut bytes = Vec::new();
    rec.read_to_end(&mut bytes).unwrap();
    let mut sessions = Vec::new();
    let mut data = Vec::new();
    let mut at = 0;
    for e in SliceParser::new(&bytes) {
        match e {
            Event::NewSession {
                session_id,
                sequence,
            } => sessions.push((session_id, sequence)),
            Event::Frame(m) => {
                if m.msg_type().is_data() {
                    data.extend_from_slice(m.as_bytes());
                }
                at += m.len();
            }
            other => panic!("{other:?} at {at}"),
        }
    }
    assert_eq!(sessions, [(0x11, 1), (0x22, 1)]);
    assert_eq!(data, [a, b].concat());
    // A segment is a plain recording too.
    let seg = fs::read(&segments(dir.path())[0]).unwrap();
    assert!(SliceParser::new(&seg).all(|e| matches!(e, Event::Frame(_))));
}

#[test]
fn a_full_disk_fails_the_append_whole_and_the_same_numbers_go_on_later() {
    const TEST: &str = "a_full_disk_fails_the_append_whole_and_the_same_numbers_go_on_later";
    let fs_ = match Mount::small_tmpfs() {
        Ok(m) => m,
        Err(why) => return skip_unprivileged(TEST, &why),
    };
    let root = fs_.0.path();
    // Room that can be given back.
    let filler = root.join("filler");
    fs::write(&filler, vec![1u8; 256 << 10]).unwrap();
    let dir = root.join("journal");
    let cfg = JournalConfig {
        fsync: FsyncMode::Always,
        segment_bytes: 256 << 10,
        index_every: 4096,
        ..JournalConfig::default()
    };
    let (mut j, _) = Journal::open(&dir, cfg.clone()).unwrap();
    j.start_session(5, 1).unwrap();
    let sync = j.sync_handle();
    let mut written = Vec::new();
    let failed = loop {
        let b = batch(j.next_sequence(), 50);
        match j.append(&b) {
            Ok(t) => {
                sync.wait(t).unwrap();
                written.extend_from_slice(b.bytes());
            }
            Err(e) => break (b, e),
        }
        assert!(written.len() < 4 << 20, "the disk never filled");
    };
    let (b, e) = failed;
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::StorageFull), "{e}");
    assert_eq!(j.next_sequence(), b.first(), "no number consumed");
    // Nothing corrupt: every segment is whole, the failed batch left nothing.
    let report = check(&dir).unwrap();
    assert!(
        !report.is_damaged() && report.torn_tail.is_none(),
        "{report:?}"
    );
    let total: u64 = report.sessions.iter().map(|s| s.bytes).sum();
    assert_eq!(total, written.len() as u64);
    // Still full: still refused, still whole.
    assert!(j.append(&b).is_err());
    assert_eq!(j.next_sequence(), b.first());
    // Space returns: the same batch, the same numbers.
    fs::remove_file(&filler).unwrap();
    let t = j.append(&b).unwrap();
    sync.wait(t).unwrap();
    written.extend_from_slice(b.bytes());
    let more = batch(j.next_sequence(), 10);
    j.append(&more).unwrap();
    written.extend_from_slice(more.bytes());
    drop(j);
    let (j, rec) = Journal::open(&dir, cfg).unwrap();
    assert!(rec.truncated.is_none());
    assert_eq!(j.session_id(), Some(5));
    drop(j);
    let (read, end) = read_all(&dir, 1);
    end.unwrap();
    assert_eq!(read, written);
}

#[test]
fn a_read_only_directory_is_a_clear_error_at_open_and_nothing_is_touched() {
    const TEST: &str = "a_read_only_directory_is_a_clear_error_at_open_and_nothing_is_touched";
    let source = TempDir::new("ro-source", false);
    let (mut j, _) = Journal::open(source.path(), small(4096, 1024)).unwrap();
    j.start_session(1, 1).unwrap();
    let all = fill(&mut j, &[10; 20]);
    drop(j);
    // Leave a torn tail: a writable open would cut it.
    let last = segments(source.path()).last().unwrap().clone();
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0xa5, 1, 0x10]);
    fs::write(&last, bytes).unwrap();
    let empty = TempDir::new("ro-empty", false);
    fs::create_dir_all(empty.path()).unwrap();
    let src = source.path().to_str().unwrap().to_owned();
    let ro = match Mount::new("ro", &["--bind", &src]) {
        Ok(m) => m,
        Err(why) => return skip_unprivileged(TEST, &why),
    };
    let target = ro.0.path().to_str().unwrap().to_owned();
    if let Err(why) = run("mount", &["-o", "remount,bind,ro", &target]) {
        return skip_unprivileged(TEST, &why);
    }
    let before = snapshot(source.path());
    let e = Journal::open(ro.0.path(), small(4096, 1024)).unwrap_err();
    assert!(matches!(e, JournalError::ReadOnly { .. }), "{e}");
    assert!(e.to_string().contains("cannot be written"), "{e}");
    assert_eq!(snapshot(source.path()), before, "nothing touched");
    // Reading needs no write: check sees the torn tail, readers read.
    let report = check(ro.0.path()).unwrap();
    assert!(!report.is_damaged() && report.torn_tail.is_some());
    let (read, end) = read_all(ro.0.path(), 1);
    end.unwrap();
    assert_eq!(read, all);
    // An empty read-only directory: no journal can be created in it.
    let e2 = empty.path().to_str().unwrap().to_owned();
    let ro2 = Mount::new("ro2", &["--bind", &e2]).unwrap();
    let t2 = ro2.0.path().to_str().unwrap().to_owned();
    run("mount", &["-o", "remount,bind,ro", &t2]).unwrap();
    let e = Journal::open(ro2.0.path(), small(4096, 1024)).unwrap_err();
    assert!(matches!(e, JournalError::ReadOnly { .. }), "{e}");
    assert_eq!(fs::read_dir(empty.path()).unwrap().count(), 0);
}

/// A segment written in place (Linux) ends in zeros while it is written:
/// the blocks reserved ahead of its content. No reader takes them for
/// data or damage (this process's reader with the writer's mark, another
/// reader without it, the checker, a recording), recovery after a kill
/// cuts them without reporting a torn tail, a torn batch before them is
/// still reported, and a writer that stops cuts them itself. The same
/// holds, zeros aside, with `in_place` off (`pwrite`).
#[test]
fn a_segment_written_in_place_ends_in_reserved_zeros_no_reader_takes_for_data() {
    for in_place in [true, false] {
        let dir = TempDir::new(&format!("zeros-{in_place}"), false);
        let cfg = JournalConfig {
            writes: if in_place {
                WriteMode::InPlace
            } else {
                WriteMode::Direct
            },
            ..small(1 << 30, 4096)
        };
        let (mut j, _) = Journal::open(dir.path(), cfg.clone()).unwrap();
        j.start_session(7, 1).unwrap();
        let all = fill(&mut j, &[50; 40]);
        let seg = segments(dir.path())[0].clone();
        let mapped = in_place && cfg!(all(target_os = "linux", target_pointer_width = "64"));
        // The zeros ahead come from the preparing thread: give it time
        // (bounded).
        let started = Instant::now();
        let mut on_disk = fs::metadata(&seg).unwrap().len();
        while mapped && on_disk <= all.len() as u64 && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
            on_disk = fs::metadata(&seg).unwrap().len();
        }
        if mapped {
            assert!(on_disk > all.len() as u64, "reserved ahead: {on_disk}");
            let tail = fs::read(&seg).unwrap();
            assert!(tail[all.len()..].iter().all(|b| *b == 0));
        } else {
            assert_eq!(on_disk, all.len() as u64);
        }
        // While it is written.
        let mut own = j.reader(1).unwrap();
        let (mut got, mut buf) = (Vec::new(), Vec::new());
        while own.read(u64::MAX, 64 << 10, &mut buf).unwrap().is_some() {
            got.extend_from_slice(&buf);
        }
        assert_eq!(got, all, "in_place {in_place}: the writer's own reader");
        let (read, end) = read_all(dir.path(), 1);
        end.unwrap();
        assert_eq!(
            read, all,
            "in_place {in_place}: a reader without the writer's mark"
        );
        let report = check(dir.path()).unwrap();
        assert!(!report.is_damaged(), "{report:?}");
        assert!(report.torn_tail.is_none(), "{report:?}");
        let mut rec = Vec::new();
        Recording::open(dir.path())
            .unwrap()
            .read_to_end(&mut rec)
            .unwrap();
        assert!(rec.ends_with(&all), "in_place {in_place}: a recording");
        let events: Vec<_> = SliceParser::new(&rec).collect();
        assert!(
            !events.iter().any(|e| matches!(e, Event::Discarded(_))),
            "nothing discarded"
        );
        let n = events
            .iter()
            .filter(|e| matches!(e, Event::Frame(_)))
            .count();
        assert_eq!(n, 1 + 2000, "LoginAccepted, then the frames");

        // Killed now (the page cache as it is: a copy of the directory).
        let killed = TempDir::new(&format!("zeros-killed-{in_place}"), false);
        copy_dir(dir.path(), killed.path());
        let (j2, rec2) = Journal::open(killed.path(), cfg.clone()).unwrap();
        assert!(
            rec2.truncated.is_none(),
            "zeros are not a torn write: {rec2:?}"
        );
        assert_eq!((j2.session_id(), j2.next_sequence()), (Some(7), 2001));
        drop(j2);
        let seg2 = segments(killed.path())[0].clone();
        assert_eq!(fs::metadata(&seg2).unwrap().len(), all.len() as u64);

        // Killed in the middle of a batch: a torn frame before the zeros is
        // reported, and cut with them.
        let torn = TempDir::new(&format!("zeros-torn-{in_place}"), false);
        copy_dir(dir.path(), torn.path());
        let seg3 = segments(torn.path())[0].clone();
        let next = frames(2001, 2);
        let f = fs::OpenOptions::new().write(true).open(&seg3).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, &next[..60], all.len() as u64).unwrap();
        drop(f);
        let (j3, rec3) = Journal::open(torn.path(), cfg.clone()).unwrap();
        let cut = rec3.truncated.expect("a torn frame is reported");
        let first = frames(2001, 1).len();
        assert!(first < 60);
        assert_eq!(
            cut.offset,
            (all.len() + first) as u64,
            "the whole first frame stays"
        );
        assert_eq!(j3.next_sequence(), 2002);
        drop(j3);

        // A writer that stops cuts its zeros itself.
        drop(j);
        assert_eq!(fs::metadata(&seg).unwrap().len(), all.len() as u64);
    }
}
