//! [`DatagramReceiver`]: the receiving side of a datagram feed (protocol
//! sections 8 and 9), as a state machine that owns no socket and reads no
//! clock.
//!
//! ```text
//!  line A ─datagram─▶ ┐                      ┌─▶ poll_event: Frame (in order, once), Gap,
//!                     ├─▶ handle_datagram ─▶ │              NewSession, EndOfSession, Discarded
//!  line B ─datagram─▶ ┘   reorder window     └─▶ poll_action: Retransmit { first, count }
//!                          (a ring of slots)             │  (the driver's TCP client)
//!  handle_timeout ◀── poll_timeout                       ▼
//!                         handle_retransmission ◀── its reply, frame by frame
//! ```
//!
//! * Each datagram is parsed on its own (section 8.5): one that does not
//!   begin with a valid Packet is discarded whole; damage inside one never
//!   reaches the next; a control frame other than a final EndOfSession is
//!   discarded and reported.
//! * Two lines: the first copy of a data sequence wins, from either line;
//!   every later copy is a duplicate, counted per line.
//! * Frames are delivered in sequence order through a reorder window of
//!   [`window`](DatagramConfig::window) frames: a preallocated ring of
//!   44-byte slots, allocated once in [`DatagramReceiver::new`]; nothing is
//!   allocated per frame in steady state (the event and action queues reuse
//!   their capacity).
//! * A missing sequence (a hole below the highest sequence seen, or below a
//!   Packet's `sequence`) waits [`retransmit_wait`](DatagramConfig::retransmit_wait)
//!   (2 ms by default) so that the other line can fill it; then its run is
//!   requested with [`DatagramAction::Retransmit`]. It is reported as a gap
//!   only when a reply shows it gone (before the reply's LoginAccepted
//!   `sequence`, not sent in f..=e, or a reply from a server holding another
//!   session), when no reply came within
//!   [`retransmit_deadline`](DatagramConfig::retransmit_deadline) (1 s by
//!   default), or when the window is full (a sequence `window` or more past
//!   the oldest undelivered one arrived: the oldest holes are given up).
//!   Sequences a reply did not cover (beyond the server's cap, or not yet
//!   published) are requested again after the wait.
//! * A new `session_id` in a Packet restarts tracking (protocol section 3):
//!   frames held for the old session are dropped (counted in
//!   [`DatagramStats::dropped_on_new_session`]), and later datagrams of a
//!   session left behind are dropped and counted
//!   ([`DatagramStats::old_session`]; the last 8 sessions left are
//!   remembered).
//!
//! Discarded bytes are reported as each datagram is parsed (before the frames
//! it made deliverable); frames, gaps and EndOfSession come in sequence order.
//!
//! Events are owned and cheap: a delivered frame is a copy of its at most
//! 44 bytes ([`FrameCopy`]), so the driver may hold events while it feeds
//! more datagrams; [`FrameCopy::message`] is the zero-copy typed view of it.
//! Call [`poll_event`](DatagramReceiver::poll_event) and
//! [`poll_action`](DatagramReceiver::poll_action) until they return `None`
//! after every `handle_*` call (the queues grow if you do not).
//!
//! ```
//! use core::time::Duration;
//! use tickwire::session::datagram::{DatagramConfig, DatagramEvent, DatagramReceiver, Line};
//! use tickwire::session::Time;
//! use tickwire::{encode::QuoteFields, Payload};
//!
//! // A datagram: Packet (sequence 1), then data frames 1 and 2.
//! let mut dgram = [0u8; 32 + 2 * 44];
//! let mut at = tickwire::encode(&Payload::Packet { session_id: 9 }, 1, 0, &mut dgram)?;
//! for seq in 1..=2 {
//!     at += tickwire::encode(&Payload::Quote(QuoteFields::default()), seq, 0, &mut dgram[at..])?;
//! }
//! let mut rx = DatagramReceiver::new(DatagramConfig::default());
//! let t = Time::new(Duration::ZERO, 0);
//! rx.handle_datagram(Line::A, &dgram, t);
//! rx.handle_datagram(Line::B, &dgram, t); // the same datagram on line B
//! let mut delivered = Vec::new();
//! while let Some(event) = rx.poll_event() {
//!     if let DatagramEvent::Frame(frame) = event {
//!         delivered.push(frame.sequence());
//!     }
//! }
//! assert_eq!(delivered, [1, 2]);
//! assert_eq!(rx.stats().duplicates, [0, 2]); // line B's copies
//! assert_eq!(rx.poll_action(), None);
//! # Ok::<(), tickwire::EncodeError>(())
//! ```
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::time::Duration;

