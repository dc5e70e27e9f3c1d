//! The parsing state machine behind [`Parser`](super::Parser) and
//! [`SliceParser`](super::SliceParser): what the unconsumed bytes hold, and
//! the loops that find it, compiled once per CRC-32C implementation.
#![forbid(unsafe_code)]

use core::ops::ControlFlow;

use crate::checksum::{Accel, Crc32c, Kernel};
use crate::sequence::{Gap, SequenceTracker, Verdict};
use zerocopy::transmute_ref;

use crate::wire::{check_frame, sealed, view, DecodeError, Message, MsgType, MAGIC};

use super::{Discard, DiscardReason, Event, ParseStats, DISCARD_REPORT_MAX};

/// The steady types' dispatch shared by the push and pull loops: when the
/// frame at the front of `$rest` is a Quote, Trade or Heartbeat whose
/// checksum matches, binds it to `$message` and runs `$on_frame`; otherwise
/// runs `$otherwise`.
///
/// One branch tree on the head word decides the type, and `$on_frame` is
/// expanded once per type: its bookkeeping (`sequence`, `is_data`, `len`,
/// the counter) and the caller's code see a known variant and fold to
/// constants, so a frame costs one data-dependent branch, the one a caller
/// matching on the message type needs anyway, instead of a compare tree and
/// a jump table.
macro_rules! steady_frame {
    ($rest:expr, $crc:expr, |$message:ident| $on_frame:expr, else $otherwise:expr) => {{
        let rest: &[u8] = $rest;
        let word = rest
            .first_chunk::<4>()
            .map_or(0, |head| u32::from_le_bytes(*head));
        if word == MsgType::Quote.head_word() {
            steady_frame!(@arm rest, $crc, 44, Quote, |$message| $on_frame, else $otherwise)
        } else if word == MsgType::Trade.head_word() {
            steady_frame!(@arm rest, $crc, 40, Trade, |$message| $on_frame, else $otherwise)
        } else if word == MsgType::Heartbeat.head_word() {
            steady_frame!(@arm rest, $crc, 24, Heartbeat, |$message| $on_frame, else $otherwise)
        } else {
            $otherwise
        }
    }};
    (@arm $rest:ident, $crc:expr, $len:literal, $variant:ident,
        |$message:ident| $on_frame:expr, else $otherwise:expr) => {
        match sealed::<$len, _>($rest, $crc) {
            Ok(frame) => {
                let $message = Message::$variant(transmute_ref!(frame));
                $on_frame
            }
            Err(_) => $otherwise,
        }
    };
}

/// Frames counted by type.
#[derive(Clone, Copy, Debug, Default)]
struct FrameCounts {
    /// Indexed by [`Message::index`], so that counting takes no branch.
    by_type: [u64; 10],
    bytes: u64,
}

impl FrameCounts {
    #[inline(always)]
    fn count(&mut self, message: &Message<'_>) {
        if let Some(count) = self.by_type.get_mut(message.index()) {
            *count += 1;
        }
        self.bytes += message.len() as u64;
    }
}

impl Engine {
    pub(super) fn stats(&self) -> ParseStats {
        let [heartbeats, logins, login_accepted, end_of_session, packets, retransmits, auths, rejected, quotes, trades] =
            self.counts.by_type;
        ParseStats {
            heartbeats,
            logins,
            login_accepted,
            end_of_session,
            packets,
            retransmits,
            auths,
            rejected,
            quotes,
            trades,
            frame_bytes: self.counts.bytes,
            discarded_bytes: self.discarded_bytes,
            discard_runs: self.discard_runs,
        }
    }
}

/// An event found by [`Parser::next_event_with`](super::Parser::next_event_with),
/// without its borrow.
pub(super) enum Found {
    Frame {
        at: usize,
        code: u8,
        len: usize,
        duplicate: bool,
    },
    Other(Event<'static>),
}

impl Found {
    /// `end` is the buffer position just after the bytes the event consumed.
    pub(super) fn of(event: &Event<'_>, end: usize) -> Found {
        match *event {
            Event::Frame(m) | Event::Duplicate(m) => Found::Frame {
                at: end.saturating_sub(m.len()),
                code: m.msg_type().code(),
                len: m.len(),
                duplicate: matches!(event, Event::Duplicate(_)),
            },
            Event::Gap(gap) => Found::Other(Event::Gap(gap)),
            Event::NewSession {
                session_id,
                sequence,
            } => Found::Other(Event::NewSession {
                session_id,
                sequence,
            }),
            Event::Discarded(discard) => Found::Other(Event::Discarded(discard)),
        }
    }

