//! A whole-server simulation in virtual time (issue 22, point 5), in the
//! spirit of FoundationDB's simulation testing and TigerBeetle's VOPR: one
//! [`ServerCore`], many [`ClientSession`]s, in-memory pipes that delay,
//! fragment, stall, blackhole and cut, bursts of connects from one address,
//! idle floods and hostile connections sending random bytes, publishers with
//! random batch sizes and pauses, relay holes ([`ServerCore::advance`]) —
//! everything from one `u64` seed, under one virtual clock. No socket, no
//! thread, no wall clock: a seed replays exactly.
//!
//! Protocol section 11 (issue 25): half the seeds require authentication
//! (a [`Credentials`] of subscribe-only, both and retransmit-only keys, a
//! lock-out of 3–10 failures in a 2–5 s window); every real client then
//! has a valid key that may subscribe. Hostile connections, each from its
//! own address, send a wrong secret, an unknown key id, a Login, Heartbeat
//! or Retransmit before the Auth, two Auths, part of an Auth (then close, or
//! nothing more), an Auth with a flipped bit, a resealed Auth that is not
//! well-formed (sequence, key id), a key asking for what it may not, a valid
//! Auth alone, a refusal followed by more than 4 KiB, or random bytes; any
//! of it in random fragments, some closing after. A brute force comes from
//! one address (past the lock-out, in a burst and again around the end of
//! its window) and from many (a few attempts each); a few client sessions
//! must be refused (a wrong secret or unknown key: reason 2; a
//! retransmit-only key: 3; none: 1). Without authentication, some real
//! clients send an Auth with a random key anyway, and hostile connections
//! send two Auths, part of one, one with a flipped bit, or one alone.
//!
//! Checked on every run:
//! - **No silent loss**: on every client connection that got LoginAccepted,
//!   the data frames delivered plus the gaps reported are exactly the
//!   published range from its LoginAccepted's sequence on, in order, byte for
//!   byte, with no duplicate; every gap is a relay hole, a skip of a
//!   connection the server marked slow, or frames the retention dropped
//!   before a replay reached them (and their total is at most
//!   `CoreStats::skipped_frames + replay_trimmed`). A client that is never
//!   stalled or blackholed is never marked slow.
//! - **Admission**: no real client's connection (a burst from one address
//!   included) is closed with `UnauthenticatedLimit`; an idle flood from
//!   another address beyond the per-peer limit is displaced.
//! - **Heartbeats**: a healthy logged-in connection never goes more than one
//!   heartbeat interval (plus a millisecond) without a byte.
//! - **No progress**: a blackholed (half-open) connection is closed within
//!   `no_progress_intervals + 1` heartbeat intervals (plus a backlog check).
//! - **Login timeout**: hostile and idle connections are closed within the
//!   login timeout (or their drain, below).
//! - **Authentication** (section 11): no client with valid credentials (or
//!   an ignored Auth) is ever refused, locked out or displaced, and the
//!   checks above hold for all of them. Every hostile connection is sent
//!   exactly one Rejected with the rules' reason (1: the first frame is not
//!   an Auth; 2: anything wrong with the Auth; 3: a valid key asking for
//!   what it may not), sequence 0 and reserved bytes 0, or nothing at all
//!   (part of an Auth then a close; a valid Auth alone; two valid Auths:
//!   `UnexpectedFrame`; the login timeout; locked out) — never a
//!   LoginAccepted, a Heartbeat or data — and is closed as its attack says.
//!   After a Rejected, `poll_write_shutdown` says yes exactly once, when
//!   the Rejected (and nothing else) is written, and the connection is
//!   closed within 1 s of it, or once 4 KiB were read after it.
//! - **Lock-out**: at every accept, the connection is closed at once
//!   (`LockedOut`, nothing written) exactly when the sim's own model of the
//!   rule, fed with the reason-2 Rejecteds the server queued and when, says
//!   its address is locked; other addresses are never affected.
//! - **Refused client sessions** are refused once with their reason, report
//!   it, never log in or see data, and end stopped with
//!   `last_lost() == Some(Lost::Rejected(reason))`.
//! - **Counters**: `auth_failures` and `not_permitted` are the reason-2 and
//!   reason-3 Rejecteds received, `LockedOut` closes and `lockout_stats` the
//!   connections seen locked out, `authenticated` at least the logins;
//!   without authentication all are 0 and no connection closes `Rejected`.
//! - At the end every client has caught up to the live edge, the shutdown
//!   drains every connection, and nothing panicked.
//!
//! Runs:
//! ```text
//! cargo test --features std --test sim                    # CI: SIM_SEEDS (1500) seeds, ≤ 50 clients
//! SIM_SEED=1234 cargo test --features std --test sim -- --nocapture          # replay one seed
//! SIM_SEEDS=200 SIM_CLIENTS=500 SIM_FRAMES=100000 \
//!     cargo test --release --features std --test sim -- --nocapture          # the long run
//! ```
//! `SIM_FIRST` sets the first seed of a range (default 0); `SIM_VERBOSE=1`
//! prints each seed's parameters and counters.
//! `SIM_TRACE=1` traces logins, slow marks, blackholes and link 0's timers.
//! The section 11 cases the simulation found failing (a close read with the
//! Auth, more than 4 KiB read with it, the drivers' read into a full
//! buffer; fixed, each also a test at the end) run on every seed.
//!
//! Measured (2 cores): the CI default 49 s in debug; the long run above 31 s
//! in release (after a 1 min 46 s release build). Seed 1007 with
//! `SIM_CLIENTS=1000 SIM_FRAMES=20000` found that a burst of 657 clients
//! from one address, accepted before their Logins arrived, passed the cap
//! on connections in their admission grace (then `max_unauthenticated`,
//! 128) and had real clients displaced; the cap is now `max_clients +
//! max_unauthenticated`, and that seed passes.
//!
//! With section 11 (2 cores shared with other builds, load 4–5, so CPU time
//! is the fairer figure): the CI default took 60–104 s (52–65 s of CPU),
//! and the version before it, run alongside, 89–106 s (60–62 s of CPU);
//! `SIM_SEEDS=300 SIM_CLIENTS=200 SIM_FRAMES=20000` in release 7.1 s. Some
//! 34,000 more seeds passed. The three findings are at the end of the file.
#![allow(
    // Configs are built field by field from the defaults, as in the docs.
    clippy::field_reassign_with_default,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tickwire::encode::{QuoteFields, TradeFields};
use tickwire::parse::{Event, Parser, SliceParser};
use tickwire::policy::Backoff;
use tickwire::sequence::Gap;
use tickwire::session::auth::{ClientKey, Credentials, LockOutConfig, Permissions};
use tickwire::session::server::{REJECT_DRAIN, REJECT_DRAIN_BYTES};
use tickwire::session::{
    Action, Batch, ClientEvent, ClientSession, ClientSessionConfig, ClientState, CloseReason,
    ConnId, CoreConfig, CoreEvent, Lost, ServerCore, ServerEvent, SlowPolicy, Time,
};
use tickwire::wire::{KeyId, RejectReason, Secret};
use tickwire::{Message, Payload, Sequencer};

const MS: Duration = Duration::from_millis(1);
/// The least the clock moves per step: a deadline may be met up to this
/// late.
const STEP: Duration = Duration::from_micros(1);
/// The heartbeat interval of the server and the clients.
const HB: Duration = Duration::from_millis(100);
const LOGIN_TIMEOUT: Duration = Duration::from_millis(500);
/// The server session's backlog check period (`server::BACKLOG_CHECK`).
const BACKLOG_CHECK: Duration = Duration::from_millis(10);
const UNIX0: u64 = 1_700_000_000_000_000_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(now: Duration) -> Time {
    Time::new(now, UNIX0 + now.as_nanos() as u64)
}

/// SplitMix64: small, seedable, good enough for choosing faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Log-uniform in `lo..=hi`: small runs often, large ones now and then.
    fn log_range(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo.max(1) as f64).ln(), ((hi + 1) as f64).ln());
        let x = a + (b - a) * (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (x.exp() as u64).clamp(lo, hi)
    }

    /// True with probability `p` percent.
    fn pct(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        ms(self.range(lo, hi))
    }
}

/// One run's shape, all drawn from the seed.
#[derive(Clone, Debug)]
struct Params {
    seed: u64,
    clients: usize,
    /// Clients `0..burst` connect at once from one address.
    burst: usize,
    frames: u64,
    retain: usize,
    policy: SlowPolicy,
    slow_threshold: usize,
    slow_grace: Duration,
    no_progress_intervals: u32,
    /// Fault rate: mean time between faults.
    fault_every: Duration,
    /// Idle connections from one other address, all at once.
    idle_flood: usize,
    /// Connections sending random bytes.
    hostile: usize,
    /// Relay holes: `advance` now and then.
    holes: bool,
    /// The most one-way latency of a link.
    max_latency: u64,
    /// How long the server takes to accept a completed connection.
    accept_delay: u64,
    /// The publisher may outrun any socket (bursts past the queue limit):
    /// healthy clients may be marked slow then. Otherwise it is paced so
    /// that a client that reads everything never owes more than a quarter
    /// of the slow threshold.
    overload: bool,
    /// The server requires authentication (protocol section 11).
    auth: bool,
    /// The lock-out rule: failed authentications from one address within
    /// the window after which its new connections are closed at accept.
    lockout_failures: u32,
    lockout_window: Duration,
    /// Hostile connections trying section 11 (each with its own address).
    attacks: usize,
    /// Connections from one address with wrong secrets, past the lock-out.
    brute_one: usize,
    /// Addresses a brute force comes from, a few wrong secrets each.
    brute_many: usize,
    /// Real client sessions the server must refuse (a wrong secret, an
    /// unknown key, a key that may not subscribe, no credentials).
    refused: usize,
    /// Also the section 11 cases the simulation found failing, now fixed
    /// (a close read with the Auth, more than 4 KiB read with it, and on odd
    /// seeds the drivers' read into a full buffer): on unless
    /// `SIM_AUTH_FOUND=0`.
    known_bugs: bool,
}

