//! Relays (protocol section 10) and client fail-over over real sockets on
//! 127.0.0.1: origin → relay → relay → clients with every client's frames
//! compared byte for byte with the origin's; relays killed (gracefully,
//! and by a connection cut mid-frame) and silenced mid-stream with clients
//! failing over; an upstream session change reaching the relay's clients.
//! Every loop is bounded in time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tickwire::net::{Client, ClientConfig, Relay, RelayConfig, ServerConfig, ServerHandle};
use tickwire::policy::Backoff;
use tickwire::session::Lost;

const LIMIT: Duration = Duration::from_secs(60);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn origin(tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    server_on(local(), |c| {
        c.core.session.heartbeat_interval = Duration::from_millis(100);
        tweak(c);
    })
}

fn relay_of(upstream: &[SocketAddr]) -> Relay {
    relay_with_threads(upstream, 1)
}

/// A relay whose server runs `threads` event loops.
fn relay_with_threads(upstream: &[SocketAddr], threads: usize) -> Relay {
    let mut config = RelayConfig::new(upstream, local()).unwrap();
    config.server.mio.threads = threads;
    config.upstream.heartbeat_interval = Duration::from_millis(100);
    config.upstream.backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
    config.server.core.session.heartbeat_interval = Duration::from_millis(100);
    Relay::start(config).unwrap()
}

