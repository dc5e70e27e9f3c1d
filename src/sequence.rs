//! Sequence tracking: in order, gaps, duplicates, new sessions.
//!
//! Pure and allocation-free: feed it every checked frame, in arrival order,
//! and it tells you what the frame means for the sequence space
//! (protocol section 3).
//!
//! | frame                          | condition                    | verdict |
//! |--------------------------------|------------------------------|---------|
//! | data, sequence `s`             | nothing seen yet, or `s == expected` | [`Verdict::InOrder`] |
//! | data, sequence `s`             | `s > expected`               | [`Verdict::Gap`] `expected..=s-1`, then expect `s+1` |
//! | data, sequence `s`             | `s < expected`               | [`Verdict::Duplicate`] (duplicate or late) |
//! | Heartbeat / EndOfSession, `n`  | `n > expected`               | [`Verdict::Gap`] `expected..=n-1` (idle gap) |
//! | Heartbeat / EndOfSession, `n`  | otherwise                    | [`Verdict::Control`] |
//! | LoginAccepted, new session id  |                              | [`Verdict::NewSession`]: expect its `sequence` |
//! | LoginAccepted, same session    | as Heartbeat                 | |
//! | Packet, new session id         |                              | [`Verdict::NewSession`]: expect its `sequence` |
//! | Packet, same session           | as Heartbeat (never moves the expectation back) | |
//! | Login, Retransmit              | its `sequence` is a request  | [`Verdict::Control`] |
//!
//! A Packet names its session as a LoginAccepted does (protocol sections 3
//! and 8.6), and its `sequence` is the next data sequence (the first one of
//! its datagram), so a higher one reveals a gap exactly as a Heartbeat's does.
//!
//! ```
//! use tickwire::sequence::{Gap, SequenceTracker, Verdict};
//! use tickwire::MsgType;
//!
//! let mut t = SequenceTracker::new();
//! assert_eq!(t.observe(MsgType::Quote, 1, 0), Verdict::InOrder);
//! assert_eq!(t.observe(MsgType::Quote, 4, 0), Verdict::Gap(Gap { first: 2, last: 3 }));
//! assert_eq!(t.observe(MsgType::Trade, 3, 0), Verdict::Duplicate);
//! assert_eq!(t.observe(MsgType::Heartbeat, 7, 0), Verdict::Gap(Gap { first: 5, last: 6 }));
//! assert_eq!(t.stats().missing, 4);
//! ```
#![forbid(unsafe_code)]

use crate::wire::{Message, MsgType};

/// A range of data sequences that never arrived, both ends inclusive.
///
/// ```
/// let gap = tickwire::sequence::Gap { first: 10, last: 12 };
/// assert_eq!(gap.len(), 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Gap {
    /// First missing sequence.
    pub first: u64,
    /// Last missing sequence.
    pub last: u64,
}

impl Gap {
    /// How many sequences are missing.
    #[must_use]
    #[allow(clippy::len_without_is_empty)] // a gap is never empty
    pub fn len(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }
}

/// What a frame means for the sequence space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// A data frame with the expected sequence (or the first one seen).
    InOrder,
    /// A control frame consistent with what was seen.
    Control,
    /// The frame revealed missing sequences; a data frame carrying it is
    /// itself new and in order after the gap.
    Gap(Gap),
    /// A data frame whose sequence was already passed: a duplicate, or a frame
    /// arriving after it had been reported missing.
    Duplicate,
    /// A LoginAccepted naming a session other than the current one: the
    /// sequence space restarted and tracking starts afresh.
    NewSession {
        /// The new session.
        session_id: u64,
        /// The first data sequence of this connection.
        sequence: u64,
    },
}

/// Counters kept by [`SequenceTracker`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SequenceStats {
    /// Data frames accepted as new (in order, or right after a gap).
    pub in_order: u64,
    /// Control frames seen.
    pub control: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Sequences reported missing, summed over all gaps.
    pub missing: u64,
    /// Data frames reported as duplicates (already delivered, or late after a gap).
    pub duplicates: u64,
    /// Sessions started (LoginAccepted with a new `session_id`).
    pub sessions: u64,
}

/// Tracks the data sequence space of one feed.
///
/// See the [module documentation](self) for the rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SequenceTracker {
    expected: Option<u64>,
    session: Option<u64>,
    stats: SequenceStats,
}

impl SequenceTracker {
    /// A tracker that has seen nothing: the first frame sets the baseline.
    #[must_use]
    pub const fn new() -> SequenceTracker {
        SequenceTracker {
            expected: None,
            session: None,
            stats: SequenceStats {
                in_order: 0,
                control: 0,
                gaps: 0,
                missing: 0,
                duplicates: 0,
                sessions: 0,
            },
        }
    }

