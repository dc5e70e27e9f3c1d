//! The tokio server and client inside TLS (protocol section 12), over real
//! sockets on 127.0.0.1 with the test certificates of `tests/data/tls`:
//! data byte for byte, resume across cuts, every misconfiguration a clear
//! message on the side that should see it, client certificates,
//! authentication inside TLS, Rejected inside TLS, the login timeout over
//! the handshake. Every wait is bounded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tickwire::net::{ClientConfig, ServerConfig};
use tickwire::policy::Backoff;
use tickwire::session::auth::{ClientKey, Credentials};
use tickwire::session::{CloseReason, CoreConfig, Lost};
use tickwire::tls::{TlsClient, TlsClientFiles, TlsServerFiles};
use tickwire::tokio::{Client, ClientEvent, Server, ServerHandle};
use tickwire::wire::{KeyId, RejectReason, Secret};
use tickwire::Payload;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

mod common;

use common::{expected_frames, messages};

/// The bound on any wait in these tests.
const PATIENCE: Duration = Duration::from_secs(20);
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");
const ALICE: [u8; 32] = [0xa1; 32];

fn path(name: &str) -> String {
    format!("{DIR}/{name}")
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn server_files(cert: &str) -> TlsServerFiles {
    TlsServerFiles::new(path(&format!("{cert}.pem")), path(&format!("{cert}.key")))
}

fn tls_client(ca: &str) -> TlsClient {
    TlsClientFiles::new(path(&format!("{ca}.pem")))
        .load()
        .unwrap()
}

/// A server on 127.0.0.1 with `tls` (or plain), changed by `tweak`.
async fn server(
    tls: Option<TlsServerFiles>,
    tweak: impl FnOnce(&mut ServerConfig),
) -> ServerHandle {
    let mut config = ServerConfig {
        listen: loopback(),
        core: CoreConfig::new(0x715),
        tls: tls.map(|files| files.load().unwrap()),
        ..ServerConfig::default()
    };
    tweak(&mut config);
    Server::bind(config).await.unwrap().spawn()
}

/// A client of `server` from the first frame, quick to retry, giving up
/// after `retries`.
fn client_config(
    server: impl Into<tickwire::net::ServerAddr>,
    tls: Option<TlsClient>,
    retries: Option<u32>,
) -> ClientConfig {
    let mut config = ClientConfig::new(server);
    config.from = 1;
    config.backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(50))
        .with_max_retries(retries);
    config.tls = tls;
    config
}

fn alice() -> ClientKey {
    ClientKey {
        key_id: KeyId::new("alice").unwrap(),
        secret: Secret::new(ALICE),
    }
}

fn credentials() -> Arc<Credentials> {
    let line = Credentials::line(&KeyId::new("alice").unwrap(), &Secret::new(ALICE), None);
    Arc::new(Credentials::parse(&line).unwrap())
}

// ---------------------------------------------------------------------------
// The log lines of this test binary.

static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("tickwire") {
            LOGGED
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("{} {}", record.level(), record.args()));
        }
    }
    fn flush(&self) {}
}

fn lines() -> Vec<String> {
    LOGGED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn capture_logs() {
    static LOGGER: Capture = Capture;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Debug);
}

