//! `tickwire record`: a server's data frames into a file, across reconnects.
//!
//! The file holds every data frame exactly once, in sequence order, byte for
//! byte as the server sent it. Control frames are not kept, with one
//! exception: at the start and at each new session the recorder writes a
//! LoginAccepted frame of its own (the server's `session_id` and first
//! sequence, stamped with the recorder's clock) so that `dump` restarts its
//! sequence tracking where the server's sequence space restarted.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use tickwire::net::{unix_nanos, Client};
use tickwire::session::ClientEvent;
use tickwire::Payload;

use crate::drive::{drive_client, servers, session_label, Ended, Narrator, Step, STEP};
use crate::logging::{info, warning};
use crate::recording::{Mode, Recording};
use crate::subscribe::client_config;

/// What the recording holds so far.
#[derive(Default)]
struct Tally {
    frames: u64,
    bytes: u64,
    first: Option<u64>,
    last: Option<u64>,
    gaps: u64,
    missing: u64,
    /// Data frames the client handed over twice (never expected: counted, not written).
    repeats: u64,
    sessions: u64,
}

pub(crate) fn run(
    connect: &[SocketAddr],
    from: u64,
    output: &Path,
    count: Option<u64>,
    duration: Option<Duration>,
    max_retries: Option<u32>,
    mode: Mode,
) -> io::Result<()> {
    let stop = crate::interrupted()?;
    // The file first: an unwritable path, or an existing file without
    // --force or --append, fails before the server sees a client.
    let mut out = Recording::plan(output, mode)?;
    let existing = out.existing();
    let from = match existing {
        Some(e) => {
            info!(
                "appending to {}: session {}, {}; logging in from sequence {}",
                output.display(),
                session_label(e.session_id),
                e.last.map_or_else(
                    || "no data frames yet".to_string(),
                    |l| format!("last sequence {l}")
                ),
                e.next
            );
            if e.dropped > 0 {
                warning!(
                    "{}: the {} bytes after its last whole frame (a frame cut short) will be replaced",
                    output.display(),
                    e.dropped
                );
            }
            e.next
        }
        None => from,
    };
    let end = crate::deadline(duration);
    let mut client = Client::new(client_config(connect, from, max_retries)?)?;
    let mut narrator = Narrator::new(connect, max_retries);
    let connect = servers(connect);
    let target = count.unwrap_or(u64::MAX);
    let mut tally = Tally::default();
    let mut session = existing.map(|e| e.session_id);
    tally.last = existing.and_then(|e| e.last);
    let mut write_error = None;
    let ended = drive_client(&mut client, &stop, end, STEP, false, |step| {
        let Step::Event(event) = step else {
            return ControlFlow::Continue(());
        };
        narrator.event(&event);
        let written = match event {
            ClientEvent::LoggedIn { session_id, .. }
                if existing.is_some_and(|e| e.session_id != session_id) && !out.opened() =>
            {
                Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!(
                        "{connect} serves session {}, {} holds session {}: not appending another session to it (record into a new file, or --force to replace it)",
                        session_label(session_id),
                        output.display(),
                        existing.map_or_else(String::new, |e| session_label(e.session_id)),
                    ),
                ))
            }
            ClientEvent::LoggedIn {
                session_id,
                sequence,
            } if session != Some(session_id) => {
                session = Some(session_id);
                tally.sessions += 1;
                tally.last = None;
                let mut frame = [0u8; 32];
                tickwire::encode(
                    &Payload::LoginAccepted { session_id },
                    sequence,
                    unix_nanos(),
                    &mut frame,
                )
                .map_err(io::Error::other)
                .and_then(|n| out.stage(frame.get(..n).unwrap_or_default()))
            }
            ClientEvent::Frame(m) if m.is_data() => {
                if tally.last.is_some_and(|last| m.sequence() <= last) {
                    tally.repeats += 1;
                    return ControlFlow::Continue(());
                }
                let bytes = m.as_bytes();
                let result = out.write_all(bytes);
                tally.frames += 1;
                tally.bytes += bytes.len() as u64;
                tally.first.get_or_insert(m.sequence());
                tally.last = Some(m.sequence());
                if result.is_ok() && tally.frames >= target {
                    return ControlFlow::Break(());
                }
                result
            }
            ClientEvent::Gap(g) => {
                tally.gaps += 1;
                tally.missing += g.len();
                warning!(
                    "gap: sequences {}..={} ({} frames) could not be recovered from {connect}",
                    g.first,
                    g.last,
                    g.len()
                );
                Ok(())
            }
            _ => Ok(()),
        };
        match written {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    });
    let flushed = out.flush();
    if let Some(e) = write_error {
        if e.kind() == ErrorKind::InvalidData {
            return Err(e);
        }
        return Err(crate::write_error(output, e));
    }
    flushed.map_err(|e| crate::write_error(output, e))?;
    let ended = ended?;
    let range = match (tally.first, tally.last) {
        (Some(first), Some(last)) => format!(" (sequences {first}..={last})"),
        _ => String::new(),
    };
    let stats = client.stats();
    let written = if out.opened() {
        format!(
            "{} {}",
            if existing.is_some() {
                "appended to"
            } else {
                "written to"
            },
            output.display()
        )
    } else if existing.is_some() || mode == Mode::Force && output.exists() {
        format!("({} left as it was)", output.display())
    } else {
        format!("({} not created)", output.display())
    };
    info!(
        "{} data frames{range}, {} bytes of data frames {written}; \
         {} gaps ({} missing), {} heals (skipped ranges asked for again); {} repeats dropped; {} sessions, connection attempts: {} ({} connected), {} failovers; stopped: {}",
        tally.frames,
        tally.bytes,
        tally.gaps,
        tally.missing,
        stats.heals,
        tally.repeats,
        tally.sessions,
        narrator.attempts(client.state()),
        stats.connects,
        stats.failovers,
        match ended {
            Ended::Done => "count reached",
            other => other.describe(),
        }
    );
    narrator.result(ended)
}