    pub(super) fn event(self, buf: &[u8]) -> Event<'_> {
        match self {
            Found::Frame {
                at,
                code,
                len,
                duplicate,
            } => {
                match buf.get(at..).and_then(|frame| view(code, frame)) {
                    Some(m) if duplicate => Event::Duplicate(m),
                    Some(m) => Event::Frame(m),
                    // The frame is where it was found; this cannot happen.
                    None => Event::Discarded(Discard {
                        bytes: len as u64,
                        reason: DiscardReason::BadLength,
                    }),
                }
            }
            Found::Other(event) => event,
        }
    }
}

/// An event waiting behind the frame it precedes.
#[derive(Clone, Copy, Debug)]
enum Pre {
    Discard(Discard),
    Gap(Gap),
    NewSession { session_id: u64, sequence: u64 },
}

impl Pre {
    fn event<'a>(self) -> Event<'a> {
        match self {
            Pre::Discard(d) => Event::Discarded(d),
            Pre::Gap(g) => Event::Gap(g),
            Pre::NewSession {
                session_id,
                sequence,
            } => Event::NewSession {
                session_id,
                sequence,
            },
        }
    }
}

/// The parsing state machine shared by [`Parser`](super::Parser) and
/// [`SliceParser`](super::SliceParser): it looks at the unconsumed bytes and
/// says what it found and how many bytes that consumed.
#[derive(Clone, Debug)]
pub(super) struct Engine {
    pub(super) tracker: SequenceTracker,
    counts: FrameCounts,
    discarded_bytes: u64,
    discard_runs: u64,
    run: u64,
    run_reason: DiscardReason,
    /// Events to deliver before the held frame, front first.
    pre: [Option<Pre>; 2],
    /// A checked frame at the front of the data, delivered after `pre`.
    held: Option<(MsgType, bool)>,
    pub(super) eof: bool,
    accel: Accel,
}

/// One call of [`Engine::next_with`], as a [`Kernel`] so that it is compiled
/// for the CRC implementation detected when the parser was made.
struct Step<'e, 'a> {
    engine: &'e mut Engine,
    data: &'a [u8],
}

impl<'a> Kernel for Step<'_, 'a> {
    type Output = (Option<Event<'a>>, usize);

    #[inline(always)]
    fn run<C: Crc32c>(self, crc: C) -> Self::Output {
        self.engine.next_with(self.data, crc)
    }
}

/// The pull paths' common case on its own: the frame at the front of the
/// data if it is a Quote, Trade or Heartbeat whose checksum matches (see
/// `steady_frame!`). It takes the data and returns the message in two
/// registers each way and touches nothing else, so that it compiles to a
/// small function that saves no registers; the caller, inlined into the
/// caller's loop, does the sequence check and the bookkeeping.
struct CheckStep<'a> {
    data: &'a [u8],
}

impl<'a> Kernel for CheckStep<'a> {
    type Output = Option<Message<'a>>;

    #[inline(always)]
    fn run<C: Crc32c>(self, crc: C) -> Self::Output {
        // A failed check returns through a call, never a conditional move:
        // the message's type (and so where the caller looks next) must not
        // wait for the checksum, which the branch predictor takes as passed.
        steady_frame!(self.data, crc, |message| Some(message), else declined())
    }
}

/// [`CheckStep`]'s answer for anything else, out of line (see there).
#[cold]
#[inline(never)]
fn declined<'a>() -> Option<Message<'a>> {
    None
}

/// Every event in `data`, folded into `acc` in one loop compiled for the CRC
/// implementation: the push-style fast path. Returns the bytes consumed.
struct Drain<'e, 'a, B, F> {
    engine: &'e mut Engine,
    data: &'a [u8],
    acc: B,
    fold: F,
}

impl<'a, B, F: FnMut(B, Event<'a>) -> ControlFlow<B, B>> Kernel for Drain<'_, 'a, B, F> {
    type Output = (usize, B);

