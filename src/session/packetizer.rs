//! [`Packetizer`]: the sending side of a datagram feed (protocol section 8),
//! as a state machine that owns no socket and reads no clock.
//!
//! ```text
//!  publish(batch, time) ──▶ cut into datagrams: Packet + whole frames, ≤ max_datagram
//!  handle_timeout(time) ──▶ a Packet-only datagram after a heartbeat interval without one
//!  end_of_session(time) ──▶ Packet + EndOfSession (three copies), then nothing
//!  new_session(id, next, time): a relay's upstream changed (section 10.4)
//!                           │
//!                           ▼
//!        poll_datagram / datagrams ──▶ the driver sends each datagram once, in order,
//!                                      on every line
//! ```
//!
//! * Every datagram starts with one Packet frame whose `sequence` is its
//!   first data frame's (the next data sequence when it has none) and whose
//!   `timestamp` is the `Time` given with the input that made it.
//! * A frame never spans two datagrams; a datagram holds as many whole
//!   frames of a batch as fit [`max_datagram`](PacketizerConfig::max_datagram)
//!   bytes (at least one: the size is never below the longest frame), so a
//!   batch larger than a datagram spans several, and its last one may be
//!   short. Batches are cut one by one: a datagram never mixes two.
//! * Any input that makes datagrams (a published batch, even one of no
//!   bytes, an idle Packet, the end) restarts the heartbeat interval.
//! * After [`end_of_session`](Packetizer::end_of_session) nothing more is
//!   made, until a relay's [`new_session`](Packetizer::new_session).
//!
//! Take the datagrams an input made before the next one, with
//! [`poll_datagram`](Packetizer::poll_datagram) or
//! [`datagrams`](Packetizer::datagrams): the buffer is reused (no allocation
//! in steady state) once everything in it was taken, and grows if you do not.
//!
//! ```
//! use core::time::Duration;
//! use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
//! use tickwire::session::{Batch, Time};
//! use tickwire::{encode::QuoteFields, Payload, Sequencer};
//!
//! // A Packet (32 bytes) and two quotes (44 each) per datagram.
//! let config = PacketizerConfig { max_datagram: 128, ..PacketizerConfig::default() };
//! let mut p = Packetizer::new(7, config, Time::default());
//!
//! // Five quotes, 1..=5: three datagrams of 2, 2 and 1 frames.
//! let mut bytes = vec![0u8; 5 * 44];
//! Sequencer::new().encode_batch(&vec![(0, Payload::Quote(QuoteFields::default())); 5], &mut bytes);
//! let t = Time::new(Duration::from_millis(1), 1_700_000_000_000_000_000);
//! p.publish(&Batch::new(bytes)?, t);
//! let sizes: Vec<usize> = p.datagrams().map(<[u8]>::len).collect();
//! assert_eq!(sizes, [32 + 88, 32 + 88, 32 + 44]);
//! assert!(p.poll_datagram().is_none()); // each once
//!
//! // Quiet for a heartbeat interval (1 s): a Packet-only datagram.
//! assert_eq!(p.poll_timeout(), Some(Duration::from_millis(1001)));
//! p.handle_timeout(Time::new(Duration::from_millis(1001), 0));
//! let idle = p.poll_datagram().ok_or("no idle Packet")?;
//! assert_eq!((idle.len(), idle[2]), (32, 0x05)); // a Packet frame alone
//!
//! // The end: Packet + EndOfSession, in three identical copies; then nothing.
//! p.end_of_session(Time::new(Duration::from_millis(1500), 0));
//! assert_eq!(p.datagrams().filter(|d| d.len() == 32 + 24).count(), 3);
//! assert_eq!(p.poll_timeout(), None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::time::Duration;

use super::{Batch, Time};
use crate::encode::{encode, Payload};
use crate::wire::MsgType;