use super::Time;
use crate::parse::{Discard, DiscardReason, Event, SliceParser};
use crate::sequence::Gap;
use crate::wire::{view, Message, MsgType, MAX_DATA_FRAME_LEN};

/// The largest reorder window, in frames (a power of two).
const MAX_WINDOW: usize = 1 << 24;

/// How many sessions left behind are remembered (their late datagrams are
/// dropped, never taken for a new session).
const LEFT_SESSIONS: usize = 8;

/// One of the two redundant lines of a feed (protocol section 8.7).
///
/// ```
/// assert_eq!(tickwire::session::datagram::Line::B.index(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Line {
    /// Line A.
    A,
    /// Line B.
    B,
}

impl Line {
    /// 0 for A, 1 for B: the index into the per-line counters.
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Line::A => 0,
            Line::B => 1,
        }
    }
}

/// The receiver's settings.
///
/// ```
/// use core::time::Duration;
/// let c = tickwire::session::datagram::DatagramConfig::default();
/// assert_eq!((c.window, c.retransmit_wait), (4096, Duration::from_millis(2)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramConfig {
    /// The reorder window, in frames (4096; rounded up to a power of two,
    /// between 1 and 2^24): frames
    /// ahead of a hole are held until it is filled or given up, and a frame
    /// `window` or more past the oldest undelivered sequence gives up the
    /// oldest holes as gaps.
    pub window: usize,
    /// How long a hole waits for the other line before it is requested by
    /// retransmission (2 ms: several datagram inter-arrival times on a
    /// busy feed, far below a retransmission round trip).
    pub retransmit_wait: Duration,
    /// How long a request may go unanswered before its sequences are
    /// reported as a gap (1 s).
    pub retransmit_deadline: Duration,
    /// Where to start: `None` starts at the first valid Packet's sequence;
    /// `Some(n)` starts at `n`, recovering by retransmission what lies
    /// between `n` and the first Packet (sequences before `n` are dropped,
    /// not a gap).
    pub start: Option<u64>,
    /// With [`start`](Self::start) `Some(n)`: the receiver resumes this
    /// session where a previous run left off (a journaled relay restarted,
    /// issue 24). It is in that session from the start, expecting `n`: a
    /// Packet of the same session continues it (the range from `n` to the
    /// Packet is recovered by retransmission, or reported as a gap), with
    /// no [`DatagramEvent::NewSession`]; a Packet of another session is a
    /// new session (a `NewSession` event, tracking starts at its Packet's
    /// sequence) and the resumed one is never returned to. `None` by
    /// default; ignored without `start`.
    ///
    /// ```
    /// use tickwire::session::datagram::{DatagramConfig, DatagramReceiver};
    /// let config = DatagramConfig { start: Some(501), resume_session: Some(0xfeed), ..DatagramConfig::default() };
    /// let rx = DatagramReceiver::new(config);
    /// assert_eq!((rx.session(), rx.expected()), (Some(0xfeed), 501));
    /// ```
    pub resume_session: Option<u64>,
    /// How many lines the driver receives (1 or 2; 1 by default): the feed
    /// is dead ([`DatagramEvent::FeedDead`]) when this many are silent.
    pub lines: usize,
    /// A line that has brought nothing for this long is silent
    /// ([`DatagramEvent::LineSilent`]; 3 s: three heartbeat intervals of
    /// 1 s, section 8.7). Counted from the receiver's first `handle_*` call
    /// for a line that never brought anything. `None`: never reported.
    pub silence: Option<Duration>,
}

impl Default for DatagramConfig {
    fn default() -> Self {
        DatagramConfig {
            window: 4096,
            retransmit_wait: Duration::from_millis(2),
            retransmit_deadline: Duration::from_secs(1),
            start: None,
            resume_session: None,
            lines: 1,
            silence: Some(Duration::from_secs(3)),
        }
    }
}

/// A delivered data frame: a copy of its bytes (at most 44).
///
/// ```
/// # use tickwire::session::datagram::FrameCopy;
/// // See the module example for how frames are delivered.
/// fn price(frame: &FrameCopy) -> Option<i32> {
///     match frame.message()? {
///         tickwire::Message::Trade(t) => Some(t.price()),
///         _ => None,
///     }
/// }
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FrameCopy {
    bytes: [u8; MAX_DATA_FRAME_LEN],
    len: u8,
}

