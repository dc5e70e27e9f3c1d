//! The protocol's rules (sections 3–4) with no socket and no clock: a
//! [`ServerSession`] and a [`ClientSession`] joined by in-memory pipes that
//! can fragment, delay, cut mid-frame, blackhole and restart the server,
//! under a virtual clock. Every timing rule is checked exactly, instantly.
#![allow(
    // Configs are built field by field from the defaults, as in the docs.
    clippy::field_reassign_with_default,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tickwire::encode::{QuoteFields, TradeFields};
use tickwire::parse::{Event, Parser};
use tickwire::policy::Backoff;
use tickwire::sequence::{Gap, SequenceTracker};
use tickwire::session::{
    Action, Batch, ClientEvent, ClientSession, ClientSessionConfig, ClientState, IoFailure, Lost,
    Retention, ServerSession, ServerSessionConfig, Time,
};
use tickwire::{Message, Payload, Sequencer};

const MS: Duration = Duration::from_millis(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Faults on the server → client direction.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// Deliver at most this many bytes per step (0: everything at once).
    fragment: usize,
    /// Bytes arrive this long after they were written.
    delay: Duration,
    /// Nothing arrives (the connection stays up).
    blackhole: bool,
    /// Bytes the "socket" takes from the server per step (0: unlimited).
    window: usize,
}

/// The server's end of one connection.
struct ServerEnd {
    session: ServerSession,
    parser: Parser<Box<[u8]>>,
    /// Client → server bytes not yet read.
    inbound: Vec<u8>,
}

struct Conn {
    /// `None` while the client's connect is still in flight.
    server: Option<ServerEnd>,
    /// Server → client bytes with the time they arrive.
    to_client: VecDeque<(Duration, u8)>,
    /// The server closed: the client sees the end of the stream once
    /// everything before it has arrived.
    server_closed: bool,
}

/// What the client reported, owned.
#[derive(Debug, Default)]
struct Log {
    data: Vec<(u64, Vec<u8>)>,
    heartbeats: Vec<(Duration, u64)>,
    gaps: Vec<Gap>,
    sessions: Vec<(u64, u64)>,
    logins: Vec<(Duration, u64, u64)>,
    lost: Vec<(Duration, Lost)>,
    retrying: Vec<(Duration, Duration)>,
    states: Vec<(Duration, ClientState)>,
    duplicates: u64,
    discarded: u64,
    gave_up: Option<Lost>,
    failovers: Vec<(Duration, usize, usize)>,
    /// Heals begun: when, the range, the delay before the new attempt.
    healing: Vec<(Duration, Gap, Duration)>,
    /// When each frame of `data` was delivered.
    data_at: Vec<Duration>,
}

/// A client and a server under one virtual clock.
struct Pair {
    now: Duration,
    faults: Faults,
    server_up: bool,
    server_config: ServerSessionConfig,
    retention: Retention,
    sequencer: Sequencer,
    /// Every published frame, by sequence (index 0 is sequence 1).
    published: Vec<Vec<u8>>,
    client: ClientSession,
    parser: Parser<Box<[u8]>>,
    conn: Option<Conn>,
    connects: Vec<Duration>,
    /// The server-side sessions' close reasons, in order.
    closed: Vec<tickwire::session::CloseReason>,
    log: Log,
    rng: u64,
    /// Fail-over: the other servers of the session (`None` at `current`,
    /// whose state is `server_up` and `retention` above).
    others: Vec<Option<Other>>,
    current: usize,
    /// The servers each connection went to, in order.
    connected_to: Vec<usize>,
}

/// A server of the fail-over list that is not the current one.
struct Other {
    up: bool,
    retention: Retention,
    /// Batches published that it has not received yet (a relay behind).
    behind: Vec<Arc<Batch>>,
    lagging: bool,
}

impl Pair {
    fn new(client: ClientSessionConfig, server: ServerSessionConfig, retain: usize) -> Pair {
        Pair {
            now: Duration::ZERO,
            faults: Faults::default(),
            server_up: true,
            server_config: server,
            retention: Retention::new(retain),
            sequencer: Sequencer::new(),
            published: Vec::new(),
            client: ClientSession::new(client),
            parser: Parser::with_capacity(1 << 16).unwrap(),
            conn: None,
            connects: Vec::new(),
            closed: Vec::new(),
            log: Log::default(),
            rng: 0x9e37_79b9_7f4a_7c15,
            others: vec![Some(Other {
                up: true,
                retention: Retention::new(1),
                behind: Vec::new(),
                lagging: false,
            })],
            current: 0,
            connected_to: Vec::new(),
        }
    }

    /// A pair whose client has `n` servers of one session (same id, same
    /// frames), each with its own retention.
    fn with_servers(mut client: ClientSessionConfig, n: usize) -> Pair {
        client.servers = n;
        let mut pair = Pair::new(client, server_config(), 1 << 20);
        for _ in 1..n {
            pair.others.push(Some(Other {
                up: true,
                retention: Retention::new(1 << 20),
                behind: Vec::new(),
                lagging: false,
            }));
        }
        pair
    }

    /// Makes server `i` the one the fields describe.
    fn select(&mut self, i: usize) {
        if i == self.current {
            return;
        }
        // The fields hold server `current`'s state; its slot keeps only
        // its lag (and placeholders).
        let mut other = self.others[i].take().unwrap();
        let mut old = self.others[self.current].take().unwrap();
        std::mem::swap(&mut other.up, &mut self.server_up);
        std::mem::swap(&mut other.retention, &mut self.retention);
        old.up = other.up;
        old.retention = std::mem::replace(&mut other.retention, Retention::new(1));
        self.others[self.current] = Some(old);
        self.others[i] = Some(other);
        self.current = i;
    }

