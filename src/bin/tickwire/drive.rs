//! The one place the command line drives the reference client
//! ([`tickwire::net::Client`]), shared by `subscribe` and `record`.
//!
//! It polls in a loop of its own with a short timeout, so that a stop flag
//! (Ctrl-C, SIGTERM) or a deadline is noticed within [`STEP`] even while the
//! client waits out a backoff delay (up to 30 s) or a connection attempt.

use std::fmt::Write as _;
use std::io;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tickwire::json::JsonEvent;
use tickwire::net::Client;
use tickwire::parse::Event;
use tickwire::session::{ClientEvent, ClientState, Lost};

use crate::logging::{debug, info, warning};

/// The longest the loop sleeps in the client's poll before it looks at the
/// stop flag and the deadline again.
pub(crate) const STEP: Duration = Duration::from_millis(20);

/// Why [`drive_client`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The callback said stop.
    Done,
    /// The stop flag was set (a signal).
    Signal,
    /// The deadline passed.
    Deadline,
    /// The client stopped on its own after an EndOfSession (it was told not
    /// to reconnect).
    Finished,
    /// Retries were exhausted.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// How the last one ended.
        last: Lost,
    },
}

/// What [`drive_client`] hands its callback.
pub(crate) enum Step<'a> {
    /// Something the client did or received.
    Event(ClientEvent<'a>),
    /// A poll returned (time to flush output, print status…).
    Polled,
}

/// Polls `client` until `on_step` breaks, `stop` is set, `end` passes or
/// the client stops, waiting at most `max_wait` (and at most [`STEP`]) per
/// poll; with `busy`, polls never sleep.
///
/// The library's callback types stay inside this function: adapting to a
/// new `Client` API is a change here only.
pub(crate) fn drive_client(
    client: &mut Client,
    stop: &AtomicBool,
    end: Option<Instant>,
    max_wait: Duration,
    busy: bool,
    mut on_step: impl FnMut(Step<'_>) -> ControlFlow<()>,
) -> io::Result<Ended> {
    let mut gave_up = None;
    let mut done = false;
    loop {
        if done {
            return Ok(Ended::Done);
        }
        if let Some((attempts, last)) = gave_up {
            return Ok(Ended::GaveUp { attempts, last });
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(Ended::Signal);
        }
        let now = Instant::now();
        if end.is_some_and(|end| now >= end) {
            return Ok(Ended::Deadline);
        }
        if client.is_stopped() {
            return Ok(Ended::Finished);
        }
        let mut wait = if busy {
            Duration::ZERO
        } else {
            STEP.min(max_wait)
        };
        if let Some(end) = end {
            wait = wait.min(end.saturating_duration_since(now));
        }
        client.poll(Some(wait), |event| {
            if let ClientEvent::GaveUp { attempts, last } = event {
                gave_up = Some((attempts, last));
            }
            if !done && on_step(Step::Event(event)).is_break() {
                done = true;
            }
        })?;
        if !done && on_step(Step::Polled).is_break() {
            done = true;
        }
    }
}

impl Ended {
    /// Why the run stopped, for summaries.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Ended::Done => "done",
            Ended::Signal => "signal",
            Ended::Deadline => "duration elapsed",
            Ended::Finished => "end of session",
            Ended::GaveUp { .. } => "gave up",
        }
    }
}

/// What `subscribe` and `record` say about the connection: one line per
/// change (connected, lost, failing over, a different reason for failing),
/// never one per retry (`-v` adds the library's line per state and retry);
/// and the true counts of connection attempts for the summary and the
/// give-up message.
pub(crate) struct Narrator {
    /// The servers, for messages: `A` or `A,B,C`.
    servers: String,
    list: Vec<std::net::SocketAddr>,
    max_retries: Option<u32>,
    /// Connection attempts that ended (each one ends in one `Lost`).
    ended: u64,
    /// Attempts that failed since the last login (what giving up counts).
    failed_in_a_row: u32,
    /// The reason last reported while down (`None`: up, or never tried).
    down: Option<String>,
    /// Whether a login ever succeeded.
    ever_up: bool,
}

impl Narrator {
    pub(crate) fn new(list: &[std::net::SocketAddr], max_retries: Option<u32>) -> Narrator {
        Narrator {
            servers: servers(list),
            list: list.to_vec(),
            max_retries,
            ended: 0,
            failed_in_a_row: 0,
            down: None,
            ever_up: false,
        }
    }

