//! The `tokio` feature: the codec against the core parser for any split of
//! a damaged stream; timing rules on tokio's paused clock (exact); the
//! tokio client and server against the mio ones, both ways; a cut through a
//! fault proxy; the fault-proxy scenarios of `tests/client.rs` against the
//! tokio client (mio server) and the tokio server (mio client); section 9
//! retransmission connections on the tokio server. Sockets on 127.0.0.1 only; every loop bounded in count and
//! time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(clippy::cast_possible_truncation)]

use std::net::SocketAddr;
#[cfg(feature = "net")]
use std::ops::ControlFlow;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use proptest::prelude::*;
use tickwire::net::{ClientConfig, ServerConfig};
use tickwire::parse::{Event, SliceParser};
use tickwire::policy::Backoff;
use tickwire::session::{ClientState, CoreConfig, Lost};
use tickwire::synth::{Damager, Feed};
use tickwire::tokio::{Client, ClientEvent, FrameCodec, Item, Server};
use tickwire::Payload;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::codec::Decoder;

mod common;

use common::{
    assert_exactly_once_in_order, assert_nobody_made_room, closed_by_server, connect_from,
    expected_frames, fast_config, idle_connections, messages, publish_paced,
    rerun_with_descriptor_limit, wait_until, Cut, Faults, Log, Proxy, T0,
};

/// The bound on any wait in these tests.
const PATIENCE: Duration = Duration::from_secs(20);

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
#[cfg(feature = "net")]
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
#[cfg(feature = "net")]
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
            core: CoreConfig::new(77),
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

// ---- The socket fault-proxy scenarios of tests/client.rs, both ways ----

/// Which side is tokio's; the other is mio's (with the `net` feature;
/// without it, tokio's too: the scenarios still run, tokio against tokio).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Under {
    /// The tokio client against the mio server.
    TokioClient,
    /// The mio client against the tokio server.
    TokioServer,
}

/// Publishes one batch (either server's publisher).
type PublishFn = Box<dyn FnMut(Vec<(u64, Payload)>) + Send>;

enum AnyServer {
    #[cfg(feature = "net")]
    Mio(tickwire::net::ServerHandle),
    Tokio(tickwire::tokio::ServerHandle),
}

impl AnyServer {
    async fn start(
        under: Under,
        listen: SocketAddr,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        let mut config = ServerConfig {
            listen,
            ..ServerConfig::default()
        };
        tweak(&mut config);
        match under {
            #[cfg(feature = "net")]
            Under::TokioClient => AnyServer::Mio(
                tickwire::net::Server::bind(config)
                    .unwrap()
                    .spawn()
                    .unwrap(),
            ),
            _ => AnyServer::Tokio(Server::bind(config).await.unwrap().spawn()),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            #[cfg(feature = "net")]
            AnyServer::Mio(s) => s.local_addr(),
            AnyServer::Tokio(s) => s.local_addr(),
        }
    }

    fn publisher(&self) -> PublishFn {
        match self {
            #[cfg(feature = "net")]
            AnyServer::Mio(s) => {
                let p = s.publisher();
                Box::new(move |m| p.publish(m).unwrap())
            }
            AnyServer::Tokio(s) => {
                let p = s.publisher();
                Box::new(move |m| p.publish(m).unwrap())
            }
        }
    }

    fn frames_published(&self) -> u64 {
        match self {
            #[cfg(feature = "net")]
            AnyServer::Mio(s) => s.stats().frames_published,
            AnyServer::Tokio(s) => s.stats().frames_published,
        }
    }

    /// Graceful: EndOfSession to every client, then the port is closed.
    async fn stop(self) {
        match self {
            #[cfg(feature = "net")]
            AnyServer::Mio(s) => {
                tokio::task::spawn_blocking(move || s.shutdown().unwrap())
                    .await
                    .unwrap();
            }
            AnyServer::Tokio(s) => {
                s.shutdown().await;
            }
        }
    }
}

enum AnyClient {
    /// Taken out while a blocking task drives it.
    #[cfg(feature = "net")]
    Mio(Option<tickwire::net::Client>),
    Tokio(Client),
}

impl AnyClient {
    fn new(under: Under, config: ClientConfig) -> Self {
        match under {
            #[cfg(feature = "net")]
            Under::TokioServer => AnyClient::Mio(Some(tickwire::net::Client::new(config).unwrap())),
            _ => AnyClient::Tokio(Client::new(config)),
        }
    }

