//! What a crates.io reviewer checks: the shipped `PROTOCOL.md` and its test
//! vectors, links that stay inside the repository, and a README command
//! table that matches `tickwire --help` (the full one in docs/operating.md),
//! a README that stays short.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

#[test]
fn protocol_md_has_every_section_and_valid_test_vectors() {
    let protocol = read("PROTOCOL.md");
    for n in 1..=12 {
        assert!(
            protocol.contains(&format!("\n## {n}. ")),
            "section {n} missing"
        );
    }
    let frames: Vec<Vec<u8>> = protocol
        .lines()
        .filter(|l| l.starts_with("a5 01 "))
        .map(|l| {
            l.split(' ')
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        frames.len(),
        20,
        "9 vectors in section 6, 6 lines for sections 8 and 9, 5 for section 11"
    );
    for f in &frames {
        assert_eq!(usize::from(f[3]), f.len(), "length byte of {f:02x?}");
        let (covered, trailer) = f.split_at(f.len() - 4);
        assert_eq!(
            tickwire::checksum::crc32c(covered),
            u32::from_le_bytes(trailer.try_into().unwrap()),
            "checksum of {f:02x?}"
        );
    }
    // Every frame decodes as the crate's own types (revision 2: Packet and
    // Retransmit included; revision 3: Auth and Rejected).
    let decoded = frames
        .iter()
        .filter(|f| tickwire::Message::decode(f).is_ok())
        .count();
    assert_eq!(decoded, 20, "every vector of sections 6, 8, 9 and 11");
}

#[test]
fn links_stay_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = [
        "README.md",
        "PROTOCOL.md",
        "src/lib.rs",
        "docs/sessions-and-drivers.md",
        "docs/datagrams-and-relays.md",
        "docs/operating.md",
        "docs/performance.md",
        "python/README.md",
    ];
    for doc in docs {
        let text = read(doc);
        // Links are relative to the file's own directory.
        let dir = root.join(doc).parent().unwrap().to_path_buf();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let target = &rest[at + 2..];
            let end = target.find(')').unwrap();
            let target = &target[..end];
            rest = &rest[at + 2 + end..];
            let file = target.split('#').next().unwrap();
            let inside = dir
                .join(file)
                .canonicalize()
                .is_ok_and(|f| f.starts_with(root.canonicalize().unwrap()));
            assert!(
                !target.contains("://") && (file.is_empty() || !doc.ends_with(".md") || inside),
                "{doc} links outside the repository: {target}"
            );
            // Rustdoc's intra-doc links (`mod@encode`, `crate::parse`) name items, not files.
            if doc.ends_with(".md") && !file.is_empty() {
                assert!(dir.join(file).exists(), "{doc} links to missing {file}");
            }
        }
    }
    assert!(read("README.md").contains("](PROTOCOL.md)"));
    // The README sends its reader to each page that took its depth.
    for page in [
        "docs/sessions-and-drivers.md",
        "docs/datagrams-and-relays.md",
        "docs/operating.md",
        "docs/performance.md",
        "python/README.md",
    ] {
        assert!(read("README.md").contains(&format!("]({page})")), "{page}");
    }
    assert!(read("src/lib.rs").contains("`PROTOCOL.md`"));
    for license in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(read(license).len() > 1000, "{license}");
    }
}

/// Options every command takes (the README says so once, above the table).
const GLOBAL: [&str; 3] = ["--help", "--verbose", "--quiet"];

/// The long options of `tickwire <command> --help`, without the global ones.
fn options_of(command: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    long_options(&String::from_utf8(out.stdout).unwrap())
        .into_iter()
        .filter(|o| !GLOBAL.contains(&o.as_str()))
        .collect()
}

fn long_options(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

/// Issue 23: the README stays short (under 250 lines), keeps the two
/// commands at the top (CI runs the test command: `.ci/run` must run the
/// same one) and names no path of a development machine.
#[test]
fn the_readme_is_short_and_starts_with_the_two_commands() {
    let readme = read("README.md");
    assert!(
        readme.lines().count() < 250,
        "{} lines",
        readme.lines().count()
    );
    let demo = "cargo run --release --features cli -- demo";
    let tests =
        "cargo test --all-features && cargo test --no-default-features && python/run-tests.sh";
    let two = readme.find("## The two commands").unwrap();
    assert!(two < readme.find("## Read a recording").unwrap());
    assert!(readme[two..].find(demo).unwrap() < readme[two..].find(tests).unwrap());
    assert!(
        read(".ci/run").contains(tests),
        ".ci/run runs the README's test command"
    );
    for doc in [
        "README.md",
        "docs/sessions-and-drivers.md",
        "docs/datagrams-and-relays.md",
        "docs/operating.md",
        "docs/performance.md",
        "python/README.md",
    ] {
        let text = read(doc);
        for machine in ["/work/", "/home/", "/root/", "/Users/"] {
            assert!(!text.contains(machine), "{doc} names {machine}");
        }
    }
}

/// The README's short table has a row for every command; docs/operating.md
/// gives each command's every option (checked against `--help`).
#[test]
fn the_readme_command_table_matches_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert_eq!(commands.len(), 11, "{help}");
    let readme = read("README.md");
    let operating = read("docs/operating.md");
    for global in ["`-v`", "`-q`"] {
        assert!(readme.contains(global), "README explains {global}");
        assert!(
            operating.contains(global),
            "docs/operating.md explains {global}"
        );
    }
    for command in commands {
        assert!(
            readme.contains(&format!("| `tickwire {command}` |")),
            "no README row for {command}"
        );
        let prefix = format!("| `tickwire {command} ");
        let row = operating
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no docs/operating.md row for {command}"));
        // The synopsis is the first cell.
        let synopsis = row.split("` ").next().unwrap();
        assert_eq!(
            long_options(synopsis)
                .into_iter()
                .filter(|o| o != "--output")
                .collect::<BTreeSet<_>>(),
            options_of(command)
                .into_iter()
                .filter(|o| o != "--output")
                .collect::<BTreeSet<_>>(),
            "docs/operating.md row of {command}: {row}"
        );
        if options_of(command).contains("--output") {
            assert!(
                synopsis.contains("-o FILE") || synopsis.contains("-o DIR"),
                "{row}"
            );
        }
    }
}
