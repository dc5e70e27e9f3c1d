//! Secret hygiene of the Auth frame (protocol sections 7 and 11): every
//! representation of an Auth frame with a known secret, in the library and
//! in the `tickwire` command line, is searched for the secret in every
//! encoding code might print it in (raw bytes, hex in either case with or
//! without separators, decimal and hex `Debug` lists, base64 standard and
//! URL-safe), whole or in part.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use tickwire::io::FrameWriter;
use tickwire::json::{JsonEvent, JsonMessage};
use tickwire::parse::{Event, Parser, SliceParser};
use tickwire::wire::{KeyId, Secret};
use tickwire::{encode, Message, Payload};

/// The known secret: no run of three bytes repeats, so a match is the secret.
const SECRET: [u8; 32] = [
    0x9e, 0x37, 0x79, 0xb9, 0x7f, 0x4a, 0x7c, 0x15, 0xf3, 0x9c, 0xc0, 0x60, 0x5c, 0xed, 0xc8, 0x34,
    0x10, 0x82, 0x27, 0x6b, 0xf3, 0xa2, 0x72, 0x51, 0xe6, 0x8d, 0x19, 0xd4, 0x3a, 0x6f, 0x0b, 0xc1,
];

fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Every needle: text forms of every 3-byte window (lowercase; the haystack
/// is lowercased for them), 8-character pieces of the base64 forms (case
/// kept), and raw 4-byte windows.
fn needles() -> (Vec<String>, Vec<String>, Vec<Vec<u8>>) {
    let mut text = Vec::new();
    for w in SECRET.windows(3) {
        let [a, b, c] = [w[0], w[1], w[2]];
        text.push(format!("{a:02x}{b:02x}{c:02x}"));
        for sep in [" ", ":", "-", ", ", ",", ", 0x", "\\x", "\n"] {
            text.push(format!("{a:02x}{sep}{b:02x}{sep}{c:02x}"));
        }
        text.push(format!("{a}, {b}, {c}"));
        text.push(format!("{a},{b},{c}"));
        text.push(format!("{a},\n    {b},\n    {c}"));
    }
    let std64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let url64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut b64 = Vec::new();
    for alphabet in [std64, url64] {
        for skip in 0..3 {
            let enc = base64(&SECRET[skip..], alphabet);
            // The last group may depend on padding; every full one is fixed.
            let full = enc.len() / 4 * 4 - 4;
            for start in (0..full.saturating_sub(8)).step_by(4) {
                b64.push(enc[start..start + 8].to_string());
            }
        }
    }
    let raw = SECRET.windows(4).map(<[u8]>::to_vec).collect();
    (text, b64, raw)
}

/// Where the secret shows in `output`, if it does.
fn leak(output: &[u8]) -> Option<String> {
    let (text, b64, raw) = needles();
    if let Some(w) = raw.iter().find(|w| output.windows(4).any(|o| o == &w[..])) {
        return Some(format!("raw bytes {w:02x?}"));
    }
    let s = String::from_utf8_lossy(output);
    let lower = s.to_lowercase();
    if let Some(n) = text.iter().find(|n| lower.contains(n.as_str())) {
        return Some(format!("text {n:?}"));
    }
    b64.iter()
        .find(|n| s.contains(n.as_str()))
        .map(|n| format!("base64 {n:?}"))
}

fn assert_clean(what: &str, output: &[u8]) {
    if let Some(found) = leak(output) {
        panic!(
            "the secret shows in {what} ({found}):\n{}",
            String::from_utf8_lossy(output)
        );
    }
}

fn auth_payload() -> Payload {
    Payload::auth(&KeyId::new("alice").unwrap(), Secret::new(SECRET))
}

/// An Auth frame (sequence 0), one with a key id that is not well-formed,
/// one with a damaged checksum, a truncated one, then a Login.
fn stream() -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 72];
    let n = encode(&auth_payload(), 0, 1, &mut buf).unwrap();
    out.extend_from_slice(&buf[..n]);
    let odd = Payload::Auth {
        key_id: *b"a\"b\\c\x01\xff\0xyzxyzxy",
        secret: Secret::new(SECRET),
    };
    let n = encode(&odd, 5, 2, &mut buf).unwrap();
    out.extend_from_slice(&buf[..n]);
    let n = encode(&auth_payload(), 0, 3, &mut buf).unwrap();
    buf[40] ^= 1;
    out.extend_from_slice(&buf[..n]);
    let n = encode(&auth_payload(), 0, 4, &mut buf).unwrap();
    out.extend_from_slice(&buf[..n - 3]);
    let n = encode(&Payload::Login, 0, 5, &mut buf).unwrap();
    out.extend_from_slice(&buf[..n]);
    out
}

