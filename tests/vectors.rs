//! The protocol's test vectors (section 6, and those of sections 8, 9 and
//! 11), byte for byte, in both directions, and the stream parser on every
//! split point of each.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use tickwire::encode::{QuoteFields, TradeFields};
use tickwire::parse::{Event, Parser, SliceParser};
use tickwire::wire::{KeyId, RejectReason, Secret};
use tickwire::{encode, DecodeError, Message, Payload};

const T: u64 = 1_700_000_000_123_456_789;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// The secret of the first Auth vector: bytes 00 01 02 … 1f.
fn counting_secret() -> Secret {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    Secret::new(bytes)
}

/// (payload, sequence, timestamp, hex) for every vector of section 6, then
/// the single frames of "Test vectors for sections 8 and 9", then those of
/// "Test vectors for section 11" (indices 12 to 16).
fn vectors() -> Vec<(Payload, u64, u64, Vec<u8>)> {
    vec![
        (Payload::Heartbeat, 1, 0, hex("a5 01 01 18 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 17 07 45 20")),
        (Payload::Login, 0, T, hex("a5 01 02 18 00 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 4a b1 75 39")),
        (Payload::Login, 1000, T, hex("a5 01 02 18 e8 03 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 14 2f e6 dd")),
        (
            Payload::LoginAccepted { session_id: 0x0123_4567_89AB_CDEF },
            42,
            T,
            hex("a5 01 03 20 2a 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 ef cd ab 89 67 45 23 01 33 37 05 36"),
        ),
        (Payload::EndOfSession, 43, T, hex("a5 01 04 18 2b 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 1a a3 52 ac")),
        (
            Payload::Quote(QuoteFields { instrument_id: 42, bid_price: 1_234_500, ask_price: 1_234_600, bid_size: 100, ask_size: 200 }),
            7,
            T,
            hex("a5 01 10 2c 07 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 2a 00 00 00 44 d6 12 00 a8 d6 12 00 64 00 00 00 c8 00 00 00 c0 49 8b a2"),
        ),
        (
            Payload::Quote(QuoteFields { instrument_id: 4_000_000_000, bid_price: -5, ask_price: 0, bid_size: 0, ask_size: 4_294_967_295 }),
            8,
            T,
            hex("a5 01 10 2c 08 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 00 28 6b ee fb ff ff ff 00 00 00 00 00 00 00 00 ff ff ff ff 37 00 a1 82"),
        ),
        (
            Payload::Trade(TradeFields { instrument_id: 42, price: 1_234_550, size: 50, side: 1, flags: 0 }),
            9,
            T,
            hex("a5 01 11 28 09 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 2a 00 00 00 76 d6 12 00 32 00 00 00 01 00 00 00 d2 4f d1 29"),
        ),
        (
            Payload::Trade(TradeFields { instrument_id: 7, price: -1, size: 1, side: 2, flags: 0x81 }),
            10,
            T,
            hex("a5 01 11 28 0a 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 07 00 00 00 ff ff ff ff 01 00 00 00 02 81 00 00 5c 18 0d 76"),
        ),
        (
            Payload::Packet { session_id: 0x0123_4567_89AB_CDEF },
            7,
            T,
            hex("a5 01 05 20 07 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 ef cd ab 89 67 45 23 01 07 cd d3 4d"),
        ),
        (
            Payload::Packet { session_id: 0x0123_4567_89AB_CDEF },
            12,
            T,
            hex("a5 01 05 20 0c 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 ef cd ab 89 67 45 23 01 21 45 cc 46"),
        ),
        (
            Payload::Retransmit { session_id: 0x0123_4567_89AB_CDEF, count: 50 },
            100,
            T,
            hex("a5 01 06 28 64 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 ef cd ab 89 67 45 23 01 32 00 00 00 00 00 00 00 4f 5e 5c 40"),
        ),
        (
            Payload::auth(&KeyId::new("alice").unwrap(), counting_secret()),
            0,
            T,
            hex("a5 01 07 48 00 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 61 6c 69 63 65 00 00 00 00 00 00 00 00 00 00 00 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 22 d4 9a 98"),
        ),
        (
            Payload::Rejected { reason: RejectReason::NotAuthorized },
            0,
            T,
            hex("a5 01 08 20 00 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 02 00 00 00 00 00 00 00 e3 49 64 ec"),
        ),
        (
            Payload::Rejected { reason: RejectReason::AuthenticationRequired },
            0,
            T,
            hex("a5 01 08 20 00 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 01 00 00 00 00 00 00 00 8a ce 20 37"),
        ),
        (
            Payload::auth(&KeyId::new("feed-reader_2.v1").unwrap(), Secret::new([0xff; 32])),
            0,
            T,
            hex("a5 01 07 48 00 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 66 65 65 64 2d 72 65 61 64 65 72 5f 32 2e 76 31 ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff 12 ca 25 07"),
        ),
        (
            Payload::Rejected { reason: RejectReason::NotPermitted },
            0,
            T,
            hex("a5 01 08 20 00 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 03 00 00 00 00 00 00 00 c4 34 58 a5"),
        ),
    ]
}

