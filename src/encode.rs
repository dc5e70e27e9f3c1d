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
use zerocopy::IntoBytes;

use crate::checksum::crc32c;
use crate::wire::{
    EndOfSession, Heartbeat, Login, LoginAccepted, Message, MsgType, Quote, Trade, CHECKSUM_LEN,
};

/// Body of a [`Quote`], as plain integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
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
}

impl From<Message<'_>> for Payload {
    fn from(message: Message<'_>) -> Payload {
        match message {
            Message::Heartbeat(_) => Payload::Heartbeat,
            Message::Login(_) => Payload::Login,
            Message::LoginAccepted(m) => Payload::LoginAccepted { session_id: m.session_id() },
            Message::EndOfSession(_) => Payload::EndOfSession,
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

/// Seals a frame (computes its checksum) and copies it to the front of `out`.
#[inline(always)]
fn put<F: IntoBytes + zerocopy::Immutable>(
    mut frame: F,
    set_checksum: fn(&mut F, u32),
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let len = size_of::<F>();
    let available = out.len();
    let Some(dst) = out.get_mut(..len) else {
        return Err(EncodeError::BufferTooSmall { needed: len, available });
    };
    let covered = frame.as_bytes().get(..len - CHECKSUM_LEN).unwrap_or_default();
    let checksum = crc32c(covered);
    set_checksum(&mut frame, checksum);
    dst.copy_from_slice(frame.as_bytes());
    Ok(len)
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
    let (s, t) = (sequence, timestamp);
    match *payload {
        Payload::Quote(q) => put(
            Quote::unsealed(s, t, q.instrument_id, q.bid_price, q.ask_price, q.bid_size, q.ask_size),
            Quote::set_checksum,
            out,
        ),
        Payload::Trade(x) => put(
            Trade::unsealed(s, t, x.instrument_id, x.price, x.size, x.side, x.flags, 0),
            Trade::set_checksum,
            out,
        ),
        Payload::Heartbeat => put(Heartbeat::unsealed(s, t), Heartbeat::set_checksum, out),
        Payload::Login => put(Login::unsealed(s, t), Login::set_checksum, out),
        Payload::LoginAccepted { session_id } => put(
            LoginAccepted::unsealed(s, t, session_id),
            LoginAccepted::set_checksum,
            out,
        ),
        Payload::EndOfSession => put(EndOfSession::unsealed(s, t), EndOfSession::set_checksum, out),
    }
}

/// Numbers frames as protocol section 3 requires.
///
/// Data frames (Quote, Trade) get consecutive sequences starting at 1 (or
/// wherever [`Sequencer::starting_at`] says); every control frame carries the
/// sequence of the next data frame, which lets receivers see a gap while the
/// feed is idle. The sequence only advances when a data frame is actually
/// written. Timestamps are the caller's (this crate reads no clock).
///
/// A Login's `sequence` means something else (the first sequence wanted), so
/// clients encode it with [`encode`] directly.
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
        let n = encode(payload, self.next, timestamp, out)?;
        if payload.msg_type().is_data() {
            self.next = self.next.wrapping_add(1);
        }
        Ok(n)
    }
}