impl Params {
    fn draw(seed: u64, max_clients: usize, max_frames: u64) -> Params {
        let mut r = Rng(seed ^ 0x5eed_0000_0000_0000);
        let clients = r.log_range(1, max_clients as u64) as usize;
        let burst = if clients >= 17 && r.pct(50) {
            r.range(17, clients as u64) as usize
        } else {
            0
        };
        let slow_threshold = r.range(16, 256) as usize * 1024;
        Params {
            seed,
            clients,
            burst,
            frames: r.log_range((max_frames / 100).max(1), max_frames),
            retain: if r.pct(30) {
                r.range(200, 5_000) as usize
            } else {
                1 << 20
            },
            policy: if r.pct(20) {
                SlowPolicy::Disconnect
            } else {
                SlowPolicy::Skip
            },
            slow_threshold,
            slow_grace: r.ms(10, 100),
            no_progress_intervals: r.range(2, 6) as u32,
            fault_every: if r.pct(15) {
                ms(1_000_000)
            } else {
                r.ms(20, 400)
            },
            idle_flood: if r.pct(25) {
                r.range(1, 40) as usize
            } else {
                0
            },
            hostile: if r.pct(30) {
                r.range(1, 10) as usize
            } else {
                0
            },
            holes: r.pct(20),
            max_latency: r.range(0, 3),
            accept_delay: r.range(0, 2),
            overload: r.pct(15),
            // Drawn last: the draws above are what they were before.
            auth: r.pct(50),
            lockout_failures: r.range(3, 10) as u32,
            lockout_window: r.ms(2_000, 5_000),
            attacks: r.range(1, 12) as usize,
            brute_one: if r.pct(40) {
                r.range(1, 12) as usize
            } else {
                0
            },
            brute_many: if r.pct(40) {
                r.range(2, 24) as usize
            } else {
                0
            },
            refused: r.range(0, 3) as usize,
            known_bugs: false,
        }
    }
}

/// The first four bytes of an Auth (protocol section 11, rule 2).
const AUTH_HEAD: [u8; 4] = [0xa5, 0x01, 0x07, 0x48];
const REJECTED: &[CloseReason] = &[CloseReason::Rejected];

/// The credentials of a run that requires authentication: real clients
/// use the subscribe-only and the both keys; the sim opens no
/// retransmission connections, so the retransmit-only keys are only ever
/// refused (reason 3), as is a subscribe-only key asking to retransmit.
struct Keys {
    subscribe: Vec<ClientKey>,
    both: Vec<ClientKey>,
    retransmit: Vec<ClientKey>,
}

impl Keys {
    fn draw(rng: &mut Rng) -> Keys {
        let mut keys = |prefix: &str, n: u64| -> Vec<ClientKey> {
            (0..rng.range(1, n))
                .map(|i| ClientKey {
                    key_id: KeyId::new(&format!("{prefix}-{i}")).unwrap(),
                    secret: random_secret(rng),
                })
                .collect()
        };
        Keys {
            subscribe: keys("sub", 3),
            both: keys("both", 2),
            retransmit: keys("retx.only", 2),
        }
    }

    fn credentials(&self) -> Credentials {
        let lines: Vec<String> = [
            (&self.subscribe, Permissions::SUBSCRIBE),
            (&self.both, Permissions::ALL),
            (&self.retransmit, Permissions::RETRANSMIT),
        ]
        .into_iter()
        .flat_map(|(keys, p)| {
            keys.iter().map(move |k| {
                // "Both" as the default (no list) half of the time.
                let list = (p != Permissions::ALL || k.secret.expose()[0] % 2 == 0).then_some(p);
                Credentials::line(&k.key_id, &k.secret, list)
            })
        })
        .collect();
        Credentials::parse(&format!("# sim\n{}\n", lines.join("\n"))).unwrap()
    }

    /// A key that may subscribe.
    fn subscriber(&self, rng: &mut Rng) -> ClientKey {
        let n = self.subscribe.len() + self.both.len();
        let i = rng.range(0, n as u64 - 1) as usize;
        self.subscribe
            .get(i)
            .copied()
            .unwrap_or_else(|| self.both[i - self.subscribe.len()])
    }

    /// Any key of the server.
    fn any(&self, rng: &mut Rng) -> ClientKey {
        let all: Vec<&ClientKey> = self
            .subscribe
            .iter()
            .chain(&self.both)
            .chain(&self.retransmit)
            .collect();
        *all[rng.range(0, all.len() as u64 - 1) as usize]
    }

    fn pick(keys: &[ClientKey], rng: &mut Rng) -> ClientKey {
        keys[rng.range(0, keys.len() as u64 - 1) as usize]
    }
}

fn random_secret(rng: &mut Rng) -> Secret {
    let mut secret = [0u8; 32];
    for chunk in secret.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    Secret::new(secret)
}

/// A key id no server key has (those all have a `-`).
fn unknown_key_id(rng: &mut Rng) -> KeyId {
    const ALLOWED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.";
    let n = rng.range(1, 16) as usize;
    let id: String = (0..n)
        .map(|_| ALLOWED[rng.range(0, ALLOWED.len() as u64 - 1) as usize] as char)
        .collect();
    KeyId::new(&id).unwrap()
}

/// `key` with the wrong secret.
fn wrong_secret(key: ClientKey, rng: &mut Rng) -> ClientKey {
    let mut secret = random_secret(rng);
    if secret == key.secret {
        secret = Secret::new([!key.secret.expose()[0]; 32]);
    }
    ClientKey {
        key_id: key.key_id,
        secret,
    }
}

fn frame(payload: &Payload, sequence: u64) -> Vec<u8> {
    let mut buf = vec![0u8; payload.frame_len()];
    let n = tickwire::encode(payload, sequence, UNIX0, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn auth_frame(key: &ClientKey) -> Vec<u8> {
    frame(&Payload::auth(&key.key_id, key.secret), 0)
}

/// Recomputes an edited frame's checksum: a valid frame whose content is
/// not a well-formed Auth.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let n = bytes.len();
    let crc = tickwire::checksum::crc32c(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// What a hostile connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    /// Random bytes (with or without authentication).
    Random,
    WrongSecret,
    UnknownKey,
    /// A Login, Heartbeat or Retransmit before the Auth.
    WrongOrder,
    /// An Auth, then another.
    TwoAuths,
    /// Part of an Auth, then a close (or nothing more).
    Truncated,
    /// A valid Auth with one bit flipped (the checksum fails).
    BadChecksum,
    /// A valid frame, but not a well-formed Auth (sequence, key id).
    NotWellFormed,
    /// Valid credentials asking for what they may not (reason 3).
    NotPermitted,
    /// A valid Auth and nothing more.
    AuthOnly,
    /// Refused, then more than 4 KiB of bytes in later writes.
    Flood,
    /// A wrong secret from the brute-force addresses.
    BruteForce,
}

impl Attack {
    /// Drawn for a run with (or without) authentication.
    fn draw(auth: bool, rng: &mut Rng) -> Attack {
        const WITH: &[Attack] = &[
            Attack::Random,
            Attack::WrongSecret,
            Attack::UnknownKey,
            Attack::WrongOrder,
            Attack::TwoAuths,
            Attack::Truncated,
            Attack::BadChecksum,
            Attack::NotWellFormed,
            Attack::NotPermitted,
            Attack::AuthOnly,
            Attack::Flood,
        ];
        // Without authentication an Auth is ignored: these are the ones
        // that are still refused or closed.
        const WITHOUT: &[Attack] = &[
            Attack::TwoAuths,
            Attack::Truncated,
            Attack::BadChecksum,
            Attack::AuthOnly,
        ];
        let from = if auth { WITH } else { WITHOUT };
        from[rng.range(0, from.len() as u64 - 1) as usize]
    }
}

/// A hostile connection's plan, and what the server must answer.
#[derive(Clone, Debug)]
struct Hostile {
    attack: Attack,
    /// (after the accept, bytes), in order.
    pieces: Vec<(Duration, Vec<u8>)>,
    /// It closes (FIN) this long after the accept, if ever.
    close_at: Option<Duration>,
    /// One Rejected with this reason, or nothing at all.
    answer: Option<RejectReason>,
    /// How the server closes it (besides the lock-out, the admission
    /// limits once past its grace, and the shutdown).
    closes: &'static [CloseReason],
}

impl Hostile {
    fn plan(attack: Attack, p: &Params, keys: &Keys, rng: &mut Rng) -> Hostile {
        let (auth, bugs) = (p.auth, p.known_bugs);
        use RejectReason::{AuthenticationRequired as R1, NotAuthorized as R2, NotPermitted as R3};
        let login = frame(&Payload::Login, rng.range(0, 3));
        let mut close_at = None;
        let (stream, answer, closes): (Vec<u8>, _, &'static [CloseReason]) = match attack {
            Attack::Random => {
                let n = if bugs && rng.pct(20) {
                    rng.range(4_000, 9_000) // a full first read
                } else {
                    rng.range(1, 300)
                } as usize;
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                let k = n.min(4);
                let (answer, closes): (_, &'static [CloseReason]) = if !auth {
                    (None, &[CloseReason::BadData, CloseReason::LoginTimeout])
                } else if bytes[..k] != AUTH_HEAD[..k] {
                    (Some(R1), REJECTED)
                } else if n < 72 {
                    (None, &[CloseReason::LoginTimeout])
                } else {
                    (Some(R2), REJECTED) // its checksum fails
                };
                (bytes, answer, closes)
            }
            Attack::WrongSecret | Attack::BruteForce => {
                let key = wrong_secret(keys.any(rng), rng);
                ([auth_frame(&key), login].concat(), Some(R2), REJECTED)
            }
            Attack::UnknownKey => {
                let key = ClientKey {
                    key_id: unknown_key_id(rng),
                    secret: keys.any(rng).secret,
                };
                ([auth_frame(&key), login].concat(), Some(R2), REJECTED)
            }
            Attack::WrongOrder => {
                let first = match rng.range(0, 2) {
                    0 => login.clone(),
                    1 => frame(&Payload::Heartbeat, rng.range(0, 100)),
                    _ => frame(
                        &Payload::Retransmit {
                            session_id: 7,
                            count: rng.range(1, 10),
                        },
                        rng.range(1, 10),
                    ),
                };
                let key = keys.subscriber(rng);
                (
                    [first, auth_frame(&key), login].concat(),
                    Some(R1),
                    REJECTED,
                )
            }
            Attack::TwoAuths => {
                if !auth || rng.pct(70) {
                    // The second is an unexpected frame (rule 4).
                    let mut stream = [
                        auth_frame(&keys.subscriber(rng)),
                        auth_frame(&keys.any(rng)),
                    ]
                    .concat();
                    if rng.pct(50) {
                        stream.extend_from_slice(&login);
                    }
                    (stream, None, &[CloseReason::UnexpectedFrame])
                } else {
                    let bad = wrong_secret(keys.any(rng), rng);
                    let good = keys.subscriber(rng);
                    (
                        [auth_frame(&bad), auth_frame(&good), login].concat(),
                        Some(R2),
                        REJECTED,
                    )
                }
            }
            Attack::Truncated => {
                let key = if rng.pct(50) {
                    keys.subscriber(rng)
                } else {
                    wrong_secret(keys.any(rng), rng)
                };
                let cut = rng.range(1, 71) as usize;
                let stream = auth_frame(&key)[..cut].to_vec();
                let closes: &'static [CloseReason] = if rng.pct(70) {
                    close_at = Some(Duration::ZERO); // set after the pieces below
                    if auth {
                        &[CloseReason::PeerClosed]
                    } else {
                        // Not authenticating, the parser reports the tail.
                        &[CloseReason::BadData]
                    }
                } else {
                    &[CloseReason::LoginTimeout]
                };
                (stream, None, closes)
            }
            Attack::BadChecksum => {
                let mut f = auth_frame(&keys.subscriber(rng));
                let at = rng.range(4, 71) as usize;
                f[at] ^= 1 << rng.range(0, 7);
                let stream = [f, login].concat();
                if auth {
                    (stream, Some(R2), REJECTED)
                } else {
                    (stream, None, &[CloseReason::BadData])
                }
            }
            Attack::NotWellFormed => {
                let key = keys.subscriber(rng);
                let len = key.key_id.as_str().len();
                let mut f = auth_frame(&key);
                match rng.range(0, 3) {
                    0 => f[4..12].copy_from_slice(&rng.range(1, u64::MAX).to_le_bytes()),
                    1 => {
                        let bad = [b' ', b'/', b'!', b':', 0x80, 0xff][rng.range(0, 5) as usize];
                        f[20 + rng.range(0, len as u64 - 1) as usize] = bad;
                    }
                    2 => f[20..36].fill(0), // an empty key id
                    _ => f[20 + 15] = b'x', // padding, then a character
                }
                ([reseal(f), login].concat(), Some(R2), REJECTED)
            }
            Attack::NotPermitted => {
                let stream = if rng.pct(50) {
                    [auth_frame(&Keys::pick(&keys.retransmit, rng)), login].concat()
                } else {
                    let ask = frame(
                        &Payload::Retransmit {
                            session_id: 0,
                            count: rng.range(1, 100),
                        },
                        rng.range(1, 100),
                    );
                    [auth_frame(&Keys::pick(&keys.subscribe, rng)), ask].concat()
                };
                (stream, Some(R3), REJECTED)
            }
            Attack::AuthOnly => {
                let key = if auth {
                    keys.subscriber(rng)
                } else {
                    ClientKey {
                        key_id: unknown_key_id(rng),
                        secret: random_secret(rng),
                    }
                };
                let closes: &'static [CloseReason] = if rng.pct(50) {
                    close_at = Some(Duration::ZERO);
                    &[CloseReason::PeerClosed]
                } else {
                    &[CloseReason::LoginTimeout]
                };
                (auth_frame(&key), None, closes)
            }
            Attack::Flood => {
                let (trigger, answer) = if rng.pct(50) {
                    (login.clone(), R1)
                } else {
                    let key = wrong_secret(keys.any(rng), rng);
                    ([auth_frame(&key), login].concat(), R2)
                };
                (trigger, Some(answer), REJECTED)
            }
        };
        let mut pieces = fragment(stream, rng);
        let mut last = pieces.last().map_or(Duration::ZERO, |p| p.0);
        if attack == Attack::Flood {
            // Later writes: drained, more than 4 KiB of them.
            let total = rng.range(REJECT_DRAIN_BYTES as u64 + 1, 9_000) as usize;
            let mut sent = 0;
            if bugs && rng.pct(30) {
                // With the trigger.
                let junk = (0..total).map(|_| rng.next() as u8);
                pieces.last_mut().unwrap().1.extend(junk);
                sent = total;
            }
            while sent < total {
                last += rng.ms(1, 10);
                let n = (rng.range(300, 3_000) as usize).min(total - sent);
                pieces.push((last, (0..n).map(|_| rng.next() as u8).collect()));
                sent += n;
            }
        }
        if close_at.is_some() || (answer.is_some() && rng.pct(50)) {
            // After its last write (a close read with it: see
            // `rejected_is_written_when_the_close_comes_with_the_auth`).
            close_at = Some(if bugs && rng.pct(30) {
                last // read with the last write
            } else {
                last + rng.ms(1, 100)
            });
        }
        Hostile {
            attack,
            pieces,
            close_at,
            answer,
            closes,
        }
    }
}

