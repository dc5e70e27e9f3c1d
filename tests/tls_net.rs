//! The mio server and client inside TLS (protocol section 12), over real
//! sockets on 127.0.0.1: a session byte for byte, resume across cuts (a
//! fault proxy cuts the TLS stream mid-record, RST and FIN), a plain client
//! on a TLS port and a TLS client on a plain port, wrong roots, wrong name,
//! expired certificate, mutual TLS, authenticated logins inside TLS.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tickwire::net::{Client, ClientConfig, ServerConfig};
use tickwire::session::auth::{ClientKey, Credentials};
use tickwire::session::{CloseReason, Lost};
use tickwire::tls::{TlsClientFiles, TlsServerFiles};
use tickwire::wire::{KeyId, RejectReason, Secret};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");

fn tls_server(cert: &str, tweak: impl FnOnce(&mut ServerConfig)) -> tickwire::net::ServerHandle {
    let files = TlsServerFiles::new(format!("{DIR}/{cert}.pem"), format!("{DIR}/{cert}.key"));
    server_on("127.0.0.1:0".parse().unwrap(), |c| {
        c.tls = Some(files.load().unwrap());
        tweak(c);
    })
}

fn tls_client(addr: impl Into<tickwire::net::ServerAddr>, ca: &str) -> ClientConfig {
    let mut config = ClientConfig::new(addr);
    config.from = 1;
    config.backoff =
        tickwire::policy::Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
    config.tls = Some(
        TlsClientFiles::new(format!("{DIR}/{ca}.pem"))
            .load()
            .unwrap(),
    );
    config
}

/// Drives `client` for `limit`; the log (no panic at the limit).
fn drive_for(client: &mut Client, limit: Duration) -> Log {
    let mut log = Log::default();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !client.is_stopped() {
        client
            .poll(Some(Duration::from_millis(20)), |event| log.record(event))
            .unwrap();
    }
    log
}

#[test]
fn a_tls_session_is_the_plain_session_byte_for_byte() {
    let server = tls_server("server", |_| {});
    let msgs = messages(3, 2_000);
    let want = expected_frames(&msgs);
    server.publisher().publish(msgs[..1_000].to_vec()).unwrap();
    let mut client = Client::new(tls_client(server.local_addr(), "ca")).unwrap();
    let publisher = server.publisher();
    let rest = msgs[1_000..].to_vec();
    let paced = publish_paced(
        move |m| publisher.publish(m).unwrap(),
        rest,
        50,
        Duration::from_millis(1),
    );
    let log = drive(&mut client, Duration::from_secs(30), |l| {
        l.frames.len() >= 2_000
    });
    paced.join().unwrap();
    assert_exactly_once_in_order(&log, &want);
    assert_eq!((log.discarded, log.gaps.len()), (0, 0));
    // By name too: the certificate is for localhost.
    let mut by_name = Client::new(tls_client(
        format!("localhost:{}", server.local_addr().port()),
        "ca",
    ))
    .unwrap();
    let log = drive(&mut by_name, Duration::from_secs(10), |l| {
        l.frames.len() >= 2_000
    });
    assert_exactly_once_in_order(&log, &want);
}

#[test]
fn resume_across_cuts_inside_tls_loses_and_repeats_nothing() {
    let server = tls_server("server", |_| {});
    let cuts = (0..6)
        .map(|i| {
            (
                2_003 + i * 6_151,
                if i % 2 == 0 { Cut::Rst } else { Cut::Fin },
            )
        })
        .collect();
    let proxy = Proxy::start(
        server.local_addr(),
        Faults {
            fragment: true,
            cuts,
            ..Faults::default()
        },
    );
    let msgs = messages(5, 3_000);
    let want = expected_frames(&msgs);
    let publisher = server.publisher();
    let paced = publish_paced(
        move |m| publisher.publish(m).unwrap(),
        msgs,
        30,
        Duration::from_millis(1),
    );
    let mut config = tls_client(proxy.addr, "ca");
    config.tls.as_mut().unwrap().server_name = Some("localhost".into());
    let mut client = Client::new(config).unwrap();
    let log = drive(&mut client, Duration::from_secs(60), |l| {
        l.frames.len() >= 3_000
    });
    paced.join().unwrap();
    assert_exactly_once_in_order(&log, &want);
    assert!(
        log.lost.len() >= 6,
        "every cut was a lost connection: {:?}",
        log.lost
    );
    assert_eq!(log.gaps.len(), 0);
}

/// A client that must not log in: what it saw in `limit`.
fn never_logs_in(config: ClientConfig, limit: Duration) -> Log {
    let mut client = Client::new(config).unwrap();
    let log = drive_for(&mut client, limit);
    assert!(log.frames.is_empty(), "{} frames", log.frames.len());
    assert!(
        !log.states
            .iter()
            .any(|s| s.1 == tickwire::session::ClientState::LoggedIn),
        "{:?}",
        log.states
    );
    log
}