    /// A tracker expecting data sequence `next` (for example the sequence a
    /// client asked to replay from).
    ///
    /// ```
    /// use tickwire::{sequence::{SequenceTracker, Verdict}, MsgType};
    /// let mut t = SequenceTracker::expecting(5);
    /// assert!(matches!(t.observe(MsgType::Quote, 6, 0), Verdict::Gap(_)));
    /// ```
    #[must_use]
    pub const fn expecting(next: u64) -> SequenceTracker {
        let mut t = SequenceTracker::new();
        t.expected = Some(next);
        t
    }

    /// A tracker that resumes session `session_id` at data sequence `next`
    /// (a receiver restarted on what it kept, such as a relay on its
    /// journal): a LoginAccepted of that session continues it (a later
    /// `sequence` is a gap), one of another session is
    /// [`Verdict::NewSession`].
    ///
    /// ```
    /// use tickwire::{sequence::{Gap, SequenceTracker, Verdict}, MsgType};
    /// let mut t = SequenceTracker::resuming(7, 100);
    /// assert_eq!(t.observe(MsgType::LoginAccepted, 100, 7), Verdict::Control);
    /// assert_eq!(t.observe(MsgType::Quote, 100, 0), Verdict::InOrder);
    /// assert_eq!(t.observe(MsgType::LoginAccepted, 105, 7), Verdict::Gap(Gap { first: 101, last: 104 }));
    /// let mut t = SequenceTracker::resuming(7, 100);
    /// assert!(matches!(t.observe(MsgType::LoginAccepted, 1, 8), Verdict::NewSession { session_id: 8, sequence: 1 }));
    /// ```
    #[must_use]
    pub const fn resuming(session_id: u64, next: u64) -> SequenceTracker {
        let mut t = SequenceTracker::expecting(next);
        t.session = Some(session_id);
        t
    }

    /// The next data sequence expected, once anything has been seen.
    #[must_use]
    pub const fn expected(&self) -> Option<u64> {
        self.expected
    }

    /// The current session, once a LoginAccepted has been seen.
    #[must_use]
    pub const fn session(&self) -> Option<u64> {
        self.session
    }

    /// The counters.
    #[must_use]
    pub const fn stats(&self) -> &SequenceStats {
        &self.stats
    }

    /// Data before `next` will never arrive (for example, a LoginAccepted
    /// answering a first Login from later than it asked: the server no
    /// longer retains the range, protocol section 4.2). With an expectation
    /// before `next`, the skipped range is reported and counted as a gap;
    /// the expectation becomes `next` either way.
    ///
    /// ```
    /// use tickwire::sequence::{Gap, SequenceTracker};
    /// let mut t = SequenceTracker::expecting(5);
    /// assert_eq!(t.skip_to(9), Some(Gap { first: 5, last: 8 }));
    /// assert_eq!((t.expected(), t.stats().missing), (Some(9), 4));
    /// assert_eq!(t.skip_to(9), None);
    /// ```
    pub fn skip_to(&mut self, next: u64) -> Option<Gap> {
        let before = self.expected.replace(next.max(self.expected.unwrap_or(0)));
        match before {
            Some(expected) if next > expected => match self.gap(expected, next - 1) {
                Verdict::Gap(gap) => Some(gap),
                _ => None,
            },
            _ => None,
        }
    }

    /// Classifies a checked frame.
    ///
    /// ```
    /// use tickwire::{sequence::{SequenceTracker, Verdict}, Message, Payload};
    /// let mut buf = [0u8; 24];
    /// tickwire::encode(&Payload::Heartbeat, 1, 0, &mut buf).unwrap();
    /// let (msg, _) = Message::decode(&buf).unwrap();
    /// assert_eq!(SequenceTracker::new().observe_message(&msg), Verdict::Control);
    /// ```
    #[inline(always)]
    pub fn observe_message(&mut self, message: &Message<'_>) -> Verdict {
        let session_id = match message {
            Message::LoginAccepted(m) => m.session_id(),
            Message::Packet(m) => m.session_id(),
            _ => 0,
        };
        self.observe(message.msg_type(), message.sequence(), session_id)
    }

    /// Classifies a frame of type `msg_type` carrying `sequence`;
    /// `session_id` is only read for LoginAccepted and Packet.
    #[inline(always)]
    pub fn observe(&mut self, msg_type: MsgType, sequence: u64, session_id: u64) -> Verdict {
        match self.observe_in_order(msg_type, sequence) {
            Some(verdict) => verdict,
            None => self.observe_slow(msg_type, sequence, session_id),
        }
    }

