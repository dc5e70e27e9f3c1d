//! The datagram receiver (protocol sections 8 and 9), driven deterministically:
//! datagrams as byte arrays, a virtual clock, a retransmission server played
//! by the test (or by `ServerSession` over a `Retention`). No sockets.
#![allow(
    // Configs are built field by field from the defaults, as in the docs.
    clippy::field_reassign_with_default,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use tickwire::encode::{QuoteFields, TradeFields};
use tickwire::session::datagram::{
    DatagramAction, DatagramConfig, DatagramEvent, DatagramReceiver, Line,
};
use tickwire::session::Time;
use tickwire::{encode, Message, Payload};

const SID: u64 = 0x0123_4567_89AB_CDEF;

fn t(ms: u64) -> Time {
    Time::new(Duration::from_millis(ms), ms)
}

/// Data frame `seq`: a quote (44 bytes), every third one a trade (40
/// bytes), so that frames of both lengths travel through the window.
fn data_frame(seq: u64) -> Vec<u8> {
    let mut buf = [0u8; 44];
    let payload = if seq.is_multiple_of(3) {
        Payload::Trade(TradeFields {
            instrument_id: seq as u32,
            price: seq as i32,
            ..TradeFields::default()
        })
    } else {
        Payload::Quote(QuoteFields {
            instrument_id: seq as u32,
            ..QuoteFields::default()
        })
    };
    let n = encode(&payload, seq, seq, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn frame(payload: Payload, seq: u64) -> Vec<u8> {
    let mut buf = [0u8; 44];
    let n = encode(&payload, seq, 0, &mut buf).unwrap();
    buf[..n].to_vec()
}

/// A datagram of `session`: Packet(first), then data `first..first+n`.
fn dgram(session: u64, first: u64, n: u64) -> Vec<u8> {
    let mut d = frame(
        Payload::Packet {
            session_id: session,
        },
        first,
    );
    for s in first..first + n {
        d.extend(data_frame(s));
    }
    d
}

#[derive(Debug, PartialEq, Eq, Clone)]
enum Ev {
    Data(u64),
    Gap(u64, u64),
    Session(u64, u64),
    End(u64),
    Discarded(u64),
    Silent(Line),
    Alive(Line),
    Dead,
}

fn drain(rx: &mut DatagramReceiver) -> Vec<Ev> {
    let mut out = Vec::new();
    while let Some(e) = rx.poll_event() {
        out.push(match e {
            DatagramEvent::Frame(f) => {
                assert_eq!(f.as_bytes(), &data_frame(f.sequence())[..]);
                let m = f.message().unwrap();
                assert_eq!((m.sequence(), m.as_bytes()), (f.sequence(), f.as_bytes()));
                Ev::Data(f.sequence())
            }
            DatagramEvent::Gap(g) => Ev::Gap(g.first, g.last),
            DatagramEvent::NewSession {
                session_id,
                sequence,
            } => Ev::Session(session_id, sequence),
            DatagramEvent::EndOfSession { sequence } => Ev::End(sequence),
            DatagramEvent::Discarded { discard, .. } => Ev::Discarded(discard.bytes),
            DatagramEvent::LineSilent { line } => Ev::Silent(line),
            DatagramEvent::LineAlive { line } => Ev::Alive(line),
            DatagramEvent::FeedDead => Ev::Dead,
            other => panic!("{other:?}"),
        });
    }
    out
}

fn actions(rx: &mut DatagramReceiver) -> Vec<(u64, u64)> {
    std::iter::from_fn(|| rx.poll_action())
        .map(|a| match a {
            DatagramAction::Retransmit {
                session_id,
                first,
                count,
            } => {
                assert_eq!(session_id, SID);
                (first, count)
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

fn data(range: std::ops::Range<u64>) -> Vec<Ev> {
    range.map(Ev::Data).collect()
}

/// A retransmission server's reply (section 9.2) for `s, count` holding
/// `held` (and having published up to `published`), fed to `rx`.
fn reply(rx: &mut DatagramReceiver, s: u64, count: u64, oldest: u64, published: u64, time: Time) {
    let e = (s + count - 1).min(published);
    let f = s.max(oldest);
    let feed = |rx: &mut DatagramReceiver, bytes: Vec<u8>| {
        let (m, _) = Message::decode(&bytes).unwrap();
        rx.handle_retransmission(&m, time);
    };
    feed(rx, frame(Payload::LoginAccepted { session_id: SID }, f));
    for q in f..=e {
        feed(rx, data_frame(q));
    }
    feed(rx, frame(Payload::Heartbeat, if f > e { f } else { e + 1 }));
}

fn config() -> DatagramConfig {
    let mut c = DatagramConfig::default();
    c.window = 64;
    c.retransmit_wait = Duration::from_millis(5);
    c.retransmit_deadline = Duration::from_millis(100);
    c.silence = None; // see `silent_lines_and_a_dead_feed`
    c
}

#[test]
fn loss_on_one_line_is_filled_by_the_other_without_a_request() {
    let mut rx = DatagramReceiver::new(config());
    rx.handle_datagram(Line::A, &dgram(SID, 1, 3), t(0));
    rx.handle_datagram(Line::B, &dgram(SID, 1, 3), t(0));
    // A lost 4..=6; A brings 7..=9 first, B then brings 4..=6.
    rx.handle_datagram(Line::A, &dgram(SID, 7, 3), t(1));
    assert_eq!(drain(&mut rx), data(1..4));
    rx.handle_datagram(Line::B, &dgram(SID, 4, 3), t(2));
    rx.handle_datagram(Line::B, &dgram(SID, 7, 3), t(2));
    assert_eq!(drain(&mut rx), data(4..10));
    assert_eq!(rx.poll_timeout(), None);
    rx.handle_timeout(t(50));
    assert_eq!(actions(&mut rx), vec![]);
    let s = rx.stats();
    assert_eq!(s.datagrams, [2, 3]);
    assert_eq!(s.duplicates, [0, 6]);
    assert_eq!(s.reordered, 3);
    assert_eq!((s.requests, s.recovered, s.unrecoverable), (0, 0, 0));
}

#[test]
fn loss_on_both_lines_is_requested_once_after_the_wait_and_filled_in_order() {
    let mut rx = DatagramReceiver::new(config());
    rx.handle_datagram(Line::A, &dgram(SID, 1, 3), t(0));
    rx.handle_datagram(Line::A, &dgram(SID, 7, 3), t(1)); // 4..=6 lost on both
    rx.handle_datagram(Line::B, &dgram(SID, 7, 3), t(1));
    assert_eq!(drain(&mut rx), data(1..4));
    assert_eq!(rx.poll_timeout(), Some(Duration::from_millis(6)));
    rx.handle_timeout(t(5));
    assert_eq!(actions(&mut rx), vec![]);
    rx.handle_timeout(t(6));
    assert_eq!(actions(&mut rx), vec![(4, 3)]);
    rx.handle_timeout(t(7));
    assert_eq!(actions(&mut rx), vec![], "exactly one request");
    reply(&mut rx, 4, 3, 1, 9, t(8));
    assert_eq!(drain(&mut rx), data(4..10));
    assert_eq!((rx.stats().recovered, rx.stats().requests), (3, 1));
    assert_eq!(rx.poll_timeout(), None);
}

#[test]
fn an_unanswered_request_becomes_an_exact_gap_at_the_deadline() {
    let mut rx = DatagramReceiver::new(config());
    rx.handle_datagram(Line::A, &dgram(SID, 1, 2), t(0));
    rx.handle_datagram(Line::A, &dgram(SID, 5, 2), t(0));
    rx.handle_timeout(t(5));
    assert_eq!(actions(&mut rx), vec![(3, 2)]);
    assert_eq!(rx.poll_timeout(), Some(Duration::from_millis(105)));
    rx.handle_timeout(t(104));
    assert_eq!(drain(&mut rx), data(1..3));
    rx.handle_timeout(t(105));
    assert_eq!(
        drain(&mut rx),
        vec![Ev::Gap(3, 4), Ev::Data(5), Ev::Data(6)]
    );
    assert_eq!((rx.stats().unrecoverable, rx.stats().gaps), (2, 1));
}

/// Requests lost with their connection are asked again on the next one,
/// once, with their first deadline: a reply on the new connection fills
/// them; if none comes they are a gap at exactly the first deadline.
#[test]
fn requests_lost_with_the_connection_are_asked_again_with_their_first_deadline() {
    let mut rx = DatagramReceiver::new(config());
    rx.handle_datagram(Line::A, &dgram(SID, 1, 2), t(0));
    rx.handle_datagram(Line::A, &dgram(SID, 5, 2), t(0)); // 3..=4 missing
    rx.handle_datagram(Line::A, &dgram(SID, 9, 2), t(3)); // 7..=8 missing
    rx.handle_timeout(t(5));
    assert_eq!(actions(&mut rx), vec![(3, 2)]);
    rx.handle_timeout(t(8));
    assert_eq!(actions(&mut rx), vec![(7, 2)]);
    // The connection drops: both asked again, at once, in one pass.
    rx.retransmission_reset();
    assert_eq!(rx.poll_timeout(), Some(Duration::ZERO));
    rx.handle_timeout(t(20));
    assert_eq!(actions(&mut rx), vec![(3, 2), (7, 2)]);
    rx.handle_timeout(t(21));
    assert_eq!(actions(&mut rx), vec![], "asked again once");
    // Their deadlines are still the first requests' (105 and 108).
    assert_eq!(rx.poll_timeout(), Some(Duration::from_millis(105)));
    // The new connection answers the first; the second is never answered.
    reply(&mut rx, 3, 2, 1, 10, t(30));
    assert_eq!(drain(&mut rx), data(1..7));
    rx.handle_timeout(t(107));
    assert_eq!(drain(&mut rx), vec![]);
    rx.handle_timeout(t(108));
    assert_eq!(
        drain(&mut rx),
        vec![Ev::Gap(7, 8), Ev::Data(9), Ev::Data(10)]
    );
    assert_eq!(rx.stats().requests, 4);
}

/// Without a retransmission server, requests are forgotten, never asked
/// again: their holes are gaps at the deadline.
#[test]
fn without_a_server_requests_are_not_asked_again() {
    let mut rx = DatagramReceiver::new(config());
    rx.handle_datagram(Line::A, &dgram(SID, 1, 2), t(0));
    rx.handle_datagram(Line::A, &dgram(SID, 5, 2), t(0));
    rx.handle_timeout(t(5));
    assert_eq!(actions(&mut rx), vec![(3, 2)]);
    rx.retransmission_unavailable();
    rx.handle_timeout(t(6));
    assert_eq!(actions(&mut rx), vec![]);
    assert_eq!(rx.poll_timeout(), Some(Duration::from_millis(105)));
    rx.handle_timeout(t(105));
    assert_eq!(
        drain(&mut rx),
        vec![
            Ev::Data(1),
            Ev::Data(2),
            Ev::Gap(3, 4),
            Ev::Data(5),
            Ev::Data(6)
        ]
    );
}

/// Section 8.7: a line that brought nothing for three heartbeat intervals
/// is silent (exactly then, once); the feed is dead when both are; a line
/// bringing a datagram again is alive, before that datagram's frames.
#[test]
fn silent_lines_and_a_dead_feed() {
    let mut c = config();
    c.lines = 2;
    c.silence = Some(Duration::from_millis(300));
    let mut rx = DatagramReceiver::new(c);
    rx.handle_datagram(Line::A, &dgram(SID, 1, 1), t(0));
    rx.handle_datagram(Line::B, &dgram(SID, 1, 1), t(100));
    assert_eq!(drain(&mut rx), data(1..2));
    assert_eq!(rx.poll_timeout(), Some(Duration::from_millis(300)));
    rx.handle_timeout(t(299));
    assert_eq!(drain(&mut rx), vec![]);
    rx.handle_timeout(t(300));
    assert_eq!(drain(&mut rx), vec![Ev::Silent(Line::A)]);
    assert_eq!(rx.poll_timeout(), Some(Duration::from_millis(400)));
    rx.handle_timeout(t(350));
    assert_eq!(drain(&mut rx), vec![], "reported once");
    rx.handle_timeout(t(400));
    assert_eq!(drain(&mut rx), vec![Ev::Silent(Line::B), Ev::Dead]);
    assert_eq!(rx.poll_timeout(), None);
    rx.handle_timeout(t(900));
    assert_eq!(drain(&mut rx), vec![], "dead once");
    // Line B comes back with the next frame.
    rx.handle_datagram(Line::B, &dgram(SID, 2, 1), t(1000));
    assert_eq!(drain(&mut rx), vec![Ev::Alive(Line::B), Ev::Data(2)]);
    assert_eq!(rx.poll_timeout(), Some(Duration::from_millis(1300)));
    rx.handle_timeout(t(1300));
    assert_eq!(drain(&mut rx), vec![Ev::Silent(Line::B), Ev::Dead]);
    // One line configured: a line never heard is silent from the start.
    let mut c = config();
    c.silence = Some(Duration::from_millis(300));
    let mut rx = DatagramReceiver::new(c);
    rx.handle_timeout(t(50));
    assert_eq!(rx.poll_timeout(), Some(Duration::from_millis(350)));
    rx.handle_timeout(t(350));
    assert_eq!(drain(&mut rx), vec![Ev::Silent(Line::A), Ev::Dead]);
}

#[test]
fn a_reply_showing_the_range_gone_is_a_gap_and_uncovered_is_asked_again() {
    let mut rx = DatagramReceiver::new(config());
    rx.handle_datagram(Line::A, &dgram(SID, 1, 1), t(0));
    rx.handle_datagram(Line::A, &dgram(SID, 11, 1), t(0)); // 2..=10 missing
    rx.handle_timeout(t(5));
    assert_eq!(actions(&mut rx), vec![(2, 9)]);
    // The server retains from 4 and caps replies at 3 frames: 4..=6 sent.
    reply(&mut rx, 2, 3 + 2, 4, 100, t(6));
    assert_eq!(
        drain(&mut rx),
        vec![
            Ev::Data(1),
            Ev::Gap(2, 3),
            Ev::Data(4),
            Ev::Data(5),
            Ev::Data(6)
        ]
    );
    // 7..=10 were not covered: asked again after the wait.
    rx.handle_timeout(t(10));
    assert_eq!(actions(&mut rx), vec![]);
    rx.handle_timeout(t(11));
    assert_eq!(actions(&mut rx), vec![(7, 4)]);
    reply(&mut rx, 7, 4, 4, 100, t(12));
    assert_eq!(drain(&mut rx), data(7..12));
}

#[test]
fn a_reply_from_another_session_fills_nothing() {
    let mut rx = DatagramReceiver::new(config());
    rx.handle_datagram(Line::A, &dgram(SID, 1, 1), t(0));
    rx.handle_datagram(Line::A, &dgram(SID, 4, 1), t(0));
    rx.handle_timeout(t(5));
    assert_eq!(actions(&mut rx), vec![(2, 2)]);
    let idle = frame(Payload::Heartbeat, 99); // an idle heartbeat first: ignored
    rx.handle_retransmission(&Message::decode(&idle).unwrap().0, t(6));
    let other = frame(Payload::LoginAccepted { session_id: 5 }, 2);
    rx.handle_retransmission(&Message::decode(&other).unwrap().0, t(6));
    let end = frame(Payload::Heartbeat, 2);
    rx.handle_retransmission(&Message::decode(&end).unwrap().0, t(6));
    assert_eq!(
        drain(&mut rx),
        vec![Ev::Data(1), Ev::Gap(2, 3), Ev::Data(4)]
    );
    assert_eq!(rx.session(), Some(SID));
}

#[test]
fn a_full_window_gives_up_the_oldest_holes() {
    let mut rx = DatagramReceiver::new(config()); // window 64
    rx.handle_datagram(Line::A, &dgram(SID, 1, 1), t(0));
    rx.handle_datagram(Line::A, &dgram(SID, 10, 1), t(0)); // 2..=9 missing
    rx.handle_datagram(Line::A, &dgram(SID, 70, 2), t(1)); // 71 needs 8.. gone
    assert_eq!(drain(&mut rx), vec![Ev::Data(1), Ev::Gap(2, 7)]);
    // 8, 9 and 11..=69 are still recoverable.
    assert_eq!(rx.expected(), 8);
    rx.handle_datagram(Line::B, &dgram(SID, 1000, 1), t(2)); // far ahead
    let evs = drain(&mut rx);
    assert_eq!(evs.first(), Some(&Ev::Gap(8, 9)));
    assert!(evs.contains(&Ev::Data(70)) && evs.contains(&Ev::Data(71)));
    assert_eq!(evs.last(), Some(&Ev::Gap(72, 936)));
    assert_eq!(rx.expected(), 937);
}

#[test]
fn reordering_within_the_window_is_delivered_in_order() {
    let mut rx = DatagramReceiver::new(config());
    rx.handle_datagram(Line::A, &dgram(SID, 1, 2), t(0));
    rx.handle_datagram(Line::A, &dgram(SID, 7, 2), t(0));
    rx.handle_datagram(Line::A, &dgram(SID, 5, 2), t(0));
    rx.handle_datagram(Line::A, &dgram(SID, 3, 2), t(1));
    assert_eq!(drain(&mut rx), data(1..9));
    assert_eq!(rx.stats().reordered, 4);
    assert_eq!(rx.poll_timeout(), None);
}

#[test]
fn duplicates_are_counted_per_line_and_never_delivered() {
    let mut rx = DatagramReceiver::new(config());
    for _ in 0..3 {
        rx.handle_datagram(Line::A, &dgram(SID, 1, 4), t(0));
        rx.handle_datagram(Line::B, &dgram(SID, 1, 4), t(0));
    }
    assert_eq!(drain(&mut rx), data(1..5));
    assert_eq!(rx.stats().duplicates, [8, 12]);
    assert_eq!(rx.stats().datagrams, [3, 3]);
}

#[test]
fn a_new_session_restarts_tracking_and_the_old_one_is_dropped() {
    let mut rx = DatagramReceiver::new(config());
    rx.handle_datagram(Line::A, &dgram(SID, 100, 2), t(0));
    rx.handle_datagram(Line::A, &dgram(7, 1, 2), t(1));
    assert_eq!(
        drain(&mut rx),
        vec![
            Ev::Data(100),
            Ev::Data(101),
            Ev::Session(7, 1),
            Ev::Data(1),
            Ev::Data(2)
        ]
    );
    rx.handle_datagram(Line::B, &dgram(SID, 102, 2), t(2)); // the old session, late
    assert_eq!(drain(&mut rx), vec![]);
    assert_eq!(rx.stats().old_session, 1);
    assert_eq!(rx.session(), Some(7));
}

#[test]
fn a_damaged_datagram_discards_only_itself() {
    let mut rx = DatagramReceiver::new(config());
    rx.handle_datagram(Line::A, &dgram(SID, 1, 2), t(0));
    // Damaged Packet: the whole datagram goes, as one discarded run.
    let mut bad = dgram(SID, 3, 2);
    bad[25] ^= 1;
    rx.handle_datagram(Line::A, &bad, t(0));
    assert_eq!(
        drain(&mut rx),
        vec![Ev::Data(1), Ev::Data(2), Ev::Discarded(bad.len() as u64)]
    );
    // Damage inside a datagram: only the damaged frame; a truncated tail
    // never reaches the next datagram.
    let mut inner = dgram(SID, 3, 3);
    inner[32 + 44 + 30] ^= 1; // frame 4
    inner.truncate(inner.len() - 10); // frame 5 cut
    rx.handle_datagram(Line::B, &inner, t(1));
    rx.handle_datagram(Line::B, &dgram(SID, 6, 1), t(1));
    let evs = drain(&mut rx);
    // The damaged frame (44 bytes) and the cut one (34), one run, are reported; 3 is
    // delivered; 6 waits for 4 and 5.
    assert_eq!(evs, vec![Ev::Discarded(78), Ev::Data(3)]);
    // The line A copy fills 4 and 5.
    rx.handle_datagram(Line::A, &dgram(SID, 3, 3), t(2));
    let evs2 = drain(&mut rx);
    assert_eq!(evs2, data(4..7));
    assert_eq!(rx.stats().discarded_datagrams, 1);
}

#[test]
fn control_frames_inside_a_datagram_are_discarded_and_end_of_session_acts_once() {
    let mut rx = DatagramReceiver::new(config());
    let mut d = dgram(SID, 1, 1);
    d.extend(frame(Payload::Heartbeat, 2));
    d.extend(data_frame(2));
    d.extend(frame(Payload::EndOfSession, 5));
    rx.handle_datagram(Line::A, &d, t(0));
    rx.handle_datagram(Line::B, &d, t(0));
    // Discards are reported as each datagram is parsed, frames once in order.
    assert_eq!(
        drain(&mut rx),
        vec![
            Ev::Discarded(24),
            Ev::Data(1),
            Ev::Data(2),
            Ev::Discarded(24)
        ]
    );
    rx.handle_datagram(Line::A, &dgram(SID, 3, 2), t(1));
    assert_eq!(drain(&mut rx), vec![Ev::Data(3), Ev::Data(4), Ev::End(5)]);
    rx.handle_datagram(Line::B, &d, t(2));
    assert_eq!(drain(&mut rx), vec![Ev::Discarded(24)]);
}

#[test]
fn a_packet_only_datagram_reveals_an_idle_gap() {
    let mut rx = DatagramReceiver::new(config());
    rx.handle_datagram(Line::A, &dgram(SID, 1, 1), t(0));
    rx.handle_datagram(Line::A, &dgram(SID, 4, 0), t(0)); // idle: next is 4
    rx.handle_timeout(t(5));
    assert_eq!(actions(&mut rx), vec![(2, 2)]);
    // A Packet never moves the expected sequence backwards.
    rx.handle_datagram(Line::B, &dgram(SID, 1, 0), t(6));
    assert_eq!(rx.expected(), 2);
}

#[test]
fn a_configured_start_recovers_the_range_before_the_first_packet() {
    let mut c = config();
    c.start = Some(5);
    let mut rx = DatagramReceiver::new(c);
    rx.handle_datagram(Line::A, &dgram(SID, 8, 2), t(0));
    rx.handle_timeout(t(5));
    assert_eq!(actions(&mut rx), vec![(5, 3)]);
    reply(&mut rx, 5, 3, 1, 9, t(6));
    assert_eq!(drain(&mut rx), data(5..10));
}

/// A line's fate for one datagram.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Lost,
    Once,
    Twice,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![3 => Just(Fate::Lost), 6 => Just(Fate::Once), 1 => Just(Fate::Twice)]
}

/// Runs a schedule: `sizes` datagrams, each line's fate, a delivery order
/// (by sort keys), then time passes with the retransmission server
/// answering (or not). Returns every event.
fn run(
    sizes: &[u64],
    fates: &[(Fate, Fate)],
    keys: &[u32],
    retransmit: bool,
    window: usize,
) -> (Vec<Ev>, u64) {
    let mut c = config();
    c.window = window;
    let mut rx = DatagramReceiver::new(c);
    let mut sends: Vec<(u32, Line, Vec<u8>)> = Vec::new();
    let mut next = 1;
    // The first datagram arrives first on line A, so that the start is 1.
    let mut first = true;
    for (i, &n) in sizes.iter().enumerate() {
        let d = dgram(SID, next, n);
        next += n;
        let (a, b) = fates[i % fates.len()];
        for (line, f) in [(Line::A, a), (Line::B, b)] {
            let copies = match (first, f) {
                (true, _) => 1,
                (_, Fate::Lost) => 0,
                (_, Fate::Once) => 1,
                (_, Fate::Twice) => 2,
            };
            for c in 0..copies {
                let key = if first {
                    0
                } else {
                    keys[(i * 2 + c) % keys.len()] % 40 + i as u32 * 8
                };
                sends.push((key, line, d.clone()));
            }
            first = false;
        }
    }
    // Idle Packet with the next sequence, on both lines, last.
    sends.sort_by_key(|s| s.0);
    let mut evs = Vec::new();
    let mut now = 0;
    for (_, line, d) in &sends {
        rx.handle_datagram(*line, d, t(now));
        evs.extend(drain(&mut rx));
        now += 1;
        serve(&mut rx, retransmit, next, t(now), &mut evs);
    }
    rx.handle_datagram(Line::A, &dgram(SID, next, 0), t(now));
    evs.extend(drain(&mut rx));
    for _ in 0..1000 {
        let Some(at) = rx.poll_timeout() else { break };
        now = now.max(at.as_millis() as u64);
        rx.handle_timeout(t(now));
        evs.extend(drain(&mut rx));
        serve(&mut rx, retransmit, next, t(now), &mut evs);
    }
    (evs, next)
}

fn serve(
    rx: &mut DatagramReceiver,
    retransmit: bool,
    published: u64,
    time: Time,
    evs: &mut Vec<Ev>,
) {
    while let Some(DatagramAction::Retransmit { first, count, .. }) = rx.poll_action() {
        if retransmit {
            reply(rx, first, count, 1, published - 1, time);
            evs.extend(drain(rx));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn with_retransmission_every_frame_is_delivered_once_in_order(
        sizes in proptest::collection::vec(0u64..5, 1..60),
        fates in proptest::collection::vec((fate(), fate()), 1..20),
        keys in proptest::collection::vec(any::<u32>(), 1..20),
    ) {
        let (evs, next) = run(&sizes, &fates, &keys, true, 4096);
        prop_assert_eq!(evs, data(1..next));
    }

    #[test]
    fn without_retransmission_delivered_and_gaps_partition_the_range(
        sizes in proptest::collection::vec(0u64..5, 1..60),
        fates in proptest::collection::vec((fate(), fate()), 1..20),
        keys in proptest::collection::vec(any::<u32>(), 1..20),
        window in 1usize..40,
    ) {
        let (evs, next) = run(&sizes, &fates, &keys, false, window);
        let mut covered: BTreeMap<u64, u32> = BTreeMap::new();
        let mut last = 0;
        for e in &evs {
            let (a, b) = match *e {
                Ev::Data(s) => (s, s),
                Ev::Gap(a, b) => (a, b),
                ref other => panic!("{other:?}"),
            };
            prop_assert!(a > last || last == 0, "in order: {:?}", evs);
            last = b;
            for s in a..=b {
                *covered.entry(s).or_default() += 1;
            }
        }
        prop_assert_eq!(covered.len() as u64, next - 1);
        prop_assert!(covered.keys().copied().eq(1..next));
        prop_assert!(covered.values().all(|&n| n == 1));
    }
}

/// A receiver resuming a session (a journaled relay restarted): a Packet of
/// that session continues it from `start`, the range before the Packet is
/// requested by retransmission, with no NewSession; a late datagram below
/// `start` delivers nothing.
#[test]
fn a_resumed_session_continues_from_its_start_and_recovers_the_range_before() {
    let mut c = config();
    (c.start, c.resume_session) = (Some(11), Some(SID));
    let mut rx = DatagramReceiver::new(c);
    assert_eq!((rx.session(), rx.expected()), (Some(SID), 11));
    rx.handle_datagram(Line::A, &dgram(SID, 14, 2), t(0)); // 11..=13 missing
    rx.handle_datagram(Line::A, &dgram(SID, 8, 2), t(0)); // late: before start
    rx.handle_timeout(t(5));
    assert_eq!(actions(&mut rx), vec![(11, 3)]);
    reply(&mut rx, 11, 3, 1, 15, t(6));
    assert_eq!(drain(&mut rx), data(11..16), "no NewSession, no gap");
    assert_eq!(rx.stats().recovered, 3);
}

/// A receiver resuming a session that meets another one: a new session
/// (NewSession at its Packet's sequence), and the resumed session is never
/// returned to.
#[test]
fn a_resumed_session_gives_way_to_another_one_and_is_never_returned_to() {
    let mut c = config();
    (c.start, c.resume_session) = (Some(11), Some(SID + 1));
    let mut rx = DatagramReceiver::new(c);
    rx.handle_datagram(Line::A, &dgram(SID, 1, 3), t(0));
    let mut want = vec![Ev::Session(SID, 1)];
    want.extend(data(1..4));
    assert_eq!(drain(&mut rx), want);
    rx.handle_datagram(Line::A, &dgram(SID + 1, 11, 3), t(1));
    assert_eq!(drain(&mut rx), vec![]);
    assert_eq!(rx.stats().old_session, 1);
    assert_eq!(rx.session(), Some(SID));
}
