//! Property tests: chunking invariance, survival of random damage, the
//! sequence tracker against a model, and encode/decode round trips.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use tickwire::encode::{QuoteFields, TradeFields};
use tickwire::parse::{Event, Parser, SliceParser};
use tickwire::sequence::{Gap, SequenceTracker, Verdict};
use tickwire::wire::{RejectReason, Secret, MAX_FRAME_LEN};
use tickwire::{encode, Message, MsgType, Payload, Sequencer};

/// An Auth's `key_id` field: mostly a valid key id, sometimes any bytes
/// (a frame that is valid but not well-formed).
fn key_id_field() -> impl Strategy<Value = [u8; 16]> {
    prop_oneof![
        3 => "[A-Za-z0-9._-]{1,16}".prop_map(|id| tickwire::wire::KeyId::new(&id).unwrap().to_wire()),
        1 => any::<[u8; 16]>(),
    ]
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        6 => (any::<u32>(), any::<i32>(), any::<i32>(), any::<u32>(), any::<u32>()).prop_map(
            |(instrument_id, bid_price, ask_price, bid_size, ask_size)| {
                Payload::Quote(QuoteFields { instrument_id, bid_price, ask_price, bid_size, ask_size })
            }
        ),
        3 => (any::<u32>(), any::<i32>(), any::<u32>(), any::<u8>(), any::<u8>()).prop_map(
            |(instrument_id, price, size, side, flags)| {
                Payload::Trade(TradeFields { instrument_id, price, size, side, flags })
            }
        ),
        1 => Just(Payload::Heartbeat),
        1 => Just(Payload::Login),
        1 => any::<u64>().prop_map(|session_id| Payload::LoginAccepted { session_id }),
        1 => Just(Payload::EndOfSession),
        1 => any::<u64>().prop_map(|session_id| Payload::Packet { session_id }),
        1 => (any::<u64>(), any::<u64>())
            .prop_map(|(session_id, count)| Payload::Retransmit { session_id, count }),
        1 => (key_id_field(), any::<[u8; 32]>())
            .prop_map(|(key_id, secret)| Payload::Auth { key_id, secret: Secret::new(secret) }),
        1 => any::<u8>().prop_map(|code| Payload::Rejected { reason: RejectReason::from_code(code) }),
    ]
}

/// What to put between or in place of frames.
#[derive(Clone, Debug)]
enum Damage {
    None,
    Flip { at: usize, bit: u8 },
    Truncate { keep: usize },
    Junk(Vec<u8>),
    Sync(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        8 => Just(Damage::None),
        1 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        1 => any::<usize>().prop_map(|keep| Damage::Truncate { keep }),
        1 => proptest::collection::vec(any::<u8>(), 1..80).prop_map(Damage::Junk),
        1 => (1usize..4).prop_map(Damage::Sync),
    ]
}

/// A stream built from frames and damage, with the frames that stayed intact.
struct Stream {
    bytes: Vec<u8>,
    intact: Vec<Vec<u8>>,
    damaged_bytes: u64,
}

