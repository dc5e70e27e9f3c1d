//! The `tickwire` command line: generate and decode tickwire streams.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser as ClapParser, Subcommand};
use tickwire::json::JsonEvent;
use tickwire::net::server::{unix_nanos, CloseReason, LogSink};
use tickwire::net::{Server, ServerConfig, ServerStats, SlowPolicy};
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
    /// Run the reference server publishing a synthetic feed (Ctrl-C stops it gracefully).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: SocketAddr,
        /// Messages per second to publish.
        #[arg(long, default_value_t = 500_000)]
        rate: u64,
        /// Number of instruments.
        #[arg(long, default_value_t = 100)]
        instruments: u32,
        /// Data frames kept for replay.
        #[arg(long, default_value_t = 1 << 20)]
        retain: usize,
        /// What to do with slow clients.
        #[arg(long, value_enum, default_value_t = SlowArg::Skip)]
        slow_policy: SlowArg,
        /// Seed of the synthetic feed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SlowArg {
    Skip,
    Disconnect,
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
        Command::Serve {
            listen,
            rate,
            instruments,
            retain,
            slow_policy,
            seed,
            duration,
        } => {
            let policy = match slow_policy {
                SlowArg::Skip => SlowPolicy::Skip,
                SlowArg::Disconnect => SlowPolicy::Disconnect,
            };
            serve(listen, rate, instruments, retain, policy, seed, duration)
        }
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

fn serve(
    listen: SocketAddr,
    rate: u64,
    instruments: u32,
    retain: usize,
    slow_policy: SlowPolicy,
    seed: u64,
    duration: Option<f64>,
) -> io::Result<()> {
    let config = ServerConfig {
        listen,
        retain,
        slow_policy,
        log: Some(LogSink(Arc::new(|line: &str| {
            eprintln!("tickwire serve: {line}")
        }))),
        ..ServerConfig::default()
    };
    let server = Server::bind(config)?.spawn()?;
    println!("listening {}", server.local_addr());
    eprintln!(
        "tickwire serve: session {:#018x}, publishing {rate} msg/s over {instruments} instruments; Ctrl-C stops",
        server.session_id()
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst)).map_err(io::Error::other)?;
    }
    let publisher = server.publisher();
    let mut feed = Feed::new(seed, instruments);
    let started = Instant::now();
    let end = duration.map(|d| started + Duration::from_secs_f64(d.max(0.0)));
    let mut published = 0u64;
    let mut last = ServerStats::default();
    let mut next_status = started + Duration::from_secs(1);
    while !stop.load(Ordering::SeqCst) && end.map_or(true, |end| Instant::now() < end) {
        // Publish what the rate allows by now, in one batch per millisecond.
        let due = u64::try_from(started.elapsed().as_nanos() * u128::from(rate) / 1_000_000_000)
            .unwrap_or(u64::MAX);
        if due > published {
            let n = (due - published).min(1 << 16);
            let now = unix_nanos();
            let mut batch = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
            while (batch.len() as u64) < n {
                let payload = feed.next_payload();
                if payload.msg_type().is_data() {
                    batch.push((now, payload));
                }
            }
            if publisher.publish(batch).is_err() {
                break;
            }
            published += n;
        }
        if Instant::now() >= next_status {
            let stats = server.stats();
            eprintln!("{}", status_line(&last, &stats));
            last = stats;
            next_status += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = server.shutdown()?;
    eprintln!(
        "tickwire serve: stopped after {:.1} s: {} frames published, {} sent, {} bytes; {} slow marks; \
         closed: {} slow, {} login timeout, {} bad data, {} unexpected frame, {} shutdown",
        started.elapsed().as_secs_f64(),
        stats.frames_published,
        stats.frames_sent,
        stats.bytes_sent,
        stats.slow_marks,
        stats.closed_for(CloseReason::Slow),
        stats.closed_for(CloseReason::LoginTimeout),
        stats.closed_for(CloseReason::BadData),
        stats.closed_for(CloseReason::UnexpectedFrame),
        stats.closed_for(CloseReason::Shutdown),
    );
    Ok(())
}

fn status_line(last: &ServerStats, now: &ServerStats) -> String {
    format!(
        "tickwire serve: {} clients | {} msg/s published | {} frames/s, {:.1} MB/s sent | {} slow marks | {} skipped batches",
        now.clients,
        now.frames_published - last.frames_published,
        now.frames_sent - last.frames_sent,
        (now.bytes_sent - last.bytes_sent) as f64 / 1e6,
        now.slow_marks,
        now.skipped_batches,
    )
}
