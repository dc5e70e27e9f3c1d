//! The command line's authenticated logins (protocol section 11), as a user
//! runs it: `tickwire keygen`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;

use tickwire::session::auth::{load_secret, secret_hash, Credentials, Request, Verifier};
use tickwire::wire::KeyId;

#[path = "common/cli.rs"]
mod cli_util;
use cli_util::{outputs, tickwire, Reap};
#[path = "common/fs.rs"]
mod fs_util;
use fs_util::TempDir as Dir;

fn dir(name: &str) -> Dir {
    Dir::new(&format!("authcli-{name}"), true)
}

#[test]
fn keygen_writes_a_private_secret_and_prints_only_the_credentials_line() {
    let d = dir("keygen");
    let file = d.0.join("desk.key");
    let out = tickwire(&[
        "keygen",
        "--key-id",
        "desk-1",
        "--secret-file",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = load_secret(Some(&file)).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let hex: String = secret.expose().iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        !stdout.contains(&hex) && !stderr.contains(&hex),
        "the secret was printed"
    );
    let hash: String = secret_hash(&secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(stdout, format!("desk-1:{hash}\n"));
    // The line works as a credentials file.
    let credentials = Credentials::parse(&stdout).unwrap();
    let peer = "127.0.0.1".parse().unwrap();
    let who = credentials
        .authenticate(&KeyId::new("desk-1").unwrap(), &secret, peer)
        .unwrap();
    assert!(credentials.authorize(&who, Request::Retransmit));

    // Never overwritten.
    let again = tickwire(&[
        "keygen",
        "--key-id",
        "desk-1",
        "--secret-file",
        file.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert_eq!(load_secret(Some(&file)).unwrap(), secret);
    // Two keys differ.
    let other = d.0.join("other.key");
    let out = tickwire(&[
        "keygen",
        "--key-id",
        "desk-2",
        "--secret-file",
        other.to_str().unwrap(),
        "--permissions",
        "subscribe",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .ends_with(":subscribe"));
    assert_ne!(load_secret(Some(&other)).unwrap(), secret);
}

#[test]
fn keygen_refuses_bad_key_ids_and_permissions_at_start() {
    let d = dir("bad");
    let file = d.0.join("k");
    for (id, perms) in [
        ("seventeen-chars-x", "subscribe"),
        ("bob smith", "subscribe"),
        ("", "subscribe"),
        ("ok", "read"),
    ] {
        let out = tickwire(&[
            "keygen",
            "--key-id",
            id,
            "--secret-file",
            file.to_str().unwrap(),
            "--permissions",
            perms,
        ]);
        assert_eq!(out.status.code(), Some(2), "{id} {perms}");
        assert!(!file.exists(), "{id}: a file was made");
    }
}

// ---- serve, subscribe, record, relay with --auth, keys and TLS ----

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

const TLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `serve` with `args`; the address it listens on.
fn serve(args: &[&str]) -> (Reap, String) {
    let mut child = spawn(
        &[
            &["-vv", "serve", "--listen", "127.0.0.1:0", "--rate", "20000"],
            args,
        ]
        .concat(),
        &[],
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    (Reap(child), addr)
}

/// A key made with `keygen`, and the credentials file holding its line.
fn key(d: &Dir, name: &str, perms: Option<&str>) -> (PathBuf, PathBuf) {
    let secret = d.0.join(format!("{name}.key"));
    let mut args = vec![
        "keygen",
        "--key-id",
        name,
        "--secret-file",
        secret.to_str().unwrap(),
    ];
    if let Some(p) = perms {
        args.extend(["--permissions", p]);
    }
    let out = tickwire(&args);
    assert!(out.status.success());
    let creds = d.0.join("credentials");
    let mut text = std::fs::read_to_string(&creds).unwrap_or_default();
    text.push_str(&String::from_utf8(out.stdout).unwrap());
    std::fs::write(&creds, text).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    (secret, creds)
}

#[test]
fn record_with_a_key_and_tls_and_every_refusal_says_why() {
    let d = dir("serve");
    let (alice, creds) = key(&d, "alice", None);
    let (retx_only, creds2) = key(&d, "retx-only", Some("retransmit"));
    assert_eq!(creds, creds2);
    let (server, addr) = serve(&[
        "--auth",
        creds.to_str().unwrap(),
        "--tls-cert",
        &format!("{TLS}/server.pem"),
        "--tls-key",
        &format!("{TLS}/server.key"),
    ]);
    let ca = format!("{TLS}/ca.pem");
    let out = d.0.join("rec.twr");
    let rec = spawn(
        &[
            "-vv",
            "record",
            "--connect",
            &addr,
            "--from",
            "1",
            "--count",
            "500",
            "-o",
            out.to_str().unwrap(),
            "--key-id",
            "alice",
            "--secret-file",
            alice.to_str().unwrap(),
            "--tls",
            "--ca",
            &ca,
        ],
        &[],
    );
    let (ok, _, err) = outputs(rec);
    assert!(ok, "{err}");
    assert!(
        err.contains("500 data frames (sequences 1..=500)") && err.contains("0 gaps"),
        "{err}"
    );
    let (ok, dumped, _) = outputs(spawn(&["dump", out.to_str().unwrap()], &[]));
    assert!(ok);
    let data = dumped
        .lines()
        .filter(|l| l.contains("\"type\":\"quote\"") || l.contains("\"type\":\"trade\""))
        .count();
    assert_eq!(data, 500, "{dumped}");

    // A key that may not subscribe: refused, not retried, exit non-zero.
    let sub = spawn(
        &[
            "subscribe",
            "--connect",
            &addr,
            "--duration",
            "5",
            "--key-id",
            "retx-only",
            "--secret-file",
            retx_only.to_str().unwrap(),
            "--tls",
            "--ca",
            &ca,
        ],
        &[],
    );
    let started = std::time::Instant::now();
    let (ok, _, err) = outputs(sub);
    assert!(
        !ok && err.contains("not_permitted") || err.contains("not permitted"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "gave up at once: {err}"
    );
    // Without TLS: the server closes it, the client is told why.
    let plain = spawn(&["subscribe", "--connect", &addr, "--duration", "1"], &[]);
    let (_, _, err) = outputs(plain);
    assert!(err.contains("TLS"), "{err}");
    drop(server);
}

#[test]
fn secrets_never_reach_a_log_line_an_error_or_a_dump() {
    let d = dir("hygiene");
    let (alice, creds) = key(&d, "alice", None);
    let secret = load_secret(Some(&alice)).unwrap();
    let raw = *secret.expose();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let hex_upper = hex.to_uppercase();
    let base64 = base64_of(&raw);
    let decimal = format!("{:?}", raw); // [12, 34, ...], as Debug of bytes prints
    let decimal_head = decimal
        .trim_start_matches('[')
        .split(',')
        .take(4)
        .collect::<Vec<_>>()
        .join(",");
    let needles = [
        hex.as_str(),
        hex_upper.as_str(),
        base64.as_str(),
        decimal_head.as_str(),
    ];

    let (mut server, addr) = serve(&["--auth", creds.to_str().unwrap()]);
    let mut logs = String::new();
    // Through the environment variable too.
    for (args, env) in [
        (
            vec![
                "-vv",
                "subscribe",
                "--connect",
                addr.as_str(),
                "--duration",
                "1",
                "--json",
                "--key-id",
                "alice",
                "--secret-file",
                alice.to_str().unwrap(),
            ],
            vec![],
        ),
        (
            vec![
                "-vv",
                "subscribe",
                "--connect",
                addr.as_str(),
                "--duration",
                "1",
                "--key-id",
                "alice",
            ],
            vec![("TICKWIRE_SECRET", hex.as_str())],
        ),
        (
            vec![
                "-vv",
                "subscribe",
                "--connect",
                addr.as_str(),
                "--duration",
                "1",
                "--key-id",
                "nobody",
            ],
            vec![("TICKWIRE_SECRET", hex.as_str())],
        ),
    ] {
        let (_, out, err) = outputs(spawn(&args, &env));
        logs.push_str(&out);
        logs.push_str(&err);
    }
    let rec = d.0.join("r.twr");
    let (ok, out, err) = outputs(spawn(
        &[
            "-vv",
            "record",
            "--connect",
            &addr,
            "--count",
            "50",
            "-o",
            rec.to_str().unwrap(),
            "--key-id",
            "alice",
            "--secret-file",
            alice.to_str().unwrap(),
        ],
        &[],
    ));
    assert!(ok, "{err}");
    logs.push_str(&out);
    logs.push_str(&err);
    let (_, out, err) = outputs(spawn(&["dump", rec.to_str().unwrap()], &[]));
    logs.push_str(&out);
    logs.push_str(&err);
    // A secret file with the wrong mode, and one that is not hex: the errors.
    std::fs::set_permissions(&alice, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out, err) = outputs(spawn(
        &[
            "subscribe",
            "--connect",
            &addr,
            "--key-id",
            "alice",
            "--secret-file",
            alice.to_str().unwrap(),
        ],
        &[],
    ));
    assert!(!ok && err.contains("chmod 600"), "{err}");
    logs.push_str(&out);
    logs.push_str(&err);
    let _ = server.0.kill();
    let (_, out, err) = outputs(std::mem::replace(&mut server.0, spawn(&["--version"], &[])));
    logs.push_str(&out);
    logs.push_str(&err);
    assert!(
        logs.contains("authenticated") && logs.contains("alice"),
        "the server logs who logged in: {logs}"
    );
    for needle in needles {
        assert!(
            !logs.contains(needle),
            "a secret in the logs ({needle}):\n{logs}"
        );
    }
}

fn base64_of(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            }
        }
    }
    out
}