#[test]
fn bad_certificates_never_log_in() {
    let server = tls_server("server", |_| {});
    server.publisher().publish(messages(1, 10)).unwrap();
    let good = server.local_addr();
    // Roots that did not sign it.
    let log = never_logs_in(tls_client(good, "rogue-ca"), Duration::from_millis(500));
    assert!(log.lost.len() >= 2, "retried, never plain: {:?}", log.lost);
    // A name it is not for.
    let mut wrong = tls_client(good, "ca");
    wrong.tls.as_mut().unwrap().server_name = Some("feed.example".into());
    never_logs_in(wrong, Duration::from_millis(300));
    // Expired.
    let expired = tls_server("expired", |_| {});
    never_logs_in(
        tls_client(expired.local_addr(), "ca"),
        Duration::from_millis(300),
    );
}

#[test]
fn plain_to_tls_and_tls_to_plain_fail_quickly() {
    let tls = tls_server("server", |_| {});
    tls.publisher().publish(messages(1, 10)).unwrap();
    let started = Instant::now();
    let log = never_logs_in(fast_config(tls.local_addr()), Duration::from_millis(500));
    assert!(
        !log.lost.is_empty(),
        "a plain client on a TLS port is closed"
    );
    let first_loss = log.lost[0].0 - started;
    assert!(
        first_loss < Duration::from_millis(400),
        "quickly: {first_loss:?}"
    );
    wait_until(
        "the server closed them as bad data",
        Duration::from_secs(5),
        || tls.stats().closed[CloseReason::BadData.index()] >= 1,
    );

    let plain = server_on("127.0.0.1:0".parse().unwrap(), |_| {});
    plain.publisher().publish(messages(1, 10)).unwrap();
    let started = Instant::now();
    let log = never_logs_in(
        tls_client(plain.local_addr(), "ca"),
        Duration::from_millis(500),
    );
    assert!(!log.lost.is_empty());
    assert!(log.lost[0].0 - started < Duration::from_millis(400));
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let files = {
        let mut f = TlsServerFiles::new(format!("{DIR}/server.pem"), format!("{DIR}/server.key"));
        f.client_ca = Some(format!("{DIR}/ca.pem").into());
        f
    };
    let server = server_on("127.0.0.1:0".parse().unwrap(), |c| {
        c.tls = Some(files.load().unwrap())
    });
    server.publisher().publish(messages(2, 100)).unwrap();
    never_logs_in(
        tls_client(server.local_addr(), "ca"),
        Duration::from_millis(400),
    );
    let mut with_cert = TlsClientFiles::new(format!("{DIR}/ca.pem"));
    with_cert.client_cert = Some((
        format!("{DIR}/client.pem").into(),
        format!("{DIR}/client.key").into(),
    ));
    let mut config = tls_client(server.local_addr(), "ca");
    config.tls = Some(with_cert.load().unwrap());
    let mut client = Client::new(config).unwrap();
    let log = drive(&mut client, Duration::from_secs(10), |l| {
        l.frames.len() >= 100
    });
    assert_eq!(log.frames.len(), 100);
}

#[test]
fn authenticated_logins_inside_tls() {
    let alice = ClientKey {
        key_id: KeyId::new("alice").unwrap(),
        secret: Secret::new([0xa1; 32]),
    };
    let credentials =
        Credentials::parse(&Credentials::line(&alice.key_id, &alice.secret, None)).unwrap();
    let server = tls_server("server", |c| c.auth = Some(Arc::new(credentials)));
    server.publisher().publish(messages(4, 50)).unwrap();
    let mut config = tls_client(server.local_addr(), "ca");
    config.credentials = Some(alice);
    let mut client = Client::new(config).unwrap();
    let log = drive(&mut client, Duration::from_secs(10), |l| {
        l.frames.len() >= 50
    });
    assert_eq!(log.frames.len(), 50);
    // A wrong secret: Rejected inside TLS, the client gives up.
    let mut config = tls_client(server.local_addr(), "ca");
    config.credentials = Some(ClientKey {
        secret: Secret::new([0; 32]),
        ..alice
    });
    let mut client = Client::new(config).unwrap();
    let log = drive_for(&mut client, Duration::from_secs(5));
    assert_eq!(
        log.gave_up,
        Some(Lost::Rejected(RejectReason::NotAuthorized))
    );
    assert!(log.frames.is_empty());
}

#[test]
fn credentials_go_in_clear_only_to_loopback_unless_inside_tls() {
    let key = ClientKey {
        key_id: KeyId::new("k").unwrap(),
        secret: Secret::new([1; 32]),
    };
    let far: SocketAddr = "192.0.2.1:7878".parse().unwrap();
    let mut plain = ClientConfig::new(far);
    plain.credentials = Some(key);
    let e = Client::new(plain.clone()).unwrap_err();
    assert!(e.to_string().contains("in clear"), "{e}");
    assert!(!e.to_string().contains("0101"), "no secret in the error");
    plain.allow_plain_auth = true;
    assert!(Client::new(plain).is_ok());
    let mut tls = tls_client(far, "ca");
    tls.credentials = Some(key);
    assert!(Client::new(tls).is_ok());
}