fn build(frames: &[(Payload, Damage)]) -> Stream {
    let mut seq = Sequencer::new();
    let mut s = Stream {
        bytes: Vec::new(),
        intact: Vec::new(),
        damaged_bytes: 0,
    };
    let mut buf = [0u8; MAX_FRAME_LEN];
    // A truncated frame waits for the next byte: if that byte happened to be
    // the first one cut off, the frame would not be damaged at all.
    let mut truncated: Option<(Vec<u8>, usize)> = None;
    let flush = |s: &mut Stream, truncated: &mut Option<(Vec<u8>, usize)>, next: Option<u8>| {
        if let Some((frame, mut keep)) = truncated.take() {
            while keep > 1 && next == Some(frame[keep]) {
                keep -= 1;
            }
            s.bytes.extend_from_slice(&frame[..keep]);
            s.damaged_bytes += keep as u64;
        }
    };
    let push = |s: &mut Stream, truncated: &mut Option<(Vec<u8>, usize)>, bytes: &[u8]| {
        flush(s, truncated, bytes.first().copied());
        s.bytes.extend_from_slice(bytes);
    };
    for (i, (payload, damage)) in frames.iter().enumerate() {
        let n = seq.encode(payload, i as u64, &mut buf).unwrap();
        let frame = &buf[..n];
        match damage {
            Damage::None => {
                push(&mut s, &mut truncated, frame);
                s.intact.push(frame.to_vec());
            }
            Damage::Flip { at, bit } => {
                let mut f = frame.to_vec();
                f[at % n] ^= 1 << bit;
                push(&mut s, &mut truncated, &f);
                s.damaged_bytes += n as u64;
            }
            Damage::Truncate { keep } => {
                flush(&mut s, &mut truncated, frame.first().copied());
                truncated = Some((frame.to_vec(), 1 + keep % (n - 1)));
            }
            Damage::Junk(junk) => {
                push(&mut s, &mut truncated, junk);
                s.damaged_bytes += junk.len() as u64;
                s.bytes.extend_from_slice(frame);
                s.intact.push(frame.to_vec());
            }
            Damage::Sync(k) => {
                push(&mut s, &mut truncated, &vec![0xA5; *k]);
                s.damaged_bytes += *k as u64;
                s.bytes.extend_from_slice(frame);
                s.intact.push(frame.to_vec());
            }
        }
    }
    push(&mut s, &mut truncated, &[]);
    s
}

/// An owned event, comparable across parses.
#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Frame(Vec<u8>),
    Duplicate(Vec<u8>),
    Gap(Gap),
    Session(u64, u64),
    Discarded(u64, &'static str),
}

fn own(e: &Event<'_>) -> Owned {
    match *e {
        Event::Frame(m) => Owned::Frame(m.as_bytes().to_vec()),
        Event::Duplicate(m) => Owned::Duplicate(m.as_bytes().to_vec()),
        Event::Gap(g) => Owned::Gap(g),
        Event::NewSession {
            session_id,
            sequence,
        } => Owned::Session(session_id, sequence),
        Event::Discarded(d) => Owned::Discarded(d.bytes, d.reason.as_str()),
        _ => panic!("unknown event"),
    }
}

