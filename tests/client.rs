//! The reference client against the reference server through a
//! fault-injecting TCP proxy on 127.0.0.1: fragmentation, cuts mid-frame,
//! blackholes, corruption, server restarts. Every loop is bounded in time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(clippy::cast_possible_truncation)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use tickwire::net::{Client, ClientConfig, ClientError, ClientSet};
use tickwire::policy::Backoff;
use tickwire::session::{ClientState, Lost};
use tickwire::{Payload, Sequencer};

mod common;

use common::*;

/// Publishes `n` messages (in batches of `batch`, `pause` apart) through a
/// proxy with `faults` to a quickly reconnecting client that wants them all;
/// returns what the client saw, what was published, and the proxy.
fn through_proxy(
    faults: Faults,
    (seed, n, batch, pause): (u64, usize, usize, Duration),
    heartbeat: Option<Duration>,
    until: impl FnMut(&Log) -> bool,
) -> (Log, Vec<Vec<u8>>, Proxy) {
    let server = server_on("127.0.0.1:0".parse().unwrap(), |c| {
        if let Some(hb) = heartbeat {
            c.core.session.heartbeat_interval = hb;
        }
    });
    let proxy = Proxy::start(server.local_addr(), faults);
    let msgs = messages(seed, n);
    let want = expected_frames(&msgs);
    let publisher = server.publisher();
    let publisher = publish_paced(move |m| publisher.publish(m).unwrap(), msgs, batch, pause);
    let mut config = fast_config(proxy.addr);
    if let Some(hb) = heartbeat {
        config.heartbeat_interval = hb;
    }
    let mut client = Client::new(config).unwrap();
    let log = drive(&mut client, Duration::from_secs(60), until);
    publisher.join().unwrap();
    (log, want, proxy)
}

#[test]
fn fragmented_stream_gives_identical_frames() {
    let faults = Faults {
        fragment: true,
        ..Faults::default()
    };
    let (log, want, _proxy) = through_proxy(
        faults,
        (1, 3000, 100, Duration::from_millis(1)),
        None,
        |l| l.frames.len() >= 3000,
    );
    assert_exactly_once_in_order(&log, &want);
    assert_eq!((log.discarded, log.gaps.len(), log.lost.len()), (0, 0, 0));
}

#[test]
fn repeated_cuts_mid_frame_lose_nothing_and_repeat_nothing() {
    // Cut every connection after an odd number of bytes, alternating RST and FIN.
    let cuts = (0..8)
        .map(|i| {
            (
                3_001 + i * 7_919,
                if i % 2 == 0 { Cut::Rst } else { Cut::Fin },
            )
        })
        .collect();
    let faults = Faults {
        cuts,
        ..Faults::default()
    };
    let (log, want, proxy) = through_proxy(
        faults,
        (2, 20_000, 200, Duration::from_millis(2)),
        None,
        |l| l.frames.len() >= 20_000,
    );
    assert_exactly_once_in_order(&log, &want);
    assert!(log.lost.len() >= 8, "cut {} times", log.lost.len());
    assert!(proxy.connections.load(Ordering::SeqCst) >= 9);
    assert!(
        log.gaps.is_empty(),
        "replay filled every cut: {:?}",
        log.gaps
    );
    assert_eq!(log.sessions.len(), 1, "one session throughout");
}

#[test]
fn blackhole_is_detected_by_liveness_then_resumed() {
    let hb = Duration::from_millis(100);
    let faults = Faults {
        blackhole_after: Some(20_000),
        ..Faults::default()
    };
    let (log, want, proxy) = through_proxy(
        faults,
        (3, 5_000, 50, Duration::from_millis(2)),
        Some(hb),
        |l| l.frames.len() >= 5_000,
    );
    assert_exactly_once_in_order(&log, &want);
    let (detected, why) = log.lost[0];
    assert_eq!(why, Lost::Silent);
    let started = proxy.blackholed_at.lock().unwrap().expect("blackholed");
    let took = detected.duration_since(started);
    assert!(
        took <= 3 * hb + Duration::from_millis(150),
        "detected after {took:?}"
    );
    assert!(
        took >= 2 * hb,
        "not before the silence was long enough: {took:?}"
    );
}

