//! One zerocopy struct per frame type.
#![forbid(unsafe_code)]

use core::fmt;
use zerocopy::byteorder::little_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::auth::{KeyId, KeyIdError, KeyIdField, Secret, KEY_ID_LEN, SECRET_LEN};
use super::{MsgType, RejectReason};

/// The 20-byte header in front of every frame.
///
/// ```
/// use tickwire::wire::Header;
/// assert_eq!(core::mem::size_of::<Header>(), 20);
/// ```
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Header {
    magic: u8,
    version: u8,
    msg_type: u8,
    length: u8,
    sequence: U64,
    timestamp: U64,
}

impl Header {
    /// The sync byte (0xA5 in any frame this crate hands out).
    #[must_use]
    pub fn magic(&self) -> u8 {
        self.magic
    }

    /// The protocol version (1).
    #[must_use]
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The raw `msg_type` code.
    #[must_use]
    pub fn msg_type(&self) -> u8 {
        self.msg_type
    }

    /// The total frame length in bytes.
    #[must_use]
    pub fn length(&self) -> u8 {
        self.length
    }

    /// The `sequence` field: a data frame's own number, or for control frames
    /// the next data sequence (the first wanted one, in a Login).
    #[must_use]
    pub fn sequence(&self) -> u64 {
        self.sequence.get()
    }

    /// Nanoseconds since the Unix epoch (UTC), on the sender's clock.
    #[must_use]
    pub fn timestamp(&self) -> u64 {
        self.timestamp.get()
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("magic", &self.magic)
            .field("version", &self.version)
            .field("msg_type", &self.msg_type)
            .field("length", &self.length)
            .field("sequence", &self.sequence())
            .field("timestamp", &self.timestamp())
            .finish()
    }
}

/// The items every frame struct has: its size checks, type constants and
/// header accessors.
macro_rules! frame_common {
    ($name:ident = $ty:ident, $len:literal) => {
        const _: () = assert!(core::mem::size_of::<$name>() == $len);
        const _: () = assert!(MsgType::$ty.frame_len() == $len);

        impl $name {
            /// The message type of this frame.
            pub const MSG_TYPE: MsgType = MsgType::$ty;
            /// The frame length in bytes, header and checksum included.
            pub const LEN: usize = $len;

            /// The frame header.
            #[must_use]
            pub fn header(&self) -> &Header {
                &self.header
            }

            /// The `sequence` field (see [`Header::sequence`]).
            #[must_use]
            pub fn sequence(&self) -> u64 {
                self.header.sequence()
            }

            /// The `timestamp` field, nanoseconds since the Unix epoch.
            #[must_use]
            pub fn timestamp(&self) -> u64 {
                self.header.timestamp()
            }

            /// The CRC-32C stored in the frame's trailer.
            #[must_use]
            pub fn checksum(&self) -> u32 {
                self.checksum.get()
            }
        }
    };
}