/// `stream` in one write, or in a few pieces a few milliseconds apart (all
/// of it within 160 ms of the accept: before the admission grace and the
/// login timeout).
fn fragment(stream: Vec<u8>, rng: &mut Rng) -> Vec<(Duration, Vec<u8>)> {
    if stream.len() < 2 || !rng.pct(40) {
        return vec![(Duration::ZERO, stream)];
    }
    let n = rng.range(2, 8.min(stream.len() as u64)) as usize;
    let mut cuts: Vec<usize> = (1..n)
        .map(|_| rng.range(1, stream.len() as u64 - 1) as usize)
        .collect();
    cuts.push(0);
    cuts.push(stream.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut at = Duration::ZERO;
    cuts.windows(2)
        .map(|w| {
            let piece = (at, stream[w[0]..w[1]].to_vec());
            at += rng.ms(0, 20);
            piece
        })
        .collect()
}

/// The lock-out rule of section 11 as the sim expects it, fed with the
/// reason-2 Rejecteds the server queued, when it queued them.
struct LockModel {
    rule: LockOutConfig,
    /// Address → (failures, start of its window).
    failures: HashMap<IpAddr, (u32, Duration)>,
}

impl LockModel {
    fn failed(&mut self, peer: IpAddr, now: Duration) {
        let entry = self.failures.entry(peer).or_insert((0, now));
        if now - entry.1 >= self.rule.window {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    fn locked(&self, peer: IpAddr, now: Duration) -> bool {
        self.failures.get(&peer).is_some_and(|&(n, since)| {
            n >= self.rule.max_failures && now - since < self.rule.window
        })
    }
}

/// A connection: the server's end (a `ConnId` once accepted) and the
/// client's, joined by two byte pipes.
#[derive(Debug)]
struct Link {
    client: Option<usize>,
    /// Does this after connecting (a hostile peer), or nothing at all (an
    /// idle one), when `client` is `None`.
    hostile: Option<Hostile>,
    /// Every byte the server wrote to a connection of no client.
    wire: Vec<u8>,
    /// Bytes the server wrote, and the first 32 of them.
    written: usize,
    head: Vec<u8>,
    /// Times `poll_write_shutdown` said yes.
    write_shuts: u32,
    /// The server queued a Rejected (its event): when, why.
    rejected: Option<(Duration, RejectReason)>,
    /// Bytes the server read in later turns than its Rejected (drained).
    drained: usize,
    /// The lock-out model said this address was locked at the accept.
    locked_at_accept: bool,
    peer: IpAddr,
    latency: Duration,
    conn: Option<ConnId>,
    /// Accepted and not yet released by the server.
    server_open: bool,
    accepted_at: Option<Duration>,
    /// Server → client: (arrival, bytes); the bytes in it are the server
    /// socket's kernel backlog, bounded by `cap`.
    s2c: VecDeque<(Duration, Vec<u8>)>,
    s2c_bytes: usize,
    cap: usize,
    /// Client → server.
    c2s: VecDeque<(Duration, Vec<u8>)>,
    /// The server closed: the client sees the end once `s2c` is read.
    fin_to_client: bool,
    /// The client closed (or the link was reset): the server hears at.
    fin_to_server: Option<(Duration, bool)>,
    /// The client's end is gone.
    client_closed: bool,
    /// The server has bytes it could not write (the pipe was full).
    want_write: bool,
    blackholed_at: Option<Duration>,
    stalled: bool,
    /// The server's close.
    closed: Option<(Duration, CloseReason)>,
    // The client's view of this connection.
    login_seq: Option<u64>,
    /// The next sequence this connection must deliver or report.
    expect: u64,
    last_rx: Option<Duration>,
    frames: u64,
    gap_frames: u64,
}

impl Link {
    fn new(client: Option<usize>, peer: IpAddr, latency: Duration, cap: usize) -> Link {
        Link {
            client,
            hostile: None,
            wire: Vec::new(),
            written: 0,
            head: Vec::new(),
            write_shuts: 0,
            rejected: None,
            drained: 0,
            locked_at_accept: false,
            peer,
            latency,
            conn: None,
            server_open: false,
            accepted_at: None,
            s2c: VecDeque::new(),
            s2c_bytes: 0,
            cap,
            c2s: VecDeque::new(),
            fin_to_client: false,
            fin_to_server: None,
            client_closed: false,
            want_write: false,
            blackholed_at: None,
            stalled: false,
            closed: None,
            login_seq: None,
            expect: 0,
            last_rx: None,
            frames: 0,
            gap_frames: 0,
        }
    }

    /// Who is on the other end, for messages.
    fn what(&self) -> String {
        match (&self.hostile, self.client) {
            (Some(h), _) => format!(
                "hostile {:?}, writes of {:?} bytes at {:?}, closing at {:?}",
                h.attack,
                h.pieces.iter().map(|p| p.1.len()).collect::<Vec<_>>(),
                h.pieces.iter().map(|p| p.0).collect::<Vec<_>>(),
                h.close_at
            ),
            (None, Some(c)) => format!("client {c}"),
            (None, None) => "idle".into(),
        }
    }

    /// Healthy: the heartbeat rule and "no gap" apply to it.
    fn healthy(&self) -> bool {
        !self.stalled && self.blackholed_at.is_none()
    }
}

struct Client {
    session: ClientSession,
    parser: Parser<Box<[u8]>>,
    peer: IpAddr,
    link: Option<usize>,
    start_at: Duration,
    started: bool,
    stalled_until: Option<Duration>,
    /// Reads in pieces of at most this many bytes.
    fragment: usize,
    stopped_by_end: bool,
    /// The server must refuse it with this reason (a wrong secret, an
    /// unknown key, a key that may not subscribe, no credentials); `None`:
    /// a real client whose credentials (if it needs any) are valid.
    refuse: Option<RejectReason>,
    /// The Rejected it reported, and its GaveUp.
    refused: Option<RejectReason>,
    gave_up: Option<Lost>,
}

/// What a client reported, owned (the frames are checked as they come).
#[derive(Debug)]
enum Rx {
    LoggedIn(u64),
    Data { sequence: u64, same: bool },
    Other(u64),
    Gap(Gap),
    Duplicate(u64),
    Discarded(u64),
    EndOfSession,
    Lost,
    Rejected(RejectReason),
    GaveUp(Lost),
}

/// Every published frame, by sequence.
#[derive(Default)]
struct Published {
    bytes: Vec<u8>,
    /// (offset, len) by sequence − 1; len 0 for a relay hole.
    at: Vec<(usize, usize)>,
    holes: u64,
}

impl Published {
    fn frame(&self, sequence: u64) -> Option<&[u8]> {
        let &(offset, len) = self
            .at
            .get(usize::try_from(sequence.checked_sub(1)?).ok()?)?;
        (len > 0).then(|| &self.bytes[offset..offset + len])
    }

    /// How many of `gap`'s sequences are relay holes.
    fn holes_in(&self, gap: &Gap) -> u64 {
        (gap.first..=gap.last)
            .filter(|&s| {
                self.at
                    .get((s - 1) as usize)
                    .is_some_and(|&(_, len)| len == 0)
            })
            .count() as u64
    }
}

#[derive(Default, Debug)]
struct Counts {
    logins: u64,
    frames: u64,
    gap_frames: u64,
    login_gap_frames: u64,
    cuts: u64,
    stalls: u64,
    blackholes: u64,
    slow_marks: u64,
    max_silence: Duration,
    max_no_progress: Duration,
    steps: u64,
    /// Section 11: runs that required authentication; Rejecteds received
    /// by reason (1 to 3); connections locked out; hostile connections.
    auth_runs: u64,
    rejected: [u64; 3],
    locked_out: u64,
    hostile: u64,
}

struct Sim {
    p: Params,
    rng: Rng,
    now: Duration,
    core: ServerCore,
    sequencer: Sequencer,
    published: Published,
    frames_left: u64,
    next_publish: Duration,
    next_fault: Duration,
    faults_on: bool,
    clients: Vec<Client>,
    links: Vec<Link>,
    by_conn: HashMap<ConnId, usize>,
    /// (when, link): the client's connect completes.
    connects: Vec<(Duration, usize)>,
    /// (when, link): the server accepts it.
    accepts: Vec<(Duration, usize)>,
    slow: HashSet<ConnId>,
    /// The server's LoggedIn event per connection: (wanted, start, oldest).
    logins: HashMap<ConnId, (u64, u64, u64)>,
    counts: Counts,
    /// `SIM_TRACE=1`: print logins, slow marks, blackholes and link 0's timers.
    trace: bool,
    /// What the lock-out must do (with authentication).
    lock: LockModel,
}

impl Sim {
    fn new(p: Params) -> Sim {
        let mut config = CoreConfig::new(7);
        config.retain = p.retain;
        config.session.heartbeat_interval = HB;
        config.session.login_timeout = LOGIN_TIMEOUT;
        config.session.slow_threshold = p.slow_threshold;
        config.session.slow_grace = p.slow_grace;
        config.session.queue_limit = 4 * p.slow_threshold;
        config.session.slow_policy = p.policy;
        config.session.no_progress_intervals = p.no_progress_intervals;
        config.lockout = LockOutConfig {
            max_failures: p.lockout_failures,
            window: p.lockout_window,
            max_addresses: 4096,
        };
        let mut rng = Rng(p.seed);
        // Section 11 draws from a stream of its own: the rest of a seed's
        // run is drawn as it was before.
        let mut arng = Rng(p.seed ^ 0xa117_0000_0000_0000);
        let keys = Keys::draw(&mut arng);
        let publish_for = ms(p.frames / 10 + 500); // about 10 frames per ms
        let burst_at = rng.ms(0, 200);
        let mut clients: Vec<Client> = (0..p.clients)
            .map(|i| {
                let mut config = ClientSessionConfig::default();
                config.heartbeat_interval = HB;
                config.connect_timeout = ms(1000);
                config.backoff =
                    Backoff::new(ms(50), ms(800)).with_jitter(p.seed ^ (i as u64) << 20);
                config.reconnect_after_end = false;
                config.from = match rng.range(0, 3) {
                    0 => 0,
                    1 => 1,
                    _ => rng.range(1, p.frames),
                };
                config.credentials = if p.auth {
                    Some(keys.subscriber(&mut arng))
                } else if arng.pct(30) {
                    // Sent anyway: the server ignores it (rule 3).
                    Some(ClientKey {
                        key_id: unknown_key_id(&mut arng),
                        secret: random_secret(&mut arng),
                    })
                } else {
                    None
                };
                let (peer, start_at) = if i < p.burst {
                    (IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)), burst_at)
                } else {
                    (
                        IpAddr::V4(Ipv4Addr::new(10, 2, (i >> 8) as u8, i as u8)),
                        rng.ms(0, publish_for.as_millis() as u64 / 2),
                    )
                };
                Client {
                    session: ClientSession::new(config),
                    parser: Parser::with_capacity(1 << 16).unwrap(),
                    peer,
                    link: None,
                    start_at,
                    started: false,
                    stalled_until: None,
                    fragment: if rng.pct(50) {
                        rng.range(1, 100) as usize
                    } else {
                        usize::MAX
                    },
                    stopped_by_end: false,
                    refuse: None,
                    refused: None,
                    gave_up: None,
                }
            })
            .collect();
        if p.auth {
            // Client sessions the server must refuse, each from its own
            // address.
            for k in 0..p.refused {
                use RejectReason::{AuthenticationRequired, NotAuthorized, NotPermitted};
                let (credentials, reason) = match arng.range(0, 3) {
                    0 => (
                        Some(wrong_secret(keys.any(&mut arng), &mut arng)),
                        NotAuthorized,
                    ),
                    1 => (
                        Some(ClientKey {
                            key_id: unknown_key_id(&mut arng),
                            secret: keys.any(&mut arng).secret,
                        }),
                        NotAuthorized,
                    ),
                    2 => (Some(Keys::pick(&keys.retransmit, &mut arng)), NotPermitted),
                    _ => (None, AuthenticationRequired),
                };
                let mut config = ClientSessionConfig::default();
                config.heartbeat_interval = HB;
                config.connect_timeout = ms(1000);
                config.backoff = Backoff::new(ms(50), ms(800));
                config.reconnect_after_end = false;
                config.from = arng.range(0, p.frames);
                config.credentials = credentials;
                clients.push(Client {
                    session: ClientSession::new(config),
                    parser: Parser::with_capacity(1 << 16).unwrap(),
                    peer: IpAddr::V4(Ipv4Addr::new(10, 6, 0, k as u8)),
                    link: None,
                    start_at: arng.ms(0, publish_for.as_millis() as u64 / 2),
                    started: false,
                    stalled_until: None,
                    fragment: arng.range(1, 100) as usize,
                    stopped_by_end: false,
                    refuse: Some(reason),
                    refused: None,
                    gave_up: None,
                });
            }
        }
        let mut core = ServerCore::new(config, at(Duration::ZERO));
        if p.auth {
            core.set_verifier(Some(Arc::new(keys.credentials())));
        }
        let mut sim = Sim {
            core,
            lock: LockModel {
                rule: config.lockout,
                failures: HashMap::new(),
            },
            sequencer: Sequencer::new(),
            published: Published::default(),
            frames_left: p.frames,
            next_publish: Duration::ZERO,
            next_fault: p.fault_every,
            faults_on: true,
            clients,
            links: Vec::new(),
            by_conn: HashMap::new(),
            connects: Vec::new(),
            accepts: Vec::new(),
            slow: HashSet::new(),
            logins: HashMap::new(),
            counts: Counts::default(),
            trace: env("SIM_TRACE").is_some_and(|v| v > 0),
            now: Duration::ZERO,
            rng,
            p,
        };
        // Idle connections from one address, all at once, and hostile ones.
        let flood_at = sim.rng.ms(0, 300);
        for _ in 0..sim.p.idle_flood {
            let link = sim.new_link(None, IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)));
            sim.accepts.push((flood_at, link));
        }
        for i in 0..sim.p.hostile {
            let peer = IpAddr::V4(Ipv4Addr::new(10, 3, 0, i as u8));
            let plan = Hostile::plan(Attack::Random, &sim.p, &keys, &mut sim.rng);
            let when = sim.rng.ms(0, publish_for.as_millis() as u64);
            sim.hostile(peer, plan, when);
        }
        // Section 11: hostile Auths, each from its own address (without
        // authentication, the few that are still refused or closed).
        let auth = sim.p.auth;
        let attacks = if auth {
            sim.p.attacks
        } else {
            sim.p.attacks / 4
        };
        let span = publish_for.as_millis() as u64;
        for k in 0..attacks {
            let peer = IpAddr::V4(Ipv4Addr::new(10, 7, 0, k as u8));
            let attack = Attack::draw(auth, &mut arng);
            let plan = Hostile::plan(attack, &sim.p, &keys, &mut arng);
            sim.hostile(peer, plan, arng.ms(0, span));
        }
        if auth && sim.p.brute_one > 0 {
            // Past the lock-out from one address: a burst, then (if any
            // are left) another around the end of its window: the address
            // may try again, and is locked out again.
            let n = sim.p.lockout_failures as usize + sim.p.brute_one;
            let first =
                sim.p.lockout_failures as usize + arng.range(0, sim.p.brute_one as u64) as usize;
            let pace = [5, 50, 200][arng.range(0, 2) as usize];
            let start = arng.ms(0, span / 2);
            let mut when = start;
            for k in 0..n {
                if k == first {
                    when = (start + sim.p.lockout_window + arng.ms(0, 600))
                        .saturating_sub(ms(300))
                        .max(when);
                }
                let plan = Hostile::plan(Attack::BruteForce, &sim.p, &keys, &mut arng);
                sim.hostile(IpAddr::V4(Ipv4Addr::new(10, 4, 0, 1)), plan, when);
                when += arng.ms(0, pace);
            }
        }
        if auth {
            // From many addresses, a few attempts each.
            for a in 0..sim.p.brute_many {
                let peer = IpAddr::V4(Ipv4Addr::new(10, 5, 0, a as u8));
                for _ in 0..arng.range(1, 3) {
                    let plan = Hostile::plan(Attack::BruteForce, &sim.p, &keys, &mut arng);
                    sim.hostile(peer, plan, arng.ms(0, span.min(1_500)));
                }
            }
        }
        sim.counts.auth_runs = u64::from(auth);
        sim
    }

    /// A hostile connection from `peer`, accepted at `when`.
    fn hostile(&mut self, peer: IpAddr, plan: Hostile, when: Duration) {
        let link = self.new_link(None, peer);
        self.links[link].hostile = Some(plan);
        self.accepts.push((when, link));
        self.counts.hostile += 1;
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "seed {} at {:?}: {what}\nparams: {:?}\ncounts: {:?}\nstats: {:?}",
            self.p.seed,
            self.now,
            self.p,
            self.counts,
            self.core.stats()
        );
    }

    fn new_link(&mut self, client: Option<usize>, peer: IpAddr) -> usize {
        let latency = ms(self.rng.range(0, self.p.max_latency));
        let cap = self.rng.range(16, 256) as usize * 1024;
        self.links.push(Link::new(client, peer, latency, cap));
        self.links.len() - 1
    }

    fn run(&mut self) {
        // Publishing, with faults.
        while self.frames_left > 0 || self.now < ms(500) {
            self.step_to_next(None);
        }
        // Quiesce: no new faults, stalls end; every client reconnects and
        // catches up.
        self.faults_on = false;
        for c in &mut self.clients {
            if c.stalled_until.is_some() {
                c.stalled_until = Some(self.now);
            }
        }
        let settle = HB * (self.p.no_progress_intervals + 2) + ms(2_000);
        let until = self.now + settle;
        while self.now < until {
            self.step_to_next(Some(until));
        }
        let limit = self.now + ms(20_000);
        while !self.all_caught_up() {
            if self.now >= limit {
                self.fail("clients did not catch up after the faults ended");
            }
            self.step_to_next(Some(limit));
        }
        for (i, link) in self.links.iter().enumerate() {
            if let Some(since) = link.blackholed_at {
                if link.accepted_at.is_some() && link.closed.is_none() {
                    self.fail(&format!("blackholed link {i} (since {since:?}) still open"));
                }
            }
        }
        // Shutdown: every client gets EndOfSession and stops; the core drains.
        let t = at(self.now);
        self.core.shutdown(t);
        let limit = self.now + ms(5_000);
        while !(self.core.is_drained()
            && self.accepts.is_empty()
            && self
                .clients
                .iter()
                .all(|c| c.stopped_by_end || c.refuse.is_some()))
        {
            if self.now >= limit {
                self.fail("the shutdown did not drain");
            }
            self.step_to_next(Some(limit));
        }
        self.final_checks();
    }

    fn all_caught_up(&self) -> bool {
        let next = self.core.next_sequence();
        self.clients.iter().all(|c| {
            c.refuse.is_some()
                || c.session.state() == ClientState::LoggedIn
                    && c.link.is_some_and(|l| {
                        self.links[l].expect == next && self.links[l].s2c.is_empty()
                    })
        })
    }

    fn final_checks(&mut self) {
        let stats = self.core.stats();
        for (i, c) in self.clients.iter().enumerate() {
            if let Some(reason) = c.refuse {
                // Refused once, given up, never logged in (checked as
                // reported).
                let lost = Some(Lost::Rejected(reason));
                if !c.session.is_stopped()
                    || c.session.last_lost() != lost
                    || c.refused != Some(reason)
                    || c.gave_up != lost
                    || c.session.stats().connects != 1
                {
                    self.fail(&format!(
                        "client {i}, to be refused ({reason:?}): stopped {}, last lost {:?}, reported {:?} then {:?}, {} connections",
                        c.session.is_stopped(),
                        c.session.last_lost(),
                        c.refused,
                        c.gave_up,
                        c.session.stats().connects
                    ));
                }
            } else if !c.stopped_by_end {
                self.fail(&format!(
                    "client {i} did not get EndOfSession at the shutdown"
                ));
            }
        }
        let explained = stats.skipped_frames + stats.replay_trimmed;
        if self.counts.gap_frames > explained {
            self.fail(&format!(
                "clients saw {} frames of gaps, the server skipped {} and trimmed {}",
                self.counts.gap_frames, stats.skipped_frames, stats.replay_trimmed
            ));
        }
        if stats.closed_for(CloseReason::UnauthenticatedLimit) > 0
            && self.p.idle_flood <= 16
            && self.counts.hostile == 0
        {
            // Only idle or hostile connections may be displaced (checked
            // per connection at its close; this is a cross-check).
            self.fail("a connection was displaced without an idle flood");
        }
        if self.p.idle_flood > 16 && stats.displaced_per_peer < (self.p.idle_flood - 16) as u64 {
            self.fail(&format!(
                "an idle flood of {} from one address displaced only {}",
                self.p.idle_flood, stats.displaced_per_peer
            ));
        }
        if stats.open != 0 || stats.clients != 0 {
            self.fail("connections left after the drain");
        }
        // Section 11: the server's counters are what the other side saw.
        let [r1, r2, r3] = self.counts.rejected;
        let lockout = self.core.lockout_stats().0;
        let expected = if self.p.auth {
            (r2, r3, self.counts.locked_out, self.counts.locked_out)
        } else {
            (0, 0, 0, 0)
        };
        let got = (
            stats.auth_failures,
            stats.not_permitted,
            stats.closed_for(CloseReason::LockedOut),
            lockout,
        );
        let rejected = stats.closed_for(CloseReason::Rejected);
        if got != expected
            || (!self.p.auth && (stats.authenticated > 0 || r1 > 0 || rejected > 0))
            || (self.p.auth && stats.authenticated < self.counts.logins)
            || rejected > r1 + r2 + r3
        {
            self.fail(&format!(
                "auth counters (failures, not permitted, locked out, lock-out refusals) {got:?}, expected {expected:?}; {} authenticated for {} logins; {rejected} closed as rejected, {:?} Rejecteds received",
                stats.authenticated, self.counts.logins, self.counts.rejected
            ));
        }
    }

    /// Runs everything due now, then moves the clock to the next deadline
    /// (at most `limit`).
    fn step_to_next(&mut self, limit: Option<Duration>) {
        self.step();
        self.counts.steps += 1;
        if self.counts.steps > 50_000_000 {
            self.fail("runaway simulation");
        }
        let mut next = limit.unwrap_or(Duration::MAX);
        let mut consider = |t: Duration| next = next.min(t);
        if self.frames_left > 0 {
            consider(self.next_publish);
        }
        if self.faults_on {
            consider(self.next_fault);
        }
        for &(t, _) in self.connects.iter().chain(&self.accepts) {
            consider(t);
        }
        if let Some(t) = self.core.poll_timeout() {
            consider(t);
        }
        for link in &self.links {
            if link.server_open && link.blackholed_at.is_none() {
                if let Some(&(t, _)) = link.c2s.front() {
                    consider(t);
                }
                if let Some((t, _)) = link.fin_to_server {
                    consider(t);
                }
            }
        }
        for c in &self.clients {
            if !c.started {
                consider(c.start_at);
                continue;
            }
            if let Some(until) = c.stalled_until {
                consider(until);
                continue;
            }
            if let Some(t) = c.session.poll_timeout() {
                consider(t);
            }
            if let Some(l) = c.link {
                let link = &self.links[l];
                if link.blackholed_at.is_none() {
                    if let Some(&(t, _)) = link.s2c.front() {
                        consider(t);
                    }
                }
            }
        }
        if next == Duration::MAX {
            self.fail("nothing left to wait for");
        }
        self.now = next.max(self.now + STEP);
    }

    fn step(&mut self) {
        let now = self.now;
        let t = at(now);
        // Connections complete on the client's side, then the server accepts.
        let due: Vec<usize> = take_due(&mut self.connects, now);
        for l in due {
            self.client_connected(l);
        }
        let due: Vec<usize> = take_due(&mut self.accepts, now);
        for l in due {
            self.accept(l);
        }
        if self.frames_left > 0 && now >= self.next_publish {
            self.publish();
        }
        // Client → server bytes and ends.
        for l in 0..self.links.len() {
            self.server_read(l);
        }
        // Timers.
        self.core.handle_timeout(t);
        while let Some(id) = self.core.poll_expired(now) {
            let backlog = self
                .by_conn
                .get(&id)
                .map_or(0, |&l| self.links[l].s2c_bytes);
            if self.trace && self.by_conn.get(&id) == Some(&0) {
                eprintln!(
                    "{:?} timeout link 0 backlog {backlog} phase {:?} next {:?}",
                    now,
                    self.core.phase(id),
                    self.core.conn_timeout(id)
                );
            }
            self.core.handle_conn_timeout(id, t, backlog);
            if self.trace && self.by_conn.get(&id) == Some(&0) {
                eprintln!(
                    "   -> next {:?} close {:?}",
                    self.core.conn_timeout(id),
                    self.core.close_reason(id)
                );
            }
        }
        self.service_ready();
        // Clients.
        for i in 0..self.clients.len() {
            self.client_step(i);
        }
        self.service_ready();
        if self.faults_on && now >= self.next_fault {
            self.fault();
            let mean = self.p.fault_every.as_millis() as u64;
            self.next_fault = now + ms(self.rng.range(1, 2 * mean));
        }
        self.core_events();
    }

    fn publish(&mut self) {
        let t = at(self.now);
        if self.p.holes && self.rng.pct(5) {
            // A relay's upstream hole: these sequences never come.
            let hole = self.rng.range(1, 50);
            let next = self.sequencer.next_sequence() + hole;
            for _ in 0..hole {
                self.published.at.push((0, 0));
            }
            self.published.holes += hole;
            self.core.advance(next);
            self.sequencer = Sequencer::starting_at(next);
        }
        let n = self.rng.range(1, 200).min(self.frames_left) as usize;
        let msgs: Vec<(u64, Payload)> = (0..n)
            .map(|i| {
                let k = self.published.at.len() + i;
                let payload = if self.rng.pct(30) {
                    Payload::Trade(TradeFields {
                        instrument_id: k as u32,
                        price: self.rng.next() as i32,
                        size: 1,
                        side: 1,
                        flags: 0,
                    })
                } else {
                    Payload::Quote(QuoteFields {
                        instrument_id: k as u32,
                        bid_price: self.rng.next() as i32,
                        ask_price: k as i32,
                        bid_size: 1,
                        ask_size: 2,
                    })
                };
                (t.unix_nanos, payload)
            })
            .collect();
        let mut bytes = vec![0u8; n * 44];
        let done = self.sequencer.encode_batch(&msgs, &mut bytes);
        assert_eq!(done.frames, n);
        bytes.truncate(done.bytes);
        let batch = Arc::new(Batch::new(bytes).unwrap());
        assert_eq!(batch.first(), self.published.at.len() as u64 + 1);
        for m in SliceParser::new(batch.bytes()) {
            if let Event::Frame(m) = m {
                let offset = self.published.bytes.len();
                self.published.bytes.extend_from_slice(m.as_bytes());
                self.published.at.push((offset, m.as_bytes().len()));
            }
        }
        self.frames_left -= n as u64;
        self.core.publish(batch, t);
        let pause = match self.rng.range(0, 99) {
            0..=1 => self.rng.ms(300, 1_500), // a quiet market: heartbeats
            2..=39 => Duration::ZERO,         // a burst
            _ => self.rng.ms(1, 20),
        };
        // Paced: at most a quarter of the slow threshold per round trip.
        let round_trip = (2 * self.p.max_latency + 1) as u128 * 1_000_000;
        let paced = Duration::from_nanos(
            (done.bytes as u128 * round_trip * 4 / self.p.slow_threshold as u128) as u64,
        );
        self.next_publish = self.now
            + if self.p.overload {
                pause
            } else {
                pause.max(paced)
            };
    }

    fn accept(&mut self, l: usize) {
        let t = at(self.now);
        let peer = self.links[l].peer;
        if self.links[l].client_closed && self.links[l].fin_to_server.is_none() {
            return; // gone before it was accepted, unseen
        }
        // The failures counted so far (this turn's included).
        self.core_events();
        let locked = self.p.auth && self.lock.locked(peer, self.now);
        let port = 10_000 + (l % 50_000) as u16;
        let id = self.core.accept(std::net::SocketAddr::new(peer, port), t);
        self.by_conn.insert(id, l);
        let refused = self.core.close_reason(id) == Some(CloseReason::LockedOut);
        if refused != locked {
            self.fail(&format!(
                "link {l} from {peer}: locked out at its accept {refused}, the rule says {locked} ({:?})",
                self.lock.failures.get(&peer)
            ));
        }
        let now = self.now;
        let link = &mut self.links[l];
        link.conn = Some(id);
        link.server_open = true;
        link.accepted_at = Some(now);
        link.locked_at_accept = locked;
        if let Some(plan) = &link.hostile {
            for (after, bytes) in &plan.pieces {
                link.c2s
                    .push_back((now + link.latency + *after, bytes.clone()));
            }
            if let Some(after) = plan.close_at {
                link.fin_to_server = Some((now + link.latency + after, false));
            }
        }
        // The driver reads at once what the peer has sent already.
        self.server_read(l);
    }

    fn server_read(&mut self, l: usize) {
        let now = self.now;
        let link = &mut self.links[l];
        let Some(id) = link.conn else { return };
        if !link.server_open || link.blackholed_at.is_some() {
            return;
        }
        let mut input = Vec::new();
        while link.c2s.front().is_some_and(|&(t, _)| t <= now) {
            input.extend(link.c2s.pop_front().unwrap().1);
        }
        let fin = link
            .fin_to_server
            .filter(|&(t, _)| t <= now && link.c2s.is_empty());
        let t = at(now);
        if link.rejected.is_some_and(|(when, _)| when < now) {
            link.drained += input.len();
        }
        let drained = link.drained;
        if !input.is_empty() && self.p.known_bugs && self.p.seed % 2 == 1 {
            // As the mio and tokio drivers read (odd seeds, with
            // `SIM_AUTH_BUGS`): into the core's buffer until a short read;
            // a read into no room returns 0, an EOF.
            let mut rest = &input[..];
            while let Some(spare) = self.core.input_buffer(id) {
                if spare.is_empty() {
                    self.core.handle_eof(id, t);
                    break;
                }
                if rest.is_empty() {
                    break; // it would block
                }
                let room = spare.len();
                let n = room.min(rest.len());
                spare[..n].copy_from_slice(&rest[..n]);
                self.core.input_committed(id, n, t);
                rest = &rest[n..];
                if n < room {
                    break;
                }
            }
        } else if !input.is_empty() {
            self.core.handle_input(id, &input, t);
        }
        if drained >= REJECT_DRAIN_BYTES && self.core.close_reason(id).is_none() {
            self.fail(&format!(
                "link {l}: {drained} bytes read after its Rejected, still open"
            ));
        }
        if let Some((_, reset)) = fin {
            self.links[l].fin_to_server = None;
            if reset {
                self.core.handle_failure(id, CloseReason::PeerClosed);
            } else {
                self.core.handle_eof(id, t);
            }
        }
    }

    fn service_ready(&mut self) {
        while let Some(id) = self.core.poll_ready() {
            self.service(id);
        }
    }

    fn service(&mut self, id: ConnId) {
        let Some(&l) = self.by_conn.get(&id) else {
            self.fail(&format!("ready {id} is not a connection of the driver"));
        };
        let t = at(self.now);
        if let Some(reason) = self.core.close_reason(id) {
            self.core.release(id);
            let link = &mut self.links[l];
            link.server_open = false;
            link.fin_to_client = true;
            link.want_write = false;
            link.closed = Some((self.now, reason));
            self.check_close(l, reason);
            return;
        }
        let link = &mut self.links[l];
        link.want_write = false;
        loop {
            let room = link.cap - link.s2c_bytes;
            if room == 0 {
                link.want_write = true;
                break;
            }
            let Some(tx) = self.core.poll_transmit(id, t) else {
                break;
            };
            let len = tx.len();
            let mut bytes = Vec::with_capacity(len.min(room));
            for s in tx.slices() {
                let take = s.len().min(room - bytes.len());
                bytes.extend_from_slice(&s[..take]);
                if bytes.len() == room {
                    break;
                }
            }
            let n = bytes.len();
            link.written += n;
            if link.head.len() < 32 {
                let take = (32 - link.head.len()).min(n);
                link.head.extend_from_slice(&bytes[..take]);
            }
            if link.client.is_none() {
                link.wire.extend_from_slice(&bytes);
            }
            if link.client_closed && link.blackholed_at.is_none() {
                // The peer is gone: the kernel drops what is written.
            } else {
                link.s2c_bytes += n;
                link.s2c.push_back((self.now + link.latency, bytes));
            }
            self.core.transmitted(id, n, t);
            if n < len {
                link.want_write = true;
                break;
            }
        }
        if self.core.poll_write_shutdown(id) {
            // Section 11: its Rejected is written, and nothing else.
            link.write_shuts += 1;
            let rejected = link.written == 32 && link.head[2] == 0x08;
            link.fin_to_client = true;
            if link.write_shuts > 1 || !rejected || link.want_write {
                let (times, written) = (link.write_shuts, link.written);
                self.fail(&format!(
                    "link {l}: sending side shut down (time {times}) after {written} bytes (a Rejected: {rejected})"
                ));
            }
        }
    }

    fn core_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            let CoreEvent::Session { conn, event, .. } = event else {
                continue;
            };
            match event {
                ServerEvent::Slow { .. } => {
                    if self.trace {
                        eprintln!("{:?} {conn} {event:?}", self.now);
                    }
                    self.counts.slow_marks += 1;
                    self.slow.insert(conn);
                    let l = self.by_conn[&conn];
                    if let Some(c) = self.links[l].client {
                        if !self.p.overload && self.links[l].healthy() {
                            self.fail(&format!(
                                    "client {c} (link {l}), never stalled or blackholed, was marked slow: {event:?}"
                                ));
                        }
                    }
                }
                ServerEvent::LoggedIn {
                    wanted,
                    start,
                    oldest,
                    ..
                } => {
                    if self.trace {
                        eprintln!("{:?} {conn} logged in: {event:?}", self.now);
                    }
                    self.logins.insert(conn, (wanted, start, oldest));
                }
                ServerEvent::Rejected { reason } => {
                    let l = self.by_conn[&conn];
                    let link = &mut self.links[l];
                    if !self.p.auth || link.rejected.is_some() {
                        self.fail(&format!(
                            "link {l}: a Rejected ({reason:?}) the server should not queue"
                        ));
                    }
                    link.rejected = Some((self.now, reason));
                    if reason == RejectReason::NotAuthorized {
                        self.lock.failed(link.peer, self.now);
                    }
                }
                _ => {}
            }
        }
    }

    fn check_close(&mut self, l: usize, reason: CloseReason) {
        self.core_events(); // its Rejected, if any
        let link = &self.links[l];
        let lived = self.now - link.accepted_at.unwrap_or(self.now);
        let locked = reason == CloseReason::LockedOut;
        if link.locked_at_accept != locked || (locked && lived > Duration::ZERO) {
            self.fail(&format!(
                "link {l} from {} closed with {reason:?} after {lived:?}; locked out at its accept: {}",
                link.peer, link.locked_at_accept
            ));
        }
        if let Some((when, rejected)) = link.rejected {
            // Section 11: one Rejected, the sending side shut down, then a
            // drain of at most 1 s (or 4 KiB: checked as they are read).
            let drained = self.now - when;
            if drained > REJECT_DRAIN + STEP
                || link.write_shuts != 1
                || !matches!(
                    reason,
                    CloseReason::Rejected | CloseReason::UnauthenticatedLimit
                )
            {
                self.fail(&format!(
                    "link {l} ({}) rejected ({rejected:?}), closed {drained:?} after with {reason:?}, its sending side shut down {} times",
                    link.what(),
                    link.write_shuts
                ));
            }
        }
        match (link.client, &link.hostile) {
            (Some(c), _) => {
                let refuse = self.clients[c].refuse;
                match reason {
                    CloseReason::UnauthenticatedLimit => self.fail(&format!(
                        "client {c} (link {l}, peer {}) was displaced by the admission limits",
                        link.peer
                    )),
                    CloseReason::Rejected | CloseReason::LockedOut if refuse.is_none() => {
                        self.fail(&format!(
                            "client {c} (link {l}, peer {}), with valid credentials, closed: {reason:?}",
                            link.peer
                        ));
                    }
                    _ => {}
                }
            }
            (None, None) => {
                // Idle.
                let ok = matches!(
                    reason,
                    CloseReason::LoginTimeout
                        | CloseReason::UnauthenticatedLimit
                        | CloseReason::Shutdown
                );
                if !ok || lived > LOGIN_TIMEOUT + STEP || link.written > 0 {
                    self.fail(&format!(
                        "idle link {l} closed with {reason:?} after {lived:?}, {} bytes written to it",
                        link.written
                    ));
                }
            }
            (None, Some(plan)) => {
                let grace = self.core.config().admission_grace;
                let ok = locked
                    || plan.closes.contains(&reason)
                    || (reason == CloseReason::UnauthenticatedLimit && lived >= grace)
                    || (reason == CloseReason::Shutdown && self.core.is_shutting_down());
                if !ok || (link.rejected.is_none() && lived > LOGIN_TIMEOUT + STEP) {
                    self.fail(&format!(
                        "link {l} ({}) closed with {reason:?} after {lived:?}, expected {:?}",
                        link.what(),
                        plan.closes
                    ));
                }
                self.check_answer(l, reason);
            }
        }
        let link = &self.links[l];
        if let Some(since) = link.blackholed_at {
            let bound = HB * (self.p.no_progress_intervals + 1) + BACKLOG_CHECK + link.latency + MS;
            let took = self.now - since;
            self.counts.max_no_progress = self.counts.max_no_progress.max(took);
            if took > bound {
                self.fail(&format!(
                    "blackholed link {l} closed ({reason:?}) {took:?} after, more than {bound:?}"
                ));
            }
            if !matches!(
                reason,
                CloseReason::NoProgress | CloseReason::Slow | CloseReason::Shutdown
            ) {
                self.fail(&format!("blackholed link {l} closed with {reason:?}"));
            }
        }
    }

    /// What the server wrote to hostile link `l`: one Rejected with the
    /// reason its plan says (sequence 0, reserved bytes 0), or nothing.
    fn check_answer(&mut self, l: usize, reason: CloseReason) {
        let link = &self.links[l];
        let plan = link.hostile.as_ref().unwrap();
        let expected = match reason {
            CloseReason::LockedOut | CloseReason::Shutdown => None,
            _ => plan.answer,
        };
        let mut frames = Vec::new();
        let mut garbage = 0;
        for event in SliceParser::new(&link.wire) {
            match event {
                Event::Frame(Message::Rejected(r)) => frames.push(Ok(r.reason())),
                Event::Frame(m) => frames.push(Err(m.msg_type())),
                Event::Discarded(d) => garbage += d.bytes,
                _ => {}
            }
        }
        let wire = &link.wire;
        let got = match frames.as_slice() {
            [] => None,
            [Ok(r)] if wire.len() == 32 && wire[4..12] == [0; 8] && wire[21..28] == [0; 7] => {
                Some(*r)
            }
            _ => {
                self.fail(&format!(
                    "hostile link {l} ({:?}) was sent {frames:?} and {garbage} other bytes",
                    plan.attack
                ));
            }
        };
        if got != expected || garbage > 0 {
            self.fail(&format!(
                "link {l} ({}), closed with {reason:?}, was sent {got:?}, expected {expected:?}",
                link.what()
            ));
        }
        if let Some(r) = got {
            self.counts.rejected[r.code() as usize - 1] += 1;
        }
        if reason == CloseReason::LockedOut {
            self.counts.locked_out += 1;
        }
    }

    fn fault(&mut self) {
        let now = self.now;
        let logged_in: Vec<usize> = (0..self.clients.len())
            .filter(|&i| {
                let c = &self.clients[i];
                c.session.state() == ClientState::LoggedIn
                    && c.stalled_until.is_none()
                    && c.link
                        .is_some_and(|l| self.links[l].blackholed_at.is_none())
            })
            .collect();
        if logged_in.is_empty() {
            return;
        }
        let i = logged_in[self.rng.range(0, logged_in.len() as u64 - 1) as usize];
        let l = self.clients[i].link.unwrap();
        match self.rng.range(0, 9) {
            0..=4 => {
                // The client stops reading (and everything else) for a while.
                self.counts.stalls += 1;
                let d = self.rng.ms(10, HB.as_millis() as u64 * 8);
                self.clients[i].stalled_until = Some(now + d);
                self.links[l].stalled = true;
            }
            5..=6 => {
                // Half-open: every packet is dropped both ways from now on.
                self.counts.blackholes += 1;
                let link = &mut self.links[l];
                link.blackholed_at = Some(now);
                if self.trace {
                    eprintln!("{now:?} blackhole link {l}");
                }
                link.c2s.clear();
            }
            _ => {
                // Reset: both ends see it, bytes in flight are lost.
                self.counts.cuts += 1;
                let link = &mut self.links[l];
                link.s2c.clear();
                link.s2c_bytes = 0;
                link.c2s.clear();
                link.fin_to_server = Some((now + link.latency, true));
                let t = at(now);
                let mut rx = Vec::new();
                self.clients[i].session.handle_lost(
                    Lost::Error(tickwire::session::IoFailure::Reset),
                    t,
                    &mut |e| rx.push(own(&self.published, e)),
                );
                self.client_rx(i, l, rx);
                self.client_actions(i);
            }
        }
    }

    fn client_connected(&mut self, l: usize) {
        let Some(i) = self.links[l].client else {
            return;
        };
        if self.clients[i].link != Some(l) {
            return; // abandoned meanwhile
        }
        let t = at(self.now);
        let mut rx = Vec::new();
        self.clients[i]
            .session
            .handle_connected(t, &mut |e| rx.push(own(&self.published, e)));
        self.client_rx(i, l, rx);
        self.client_actions(i);
    }

    fn client_step(&mut self, i: usize) {
        let now = self.now;
        let t = at(now);
        let c = &mut self.clients[i];
        if !c.started {
            if now < c.start_at {
                return;
            }
            c.started = true;
            let mut rx = Vec::new();
            c.session
                .connect(t, &mut |e| rx.push(own(&self.published, e)));
            self.client_actions(i);
            return;
        }
        if let Some(until) = c.stalled_until {
            if now < until {
                return;
            }
            c.stalled_until = None;
        }
        if let Some(l) = c.link {
            self.client_read(i, l);
        }
        let c = &mut self.clients[i];
        if c.session.poll_timeout().is_some_and(|d| d <= now) {
            let mut rx = Vec::new();
            c.session
                .handle_timeout(t, &mut |e| rx.push(own(&self.published, e)));
            if let Some(l) = self.clients[i].link {
                self.client_rx(i, l, rx);
            }
            self.client_actions(i);
        }
    }

    fn client_read(&mut self, i: usize, l: usize) {
        let now = self.now;
        let t = at(now);
        let link = &mut self.links[l];
        if link.blackholed_at.is_some() {
            return;
        }
        let mut input = Vec::new();
        while link.s2c.front().is_some_and(|&(t, _)| t <= now) {
            input.extend(link.s2c.pop_front().unwrap().1);
        }
        link.s2c_bytes -= input.len();
        let eof = link.fin_to_client && link.s2c.is_empty();
        if !input.is_empty() {
            let watched = link.healthy()
                && link.login_seq.is_some()
                && !link.conn.is_some_and(|c| self.slow.contains(&c));
            let silence = link.last_rx.map(|last| now - last);
            link.last_rx = Some(now);
            let (want, conn) = (link.want_write, link.conn);
            if let (true, Some(silence)) = (watched, silence) {
                self.counts.max_silence = self.counts.max_silence.max(silence);
                if silence > HB + MS {
                    self.fail(&format!(
                        "link {l} of client {i}, healthy and logged in, heard nothing for {silence:?}"
                    ));
                }
            }
            if let (true, Some(id)) = (want, conn) {
                if self.links[l].server_open {
                    self.service(id);
                }
            }
        }
        let c = &mut self.clients[i];
        let published = &self.published;
        let mut rx = Vec::new();
        if !input.is_empty() {
            c.session.handle_bytes(t);
        }
        let mut rest = &input[..];
        while !rest.is_empty() {
            let piece = rest.len().min(c.fragment);
            let n = c.parser.fill_from(&rest[..piece]);
            assert!(n > 0, "the client's parser is full");
            rest = &rest[n..];
            let session = &mut c.session;
            c.parser
                .drain(|e| session.handle_event(e, t, &mut |e| rx.push(own(published, e))));
        }
        if eof {
            // A connection closed by the server after a partial write ends
            // mid-frame: that tail is discarded, as on a real socket.
            c.parser.finish();
            let session = &mut c.session;
            c.parser.drain(|e| {
                session.handle_event(e, t, &mut |e| {
                    if !matches!(e, ClientEvent::Discarded(_)) {
                        rx.push(own(published, e));
                    }
                });
            });
            c.session.handle_lost(Lost::Closed, t, &mut |e| {
                rx.push(own(published, e));
            });
        }
        self.client_rx(i, l, rx);
        self.client_actions(i);
    }

    /// Checks what client `i` reported on link `l`.
    fn client_rx(&mut self, i: usize, l: usize, rx: Vec<Rx>) {
        for r in rx {
            if self.clients[i].refuse.is_some()
                && !matches!(r, Rx::Lost | Rx::Rejected(_) | Rx::GaveUp(_))
            {
                self.fail(&format!("client {i}, to be refused, reported {r:?}"));
            }
            let link = &self.links[l];
            match r {
                Rx::LoggedIn(sequence) => {
                    self.core_events();
                    let link = &self.links[l];
                    let Some(id) = link.conn else {
                        self.fail("LoginAccepted on a link the server never accepted");
                    };
                    let Some(&(_, start, _)) = self.logins.get(&id) else {
                        self.fail(&format!("client {i} logged in, the server said nothing"));
                    };
                    if start != sequence {
                        self.fail(&format!(
                            "client {i} logged in at {sequence}, the server says {start}"
                        ));
                    }
                    self.counts.logins += 1;
                    let link = &mut self.links[l];
                    link.login_seq = Some(sequence);
                    link.expect = sequence;
                    link.last_rx = Some(self.now);
                }
                Rx::Data { sequence, same } => {
                    if link.login_seq.is_none() || sequence != link.expect {
                        self.fail(&format!(
                            "client {i} link {l}: frame {sequence}, expected {} (login {:?})",
                            link.expect, link.login_seq
                        ));
                    }
                    if !same {
                        self.fail(&format!(
                            "client {i}: frame {sequence} is not the published one"
                        ));
                    }
                    self.counts.frames += 1;
                    let link = &mut self.links[l];
                    link.expect += 1;
                    link.frames += 1;
                }
                Rx::Other(sequence) => {
                    if link.login_seq.is_some() && sequence != link.expect {
                        // The tracker reports a gap before any frame that
                        // jumps ahead; a frame behind is a duplicate.
                        self.fail(&format!(
                            "client {i} link {l}: control frame at {sequence}, expected {}",
                            link.expect
                        ));
                    }
                }
                Rx::Gap(gap) => self.check_gap(i, l, gap),
                Rx::Duplicate(s) => self.fail(&format!("client {i}: duplicate frame {s}")),
                Rx::Discarded(n) => self.fail(&format!("client {i}: {n} bytes discarded")),
                Rx::EndOfSession => self.clients[i].stopped_by_end = true,
                Rx::Lost => {}
                Rx::Rejected(reason) => {
                    let c = &self.clients[i];
                    if c.refuse != Some(reason) || c.refused.is_some() {
                        self.fail(&format!(
                            "client {i} (link {l}) rejected: {reason:?}, expected {:?}, rejected before: {:?}",
                            c.refuse, c.refused
                        ));
                    }
                    self.clients[i].refused = Some(reason);
                    self.counts.rejected[reason.code() as usize - 1] += 1;
                }
                Rx::GaveUp(last) => {
                    if self.clients[i].refuse.is_none() {
                        self.fail(&format!("client {i} gave up ({last:?})"));
                    }
                    self.clients[i].gave_up = Some(last);
                }
            }
        }
    }

    fn check_gap(&mut self, i: usize, l: usize, gap: Gap) {
        self.core_events();
        let link = &self.links[l];
        let Some(login) = link.login_seq else {
            self.fail(&format!("client {i}: gap {gap:?} before LoginAccepted"));
        };
        let holes = self.published.holes_in(&gap);
        if gap.last < login {
            // Before this connection's start: the range the server no
            // longer had when the client logged in (section 4.2).
            let id = link.conn.unwrap();
            let (wanted, start, oldest) = self.logins[&id];
            let ok = gap.last + 1 == start && (holes == gap.len() || start == oldest);
            if !ok {
                self.fail(&format!(
                    "client {i}: login gap {gap:?} (wanted {wanted}, start {start}, oldest {oldest})"
                ));
            }
            self.counts.login_gap_frames += gap.len() - holes;
            return;
        }
        if gap.first != link.expect {
            self.fail(&format!(
                "client {i} link {l}: gap {gap:?}, expected {}",
                link.expect
            ));
        }
        let unexplained = gap.len() - holes;
        if unexplained > 0 {
            let slow = link.conn.is_some_and(|c| self.slow.contains(&c));
            let trimmed = gap.last < self.core.retention().oldest();
            if !slow && !trimmed {
                self.fail(&format!(
                    "client {i} link {l}: gap {gap:?} ({unexplained} published frames) on a connection never marked slow, frames still retained (oldest {})",
                    self.core.retention().oldest()
                ));
            }
        }
        self.counts.gap_frames += unexplained;
        let link = &mut self.links[l];
        link.gap_frames += unexplained;
        link.expect = gap.last + 1;
    }

    fn client_actions(&mut self, i: usize) {
        while let Some(action) = self.clients[i].session.poll_action() {
            match action {
                Action::Connect => {
                    let peer = self.clients[i].peer;
                    let l = self.new_link(Some(i), peer);
                    self.clients[i].link = Some(l);
                    self.clients[i].parser = Parser::with_capacity(1 << 16).unwrap();
                    let lat = self.links[l].latency;
                    let accept = ms(self.rng.range(0, self.p.accept_delay));
                    self.connects.push((self.now + lat, l));
                    self.accepts.push((self.now + lat + accept, l));
                }
                Action::Send(frame) => {
                    let Some(l) = self.clients[i].link else {
                        continue;
                    };
                    let link = &mut self.links[l];
                    if link.blackholed_at.is_none() {
                        link.c2s
                            .push_back((self.now + link.latency, frame.as_bytes().to_vec()));
                    }
                }
                Action::Close => {
                    let Some(l) = self.clients[i].link.take() else {
                        continue;
                    };
                    let now = self.now;
                    let link = &mut self.links[l];
                    link.client_closed = true;
                    if link.blackholed_at.is_none() {
                        link.s2c.clear();
                        link.s2c_bytes = 0;
                        if link.fin_to_server.is_none() {
                            link.fin_to_server = Some((now + link.latency, false));
                        }
                    }
                }
                other => self.fail(&format!("unexpected action {other:?}")),
            }
        }
    }
}