/// The default largest datagram: an Ethernet MTU (1,500) less the IPv4 (20)
/// and UDP (8) headers.
///
/// ```
/// assert_eq!(tickwire::session::packetizer::DEFAULT_DATAGRAM_SIZE, 1472);
/// ```
pub const DEFAULT_DATAGRAM_SIZE: usize = 1472;
/// The smallest datagram size a sender may be configured with (section 8.1).
///
/// ```
/// assert_eq!(tickwire::session::packetizer::MIN_DATAGRAM_SIZE, 128);
/// ```
pub const MIN_DATAGRAM_SIZE: usize = 128;
/// The largest datagram a receiver accepts (section 8.1).
///
/// ```
/// assert_eq!(tickwire::session::packetizer::MAX_DATAGRAM_SIZE, 65_507);
/// ```
pub const MAX_DATAGRAM_SIZE: usize = 65_507;

/// Copies of the last datagram (Packet + EndOfSession): one lost copy does
/// not leave receivers to find the end by silence (they act on it once and
/// count the other copies as duplicates).
const END_COPIES: usize = 3;

const PACKET_LEN: usize = MsgType::Packet.frame_len();
const END_LEN: usize = MsgType::EndOfSession.frame_len();

/// A [`Packetizer`]'s settings.
///
/// ```
/// use core::time::Duration;
/// let c = tickwire::session::packetizer::PacketizerConfig::default();
/// assert_eq!((c.max_datagram, c.heartbeat_interval), (1472, Duration::from_secs(1)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PacketizerConfig {
    /// The largest datagram, in bytes ([`DEFAULT_DATAGRAM_SIZE`]; clamped
    /// to [`MIN_DATAGRAM_SIZE`]`..=`[`MAX_DATAGRAM_SIZE`]).
    pub max_datagram: usize,
    /// A Packet-only datagram is made after this long without a datagram
    /// (1 s; section 8.4).
    pub heartbeat_interval: Duration,
}

impl Default for PacketizerConfig {
    fn default() -> Self {
        PacketizerConfig {
            max_datagram: DEFAULT_DATAGRAM_SIZE,
            heartbeat_interval: Duration::from_secs(1),
        }
    }
}

/// Cuts a session's published batches into datagrams (section 8). See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct Packetizer {
    session_id: u64,
    /// The largest datagram (clamped).
    max: usize,
    heartbeat: Duration,
    /// Datagrams made and not yet cleared, back to back (capacity kept).
    buf: Vec<u8>,
    /// The end of each datagram in `buf`.
    ends: Vec<usize>,
    /// How many of `ends` were taken by the driver.
    taken: usize,
    /// When a datagram was last made (monotonic).
    last_sent: Duration,
    /// The next data sequence: after the last data frame sent (or the point
    /// a relay advanced to), the sequence of an idle Packet.
    next: u64,
    /// The final EndOfSession was made: nothing more is.
    ended: bool,
}

impl Packetizer {
    /// A packetizer for `session_id` whose next data sequence is 1; the
    /// first idle Packet is due a heartbeat interval after `time`.
    ///
    /// ```
    /// use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let p = Packetizer::new(7, PacketizerConfig::default(), tickwire::session::Time::default());
    /// assert_eq!((p.session_id(), p.next_sequence()), (7, 1));
    /// ```
    #[must_use]
    pub fn new(session_id: u64, config: PacketizerConfig, time: Time) -> Packetizer {
        Packetizer {
            session_id,
            max: config
                .max_datagram
                .clamp(MIN_DATAGRAM_SIZE, MAX_DATAGRAM_SIZE),
            heartbeat: config.heartbeat_interval,
            buf: Vec::new(),
            ends: Vec::new(),
            taken: 0,
            last_sent: time.monotonic,
            next: 1,
            ended: false,
        }
    }

