//! A connection's outbound queue ([`ServerSession`]'s): the pieces
//! waiting to be written (published segments shared with the retention,
//! frames the session made, frames read from the cold source, file ranges
//! a driver sends from the page cache), and what a driver sees of its
//! front, [`Transmit`] (borrowed), [`OwnedTransmit`] (owned, to write
//! outside a lock) and [`FileFront`] (a file range).
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::cold::{ColdFile, ColdReader};
use super::retention::Segment;
#[cfg(doc)]
use super::ServerSession;
use crate::wire::MAX_FRAME_LEN;

/// A piece of the outbound queue.
#[derive(Clone, Debug)]
pub(super) enum Piece {
    Data(Segment),
    /// Frames read from the cold source (at most one refill's worth),
    /// shared by the copies [`Transmit::to_owned`] makes.
    Cold(Arc<Vec<u8>>),
    Control {
        frame: [u8; MAX_FRAME_LEN],
        len: usize,
    },
    /// Frames of a cold source's file, verified by it, that the driver
    /// sends itself (`sendfile`): only for a connection whose driver said
    /// it can ([`ServerSession::set_file_ranges`]).
    File {
        file: Arc<dyn ColdFile>,
        offset: u64,
        len: usize,
    },
}

impl Piece {
    /// The bytes in memory (none for a file range).
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Piece::Data(segment) => segment.bytes(),
            Piece::Cold(bytes) => bytes,
            Piece::Control { frame, len } => frame.get(..*len).unwrap_or_default(),
            Piece::File { .. } => &[],
        }
    }

    /// Bytes to write.
    pub(super) fn len(&self) -> usize {
        match self {
            Piece::File { len, .. } => *len,
            other => other.bytes().len(),
        }
    }

    pub(super) fn is_file(&self) -> bool {
        matches!(self, Piece::File { .. })
    }
}

/// A replay's reader of the cold source, opened at its first refill below
/// the retention and dropped at the seam. A clone of a session has none:
/// it opens its own at its position when it needs one.
#[derive(Debug, Default)]
pub(super) struct ColdCursor(pub(super) Option<Box<dyn ColdReader>>);

impl Clone for ColdCursor {
    fn clone(&self) -> ColdCursor {
        ColdCursor(None)
    }
}

/// Bytes waiting to be written: shared segments and small control frames.
#[derive(Clone, Debug, Default)]
pub(super) struct OutQueue {
    pub(super) pieces: VecDeque<Piece>,
    /// Bytes of the front piece already written.
    pub(super) offset: usize,
    /// Bytes not yet written.
    pub(super) bytes: usize,
}

impl OutQueue {
    pub(super) fn push(&mut self, piece: Piece) {
        self.bytes += piece.len();
        self.pieces.push_back(piece);
    }

    /// `n` bytes written from the front; how many of them were of file
    /// ranges.
    pub(super) fn consume(&mut self, mut n: usize) -> usize {
        n = n.min(self.bytes);
        self.bytes -= n;
        let mut file = 0;
        while n > 0 {
            let Some(front) = self.pieces.front() else {
                break;
            };
            let left = front.len().saturating_sub(self.offset);
            if n < left {
                if front.is_file() {
                    file += n;
                }
                self.offset += n;
                return file;
            }
            if front.is_file() {
                file += left;
            }
            n -= left;
            self.offset = 0;
            self.pieces.pop_front();
        }
        // Empty pieces at the front are done too.
        while self.pieces.front().is_some_and(|p| p.len() <= self.offset) {
            self.pieces.pop_front();
            self.offset = 0;
        }
        file
    }

    pub(super) fn clear(&mut self) {
        self.pieces.clear();
        self.offset = 0;
        self.bytes = 0;
    }
}

/// What to write next: the queued bytes as a list of slices, front first
/// (for one `writev`), or a file range at the front (for `sendfile`).
/// Returned by [`ServerSession::poll_transmit`].
///
/// A connection whose driver said it sends file ranges
/// ([`ServerSession::set_file_ranges`]) can have one at the front: then
/// [`file`](Self::file) names it and [`slices`](Self::slices) is empty;
/// otherwise `slices` holds the bytes up to the next file range (all of
/// them, for every other connection).
#[derive(Debug)]
pub struct Transmit<'a> {
    pub(super) queue: &'a OutQueue,
}

/// The file range at the front of a [`Transmit`]: send `len` bytes of
/// `file` from `offset` (what a partial send left of it), then report
/// what was sent with [`transmitted`](ServerSession::transmitted).
///
/// ```
/// # use core::time::Duration;
/// use std::sync::Arc;
/// use tickwire::session::cold::{VecCold, VecFile};
/// use tickwire::session::{Retention, ServerSession, ServerSessionConfig, Time};
/// use tickwire::{encode::QuoteFields, Payload, Sequencer};
/// let t = Time::new(Duration::ZERO, 0);
/// let mut bytes = vec![0u8; 10 * 44];
/// Sequencer::new().encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 10], &mut bytes);
/// let mut retention = Retention::new(10);
/// retention.push(Arc::new(tickwire::session::Batch::new(bytes.clone())?));
/// retention.push(Arc::new(tickwire::session::Batch::new({
///     let mut more = vec![0u8; 10 * 44];
///     Sequencer::starting_at(11).encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 10], &mut more);
///     more
/// })?)); // the retention now holds 11..=20
/// retention.set_cold(Some(Arc::new(VecCold::new(bytes).with_ranges())));
/// let mut session = ServerSession::new(ServerSessionConfig::new(1), t);
/// session.set_file_ranges(true);
/// let mut login = [0u8; 24];
/// tickwire::encode(&Payload::Login, 3, 0, &mut login)?;
/// for e in tickwire::parse::SliceParser::new(&login) { session.handle_event(&e, t, &retention); }
/// session.transmitted(32, t); // LoginAccepted, written
/// let tx = session.poll_transmit(t, &retention).unwrap();
/// let front = tx.file().unwrap();
/// assert_eq!((front.offset, front.len), (2 * 44, 8 * 44)); // frames 3..=10
/// let file: &VecFile = front.file.as_any().downcast_ref().unwrap();
/// assert_eq!(file.bytes().len(), 440);
/// session.transmitted(100, t); // a partial send: the range advances
/// let front = session.poll_transmit(t, &retention).unwrap().file().unwrap();
/// assert_eq!((front.offset, front.len), (188, 252));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FileFront<'a> {
    /// The cold source's file (the crate's journal:
    /// `tickwire::journal::JournalFile`, through
    /// [`ColdFile::as_any`]).
    pub file: &'a dyn ColdFile,
    /// Where the unsent bytes start.
    pub offset: u64,
    /// How many are left.
    pub len: usize,
}