/// A client of `servers` (fail-over order) from sequence 1, with 100 ms
/// heartbeats, run on a thread until it has `n` data frames.
fn client_thread(servers: Vec<SocketAddr>, n: usize) -> thread::JoinHandle<(Log, u64)> {
    thread::spawn(move || {
        let mut config = ClientConfig::with_servers(&servers).unwrap();
        config.from = 1;
        config.heartbeat_interval = Duration::from_millis(100);
        config.backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let mut client = Client::new(config).unwrap();
        let log = drive(&mut client, LIMIT, |log| log.frames.len() >= n);
        let failovers = client.stats().failovers;
        (log, failovers)
    })
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn origin_relay_relay_clients_all_get_the_origins_bytes() {
    const N: usize = 30_000;
    let msgs = messages(11, N);
    let want = expected_frames(&msgs);
    let origin = origin(|_| {});
    let first = relay_of(&[origin.local_addr()]);
    // Two event loops: relayed batches reach the worker's clients too.
    let second = relay_with_threads(&[first.local_addr()], 2);
    assert_eq!(first.session_id(), origin.session_id());
    assert_eq!(second.session_id(), origin.session_id());
    // Clients at every level, some before the feed starts, one joining
    // the second relay mid-stream (a replay from it, then live).
    let early = [
        client_thread(vec![origin.local_addr()], N),
        client_thread(vec![first.local_addr()], N),
        client_thread(vec![second.local_addr()], N),
    ];
    let publisher = origin.publisher();
    let feed = publish_paced(
        move |batch| publisher.publish(batch).unwrap(),
        msgs,
        100,
        Duration::from_micros(500),
    );
    wait_until("the second relay to pass frame 10,000", || {
        second.stats().frames_published >= 10_000
    });
    let late = client_thread(vec![second.local_addr()], N);
    feed.join().unwrap();
    for client in early.into_iter().chain([late]) {
        let (log, _) = client.join().unwrap();
        assert_exactly_once_in_order(&log, &want);
        assert!(log.gaps.is_empty(), "{:?}", log.gaps);
        assert_eq!(log.sessions.len(), 1);
        assert_eq!(log.sessions[0].0, origin.session_id());
    }
    assert_eq!(second.stats().frames_published, N as u64);
    assert_eq!(second.upstream_stats().gaps, 0);
    second.shutdown().unwrap();
    first.shutdown().unwrap();
}

#[test]
fn relays_killed_or_silenced_mid_stream_clients_fail_over_with_nothing_lost_or_repeated() {
    const N: usize = 30_000;
    let msgs = messages(12, N);
    let want = expected_frames(&msgs);
    let origin = origin(|_| {});
    let a = relay_of(&[origin.local_addr()]);
    let b = relay_of(&[origin.local_addr()]);
    let c = relay_of(&[origin.local_addr()]);
    // B's clients lose their connection with a reset mid-frame; C's go
    // silent (nothing more arrives, the connection stays open).
    let cut_b = Proxy::start(
        b.local_addr(),
        Faults {
            cuts: vec![(200_001, Cut::Rst)],
            ..Faults::default()
        },
    );
    let silent_c = Proxy::start(
        c.local_addr(),
        Faults {
            blackhole_after: Some(300_003),
            ..Faults::default()
        },
    );
    let clients = [
        // A is shut down mid-stream: its clients go on at B, then C.
        client_thread(vec![a.local_addr(), b.local_addr(), c.local_addr()], N),
        client_thread(vec![a.local_addr(), origin.local_addr()], N),
        // Cut mid-frame at B: on at the origin.
        client_thread(vec![cut_b.addr, origin.local_addr()], N),
        // Silent at C: dead after three heartbeat intervals, on at A (gone
        // by then, or about to go) or B.
        client_thread(vec![silent_c.addr, a.local_addr(), b.local_addr()], N),
    ];
    let publisher = origin.publisher();
    let feed = publish_paced(
        move |batch| publisher.publish(batch).unwrap(),
        msgs,
        100,
        Duration::from_millis(1),
    );
    wait_until("relay A to pass frame 12,000", || {
        a.stats().frames_published >= 12_000
    });
    a.shutdown().unwrap();
    feed.join().unwrap();
    let mut failed_over = 0;
    for client in clients {
        let (log, failovers) = client.join().unwrap();
        assert_exactly_once_in_order(&log, &want);
        assert!(log.gaps.is_empty(), "{:?}", log.gaps);
        assert_eq!(log.sessions.len(), 1, "one session throughout");
        assert!(failovers >= 1, "every client failed over");
        failed_over += failovers;
    }
    assert!(failed_over >= 4);
    assert!(cut_b.connections.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(silent_c.blackholed_at.lock().unwrap().is_some());
    b.shutdown().unwrap();
    c.shutdown().unwrap();
}

#[test]
fn an_upstream_session_change_ends_the_relays_session_and_its_clients_see_the_new_one() {
    let first_msgs = messages(13, 500);
    let second_msgs = messages(14, 300);
    let origin1 = origin(|_| {});
    let addr = origin1.local_addr();
    let relay = relay_of(&[addr]);
    // Two event loops: the session change reaches the worker's clients too.
    let second_relay = relay_with_threads(&[relay.local_addr()], 2);
    origin1.publisher().publish(first_msgs.clone()).unwrap();
    let old_session = origin1.session_id();
    // A client of the chain's end: the first session, then the second.
    let client = thread::spawn({
        let at = second_relay.local_addr();
        move || {
            let mut config = fast_config(at);
            config.heartbeat_interval = Duration::from_millis(100);
            let mut client = Client::new(config).unwrap();
            drive(&mut client, LIMIT, |log| log.frames.len() >= 800)
        }
    });
    wait_until("the first session to reach the end of the chain", || {
        second_relay.stats().frames_published >= 500
    });
    // The origin restarts on the same address: a new session.
    origin1.shutdown().unwrap();
    let origin2 = server_on(addr, |c| {
        c.core.session.heartbeat_interval = Duration::from_millis(100)
    });
    assert_ne!(origin2.session_id(), old_session);
    origin2.publisher().publish(second_msgs.clone()).unwrap();
    let log = client.join().unwrap();
    wait_until("both relays to serve the new session", || {
        relay.session_id() == origin2.session_id()
            && second_relay.session_id() == origin2.session_id()
    });
    // 500 frames of the first session, then 300 of the second, each byte
    // for byte as its origin sent it.
    let mut want = expected_frames(&first_msgs);
    want.extend(expected_frames(&second_msgs));
    assert_eq!(log.frames.len(), 800);
    for (i, (seq, bytes)) in log.frames.iter().enumerate() {
        let expected_seq = if i < 500 { i + 1 } else { i - 499 } as u64;
        assert_eq!(*seq, expected_seq);
        assert!(bytes == &want[i], "frame {i} byte for byte");
    }
    assert_eq!(log.sessions.len(), 2, "{:?}", log.sessions);
    assert_eq!(log.sessions[0].0, old_session);
    assert_eq!(log.sessions[1], (origin2.session_id(), 1));
    assert!(
        log.lost.iter().any(|(_, why)| *why == Lost::EndOfSession),
        "the relay said EndOfSession: {:?}",
        log.lost
    );
    second_relay.shutdown().unwrap();
    relay.shutdown().unwrap();
}

#[test]
fn a_relay_serves_datagrams_under_the_upstream_session_and_retransmits_from_its_retention() {
    use tickwire::net::{DatagramClient, DatagramClientConfig, DatagramOutputConfig};
    use tickwire::session::datagram::DatagramEvent;

    const N: usize = 20_000;
    let msgs = messages(15, N);
    let want: Vec<u8> = expected_frames(&msgs).concat();
    let origin = origin(|_| {});
    origin.publisher().publish(msgs[..5_000].to_vec()).unwrap();
    // The subscriber's port first, then a relay sending datagrams to it.
    let mut receiver = DatagramClientConfig::new(local());
    receiver.receiver.window = 1 << 16;
    receiver.receiver.start = Some(1); // 1..=5,000 came before: retransmitted by the relay
    receiver.heartbeat_interval = Duration::from_millis(100);
    let client = DatagramClient::new(receiver.clone()).unwrap();
    let line = client.local_addrs()[0];
    let mut config = RelayConfig::new(&[origin.local_addr()], local()).unwrap();
    config.server.core.session.heartbeat_interval = Duration::from_millis(100);
    let mut output = DatagramOutputConfig::new(line);
    output.max_datagram = 300; // re-packed into the relay's own size
    config.server.datagrams = Some(output);
    let relay = Relay::start(config).unwrap();
    wait_until("the relay to hold the first 5,000", || {
        relay.stats().frames_published >= 5_000
    });
    // The client asks the relay for what it missed.
    drop(client);
    receiver.line_a = line;
    receiver.retransmit = Some(relay.local_addr());
    let mut client = DatagramClient::new(receiver).unwrap();
    let publisher = origin.publisher();
    let feed = publish_paced(
        move |batch| publisher.publish(batch).unwrap(),
        msgs[5_000..].to_vec(),
        50,
        Duration::from_millis(1),
    );
    let (mut got, mut gaps, mut sessions) = (Vec::new(), Vec::new(), Vec::new());
    let mut frames = 0;
    let deadline = Instant::now() + LIMIT;
    while frames < N {
        assert!(Instant::now() < deadline, "timed out at {frames} frames");
        client
            .poll(Some(Duration::from_millis(20)), |e| match e {
                DatagramEvent::Frame(f) => {
                    frames += 1;
                    got.extend_from_slice(f.as_bytes());
                }
                DatagramEvent::Gap(g) => gaps.push(g),
                DatagramEvent::NewSession { session_id, .. } => sessions.push(session_id),
                _ => {}
            })
            .unwrap();
    }
    feed.join().unwrap();
    assert!(gaps.is_empty(), "{gaps:?}");
    assert!(sessions.is_empty(), "one session: {sessions:?}");
    assert_eq!(client.receiver().session(), Some(origin.session_id()));
    assert!(got == want, "the relay's datagrams hold the origin's bytes");
    assert!(
        client.stats().receiver.recovered >= 5_000,
        "{:?}",
        client.stats()
    );
    relay.shutdown().unwrap();
}

#[test]
fn a_relay_of_a_datagram_feed_serves_it_over_tcp_byte_for_byte() {
    use tickwire::net::{DatagramClientConfig, DatagramOutputConfig};

    const N: usize = 20_000;
    let msgs = messages(16, N);
    let want = expected_frames(&msgs);
    let line = std::net::UdpSocket::bind(local())
        .unwrap()
        .local_addr()
        .unwrap();
    let origin = origin(|c| {
        let mut output = DatagramOutputConfig::new(line);
        output.max_datagram = 600;
        c.datagrams = Some(output);
    });
    // 3,000 frames before the relay listens: it recovers them by
    // retransmission from the origin (start 1).
    origin.publisher().publish(msgs[..3_000].to_vec()).unwrap();
    let mut feed = DatagramClientConfig::new(line);
    feed.retransmit = Some(origin.local_addr());
    feed.heartbeat_interval = Duration::from_millis(100);
    feed.receiver.window = 1 << 16;
    feed.receiver.start = Some(1);
    let relay = {
        let publisher = origin.publisher();
        let first = msgs[3_000..3_100].to_vec();
        // The relay starts at its first datagram: publish one while it waits.
        let kick = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            publisher.publish(first).unwrap();
        });
        let relay = Relay::start(RelayConfig::from_datagrams(feed, local())).unwrap();
        kick.join().unwrap();
        relay
    };
    assert_eq!(relay.session_id(), origin.session_id());
    let client = client_thread(vec![relay.local_addr()], N);
    let publisher = origin.publisher();
    let rest = publish_paced(
        move |batch| publisher.publish(batch).unwrap(),
        msgs[3_100..].to_vec(),
        100,
        Duration::from_millis(1),
    );
    rest.join().unwrap();
    let (log, _) = client.join().unwrap();
    assert_exactly_once_in_order(&log, &want);
    assert!(log.gaps.is_empty(), "{:?}", log.gaps);
    // The origin stops: no more datagrams, and after three heartbeat
    // intervals the relay goes silent; its client notices.
    let silent = Instant::now();
    origin.shutdown().unwrap();
    let mut config = ClientConfig::new(relay.local_addr());
    config.heartbeat_interval = Duration::from_millis(100);
    config.backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(5));
    let mut late = Client::new(config).unwrap();
    let log = drive(&mut late, LIMIT, |log| !log.lost.is_empty());
    assert!(matches!(log.lost[0].1, Lost::Silent), "{:?}", log.lost);
    assert!(silent.elapsed() < Duration::from_secs(5));
    relay.shutdown().unwrap();
}