/// Waits (bounded) for a log line with every one of `words`; the line.
async fn logged(words: &[&str]) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let lines = lines();
        if let Some(line) = lines.iter().find(|l| words.iter().all(|w| l.contains(w))) {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {words:?} in {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// Clients.

/// The data frames until there are `n` (bounded); no gap, no duplicate.
async fn collect(client: &mut Client, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::with_capacity(n);
    let deadline = Instant::now() + PATIENCE;
    while got.len() < n {
        let event = tokio::time::timeout_at(deadline, client.next())
            .await
            .expect("frames in time")
            .expect("client running");
        match event {
            ClientEvent::Frame(f) if f.msg_type().is_data() => got.push(f.as_bytes().to_vec()),
            ClientEvent::Gap(g) => panic!("gap {g:?}"),
            ClientEvent::Duplicate { sequence } => panic!("duplicate {sequence}"),
            _ => {}
        }
    }
    got
}

/// Every event until the client stops (bounded).
async fn until_stopped(client: &mut Client) -> Vec<ClientEvent> {
    let mut events = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while let Some(event) = tokio::time::timeout_at(deadline, client.next())
        .await
        .expect("the client stops in time")
    {
        events.push(event);
    }
    events
}

fn logged_in(events: &[ClientEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, ClientEvent::LoggedIn { .. }))
}

/// The client gave up after connection attempts that failed (never after
/// a login).
fn gave_up_connecting(events: &[ClientEvent]) -> bool {
    matches!(events.last(), Some(ClientEvent::GaveUp { .. })) && !logged_in(events)
}

fn closed_for(server: &ServerHandle, reason: CloseReason) -> u64 {
    server.stats().closed[reason.index()]
}

async fn wait_closed(server: &ServerHandle, reason: CloseReason, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    while closed_for(server, reason) < n {
        assert!(
            Instant::now() < deadline,
            "{reason:?}: {:?}",
            server.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------

/// A TLS client logs in (by address and by name), gets the replay and the
/// live frames byte for byte, and the graceful shutdown's EndOfSession
/// inside TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_login_gets_replay_and_live_byte_for_byte_then_end_of_session() {
    let msgs = messages(11, 4_000);
    let expected = expected_frames(&msgs);
    let server = server(Some(server_files("server")), |_| {}).await;
    let addr = server.local_addr();
    server.publisher().publish(msgs[..2_000].to_vec()).unwrap();

    let mut by_addr = Client::new(client_config(addr, Some(tls_client("ca")), Some(0)));
    let mut got = collect(&mut by_addr, 2_000).await;
    // `localhost` may be ::1 first: nobody there, then 127.0.0.1.
    let mut by_name = Client::new(client_config(
        format!("localhost:{}", addr.port()),
        Some(tls_client("ca")),
        Some(0),
    ));
    assert_eq!(collect(&mut by_name, 2_000).await, expected[..2_000]);

    for chunk in msgs[2_000..].chunks(100) {
        server.publisher().publish(chunk.to_vec()).unwrap();
    }
    got.extend(collect(&mut by_addr, 2_000).await);
    assert_eq!(got, expected);
    assert_eq!(collect(&mut by_name, 2_000).await, expected[2_000..]);
    assert_eq!(server.stats().clients, 2);

    // Shut down: each client reads its EndOfSession (flushed, then
    // close_notify and the FIN).
    let stats = tokio::spawn(server.shutdown());
    for client in [&mut by_addr, &mut by_name] {
        let events = until_stopped(client).await;
        assert!(
            events
                .iter()
                .any(|e| *e == ClientEvent::EndOfSession { sequence: 4_001 }),
            "{events:?}"
        );
    }
    let stats = stats.await.unwrap();
    assert_eq!(stats.closed[CloseReason::Shutdown.index()], 2, "{stats:?}");
    assert_eq!(by_addr.stats().connects, 1);
}

/// A proxy on 127.0.0.1 that forwards both ways and cuts each of the first
/// `cuts` connections once `cut_after` bytes went to the client (inside
/// a TLS record); later ones pass.
async fn cutting_proxy(upstream: SocketAddr, cut_after: usize, cuts: usize) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut seen = 0;
        while let Ok((mut down, _)) = listener.accept().await {
            let limit = if seen < cuts { cut_after } else { usize::MAX };
            seen += 1;
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
                            Ok(n) => n.min(limit - passed),
                        };
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

/// Connections cut in the middle of TLS records, twice: the client
/// resumes inside TLS from the next sequence it needs, nothing lost and
/// nothing repeated, byte for byte; then live data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_across_cuts_inside_tls_loses_and_repeats_nothing() {
    let msgs = messages(12, 8_000);
    let expected = expected_frames(&msgs);
    let server = server(Some(server_files("server")), |_| {}).await;
    server.publisher().publish(msgs[..6_000].to_vec()).unwrap();
    let proxy = cutting_proxy(server.local_addr(), 50_017, 2).await;
    let mut client = Client::new(client_config(proxy, Some(tls_client("ca")), Some(5)));
    let mut got = collect(&mut client, 6_000).await;
    assert_eq!(client.stats().connects, 3, "two cuts, two resumes");
    for chunk in msgs[6_000..].chunks(200) {
        server.publisher().publish(chunk.to_vec()).unwrap();
    }
    got.extend(collect(&mut client, 2_000).await);
    assert_eq!(got, expected);
    server.shutdown().await;
}

/// A certificate by a CA the client does not trust, for another name, or
/// expired: the client never logs in, gives up after its retries, and its
/// log names rustls's reason; the server logs the client's alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_wrong_name_and_expired_never_log_in() {
    capture_logs();
    for (cert, says) in [
        ("rogue-server", "UnknownIssuer"),
        ("other-name", "certificate not valid for name"),
        ("expired", "certificate expired"),
    ] {
        let server = server(Some(server_files(cert)), |_| {}).await;
        let addr = server.local_addr();
        let mut client = Client::new(client_config(addr, Some(tls_client("ca")), Some(1)));
        let events = until_stopped(&mut client).await;
        assert!(gave_up_connecting(&events), "{cert}: {events:?}");
        let attempts = events
            .iter()
            .filter(|e| matches!(e, ClientEvent::Lost(Lost::ConnectFailed(_))))
            .count();
        assert_eq!(attempts, 2, "{cert}: {events:?}");
        let line = logged(&[&format!("WARN {addr}: TLS handshake failed"), says]).await;
        assert!(!line.contains("DEBUG"), "{line}");
        // The server saw the client's alert.
        wait_closed(&server, CloseReason::BadData, 2).await;
        logged(&["closed 127.0.0.1:", "TLS: received fatal alert"]).await;
        assert_eq!(server.stats().clients, 0);
        server.shutdown().await;
    }
}

/// A plain client on a TLS listener: the server names it at once (not
/// TLS), the client sees the connection end long before the login
/// timeout, and names the TLS answer it got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_on_a_tls_port_fails_fast_and_clearly() {
    capture_logs();
    let server = server(Some(server_files("server")), |c| {
        c.core.session.login_timeout = Duration::from_secs(10);
    })
    .await;
    let addr = server.local_addr();
    let started = Instant::now();
    let mut client = Client::new(client_config(addr, None, Some(0)));
    let events = until_stopped(&mut client).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{events:?}");
    assert!(!logged_in(&events), "{events:?}");
    assert!(
        matches!(events.last(), Some(ClientEvent::GaveUp { .. })),
        "{events:?}"
    );
    logged(&["closed 127.0.0.1:", "a plain client on this TLS listener?"]).await;
    logged(&[&format!("ERROR {addr}: the server answered in TLS")]).await;
    wait_closed(&server, CloseReason::BadData, 1).await;
    server.shutdown().await;
}