    /// The session id the Packets carry.
    ///
    /// ```
    /// # use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let p = Packetizer::new(7, PacketizerConfig::default(), tickwire::session::Time::default());
    /// assert_eq!(p.session_id(), 7);
    /// ```
    #[must_use]
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The next data sequence (what an idle Packet says).
    ///
    /// ```
    /// # use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let mut p = Packetizer::new(7, PacketizerConfig::default(), tickwire::session::Time::default());
    /// p.advance(10);
    /// assert_eq!(p.next_sequence(), 10);
    /// ```
    #[must_use]
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    /// The largest datagram it makes (the configured size, clamped).
    ///
    /// ```
    /// # use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let c = PacketizerConfig { max_datagram: 10, ..PacketizerConfig::default() };
    /// assert_eq!(Packetizer::new(7, c, Default::default()).max_datagram(), 128);
    /// ```
    #[must_use]
    pub fn max_datagram(&self) -> usize {
        self.max
    }

    /// Whether the session ended ([`end_of_session`](Self::end_of_session)):
    /// nothing more is made.
    ///
    /// ```
    /// # use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let mut p = Packetizer::new(7, PacketizerConfig::default(), Default::default());
    /// p.end_of_session(Default::default());
    /// assert!(p.is_ended());
    /// ```
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Datagrams made and not taken yet.
    ///
    /// ```
    /// # use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let mut p = Packetizer::new(7, PacketizerConfig::default(), Default::default());
    /// p.end_of_session(Default::default());
    /// assert_eq!(p.queued(), 3);
    /// ```
    #[must_use]
    pub fn queued(&self) -> usize {
        self.ends.len().saturating_sub(self.taken)
    }

    /// Before an input makes datagrams: the buffer is reused once every
    /// datagram in it was taken.
    fn begin(&mut self, time: Time) {
        if self.taken >= self.ends.len() {
            self.buf.clear();
            self.ends.clear();
            self.taken = 0;
        }
        self.last_sent = time.monotonic;
    }

    /// Starts a datagram in `buf` with its Packet frame.
    fn open(&mut self, sequence: u64, timestamp: u64) {
        let at = self.buf.len();
        self.buf.resize(at + PACKET_LEN, 0);
        let payload = Payload::Packet {
            session_id: self.session_id,
        };
        if let Some(out) = self.buf.get_mut(at..) {
            // A Packet always fits its own length.
            let _ = encode(&payload, sequence, timestamp, out);
        }
    }

    /// Ends the datagram opened last.
    fn close(&mut self) {
        self.ends.push(self.buf.len());
    }

