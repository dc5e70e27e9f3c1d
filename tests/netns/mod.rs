//! Network namespaces for the privileged tests (root, `ip`, `nft`): one
//! namespace joined to this one by a veth pair, removed on drop with every
//! nftables rule inside it, also when a test fails; the skip rule that CI
//! turns into a failure; a child process reaped on drop.
#![allow(dead_code, unreachable_pub, clippy::cast_possible_truncation)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs a command; `Err` names it and what it printed.
pub fn run_command(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Why a privileged test cannot run: a skip, unless
/// `TICKWIRE_REQUIRE_PRIVILEGED=1` (CI) makes it a failure.
pub fn skip_unprivileged(test: &str, why: &str) {
    assert!(
        std::env::var_os("TICKWIRE_REQUIRE_PRIVILEGED").is_none_or(|v| v != "1"),
        "{test} needs root, `ip` and `nft` (TICKWIRE_REQUIRE_PRIVILEGED=1): {why}"
    );
    eprintln!("SKIPPED {test}: needs root, `ip` and `nft`: {why}");
}

/// A namespace joined by a veth pair (multicast on): `10.S.N.1/24` here,
/// `10.S.N.2/24` inside, where `S` is the test's subnet and `N` comes from
/// the process id (so concurrent test binaries do not collide).
pub struct Netns {
    name: String,
    host_if: String,
    subnet: u8,
    pub n: u8,
}

impl Netns {
    /// `tag` names the namespace and its interfaces (a few letters).
    pub fn create(tag: &str, subnet: u8) -> Result<Netns, String> {
        let id = std::process::id();
        let n = (id % 250) as u8;
        let ns = Netns {
            name: format!("tickwire-{tag}-{id}"),
            host_if: format!("tw{tag}h{id}"),
            subnet,
            n,
        };
        ns.remove(); // leftovers of a run killed before it could clean up
        let peer_if = format!("tw{tag}c{id}");
        run_command("ip", &["netns", "add", &ns.name])?;
        run_command(
            "ip",
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &peer_if,
            ],
        )?;
        run_command("ip", &["link", "set", &peer_if, "netns", &ns.name])?;
        let host_cidr = format!("{}/24", ns.host_ip());
        run_command("ip", &["addr", "add", &host_cidr, "dev", &ns.host_if])?;
        run_command("ip", &["link", "set", &ns.host_if, "multicast", "on", "up"])?;
        let peer_cidr = format!("{}/24", ns.inside_ip());
        ns.ip(&["addr", "add", &peer_cidr, "dev", &peer_if])?;
        ns.ip(&["link", "set", &peer_if, "multicast", "on", "up"])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, self.n, 1)
    }

    pub fn inside_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, self.n, 2)
    }

    /// `ip -n NAME args…`.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_command("ip", &all)
    }

    /// `nft args…` inside the namespace.
    pub fn nft(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), "nft"];
        all.extend_from_slice(args);
        run_command("ip", &all)
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    fn remove(&self) {
        // Deleting either end of a veth pair deletes both; deleting the
        // namespace deletes its rules.
        let _ = run_command("ip", &["link", "del", &self.host_if]);
        let _ = run_command("ip", &["netns", "del", &self.name]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A child process, killed and reaped on drop.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
