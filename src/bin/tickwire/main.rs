//! The `tickwire` command line: generate, decode, serve, subscribe, record,
//! demo and bench.
#![forbid(unsafe_code)]

mod bench;
mod demo;
mod measure;

use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser as ClapParser, Subcommand};
use std::ops::ControlFlow;
use tickwire::json::JsonEvent;
use tickwire::net::{unix_nanos, Client, ClientConfig, LogSink, Server, ServerConfig, ServerStats};
use tickwire::parse::{Event, Parser};
use tickwire::policy::Backoff;
use tickwire::session::{ClientEvent, CloseReason, SlowPolicy};
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
    /// Subscribe to a server: JSON lines of every frame and event, or a status line per second.
    Subscribe {
        /// Server address.
        #[arg(long, default_value = "127.0.0.1:7878")]
        connect: SocketAddr,
        /// First sequence wanted (0: live data only).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Print JSON lines (protocol section 7) instead of a status line.
        #[arg(long)]
        json: bool,
        /// Stop after this many seconds (default: until Ctrl-C or the server gives up).
        #[arg(long)]
        duration: Option<f64>,
        /// Give up after this many failed connection attempts in a row (default: never).
        #[arg(long)]
        max_retries: Option<u32>,
        /// Busy-poll for the lowest latency (spins one core).
        #[arg(long)]
        busy_poll: bool,
    },
    /// Run an in-process server and clients for a while and show what happens.
    Demo {
        /// Messages per second to publish.
        #[arg(long, default_value_t = 500_000)]
        rate: u64,
        /// Subscribing clients.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Make the last client fall behind (it is skipped while slow and sees gaps).
        #[arg(long)]
        slow_client: bool,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run the benchmarks and print one table, each figure against its baseline.
    Bench {
        /// Seconds per network case.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Message rate of the latency case.
        #[arg(long, default_value_t = 500_000)]
        rate: u64,
        /// Size of the decode/encode stream in MiB.
        #[arg(long, default_value_t = 64)]
        stream_mib: usize,
        /// Print the table as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Record the raw byte stream from a server into a file `dump` reads.
    Record {
        /// Server address.
        #[arg(long, default_value = "127.0.0.1:7878")]
        connect: SocketAddr,
        /// First sequence wanted (0: live data only).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Output file (`-` for stdout).
        #[arg(short, long)]
        output: PathBuf,
        /// Stop after this many data frames.
        #[arg(long, conflicts_with = "duration")]
        count: Option<u64>,
        /// Stop after this many seconds.
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
        Command::Subscribe {
            connect,
            from,
            json,
            duration,
            max_retries,
            busy_poll,
        } => subscribe(connect, from, json, duration, max_retries, busy_poll),
        Command::Record {
            connect,
            from,
            output,
            count,
            duration,
        } => record(connect, from, &output, count, duration),
        Command::Demo {
            rate,
            clients,
            duration,
            slow_client,
            json,
        } => demo::run(rate, clients, duration, slow_client, json),
        Command::Bench {
            seconds,
            rate,
            stream_mib,
            json,
        } => bench::run(seconds, rate, stream_mib, json),
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
    let (mut gaps, mut duplicates) = (0u64, 0u64);
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
                Event::Duplicate(_) => duplicates += 1,
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
         {} duplicates",
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
        duplicates
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

/// Ctrl-C sets the returned flag.
fn interrupted() -> io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).map_err(io::Error::other)?;
    Ok(stop)
}

fn deadline(duration: Option<f64>) -> Option<Instant> {
    duration.map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)))
}

