//! Pure, `no_std` connection policies that take `now` instead of reading a
//! clock: reconnect [`Backoff`] and heartbeat [`Liveness`].
//!
//! `now` is any monotonic time as a [`Duration`] since an epoch of your
//! choosing (for example `Instant::now() - start`), so the policies can be
//! driven by simulated time in tests.
#![forbid(unsafe_code)]

use core::time::Duration;

/// Exponential reconnect backoff: 100 ms, 200 ms, 400 ms… capped at 30 s by
/// default, reset after a successful connection, with optional jitter and an
/// optional limit on consecutive retries.
///
/// ```
/// use core::time::Duration;
/// use tickwire::policy::Backoff;
///
/// let mut b = Backoff::default().with_max_retries(Some(3));
/// assert_eq!(b.next_delay(), Some(Duration::from_millis(100)));
/// assert_eq!(b.next_delay(), Some(Duration::from_millis(200)));
/// assert_eq!(b.next_delay(), Some(Duration::from_millis(400)));
/// assert_eq!(b.next_delay(), None); // give up: notify the user
/// b.reset();                        // after a successful connect
/// assert_eq!(b.next_delay(), Some(Duration::from_millis(100)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    max_retries: Option<u32>,
    jitter: Option<u64>,
    attempts: u32,
}

impl Default for Backoff {
    /// 100 ms initial, doubling, capped at 30 s, unlimited retries, no jitter.
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl Backoff {
    /// Starts at `initial`, doubles each retry, never exceeds `max`.
    #[must_use]
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            max_retries: None,
            jitter: None,
            attempts: 0,
        }
    }

    /// Gives up after `retries` consecutive failed attempts (`None`: never).
    #[must_use]
    pub const fn with_max_retries(mut self, retries: Option<u32>) -> Backoff {
        self.max_retries = retries;
        self
    }

    /// Randomizes each delay to between half and all of its nominal value
    /// ("equal jitter"), reproducibly from `seed`, so that many clients
    /// dropped at once do not reconnect in lockstep.
    #[must_use]
    pub const fn with_jitter(mut self, seed: u64) -> Backoff {
        self.jitter = Some(seed | 1);
        self
    }

    /// Failed attempts since the last [`reset`](Backoff::reset).
    #[must_use]
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The delay before the next attempt, or `None` when the retries are
    /// exhausted.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.max_retries.is_some_and(|max| self.attempts >= max) {
            return None;
        }
        let factor = 1u32.checked_shl(self.attempts.min(31)).unwrap_or(u32::MAX);
        let nominal = self.initial.saturating_mul(factor).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        Some(match &mut self.jitter {
            None => nominal,
            Some(state) => {
                // xorshift64: a few bits of reproducible noise.
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                let half = nominal / 2;
                let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
                half + Duration::from_nanos(if nanos == 0 { 0 } else { *state % (nanos + 1) })
            }
        })
    }

    /// Back to the initial delay (after a successful connection).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

/// Heartbeat liveness (protocol section 4.6): a connection that has heard
/// nothing for three heartbeat intervals is dead.
///
/// ```
/// use core::time::Duration;
/// use tickwire::policy::Liveness;
///
/// let second = Duration::from_secs(1);
/// let mut l = Liveness::new(second, Duration::ZERO);
/// assert!(!l.is_dead(3 * second));
/// assert!(l.is_dead(3 * second + Duration::from_nanos(1)));
/// l.heard(3 * second);
/// assert!(!l.is_dead(5 * second));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    interval: Duration,
    last_heard: Duration,
}

impl Liveness {
    /// Intervals of silence that mean the connection is dead.
    pub const MISSED: u32 = 3;

    /// Liveness for a peer with this heartbeat interval, last heard at `now`.
    #[must_use]
    pub const fn new(interval: Duration, now: Duration) -> Liveness {
        Liveness {
            interval,
            last_heard: now,
        }
    }

    /// Bytes arrived at `now`.
    pub fn heard(&mut self, now: Duration) {
        self.last_heard = self.last_heard.max(now);
    }

    /// When the connection will be considered dead if nothing arrives.
    #[must_use]
    pub fn deadline(&self) -> Duration {
        self.last_heard
            .saturating_add(self.interval.saturating_mul(Self::MISSED))
    }

    /// Whether the connection is dead at `now`.
    #[must_use]
    pub fn is_dead(&self, now: Duration) -> bool {
        now > self.deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let ms: std::vec::Vec<u128> = (0..12)
            .map(|_| b.next_delay().unwrap().as_millis())
            .collect();
        assert_eq!(
            ms,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
        );
        for _ in 0..100 {
            assert_eq!(b.next_delay(), Some(Duration::from_secs(30)), "no overflow");
        }
        b.reset();
        assert_eq!(b.next_delay(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        let mut b = Backoff::default().with_jitter(42);
        let mut plain = Backoff::default();
        let mut differs = false;
        for _ in 0..20 {
            let (j, p) = (b.next_delay().unwrap(), plain.next_delay().unwrap());
            assert!(j >= p / 2 && j <= p, "{j:?} vs {p:?}");
            differs |= j != p;
        }
        assert!(differs);
    }

    #[test]
    fn max_retries_gives_up() {
        let mut b = Backoff::default().with_max_retries(Some(0));
        assert_eq!(b.next_delay(), None);
    }
}