#[test]
fn server_restart_backs_off_then_finds_the_new_session() {
    let first = server_on("127.0.0.1:0".parse().unwrap(), |c| {
        c.core.session.session_id = 1
    });
    let addr = first.local_addr();
    let mut config = ClientConfig::new(addr);
    config.from = 1;
    let mut client = Client::new(config).unwrap(); // default backoff: 100 ms, 200 ms, 400 ms…
    first.publisher().publish(messages(4, 10)).unwrap();
    let log = drive(&mut client, Duration::from_secs(10), |l| {
        l.frames.len() >= 10
    });
    assert_eq!(log.sessions, vec![(1, 1)]);
    drop(first); // graceful: EndOfSession, then the port is closed
                 // Let the client retry into a closed port for about 1.4 s: 100 + 200 + 400 + 800 ms.
    let log = drive(&mut client, Duration::from_secs(10), |l| {
        l.retrying.len() >= 4
    });
    let delays: Vec<u128> = log.retrying.iter().map(|(_, d)| d.as_millis()).collect();
    assert_eq!(delays, vec![100, 200, 400, 800]);
    // Attempts really are that far apart (connecting is immediate on loopback).
    let connects: Vec<Instant> = log
        .states
        .iter()
        .filter(|(_, s)| *s == ClientState::Connecting)
        .map(|(t, _)| *t)
        .collect();
    for (i, pair) in connects.windows(2).enumerate() {
        let gap = pair[1].duration_since(pair[0]).as_millis();
        let want = delays[i + 1];
        assert!(
            gap + 5 >= want && gap <= want + 80,
            "attempt {i}: {gap} ms, want {want} ms"
        );
    }
    let second = server_on(addr, |c| c.core.session.session_id = 2);
    second.publisher().publish(messages(5, 5)).unwrap();
    let log = drive(&mut client, Duration::from_secs(10), |l| {
        l.frames.len() >= 5
    });
    assert_eq!(
        log.sessions,
        vec![(2, 1)],
        "the new session is detected and reported"
    );
    assert_eq!(
        log.frames.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
}

#[test]
fn server_gone_for_good_gives_up_after_max_retries() {
    // A port nobody listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = ClientConfig::new(addr);
    config.backoff = Backoff::default().with_max_retries(Some(3));
    let mut client = Client::new(config).unwrap();
    let started = Instant::now();
    let result = client.run(|_| ControlFlow::Continue(()));
    let err = result.expect_err("gives up");
    let ClientError::GaveUp { attempts, last } = err else {
        panic!("{err}");
    };
    assert_eq!(attempts, 3);
    assert!(matches!(last, Lost::ConnectFailed(_)), "{last}");
    assert_eq!(client.state(), ClientState::Disconnected);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn corrupted_bytes_are_reported_and_intact_frames_delivered() {
    let faults = Faults {
        corrupt_every: Some(9_973),
        ..Faults::default()
    };
    let (log, want, proxy) = through_proxy(
        faults,
        (6, 10_000, 100, Duration::from_millis(1)),
        None,
        |l| l.frames.last().is_some_and(|f| f.0 >= 10_000),
    );
    // Every delivered frame is intact and in order; what is missing is reported.
    let mut last = 0;
    for (seq, bytes) in &log.frames {
        assert!(*seq > last);
        last = *seq;
        assert!(bytes == &want[*seq as usize - 1], "frame {seq} intact");
    }
    let missing: u64 = log.gaps.iter().map(|(a, b)| b - a + 1).sum();
    assert_eq!(log.frames.len() as u64 + missing, 10_000);
    assert!(log.discarded > 0 && !log.gaps.is_empty());
    assert!(
        log.lost.is_empty(),
        "the client stays connected: {:?}",
        log.lost
    );
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn a_range_the_server_no_longer_has_is_reported_exactly() {
    let server = server_on("127.0.0.1:0".parse().unwrap(), |c| c.core.retain = 100);
    server.publisher().publish(messages(7, 300)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().frames_published < 300 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(5));
    }
    let mut client = Client::new(fast_config(server.local_addr())).unwrap();
    let log = drive(&mut client, Duration::from_secs(10), |l| {
        l.frames.len() >= 100
    });
    assert_eq!(log.gaps, vec![(1, 200)]);
    assert_eq!(log.frames.first().map(|f| f.0), Some(201));
    assert_eq!(client.stats().missing, 200);
}

/// A server that sends its last frames and closes at once: the client
/// stops reading at a short read (one system call per wake-up) but must
/// still see the close that came with the data, not wait for liveness
/// (here 3 × 10 s).
#[test]
fn a_close_right_after_data_is_seen_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        for _ in 0..20 {
            let (mut s, _) = listener.accept().unwrap();
            let mut login = [0u8; 24];
            s.read_exact(&mut login).unwrap();
            let mut out = vec![0u8; 64 + 10 * 44];
            let mut n = tickwire::encode(&Payload::LoginAccepted { session_id: 5 }, 1, 0, &mut out)
                .unwrap();
            let msgs = messages(3, 10);
            n += Sequencer::new().encode_batch(&msgs, &mut out[n..]).bytes;
            s.write_all(&out[..n]).unwrap(); // data and FIN together
        }
    });
    let mut config = fast_config(addr);
    config.heartbeat_interval = Duration::from_secs(10);
    let mut client = Client::new(config).unwrap();
    let started = Instant::now();
    let log = drive(&mut client, Duration::from_secs(10), |log| {
        log.lost.len() >= 20
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "each close seen with its data: {:?}",
        started.elapsed()
    );
    assert!(
        log.lost.iter().all(|(_, why)| *why == Lost::Closed),
        "{:?}",
        log.lost
    );
    server.join().unwrap();
}