#[test]
fn a_relay_whose_upstream_is_gone_stays_silent_and_its_clients_notice() {
    let origin = origin(|_| {});
    origin.publisher().publish(messages(17, 100)).unwrap();
    let relay = relay_of(&[origin.local_addr()]);
    let mut config = fast_config(relay.local_addr());
    config.heartbeat_interval = Duration::from_millis(100);
    let mut client = Client::new(config).unwrap();
    // Logged in and fed: Heartbeats every 100 ms keep it alive for 1 s.
    let log = drive(&mut client, LIMIT, |log| log.frames.len() >= 100);
    assert!(log.lost.is_empty());
    let log = drive(&mut client, Duration::from_secs(2), {
        let until = Instant::now() + Duration::from_secs(1);
        move |_| Instant::now() >= until
    });
    assert!(
        log.lost.is_empty(),
        "alive while the upstream is: {:?}",
        log.lost
    );
    // The origin goes away: the relay keeps the connection but sends
    // nothing, so its client finds it dead after three heartbeat intervals.
    let gone = Instant::now();
    origin.shutdown().unwrap();
    let log = drive(&mut client, LIMIT, |log| !log.lost.is_empty());
    assert_eq!(log.lost[0].1, Lost::Silent, "{:?}", log.lost);
    // Dead three intervals after the last bytes, which came at most one
    // interval (plus scheduling slack) before the origin went: 200..=300 ms.
    let after = log.lost[0].0 - gone;
    assert!(
        after >= Duration::from_millis(150) && after < Duration::from_secs(3),
        "{after:?}"
    );
    relay.shutdown().unwrap();
}