fn take_due(list: &mut Vec<(Duration, usize)>, now: Duration) -> Vec<usize> {
    let mut due: Vec<(Duration, usize)> = Vec::new();
    list.retain(|&(t, l)| {
        if t <= now {
            due.push((t, l));
            false
        } else {
            true
        }
    });
    due.sort_unstable();
    due.into_iter().map(|(_, l)| l).collect()
}

fn own(published: &Published, e: ClientEvent<'_>) -> Rx {
    match e {
        ClientEvent::LoggedIn { sequence, .. } => Rx::LoggedIn(sequence),
        ClientEvent::Frame(m) if m.is_data() => Rx::Data {
            sequence: m.sequence(),
            same: published.frame(m.sequence()) == Some(m.as_bytes()),
        },
        ClientEvent::Frame(Message::EndOfSession(_)) | ClientEvent::EndOfSession { .. } => {
            Rx::EndOfSession
        }
        ClientEvent::Frame(m) => Rx::Other(m.sequence()),
        ClientEvent::Gap(g) => Rx::Gap(g),
        ClientEvent::Duplicate { sequence } => Rx::Duplicate(sequence),
        ClientEvent::Discarded(d) => Rx::Discarded(d.bytes),
        ClientEvent::Lost(_) => Rx::Lost,
        ClientEvent::Rejected { reason, .. } => Rx::Rejected(reason),
        ClientEvent::GaveUp { last, .. } => Rx::GaveUp(last),
        _ => Rx::Lost,
    }
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Prints how to replay the seed when its run panics.
struct Replay(u64);

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\nsimulation failed; replay with:\n  SIM_SEED={} cargo test --features std --test sim -- --nocapture\n(with the same SIM_CLIENTS / SIM_FRAMES, if set)",
                self.0
            );
        }
    }
}

