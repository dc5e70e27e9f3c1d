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
use std::process::{Command, Output};

use tickwire::session::auth::{load_secret, secret_hash, Credentials, Request, Verifier};
use tickwire::wire::KeyId;

fn tickwire(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(args)
        .output()
        .unwrap()
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn dir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("tickwire-authcli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
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