    fn other(&mut self, i: usize) -> &mut Other {
        assert!(i != self.current || self.others[i].is_some());
        self.others[i].as_mut().unwrap()
    }

    /// Server `i` up or down (down: new connections are refused; the
    /// current connection, if to it, is cut).
    fn set_up(&mut self, i: usize, up: bool) {
        if i == self.current {
            self.server_up = up;
            if !up {
                self.cut();
            }
        } else {
            self.other(i).up = up;
        }
    }

    /// A non-current server `i` stops receiving published batches (it
    /// falls behind) or catches up on every one it missed.
    fn lag(&mut self, i: usize, lagging: bool) {
        let current = i == self.current;
        let other = self.other(i);
        other.lagging = lagging;
        if lagging {
            return;
        }
        let behind = std::mem::take(&mut other.behind);
        if !current {
            for batch in behind {
                other.retention.push(batch);
            }
            return;
        }
        let time = self.time();
        for batch in behind {
            self.retention.push(Arc::clone(&batch));
            if let Some(end) = self.conn.as_mut().and_then(|c| c.server.as_mut()) {
                end.session.handle_published(&batch, time);
            }
        }
    }

    fn time(&self) -> Time {
        Time::new(
            self.now,
            1_700_000_000_000_000_000 + self.now.as_nanos() as u64,
        )
    }

    /// Publishes `n` data messages as one batch.
    fn publish(&mut self, n: usize) {
        let msgs: Vec<(u64, Payload)> = (0..n)
            .map(|i| {
                let k = self.published.len() + i;
                let payload = if k % 3 == 2 {
                    Payload::Trade(TradeFields {
                        instrument_id: k as u32,
                        price: k as i32,
                        size: 1,
                        side: 1,
                        flags: 0,
                    })
                } else {
                    Payload::Quote(QuoteFields {
                        instrument_id: k as u32,
                        bid_price: k as i32,
                        ask_price: k as i32 + 1,
                        bid_size: 1,
                        ask_size: 2,
                    })
                };
                (k as u64, payload)
            })
            .collect();
        let mut bytes = vec![0u8; n * 44];
        let done = self.sequencer.encode_batch(&msgs, &mut bytes);
        bytes.truncate(done.bytes);
        let batch = Arc::new(Batch::new(bytes).unwrap());
        for event in tickwire::parse::SliceParser::new(batch.bytes()) {
            if let Event::Frame(m) = event {
                self.published.push(m.as_bytes().to_vec());
            }
        }
        for (i, other) in self.others.iter_mut().enumerate() {
            let other = other.as_mut().unwrap();
            if other.lagging {
                other.behind.push(Arc::clone(&batch));
            } else if i != self.current {
                other.retention.push(Arc::clone(&batch));
            }
        }
        if self.others[self.current].as_ref().unwrap().lagging {
            return;
        }
        self.retention.push(Arc::clone(&batch));
        let time = self.time();
        if let Some(end) = self.conn.as_mut().and_then(|c| c.server.as_mut()) {
            end.session.handle_published(&batch, time);
        }
    }

    /// A server restart: the connection drops, a new session id, numbering
    /// from 1, an empty retention.
    fn restart_server(&mut self, down_for: Duration) {
        self.server_up = false;
        if let Some(conn) = self.conn.as_mut() {
            conn.server_closed = true;
            conn.server = None;
        }
        self.advance(down_for);
        self.server_config.session_id += 1;
        self.retention = Retention::new(1 << 20);
        self.sequencer = Sequencer::new();
        self.published.clear();
        self.server_up = true;
    }

    /// Cuts the connection now: bytes in flight are lost, possibly mid-frame.
    fn cut(&mut self) {
        if self.conn.take().is_some() {
            let time = self.time();
            let log = &mut self.log;
            let now = self.now;
            self.client
                .handle_lost(Lost::Error(IoFailure::Reset), time, &mut |e| {
                    record(log, now, e)
                });
            self.apply_actions();
        }
    }

    fn start(&mut self) {
        let time = self.time();
        let (log, now) = (&mut self.log, self.now);
        self.client.connect(time, &mut |e| record(log, now, e));
        self.apply_actions();
    }

