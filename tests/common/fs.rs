//! Shared by the tests that need files and mounts (`tests/journal.rs`,
//! `tests/journal_server.rs`, `tests/journal_cli.rs`, `tests/journal_scale.rs`,
//! and the tests of the `tickwire` binary): temporary directories that are
//! removed, commands run with their error, and the privileged tests' mounts
//! (root: `mount`), which say why they skip where they cannot run and fail
//! instead with `TICKWIRE_REQUIRE_PRIVILEGED=1` (as `.ci/run` sets).
//! Included with `#[path = "common/fs.rs"] mod fs_util;`.
#![allow(
    dead_code, // each test binary uses its own part
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory under the temporary directory, unique to this process and
/// call, removed (with what is in it) when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Made empty (`create`) or only named (left for the code under test
    /// to create).
    pub fn new(tag: &str, create: bool) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "tickwire-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        if create {
            std::fs::create_dir_all(&path).unwrap();
        }
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The directory as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// `name` inside the directory, as a command-line argument.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `program args` to its end; its stderr in the error.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The privileged tests (root, `mount`): says why `test` skips, or fails
/// it with `TICKWIRE_REQUIRE_PRIVILEGED=1`.
pub fn skip_unprivileged(test: &str, why: &str) {
    assert!(
        std::env::var_os("TICKWIRE_REQUIRE_PRIVILEGED").is_none_or(|v| v != "1"),
        "{test} needs root and `mount` (TICKWIRE_REQUIRE_PRIVILEGED=1): {why}"
    );
    eprintln!("SKIPPED {test}: needs root and `mount`: {why}");
}

/// A mount point, unmounted (lazily, so a test failing with files open
/// still cleans up) and removed on drop.
pub struct Mount(pub TempDir);

impl Mount {
    /// `mount args DIR` on a new temporary directory.
    pub fn new(tag: &str, args: &[&str]) -> Result<Mount, String> {
        let dir = TempDir::new(tag, true);
        let mut all: Vec<&str> = args.to_vec();
        all.push(dir.arg());
        run("mount", &all)?;
        Ok(Mount(dir))
    }

    /// A tmpfs of 1 MiB (a disk that fills).
    pub fn small_tmpfs() -> Result<Mount, String> {
        Mount::new("tmpfs", &["-t", "tmpfs", "-o", "size=1m", "tickwire-test"])
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", self.0.arg()]);
    }
}