impl FrameCopy {
    fn of(message: &Message<'_>) -> FrameCopy {
        let mut bytes = [0u8; MAX_DATA_FRAME_LEN];
        let src = message.as_bytes();
        // Fixed-size copies for the two data frame lengths (no memcpy call).
        if let Some(whole) = src.first_chunk::<MAX_DATA_FRAME_LEN>() {
            bytes = *whole;
        } else if let (Some(dst), Some(head)) =
            (bytes.first_chunk_mut::<40>(), src.first_chunk::<40>())
        {
            *dst = *head;
        } else if let Some(dst) = bytes.get_mut(..src.len()) {
            dst.copy_from_slice(src);
        }
        FrameCopy {
            bytes,
            len: u8::try_from(src.len()).unwrap_or(0),
        }
    }

    /// The frame's bytes, exactly as received.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The typed view of the frame (it was checked when it arrived).
    #[must_use]
    pub fn message(&self) -> Option<Message<'_>> {
        let code = *self.bytes.get(2)?;
        view(code, self.as_bytes())
    }

    /// The frame's `sequence`.
    #[must_use]
    pub fn sequence(&self) -> u64 {
        // Bytes 4..12 of every frame (section 1), read without re-viewing.
        self.bytes
            .get(4..12)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)
    }
}

impl core::fmt::Debug for FrameCopy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.message() {
            Some(m) => m.fmt(f),
            None => f.write_str("FrameCopy(?)"),
        }
    }
}

/// What the receiver tells its user, in order.
///
/// ```
/// use tickwire::session::datagram::DatagramEvent;
/// fn describe(e: &DatagramEvent) -> String {
///     match e {
///         DatagramEvent::Frame(f) => format!("frame {}", f.sequence()),
///         DatagramEvent::Gap(g) => format!("lost {}..={}", g.first, g.last),
///         other => format!("{other:?}"),
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatagramEvent {
    /// The next data frame in sequence order (each sequence once).
    Frame(FrameCopy),
    /// Sequences that will never be delivered: gone from the retransmission
    /// server, unanswered past the deadline, or given up for a full window.
    Gap(Gap),
    /// A Packet named a new session: tracking restarted at `sequence`.
    NewSession {
        /// The new session.
        session_id: u64,
        /// Where tracking restarted.
        sequence: u64,
    },
    /// The session ended (an EndOfSession in a datagram); acted on once,
    /// after every lower sequence was delivered or reported as a gap.
    EndOfSession {
        /// Its `sequence`: the next data sequence.
        sequence: u64,
    },
    /// A line has brought nothing for [`silence`](DatagramConfig::silence)
    /// (section 8.7): reported once, until it brings something again.
    LineSilent {
        /// The silent line.
        line: Line,
    },
    /// A silent line brought a datagram again (reported before the
    /// datagram's own events).
    LineAlive {
        /// The line.
        line: Line,
    },
    /// Every line ([`lines`](DatagramConfig::lines)) is silent: the feed is
    /// dead (section 8.7), reported once after the last `LineSilent`. The
    /// first `LineAlive` after it means the feed is alive again.
    FeedDead,
    /// Bytes of one datagram that were discarded (section 8.5).
    Discarded {
        /// The line the datagram came on.
        line: Line,
        /// How many bytes, and why.
        discard: Discard,
    },
}

/// What the driver must do.
///
/// ```
/// use tickwire::session::datagram::DatagramAction;
/// let a = DatagramAction::Retransmit { session_id: 9, first: 5, count: 3 };
/// // The driver sends Retransmit(sequence 5, session_id 9, count 3) on its TCP connection.
/// assert!(matches!(a, DatagramAction::Retransmit { first: 5, .. }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatagramAction {
    /// Send a Retransmit frame: `sequence` = `first`, body `session_id`,
    /// `count`; feed the reply to
    /// [`handle_retransmission`](DatagramReceiver::handle_retransmission).
    Retransmit {
        /// The session being recovered.
        session_id: u64,
        /// The first missing sequence.
        first: u64,
        /// How many.
        count: u64,
    },
}

