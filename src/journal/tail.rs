//! The tail of a segment: where its good frames end, read from its last
//! trustworthy index entry with the resynchronizing parser.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fs::File;
use std::io;

use crate::parse::{DiscardReason, Event, Parser};

use super::layout::{data_frame_at, read_at, Entry, EntryKind};

/// The bytes read at a time.
const READ: usize = 1 << 20;

/// Where a segment's good frames end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tail {
    /// Where the parse began: the last index entry pointing at a valid
    /// frame (or the end, for a seal), else the segment's start.
    pub(crate) scan_from: u64,
    /// The end of the last good frame: everything after it goes.
    pub(crate) good_end: u64,
    /// The session's next sequence after the good frames.
    pub(crate) next: u64,
    /// How many of the index's entries to keep (a prefix).
    pub(crate) keep: usize,
    /// Index entries for the scanned part that the index did not have.
    pub(crate) rebuilt: Vec<Entry>,
    /// The offset of the last position entry kept or rebuilt (0: none).
    pub(crate) last_entry_at: u64,
    /// Why the first byte after `good_end` was not a good frame (`None`:
    /// the parse reached the end, or only zeros follow: see `zeros`).
    pub(crate) stop: Option<String>,
    /// Only zero bytes follow `good_end`: the blocks a segment written in
    /// place reserves ahead of its content (a frame starts with the sync
    /// byte, never with zero), not a torn write. Cut without reporting.
    pub(crate) zeros: bool,
}

/// Reads `seg` (`len` bytes; every frame at `first` or later) from its last
/// trustworthy entry of `entries` to its end and stops at the first byte
/// that is not a good data frame in sequence order.
pub(crate) fn scan(
    seg: &File,
    len: u64,
    first: u64,
    entries: &[Entry],
    index_every: u64,
) -> io::Result<Tail> {
    let (mut scan_from, mut next, mut keep) = (0u64, first, 0usize);
    let mut previous = (0u64, 0u64);
    let monotonic = entries
        .iter()
        .take_while(|e| {
            let ok = e.offset >= previous.0 && e.sequence >= previous.1;
            previous = (e.offset, e.sequence);
            ok
        })
        .count();
    for (i, e) in entries.iter().enumerate().take(monotonic).rev() {
        if e.offset > len || e.sequence < first {
            continue;
        }
        let at = data_frame_at(seg, e.offset)?;
        let ok = match e.kind {
            EntryKind::Position => at.is_some_and(|(s, _)| s == e.sequence),
            EntryKind::Seal | EntryKind::Synced => {
                e.offset == len || at.is_some_and(|(s, _)| s >= e.sequence)
            }
        };
        if ok {
            (scan_from, next, keep) = (e.offset, e.sequence, i + 1);
            break;
        }
    }
    let mut last_entry_at = entries
        .iter()
        .take(keep)
        .rev()
        .find(|e| e.kind == EntryKind::Position)
        .map_or(0, |e| e.offset);
    let mut parser = Parser::with_capacity(READ).map_err(io::Error::other)?;
    let (mut read_to, mut good_end) = (scan_from, scan_from);
    let mut rebuilt = Vec::new();
    let mut stop = None;
    'read: loop {
        let spare = parser.spare();
        let want = usize::try_from(len - read_to)
            .unwrap_or(usize::MAX)
            .min(spare.len());
        let n = read_at(seg, spare.get_mut(..want).unwrap_or_default(), read_to)?;
        if n == 0 {
            parser.finish();
        } else {
            parser.commit(n).map_err(io::Error::other)?;
            read_to += n as u64;
        }
        while let Some(event) = parser.next_event() {
            match event {
                Event::Frame(m) if m.msg_type().is_data() && m.sequence() >= next => {
                    if good_end > 0 && good_end - last_entry_at >= index_every {
                        rebuilt.push(Entry {
                            sequence: m.sequence(),
                            offset: good_end,
                            time: m.timestamp(),
                            kind: EntryKind::Position,
                        });
                        last_entry_at = good_end;
                    }
                    good_end += m.len() as u64;
                    next = m.sequence().saturating_add(1);
                }
                // A hole (a relay's journal): allowed.
                Event::Gap(_) => {}
                Event::Discarded(d) => {
                    stop = Some(discard_why(d.reason, d.bytes));
                    break 'read;
                }
                Event::Frame(m) if !m.msg_type().is_data() => {
                    stop = Some(format!("a {:?} control frame", m.msg_type()));
                    break 'read;
                }
                Event::Frame(m) | Event::Duplicate(m) => {
                    stop = Some(format!(
                        "sequence {} after {} (out of order)",
                        m.sequence(),
                        next.saturating_sub(1)
                    ));
                    break 'read;
                }
                _ => {
                    stop = Some("an unexpected event".into());
                    break 'read;
                }
            }
        }
        if parser.is_finished() {
            break;
        }
    }
    let zeros = stop.is_some() && zeros_from(seg, good_end, len)?;
    if zeros {
        stop = None;
    }
    Ok(Tail {
        scan_from,
        good_end,
        next,
        keep,
        rebuilt,
        last_entry_at,
        stop,
        zeros,
    })
}

/// Whether the bytes `from..len` of `seg` are all zero (and there are some).
pub(crate) fn zeros_from(seg: &File, from: u64, len: u64) -> io::Result<bool> {
    if from >= len {
        return Ok(false);
    }
    let mut buf = vec![0u8; READ];
    let mut at = from;
    while at < len {
        let want = usize::try_from(len - at).unwrap_or(READ).min(READ);
        let n = read_at(seg, buf.get_mut(..want).unwrap_or_default(), at)?;
        if n == 0 {
            break; // shorter than it was: what was there was zeros
        }
        if buf.get(..n).unwrap_or_default().iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// A discarded run, in words.
pub(crate) fn discard_why(reason: DiscardReason, bytes: u64) -> String {
    match reason {
        DiscardReason::Truncated => format!("a frame cut short ({bytes} bytes)"),
        other => format!("{bytes} bytes that are not frames ({other})"),
    }
}
