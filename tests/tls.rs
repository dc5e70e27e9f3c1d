//! TLS settings (protocol section 12) checked by real handshakes between
//! rustls's own connection states in memory: each misconfiguration a clear
//! error on the side that should see it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use rustls::{ClientConnection, ServerConnection};
use tickwire::tls::{check_alpn, TlsClient, TlsClientFiles, TlsServerFiles, ALPN};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");

fn path(name: &str) -> String {
    format!("{DIR}/{name}")
}

fn server(cert: &str) -> TlsServerFiles {
    TlsServerFiles::new(path(&format!("{cert}.pem")), path(&format!("{cert}.key")))
}

fn client(ca: &str) -> TlsClientFiles {
    TlsClientFiles::new(path(&format!("{ca}.pem")))
}

/// Runs a handshake to its end (bounded): each side's error, if any.
fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: &TlsClient,
    host: &str,
) -> (Result<(), String>, Result<(), String>) {
    let mut s = ServerConnection::new(server).unwrap();
    let mut c = ClientConnection::new(
        Arc::clone(&client.config),
        client.server_name_for(host).unwrap(),
    )
    .unwrap();
    let (mut server_err, mut client_err) = (None, None);
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() && server_err.is_none() {
            let mut r = &buf[..];
            while !r.is_empty() {
                s.read_tls(&mut r).unwrap();
            }
            if let Err(e) = s.process_new_packets() {
                server_err = Some(e.to_string());
            }
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() && client_err.is_none() {
            let mut r = &buf[..];
            while !r.is_empty() {
                c.read_tls(&mut r).unwrap();
            }
            if let Err(e) = c.process_new_packets() {
                client_err = Some(e.to_string());
            }
        }
        if (!s.is_handshaking() && !c.is_handshaking())
            || server_err.is_some()
            || client_err.is_some()
        {
            if server_err.is_none() && client_err.is_none() {
                // Both sides check the ALPN once done.
                check_alpn(&s)
                    .map_err(|e| server_err = Some(e.to_string()))
                    .ok();
                check_alpn(&c)
                    .map_err(|e| client_err = Some(e.to_string()))
                    .ok();
            }
            break;
        }
    }
    (
        server_err.map_or(Ok(()), Err),
        client_err.map_or(Ok(()), Err),
    )
}

#[test]
fn a_good_handshake_agrees_on_tickwire_1() {
    let (s, c) = handshake(
        server("server").load().unwrap(),
        &client("ca").load().unwrap(),
        "localhost",
    );
    assert_eq!((s, c), (Ok(()), Ok(())));
    let (s, c) = handshake(
        server("server").load().unwrap(),
        &client("ca").load().unwrap(),
        "127.0.0.1",
    );
    assert_eq!((s, c), (Ok(()), Ok(())));
}

#[test]
fn wrong_ca_wrong_name_and_expired_fail_on_the_client() {
    for (cert, ca, host, says) in [
        ("rogue-server", "ca", "localhost", "unknown"),
        ("server", "rogue-ca", "localhost", "unknown"),
        ("other-name", "ca", "localhost", "not valid for name"),
        ("expired", "ca", "localhost", "expired"),
    ] {
        let (_, c) = handshake(
            server(cert).load().unwrap(),
            &client(ca).load().unwrap(),
            host,
        );
        let e = c.expect_err(cert);
        assert!(
            e.to_lowercase().contains(says),
            "{cert} by {ca} for {host}: {e}"
        );
    }
    // The name to verify can be given apart from the address dialled.
    let mut named = client("ca");
    named.server_name = Some("feed.example".into());
    let (s, c) = handshake(
        server("other-name").load().unwrap(),
        &named.load().unwrap(),
        "127.0.0.1",
    );
    assert_eq!((s, c), (Ok(()), Ok(())));
}

#[test]
fn a_required_client_certificate_absent_fails_on_the_server() {
    let mut mutual = server("server");
    mutual.client_ca = Some(path("ca.pem").into());
    let (s, _) = handshake(
        mutual.load().unwrap(),
        &client("ca").load().unwrap(),
        "localhost",
    );
    let e = s.expect_err("no client certificate");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    let mut with_cert = client("ca");
    with_cert.client_cert = Some((path("client.pem").into(), path("client.key").into()));
    let (s, c) = handshake(
        mutual.load().unwrap(),
        &with_cert.load().unwrap(),
        "localhost",
    );
    assert_eq!((s, c), (Ok(()), Ok(())));
    // A certificate from a CA the server does not trust.
    let mut rogue = client("ca");
    rogue.client_cert = Some((
        path("rogue-server.pem").into(),
        path("rogue-server.key").into(),
    ));
    let (s, _) = handshake(mutual.load().unwrap(), &rogue.load().unwrap(), "localhost");
    assert!(s.is_err());
}

#[test]
fn a_peer_without_the_alpn_is_refused_by_both_ends() {
    // A client that offers no ALPN (rustls's server lets it through): the
    // server's check refuses it.
    let bare = client("ca").load().unwrap();
    let mut config = (*bare.config).clone();
    config.alpn_protocols.clear();
    let no_alpn = TlsClient {
        config: Arc::new(config),
        server_name: None,
    };
    let (s, _) = handshake(server("server").load().unwrap(), &no_alpn, "localhost");
    assert!(s.expect_err("no ALPN").contains("tickwire/1"));
    // A client offering another protocol: the handshake itself fails.
    let mut config = (*bare.config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let other = TlsClient {
        config: Arc::new(config),
        server_name: None,
    };
    let (s, _) = handshake(server("server").load().unwrap(), &other, "localhost");
    assert!(s.is_err());
    // A server without ALPN: the client's check refuses it.
    let mut config = (*server("server").load().unwrap()).clone();
    config.alpn_protocols.clear();
    let (_, c) = handshake(Arc::new(config), &bare, "localhost");
    assert!(c.expect_err("server without ALPN").contains("tickwire/1"));
    assert_eq!(ALPN, b"tickwire/1");
}

#[test]
fn bad_files_are_clear_errors() {
    let missing = TlsServerFiles::new(path("nope.pem"), path("server.key"))
        .load()
        .unwrap_err();
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
    let not_a_key = TlsServerFiles::new(path("server.pem"), path("server.pem"))
        .load()
        .unwrap_err();
    assert!(not_a_key.to_string().contains("server.pem"), "{not_a_key}");
    let mismatch = TlsServerFiles::new(path("server.pem"), path("client.key"))
        .load()
        .unwrap_err();
    assert!(!mismatch.to_string().is_empty());
    let no_roots = TlsClientFiles::new(path("server.key")).load().unwrap_err();
    assert!(no_roots.to_string().contains("server.key"), "{no_roots}");
    // TLS 1.2 only when both ends are configured for it.
    let mut s12 = server("server");
    s12.tls12 = true;
    let (s, c) = handshake(
        s12.load().unwrap(),
        &client("ca").load().unwrap(),
        "localhost",
    );
    assert_eq!((s, c), (Ok(()), Ok(())));
}
