//! Decode and encode throughput on a fixed 64 MiB stream of the 60/30/10 mix.
//!
//! `cargo bench --bench decode --features synth`
//!
//! Every figure is measured in the same run, so compare the ratios: the
//! machine is shared and noisy. Each case runs `ROUNDS` times over the whole
//! stream; the best and the median round are reported.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use byteorder::{ByteOrder, LittleEndian};
use tickwire::checksum::{crc32c, crc32c_portable};
use tickwire::encode::{Payload, QuoteFields, TradeFields};
use tickwire::parse::{Event, Parser, SliceParser};
use tickwire::sequence::SequenceTracker;
use tickwire::synth::Feed;
use tickwire::{Message, MsgType, Sequencer};

const STREAM_BYTES: usize = 64 << 20;
const ROUNDS: usize = 7;
const READ_SIZE: usize = 64 << 10;

struct Row {
    name: &'static str,
    frames: u64,
    bytes: u64,
    best: Duration,
    median: Duration,
}

fn measure(name: &'static str, bytes: u64, mut f: impl FnMut() -> u64) -> Row {
    let mut times = Vec::with_capacity(ROUNDS);
    let mut frames = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        frames = black_box(f());
        times.push(t.elapsed());
    }
    times.sort();
    Row {
        name,
        frames,
        bytes,
        best: times[0],
        median: times[ROUNDS / 2],
    }
}

fn stream() -> (Vec<u8>, Vec<Payload>) {
    let mut feed = Feed::new(42, 500);
    let mut buf = vec![0u8; STREAM_BYTES];
    let mut payloads = Vec::new();
    let mut n = 0;
    let mut ts = 1_700_000_000_000_000_000u64;
    loop {
        let payload = feed.next_payload();
        if n + payload.frame_len() > buf.len() {
            break;
        }
        ts += 1000;
        n += tickwire::encode(&payload, 0, ts, &mut buf[n..]).unwrap();
        payloads.push(payload);
    }
    buf.truncate(n);
    // Re-encode with proper sequence numbers (data 1, 2, 3…; control = next).
    let mut seq = Sequencer::new();
    let mut at = 0;
    for (i, p) in payloads.iter().enumerate() {
        at += seq
            .encode(p, 1_700_000_000_000_000_000 + i as u64, &mut buf[at..])
            .unwrap();
    }
    (buf, payloads)
}

/// Framing only: find each frame by its 4-byte head, no checksum, no tracking.
fn framing_only(data: &[u8]) -> u64 {
    let mut at = 0;
    let mut frames = 0;
    while let Some(head) = data.get(at..at + 4) {
        let len = match u32::from_le_bytes(head.try_into().unwrap()) {
            0x2C10_01A5 => 44,
            0x2811_01A5 => 40,
            0x1801_01A5 | 0x1802_01A5 | 0x1804_01A5 => 24,
            0x2003_01A5 => 32,
            _ => 1,
        };
        frames += u64::from(len > 1);
        at += len;
    }
    frames
}

/// Checked decode through the public zero-copy API (frame, CRC, sequence).
fn checked_slice(data: &[u8]) -> u64 {
    let mut frames = 0u64;
    let mut sum = 0u64;
    for event in SliceParser::new(data) {
        if let Event::Frame(m) = event {
            frames += 1;
            if let Message::Quote(q) = m {
                sum = sum.wrapping_add(u64::from(q.bid_size()));
            }
        }
    }
    black_box(sum);
    frames
}

/// The same, push style: `for_each` runs the whole loop in one compiled kernel.
fn checked_slice_for_each(data: &[u8]) -> u64 {
    let mut frames = 0u64;
    let mut sum = 0u64;
    SliceParser::new(data).for_each(|event| {
        if let Event::Frame(m) = event {
            frames += 1;
            if let Message::Quote(q) = m {
                sum = sum.wrapping_add(u64::from(q.bid_size()));
            }
        }
    });
    black_box(sum);
    frames
}