/// The whole datagram of "Test vectors for sections 8 and 9" (116 bytes).
fn datagram_vector() -> Vec<u8> {
    hex(concat!(
        "a5 01 05 20 07 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 ef cd ab 89 67 45 23 01 07 cd d3 4d ",
        "a5 01 10 2c 07 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 2a 00 00 00 44 d6 12 00 a8 d6 12 00 64 00 00 00 c8 00 00 00 c0 49 8b a2 ",
        "a5 01 11 28 08 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 2a 00 00 00 76 d6 12 00 32 00 00 00 01 00 00 00 19 9f 77 14",
    ))
}

/// The datagram's frames: the Packet, the Quote of section 6, a Trade.
fn datagram_frames() -> Vec<(Payload, u64)> {
    vec![
        (
            Payload::Packet {
                session_id: 0x0123_4567_89AB_CDEF,
            },
            7,
        ),
        (
            Payload::Quote(QuoteFields {
                instrument_id: 42,
                bid_price: 1_234_500,
                ask_price: 1_234_600,
                bid_size: 100,
                ask_size: 200,
            }),
            7,
        ),
        (
            Payload::Trade(TradeFields {
                instrument_id: 42,
                price: 1_234_550,
                size: 50,
                side: 1,
                flags: 0,
            }),
            8,
        ),
    ]
}

#[test]
fn datagram_vector_encodes_byte_for_byte() {
    let mut buf = [0u8; 256];
    let mut at = 0;
    for (payload, seq) in datagram_frames() {
        at += encode(&payload, seq, T, &mut buf[at..]).unwrap();
    }
    assert_eq!(at, 116);
    assert_eq!(&buf[..at], &datagram_vector()[..]);
}

#[test]
fn datagram_vector_decodes_frame_by_frame() {
    let bytes = datagram_vector();
    assert_eq!(bytes.len(), 116);
    let mut rest = &bytes[..];
    for (payload, seq) in datagram_frames() {
        let (msg, after) = Message::decode(rest).unwrap();
        assert_eq!(Payload::from(msg), payload);
        assert_eq!((msg.sequence(), msg.timestamp()), (seq, T));
        rest = after;
    }
    assert!(rest.is_empty());
    // As a stream: the Packet names the session, the data follow in order.
    let events: Vec<_> = SliceParser::new(&bytes).collect();
    assert!(matches!(
        events[0],
        Event::NewSession {
            session_id: 0x0123_4567_89AB_CDEF,
            sequence: 7
        }
    ));
    assert!(matches!(events[1], Event::Frame(Message::Packet(_))));
    assert!(matches!(events[2], Event::Frame(Message::Quote(q)) if q.sequence() == 7));
    assert!(matches!(events[3], Event::Frame(Message::Trade(t)) if t.sequence() == 8));
    assert_eq!(events.len(), 4);
}

