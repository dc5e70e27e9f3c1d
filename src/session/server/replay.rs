//! A replay's refills: from the retention, and older than it from the
//! cold source (the journal), read by the session itself or, for a
//! driver that keeps many connections under one lock, by the driver
//! outside it ([`ColdFetch`]).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use super::super::cold::{ColdRead, ColdReader};
use super::super::outbound::Piece;
use super::super::retention::Retention;
use super::super::Time;
use super::{CloseReason, ServerEvent, ServerSession, State};

/// A replaying client's queue is refilled from the retention when it holds
/// less than this.
pub(super) const REPLAY_LOW_WATER: usize = 64 << 10;
/// ... up to this many bytes per refill: the bound on replay work per call.
pub(super) const REPLAY_CHUNK: usize = 256 << 10;
/// The most bytes of one file range a refill queues (a connection whose
/// driver sends them: they take no memory), at most half the queue limit
/// and half the slow threshold.
pub(super) const FILE_RANGE_CHUNK: usize = 1 << 20;

/// The cold frames of session `session_id` from `from` up to `limit`
/// (exclusive), for a retransmission reply (bounded by its cap): the
/// pieces with their frames, and the sequence after them; `Err(at)` when
/// the source failed. `ranges`: file ranges are welcome.
#[allow(clippy::type_complexity)]
pub(super) fn read_cold(
    retention: &Retention,
    session_id: u64,
    from: u64,
    limit: u64,
    ranges: bool,
) -> Result<(Vec<(Piece, u64)>, u64), u64> {
    read_cold_from(
        retention.cold().map(|c| &**c),
        session_id,
        from,
        limit,
        ranges,
    )
}

/// [`read_cold`] from `source` itself.
#[allow(clippy::type_complexity)]
fn read_cold_from(
    source: Option<&dyn super::super::cold::ColdSource>,
    session_id: u64,
    from: u64,
    limit: u64,
    ranges: bool,
) -> Result<(Vec<(Piece, u64)>, u64), u64> {
    let Some(cold) = source else {
        return Ok((Vec::new(), from));
    };
    let mut reader = cold.open(session_id, from).map_err(|_| from)?;
    let (mut pieces, mut next) = (Vec::new(), from);
    loop {
        match read_piece(&mut *reader, limit, REPLAY_CHUNK, ranges) {
            Ok(Some((piece, chunk))) => {
                next = chunk.end;
                pieces.push((piece, chunk.frames));
            }
            Ok(None) => return Ok((pieces, next.max(limit))),
            Err(()) => return Err(next),
        }
    }
}

/// One read of a cold reader as a queue piece: a file range if `ranges`
/// and the reader hands one out, else checked bytes.
pub(super) fn read_piece(
    reader: &mut dyn ColdReader,
    limit: u64,
    max_bytes: usize,
    ranges: bool,
) -> Result<Option<(Piece, super::super::cold::ColdChunk)>, ()> {
    let mut bytes = Vec::new();
    if !ranges {
        return match reader.read(limit, max_bytes, &mut bytes) {
            Ok(chunk) => Ok(chunk.map(|c| (Piece::Cold(Arc::new(bytes)), c))),
            Err(_) => Err(()),
        };
    }
    match reader.read_range(limit, max_bytes, &mut bytes) {
        Ok(None) => Ok(None),
        Ok(Some(ColdRead::Copied(chunk))) => Ok(Some((Piece::Cold(Arc::new(bytes)), chunk))),
        Ok(Some(ColdRead::Range(range, chunk))) => Ok(Some((
            Piece::File {
                file: range.file,
                offset: range.offset,
                len: range.len,
            },
            chunk,
        ))),
        Err(_) => Err(()),
    }
}

