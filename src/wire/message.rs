//! Borrowed messages and checked decoding of one frame.
#![forbid(unsafe_code)]

use core::fmt;
use zerocopy::{transmute_ref, IntoBytes};

use super::frames::{
    Auth, EndOfSession, Header, Heartbeat, Login, LoginAccepted, Packet, Quote, Rejected,
    Retransmit, Trade,
};
use super::{MsgType, CHECKSUM_LEN, MAGIC, VERSION};
use crate::checksum::{Crc32c, Dynamic};

/// A checked frame, borrowed zero-copy from the buffer it was found in.
///
/// `match` on it to reach the typed view:
///
/// ```
/// use tickwire::Message;
/// # let mut buf = [0u8; 64];
/// # let n = tickwire::encode(&tickwire::Payload::Heartbeat, 1, 0, &mut buf).unwrap();
/// let (message, rest) = Message::decode(&buf[..n])?;
/// assert!(rest.is_empty());
/// match message {
///     Message::Quote(q) => println!("quote {} {}", q.bid_price(), q.ask_price()),
///     Message::Trade(t) => println!("trade {} x {}", t.price(), t.size()),
///     other => println!("control frame {:?}, next seq {}", other.msg_type(), other.sequence()),
/// }
/// # Ok::<(), tickwire::DecodeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// 0x01.
    Heartbeat(&'a Heartbeat),
    /// 0x02.
    Login(&'a Login),
    /// 0x03.
    LoginAccepted(&'a LoginAccepted),
    /// 0x04.
    EndOfSession(&'a EndOfSession),
    /// 0x05, the first frame of every datagram.
    Packet(&'a Packet),
    /// 0x06, a retransmission request.
    Retransmit(&'a Retransmit),
    /// 0x07, credentials (protocol section 11). Its `Debug` never shows
    /// the secret.
    Auth(&'a Auth),
    /// 0x08, a refusal with its reason (protocol section 11).
    Rejected(&'a Rejected),
    /// 0x10.
    Quote(&'a Quote),
    /// 0x11.
    Trade(&'a Trade),
}

/// Why bytes are not a valid frame.
///
/// ```
/// use tickwire::{DecodeError, Message};
/// assert_eq!(Message::decode(&[0xA5, 1]), Err(DecodeError::Incomplete { needed: 4 }));
/// assert_eq!(Message::decode(&[0xA5, 2]), Err(DecodeError::BadVersion { found: 2 }));
/// assert_eq!(Message::decode(&[0x00; 24]), Err(DecodeError::BadMagic { found: 0 }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the frame needs; `needed` is the total required.
    Incomplete {
        /// Bytes needed to decide (4 for the header checks, else the frame length).
        needed: usize,
    },
    /// The first byte is not the 0xA5 sync byte.
    BadMagic {
        /// The byte found instead.
        found: u8,
    },
    /// The version byte is not 1.
    BadVersion {
        /// The version found.
        found: u8,
    },
    /// The type code is not a version-1 message type.
    UnknownType {
        /// The code found.
        found: u8,
    },
    /// The length byte is not the exact length of the frame's type.
    BadLength {
        /// The frame's type.
        msg_type: MsgType,
        /// The length found.
        found: u8,
    },
    /// The CRC-32C trailer does not match the frame's bytes.
    BadChecksum {
        /// The checksum stored in the frame.
        stored: u32,
        /// The checksum computed over the frame.
        computed: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Incomplete { needed } => {
                write!(f, "incomplete frame: {needed} bytes needed; read more input")
            }
            DecodeError::BadMagic { found } => {
                write!(f, "not at a frame start: expected sync byte 0xA5, found {found:#04x}")
            }
            DecodeError::BadVersion { found } => {
                write!(f, "unsupported protocol version {found} (this crate speaks version 1)")
            }
            DecodeError::UnknownType { found } => {
                write!(f, "unknown message type {found:#04x}")
            }
            DecodeError::BadLength { msg_type, found } => write!(
                f,
                "bad length {found} for {msg_type} frame (must be {})",
                msg_type.frame_len()
            ),
            DecodeError::BadChecksum { stored, computed } => write!(
                f,
                "checksum mismatch: frame says {stored:#010x}, bytes give {computed:#010x} (damaged frame)"
            ),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Validates the frame at the start of `bytes` (header, length, checksum)
/// and returns the typed view of it.
///
/// This is the hot path of every decoder: one 4-byte compare decides magic,
/// version, type and length together; everything that depends on the type
/// happens inside its branch, with constant offsets and a checksum over a
/// fixed-size array.
#[inline(always)]
pub(crate) fn check_frame<C: Crc32c>(bytes: &[u8], crc: C) -> Result<Message<'_>, DecodeError> {
    let Some(head) = bytes.first_chunk::<4>() else {
        return Err(header_error(bytes).unwrap_or(DecodeError::Incomplete { needed: 4 }));
    };
    let word = u32::from_le_bytes(*head);
    if word == MsgType::Quote.head_word() {
        sealed::<44, C>(bytes, crc).map(|f| Message::Quote(transmute_ref!(f)))
    } else if word == MsgType::Trade.head_word() {
        sealed::<40, C>(bytes, crc).map(|f| Message::Trade(transmute_ref!(f)))
    } else if word == MsgType::Heartbeat.head_word() {
        sealed::<24, C>(bytes, crc).map(|f| Message::Heartbeat(transmute_ref!(f)))
    } else if word == MsgType::LoginAccepted.head_word() {
        sealed::<32, C>(bytes, crc).map(|f| Message::LoginAccepted(transmute_ref!(f)))
    } else if word == MsgType::EndOfSession.head_word() {
        sealed::<24, C>(bytes, crc).map(|f| Message::EndOfSession(transmute_ref!(f)))
    } else if word == MsgType::Login.head_word() {
        sealed::<24, C>(bytes, crc).map(|f| Message::Login(transmute_ref!(f)))
    } else if word == MsgType::Packet.head_word() {
        sealed::<32, C>(bytes, crc).map(|f| Message::Packet(transmute_ref!(f)))
    } else if word == MsgType::Retransmit.head_word() {
        sealed::<40, C>(bytes, crc).map(|f| Message::Retransmit(transmute_ref!(f)))
    } else if word == MsgType::Auth.head_word() {
        sealed::<72, C>(bytes, crc).map(|f| Message::Auth(transmute_ref!(f)))
    } else if word == MsgType::Rejected.head_word() {
        sealed::<32, C>(bytes, crc).map(|f| Message::Rejected(transmute_ref!(f)))
    } else {
        Err(header_error(head).unwrap_or(DecodeError::Incomplete { needed: 4 }))
    }
}

/// The first `N` bytes of `bytes`, if they are there and their CRC-32C
/// trailer matches.
#[inline(always)]
pub(crate) fn sealed<const N: usize, C: Crc32c>(
    bytes: &[u8],
    crc: C,
) -> Result<&[u8; N], DecodeError> {
    let Some(frame) = bytes.first_chunk::<N>() else {
        return Err(DecodeError::Incomplete { needed: N });
    };
    let Some((covered, trailer)) = frame.split_last_chunk::<CHECKSUM_LEN>() else {
        return Err(DecodeError::Incomplete { needed: N });
    };
    let stored = u32::from_le_bytes(*trailer);
    let computed = crc.checksum(covered);
    if stored != computed {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    Ok(frame)
}

/// The typed view of the frame of type `code` at the start of `bytes`
/// (no checks beyond the length).
#[inline]
pub(crate) fn view(code: u8, bytes: &[u8]) -> Option<Message<'_>> {
    Some(match MsgType::from_u8(code)? {
        MsgType::Quote => Message::Quote(transmute_ref!(bytes.first_chunk::<44>()?)),
        MsgType::Trade => Message::Trade(transmute_ref!(bytes.first_chunk::<40>()?)),
        MsgType::Heartbeat => Message::Heartbeat(transmute_ref!(bytes.first_chunk::<24>()?)),
        MsgType::Login => Message::Login(transmute_ref!(bytes.first_chunk::<24>()?)),
        MsgType::LoginAccepted => {
            Message::LoginAccepted(transmute_ref!(bytes.first_chunk::<32>()?))
        }
        MsgType::EndOfSession => Message::EndOfSession(transmute_ref!(bytes.first_chunk::<24>()?)),
        MsgType::Packet => Message::Packet(transmute_ref!(bytes.first_chunk::<32>()?)),
        MsgType::Retransmit => Message::Retransmit(transmute_ref!(bytes.first_chunk::<40>()?)),
        MsgType::Auth => Message::Auth(transmute_ref!(bytes.first_chunk::<72>()?)),
        MsgType::Rejected => Message::Rejected(transmute_ref!(bytes.first_chunk::<32>()?)),
    })
}

/// Explains why the (up to 4) header bytes are not a valid frame start, in
/// the order of protocol section 5; `None` if they are a valid prefix.
#[cold]
fn header_error(head: &[u8]) -> Option<DecodeError> {
    let mut it = head.iter().copied();
    match it.next()? {
        MAGIC => {}
        found => return Some(DecodeError::BadMagic { found }),
    }
    match it.next()? {
        VERSION => {}
        found => return Some(DecodeError::BadVersion { found }),
    }
    let code = it.next()?;
    let Some(msg_type) = MsgType::from_u8(code) else {
        return Some(DecodeError::UnknownType { found: code });
    };
    let found = it.next()?;
    if usize::from(found) != msg_type.frame_len() {
        return Some(DecodeError::BadLength { msg_type, found });
    }
    None
}

impl<'a> Message<'a> {
    /// Decodes and checks the frame at the start of `bytes` and returns it
    /// with the bytes after it.
    ///
    /// This is strict single-frame decoding: the frame must start at
    /// `bytes[0]`. To find frames in a damaged stream, use
    /// [`Parser`](crate::parse::Parser).
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] if `bytes` is too short to decide; any
    /// other variant if the bytes are not a valid version-1 frame.
    ///
    /// ```
    /// use tickwire::{Message, Payload};
    /// let mut buf = [0u8; 64];
    /// let n = tickwire::encode(&Payload::LoginAccepted { session_id: 9 }, 42, 0, &mut buf)?;
    /// let (msg, _) = Message::decode(&buf[..n])?;
    /// let Message::LoginAccepted(la) = msg else { unreachable!() };
    /// assert_eq!((la.sequence(), la.session_id()), (42, 9));
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    #[inline]
    pub fn decode(bytes: &'a [u8]) -> Result<(Message<'a>, &'a [u8]), DecodeError> {
        let message = check_frame(bytes, Dynamic)?;
        let rest = bytes.get(message.len()..).unwrap_or_default();
        Ok((message, rest))
    }

    /// The frame header.
    #[must_use]
    pub fn header(&self) -> &'a Header {
        match *self {
            Message::Heartbeat(m) => m.header(),
            Message::Login(m) => m.header(),
            Message::LoginAccepted(m) => m.header(),
            Message::EndOfSession(m) => m.header(),
            Message::Packet(m) => m.header(),
            Message::Retransmit(m) => m.header(),
            Message::Auth(m) => m.header(),
            Message::Rejected(m) => m.header(),
            Message::Quote(m) => m.header(),
            Message::Trade(m) => m.header(),
        }
    }

    /// The message type.
    #[must_use]
    pub fn msg_type(&self) -> MsgType {
        match self {
            Message::Heartbeat(_) => MsgType::Heartbeat,
            Message::Login(_) => MsgType::Login,
            Message::LoginAccepted(_) => MsgType::LoginAccepted,
            Message::EndOfSession(_) => MsgType::EndOfSession,
            Message::Packet(_) => MsgType::Packet,
            Message::Retransmit(_) => MsgType::Retransmit,
            Message::Auth(_) => MsgType::Auth,
            Message::Rejected(_) => MsgType::Rejected,
            Message::Quote(_) => MsgType::Quote,
            Message::Trade(_) => MsgType::Trade,
        }
    }

    /// The `sequence` field.
    #[must_use]
    pub fn sequence(&self) -> u64 {
        self.header().sequence()
    }

    /// The `timestamp` field, nanoseconds since the Unix epoch.
    #[must_use]
    pub fn timestamp(&self) -> u64 {
        self.header().timestamp()
    }

    /// The frame length in bytes (header and checksum included).
    #[must_use]
    #[allow(clippy::len_without_is_empty)] // a frame is never empty
    pub fn len(&self) -> usize {
        // A table indexed by the variant, not a `match` to constants: in a
        // loop that also takes other paths, the compiler turns the match
        // into a jump table, one more data-dependent branch per frame.
        const LENS: [usize; 10] = [
            MsgType::Heartbeat.frame_len(),
            MsgType::Login.frame_len(),
            MsgType::LoginAccepted.frame_len(),
            MsgType::EndOfSession.frame_len(),
            MsgType::Packet.frame_len(),
            MsgType::Retransmit.frame_len(),
            MsgType::Auth.frame_len(),
            MsgType::Rejected.frame_len(),
            MsgType::Quote.frame_len(),
            MsgType::Trade.frame_len(),
        ];
        LENS.get(self.index()).copied().unwrap_or(0)
    }

    /// The variant's position in declaration order (0 = Heartbeat … 9 =
    /// Trade), which compiles to reading the enum's tag: for tables indexed
    /// by type without a branch.
    #[inline]
    pub(crate) fn index(&self) -> usize {
        match self {
            Message::Heartbeat(_) => 0,
            Message::Login(_) => 1,
            Message::LoginAccepted(_) => 2,
            Message::EndOfSession(_) => 3,
            Message::Packet(_) => 4,
            Message::Retransmit(_) => 5,
            Message::Auth(_) => 6,
            Message::Rejected(_) => 7,
            Message::Quote(_) => 8,
            Message::Trade(_) => 9,
        }
    }

    /// Whether this is a data frame (Quote, Trade), numbered 1, 2, 3, …
    #[must_use]
    pub fn is_data(&self) -> bool {
        self.msg_type().is_data()
    }

    /// The frame's bytes, exactly as on the wire.
    #[must_use]
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Message::Heartbeat(m) => m.as_bytes(),
            Message::Login(m) => m.as_bytes(),
            Message::LoginAccepted(m) => m.as_bytes(),
            Message::EndOfSession(m) => m.as_bytes(),
            Message::Packet(m) => m.as_bytes(),
            Message::Retransmit(m) => m.as_bytes(),
            Message::Auth(m) => m.as_bytes(),
            Message::Rejected(m) => m.as_bytes(),
            Message::Quote(m) => m.as_bytes(),
            Message::Trade(m) => m.as_bytes(),
        }
    }
}