/// Checked decode through the streaming parser, push style (`drain`).
fn checked_stream_drain(data: &[u8], parser: &mut Parser<Box<[u8]>>) -> u64 {
    let mut frames = 0u64;
    let mut sum = 0u64;
    let mut rest = data;
    loop {
        let spare = parser.spare();
        let n = spare.len().min(READ_SIZE).min(rest.len());
        if n == 0 {
            break;
        }
        spare[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        parser.commit(n).unwrap();
        parser.drain(|event| {
            if let Event::Frame(m) = event {
                frames += 1;
                if let Message::Quote(q) = m {
                    sum = sum.wrapping_add(u64::from(q.bid_size()));
                }
            }
        });
    }
    black_box(sum);
    frames
}

/// Checked decode through the streaming parser, reading 64 KiB at a time
/// into its buffer (a memcpy stands in for the socket read).
fn checked_stream(data: &[u8], parser: &mut Parser<Box<[u8]>>) -> u64 {
    let mut frames = 0u64;
    let mut sum = 0u64;
    let mut rest = data;
    loop {
        let spare = parser.spare();
        let n = spare.len().min(READ_SIZE).min(rest.len());
        if n == 0 {
            break;
        }
        spare[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        parser.commit(n).unwrap();
        while let Some(event) = parser.next_event() {
            if let Event::Frame(m) = event {
                frames += 1;
                if let Message::Quote(q) = m {
                    sum = sum.wrapping_add(u64::from(q.bid_size()));
                }
            }
        }
    }
    black_box(sum);
    frames
}

/// The copying alternative: read every field with `byteorder` into an owned
/// value, with the same checks (header, CRC-32C, sequence tracking).
fn byteorder_copying(data: &[u8], crc: fn(&[u8]) -> u32) -> u64 {
    let mut tracker = SequenceTracker::new();
    let mut at = 0;
    let mut frames = 0u64;
    let mut sum = 0u64;
    while at + 4 <= data.len() {
        let b = &data[at..];
        let Some(t) = MsgType::from_u8(b[2]) else {
            at += 1;
            continue;
        };
        let len = t.frame_len();
        if b[0] != 0xA5 || b[1] != 1 || usize::from(b[3]) != len || b.len() < len {
            at += 1;
            continue;
        }
        if crc(&b[..len - 4]) != LittleEndian::read_u32(&b[len - 4..]) {
            at += 1;
            continue;
        }
        let sequence = LittleEndian::read_u64(&b[4..]);
        let _timestamp = LittleEndian::read_u64(&b[12..]);
        let payload = match t {
            MsgType::Quote => Payload::Quote(QuoteFields {
                instrument_id: LittleEndian::read_u32(&b[20..]),
                bid_price: LittleEndian::read_i32(&b[24..]),
                ask_price: LittleEndian::read_i32(&b[28..]),
                bid_size: LittleEndian::read_u32(&b[32..]),
                ask_size: LittleEndian::read_u32(&b[36..]),
            }),
            MsgType::Trade => Payload::Trade(TradeFields {
                instrument_id: LittleEndian::read_u32(&b[20..]),
                price: LittleEndian::read_i32(&b[24..]),
                size: LittleEndian::read_u32(&b[28..]),
                side: b[32],
                flags: b[33],
            }),
            MsgType::LoginAccepted => Payload::LoginAccepted {
                session_id: LittleEndian::read_u64(&b[20..]),
            },
            _ => Payload::Heartbeat,
        };
        tracker.observe(t, sequence, 0);
        if let Payload::Quote(q) = black_box(payload) {
            sum = sum.wrapping_add(u64::from(q.bid_size));
        }
        frames += 1;
        at += len;
    }
    black_box(sum);
    frames
}

fn encode_all(payloads: &[Payload], out: &mut [u8]) -> u64 {
    let mut seq = Sequencer::new();
    let mut at = 0;
    for (i, p) in payloads.iter().enumerate() {
        at += seq
            .encode(p, 1_700_000_000_000_000_000 + i as u64, &mut out[at..])
            .unwrap();
    }
    black_box(&out[..at]);
    payloads.len() as u64
}

fn encode_batch(batch: &[(u64, Payload)], out: &mut [u8]) -> u64 {
    let mut seq = Sequencer::new();
    let done = seq.encode_batch(batch, out);
    black_box(&out[..done.bytes]);
    done.frames as u64
}

fn main() {
    let (data, payloads) = stream();
    let bytes = data.len() as u64;
    let count = payloads.len() as u64;
    println!(
        "stream: {} frames, {:.1} MiB (60/30/10 mix, seed 42); CRC-32C backend: {}",
        count,
        bytes as f64 / (1 << 20) as f64,
        tickwire::checksum::backend()
    );
    let mut buffer = Some(vec![1u8; tickwire::parse::DEFAULT_CAPACITY].into_boxed_slice());
    let mut out = vec![0u8; data.len()];
    let mut copy_dst = vec![0u8; data.len()];
    let batch: Vec<(u64, Payload)> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (1_700_000_000_000_000_000 + i as u64, *p))
        .collect();
    let rows = vec![
        measure("memcpy of the stream (bandwidth reference)", bytes, || {
            copy_dst.copy_from_slice(&data);
            black_box(&copy_dst);
            count
        }),
        measure("framing only (no CRC, no tracking)", bytes, || {
            framing_only(&data)
        }),
        measure("checked decode, SliceParser::for_each", bytes, || {
            checked_slice_for_each(&data)
        }),
        measure("checked decode, SliceParser iterator next()", bytes, || {
            checked_slice(&data)
        }),
        measure(
            "checked decode, Parser::drain + 64 KiB reads",
            bytes,
            || {
                // A fresh parser (and sequence tracker) on the same, already touched buffer.
                let mut p = Parser::new(buffer.take().unwrap()).unwrap();
                let n = checked_stream_drain(&data, &mut p);
                buffer = Some(p.into_inner());
                n
            },
        ),
        measure(
            "checked decode, Parser::next_event + 64 KiB reads",
            bytes,
            || {
                let mut p = Parser::new(buffer.take().unwrap()).unwrap();
                let n = checked_stream(&data, &mut p);
                buffer = Some(p.into_inner());
                n
            },
        ),
        measure("copying byteorder decoder, tickwire CRC", bytes, || {
            byteorder_copying(&data, crc32c)
        }),
        measure("copying byteorder decoder, crc32c crate", bytes, || {
            byteorder_copying(&data, crc32c::crc32c)
        }),
        measure("copying byteorder decoder, portable CRC", bytes, || {
            byteorder_copying(&data, crc32c_portable)
        }),
        measure("encode, Sequencer::encode per frame", bytes, || {
            encode_all(&payloads, &mut out)
        }),
        measure("encode, Sequencer::encode_batch", bytes, || {
            encode_batch(&batch, &mut out)
        }),
    ];
    for r in &rows {
        assert_eq!(
            r.frames, count,
            "{} saw {} of {} frames",
            r.name, r.frames, count
        );
    }
    let reference = rows[2].best.as_secs_f64();
    println!(
        "{:<46} {:>12} {:>9} {:>12} {:>10}",
        "case", "Mframes/s", "GB/s", "median Mf/s", "vs checked"
    );
    for r in &rows {
        let s = r.best.as_secs_f64();
        println!(
            "{:<46} {:>12.1} {:>9.2} {:>12.1} {:>9.2}x",
            r.name,
            r.frames as f64 / s / 1e6,
            r.bytes as f64 / s / 1e9,
            r.frames as f64 / r.median.as_secs_f64() / 1e6,
            reference / s
        );
    }
}
