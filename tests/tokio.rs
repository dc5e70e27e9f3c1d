//! The `tokio` feature: the codec against the core parser for any split of
//! a damaged stream; timing rules on tokio's paused clock (exact); the
//! tokio client and server against the mio ones, both ways; a cut through a
//! fault proxy. Sockets on 127.0.0.1 only; every loop bounded in count and
//! time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(clippy::cast_possible_truncation)]

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use proptest::prelude::*;
use tickwire::net::{ClientConfig, ServerConfig};
use tickwire::parse::{Event, SliceParser};
use tickwire::policy::Backoff;
use tickwire::session::{ClientState, Lost};
use tickwire::synth::{Damager, Feed};
use tickwire::tokio::{Client, ClientEvent, FrameCodec, Item, Server};
use tickwire::{Payload, Sequencer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::codec::Decoder;

const T0: u64 = 1_700_000_000_000_000_000;
/// The bound on any wait in these tests.
const PATIENCE: Duration = Duration::from_secs(20);

fn messages(seed: u64, n: usize) -> Vec<(u64, Payload)> {
    let mut feed = Feed::new(seed, 50);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let p = feed.next_payload();
        if p.msg_type().is_data() {
            out.push((T0 + out.len() as u64, p));
        }
    }
    out
}

/// Each published frame's bytes, by sequence (index 0 is sequence 1).
fn expected_frames(msgs: &[(u64, Payload)]) -> Vec<Vec<u8>> {
    let mut seq = Sequencer::new();
    msgs.iter()
        .map(|(ts, p)| {
            let mut b = [0u8; 44];
            let n = seq.encode(p, *ts, &mut b).unwrap();
            b[..n].to_vec()
        })
        .collect()
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A damaged stream from a seeded feed (bit flips, truncations, junk) with
/// a duplicate and a gap thrown in.
fn damaged_stream(seed: u64, frames: usize, probability: f64) -> Vec<u8> {
    let mut feed = Feed::new(seed, 20);
    let mut damager = Damager::new(seed, probability);
    let mut out = Vec::new();
    let mut encoded = Vec::new();
    for i in 0..frames {
        let mut frame = [0u8; 44];
        let n = feed.encode_next(T0 + i as u64, &mut frame).unwrap();
        encoded.push(frame[..n].to_vec());
        damager.push_frame(&frame[..n], &mut out);
        if i % 17 == 5 {
            let again = encoded[i / 2].clone();
            out.extend_from_slice(&again); // a duplicate
        }
    }
    out
}

/// The codec over `bytes` cut into reads of `sizes` (cycled), as
/// `FramedRead` drives it: `decode` until `None` after each read, then
/// `decode_eof` until `None`.
fn decode_split(bytes: &[u8], sizes: &[usize]) -> Vec<Item> {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            items.push(item);
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
        items.push(item);
    }
    assert!(buf.is_empty(), "every byte accounted for");
    items
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_codec_gives_the_parsers_events_for_any_split(
        seed in any::<u64>(),
        frames in 0usize..300,
        probability in 0.0f64..0.3,
        sizes in proptest::collection::vec(1usize..200, 1..8),
    ) {
        let bytes = damaged_stream(seed, frames, probability);
        let expected: Vec<Event<'_>> = SliceParser::new(&bytes).collect();
        let items = decode_split(&bytes, &sizes);
        let got: Vec<Event<'_>> = items.iter().map(Item::as_event).collect();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn the_codec_splits_frames_without_copying_and_every_byte_split_agrees() {
    let bytes = damaged_stream(7, 60, 0.2);
    let expected: Vec<Event<'_>> = SliceParser::new(&bytes).collect();
    for size in 1..=50 {
        let items = decode_split(&bytes, &[size]);
        let got: Vec<Event<'_>> = items.iter().map(Item::as_event).collect();
        assert_eq!(got, expected, "reads of {size} bytes");
    }
    // Frames point into the buffer the codec was given.
    let msgs = messages(1, 3);
    let wire: Vec<u8> = expected_frames(&msgs).concat();
    let mut buf = BytesMut::from(&wire[..]);
    let base = buf.as_ptr() as usize;
    let mut codec = FrameCodec::new();
    let Some(Item::Frame(first)) = codec.decode(&mut buf).unwrap() else {
        panic!("a frame")
    };
    assert_eq!(first.as_bytes().as_ptr() as usize, base, "no copy");
    assert_eq!(first.sequence(), 1);
}

/// Runs `f` on a fresh current-thread runtime with tokio's clock paused.
fn paused<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn backoff_is_100_200_400_ms_on_tokios_clock() {
    paused(async {
        let port = std::net::TcpListener::bind(loopback())
            .unwrap()
            .local_addr()
            .unwrap(); // closed again: connections are refused
        let mut config = ClientConfig::new(port);
        config.backoff = Backoff::default().with_max_retries(Some(3));
        let mut client = Client::new(config);
        let start = Instant::now();
        let mut attempts = Vec::new();
        let mut delays = Vec::new();
        for _ in 0..100 {
            match client.next().await {
                Some(ClientEvent::State {
                    to: ClientState::Connecting,
                    ..
                }) => attempts.push(Instant::now() - start),
                Some(ClientEvent::Retrying { delay, .. }) => delays.push(delay),
                Some(_) => {}
                None => break,
            }
        }
        let ms = Duration::from_millis;
        assert_eq!(delays, [ms(100), ms(200), ms(400)]);
        assert_eq!(attempts, [ms(0), ms(100), ms(300), ms(700)]);
        assert!(client.session().is_stopped(), "gave up after 3 retries");
    });
}

#[test]
fn a_silent_server_is_dead_after_three_heartbeat_intervals() {
    paused(async {
        let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, reads the Login, never says a word.
        let silent = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut sink = [0u8; 64];
            while socket.read(&mut sink).await.unwrap_or(0) > 0 {}
        });
        let mut client = Client::new(ClientConfig::new(addr));
        let mut connected = None;
        let mut lost = None;
        for _ in 0..100 {
            match client.next().await {
                Some(ClientEvent::State {
                    to: ClientState::Connected,
                    ..
                }) => connected = Some(Instant::now()),
                Some(ClientEvent::Lost(why)) => {
                    lost = Some((why, Instant::now()));
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        let (why, at) = lost.expect("lost");
        assert_eq!(why, Lost::Silent);
        // Three 1 s intervals; the deadline is "after" them, and tokio's
        // timer counts whole milliseconds.
        assert_eq!(
            at - connected.expect("connected"),
            Duration::from_millis(3001)
        );
        silent.abort();
    });
}

#[test]
fn login_timeout_and_heartbeat_interval_are_exact() {
    paused(async {
        let config = ServerConfig {
            listen: loopback(),
            ..ServerConfig::default()
        };
        let server = Server::bind(config).await.unwrap().spawn();
        // No Login: closed at exactly the login timeout (5 s).
        let mut idle = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        let t0 = Instant::now();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(PATIENCE, idle.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without a word");
        assert_eq!(Instant::now() - t0, Duration::from_secs(5));

        // Logged in, nothing published: a Heartbeat every 1 s exactly.
        let mut client = Client::new(ClientConfig::new(server.local_addr()));
        let mut logged_in = None;
        let mut beats = Vec::new();
        for _ in 0..100 {
            match client.next().await {
                Some(ClientEvent::LoggedIn { .. }) => logged_in = Some(Instant::now()),
                Some(ClientEvent::Frame(f)) => {
                    assert_eq!(f.msg_type(), tickwire::MsgType::Heartbeat);
                    beats.push(Instant::now() - logged_in.unwrap());
                    if beats.len() == 3 {
                        break;
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        let s = Duration::from_secs;
        assert_eq!(beats, [s(1), s(2), s(3)]);
        server.shutdown().await;
    });
}

/// The data frames a tokio client receives until it has `n`, with a bound
/// on time; asserts nothing was lost, repeated or reordered.
async fn collect_tokio(client: &mut Client, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::with_capacity(n);
    let deadline = Instant::now() + PATIENCE;
    while got.len() < n {
        let event = tokio::time::timeout_at(deadline, client.next())
            .await
            .expect("frames in time")
            .expect("client running");
        match event {
            ClientEvent::Frame(f) if f.msg_type().is_data() => {
                got.push(f.as_bytes().to_vec());
            }
            ClientEvent::Gap(g) => panic!("gap {g:?}"),
            ClientEvent::Duplicate { sequence } => panic!("duplicate {sequence}"),
            _ => {}
        }
    }
    got
}

#[test]
fn tokio_client_receives_every_frame_of_the_mio_server_byte_identical() {
    let msgs = messages(3, 20_000);
    let expected = expected_frames(&msgs);
    let server = tickwire::net::Server::bind(ServerConfig {
        listen: loopback(),
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    let publisher = server.publisher();
    // Half before the client connects (replay), half after (live).
    publisher.publish(msgs[..10_000].to_vec()).unwrap();
    let addr = server.local_addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async move {
        let mut config = ClientConfig::new(addr);
        config.from = 1;
        let mut client = Client::new(config);
        let later = msgs[10_000..].to_vec();
        let feeder = std::thread::spawn(move || {
            for chunk in later.chunks(500) {
                publisher.publish(chunk.to_vec()).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let got = collect_tokio(&mut client, 20_000).await;
        feeder.join().unwrap();
        got
    });
    assert_eq!(got, expected);
    server.shutdown().unwrap();
}

#[test]
fn mio_client_receives_every_frame_of_the_tokio_server_byte_identical() {
    let msgs = messages(4, 20_000);
    let expected = expected_frames(&msgs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async {
        Server::bind(ServerConfig {
            listen: loopback(),
            ..ServerConfig::default()
        })
        .await
        .unwrap()
        .spawn()
    });
    let publisher = server.publisher();
    publisher.publish(msgs[..10_000].to_vec()).unwrap();
    let addr = server.local_addr();
    let receiver = std::thread::spawn(move || {
        let mut config = ClientConfig::new(addr);
        config.from = 1;
        let mut client = tickwire::net::Client::new(config).unwrap();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let deadline = std::time::Instant::now() + PATIENCE;
        let _ = client.run(|event| {
            match event {
                tickwire::session::ClientEvent::Frame(m) if m.is_data() => {
                    got.push(m.as_bytes().to_vec());
                }
                tickwire::session::ClientEvent::Gap(g) => panic!("gap {g:?}"),
                tickwire::session::ClientEvent::Duplicate { sequence } => {
                    panic!("duplicate {sequence}")
                }
                _ => {}
            }
            if got.len() >= 20_000 || std::time::Instant::now() > deadline {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        got
    });
    for chunk in msgs[10_000..].chunks(500) {
        publisher.publish(chunk.to_vec()).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let got = receiver.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
    let stats = rt.block_on(server.shutdown());
    assert_eq!(stats.frames_published, 20_000);
}

/// A proxy on 127.0.0.1 that forwards server → client and cuts the first
/// connection after `cut_after` bytes (mid-frame); later ones pass.
async fn cutting_proxy(upstream: SocketAddr, cut_after: usize) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut down, _)) = listener.accept().await {
            let limit = if first { cut_after } else { usize::MAX };
            first = false;
            tokio::spawn(async move {
                let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut up_r, mut up_w) = up.split();
                let (mut down_r, mut down_w) = down.split();
                let to_server = async {
                    let _ = tokio::io::copy(&mut down_r, &mut up_w).await;
                };
                let to_client = async {
                    let mut passed = 0;
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = match up_r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let n = n.min(limit - passed);
                        if down_w.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        passed += n;
                        if passed >= limit {
                            break; // the cut
                        }
                    }
                };
                tokio::select! {
                    () = to_server => {}
                    () = to_client => {}
                }
            });
        }
    });
    addr
}

#[test]
fn a_cut_mid_frame_and_a_server_restart_lose_nothing_and_repeat_nothing() {
    let msgs = messages(5, 6_000);
    let expected = expected_frames(&msgs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let config = ServerConfig {
            listen: loopback(),
            session_id: Some(77),
            ..ServerConfig::default()
        };
        let server = Server::bind(config.clone()).await.unwrap().spawn();
        let addr = server.local_addr();
        server.publisher().publish(msgs[..3_000].to_vec()).unwrap();
        // 1,000 frames and a bit: the cut falls inside a frame.
        let proxy = cutting_proxy(addr, 40_017).await;
        let mut client_config = ClientConfig::new(proxy);
        client_config.from = 1;
        client_config.backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(50));
        let mut client = Client::new(client_config);
        let mut got = collect_tokio(&mut client, 3_000).await;
        assert!(client.stats().connects >= 2, "the cut made it reconnect");

        // The server restarts (same session id, same address), retaining
        // nothing; it publishes the rest, numbered on from where it was.
        server.shutdown().await;
        let config = ServerConfig {
            listen: addr,
            ..config
        };
        let server = Server::bind(config).await.unwrap().spawn();
        // The restarted server numbers from 1 again: publish the earlier
        // frames too, so its sequence space is the same one.
        server.publisher().publish(msgs.clone()).unwrap();
        got.extend(collect_tokio(&mut client, 3_000).await);
        assert_eq!(got, expected);
        server.shutdown().await;
    });
}
