//! `tickwire journal DIR`: a journal's sessions, segments and sizes, every
//! checksum checked; exit status 1 on damage. And the journal options of
//! `serve` and `relay` ([`JournalArgs`]).
#![forbid(unsafe_code)]

use std::io::{self, BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};

use tickwire::journal::{check, CheckReport, FsyncMode, JournalConfig, WriteMode};
use tickwire::net::JournalSettings;

use crate::args::{self, Retain};

/// The journal of `serve` and `relay` (issue 24).
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct JournalArgs {
    /// Journal every published batch in this directory (created if
    /// missing) before any client or datagram line sees it: a restart
    /// continues the session where it stopped, and logins older than
    /// --retain are served from disk.
    #[arg(long, value_name = "DIR")]
    pub(crate) journal: Option<PathBuf>,
    /// Roll the journal's segments at this size (bytes, or with K, M, G,
    /// T: powers of 1,024; default 1G).
    #[arg(long, value_name = "BYTES", requires = "journal", value_parser = args::bytes)]
    pub(crate) journal_segment: Option<u64>,
    /// Delete whole oldest segments while the journal holds more than this
    /// size (50G) or, for an age (24h, 90m, 3600s, 7d), segments last
    /// written longer ago; give it twice for both (default: keep all).
    #[arg(long, value_name = "SIZE|AGE", requires = "journal", value_parser = args::retain)]
    pub(crate) journal_retain: Vec<Retain>,
    /// When the journal syncs to disk: `always` (a batch reaches clients,
    /// and publish returns, once on disk: group commit), `interval:MS` (at
    /// least every MS ms; the default, interval:1000) or `never` (the
    /// kernel's writeback). A killed process loses nothing in any mode.
    #[arg(long, value_name = "MODE", requires = "journal", value_parser = clap::value_parser!(FsyncMode))]
    pub(crate) fsync: Option<FsyncMode>,
    /// How batches reach the journal's files: `in-place` (the default: the
    /// segment is mapped and each batch encoded straight into it, the
    /// fastest while the page cache absorbs what is published), `behind` (a
    /// thread of the journal writes the batches queued since its last pass
    /// with one system call, and clients get them once written: for a feed
    /// that publishes past the kernel's dirty limits all day) or `direct`
    /// (a write per batch on the publishing thread). With --fsync always,
    /// every mode writes directly.
    #[arg(long, value_name = "MODE", requires = "journal", value_parser = clap::value_parser!(WriteMode))]
    pub(crate) journal_writes: Option<WriteMode>,
    /// A graceful stop (Ctrl-C, SIGTERM, --duration) ends the session:
    /// EndOfSession to every client and datagram line. Without it, a server
    /// with a journal stops without EndOfSession and its next start
    /// continues the session.
    #[arg(long, requires = "journal")]
    pub(crate) end_session: bool,
}

impl JournalArgs {
    /// The server's journal, if --journal was given.
    pub(crate) fn settings(&self) -> Option<JournalSettings> {
        let dir = self.journal.clone()?;
        let mut config = JournalConfig::default();
        if let Some(bytes) = self.journal_segment {
            config.segment_bytes = bytes;
        }
        if let Some(fsync) = self.fsync {
            config.fsync = fsync;
        }
        if let Some(writes) = self.journal_writes {
            config.writes = writes;
        }
        for retain in &self.journal_retain {
            match *retain {
                Retain::Size(bytes) => config.retain_bytes = Some(bytes),
                Retain::Age(age) => config.retain_age = Some(age),
            }
        }
        let mut settings = JournalSettings::new(dir);
        settings.config = config;
        settings.end_session_on_stop = self.end_session;
        Some(settings)
    }
}

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