/// A TLS client on a plain listener, with and without authentication on
/// the server: it fails its handshake at once (the server closes on the
/// ClientHello, or answers Rejected in clear), says so, and never sends a
/// byte in clear; the server names the TLS handshake it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_on_a_plain_port_fails_fast_and_clearly() {
    capture_logs();
    for auth in [false, true] {
        let server = server(None, |c| {
            c.core.session.login_timeout = Duration::from_secs(10);
            if auth {
                c.auth = Some(credentials());
            }
        })
        .await;
        let addr = server.local_addr();
        let started = Instant::now();
        let mut config = client_config(addr, Some(tls_client("ca")), Some(0));
        config.credentials = Some(alice());
        let mut client = Client::new(config);
        let events = until_stopped(&mut client).await;
        assert!(started.elapsed() < Duration::from_secs(3), "{events:?}");
        assert!(gave_up_connecting(&events), "{events:?}");
        let why = if auth {
            "(not TLS: a plain listener?)"
        } else {
            "(a plain listener?)"
        };
        logged(&[&format!("WARN {addr}: TLS handshake failed"), why]).await;
        logged(&["a TLS handshake on this plain listener"]).await;
        let closed = if auth {
            CloseReason::Rejected // (authentication required)
        } else {
            CloseReason::BadData
        };
        wait_closed(&server, closed, 1).await;
        assert_eq!(server.stats().clients, 0, "no connection left");
        server.shutdown().await;
    }
}