#[test]
fn datagram_frames_have_their_fields() {
    let v = vectors();
    let (Message::Packet(p), _) = Message::decode(&v[9].3).unwrap() else {
        panic!()
    };
    assert_eq!((p.sequence(), p.session_id()), (7, 0x0123_4567_89AB_CDEF));
    assert_eq!(p.checksum(), 0x4dd3_cd07);
    let (Message::Retransmit(r), _) = Message::decode(&v[11].3).unwrap() else {
        panic!()
    };
    assert_eq!(
        (r.sequence(), r.session_id(), r.count()),
        (100, 0x0123_4567_89AB_CDEF, 50)
    );
    assert_eq!(r.checksum(), 0x405c_5e4f);
}

#[test]
fn encode_matches_every_vector() {
    for (payload, seq, ts, bytes) in vectors() {
        let mut buf = [0u8; 72];
        let n = encode(&payload, seq, ts, &mut buf).unwrap();
        assert_eq!(&buf[..n], &bytes[..], "{payload:?}");
    }
}

#[test]
fn decode_matches_every_vector() {
    for (payload, seq, ts, bytes) in vectors() {
        let (msg, rest) = Message::decode(&bytes).unwrap();
        assert!(rest.is_empty());
        assert_eq!(Payload::from(msg), payload);
        assert_eq!((msg.sequence(), msg.timestamp()), (seq, ts));
        assert_eq!(msg.as_bytes(), &bytes[..]);
        assert_eq!(msg.len(), bytes.len());
    }
}

#[test]
fn decoded_fields_are_plain_integers() {
    let v = vectors();
    let (Message::Quote(q), _) = Message::decode(&v[6].3).unwrap() else {
        panic!()
    };
    assert_eq!(q.instrument_id(), 4_000_000_000u32);
    assert_eq!(q.bid_price(), -5i32);
    assert_eq!(q.ask_size(), u32::MAX);
    assert_eq!(q.checksum(), 0x82a1_0037);
    let (Message::Trade(t), _) = Message::decode(&v[8].3).unwrap() else {
        panic!()
    };
    assert_eq!(
        (t.price(), t.side(), t.flags(), t.reserved()),
        (-1, 2, 0x81, 0)
    );
    let (Message::LoginAccepted(la), _) = Message::decode(&v[3].3).unwrap() else {
        panic!()
    };
    assert_eq!(la.session_id(), 0x0123_4567_89AB_CDEF);
}

#[test]
fn every_damaged_byte_is_rejected() {
    for (_, _, _, bytes) in vectors() {
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert!(
                    Message::decode(&damaged).is_err(),
                    "byte {i} bit {bit} of {bytes:02x?}"
                );
            }
        }
    }
}

#[test]
fn decode_errors_name_the_failure() {
    let hb = &vectors()[0].3;
    let mut b = hb.clone();
    b[1] = 2;
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::BadVersion { found: 2 })
    );
    b = hb.clone();
    b[2] = 0x09;
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::UnknownType { found: 9 })
    );
    // 0x07 (Auth) and 0x08 (Rejected) are valid since revision 3, 72 and 32 bytes long.
    b[2] = 0x07;
    assert!(matches!(
        Message::decode(&b),
        Err(DecodeError::BadLength { found: 24, .. })
    ));
    b[2] = 0x08;
    assert!(matches!(
        Message::decode(&b),
        Err(DecodeError::BadLength { found: 24, .. })
    ));
    // 0x05 (Packet) is valid since revision 2, but it is 32 bytes long.
    b[2] = 0x05;
    assert!(matches!(
        Message::decode(&b),
        Err(DecodeError::BadLength { found: 24, .. })
    ));
    b = hb.clone();
    b[3] = 44;
    assert!(matches!(
        Message::decode(&b),
        Err(DecodeError::BadLength { found: 44, .. })
    ));
    b = hb.clone();
    b[10] ^= 1;
    assert!(matches!(
        Message::decode(&b),
        Err(DecodeError::BadChecksum { .. })
    ));
    assert_eq!(
        Message::decode(&hb[..23]),
        Err(DecodeError::Incomplete { needed: 24 })
    );
    assert_eq!(
        Message::decode(&[]),
        Err(DecodeError::Incomplete { needed: 4 })
    );
    // Every message is actionable text.
    let e = DecodeError::BadChecksum {
        stored: 1,
        computed: 2,
    };
    assert!(e.to_string().contains("checksum"));
}

