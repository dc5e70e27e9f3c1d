//! [`FrameCodec`]: tickwire frames for `tokio_util::codec` (`Framed`,
//! `FramedRead`, `FramedWrite`), and the owned [`Frame`] it yields.
//!
//! ```text
//!  socket ─▶ BytesMut ─▶ Stepper (the parser's engine) ─▶ Item::Frame(Frame)  split_to(len).freeze(): no copy
//!                                                     ├─▶ Item::Gap / Item::Duplicate / Item::NewSession
//!                                                     └─▶ Item::Discarded (damage is an item, not an error)
//!  (timestamp, Payload) ─▶ Sequencer ─▶ BytesMut ─▶ socket
//! ```
#![forbid(unsafe_code)]

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::encode::{Payload, Sequencer};
use crate::parse::{Discard, Event, ParseStats, Stepper};
use crate::sequence::{Gap, SequenceTracker};
use crate::wire::{view, Message, MsgType, MAX_FRAME_LEN};

/// A checked frame that owns its bytes: a [`Bytes`] split off the receive
/// buffer (no copy), cheap to clone and to send to another task. Its CRC was
/// checked when it was decoded; [`message`](Frame::message) is the typed,
/// zero-copy view of it, not checked again.
///
/// ```
/// use tickwire::tokio::{FrameCodec, Item};
/// use tickwire::{Message, Payload};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new();
/// let mut wire = bytes::BytesMut::new();
/// codec.encode((7, Payload::Heartbeat), &mut wire)?;
/// let Some(Item::Frame(frame)) = codec.decode(&mut wire)? else { panic!("a frame") };
/// assert!(matches!(frame.message(), Message::Heartbeat(_)));
/// assert_eq!((frame.sequence(), frame.timestamp(), frame.len()), (1, 7, 24));
/// let shared = frame.clone(); // a reference count, not a copy
/// assert_eq!(shared.as_bytes(), frame.as_bytes());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    bytes: Bytes,
    msg_type: MsgType,
}

/// What [`Frame::message`] shows if the impossible happens (a frame whose
/// bytes are not its type's): zeros, as a Heartbeat.
static NO_FRAME: [u8; 24] = [0; 24];

impl Frame {
    /// `bytes` must be one checked frame of type `msg_type`.
    fn checked(bytes: Bytes, msg_type: MsgType) -> Frame {
        Frame { bytes, msg_type }
    }

    /// Checks one whole frame (CRC included) and wraps it.
    ///
    /// ```
    /// let mut wire = [0u8; 24];
    /// tickwire::encode(&tickwire::Payload::Heartbeat, 5, 0, &mut wire)?;
    /// let frame = tickwire::tokio::Frame::decode(bytes::Bytes::copy_from_slice(&wire))?;
    /// assert_eq!(frame.sequence(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Why the bytes are not exactly one valid frame (extra bytes after it
    /// are [`DecodeError::BadLength`](crate::DecodeError::BadLength)).
    pub fn decode(bytes: Bytes) -> Result<Frame, crate::DecodeError> {
        let (message, rest) = Message::decode(&bytes)?;
        if !rest.is_empty() {
            return Err(crate::DecodeError::BadLength {
                msg_type: message.msg_type(),
                found: u8::try_from(bytes.len()).unwrap_or(u8::MAX),
            });
        }
        let msg_type = message.msg_type();
        Ok(Frame::checked(bytes, msg_type))
    }

