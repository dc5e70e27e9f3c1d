//! The resynchronizing stream parser (protocol section 5), sans-IO.
//!
//! The caller reads from its socket (or file) straight into the parser's free
//! space, commits the number of bytes read, then pulls events until there are
//! none:
//!
//! ```text
//!   ┌──────────── buffer (fixed, caller-provided or owned) ─────────────┐
//!   │ consumed │ buffered: frames not yet pulled  │ spare: read into it │
//!   └──────────┴──────────────────────────────────┴─────────────────────┘
//!              ▲ start                            ▲ end
//!   spare() ─▶ &mut [u8] (compacts first if needed); commit(n) moves `end`;
//!   next_event() moves `start`; finish() marks the end of the stream.
//! ```
//!
//! Events come out in stream order:
//!
//! * [`Event::Frame`]: a checked frame, borrowed zero-copy from the buffer;
//! * [`Event::Duplicate`]: a checked data frame whose sequence was already passed
//!   (duplicate or late); it is not a new frame;
//! * [`Event::Gap`]: data sequences that never arrived, reported just before
//!   the frame that revealed them (a data frame, or a Heartbeat/EndOfSession
//!   carrying a later next-sequence);
//! * [`Event::NewSession`]: a LoginAccepted with a new `session_id`, reported
//!   just before that frame; sequence tracking restarted;
//! * [`Event::Discarded`]: a run of bytes that are not frames, with the
//!   reason its first candidate failed.
//!
//! ## Resynchronization
//!
//! The parser looks for the 0xA5 sync byte with `memchr`, checks the header as
//! soon as its bytes are there, waits for the whole frame, and verifies the
//! checksum. On any failure it discards **one** byte and searches again, so a
//! truncated frame never swallows the good frame after it. Consecutive
//! discarded bytes form one run, reported when a valid frame ends it, at the
//! end of the stream, or every [`DISCARD_REPORT_MAX`] bytes, so the event
//! sequence does not depend on how the bytes were split into reads.
//!
//! ## Memory
//!
//! The buffer is fixed: a caller's `&mut [u8]` (`no_std`), or with `alloc` an
//! owned `Box<[u8]>` (`Parser::with_capacity`, [`DEFAULT_CAPACITY`] by
//! default). Frames are borrowed from it; nothing is copied except the
//! unconsumed tail (at most a partial frame when events are drained between
//! reads) when [`Parser::spare`] compacts.
#![forbid(unsafe_code)]

use core::fmt;

use crate::sequence::Gap;
use crate::wire::{DecodeError, Message};

mod engine;
mod parser;
mod slice;
#[cfg(feature = "tokio")]
mod stepper;

pub use parser::Parser;
pub use slice::SliceParser;
#[cfg(feature = "tokio")]
pub(crate) use stepper::Stepper;

/// Default capacity of an owned buffer: 4 MiB, the seed sizing
/// (500K msg/s × 44 B × 100 ms burst × 2, rounded up).
pub const DEFAULT_CAPACITY: usize = 4 << 20;

/// A discarded run is reported at the latest when it reaches this length.
pub const DISCARD_REPORT_MAX: u64 = 64 << 10;

/// Why the bytes of a discarded run were discarded: why its first candidate
/// frame failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DiscardReason {
    /// No 0xA5 sync byte: the bytes could not start a frame.
    NoSync,
    /// A sync byte followed by a version other than 1.
    BadVersion,
    /// A sync byte followed by an unknown message type.
    UnknownType,
    /// A length byte that is not the exact length of the frame's type.
    BadLength,
    /// A complete candidate whose CRC-32C does not match.
    BadChecksum,
    /// The stream ended inside a candidate frame.
    Truncated,
    /// A datagram that does not begin with a valid Packet frame, discarded
    /// whole (protocol section 8.5).
    NoPacket,
    /// A valid control frame where a datagram may not hold one (anything but
    /// the leading Packet and a final EndOfSession, protocol section 8.5).
    ControlInDatagram,
}