/// A replay's (or a retransmission reply's) read of the cold source (the
/// journal), taken out of its session to run without the driver's lock: see
/// [`ServerSession::set_cold_by_driver`]. [`read`](Self::read) it (file
/// reads and checksum checks, no lock of the server's), then hand it back
/// with [`ServerSession::finish_cold_read`] (or
/// [`ServerCore::finish_cold_read`](crate::session::ServerCore::finish_cold_read)).
pub struct ColdFetch {
    /// The replay's reader, `None` until the first read opens it.
    reader: Option<Box<dyn ColdReader>>,
    source: Option<Arc<dyn super::super::cold::ColdSource>>,
    session_id: u64,
    /// Where the replay stands.
    next: u64,
    /// The retention's oldest frame when it was taken: the seam.
    limit: u64,
    room: usize,
    ranges: bool,
    result: Option<Result<Option<(Piece, super::super::cold::ColdChunk)>, ()>>,
    /// A retransmission reply's part older than the retention (read whole,
    /// up to `limit`), rather than a replay's next chunk.
    reply: Option<ReplyRead>,
}

/// A retransmission reply's cold part: `None` until read, then the pieces
/// with their frames and the sequence after them, or where the source
/// failed.
type ReplyRead = Option<Result<(Vec<(Piece, u64)>, u64), u64>>;

/// A retransmission request whose reply waits for the driver's read of the
/// cold source (see [`ServerSession::set_cold_by_driver`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct PendingReply {
    pub(super) wanted: u64,
    pub(super) count: u64,
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) stop: u64,
}

impl ColdFetch {
    /// Reads the next frames (at most one chunk: up to 256 KiB of checked
    /// copies, or one file range), opening the replay's reader on the
    /// first read; for a retransmission reply, its whole part older than
    /// the retention (at most the request's cap). A failure is kept for
    /// [`finish_cold_read`](ServerSession::finish_cold_read), which closes
    /// the replay with `ReplayFailed`. Calling it again does nothing.
    pub fn read(&mut self) {
        if let Some(reply) = self.reply.as_mut() {
            if reply.is_none() {
                *reply = Some(read_cold_from(
                    self.source.as_deref(),
                    self.session_id,
                    self.next,
                    self.limit,
                    self.ranges,
                ));
            }
            return;
        }
        if self.result.is_some() {
            return;
        }
        if self.reader.is_none() {
            let opened = self
                .source
                .as_ref()
                .map(|source| source.open(self.session_id, self.next));
            match opened {
                Some(Ok(reader)) => self.reader = Some(reader),
                Some(Err(_)) | None => {
                    self.result = Some(Err(()));
                    return;
                }
            }
        }
        if let Some(reader) = self.reader.as_mut() {
            self.result = Some(read_piece(
                &mut **reader,
                self.limit,
                self.room,
                self.ranges,
            ));
            if matches!(self.result, Some(Err(()))) {
                self.reader = None;
            }
        }
    }

    /// The sequence the read starts at.
    #[must_use]
    pub fn next(&self) -> u64 {
        self.next
    }
}

