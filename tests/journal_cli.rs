//! `tickwire journal DIR`, and `dump` / `export` of a journal directory, as
//! a user runs them (journals written with the library).
//!
//! `cargo test --features cli --test journal_cli`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::fs;
use std::path::{Path, PathBuf};

use tickwire::journal::{Journal, JournalConfig};
use tickwire::session::Batch;
use tickwire::synth::Feed;
use tickwire::Sequencer;

#[path = "common/cli.rs"]
mod cli_util;
use cli_util::{text, tickwire};
#[path = "common/fs.rs"]
mod fs_util;
use fs_util::TempDir;

/// A journal with two sessions (ids 0x11 and 0x22), the first over several
/// segments: 1..=2000 then 1..=300 of the synthetic feed. Returns the data
/// frames' bytes.
fn journal(dir: &Path) -> Vec<u8> {
    let config = JournalConfig {
        segment_bytes: 32 << 10,
        index_every: 4 << 10,
        ..JournalConfig::default()
    };
    let (mut j, _) = Journal::open(dir, config).unwrap();
    let mut feed = Feed::new(3, 20);
    let mut all = Vec::new();
    for (session, frames) in [(0x11u64, 2000usize), (0x22, 300)] {
        j.start_session(session, 1).unwrap();
        let mut seq = Sequencer::new();
        for _ in 0..frames / 100 {
            let mut msgs = Vec::new();
            while msgs.len() < 100 {
                let p = feed.next_payload();
                if p.msg_type().is_data() {
                    msgs.push((1_700_000_000_000_000_000 + msgs.len() as u64, p));
                }
            }
            let mut bytes = vec![0u8; 100 * 44];
            let done = seq.encode_batch(&msgs, &mut bytes);
            bytes.truncate(done.bytes);
            all.extend_from_slice(&bytes);
            j.append(&Batch::new(bytes).unwrap()).unwrap();
        }
    }
    j.close().unwrap();
    all
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "twr"))
        .collect();
    v.sort();
    v
}

