//! Encoding frames into a caller's buffer.
//!
//! [`encode`] writes one frame with the sequence and timestamp you give it.
//! [`Sequencer`] numbers frames the way protocol section 3 requires: data
//! frames get 1, 2, 3, … with no gap and no repeat; control frames carry the
//! sequence of the next data frame.
//!
//! ```
//! use tickwire::{Payload, Sequencer};
//! use tickwire::encode::QuoteFields;
//!
//! let mut seq = Sequencer::new();
//! let mut buf = [0u8; 1024];
//! let mut at = 0;
//! let quote = Payload::Quote(QuoteFields {
//!     instrument_id: 42, bid_price: 1_234_500, ask_price: 1_234_600, bid_size: 100, ask_size: 200,
//! });
//! at += seq.encode(&quote, 1_700_000_000_000_000_000, &mut buf[at..])?; // sequence 1
//! at += seq.encode(&quote, 1_700_000_000_000_000_001, &mut buf[at..])?; // sequence 2
//! at += seq.encode(&Payload::Heartbeat, 1_700_000_000_000_000_002, &mut buf[at..])?; // carries 3
//! assert_eq!(at, 44 + 44 + 24);
//! assert_eq!(seq.next_sequence(), 3);
//! # Ok::<(), tickwire::EncodeError>(())
//! ```
#![forbid(unsafe_code)]

use core::fmt;

use crate::checksum::{Accel, Crc32c, Kernel};
use crate::wire::{
    Auth, EndOfSession, Heartbeat, KeyId, Login, LoginAccepted, Message, MsgType, Packet, Quote,
    RejectReason, Rejected, Retransmit, Secret, Trade, KEY_ID_LEN, MAGIC, VERSION,
};

/// Body of a [`Quote`], as plain integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QuoteFields {
    /// The instrument.
    pub instrument_id: u32,
    /// Best bid, 4 implied decimals.
    pub bid_price: i32,
    /// Best ask, 4 implied decimals.
    pub ask_price: i32,
    /// Quantity at the bid.
    pub bid_size: u32,
    /// Quantity at the ask.
    pub ask_size: u32,
}

/// Body of a [`Trade`], as plain integers (`reserved` is always written 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TradeFields {
    /// The instrument.
    pub instrument_id: u32,
    /// Trade price, 4 implied decimals.
    pub price: i32,
    /// Traded quantity.
    pub size: u32,
    /// 0 unknown, 1 buy, 2 sell; other values are carried through.
    pub side: u8,
    /// Application bit field.
    pub flags: u8,
}

/// An owned message body: everything in a frame but its header's
/// `sequence` and `timestamp`.
///
/// ```
/// use tickwire::{Message, Payload};
/// let payload = Payload::LoginAccepted { session_id: 7 };
/// let mut buf = [0u8; 32];
/// tickwire::encode(&payload, 1, 2, &mut buf)?;
/// let (msg, _) = Message::decode(&buf)?;
/// assert_eq!(Payload::from(msg), payload);
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Payload {
    /// 0x01.
    Heartbeat,
    /// 0x02. The header `sequence` is the first data sequence wanted (0 = live).
    Login,
    /// 0x03.
    LoginAccepted {
        /// Names the session.
        session_id: u64,
    },
    /// 0x04.
    EndOfSession,
    /// 0x05, the first frame of every datagram (protocol section 8). The
    /// header `sequence` is the datagram's first data sequence (or the next
    /// data sequence, in a datagram without data frames).
    Packet {
        /// Names the session.
        session_id: u64,
    },
    /// 0x06, a retransmission request (protocol section 9). The header
    /// `sequence` is the first data sequence wanted (at least 1).
    Retransmit {
        /// The session being recovered (0: whichever the server holds).
        session_id: u64,
        /// How many data frames are wanted (at least 1).
        count: u64,
    },
    /// 0x07, credentials (protocol section 11); the header `sequence` is 0.
    /// Build it from a checked [`KeyId`] with [`Payload::auth`]; the raw
    /// field is kept so that any Auth frame read converts and re-encodes
    /// exactly.
    ///
    /// `Debug` shows the secret as `<redacted>`; with the `serde` feature
    /// the secret is not serialized (deserializing needs it given).
    Auth {
        /// The 16-byte `key_id` field ([`KeyId::to_wire`]).
        key_id: [u8; KEY_ID_LEN],
        /// The secret.
        #[cfg_attr(feature = "serde", serde(skip_serializing))]
        secret: Secret,
    },
    /// 0x08, a refusal (protocol section 11); the header `sequence` is 0.
    Rejected {
        /// Why.
        reason: RejectReason,
    },
    /// 0x10.
    Quote(QuoteFields),
    /// 0x11.
    Trade(TradeFields),
}