    /// Cuts `batch` into datagrams: each a Packet whose `sequence` is its
    /// first data frame's, then as many whole frames as fit. Nothing once
    /// the session ended.
    ///
    /// ```
    /// use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// use tickwire::session::{Batch, Time};
    /// use tickwire::{encode::QuoteFields, Payload, Sequencer};
    ///
    /// let mut p = Packetizer::new(7, PacketizerConfig::default(), Time::default());
    /// let mut bytes = vec![0u8; 3 * 44];
    /// Sequencer::new().encode_batch(&vec![(0, Payload::Quote(QuoteFields::default())); 3], &mut bytes);
    /// let batch = Batch::new(bytes)?;
    /// p.publish(&batch, Time::default());
    /// let datagram = p.poll_datagram().ok_or("none")?;
    /// assert_eq!(&datagram[32..], batch.bytes()); // Packet, then the frames as published
    /// assert_eq!(p.next_sequence(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish(&mut self, batch: &Batch, time: Time) {
        if self.ended {
            return;
        }
        self.begin(time);
        self.next = batch.end();
        let bytes = batch.bytes();
        let room = self.max.saturating_sub(PACKET_LEN);
        let mut at = 0;
        let mut sequence = batch.first();
        while at < bytes.len() {
            // The run of whole frames from `at` that fits one datagram (at
            // least one frame: the size is never below the longest frame).
            let (mut end, mut frames) = (at, 0u64);
            while let Some(&len) = bytes.get(end + 3) {
                let len = usize::from(len).max(1);
                if end + len > bytes.len() || (frames > 0 && end + len - at > room) {
                    break;
                }
                end += len;
                frames += 1;
            }
            let Some(run) = bytes.get(at..end).filter(|r| !r.is_empty()) else {
                break; // a Batch holds whole frames: not reached
            };
            self.open(sequence, time.unix_nanos);
            self.buf.extend_from_slice(run);
            self.close();
            at = end;
            sequence += frames;
        }
    }

    /// When a Packet-only datagram is due (monotonic): a heartbeat interval
    /// after the last datagram. `None` once the session ended.
    ///
    /// ```
    /// use core::time::Duration;
    /// use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let p = Packetizer::new(7, PacketizerConfig::default(), Default::default());
    /// assert_eq!(p.poll_timeout(), Some(Duration::from_secs(1)));
    /// ```
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        (!self.ended).then(|| self.idle_due())
    }

    fn idle_due(&self) -> Duration {
        self.last_sent.saturating_add(self.heartbeat)
    }

    /// Makes a Packet-only datagram (`sequence`: the next data sequence) if
    /// nothing was made for a heartbeat interval.
    ///
    /// ```
    /// use core::time::Duration;
    /// use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// use tickwire::session::Time;
    /// let mut p = Packetizer::new(7, PacketizerConfig::default(), Time::default());
    /// p.handle_timeout(Time::new(Duration::from_millis(999), 0));
    /// assert_eq!(p.queued(), 0); // not yet
    /// p.handle_timeout(Time::new(Duration::from_secs(1), 0));
    /// assert_eq!(p.queued(), 1);
    /// ```
    pub fn handle_timeout(&mut self, time: Time) {
        if self.ended || time.monotonic < self.idle_due() {
            return;
        }
        self.begin(time);
        self.open(self.next, time.unix_nanos);
        self.close();
    }

    /// A relay whose upstream is down sends no Packet-only datagram
    /// (section 10.3): if one is due at `now`, the interval restarts without
    /// one.
    ///
    /// ```
    /// use core::time::Duration;
    /// use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let mut p = Packetizer::new(7, PacketizerConfig::default(), Default::default());
    /// p.skip_idle(Duration::from_secs(1));
    /// assert_eq!((p.queued(), p.poll_timeout()), (0, Some(Duration::from_secs(2))));
    /// ```
    pub fn skip_idle(&mut self, now: Duration) {
        if now >= self.idle_due() {
            self.last_sent = now;
        }
    }

    /// A relay's upstream will never send the frames before `next`: idle
    /// Packets say `next` from now on (never backwards).
    ///
    /// ```
    /// # use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let mut p = Packetizer::new(7, PacketizerConfig::default(), Default::default());
    /// p.advance(5);
    /// p.advance(3);
    /// assert_eq!(p.next_sequence(), 5);
    /// ```
    pub fn advance(&mut self, next: u64) {
        self.next = self.next.max(next);
    }

    /// A relay's new session (protocol section 10.4), whose next data
    /// sequence is `next`: EndOfSession for the old one (unless it already
    /// ended), then the next datagrams' Packets carry `session_id`.
    ///
    /// ```
    /// # use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let mut p = Packetizer::new(7, PacketizerConfig::default(), Default::default());
    /// p.new_session(8, 100, Default::default());
    /// assert_eq!(p.queued(), 3); // the old session's end
    /// assert_eq!((p.session_id(), p.next_sequence(), p.is_ended()), (8, 100, false));
    /// ```
    pub fn new_session(&mut self, session_id: u64, next: u64, time: Time) {
        self.end_of_session(time);
        self.ended = false;
        self.session_id = session_id;
        self.next = next;
    }

    /// The last datagram: a Packet and an EndOfSession, both carrying the
    /// next data sequence, made three times, byte-identical, so that one
    /// lost copy does not leave receivers to find the end by silence.
    /// Nothing is made after it.
    ///
    /// ```
    /// # use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let mut p = Packetizer::new(7, PacketizerConfig::default(), Default::default());
    /// p.end_of_session(Default::default());
    /// p.end_of_session(Default::default()); // once
    /// assert_eq!(p.queued(), 3);
    /// ```
    pub fn end_of_session(&mut self, time: Time) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.begin(time);
        let next = self.next;
        let start = self.buf.len();
        self.open(next, time.unix_nanos);
        let at = self.buf.len();
        self.buf.resize(at + END_LEN, 0);
        if let Some(out) = self.buf.get_mut(at..) {
            let _ = encode(&Payload::EndOfSession, next, time.unix_nanos, out);
        }
        let end = self.buf.len();
        self.close();
        for _ in 1..END_COPIES {
            self.buf.extend_from_within(start..end);
            self.close();
        }
    }

    /// The next datagram to send, once each, in order.
    ///
    /// ```
    /// # use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let mut p = Packetizer::new(7, PacketizerConfig::default(), Default::default());
    /// p.end_of_session(Default::default());
    /// let mut n = 0;
    /// while let Some(datagram) = p.poll_datagram() {
    ///     assert_eq!(datagram.len(), 32 + 24);
    ///     n += 1;
    /// }
    /// assert_eq!(n, 3);
    /// ```
    pub fn poll_datagram(&mut self) -> Option<&[u8]> {
        let end = *self.ends.get(self.taken)?;
        let start = self.start_of(self.taken);
        self.taken += 1;
        self.buf.get(start..end)
    }

    /// Every datagram not taken yet, in order, taken at once (e.g. for one
    /// `sendmmsg`): they are not given again, whether the iterator is run to
    /// its end or not.
    ///
    /// ```
    /// # use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
    /// let mut p = Packetizer::new(7, PacketizerConfig::default(), Default::default());
    /// p.end_of_session(Default::default());
    /// assert_eq!(p.datagrams().len(), 3);
    /// assert_eq!(p.datagrams().len(), 0);
    /// ```
    pub fn datagrams(&mut self) -> Datagrams<'_> {
        let from = self.taken;
        self.taken = self.ends.len();
        Datagrams {
            buf: &self.buf,
            ends: self.ends.get(from..).unwrap_or_default().iter(),
            start: self.start_of(from),
        }
    }

    /// Where datagram `index` starts in `buf`.
    fn start_of(&self, index: usize) -> usize {
        index
            .checked_sub(1)
            .and_then(|i| self.ends.get(i))
            .copied()
            .unwrap_or(0)
    }
}