    fn server(&self, index: usize) -> String {
        self.list
            .get(index)
            .map_or_else(|| format!("server {index}"), ToString::to_string)
    }

    /// Logs what `event` changes, at info or warn; the rest at debug.
    pub(crate) fn event(&mut self, event: &ClientEvent<'_>) {
        match *event {
            ClientEvent::Lost(why) => {
                self.ended += 1;
                self.failed_in_a_row = self.failed_in_a_row.saturating_add(1);
                let reason = why.to_string();
                if matches!(why, Lost::EndOfSession | Lost::Resync | Lost::Heal) {
                    info!("{}: {reason}", self.servers);
                } else if self.down.as_deref() == Some(reason.as_str()) {
                    debug!(
                        "{}: {reason} (attempt {})",
                        self.servers, self.failed_in_a_row
                    );
                } else {
                    let retrying = match self.max_retries {
                        None => {
                            "retrying with backoff (up to 30 s apart) until stopped".to_string()
                        }
                        Some(0) => "not retrying (--max-retries 0)".to_string(),
                        Some(n) => format!("retrying up to {n} times (--max-retries)"),
                    };
                    let what = if self.down.is_none() && self.ever_up {
                        "connection lost"
                    } else {
                        "cannot connect"
                    };
                    warning!("{}: {what}: {reason}; {retrying}", self.servers);
                }
                self.down = Some(reason);
            }
            ClientEvent::LoggedIn {
                session_id,
                sequence,
            } => {
                let again = if self.ever_up {
                    "logged in again"
                } else {
                    "logged in"
                };
                info!(
                    "{}: {again} to session {}, from sequence {sequence}",
                    self.servers,
                    session_label(session_id)
                );
                self.down = None;
                self.ever_up = true;
                self.failed_in_a_row = 0;
            }
            ClientEvent::NewSession {
                session_id,
                sequence,
            } => info!(
                "{}: new session {} from sequence {sequence}",
                self.servers,
                session_label(session_id)
            ),
            ClientEvent::EndOfSession { sequence } => {
                info!(
                    "{}: end of session (next sequence {sequence})",
                    self.servers
                );
            }
            ClientEvent::Healing { gap, delay } => {
                let when = if delay.is_zero() {
                    String::new()
                } else {
                    format!(" in {delay:?}")
                };
                info!(
                    "{}: sequences {}..={} ({} frames) skipped while this client was slow: logging in again from {}{when} to fill them",
                    self.servers,
                    gap.first,
                    gap.last,
                    gap.len(),
                    gap.first
                );
            }
            ClientEvent::Failover { from, to } => {
                info!(
                    "failing over from {} to {}",
                    self.server(from),
                    self.server(to)
                );
            }
            ClientEvent::Retrying { attempt, delay } => {
                debug!("{}: retry {attempt} in {delay:?}", self.servers);
            }
            ClientEvent::State { from, to } => {
                debug!(
                    "{}: {} -> {}",
                    self.servers,
                    state_name(from),
                    state_name(to)
                );
            }
            _ => {}
        }
    }

    /// Connection attempts made, the one under way at `state` included.
    pub(crate) fn attempts(&self, state: ClientState) -> u64 {
        let ongoing = matches!(
            state,
            ClientState::Connecting | ClientState::Connected | ClientState::LoggedIn
        );
        self.ended + u64::from(ongoing)
    }