    fn apply_actions(&mut self) {
        while let Some(action) = self.client.poll_action() {
            match action {
                Action::Connect => {
                    self.select(self.client.server());
                    self.connected_to.push(self.client.server());
                    self.connects.push(self.now);
                    self.parser.reset(SequenceTracker::new());
                    if self.server_up {
                        // Connected at the next step.
                        self.conn = Some(Conn {
                            server: None,
                            to_client: VecDeque::new(),
                            server_closed: false,
                        });
                    } else {
                        let time = self.time();
                        let (log, now) = (&mut self.log, self.now);
                        self.client.handle_lost(
                            Lost::ConnectFailed(IoFailure::Refused),
                            time,
                            &mut |e| record(log, now, e),
                        );
                    }
                }
                Action::Send(frame) => {
                    if let Some(end) = self.conn.as_mut().and_then(|c| c.server.as_mut()) {
                        end.inbound.extend_from_slice(frame.as_bytes());
                    }
                }
                Action::Close => self.conn = None,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The earliest deadline of either side, or a step of 1 ms while bytes
    /// are in flight.
    fn next_wake(&self, limit: Duration) -> Duration {
        let mut next = limit;
        if let Some(t) = self.client.poll_timeout() {
            next = next.min(t.max(self.now));
        }
        if let Some(conn) = &self.conn {
            if let Some(end) = &conn.server {
                if let Some(t) = end.session.poll_timeout() {
                    next = next.min(t.max(self.now));
                }
            }
            let busy = conn.server.is_none()
                || conn.server_closed
                || !conn.to_client.is_empty()
                || conn
                    .server
                    .as_ref()
                    .is_some_and(|e| e.session.queued() > 0 || !e.inbound.is_empty());
            if busy {
                next = next.min(self.now + MS);
            }
        }
        next
    }

    /// Runs until `until` virtual time has passed.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        let mut steps = 0;
        loop {
            self.step();
            let next = self.next_wake(end);
            if next > end || self.now >= end {
                break;
            }
            self.now = if next == self.now {
                self.now + MS
            } else {
                next
            };
            steps += 1;
            assert!(steps < 10_000_000, "runaway simulation");
        }
        self.now = end;
        self.step();
    }

    fn step(&mut self) {
        let time = self.time();
        // The connection completes.
        if let Some(conn) = self.conn.as_mut() {
            if conn.server.is_none() && !conn.server_closed {
                conn.server = Some(ServerEnd {
                    session: ServerSession::new(self.server_config, time),
                    parser: Parser::with_capacity(4096).unwrap(),
                    inbound: Vec::new(),
                });
                let (log, now) = (&mut self.log, self.now);
                self.client
                    .handle_connected(time, &mut |e| record(log, now, e));
                self.apply_actions();
            }
        }
        self.server_side(time);
        self.client_side(time);
    }

    fn server_side(&mut self, time: Time) {
        let retention = &self.retention;
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Some(end) = conn.server.as_mut() else {
            return;
        };
        let inbound = std::mem::take(&mut end.inbound);
        if !inbound.is_empty() {
            let n = end.parser.fill_from(&inbound);
            assert_eq!(n, inbound.len());
            let session = &mut end.session;
            end.parser
                .drain(|event| session.handle_event(&event, time, retention));
        }
        if end
            .session
            .poll_timeout()
            .is_some_and(|t| t <= time.monotonic)
        {
            end.session.handle_timeout(time, retention, 0);
        }
        let mut budget = if self.faults.window == 0 {
            usize::MAX
        } else {
            self.faults.window
        };
        while budget > 0 {
            let Some(tx) = end.session.poll_transmit(time, retention) else {
                break;
            };
            let mut taken = 0;
            for slice in tx.slices() {
                let take = slice.len().min(budget - taken);
                for &b in &slice[..take] {
                    conn.to_client
                        .push_back((time.monotonic + self.faults.delay, b));
                }
                taken += take;
                if taken == budget {
                    break;
                }
            }
            end.session.transmitted(taken, time);
            budget -= taken;
        }
        if let Some(reason) = end.session.poll_close() {
            self.closed.push(reason);
            conn.server = None;
            conn.server_closed = true;
        }
    }

    fn client_side(&mut self, time: Time) {
        let (log, now) = (&mut self.log, self.now);
        let mut emit = |e: ClientEvent<'_>| record(log, now, e);
        let mut eof = false;
        if let Some(conn) = self.conn.as_mut() {
            if !self.faults.blackhole {
                let mut chunk = Vec::new();
                while let Some(&(at, b)) = conn.to_client.front() {
                    if at > time.monotonic {
                        break;
                    }
                    chunk.push(b);
                    conn.to_client.pop_front();
                }
                if !chunk.is_empty() {
                    self.client.handle_bytes(time);
                }
                // Fed in fragments of 1..=fragment bytes, each parsed at once.
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    let piece = if self.faults.fragment == 0 {
                        rest.len()
                    } else {
                        self.rng ^= self.rng << 13;
                        self.rng ^= self.rng >> 7;
                        self.rng ^= self.rng << 17;
                        1 + (self.rng as usize % self.faults.fragment)
                    };
                    let n = self.parser.fill_from(&rest[..piece.min(rest.len())]);
                    rest = &rest[n..];
                    let client = &mut self.client;
                    self.parser
                        .drain(|event| client.handle_event(event, time, &mut emit));
                }
                eof = conn.server_closed && conn.to_client.is_empty();
            }
        }
        if eof {
            self.parser.finish();
            let client = &mut self.client;
            self.parser
                .drain(|event| client.handle_event(event, time, &mut emit));
            self.conn = None;
            self.client.handle_lost(Lost::Closed, time, &mut emit);
        }
        if self
            .client
            .poll_timeout()
            .is_some_and(|t| t <= time.monotonic)
        {
            self.client.handle_timeout(time, &mut emit);
        }
        self.rng = self.rng.rotate_left(7) ^ 0x5555;
        self.apply_actions();
    }
}

fn record(log: &mut Log, now: Duration, event: ClientEvent<'_>) {
    match event {
        ClientEvent::Frame(m) if m.is_data() => {
            log.data.push((m.sequence(), m.as_bytes().to_vec()));
            log.data_at.push(now);
        }
        ClientEvent::Healing { gap, delay } => log.healing.push((now, gap, delay)),
        ClientEvent::Frame(Message::Heartbeat(h)) => log.heartbeats.push((now, h.sequence())),
        ClientEvent::Frame(_) => {}
        ClientEvent::Gap(g) => log.gaps.push(g),
        ClientEvent::NewSession {
            session_id,
            sequence,
        } => log.sessions.push((session_id, sequence)),
        ClientEvent::LoggedIn {
            session_id,
            sequence,
        } => log.logins.push((now, session_id, sequence)),
        ClientEvent::Lost(why) => log.lost.push((now, why)),
        ClientEvent::Retrying { delay, .. } => log.retrying.push((now, delay)),
        ClientEvent::State { to, .. } => log.states.push((now, to)),
        ClientEvent::Duplicate { .. } => log.duplicates += 1,
        ClientEvent::Discarded(d) => log.discarded += d.bytes,
        ClientEvent::GaveUp { last, .. } => log.gave_up = Some(last),
        ClientEvent::Failover { from, to } => log.failovers.push((now, from, to)),
        _ => {}
    }
}

fn client_config(from: u64) -> ClientSessionConfig {
    let mut c = ClientSessionConfig::default();
    c.from = from;
    c
}

fn server_config() -> ServerSessionConfig {
    ServerSessionConfig::new(7)
}

/// Every published frame delivered exactly once, in order, byte for byte.
fn assert_exactly_once(pair: &Pair) {
    let got: Vec<u64> = pair.log.data.iter().map(|(s, _)| *s).collect();
    let want: Vec<u64> = (1..=pair.published.len() as u64).collect();
    assert_eq!(got, want, "exactly once, in order");
    for (seq, bytes) in &pair.log.data {
        assert_eq!(bytes, &pair.published[*seq as usize - 1], "frame {seq}");
    }
    assert_eq!(pair.log.duplicates, 0);
}

#[test]
fn backoff_is_exactly_100_200_400_ms_capped_at_30_s_and_resets_after_login() {
    let mut pair = Pair::new(client_config(1), server_config(), 1000);
    pair.server_up = false;
    pair.start();
    pair.advance(Duration::from_secs(200));
    let gaps: Vec<u128> = pair
        .connects
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(
        &gaps[..12],
        &[100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
    );
    assert!(gaps.iter().all(|&g| g <= 30_000));
    assert!(pair
        .log
        .retrying
        .iter()
        .zip(&pair.connects[1..])
        .all(|((at, delay), connect)| *at + *delay == *connect));
    // The server comes back: the next attempt logs in, which resets the backoff.
    pair.server_up = true;
    pair.advance(Duration::from_secs(31));
    assert_eq!(pair.client.state(), ClientState::LoggedIn);
    let before = pair.connects.len();
    pair.cut();
    let cut_at = pair.now;
    pair.advance(Duration::from_secs(1));
    assert_eq!(pair.connects.len(), before + 1);
    assert_eq!(pair.connects[before] - cut_at, ms(100), "reset after login");
}

#[test]
fn a_server_that_stays_down_is_given_up_after_max_retries() {
    let mut config = client_config(1);
    config.backoff = Backoff::default().with_max_retries(Some(3));
    let mut pair = Pair::new(config, server_config(), 1000);
    pair.server_up = false;
    pair.start();
    pair.advance(Duration::from_secs(10));
    assert_eq!(pair.connects, [ms(0), ms(100), ms(300), ms(700)]);
    assert_eq!(
        pair.log.gave_up,
        Some(Lost::ConnectFailed(IoFailure::Refused))
    );
    assert!(pair.client.is_stopped());
    assert_eq!(pair.client.state(), ClientState::Disconnected);
}

#[test]
fn silence_is_death_at_exactly_three_heartbeat_intervals() {
    let mut pair = Pair::new(client_config(0), server_config(), 1000);
    pair.start();
    pair.advance(ms(10));
    assert_eq!(pair.client.state(), ClientState::LoggedIn);
    // Heartbeats every second keep it alive for a minute.
    pair.advance(Duration::from_secs(60));
    assert!(pair.log.lost.is_empty(), "{:?}", pair.log.lost);
    let beats: Vec<Duration> = pair.log.heartbeats.iter().map(|h| h.0).collect();
    assert!(beats.len() >= 59, "{}", beats.len());
    assert!(
        beats
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::from_secs(1)),
        "{beats:?}"
    );
    // Then nothing arrives.
    pair.faults.blackhole = true;
    let last_heard = *beats.last().unwrap();
    pair.advance(Duration::from_secs(4));
    let (at, why) = pair.log.lost[0];
    assert_eq!(why, Lost::Silent);
    assert_eq!(
        at,
        last_heard + Duration::from_secs(3) + Duration::from_nanos(1)
    );
}

#[test]
fn heartbeats_carry_the_next_sequence_while_idle() {
    let mut pair = Pair::new(client_config(1), server_config(), 1000);
    pair.publish(5);
    pair.start();
    pair.advance(Duration::from_millis(2500));
    assert_exactly_once(&pair);
    assert_eq!(pair.log.heartbeats.len(), 2);
    assert!(pair.log.heartbeats.iter().all(|&(_, seq)| seq == 6));
}

#[test]
fn login_timeout_closes_a_silent_connection_at_exactly_five_seconds() {
    let config = server_config();
    let retention = Retention::new(10);
    let t = |d: Duration| Time::new(d, 0);
    let mut s = ServerSession::new(config, t(ms(3)));
    assert_eq!(s.poll_timeout(), Some(ms(5003)));
    s.handle_timeout(t(ms(5003) - Duration::from_nanos(1)), &retention, 0);
    assert_eq!(s.poll_close(), None);
    s.handle_timeout(t(ms(5003)), &retention, 0);
    assert_eq!(
        s.poll_close(),
        Some(tickwire::session::CloseReason::LoginTimeout)
    );
}

#[test]
fn replay_meets_live_data_with_no_gap_and_no_repeat() {
    let mut pair = Pair::new(client_config(1), server_config(), 1 << 20);
    for _ in 0..50 {
        pair.publish(100);
    }
    // A narrow, fragmented, delayed pipe while publishing goes on.
    pair.faults = Faults {
        fragment: 300,
        delay: ms(2),
        blackhole: false,
        window: 4000,
    };
    pair.start();
    for _ in 0..200 {
        pair.publish(37);
        pair.advance(ms(3));
    }
    pair.faults = Faults::default();
    pair.advance(ms(100));
    assert_eq!(pair.published.len(), 5000 + 200 * 37);
    assert_exactly_once(&pair);
    assert!(pair.log.gaps.is_empty());
}

#[test]
fn a_first_login_older_than_the_retention_reports_the_exact_gap() {
    let mut pair = Pair::new(client_config(5), server_config(), 100);
    pair.publish(300);
    pair.start();
    pair.advance(ms(50));
    assert_eq!(
        pair.log.gaps,
        [Gap {
            first: 5,
            last: 200
        }]
    );
    let got: Vec<u64> = pair.log.data.iter().map(|d| d.0).collect();
    assert_eq!(got, (201..=300).collect::<Vec<_>>());
    assert_eq!(pair.client.tracker().stats().missing, 196);
}

#[test]
fn cuts_mid_frame_resume_from_the_next_needed_sequence() {
    let mut pair = Pair::new(client_config(1), server_config(), 1 << 20);
    pair.faults.fragment = 17;
    pair.start();
    for round in 0..30 {
        pair.publish(50);
        pair.advance(ms(2 + round % 5));
        pair.cut();
        pair.advance(ms(300));
    }
    pair.advance(Duration::from_secs(1));
    assert_exactly_once(&pair);
    assert!(pair.log.lost.len() >= 30);
    assert!(pair.log.gaps.is_empty());
}

#[test]
fn a_restarted_server_is_a_new_session_logged_into_from_its_start() {
    let mut pair = Pair::new(client_config(1), server_config(), 1 << 20);
    pair.publish(10);
    pair.start();
    pair.advance(ms(10));
    assert_eq!(pair.log.data.len(), 10);
    pair.restart_server(ms(150));
    pair.publish(20); // the new session's 1..=20, before the client is back
    pair.log.data.clear();
    pair.advance(Duration::from_secs(2));
    // It first asked for 11 (meaningless to the new server, which answered
    // 21), then logged in again from 1.
    assert!(pair.log.lost.iter().any(|l| l.1 == Lost::Resync));
    assert_eq!(pair.log.sessions.last().map(|s| s.0), Some(8));
    assert_exactly_once(&pair);
    assert!(pair.log.gaps.is_empty(), "{:?}", pair.log.gaps);
}

#[test]
fn end_of_session_then_reconnect_or_stop() {
    for reconnect in [true, false] {
        let mut config = client_config(1);
        config.reconnect_after_end = reconnect;
        let mut pair = Pair::new(config, server_config(), 1000);
        pair.publish(3);
        pair.start();
        pair.advance(ms(10));
        let time = pair.time();
        let retention = &pair.retention;
        pair.conn
            .as_mut()
            .unwrap()
            .server
            .as_mut()
            .unwrap()
            .session
            .shutdown(time, retention);
        pair.advance(ms(10));
        assert!(pair.log.lost.iter().any(|l| l.1 == Lost::EndOfSession));
        assert_eq!(pair.client.is_stopped(), !reconnect);
        assert_eq!(
            pair.closed,
            [tickwire::session::CloseReason::Shutdown],
            "closed only once written"
        );
    }
}

#[test]
fn a_slow_client_skipped_by_the_server_sees_the_exact_gap_and_can_replay_it() {
    let mut server = server_config();
    server.slow_threshold = 64 << 10;
    let mut client = client_config(1);
    client.heal_gaps = false;
    let mut pair = Pair::new(client, server, 1 << 20);
    pair.start();
    pair.advance(ms(5));
    // The client stops reading: the "socket" takes nothing.
    pair.faults.window = 1;
    pair.faults.blackhole = true;
    for _ in 0..40 {
        pair.publish(100);
        pair.advance(ms(10));
    }
    // It reads again: once drained below half the threshold it gets live
    // data again, and the first batch after shows the gap.
    pair.faults = Faults::default();
    pair.advance(ms(50));
    assert!(
        pair.log.gaps.is_empty(),
        "nothing is reported before a later frame shows it"
    );
    pair.publish(10);
    pair.advance(ms(50));
    let gaps = pair.log.gaps.clone();
    assert!(!gaps.is_empty(), "the slow client was skipped");
    let seen: Vec<u64> = pair.log.data.iter().map(|d| d.0).collect();
    let missing: u64 = gaps.iter().map(Gap::len).sum();
    assert_eq!(
        seen.len() as u64 + missing,
        4010,
        "every sequence seen or reported"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    // Recovery: log in again from the first missing sequence.
    let mut replay = Pair::new(client_config(gaps[0].first), server_config(), 1 << 20);
    std::mem::swap(&mut replay.retention, &mut pair.retention);
    replay.start();
    replay.advance(ms(50));
    assert_eq!(replay.log.data.first().map(|d| d.0), Some(gaps[0].first));
    assert_eq!(replay.log.data.last().map(|d| d.0), Some(4010));
}

/// The client of `pair` stops reading for 400 ms while 4,000 frames are
/// published (so the server marks it slow and skips it), then reads again;
/// 10 more frames follow. Returns the number published.
fn stall_until_skipped(pair: &mut Pair) -> u64 {
    pair.advance(ms(5));
    let faults = pair.faults;
    pair.faults.window = 1;
    pair.faults.blackhole = true;
    for _ in 0..40 {
        pair.publish(100);
        pair.advance(ms(10));
    }
    pair.faults = faults;
    pair.advance(ms(50));
    pair.publish(10);
    pair.advance(ms(500));
    pair.published.len() as u64
}

fn slow_server() -> ServerSessionConfig {
    let mut server = server_config();
    server.slow_threshold = 64 << 10;
    server
}

#[test]
fn a_skipped_slow_client_heals_the_gap_and_delivers_every_frame_once_in_order() {
    // Server → client latency 0, 1 ms and 10 ms (the harness delays that
    // direction only; a connect completes at the next 1 ms step).
    for delay in [0, 1, 10] {
        let mut pair = Pair::new(client_config(1), slow_server(), 1 << 20);
        pair.faults.delay = ms(delay);
        pair.start();
        let published = stall_until_skipped(&mut pair);
        assert_eq!(published, 4010);
        assert_exactly_once(&pair);
        assert!(pair.log.gaps.is_empty(), "{:?}", pair.log.gaps);
        assert_eq!(pair.log.healing.len(), 1, "{:?}", pair.log.healing);
        assert_eq!(pair.client.stats().heals, 1);
        let (at, gap, wait) = pair.log.healing[0];
        assert_eq!(wait, Duration::ZERO, "the first heal reconnects at once");
        assert!(gap.first > 1 && gap.last >= gap.first);
        assert_eq!(pair.log.lost.last().map(|l| l.1), Some(Lost::Heal));
        assert_eq!(pair.client.tracker().stats().gaps, 0);
        // The Login asked for exactly the first missing sequence.
        assert_eq!(pair.log.logins.last().map(|l| l.2), Some(gap.first));
        let filled = pair.log.data.iter().position(|d| d.0 == gap.last).unwrap();
        let caught_up = pair.log.data_at[filled] - at;
        let whole = *pair.log.data_at.last().unwrap() - at;
        eprintln!(
            "delay {delay} ms: healed {}..={} ({} frames) in {caught_up:?} (last frame {whole:?} after the gap showed)",
            gap.first,
            gap.last,
            gap.len()
        );
        assert!(caught_up <= ms(10 + 4 * delay), "{caught_up:?}");
    }
}

#[test]
fn a_skipped_range_the_server_no_longer_retains_is_reported_once() {
    // The retention keeps the last 1,000 frames: most of the skip is gone.
    let mut pair = Pair::new(client_config(1), slow_server(), 1000);
    pair.start();
    let published = stall_until_skipped(&mut pair);
    for _ in 0..20 {
        pair.publish(50);
        pair.advance(ms(50));
    }
    let published = published + 1000;
    assert_eq!(
        pair.log.healing.len(),
        1,
        "one heal: {:?}",
        pair.log.healing
    );
    let (_, healing, _) = pair.log.healing[0];
    assert_eq!(pair.log.gaps.len(), 1, "reported once: {:?}", pair.log.gaps);
    let gap = pair.log.gaps[0];
    // What the server still had came back; the rest is the one gap,
    // reported at the heal's login (answered from later than asked).
    assert_eq!(gap.first, healing.first);
    let login = pair.log.logins.last().unwrap().2;
    assert_eq!(gap.last + 1, login);
    assert!(login > healing.first && login <= healing.last);
    let mut covered: Vec<(u64, u64)> = pair.log.data.iter().map(|d| (d.0, d.0)).collect();
    covered.extend(pair.log.gaps.iter().map(|g| (g.first, g.last)));
    covered.sort_unstable();
    let mut next = 1;
    for (first, last) in covered {
        assert_eq!(first, next, "no overlap, no hole");
        next = last + 1;
    }
    assert_eq!(next, published + 1);
    assert_eq!(pair.log.duplicates, 0);
    assert_eq!(pair.client.stats().heals, 1);
    assert_eq!(pair.connects.len(), 2);
}

#[test]
fn a_hole_in_the_servers_retention_is_healed_once_then_reported_once() {
    // A relay that missed 11..=20 upstream: it has 1..=10 and 21..=30.
    let mut pair = Pair::new(client_config(1), server_config(), 1 << 20);
    pair.start();
    pair.advance(ms(5));
    pair.publish(10);
    pair.advance(ms(5));
    pair.other(0).lagging = true;
    pair.publish(10);
    pair.other(0).behind.clear();
    pair.other(0).lagging = false;
    pair.publish(10);
    pair.advance(Duration::from_secs(5));
    let got: Vec<u64> = pair.log.data.iter().map(|d| d.0).collect();
    let want: Vec<u64> = (1..=10).chain(21..=30).collect();
    assert_eq!(got, want);
    assert_eq!(pair.log.healing.len(), 1, "{:?}", pair.log.healing);
    assert_eq!(
        pair.log.gaps,
        [Gap {
            first: 11,
            last: 20
        }]
    );
    assert_eq!(pair.connects.len(), 2, "one heal, no loop");
    assert_eq!(pair.log.duplicates, 0);
}

#[test]
fn a_server_that_keeps_skipping_gets_heals_spaced_by_the_backoff_not_a_loop() {
    let mut pair = Pair::new(client_config(1), slow_server(), 1 << 22);
    pair.start();
    pair.advance(ms(5));
    // 60 s of a client that stops reading for 400 ms out of every 600 ms
    // while 10,000 frames a second are published.
    for _ in 0..100 {
        pair.faults.window = 1;
        pair.faults.blackhole = true;
        for _ in 0..40 {
            pair.publish(100);
            pair.advance(ms(10));
        }
        pair.faults = Faults::default();
        for _ in 0..20 {
            pair.publish(100);
            pair.advance(ms(10));
        }
    }
    let heals = &pair.log.healing;
    let delays: Vec<u128> = heals.iter().map(|h| h.2.as_millis()).collect();
    eprintln!(
        "{} heals, {} connects in 60 s; delays {delays:?} ms",
        heals.len(),
        pair.connects.len()
    );
    assert!(heals.len() >= 3, "the server did keep skipping: {delays:?}");
    // At once, then the backoff: 100 ms doubling, capped at 30 s; at most
    // one connection per heal.
    assert_eq!(delays[0], 0);
    for (i, d) in delays.iter().enumerate().skip(1) {
        assert_eq!(*d, (100u128 << (i - 1)).min(30_000), "{delays:?}");
    }
    assert!(heals.len() <= 12, "{delays:?}");
    // (The last heal may still be waiting out its delay.)
    assert!(pair.connects.len() <= heals.len() + 1);
    // Then the client keeps up: it catches up on everything, in order,
    // exactly once (the retention holds it all).
    pair.advance(Duration::from_secs(35));
    pair.publish(10);
    pair.advance(Duration::from_secs(1));
    assert_exactly_once(&pair);
    assert!(pair.log.gaps.is_empty(), "{:?}", pair.log.gaps);
}

#[test]
fn heal_gaps_off_reports_the_skip_and_goes_on_live() {
    let mut client = client_config(1);
    client.heal_gaps = false;
    let mut pair = Pair::new(client, slow_server(), 1 << 20);
    pair.start();
    stall_until_skipped(&mut pair);
    assert!(pair.log.healing.is_empty());
    assert_eq!(pair.connects.len(), 1);
    assert!(!pair.log.gaps.is_empty());
}

/// A schedule step of the property test.
#[derive(Clone, Debug)]
enum Op {
    Publish(usize),
    Wait(u64),
    Cut,
    Blackhole(u64),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..200).prop_map(Op::Publish),
        3 => (0u64..400).prop_map(Op::Wait),
        2 => Just(Op::Cut),
        1 => (0u64..5000).prop_map(Op::Blackhole),
        1 => Just(Op::Restart),
    ]
}