/// The datagrams [`Packetizer::datagrams`] took, in order.
///
/// ```
/// # use tickwire::session::packetizer::{Packetizer, PacketizerConfig};
/// let mut p = Packetizer::new(7, PacketizerConfig::default(), Default::default());
/// p.end_of_session(Default::default());
/// let all: tickwire::session::packetizer::Datagrams<'_> = p.datagrams();
/// assert!(all.clone().all(|d| d.len() == 56));
/// ```
#[derive(Clone, Debug)]
pub struct Datagrams<'a> {
    buf: &'a [u8],
    ends: core::slice::Iter<'a, usize>,
    start: usize,
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let end = *self.ends.next()?;
        let datagram = self.buf.get(self.start..end);
        self.start = end;
        datagram
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.ends.size_hint()
    }
}

impl ExactSizeIterator for Datagrams<'_> {}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]
mod tests {
    use super::*;
    use crate::encode::{QuoteFields, TradeFields};
    use crate::wire::Message;
    use crate::{Payload, Sequencer};

    const SID: u64 = 0x0123_4567_89AB_CDEF;

    fn t(ms: u64) -> Time {
        Time::new(Duration::from_millis(ms), 1_000 + ms)
    }

    fn config(max: usize) -> PacketizerConfig {
        PacketizerConfig {
            max_datagram: max,
            ..PacketizerConfig::default()
        }
    }

    /// `n` data frames from `seq`'s next: quotes (44 bytes), every third a
    /// trade (40 bytes), so that runs of both lengths meet every boundary.
    fn batch(seq: &mut Sequencer, n: usize) -> Batch {
        let msgs: Vec<(u64, Payload)> = (0..n)
            .map(|i| {
                if i % 3 == 2 {
                    (i as u64, Payload::Trade(TradeFields::default()))
                } else {
                    (i as u64, Payload::Quote(QuoteFields::default()))
                }
            })
            .collect();
        let mut bytes = alloc::vec![0u8; n * 44];
        let done = seq.encode_batch(&msgs, &mut bytes);
        bytes.truncate(done.bytes);
        Batch::new(bytes).unwrap()
    }

