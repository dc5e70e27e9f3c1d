//! The `tickwire` command line: generate, decode, serve, subscribe, record,
//! demo and bench.
#![forbid(unsafe_code)]

mod args;
mod bench;
mod demo;
mod dgram;
mod drive;
mod export;
mod journal;
mod keygen;
mod logging;
mod measure;
mod pretty;
mod record;
mod recording;
mod relay;
mod security;
mod subscribe;

use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser as ClapParser, Subcommand};
use tickwire::json::JsonEvent;
use tickwire::net::{unix_nanos, LoopOptions, PublishError, Server, ServerConfig, ServerStats};
use tickwire::parse::{Event, Parser};
use tickwire::session::{CloseReason, SlowPolicy};
use tickwire::synth::{Damage, Damager, Feed};

#[derive(ClapParser)]
#[command(
    name = "tickwire",
    version,
    about = "Streaming market data over the tickwire protocol",
    after_help = "SIGINT (Ctrl-C) and SIGTERM stop serve, subscribe and record gracefully: \
                  serve sends EndOfSession (with --journal, only with --end-session: the \
                  next start continues the session), each prints its summary and exits 0."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log lines on stderr (-v: connection states and retries; -vv: everything).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Fewer log lines on stderr (-q: warnings and errors; -qq: errors; -qqq: none).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    quiet: u8,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Write a seeded synthetic stream (60% quotes, 30% trades, 10% heartbeats).
    Gen {
        /// Number of frames to generate (0: an empty file).
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Seed: the same seed gives the same stream.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Probability (0 to 1) that a frame is damaged (bit flip, truncation, junk run).
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = args::probability)]
        corrupt: f64,
        /// Number of instruments (1 to 1,048,576).
        #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=i64::from(tickwire::synth::MAX_INSTRUMENTS)))]
        instruments: u32,
        /// Output file (`-` for stdout).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Decode a recording and print one JSON object per line (protocol section 7).
    ///
    /// Damage is reported, not fatal: bytes that are not frames print as
    /// `discarded` lines. But input with not one frame in it (and some
    /// bytes) is not a tickwire recording: that is an error, exit status 1,
    /// after the lines; more bytes discarded than frames is a warning.
    /// Session ids are printed as JSON numbers (u64): above 2^53 a
    /// JavaScript reader (or jq) loses precision; read them as 64-bit
    /// integers.
    Dump {
        /// Recording to read (`-` for stdin), or a journal directory (its
        /// sessions in order, each after a LoginAccepted line).
        file: PathBuf,
        /// One line per frame for people instead of JSON: prices as decimals
        /// (4 implied decimals), timestamps as RFC 3339 UTC.
        #[arg(long)]
        pretty: bool,
    },
    /// Export a recording as Parquet or CSV tables: OUT/quotes, OUT/trades, OUT/control.
    ///
    /// One table per message type (control frames share one), each with the
    /// protocol's field names as columns: quotes (sequence, timestamp,
    /// instrument_id, bid_price, ask_price, bid_size, ask_size), trades
    /// (sequence, timestamp, instrument_id, price, size, side, flags),
    /// control (type, sequence, timestamp, session_id, count). Prices are
    /// the wire's integers (4 implied decimals); Parquet timestamps are
    /// timestamp(ns, UTC), CSV timestamps integer nanoseconds. Duplicate
    /// frames are left out; discarded bytes, gaps and duplicates are
    /// reported on stderr. Parquet needs the `parquet` feature.
    ///
    /// The tables are written under temporary names and renamed at the
    /// end: a failed export leaves no table behind (nor a directory it
    /// created). Input with not one frame in it (and some bytes) is not a
    /// tickwire recording: an error, exit status 1, nothing exported.
    Export {
        /// Recording to read (`-` for stdin), or a journal directory.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum)]
        format: export::Format,
        /// Output directory (created if missing; its tables are overwritten).
        #[arg(short, long)]
        output: PathBuf,
        /// Parquet compression of the price columns (the others are
        /// delta- or dictionary-encoded, which compression does not shrink).
        #[arg(long, value_enum, default_value_t)]
        compression: export::Compress,
    },
    /// List a journal directory (sessions, segments, sequence ranges, sizes)
    /// and check every checksum, index entry and segment boundary.
    ///
    /// Exit status 1 when the journal is damaged (a replay would stop at
    /// the damage); a torn tail (what a crash in the middle of a write
    /// leaves, cut by the writer's next open) is reported, not an error.
    Journal {
        /// The journal directory.
        dir: PathBuf,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run the reference server publishing a synthetic feed (Ctrl-C or SIGTERM stops it gracefully).
    Serve {
        /// Address to listen on (IP:PORT or HOST:PORT).
        #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR", allow_negative_numbers = true, value_parser = args::address)]
        listen: SocketAddr,
        /// Messages per second to publish (at least 1).
        #[arg(long, default_value_t = 500_000, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
        rate: u64,
        /// Number of instruments (1 to 1,048,576).
        #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=i64::from(tickwire::synth::MAX_INSTRUMENTS)))]
        instruments: u32,
        /// Data frames kept for replay (at least 1).
        #[arg(long, default_value_t = 1 << 20, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
        retain: u64,
        /// What to do with slow clients.
        #[arg(long, value_enum, default_value_t = SlowArg::Skip)]
        slow_policy: SlowArg,
        /// Seed of the synthetic feed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Stop after this many seconds (greater than 0; default: run until Ctrl-C or SIGTERM).
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = args::seconds)]
        duration: Option<Duration>,
        /// Event loops sending to clients (1 to 64): the first accepts and runs logins, logged-in clients are spread over all (replaying ones over the others); 2 keeps replays from a journal off the live clients' path.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=64))]
        threads: u16,
        /// Busy-poll for 1 ms after any activity before sleeping (lower latency, spins a core while busy).
        #[arg(long)]
        busy_poll: bool,
        /// The event loop writes every batch (by default, with up to 8
        /// clients, the publishing thread writes small batches itself while
        /// the loop sleeps: one wake-up less per batch).
        #[arg(long)]
        loop_writes: bool,
        /// The listen queue: connections the kernel holds until they are
        /// accepted (at least 1; the kernel caps it at net.core.somaxconn).
        #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
        listen_backlog: u32,
        /// Connections that have not logged in, at most (at least 1); past it,
        /// the oldest of them is closed to make room.
        #[arg(long, default_value_t = 128, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
        max_unauthenticated: u64,
        /// Connections that have not logged in from one IP address, at most
        /// (at least 1); past it, that address's oldest one is closed.
        #[arg(long, default_value_t = 16, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
        max_unauthenticated_per_peer: u64,
        /// The most data frames one retransmission reply covers (protocol
        /// section 9.2's cap; at least 1).
        #[arg(long, default_value_t = tickwire::session::RETRANSMIT_CAP, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
        retransmit_cap: u64,
        #[command(flatten)]
        datagrams: dgram::FeedArgs,
        #[command(flatten)]
        security: security::ServerArgs,
        #[command(flatten)]
        journal: journal::JournalArgs,
    },
    /// Subscribe to a server: JSON lines of every frame and event, or a status line per second.
    ///
    /// Over TCP (--connect, a fail-over list A,B,C of servers of one session:
    /// the origin and its relays), or over datagrams (--multicast or --udp,
    /// with --retransmit for what the lines lost).
    Subscribe {
        /// Server address (IP:PORT or HOST:PORT), or a comma-separated
        /// fail-over list: when one fails the next is logged in to at once
        /// with the next sequence needed (backoff only after all failed).
        #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR[,ADDR...]", value_delimiter = ',', allow_negative_numbers = true, value_parser = args::address)]
        connect: Vec<SocketAddr>,
        /// First sequence wanted (0: live data only).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Print every frame and client event as a JSON line (protocol
        /// section 7) instead of a status line. Session ids are JSON numbers
        /// (u64; stderr shows them as hex and decimal): above 2^53 JavaScript
        /// and jq lose precision, so read them as 64-bit integers.
        #[arg(long)]
        json: bool,
        /// Stop after this many seconds (greater than 0; default: until Ctrl-C, SIGTERM or the client gives up).
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = args::seconds)]
        duration: Option<Duration>,
        /// Retries after a failed connection attempt before giving up (0: give up after the first failure; default: never give up).
        #[arg(long)]
        max_retries: Option<u32>,
        /// Busy-poll for the lowest latency (spins one core).
        #[arg(long)]
        busy_poll: bool,
        #[command(flatten)]
        datagrams: dgram::ReceiveArgs,
        #[command(flatten)]
        security: security::ClientArgs,
    },
    /// Relay a session: subscribe upstream, serve it again (protocol section 10).
    ///
    /// The data frames go out byte for byte as received, under the upstream's
    /// session id; a range the upstream could not supply reaches this relay's
    /// clients as the same gap. Heartbeats only while the upstream is alive;
    /// when the upstream session changes, clients get EndOfSession and log in
    /// again. Relays chain. Prints `listening ADDR` on stdout once serving.
    Relay {
        /// The upstream: a server of the session, or a comma-separated
        /// fail-over list. With --upstream-multicast or --upstream-udp, the
        /// (first) server to recover lost datagrams from.
        #[arg(long, required = true, value_name = "UPSTREAM[,UPSTREAM2...]", value_delimiter = ',', allow_negative_numbers = true, value_parser = args::address)]
        connect: Vec<SocketAddr>,
        /// Take the upstream from this multicast group (line A) instead of a TCP login.
        #[arg(long, value_name = "GROUP:PORT", value_parser = args::address, conflicts_with = "upstream_udp")]
        upstream_multicast: Option<SocketAddr>,
        /// The upstream's second multicast group (line B).
        #[arg(long, value_name = "GROUP:PORT", value_parser = args::address, requires = "upstream_multicast")]
        upstream_multicast_b: Option<SocketAddr>,
        /// The IPv4 address of the interface to join the upstream groups on.
        #[arg(long, value_name = "IFADDR")]
        upstream_multicast_if: Option<std::net::Ipv4Addr>,
        /// Take the upstream from unicast datagrams received on this local address.
        #[arg(long, value_name = "ADDR:PORT", value_parser = args::address)]
        upstream_udp: Option<SocketAddr>,
        /// Address to serve on (IP:PORT or HOST:PORT).
        #[arg(long, default_value = "127.0.0.1:7879", value_name = "ADDR", allow_negative_numbers = true, value_parser = args::address)]
        listen: SocketAddr,
        /// Data frames kept for replay (at least 1).
        #[arg(long, default_value_t = 1 << 20, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
        retain: u64,
        /// Wait at most this many seconds for the first upstream login.
        #[arg(long, default_value = "10", value_name = "SECONDS", allow_negative_numbers = true, value_parser = args::seconds)]
        start_timeout: Duration,
        /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = args::seconds)]
        duration: Option<Duration>,
        #[command(flatten)]
        datagrams: dgram::FeedArgs,
        #[command(flatten)]
        security: security::ServerArgs,
        #[command(flatten)]
        upstream_security: security::ClientArgs,
        #[command(flatten)]
        journal: journal::JournalArgs,
    },
    /// Run an in-process server and clients for a while and show what happens.
    Demo {
        /// Messages per second to publish (at least 1).
        #[arg(long, default_value_t = 500_000, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
        rate: u64,
        /// Subscribing clients (1 to 256).
        #[arg(long, default_value_t = 4, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=256))]
        clients: u16,
        /// Seconds to run (greater than 0).
        #[arg(long, default_value = "10", value_name = "SECONDS", allow_negative_numbers = true, value_parser = args::seconds)]
        duration: Duration,
        /// Threads that run the clients that keep up, each driving its share
        /// of them in one poll loop (default: one per 8 clients; as many as
        /// --clients gives every client a thread). The slow client has one
        /// more of its own.
        #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=256))]
        client_threads: Option<u16>,
        /// Make the last client fall behind (it is skipped while slow and sees gaps).
        #[arg(long)]
        slow_client: bool,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run the benchmarks and print one table, each figure against its baseline.
    Bench {
        /// Seconds per network case (greater than 0).
        #[arg(long, default_value = "2", allow_negative_numbers = true, value_parser = args::seconds)]
        seconds: Duration,
        /// Message rate of the latency case (at least 1).
        #[arg(long, default_value_t = 500_000, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
        rate: u64,
        /// Size of the decode/encode stream in MiB (1 to 1024).
        #[arg(long, default_value_t = 64, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
        stream_mib: u16,
        /// Print the table as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Record a server's data frames into a file `dump` reads, across reconnects.
    ///
    /// Built on the reference client: after a lost connection it reconnects
    /// with backoff and logs in with the next sequence it needs, so the file
    /// holds every data frame exactly once, in sequence order, byte-identical
    /// to what the server sent. Control frames are not kept, except one
    /// LoginAccepted (written by the recorder, with the server's session_id and
    /// first sequence) at the start and at each new session, so that `dump`
    /// knows the session. A range the server could not replay is reported on
    /// stderr and in the summary; `dump` shows it as a gap too, unless it
    /// lies before the file's first frame (--from older than the server
    /// retains).
    ///
    /// The output is never lost: an existing file is refused unless
    /// --append or --force, and the file is created (or extended, or
    /// replaced) only when the first data frame arrives, so a run stopped
    /// before one (Ctrl-C, no server, another session) leaves it as it was
    /// and creates none. That it can be written is checked before
    /// connecting. Ctrl-C or SIGTERM ends the file on a whole frame, flushed.
    Record {
        /// Server address (IP:PORT or HOST:PORT), or a comma-separated
        /// fail-over list of servers of one session.
        #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR[,ADDR...]", value_delimiter = ',', allow_negative_numbers = true, value_parser = args::address)]
        connect: Vec<SocketAddr>,
        /// First sequence wanted (0: live data only).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Output file (`-` for stdout); an existing file is refused unless --append or --force.
        #[arg(short, long)]
        output: PathBuf,
        /// Continue the recording in the output file: log in from its last
        /// sequence + 1 and append. The server must serve the file's
        /// (last) session: another session is an error and the file is left
        /// as it was. A frame cut short at the file's end (a killed
        /// recorder) is replaced; a missing file starts a new recording.
        /// Over TCP only.
        #[arg(long, conflicts_with_all = ["force", "from"])]
        append: bool,
        /// Replace an existing output file (when the first data frame arrives).
        #[arg(long)]
        force: bool,
        /// Stop after exactly this many data frames (at least 1).
        #[arg(long, conflicts_with = "duration", allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Stop after this many seconds (greater than 0).
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = args::seconds)]
        duration: Option<Duration>,
        /// Retries after a failed connection attempt before giving up (0: give up after the first failure; default: never give up).
        #[arg(long)]
        max_retries: Option<u32>,
        #[command(flatten)]
        datagrams: dgram::ReceiveArgs,
        #[command(flatten)]
        security: security::ClientArgs,
    },
    /// Make a key for authenticated logins (protocol section 11).
    ///
    /// 32 random bytes from the operating system are written as 64 hex
    /// digits to a new file (never overwritten) readable by its owner only
    /// (0600). Prints the line to add to the server's credentials file
    /// (`KEY_ID:SHA256[:PERMS]`), never the secret.
    Keygen {
        /// The key's name: 1 to 16 characters from A-Z a-z 0-9 - _ .
        #[arg(long, value_parser = keygen::key_id)]
        key_id: tickwire::wire::KeyId,
        /// The file to create for the secret (it must not exist).
        #[arg(long)]
        secret_file: PathBuf,
        /// What the key may open: subscribe, retransmit, or both
        /// (comma-separated; default: both, no list in the line).
        #[arg(long, value_parser = keygen::permissions)]
        permissions: Option<tickwire::session::auth::Permissions>,
    },
}