impl fmt::Debug for ColdFetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColdFetch")
            .field("session_id", &self.session_id)
            .field("next", &self.next)
            .field("limit", &self.limit)
            .field("room", &self.room)
            .field("read", &self.result.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    /// Whether this connection's driver sends file ranges itself: a
    /// driver that can (the mio server on Linux, for a plain TCP
    /// connection: `sendfile` from the page cache to the socket) says so
    /// when the connection opens; its replays from the cold source are
    /// then queued as ranges of the source's files where the source has
    /// verified their frames, and [`Transmit::file`](crate::session::Transmit::file) hands them out. Off by
    /// default: every other connection (TLS, the tokio server, other
    /// systems) gets checked bytes.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use tickwire::session::{ServerSession, ServerSessionConfig, Time};
    /// let mut session = ServerSession::new(ServerSessionConfig::new(1), Time::new(Duration::ZERO, 0));
    /// assert!(!session.file_ranges());
    /// session.set_file_ranges(true);
    /// assert!(session.file_ranges());
    /// ```
    pub fn set_file_ranges(&mut self, on: bool) {
        self.file_ranges = on;
    }

    /// Whether the driver said it sends file ranges
    /// ([`set_file_ranges`](Self::set_file_ranges)).
    #[must_use]
    pub fn file_ranges(&self) -> bool {
        self.file_ranges
    }

    /// Whether this connection's driver reads the cold source itself,
    /// outside the lock it keeps the session (or the core) under: then a
    /// replay older than the retention waits in
    /// [`poll_transmit`](Self::poll_transmit) (nothing to write), and so
    /// does a retransmission request older than it for its reply, until
    /// the driver takes the read ([`take_cold_read`](Self::take_cold_read)),
    /// runs it ([`ColdFetch::read`]) and hands it back
    /// ([`finish_cold_read`](Self::finish_cold_read)). A driver that shares
    /// one lock among many connections (the tokio server) does this, so
    /// that a replay's file reads and checks never hold up the others or a
    /// publisher. Off by default: refills read the source themselves.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use tickwire::session::{ServerSession, ServerSessionConfig, Time};
    /// let mut session = ServerSession::new(ServerSessionConfig::new(1), Time::new(Duration::ZERO, 0));
    /// session.set_cold_by_driver(true);
    /// assert!(session.cold_by_driver());
    /// ```
    pub fn set_cold_by_driver(&mut self, on: bool) {
        self.cold_by_driver = on;
    }

    /// Whether the driver reads the cold source itself
    /// ([`set_cold_by_driver`](Self::set_cold_by_driver)).
    #[must_use]
    pub fn cold_by_driver(&self) -> bool {
        self.cold_by_driver
    }

    /// The cold read this replay (or retransmission reply) needs now,
    /// taken out of the session for
    /// the driver to run without its lock ([`ColdFetch::read`]), then to
    /// hand back with [`finish_cold_read`](Self::finish_cold_read); `None`
    /// when none is needed (not replaying, enough queued, at the
    /// retention, or one is out already). Only on a session
    /// [`set_cold_by_driver`](Self::set_cold_by_driver).
    pub fn take_cold_read(&mut self, retention: &Retention) -> Option<ColdFetch> {
        if let Some(pending) = self.reply_pending {
            if self.cold_out || self.state != State::Retransmitting {
                return None;
            }
            self.cold_out = true;
            return Some(ColdFetch {
                reader: None,
                source: retention.cold().cloned(),
                session_id: self.config.session_id,
                next: pending.first,
                limit: pending.stop.min(retention.oldest()),
                room: REPLAY_CHUNK,
                ranges: self.file_ranges,
                result: None,
                reply: Some(None),
            });
        }
        let State::Replaying { next } = self.state else {
            return None;
        };
        let own = self.config.session_id;
        if !self.cold_by_driver
            || self.cold_out
            || self.out.bytes >= REPLAY_LOW_WATER
            || next >= retention.oldest()
            || retention.oldest_held(own) >= retention.oldest()
        {
            return None;
        }
        let chunk = REPLAY_CHUNK.min(self.config.queue_limit / 2).max(1);
        let room = if self.file_ranges {
            FILE_RANGE_CHUNK
                .min(self.config.queue_limit / 2)
                .min(self.config.slow_threshold / 2)
                .max(chunk)
        } else {
            chunk
        }
        .saturating_sub(self.out.bytes)
        .max(1);
        self.cold_out = true;
        Some(ColdFetch {
            reader: self.cold.0.take(),
            source: retention.cold().cloned(),
            session_id: own,
            next,
            limit: retention.oldest(),
            room,
            ranges: self.file_ranges,
            result: None,
            reply: None,
        })
    }

    /// A cold read taken with [`take_cold_read`](Self::take_cold_read)
    /// handed back (read or not): its frames queued, the replay moved on
    /// (to the retention at the seam); `true` if it closed the session
    /// (the source failed: the frames queued before go out, then the
    /// close, as in [`poll_transmit`](Self::poll_transmit)). A read handed
    /// back after the session left that replay (closed meanwhile) is
    /// dropped.
    pub fn finish_cold_read(
        &mut self,
        fetch: ColdFetch,
        time: Time,
        retention: &Retention,
    ) -> bool {
        self.cold_out = false;
        if let Some(reply) = fetch.reply {
            return self.finish_reply(reply, time, retention);
        }
        let ColdFetch {
            reader,
            next,
            result,
            ..
        } = fetch;
        if self.state != (State::Replaying { next }) {
            return false;
        }
        let next = match result {
            None => {
                self.cold.0 = reader; // not read: the next take reads
                return false;
            }
            Some(Ok(Some((piece, chunk)))) => {
                if chunk.first > next {
                    self.stats.replay_trimmed += chunk.first - next;
                }
                self.stats.frames_queued += chunk.frames;
                self.queue(piece, time.monotonic);
                self.cold.0 = reader;
                chunk.end
            }
            Some(Ok(None)) => next.max(retention.oldest()),
            Some(Err(())) => {
                self.events
                    .push_back(ServerEvent::ReplayFailed { at: next });
                self.cold.0 = None;
                self.state = State::Closing(CloseReason::ReplayFailed);
                return true;
            }
        };
        if next < retention.oldest() {
            self.state = State::Replaying { next };
        } else {
            // The seam: the retention has the rest (and a refill queues it).
            self.cold.0 = None;
            self.refill(next, time, retention);
        }
        false
    }

    /// A replaying client's queue refilled if it runs low (what
    /// [`poll_transmit`](Self::poll_transmit) does first); `true` if that
    /// closed the session (its cold source failed: see
    /// [`poll_close`](Self::poll_close)).
    pub(crate) fn refill_replay(&mut self, time: Time, retention: &Retention) -> bool {
        if let State::Replaying { next } = self.state {
            if self.out.bytes < REPLAY_LOW_WATER {
                self.refill(next, time, retention);
                return matches!(
                    self.state,
                    State::Closed(_) | State::Closing(CloseReason::ReplayFailed)
                );
            }
        }
        false
    }

    pub(super) fn refill(&mut self, mut next: u64, time: Time, retention: &Retention) {
        // At most half the queue limit: a replay that reaches the live edge
        // with its queue full would be marked slow (QueueFull) by the next
        // published batch though its client reads at full speed.
        let chunk = REPLAY_CHUNK.min(self.config.queue_limit / 2).max(1);
        let own = self.config.session_id;
        if next < retention.oldest() && retention.oldest_held(own) < retention.oldest() {
            if self.cold_by_driver {
                // The driver reads it (`take_cold_read`), outside its lock.
                self.state = State::Replaying { next };
                return;
            }
            // Older than the retention, held by the cold source: read
            // there, up to the retention's oldest frame as it is now (the
            // seam), then on from the retention below.
            // File ranges hold no memory: one range of up to 1 MiB per
            // refill (so that it can end at an index entry of the source,
            // found without reading frames), checked copies up to `chunk`.
            // (Within half the slow threshold too: what a replay has
            // queued when it reaches the live edge counts as its backlog.)
            let ranges = FILE_RANGE_CHUNK
                .min(self.config.queue_limit / 2)
                .min(self.config.slow_threshold / 2)
                .max(chunk);
            while self.out.bytes < chunk && next < retention.oldest() {
                let room = if self.file_ranges { ranges } else { chunk } - self.out.bytes;
                match self.read_cold_chunk(next, room, retention) {
                    Ok(Some((piece, chunk))) => {
                        if chunk.first > next {
                            // The source dropped these (its own retention)
                            // before the replay reached them: a gap.
                            self.stats.replay_trimmed += chunk.first - next;
                        }
                        next = chunk.end;
                        self.stats.frames_queued += chunk.frames;
                        let file = piece.is_file();
                        self.queue(piece, time.monotonic);
                        if file {
                            break; // the next when the socket has taken it
                        }
                    }
                    Ok(None) => next = next.max(retention.oldest()),
                    Err(at) => {
                        // What was read before it goes out, then the close.
                        self.events.push_back(ServerEvent::ReplayFailed { at });
                        self.cold.0 = None;
                        self.state = State::Closing(CloseReason::ReplayFailed);
                        return;
                    }
                }
            }
            if next < retention.oldest() {
                self.state = State::Replaying { next };
                return;
            }
            self.cold.0 = None; // at the seam: the retention has the rest
        }
        if next < retention.oldest() {
            // The retention dropped these before the replay reached them:
            // the client sees them as a gap.
            self.stats.replay_trimmed += retention.oldest() - next;
            next = retention.oldest();
        }
        while self.out.bytes < chunk {
            let room = chunk - self.out.bytes;
            let Some(segment) = retention.segment_from(next, room) else {
                // Nothing retained from `next` on: the live edge (past a
                // relay's trailing hole, if any).
                next = next.max(retention.next());
                break;
            };
            next = segment.end();
            self.stats.frames_queued += segment.frames();
            self.queue(Piece::Data(segment), time.monotonic);
        }
        self.state = if next >= retention.next() {
            State::Live { next }
        } else {
            State::Replaying { next }
        };
    }

    /// The next cold frames from `next`, before the retention's oldest, of
    /// at most `room` bytes (at least one frame); `None` at the seam;
    /// `Err(at)` when the source failed (the reader is dropped).
    pub(super) fn read_cold_chunk(
        &mut self,
        next: u64,
        room: usize,
        retention: &Retention,
    ) -> Result<Option<(Piece, super::super::cold::ColdChunk)>, u64> {
        let reader = match &mut self.cold.0 {
            Some(reader) => reader,
            slot @ None => {
                let cold = retention.cold().ok_or(next)?;
                slot.insert(cold.open(self.config.session_id, next).map_err(|_| next)?)
            }
        };
        match read_piece(&mut **reader, retention.oldest(), room, self.file_ranges) {
            Ok(read) => Ok(read),
            Err(()) => {
                self.cold.0 = None;
                Err(next)
            }
        }
    }
    /// A retransmission reply's cold part handed back by the driver: the
    /// reply queued (its newer part from the retention as it is now), or
    /// the connection closed if the source failed; `true` if it closed.
    pub(super) fn finish_reply(
        &mut self,
        read: ReplyRead,
        time: Time,
        retention: &Retention,
    ) -> bool {
        let Some(reply) = self.reply_pending.take() else {
            return false;
        };
        if self.state != State::Retransmitting {
            return false;
        }
        let Some(read) = read else {
            self.reply_pending = Some(reply); // not read: taken again
            return false;
        };
        let own = self.config.session_id;
        let mut segments = alloc::collections::VecDeque::new();
        let mut bytes = 0usize;
        let mut read = read;
        loop {
            match read {
                Ok((pieces, end)) => {
                    for (piece, frames) in pieces {
                        bytes = bytes.saturating_add(piece.len());
                        segments.push_back((piece, frames));
                    }
                    if end < reply.stop && end < retention.oldest() {
                        // The retention moved on during the read: the
                        // frames between are in the source (rare; here).
                        let limit = reply.stop.min(retention.oldest());
                        read = read_cold(retention, own, end, limit, self.file_ranges);
                        continue;
                    }
                    let next = end.max(retention.oldest()).min(reply.stop);
                    self.reply_from_retention(reply, segments, bytes, next, time, retention);
                    return self.poll_close().is_some();
                }
                Err(at) => {
                    self.events.push_back(ServerEvent::ReplayFailed { at });
                    self.close(CloseReason::ReplayFailed);
                    return true;
                }
            }
        }
    }
}