    /// A datagram's frames: (type, sequence, timestamp, bytes).
    fn frames(datagram: &[u8]) -> Vec<(MsgType, u64, u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = datagram;
        while !rest.is_empty() {
            let (m, tail) = Message::decode(rest).unwrap();
            out.push((
                m.msg_type(),
                m.sequence(),
                m.timestamp(),
                m.as_bytes().to_vec(),
            ));
            rest = tail;
        }
        out
    }

    fn packet_session(datagram: &[u8]) -> u64 {
        match Message::decode(datagram).unwrap().0 {
            Message::Packet(p) => p.session_id(),
            other => panic!("not a Packet: {other:?}"),
        }
    }

    fn take(p: &mut Packetizer) -> Vec<Vec<u8>> {
        p.datagrams().map(<[u8]>::to_vec).collect()
    }

    /// Section 8.1 to 8.3 at every datagram size from the smallest to past
    /// four frames, for batches of 1 to 40 frames: every datagram starts
    /// with a Packet naming its first data frame, holds whole frames with
    /// consecutive sequences and is at most `max` bytes; it is as full as
    /// it can be (the next frame would not fit); the data bytes, in order,
    /// are the batch's, byte for byte.
    #[test]
    fn every_size_boundary_cuts_whole_frames() {
        for max in MIN_DATAGRAM_SIZE..=PACKET_LEN + 5 * 44 + 1 {
            let mut seq = Sequencer::new();
            let mut p = Packetizer::new(SID, config(max), t(0));
            for n in 1..=40 {
                let b = batch(&mut seq, n);
                p.publish(&b, t(n as u64));
                let datagrams = take(&mut p);
                let mut data = Vec::new();
                let mut next = b.first();
                for (i, d) in datagrams.iter().enumerate() {
                    assert!(d.len() <= max, "max {max}: {} bytes", d.len());
                    let fs = frames(d);
                    let (kind, sequence, timestamp, _) = &fs[0];
                    assert_eq!(*kind, MsgType::Packet);
                    assert_eq!(packet_session(d), SID);
                    assert_eq!((*sequence, *timestamp), (next, 1_000 + n as u64));
                    assert!(fs.len() > 1, "a batch's datagram holds data");
                    for (kind, sequence, _, bytes) in &fs[1..] {
                        assert!(kind.is_data());
                        assert_eq!(*sequence, next);
                        next += 1;
                        data.extend_from_slice(bytes);
                    }
                    if let Some(following) = datagrams.get(i + 1) {
                        let next_len = usize::from(following[PACKET_LEN + 3]);
                        assert!(d.len() + next_len > max, "max {max}: not full");
                    }
                }
                assert_eq!(data, b.bytes(), "max {max}, {n} frames");
                assert_eq!(next, b.end());
                assert_eq!(p.next_sequence(), b.end());
            }
        }
    }

    /// A batch of 100 quotes in 1,472-byte datagrams: 32 frames a datagram
    /// (32 + 32 × 44 = 1,440; a 33rd would make 1,484), the last one short.
    #[test]
    fn a_batch_larger_than_a_datagram_spans_several() {
        let mut seq = Sequencer::new();
        let msgs = alloc::vec![(0, Payload::Quote(QuoteFields::default())); 100];
        let mut bytes = alloc::vec![0u8; 100 * 44];
        seq.encode_batch(&msgs, &mut bytes);
        let b = Batch::new(bytes).unwrap();
        let mut p = Packetizer::new(SID, PacketizerConfig::default(), t(0));
        p.publish(&b, t(1));
        let sizes: Vec<usize> = p.datagrams().map(<[u8]>::len).collect();
        assert_eq!(sizes, [1440, 1440, 1440, 32 + 4 * 44]);
        let firsts: Vec<u64> = take(&mut p).iter().map(|d| frames(d)[0].1).collect();
        assert!(firsts.is_empty(), "taken once");
        p.publish(&batch(&mut seq, 1), t(2));
        assert_eq!(frames(p.poll_datagram().unwrap())[0].1, 101);
    }