/// Defines a frame struct: header, body fields, checksum; its size check,
/// accessors, constructor and `Debug`.
macro_rules! frame {
    (
        $(#[$doc:meta])*
        $name:ident = $ty:ident, $len:literal {
            $( $(#[$fdoc:meta])* $field:ident : $wire:ty => $plain:ty ),* $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq)]
        #[repr(C)]
        pub struct $name {
            header: Header,
            $( $field: $wire, )*
            checksum: U32,
        }

        frame_common!($name = $ty, $len);

        impl $name {
            $(
                $(#[$fdoc])*
                #[must_use]
                pub fn $field(&self) -> $plain {
                    <$plain>::from(self.$field)
                }
            )*
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("sequence", &self.sequence())
                    .field("timestamp", &self.timestamp())
                    $( .field(stringify!($field), &self.$field()) )*
                    .field("checksum", &self.checksum())
                    .finish()
            }
        }
    };
}

frame! {
    /// Heartbeat (0x01, 24 bytes): sent when idle; `sequence` is the next data
    /// sequence the sender will send.
    ///
    /// ```
    /// assert_eq!(core::mem::size_of::<tickwire::wire::Heartbeat>(), 24);
    /// ```
    Heartbeat = Heartbeat, 24 {}
}

frame! {
    /// Login (0x02, 24 bytes): `sequence` is the first data sequence wanted;
    /// 0 means live data only.
    ///
    /// ```
    /// assert_eq!(core::mem::size_of::<tickwire::wire::Login>(), 24);
    /// ```
    Login = Login, 24 {}
}

frame! {
    /// LoginAccepted (0x03, 32 bytes): `sequence` is the first data sequence
    /// the server will send on this connection.
    ///
    /// ```
    /// assert_eq!(core::mem::size_of::<tickwire::wire::LoginAccepted>(), 32);
    /// ```
    LoginAccepted = LoginAccepted, 32 {
        /// Names the session; a new value means the sequence space restarted.
        session_id: U64 => u64,
    }
}

frame! {
    /// EndOfSession (0x04, 24 bytes): the server is shutting down gracefully;
    /// `sequence` is the next data sequence.
    ///
    /// ```
    /// assert_eq!(core::mem::size_of::<tickwire::wire::EndOfSession>(), 24);
    /// ```
    EndOfSession = EndOfSession, 24 {}
}

frame! {
    /// Packet (0x05, 32 bytes): the first frame of every datagram (protocol
    /// section 8). `sequence` is the sequence of the datagram's first data
    /// frame, or the next data sequence in a datagram without data frames;
    /// `timestamp` is when the datagram was sent.
    ///
    /// ```
    /// assert_eq!(core::mem::size_of::<tickwire::wire::Packet>(), 32);
    /// ```
    Packet = Packet, 32 {
        /// Names the session, as in [`LoginAccepted`].
        session_id: U64 => u64,
    }
}

frame! {
    /// Retransmit (0x06, 40 bytes): a request for `count` data frames from
    /// `sequence` on, sent over TCP to a retransmission server (protocol
    /// section 9). `session_id` 0 means whichever session the server holds.
    ///
    /// ```
    /// assert_eq!(core::mem::size_of::<tickwire::wire::Retransmit>(), 40);
    /// ```
    Retransmit = Retransmit, 40 {
        /// The session being recovered (0: whichever the server holds).
        session_id: U64 => u64,
        /// How many data frames are wanted (at least 1).
        count: U64 => u64,
    }
}

/// Auth (0x07, 72 bytes, client → server): credentials, the first frame of
/// a TCP connection to a server that requires them (protocol section 11).
/// `sequence` is 0 (receivers ignore it); the body is `key_id` (16 bytes:
/// 1–16 characters from `A–Z a–z 0–9 - _ .`, padded with 0x00) and `secret`
/// (32 opaque bytes).
///
/// Its `Debug` output shows the key id and never the secret.
///
/// ```
/// use tickwire::wire::{Auth, KeyId, Secret};
/// use tickwire::{Message, Payload};
/// let mut buf = [0u8; 72];
/// let payload = Payload::auth(&KeyId::new("alice")?, Secret::new([0x5a; 32]));
/// tickwire::encode(&payload, 0, 0, &mut buf)?;
/// let (Message::Auth(auth), _) = Message::decode(&buf)? else { unreachable!() };
/// assert_eq!(auth.key_id()?.as_str(), "alice");
/// assert!(auth.is_well_formed());
/// assert_eq!(auth.secret().expose(), &[0x5a; 32]);
/// assert!(!format!("{auth:?}").contains("5a"));
/// assert_eq!(core::mem::size_of::<Auth>(), 72);
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Auth {
    header: Header,
    key_id: [u8; KEY_ID_LEN],
    secret: [u8; SECRET_LEN],
    checksum: U32,
}

frame_common!(Auth = Auth, 72);

impl Auth {
    /// The raw 16-byte `key_id` field, padding included; not checked.
    ///
    /// ```
    /// # use tickwire::{wire::{KeyId, Secret}, Message, Payload};
    /// # let mut buf = [0u8; 72];
    /// # tickwire::encode(&Payload::auth(&KeyId::new("bob")?, Secret::new([0; 32])), 0, 0, &mut buf)?;
    /// # let (Message::Auth(auth), _) = Message::decode(&buf)? else { unreachable!() };
    /// assert_eq!(&auth.key_id_bytes()[..4], b"bob\0");
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    #[must_use]
    pub fn key_id_bytes(&self) -> [u8; KEY_ID_LEN] {
        self.key_id
    }

    /// The `key_id` field as a [`KeyId`], if it is 1–16 allowed characters
    /// followed only by 0x00.
    ///
    /// # Errors
    /// [`KeyIdError`] if it is not.
    ///
    /// ```
    /// # use tickwire::{wire::{KeyId, Secret}, Message, Payload};
    /// # let mut buf = [0u8; 72];
    /// # tickwire::encode(&Payload::auth(&KeyId::new("bob")?, Secret::new([0; 32])), 0, 0, &mut buf)?;
    /// # let (Message::Auth(auth), _) = Message::decode(&buf)? else { unreachable!() };
    /// assert_eq!(auth.key_id()?, KeyId::new("bob")?);
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    pub fn key_id(&self) -> Result<KeyId, KeyIdError> {
        KeyId::from_wire(&self.key_id)
    }

    /// The secret (see [`Secret`] on keeping it out of logs).
    ///
    /// ```
    /// # use tickwire::{wire::{KeyId, Secret}, Message, Payload};
    /// # let mut buf = [0u8; 72];
    /// # tickwire::encode(&Payload::auth(&KeyId::new("bob")?, Secret::new([3; 32])), 0, 0, &mut buf)?;
    /// # let (Message::Auth(auth), _) = Message::decode(&buf)? else { unreachable!() };
    /// assert_eq!(auth.secret(), Secret::new([3; 32]));
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    #[must_use]
    pub fn secret(&self) -> Secret {
        Secret::new(self.secret)
    }

    /// Whether the Auth is well-formed (protocol section 11): `sequence` 0
    /// and a valid key id. (That it is a valid frame was checked when it
    /// was decoded.)
    ///
    /// ```
    /// # use tickwire::{wire::{KeyId, Secret}, Message, Payload};
    /// let payload = Payload::auth(&KeyId::new("bob")?, Secret::new([0; 32]));
    /// let mut buf = [0u8; 72];
    /// tickwire::encode(&payload, 1, 0, &mut buf)?; // sequence 1: not well-formed
    /// let (Message::Auth(auth), _) = Message::decode(&buf)? else { unreachable!() };
    /// assert!(!auth.is_well_formed());
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_well_formed(&self) -> bool {
        self.sequence() == 0 && self.key_id().is_ok()
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("sequence", &self.sequence())
            .field("timestamp", &self.timestamp())
            .field("key_id", &format_args!("\"{}\"", KeyIdField(&self.key_id)))
            .field("secret", &Secret::new(self.secret))
            .field("checksum", &self.checksum())
            .finish()
    }
}

/// Rejected (0x08, 32 bytes, server → client): the server refuses the
/// connection and closes it (protocol section 11). `sequence` is 0
/// (receivers ignore it); the body is `reason` (u8) and 7 reserved bytes
/// (written 0, ignored when read).
///
/// ```
/// use tickwire::wire::{Rejected, RejectReason};
/// use tickwire::{Message, Payload};
/// let mut buf = [0u8; 32];
/// tickwire::encode(&Payload::Rejected { reason: RejectReason::NotPermitted }, 0, 0, &mut buf)?;
/// let (Message::Rejected(r), _) = Message::decode(&buf)? else { unreachable!() };
/// assert_eq!(r.reason(), RejectReason::NotPermitted);
/// assert_eq!(core::mem::size_of::<Rejected>(), 32);
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Rejected {
    header: Header,
    reason: u8,
    reserved: [u8; 7],
    checksum: U32,
}

frame_common!(Rejected = Rejected, 32);

impl Rejected {
    /// Why the server refused the connection.
    ///
    /// ```
    /// # use tickwire::{wire::RejectReason, Message, Payload};
    /// # let mut buf = [0u8; 32];
    /// # tickwire::encode(&Payload::Rejected { reason: RejectReason::Other(7) }, 0, 0, &mut buf)?;
    /// # let (Message::Rejected(r), _) = Message::decode(&buf)? else { unreachable!() };
    /// assert_eq!(r.reason(), RejectReason::Other(7));
    /// assert_eq!(r.reason().effective(), RejectReason::NotAuthorized);
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    #[must_use]
    pub fn reason(&self) -> RejectReason {
        RejectReason::from_code(self.reason)
    }

    /// The reserved bytes (written 0, ignored when read).
    ///
    /// ```
    /// # use tickwire::{wire::RejectReason, Message, Payload};
    /// # let mut buf = [0u8; 32];
    /// # tickwire::encode(&Payload::Rejected { reason: RejectReason::NotAuthorized }, 0, 0, &mut buf)?;
    /// # let (Message::Rejected(r), _) = Message::decode(&buf)? else { unreachable!() };
    /// assert_eq!(r.reserved(), [0; 7]);
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    #[must_use]
    pub fn reserved(&self) -> [u8; 7] {
        self.reserved
    }
}

impl fmt::Debug for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("sequence", &self.sequence())
            .field("timestamp", &self.timestamp())
            .field("reason", &self.reason())
            .field("checksum", &self.checksum())
            .finish()
    }
}

frame! {
    /// Quote (0x10, 44 bytes): a two-sided quote. Prices are fixed-point with
    /// 4 implied decimals (1234500 = 123.4500).
    ///
    /// ```
    /// assert_eq!(core::mem::size_of::<tickwire::wire::Quote>(), 44);
    /// ```
    Quote = Quote, 44 {
        /// The instrument.
        instrument_id: U32 => u32,
        /// Best bid, 4 implied decimals.
        bid_price: I32 => i32,
        /// Best ask, 4 implied decimals.
        ask_price: I32 => i32,
        /// Quantity at the bid.
        bid_size: U32 => u32,
        /// Quantity at the ask.
        ask_size: U32 => u32,
    }
}

frame! {
    /// Trade (0x11, 40 bytes): a trade print.
    ///
    /// ```
    /// assert_eq!(core::mem::size_of::<tickwire::wire::Trade>(), 40);
    /// ```
    Trade = Trade, 40 {
        /// The instrument.
        instrument_id: U32 => u32,
        /// Trade price, 4 implied decimals.
        price: I32 => i32,
        /// Traded quantity.
        size: U32 => u32,
        /// 0 unknown, 1 buy, 2 sell; any other value is carried through.
        side: u8 => u8,
        /// Application bit field, carried through.
        flags: u8 => u8,
        /// Written as 0, ignored when read.
        reserved: U16 => u16,
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn header_layout() {
        assert_eq!(size_of::<Header>(), 20);
        assert_eq!(offset_of!(Header, magic), super::super::offset::MAGIC);
        assert_eq!(offset_of!(Header, version), super::super::offset::VERSION);
        assert_eq!(offset_of!(Header, msg_type), super::super::offset::MSG_TYPE);
        assert_eq!(offset_of!(Header, length), super::super::offset::LENGTH);
        assert_eq!(offset_of!(Header, sequence), super::super::offset::SEQUENCE);
        assert_eq!(
            offset_of!(Header, timestamp),
            super::super::offset::TIMESTAMP
        );
    }

    #[test]
    fn control_layouts() {
        assert_eq!(
            (size_of::<Heartbeat>(), offset_of!(Heartbeat, checksum)),
            (24, 20)
        );
        assert_eq!((size_of::<Login>(), offset_of!(Login, checksum)), (24, 20));
        assert_eq!(
            (
                size_of::<EndOfSession>(),
                offset_of!(EndOfSession, checksum)
            ),
            (24, 20)
        );
        assert_eq!(size_of::<LoginAccepted>(), 32);
        assert_eq!(offset_of!(LoginAccepted, session_id), 20);
        assert_eq!(offset_of!(LoginAccepted, checksum), 28);
    }

    #[test]
    fn datagram_layouts() {
        assert_eq!(size_of::<Packet>(), 32);
        assert_eq!(offset_of!(Packet, session_id), 20);
        assert_eq!(offset_of!(Packet, checksum), 28);
        assert_eq!(size_of::<Retransmit>(), 40);
        assert_eq!(offset_of!(Retransmit, session_id), 20);
        assert_eq!(offset_of!(Retransmit, count), 28);
        assert_eq!(offset_of!(Retransmit, checksum), 36);
        assert_eq!(align_of::<Packet>(), 1);
        assert_eq!(align_of::<Retransmit>(), 1);
    }

    #[test]
    fn auth_layout() {
        assert_eq!(size_of::<Auth>(), 72);
        assert_eq!(offset_of!(Auth, key_id), 20);
        assert_eq!(offset_of!(Auth, secret), 36);
        assert_eq!(offset_of!(Auth, checksum), 68);
        assert_eq!(size_of::<Rejected>(), 32);
        assert_eq!(offset_of!(Rejected, reason), 20);
        assert_eq!(offset_of!(Rejected, reserved), 21);
        assert_eq!(offset_of!(Rejected, checksum), 28);
        assert_eq!(align_of::<Auth>(), 1);
        assert_eq!(align_of::<Rejected>(), 1);
    }

    #[test]
    fn quote_layout() {
        assert_eq!(size_of::<Quote>(), 44);
        assert_eq!(offset_of!(Quote, header), 0);
        assert_eq!(offset_of!(Quote, instrument_id), 20);
        assert_eq!(offset_of!(Quote, bid_price), 24);
        assert_eq!(offset_of!(Quote, ask_price), 28);
        assert_eq!(offset_of!(Quote, bid_size), 32);
        assert_eq!(offset_of!(Quote, ask_size), 36);
        assert_eq!(offset_of!(Quote, checksum), 40);
    }

    #[test]
    fn trade_layout() {
        assert_eq!(size_of::<Trade>(), 40);
        assert_eq!(offset_of!(Trade, instrument_id), 20);
        assert_eq!(offset_of!(Trade, price), 24);
        assert_eq!(offset_of!(Trade, size), 28);
        assert_eq!(offset_of!(Trade, side), 32);
        assert_eq!(offset_of!(Trade, flags), 33);
        assert_eq!(offset_of!(Trade, reserved), 34);
        assert_eq!(offset_of!(Trade, checksum), 36);
    }

    #[test]
    fn alignment_is_one() {
        assert_eq!(align_of::<Quote>(), 1);
        assert_eq!(align_of::<Trade>(), 1);
        assert_eq!(align_of::<LoginAccepted>(), 1);
    }
}