fn run_seed(seed: u64, max_clients: usize, max_frames: u64, verbose: bool) -> Counts {
    let _replay = Replay(seed);
    let mut params = Params::draw(seed, max_clients, max_frames);
    params.known_bugs = env("SIM_AUTH_FOUND").is_none_or(|v| v > 0);
    let mut sim = Sim::new(params);
    sim.run();
    if verbose {
        println!(
            "seed {seed}: {:?}\n  {:?}\n  {:?}",
            sim.p,
            sim.counts,
            sim.core.stats()
        );
    }
    sim.counts
}

#[test]
fn simulation() {
    let max_clients = env("SIM_CLIENTS").unwrap_or(50) as usize;
    let max_frames = env("SIM_FRAMES").unwrap_or(10_000);
    let verbose = env("SIM_VERBOSE").is_some_and(|v| v > 0);
    let seeds = match env("SIM_SEED") {
        Some(seed) => seed..seed + 1,
        None => {
            let first = env("SIM_FIRST").unwrap_or(0);
            first..first + env("SIM_SEEDS").unwrap_or(1500)
        }
    };
    let started = std::time::Instant::now();
    let mut total = Counts::default();
    let n = seeds.end - seeds.start;
    for seed in seeds {
        let c = run_seed(seed, max_clients, max_frames, verbose);
        total.frames += c.frames;
        total.gap_frames += c.gap_frames;
        total.logins += c.logins;
        total.cuts += c.cuts;
        total.stalls += c.stalls;
        total.blackholes += c.blackholes;
        total.slow_marks += c.slow_marks;
        total.steps += c.steps;
        total.max_silence = total.max_silence.max(c.max_silence);
        total.max_no_progress = total.max_no_progress.max(c.max_no_progress);
        total.auth_runs += c.auth_runs;
        for (t, r) in total.rejected.iter_mut().zip(c.rejected) {
            *t += r;
        }
        total.locked_out += c.locked_out;
        total.hostile += c.hostile;
    }
    println!(
        "{n} seeds in {:.1?}: {} frames delivered, {} in gaps, {} logins, {} cuts, {} stalls, {} blackholes, {} slow marks, {} steps, longest healthy silence {:?}, longest blackhole {:?}",
        started.elapsed(),
        total.frames,
        total.gap_frames,
        total.logins,
        total.cuts,
        total.stalls,
        total.blackholes,
        total.slow_marks,
        total.steps,
        total.max_silence,
        total.max_no_progress
    );
    println!(
        "section 11: {} runs with authentication, {} hostile connections, Rejecteds received by reason (1, 2, 3) {:?}, {} connections locked out",
        total.auth_runs, total.hostile, total.rejected, total.locked_out
    );
}