    /// The largest size: a batch fits one datagram up to 65,507 bytes.
    #[test]
    fn the_largest_datagram_holds_1488_quotes() {
        let mut seq = Sequencer::new();
        let msgs = alloc::vec![(0, Payload::Quote(QuoteFields::default())); 1489];
        let mut bytes = alloc::vec![0u8; 1489 * 44];
        seq.encode_batch(&msgs, &mut bytes);
        let mut p = Packetizer::new(SID, config(usize::MAX), t(0));
        assert_eq!(p.max_datagram(), MAX_DATAGRAM_SIZE);
        p.publish(&Batch::new(bytes).unwrap(), t(1));
        let sizes: Vec<usize> = p.datagrams().map(<[u8]>::len).collect();
        // (65,507 − 32) / 44 = 1,488 frames.
        assert_eq!(sizes, [32 + 1488 * 44, 32 + 44]);
    }

    /// Section 8.4 exactly: the idle Packet is due one heartbeat interval
    /// after the last datagram, not a nanosecond before; it carries the next
    /// data sequence and the time it was made; each datagram restarts the
    /// interval.
    #[test]
    fn idle_packets_exactly_one_interval_after_the_last_datagram() {
        let ns = Duration::from_nanos(1);
        let second = Duration::from_secs(1);
        let mut seq = Sequencer::new();
        let mut p = Packetizer::new(SID, PacketizerConfig::default(), t(5));
        assert_eq!(p.poll_timeout(), Some(Duration::from_millis(1005)));
        p.handle_timeout(Time::new(Duration::from_millis(1005) - ns, 0));
        assert_eq!(p.queued(), 0);
        p.handle_timeout(t(1005));
        let idle = take(&mut p);
        assert_eq!(idle.len(), 1);
        assert_eq!(
            frames(&idle[0])
                .iter()
                .map(|f| (f.0, f.1, f.2))
                .collect::<Vec<_>>(),
            [(MsgType::Packet, 1, 2005)]
        );
        assert_eq!(p.poll_timeout(), Some(Duration::from_millis(1005) + second));
        // A batch restarts the interval; the next idle Packet names what follows it.
        p.publish(&batch(&mut seq, 3), t(1500));
        take(&mut p);
        assert_eq!(p.poll_timeout(), Some(Duration::from_millis(2500)));
        p.handle_timeout(t(2005)); // the old deadline: nothing
        assert_eq!(p.queued(), 0);
        p.handle_timeout(t(2600)); // late: one, not several
        let idle = take(&mut p);
        assert_eq!(idle.len(), 1);
        assert_eq!(frames(&idle[0])[0].1, 4);
        assert_eq!(p.poll_timeout(), Some(Duration::from_millis(3600)));
        // A relay's advance: idle Packets say the point it advanced to.
        p.advance(10);
        p.handle_timeout(t(3600));
        assert_eq!(frames(p.poll_datagram().unwrap())[0].1, 10);
    }

    /// A relay's upstream is down: due idle Packets are skipped, and the
    /// interval restarts from the skip.
    #[test]
    fn skipped_idle_packets_restart_the_interval() {
        let mut p = Packetizer::new(SID, PacketizerConfig::default(), t(0));
        p.skip_idle(Duration::from_millis(999));
        assert_eq!(p.poll_timeout(), Some(Duration::from_secs(1)), "not due");
        p.skip_idle(Duration::from_millis(1200));
        assert_eq!(p.poll_timeout(), Some(Duration::from_millis(2200)));
        p.handle_timeout(t(2199));
        assert_eq!(p.queued(), 0);
        p.handle_timeout(t(2200));
        assert_eq!(p.queued(), 1);
    }

