//! The wire format, version 1: frame layouts, message types and checked
//! single-frame decoding.
//!
//! Every frame is a 20-byte header, a type-specific body and a 4-byte CRC-32C
//! trailer. All integers are little-endian; there is no padding and no
//! alignment, so a frame may start at any byte offset.
//!
//! ```text
//!  0      1        2          3        4            12           20       20+N
//!  ┌──────┬────────┬──────────┬────────┬────────────┬────────────┬────────┬──────────┐
//!  │ 0xA5 │ ver=1  │ msg_type │ length │ sequence   │ timestamp  │ body   │ checksum │
//!  │ u8   │ u8     │ u8       │ u8     │ u64        │ u64 (ns)   │ N bytes│ u32      │
//!  └──────┴────────┴──────────┴────────┴────────────┴────────────┴────────┴──────────┘
//!  length = 20 + N + 4;   checksum = CRC-32C of bytes [0, 20+N)
//! ```
//!
//! | type | name          | length | body |
//! |------|---------------|--------|------|
//! | 0x01 | [`Heartbeat`]     | 24 | — |
//! | 0x02 | [`Login`]         | 24 | — |
//! | 0x03 | [`LoginAccepted`] | 32 | `session_id u64` |
//! | 0x04 | [`EndOfSession`]  | 24 | — |
//! | 0x05 | [`Packet`]        | 32 | `session_id u64` (first frame of a datagram) |
//! | 0x06 | [`Retransmit`]    | 40 | `session_id u64, count u64` (a retransmission request) |
//! | 0x07 | [`Auth`]          | 72 | `key_id [u8; 16], secret [u8; 32]` (credentials, revision 3) |
//! | 0x08 | [`Rejected`]      | 32 | `reason u8, reserved [u8; 7]` (a refusal, revision 3) |
//! | 0x10 | [`Quote`]         | 44 | `instrument_id u32, bid_price i32, ask_price i32, bid_size u32, ask_size u32` |
//! | 0x11 | [`Trade`]         | 40 | `instrument_id u32, price i32, size u32, side u8, flags u8, reserved u16` |
//!
//! Each frame type is a `#[repr(C)]` [`zerocopy`] struct of unaligned
//! little-endian fields, so a `&Quote` is a view straight into the receive
//! buffer; its accessors return plain integers.
//!
//! The values inside the revision-3 frames have their own types:
//! [`KeyId`] (checked characters and length), [`Secret`] (never printed)
//! and [`RejectReason`].
#![forbid(unsafe_code)]

mod auth;
mod frames;
mod message;

pub use auth::{
    is_key_id_byte, KeyId, KeyIdError, KeyIdField, RejectReason, Secret, KEY_ID_LEN, SECRET_LEN,
};
pub use frames::{
    Auth, EndOfSession, Header, Heartbeat, Login, LoginAccepted, Packet, Quote, Rejected,
    Retransmit, Trade,
};
pub(crate) use message::{check_frame, sealed, view};
pub use message::{DecodeError, Message};

/// The sync byte every frame starts with.
pub const MAGIC: u8 = 0xA5;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 20;
/// Length of the checksum trailer in bytes.
pub const CHECKSUM_LEN: usize = 4;
/// Length of the shortest frame (a control frame without body).
pub const MIN_FRAME_LEN: usize = 24;
/// Length of the longest frame of any type (an [`Auth`], protocol revision
/// 3): the look-ahead a parser needs, and the smallest parser buffer.
pub const MAX_FRAME_LEN: usize = 72;
/// Length of the longest data frame (a [`Quote`]).
pub const MAX_DATA_FRAME_LEN: usize = 44;

/// Field offsets within every frame, in bytes.
pub mod offset {
    /// `magic`, the 0xA5 sync byte.
    pub const MAGIC: usize = 0;
    /// `version`.
    pub const VERSION: usize = 1;
    /// `msg_type`.
    pub const MSG_TYPE: usize = 2;
    /// `length`, the total frame length.
    pub const LENGTH: usize = 3;
    /// `sequence`, u64.
    pub const SEQUENCE: usize = 4;
    /// `timestamp`, u64 nanoseconds since the Unix epoch.
    pub const TIMESTAMP: usize = 12;
    /// First body byte.
    pub const BODY: usize = 20;
}