    /// The error of a client that gave up, naming the servers and the
    /// attempts made in a row (the first one and its retries).
    pub(crate) fn result(&self, ended: Ended) -> io::Result<()> {
        match ended {
            Ended::GaveUp { last, .. } => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!(
                    "{}: gave up after {} failed connection attempt{} in a row (--max-retries {}); last: {last}",
                    self.servers,
                    self.failed_in_a_row,
                    if self.failed_in_a_row == 1 { "" } else { "s" },
                    self.max_retries.unwrap_or(0),
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// A session id as the tool prints it on stderr: hex, then decimal as JSON
/// prints it (`0x0000018c5f3a2b10 (1700000000000)`).
pub(crate) fn session_label(session_id: u64) -> String {
    format!("{session_id:#018x} ({session_id})")
}

/// A client state as a lower-case word.
pub(crate) fn state_name(state: ClientState) -> &'static str {
    match state {
        ClientState::Disconnected => "disconnected",
        ClientState::Connecting => "connecting",
        ClientState::Connected => "connected",
        ClientState::LoggedIn => "logged_in",
        ClientState::Reconnecting => "reconnecting",
        _ => "unknown",
    }
}

/// `s` as a JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One client event as one JSON object (no newline). Frames and parser
/// events print as `dump` prints them (protocol section 7); the client's own
/// events print as `duplicate`, `logged_in`, `end_of_session`, `state`,
/// `disconnected`, `retry`, `failover`, `healing` and `gave_up` objects.
pub(crate) fn client_event_json(event: &ClientEvent<'_>) -> String {
    match *event {
        ClientEvent::Frame(m) => JsonEvent(&Event::Frame(m)).to_string(),
        ClientEvent::Gap(g) => JsonEvent(&Event::Gap(g)).to_string(),
        ClientEvent::Discarded(d) => JsonEvent(&Event::Discarded(d)).to_string(),
        ClientEvent::NewSession {
            session_id,
            sequence,
        } => JsonEvent(&Event::NewSession {
            session_id,
            sequence,
        })
        .to_string(),
        ClientEvent::Duplicate { sequence } => {
            format!(r#"{{"type":"duplicate","sequence":{sequence}}}"#)
        }
        ClientEvent::LoggedIn {
            session_id,
            sequence,
        } => format!(r#"{{"type":"logged_in","session_id":{session_id},"sequence":{sequence}}}"#),
        ClientEvent::EndOfSession { sequence } => {
            format!(r#"{{"type":"end_of_session","sequence":{sequence}}}"#)
        }
        ClientEvent::State { from, to } => format!(
            r#"{{"type":"state","from":"{}","to":"{}"}}"#,
            state_name(from),
            state_name(to)
        ),
        ClientEvent::Lost(why) => format!(
            r#"{{"type":"disconnected","reason":{}}}"#,
            json_string(&why.to_string())
        ),
        ClientEvent::Retrying { attempt, delay } => format!(
            r#"{{"type":"retry","attempt":{attempt},"delay_ms":{}}}"#,
            delay.as_millis()
        ),
        ClientEvent::Failover { from, to } => {
            format!(r#"{{"type":"failover","from":{from},"to":{to}}}"#)
        }
        ClientEvent::Healing { gap, delay } => format!(
            r#"{{"type":"healing","first":{},"last":{},"delay_ms":{}}}"#,
            gap.first,
            gap.last,
            delay.as_millis()
        ),
        ClientEvent::GaveUp { attempts, last } => format!(
            r#"{{"type":"gave_up","attempts":{attempts},"last":{}}}"#,
            json_string(&last.to_string())
        ),
        // A kind of event this tool does not know yet: still one line.
        ref other => format!(
            r#"{{"type":"event","debug":{}}}"#,
            json_string(&format!("{other:?}"))
        ),
    }
}

/// The servers of `--connect`, for messages: `A` or `A,B,C`.
pub(crate) fn servers(connect: &[std::net::SocketAddr]) -> String {
    connect
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_event_is_one_json_object() {
        let events = [
            ClientEvent::Duplicate { sequence: 5 },
            ClientEvent::EndOfSession { sequence: 9 },
            ClientEvent::Lost(Lost::Closed),
            ClientEvent::Retrying {
                attempt: 2,
                delay: Duration::from_millis(200),
            },
            ClientEvent::GaveUp {
                attempts: 3,
                last: Lost::ConnectTimeout,
            },
            ClientEvent::State {
                from: ClientState::Connecting,
                to: ClientState::Connected,
            },
            ClientEvent::LoggedIn {
                session_id: 7,
                sequence: 1,
            },
        ];
        let lines: Vec<String> = events.iter().map(client_event_json).collect();
        assert_eq!(lines[0], r#"{"type":"duplicate","sequence":5}"#);
        assert_eq!(lines[1], r#"{"type":"end_of_session","sequence":9}"#);
        assert_eq!(
            lines[2],
            r#"{"type":"disconnected","reason":"server closed the connection"}"#
        );
        assert_eq!(lines[3], r#"{"type":"retry","attempt":2,"delay_ms":200}"#);
        assert_eq!(
            lines[4],
            r#"{"type":"gave_up","attempts":3,"last":"connect timed out"}"#
        );
        assert_eq!(
            lines[5],
            r#"{"type":"state","from":"connecting","to":"connected"}"#
        );
        assert_eq!(
            lines[6],
            r#"{"type":"logged_in","session_id":7,"sequence":1}"#
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
    }
}