impl Payload {
    /// The message type this payload encodes as.
    ///
    /// ```
    /// assert_eq!(tickwire::Payload::Heartbeat.msg_type(), tickwire::MsgType::Heartbeat);
    /// ```
    #[must_use]
    pub fn msg_type(&self) -> MsgType {
        match self {
            Payload::Heartbeat => MsgType::Heartbeat,
            Payload::Login => MsgType::Login,
            Payload::LoginAccepted { .. } => MsgType::LoginAccepted,
            Payload::EndOfSession => MsgType::EndOfSession,
            Payload::Packet { .. } => MsgType::Packet,
            Payload::Retransmit { .. } => MsgType::Retransmit,
            Payload::Auth { .. } => MsgType::Auth,
            Payload::Rejected { .. } => MsgType::Rejected,
            Payload::Quote(_) => MsgType::Quote,
            Payload::Trade(_) => MsgType::Trade,
        }
    }

    /// The encoded frame length.
    ///
    /// ```
    /// assert_eq!(tickwire::Payload::Heartbeat.frame_len(), 24);
    /// ```
    #[must_use]
    pub fn frame_len(&self) -> usize {
        self.msg_type().frame_len()
    }

    /// An Auth payload for `key_id` and `secret`.
    ///
    /// ```
    /// use tickwire::wire::{KeyId, Secret};
    /// use tickwire::Payload;
    /// let auth = Payload::auth(&KeyId::new("alice")?, Secret::new([9; 32]));
    /// assert_eq!(auth.frame_len(), 72);
    /// let shown = format!("{auth:?}");
    /// assert!(shown.contains("Secret(<redacted>)") && !shown.contains("9, 9"));
    /// # Ok::<(), tickwire::wire::KeyIdError>(())
    /// ```
    #[must_use]
    pub fn auth(key_id: &KeyId, secret: Secret) -> Payload {
        Payload::Auth {
            key_id: key_id.to_wire(),
            secret,
        }
    }

    /// Whether the frame's `sequence` is always 0 (Auth and Rejected,
    /// protocol section 3): [`Sequencer`] writes 0 there instead of the next
    /// data sequence.
    ///
    /// ```
    /// use tickwire::{wire::RejectReason, Payload};
    /// assert!(Payload::Rejected { reason: RejectReason::NotAuthorized }.has_zero_sequence());
    /// assert!(!Payload::Heartbeat.has_zero_sequence());
    /// ```
    #[must_use]
    pub fn has_zero_sequence(&self) -> bool {
        matches!(self, Payload::Auth { .. } | Payload::Rejected { .. })
    }
}

impl From<Message<'_>> for Payload {
    fn from(message: Message<'_>) -> Payload {
        match message {
            Message::Heartbeat(_) => Payload::Heartbeat,
            Message::Login(_) => Payload::Login,
            Message::LoginAccepted(m) => Payload::LoginAccepted {
                session_id: m.session_id(),
            },
            Message::EndOfSession(_) => Payload::EndOfSession,
            Message::Packet(m) => Payload::Packet {
                session_id: m.session_id(),
            },
            Message::Retransmit(m) => Payload::Retransmit {
                session_id: m.session_id(),
                count: m.count(),
            },
            Message::Auth(m) => Payload::Auth {
                key_id: m.key_id_bytes(),
                secret: m.secret(),
            },
            Message::Rejected(m) => Payload::Rejected { reason: m.reason() },
            Message::Quote(q) => Payload::Quote(QuoteFields {
                instrument_id: q.instrument_id(),
                bid_price: q.bid_price(),
                ask_price: q.ask_price(),
                bid_size: q.bid_size(),
                ask_size: q.ask_size(),
            }),
            Message::Trade(t) => Payload::Trade(TradeFields {
                instrument_id: t.instrument_id(),
                price: t.price(),
                size: t.size(),
                side: t.side(),
                flags: t.flags(),
            }),
        }
    }
}

