//! The stream parser as protocol section 5 describes it: resynchronization,
//! discard reporting, end of stream, bounded buffers, sequence events.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use tickwire::encode::QuoteFields;
use tickwire::parse::{
    Discard, DiscardReason, Event, ParseError, Parser, SliceParser, DISCARD_REPORT_MAX,
};
use tickwire::{encode, Message, Payload, Sequencer};

fn quote(seq: u64) -> Vec<u8> {
    let q = QuoteFields {
        instrument_id: 7,
        bid_price: 100,
        ask_price: 101,
        bid_size: 1,
        ask_size: 2,
    };
    let mut buf = [0u8; 44];
    encode(&Payload::Quote(q), seq, 1, &mut buf).unwrap();
    buf.to_vec()
}

fn control(payload: Payload, seq: u64) -> Vec<u8> {
    let mut buf = [0u8; 44];
    let n = encode(&payload, seq, 1, &mut buf).unwrap();
    buf[..n].to_vec()
}

/// A readable, owned form of an event.
#[derive(Debug, PartialEq, Eq)]
enum E {
    Frame(u64),
    Duplicate(u64),
    Gap(u64, u64),
    Session(u64, u64),
    Discard(u64, DiscardReason),
}

fn owned(e: &Event<'_>) -> E {
    match *e {
        Event::Frame(m) => E::Frame(m.sequence()),
        Event::Duplicate(m) => E::Duplicate(m.sequence()),
        Event::Gap(g) => E::Gap(g.first, g.last),
        Event::NewSession {
            session_id,
            sequence,
        } => E::Session(session_id, sequence),
        Event::Discarded(Discard { bytes, reason }) => E::Discard(bytes, reason),
        _ => panic!("unknown event"),
    }
}

fn events(bytes: &[u8]) -> Vec<E> {
    SliceParser::new(bytes).map(|e| owned(&e)).collect()
}

#[test]
fn junk_without_sync_byte_is_one_no_sync_run() {
    let mut s = b"hello world".to_vec();
    s.extend(quote(1));
    assert_eq!(
        events(&s),
        vec![E::Discard(11, DiscardReason::NoSync), E::Frame(1)]
    );
}

#[test]
fn run_reason_is_the_first_failed_candidate() {
    // Junk, then a sync byte with a bad version: the run's first candidate failed for its version.
    let mut s = b"xx\xa5\x07yy".to_vec();
    s.extend(quote(1));
    assert_eq!(
        events(&s),
        vec![E::Discard(6, DiscardReason::BadVersion), E::Frame(1)]
    );
    let mut s = vec![0xa5, 0x01, 0x99];
    s.extend(quote(1));
    assert_eq!(
        events(&s),
        vec![E::Discard(3, DiscardReason::UnknownType), E::Frame(1)]
    );
    let mut s = vec![0xa5, 0x01, 0x10, 0x2b];
    s.extend(quote(1));
    assert_eq!(
        events(&s),
        vec![E::Discard(4, DiscardReason::BadLength), E::Frame(1)]
    );
    let mut bad = quote(1);
    bad[30] ^= 0x10;
    bad.extend(quote(2));
    assert_eq!(
        events(&bad),
        vec![E::Discard(44, DiscardReason::BadChecksum), E::Frame(2)]
    );
}

#[test]
fn incomplete_candidate_at_end_is_truncated() {
    let mut s = quote(1);
    s.extend(&quote(2)[..30]);
    assert_eq!(
        events(&s),
        vec![E::Frame(1), E::Discard(30, DiscardReason::Truncated)]
    );
}

#[test]
fn truncated_frame_then_good_frames_mid_stream() {
    let mut s = quote(1);
    s.extend(&quote(2)[..43]);
    s.extend(control(Payload::Heartbeat, 3));
    s.extend(quote(3));
    assert_eq!(
        events(&s),
        vec![
            E::Frame(1),
            E::Discard(43, DiscardReason::BadChecksum),
            // Sequence 2 was lost with the truncated frame; the heartbeat shows it.
            E::Gap(2, 2),
            E::Frame(3),
            E::Frame(3),
        ]
    );
}

#[test]
fn long_junk_is_reported_in_bounded_runs() {
    let junk = vec![0x42u8; 3 * DISCARD_REPORT_MAX as usize + 123];
    let mut s = junk.clone();
    s.extend(quote(1));
    let ev = events(&s);
    assert_eq!(
        ev,
        vec![
            E::Discard(DISCARD_REPORT_MAX, DiscardReason::NoSync),
            E::Discard(DISCARD_REPORT_MAX, DiscardReason::NoSync),
            E::Discard(DISCARD_REPORT_MAX, DiscardReason::NoSync),
            E::Discard(123, DiscardReason::NoSync),
            E::Frame(1),
        ]
    );
}

