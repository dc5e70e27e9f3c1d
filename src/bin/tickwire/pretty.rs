//! `dump --pretty`: one line per frame or event for people reading a
//! recording, with prices as decimals (4 implied decimals, protocol
//! section 2) and timestamps as RFC 3339 UTC with nanoseconds.
//!
//! The date conversion is the 20-line civil-from-days algorithm (Howard
//! Hinnant's, public domain) rather than a date crate: the only need is
//! formatting a `u64` of Unix nanoseconds in UTC, with no time zones, no
//! parsing and no leap seconds (Unix time has none), and the tests below pin
//! it against known dates.

use std::fmt::Write as _;

use tickwire::parse::Event;
use tickwire::Message;

/// Unix nanoseconds as RFC 3339 UTC, e.g. `2023-11-14T22:13:20.123456789Z`.
pub(crate) fn rfc3339(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let nanos = unix_nanos % 1_000_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}Z")
}

/// (year, month 1–12, day 1–31) of `days` since 1970-01-01, for any `u64`
/// count of days (years beyond 9999 print with more digits).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, so that leap days end a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A fixed-point price with 4 implied decimals: `1234500` → `123.4500`.
pub(crate) fn price(raw: i32) -> String {
    let sign = if raw < 0 { "-" } else { "" };
    let abs = raw.unsigned_abs();
    format!("{sign}{}.{:04}", abs / 10_000, abs % 10_000)
}

fn side(side: u8) -> String {
    match side {
        0 => "unknown".to_string(),
        1 => "buy".to_string(),
        2 => "sell".to_string(),
        other => format!("side={other}"),
    }
}

fn message(out: &mut String, m: &Message<'_>) {
    let _ = write!(
        out,
        "{} #{} {}",
        rfc3339(m.timestamp()),
        m.sequence(),
        m.msg_type().name()
    );
    let _ = match m {
        Message::Quote(q) => write!(
            out,
            " instrument {} bid {} x {} ask {} x {}",
            q.instrument_id(),
            price(q.bid_price()),
            q.bid_size(),
            price(q.ask_price()),
            q.ask_size()
        ),
        Message::Trade(t) => write!(
            out,
            " instrument {} {} {} @ {} flags {:#04x}",
            t.instrument_id(),
            side(t.side()),
            t.size(),
            price(t.price()),
            t.flags()
        ),
        Message::LoginAccepted(la) => write!(out, " session {:#018x}", la.session_id()),
        Message::Packet(p) => write!(out, " session {:#018x}", p.session_id()),
        Message::Retransmit(r) => {
            write!(out, " session {:#018x} count {}", r.session_id(), r.count())
        }
        // The key id only: the secret is never printed.
        Message::Auth(a) => write!(
            out,
            " key_id \"{}\"",
            tickwire::wire::KeyIdField(&a.key_id_bytes())
        ),
        Message::Rejected(r) => {
            write!(out, " reason {} ({})", r.reason().code(), r.reason())
        }
        Message::Heartbeat(_) | Message::Login(_) | Message::EndOfSession(_) => Ok(()),
    };
}

/// One event as a line for people (no newline).
pub(crate) fn event(e: &Event<'_>) -> String {
    let mut out = String::with_capacity(128);
    match e {
        Event::Frame(m) => message(&mut out, m),
        Event::Duplicate(m) => {
            message(&mut out, m);
            out.push_str(" (duplicate)");
        }
        Event::Gap(g) => {
            let _ = write!(
                out,
                "gap: sequences {}..={} missing ({} frames)",
                g.first,
                g.last,
                g.len()
            );
        }
        Event::NewSession {
            session_id,
            sequence,
        } => {
            let _ = write!(
                out,
                "new session {session_id:#018x} from sequence {sequence}"
            );
        }
        Event::Discarded(d) => {
            let _ = write!(out, "discarded {} bytes ({})", d.bytes, d.reason.as_str());
        }
        // An event this tool does not know yet.
        other => {
            let _ = write!(out, "{other:?}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        // A leap day, and the last nanosecond of a leap year.
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339(1_735_689_599_999_999_999),
            "2024-12-31T23:59:59.999999999Z"
        );
        assert_eq!(rfc3339(u64::MAX), "2554-07-21T23:34:33.709551615Z");
    }

    #[test]
    fn prices_have_four_decimals() {
        assert_eq!(price(1_234_500), "123.4500");
        assert_eq!(price(-5), "-0.0005");
        assert_eq!(price(-1), "-0.0001");
        assert_eq!(price(0), "0.0000");
        assert_eq!(price(i32::MIN), "-214748.3648");
        assert_eq!(price(i32::MAX), "214748.3647");
    }
}