    /// Runs the client until `done` says so, it stops, or `limit` passes
    /// (a failure), logging its events as `common::drive` does.
    async fn drive(
        &mut self,
        limit: Duration,
        done: impl FnMut(&Log) -> bool + Send + 'static,
    ) -> Log {
        match self {
            AnyClient::Tokio(client) => drive_tokio(client, limit, done).await,
            #[cfg(feature = "net")]
            AnyClient::Mio(slot) => {
                let mut client = slot.take().expect("client");
                let run = tokio::task::spawn_blocking(move || {
                    let log = common::drive(&mut client, limit, done);
                    (client, log)
                });
                let (client, log) = match run.await {
                    Ok(done) => done,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
                *slot = Some(client);
                log
            }
        }
    }

    fn missing(&self) -> u64 {
        match self {
            #[cfg(feature = "net")]
            AnyClient::Mio(c) => c.as_ref().unwrap().stats().missing,
            AnyClient::Tokio(c) => c.stats().missing,
        }
    }
}

/// `common::drive` for the tokio client: until `done`, the end of its
/// stream, or `limit` (a failure).
async fn drive_tokio(
    client: &mut Client,
    limit: Duration,
    mut done: impl FnMut(&Log) -> bool,
) -> Log {
    let mut log = Log::default();
    let deadline = Instant::now() + limit;
    while !done(&log) {
        let event = match tokio::time::timeout_at(deadline, client.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(_) => panic!(
                "timed out; so far: {} frames, lost {:?}, states {:?}, state now {:?}",
                log.frames.len(),
                log.lost,
                log.states.iter().map(|s| s.1).collect::<Vec<_>>(),
                client.state()
            ),
        };
        let now = std::time::Instant::now();
        match event {
            ClientEvent::Frame(f) if f.msg_type().is_data() => {
                log.frames.push((f.sequence(), f.as_bytes().to_vec()));
            }
            ClientEvent::Gap(g) => log.gaps.push((g.first, g.last)),
            ClientEvent::NewSession {
                session_id,
                sequence,
            } => log.sessions.push((session_id, sequence)),
            ClientEvent::Lost(why) => log.lost.push((now, why)),
            ClientEvent::Retrying { delay, .. } => log.retrying.push((now, delay)),
            ClientEvent::State { to, .. } => log.states.push((now, to)),
            ClientEvent::Discarded(d) => log.discarded += d.bytes,
            ClientEvent::Duplicate { .. } => log.duplicates += 1,
            ClientEvent::GaveUp { last, .. } => log.gave_up = Some(last),
            _ => {}
        }
    }
    log
}

/// `tests/client.rs`'s `through_proxy` with one side tokio's.
async fn through_proxy(
    under: Under,
    faults: Faults,
    (seed, n, batch, pause): (u64, usize, usize, Duration),
    heartbeat: Option<Duration>,
    until: impl FnMut(&Log) -> bool + Send + 'static,
) -> (Log, Vec<Vec<u8>>, Proxy) {
    let server = AnyServer::start(under, loopback(), |c| {
        if let Some(hb) = heartbeat {
            c.core.session.heartbeat_interval = hb;
        }
    })
    .await;
    let proxy = Proxy::start(server.addr(), faults);
    let msgs = messages(seed, n);
    let want = expected_frames(&msgs);
    let publisher = publish_paced(server.publisher(), msgs, batch, pause);
    let mut config = fast_config(proxy.addr);
    if let Some(hb) = heartbeat {
        config.heartbeat_interval = hb;
    }
    let mut client = AnyClient::new(under, config);
    let log = client.drive(Duration::from_secs(60), until).await;
    tokio::task::spawn_blocking(move || publisher.join().unwrap())
        .await
        .unwrap();
    drop(client);
    server.stop().await;
    (log, want, proxy)
}

async fn fragmented_stream_gives_identical_frames(under: Under) {
    let faults = Faults {
        fragment: true,
        ..Faults::default()
    };
    let (log, want, _proxy) = through_proxy(
        under,
        faults,
        (1, 3000, 100, Duration::from_millis(1)),
        None,
        |l| l.frames.len() >= 3000,
    )
    .await;
    assert_exactly_once_in_order(&log, &want);
    assert_eq!((log.discarded, log.gaps.len(), log.lost.len()), (0, 0, 0));
}

async fn repeated_cuts_mid_frame_lose_nothing_and_repeat_nothing(under: Under) {
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
        under,
        faults,
        (2, 20_000, 200, Duration::from_millis(2)),
        None,
        |l| l.frames.len() >= 20_000,
    )
    .await;
    assert_exactly_once_in_order(&log, &want);
    assert!(log.lost.len() >= 8, "cut {} times", log.lost.len());
    assert!(proxy.connections.load(std::sync::atomic::Ordering::SeqCst) >= 9);
    assert!(
        log.gaps.is_empty(),
        "replay filled every cut: {:?}",
        log.gaps
    );
    assert_eq!(log.duplicates, 0);
    assert_eq!(log.sessions.len(), 1, "one session throughout");
}

