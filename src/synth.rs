//! A seeded synthetic feed: realistic quotes and trades for a set of
//! instruments, and optional damage for testing receivers.
//!
//! The mix is 60% quotes, 30% trades, 10% heartbeats. Each instrument's mid
//! price follows a random walk in ticks of 0.01 (100 in 4-decimal fixed
//! point); quotes bid at the mid with a one- to five-tick spread and sizes in round lots;
//! trades print at the bid (sell) or the ask (buy). The same seed gives the
//! same feed.
//!
//! ```
//! use tickwire::synth::Feed;
//! use tickwire::parse::{Event, SliceParser};
//!
//! let mut feed = Feed::new(7, 16);
//! let mut buf = vec![0u8; 44 * 100];
//! let mut n = 0;
//! for i in 0..100 {
//!     n += feed.encode_next(1_700_000_000_000_000_000 + i, &mut buf[n..])?;
//! }
//! let frames = SliceParser::new(&buf[..n]).filter(|e| matches!(e, Event::Frame(_))).count();
//! assert_eq!(frames, 100);
//! # Ok::<(), tickwire::EncodeError>(())
//! ```
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::encode::{EncodeError, Payload, QuoteFields, Sequencer, TradeFields};

/// One tick: 0.01 in 4-decimal fixed point.
const TICK: i32 = 100;

#[derive(Clone, Copy, Debug)]
struct Instrument {
    id: u32,
    mid: i32,
}

/// The most instruments a [`Feed`] has (1,048,576): each takes 8 bytes,
/// allocated up front, so this bounds a feed to 8 MiB.
///
/// ```
/// use tickwire::synth::{Feed, MAX_INSTRUMENTS};
/// let mut feed = Feed::new(1, u32::MAX); // clamped: 8 MiB, not 32 GiB
/// let _ = feed.next_payload();
/// assert_eq!(MAX_INSTRUMENTS, 1 << 20);
/// ```
pub const MAX_INSTRUMENTS: u32 = 1 << 20;

/// The synthetic feed generator. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Feed {
    rng: fastrand::Rng,
    instruments: Vec<Instrument>,
    sequencer: Sequencer,
}

impl Feed {
    /// A feed of `instruments` instruments from `seed`, clamped to 1 to
    /// [`MAX_INSTRUMENTS`] (so that no value allocates more than 8 MiB).
    #[must_use]
    pub fn new(seed: u64, instruments: u32) -> Feed {
        let mut rng = fastrand::Rng::with_seed(seed);
        let instruments = (0..instruments.clamp(1, MAX_INSTRUMENTS))
            .map(|i| Instrument {
                id: 1000 + i,
                // 10.00 to 500.00, on the tick grid.
                mid: rng.i32(1_000..50_000) * TICK,
            })
            .collect();
        Feed {
            rng,
            instruments,
            sequencer: Sequencer::new(),
        }
    }

    /// The sequencer numbering this feed's frames.
    #[must_use]
    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// The next message of the 60/30/10 mix.
    pub fn next_payload(&mut self) -> Payload {
        let roll = self.rng.u32(0..100);
        if roll >= 90 {
            return Payload::Heartbeat;
        }
        let index = self.rng.usize(..self.instruments.len());
        let rng = &mut self.rng;
        let Some(inst) = self.instruments.get_mut(index) else {
            return Payload::Heartbeat;
        };
        inst.mid = (inst.mid + rng.i32(-2..=2) * TICK).max(10 * TICK);
        let bid_price = inst.mid;
        let ask_price = inst.mid + rng.i32(1..=5) * TICK;
        if roll < 60 {
            Payload::Quote(QuoteFields {
                instrument_id: inst.id,
                bid_price,
                ask_price,
                bid_size: rng.u32(1..=50) * 100,
                ask_size: rng.u32(1..=50) * 100,
            })
        } else {
            let buy = rng.bool();
            Payload::Trade(TradeFields {
                instrument_id: inst.id,
                price: if buy { ask_price } else { bid_price },
                size: rng.u32(1..=20) * 100,
                side: if buy { 1 } else { 2 },
                flags: 0,
            })
        }
    }

    /// Encodes the next message, numbered by the feed's [`Sequencer`], at the
    /// start of `out`, and returns its length.
    ///
    /// # Errors
    /// [`EncodeError::BufferTooSmall`]; the feed does not advance its
    /// sequence then (the message is lost from the mix, not from numbering).
    pub fn encode_next(&mut self, timestamp: u64, out: &mut [u8]) -> Result<usize, EncodeError> {
        let payload = self.next_payload();
        self.sequencer.encode(&payload, timestamp, out)
    }
}

/// A kind of damage [`Damager`] can do to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Damage {
    /// One bit of the frame flipped.
    BitFlip,
    /// The frame cut short (1 to len−1 bytes kept).
    Truncate,
    /// 1–64 random bytes (some of them 0xA5) inserted before the frame.
    Junk,
}

/// Damages frames of a stream at a given probability, reproducibly.
///
/// ```
/// use tickwire::synth::Damager;
/// let mut damager = Damager::new(1, 1.0);
/// let mut out = Vec::new();
/// let frame = [0xA5u8; 24];
/// let damage = damager.push_frame(&frame, &mut out);
/// assert!(damage.is_some());
/// ```
#[derive(Clone, Debug)]
pub struct Damager {
    rng: fastrand::Rng,
    probability: f64,
}

impl Damager {
    /// Damages each frame with probability `probability` (clamped to 0..=1).
    #[must_use]
    pub fn new(seed: u64, probability: f64) -> Damager {
        let probability = if probability.is_nan() {
            0.0
        } else {
            probability.clamp(0.0, 1.0)
        };
        Damager {
            rng: fastrand::Rng::with_seed(seed ^ 0x5EED_DA4A_6E00_0000),
            probability,
        }
    }

    /// Appends `frame` to `out`, damaged or not; says which damage was done.
    pub fn push_frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Option<Damage> {
        if frame.is_empty() || self.rng.f64() >= self.probability {
            out.extend_from_slice(frame);
            return None;
        }
        let damage = match self.rng.u8(0..3) {
            0 => Damage::BitFlip,
            1 => Damage::Truncate,
            _ => Damage::Junk,
        };
        match damage {
            Damage::BitFlip => {
                let at = out.len() + self.rng.usize(..frame.len());
                let bit = 1u8 << self.rng.u8(0..8);
                out.extend_from_slice(frame);
                if let Some(byte) = out.get_mut(at) {
                    *byte ^= bit;
                }
            }
            Damage::Truncate => {
                let keep = self.rng.usize(1..frame.len().max(2));
                out.extend_from_slice(frame.get(..keep).unwrap_or_default());
            }
            Damage::Junk => {
                for _ in 0..self.rng.usize(1..=64) {
                    let byte = if self.rng.u8(0..8) == 0 {
                        0xA5
                    } else {
                        self.rng.u8(..)
                    };
                    out.push(byte);
                }
                out.extend_from_slice(frame);
            }
        }
        Some(damage)
    }
}
