//! JSON lines (protocol section 7): one object per frame or event.
//!
//! Allocation-free: the wrappers implement [`Display`](core::fmt::Display).
//!
//! ```
//! use tickwire::json::JsonEvent;
//! use tickwire::parse::{Event, SliceParser};
//! use tickwire::{encode::QuoteFields, Payload};
//!
//! let mut buf = [0u8; 44];
//! let q = QuoteFields { instrument_id: 42, bid_price: 1_234_500, ask_price: 1_234_600, bid_size: 100, ask_size: 200 };
//! tickwire::encode(&Payload::Quote(q), 7, 1_700_000_000_123_456_789, &mut buf)?;
//! let event = SliceParser::new(&buf).next().unwrap();
//! assert_eq!(
//!     JsonEvent(&event).to_string(),
//!     r#"{"type":"quote","sequence":7,"timestamp":1700000000123456789,"instrument_id":42,"bid_price":1234500,"ask_price":1234600,"bid_size":100,"ask_size":200}"#
//! );
//! # Ok::<(), tickwire::EncodeError>(())
//! ```
#![forbid(unsafe_code)]

use core::fmt;

use crate::parse::Event;
use crate::wire::{KeyIdField, Message};

/// Displays a frame as one JSON object (no newline).
#[derive(Clone, Copy, Debug)]
pub struct JsonMessage<'m, 'a>(pub &'m Message<'a>);

/// Displays a parser event as one JSON object (no newline).
///
/// Frames print as [`JsonMessage`]; duplicate frames add `"duplicate":true`; other
/// events print as `{"type":"discarded","bytes":N,"reason":"..."}`,
/// `{"type":"gap","first":A,"last":B,"missing":N}` and
/// `{"type":"new_session","session_id":S,"sequence":N}`.
#[derive(Clone, Copy, Debug)]
pub struct JsonEvent<'e, 'a>(pub &'e Event<'a>);

fn write_message(f: &mut fmt::Formatter<'_>, m: &Message<'_>, extra: &str) -> fmt::Result {
    write!(
        f,
        r#"{{"type":"{}","sequence":{},"timestamp":{}"#,
        m.msg_type().name(),
        m.sequence(),
        m.timestamp()
    )?;
    match m {
        Message::Heartbeat(_) | Message::Login(_) | Message::EndOfSession(_) => {}
        Message::LoginAccepted(la) => write!(f, r#","session_id":{}"#, la.session_id())?,
        Message::Packet(p) => write!(f, r#","session_id":{}"#, p.session_id())?,
        Message::Retransmit(r) => write!(
            f,
            r#","session_id":{},"count":{}"#,
            r.session_id(),
            r.count()
        )?,
        // The key id as section 7 says; the secret is never written.
        Message::Auth(a) => write!(f, r#","key_id":"{}""#, KeyIdField(&a.key_id_bytes()))?,
        Message::Rejected(r) => write!(f, r#","reason":{}"#, r.reason().code())?,
        Message::Quote(q) => write!(
            f,
            r#","instrument_id":{},"bid_price":{},"ask_price":{},"bid_size":{},"ask_size":{}"#,
            q.instrument_id(),
            q.bid_price(),
            q.ask_price(),
            q.bid_size(),
            q.ask_size()
        )?,
        Message::Trade(t) => write!(
            f,
            r#","instrument_id":{},"price":{},"size":{},"side":{},"flags":{}"#,
            t.instrument_id(),
            t.price(),
            t.size(),
            t.side(),
            t.flags()
        )?,
    }
    write!(f, "{extra}}}")
}

impl fmt::Display for JsonMessage<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_message(f, self.0, "")
    }
}

impl fmt::Display for JsonEvent<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Event::Frame(m) => write_message(f, m, ""),
            Event::Duplicate(m) => write_message(f, m, r#","duplicate":true"#),
            Event::Gap(g) => write!(
                f,
                r#"{{"type":"gap","first":{},"last":{},"missing":{}}}"#,
                g.first,
                g.last,
                g.len()
            ),
            Event::NewSession {
                session_id,
                sequence,
            } => write!(
                f,
                r#"{{"type":"new_session","session_id":{session_id},"sequence":{sequence}}}"#
            ),
            Event::Discarded(d) => write!(
                f,
                r#"{{"type":"discarded","bytes":{},"reason":"{}"}}"#,
                d.bytes,
                d.reason.as_str()
            ),
        }
    }
}
