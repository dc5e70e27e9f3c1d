//! Authenticated logins (protocol section 11) in the server core, in
//! virtual time: every rule of the section with hostile Auths (wrong
//! secret, unknown key, wrong order, two Auths, truncated, not well-formed,
//! a byte at a time, brute force from one address and from many), what the
//! server writes byte for byte, the drain after a Rejected, and the lock-out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tickwire::encode::QuoteFields;
use tickwire::parse::{Event, SliceParser};
use tickwire::session::auth::{Credentials, LockOutConfig, Permissions};
use tickwire::session::{
    Batch, CloseReason, ConnId, CoreConfig, CoreEvent, ServerCore, ServerEvent, ServerPhase, Time,
};
use tickwire::wire::{KeyId, RejectReason, Secret};
use tickwire::{encode, Message, Payload, Sequencer};

const ALICE: [u8; 32] = [0xa1; 32];
const SUB: [u8; 32] = [0x5b; 32];
const RETX: [u8; 32] = [0x7e; 32];

fn credentials() -> Credentials {
    let lines = [
        Credentials::line(&KeyId::new("alice").unwrap(), &Secret::new(ALICE), None),
        Credentials::line(
            &KeyId::new("sub-only").unwrap(),
            &Secret::new(SUB),
            Some(Permissions::SUBSCRIBE),
        ),
        Credentials::line(
            &KeyId::new("retx-only").unwrap(),
            &Secret::new(RETX),
            Some(Permissions::RETRANSMIT),
        ),
    ];
    Credentials::parse(&lines.join("\n")).unwrap()
}

fn at(ms: u64) -> Time {
    Time::new(
        Duration::from_millis(ms),
        1_700_000_000_000_000_000 + ms * 1_000_000,
    )
}

