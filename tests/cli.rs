//! The `tickwire` binary as a user runs it: every command, signals, bad
//! arguments, and `record` through a proxy that cuts connections mid-frame.
//! Every loop and wait is bounded; everything runs on 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[path = "common/cli.rs"]
mod cli_util;
use cli_util::{lines_of, signal, spawn, stderr_of, tickwire, wait_for, wait_line, Reap};

/// A file in a temporary directory, removed when dropped.
struct Temp(PathBuf);

impl Temp {
    fn to_str(&self) -> Option<&str> {
        self.0.to_str()
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp(name: &str) -> Temp {
    let dir = std::env::temp_dir();
    Temp(dir.join(format!("tickwire-cli-{}-{name}", std::process::id())))
}

#[test]
fn gen_then_dump_prints_every_frame() {
    let file = temp("clean.twr");
    let out = tickwire(&[
        "gen",
        "--count",
        "500",
        "--seed",
        "7",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tickwire(&["dump", file.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 500);
    assert!(lines
        .iter()
        .all(|l| l.starts_with("{\"type\":\"") && l.ends_with('}')));
    let quotes = lines
        .iter()
        .filter(|l| l.starts_with("{\"type\":\"quote\""))
        .count();
    let trades = lines
        .iter()
        .filter(|l| l.starts_with("{\"type\":\"trade\""))
        .count();
    let heartbeats = lines
        .iter()
        .filter(|l| l.starts_with("{\"type\":\"heartbeat\""))
        .count();
    assert_eq!(quotes + trades + heartbeats, 500);
    // The 60/30/10 mix, loosely.
    assert!((240..360).contains(&quotes), "{quotes} quotes");
    assert!((100..200).contains(&trades), "{trades} trades");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("500 frames"), "{stderr}");
    assert!(stderr.contains("discarded 0 bytes"), "{stderr}");
}

#[test]
fn gen_is_reproducible() {
    let a = temp("a.twr");
    let b = temp("b.twr");
    for f in [&a, &b] {
        let out = tickwire(&[
            "gen",
            "--count",
            "300",
            "--seed",
            "11",
            "--corrupt",
            "0.1",
            "-o",
            f.to_str().unwrap(),
        ]);
        assert!(out.status.success());
    }
    assert_eq!(std::fs::read(&a.0).unwrap(), std::fs::read(&b.0).unwrap());
}

#[test]
fn damaged_recording_is_reported_not_fatal() {
    let file = temp("damaged.twr");
    let out = tickwire(&[
        "gen",
        "--count",
        "2000",
        "--seed",
        "5",
        "--corrupt",
        "0.05",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let out = tickwire(&["dump", file.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("{\"type\":\"discarded\",\"bytes\":")));
    assert!(stdout.lines().any(|l| l.starts_with("{\"type\":\"gap\"")));
    let frames = stdout
        .lines()
        .filter(|l| l.contains("\"sequence\"") && !l.contains("\"gap\""))
        .count();
    assert!(frames > 1800 && frames < 2000, "{frames} frames");
}

#[test]
fn dump_reads_stdin_and_prints_the_spec_json() {
    // The Quote test vector of protocol section 6; its JSON line is section 7's example.
    let quote: Vec<u8> = "a5 01 10 2c 07 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 2a 00 00 00 44 d6 12 00 a8 d6 12 00 64 00 00 00 c8 00 00 00 c0 49 8b a2"
        .split(' ')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["dump", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"zz").unwrap();
    stdin.write_all(&quote).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"type\":\"discarded\",\"bytes\":2,\"reason\":\"no_sync\"}\n\
         {\"type\":\"quote\",\"sequence\":7,\"timestamp\":1700000000123456789,\"instrument_id\":42,\"bid_price\":1234500,\"ask_price\":1234600,\"bid_size\":100,\"ask_size\":200}\n"
    );
}

#[test]
fn io_errors_fail_with_a_message() {
    let out = tickwire(&["dump", "/nonexistent/recording.twr"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open /nonexistent/recording.twr"));
    let out = tickwire(&["gen", "--count", "1", "--corrupt", "2", "-o", "/dev/null"]);
    assert!(!out.status.success());
}

/// Starts `tickwire serve --listen 127.0.0.1:0 ARGS…`; returns it and the
/// address it printed.
fn serve_with(args: &[&str], stderr: Stdio) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut child);
    (child, addr)
}

/// The address in the `listening ADDR` line a `serve` or `relay` child
/// prints first on its stdout (taken).
fn listening_addr(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout piped"))
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("listening line, got {line:?}"))
        .to_string()
}

/// Starts `tickwire serve` on a free port; returns it and the address it printed.
fn spawn_serve(rate: &str, duration: &str, stderr: Stdio) -> (std::process::Child, String) {
    serve_with(&["--rate", rate, "--duration", duration], stderr)
}

#[test]
fn serve_publishes_a_feed_and_stops_on_time() {
    let (mut child, addr) = spawn_serve("20000", "1.5", Stdio::piped());
    let result = std::panic::catch_unwind(|| {
        let mut socket = TcpStream::connect(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut login = [0u8; 24];
        tickwire::encode(&tickwire::Payload::Login, 0, 0, &mut login).unwrap();
        socket.write_all(&login).unwrap();
        let mut received = Vec::new();
        socket.read_to_end(&mut received).unwrap(); // until the server ends the session
        let mut frames = 0;
        let mut end = false;
        for event in tickwire::parse::SliceParser::new(&received) {
            match event {
                tickwire::Event::Frame(tickwire::Message::EndOfSession(_)) => end = true,
                tickwire::Event::Frame(m) if m.is_data() => frames += 1,
                tickwire::Event::Discarded(d) => panic!("discarded {d:?}"),
                _ => {}
            }
        }
        assert!(frames > 5_000, "{frames} data frames");
        assert!(end, "EndOfSession at the end");
    });
    let status = child.wait().unwrap();
    let stderr = stderr_of(&mut child);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("msg/s published"), "{stderr}");
    assert!(stderr.contains("stopped after"), "{stderr}");
}

/// `serve` with one subscriber: the publishing thread writes its batches
/// to it (the summary counts them); with `--loop-writes`, none. Either way
/// the subscriber gets every frame from 1, in order.
#[test]
fn serve_loop_writes_moves_the_writes_to_the_event_loop() {
    for (flags, by_publisher) in [(&[][..], true), (&["--loop-writes"][..], false)] {
        let mut args = vec!["--rate", "20000", "--duration", "2"];
        args.extend_from_slice(flags);
        let (mut child, addr) = serve_with(&args, Stdio::piped());
        let file = temp(if by_publisher { "pw.bin" } else { "lw.bin" });
        record_count(&["--connect", &addr, "--from", "1"], &file, 10_000);
        let status = wait_for(&mut child, Duration::from_secs(10));
        let stderr = stderr_of(&mut child);
        assert!(status.success(), "{stderr}");
        let (sequences, _, summary) = dumped_sequences(&file);
        assert_eq!(sequences, (1..=10_000).collect::<Vec<u64>>(), "{summary}");
        let direct: u64 = stderr
            .split("; ")
            .find_map(|part| {
                part.trim_end()
                    .strip_suffix(" batches written by the publisher")
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no count in {stderr}"));
        assert_eq!(direct > 0, by_publisher, "{flags:?}: {direct} ({stderr})");
    }
}

#[test]
fn serve_limits_connections_that_do_not_log_in() {
    let (mut child, addr) = serve_with(
        &[
            "--rate",
            "1000",
            "--duration",
            "1.5",
            "--listen-backlog",
            "64",
            "--max-unauthenticated",
            "4",
            "--max-unauthenticated-per-peer",
            "2",
        ],
        Stdio::piped(),
    );
    // Three idle connections from one address: the first is closed.
    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        (&idle[0]).read(&mut buf).unwrap_or(0),
        0,
        "closed by the server"
    );
    let status = child.wait().unwrap();
    let stderr = stderr_of(&mut child);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains(": unauthenticated limit"), "{stderr}");
    assert!(stderr.contains("1 unauthenticated limit"), "{stderr}");
}

#[test]
fn record_then_dump_and_subscribe_give_up_on_a_dead_server() {
    let (mut server, addr) = spawn_serve("50000", "3", Stdio::null());
    let file = temp("recorded.twr");
    let out = tickwire(&[
        "record",
        "--connect",
        &addr,
        "--from",
        "1",
        "--count",
        "500",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tickwire(&["dump", file.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let data = stdout
        .lines()
        .filter(|l| l.contains("\"quote\"") || l.contains("\"trade\""))
        .count();
    assert_eq!(data, 500, "exactly the requested count");
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("{\"type\":\"login_accepted\"")));
    let out = tickwire(&[
        "subscribe",
        "--connect",
        &addr,
        "--json",
        "--duration",
        "0.5",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .any(|l| l.contains("\"sequence\"")));
    server.wait().unwrap();
    // The server is gone now: subscribe retries, then gives up with an error.
    let out = tickwire(&["subscribe", "--connect", &addr, "--max-retries", "2"]);
    assert!(!out.status.success());
    // The first attempt and its 2 retries (issue 23: it said 2).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gave up after 3 failed connection attempts in a row"),
        "{stderr}"
    );
}

#[test]
fn demo_summary_says_nobody_who_kept_up_lost_anything() {
    let json = demo_kept_up(&["--clients", "3", "--slow-client"], 2);
    assert!(json.starts_with("{\"rate\":20000,"), "{json}");
    assert!(json.contains("{\"client\":3,\"slow\":true,"));
    assert!(json.contains("\"lossless\":true,"), "{json}");
    // The two that keep up share a thread (8 to a thread); the slow one has its own.
    assert!(json.contains("\"client_threads\":2,"), "{json}");
    // Rates divide by the time the feed ran.
    let number = |key: &str| -> f64 {
        let at = json.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
        json[at..]
            .split([',', '}'])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (elapsed, published, per_s) = (
        number("elapsed_s"),
        number("published"),
        number("published_per_s"),
    );
    assert!((1.0..3.0).contains(&elapsed), "{json}");
    assert!(
        (per_s - published / elapsed).abs() < 0.01 * per_s + 1.0,
        "{json}"
    );
    assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
}

#[test]
fn demo_with_a_thread_per_client_loses_nothing_either() {
    let json = demo_kept_up(&["--clients", "5", "--client-threads", "5"], 5);
    assert!(json.contains("\"client_threads\":5,"), "{json}");
    assert!(json.contains("\"lossless\":true,"), "{json}");
}

/// Runs `demo --rate 20000 --duration 1 --json` with `args`; checks that
/// clients 1 to `kept_up` lost nothing; returns the summary.
fn demo_kept_up(args: &[&str], kept_up: usize) -> String {
    let mut all = vec!["demo", "--rate", "20000", "--duration", "1", "--json"];
    all.extend_from_slice(args);
    let out = tickwire(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8(out.stdout).unwrap();
    for client in 1..=kept_up {
        let at = json
            .find(&format!("{{\"client\":{client},\"slow\":false,"))
            .expect("client row");
        assert!(json[at..].contains("\"lost\":0,\"gaps\":0,"), "{json}");
    }
    json
}

#[test]
fn bench_prints_every_figure_with_its_baseline() {
    let out = tickwire(&[
        "bench",
        "--seconds",
        "0.3",
        "--rate",
        "20000",
        "--stream-mib",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8(out.stdout).unwrap();
    for case in [
        "checked decode",
        "encode",
        "server -> 1 client",
        "server -> 16 clients",
        "latency p99",
    ] {
        assert!(json.contains(case), "{case} missing: {json}");
    }
    assert_eq!(json.matches("\"ratio\":").count(), 7);
}

// ---------------------------------------------------------------------------
// Issue 10: record across cuts, signals, inputs, messages, publishing.

/// `serve` on a free port with no `--duration`: it runs until signalled.
fn spawn_serve_forever(rate: &str) -> (std::process::Child, String) {
    serve_with(&["--rate", rate], Stdio::piped())
}

/// The data-frame sequences `dump` finds in `file`, and its stderr summary.
fn dumped_sequences(file: &Temp) -> (Vec<u64>, String, String) {
    let out = tickwire(&["dump", file.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let sequences = stdout
        .lines()
        .filter(|l| l.starts_with("{\"type\":\"quote\"") || l.starts_with("{\"type\":\"trade\""))
        .map(|l| {
            let at = l.find("\"sequence\":").unwrap() + "\"sequence\":".len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap()
        })
        .collect();
    (sequences, stdout, String::from_utf8(out.stderr).unwrap())
}

/// A TCP proxy on 127.0.0.1 that closes its n-th connection after `cuts[n]`
/// bytes from the server (later connections are not cut). Every frame is an
/// even number of bytes long, so an odd count always cuts mid-frame.
struct CutProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl CutProxy {
    fn start(upstream: SocketAddr, cuts: Vec<usize>) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(Mutex::new(cuts));
        let thread = {
            let (stop, connections) = (Arc::clone(&stop), Arc::clone(&connections));
            thread::spawn(move || {
                let mut pumps = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let Ok((client, _)) = listener.accept() else {
                        thread::sleep(Duration::from_millis(2));
                        continue;
                    };
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let limit = {
                        let mut cuts = cuts.lock().unwrap();
                        (!cuts.is_empty()).then(|| cuts.remove(0))
                    };
                    pumps.push(pump(
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        None,
                        &stop,
                    ));
                    pumps.push(pump(server, client, limit, &stop));
                }
                for p in pumps {
                    let _ = p.join();
                }
            })
        };
        CutProxy {
            addr,
            stop,
            connections,
            thread: Some(thread),
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` until either closes, `stop`, or `limit` bytes
/// (then shuts both down).
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    limit: Option<usize>,
    stop: &Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    let stop = Arc::clone(stop);
    thread::spawn(move || {
        from.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut left = limit.unwrap_or(usize::MAX);
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) && left > 0 {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let n = n.min(left);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = from.shutdown(std::net::Shutdown::Both);
        let _ = to.shutdown(std::net::Shutdown::Both);
    })
}

#[test]
fn record_writes_every_data_frame_once_in_order_across_cuts_mid_frame() {
    let (server, addr) = spawn_serve_forever("20000");
    let mut server = Reap(server);
    let cuts = vec![1_001, 2_777, 333, 5_003, 4_095, 1_501];
    let proxy = CutProxy::start(addr.parse().unwrap(), cuts.clone());
    let file = temp("cuts.twr");
    let mut record = Reap(
        Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args([
                "record",
                "--connect",
                &proxy.addr.to_string(),
                "--from",
                "1",
            ])
            .args(["--count", "4000", "-o", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = wait_for(&mut record.0, Duration::from_secs(30));
    let mut stderr = String::new();
    record
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        proxy.connections.load(Ordering::SeqCst) > cuts.len(),
        "every cut made the recorder reconnect: {stderr}"
    );
    assert_eq!(
        stderr.matches("connection lost").count(),
        cuts.len(),
        "{stderr}"
    );
    assert!(
        stderr.contains("4000 data frames (sequences 1..=4000)"),
        "{stderr}"
    );
    let (sequences, stdout, summary) = dumped_sequences(&file);
    assert_eq!(sequences, (1..=4000).collect::<Vec<u64>>());
    assert!(summary.contains("discarded 0 bytes"), "{summary}");
    assert!(
        summary.contains("0 gaps (0 missing), 0 duplicates"),
        "{summary}"
    );
    // One LoginAccepted at the start (one session), nothing else but data.
    let other: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("{\"type\":\"quote\"") && !l.starts_with("{\"type\":\"trade\""))
        .collect();
    assert_eq!(other.len(), 2, "{other:?}");
    assert!(
        other[0].starts_with("{\"type\":\"new_session\","),
        "{other:?}"
    );
    assert!(
        other[1].starts_with("{\"type\":\"login_accepted\",\"sequence\":1,"),
        "{other:?}"
    );
    signal(&server.0, libc::SIGTERM);
    assert!(wait_for(&mut server.0, Duration::from_secs(10)).success());
}

#[test]
fn record_opens_its_output_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = tickwire(&[
        "record",
        "--connect",
        &addr,
        "-o",
        "/nonexistent-dir/rec.twr",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot create /nonexistent-dir/rec.twr"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the server saw a client"
    );
}

#[test]
fn serve_ends_the_session_and_summarizes_on_sigterm() {
    let (server, addr) = spawn_serve_forever("20000");
    let mut server = Reap(server);
    let mut socket = TcpStream::connect(&addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut login = [0u8; 24];
    tickwire::encode(&tickwire::Payload::Login, 0, 0, &mut login).unwrap();
    socket.write_all(&login).unwrap();
    let mut first = [0u8; 32];
    socket.read_exact(&mut first).unwrap(); // the LoginAccepted
    signal(&server.0, libc::SIGTERM);
    let mut received = Vec::new();
    socket.read_to_end(&mut received).unwrap();
    let end = tickwire::parse::SliceParser::new(&received).any(|e| {
        matches!(
            e,
            tickwire::Event::Frame(tickwire::Message::EndOfSession(_))
        )
    });
    assert!(end, "EndOfSession before the close");
    let status = wait_for(&mut server.0, Duration::from_secs(10));
    let mut stderr = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status:?} {stderr}");
    assert!(
        stderr.contains("stopped after") && stderr.contains("(signal)"),
        "{stderr}"
    );
}

#[test]
fn record_and_subscribe_flush_and_summarize_on_sigterm() {
    let (server, addr) = spawn_serve_forever("20000");
    let _server = Reap(server);
    let file = temp("sigterm.twr");
    let mut record = Reap(
        Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args([
                "record",
                "--connect",
                &addr,
                "--from",
                "1",
                "-o",
                file.to_str().unwrap(),
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut subscribe = spawn(
        &["subscribe", "--connect", &addr, "--json"],
        Stdio::piped(),
        Stdio::piped(),
    );
    let lines = lines_of(subscribe.0.stdout.take().unwrap());
    let mut seen = Vec::new();
    assert!(
        wait_line(&lines, &mut seen, Duration::from_secs(10), |l| l
            .contains("\"type\":\"quote\""))
        .is_some(),
        "{seen:?}"
    );
    thread::sleep(Duration::from_millis(300));
    signal(&record.0, libc::SIGTERM);
    signal(&subscribe.0, libc::SIGTERM);
    for (child, what) in [(&mut record.0, "record"), (&mut subscribe.0, "subscribe")] {
        let status = wait_for(child, Duration::from_secs(5));
        let stderr = stderr_of(child);
        assert!(status.success(), "{what}: {status:?} {stderr}");
        assert!(stderr.contains("stopped: signal"), "{what}: {stderr}");
    }
    // The recording ends on a whole frame and holds 1..=N.
    let (sequences, _, summary) = dumped_sequences(&file);
    assert!(sequences.len() > 100, "{} frames", sequences.len());
    assert_eq!(
        sequences,
        (1..=sequences.len() as u64).collect::<Vec<u64>>()
    );
    assert!(summary.contains("discarded 0 bytes"), "{summary}");
    // Every JSON line subscribe printed is whole.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
        seen.push(line);
    }
    assert!(
        seen.iter().all(|l| l.starts_with('{') && l.ends_with('}')),
        "{seen:?}"
    );
}

/// A port on 127.0.0.1 with nothing listening.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn ctrl_c_during_a_backoff_stops_within_200_ms() {
    let addr = closed_port();
    let mut child = spawn(
        &["-v", "subscribe", "--connect", &addr],
        Stdio::null(),
        Stdio::piped(),
    );
    let lines = lines_of(child.0.stderr.take().unwrap());
    let mut seen = Vec::new();
    // (-v: a line per retry.) Attempt 5 waits 0.8 to 1.6 s: long enough that only a prompt stop passes.
    let retry = wait_line(&lines, &mut seen, Duration::from_secs(10), |l| {
        l.contains("retry 5 in")
    });
    assert!(retry.is_some(), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.contains(&addr)),
        "errors name the address: {seen:?}"
    );
    let sent = Instant::now();
    signal(&child.0, libc::SIGINT);
    let status = wait_for(&mut child.0, Duration::from_secs(5));
    let took = sent.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_millis(200), "took {took:?}");
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) {
        seen.push(line);
    }
    assert!(
        seen.iter().any(|l| l.contains("stopped: signal")),
        "{seen:?}"
    );
}

#[test]
fn ctrl_c_during_a_connect_stops_within_200_ms() {
    use socket2::{Domain, Socket, Type};
    // A listener that never accepts, with a backlog of 0: once its queue is
    // full, the kernel drops further SYNs and a connect hangs.
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let fillers: Vec<_> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok())
        .collect();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(),
        "the backlog is full ({} fillers)",
        fillers.len()
    );
    let mut child = spawn(
        &["-v", "subscribe", "--connect", &addr.to_string()],
        Stdio::null(),
        Stdio::piped(),
    );
    let lines = lines_of(child.0.stderr.take().unwrap());
    let mut seen = Vec::new();
    assert!(
        wait_line(&lines, &mut seen, Duration::from_secs(5), |l| l
            .contains("-> connecting"))
        .is_some(),
        "{seen:?}"
    );
    thread::sleep(Duration::from_millis(500)); // well into the 5 s connect timeout
    let sent = Instant::now();
    signal(&child.0, libc::SIGINT);
    let status = wait_for(&mut child.0, Duration::from_secs(10));
    let took = sent.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_millis(200), "took {took:?}");
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) {
        seen.push(line);
    }
    assert!(
        !seen.iter().any(|l| l.contains("connection lost")),
        "stopped while connecting, not after a timeout: {seen:?}"
    );
}

#[test]
fn no_argument_panics_bad_values_are_rejected_by_name() {
    let cases: &[&[&str]] = &[
        &["demo", "--duration", "inf"],
        &["demo", "--duration", "NaN"],
        &["demo", "--duration", "1e19"],
        &["demo", "--duration", "-1"],
        &["serve", "--rate", "-5"],
        &["demo", "--clients", "0"],
        &["demo", "--client-threads", "0"],
        &["demo", "--client-threads", "257"],
        &["demo", "--rate", "0"],
        &["bench", "--seconds", "0"],
        &["bench", "--seconds", "nan"],
        &["bench", "--stream-mib", "0"],
        &["bench", "--stream-mib", "99999999999"],
        &["serve", "--duration", "inf"],
        &["serve", "--rate", "0"],
        &["serve", "--retain", "0"],
        &["serve", "--instruments", "0"],
        &["serve", "--listen-backlog", "0"],
        &["serve", "--listen-backlog", "4294967295"],
        &["serve", "--max-unauthenticated", "0"],
        &["serve", "--max-unauthenticated-per-peer", "-1"],
        &["subscribe", "--duration", "1e19"],
        &["subscribe", "--connect", "no-port"],
        &["record", "-o", "/dev/null", "--duration", "-0.5"],
        &["record", "-o", "/dev/null", "--count", "0"],
        &["gen", "-o", "/dev/null", "--corrupt", "NaN"],
        &["gen", "-o", "/dev/null", "--corrupt", "1.5"],
        &["gen", "-o", "/dev/null", "--instruments", "0"],
    ];
    for args in cases {
        let out = tickwire(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("invalid value"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn errors_name_the_address_and_host_names_work() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tickwire(&["serve", "--listen", &addr, "--duration", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let closed = closed_port();
    let out = tickwire(&["subscribe", "--connect", &closed, "--max-retries", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "tickwire subscribe: error: {closed}: gave up after 1 failed connection attempt in a row"
        )),
        "{stderr}"
    );
    // `localhost` where an address goes.
    let (server, addr) = spawn_serve("20000", "5", Stdio::null());
    let _server = Reap(server);
    let port = addr.rsplit(':').next().unwrap();
    let file = temp("localhost.twr");
    let out = tickwire(&[
        "record",
        "--connect",
        &format!("localhost:{port}"),
        "--from",
        "1",
        "--count",
        "10",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dumped_sequences(&file).0, (1..=10).collect::<Vec<u64>>());
}

#[test]
fn subscribe_json_prints_every_event_and_each_line_promptly() {
    // Nobody there: state changes, disconnects, retries and giving up are lines too.
    let closed = closed_port();
    let out = tickwire(&[
        "subscribe",
        "--connect",
        &closed,
        "--json",
        "--max-retries",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for kind in ["state", "disconnected", "retry", "gave_up"] {
        assert!(
            stdout.contains(&format!("{{\"type\":\"{kind}\"")),
            "{kind} missing: {stdout}"
        );
    }
    // A slow feed into a pipe: each line arrives while subscribe still runs.
    let (server, addr) = spawn_serve_forever("4");
    let _server = Reap(server);
    let mut child = spawn(
        &[
            "subscribe",
            "--connect",
            &addr,
            "--json",
            "--duration",
            "20",
        ],
        Stdio::piped(),
        Stdio::null(),
    );
    let lines = lines_of(child.0.stdout.take().unwrap());
    let mut seen = Vec::new();
    let logged_in = wait_line(&lines, &mut seen, Duration::from_secs(5), |l| {
        l.starts_with("{\"type\":\"logged_in\"")
    });
    assert!(logged_in.is_some(), "{seen:?}");
    let data = wait_line(&lines, &mut seen, Duration::from_secs(5), |l| {
        l.starts_with("{\"type\":\"quote\"") || l.starts_with("{\"type\":\"trade\"")
    });
    assert!(data.is_some(), "{seen:?}");
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
}

#[test]
fn dump_pretty_prints_decimal_prices_and_rfc3339_times() {
    let vectors = [
        "a5 01 10 2c 07 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 2a 00 00 00 44 d6 12 00 a8 d6 12 00 64 00 00 00 c8 00 00 00 c0 49 8b a2",
        "a5 01 11 28 0a 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 07 00 00 00 ff ff ff ff 01 00 00 00 02 81 00 00 5c 18 0d 76",
    ];
    let file = temp("pretty.twr");
    let bytes: Vec<u8> = vectors
        .iter()
        .flat_map(|v| v.split(' ').map(|b| u8::from_str_radix(b, 16).unwrap()))
        .collect();
    std::fs::write(&file.0, bytes).unwrap();
    let out = tickwire(&["dump", "--pretty", file.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "2023-11-14T22:13:20.123456789Z #7 quote instrument 42 bid 123.4500 x 100 ask 123.4600 x 200\n\
         gap: sequences 8..=9 missing (2 frames)\n\
         2023-11-14T22:13:20.123456789Z #10 trade instrument 7 sell 1 @ -0.0001 flags 0x81\n"
    );
}

#[test]
fn record_reports_a_range_the_server_no_longer_has() {
    let (child, addr) = serve_with(
        &["--rate", "20000", "--retain", "100", "--duration", "20"],
        Stdio::null(),
    );
    let mut server = Reap(child);
    thread::sleep(Duration::from_millis(500)); // ~10,000 published, 100 kept
    let file = temp("gap.twr");
    let out = tickwire(&[
        "record",
        "--connect",
        &addr,
        "--from",
        "1",
        "--count",
        "50",
        "-o",
        file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The range the server no longer had, exactly: from 1, in contiguous
    // gaps (a replay this short of retention, 100 frames at 20,000 msg/s,
    // can see the retention trimmed again under it: a second, adjacent gap).
    let gaps: Vec<(u64, u64)> = stderr
        .lines()
        .filter_map(|l| l.split("gap: sequences ").nth(1))
        .map(|g| {
            let range = g.split(' ').next().unwrap();
            let (a, b) = range.split_once("..=").unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert_eq!(
        gaps.first().map(|g| g.0),
        Some(1),
        "no gap from 1: {stderr}"
    );
    assert!(
        gaps.windows(2).all(|w| w[1].0 == w[0].1 + 1),
        "contiguous: {gaps:?}"
    );
    let missing = gaps.last().unwrap().1;
    assert!(missing > 1000, "{gaps:?}");
    assert!(
        stderr.contains(&format!("{} gaps ({missing} missing)", gaps.len())),
        "{stderr}"
    );
    let (sequences, _, _) = dumped_sequences(&file);
    assert_eq!(sequences.len(), 50);
    assert_eq!(
        sequences[0],
        missing + 1,
        "the file starts where the server could"
    );
    signal(&server.0, libc::SIGTERM);
    assert!(wait_for(&mut server.0, Duration::from_secs(10)).success());
}

/// Issue 9's report, as a user ran it: `serve --rate 50000`, a few seconds
/// later `subscribe --from 1`: the replay turns into live data with no gap
/// (the replay fills the kernel queue; a client catching up is not slow).
#[test]
fn subscribe_from_1_into_a_running_feed_misses_nothing() {
    let (child, addr) = spawn_serve_forever("50000");
    let _server = Reap(child);
    thread::sleep(Duration::from_secs(2));
    let out = tickwire(&[
        "subscribe",
        "--connect",
        &addr,
        "--from",
        "1",
        "--duration",
        "3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" 0 gaps (0 missing), 0 duplicates"),
        "{summary}"
    );
    // About 5 s of the feed: 2 s replayed, 3 s live.
    let frames: u64 = summary
        .strip_prefix("tickwire subscribe: ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(frames >= 200_000, "{summary}");
}

/// The server's log lines reach stderr through the `log` facade: a login is
/// logged at info by default, and `-q` keeps only warnings and errors.
#[test]
fn serve_logs_logins_unless_quiet() {
    for (quiet, expect) in [(false, true), (true, false)] {
        let mut args = vec!["--rate", "1000", "--duration", "1"];
        if quiet {
            args.push("-q");
        }
        let (child, addr) = serve_with(&args, Stdio::piped());
        let mut child = Reap(child);
        let mut socket = TcpStream::connect(&addr).unwrap();
        let mut login = [0u8; 24];
        tickwire::encode(&tickwire::Payload::Login, 0, 0, &mut login).unwrap();
        socket.write_all(&login).unwrap();
        let stderr = stderr_of(&mut child.0);
        assert!(child.0.wait().unwrap().success());
        assert_eq!(
            stderr.contains("tickwire serve: login 127.0.0.1:"),
            expect,
            "quiet {quiet}: {stderr}"
        );
    }
}

// ---- Datagrams, relays and fail-over (issue 11) ----

/// A free UDP port on 127.0.0.1 (bound, then released for the test to use).
fn free_udp() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().to_string()
}

/// `tickwire relay` on a free port; returns it and the address it printed.
fn spawn_relay(connect: &str) -> (Reap, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args([
            "relay",
            "--connect",
            connect,
            "--listen",
            "127.0.0.1:0",
            "-q",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut child);
    (Reap(child), addr)
}

/// Runs `tickwire record ... -o FILE --count N`, killed (and the test
/// failed) if it takes more than 60 s; returns its stderr.
fn record_count(args: &[&str], file: &Temp, count: u64) -> String {
    let child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["record", "-o", file.to_str().unwrap()])
        .args(args)
        .args(["--count", &count.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let stderr = child.0.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let status = wait_for(&mut child.0, Duration::from_secs(60));
    let stderr = reader.join().unwrap();
    assert!(status.success(), "{stderr}");
    stderr
}

/// The data frames of a recording: its bytes after the first frame (the
/// LoginAccepted the recorder writes, stamped with its own clock).
fn data_bytes(file: &Temp) -> Vec<u8> {
    let bytes = std::fs::read(&file.0).unwrap();
    assert_eq!(bytes[2], 0x03, "a recording starts with a LoginAccepted");
    bytes[32..].to_vec()
}

/// `serve --datagrams-by-loop`: the event loop sends the datagrams; a
/// recording over them holds every frame from 1, in order.
#[test]
fn serve_datagrams_by_loop_then_record_gets_every_frame() {
    let line = free_udp();
    let (child, addr) = serve_with(
        &[
            "--rate",
            "20000",
            "--udp",
            &line,
            "--datagrams-by-loop",
            "-q",
        ],
        Stdio::null(),
    );
    let _server = Reap(child);
    thread::sleep(Duration::from_millis(300));
    let over_udp = temp("udp-loop.bin");
    let stderr = record_count(
        &["--udp", &line, "--retransmit", &addr, "--from", "1"],
        &over_udp,
        20_000,
    );
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(summary.contains(" 0 gaps (0 missing)"), "{summary}");
    let (sequences, _, dump_summary) = dumped_sequences(&over_udp);
    assert_eq!(
        sequences,
        (1..=20_000).collect::<Vec<u64>>(),
        "{dump_summary}"
    );
}

#[test]
fn serve_udp_then_record_and_subscribe_udp_with_retransmit_get_every_frame() {
    let line = free_udp();
    let (child, addr) = serve_with(&["--rate", "20000", "--udp", &line, "-q"], Stdio::null());
    let _server = Reap(child);
    // A second into the feed: the frames before the first datagram the
    // recorder sees come by retransmission (--from 1), the rest by datagram.
    thread::sleep(Duration::from_secs(1));
    let over_udp = temp("udp.bin");
    let stderr = record_count(
        &["--udp", &line, "--retransmit", &addr, "--from", "1"],
        &over_udp,
        40_000,
    );
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(
        summary.contains("40000 data frames over datagrams"),
        "{summary}"
    );
    assert!(summary.contains(" 0 gaps (0 missing)"), "{summary}");
    let recovered: u64 = summary
        .split(" recovered by")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(recovered >= 10_000, "a second of feed recovered: {summary}");
    let (sequences, _, dump_summary) = dumped_sequences(&over_udp);
    assert_eq!(
        sequences,
        (1..=40_000).collect::<Vec<u64>>(),
        "{dump_summary}"
    );
    // Byte for byte what a TCP recording of the same server holds.
    let over_tcp = temp("tcp.bin");
    record_count(&["--connect", &addr, "--from", "1"], &over_tcp, 40_000);
    assert!(
        data_bytes(&over_udp) == data_bytes(&over_tcp),
        "UDP and TCP recordings differ"
    );
    // subscribe --udp --json: every frame once, in order, from 1.
    let out = tickwire(&[
        "subscribe",
        "--udp",
        &line,
        "--retransmit",
        &addr,
        "--from",
        "1",
        "--json",
        "--duration",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut next = 1u64;
    for l in stdout.lines() {
        assert!(!l.contains("\"type\":\"gap\""), "{l}");
        if l.starts_with("{\"type\":\"quote\"") || l.starts_with("{\"type\":\"trade\"") {
            let at = l.find("\"sequence\":").unwrap() + "\"sequence\":".len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            assert_eq!(digits.parse::<u64>().unwrap(), next, "{l}");
            next += 1;
        }
    }
    assert!(next > 60_000, "about 3 s of the feed, got {}", next - 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(" 0 gaps (0 missing)"), "{stderr}");
}

#[test]
fn relay_chain_serves_the_origins_bytes() {
    let (child, origin) = serve_with(&["--rate", "20000", "-q"], Stdio::null());
    let _server = Reap(child);
    let (_first, first) = spawn_relay(&origin);
    let (_second, second) = spawn_relay(&first);
    thread::sleep(Duration::from_millis(500));
    let at_origin = temp("origin.bin");
    let at_end = temp("chain.bin");
    record_count(&["--connect", &origin, "--from", "1"], &at_origin, 30_000);
    let stderr = record_count(&["--connect", &second, "--from", "1"], &at_end, 30_000);
    assert!(stderr.contains(" 0 gaps (0 missing)"), "{stderr}");
    let (sequences, _, _) = dumped_sequences(&at_end);
    assert_eq!(sequences, (1..=30_000).collect::<Vec<u64>>());
    assert!(
        data_bytes(&at_origin) == data_bytes(&at_end),
        "the relay chain changed bytes"
    );
    // Bad arguments are named.
    let out = tickwire(&["relay", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--connect"));
}

#[test]
fn subscribe_and_record_connect_a_b_fail_over_when_a_is_killed() {
    let (child, origin) = serve_with(&["--rate", "20000", "-q"], Stdio::null());
    let _server = Reap(child);
    let (mut relay, a) = spawn_relay(&origin);
    let list = format!("{a},{origin}");
    let file = temp("failover.bin");
    let recorder = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args([
            "record",
            "--connect",
            &list,
            "--from",
            "1",
            "--count",
            "80000",
        ])
        .args(["-o", file.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut recorder = Reap(recorder);
    let recorder_err = lines_of(recorder.0.stderr.take().unwrap());
    let subscriber = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args([
            "subscribe",
            "--connect",
            &list,
            "--from",
            "1",
            "--duration",
            "4",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut subscriber = Reap(subscriber);
    let subscriber_err = lines_of(subscriber.0.stderr.take().unwrap());
    thread::sleep(Duration::from_millis(1500));
    relay.0.kill().unwrap(); // SIGKILL mid-stream: no EndOfSession
    let _ = relay.0.wait();
    let status = wait_for(&mut recorder.0, Duration::from_secs(60));
    let stderr: String = recorder_err.iter().collect::<Vec<_>>().join("\n");
    assert!(status.success(), "{stderr}");
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(summary.contains(" 0 gaps (0 missing)"), "{summary}");
    assert!(summary.contains(" 1 failovers"), "{summary}");
    let (sequences, _, _) = dumped_sequences(&file);
    assert_eq!(sequences, (1..=80_000).collect::<Vec<u64>>());
    let status = wait_for(&mut subscriber.0, Duration::from_secs(30));
    let stderr: String = subscriber_err.iter().collect::<Vec<_>>().join("\n");
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("failing over from"), "{stderr}");
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" 0 gaps (0 missing), 0 duplicates") && summary.contains(" 1 failovers"),
        "{summary}"
    );
}

#[test]
fn relay_of_a_udp_feed_serves_the_origins_bytes_over_tcp() {
    let line = free_udp();
    let (child, origin) = serve_with(&["--rate", "20000", "--udp", &line, "-q"], Stdio::null());
    let _server = Reap(child);
    let (_relay, relay) = {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(["relay", "--connect", &origin, "--upstream-udp", &line])
            .args(["--listen", "127.0.0.1:0", "-q"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = listening_addr(&mut child);
        (Reap(child), addr)
    };
    // From the relay: it started at its first datagram, so a login from 1
    // starts there (a range before it, if any, is reported as one gap).
    let at_relay = temp("udp-relay.bin");
    let stderr = record_count(&["--connect", &relay, "--from", "1"], &at_relay, 20_000);
    assert!(
        stderr.contains(" 1 gaps") || stderr.contains(" 0 gaps"),
        "{stderr}"
    );
    let (sequences, _, _) = dumped_sequences(&at_relay);
    let first = sequences[0];
    assert_eq!(sequences, (first..first + 20_000).collect::<Vec<u64>>());
    // The same sequences from the origin, byte for byte.
    let last = first + 19_999;
    let at_origin = temp("udp-origin.bin");
    record_count(&["--connect", &origin, "--from", "1"], &at_origin, last);
    let origin_bytes = data_bytes(&at_origin);
    let relay_bytes = data_bytes(&at_relay);
    assert!(
        origin_bytes.ends_with(&relay_bytes),
        "the relay changed bytes"
    );
}

#[path = "netns/mod.rs"]
mod netns;

/// `serve --multicast A --multicast-b B --multicast-if` on this side of a
/// veth pair, `record --multicast A --multicast-b B --multicast-if
/// --retransmit` inside a network namespace where nftables drops 10% of the
/// UDP datagrams at random: the recording holds 1..=40,000 once each, in
/// order (root; skipped with the reason otherwise, a failure under
/// `TICKWIRE_REQUIRE_PRIVILEGED=1`).
#[test]
fn serve_multicast_a_b_into_a_namespace_record_gets_every_frame() {
    const TEST: &str = "serve_multicast_a_b_into_a_namespace_record_gets_every_frame";
    let ns = match netns::Netns::create("cm", 197) {
        Ok(ns) => ns,
        Err(why) => return netns::skip_unprivileged(TEST, &why),
    };
    let port = 21_000 + u16::from(ns.n);
    let rule = format!("udp dport {port} numgen random mod 100 < 10 drop");
    let nft = ns
        .nft(&["add", "table", "inet", "tickwire_cm"])
        .and_then(|()| {
            ns.nft(&[
                "add",
                "chain",
                "inet",
                "tickwire_cm",
                "input",
                "{ type filter hook input priority 0; policy accept; }",
            ])
        })
        .and_then(|()| {
            let mut args = vec!["add", "rule", "inet", "tickwire_cm", "input"];
            args.extend(rule.split(' '));
            ns.nft(&args)
        });
    if let Err(why) = nft {
        return netns::skip_unprivileged(TEST, &why);
    }
    let a = format!("239.197.{}.1:{port}", ns.n);
    let b = format!("239.197.{}.2:{port}", ns.n);
    let host = ns.host_ip().to_string();
    let inside = ns.inside_ip().to_string();
    let mut server = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args([
            "serve",
            "--listen",
            &format!("{host}:0"),
            "--rate",
            "20000",
            "-q",
        ])
        .args([
            "--multicast",
            &a,
            "--multicast-b",
            &b,
            "--multicast-if",
            &host,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut server);
    let _server = Reap(server);
    let file = temp("multicast.bin");
    let recorder = ns
        .command(std::path::Path::new(env!("CARGO_BIN_EXE_tickwire")))
        .args(["record", "--multicast", &a, "--multicast-b", &b])
        .args([
            "--multicast-if",
            &inside,
            "--retransmit",
            &addr,
            "--from",
            "1",
        ])
        .args(["--count", "40000", "-o", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut recorder = netns::ChildGuard(recorder);
    let err = lines_of(recorder.0.stderr.take().unwrap());
    let status = wait_for(&mut recorder.0, Duration::from_secs(60));
    let stderr: String = err.iter().collect::<Vec<_>>().join("\n");
    assert!(status.success(), "{stderr}");
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(summary.contains(" 0 gaps (0 missing)"), "{summary}");
    // Both lines brought datagrams, and what both lost was recovered.
    assert!(
        !summary.contains("(0 on line A") && !summary.contains(" 0 on line B)"),
        "{summary}"
    );
    assert!(!summary.contains(" 0 recovered"), "{summary}");
    let (sequences, _, _) = dumped_sequences(&file);
    assert_eq!(sequences, (1..=40_000).collect::<Vec<u64>>());
    eprintln!("{summary}");
}

#[test]
fn subscribe_udp_reports_a_silent_line_and_a_dead_feed() {
    // Nothing is ever sent to this port: after three heartbeat intervals
    // (3 s) line A is silent, and with one line the feed is dead.
    let line = free_udp();
    let started = Instant::now();
    let out = tickwire(&["subscribe", "--udp", &line, "--json", "--duration", "3.6"]);
    assert!(out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            r#"{"type":"line_silent","line":"a"}"#,
            r#"{"type":"feed_dead"}"#
        ]
    );
}

// ---------------------------------------------------------------------------
// Issue 23: what a new user hit.

/// Waits for `child` to stop after SIGINT (at most 10 s); its stderr.
fn interrupt(child: &mut Reap) -> (std::process::ExitStatus, String) {
    signal(&child.0, libc::SIGINT);
    let status = wait_for(&mut child.0, Duration::from_secs(10));
    (status, stderr_of(&mut child.0))
}

/// Item 1: `record -o` refuses an existing file unless --force or
/// --append, and touches no file before the first data frame (a server
/// that cannot be reached, Ctrl-C), creating none either.
#[test]
fn record_never_destroys_an_existing_file_or_creates_an_empty_one() {
    let keep = temp("keep.twr");
    let out = tickwire(&["gen", "--count", "100", "-o", keep.to_str().unwrap()]);
    assert!(out.status.success());
    let before = std::fs::read(&keep.0).unwrap();
    let closed = closed_port();
    let dir = std::env::temp_dir();
    let listing = || -> Vec<String> {
        let prefix = format!("tickwire-cli-{}-", std::process::id());
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(&prefix))
            .collect();
        names.sort();
        names
    };
    // Refused: exists.
    let out = tickwire(&[
        "record",
        "--connect",
        &closed,
        "--max-retries",
        "0",
        "-o",
        keep.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("exists") && stderr.contains("--append") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("cannot connect"),
        "refused before connecting: {stderr}"
    );
    assert_eq!(std::fs::read(&keep.0).unwrap(), before);
    // --force and --append, but the server cannot be reached: untouched.
    for mode in ["--force", "--append"] {
        let out = tickwire(&[
            "record",
            "--connect",
            &closed,
            "--max-retries",
            "0",
            mode,
            "-o",
            keep.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{mode}: {stderr}");
        assert_eq!(std::fs::read(&keep.0).unwrap(), before, "{mode}: {stderr}");
    }
    // A new file, the server cannot be reached: no file (and no probe left).
    let before_listing = listing();
    let fresh = temp("fresh.twr");
    let out = tickwire(&[
        "record",
        "--connect",
        &closed,
        "--max-retries",
        "0",
        "-o",
        fresh.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!fresh.0.exists(), "an empty file was created");
    assert_eq!(listing(), before_listing, "files left behind");
    // Ctrl-C before the first frame, with --force: untouched, exit 0.
    let mut child = Reap(
        Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(["record", "--connect", &closed, "--force", "-o"])
            .arg(&keep.0)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    thread::sleep(Duration::from_millis(400));
    let (status, stderr) = interrupt(&mut child);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("left as it was"), "{stderr}");
    assert_eq!(std::fs::read(&keep.0).unwrap(), before);
    // And the same for a new file: none created.
    let mut child = Reap(
        Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(["record", "--connect", &closed, "-o"])
            .arg(&fresh.0)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    thread::sleep(Duration::from_millis(400));
    let (status, stderr) = interrupt(&mut child);
    assert!(status.success(), "{stderr}");
    assert!(!fresh.0.exists(), "{stderr}");
    assert!(stderr.contains("not created"), "{stderr}");
}

/// Item 1: `--append` continues a recording of the same session from its
/// last sequence + 1 (a frame cut short at its end is replaced); another
/// session is an error that leaves the file as it was.
#[test]
fn record_append_continues_the_same_session_and_refuses_another() {
    let (server, addr) = serve_with(&["--rate", "20000", "--duration", "30"], Stdio::null());
    let _server = Reap(server);
    let file = temp("append.twr");
    record_count(&["--connect", &addr, "--from", "1"], &file, 100);
    let out = tickwire(&[
        "record",
        "--connect",
        &addr,
        "--append",
        "--count",
        "100",
        "-o",
        file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("logging in from sequence 101"), "{stderr}");
    let (sequences, stdout, summary) = dumped_sequences(&file);
    assert_eq!(sequences, (1..=200).collect::<Vec<u64>>(), "{summary}");
    assert_eq!(
        stdout.matches("\"login_accepted\"").count(),
        1,
        "one session"
    );
    assert!(summary.contains("discarded 0 bytes"), "{summary}");
    // A recorder killed mid-frame: the partial frame is replaced.
    let len = std::fs::metadata(&file.0).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file.0)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let out = tickwire(&[
        "record",
        "--connect",
        &addr,
        "--append",
        "--count",
        "50",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (sequences, _, summary) = dumped_sequences(&file);
    assert_eq!(sequences, (1..=249).collect::<Vec<u64>>(), "{summary}");
    assert!(summary.contains("discarded 0 bytes"), "{summary}");
    // Another server: another session. Refused, the file as it was.
    let (other, other_addr) = serve_with(&["--rate", "1000", "--duration", "30"], Stdio::null());
    let _other = Reap(other);
    let before = std::fs::read(&file.0).unwrap();
    let out = tickwire(&[
        "record",
        "--connect",
        &other_addr,
        "--append",
        "--count",
        "10",
        "-o",
        file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not appending another session"), "{stderr}");
    assert_eq!(std::fs::read(&file.0).unwrap(), before);
}

/// Item 4: -q, -qq, -qqq silence `subscribe`, `record` and `serve` (their
/// own lines, not only the library's); stdout is unchanged.
#[test]
fn quiet_flags_silence_subscribe_record_and_serve() {
    let closed = closed_port();
    let file = temp("quiet.twr");
    for command in [
        &["subscribe", "--connect", &closed, "--max-retries", "0"][..],
        &[
            "record",
            "--connect",
            &closed,
            "--max-retries",
            "0",
            "-o",
            file.to_str().unwrap(),
        ][..],
    ] {
        let loud = tickwire(command);
        assert!(!loud.stderr.is_empty());
        let mut args = vec!["-qqq"];
        args.extend_from_slice(command);
        let out = tickwire(&args);
        assert_eq!(out.status.code(), Some(1), "{command:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "-qqq {command:?}");
        // -q: the warning and the error, not the summary.
        args[0] = "-q";
        let out = tickwire(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("warning: ") && stderr.contains("error: "),
            "{stderr}"
        );
        assert!(
            !stderr.contains("connection attempts:"),
            "-q {command:?}: {stderr}"
        );
        // -qq: the error only.
        args[0] = "-qq";
        let out = tickwire(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "-qq {command:?}: {stderr}");
        assert!(stderr.contains("error: "), "{stderr}");
    }
    // serve, with a subscriber and a recorder: not a line from any of them.
    let (mut server, addr) = serve_with(
        &["-qqq", "--rate", "20000", "--duration", "2.5"],
        Stdio::piped(),
    );
    let out = tickwire(&[
        "-qqq",
        "subscribe",
        "--connect",
        &addr,
        "--json",
        "--duration",
        "1.5",
    ]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"type\":\"logged_in\""));
    let out = tickwire(&[
        "-qqq",
        "record",
        "--connect",
        &addr,
        "--from",
        "1",
        "--count",
        "10",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let status = wait_for(&mut server, Duration::from_secs(10));
    assert!(status.success());
    assert_eq!(stderr_of(&mut server), "", "serve -qqq");
}

/// Item 7: the counts are true (one attempt with --max-retries 0, never
/// connected) and a server that is not there gives one line, not lines
/// per retry, while the client keeps retrying.
#[test]
fn subscribe_counts_attempts_truly_and_says_one_line_per_change() {
    let closed = closed_port();
    let out = tickwire(&["subscribe", "--connect", &closed, "--max-retries", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("gave up after 1 failed connection attempt in a row"),
        "{stderr}"
    );
    assert!(
        stderr.contains("connection attempts: 1 (0 connected)"),
        "{stderr}"
    );
    assert!(!stderr.contains("reconnects"), "{stderr}");
    // Retrying by default: ~1.6 s is 4 or 5 attempts, and one line.
    let mut child = spawn(
        &["subscribe", "--connect", &closed],
        Stdio::null(),
        Stdio::piped(),
    );
    thread::sleep(Duration::from_millis(1600));
    let (status, stderr) = interrupt(&mut child);
    assert!(status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "one line, then the summary: {stderr}");
    assert!(
        lines[0].contains(&format!("{closed}: cannot connect: connect failed"))
            && lines[0].contains("retrying"),
        "{stderr}"
    );
    let attempts: u64 = lines[1]
        .split("connection attempts: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count: {stderr}"));
    assert!((3..=6).contains(&attempts), "{stderr}");
}

/// Item 3: a size that allocates is bounded, and the error says the limit
/// (it was an abort: `memory allocation of 34359738360 bytes failed`).
#[test]
fn sizes_that_allocate_are_bounded_and_the_limit_is_named() {
    let file = temp("instruments.twr");
    for command in [
        &["gen", "--count", "10", "-o", file.to_str().unwrap()][..],
        &["serve", "--listen", "127.0.0.1:0", "--duration", "1"][..],
    ] {
        for n in ["4294967295", "1048577"] {
            let mut args = command.to_vec();
            args.extend_from_slice(&["--instruments", n]);
            let started = Instant::now();
            let out = tickwire(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains("1..=1048576"), "{args:?}: {stderr}");
            assert!(started.elapsed() < Duration::from_secs(5), "{args:?}");
        }
    }
    // The limit itself works, and promptly.
    let started = Instant::now();
    let out = tickwire(&[
        "gen",
        "--count",
        "10",
        "--instruments",
        "1048576",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A directory under the temporary directory, removed (with what is in
/// it) when dropped; not created.
struct TempTree(PathBuf);

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_tree(name: &str) -> TempTree {
    let dir = std::env::temp_dir().join(format!("tickwire-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TempTree(dir)
}

/// 100 KB of seeded noise: no tickwire frame in it.
fn noise(file: &Temp) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect();
    std::fs::write(&file.0, bytes).unwrap();
}

/// Item 5: bytes with not one frame in them are not a recording: `dump`
/// and `export` say so and exit 1 (an empty file is an empty recording).
#[test]
fn dump_and_export_of_noise_say_it_is_not_a_recording_and_fail() {
    let junk = temp("noise.bin");
    noise(&junk);
    let out = tickwire(&["dump", junk.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not look like a tickwire recording"),
        "{stderr}"
    );
    assert!(stderr.contains("0 frames"), "the summary still: {stderr}");
    let tree = temp_tree("noise-out");
    let out = tickwire(&[
        "export",
        junk.to_str().unwrap(),
        "--format",
        "csv",
        "-o",
        tree.0.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not look like a tickwire recording"),
        "{stderr}"
    );
    assert!(!tree.0.exists(), "nothing exported");
    // Mostly noise, a few frames: a warning, exit 0.
    let some = temp("some.twr");
    assert!(
        tickwire(&["gen", "--count", "10", "-o", some.to_str().unwrap()])
            .status
            .success()
    );
    let mut bytes = std::fs::read(&junk.0).unwrap();
    bytes.extend(std::fs::read(&some.0).unwrap());
    std::fs::write(&some.0, bytes).unwrap();
    let out = tickwire(&["dump", some.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: ") && stderr.contains("is mostly not tickwire frames"),
        "{stderr}"
    );
    // An empty file: an empty recording.
    let empty = temp("empty.twr");
    std::fs::write(&empty.0, b"").unwrap();
    assert!(tickwire(&["dump", empty.to_str().unwrap()])
        .status
        .success());
}

/// Item 6: a failed export leaves no header-only tables, no directory it
/// created, and the tables of an earlier export as they were.
#[test]
fn a_failed_export_leaves_no_files() {
    let tree = temp_tree("export-fail");
    std::fs::create_dir_all(tree.0.join("adir")).unwrap();
    let out_dir = tree.0.join("out3");
    let out = tickwire(&[
        "export",
        tree.0.join("adir").to_str().unwrap(),
        "--format",
        "csv",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!out_dir.exists(), "{stderr}");
    // An earlier export's tables survive a failed one, and nothing is added.
    let file = tree.0.join("ok.twr");
    assert!(
        tickwire(&["gen", "--count", "50", "-o", file.to_str().unwrap()])
            .status
            .success()
    );
    let out = tickwire(&[
        "export",
        file.to_str().unwrap(),
        "--format",
        "csv",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = || {
        let mut names: Vec<(String, Vec<u8>)> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        names.sort();
        names
    };
    let before = listing();
    assert_eq!(
        before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["control.csv", "quotes.csv", "trades.csv"]
    );
    let out = tickwire(&[
        "export",
        tree.0.join("adir").to_str().unwrap(),
        "--format",
        "csv",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(listing(), before);
}

/// Item 10: `demo` ends its table with the median and the worst of the
/// clients that kept up (text and JSON).
#[test]
fn demo_prints_median_and_worst_rows() {
    let out = tickwire(&[
        "demo",
        "--rate",
        "20000",
        "--duration",
        "1",
        "--clients",
        "3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in ["median ", "worst "] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label}row: {stdout}"));
        assert_eq!(row.split_whitespace().count(), 9, "{row}");
    }
    let json = demo_kept_up(&["--clients", "3"], 3);
    assert!(
        json.contains("\"kept_up\":{\"clients\":3,\"median\":{"),
        "{json}"
    );
    assert!(json.contains("\"worst\":{\"received\":"), "{json}");
}

/// Item 10: the session id `serve` prints on stderr carries, next to its
/// hex form, the decimal the JSON lines carry.
#[test]
fn the_session_id_on_stderr_is_the_one_json_prints() {
    let (child, addr) = serve_with(&["--rate", "1000", "--duration", "20"], Stdio::piped());
    let mut server = Reap(child);
    let lines = lines_of(server.0.stderr.take().unwrap());
    let mut seen = Vec::new();
    let line = wait_line(&lines, &mut seen, Duration::from_secs(5), |l| {
        l.contains("session 0x")
    })
    .unwrap_or_else(|| panic!("{seen:?}"));
    let decimal: String = line
        .split(" (")
        .nth(1)
        .unwrap_or_default()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let hex = line.split("session 0x").nth(1).unwrap()[..16].to_string();
    assert_eq!(
        u64::from_str_radix(&hex, 16).unwrap().to_string(),
        decimal,
        "{line}"
    );
    let out = tickwire(&[
        "subscribe",
        "--connect",
        &addr,
        "--json",
        "--duration",
        "0.5",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("\"type\":\"logged_in\",\"session_id\":{decimal},")),
        "{decimal}: {stdout}"
    );
    signal(&server.0, libc::SIGTERM);
    assert!(wait_for(&mut server.0, Duration::from_secs(10)).success());
}