fn run_schedule(ops: &[Op], retain: usize, fragment: usize, delay: u64) -> Pair {
    let mut config = client_config(1);
    config.backoff = Backoff::new(ms(50), ms(800));
    let mut pair = Pair::new(config, server_config(), retain);
    pair.faults.fragment = fragment;
    pair.faults.delay = ms(delay);
    pair.start();
    for op in ops {
        match *op {
            Op::Publish(n) => pair.publish(n),
            Op::Wait(d) => pair.advance(ms(d)),
            Op::Cut => pair.cut(),
            Op::Blackhole(d) => {
                pair.faults.blackhole = true;
                pair.advance(ms(d));
                pair.faults.blackhole = false;
            }
            Op::Restart => {
                pair.restart_server(ms(120));
                pair.log.data.clear();
                pair.log.gaps.clear();
                pair.log.duplicates = 0;
            }
        }
    }
    pair.advance(Duration::from_secs(5));
    pair
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whenever the retention covers the outage, the client delivers the
    /// published frames, each once, in order, whatever the cuts and delays.
    #[test]
    fn any_schedule_delivers_every_frame_once_in_order(
        ops in proptest::collection::vec(op(), 1..40),
        fragment in 0usize..64,
        delay in 0u64..20,
    ) {
        let pair = run_schedule(&ops, 1 << 20, fragment, delay);
        let got: Vec<u64> = pair.log.data.iter().map(|(s, _)| *s).collect();
        let want: Vec<u64> = (1..=pair.published.len() as u64).collect();
        prop_assert_eq!(got, want);
        for (seq, bytes) in &pair.log.data {
            prop_assert_eq!(bytes, &pair.published[*seq as usize - 1]);
        }
        prop_assert!(pair.log.gaps.is_empty(), "{:?}", pair.log.gaps);
        prop_assert_eq!(pair.log.duplicates, 0);
    }

    /// With a small retention, what the client does not get is reported as
    /// gaps, exactly: delivered and missing partition 1..=last, in order.
    #[test]
    fn what_the_retention_lost_is_reported_exactly(
        ops in proptest::collection::vec(op(), 1..40),
        fragment in 0usize..64,
    ) {
        let ops: Vec<Op> = ops.into_iter().filter(|o| !matches!(o, Op::Restart)).collect();
        let pair = run_schedule(&ops, 150, fragment, 3);
        let mut covered: Vec<(u64, u64)> = pair.log.data.iter().map(|d| (d.0, d.0)).collect();
        covered.extend(pair.log.gaps.iter().map(|g| (g.first, g.last)));
        covered.sort_unstable();
        let mut next = 1;
        for (first, last) in covered {
            prop_assert_eq!(first, next, "no overlap, no hole");
            next = last + 1;
        }
        prop_assert_eq!(next, pair.published.len() as u64 + 1);
        prop_assert_eq!(pair.log.duplicates, 0);
    }
}