/// Why a frame could not be encoded.
///
/// ```
/// let mut small = [0u8; 10];
/// let err = tickwire::encode(&tickwire::Payload::Heartbeat, 1, 0, &mut small).unwrap_err();
/// assert_eq!(err, tickwire::EncodeError::BufferTooSmall { needed: 24, available: 10 });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer cannot hold the frame.
    BufferTooSmall {
        /// The frame length.
        needed: usize,
        /// The buffer length.
        available: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::BufferTooSmall { needed, available } => write!(
                f,
                "output buffer too small: the frame needs {needed} bytes, {available} are free; flush or grow the buffer"
            ),
        }
    }
}

impl core::error::Error for EncodeError {}

/// The low and high halves of a `u64`.
#[inline(always)]
fn halves(value: u64) -> [u32; 2] {
    let [a, b, c, d, e, f, g, h] = value.to_le_bytes();
    [
        u32::from_le_bytes([a, b, c, d]),
        u32::from_le_bytes([e, f, g, h]),
    ]
}

/// An `i32` field's wire bits.
#[inline(always)]
fn bits(value: i32) -> u32 {
    u32::from_le_bytes(value.to_le_bytes())
}

/// A Quote's body as wire words.
#[inline(always)]
fn quote_body(q: &QuoteFields) -> [u32; 5] {
    [
        q.instrument_id,
        bits(q.bid_price),
        bits(q.ask_price),
        q.bid_size,
        q.ask_size,
    ]
}

/// An Auth's body as wire words: the key id field, then the secret.
#[inline]
fn auth_body(key_id: &[u8; KEY_ID_LEN], secret: &Secret) -> [u32; 12] {
    let mut words = [0u32; 12];
    let bytes = key_id.iter().chain(secret.expose().iter());
    for (i, byte) in bytes.enumerate() {
        if let Some(word) = words.get_mut(i / 4) {
            *word |= u32::from(*byte) << (8 * (i % 4));
        }
    }
    words
}

/// A Trade's body as wire words (side and flags, then two zero bytes).
#[inline(always)]
fn trade_body(x: &TradeFields) -> [u32; 4] {
    let tail = u32::from_le_bytes([x.side, x.flags, 0, 0]);
    [x.instrument_id, bits(x.price), x.size, tail]
}

/// Writes a frame given as `N` little-endian words (the last one is the
/// checksum, filled in here) to the front of `out`.
///
/// Every frame is a whole number of 4-byte words (and every integer field
/// wider than a byte starts at a multiple of 4), so a frame is a run of
/// `u32` words: building it in registers and checksumming those avoids
/// reading back bytes just written, which the CPU cannot forward from
/// narrower stores.
#[inline(always)]
fn seal<const N: usize, C: Crc32c>(
    msg_type: MsgType,
    sequence: u64,
    timestamp: u64,
    body: &[u32],
    out: &mut [u8],
    crc: C,
) -> Result<usize, EncodeError> {
    let len = N * 4;
    let available = out.len();
    let Some(dst) = out.get_mut(..len) else {
        return Err(EncodeError::BufferTooSmall {
            needed: len,
            available,
        });
    };
    #[allow(clippy::cast_possible_truncation)] // frame lengths are at most 72
    let head = u32::from_le_bytes([MAGIC, VERSION, msg_type.code(), len as u8]);
    let [s0, s1] = halves(sequence);
    let [t0, t1] = halves(timestamp);
    let mut words = [0u32; N];
    for (word, value) in words
        .iter_mut()
        .zip([head, s0, s1, t0, t1].iter().chain(body))
    {
        *word = *value;
    }
    let covered = words.get(..N - 1).unwrap_or_default();
    let checksum = crc.checksum_words(covered);
    if let Some(last) = words.last_mut() {
        *last = checksum;
    }
    for (chunk, word) in dst.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    Ok(len)
}

/// One [`encode`] call, compiled for the CRC implementation.
struct Encode<'p, 'o> {
    payload: &'p Payload,
    sequence: u64,
    timestamp: u64,
    out: &'o mut [u8],
}

impl Kernel for Encode<'_, '_> {
    type Output = Result<usize, EncodeError>;