/// A listener that requires client certificates: a client without one is
/// refused on the server (and its log says it got the alert); one with
/// its certificate is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_client_certificate_refuses_the_absent_and_serves_the_present() {
    capture_logs();
    let mut files = server_files("server");
    files.client_ca = Some(path("ca.pem").into());
    let server = server(Some(files), |_| {}).await;
    let addr = server.local_addr();
    let msgs = messages(13, 100);
    server.publisher().publish(msgs.clone()).unwrap();

    let mut without = Client::new(client_config(addr, Some(tls_client("ca")), Some(1)));
    let events = until_stopped(&mut without).await;
    assert!(!logged_in(&events), "{events:?}");
    assert!(
        matches!(events.last(), Some(ClientEvent::GaveUp { .. })),
        "{events:?}"
    );
    logged(&["closed 127.0.0.1:", "requires a client certificate"]).await;
    logged(&[&format!("WARN {addr}: TLS"), "CertificateRequired"]).await;
    wait_closed(&server, CloseReason::BadData, 2).await;
    assert_eq!(server.stats().clients, 0, "no connection left");

    let mut with = TlsClientFiles::new(path("ca.pem"));
    with.client_cert = Some((path("client.pem").into(), path("client.key").into()));
    let mut with = Client::new(client_config(addr, Some(with.load().unwrap()), Some(0)));
    assert_eq!(collect(&mut with, 100).await, expected_frames(&msgs));
    assert_eq!(server.stats().clients, 1);
    server.shutdown().await;
}

/// Whether this host connects to an IPv4-mapped IPv6 address (a kernel
/// without IPv6 does not).
fn v4_mapped_works() -> bool {
    let listener = std::net::TcpListener::bind(loopback()).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::net::TcpStream::connect(("::ffff:127.0.0.1", port)).is_ok()
}

/// Credentials inside TLS to an address that is not loopback to the
/// client's eyes (`::ffff:127.0.0.1`; the name verified is `localhost`):
/// served without `allow_plain_auth`. The same client in clear refuses
/// to send them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_login_inside_tls_needs_no_plain_auth_permission() {
    capture_logs();
    if !v4_mapped_works() {
        eprintln!("skipped: no IPv4-mapped IPv6 on this host");
        return;
    }
    let server = server(Some(server_files("server")), |c| {
        c.auth = Some(credentials());
    })
    .await;
    let msgs = messages(14, 500);
    server.publisher().publish(msgs.clone()).unwrap();
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", server.local_addr().port())
        .parse()
        .unwrap();
    assert!(!mapped.ip().is_loopback());

    let mut tls = tls_client("ca");
    tls.server_name = Some("localhost".into());
    let mut config = client_config(mapped, Some(tls), Some(0));
    config.credentials = Some(alice());
    assert!(!config.allow_plain_auth);
    let mut client = Client::new(config.clone());
    assert_eq!(collect(&mut client, 500).await, expected_frames(&msgs));
    assert_eq!(server.stats().clients, 1);
    // The listener is IPv4: the server sees the client as 127.0.0.1.
    logged(&["authenticated 127.0.0.1:", "as alice"]).await;

    // In clear: never sent (no connection is even made).
    config.tls = None;
    let mut plain = Client::new(config);
    let events = until_stopped(&mut plain).await;
    assert!(gave_up_connecting(&events), "{events:?}");
    logged(&[&format!("{mapped}: not a loopback address")]).await;
    assert_eq!(server.stats().accepted, 1);
    server.shutdown().await;
}