    #[inline(always)]
    fn run<C: Crc32c>(self, crc: C) -> (usize, B) {
        // Work on local copies (the engine's state, the accumulator, the
        // fold and what it captured by value) so that the optimizer can keep
        // them in registers for the whole loop; write back at the end.
        let Drain {
            engine: shared,
            data,
            mut acc,
            mut fold,
        } = self;
        let mut engine = shared.clone();
        let mut consumed = 0;
        loop {
            if let (true, Some(mut expected)) = (engine.is_steady(), engine.tracker.expected()) {
                // Steady state: Quotes, Trades and Heartbeats in sequence
                // order, nothing pending; the counters stay in registers
                // until the run ends. Anything else falls through to the
                // general step below, which decides it as before.
                let mut counts = engine.counts;
                let (mut in_order, mut control) = (0u64, 0u64);
                let mut stopped = false;
                while let Some(rest) = data.get(consumed..) {
                    steady_frame!(rest, crc, |message| {
                        if message.sequence() != expected {
                            break;
                        }
                        let is_data = u64::from(message.is_data());
                        expected = expected.saturating_add(is_data);
                        in_order += is_data;
                        control += 1 - is_data;
                        counts.count(&message);
                        consumed += message.len();
                        // (A sink that never breaks, as `drain`'s, folds
                        // this branch away.)
                        match fold(acc, Event::Frame(message)) {
                            ControlFlow::Continue(next) => acc = next,
                            ControlFlow::Break(last) => {
                                acc = last;
                                stopped = true;
                                break;
                            }
                        }
                    }, else break);
                }
                engine.tracker.commit_in_order(expected, in_order, control);
                engine.counts = counts;
                if stopped {
                    *shared = engine;
                    return (consumed, acc);
                }
            }
            let rest = data.get(consumed..).unwrap_or_default();
            let (event, used) = engine.next_with(rest, crc);
            consumed += used;
            match event {
                Some(event) => match fold(acc, event) {
                    ControlFlow::Continue(next) => acc = next,
                    ControlFlow::Break(last) => {
                        *shared = engine;
                        return (consumed, last);
                    }
                },
                None => {
                    *shared = engine;
                    return (consumed, acc);
                }
            }
        }
    }
}

impl Engine {
    pub(super) fn new(tracker: SequenceTracker) -> Engine {
        Engine {
            tracker,
            counts: FrameCounts::default(),
            discarded_bytes: 0,
            discard_runs: 0,
            run: 0,
            run_reason: DiscardReason::NoSync,
            pre: [None, None],
            held: None,
            eof: false,
            accel: Accel::detect(),
        }
    }

    /// An engine that uses the portable CRC whatever the CPU has.
    pub(super) fn portable(tracker: SequenceTracker) -> Engine {
        Engine {
            accel: Accel::portable(),
            ..Engine::new(tracker)
        }
    }