    #[inline(always)]
    fn run<C: Crc32c>(self, crc: C) -> Self::Output {
        let (s, t, out) = (self.sequence, self.timestamp, self.out);
        match *self.payload {
            Payload::Quote(q) => {
                seal::<{ Quote::LEN / 4 }, C>(MsgType::Quote, s, t, &quote_body(&q), out, crc)
            }
            Payload::Trade(x) => {
                seal::<{ Trade::LEN / 4 }, C>(MsgType::Trade, s, t, &trade_body(&x), out, crc)
            }
            Payload::LoginAccepted { session_id } => {
                let body = halves(session_id);
                seal::<{ LoginAccepted::LEN / 4 }, C>(MsgType::LoginAccepted, s, t, &body, out, crc)
            }
            Payload::Packet { session_id } => {
                let body = halves(session_id);
                seal::<{ Packet::LEN / 4 }, C>(MsgType::Packet, s, t, &body, out, crc)
            }
            Payload::Retransmit { session_id, count } => {
                let [i0, i1] = halves(session_id);
                let [c0, c1] = halves(count);
                let body = [i0, i1, c0, c1];
                seal::<{ Retransmit::LEN / 4 }, C>(MsgType::Retransmit, s, t, &body, out, crc)
            }
            Payload::Auth { key_id, secret } => {
                let body = auth_body(&key_id, &secret);
                seal::<{ Auth::LEN / 4 }, C>(MsgType::Auth, s, t, &body, out, crc)
            }
            Payload::Rejected { reason } => {
                let body = [u32::from(reason.code()), 0];
                seal::<{ Rejected::LEN / 4 }, C>(MsgType::Rejected, s, t, &body, out, crc)
            }
            Payload::Heartbeat => {
                seal::<{ Heartbeat::LEN / 4 }, C>(MsgType::Heartbeat, s, t, &[], out, crc)
            }
            Payload::Login => seal::<{ Login::LEN / 4 }, C>(MsgType::Login, s, t, &[], out, crc),
            Payload::EndOfSession => {
                seal::<{ EndOfSession::LEN / 4 }, C>(MsgType::EndOfSession, s, t, &[], out, crc)
            }
        }
    }
}

/// Encodes one frame at the start of `out` and returns its length.
///
/// `sequence` and `timestamp` go into the header as given; see [`Sequencer`]
/// for the numbering rules.
///
/// # Errors
/// [`EncodeError::BufferTooSmall`] if `out` is shorter than the frame; `out`
/// is then left untouched.
///
/// ```
/// use tickwire::Payload;
/// let mut buf = [0u8; 24];
/// let n = tickwire::encode(&Payload::Heartbeat, 1, 0, &mut buf)?;
/// // The protocol's first test vector.
/// assert_eq!(buf[..n], [
///     0xa5, 0x01, 0x01, 0x18, 0x01, 0, 0, 0, 0, 0, 0, 0,
///     0, 0, 0, 0, 0, 0, 0, 0, 0x17, 0x07, 0x45, 0x20,
/// ]);
/// # Ok::<(), tickwire::EncodeError>(())
/// ```
#[inline]
pub fn encode(
    payload: &Payload,
    sequence: u64,
    timestamp: u64,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    Accel::detect().run(Encode {
        payload,
        sequence,
        timestamp,
        out,
    })
}

/// What [`Sequencer::encode_batch`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    /// Messages encoded: the first `frames` of the batch.
    pub frames: usize,
    /// Bytes written at the start of the output.
    pub bytes: usize,
}

/// One [`Sequencer::encode_batch`] call, compiled for the CRC implementation.
struct EncodeBatch<'s, 'b, 'o> {
    sequencer: &'s mut Sequencer,
    batch: &'b [(u64, Payload)],
    out: &'o mut [u8],
}