fn subscribe(
    connect: SocketAddr,
    from: u64,
    json: bool,
    duration: Option<f64>,
    max_retries: Option<u32>,
    busy_poll: bool,
) -> io::Result<()> {
    let stop = interrupted()?;
    let end = deadline(duration);
    let mut config = ClientConfig::new(connect);
    config.from = from;
    config.busy_poll = busy_poll;
    config.backoff = Backoff::default()
        .with_max_retries(max_retries)
        .with_jitter(u64::from(std::process::id()));
    let mut client = Client::new(config)?;
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut write_error = None;
    let started = Instant::now();
    let mut next_status = started + Duration::from_secs(1);
    let (mut frames, mut bytes, mut gaps, mut discarded) = (0u64, 0u64, 0u64, 0u64);
    let mut state = client.state();
    let result = client.run(|event| {
        match event {
            ClientEvent::Frame(m) => {
                frames += 1;
                bytes += m.len() as u64;
            }
            ClientEvent::Gap(g) => gaps += g.len(),
            ClientEvent::Discarded(d) => discarded += d.bytes,
            ClientEvent::State { to, .. } => state = to,
            _ => {}
        }
        if !json && Instant::now() >= next_status {
            eprintln!(
                "tickwire subscribe: {state:?} | {frames} frames/s, {:.1} MB/s | {gaps} missing | {discarded} bytes discarded",
                bytes as f64 / 1e6
            );
            (frames, bytes) = (0, 0);
            next_status += Duration::from_secs(1);
        }
        if json {
            let line = match event {
                ClientEvent::Frame(m) => Some(JsonEvent(&Event::Frame(m)).to_string()),
                ClientEvent::Gap(g) => Some(JsonEvent(&Event::Gap(g)).to_string()),
                ClientEvent::Discarded(d) => Some(JsonEvent(&Event::Discarded(d)).to_string()),
                ClientEvent::NewSession { session_id, sequence } => {
                    Some(JsonEvent(&Event::NewSession { session_id, sequence }).to_string())
                }
                _ => None,
            };
            if let Some(line) = line {
                if let Err(e) = writeln!(out, "{line}") {
                    write_error = Some(e);
                    return ControlFlow::Break(());
                }
            }
        }
        match event {
            ClientEvent::State { from, to } => eprintln!("tickwire subscribe: {from:?} -> {to:?}"),
            ClientEvent::Lost(why) => eprintln!("tickwire subscribe: connection lost: {why}"),
            ClientEvent::Retrying { attempt, delay } => {
                eprintln!("tickwire subscribe: retry {attempt} in {delay:?}");
            }
            ClientEvent::LoggedIn { session_id, sequence } => {
                eprintln!("tickwire subscribe: logged in, session {session_id:#018x}, from {sequence}");
            }
            ClientEvent::EndOfSession { sequence } => {
                eprintln!("tickwire subscribe: end of session (next sequence {sequence})");
            }
            _ => {}
        }
        if stop.load(Ordering::SeqCst) || end.is_some_and(|end| Instant::now() >= end) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    out.flush()?;
    if let Some(e) = write_error {
        return Err(e);
    }
    let s = client.stats();
    eprintln!(
        "tickwire subscribe: {} frames ({} quotes, {} trades, {} heartbeats), {} bytes; discarded {} bytes; \
         {} gaps ({} missing), {} duplicates; {} connects, {} reconnects; {:?}",
        s.parse.frames(),
        s.parse.quotes,
        s.parse.trades,
        s.parse.heartbeats,
        s.parse.frame_bytes,
        s.parse.discarded_bytes,
        s.gaps,
        s.missing,
        s.duplicates,
        s.connects,
        s.reconnects,
        client.state()
    );
    result.map_err(|gave_up| io::Error::new(ErrorKind::NotConnected, gave_up.to_string()))
}

/// Stream bytes the parser has consumed so far (frames plus discards).
fn consumed(parser: &Parser<Box<[u8]>>) -> u64 {
    let s = parser.stats();
    s.frame_bytes + s.discarded_bytes
}

fn record(
    connect: SocketAddr,
    from: u64,
    output: &PathBuf,
    count: Option<u64>,
    duration: Option<f64>,
) -> io::Result<()> {
    use std::io::Write as _;
    let stop = interrupted()?;
    let end = deadline(duration);
    let mut socket = std::net::TcpStream::connect(connect)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut login = [0u8; 24];
    tickwire::encode(&tickwire::Payload::Login, from, unix_nanos(), &mut login)
        .map_err(io::Error::other)?;
    socket.write_all(&login)?;
    let mut out = BufWriter::with_capacity(1 << 20, open_output(output)?);
    // The file gets the bytes exactly as received; a parser alongside counts
    // data frames for --count.
    let mut parser = Parser::with_capacity(1 << 20).map_err(io::Error::other)?;
    let mut buf = vec![0u8; 1 << 16];
    let (mut frames, mut bytes) = (0u64, 0u64);
    while !stop.load(Ordering::SeqCst)
        && end.map_or(true, |end| Instant::now() < end)
        && count.map_or(true, |count| frames < count)
    {
        let n = match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let target = count.unwrap_or(u64::MAX);
        let mut keep = n;
        let mut chunk = buf.get(..n).unwrap_or_default();
        let chunk_start = consumed(&parser) + parser.buffered() as u64;
        while !chunk.is_empty() {
            let taken = parser.fill_from(chunk);
            chunk = chunk.get(taken..).unwrap_or_default();
            while let Some(event) = parser.next_event() {
                if matches!(event, Event::Frame(m) if m.is_data()) {
                    frames += 1;
                    if frames >= target {
                        // Keep the bytes up to the end of this frame only.
                        let upto = consumed(&parser).saturating_sub(chunk_start);
                        keep = usize::try_from(upto).unwrap_or(n).min(n);
                        chunk = &[];
                        break;
                    }
                }
            }
        }
        out.write_all(buf.get(..keep).unwrap_or_default())?;
        bytes += keep as u64;
    }
    out.flush()?;
    eprintln!("tickwire record: {frames} data frames, {bytes} bytes written");
    Ok(())
}
