//! Decode and encode throughput on a fixed 64 MiB stream of the 60/30/10 mix.
//!
//! `cargo bench --bench decode --features cli`
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

use byteorder::{ByteOrder, LittleEndian};
use tickwire::checksum::{crc32c, crc32c_portable};
use tickwire::encode::{Payload, QuoteFields, TradeFields};
use tickwire::parse::{Event, Parser, SliceParser};
use tickwire::sequence::SequenceTracker;
use tickwire::{Message, MsgType, Sequencer};

#[path = "../src/bin/tickwire/measure.rs"]
mod measure;

use measure::{time_rounds, Sample};

const STREAM_BYTES: usize = 64 << 20;
const ROUNDS: usize = 7;
const READ_SIZE: usize = 64 << 10;

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

/// Checked decode through the streaming parser, reading 64 KiB at a time
/// into its buffer (a memcpy stands in for the socket read), pulling events
/// with `drain` (push style) or `next_event` (pull style). Each style has its
/// own read loop, written as a caller would write it.
fn checked_stream(data: &[u8], parser: &mut Parser<&mut [u8]>, push: bool, read: usize) -> u64 {
    if push {
        read_loop(data, parser, read, |parser, frames, sum| {
            parser.drain(|event| {
                if let Event::Frame(m) = event {
                    *frames += 1;
                    if let Message::Quote(q) = m {
                        *sum = sum.wrapping_add(u64::from(q.bid_size()));
                    }
                }
            });
        })
    } else {
        read_loop(data, parser, read, |parser, frames, sum| {
            while let Some(event) = parser.next_event() {
                if let Event::Frame(m) = event {
                    *frames += 1;
                    if let Message::Quote(q) = m {
                        *sum = sum.wrapping_add(u64::from(q.bid_size()));
                    }
                }
            }
        })
    }
}