impl Kernel for EncodeBatch<'_, '_, '_> {
    type Output = Encoded;

    #[inline(always)]
    fn run<C: Crc32c>(self, crc: C) -> Encoded {
        let mut next = self.sequencer.next;
        let mut done = Encoded::default();
        for (timestamp, payload) in self.batch {
            let out = self.out.get_mut(done.bytes..).unwrap_or_default();
            // The quote, trade and heartbeat arms are written out here (the rest go
            // through `Encode`), so that each one's length and sequence step
            // are constants after the one dispatch on the payload.
            let written = match *payload {
                Payload::Quote(q) => {
                    let body = quote_body(&q);
                    seal::<{ Quote::LEN / 4 }, C>(MsgType::Quote, next, *timestamp, &body, out, crc)
                        .map(|n| (n, 1))
                }
                Payload::Trade(x) => {
                    let body = trade_body(&x);
                    seal::<{ Trade::LEN / 4 }, C>(MsgType::Trade, next, *timestamp, &body, out, crc)
                        .map(|n| (n, 1))
                }
                Payload::Heartbeat => seal::<{ Heartbeat::LEN / 4 }, C>(
                    MsgType::Heartbeat,
                    next,
                    *timestamp,
                    &[],
                    out,
                    crc,
                )
                .map(|n| (n, 0)),
                _ => Encode {
                    payload,
                    sequence: if payload.has_zero_sequence() { 0 } else { next },
                    timestamp: *timestamp,
                    out,
                }
                .run(crc)
                .map(|n| (n, 0)),
            };
            let Ok((n, step)) = written else { break };
            next = next.wrapping_add(step);
            done.frames += 1;
            done.bytes += n;
        }
        self.sequencer.next = next;
        done
    }
}

/// Numbers frames as protocol section 3 requires.
///
/// Data frames (Quote, Trade) get consecutive sequences starting at 1 (or
/// wherever [`Sequencer::starting_at`] says); every control frame carries the
/// sequence of the next data frame, which lets receivers see a gap while the
/// feed is idle; Auth and Rejected carry 0. The sequence only advances when a data frame is actually
/// written. Timestamps are the caller's (this crate reads no clock).
///
/// A Login's and a Retransmit's `sequence` mean something else (the first
/// sequence wanted), so clients encode them with [`encode`] directly. A
/// Packet encoded here carries the next data sequence, which is right when
/// the data frames of its datagram follow it.
///
/// ```
/// use tickwire::{Message, Payload, Sequencer};
/// let mut seq = Sequencer::starting_at(100);
/// let mut buf = [0u8; 64];
/// let n = seq.encode(&Payload::EndOfSession, 5, &mut buf)?;
/// assert_eq!(Message::decode(&buf[..n]).unwrap().0.sequence(), 100);
/// # Ok::<(), tickwire::EncodeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequencer {
    next: u64,
}

impl Default for Sequencer {
    fn default() -> Self {
        Sequencer::new()
    }
}

impl Sequencer {
    /// A sequencer for a new session: the first data frame is number 1.
    #[must_use]
    pub const fn new() -> Sequencer {
        Sequencer { next: 1 }
    }

    /// A sequencer whose next data frame is number `next`.
    #[must_use]
    pub const fn starting_at(next: u64) -> Sequencer {
        Sequencer { next }
    }

    /// The sequence the next data frame will get (what control frames carry).
    #[must_use]
    pub const fn next_sequence(&self) -> u64 {
        self.next
    }

    /// Encodes `payload` with the right sequence at the start of `out`.
    ///
    /// # Errors
    /// [`EncodeError::BufferTooSmall`]; the sequence does not advance then.
    pub fn encode(
        &mut self,
        payload: &Payload,
        timestamp: u64,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let sequence = if payload.has_zero_sequence() {
            0
        } else {
            self.next
        };
        let n = encode(payload, sequence, timestamp, out)?;
        if payload.msg_type().is_data() {
            self.next = self.next.wrapping_add(1);
        }
        Ok(n)
    }

    /// Encodes `(timestamp, payload)` pairs back to back at the start of
    /// `out`, numbered as [`encode`](Sequencer::encode) would, in one loop
    /// (the fast path for publishers). Stops at the first message that does
    /// not fit; [`Encoded::frames`] says where to resume.
    ///
    /// ```
    /// use tickwire::{Payload, Sequencer};
    /// let mut seq = Sequencer::new();
    /// let batch = [(10, Payload::Heartbeat), (11, Payload::EndOfSession)];
    /// let mut out = [0u8; 30];
    /// let done = seq.encode_batch(&batch, &mut out);
    /// assert_eq!((done.frames, done.bytes), (1, 24)); // the second does not fit
    /// let mut out = [0u8; 48];
    /// let done = seq.encode_batch(&batch[done.frames..], &mut out);
    /// assert_eq!((done.frames, done.bytes), (1, 24));
    /// ```
    pub fn encode_batch(&mut self, batch: &[(u64, Payload)], out: &mut [u8]) -> Encoded {
        Accel::detect().run(EncodeBatch {
            sequencer: self,
            batch,
            out,
        })
    }
}