/// One thread, six clients of one feed, each on a different road: two
/// direct, one fragmented to 1–7-byte pieces, one cut mid-frame three
/// times, one blackholed (liveness, then resume), one to a port where
/// nothing listens (backoff). Every client that can reach the server gets
/// every frame exactly once, in order; the faults of one never show in
/// another's events; stopping clients one by one leaves the others running.
#[test]
fn a_client_set_drives_clients_through_different_faults_in_one_thread() {
    let hb = Duration::from_millis(100);
    let server = server_on("127.0.0.1:0".parse().unwrap(), |c| {
        c.core.session.heartbeat_interval = hb
    });
    let fragmenting = Proxy::start(
        server.local_addr(),
        Faults {
            fragment: true,
            ..Faults::default()
        },
    );
    let cutting = Proxy::start(
        server.local_addr(),
        Faults {
            cuts: vec![(7_001, Cut::Rst), (13_003, Cut::Fin), (29_009, Cut::Rst)],
            ..Faults::default()
        },
    );
    let blackhole = Proxy::start(
        server.local_addr(),
        Faults {
            blackhole_after: Some(20_000),
            ..Faults::default()
        },
    );
    let nobody = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap() // closed again: nothing listens there
    };
    let mut set = ClientSet::new().unwrap();
    let roads = [
        server.local_addr(),
        server.local_addr(),
        fragmenting.addr,
        cutting.addr,
        blackhole.addr,
        nobody,
    ];
    for addr in roads {
        let mut config = fast_config(addr);
        config.heartbeat_interval = hb;
        set.add(config);
    }
    let msgs = messages(11, 4_000);
    let want = expected_frames(&msgs);
    let publisher = server.publisher();
    let feed = publish_paced(
        move |m| publisher.publish(m).unwrap(),
        msgs,
        50,
        Duration::from_millis(2),
    );
    let mut logs: Vec<Log> = roads.iter().map(|_| Log::default()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while logs[..5].iter().any(|l| l.frames.len() < want.len()) {
        assert!(
            Instant::now() < deadline,
            "timed out: frames {:?}",
            logs.iter().map(|l| l.frames.len()).collect::<Vec<_>>()
        );
        set.poll(Some(Duration::from_millis(20)), |id, event| {
            logs[id].record(event);
        })
        .unwrap();
    }
    feed.join().unwrap();
    for (id, log) in logs[..5].iter().enumerate() {
        assert_exactly_once_in_order(log, &want);
        assert!(log.gaps.is_empty(), "client {id}: {:?}", log.gaps);
        // Only a cut mid-frame leaves a torn frame to report (each under 64 bytes).
        let torn = if id == 3 { 1..3 * 64 } else { 0..1 };
        assert!(
            torn.contains(&log.discarded),
            "client {id}: {}",
            log.discarded
        );
        let parsed = set.stats(id).unwrap().parse;
        assert_eq!(
            parsed.quotes + parsed.trades,
            want.len() as u64,
            "client {id}"
        );
    }
    // Only the roads with faults lost connections, each its own way.
    for (id, log) in logs.iter().enumerate().take(3) {
        assert!(log.lost.is_empty(), "client {id}: {:?}", log.lost);
    }
    assert_eq!(logs[3].lost.len(), 3, "three cuts: {:?}", logs[3].lost);
    assert_eq!(logs[4].lost[0].1, Lost::Silent, "{:?}", logs[4].lost);
    let started = blackhole.blackholed_at.lock().unwrap().expect("blackholed");
    let took = logs[4].lost[0].0.duration_since(started);
    assert!(
        took >= 2 * hb && took <= 3 * hb + Duration::from_millis(150),
        "{took:?}"
    );
    // Nobody listens: only connect failures, retried after 10, 20, 40… ms.
    let dead = &logs[5];
    assert!(dead.frames.is_empty() && dead.retrying.len() >= 3);
    assert!(dead
        .lost
        .iter()
        .all(|(_, why)| matches!(why, Lost::ConnectFailed(_))));
    let delays: Vec<_> = dead.retrying.iter().map(|r| r.1).take(3).collect();
    assert_eq!(
        delays,
        [10, 20, 40].map(Duration::from_millis),
        "each client backs off on its own schedule"
    );
    // Stopping one client leaves the others connected.
    set.disconnect(0, |_| {});
    assert!(set.is_stopped(0) && !set.is_stopped(1) && !set.all_stopped());
    set.poll(Some(Duration::from_millis(150)), |id, event| {
        logs[id].record(event)
    })
    .unwrap();
    assert_eq!(set.state(1), Some(ClientState::LoggedIn));
    for id in 0..set.len() {
        set.disconnect(id, |_| {});
    }
    assert!(set.all_stopped());
    let idle = Instant::now();
    set.poll(None, |_, _| panic!("a stopped set reports nothing"))
        .unwrap();
    assert!(
        idle.elapsed() < Duration::from_secs(1),
        "a stopped set does not wait"
    );
    assert_eq!((set.state(99), set.stats(99)), (None, None));
}

