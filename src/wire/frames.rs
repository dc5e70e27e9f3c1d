//! One zerocopy struct per frame type.
#![forbid(unsafe_code)]

use core::fmt;
use zerocopy::byteorder::little_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::MsgType;

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