/// The receiver's counters.
///
/// ```
/// let s = tickwire::session::datagram::DatagramStats::default();
/// assert_eq!(s.datagrams, [0, 0]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramStats {
    /// Datagrams received, per line (`[A, B]`).
    pub datagrams: [u64; 2],
    /// Data frames that were copies of a sequence already held or passed,
    /// per line.
    pub duplicates: [u64; 2],
    /// Data frames that arrived after a higher sequence (from either line).
    pub reordered: u64,
    /// Data frames recovered by retransmission.
    pub recovered: u64,
    /// Sequences reported as gaps (unrecoverable).
    pub unrecoverable: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Data frames delivered.
    pub delivered: u64,
    /// Retransmit requests made.
    pub requests: u64,
    /// Datagrams discarded whole (no valid Packet first).
    pub discarded_datagrams: u64,
    /// Datagrams of a session left behind, dropped.
    pub old_session: u64,
    /// Held frames dropped when a new session started.
    pub dropped_on_new_session: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    /// Not yet known to exist (at or past the highest sequence seen).
    Unknown,
    /// Known missing since `since`; `requested` holds the request's deadline.
    Missing {
        since: Duration,
        requested: Option<Duration>,
    },
    /// Requested, but the request was lost with its connection: to be asked
    /// again at once, still given up at the first request's deadline.
    Reask { deadline: Duration },
    /// Given up: reported as a gap when delivery reaches it.
    Lost,
    /// Held, waiting for the holes before it.
    Held,
}

impl SlotState {
    /// Missing, requested or not.
    const fn is_missing(self) -> bool {
        matches!(self, SlotState::Missing { .. } | SlotState::Reask { .. })
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    state: SlotState,
    frame: FrameCopy,
}

/// A request sent and not yet fully answered.
#[derive(Clone, Copy, Debug)]
struct Request {
    first: u64,
    last: u64,
    /// The reply's LoginAccepted was seen: `Some(own session?)`.
    replying: Option<bool>,
}

/// The receiver of one datagram feed (one or two lines). See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct DatagramReceiver {
    config: DatagramConfig,
    slots: Vec<Slot>,
    session: Option<u64>,
    left: [Option<u64>; LEFT_SESSIONS],
    /// The next sequence to deliver.
    expected: u64,
    /// Every sequence below this is known to exist (seen, or below a
    /// Packet's `sequence`). `expected <= highest <= expected + window`.
    highest: u64,
    /// Slots in `Missing` state.
    missing: usize,
    end_of_session: Option<u64>,
    /// EndOfSession was reported (once per session).
    ended: bool,
    requests: VecDeque<Request>,
    events: VecDeque<DatagramEvent>,
    actions: VecDeque<DatagramAction>,
    stats: DatagramStats,
    /// When the receiver first handled anything (silence counts from here
    /// for a line that never brought anything).
    started: Option<Duration>,
    /// When each line last brought a datagram.
    heard: [Option<Duration>; 2],
    /// Each line was reported silent (and has not brought anything since).
    silent: [bool; 2],
    /// FeedDead was reported (and no line has come back since).
    dead: bool,
    /// Where the current datagram's next discard event goes.
    discard_at: usize,
}

impl DatagramReceiver {
    /// A receiver that has seen nothing; its window is allocated here.
    ///
    /// ```
    /// use tickwire::session::datagram::{DatagramConfig, DatagramReceiver};
    /// let rx = DatagramReceiver::new(DatagramConfig::default());
    /// assert_eq!(rx.session(), None);
    /// ```
    #[must_use]
    pub fn new(config: DatagramConfig) -> DatagramReceiver {
        let window = config
            .window
            .clamp(1, MAX_WINDOW)
            .checked_next_power_of_two()
            .unwrap_or(MAX_WINDOW);
        let empty = Slot {
            state: SlotState::Unknown,
            frame: FrameCopy {
                bytes: [0; MAX_DATA_FRAME_LEN],
                len: 0,
            },
        };
        // A resumed session: in it from the start, expecting `start`.
        let (session, expected) = match (config.resume_session, config.start) {
            (Some(session), Some(start)) => (Some(session), start),
            _ => (None, 0),
        };
        DatagramReceiver {
            config: DatagramConfig { window, ..config },
            slots: alloc::vec![empty; window],
            session,
            left: [None; LEFT_SESSIONS],
            expected,
            highest: expected,
            missing: 0,
            end_of_session: None,
            ended: false,
            requests: VecDeque::with_capacity(16),
            events: VecDeque::with_capacity(window.min(1024)),
            actions: VecDeque::with_capacity(16),
            stats: DatagramStats::default(),
            started: None,
            heard: [None; 2],
            silent: [false; 2],
            dead: false,
            discard_at: 0,
        }
    }

    /// The current session, once a valid Packet was received (or the
    /// [resumed](DatagramConfig::resume_session) one from the start).
    #[must_use]
    pub fn session(&self) -> Option<u64> {
        self.session
    }

