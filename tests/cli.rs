//! The `tickwire` binary: `gen` and `dump`, as a user runs them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn tickwire(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(args)
        .output()
        .expect("run tickwire")
}

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

/// Starts `tickwire serve` on a free port; returns it and the address it printed.
fn spawn_serve(rate: &str, duration: &str, stderr: Stdio) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rate",
            rate,
            "--duration",
            duration,
        ])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening line")
        .to_string();
    (child, addr)
}

#[test]
fn serve_publishes_a_feed_and_stops_on_time() {
    use std::io::Read;
    let (mut child, addr) = spawn_serve("20000", "1.5", Stdio::piped());
    let result = std::panic::catch_unwind(|| {
        let mut socket = std::net::TcpStream::connect(&addr).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
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
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("msg/s published"), "{stderr}");
    assert!(stderr.contains("stopped after"), "{stderr}");
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("gave up after 2 attempts"));
}

#[test]
fn demo_summary_says_nobody_who_kept_up_lost_anything() {
    let out = tickwire(&[
        "demo",
        "--rate",
        "20000",
        "--clients",
        "3",
        "--duration",
        "1",
        "--slow-client",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8(out.stdout).unwrap();
    assert!(json.starts_with("{\"rate\":20000,"), "{json}");
    // Clients 1 and 2 kept up: nothing lost.
    for client in 1..=2 {
        let at = json
            .find(&format!("{{\"client\":{client},\"slow\":false,"))
            .expect("client row");
        assert!(json[at..].contains("\"lost\":0,\"gaps\":0,"), "{json}");
    }
    assert!(json.contains("{\"client\":3,\"slow\":true,"));
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