// ---- Fail-over over a list of servers of one session (protocol section 10.5) ----

#[test]
fn failover_tries_each_server_at_once_and_backs_off_only_after_a_whole_round() {
    let mut pair = Pair::with_servers(client_config(1), 3);
    for i in 0..3 {
        pair.set_up(i, false);
    }
    pair.start();
    pair.advance(ms(1000));
    // Rounds of three immediate attempts, 100 ms then 200 ms then 400 ms apart.
    assert_eq!(
        pair.connected_to,
        [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2],
        "rotation in list order, wrapping"
    );
    assert_eq!(
        pair.connects,
        [0, 0, 0, 100, 100, 100, 300, 300, 300, 700, 700, 700].map(ms),
        "no delay inside a round, the backoff between rounds"
    );
    assert_eq!(pair.log.retrying.len(), 4, "one backoff per round");
    assert_eq!(pair.client.stats().failovers, 12);
    // Server 2 comes back: the next round reaches it after 0 and 1 fail,
    // and its login resets the round and the backoff.
    pair.set_up(2, true);
    pair.advance(ms(800));
    assert_eq!(pair.client.state(), ClientState::LoggedIn);
    assert_eq!(&pair.connected_to[12..], [0, 1, 2]);
    assert_eq!(&pair.connects[12..], [ms(1500); 3]);
    // Server 2 dies: 0 and 1 are still down, so 0, 1 at once, then a
    // 100 ms backoff (reset by the login), then 2 (up again) logs in.
    pair.set_up(2, false);
    let cut_at = pair.now;
    pair.set_up(2, true);
    pair.advance(ms(500));
    assert_eq!(&pair.connected_to[15..], [0, 1, 2]);
    assert_eq!(
        &pair.connects[15..],
        [cut_at, cut_at, cut_at + ms(100)],
        "backoff reset after the login"
    );
    assert_eq!(pair.client.state(), ClientState::LoggedIn);
}