    /// The next data sequence to deliver (meaningless before a session).
    #[must_use]
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Retransmission requests handed out by
    /// [`poll_action`](Self::poll_action) whose replies have not ended yet.
    ///
    /// ```
    /// use tickwire::session::datagram::{DatagramConfig, DatagramReceiver};
    /// let receiver = DatagramReceiver::new(DatagramConfig::default());
    /// assert_eq!(receiver.requests_outstanding(), 0);
    /// ```
    #[must_use]
    pub fn requests_outstanding(&self) -> usize {
        self.requests.len()
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &DatagramStats {
        &self.stats
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<DatagramEvent> {
        self.events.pop_front()
    }

    /// The next thing the driver must do.
    pub fn poll_action(&mut self) -> Option<DatagramAction> {
        self.actions.pop_front()
    }

    fn window(&self) -> u64 {
        self.slots.len() as u64
    }

    /// The ring index of `sequence` (the window is a power of two: a mask,
    /// not a division).
    fn index(&self, sequence: u64) -> usize {
        usize::try_from(sequence & (self.slots.len() as u64).wrapping_sub(1)).unwrap_or(0)
    }

    fn slot(&mut self, sequence: u64) -> Option<&mut Slot> {
        let index = self.index(sequence);
        self.slots.get_mut(index)
    }

    fn state(&self, sequence: u64) -> SlotState {
        self.slots
            .get(self.index(sequence))
            .map_or(SlotState::Unknown, |s| s.state)
    }

    fn set_state(&mut self, sequence: u64, state: SlotState) {
        let was = self.state(sequence);
        let was_missing = was.is_missing();
        let is_missing = state.is_missing();
        if let Some(slot) = self.slot(sequence) {
            slot.state = state;
        }
        if was_missing && !is_missing {
            self.missing = self.missing.saturating_sub(1);
        } else if is_missing && !was_missing {
            self.missing += 1;
        }
    }

    /// One datagram as it arrived on `line`. Its events and actions are
    /// ready to poll afterwards.
    pub fn handle_datagram(&mut self, line: Line, datagram: &[u8], time: Time) {
        let now = time.monotonic;
        if let Some(n) = self.stats.datagrams.get_mut(line.index()) {
            *n += 1;
        }
        self.heard_from(line, now);
        // This datagram's discards go before the frames it delivers.
        self.discard_at = self.events.len();
        let packet = match Message::decode(datagram) {
            Ok((Message::Packet(p), _)) => p,
            other => {
                let reason = match other {
                    Err(e) => DiscardReason::of(e),
                    Ok(_) => DiscardReason::NoPacket,
                };
                self.stats.discarded_datagrams += 1;
                self.discarded(line, datagram.len(), reason);
                return;
            }
        };
        let (session_id, sequence) = (packet.session_id(), packet.sequence());
        if self.session != Some(session_id) {
            if self.left.contains(&Some(session_id)) {
                self.stats.old_session += 1;
                return;
            }
            self.start_session(session_id, sequence, now);
        }
        // The Packet's sequence is the next data sequence: below it, every
        // sequence exists.
        self.reveal(sequence, now);
        let rest = datagram.get(packet_len()..).unwrap_or_default();
        let mut frames = SliceParser::new(rest).peekable();
        while let Some(event) = frames.next() {
            match event {
                Event::Frame(m) | Event::Duplicate(m) if m.is_data() => {
                    self.data(Some(line), &m, now);
                }
                Event::Frame(Message::EndOfSession(e))
                | Event::Duplicate(Message::EndOfSession(e))
                    if frames.peek().is_none() =>
                {
                    self.reveal(e.sequence(), now);
                    if self.end_of_session.is_none() {
                        self.end_of_session = Some(e.sequence());
                    }
                }
                Event::Frame(m) | Event::Duplicate(m) => {
                    self.discarded(line, m.len(), DiscardReason::ControlInDatagram);
                }
                Event::Discarded(discard) => {
                    self.push_discard(DatagramEvent::Discarded { line, discard });
                }
                _ => {}
            }
        }
        self.settle();
    }

    fn discarded(&mut self, line: Line, bytes: usize, reason: DiscardReason) {
        let discard = Discard {
            bytes: bytes as u64,
            reason,
        };
        self.push_discard(DatagramEvent::Discarded { line, discard });
    }

    /// A discard of the datagram being handled: after its earlier discards,
    /// before the frames it delivered (rare: the insert may move events).
    fn push_discard(&mut self, event: DatagramEvent) {
        let at = self.discard_at.min(self.events.len());
        self.events.insert(at, event);
        self.discard_at = at + 1;
    }

    fn start_session(&mut self, session_id: u64, sequence: u64, now: Duration) {
        if let Some(old) = self.session {
            self.left.rotate_right(1);
            if let Some(first) = self.left.first_mut() {
                *first = Some(old);
            }
            self.events.push_back(DatagramEvent::NewSession {
                session_id,
                sequence,
            });
        }
        let start = match (self.session, self.config.start) {
            (None, Some(start)) => start,
            _ => sequence,
        };
        for slot in &mut self.slots {
            if slot.state == SlotState::Held {
                self.stats.dropped_on_new_session += 1;
            }
            slot.state = SlotState::Unknown;
        }
        self.session = Some(session_id);
        self.missing = 0;
        self.expected = start;
        self.highest = start;
        self.end_of_session = None;
        self.ended = false;
        self.requests.clear();
        self.actions.clear();
        self.reveal(sequence, now);
    }

    /// Every sequence below `upto` exists: the unseen ones become missing
    /// (the window gives up the oldest if it must).
    fn reveal(&mut self, upto: u64, now: Duration) {
        if upto <= self.highest {
            return;
        }
        let window = self.window();
        if upto > self.expected.saturating_add(window) {
            self.give_up_below(upto.saturating_sub(window));
        }
        let from = self.highest.max(self.expected);
        for sequence in from..upto {
            if self.state(sequence) == SlotState::Unknown {
                self.set_state(
                    sequence,
                    SlotState::Missing {
                        since: now,
                        requested: None,
                    },
                );
            }
        }
        self.highest = upto;
    }

    /// The window is full: everything below `limit` is delivered or given up
    /// as a gap, now.
    fn give_up_below(&mut self, limit: u64) {
        for sequence in self.expected..limit.min(self.highest) {
            if self.state(sequence) != SlotState::Held {
                self.set_state(sequence, SlotState::Lost);
            }
        }
        self.settle_held_and_lost();
        if self.expected < limit {
            // Past everything known: one run, at once.
            self.gap(self.expected, limit - 1);
            self.expected = limit;
        }
        self.highest = self.highest.max(self.expected);
    }

    /// A checked data frame from a line (`Some`) or a retransmission reply.
    fn data(&mut self, line: Option<Line>, message: &Message<'_>, now: Duration) {
        let sequence = message.sequence();
        if sequence == self.expected && self.highest <= sequence {
            // In order with nothing held or missing ahead: delivered at
            // once, past the window (the common case on a healthy line).
            self.stats.delivered += 1;
            self.events
                .push_back(DatagramEvent::Frame(FrameCopy::of(message)));
            self.expected = sequence.saturating_add(1);
            self.highest = self.expected;
            return;
        }
        let duplicate = |rx: &mut DatagramReceiver| {
            if let Some(n) = line.and_then(|l| rx.stats.duplicates.get_mut(l.index())) {
                *n += 1;
            }
        };
        if sequence < self.expected {
            duplicate(self);
            return;
        }
        self.reveal(sequence.saturating_add(1), now);
        if sequence < self.expected {
            duplicate(self); // given up just now for the window
            return;
        }
        match self.state(sequence) {
            SlotState::Held => duplicate(self),
            state => {
                if state.is_missing() || state == SlotState::Lost {
                    if line.is_some() {
                        if sequence.saturating_add(1) < self.highest {
                            self.stats.reordered += 1;
                        }
                    } else {
                        self.stats.recovered += 1;
                    }
                }
                let frame = FrameCopy::of(message);
                if let Some(slot) = self.slot(sequence) {
                    slot.frame = frame;
                }
                self.set_state(sequence, SlotState::Held);
            }
        }
    }

    fn deliver(&mut self, sequence: u64) {
        let frame = self
            .slot(sequence)
            .map(|s| {
                s.state = SlotState::Unknown;
                s.frame
            })
            .filter(|f| f.len > 0);
        if let Some(frame) = frame {
            self.stats.delivered += 1;
            self.events.push_back(DatagramEvent::Frame(frame));
        }
        self.expected = sequence.saturating_add(1);
    }

    fn gap(&mut self, first: u64, last: u64) {
        let gap = Gap { first, last };
        self.stats.unrecoverable = self.stats.unrecoverable.saturating_add(gap.len());
        // A run continuing the last reported one extends it.
        if let Some(DatagramEvent::Gap(previous)) = self.events.back_mut() {
            if previous.last.checked_add(1) == Some(first) {
                previous.last = last;
                return;
            }
        }
        self.stats.gaps += 1;
        self.events.push_back(DatagramEvent::Gap(gap));
    }

    /// Delivers held frames and reports lost runs from `expected` on, as
    /// far as they go; then EndOfSession, once, if delivery reached it.
    fn settle(&mut self) {
        self.settle_held_and_lost();
        if let Some(sequence) = self.end_of_session {
            if self.expected >= sequence && !self.ended {
                self.ended = true;
                self.events
                    .push_back(DatagramEvent::EndOfSession { sequence });
            }
        }
    }

    fn settle_held_and_lost(&mut self) {
        while self.expected < self.highest {
            match self.state(self.expected) {
                SlotState::Held => self.deliver(self.expected),
                SlotState::Lost => {
                    let first = self.expected;
                    let mut last = first;
                    while last.saturating_add(1) < self.highest
                        && self.state(last.saturating_add(1)) == SlotState::Lost
                    {
                        last += 1;
                    }
                    for sequence in first..=last {
                        self.set_state(sequence, SlotState::Unknown);
                    }
                    self.gap(first, last);
                    self.expected = last.saturating_add(1);
                }
                _ => break,
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next:
    /// the earliest hole's retransmission wait or request deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        let silence = self.next_silence();
        if self.missing == 0 {
            return silence;
        }
        let holes = (self.expected..self.highest)
            .filter_map(|sequence| match self.state(sequence) {
                SlotState::Missing {
                    since,
                    requested: None,
                } => Some(since.saturating_add(self.config.retransmit_wait)),
                SlotState::Missing {
                    requested: Some(deadline),
                    ..
                } => Some(deadline),
                SlotState::Reask { .. } => Some(Duration::ZERO),
                _ => None,
            })
            .min();
        match (holes, silence) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the next line not yet silent becomes silent.
    fn next_silence(&self) -> Option<Duration> {
        let started = self.started?;
        let silence = self.config.silence?;
        (0..self.config.lines.clamp(1, 2))
            .filter(|&i| !self.silent.get(i).copied().unwrap_or(true))
            .map(|i| {
                let heard = self.heard.get(i).copied().flatten().unwrap_or(started);
                heard.saturating_add(silence)
            })
            .min()
    }

    /// A datagram came on `line` at `now`.
    fn heard_from(&mut self, line: Line, now: Duration) {
        self.started.get_or_insert(now);
        if let Some(heard) = self.heard.get_mut(line.index()) {
            *heard = Some(now);
        }
        if let Some(silent) = self.silent.get_mut(line.index()) {
            if *silent {
                *silent = false;
                self.dead = false;
                self.events.push_back(DatagramEvent::LineAlive { line });
            }
        }
    }

    /// Lines silent since `now`; the feed dead when all are.
    fn check_silence(&mut self, now: Duration) {
        let started = *self.started.get_or_insert(now);
        let Some(silence) = self.config.silence else {
            return;
        };
        let lines = self.config.lines.clamp(1, 2);
        for (i, line) in [Line::A, Line::B].into_iter().enumerate().take(lines) {
            let heard = self.heard.get(i).copied().flatten().unwrap_or(started);
            let Some(silent) = self.silent.get_mut(i) else {
                continue;
            };
            if !*silent && now >= heard.saturating_add(silence) {
                *silent = true;
                self.events.push_back(DatagramEvent::LineSilent { line });
            }
        }
        if !self.dead && self.silent.iter().take(lines).all(|&s| s) {
            self.dead = true;
            self.events.push_back(DatagramEvent::FeedDead);
        }
    }

    /// Call at (or after) the time [`poll_timeout`](Self::poll_timeout)
    /// named: holes whose wait is over are requested (one
    /// [`DatagramAction::Retransmit`] per run), requests past their deadline
    /// become gaps.
    pub fn handle_timeout(&mut self, time: Time) {
        let now = time.monotonic;
        self.check_silence(now);
        let Some(session_id) = self.session else {
            return;
        };
        if self.missing == 0 {
            self.settle();
            return;
        }
        let mut run: Option<(u64, u64)> = None;
        let new_deadline = now.saturating_add(self.config.retransmit_deadline);
        for sequence in self.expected..self.highest {
            let due = match self.state(sequence) {
                SlotState::Missing {
                    since,
                    requested: None,
                } if since.saturating_add(self.config.retransmit_wait) <= now => Some(new_deadline),
                SlotState::Missing {
                    requested: Some(at),
                    ..
                }
                | SlotState::Reask { deadline: at }
                    if at <= now =>
                {
                    self.set_state(sequence, SlotState::Lost);
                    None
                }
                SlotState::Reask { deadline } => Some(deadline),
                _ => None,
            };
            if let Some(deadline) = due {
                self.set_state(
                    sequence,
                    SlotState::Missing {
                        since: now,
                        requested: Some(deadline),
                    },
                );
                run = match run {
                    Some((first, last)) if last.saturating_add(1) == sequence => {
                        Some((first, sequence))
                    }
                    other => {
                        if let Some((first, last)) = other {
                            self.request(session_id, first, last);
                        }
                        Some((sequence, sequence))
                    }
                };
            }
        }
        if let Some((first, last)) = run {
            self.request(session_id, first, last);
        }
        self.settle();
    }

    /// The retransmission connection was lost (or replaced), with the
    /// requests it had not answered: they are asked again at the next
    /// [`handle_timeout`](Self::handle_timeout) (for the driver's next
    /// connection), and still become gaps at their first request's deadline
    /// unless a reply or a line fills them first. Call before feeding a new
    /// connection's replies; drop the requests the driver had not yet sent.
    ///
    /// ```
    /// use tickwire::session::datagram::{DatagramConfig, DatagramReceiver};
    /// let mut rx = DatagramReceiver::new(DatagramConfig::default());
    /// rx.retransmission_reset();
    /// ```
    pub fn retransmission_reset(&mut self) {
        self.requests.clear();
        self.actions
            .retain(|a| !matches!(a, DatagramAction::Retransmit { .. }));
        if self.missing == 0 {
            return;
        }
        for sequence in self.expected..self.highest {
            if let SlotState::Missing {
                requested: Some(deadline),
                ..
            } = self.state(sequence)
            {
                self.set_state(sequence, SlotState::Reask { deadline });
            }
        }
    }

    /// There is no retransmission server: unanswered requests are
    /// forgotten, not asked again, and their sequences become gaps at their
    /// deadlines unless a line fills them first.
    ///
    /// ```
    /// use tickwire::session::datagram::{DatagramConfig, DatagramReceiver};
    /// let mut rx = DatagramReceiver::new(DatagramConfig::default());
    /// rx.retransmission_unavailable();
    /// ```
    pub fn retransmission_unavailable(&mut self) {
        self.requests.clear();
        self.actions
            .retain(|a| !matches!(a, DatagramAction::Retransmit { .. }));
    }

    fn request(&mut self, session_id: u64, first: u64, last: u64) {
        self.stats.requests += 1;
        self.requests.push_back(Request {
            first,
            last,
            replying: None,
        });
        self.actions.push_back(DatagramAction::Retransmit {
            session_id,
            first,
            count: last - first + 1,
        });
    }

    /// Every frame the retransmission connection delivered, in order
    /// (LoginAccepted, data frames, the ending Heartbeat; idle Heartbeats
    /// between replies are recognized and ignored). Data frames fill their
    /// holes; what the reply shows gone becomes a gap; what it did not
    /// cover is requested again after the wait.
    pub fn handle_retransmission(&mut self, message: &Message<'_>, time: Time) {
        let now = time.monotonic;
        let Some(session) = self.session else {
            return;
        };
        let Some(request) = self.requests.front().copied() else {
            return;
        };
        match (message, request.replying) {
            (Message::LoginAccepted(la), None) => {
                let own = la.session_id() == session;
                if let Some(r) = self.requests.front_mut() {
                    r.replying = Some(own);
                }
                // Before f: gone from this server (all of it, for another
                // session: this server cannot fill it).
                let gone_to = if own {
                    la.sequence()
                } else {
                    request.last.saturating_add(1)
                };
                self.lose(request.first, gone_to.min(request.last.saturating_add(1)));
            }
            (Message::Heartbeat(h), Some(own)) => {
                self.requests.pop_front();
                if own {
                    let end = h.sequence().min(request.last.saturating_add(1));
                    // Not sent in f..=e: not held there.
                    self.lose(request.first, end);
                    // Not covered: ask again after the wait.
                    for sequence in end.max(self.expected)..=request.last {
                        if matches!(
                            self.state(sequence),
                            SlotState::Missing {
                                requested: Some(_),
                                ..
                            }
                        ) {
                            self.set_state(
                                sequence,
                                SlotState::Missing {
                                    since: now,
                                    requested: None,
                                },
                            );
                        }
                    }
                }
            }
            (m, Some(true)) if m.is_data() => self.data(None, m, now),
            _ => {}
        }
        self.settle();
    }

    /// Missing sequences in `from..to` become lost.
    fn lose(&mut self, from: u64, to: u64) {
        for sequence in from.max(self.expected)..to.min(self.highest) {
            if self.state(sequence).is_missing() {
                self.set_state(sequence, SlotState::Lost);
            }
        }
    }
}

/// A Packet frame's length.
const fn packet_len() -> usize {
    MsgType::Packet.frame_len()
}