#[test]
fn the_search_finds_the_secret_where_it_is() {
    // The check is not vacuous: every form it looks for is found.
    assert!(leak(&SECRET[3..9]).is_some());
    assert!(leak(format!("{SECRET:?}").as_bytes()).is_some());
    assert!(leak(format!("{SECRET:#?}").as_bytes()).is_some());
    assert!(leak(format!("{SECRET:02X?}").as_bytes()).is_some());
    let hex: String = SECRET[10..14].iter().map(|b| format!("{b:02X}")).collect();
    assert!(leak(hex.as_bytes()).is_some());
    let std64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    assert!(leak(base64(&SECRET, std64).as_bytes()).is_some());
    assert!(leak(base64(&SECRET[1..20], std64).as_bytes()).is_some());
    assert!(leak(&stream()).is_some());
    assert!(leak(b"alice key 0123456789").is_none());
}

#[test]
fn no_library_representation_of_an_auth_frame_shows_the_secret() {
    let bytes = stream();
    let mut out = String::new();
    let payload = auth_payload();
    let secret = Secret::new(SECRET);
    writeln!(out, "{payload:?} {payload:#?} {secret:?} {secret:#?}").unwrap();
    for event in SliceParser::new(&bytes) {
        writeln!(out, "{event:?} {event:#?} {}", JsonEvent(&event)).unwrap();
        if let Event::Frame(m) = event {
            writeln!(out, "{m:?} {m:#?} {}", JsonMessage(&m)).unwrap();
            writeln!(out, "{:?}", Payload::from(m)).unwrap();
            if let Message::Auth(a) = m {
                writeln!(out, "{a:?} {a:#?} {:?} {:?}", a.header(), a.key_id()).unwrap();
                writeln!(out, "{:?}", a.secret()).unwrap();
            }
        }
    }
    let mut damaged = bytes.clone();
    damaged[30] ^= 0x10;
    let err = Message::decode(&damaged).unwrap_err();
    writeln!(out, "{err} {err:?}").unwrap();
    writeln!(out, "{:?}", SliceParser::new(&bytes)).unwrap();
    let mut parser = Parser::new(vec![0u8; 256].into_boxed_slice()).unwrap();
    parser.fill_from(&bytes);
    writeln!(out, "{parser:?} {parser:#?}").unwrap();
    let mut writer = FrameWriter::new(std::io::sink());
    writer.write_payload(&payload, 0, 1).unwrap();
    writeln!(out, "{writer:?}").unwrap();
    let json = serde_json::to_string(&payload).unwrap();
    writeln!(
        out,
        "{json} {}",
        serde_json::to_string_pretty(&payload).unwrap()
    )
    .unwrap();
    assert!(json.contains("key_id"), "{json}");
    assert_clean("library output", out.as_bytes());
    // Serialized without its secret, an Auth payload does not deserialize
    // into one with a made-up secret.
    assert!(serde_json::from_str::<Payload>(&json).is_err());
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(args)
        .output()
        .expect("run tickwire");
    assert!(
        out.status.success(),
        "tickwire {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all = out.stdout;
    all.extend_from_slice(&out.stderr);
    all
}

#[test]
fn no_command_line_output_shows_the_secret() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("tickwire-secrets-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("auth.twr");
    std::fs::write(&file, stream()).unwrap();
    let file = file.to_str().unwrap();
    let dump = run(&["-vv", "dump", file]);
    assert!(
        String::from_utf8_lossy(&dump).contains(r#""type":"auth""#),
        "{}",
        String::from_utf8_lossy(&dump)
    );
    assert!(String::from_utf8_lossy(&dump).contains(r#""key_id":"a\u0022b\u005cc\u0001\u00ff""#));
    assert_clean("dump", &dump);
    assert_clean("dump --pretty", &run(&["-vv", "dump", "--pretty", file]));
    let mut formats = vec!["csv"];
    if cfg!(feature = "parquet") {
        formats.push("parquet");
    }
    for format in formats {
        let out = dir.0.join(format!("export-{format}"));
        let out = out.to_str().unwrap();
        let mut args = vec!["-vv", "export", "--format", format, "-o", out, file];
        if format == "parquet" {
            args.extend(["--compression", "none"]);
        }
        assert_clean("export's messages", &run(&args));
        for entry in std::fs::read_dir(out).unwrap() {
            let path = entry.unwrap().path();
            assert_clean(&path.display().to_string(), &std::fs::read(&path).unwrap());
        }
    }
}
