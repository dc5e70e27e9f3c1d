//! `tickwire journal DIR`: a journal's sessions, segments and sizes, every
//! checksum checked; exit status 1 on damage.
#![forbid(unsafe_code)]

use std::io::{self, BufWriter, ErrorKind, Write};
use std::path::Path;

use tickwire::journal::{check, CheckReport};

use crate::drive::session_label;
use crate::pretty::rfc3339;

pub(crate) fn run(dir: &Path, json: bool) -> io::Result<()> {
    let report = check(dir).map_err(io::Error::from)?;
    let mut out = BufWriter::new(io::stdout().lock());
    if json {
        serde_json::to_writer(&mut out, &report).map_err(io::Error::other)?;
        writeln!(out)?;
    } else {
        print(&mut out, &report)?;
    }
    out.flush()?;
    if report.is_damaged() {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "{} is damaged in {} place{}: a replay stops at the first",
                dir.display(),
                report.damage.len(),
                if report.damage.len() == 1 { "" } else { "s" }
            ),
        ));
    }
    Ok(())
}

/// A sequence range: `first..=last`, or `none` when empty.
fn range(first: u64, end: u64) -> String {
    if end > first {
        format!("{first}..={}", end - 1)
    } else {
        format!("none (next {first})")
    }
}

fn print(out: &mut impl Write, r: &CheckReport) -> io::Result<()> {
    writeln!(
        out,
        "journal {}: id {}, server {:?}, protocol version {} revision {}",
        r.dir.display(),
        r.journal_id,
        r.server,
        r.protocol.0,
        r.protocol.1
    )?;
    if r.sessions.is_empty() {
        writeln!(out, "no segments")?;
    }
    for s in &r.sessions {
        write!(
            out,
            "session {}: {} ({} frames, {} bytes, {} segment{})",
            session_label(s.session_id),
            range(s.first, s.end),
            s.frames,
            s.bytes,
            s.segments.len(),
            if s.segments.len() == 1 { "" } else { "s" }
        )?;
        if s.holes > 0 {
            write!(out, "; {} holes, {} sequences missing", s.holes, s.missing)?;
        }
        writeln!(out)?;
        for g in &s.segments {
            let name = g
                .path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            writeln!(
                out,
                "  {name}  {}  {} frames  {} bytes  {}{}{}  created {}",
                range(g.first, g.end),
                g.frames,
                g.bytes,
                if g.sealed { "sealed" } else { "open" },
                if g.closed { ", closed cleanly" } else { "" },
                if g.fsync_always { ", fsync always" } else { "" },
                rfc3339(g.created)
            )?;
        }
    }
    for d in &r.damage {
        writeln!(
            out,
            "DAMAGE {} at byte {}{}: {}",
            d.path.display(),
            d.offset,
            if d.bytes > 0 {
                format!(" ({} bytes)", d.bytes)
            } else {
                String::new()
            },
            d.why
        )?;
    }
    if let Some(t) = &r.torn_tail {
        writeln!(
            out,
            "torn tail: {} bytes at byte {} of {}{}: the writer's next open cuts them",
            t.bytes,
            t.offset,
            t.path.display(),
            r.torn_why
                .as_ref()
                .map_or_else(String::new, |w| format!(" ({w})"))
        )?;
    }
    for l in &r.leftovers {
        writeln!(
            out,
            "leftover {} (an interrupted creation or deletion): the writer's next open removes it",
            l.display()
        )?;
    }
    writeln!(
        out,
        "{}",
        if r.is_damaged() {
            "checked: DAMAGED"
        } else {
            "checked: every checksum, index entry and segment boundary is good"
        }
    )
}