    /// The typed view of the frame (zero-copy; the CRC is not checked again).
    #[must_use]
    pub fn message(&self) -> Message<'_> {
        view(self.msg_type.code(), &self.bytes)
            .unwrap_or_else(|| Message::Heartbeat(zerocopy::transmute_ref!(&NO_FRAME)))
    }

    /// The frame's type.
    #[must_use]
    pub fn msg_type(&self) -> MsgType {
        self.msg_type
    }

    /// The frame's sequence number.
    #[must_use]
    pub fn sequence(&self) -> u64 {
        self.message().sequence()
    }

    /// The frame's timestamp (nanoseconds since the Unix epoch).
    #[must_use]
    pub fn timestamp(&self) -> u64 {
        self.message().timestamp()
    }

    /// The frame's length in bytes.
    #[must_use]
    #[allow(clippy::len_without_is_empty)] // a frame is never empty
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The frame's bytes, as received.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The frame's bytes, shared.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// What [`FrameCodec`] decodes, in stream order: the owned counterpart of
/// [`parse::Event`](crate::parse::Event).
///
/// ```
/// use tickwire::tokio::Item;
/// let item = Item::Gap(tickwire::sequence::Gap { first: 3, last: 4 });
/// assert!(item.frame().is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Item {
    /// A checked, new frame.
    Frame(Frame),
    /// A checked data frame whose sequence was already passed.
    Duplicate(Frame),
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

impl Item {
    /// The frame, for [`Item::Frame`] and [`Item::Duplicate`].
    #[must_use]
    pub fn frame(&self) -> Option<&Frame> {
        match self {
            Item::Frame(f) | Item::Duplicate(f) => Some(f),
            _ => None,
        }
    }

    /// The borrowed event this item stands for (what a
    /// [`Parser`](crate::parse::Parser) would have produced).
    ///
    /// ```
    /// use tickwire::parse::Event;
    /// use tickwire::tokio::Item;
    /// let gap = tickwire::sequence::Gap { first: 3, last: 4 };
    /// assert_eq!(Item::Gap(gap).as_event(), Event::Gap(gap));
    /// ```
    #[must_use]
    pub fn as_event(&self) -> Event<'_> {
        match self {
            Item::Frame(f) => Event::Frame(f.message()),
            Item::Duplicate(f) => Event::Duplicate(f.message()),
            Item::Gap(g) => Event::Gap(*g),
            Item::NewSession {
                session_id,
                sequence,
            } => Event::NewSession {
                session_id: *session_id,
                sequence: *sequence,
            },
            Item::Discarded(d) => Event::Discarded(*d),
        }
    }
}

/// How much [`FrameCodec`] asks the buffer to hold before a read (64 KiB):
/// `FramedRead` reads into the spare capacity.
const RESERVE: usize = 64 << 10;

/// The tickwire stream format as a `tokio_util` codec.
///
/// Decoding is the core parser's engine over the `BytesMut` the framing
/// layer reads into: the same [`Item`]s for the same bytes however they are
/// split into reads (discards, gaps and duplicates are items, never errors),
/// each frame split off the buffer without a copy. At the end of the stream
/// an incomplete frame is reported as discarded, as
/// [`Parser::finish`](crate::parse::Parser::finish) does. The decoder never
/// returns an error.
///
/// Encoding takes `(timestamp, Payload)` and numbers data frames with the
/// codec's [`Sequencer`] (control frames carry the next data sequence);
/// [`Frame`]s are encoded as they are (forwarding).
///
/// ```
/// use futures_util::{SinkExt, StreamExt};
/// use tickwire::tokio::{FrameCodec, Item};
/// use tickwire::{encode::QuoteFields, Payload};
/// use tokio_util::codec::{FramedRead, FramedWrite};
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let (writer, reader) = tokio::io::duplex(4096);
/// let mut sink = FramedWrite::new(writer, FrameCodec::new());
/// for ts in 0..3 {
///     sink.send((ts, Payload::Quote(QuoteFields::default()))).await?;
/// }
/// drop(sink);
/// let mut items = FramedRead::new(reader, FrameCodec::new());
/// let mut sequences = Vec::new();
/// while let Some(item) = items.next().await {
///     if let Item::Frame(frame) = item? {
///         sequences.push(frame.sequence());
///     }
/// }
/// assert_eq!(sequences, [1, 2, 3]);
/// # Ok::<(), std::io::Error>(())
/// # })?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct FrameCodec {
    stepper: Stepper,
    sequencer: Sequencer,
}

