//! The datagram receiver (protocol sections 8 and 9) on arbitrary
//! datagrams, retransmission replies, timeouts and connection resets: never
//! panics; within a session, frames come out in strictly increasing
//! sequence order, each a checked frame, and gaps never cover a delivered
//! sequence; its counters agree with the events.
#![no_main]

use core::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tickwire::encode::QuoteFields;
use tickwire::session::datagram::{DatagramConfig, DatagramEvent, DatagramReceiver, Line};
use tickwire::session::Time;
use tickwire::{encode, Message, Payload};

#[derive(Arbitrary, Debug)]
enum Op {
    /// Raw bytes as a datagram.
    Raw {
        line_b: bool,
        bytes: Vec<u8>,
    },
    /// A well-formed datagram: Packet(first) and `count` data frames,
    /// optionally with a damaged byte and a trailing EndOfSession.
    Data {
        line_b: bool,
        session: u8,
        first: u16,
        count: u8,
        damage: Option<u16>,
        end: bool,
        /// An Auth (true) or Rejected frame after the Packet (revision 3):
        /// a control frame a datagram may not hold, discarded and reported.
        control: Option<(bool, u8)>,
    },
    /// A retransmission reply: LoginAccepted(from), frames from..to, Heartbeat.
    Reply {
        session: u8,
        from: u16,
        to: u16,
    },
    /// Time passes.
    Advance {
        ms: u16,
    },
    Reset,
    Unavailable,
}

#[derive(Arbitrary, Debug)]
struct Input {
    window: u8,
    start: Option<u16>,
    ops: Vec<Op>,
}

fn frame(payload: &Payload, sequence: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; tickwire::wire::MAX_FRAME_LEN];
    if let Ok(n) = encode(payload, sequence, sequence, &mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
}

fn quote(sequence: u64) -> Payload {
    Payload::Quote(QuoteFields {
        instrument_id: sequence as u32,
        ..QuoteFields::default()
    })
}

fuzz_target!(|input: Input| {
    let mut config = DatagramConfig::default();
    config.window = usize::from(input.window).max(1);
    config.retransmit_wait = Duration::from_millis(2);
    config.retransmit_deadline = Duration::from_millis(50);
    config.start = input.start.map(u64::from);
    config.lines = 2;
    config.silence = Some(Duration::from_millis(300));
    let mut rx = DatagramReceiver::new(config);
    let mut now = Duration::ZERO;
    let mut last: Option<u64> = None; // last delivered or given-up sequence, this session
    let (mut delivered, mut gaps, mut unrecoverable) = (0u64, 0u64, 0u64);
    for op in input.ops {
        let time = Time::new(now, now.as_nanos() as u64);
        match op {
            Op::Raw { line_b, bytes } => {
                let line = if line_b { Line::B } else { Line::A };
                rx.handle_datagram(line, &bytes, time);
            }
            Op::Data {
                line_b,
                session,
                first,
                count,
                damage,
                end,
                control,
            } => {
                let line = if line_b { Line::B } else { Line::A };
                let first = u64::from(first);
                let mut d = Vec::new();
                frame(
                    &Payload::Packet {
                        session_id: u64::from(session % 3),
                    },
                    first,
                    &mut d,
                );
                if let Some((auth, byte)) = control {
                    let payload = if auth {
                        Payload::Auth {
                            key_id: [byte; 16],
                            secret: tickwire::wire::Secret::new([byte; 32]),
                        }
                    } else {
                        Payload::Rejected {
                            reason: tickwire::wire::RejectReason::from_code(byte),
                        }
                    };
                    frame(&payload, 0, &mut d);
                }
                for s in first..first + u64::from(count % 40) {
                    frame(&quote(s), s, &mut d);
                }
                if end {
                    frame(
                        &Payload::EndOfSession,
                        first + u64::from(count % 40),
                        &mut d,
                    );
                }
                if let Some(at) = damage {
                    let len = d.len();
                    if let Some(b) = d.get_mut(usize::from(at) % len.max(1)) {
                        *b ^= 0x5A;
                    }
                }
                rx.handle_datagram(line, &d, time);
            }
            Op::Reply { session, from, to } => {
                let (from, to) = (u64::from(from), u64::from(to));
                let mut bytes = Vec::new();
                frame(
                    &Payload::LoginAccepted {
                        session_id: u64::from(session % 3),
                    },
                    from,
                    &mut bytes,
                );
                for s in from..=to.min(from + 64) {
                    frame(&quote(s), s, &mut bytes);
                }
                frame(
                    &Payload::Heartbeat,
                    to.min(from + 64).max(from) + 1,
                    &mut bytes,
                );
                let mut rest = &bytes[..];
                while let Ok((m, tail)) = Message::decode(rest) {
                    rx.handle_retransmission(&m, time);
                    rest = tail;
                }
            }
            Op::Advance { ms } => {
                now += Duration::from_millis(u64::from(ms % 1000));
                rx.handle_timeout(Time::new(now, now.as_nanos() as u64));
            }
            Op::Reset => rx.retransmission_reset(),
            Op::Unavailable => rx.retransmission_unavailable(),
        }
        while rx.poll_action().is_some() {}
        while let Some(event) = rx.poll_event() {
            match event {
                DatagramEvent::Frame(f) => {
                    let m = f.message().expect("a delivered frame is a checked frame");
                    assert_eq!(m.sequence(), f.sequence());
                    assert!(m.is_data());
                    assert!(
                        last.is_none_or(|l| f.sequence() > l),
                        "{last:?} then {}",
                        f.sequence()
                    );
                    last = Some(f.sequence());
                    delivered += 1;
                }
                DatagramEvent::Gap(g) => {
                    assert!(g.first <= g.last);
                    assert!(last.is_none_or(|l| g.first > l), "{last:?} then gap {g:?}");
                    last = Some(g.last);
                    gaps += 1;
                    unrecoverable += g.last - g.first + 1;
                }
                DatagramEvent::NewSession { .. } => last = None,
                _ => {}
            }
        }
    }
    let s = rx.stats();
    assert_eq!(s.delivered, delivered);
    assert_eq!(s.unrecoverable, unrecoverable);
    assert!(s.gaps <= gaps);
});