/// A wrong secret inside TLS: the client gets the Rejected (not
/// authorized) and gives up; on the raw stream, the Rejected is followed
/// by close_notify (a clean end of the TLS stream), while the server
/// still reads until the client closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_inside_tls_reaches_the_client_then_a_clean_end() {
    let server = server(Some(server_files("server")), |c| {
        c.auth = Some(credentials());
    })
    .await;
    let addr = server.local_addr();
    let mut config = client_config(addr, Some(tls_client("ca")), Some(3));
    config.credentials = Some(ClientKey {
        secret: Secret::new([0x66; 32]),
        ..alice()
    });
    let mut client = Client::new(config);
    let events = until_stopped(&mut client).await;
    assert!(
        events.contains(&ClientEvent::Rejected {
            server: 0,
            reason: RejectReason::NotAuthorized
        }),
        "{events:?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(ClientEvent::GaveUp {
                last: Lost::Rejected(RejectReason::NotAuthorized),
                ..
            })
        ),
        "{events:?}"
    );
    wait_closed(&server, CloseReason::Rejected, 1).await;

    // The raw stream: an Auth with a wrong secret and a Login, in one write.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tls_client("ca");
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
    let mut stream = connector
        .connect(tls.server_name_for("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let mut auth = [0u8; 72];
    let payload = Payload::auth(&KeyId::new("alice").unwrap(), Secret::new([0x66; 32]));
    tickwire::encode(&payload, 0, 0, &mut auth).unwrap();
    let mut login = [0u8; 24];
    tickwire::encode(&Payload::Login, 0, 0, &mut login).unwrap();
    stream
        .write_all(&[&auth[..], &login[..]].concat())
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .unwrap()
        .expect("a clean end: close_notify, not a cut");
    assert_eq!(got.len(), 32, "one Rejected, nothing else: {got:02x?}");
    assert_eq!((got[2], got[20]), (0x08, 2), "Rejected, not authorized");
    // The server still reads (it drains until the client closes).
    stream.write_all(&[0u8; 100]).await.unwrap();
    stream.flush().await.unwrap();
    assert_eq!(closed_for(&server, CloseReason::Rejected), 1);
    drop(stream);
    wait_closed(&server, CloseReason::Rejected, 2).await;
    assert_eq!(server.stats().clients, 0);
    server.shutdown().await;
}

/// The login timeout runs from the accept and covers the handshake: a
/// client that sends nothing, and one that stops in the middle of its
/// ClientHello, are closed by the core's timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_never_finished_is_closed_at_the_login_timeout() {
    let timeout = Duration::from_millis(300);
    let server = server(Some(server_files("server")), |c| {
        c.core.session.login_timeout = timeout;
    })
    .await;
    let addr = server.local_addr();
    for partial in [&[][..], &[0x16, 0x03, 0x01, 0x00, 0xf0, 0x01][..]] {
        let started = Instant::now();
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(partial).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(PATIENCE, socket.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        let took = started.elapsed();
        assert_eq!(n, 0, "nothing before the close: {:02x?}", &buf[..n]);
        assert!(
            took >= timeout - Duration::from_millis(20) && took < timeout * 5,
            "{took:?}"
        );
    }
    wait_closed(&server, CloseReason::LoginTimeout, 2).await;
    server.shutdown().await;
}

/// ALPN `tickwire/1` is required on both ends: a TLS client that offers
/// none is refused by the server; a TLS server that agrees on none is
/// refused by the client. Each says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_alpn_both_ends_refuse() {
    capture_logs();
    // A client offering no ALPN.
    let server_a = server(Some(server_files("server")), |_| {}).await;
    let mut no_alpn = tls_client("ca");
    let mut config = (*no_alpn.config).clone();
    config.alpn_protocols.clear();
    no_alpn.config = Arc::new(config);
    let mut client = Client::new(client_config(server_a.local_addr(), Some(no_alpn), Some(0)));
    let events = until_stopped(&mut client).await;
    assert!(gave_up_connecting(&events), "{events:?}");
    logged(&[
        "closed 127.0.0.1:",
        "did not agree on the ALPN protocol tickwire/1",
    ])
    .await;
    wait_closed(&server_a, CloseReason::BadData, 1).await;
    server_a.shutdown().await;

    // A server agreeing on none.
    let mut tls = (*server_files("server").load().unwrap()).clone();
    tls.alpn_protocols.clear();
    let server_b = Server::bind(ServerConfig {
        listen: loopback(),
        tls: Some(Arc::new(tls)),
        ..ServerConfig::default()
    })
    .await
    .unwrap()
    .spawn();
    let addr = server_b.local_addr();
    let mut client = Client::new(client_config(addr, Some(tls_client("ca")), Some(0)));
    let events = until_stopped(&mut client).await;
    assert!(gave_up_connecting(&events), "{events:?}");
    logged(&[&format!(
        "ERROR {addr}: TLS: the TLS peer did not agree on the ALPN"
    )])
    .await;
    server_b.shutdown().await;
}