/// A version-1 message type (as of protocol revision 3).
///
/// ```
/// use tickwire::MsgType;
/// let t = MsgType::from_u8(0x10).unwrap();
/// assert_eq!(t, MsgType::Quote);
/// assert_eq!(t.frame_len(), 44);
/// assert!(t.is_data());
/// assert_eq!(MsgType::from_u8(0x07), Some(MsgType::Auth));
/// assert_eq!(MsgType::from_u8(0x09), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MsgType {
    /// 0x01, both directions, no body.
    Heartbeat = 0x01,
    /// 0x02, client → server, no body; `sequence` is the first wanted sequence.
    Login = 0x02,
    /// 0x03, server → client, body `session_id`.
    LoginAccepted = 0x03,
    /// 0x04, server → client, no body.
    EndOfSession = 0x04,
    /// 0x05, in datagrams, body `session_id` (protocol section 8).
    Packet = 0x05,
    /// 0x06, client → server, body `session_id, count` (protocol section 9).
    Retransmit = 0x06,
    /// 0x07, client → server, body `key_id, secret` (protocol section 11).
    Auth = 0x07,
    /// 0x08, server → client, body `reason, reserved` (protocol section 11).
    Rejected = 0x08,
    /// 0x10, server → client, a two-sided quote.
    Quote = 0x10,
    /// 0x11, server → client, a trade print.
    Trade = 0x11,
}

impl MsgType {
    /// Every version-1 message type, in code order.
    pub const ALL: [MsgType; 10] = [
        MsgType::Heartbeat,
        MsgType::Login,
        MsgType::LoginAccepted,
        MsgType::EndOfSession,
        MsgType::Packet,
        MsgType::Retransmit,
        MsgType::Auth,
        MsgType::Rejected,
        MsgType::Quote,
        MsgType::Trade,
    ];

    /// The type with code `code`, or `None` if it is not valid in version 1.
    ///
    /// ```
    /// assert_eq!(tickwire::MsgType::from_u8(0x11), Some(tickwire::MsgType::Trade));
    /// ```
    #[inline]
    #[must_use]
    pub const fn from_u8(code: u8) -> Option<MsgType> {
        Some(match code {
            0x01 => MsgType::Heartbeat,
            0x02 => MsgType::Login,
            0x03 => MsgType::LoginAccepted,
            0x04 => MsgType::EndOfSession,
            0x05 => MsgType::Packet,
            0x06 => MsgType::Retransmit,
            0x07 => MsgType::Auth,
            0x08 => MsgType::Rejected,
            0x10 => MsgType::Quote,
            0x11 => MsgType::Trade,
            _ => return None,
        })
    }

    /// The wire code of this type.
    ///
    /// ```
    /// assert_eq!(tickwire::MsgType::LoginAccepted.code(), 0x03);
    /// ```
    #[inline]
    #[must_use]
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The exact frame length of this type, header and checksum included.
    ///
    /// ```
    /// assert_eq!(tickwire::MsgType::Trade.frame_len(), 40);
    /// ```
    #[inline]
    #[must_use]
    pub const fn frame_len(self) -> usize {
        match self {
            MsgType::Heartbeat | MsgType::Login | MsgType::EndOfSession => 24,
            MsgType::LoginAccepted | MsgType::Packet | MsgType::Rejected => 32,
            MsgType::Auth => 72,
            MsgType::Quote => 44,
            MsgType::Trade | MsgType::Retransmit => 40,
        }
    }

    /// Whether this is a data frame (codes 0x10–0x7F), numbered 1, 2, 3, …
    ///
    /// ```
    /// assert!(tickwire::MsgType::Quote.is_data());
    /// assert!(!tickwire::MsgType::Heartbeat.is_data());
    /// ```
    #[inline]
    #[must_use]
    pub const fn is_data(self) -> bool {
        self.code() >= 0x10
    }

    /// The name used in JSON lines (protocol section 7).
    ///
    /// ```
    /// assert_eq!(tickwire::MsgType::EndOfSession.name(), "end_of_session");
    /// ```
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            MsgType::Heartbeat => "heartbeat",
            MsgType::Login => "login",
            MsgType::LoginAccepted => "login_accepted",
            MsgType::EndOfSession => "end_of_session",
            MsgType::Packet => "packet",
            MsgType::Retransmit => "retransmit",
            MsgType::Auth => "auth",
            MsgType::Rejected => "rejected",
            MsgType::Quote => "quote",
            MsgType::Trade => "trade",
        }
    }

    /// The first four bytes of a valid frame of this type, read as a
    /// little-endian `u32`: magic, version, type and length in one compare.
    #[inline]
    #[allow(clippy::cast_possible_truncation)] // frame lengths are at most 72
    pub(crate) const fn head_word(self) -> u32 {
        u32::from_le_bytes([MAGIC, VERSION, self.code(), self.frame_len() as u8])
    }
}

impl core::fmt::Display for MsgType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