/// Publishes `n` messages and waits until the server has them all.
fn published(server: &tickwire::net::ServerHandle, seed: u64, n: usize) -> Vec<Vec<u8>> {
    let msgs = messages(seed, n);
    let want = expected_frames(&msgs);
    server.publisher().publish(msgs).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats().frames_published < n as u64 {
        assert!(Instant::now() < deadline, "publishing timed out");
        thread::sleep(Duration::from_millis(5));
    }
    want
}

/// Issue 23, item 2: `run` called the closure 1,525 more times after it
/// returned `Break`. Now it stops at once, and the next `run` goes on with
/// the very next frame: a replay of thousands taken in slices of odd sizes
/// arrives exactly once, in order, and no call follows a `Break`.
#[test]
fn run_stops_at_break_and_the_next_run_goes_on_with_the_next_frame() {
    let server = server_on("127.0.0.1:0".parse().unwrap(), |_| {});
    let want = published(&server, 23, 5_000);
    let mut client = Client::new(fast_config(server.local_addr())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
    // The first run: ten frames exactly.
    let mut after_break = 0;
    let mut broke = false;
    client
        .run(|event| {
            if broke {
                after_break += 1;
                return ControlFlow::Break(());
            }
            if let tickwire::session::ClientEvent::Frame(m) = event {
                if m.is_data() {
                    frames.push((m.sequence(), m.as_bytes().to_vec()));
                }
            }
            if frames.len() == 10 || Instant::now() > deadline {
                broke = true;
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(after_break, 0, "the closure was called after Break");
    assert_eq!(frames.len(), 10);
    // The second run starts with frame 11.
    let mut first = None;
    client
        .run(|event| match event {
            tickwire::session::ClientEvent::Frame(m) if m.is_data() => {
                first = Some(m.sequence());
                frames.push((m.sequence(), m.as_bytes().to_vec()));
                ControlFlow::Break(())
            }
            _ if Instant::now() > deadline => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
        .unwrap();
    assert_eq!(first, Some(11));
    // Then slices of 1, 2, 3… frames to the end: none lost, none repeated.
    let mut slice = 1;
    while frames.len() < want.len() {
        assert!(Instant::now() < deadline, "timed out at {}", frames.len());
        let mut taken = 0;
        let mut calls_after = 0;
        let mut stopped = false;
        client
            .run(|event| {
                if stopped {
                    calls_after += 1;
                }
                if let tickwire::session::ClientEvent::Frame(m) = event {
                    if m.is_data() {
                        frames.push((m.sequence(), m.as_bytes().to_vec()));
                        taken += 1;
                    }
                }
                stopped = taken == slice || frames.len() == want.len() || Instant::now() > deadline;
                if stopped {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(calls_after, 0);
        slice = slice % 97 + 1;
    }
    let log = Log {
        frames,
        ..Log::default()
    };
    assert_exactly_once_in_order(&log, &want);
}

/// A `Break` on an event that the session reports together with a frame
/// (the Gap before the first frame the server still has): the frame is
/// held for the next call, not lost.
#[test]
fn a_break_on_a_gap_keeps_the_frame_that_came_with_it() {
    let server = server_on("127.0.0.1:0".parse().unwrap(), |c| c.core.retain = 100);
    let want = published(&server, 7, 300);
    let mut client = Client::new(fast_config(server.local_addr())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut gap = None;
    client
        .run(|event| match event {
            tickwire::session::ClientEvent::Gap(g) => {
                gap = Some((g.first, g.last));
                ControlFlow::Break(())
            }
            tickwire::session::ClientEvent::Frame(m) if m.is_data() => {
                panic!("frame {} before the gap", m.sequence())
            }
            _ if Instant::now() > deadline => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
        .unwrap();
    assert_eq!(gap, Some((1, 200)));
    let mut frames = Vec::new();
    while frames.len() < 100 {
        assert!(Instant::now() < deadline, "timed out at {}", frames.len());
        client
            .poll(Some(Duration::from_millis(20)), |event| {
                if let tickwire::session::ClientEvent::Frame(m) = event {
                    if m.is_data() {
                        frames.push((m.sequence(), m.as_bytes().to_vec()));
                    }
                }
            })
            .unwrap();
    }
    assert_eq!(frames.first().map(|f| f.0), Some(201));
    for (seq, bytes) in &frames {
        assert_eq!(bytes, &want[*seq as usize - 1], "frame {seq}");
    }
    assert_eq!(
        frames.iter().map(|f| f.0).collect::<Vec<_>>(),
        (201..=300).collect::<Vec<_>>()
    );
}

/// `ClientSet::try_poll` stops at `Break` as `run` does: two clients of one
/// replay, stopped after every 7th frame of either, each still gets every
/// frame exactly once, in order.
#[test]
fn a_client_set_stops_at_break_and_loses_nothing() {
    let server = server_on("127.0.0.1:0".parse().unwrap(), |_| {});
    let want = published(&server, 5, 2_000);
    let mut set = ClientSet::new().unwrap();
    for _ in 0..2 {
        set.add(fast_config(server.local_addr()));
    }
    let mut logs = [Log::default(), Log::default()];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut breaks = 0;
    while logs.iter().any(|l| l.frames.len() < want.len()) {
        assert!(Instant::now() < deadline, "timed out");
        let mut taken = 0;
        let mut called_after = false;
        let flow = set
            .try_poll(Some(Duration::from_millis(20)), |id, event| {
                called_after |= taken == 7;
                if matches!(event, tickwire::session::ClientEvent::Frame(m) if m.is_data()) {
                    taken += 1;
                }
                logs[id].record(event);
                if taken == 7 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert!(!called_after, "called after Break");
        breaks += usize::from(flow.is_break());
    }
    // A poll that ends with fewer than 7 frames taken breaks nothing (the
    // count starts over at the next poll), so not every 7th frame is a
    // break: many are.
    assert!(breaks >= 2_000 / 7, "{breaks} breaks");
    for log in &logs {
        assert_exactly_once_in_order(log, &want);
    }
}

/// Issue 23, item 8: a host name is accepted and resolved at connect
/// (`localhost` may be `::1` first: every address is tried).
#[test]
fn a_client_connects_by_host_name() {
    let server = server_on("127.0.0.1:0".parse().unwrap(), |_| {});
    let want = published(&server, 3, 100);
    let mut config = fast_config(server.local_addr());
    config.server = format!("localhost:{}", server.local_addr().port()).into();
    let mut client = Client::new(config).unwrap();
    let log = drive(&mut client, Duration::from_secs(10), |l| {
        l.frames.len() >= 100
    });
    assert_exactly_once_in_order(&log, &want);
    assert_eq!(client.stats().connects, 1);
}

/// A name that does not resolve fails each attempt clearly (retried by the
/// backoff, then given up), without a panic.
#[test]
fn an_unresolvable_name_is_a_failed_connect_then_retried() {
    for name in ["no-such-host.invalid:7878", "localhost"] {
        let mut config = ClientConfig::new(name);
        config.backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2))
            .with_max_retries(Some(2));
        let mut client = Client::new(config).unwrap();
        let mut lost = Vec::new();
        let err = client
            .run(|event| {
                if let tickwire::session::ClientEvent::Lost(why) = event {
                    lost.push(why);
                }
                ControlFlow::Continue(())
            })
            .unwrap_err();
        let unresolved = Lost::ConnectFailed(tickwire::session::IoFailure::Unresolved);
        assert_eq!(lost, [unresolved; 3], "{name}");
        assert!(
            matches!(err, ClientError::GaveUp { last, .. } if last == unresolved),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("host name not resolved"), "{err}");
    }
}

/// Issue 22, point 8: a reference client that stops reading long enough for
/// the server to mark it slow and skip it heals the skipped range by logging
/// in again from its first sequence: in the end it holds every frame, once,
/// in order, byte for byte, and reports no gap (the server retains them).
#[test]
fn a_client_the_server_skipped_heals_the_range_and_misses_nothing() {
    let server = server_on("127.0.0.1:0".parse().unwrap(), |c| {
        c.core.session.slow_threshold = 64 << 10;
        c.core.session.slow_grace = Duration::from_millis(20);
        c.core.session.queue_limit = 256 << 10;
        c.send_buffer = Some(64 << 10);
    });
    let mut client = Client::new(fast_config(server.local_addr())).unwrap();
    let mut log = drive(&mut client, Duration::from_secs(10), |_| {
        server.stats().clients == 1
    });
    let n = 100_000;
    let msgs = messages(21, n);
    let want = expected_frames(&msgs);
    let publisher = server.publisher();
    let publisher = publish_paced(
        move |m| publisher.publish(m).unwrap(),
        msgs,
        500,
        Duration::from_micros(200),
    );
    // The client does not read until the server has skipped it.
    wait_until("skipped", Duration::from_secs(10), || {
        server.stats().skipped_batches > 0
    });
    let stalled = Instant::now();
    // It reads again; the heal is timed from its event to the frame that
    // fills the range's end.
    let mut healing: Vec<(Instant, u64, u64)> = Vec::new();
    let mut filled: Vec<Duration> = Vec::new();
    while log.frames.len() < n && !client.is_stopped() {
        assert!(stalled.elapsed() < Duration::from_secs(30), "timed out");
        client
            .poll(Some(Duration::from_millis(20)), |event| {
                match event {
                    tickwire::session::ClientEvent::Healing { gap, .. } => {
                        healing.push((Instant::now(), gap.first, gap.last));
                    }
                    tickwire::session::ClientEvent::Frame(m) => {
                        if let Some(h) = healing.iter().find(|h| h.2 == m.sequence()) {
                            filled.push(h.0.elapsed());
                        }
                    }
                    _ => {}
                }
                log.record(event);
            })
            .unwrap();
    }
    let all_in = stalled.elapsed();
    publisher.join().unwrap();
    assert_exactly_once_in_order(&log, &want);
    assert_eq!(log.gaps, [], "the server still had every frame");
    let stats = client.stats();
    assert!(stats.heals >= 1, "{stats:?}");
    assert_eq!((stats.gaps, stats.missing, stats.duplicates), (0, 0, 0));
    assert!(log.lost.iter().all(|l| l.1 == Lost::Heal), "{:?}", log.lost);
    let server_stats = server.stats();
    assert_eq!(filled.len(), healing.len());
    eprintln!(
        "skipped {} frames in {} batches ({} slow marks); heals {:?}, each filled in {filled:?}; all {n} frames {all_in:?} after the skip",
        server_stats.skipped_frames,
        server_stats.skipped_batches,
        server_stats.slow_marks,
        healing.iter().map(|h| (h.1, h.2)).collect::<Vec<_>>()
    );
    server.shutdown().unwrap();
}