impl DiscardReason {
    /// A stable `snake_case` name, used in JSON lines.
    ///
    /// ```
    /// assert_eq!(tickwire::parse::DiscardReason::BadChecksum.as_str(), "bad_checksum");
    /// ```
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DiscardReason::NoSync => "no_sync",
            DiscardReason::BadVersion => "bad_version",
            DiscardReason::UnknownType => "unknown_type",
            DiscardReason::BadLength => "bad_length",
            DiscardReason::BadChecksum => "bad_checksum",
            DiscardReason::Truncated => "truncated",
            DiscardReason::NoPacket => "no_packet",
            DiscardReason::ControlInDatagram => "control_in_datagram",
        }
    }

    pub(crate) fn of(err: DecodeError) -> DiscardReason {
        match err {
            DecodeError::BadMagic { .. } => DiscardReason::NoSync,
            DecodeError::BadVersion { .. } => DiscardReason::BadVersion,
            DecodeError::UnknownType { .. } => DiscardReason::UnknownType,
            DecodeError::BadLength { .. } => DiscardReason::BadLength,
            DecodeError::BadChecksum { .. } => DiscardReason::BadChecksum,
            DecodeError::Incomplete { .. } => DiscardReason::Truncated,
        }
    }
}

impl fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run of discarded bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Discard {
    /// How many bytes.
    pub bytes: u64,
    /// Why the first candidate of the run failed ([`DiscardReason::NoSync`]
    /// if the run held no sync byte).
    pub reason: DiscardReason,
}

/// One thing the parser found, in stream order. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A checked, new frame.
    Frame(Message<'a>),
    /// A checked data frame whose sequence was already passed.
    Duplicate(Message<'a>),
    /// Missing data sequences, reported before the frame that revealed them.
    Gap(Gap),
    /// A new session started, reported before its LoginAccepted frame.
    NewSession {
        /// The new session.
        session_id: u64,
        /// Its first data sequence on this connection.
        sequence: u64,
    },
    /// Bytes that are not frames.
    Discarded(Discard),
}

/// Errors of [`Parser`] operations (not of the data: damage is an event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The buffer cannot hold the largest frame.
    BufferTooSmall {
        /// The buffer's length.
        capacity: usize,
        /// The minimum ([`MAX_FRAME_LEN`](crate::wire::MAX_FRAME_LEN)).
        minimum: usize,
    },
    /// [`Parser::commit`] was told more bytes than [`Parser::spare`] offered.
    Overfill {
        /// Bytes committed.
        committed: usize,
        /// Free bytes there were.
        spare: usize,
    },
    /// Bytes were committed after [`Parser::finish`].
    Finished,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParseError::BufferTooSmall { capacity, minimum } => write!(
                f,
                "parser buffer of {capacity} bytes is too small: it must hold at least {minimum}"
            ),
            ParseError::Overfill { committed, spare } => write!(
                f,
                "committed {committed} bytes but only {spare} were free: read into `spare()` and \
                 drain events with `next_event()` before reading more"
            ),
            ParseError::Finished => {
                f.write_str("bytes committed after `finish()`: the stream already ended")
            }
        }
    }
}

impl core::error::Error for ParseError {}

/// Counters kept by the parser.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ParseStats {
    /// Heartbeat frames.
    pub heartbeats: u64,
    /// Login frames.
    pub logins: u64,
    /// LoginAccepted frames.
    pub login_accepted: u64,
    /// EndOfSession frames.
    pub end_of_session: u64,
    /// Packet frames (the first frame of each datagram).
    pub packets: u64,
    /// Retransmit frames (retransmission requests).
    pub retransmits: u64,
    /// Auth frames (credentials, protocol section 11).
    #[cfg_attr(feature = "serde", serde(default))]
    pub auths: u64,
    /// Rejected frames (refusals, protocol section 11).
    #[cfg_attr(feature = "serde", serde(default))]
    pub rejected: u64,
    /// Quote frames (duplicates included).
    pub quotes: u64,
    /// Trade frames (duplicates included).
    pub trades: u64,
    /// Bytes in checked frames.
    pub frame_bytes: u64,
    /// Bytes discarded.
    pub discarded_bytes: u64,
    /// Discarded runs reported.
    pub discard_runs: u64,
}

impl core::ops::AddAssign for ParseStats {
    /// Adds another parser's counters (for example across the connections
    /// of one client).
    fn add_assign(&mut self, other: ParseStats) {
        self.heartbeats += other.heartbeats;
        self.logins += other.logins;
        self.login_accepted += other.login_accepted;
        self.end_of_session += other.end_of_session;
        self.packets += other.packets;
        self.retransmits += other.retransmits;
        self.auths += other.auths;
        self.rejected += other.rejected;
        self.quotes += other.quotes;
        self.trades += other.trades;
        self.frame_bytes += other.frame_bytes;
        self.discarded_bytes += other.discarded_bytes;
        self.discard_runs += other.discard_runs;
    }
}

impl ParseStats {
    /// All checked frames.
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.heartbeats
            + self.logins
            + self.login_accepted
            + self.end_of_session
            + self.packets
            + self.retransmits
            + self.auths
            + self.rejected
            + self.quotes
            + self.trades
    }
}