async fn blackhole_is_detected_by_liveness_then_resumed(under: Under) {
    let hb = Duration::from_millis(100);
    let faults = Faults {
        blackhole_after: Some(20_000),
        ..Faults::default()
    };
    let (log, want, proxy) = through_proxy(
        under,
        faults,
        (3, 5_000, 50, Duration::from_millis(2)),
        Some(hb),
        |l| l.frames.len() >= 5_000,
    )
    .await;
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

async fn server_restart_backs_off_then_finds_the_new_session(under: Under) {
    let first = AnyServer::start(under, loopback(), |c| c.core.session.session_id = 1).await;
    let addr = first.addr();
    let mut config = ClientConfig::new(addr);
    config.from = 1;
    // Default backoff: 100 ms, 200 ms, 400 ms…
    let mut client = AnyClient::new(under, config);
    (first.publisher())(messages(4, 10));
    let log = client
        .drive(Duration::from_secs(10), |l| l.frames.len() >= 10)
        .await;
    assert_eq!(log.sessions, vec![(1, 1)]);
    first.stop().await;
    // The client retries into a closed port for about 1.5 s: 100 + 200 + 400 + 800 ms.
    let log = client
        .drive(Duration::from_secs(10), |l| l.retrying.len() >= 4)
        .await;
    let delays: Vec<u128> = log.retrying.iter().map(|(_, d)| d.as_millis()).collect();
    assert_eq!(delays, vec![100, 200, 400, 800]);
    // Attempts really are that far apart (connecting is immediate on loopback).
    let connects: Vec<std::time::Instant> = log
        .states
        .iter()
        .filter(|(_, s)| *s == ClientState::Connecting)
        .map(|(t, _)| *t)
        .collect();
    assert!(connects.len() >= 3, "{connects:?}");
    for (i, pair) in connects.windows(2).enumerate() {
        let gap = pair[1].duration_since(pair[0]).as_millis();
        let want = delays[i + 1];
        assert!(
            gap + 5 >= want && gap <= want + 80,
            "attempt {i}: {gap} ms, want {want} ms"
        );
    }
    let second = AnyServer::start(under, addr, |c| c.core.session.session_id = 2).await;
    (second.publisher())(messages(5, 5));
    let log = client
        .drive(Duration::from_secs(10), |l| l.frames.len() >= 5)
        .await;
    assert_eq!(
        log.sessions,
        vec![(2, 1)],
        "the new session is detected and reported"
    );
    assert_eq!(
        log.frames.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    drop(client);
    second.stop().await;
}

async fn corrupted_bytes_are_reported_and_intact_frames_delivered(under: Under) {
    let faults = Faults {
        corrupt_every: Some(9_973),
        ..Faults::default()
    };
    let (log, want, proxy) = through_proxy(
        under,
        faults,
        (6, 10_000, 100, Duration::from_millis(1)),
        None,
        |l| l.frames.last().is_some_and(|f| f.0 >= 10_000),
    )
    .await;
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
    assert_eq!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

async fn a_range_the_server_no_longer_has_is_reported_exactly(under: Under) {
    let server = AnyServer::start(under, loopback(), |c| c.core.retain = 100).await;
    (server.publisher())(messages(7, 300));
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.frames_published() < 300 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut client = AnyClient::new(under, fast_config(server.addr()));
    let log = client
        .drive(Duration::from_secs(10), |l| l.frames.len() >= 100)
        .await;
    assert_eq!(log.gaps, vec![(1, 200)]);
    assert_eq!(log.frames.first().map(|f| f.0), Some(201));
    assert_eq!(log.frames.len(), 100);
    assert_eq!(client.missing(), 200);
    drop(client);
    server.stop().await;
}

/// The tokio client gives up on a port nobody listens on; the mio client
/// gives up on a tokio server that shut down for good.
async fn server_gone_for_good_gives_up_after_max_retries(under: Under) {
    let mut server = None;
    let addr = match under {
        Under::TokioClient => std::net::TcpListener::bind(loopback())
            .unwrap()
            .local_addr()
            .unwrap(),
        Under::TokioServer => {
            let s = AnyServer::start(under, loopback(), |_| {}).await;
            (s.publisher())(messages(8, 10));
            let addr = s.addr();
            server = Some(s);
            addr
        }
    };
    let mut config = ClientConfig::new(addr);
    config.from = 1;
    config.backoff = Backoff::default().with_max_retries(Some(3));
    let mut client = AnyClient::new(under, config);
    if let Some(server) = server {
        let log = client
            .drive(Duration::from_secs(10), |l| l.frames.len() >= 10)
            .await;
        assert_eq!(log.frames.len(), 10);
        server.stop().await; // for good
    }
    let started = std::time::Instant::now();
    let (attempts, last, state) = match &mut client {
        AnyClient::Tokio(c) => {
            let mut gave_up = None;
            for _ in 0..100 {
                let event = tokio::time::timeout(PATIENCE, c.next())
                    .await
                    .expect("in time");
                match event {
                    Some(ClientEvent::GaveUp { attempts, last }) => {
                        gave_up = Some((attempts, last))
                    }
                    Some(_) => {}
                    None => break, // the stream ends after GaveUp
                }
            }
            let (attempts, last) = gave_up.expect("gave up");
            (attempts, last, c.state())
        }
        #[cfg(feature = "net")]
        AnyClient::Mio(slot) => {
            let mut c = slot.take().unwrap();
            tokio::task::spawn_blocking(move || {
                let err = c.run(|_| ControlFlow::Continue(())).expect_err("gives up");
                let tickwire::net::ClientError::GaveUp { attempts, last } = err else {
                    panic!("{err}");
                };
                (attempts, last, c.state())
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(attempts, 3);
    assert!(matches!(last, Lost::ConnectFailed(_)), "{last}");
    assert_eq!(state, ClientState::Disconnected);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// Each scenario as two tests on tokio's test runtime: `tokio_client::…`
/// (against the mio server) and `tokio_server::…` (with the mio client).
macro_rules! both_ways {
    ($($scenario:ident),* $(,)?) => {
        mod tokio_client {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Under::TokioClient).await;
                }
            )*
        }
        mod tokio_server {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Under::TokioServer).await;
                }
            )*
        }
    };
}

both_ways!(
    fragmented_stream_gives_identical_frames,
    repeated_cuts_mid_frame_lose_nothing_and_repeat_nothing,
    blackhole_is_detected_by_liveness_then_resumed,
    server_restart_backs_off_then_finds_the_new_session,
    server_gone_for_good_gives_up_after_max_retries,
    corrupted_bytes_are_reported_and_intact_frames_delivered,
    a_range_the_server_no_longer_has_is_reported_exactly,
);

/// Reads from `socket` until `want` frames have arrived (bounded in time);
/// returns them whole.
async fn read_frames(
    socket: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    want: usize,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + PATIENCE;
    let mut frames = Vec::new();
    loop {
        while frames.len() < want {
            match tickwire::Message::decode(buf) {
                Ok((m, _)) => {
                    let n = m.len();
                    frames.push(buf[..n].to_vec());
                    buf.drain(..n);
                }
                Err(tickwire::DecodeError::Incomplete { .. }) => break,
                Err(e) => panic!("a bad frame from the server: {e:?}"),
            }
        }
        if frames.len() >= want {
            return frames;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, socket.read(&mut chunk))
            .await
            .expect("the reply in time")
            .unwrap();
        assert!(n > 0, "closed after {} frames", frames.len());
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn request(session_id: u64, sequence: u64, count: u64) -> Vec<u8> {
    let mut frame = [0u8; 64];
    let n = tickwire::encode(
        &Payload::Retransmit { session_id, count },
        sequence,
        T0,
        &mut frame,
    )
    .unwrap();
    frame[..n].to_vec()
}

/// Checks one reply: LoginAccepted(`session`, f), the retained frames
/// f..=e byte for byte, Heartbeat(`end`).
fn check_reply(reply: &[Vec<u8>], session: u64, first: u64, data: &[Vec<u8>], end: u64) {
    assert_eq!(reply.len(), data.len() + 2);
    let (accepted, _) = tickwire::Message::decode(&reply[0]).unwrap();
    let tickwire::Message::LoginAccepted(accepted) = accepted else {
        panic!("not LoginAccepted: {accepted:?}");
    };
    assert_eq!(
        (accepted.session_id(), accepted.sequence()),
        (session, first)
    );
    assert!(
        reply[1..=data.len()] == *data,
        "the retained frames byte for byte"
    );
    let (last, _) = tickwire::Message::decode(&reply[data.len() + 1]).unwrap();
    assert_eq!(last.msg_type(), tickwire::MsgType::Heartbeat);
    assert_eq!(last.sequence(), end);
}

/// Protocol section 9 on the tokio server: a connection whose first frame
/// is a Retransmit gets LoginAccepted(f), the retained frames f..=e byte for
/// byte, then a Heartbeat(e + 1), per request, and never live data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokio_server_answers_retransmission_connections() {
    let server = Server::bind(ServerConfig {
        listen: loopback(),
        core: CoreConfig {
            retain: 400,
            ..CoreConfig::new(9)
        },
        ..ServerConfig::default()
    })
    .await
    .unwrap()
    .spawn();
    let msgs = messages(9, 500);
    let want = expected_frames(&msgs);
    server.publisher().publish(msgs).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while server.stats().frames_published < 500 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut socket = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let mut buf = Vec::new();
    // 150..=199: all retained.
    socket.write_all(&request(9, 150, 50)).await.unwrap();
    let reply = read_frames(&mut socket, &mut buf, 52).await;
    check_reply(&reply, 9, 150, &want[149..199], 200);
    // From 50 (trimmed: the oldest retained is 101), session 0 = whichever.
    socket.write_all(&request(0, 50, 100)).await.unwrap();
    let reply = read_frames(&mut socket, &mut buf, 51).await;
    check_reply(&reply, 9, 101, &want[100..149], 150);
    // Past the end: up to the last published (500).
    socket.write_all(&request(9, 480, 1000)).await.unwrap();
    let reply = read_frames(&mut socket, &mut buf, 23).await;
    check_reply(&reply, 9, 480, &want[479..500], 501);
    // Another session: LoginAccepted(own, s), Heartbeat(s), nothing else.
    socket.write_all(&request(4, 7, 3)).await.unwrap();
    let reply = read_frames(&mut socket, &mut buf, 2).await;
    check_reply(&reply, 9, 7, &[], 7);
    // Live data is never sent on it: publish more, and the next thing on
    // the wire is still the reply to the next request.
    server.publisher().publish(messages(10, 20)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    socket.write_all(&request(9, 499, 2)).await.unwrap();
    let mut reply = read_frames(&mut socket, &mut buf, 1).await;
    // Idle Heartbeats may come between replies; skip them.
    for _ in 0..10 {
        let (m, _) = tickwire::Message::decode(&reply[0]).unwrap();
        if m.msg_type() != tickwire::MsgType::Heartbeat {
            break;
        }
        reply = read_frames(&mut socket, &mut buf, 1).await;
    }
    reply.extend(read_frames(&mut socket, &mut buf, 3).await);
    let more = expected_frames(&[messages(9, 500), messages(10, 20)].concat());
    check_reply(&reply, 9, 499, &more[498..500], 501);
    assert!(buf.is_empty(), "nothing after the reply");
    drop(socket);
    let stats = server.shutdown().await;
    assert_eq!(stats.frames_published, 520);
}

/// The tokio server limits retransmission connections on their own
/// (`max_retransmission_connections`), apart from `max_clients`, as the mio
/// server does: with both at 1, a retransmission connection and a
/// subscriber are served, a second retransmission connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokio_server_limits_retransmission_connections_apart_from_clients() {
    let server = Server::bind(ServerConfig {
        listen: loopback(),
        core: CoreConfig {
            max_clients: 1,
            max_retransmission_connections: 1,
            ..CoreConfig::new(9)
        },
        ..ServerConfig::default()
    })
    .await
    .unwrap()
    .spawn();
    let msgs = messages(9, 50);
    let want = expected_frames(&msgs);
    server.publisher().publish(msgs).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while server.stats().frames_published < 50 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect = || tokio::net::TcpStream::connect(server.local_addr());
    let mut first = connect().await.unwrap();
    let mut buf = Vec::new();
    first.write_all(&request(9, 1, 5)).await.unwrap();
    let reply = read_frames(&mut first, &mut buf, 7).await;
    check_reply(&reply, 9, 1, &want[0..5], 6);
    // A subscriber still gets the one client place.
    let mut config = ClientConfig::new(server.local_addr());
    config.from = 1;
    let mut client = Client::new(config);
    assert_eq!(collect_tokio(&mut client, 50).await, want);
    // A second retransmission connection is one too many: closed.
    let mut second = connect().await.unwrap();
    second.write_all(&request(9, 1, 5)).await.unwrap();
    let mut all = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, second.read(&mut chunk))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        all.extend_from_slice(&chunk[..n]);
    }
    let stats = server.stats();
    assert_eq!(
        stats.closed_for(tickwire::session::CloseReason::MaxClients),
        1,
        "{stats:?}"
    );
    assert_eq!(stats.retransmission_connections, 1);
    drop((first, client));
    let _ = all;
    server.shutdown().await;
}

/// Log lines of this test process, captured by the logger below.
static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("tickwire") {
            LOGGED
                .lock()
                .unwrap()
                .push(format!("{} {}", record.level(), record.args()));
        }
    }
    fn flush(&self) {}
}