impl Default for FrameCodec {
    fn default() -> FrameCodec {
        FrameCodec::new()
    }
}

impl FrameCodec {
    /// A codec for a new stream: the decoder expects nothing yet, the
    /// encoder numbers from 1.
    #[must_use]
    pub fn new() -> FrameCodec {
        FrameCodec::with_sequencer(Sequencer::new())
    }

    /// A codec whose encoder numbers with `sequencer`.
    ///
    /// ```
    /// let codec = tickwire::tokio::FrameCodec::with_sequencer(tickwire::Sequencer::starting_at(9));
    /// assert_eq!(codec.sequencer().next_sequence(), 9);
    /// ```
    #[must_use]
    pub fn with_sequencer(sequencer: Sequencer) -> FrameCodec {
        FrameCodec {
            stepper: Stepper::new(),
            sequencer,
        }
    }

    /// The encoder's numbering.
    #[must_use]
    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// The decoder's counters (frames by type, bytes, discards).
    ///
    /// ```
    /// assert_eq!(tickwire::tokio::FrameCodec::new().stats().frames(), 0);
    /// ```
    #[must_use]
    pub fn stats(&self) -> ParseStats {
        self.stepper.stats()
    }

    /// The decoder's sequence tracker (gaps, duplicates, the session).
    ///
    /// ```
    /// assert_eq!(tickwire::tokio::FrameCodec::new().tracker().expected(), None);
    /// ```
    #[must_use]
    pub fn tracker(&self) -> &SequenceTracker {
        self.stepper.tracker()
    }

    /// The next item in `buf`, consuming its bytes (and any discarded ones).
    fn step(&mut self, buf: &mut BytesMut) -> Option<Item> {
        let (found, used) = self.stepper.next(buf);
        let used = used.min(buf.len());
        // A frame: its type, length, and whether it is a duplicate.
        let item = match found {
            None => {
                buf.advance(used);
                return None;
            }
            Some(Event::Frame(m)) => Err((m.msg_type(), m.len(), false)),
            Some(Event::Duplicate(m)) => Err((m.msg_type(), m.len(), true)),
            Some(Event::Gap(g)) => Ok(Item::Gap(g)),
            Some(Event::NewSession {
                session_id,
                sequence,
            }) => Ok(Item::NewSession {
                session_id,
                sequence,
            }),
            Some(Event::Discarded(d)) => Ok(Item::Discarded(d)),
        };
        Some(match item {
            Ok(item) => {
                buf.advance(used);
                item
            }
            Err((msg_type, len, duplicate)) => {
                // The frame is the last `len` bytes consumed: split off, not copied.
                buf.advance(used.saturating_sub(len));
                let frame = Frame::checked(buf.split_to(len.min(buf.len())).freeze(), msg_type);
                if duplicate {
                    Item::Duplicate(frame)
                } else {
                    Item::Frame(frame)
                }
            }
        })
    }
}

impl Decoder for FrameCodec {
    type Item = Item;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, io::Error> {
        let item = self.step(buf);
        if item.is_none() && buf.capacity() < RESERVE {
            buf.reserve(RESERVE);
        }
        Ok(item)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, io::Error> {
        self.stepper.finish();
        Ok(self.step(buf))
    }
}

impl Encoder<(u64, Payload)> for FrameCodec {
    type Error = io::Error;

    /// Encodes `(timestamp, payload)`, numbered by the codec's sequencer.
    fn encode(
        &mut self,
        (timestamp, payload): (u64, Payload),
        dst: &mut BytesMut,
    ) -> io::Result<()> {
        let mut frame = [0u8; MAX_FRAME_LEN];
        let n = self
            .sequencer
            .encode(&payload, timestamp, &mut frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        dst.put_slice(frame.get(..n).unwrap_or_default());
        Ok(())
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = io::Error;

    /// Writes a frame as it is (its sequence is its own).
    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> io::Result<()> {
        dst.put_slice(frame.as_bytes());
        Ok(())
    }
}