fn all_vectors_stream() -> (Vec<u8>, usize) {
    let v = vectors();
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.3.clone()).collect();
    (bytes, v.len())
}

/// Frame bytes (as delivered) from a streaming parse with the given cut points.
fn stream_frames(bytes: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, u64) {
    let mut storage = [0u8; 128];
    let mut parser = Parser::new(&mut storage[..]).unwrap();
    let mut frames = Vec::new();
    let mut discarded = 0;
    let mut at = 0;
    let mut drain = |parser: &mut Parser<&mut [u8]>| {
        while let Some(ev) = parser.next_event() {
            match ev {
                Event::Frame(m) | Event::Duplicate(m) => frames.push(m.as_bytes().to_vec()),
                Event::Discarded(d) => discarded += d.bytes,
                _ => {}
            }
        }
    };
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let mut piece = &bytes[at..cut];
        while !piece.is_empty() {
            let n = parser.fill_from(piece);
            piece = &piece[n..];
            drain(&mut parser);
        }
        at = cut;
    }
    parser.finish();
    drain(&mut parser);
    (frames, discarded)
}

#[test]
fn every_split_point_of_every_vector() {
    for (_, _, _, bytes) in vectors() {
        for cut in 0..=bytes.len() {
            let (frames, discarded) = stream_frames(&bytes, &[cut]);
            assert_eq!(frames, vec![bytes.clone()], "cut at {cut}");
            assert_eq!(discarded, 0);
        }
    }
}

#[test]
fn all_vectors_back_to_back_in_every_two_way_split_and_byte_by_byte() {
    let (bytes, count) = all_vectors_stream();
    for cut in 0..=bytes.len() {
        let (frames, discarded) = stream_frames(&bytes, &[cut]);
        assert_eq!(frames.len(), count);
        assert_eq!(frames.concat(), bytes);
        assert_eq!(discarded, 0);
    }
    let cuts: Vec<usize> = (1..bytes.len()).collect();
    let (frames, _) = stream_frames(&bytes, &cuts);
    assert_eq!(frames.concat(), bytes);
}