#[test]
fn journal_lists_sessions_and_segments_and_checks_every_frame() {
    let dir = TempDir::new("journal-cli-list", false);
    journal(dir.path());
    let out = tickwire(&["journal", dir.arg()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("server \"tickwire\", protocol version 1 revision 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("session 0x0000000000000011 (17): 1..=2000 (2000 frames"),
        "{stdout}"
    );
    assert!(
        stdout.contains("session 0x0000000000000022 (34): 1..=300 (300 frames"),
        "{stdout}"
    );
    let segs = segments(dir.path());
    assert!(segs.len() > 3);
    for s in &segs {
        let name = s.file_name().unwrap().to_str().unwrap();
        assert!(stdout.contains(name), "{name} not listed: {stdout}");
    }
    assert!(
        stdout.contains("sealed") && stdout.contains("closed cleanly"),
        "{stdout}"
    );
    assert!(stdout.contains("checked: every checksum"), "{stdout}");

    let out = tickwire(&["journal", dir.arg(), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(v["sessions"][0]["frames"], 2000);
    assert_eq!(v["sessions"][0]["session_id"], 17);
    assert_eq!(v["sessions"][1]["end"], 301);
    assert_eq!(v["damage"].as_array().unwrap().len(), 0);
    assert!(v["torn_tail"].is_null());
}

#[test]
fn journal_exits_1_on_damage_and_0_on_a_torn_tail() {
    let dir = TempDir::new("journal-cli-damage", false);
    journal(dir.path());
    let segs = segments(dir.path());
    // A torn tail: reported, not damage.
    let last = segs.last().unwrap();
    let mut bytes = fs::read(last).unwrap();
    bytes.truncate(bytes.len() - 7);
    fs::write(last, bytes).unwrap();
    let out = tickwire(&["journal", dir.arg()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("torn tail: 37 bytes"), "{stdout}");
    // A flipped bit in the middle: exit 1, the place named.
    let mut bytes = fs::read(&segs[1]).unwrap();
    bytes[5000] ^= 1;
    fs::write(&segs[1], bytes).unwrap();
    let out = tickwire(&["journal", dir.arg()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let name = segs[1].file_name().unwrap().to_str().unwrap();
    assert!(
        stdout.contains("DAMAGE") && stdout.contains(name),
        "{stdout}"
    );
    assert!(stdout.contains("checked: DAMAGED"), "{stdout}");
    assert!(stderr.contains("is damaged in 1 place"), "{stderr}");
    let out = tickwire(&["journal", dir.arg(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["damage"][0]["path"], segs[1].to_str().unwrap());
    // Not a journal.
    let empty = TempDir::new("journal-cli-empty", false);
    fs::create_dir_all(empty.path()).unwrap();
    let out = tickwire(&["journal", empty.arg()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a journal"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn dump_and_export_read_a_journal_directory_and_its_segments() {
    let dir = TempDir::new("journal-cli-dump", false);
    let all = journal(dir.path());
    let out = tickwire(&["dump", dir.arg()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2 + 2 + 2300, "{}", &stdout[..400]);
    assert!(lines[0].contains("\"type\":\"new_session\"") || lines[0].contains("login_accepted"));
    let accepted: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("\"type\":\"login_accepted\""))
        .collect();
    assert_eq!(accepted.len(), 2);
    assert!(accepted[0].contains("\"session_id\":17") && accepted[1].contains("\"session_id\":34"));
    assert!(!stdout.contains("discarded") && !stdout.contains("\"gap\""));
    // The dump of each segment, one after the other, prints the same frames.
    let mut from_segments = Vec::new();
    for s in segments(dir.path()) {
        let out = tickwire(&["dump", s.to_str().unwrap()]);
        assert!(out.status.success());
        from_segments.extend(
            text(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
    }
    let data: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("\"type\":\"quote\"") || l.contains("\"type\":\"trade\""))
        .collect();
    assert_eq!(data, from_segments);
    assert_eq!(data.len() as u64, 2300);
    let _ = all;

    let out_dir = TempDir::new("journal-cli-export", false);
    let out = tickwire(&["export", dir.arg(), "--format", "csv", "-o", out_dir.arg()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let quotes = fs::read_to_string(out_dir.path().join("quotes.csv")).unwrap();
    let trades = fs::read_to_string(out_dir.path().join("trades.csv")).unwrap();
    assert_eq!(
        quotes.lines().count() - 1 + trades.lines().count() - 1,
        2300
    );
    let control = fs::read_to_string(out_dir.path().join("control.csv")).unwrap();
    assert_eq!(
        control
            .lines()
            .filter(|l| l.starts_with("login_accepted"))
            .count(),
        2,
        "{control}"
    );

    // A directory that is not a journal: a clear error.
    let empty = TempDir::new("journal-cli-notjournal", false);
    fs::create_dir_all(empty.path()).unwrap();
    let out = tickwire(&["dump", empty.arg()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a journal"),
        "{}",
        text(&out.stderr)
    );
}

/// `n` data frames of the synthetic feed numbered from `first`, as one
/// batch.
fn batch_from(feed: &mut Feed, first: u64, n: usize) -> Batch {
    let mut msgs = Vec::new();
    while msgs.len() < n {
        let p = feed.next_payload();
        if p.msg_type().is_data() {
            msgs.push((1_700_000_000_000_000_000 + first + msgs.len() as u64, p));
        }
    }
    let mut bytes = vec![0u8; n * 44];
    let done = Sequencer::starting_at(first).encode_batch(&msgs, &mut bytes);
    bytes.truncate(done.bytes);
    Batch::new(bytes).unwrap()
}

/// A relay's journal skips the sequences it never received (PROTOCOL.md
/// A.3): `tickwire journal` counts every such hole and the sequences in it,
/// the one inside a segment and the one where a segment starts (the batch
/// after the hole did not fit in the segment before: the new segment is
/// named after the session's next sequence, 161, and its first frame is
/// 201), in its listing and in its JSON.
#[test]
fn journal_counts_a_relays_holes_inside_a_segment_and_where_one_starts() {
    let dir = TempDir::new("journal-cli-holes", false);
    let config = JournalConfig {
        segment_bytes: 8 << 10,
        index_every: 1 << 10,
        ..JournalConfig::default()
    };
    let (mut j, _) = Journal::open(dir.path(), config).unwrap();
    let mut feed = Feed::new(5, 20);
    j.start_session(0x33, 1).unwrap();
    j.append(&batch_from(&mut feed, 1, 100)).unwrap();
    j.append(&batch_from(&mut feed, 151, 10)).unwrap(); // 101..=150 never came
    j.append(&batch_from(&mut feed, 201, 100)).unwrap(); // 161..=200 never came
    j.close().unwrap();
    let out = tickwire(&["journal", dir.arg(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["sessions"][0];
    let segs = s["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2, "{v}");
    assert_eq!(
        (&segs[0]["first"], &segs[0]["end"], &segs[0]["frames"]),
        (&1.into(), &161.into(), &110.into()),
        "{v}"
    );
    assert_eq!(
        (&segs[1]["first"], &segs[1]["end"], &segs[1]["frames"]),
        (&161.into(), &301.into(), &100.into()),
        "{v}"
    );
    assert_eq!(
        (&s["first"], &s["end"], &s["frames"]),
        (&1.into(), &301.into(), &210.into()),
        "{v}"
    );
    assert_eq!(
        (&s["holes"], &s["missing"]),
        (&2.into(), &90.into()),
        "301 - 1 sequences, 210 frames: 90 missing, in 2 holes: {v}"
    );
    let out = tickwire(&["journal", dir.arg()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("1..=300 (210 frames") && stdout.contains("2 holes, 90 sequences missing"),
        "{stdout}"
    );
}