impl Command {
    /// The subcommand's name, as typed (for log lines).
    fn name(&self) -> &'static str {
        match self {
            Command::Gen { .. } => "gen",
            Command::Dump { .. } => "dump",
            Command::Export { .. } => "export",
            Command::Journal { .. } => "journal",
            Command::Serve { .. } => "serve",
            Command::Subscribe { .. } => "subscribe",
            Command::Record { .. } => "record",
            Command::Relay { .. } => "relay",
            Command::Demo { .. } => "demo",
            Command::Bench { .. } => "bench",
            Command::Keygen { .. } => "keygen",
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SlowArg {
    Skip,
    Disconnect,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that run many clients (demo, bench) or none log warnings
    // and errors only, unless -v.
    let quieter = u8::from(!matches!(
        cli.command,
        Command::Serve { .. }
            | Command::Subscribe { .. }
            | Command::Record { .. }
            | Command::Relay { .. }
    ));
    logging::init(
        cli.command.name(),
        logging::level(cli.verbose, cli.quiet),
        logging::level(cli.verbose, cli.quiet.saturating_add(quieter)),
    );
    let result = match cli.command {
        Command::Gen {
            count,
            seed,
            corrupt,
            instruments,
            output,
        } => gen(count, seed, corrupt, instruments, &output),
        Command::Dump { file, pretty } => dump(&file, pretty),
        Command::Keygen {
            key_id,
            secret_file,
            permissions,
        } => keygen::run(&key_id, &secret_file, permissions),
        Command::Journal { dir, json } => journal::run(&dir, json),
        Command::Export {
            file,
            format,
            output,
            compression,
        } => export::run(&file, format, &output, compression),
        Command::Serve {
            listen,
            rate,
            instruments,
            retain,
            slow_policy,
            seed,
            duration,
            threads,
            busy_poll,
            loop_writes,
            listen_backlog,
            max_unauthenticated,
            max_unauthenticated_per_peer,
            retransmit_cap,
            datagrams,
            security,
            journal,
        } => security::load(Some(&security), None).and_then(|()| {
            let mut config = ServerConfig {
                listen,
                listen_backlog,
                datagrams: datagrams.output(),
                journal: journal.settings(),
                mio: LoopOptions {
                    threads: usize::from(threads),
                    busy_poll: busy_poll.then_some(Duration::from_millis(1)),
                    publisher_writes: !loop_writes,
                    datagram_sender: datagrams.sender(),
                    ..LoopOptions::default()
                },
                ..ServerConfig::default()
            };
            let core = &mut config.core;
            core.retain = usize::try_from(retain).unwrap_or(usize::MAX);
            core.max_unauthenticated = usize::try_from(max_unauthenticated).unwrap_or(usize::MAX);
            core.max_unauthenticated_per_peer =
                usize::try_from(max_unauthenticated_per_peer).unwrap_or(usize::MAX);
            core.session.slow_policy = match slow_policy {
                SlowArg::Skip => SlowPolicy::Skip,
                SlowArg::Disconnect => SlowPolicy::Disconnect,
            };
            core.session.retransmit_cap = retransmit_cap;
            security::server(&mut config);
            serve(config, rate, instruments, seed, duration)
        }),
        Command::Subscribe {
            connect,
            from,
            json,
            duration,
            max_retries,
            busy_poll,
            datagrams,
            security,
        } => security::load(None, Some(&security)).and_then(|()| match datagrams.config(from) {
            Some(config) => dgram::subscribe(config, json, duration),
            None => subscribe::run(&connect, from, json, duration, max_retries, busy_poll),
        }),
        Command::Record {
            connect,
            from,
            output,
            append,
            force,
            count,
            duration,
            max_retries,
            datagrams,
            security,
        } => security::load(None, Some(&security)).and_then(|()| {
            let mode = match (append, force) {
                (true, _) => recording::Mode::Append,
                (false, true) => recording::Mode::Force,
                (false, false) => recording::Mode::New,
            };
            match datagrams.config(from) {
                Some(config) => dgram::record(config, &output, mode, count, duration),
                None => record::run(&connect, from, &output, count, duration, max_retries, mode),
            }
        }),
        Command::Relay {
            connect,
            upstream_multicast,
            upstream_multicast_b,
            upstream_multicast_if,
            upstream_udp,
            listen,
            retain,
            start_timeout,
            duration,
            datagrams,
            security,
            upstream_security,
            journal,
        } => security::load(Some(&security), Some(&upstream_security)).and_then(|()| {
            let upstream = upstream_multicast.or(upstream_udp).map(|line_a| {
                let mut feed = tickwire::net::DatagramClientConfig::new(line_a);
                feed.line_b = upstream_multicast_b;
                feed.interface = upstream_multicast_if;
                feed.retransmit = connect.first().copied();
                feed.receiver.window = 1 << 16;
                feed
            });
            relay::run(
                &connect,
                upstream,
                listen,
                retain,
                start_timeout,
                duration,
                (&datagrams, &journal),
            )
        }),
        Command::Demo {
            rate,
            clients,
            duration,
            client_threads,
            slow_client,
            json,
        } => demo::run(
            rate,
            usize::from(clients),
            duration,
            client_threads.map_or(usize::from(clients).div_ceil(8), usize::from),
            slow_client,
            json,
        ),
        Command::Bench {
            seconds,
            rate,
            stream_mib,
            json,
        } => bench::run(seconds.as_secs_f64(), rate, usize::from(stream_mib), json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`tickwire dump x | head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            logging::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens `path` for writing (`-`: stdout); errors name the path.
fn open_output(path: &Path) -> io::Result<Box<dyn Write>> {
    if path.as_os_str() == "-" {
        Ok(Box::new(io::stdout().lock()))
    } else {
        File::create(path)
            .map(|f| Box::new(f) as Box<dyn Write>)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))
    }
}

/// An error writing to `path`, naming it (a closed stdout stays a broken pipe).
fn write_error(path: &Path, e: io::Error) -> io::Error {
    if path.as_os_str() == "-" {
        return e;
    }
    io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
}

/// Opens a recording (`-`: stdin), or a journal directory as one
/// recording (`tickwire::journal::Recording`); errors name the path.
fn open_input(path: &Path) -> io::Result<Box<dyn Read>> {
    if path.as_os_str() == "-" {
        Ok(Box::new(io::stdin().lock()))
    } else if path.is_dir() {
        tickwire::journal::Recording::open(path)
            .map(|r| Box::new(r) as Box<dyn Read>)
            .map_err(io::Error::from)
    } else {
        File::open(path)
            .map(|f| Box::new(f) as Box<dyn Read>)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))
    }
}

/// First timestamp of generated streams: 2023-11-14T22:13:20Z.
const GEN_EPOCH_NS: u64 = 1_700_000_000_000_000_000;

fn gen(count: u64, seed: u64, corrupt: f64, instruments: u32, output: &Path) -> io::Result<()> {
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
            out.write_all(&chunk).map_err(|e| write_error(output, e))?;
            bytes += chunk.len() as u64;
            chunk.clear();
        }
    }
    out.write_all(&chunk).map_err(|e| write_error(output, e))?;
    bytes += chunk.len() as u64;
    out.flush().map_err(|e| write_error(output, e))?;
    logging::info!(
        "{count} frames, {bytes} bytes, seed {seed}; damaged: {flips} bit flips, \
         {truncations} truncations, {junk} junk runs"
    );
    Ok(())
}

fn dump(path: &Path, pretty: bool) -> io::Result<()> {
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
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
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
            if pretty {
                writeln!(out, "{}", pretty::event(&event))?;
            } else {
                writeln!(out, "{}", JsonEvent(&event))?;
            }
        }
        if parser.is_finished() {
            break;
        }
    }
    out.flush()?;
    let s = parser.stats();
    let t = parser.tracker().stats();
    let verdict = not_a_recording(path, &s);
    logging::info!(
        "{} frames ({} quotes, {} trades, {} heartbeats, {} logins, {} login_accepted, \
         {} end_of_session, {} packets, {} retransmits, {} auths, {} rejected), {} frame bytes; discarded {} bytes in {} runs; {} gaps ({} missing), \
         {} duplicates",
        s.frames(),
        s.quotes,
        s.trades,
        s.heartbeats,
        s.logins,
        s.login_accepted,
        s.end_of_session,
        s.packets,
        s.retransmits,
        s.auths,
        s.rejected,
        s.frame_bytes,
        s.discarded_bytes,
        s.discard_runs,
        gaps,
        t.missing,
        duplicates
    );
    verdict
}

/// `dump` and `export` of bytes that hold no frame: an error (exit 1) when
/// not one frame was found and bytes were discarded (an empty input is an
/// empty recording); a warning when more bytes were discarded than were
/// frames.
fn not_a_recording(path: &Path, s: &tickwire::parse::ParseStats) -> io::Result<()> {
    let name = if path.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        path.display().to_string()
    };
    if s.frames() == 0 && s.discarded_bytes > 0 {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "{name} does not look like a tickwire recording: not one frame in its {} bytes",
                s.discarded_bytes
            ),
        ));
    }
    if s.discarded_bytes > s.frame_bytes {
        logging::warning!(
            "{name} is mostly not tickwire frames ({} bytes discarded, {} bytes of frames): is it a tickwire recording?",
            s.discarded_bytes,
            s.frame_bytes
        );
    }
    Ok(())
}

/// Runs the server of `config` (its log goes to stderr) and publishes the
/// synthetic feed into it.
fn serve(
    config: ServerConfig,
    rate: u64,
    instruments: u32,
    seed: u64,
    duration: Option<Duration>,
) -> io::Result<()> {
    let stop = interrupted()?;
    let listen = config.listen;
    let datagrams = config
        .datagrams
        .as_ref()
        .map_or(String::new(), |d| match d.line_b {
            Some(b) => format!(", datagrams to {} and {b}", d.line_a),
            None => format!(", datagrams to {}", d.line_a),
        });
    let journaled = config.journal.is_some();
    let server = Server::bind(config)
        .and_then(Server::spawn)
        .map_err(|e| start_error(e, listen))?;
    println!("listening {}", server.local_addr());
    logging::info!(
        "session {}{}, publishing {rate} msg/s over {instruments} instruments{}; \
         Ctrl-C or SIGTERM stops",
        drive::session_label(server.session_id()),
        if journaled {
            format!(" from sequence {}", server.next_sequence())
        } else {
            String::new()
        },
        datagrams
    );
    let publisher = server.publisher();
    let mut feed = Feed::new(seed, instruments);
    let started = Instant::now();
    let end = deadline(duration);
    let mut published = 0u64;
    let mut refused = 0u64;
    let mut last_refusal: Option<Instant> = None;
    let mut last = ServerStats::default();
    let mut next_status = started + Duration::from_secs(1);
    while !stop.load(Ordering::SeqCst) && end.is_none_or(|end| Instant::now() < end) {
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
            match publisher.publish(batch) {
                Ok(()) => published += n,
                // The journal cannot take it (a full disk): not published,
                // the server goes on; the feed skips these messages.
                Err(PublishError::Journal(why)) => {
                    refused += n;
                    published += n;
                    if last_refusal.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        logging::warning!("{why} ({refused} messages not published so far)");
                        last_refusal = Some(Instant::now());
                    }
                }
                Err(_) => break,
            }
        }
        if Instant::now() >= next_status {
            let stats = server.stats();
            logging::info!("{}", status_line(&last, &stats));
            last = stats;
            next_status += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = server.shutdown()?;
    logging::info!(
        "stopped after {:.1} s{}: {} frames published{}, {} sent, {} bytes; {} slow marks; \
         closed: {} slow, {} login timeout, {} bad data, {} unexpected frame, {} unauthenticated limit, \
         {} no progress, {} shutdown; {} datagrams sent, {} dropped; {} batches written by the publisher",
        started.elapsed().as_secs_f64(),
        if stop.load(Ordering::SeqCst) { " (signal)" } else { "" },
        stats.frames_published,
        if refused > 0 {
            format!(" ({refused} refused by the journal)")
        } else {
            String::new()
        },
        stats.frames_sent,
        stats.bytes_sent,
        stats.slow_marks,
        stats.closed_for(CloseReason::Slow),
        stats.closed_for(CloseReason::LoginTimeout),
        stats.closed_for(CloseReason::BadData),
        stats.closed_for(CloseReason::UnexpectedFrame),
        stats.closed_for(CloseReason::UnauthenticatedLimit),
        stats.closed_for(CloseReason::NoProgress),
        stats.closed_for(CloseReason::Shutdown),
        stats.datagrams_sent,
        stats.datagrams_dropped,
        stats.direct_batches,
    );
    Ok(())
}

fn status_line(last: &ServerStats, now: &ServerStats) -> String {
    format!(
        "{} clients | {} msg/s published | {} frames/s, {:.1} MB/s sent | {} slow marks | {} skipped batches",
        now.clients,
        now.frames_published - last.frames_published,
        now.frames_sent - last.frames_sent,
        (now.bytes_sent - last.bytes_sent) as f64 / 1e6,
        now.slow_marks,
        now.skipped_batches,
    )
}

/// A server that did not start: its journal's error as it is (it names
/// the directory or file and what is wrong), anything else as a listen
/// error.
pub(crate) fn start_error(e: io::Error, listen: SocketAddr) -> io::Error {
    let journal = e
        .get_ref()
        .is_some_and(|inner| inner.is::<tickwire::journal::JournalError>())
        || e.to_string().starts_with("journal");
    if journal {
        e
    } else {
        io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}"))
    }
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP set the returned flag (ctrlc's
/// `termination` feature).
fn interrupted() -> io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).map_err(io::Error::other)?;
    Ok(stop)
}

/// When a run of `duration` started now ends (`None`: never; a duration too
/// long for the clock also never ends).
fn deadline(duration: Option<Duration>) -> Option<Instant> {
    duration.and_then(|d| Instant::now().checked_add(d))
}