    /// The next event in `data`, and how many bytes of `data` it consumed.
    #[inline]
    pub(super) fn next<'a>(&mut self, data: &'a [u8]) -> (Option<Event<'a>>, usize) {
        let accel = self.accel;
        if let (true, Some(expected)) = (self.is_steady(), self.tracker.expected()) {
            if let Some(message) = accel.run(CheckStep { data }) {
                if message.sequence() == expected {
                    // What `observe_in_order` and `count` do, without a
                    // branch on the type: the caller's match on it is the one.
                    let data = u64::from(message.is_data());
                    self.tracker
                        .commit_in_order(expected.saturating_add(data), data, 1 - data);
                    self.count(&message);
                    return (Some(Event::Frame(message)), message.len());
                }
            }
        }
        accel.run(Step { engine: self, data })
    }

    /// Folds every event in `data` into `acc`, up to and including the
    /// first one for which `fold` breaks; returns the bytes consumed (those
    /// of the events folded, no more).
    #[inline]
    pub(super) fn fold<'a, B>(
        &mut self,
        data: &'a [u8],
        acc: B,
        fold: impl FnMut(B, Event<'a>) -> ControlFlow<B, B>,
    ) -> (usize, B) {
        let accel = self.accel;
        accel.run(Drain {
            engine: self,
            data,
            acc,
            fold,
        })
    }

    #[inline(always)]
    fn next_with<'a, C: Crc32c>(&mut self, data: &'a [u8], crc: C) -> (Option<Event<'a>>, usize) {
        if self.held.is_some() {
            if let Some(released) = self.release(data) {
                return released;
            }
        }
        let mut pos = 0;
        loop {
            let rest = data.get(pos..).unwrap_or_default();
            if rest.is_empty() {
                if self.eof && self.run > 0 {
                    return (Some(self.end_run()), pos);
                }
                return (None, pos);
            }
            match check_frame(rest, crc) {
                Ok(message) => {
                    let verdict = self.tracker.observe_message(&message);
                    if self.run == 0 {
                        let fresh = matches!(verdict, Verdict::InOrder | Verdict::Control);
                        if fresh || verdict == Verdict::Duplicate {
                            self.count(&message);
                            let used = pos + message.len();
                            let event = if fresh {
                                Event::Frame(message)
                            } else {
                                Event::Duplicate(message)
                            };
                            return (Some(event), used);
                        }
                    }
                    return (self.hold(&message, verdict), pos);
                }
                Err(DecodeError::Incomplete { .. }) if !self.eof => return (None, pos),
                Err(err) => {
                    // Discard the failed candidate's sync byte, or everything
                    // up to the next sync byte; never past the report limit.
                    let skip = match rest.split_first() {
                        Some((&MAGIC, _)) => 1,
                        Some((_, tail)) => {
                            memchr::memchr(MAGIC, tail).map_or(rest.len(), |i| i + 1)
                        }
                        None => rest.len(),
                    };
                    let room = DISCARD_REPORT_MAX.saturating_sub(self.run);
                    let skip = usize::try_from(room).map_or(skip, |room| skip.min(room));
                    let reason = DiscardReason::of(err);
                    if self.run == 0 || (self.run_reason == DiscardReason::NoSync) {
                        self.run_reason = reason;
                    }
                    self.run += skip as u64;
                    self.discarded_bytes += skip as u64;
                    pos += skip;
                    if self.run >= DISCARD_REPORT_MAX {
                        return (Some(self.end_run()), pos);
                    }
                }
            }
        }
    }

    /// Slow path: a checked frame must wait behind a discard report, a gap
    /// or a new-session event.
    #[inline(always)]
    fn hold<'a>(&mut self, message: &Message<'_>, verdict: Verdict) -> Option<Event<'a>> {
        let discard = if self.run > 0 {
            Some(Pre::Discard(self.take_run()))
        } else {
            None
        };
        let sequence = match verdict {
            Verdict::Gap(gap) => Some(Pre::Gap(gap)),
            Verdict::NewSession {
                session_id,
                sequence,
            } => Some(Pre::NewSession {
                session_id,
                sequence,
            }),
            _ => None,
        };
        self.pre = [discard, sequence];
        self.held = Some((message.msg_type(), verdict == Verdict::Duplicate));
        self.pop_pre()
    }

    #[inline(always)]
    fn pop_pre<'a>(&mut self) -> Option<Event<'a>> {
        let [first, second] = self.pre;
        let event = first.or(second)?;
        self.pre = if first.is_some() {
            [second, None]
        } else {
            [None, None]
        };
        Some(event.event())
    }

    /// Delivers the pending pre-events, then the held frame.
    #[inline(always)]
    /// `None` if there was nothing to release after all (the held frame is
    /// then parsed again).
    fn release<'a>(&mut self, data: &'a [u8]) -> Option<(Option<Event<'a>>, usize)> {
        if let Some(event) = self.pop_pre() {
            return Some((Some(event), 0));
        }
        let (msg_type, duplicate) = self.held.take()?;
        // The frame was checked when it was first seen and the data did not change.
        let message = view(msg_type.code(), data)?;
        self.count(&message);
        let event = if duplicate {
            Event::Duplicate(message)
        } else {
            Event::Frame(message)
        };
        Some((Some(event), message.len()))
    }

    #[inline(always)]
    fn take_run(&mut self) -> Discard {
        let discard = Discard {
            bytes: self.run,
            reason: self.run_reason,
        };
        self.run = 0;
        self.run_reason = DiscardReason::NoSync;
        self.discard_runs += 1;
        discard
    }

    #[inline(always)]
    fn end_run<'a>(&mut self) -> Event<'a> {
        Event::Discarded(self.take_run())
    }

    #[inline(always)]
    fn count(&mut self, message: &Message<'_>) {
        self.counts.count(message);
    }

    /// Nothing pending: the next event can only come from the bytes.
    #[inline(always)]
    fn is_steady(&self) -> bool {
        self.held.is_none() && self.run == 0
    }
}