/// Streams `bytes` through a `capacity`-byte parser in pieces of the given sizes.
fn chunked(bytes: &[u8], sizes: &[usize], capacity: usize, drain: bool) -> Vec<Owned> {
    let mut parser = Parser::new(vec![0u8; capacity].into_boxed_slice()).unwrap();
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = sizes.iter().cycle();
    let pull = |p: &mut Parser<Box<[u8]>>, out: &mut Vec<Owned>| {
        if drain {
            p.drain(|e| out.push(own(&e)));
        } else {
            while let Some(e) = p.next_event() {
                out.push(own(&e));
            }
        }
    };
    while !rest.is_empty() {
        let want = (*sizes.next().unwrap()).min(rest.len());
        let mut piece = &rest[..want];
        rest = &rest[want..];
        while !piece.is_empty() {
            let n = parser.fill_from(piece);
            piece = &piece[n..];
            pull(&mut parser, &mut out);
        }
    }
    parser.finish();
    pull(&mut parser, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_gives_the_same_events(
        frames in proptest::collection::vec((payload(), damage()), 0..60),
        sizes in proptest::collection::vec(1usize..100, 1..20),
        capacity in MAX_FRAME_LEN..300,
    ) {
        let s = build(&frames);
        let whole: Vec<Owned> = SliceParser::new(&s.bytes).map(|e| own(&e)).collect();
        prop_assert_eq!(&chunked(&s.bytes, &sizes, capacity, false), &whole);
        prop_assert_eq!(&chunked(&s.bytes, &sizes, capacity, true), &whole);
        prop_assert_eq!(&chunked(&s.bytes, &[1], MAX_FRAME_LEN, false), &whole);
        let mut folded = Vec::new();
        SliceParser::new(&s.bytes).for_each(|e| folded.push(own(&e)));
        prop_assert_eq!(&folded, &whole);
    }

    #[test]
    fn push_and_pull_agree_on_events_and_counters(
        frames in proptest::collection::vec((payload(), 0u8..12, any::<u8>()), 0..120),
        sizes in proptest::collection::vec(1usize..200, 1..10),
    ) {
        // Frames numbered as a feed under stress would be: mostly in order,
        // with repeats, steps back, jumps ahead, and an occasional flipped
        // bit, so that the fast loop is entered and left at every kind of
        // seam (gap, duplicate, control frame, damage, end of data).
        let mut bytes = Vec::new();
        let mut buf = [0u8; MAX_FRAME_LEN];
        let mut next = 1u64;
        for (payload, op, arg) in &frames {
            let seq = match op {
                0 => next.saturating_sub(u64::from(*arg % 4)), // repeat or late
                1 => next + u64::from(*arg % 5),               // jump ahead
                _ => next,
            };
            let n = encode(payload, seq, 7, &mut buf).unwrap();
            if *op == 2 {
                buf[usize::from(*arg) % n] ^= 1 << (arg % 8);
            }
            bytes.extend_from_slice(&buf[..n]);
            if payload.msg_type().is_data() && seq >= next {
                next = seq + 1;
            }
        }
        let mut pulled = Vec::new();
        let mut slice = SliceParser::new(&bytes);
        for e in slice.by_ref() {
            pulled.push(own(&e));
        }
        let mut pushed = Vec::new();
        SliceParser::new(&bytes).for_each(|e| pushed.push(own(&e)));
        prop_assert_eq!(&pushed, &pulled);
        // The same loops compiled for the portable CRC.
        let mut portable = SliceParser::with_portable_crc(&bytes);
        let portable_pulled: Vec<Owned> = portable.by_ref().map(|e| own(&e)).collect();
        prop_assert_eq!(&portable_pulled, &pulled);
        prop_assert_eq!(portable.stats(), slice.stats());
        let mut portable_pushed = Vec::new();
        SliceParser::with_portable_crc(&bytes).for_each(|e| portable_pushed.push(own(&e)));
        prop_assert_eq!(&portable_pushed, &pulled);
        // A fold consumes its SliceParser; its counters are checked through
        // `Parser::drain`, the same loop, below.
        let mut drained = Parser::new(vec![0u8; 300].into_boxed_slice()).unwrap();
        let mut events = Vec::new();
        let mut rest = &bytes[..];
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let want = (*sizes.next().unwrap()).min(rest.len());
            let n = drained.fill_from(&rest[..want]);
            rest = &rest[n..];
            drained.drain(|e| events.push(own(&e)));
        }
        drained.finish();
        drained.drain(|e| events.push(own(&e)));
        prop_assert_eq!(&events, &pulled);
        prop_assert_eq!(drained.stats(), slice.stats());
        prop_assert_eq!(drained.tracker(), slice.tracker());
        let mut whole = Parser::new(vec![0u8; bytes.len().max(MAX_FRAME_LEN)].into_boxed_slice()).unwrap();
        whole.fill_from(&bytes);
        whole.finish();
        whole.drain(|_| {});
        prop_assert_eq!(whole.stats(), slice.stats());
        prop_assert_eq!(whole.tracker(), slice.tracker());
    }

    #[test]
    fn damage_never_loses_an_intact_frame(frames in proptest::collection::vec((payload(), damage()), 0..80)) {
        let s = build(&frames);
        let mut delivered = Vec::new();
        let mut discarded = 0u64;
        for e in SliceParser::new(&s.bytes) {
            match e {
                Event::Frame(m) | Event::Duplicate(m) => delivered.push(m.as_bytes().to_vec()),
                Event::Discarded(d) => discarded += d.bytes,
                _ => {}
            }
        }
        prop_assert_eq!(&delivered, &s.intact);
        prop_assert_eq!(discarded, s.damaged_bytes);
        let frame_bytes: u64 = delivered.iter().map(|f| f.len() as u64).sum();
        prop_assert_eq!(frame_bytes + discarded, s.bytes.len() as u64);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_are_all_accounted(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut total = 0u64;
        for e in SliceParser::new(&bytes) {
            match e {
                Event::Frame(m) | Event::Duplicate(m) => total += m.len() as u64,
                Event::Discarded(d) => total += d.bytes,
                _ => {}
            }
        }
        prop_assert_eq!(total, bytes.len() as u64);
    }

    #[test]
    fn encode_batch_is_encode_frame_by_frame(
        batch in proptest::collection::vec((any::<u64>(), payload()), 0..60),
        start in any::<u64>(),
        room in 0usize..3000,
    ) {
        // Same bytes, same numbering, and it stops at the first message that
        // does not fit, whatever the mix and wherever the buffer ends.
        let mut one = Sequencer::starting_at(start);
        let mut expected = Vec::new();
        let mut fits = 0;
        let mut buf = [0u8; MAX_FRAME_LEN];
        for (ts, p) in &batch {
            let mut probe = one;
            let n = probe.encode(p, *ts, &mut buf).unwrap();
            if expected.len() + n > room {
                break;
            }
            one = probe;
            expected.extend_from_slice(&buf[..n]);
            fits += 1;
        }
        let mut many = Sequencer::starting_at(start);
        let mut out = vec![0xEEu8; room];
        let done = many.encode_batch(&batch, &mut out);
        prop_assert_eq!((done.frames, done.bytes), (fits, expected.len()));
        prop_assert_eq!(&out[..done.bytes], &expected[..]);
        prop_assert!(out[done.bytes..].iter().all(|&b| b == 0xEE));
        prop_assert_eq!(many, one);
    }

    #[test]
    fn encode_decode_round_trip(p in payload(), seq in any::<u64>(), ts in any::<u64>()) {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = encode(&p, seq, ts, &mut buf).unwrap();
        prop_assert_eq!(n, p.frame_len());
        let (m, rest) = Message::decode(&buf[..n]).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(Payload::from(m), p);
        prop_assert_eq!((m.sequence(), m.timestamp()), (seq, ts));
        prop_assert!(encode(&p, seq, ts, &mut buf[..n - 1]).is_err());
    }

    #[test]
    fn auth_and_rejected_leave_sequence_tracking_alone(
        frames in proptest::collection::vec((payload(), 0u8..12, any::<u8>()), 0..80),
        extra in proptest::collection::vec((any::<bool>(), any::<u64>(), any::<u8>()), 0..80),
    ) {
        // Auth and Rejected carry sequence 0 and receivers ignore it
        // (protocol section 3): inserting them anywhere, with any sequence,
        // adds exactly those frames to the events and changes nothing else:
        // no gap, no duplicate, no new session, the same tracker at the end.
        let mut plain = Vec::new();
        let mut mixed = Vec::new();
        let mut inserted = Vec::new();
        let mut buf = [0u8; MAX_FRAME_LEN];
        let mut next = 1u64;
        let mut extra = extra.iter();
        for (payload, op, arg) in &frames {
            if payload.has_zero_sequence() {
                continue;
            }
            let seq = match op {
                0 => next.saturating_sub(u64::from(*arg % 4)),
                1 => next + u64::from(*arg % 5),
                _ => next,
            };
            if let Some((auth, sequence, code)) = extra.next() {
                let p = if *auth {
                    Payload::Auth { key_id: *b"k\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", secret: Secret::new([*code; 32]) }
                } else {
                    Payload::Rejected { reason: RejectReason::from_code(*code) }
                };
                let n = encode(&p, *sequence, 7, &mut buf).unwrap();
                mixed.extend_from_slice(&buf[..n]);
                inserted.push(buf[..n].to_vec());
            }
            let n = encode(payload, seq, 7, &mut buf).unwrap();
            plain.extend_from_slice(&buf[..n]);
            mixed.extend_from_slice(&buf[..n]);
            if payload.msg_type().is_data() && seq >= next {
                next = seq + 1;
            }
        }
        let mut p1 = SliceParser::new(&plain);
        let a: Vec<Owned> = p1.by_ref().map(|e| own(&e)).collect();
        let mut p2 = SliceParser::new(&mixed);
        let b: Vec<Owned> = p2.by_ref().map(|e| own(&e)).collect();
        let is_extra = |o: &Owned| matches!(o, Owned::Frame(f) if f[2] == 0x07 || f[2] == 0x08);
        let kept: Vec<&Owned> = b.iter().filter(|o| !is_extra(o)).collect();
        let extras: Vec<Vec<u8>> = b.iter().filter_map(|o| match o { Owned::Frame(f) if is_extra(o) => Some(f.clone()), _ => None }).collect();
        prop_assert_eq!(kept, a.iter().collect::<Vec<_>>());
        prop_assert_eq!(&extras, &inserted);
        // The same tracker, but for the control frames it counted.
        let (t1, t2) = (p1.tracker(), p2.tracker());
        prop_assert_eq!(t1.expected(), t2.expected());
        let mut s2 = *t2.stats();
        prop_assert_eq!(s2.control, t1.stats().control + inserted.len() as u64);
        s2.control = t1.stats().control;
        prop_assert_eq!(&s2, t1.stats());
    }

    #[test]
    fn tracker_agrees_with_a_model(
        ops in proptest::collection::vec((0u8..10, 0u64..6), 1..300),
    ) {
        // A publisher's data sequence 1, 2, 3… delivered with drops,
        // duplicates, reorders, and heartbeats carrying the next sequence.
        let mut arrivals: Vec<(MsgType, u64)> = Vec::new();
        let mut next = 1u64;
        for (op, arg) in ops {
            match op {
                0..=4 => { arrivals.push((MsgType::Quote, next)); next += 1; }
                5 => next += 1 + arg,                                   // dropped
                6 => if next > 1 { arrivals.push((MsgType::Trade, next - 1 - arg.min(next - 2))); } // duplicate / late
                7 => { arrivals.push((MsgType::Quote, next + 1)); arrivals.push((MsgType::Quote, next)); next += 2; } // swapped
                _ => arrivals.push((MsgType::Heartbeat, next)),
            }
        }
        let mut tracker = SequenceTracker::new();
        // The model: everything at or below the highest sequence reached is
        // either delivered or reported missing, exactly once.
        let mut expected: Option<u64> = None;
        let mut delivered = BTreeSet::new();
        let mut missing = BTreeSet::new();
        let mut duplicates = 0u64;
        for (t, s) in arrivals {
            let verdict = tracker.observe(t, s, 0);
            let want = match (t.is_data(), expected) {
                (_, None) => { expected = Some(s + u64::from(t.is_data())); if t.is_data() { Verdict::InOrder } else { Verdict::Control } }
                (true, Some(e)) if s == e => { expected = Some(s + 1); Verdict::InOrder }
                (true, Some(e)) if s > e => { expected = Some(s + 1); Verdict::Gap(Gap { first: e, last: s - 1 }) }
                (true, Some(_)) => Verdict::Duplicate,
                (false, Some(e)) if s > e => { expected = Some(s); Verdict::Gap(Gap { first: e, last: s - 1 }) }
                (false, Some(_)) => Verdict::Control,
            };
            prop_assert_eq!(verdict, want);
            match verdict {
                Verdict::InOrder => { prop_assert!(delivered.insert(s)); }
                Verdict::Gap(g) => {
                    for q in g.first..=g.last { prop_assert!(missing.insert(q)); }
                    if t.is_data() { prop_assert!(delivered.insert(s)); }
                }
                Verdict::Duplicate => duplicates += 1,
                _ => {}
            }
        }
        prop_assert!(delivered.is_disjoint(&missing));
        if let (Some(first), Some(e)) = (delivered.iter().chain(missing.iter()).min().copied(), tracker.expected()) {
            prop_assert_eq!(delivered.len() as u64 + missing.len() as u64, e - first);
        }
        let st = tracker.stats();
        prop_assert_eq!(st.missing, missing.len() as u64);
        prop_assert_eq!(st.duplicates, duplicates);
        prop_assert_eq!(st.in_order, delivered.len() as u64);
    }
}