/// Issue 23, item 9: a relay started against a server that no longer has
/// the start of its session reported the range before the oldest retained
/// frame as an upstream gap (`upstream: 1 gaps (141870 missing)`). It
/// starts there instead, counts no gap, and its clients replay exactly
/// what the origin's can.
#[test]
fn a_relay_started_late_takes_the_upstreams_whole_retention_without_a_gap() {
    const N: usize = 5_000;
    const RETAIN: usize = 1_000;
    let msgs = messages(23, N);
    let want = expected_frames(&msgs);
    let origin = origin(|c| c.core.retain = RETAIN);
    origin.publisher().publish(msgs).unwrap();
    wait_until("the origin's frames", || {
        origin.stats().frames_published == N as u64
    });
    let relay = relay_of(&[origin.local_addr()]);
    let oldest = (N - RETAIN + 1) as u64;
    assert_eq!(relay.start_sequence(), oldest);
    wait_until("the relay's replay", || {
        relay.stats().frames_published >= RETAIN as u64
    });
    let up = relay.upstream_stats();
    assert_eq!((up.gaps, up.missing), (0, 0), "{up:?}");
    // A client of the relay from 1 sees what a client of the origin sees.
    let of_origin = client_thread(vec![origin.local_addr()], RETAIN);
    let of_relay = client_thread(vec![relay.local_addr()], RETAIN);
    let (origin_log, _) = of_origin.join().unwrap();
    let (relay_log, _) = of_relay.join().unwrap();
    for log in [&origin_log, &relay_log] {
        assert_eq!(log.gaps, [(1, oldest - 1)]);
        assert_eq!(log.frames.len(), RETAIN);
        for (seq, bytes) in &log.frames {
            assert_eq!(
                bytes,
                &want[usize::try_from(*seq).unwrap() - 1],
                "frame {seq}"
            );
        }
    }
    assert_eq!(origin_log.frames, relay_log.frames);
    let up = relay.upstream_stats();
    assert_eq!((up.gaps, up.missing), (0, 0), "{up:?}");
    relay.shutdown().unwrap();
    origin.shutdown().unwrap();
}