/// Reads `data` into `parser` `read` bytes at a time, calling `parse` after each read.
#[inline(always)]
fn read_loop(
    data: &[u8],
    parser: &mut Parser<&mut [u8]>,
    read: usize,
    mut parse: impl FnMut(&mut Parser<&mut [u8]>, &mut u64, &mut u64),
) -> u64 {
    let (mut frames, mut sum) = (0u64, 0u64);
    let mut rest = data;
    loop {
        let spare = parser.spare();
        let n = spare.len().min(read).min(rest.len());
        if n == 0 {
            break;
        }
        spare[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        parser.commit(n).unwrap();
        parse(parser, &mut frames, &mut sum);
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

/// Checked decode through the `SliceParser` iterator, pulling events one by one.
fn checked_slice_next(data: &[u8]) -> u64 {
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

/// The checksum-free copy: the same messages written field by field into
/// the buffer in the wire layout, checksum left at zero (what an encoder
/// without a checksum, like `dbn`'s, does per record). The same bytes as
/// `encode_batch` but for the checksums: checked before the timings.
fn encode_no_checksum(batch: &[(u64, Payload)], out: &mut [u8]) -> u64 {
    fn head(dst: &mut [u8], t: MsgType, seq: u64, ts: u64) {
        dst[..4].copy_from_slice(&[0xA5, 1, t.code(), t.frame_len() as u8]);
        dst[4..12].copy_from_slice(&seq.to_le_bytes());
        dst[12..20].copy_from_slice(&ts.to_le_bytes());
    }
    let mut seq = 1u64;
    let mut at = 0;
    for (ts, p) in batch {
        let t = p.msg_type();
        let len = t.frame_len();
        let dst = &mut out[at..at + len];
        head(dst, t, seq, *ts);
        match *p {
            Payload::Quote(q) => {
                dst[20..24].copy_from_slice(&q.instrument_id.to_le_bytes());
                dst[24..28].copy_from_slice(&q.bid_price.to_le_bytes());
                dst[28..32].copy_from_slice(&q.ask_price.to_le_bytes());
                dst[32..36].copy_from_slice(&q.bid_size.to_le_bytes());
                dst[36..40].copy_from_slice(&q.ask_size.to_le_bytes());
            }
            Payload::Trade(x) => {
                dst[20..24].copy_from_slice(&x.instrument_id.to_le_bytes());
                dst[24..28].copy_from_slice(&x.price.to_le_bytes());
                dst[28..32].copy_from_slice(&x.size.to_le_bytes());
                dst[32..36].copy_from_slice(&[x.side, x.flags, 0, 0]);
            }
            Payload::LoginAccepted { session_id } => {
                dst[20..28].copy_from_slice(&session_id.to_le_bytes());
            }
            _ => {}
        }
        dst[len - 4..].copy_from_slice(&[0; 4]);
        seq += u64::from(t.is_data());
        at += len;
    }
    black_box(&out[..at]);
    batch.len() as u64
}

/// `len` bytes of `buf` (which has 4 KiB to spare) starting `offset` bytes
/// after `source`'s address modulo 4 KiB.
fn placed<'b>(buf: &'b mut [u8], source: &[u8], offset: usize, len: usize) -> &'b mut [u8] {
    let skew = (source.as_ptr() as usize + offset + 4096 - buf.as_ptr() as usize % 4096) % 4096;
    &mut buf[skew..skew + len]
}

/// Encodes frame by frame with `Sequencer::encode`.
fn encode_each(batch: &[(u64, Payload)], out: &mut [u8]) -> u64 {
    let mut seq = Sequencer::new();
    let mut at = 0;
    for (ts, p) in batch {
        at += seq.encode(p, *ts, &mut out[at..]).unwrap();
    }
    black_box(&out[..at]);
    batch.len() as u64
}

fn main() {
    let (data, batch) = measure::synthetic_stream(STREAM_BYTES, 42);
    let bytes = data.len() as u64;
    let count = batch.len() as u64;
    println!(
        "stream: {} frames, {:.1} MiB (60/30/10 mix, seed 42); CRC-32C backend: {}",
        count,
        bytes as f64 / (1 << 20) as f64,
        tickwire::checksum::backend()
    );
    // The parser's buffer, placed half a page away from the stream modulo
    // 4 KiB. Both are page-aligned allocations plus the same header, so
    // without this every stand-in read would copy between addresses a few
    // bytes apart modulo 4 KiB, where memcpy (`rep movsb`) runs at a fraction
    // of its speed on some CPUs: a property of the copy, not of the parser,
    // which a kernel copying out of socket buffers has no reason to share.
    // The aliased placement is measured too, in its own rows.
    const CAPACITY: usize = tickwire::parse::DEFAULT_CAPACITY;
    const APART: usize = 2048;
    let mut raw = vec![1u8; CAPACITY + 4096];
    let mut stream = |offset: usize, push: bool, read: usize| {
        // A fresh parser (and sequence tracker) on the same, already touched buffer.
        let mut p = Parser::new(placed(&mut raw, &data, offset, CAPACITY)).unwrap();
        checked_stream(&data, &mut p, push, read)
    };
    let mut reads = vec![1u8; READ_SIZE + 4096];
    // The same messages sorted by type (and numbered in that order): the
    // decoder's and the caller's branch on the type always guess right.
    let mut by_type = batch.clone();
    by_type.sort_by_key(|(_, p)| p.msg_type().code());
    let mut sorted = vec![0u8; data.len()];
    assert_eq!(
        Sequencer::new().encode_batch(&by_type, &mut sorted).bytes,
        data.len()
    );
    let mut out = vec![0u8; data.len()];
    let mut copy_dst = vec![0u8; data.len()];
    // The checksum-free baseline writes exactly the frames, checksums zeroed.
    encode_no_checksum(&batch, &mut out);
    for m in SliceParser::new(&data).filter_map(|e| match e {
        Event::Frame(m) => Some(m),
        _ => None,
    }) {
        let at = m.as_bytes().as_ptr() as usize - data.as_ptr() as usize;
        let len = m.len();
        assert_eq!(out[at..at + len - 4], m.as_bytes()[..len - 4]);
        assert_eq!(out[at + len - 4..at + len], [0; 4]);
    }
    let r = |f: &mut dyn FnMut() -> u64| time_rounds(ROUNDS, bytes, f);
    let rows: Vec<(&str, Sample)> = vec![
        (
            "memcpy of the stream (bandwidth reference)",
            r(&mut || {
                copy_dst.copy_from_slice(&data);
                black_box(&copy_dst);
                count
            }),
        ),
        (
            "64 KiB reads only (the copy into a buffer)",
            r(&mut || {
                let buf = placed(&mut reads, &data, APART, READ_SIZE);
                for chunk in data.chunks(READ_SIZE) {
                    buf[..chunk.len()].copy_from_slice(chunk);
                    black_box(&buf[..chunk.len()]);
                }
                count
            }),
        ),
        (
            "framing only (no CRC, no tracking)",
            r(&mut || framing_only(&data)),
        ),
        (
            "checked decode, SliceParser::for_each",
            r(&mut || measure::checked_decode(&data)),
        ),
        (
            "  the same, frames sorted by type",
            r(&mut || measure::checked_decode(&sorted)),
        ),
        (
            "  the same, portable CRC",
            r(&mut || measure::checked_fold(SliceParser::with_portable_crc(&data))),
        ),
        (
            "checked decode, SliceParser iterator next()",
            r(&mut || checked_slice_next(&data)),
        ),
        (
            "checked decode, Parser::drain + 64 KiB reads",
            r(&mut || stream(APART, true, READ_SIZE)),
        ),
        (
            "  the same, buffer 4K-aliased with the source",
            r(&mut || stream(0, true, READ_SIZE)),
        ),
        (
            "  the same, 4 KiB reads",
            r(&mut || stream(APART, true, 4 << 10)),
        ),
        (
            "checked decode, Parser::next_event + 64 KiB reads",
            r(&mut || stream(APART, false, READ_SIZE)),
        ),
        (
            "  the same, buffer 4K-aliased with the source",
            r(&mut || stream(0, false, READ_SIZE)),
        ),
        (
            "copying byteorder decoder, tickwire CRC",
            r(&mut || byteorder_copying(&data, crc32c)),
        ),
        (
            "copying byteorder decoder, crc32c crate",
            r(&mut || byteorder_copying(&data, crc32c::crc32c)),
        ),
        (
            "copying byteorder decoder, portable CRC",
            r(&mut || byteorder_copying(&data, crc32c_portable)),
        ),
        (
            "encode, checksum-free copy of the messages",
            r(&mut || encode_no_checksum(&batch, &mut out)),
        ),
        (
            "encode, Sequencer::encode per frame",
            r(&mut || encode_each(&batch, &mut out)),
        ),
        (
            "encode, Sequencer::encode_batch",
            r(&mut || measure::encode_all(&batch, &mut out)),
        ),
    ];
    for (name, s) in &rows {
        assert_eq!(s.frames, count, "{name} saw {} of {count} frames", s.frames);
    }
    let reference = rows[3].1.best.as_secs_f64();
    println!(
        "{:<50} {:>12} {:>9} {:>12} {:>10}",
        "case", "Mframes/s", "GB/s", "median Mf/s", "vs checked"
    );
    for (name, s) in &rows {
        println!(
            "{:<50} {:>12.1} {:>9.2} {:>12.1} {:>9.2}x",
            name,
            s.frames_per_sec() / 1e6,
            s.bytes_per_sec() / 1e9,
            s.median_frames_per_sec() / 1e6,
            reference / s.best.as_secs_f64()
        );
    }
}