    /// The steady state, without a branch on the type: a data frame with the
    /// expected sequence ([`Verdict::InOrder`]), or a Heartbeat/EndOfSession
    /// carrying it ([`Verdict::Control`]). `None`, with nothing changed, for
    /// anything else.
    #[inline(always)]
    pub(crate) fn observe_in_order(&mut self, msg_type: MsgType, sequence: u64) -> Option<Verdict> {
        let sessionless = !matches!(
            msg_type,
            MsgType::Login
                | MsgType::LoginAccepted
                | MsgType::Packet
                | MsgType::Retransmit
                | MsgType::Auth
                | MsgType::Rejected
        );
        if self.expected != Some(sequence) || !sessionless {
            return None;
        }
        let data = msg_type.is_data();
        self.expected = Some(sequence.saturating_add(u64::from(data)));
        self.stats.in_order += u64::from(data);
        self.stats.control += u64::from(!data);
        Some(if data {
            Verdict::InOrder
        } else {
            Verdict::Control
        })
    }

    /// Records a run of frames that [`observe_in_order`](Self::observe_in_order)
    /// accepted one by one (`in_order` data frames, `control` Heartbeats or
    /// EndOfSessions), leaving `expected` as the next sequence: the fast
    /// loops keep these in registers and write them back once.
    #[inline(always)]
    pub(crate) fn commit_in_order(&mut self, expected: u64, in_order: u64, control: u64) {
        self.expected = Some(expected);
        self.stats.in_order += in_order;
        self.stats.control += control;
    }

    #[inline(never)]
    fn observe_slow(&mut self, msg_type: MsgType, sequence: u64, session_id: u64) -> Verdict {
        if msg_type.is_data() {
            return self.data(sequence);
        }
        match msg_type {
            // Their `sequence` means something else (Login, Retransmit) or
            // nothing (Auth, Rejected: 0, ignored; protocol section 3).
            MsgType::Login | MsgType::Retransmit | MsgType::Auth | MsgType::Rejected => {
                self.stats.control += 1;
                Verdict::Control
            }
            MsgType::LoginAccepted | MsgType::Packet if self.session != Some(session_id) => {
                self.stats.control += 1;
                self.stats.sessions += 1;
                self.session = Some(session_id);
                self.expected = Some(sequence);
                Verdict::NewSession {
                    session_id,
                    sequence,
                }
            }
            _ => {
                self.stats.control += 1;
                match self.expected {
                    Some(expected) if sequence > expected => {
                        self.expected = Some(sequence);
                        self.gap(expected, sequence - 1)
                    }
                    Some(_) => Verdict::Control,
                    None => {
                        self.expected = Some(sequence);
                        Verdict::Control
                    }
                }
            }
        }
    }

    #[inline]
    fn data(&mut self, sequence: u64) -> Verdict {
        let next = sequence.saturating_add(1);
        match self.expected {
            Some(expected) if sequence == expected => {
                self.expected = Some(next);
                self.stats.in_order += 1;
                Verdict::InOrder
            }
            Some(expected) if sequence > expected => {
                self.expected = Some(next);
                self.stats.in_order += 1;
                self.gap(expected, sequence - 1)
            }
            Some(_) => {
                self.stats.duplicates += 1;
                Verdict::Duplicate
            }
            None => {
                self.expected = Some(next);
                self.stats.in_order += 1;
                Verdict::InOrder
            }
        }
    }

    #[cold]
    fn gap(&mut self, first: u64, last: u64) -> Verdict {
        let gap = Gap { first, last };
        self.stats.gaps += 1;
        self.stats.missing = self.stats.missing.saturating_add(gap.len());
        Verdict::Gap(gap)
    }
}

#[cfg(test)]
mod datagram_frames {
    use super::*;

    #[test]
    fn a_packet_names_its_session_and_carries_the_next_sequence() {
        let mut t = SequenceTracker::new();
        assert_eq!(
            t.observe(MsgType::Packet, 7, 9),
            Verdict::NewSession {
                session_id: 9,
                sequence: 7
            }
        );
        assert_eq!(t.observe(MsgType::Quote, 7, 0), Verdict::InOrder);
        // Same session, the next datagram: in order, nothing to report.
        assert_eq!(t.observe(MsgType::Packet, 8, 9), Verdict::Control);
        // A later Packet reveals a gap, as a Heartbeat does.
        assert_eq!(
            t.observe(MsgType::Packet, 11, 9),
            Verdict::Gap(Gap { first: 8, last: 10 })
        );
        // An older Packet (a late datagram) never moves the expectation back.
        assert_eq!(t.observe(MsgType::Packet, 5, 9), Verdict::Control);
        assert_eq!(t.expected(), Some(11));
        // A new session restarts tracking.
        assert!(matches!(
            t.observe(MsgType::Packet, 1, 10),
            Verdict::NewSession { .. }
        ));
        assert_eq!(t.expected(), Some(1));
    }

    #[test]
    fn a_retransmit_is_a_request_and_changes_nothing() {
        let mut t = SequenceTracker::expecting(5);
        assert_eq!(t.observe(MsgType::Retransmit, 100, 0), Verdict::Control);
        assert_eq!(t.observe(MsgType::Retransmit, 1, 0), Verdict::Control);
        assert_eq!(t.expected(), Some(5));
    }
}