// ---- Section 11 findings, each as one connection (fixed; the seeds that
// found them: SIM_SEED=15 the close, SIM_SEED=2 more than 4 KiB, SIM_SEED=27
// a full read) ----

/// A core that requires authentication, with the one key `key` (both
/// permissions).
fn one_key_core(key: &ClientKey) -> ServerCore {
    let mut core = ServerCore::new(CoreConfig::new(7), at(Duration::ZERO));
    let line = Credentials::line(&key.key_id, &key.secret, None);
    core.set_verifier(Some(Arc::new(Credentials::parse(&line).unwrap())));
    core
}

/// What the core writes, per connection, as the simulation's driver writes
/// it, and whether it said to shut the sending side down.
fn written(core: &mut ServerCore, t: Time) -> HashMap<ConnId, (Vec<u8>, bool)> {
    let mut out: HashMap<ConnId, (Vec<u8>, bool)> = HashMap::new();
    while let Some(id) = core.poll_ready() {
        let entry = out.entry(id).or_default();
        while let Some(tx) = core.poll_transmit(id, t) {
            let n = tx.len();
            tx.slices().for_each(|s| entry.0.extend_from_slice(s));
            core.transmitted(id, n, t);
        }
        entry.1 |= core.poll_write_shutdown(id);
        if core.close_reason(id).is_some() {
            core.release(id);
        }
    }
    out
}