#[test]
fn failover_with_retry_limit_counts_rounds() {
    let mut config = client_config(1);
    config.backoff = Backoff::default().with_max_retries(Some(1));
    let mut pair = Pair::with_servers(config, 2);
    pair.set_up(0, false);
    pair.set_up(1, false);
    pair.start();
    pair.advance(Duration::from_secs(5));
    assert_eq!(
        pair.connected_to,
        [0, 1, 0, 1],
        "two rounds: the first and one retry"
    );
    assert_eq!(
        pair.log.gave_up,
        Some(Lost::ConnectFailed(IoFailure::Refused))
    );
    assert!(pair.client.is_stopped());
}

#[test]
fn failover_mid_stream_resumes_at_the_next_server_with_nothing_lost_or_repeated() {
    let mut pair = Pair::with_servers(client_config(1), 3);
    pair.faults.fragment = 7;
    pair.start();
    for _ in 0..20 {
        pair.publish(13);
        pair.advance(ms(3));
    }
    assert_eq!(pair.connected_to, [0]);
    // Server 0 dies mid-stream (bytes in flight are lost, mid-frame).
    pair.publish(50);
    pair.step();
    pair.set_up(0, false);
    for _ in 0..20 {
        pair.publish(11);
        pair.advance(ms(3));
    }
    assert_eq!(pair.connected_to, [0, 1], "server 1 at once");
    // Server 1 goes silent (blackholed without a close): dead after three
    // heartbeat intervals, then server 2.
    pair.faults.blackhole = true;
    pair.advance(ms(3100));
    pair.faults.blackhole = false;
    pair.other(0).up = false;
    for _ in 0..20 {
        pair.publish(9);
        pair.advance(ms(3));
    }
    pair.advance(ms(50));
    assert_eq!(pair.connected_to, [0, 1, 2]);
    assert_exactly_once(&pair);
    assert!(pair.log.gaps.is_empty(), "{:?}", pair.log.gaps);
    assert!(
        pair.log.lost.iter().any(|(_, l)| *l == Lost::Silent),
        "{:?}",
        pair.log.lost
    );
    // Each login asked for exactly the next sequence needed.
    let starts: Vec<u64> = pair.log.logins.iter().map(|l| l.2).collect();
    assert_eq!(starts[0], 1);
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
    assert!(
        pair.log.retrying.is_empty(),
        "no backoff: a server was always up"
    );
}

#[test]
fn failover_to_a_relay_that_is_behind_drops_what_it_sends_again() {
    let mut pair = Pair::with_servers(client_config(1), 2);
    pair.start();
    pair.publish(10);
    pair.advance(ms(5));
    // Server 1 (a relay) falls behind: it misses the next 30 frames.
    pair.lag(1, true);
    for _ in 0..3 {
        pair.publish(10);
        pair.advance(ms(5));
    }
    assert_eq!(pair.log.data.len(), 40);
    pair.set_up(0, false);
    pair.advance(ms(5));
    assert_eq!(pair.connected_to, [0, 1]);
    // The relay answers from its next live sequence (11, section 4.2), not 41.
    assert_eq!(pair.log.logins.last().unwrap().2, 11);
    // It catches up, and its clients get it all again: 11..=40 are
    // duplicates, dropped; 41.. are new.
    pair.lag(1, false);
    pair.publish(10);
    pair.advance(ms(5));
    assert_eq!(pair.log.duplicates, 30, "11..=40 sent again, dropped");
    pair.log.duplicates = 0;
    assert_exactly_once(&pair);
    assert!(pair.log.gaps.is_empty(), "{:?}", pair.log.gaps);
}