/// The tokio server logs through the `log` facade as the mio server does:
/// a login at info, the close with its reason at info.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokio_server_logs_logins_and_closes() {
    static LOGGER: Capture = Capture;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Debug);
    let server = Server::bind(ServerConfig {
        listen: loopback(),
        core: CoreConfig::new(3),
        ..ServerConfig::default()
    })
    .await
    .unwrap()
    .spawn();
    let mut socket = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let me = socket.local_addr().unwrap();
    let mut login = [0u8; 24];
    tickwire::encode(&Payload::Login, 0, 0, &mut login).unwrap();
    socket.write_all(&login).await.unwrap();
    let mut accepted = [0u8; 32];
    socket.read_exact(&mut accepted).await.unwrap();
    drop(socket);
    let deadline = Instant::now() + PATIENCE;
    let want_login = format!("INFO login {me}: wanted 0");
    let want_close = format!("INFO closed {me}: ");
    loop {
        let lines = LOGGED.lock().unwrap().clone();
        if lines.iter().any(|l| l.starts_with(&want_login))
            && lines.iter().any(|l| l.starts_with(&want_close))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{lines:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.shutdown().await;
}

/// Fail-over on the tokio client: a list of a relay and its origin; the
/// relay shuts down mid-stream and the client resumes at the origin with
/// nothing lost and nothing repeated, byte for byte.
#[test]
#[cfg(feature = "net")]
fn tokio_client_fails_over_from_a_relay_to_the_origin() {
    use tickwire::net::{Relay, RelayConfig};
    let msgs = messages(4, 20_000);
    let expected = expected_frames(&msgs);
    let server = tickwire::net::Server::bind(ServerConfig {
        listen: loopback(),
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    let publisher = server.publisher();
    publisher.publish(msgs[..5_000].to_vec()).unwrap();
    let relay =
        Relay::start(RelayConfig::new(&[server.local_addr()], loopback()).unwrap()).unwrap();
    let servers = [relay.local_addr(), server.local_addr()];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (got, failovers) = rt.block_on(async move {
        let mut config = ClientConfig::with_servers(&servers).unwrap();
        config.from = 1;
        let mut client = Client::new(config);
        let later = msgs[5_000..].to_vec();
        let feeder = std::thread::spawn(move || {
            let mut relay = Some(relay);
            for (i, chunk) in later.chunks(500).enumerate() {
                publisher.publish(chunk.to_vec()).unwrap();
                std::thread::sleep(Duration::from_millis(2));
                if i == 10 {
                    // Mid-stream: EndOfSession, closed.
                    relay.take().unwrap().shutdown().unwrap();
                }
            }
        });
        let (mut got, mut failovers) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + PATIENCE;
        while got.len() < 20_000 {
            let event = tokio::time::timeout_at(deadline, client.next())
                .await
                .expect("frames in time")
                .expect("client running");
            match event {
                ClientEvent::Frame(f) if f.msg_type().is_data() => got.push(f.as_bytes().to_vec()),
                ClientEvent::Gap(g) => panic!("gap {g:?}"),
                ClientEvent::Duplicate { sequence } => panic!("duplicate {sequence}"),
                ClientEvent::Failover { from, to } => failovers.push((from, to, got.len())),
                _ => {}
            }
        }
        feeder.join().unwrap();
        (got, failovers)
    });
    assert!(got == expected, "every frame once, in order, byte for byte");
    assert_eq!(failovers.len(), 1, "{failovers:?}");
    let (from, to, at) = failovers[0];
    assert_eq!((from, to), (0, 1));
    assert!(at > 0 && at < 20_000, "mid-stream: after {at} frames");
    server.shutdown().unwrap();
}

/// Logs in on a blocking socket from `source`; returns the reader once
/// LoginAccepted came.
fn blocking_login(
    source: [u8; 4],
    addr: SocketAddr,
) -> tickwire::io::FrameReader<std::net::TcpStream> {
    use std::io::Write;
    let mut socket = connect_from(source, addr);
    let mut frame = [0u8; 24];
    tickwire::encode(&Payload::Login, 1, 0, &mut frame).unwrap();
    socket.write_all(&frame).unwrap();
    let mut reader = tickwire::io::FrameReader::new(socket);
    loop {
        match reader.next_event().unwrap() {
            Some(Event::Frame(m)) if m.msg_type() == tickwire::MsgType::LoginAccepted => {
                return reader;
            }
            Some(_) => {}
            None => panic!("closed before LoginAccepted"),
        }
    }
}

/// Data sequences read until `n` arrived.
fn read_data(reader: &mut tickwire::io::FrameReader<std::net::TcpStream>, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        match reader.next_event().unwrap() {
            Some(Event::Frame(m)) if m.is_data() => seqs.push(m.sequence()),
            Some(_) => {}
            None => panic!("closed after {} frames", seqs.len()),
        }
    }
    seqs
}

/// Issue 9's hostile connections, on the tokio server: connections that
/// never log in cannot take every place (the oldest is displaced past
/// `max_unauthenticated`), and a real client still gets in and gets data.
#[test]
fn the_tokio_server_displaces_the_oldest_connection_that_never_logged_in() {
    use tickwire::session::CloseReason;
    const LIMIT: usize = 20;
    const IDLE: usize = 30;
    let mut config = ServerConfig {
        listen: loopback(),
        core: CoreConfig {
            max_unauthenticated: LIMIT,
            max_clients: 4,
            ..CoreConfig::new(77)
        },
        ..ServerConfig::default()
    };
    config.core.session.login_timeout = Duration::from_secs(60);
    let (_rt, server) = common::tokio_server(config);
    // From 10 addresses, 3 each: under the per-peer limit (16).
    let accepted = || server.stats().accepted;
    let idle = idle_connections(server.local_addr(), accepted, IDLE, |i| {
        [127, 0, 0, 2 + (i % 10) as u8]
    });
    wait_until("the overall limit", PATIENCE, || {
        let s = server.stats();
        s.closed_for(CloseReason::UnauthenticatedLimit) == (IDLE - LIMIT) as u64
            && s.unauthenticated == LIMIT as u64
    });
    let stats = server.stats();
    assert_eq!((stats.clients, stats.displaced_per_peer), (LIMIT as u64, 0));
    let (old, new) = idle.split_at(IDLE - LIMIT);
    assert!(
        old.iter().all(|s| closed_by_server(s, true)),
        "the oldest went"
    );
    assert!(
        new.iter().all(|s| !closed_by_server(s, false)),
        "the newest stay"
    );
    // More idle connections than max_clients did not lock a real client out.
    let mut real = blocking_login([127, 0, 0, 1], server.local_addr());
    server.publisher().publish(messages(9, 100)).unwrap();
    assert_eq!(read_data(&mut real, 100), (1..=100).collect::<Vec<_>>());
    let stats = server.stats();
    // It logged in at once: read before it could count, it displaced nobody.
    assert_nobody_made_room(new, &stats, (IDLE - LIMIT) as u64, LIMIT);
    // Closing the idle ones frees their places (and keys) for newcomers.
    drop(idle);
    wait_until("the idle ones to go", PATIENCE, || {
        server.stats().unauthenticated == 0
    });
    let again = idle_connections(server.local_addr(), accepted, LIMIT, |_| [127, 0, 0, 20]);
    // They count once their admission grace is over.
    wait_until("the grace to end", PATIENCE, || {
        let s = server.stats();
        s.unauthenticated == 16 && s.displaced_per_peer == (LIMIT - 16) as u64
    });
    let stats = server.stats();
    assert_eq!(
        stats.closed_for(CloseReason::UnauthenticatedLimit),
        (IDLE - LIMIT + LIMIT - 16) as u64,
        "only the per-peer limit (16) applies now"
    );
    assert_eq!(stats.displaced_per_peer, (LIMIT - 16) as u64);
    assert_eq!(stats.unauthenticated, 16);
    assert!(again[LIMIT - 16..]
        .iter()
        .all(|s| !closed_by_server(s, false)));
    drop(again);
    drop(real);
}

/// One peer address cannot take every unauthenticated place on the tokio
/// server either: past `max_unauthenticated_per_peer` its own oldest goes,
/// nobody else's; a real client from that address still logs in.
#[test]
fn the_tokio_server_limits_unauthenticated_connections_per_peer() {
    use tickwire::session::CloseReason;
    let mut config = ServerConfig {
        listen: loopback(),
        ..ServerConfig::default()
    };
    config.core.session.login_timeout = Duration::from_secs(60);
    let (_rt, server) = common::tokio_server(config);
    let per_peer = ServerConfig::default().core.max_unauthenticated_per_peer;
    assert_eq!(per_peer, 16);
    let accepted = || server.stats().accepted;
    let two = idle_connections(server.local_addr(), accepted, 20, |_| [127, 0, 0, 2]);
    let three = idle_connections(server.local_addr(), accepted, 5, |_| [127, 0, 0, 3]);
    wait_until("the per-peer limit", PATIENCE, || {
        let s = server.stats();
        s.closed_for(CloseReason::UnauthenticatedLimit) == 4 && s.unauthenticated == 21
    });
    assert_eq!(server.stats().displaced_per_peer, 4);
    assert!(two[..4].iter().all(|s| closed_by_server(s, true)));
    assert!(two[4..].iter().all(|s| !closed_by_server(s, false)));
    assert!(three.iter().all(|s| !closed_by_server(s, false)));
    let mut real = blocking_login([127, 0, 0, 2], server.local_addr());
    server.publisher().publish(messages(10, 10)).unwrap();
    assert_eq!(read_data(&mut real, 10).len(), 10);
    // It logged in at once: read before it could count, it displaced nobody.
    assert!(two[4..].iter().all(|s| !closed_by_server(s, false)));
    assert!(three.iter().all(|s| !closed_by_server(s, false)));
    let stats = server.stats();
    assert_eq!((stats.displaced_per_peer, stats.unauthenticated), (4, 21));
}

// The server core under the tokio driver (issue 22) -------------------------

/// The tokio server loses nothing while its runtime is stalled: one worker
/// thread, blocked for 20 ms of every 50 by other work (a
/// `std::thread::sleep` in a task), while a publisher thread publishes
/// 200,000 one-message batches to a client reading at full speed. The
/// client gets every frame, in order, with no gap, and the server skipped
/// nothing. (Before the server core, the connection tasks took batches
/// from a ring of the last 4,096: 73,000 to 107,000 frames went missing
/// here, with no counter saying so.)
#[test]
fn the_tokio_server_loses_nothing_while_its_runtime_is_stalled() {
    const FRAMES: usize = 200_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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
    let stall = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let stalling = std::sync::Arc::clone(&stall);
    rt.spawn(async move {
        for _ in 0..2_000 {
            if !stalling.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20)); // the runtime is busy
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let mut reader = blocking_login([127, 0, 0, 1], server.local_addr());
    let publisher = server.publisher();
    let feed = messages(22, FRAMES);
    let publishing = std::thread::spawn(move || {
        for message in feed {
            publisher.publish(vec![message]).unwrap();
        }
    });
    let got = read_data(&mut reader, FRAMES);
    publishing.join().unwrap();
    stall.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(
        got.iter().copied().eq(1..=FRAMES as u64),
        "every frame, in order, no gap"
    );
    let stats = server.stats();
    assert_eq!(stats.frames_published, FRAMES as u64);
    assert_eq!((stats.skipped_frames, stats.slow_marks), (0, 0));
    rt.block_on(server.shutdown());
}

/// A burst of 1,000 clients connecting at once from one address, each
/// sending its Login at once, all log in: admission reads a connection's
/// bytes before it counts against the per-address limit (16), so none is
/// displaced as if it were idle.
#[test]
fn a_burst_of_logins_from_one_address_all_get_in_on_the_tokio_server() {
    use tickwire::session::CloseReason;
    if rerun_with_descriptor_limit(
        "a_burst_of_logins_from_one_address_all_get_in_on_the_tokio_server",
        4096,
    ) {
        return;
    }
    const CLIENTS: usize = 1_000;
    let (_rt, server) = common::tokio_server(ServerConfig {
        listen: loopback(),
        ..ServerConfig::default()
    });
    let (accepted, sockets) = common::burst_of_logins(server.local_addr(), CLIENTS);
    let stats = server.stats();
    assert_eq!(stats.closed_for(CloseReason::UnauthenticatedLimit), 0);
    assert_eq!(accepted, CLIENTS, "every client got LoginAccepted");
    drop(sockets);
}

/// Issue 23, items 2 and 8 for the tokio client: it is pulled, so taking
/// ten frames and coming back later loses nothing (frame 11 is next); it
/// connects by host name (resolved at connect, without blocking the
/// runtime); a name that does not resolve is a failed connect, retried.
#[test]
fn tokio_client_takes_host_names_and_resumes_where_the_caller_stopped() {
    let msgs = messages(8, 2_000);
    let expected = expected_frames(&msgs);
    let (rt, server) = common::tokio_server(ServerConfig {
        listen: loopback(),
        ..ServerConfig::default()
    });
    server.publisher().publish(msgs).unwrap();
    let port = server.local_addr().port();
    rt.block_on(async move {
        let mut config = ClientConfig::new(format!("localhost:{port}"));
        config.from = 1;
        let mut client = Client::new(config);
        let first = collect_tokio(&mut client, 10).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rest = collect_tokio(&mut client, 1_990).await;
        assert_eq!(first[..], expected[..10]);
        assert_eq!(rest[..], expected[10..]);
        assert_eq!(client.stats().connects, 1);

        let mut config = ClientConfig::new("no-such-host.invalid:7878");
        config.backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2))
            .with_max_retries(Some(1));
        let mut client = Client::new(config);
        let mut lost = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while let Some(event) = tokio::time::timeout_at(deadline, client.next())
            .await
            .expect("gave up in time")
        {
            match event {
                ClientEvent::Lost(why) => lost.push(why),
                ClientEvent::GaveUp { .. } => break,
                _ => {}
            }
        }
        let unresolved = Lost::ConnectFailed(tickwire::session::IoFailure::Unresolved);
        assert_eq!(lost, [unresolved; 2]);
    });
    rt.block_on(server.shutdown());
}

/// The tokio server takes a relay's input as the mio server does: frames
/// numbered upstream are sent byte for byte after a hole (`advance`), a
/// client logging in from 1 starts where the retention starts, and a new
/// upstream session ends the client's with EndOfSession.
#[test]
fn the_tokio_server_takes_a_relay_feed() {
    use tickwire::session::Batch;
    let (_rt, server) = common::tokio_server(ServerConfig {
        listen: loopback(),
        core: CoreConfig::new(0xfeed),
        ..ServerConfig::default()
    });
    let feed = server.relay_feed();
    let mut seq = tickwire::Sequencer::starting_at(5);
    let msgs = messages(31, 100);
    let mut bytes = vec![0u8; msgs.len() * 44];
    let done = seq.encode_batch(&msgs, &mut bytes);
    bytes.truncate(done.bytes);
    let upstream = bytes.clone();
    feed.advance(5).unwrap();
    feed.publish(Batch::new(bytes).unwrap()).unwrap();
    assert_eq!(server.stats().frames_published, 100);
    // Log in from 1: the retention starts at 5.
    use std::io::Write;
    let mut socket = connect_from([127, 0, 0, 1], server.local_addr());
    let mut login = [0u8; 24];
    tickwire::encode(&Payload::Login, 1, 0, &mut login).unwrap();
    socket.write_all(&login).unwrap();
    let mut reader = tickwire::io::FrameReader::new(socket);
    let mut got = Vec::new();
    let mut start = None;
    while got.len() < upstream.len() {
        match reader.next_event().unwrap() {
            Some(Event::Frame(tickwire::Message::LoginAccepted(la))) => {
                start = Some(la.sequence());
            }
            Some(Event::Frame(m)) if m.is_data() => got.extend_from_slice(m.as_bytes()),
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    assert_eq!(start, Some(5));
    assert!(got == upstream, "byte for byte, the upstream's frames");
    // The upstream restarted: EndOfSession, then the connection closes.
    feed.new_session(0xbeef, 1).unwrap();
    let mut ended = false;
    loop {
        match reader.next_event() {
            Ok(Some(Event::Frame(m))) if m.msg_type() == tickwire::MsgType::EndOfSession => {
                ended = true;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert!(ended, "EndOfSession before the close");
    assert_eq!(server.session_id(), 0xbeef);
}