fn test_key() -> ClientKey {
    ClientKey {
        key_id: KeyId::new("desk-1").unwrap(),
        secret: Secret::new([0x42; 32]),
    }
}

fn rejected_frame(reason: RejectReason) -> Vec<u8> {
    frame(&Payload::Rejected { reason }, 0)
}

#[test]
fn rejected_is_written_when_the_close_comes_with_the_auth() {
    let key = test_key();
    let mut core = one_key_core(&key);
    let t = at(Duration::ZERO);
    let id = core.accept("10.0.0.1:4000".parse().unwrap(), t);
    let mut rng = Rng(1);
    let bad = wrong_secret(key, &mut rng);
    core.handle_input(
        id,
        &[auth_frame(&bad), frame(&Payload::Login, 0)].concat(),
        t,
    );
    core.handle_eof(id, t); // `printf ... | nc`: the FIN follows the bytes
    let out = written(&mut core, t);
    assert_eq!(core.stats().auth_failures, 1);
    assert_eq!(
        out.get(&id).map(|o| o.0.clone()).unwrap_or_default(),
        rejected_frame(RejectReason::NotAuthorized),
        "section 11: anything else gets one Rejected"
    );
}

#[test]
fn rejected_is_written_when_4_kib_come_with_the_first_frame() {
    let mut core = one_key_core(&test_key());
    let t = at(Duration::ZERO);
    let id = core.accept("10.0.0.1:4000".parse().unwrap(), t);
    // An HTTP request with large headers, say: reason 1 at once.
    core.handle_input(id, &[b'G'; 9_000], t);
    let out = written(&mut core, t);
    assert_eq!(
        out.get(&id).cloned().unwrap_or_default(),
        (rejected_frame(RejectReason::AuthenticationRequired), true)
    );
}

#[test]
fn a_rejected_connection_has_room_to_drain_into() {
    let mut core = one_key_core(&test_key());
    let t = at(Duration::ZERO);
    let id = core.accept("10.0.0.1:4000".parse().unwrap(), t);
    // As the mio and tokio drivers read: into input_buffer, whole.
    let spare = core.input_buffer(id).unwrap();
    let n = spare.len();
    spare.fill(b'G');
    core.input_committed(id, n, t);
    assert!(core.close_reason(id).is_none());
    let room = core.input_buffer(id).map_or(0, |b| b.len());
    assert!(
        room > 0,
        "a read into {room} bytes returns 0: EOF to a driver"
    );
}