impl<'a> Transmit<'a> {
    /// The queued bytes up to the first file range, as slices in order
    /// (none empty).
    pub fn slices(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        front_slices(self.queue.pieces.iter(), self.queue.offset)
    }

    /// The file range at the front, if the front piece is one (see
    /// [`ServerSession::set_file_ranges`]).
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use tickwire::session::{Retention, ServerSession, ServerSessionConfig, Time};
    /// let t = Time::new(Duration::ZERO, 0);
    /// let retention = Retention::new(10);
    /// let mut session = ServerSession::new(ServerSessionConfig::new(1), t);
    /// let mut login = [0u8; 24];
    /// tickwire::encode(&tickwire::Payload::Login, 0, 0, &mut login)?;
    /// for e in tickwire::parse::SliceParser::new(&login) { session.handle_event(&e, t, &retention); }
    /// let tx = session.poll_transmit(t, &retention).unwrap();
    /// assert!(tx.file().is_none()); // LoginAccepted: bytes
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn file(&self) -> Option<FileFront<'a>> {
        match self.queue.pieces.front()? {
            Piece::File { file, offset, len } => Some(FileFront {
                file: &**file,
                offset: offset.saturating_add(self.queue.offset as u64),
                len: len.saturating_sub(self.queue.offset),
            }),
            _ => None,
        }
    }

    /// Total bytes queued.
    #[must_use]
    pub fn len(&self) -> usize {
        self.queue.bytes
    }

    /// Nothing queued (never the case for a `Transmit` handed out).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queue.bytes == 0
    }

    /// The first `max_pieces` pieces of the queue, up to the first file
    /// range (see [`file`](Self::file)), as an [`OwnedTransmit`]:
    /// to write without holding whatever guards the session (the bytes of
    /// published batches are shared, not copied; control frames are copied,
    /// 72 bytes at most each). Write what the socket takes, then report it
    /// with [`transmitted`](ServerSession::transmitted) as usual: bytes
    /// queued meanwhile go behind these.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use tickwire::session::{Retention, ServerSession, ServerSessionConfig, Time};
    /// # use tickwire::parse::SliceParser;
    /// # use tickwire::Payload;
    /// let t = Time::new(Duration::ZERO, 0);
    /// let retention = Retention::new(10);
    /// let mut session = ServerSession::new(ServerSessionConfig::new(1), t);
    /// let mut login = [0u8; 24];
    /// tickwire::encode(&Payload::Login, 0, 0, &mut login)?;
    /// for e in SliceParser::new(&login) { session.handle_event(&e, t, &retention); }
    /// let owned = session.poll_transmit(t, &retention).map(|tx| tx.to_owned(64));
    /// let owned = owned.expect("LoginAccepted is queued");
    /// assert_eq!(owned.len(), 32);
    /// session.transmitted(owned.len(), t);
    /// assert_eq!(session.queued(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn to_owned(&self, max_pieces: usize) -> OwnedTransmit {
        let pieces: Vec<Piece> = self
            .queue
            .pieces
            .iter()
            .take(max_pieces)
            .take_while(|p| !p.is_file())
            .cloned()
            .collect();
        let len = pieces
            .iter()
            .map(Piece::len)
            .sum::<usize>()
            .saturating_sub(self.queue.offset);
        OwnedTransmit {
            pieces,
            offset: self.queue.offset,
            len,
        }
    }
}

/// The bytes of queued pieces, the first `offset` bytes of the front one
/// already written (empty slices left out): what [`Transmit`] and
/// [`OwnedTransmit`] both hand to `writev`.
pub(super) fn front_slices<'a>(
    pieces: impl Iterator<Item = &'a Piece> + 'a,
    offset: usize,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    pieces
        .take_while(|p| !p.is_file())
        .enumerate()
        .map(move |(i, p)| {
            let bytes = p.bytes();
            if i == 0 {
                bytes.get(offset..).unwrap_or_default()
            } else {
                bytes
            }
        })
        .filter(|s| !s.is_empty())
}

/// The front of a connection's queue, owned: see [`Transmit::to_owned`].
#[derive(Clone, Debug)]
pub struct OwnedTransmit {
    pub(super) pieces: Vec<Piece>,
    pub(super) offset: usize,
    pub(super) len: usize,
}

impl OwnedTransmit {
    /// The bytes, as slices in order (none empty).
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        front_slices(self.pieces.iter(), self.offset)
    }

    /// Bytes in these pieces.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// No bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
