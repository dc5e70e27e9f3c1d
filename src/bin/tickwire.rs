//! The `tickwire` command line: generate and decode tickwire streams.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser as ClapParser, Subcommand};
use tickwire::json::JsonEvent;
use tickwire::parse::{Event, Parser};
use tickwire::synth::{Damage, Damager, Feed};

#[derive(ClapParser)]
#[command(
    name = "tickwire",
    version,
    about = "Streaming market data over the tickwire protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a seeded synthetic stream (60% quotes, 30% trades, 10% heartbeats).
    Gen {
        /// Number of frames to generate.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Seed: the same seed gives the same stream.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Probability (0–1) that a frame is damaged (bit flip, truncation, junk run).
        #[arg(long, default_value_t = 0.0)]
        corrupt: f64,
        /// Number of instruments.
        #[arg(long, default_value_t = 100)]
        instruments: u32,
        /// Output file (`-` for stdout).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Decode a recording and print one JSON object per line (protocol section 7).
    Dump {
        /// Recording to read (`-` for stdin).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gen {
            count,
            seed,
            corrupt,
            instruments,
            output,
        } => gen(count, seed, corrupt, instruments, &output),
        Command::Dump { file } => dump(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`tickwire dump x | head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickwire: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open_output(path: &PathBuf) -> io::Result<Box<dyn Write>> {
    if path.as_os_str() == "-" {
        Ok(Box::new(io::stdout().lock()))
    } else {
        File::create(path)
            .map(|f| Box::new(f) as Box<dyn Write>)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))
    }
}

fn open_input(path: &PathBuf) -> io::Result<Box<dyn Read>> {
    if path.as_os_str() == "-" {
        Ok(Box::new(io::stdin().lock()))
    } else {
        File::open(path)
            .map(|f| Box::new(f) as Box<dyn Read>)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))
    }
}

/// First timestamp of generated streams: 2023-11-14T22:13:20Z.
const GEN_EPOCH_NS: u64 = 1_700_000_000_000_000_000;

fn gen(count: u64, seed: u64, corrupt: f64, instruments: u32, output: &PathBuf) -> io::Result<()> {
    if !(0.0..=1.0).contains(&corrupt) {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "--corrupt must be between 0 and 1",
        ));
    }
    let mut out = BufWriter::with_capacity(1 << 20, open_output(output)?);
    let mut feed = Feed::new(seed, instruments);
    let mut damager = Damager::new(seed, corrupt);
    let mut clock = fastrand::Rng::with_seed(seed.rotate_left(17));
    let mut timestamp = GEN_EPOCH_NS;
    let mut frame = [0u8; tickwire::wire::MAX_FRAME_LEN];
    let mut chunk = Vec::with_capacity(1 << 16);
    let (mut flips, mut truncations, mut junk) = (0u64, 0u64, 0u64);
    let mut bytes = 0u64;
    for _ in 0..count {
        // 100 ns to 10 µs between messages.
        timestamp += clock.u64(100..10_000);
        let n = feed
            .encode_next(timestamp, &mut frame)
            .map_err(io::Error::other)?;
        match damager.push_frame(frame.get(..n).unwrap_or_default(), &mut chunk) {
            Some(Damage::BitFlip) => flips += 1,
            Some(Damage::Truncate) => truncations += 1,
            Some(Damage::Junk) => junk += 1,
            None => {}
        }
        if chunk.len() >= 1 << 15 {
            out.write_all(&chunk)?;
            bytes += chunk.len() as u64;
            chunk.clear();
        }
    }
    out.write_all(&chunk)?;
    bytes += chunk.len() as u64;
    out.flush()?;
    eprintln!(
        "tickwire gen: {count} frames, {bytes} bytes, seed {seed}; damaged: {flips} bit flips, \
         {truncations} truncations, {junk} junk runs"
    );
    Ok(())
}

fn dump(path: &PathBuf) -> io::Result<()> {
    let mut input = open_input(path)?;
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut parser = Parser::with_capacity(1 << 20).map_err(io::Error::other)?;
    let (mut gaps, mut stale) = (0u64, 0u64);
    loop {
        let spare = parser.spare();
        let read = match input.read(spare) {
            Ok(0) => {
                parser.finish();
                0
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if read > 0 {
            parser.commit(read).map_err(io::Error::other)?;
        }
        while let Some(event) = parser.next_event() {
            match event {
                Event::Gap(_) => gaps += 1,
                Event::Stale(_) => stale += 1,
                _ => {}
            }
            writeln!(out, "{}", JsonEvent(&event))?;
        }
        if parser.is_finished() {
            break;
        }
    }
    out.flush()?;
    let s = parser.stats();
    let t = parser.tracker().stats();
    eprintln!(
        "tickwire dump: {} frames ({} quotes, {} trades, {} heartbeats, {} logins, {} login_accepted, \
         {} end_of_session), {} frame bytes; discarded {} bytes in {} runs; {} gaps ({} missing), \
         {} stale",
        s.frames(),
        s.quotes,
        s.trades,
        s.heartbeats,
        s.logins,
        s.login_accepted,
        s.end_of_session,
        s.frame_bytes,
        s.discarded_bytes,
        s.discard_runs,
        gaps,
        t.missing,
        stale
    );
    Ok(())
}