#[test]
fn gaps_duplicates_and_sessions_are_reported_in_order() {
    let mut s = control(Payload::LoginAccepted { session_id: 9 }, 5);
    s.extend(quote(5));
    s.extend(quote(8));
    s.extend(quote(6));
    s.extend(control(Payload::Heartbeat, 9));
    s.extend(control(Payload::Heartbeat, 11));
    s.extend(control(Payload::LoginAccepted { session_id: 10 }, 1));
    s.extend(quote(1));
    assert_eq!(
        events(&s),
        vec![
            E::Session(9, 5),
            E::Frame(5),
            E::Frame(5),
            E::Gap(6, 7),
            E::Frame(8),
            E::Duplicate(6),
            E::Frame(9),
            E::Gap(9, 10),
            E::Frame(11),
            E::Session(10, 1),
            E::Frame(1),
            E::Frame(1),
        ]
    );
}

#[test]
fn discard_then_gap_then_frame() {
    let mut s = quote(1);
    s.extend(b"junk");
    s.extend(quote(3));
    assert_eq!(
        events(&s),
        vec![
            E::Frame(1),
            E::Discard(4, DiscardReason::NoSync),
            E::Gap(2, 2),
            E::Frame(3)
        ]
    );
    let mut p = SliceParser::new(&s);
    p.by_ref().for_each(drop);
    let stats = p.stats();
    assert_eq!(
        (stats.quotes, stats.discarded_bytes, stats.discard_runs),
        (2, 4, 1)
    );
    assert_eq!(p.tracker().stats().missing, 1);
}

#[test]
fn buffer_errors_are_clear() {
    // Revision 3: the buffer must hold the 72-byte Auth frame.
    let mut small = [0u8; 71];
    assert_eq!(
        Parser::new(&mut small[..]).unwrap_err(),
        ParseError::BufferTooSmall {
            capacity: 71,
            minimum: 72
        }
    );
    let mut buf = [0u8; 80];
    let mut p = Parser::new(&mut buf[..]).unwrap();
    assert_eq!(
        p.commit(81),
        Err(ParseError::Overfill {
            committed: 81,
            spare: 80
        })
    );
    p.commit(80).unwrap();
    assert!(p.spare().is_empty());
    assert_eq!(
        p.commit(1),
        Err(ParseError::Overfill {
            committed: 1,
            spare: 0
        })
    );
    p.finish();
    assert_eq!(p.commit(0), Err(ParseError::Finished));
    let msg = ParseError::Overfill {
        committed: 1,
        spare: 0,
    }
    .to_string();
    assert!(msg.contains("next_event"), "{msg}");
}

#[test]
fn smallest_buffer_parses_a_long_stream_one_byte_at_a_time() {
    let mut wire = Vec::new();
    let mut seq = Sequencer::new();
    let mut buf = [0u8; 72];
    for i in 0..200u32 {
        let payload = if i % 3 == 0 {
            Payload::Heartbeat
        } else if i % 17 == 0 {
            // The longest frame (revision 3) must fit the smallest buffer too.
            Payload::Auth {
                key_id: *b"k\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
                secret: tickwire::wire::Secret::new([0xA5; 32]),
            }
        } else if i % 19 == 0 {
            Payload::Rejected {
                reason: tickwire::wire::RejectReason::NotAuthorized,
            }
        } else {
            Payload::Quote(QuoteFields {
                instrument_id: i,
                ..Default::default()
            })
        };
        let n = seq.encode(&payload, u64::from(i), &mut buf).unwrap();
        wire.extend(&buf[..n]);
    }
    let mut storage = [0u8; tickwire::wire::MAX_FRAME_LEN];
    let mut parser = Parser::new(&mut storage[..]).unwrap();
    let mut got = Vec::new();
    for &byte in &wire {
        assert_eq!(parser.fill_from(&[byte]), 1);
        while let Some(e) = parser.next_event() {
            if let Event::Frame(m) = e {
                got.extend_from_slice(m.as_bytes());
            } else {
                panic!("unexpected {e:?}");
            }
        }
    }
    parser.finish();
    assert!(parser.next_event().is_none());
    assert_eq!(got, wire);
    assert_eq!(parser.stats().frames(), 200);
}

#[test]
fn drain_gives_the_same_events_as_next_event() {
    let mut s = Vec::new();
    for i in 1..50 {
        s.extend(quote(i));
        if i % 7 == 0 {
            s.extend(b"\xa5\xa5junk");
        }
        if i % 11 == 0 {
            s.extend(&quote(100)[..20]);
        }
    }
    let mut a = Parser::new(vec![0u8; 256]).unwrap();
    let mut b = Parser::new(vec![0u8; 256]).unwrap();
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    for chunk in s.chunks(37) {
        a.fill_from(chunk);
        b.fill_from(chunk);
        while let Some(e) = a.next_event() {
            ea.push(owned(&e));
        }
        b.drain(|e| eb.push(owned(&e)));
    }
    a.finish();
    b.finish();
    while let Some(e) = a.next_event() {
        ea.push(owned(&e));
    }
    b.drain(|e| eb.push(owned(&e)));
    assert_eq!(ea, eb);
    assert_eq!(ea, events(&s));
}

#[test]
fn borrowed_frames_are_views_into_the_buffer() {
    let q = quote(1);
    let mut storage = [0u8; 128];
    let mut parser = Parser::new(&mut storage[..]).unwrap();
    parser.fill_from(&q);
    let Some(Event::Frame(Message::Quote(view))) = parser.next_event() else {
        panic!()
    };
    assert_eq!(view.ask_size(), 2);
    assert_eq!(view.header().length(), 44);
}