    /// EndOfSession is the last thing made: three identical copies of a
    /// Packet and an EndOfSession, both with the next data sequence; after
    /// it no batch, idle Packet or second end.
    #[test]
    fn end_of_session_is_last() {
        let mut seq = Sequencer::new();
        let mut p = Packetizer::new(SID, PacketizerConfig::default(), t(0));
        p.publish(&batch(&mut seq, 4), t(1));
        take(&mut p);
        p.end_of_session(t(2));
        let end = take(&mut p);
        assert_eq!(end.len(), 3);
        assert!(end.iter().all(|d| d == &end[0]));
        let fs = frames(&end[0]);
        assert_eq!(
            fs.iter().map(|f| (f.0, f.1, f.2)).collect::<Vec<_>>(),
            [(MsgType::Packet, 5, 1002), (MsgType::EndOfSession, 5, 1002)]
        );
        assert!(p.is_ended());
        assert_eq!(p.poll_timeout(), None);
        p.publish(&batch(&mut seq, 2), t(3));
        p.handle_timeout(t(5000));
        p.end_of_session(t(5001));
        assert_eq!(p.queued(), 0);
        assert_eq!(p.next_sequence(), 5, "a batch after the end is not sent");
    }

    /// A relay's new session: the old session ends (its EndOfSession first,
    /// under the old id), then Packets carry the new id and sequence.
    #[test]
    fn a_new_session_ends_the_old_one_first() {
        let mut seq = Sequencer::new();
        let mut p = Packetizer::new(SID, PacketizerConfig::default(), t(0));
        p.publish(&batch(&mut seq, 2), t(1));
        p.new_session(SID + 1, 50, t(2));
        let mut seq = Sequencer::starting_at(50);
        p.publish(&batch(&mut seq, 1), t(3));
        let all = take(&mut p);
        let kinds: Vec<(u64, Vec<(MsgType, u64)>)> = all
            .iter()
            .map(|d| {
                let fs = frames(d).iter().map(|f| (f.0, f.1)).collect();
                (packet_session(d), fs)
            })
            .collect();
        let end = (
            SID,
            alloc::vec![(MsgType::Packet, 3), (MsgType::EndOfSession, 3)],
        );
        assert_eq!(
            kinds,
            [
                (
                    SID,
                    alloc::vec![
                        (MsgType::Packet, 1),
                        (MsgType::Quote, 1),
                        (MsgType::Quote, 2)
                    ]
                ),
                end.clone(),
                end.clone(),
                end,
                (
                    SID + 1,
                    alloc::vec![(MsgType::Packet, 50), (MsgType::Quote, 50)]
                ),
            ]
        );
        // After an end, a new session starts without a second end.
        p.end_of_session(t(4));
        take(&mut p);
        p.new_session(SID + 2, 1, t(5));
        assert_eq!(p.queued(), 0);
        assert_eq!(p.poll_timeout(), Some(Duration::from_millis(1004)));
    }

    /// Datagrams not taken between inputs stay, in order; taken ones are
    /// never given again; one at a time and all at once agree.
    #[test]
    fn datagrams_are_given_once_in_order() {
        let mut seq = Sequencer::new();
        let mut p = Packetizer::new(SID, config(128), t(0));
        p.publish(&batch(&mut seq, 3), t(1)); // 2 datagrams
        let first = p.poll_datagram().unwrap().to_vec();
        p.publish(&batch(&mut seq, 2), t(2)); // 1 more
        p.handle_timeout(t(1002)); // and an idle Packet
        assert_eq!(p.queued(), 3);
        let rest = take(&mut p);
        let firsts: Vec<u64> = core::iter::once(&first)
            .chain(&rest)
            .map(|d| frames(d)[0].1)
            .collect();
        assert_eq!(firsts, [1, 3, 4, 6]);
        assert_eq!(rest[2].len(), PACKET_LEN);
        assert!(p.poll_datagram().is_none());
        assert_eq!(p.datagrams().len(), 0);
        // Everything taken: the buffer starts over.
        p.publish(&batch(&mut seq, 1), t(3));
        assert_eq!(p.buf.len(), PACKET_LEN + 44);
    }
}
