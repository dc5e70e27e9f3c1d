//! What authentication and TLS cost (issue 25's targets), each a ratio
//! measured in one run, alternating rounds, medians:
//! - steady-state throughput to 1 and 16 clients (the reference `ClientSet`
//!   receiving, every frame CRC-checked) from the mio server: plain, with
//!   authenticated logins (`ServerConfig::auth`), and inside TLS;
//! - a login: connect + TLS handshake + Auth + Login until LoginAccepted,
//!   one at a time (time per connection) and from 8 threads at once
//!   (handshakes per second the server sustains), against a plain login.
//!
//! `cargo bench --bench tls --features cli` (`TICKWIRE_BENCH_SECONDS=S`
//! per round, 2 by default; `TICKWIRE_BENCH_ROUNDS=N`, 3).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tickwire::encode::QuoteFields;
use tickwire::net::{ClientConfig, ClientSet, Server, ServerConfig, ServerHandle};
use tickwire::session::auth::{ClientKey, Credentials};
use tickwire::session::{ClientEvent, ClientState};
use tickwire::tls::{TlsClient, TlsClientFiles, TlsServerFiles};
use tickwire::wire::{KeyId, Secret};
use tickwire::Payload;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Plain,
    Auth,
    Tls,
}

fn key() -> ClientKey {
    ClientKey {
        key_id: KeyId::new("bench").unwrap(),
        secret: Secret::new([0x42; 32]),
    }
}

fn server(mode: Mode) -> ServerHandle {
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    config.core.session.slow_threshold = 64 << 20;
    config.core.session.queue_limit = 128 << 20;
    config.core.max_unauthenticated_per_peer = 4096;
    config.core.max_unauthenticated = 4096;
    config.core.lockout.max_failures = 0;
    if mode != Mode::Plain {
        let k = key();
        config.auth = Some(Arc::new(
            Credentials::parse(&Credentials::line(&k.key_id, &k.secret, None)).unwrap(),
        ));
    }
    if mode == Mode::Tls {
        config.tls = Some(
            TlsServerFiles::new(format!("{DIR}/server.pem"), format!("{DIR}/server.key"))
                .load()
                .unwrap(),
        );
    }
    Server::bind(config).unwrap().spawn().unwrap()
}

fn tls_client() -> TlsClient {
    TlsClientFiles::new(format!("{DIR}/ca.pem")).load().unwrap()
}

fn client_config(server: &ServerHandle, mode: Mode, tls: &TlsClient) -> ClientConfig {
    let mut c = ClientConfig::new(server.local_addr());
    if mode != Mode::Plain {
        c.credentials = Some(key());
    }
    if mode == Mode::Tls {
        c.tls = Some(tls.clone());
    }
    c
}

/// Aggregate data frames per second to `clients` live clients.
fn throughput(mode: Mode, clients: usize, seconds: f64, tls: &TlsClient) -> f64 {
    let server = server(mode);
    let mut set = ClientSet::new().unwrap();
    for _ in 0..clients {
        set.add(client_config(&server, mode, tls));
    }
    let mut logged_in = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while logged_in < clients && Instant::now() < deadline {
        set.poll(Some(Duration::from_millis(10)), |_, e| {
            if matches!(e, ClientEvent::LoggedIn { .. }) {
                logged_in += 1;
            }
        })
        .unwrap();
    }
    assert_eq!(logged_in, clients, "{mode:?}: not every client logged in");
    let stop = Arc::new(AtomicBool::new(false));
    let slowest = Arc::new(AtomicU64::new(0));
    const WINDOW: u64 = 1 << 20;
    let publisher = {
        let (publisher, stop, slowest) = (server.publisher(), stop.clone(), slowest.clone());
        thread::spawn(move || {
            let batch = vec![(0u64, Payload::Quote(QuoteFields::default())); 4096];
            let mut published = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if published.saturating_sub(slowest.load(Ordering::Relaxed)) > WINDOW {
                    thread::sleep(Duration::from_micros(10));
                    continue;
                }
                published += 4096;
                if publisher.publish(batch.clone()).is_err() {
                    break;
                }
            }
        })
    };
    let mut frames = vec![0u64; clients];
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        set.poll(Some(Duration::from_millis(10)), |id, e| {
            if let ClientEvent::Frame(m) = e {
                if m.is_data() {
                    frames[id] += 1;
                }
            }
        })
        .unwrap();
        slowest.store(frames.iter().copied().min().unwrap_or(0), Ordering::Relaxed);
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    publisher.join().unwrap();
    drop(server);
    frames.iter().sum::<u64>() as f64 / elapsed
}

/// Logins of `threads` × `each` clients, each until LoginAccepted: the time
/// per login (one thread) or the logins per second (several).
fn logins(mode: Mode, threads: usize, each: usize, tls: &TlsClient) -> (Duration, f64) {
    let server = Arc::new(server(mode));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (server, tls) = (Arc::clone(&server), tls.clone());
            thread::spawn(move || {
                for _ in 0..each {
                    let mut set = ClientSet::new().unwrap();
                    let id = set.add(client_config(&server, mode, &tls));
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while set.state(id) != Some(ClientState::LoggedIn) {
                        assert!(Instant::now() < deadline, "{mode:?}: login timed out");
                        set.poll(Some(Duration::from_millis(5)), |_, _| {}).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = started.elapsed();
    let n = (threads * each) as u32;
    (elapsed / n, f64::from(n) / elapsed.as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds = env("TICKWIRE_BENCH_SECONDS", 2.0);
    let rounds = env("TICKWIRE_BENCH_ROUNDS", 3.0) as usize;
    let tls = tls_client();
    println!("tls: {rounds} alternating rounds of {seconds} s, medians (mio server, ClientSet receivers)");
    for clients in [1usize, 16] {
        let (mut plain, mut auth, mut secure) = (Vec::new(), Vec::new(), Vec::new());
        let (mut r_auth, mut r_tls) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let p = throughput(Mode::Plain, clients, seconds, &tls);
            let a = throughput(Mode::Auth, clients, seconds, &tls);
            let t = throughput(Mode::Tls, clients, seconds, &tls);
            r_auth.push(a / p);
            r_tls.push(t / p);
            plain.push(p);
            auth.push(a);
            secure.push(t);
        }
        println!(
            "{clients:>2} client(s): plain {:.2} M frames/s, authenticated {:.2} ({:.2}x), TLS {:.2} ({:.2}x)",
            median(plain) / 1e6,
            median(auth) / 1e6,
            median(r_auth),
            median(secure) / 1e6,
            median(r_tls)
        );
    }
    for mode in [Mode::Plain, Mode::Auth, Mode::Tls] {
        let (one, _) = logins(mode, 1, 50, &tls);
        let (_, rate) = logins(mode, 8, 50, &tls);
        println!(
            "login {mode:?}: {:.0} us per connection one at a time, {rate:.0} logins/s from 8 threads",
            one.as_secs_f64() * 1e6
        );
    }
}