#[test]
fn truncated_frame_does_not_swallow_the_next() {
    let v = vectors();
    let quote = &v[5].3;
    let trade = &v[7].3;
    for keep in 1..quote.len() {
        let mut stream = quote[..keep].to_vec();
        stream.extend_from_slice(trade);
        let events: Vec<_> = SliceParser::new(&stream).collect();
        let frames: Vec<_> = events
            .iter()
            .filter_map(|e| {
                if let Event::Frame(m) = e {
                    Some(m.as_bytes())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(frames, vec![&trade[..]], "keep {keep}");
        let discarded: u64 = events
            .iter()
            .filter_map(|e| {
                if let Event::Discarded(d) = e {
                    Some(d.bytes)
                } else {
                    None
                }
            })
            .sum();
        assert_eq!(discarded, keep as u64);
    }
}

#[test]
fn datagram_frames_print_as_json_lines() {
    use tickwire::json::JsonMessage;
    let v = vectors();
    let line = |i: usize| {
        let (m, _) = Message::decode(&v[i].3).unwrap();
        JsonMessage(&m).to_string()
    };
    assert_eq!(
        line(9),
        r#"{"type":"packet","sequence":7,"timestamp":1700000000123456789,"session_id":81985529216486895}"#
    );
    assert_eq!(
        line(11),
        r#"{"type":"retransmit","sequence":100,"timestamp":1700000000123456789,"session_id":81985529216486895,"count":50}"#
    );
}

#[test]
fn section_11_frames_have_their_fields() {
    let v = vectors();
    let (Message::Auth(a), _) = Message::decode(&v[12].3).unwrap() else {
        panic!()
    };
    assert_eq!((a.sequence(), a.timestamp()), (0, T));
    assert_eq!(a.key_id().unwrap().as_str(), "alice");
    assert_eq!(a.secret(), counting_secret());
    assert!(a.is_well_formed());
    assert_eq!(a.checksum(), 0x989a_d422);
    let (Message::Auth(a), _) = Message::decode(&v[15].3).unwrap() else {
        panic!()
    };
    assert_eq!(a.key_id().unwrap().as_str(), "feed-reader_2.v1");
    assert_eq!(a.key_id().unwrap().len(), 16);
    assert_eq!(a.secret().expose(), &[0xff; 32]);
    assert!(a.is_well_formed());
    for (i, reason) in [(13, 2), (14, 1), (16, 3)] {
        let (Message::Rejected(r), _) = Message::decode(&v[i].3).unwrap() else {
            panic!()
        };
        assert_eq!(
            (r.sequence(), r.reason().code(), r.reserved()),
            (0, reason, [0; 7])
        );
    }
}

#[test]
fn section_11_frames_are_numbered_zero_by_the_sequencer() {
    // Auth and Rejected carry sequence 0 whatever the next data sequence.
    let v = vectors();
    for (payload, _, _, bytes) in &v[12..=16] {
        let mut seq = tickwire::Sequencer::starting_at(1234);
        let mut buf = [0u8; 72];
        let n = seq.encode(payload, T, &mut buf).unwrap();
        assert_eq!(&buf[..n], &bytes[..]);
        assert_eq!(seq.next_sequence(), 1234);
        let mut batch = [0u8; 72];
        let mut seq = tickwire::Sequencer::starting_at(1234);
        let done = seq.encode_batch(&[(T, *payload)], &mut batch);
        assert_eq!(&batch[..done.bytes], &bytes[..]);
    }
}

#[test]
fn section_11_frames_print_as_json_lines() {
    use tickwire::json::JsonMessage;
    let v = vectors();
    let line = |i: usize| {
        let (m, _) = Message::decode(&v[i].3).unwrap();
        JsonMessage(&m).to_string()
    };
    assert_eq!(
        line(12),
        r#"{"type":"auth","sequence":0,"timestamp":1700000000123456789,"key_id":"alice"}"#
    );
    assert_eq!(
        line(15),
        r#"{"type":"auth","sequence":0,"timestamp":1700000000123456789,"key_id":"feed-reader_2.v1"}"#
    );
    assert_eq!(
        line(13),
        r#"{"type":"rejected","sequence":0,"timestamp":1700000000123456789,"reason":2}"#
    );
    assert_eq!(
        line(16),
        r#"{"type":"rejected","sequence":0,"timestamp":1700000000123456789,"reason":3}"#
    );
}

#[test]
fn truncated_auth_does_not_swallow_the_next_frame() {
    let v = vectors();
    let auth = &v[12].3;
    let login = &v[1].3;
    for keep in 1..auth.len() {
        let mut stream = auth[..keep].to_vec();
        stream.extend_from_slice(login);
        let mut frames = Vec::new();
        let mut discarded = 0;
        for e in SliceParser::new(&stream) {
            match e {
                Event::Frame(m) => frames.push(m.as_bytes().to_vec()),
                Event::Discarded(d) => discarded += d.bytes,
                _ => {}
            }
        }
        assert_eq!(frames, vec![login.clone()], "keep {keep}");
        assert_eq!(discarded, keep as u64);
    }
}
