//! Shared by the tests that run the `tickwire` binary as a user would
//! (`tests/cli.rs`, `tests/auth_cli.rs`, `tests/export.rs`,
//! `tests/journal_cli.rs`, `tests/journal_server.rs`): running it, reaping
//! it, signalling it, reading its output line by line with a time limit
//! (temporary directories: `common/fs.rs`). Included with
//! `#[path = "common/cli.rs"] mod cli_util;` (only binaries built with the
//! `cli` feature have the `tickwire` executable). Every wait is bounded.
#![allow(
    dead_code, // each test binary uses its own part
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Runs `tickwire args` to its end.
pub fn tickwire(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(args)
        .output()
        .expect("run tickwire")
}

/// Starts `tickwire args` with the given stdout and stderr (stdin null).
pub fn spawn(args: &[&str], stdout: Stdio, stderr: Stdio) -> Reap {
    Reap(
        Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start tickwire"),
    )
}

/// Lossy UTF-8 of a child's output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Kills a child when dropped (a failed assertion leaves no process behind).
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends `signal` to a child process.
pub fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) takes plain integers and touches no memory of ours;
    // the pid is our own child's, which we have not yet reaped.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill failed");
}

/// Waits for `child` at most `limit`; kills it and panics after that.
pub fn wait_for(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("child still running after {limit:?}");
}

/// Reads a pipe line by line on a thread; lines arrive on the channel.
pub fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects lines from `rx` until one satisfies `want` or `limit` passes.
pub fn wait_line(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    limit: Duration,
    want: impl Fn(&str) -> bool,
) -> Option<String> {
    let end = Instant::now() + limit;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if want(&line) {
                    return Some(line);
                }
            }
            Err(_) => return None,
        }
    }
    None
}

/// All a child wrote to its (piped) stderr, once it has closed it.
pub fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// Everything a finished child wrote to its piped stdout and stderr, and
/// whether it succeeded.
pub fn outputs(mut child: Child) -> (bool, String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out).unwrap();
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).unwrap();
    }
    (child.wait().unwrap().success(), out, err)
}