fn frame(payload: &Payload, sequence: u64) -> Vec<u8> {
    let mut buf = vec![0u8; payload.frame_len()];
    let n = encode(payload, sequence, 0, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn auth(key: &str, secret: [u8; 32]) -> Vec<u8> {
    frame(
        &Payload::auth(&KeyId::new(key).unwrap(), Secret::new(secret)),
        0,
    )
}

fn login(sequence: u64) -> Vec<u8> {
    frame(&Payload::Login, sequence)
}

fn retransmit(sequence: u64, count: u64) -> Vec<u8> {
    frame(
        &Payload::Retransmit {
            session_id: 0,
            count,
        },
        sequence,
    )
}

/// A core in virtual time and what it wrote to each connection.
struct Harness {
    core: ServerCore,
    wire: HashMap<ConnId, Vec<u8>>,
    write_shut: HashMap<ConnId, usize>,
    closed: HashMap<ConnId, CloseReason>,
    events: Vec<CoreEvent>,
    seq: Sequencer,
    now: u64,
}

impl Harness {
    fn new(auth: bool, lockout: LockOutConfig) -> Harness {
        let mut config = CoreConfig::new(77);
        config.lockout = lockout;
        let mut core = ServerCore::new(config, at(0));
        if auth {
            core.set_verifier(Some(Arc::new(credentials())));
        }
        Harness {
            core,
            wire: HashMap::new(),
            write_shut: HashMap::new(),
            closed: HashMap::new(),
            events: Vec::new(),
            seq: Sequencer::new(),
            now: 0,
        }
    }

    fn secured() -> Harness {
        Harness::new(true, LockOutConfig::DEFAULT)
    }

    fn connect(&mut self, peer: &str) -> ConnId {
        let id = self
            .core
            .accept(peer.parse::<SocketAddr>().unwrap(), at(self.now));
        self.run();
        id
    }

    fn send(&mut self, id: ConnId, bytes: &[u8]) {
        self.core.handle_input(id, bytes, at(self.now));
        self.run();
    }

    fn eof(&mut self, id: ConnId) {
        self.core.handle_eof(id, at(self.now));
        self.run();
    }

    fn publish(&mut self, n: usize) {
        let mut bytes = vec![0u8; n * 44];
        let done = self.seq.encode_batch(
            &vec![(0, Payload::Quote(QuoteFields::default())); n],
            &mut bytes,
        );
        bytes.truncate(done.bytes);
        self.core
            .publish(Arc::new(Batch::new(bytes).unwrap()), at(self.now));
        self.run();
    }

    /// Moves virtual time on to `ms`, running every deadline on the way.
    fn advance_to(&mut self, ms: u64) {
        while let Some(next) = self.core.poll_timeout() {
            let next_ms = u64::try_from(next.as_millis()).unwrap();
            if next_ms > ms {
                break;
            }
            self.now = self.now.max(next_ms);
            self.tick();
        }
        self.now = ms;
        self.tick();
    }

    fn tick(&mut self) {
        let t = at(self.now);
        self.core.handle_timeout(t);
        while let Some(id) = self.core.poll_expired(t.monotonic) {
            self.core.handle_conn_timeout(id, t, 0);
        }
        self.run();
    }

    /// The driver: writes everything, shuts down sending sides, releases
    /// closed connections.
    fn run(&mut self) {
        let t = at(self.now);
        while let Some(id) = self.core.poll_ready() {
            while let Some(tx) = self.core.poll_transmit(id, t) {
                let n = tx.len();
                let out = self.wire.entry(id).or_default();
                tx.slices().for_each(|s| out.extend_from_slice(s));
                self.core.transmitted(id, n, t);
            }
            if self.core.poll_write_shutdown(id) {
                *self.write_shut.entry(id).or_default() += 1;
            }
            if let Some(reason) = self.core.close_reason(id) {
                self.closed.insert(id, reason);
                self.core.release(id);
            }
        }
        while let Some(event) = self.core.poll_event() {
            self.events.push(event);
        }
    }

    /// What `id` was sent, as (type, sequence) pairs; a Rejected as its reason.
    fn received(&self, id: ConnId) -> Vec<Rx> {
        let bytes = self.wire.get(&id).map(Vec::as_slice).unwrap_or_default();
        SliceParser::new(bytes)
            .filter_map(|event| match event {
                Event::Frame(Message::Rejected(r)) => Some(Rx::Rejected(r.reason())),
                Event::Frame(Message::LoginAccepted(m)) => Some(Rx::Accepted(m.sequence())),
                Event::Frame(Message::Quote(m)) => Some(Rx::Data(m.sequence())),
                Event::Frame(Message::Heartbeat(m)) => Some(Rx::Heartbeat(m.sequence())),
                Event::Frame(m) => Some(Rx::Other(m.msg_type() as u8)),
                Event::NewSession { .. } | Event::Gap(_) => None,
                other => panic!("the server wrote something that is not a frame: {other:?}"),
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rx {
    Accepted(u64),
    Data(u64),
    Heartbeat(u64),
    Rejected(RejectReason),
    Other(u8),
}

#[test]
fn a_valid_auth_and_login_in_one_write_log_in() {
    let mut h = Harness::secured();
    h.publish(3);
    let c = h.connect("10.0.0.1:5000");
    h.send(c, &[auth("alice", ALICE), login(2)].concat());
    assert_eq!(h.received(c), [Rx::Accepted(2), Rx::Data(2), Rx::Data(3)]);
    assert_eq!(h.core.phase(c), Some(ServerPhase::Live));
    assert_eq!(h.core.stats().authenticated, 1);
    assert!(h.events.iter().any(|e| matches!(
        e,
        CoreEvent::Session { event: ServerEvent::Authenticated { key_id }, .. } if key_id.as_str() == "alice"
    )));
    h.publish(1);
    assert_eq!(h.received(c).last(), Some(&Rx::Data(4)));
}

#[test]
fn an_auth_a_byte_at_a_time_logs_in() {
    let mut h = Harness::secured();
    let c = h.connect("10.0.0.1:5000");
    for byte in [auth("alice", ALICE), login(0)].concat() {
        h.send(c, &[byte]);
    }
    assert_eq!(h.received(c), [Rx::Accepted(1)]);
}

#[test]
fn login_first_is_answered_reason_1_at_once_and_nothing_else() {
    let mut h = Harness::secured();
    h.publish(5);
    let c = h.connect("10.0.0.1:5000");
    // One byte that cannot start an Auth is enough.
    let l = login(1);
    h.send(c, &l[..3]); // a5 01 03: not a5 01 07
    assert_eq!(
        h.received(c),
        [Rx::Rejected(RejectReason::AuthenticationRequired)]
    );
    assert_eq!(h.write_shut.get(&c), Some(&1));
    // Nothing read after it is acted on: the rest of the Login, an Auth.
    h.send(c, &l[3..]);
    h.send(c, &auth("alice", ALICE));
    h.publish(2);
    h.advance_to(900);
    assert_eq!(
        h.received(c),
        [Rx::Rejected(RejectReason::AuthenticationRequired)]
    );
    assert_eq!(h.core.phase(c), Some(ServerPhase::Rejected));
    h.eof(c);
    assert_eq!(h.closed.get(&c), Some(&CloseReason::Rejected));
    assert_eq!(h.core.stats().clients, 0);
}

#[test]
fn every_bad_auth_is_reason_2_and_counts_as_a_failure() {
    let mut h = Harness::secured();
    let mut bad_crc = auth("alice", ALICE);
    bad_crc[70] ^= 1;
    let mut bad_id = auth("alice", ALICE);
    bad_id[20 + 5] = b' '; // "alice " then padding: a character not allowed
    let mut hole_in_id = auth("alice", ALICE);
    hole_in_id[20 + 2] = 0; // "al\0ce": padding before the end
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("wrong secret", auth("alice", SUB)),
        ("unknown key", auth("mallory", ALICE)),
        (
            "sequence 1",
            frame(
                &Payload::auth(&KeyId::new("alice").unwrap(), Secret::new(ALICE)),
                1,
            ),
        ),
        ("bad checksum", bad_crc),
        ("bad key id character", reseal(bad_id)),
        ("padding inside the key id", reseal(hole_in_id)),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let c = h.connect(&format!("10.0.1.{i}:5000"));
        h.send(c, &[bytes.clone(), login(0)].concat());
        assert_eq!(
            h.received(c),
            [Rx::Rejected(RejectReason::NotAuthorized)],
            "{what}"
        );
        assert_eq!(h.write_shut.get(&c), Some(&1), "{what}");
    }
    assert_eq!(h.core.stats().auth_failures, cases.len() as u64);
    assert_eq!(h.core.stats().clients, 0);
}

/// Recomputes an edited frame's checksum (a valid frame whose content is
/// not a well-formed Auth).
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let n = bytes.len();
    let crc = tickwire::checksum::crc32c(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn a_truncated_auth_then_close_gets_no_rejected() {
    let mut h = Harness::secured();
    let c = h.connect("10.0.0.1:5000");
    h.send(c, &auth("alice", ALICE)[..40]);
    assert_eq!(h.received(c), []);
    h.eof(c);
    assert_eq!(h.received(c), []);
    assert_eq!(h.closed.get(&c), Some(&CloseReason::PeerClosed));
    assert_eq!(h.core.stats().auth_failures, 0);
}

#[test]
fn a_second_auth_is_an_unexpected_frame() {
    let mut h = Harness::secured();
    let c = h.connect("10.0.0.1:5000");
    h.send(c, &[auth("alice", ALICE), auth("alice", ALICE)].concat());
    assert_eq!(h.closed.get(&c), Some(&CloseReason::UnexpectedFrame));
    assert_eq!(h.received(c), []);
    // After the Login too.
    let d = h.connect("10.0.0.2:5000");
    h.send(
        d,
        &[auth("alice", ALICE), login(0), auth("alice", ALICE)].concat(),
    );
    assert_eq!(h.closed.get(&d), Some(&CloseReason::UnexpectedFrame));
}

#[test]
fn a_key_asking_for_what_it_may_not_gets_reason_3_and_no_data() {
    let mut h = Harness::secured();
    h.publish(10);
    // Subscribe-only asking for a retransmission.
    let c = h.connect("10.0.0.1:5000");
    h.send(c, &[auth("sub-only", SUB), retransmit(1, 5)].concat());
    assert_eq!(h.received(c), [Rx::Rejected(RejectReason::NotPermitted)]);
    // Retransmit-only asking to log in.
    let d = h.connect("10.0.0.2:5000");
    h.send(d, &[auth("retx-only", RETX), login(1)].concat());
    assert_eq!(h.received(d), [Rx::Rejected(RejectReason::NotPermitted)]);
    h.publish(3);
    h.advance_to(500);
    assert_eq!(h.received(d), [Rx::Rejected(RejectReason::NotPermitted)]);
    // And each what it may.
    let e = h.connect("10.0.0.3:5000");
    h.send(e, &[auth("retx-only", RETX), retransmit(2, 2)].concat());
    assert_eq!(
        h.received(e),
        [Rx::Accepted(2), Rx::Data(2), Rx::Data(3), Rx::Heartbeat(4)]
    );
    let f = h.connect("10.0.0.4:5000");
    h.send(f, &[auth("sub-only", SUB), login(14)].concat());
    assert_eq!(h.received(f), [Rx::Accepted(14)]);
    assert_eq!(h.core.stats().not_permitted, 2);
    assert_eq!(h.core.stats().auth_failures, 0);
}

#[test]
fn the_drain_after_a_rejected_ends_at_4_kib_or_1_s() {
    let mut h = Harness::secured();
    let c = h.connect("10.0.0.1:5000");
    h.send(c, b"GET / HTTP/1.1\r\n");
    assert_eq!(
        h.received(c),
        [Rx::Rejected(RejectReason::AuthenticationRequired)]
    );
    h.send(c, &[0u8; 4000]);
    assert!(!h.closed.contains_key(&c));
    h.send(c, &[0u8; 200]);
    assert_eq!(h.closed.get(&c), Some(&CloseReason::Rejected));

    let d = h.connect("10.0.0.2:5000");
    h.send(d, &auth("alice", SUB));
    h.advance_to(h.now + 999);
    assert!(!h.closed.contains_key(&d));
    h.advance_to(h.now + 1);
    assert_eq!(h.closed.get(&d), Some(&CloseReason::Rejected));
    assert_eq!(h.received(d), [Rx::Rejected(RejectReason::NotAuthorized)]);
}

#[test]
fn the_login_timeout_runs_from_the_accept_through_the_auth() {
    let mut h = Harness::secured();
    let c = h.connect("10.0.0.1:5000");
    h.advance_to(4_000);
    h.send(c, &auth("alice", ALICE));
    h.advance_to(4_999);
    assert!(!h.closed.contains_key(&c));
    h.advance_to(5_000);
    assert_eq!(h.closed.get(&c), Some(&CloseReason::LoginTimeout));
    assert_eq!(h.received(c), []); // no Heartbeat, no Rejected
}

#[test]
fn nothing_is_sent_before_login_accepted_or_rejected_even_at_shutdown() {
    let mut h = Harness::secured();
    h.publish(2);
    let c = h.connect("10.0.0.1:5000");
    h.send(c, &auth("alice", ALICE));
    h.advance_to(3_000); // three heartbeat intervals
    h.core.shutdown(at(h.now));
    h.run();
    assert_eq!(h.received(c), []);
    assert_eq!(h.closed.get(&c), Some(&CloseReason::Shutdown));
}

#[test]
fn without_a_verifier_an_auth_first_is_ignored() {
    let mut h = Harness::new(false, LockOutConfig::DEFAULT);
    h.publish(2);
    let c = h.connect("10.0.0.1:5000");
    h.send(c, &[auth("anyone", [0; 32]), login(1)].concat());
    assert_eq!(h.received(c), [Rx::Accepted(1), Rx::Data(1), Rx::Data(2)]);
    assert_eq!(h.core.stats().authenticated, 0);
    // Not first: unexpected.
    let d = h.connect("10.0.0.2:5000");
    h.send(d, &[login(1), auth("anyone", [0; 32])].concat());
    assert_eq!(h.closed.get(&d), Some(&CloseReason::UnexpectedFrame));
    // Not even a valid Auth is needed to be ignored... but a broken one is bad data.
    let e = h.connect("10.0.0.3:5000");
    let mut broken = auth("anyone", [0; 32]);
    broken[30] ^= 1;
    h.send(e, &[broken, login(1)].concat());
    assert_eq!(h.closed.get(&e), Some(&CloseReason::BadData));
}

#[test]
fn brute_force_from_one_address_is_locked_out_while_others_log_in() {
    let rule = LockOutConfig {
        max_failures: 5,
        window: Duration::from_secs(60),
        max_addresses: 64,
    };
    let mut h = Harness::new(true, rule);
    for i in 0..5u8 {
        let c = h.connect("192.0.2.66:5000");
        h.send(c, &auth("alice", [i; 32]));
        assert_eq!(h.received(c), [Rx::Rejected(RejectReason::NotAuthorized)]);
    }
    // Locked: closed at the accept, nothing read (a right secret included)
    // or written.
    for _ in 0..100 {
        let c = h.connect("192.0.2.66:5001");
        assert_eq!(h.closed.get(&c), Some(&CloseReason::LockedOut));
        h.send(c, &[auth("alice", ALICE), login(0)].concat());
        assert_eq!(h.received(c), []);
    }
    assert_eq!(h.core.lockout_stats().0, 100);
    assert_eq!(h.core.stats().auth_failures, 5);
    // Others are not.
    let ok = h.connect("192.0.2.67:5000");
    h.send(ok, &[auth("alice", ALICE), login(0)].concat());
    assert_eq!(h.received(ok), [Rx::Accepted(1)]);
    // After the window, the address may try again.
    h.advance_to(60_000);
    let again = h.connect("192.0.2.66:5002");
    h.send(again, &[auth("alice", ALICE), login(0)].concat());
    assert_eq!(h.received(again), [Rx::Accepted(1)]);
}

#[test]
fn brute_force_from_many_addresses_is_bounded_and_never_lets_a_wrong_secret_in() {
    let rule = LockOutConfig {
        max_failures: 3,
        window: Duration::from_secs(60),
        max_addresses: 128,
    };
    let mut h = Harness::new(true, rule);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..2_000u32 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&rng.to_le_bytes());
        let peer = format!("10.{}.{}.{}:4000", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        let c = h.connect(&peer);
        h.send(c, &[auth("alice", secret), login(0)].concat());
        assert_eq!(h.received(c), [Rx::Rejected(RejectReason::NotAuthorized)]);
        h.eof(c);
        assert!(h.core.lockout_stats().1 <= 128);
    }
    assert_eq!(h.core.stats().clients, 0);
    assert_eq!(h.core.stats().auth_failures, 2_000);
    assert_eq!(h.core.stats().open, 0);
}

#[test]
fn rejected_connections_count_as_pending_until_closed() {
    let mut config = CoreConfig::new(77);
    config.max_unauthenticated = 4;
    config.max_unauthenticated_per_peer = 4;
    config.admission_grace = Duration::ZERO;
    let mut h = Harness::secured();
    h.core = ServerCore::new(config, at(0));
    h.core.set_verifier(Some(Arc::new(credentials())));
    let mut rejected = Vec::new();
    for _ in 0..4 {
        let c = h.connect("10.0.0.9:1");
        h.send(c, &login(0));
        rejected.push(c);
    }
    h.tick();
    assert_eq!(h.core.stats().unauthenticated, 4);
    // A fifth displaces the oldest rejected one, still draining.
    let c = h.connect("10.0.0.9:2");
    h.tick();
    assert_eq!(
        h.closed.get(&rejected[0]),
        Some(&CloseReason::UnauthenticatedLimit)
    );
    h.send(c, &[auth("alice", ALICE), login(0)].concat());
    assert_eq!(h.received(c), [Rx::Accepted(1)]);
}

// ---- The client side (section 11, rules 1 and 5) ----

use tickwire::session::auth::ClientKey;
use tickwire::session::{
    Action, ClientEvent, ClientSession, ClientSessionConfig, ClientState, Lost,
};

fn key(id: &str, secret: [u8; 32]) -> ClientKey {
    ClientKey {
        key_id: KeyId::new(id).unwrap(),
        secret: Secret::new(secret),
    }
}

fn client(credentials: Option<ClientKey>, servers: usize) -> ClientSession {
    ClientSession::new(ClientSessionConfig {
        credentials,
        servers,
        ..ClientSessionConfig::default()
    })
}

/// What the client asks the driver to write, and whether it asked to connect.
fn sent(c: &mut ClientSession) -> (bool, Vec<u8>) {
    let (mut connect, mut out) = (false, Vec::new());
    while let Some(action) = c.poll_action() {
        match action {
            Action::Connect => connect = true,
            Action::Send(frame) => {
                // Debug of an Auth frame never shows its bytes.
                assert!(!format!("{frame:?}").contains("161"), "{frame:?}");
                out.extend_from_slice(frame.as_bytes());
            }
            Action::Close => {}
            _ => {}
        }
    }
    (connect, out)
}

#[test]
fn a_client_with_credentials_sends_its_auth_first_then_the_login() {
    let mut c = client(Some(key("alice", ALICE)), 1);
    let mut events = Vec::new();
    c.connect(at(0), &mut |e| events.push(format!("{e:?}")));
    assert!(sent(&mut c).0);
    c.handle_connected(at(1), &mut |e| events.push(format!("{e:?}")));
    let (_, bytes) = sent(&mut c);
    assert_eq!(bytes.len(), 72 + 24);
    let frames: Vec<Message<'_>> = SliceParser::new(&bytes)
        .filter_map(|e| {
            if let Event::Frame(m) = e {
                Some(m)
            } else {
                None
            }
        })
        .collect();
    assert!(
        matches!(frames[0], Message::Auth(a) if a.key_id().unwrap().as_str() == "alice" && a.secret() == Secret::new(ALICE))
    );
    assert!(matches!(frames[1], Message::Login(_)));
    // Without credentials: the Login alone.
    let mut plain = client(None, 1);
    plain.connect(at(0), &mut |_| {});
    plain.handle_connected(at(1), &mut |_| {});
    assert_eq!(sent(&mut plain).1.len(), 24);
    // No secret in any event or Debug of the session.
    assert!(!format!("{c:?}").contains("161") && !format!("{c:?}").contains("a1"));
}

fn rejected(reason: u8) -> Vec<u8> {
    frame(
        &Payload::Rejected {
            reason: RejectReason::from_code(reason),
        },
        0,
    )
}

fn feed(c: &mut ClientSession, bytes: &[u8], t: Time, log: &mut Vec<String>) {
    for event in SliceParser::new(bytes) {
        c.handle_event(event, t, &mut |e| log.push(format!("{e:?}")));
    }
}

#[test]
fn a_rejected_client_does_not_come_back_to_that_server() {
    for reason in [1u8, 2, 3, 9] {
        let mut c = client(Some(key("alice", ALICE)), 1);
        let mut log = Vec::new();
        c.connect(at(0), &mut |_| {});
        c.handle_connected(at(1), &mut |_| {});
        sent(&mut c);
        feed(&mut c, &rejected(reason), at(2), &mut log);
        let expected = RejectReason::from_code(reason);
        assert!(
            log.iter().any(|e| e
                == &format!(
                    "{:?}",
                    ClientEvent::Rejected {
                        server: 0,
                        reason: expected
                    }
                )),
            "{log:?}"
        );
        assert!(log.last().unwrap().starts_with("GaveUp"), "{log:?}");
        assert_eq!(c.state(), ClientState::Disconnected);
        assert!(c.is_stopped());
        assert_eq!(c.last_lost(), Some(Lost::Rejected(expected)));
        assert_eq!(c.poll_timeout(), None); // never retried
        assert_eq!(c.stats().rejected, 1);
    }
}

#[test]
fn fail_over_skips_servers_that_rejected_and_gives_up_when_all_did() {
    let mut c = client(Some(key("alice", ALICE)), 3);
    let mut log = Vec::new();
    c.connect(at(0), &mut |_| {});
    assert_eq!(c.server(), 0);
    c.handle_connected(at(1), &mut |_| {});
    feed(&mut c, &rejected(2), at(2), &mut log);
    assert_eq!((c.server(), c.state()), (1, ClientState::Connecting));
    // Server 1 fails (transient): server 2 next, then not 0.
    c.handle_lost(Lost::Closed, at(3), &mut |_| {});
    assert_eq!(c.server(), 2);
    c.handle_connected(at(4), &mut |_| {});
    c.handle_lost(Lost::Closed, at(5), &mut |_| {});
    assert_eq!(c.server(), 1, "server 0 rejected: skipped");
    // A whole round of the two left failed: back off, then server 1 again.
    let retry = c.poll_timeout().unwrap();
    c.handle_timeout(Time::new(retry, 0), &mut |_| {});
    assert_eq!((c.server(), c.state()), (1, ClientState::Connecting));
    c.handle_connected(Time::new(retry, 0), &mut |_| {});
    feed(&mut c, &rejected(3), Time::new(retry, 0), &mut log);
    assert_eq!((c.server(), c.state()), (2, ClientState::Connecting));
    c.handle_connected(Time::new(retry, 0), &mut |_| {});
    feed(&mut c, &rejected(1), Time::new(retry, 0), &mut log);
    assert!(c.is_stopped());
    assert!(log.last().unwrap().starts_with("GaveUp"), "{log:?}");
    assert_eq!(c.stats().rejected, 3);
}

/// A client session and the server core over an in-memory pipe.
fn client_against_core(
    credentials: Option<ClientKey>,
) -> (ClientSession, Harness, ConnId, Vec<String>) {
    let mut h = Harness::secured();
    h.publish(3);
    let mut c = ClientSession::new(ClientSessionConfig {
        from: 1,
        credentials,
        ..ClientSessionConfig::default()
    });
    let mut log = Vec::new();
    c.connect(at(0), &mut |_| {});
    let id = h.connect("127.0.0.1:40000");
    c.handle_connected(at(0), &mut |e| log.push(format!("{e:?}")));
    let (_, bytes) = sent(&mut c);
    h.send(id, &bytes);
    let answer = h.wire.get(&id).cloned().unwrap_or_default();
    feed(&mut c, &answer, at(0), &mut log);
    (c, h, id, log)
}

#[test]
fn end_to_end_in_virtual_time() {
    let (c, h, id, log) = client_against_core(Some(key("alice", ALICE)));
    assert_eq!(c.state(), ClientState::LoggedIn);
    assert_eq!(c.tracker().expected(), Some(4));
    assert_eq!(h.core.phase(id), Some(ServerPhase::Live));
    assert!(log.iter().any(|e| e.starts_with("LoggedIn")));

    let (c, h, id, log) = client_against_core(Some(key("alice", SUB)));
    assert!(c.is_stopped(), "{log:?}");
    assert_eq!(
        c.last_lost(),
        Some(Lost::Rejected(RejectReason::NotAuthorized))
    );
    assert_eq!(h.core.phase(id), Some(ServerPhase::Rejected));

    let (c, _, _, _) = client_against_core(None);
    assert_eq!(
        c.last_lost(),
        Some(Lost::Rejected(RejectReason::AuthenticationRequired))
    );
}

// ---- Files: credentials, secrets (issue 25, point 3) ----

mod files {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::PathBuf;

    use tickwire::session::auth::{
        load_secret, write_secret_file, Credentials, CredentialsFileError, SecretError,
    };
    use tickwire::wire::{KeyId, Secret};

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("tickwire-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    #[test]
    fn a_secret_file_is_private_hex_and_never_echoed() {
        let d = dir("secret");
        let path = d.0.join("key");
        let secret = Secret::new([0x3c; 32]);
        write_secret_file(&path, &secret).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "3c".repeat(32) + "\n"
        );
        assert_eq!(load_secret(Some(&path)).unwrap(), secret);
        // O_EXCL: never overwritten.
        assert!(matches!(
            write_secret_file(&path, &Secret::new([0; 32])),
            Err(SecretError::Io { .. })
        ));
        assert_eq!(load_secret(Some(&path)).unwrap(), secret);
        // Others may read it: refused, and the message does not echo it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load_secret(Some(&path)).unwrap_err();
        assert!(
            matches!(e, SecretError::Exposed { mode: 0o640, .. }),
            "{e:?}"
        );
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("3c3c"), "{shown}");
        // Not hex: refused without echoing.
        let bad = d.0.join("bad");
        std::fs::write(&bad, "my password is hunter2\n").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load_secret(Some(&bad)).unwrap_err();
        assert!(matches!(e, SecretError::Format));
        assert!(!format!("{e} {e:?}").contains("hunter2"));
        // CRLF and blanks around the digits are fine.
        let crlf = d.0.join("crlf");
        std::fs::write(&crlf, "  ".to_owned() + &"AB".repeat(32) + "\r\n").unwrap();
        std::fs::set_permissions(&crlf, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(load_secret(Some(&crlf)).unwrap(), Secret::new([0xab; 32]));
    }

    #[test]
    fn a_credentials_file_is_private_and_its_errors_name_lines_only() {
        let d = dir("credentials");
        let path = d.0.join("keys");
        let line = Credentials::line(&KeyId::new("desk-7").unwrap(), &Secret::new([1; 32]), None);
        std::fs::write(&path, format!("# keys\r\n{line}\r\n\r\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Credentials::load(&path),
            Err(CredentialsFileError::File(SecretError::Exposed { .. }))
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Credentials::load(&path).unwrap().len(), 1);
        std::fs::write(&path, format!("{line}\n{line}\n")).unwrap();
        let e = Credentials::load(&path).unwrap_err();
        assert_eq!(e.to_string(), "credentials line 2: a duplicate key id");
        assert!(!format!("{e:?}").contains(&line[7..]));
        let missing = Credentials::load(&d.0.join("nope")).unwrap_err();
        assert!(matches!(
            missing,
            CredentialsFileError::File(SecretError::Io { .. })
        ));
    }
}
