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
/// `disconnected`, `retry` and `gave_up` objects.
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
