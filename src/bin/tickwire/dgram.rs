//! The datagram options of `serve`, `relay`, `subscribe` and `record`
//! (protocol sections 8 and 9), and `subscribe` / `record` over datagrams
//! with the reference [`DatagramClient`].

use std::io::{self, BufWriter, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tickwire::json::JsonEvent;
use tickwire::net::{
    unix_nanos, DatagramClient, DatagramClientConfig, DatagramClientStats, DatagramOutputConfig,
    DatagramSender, DEFAULT_DATAGRAM_SIZE, MAX_DATAGRAM_SIZE, MIN_DATAGRAM_SIZE,
};
use tickwire::parse::Event;
use tickwire::session::datagram::{DatagramEvent, Line};
use tickwire::Payload;

use crate::args;
use crate::drive::{session_label, STEP};
use crate::logging::{info, warning};
use crate::recording::{Mode, Recording};

/// Where `serve` and `relay` send their datagram feed.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct FeedArgs {
    /// Also send the feed as datagrams to this IP multicast group (line A).
    #[arg(long, value_name = "GROUP:PORT", value_parser = args::address, conflicts_with = "udp")]
    pub(crate) multicast: Option<SocketAddr>,
    /// A second multicast group (line B): every datagram is sent to both.
    #[arg(long, value_name = "GROUP:PORT", value_parser = args::address, requires = "multicast")]
    pub(crate) multicast_b: Option<SocketAddr>,
    /// The IPv4 address of the interface multicast goes out on (default: the routing table's choice).
    #[arg(long, value_name = "IFADDR")]
    pub(crate) multicast_if: Option<Ipv4Addr>,
    /// Also send the feed as datagrams to this unicast address (line A).
    #[arg(long, value_name = "ADDR:PORT", value_parser = args::address)]
    pub(crate) udp: Option<SocketAddr>,
    /// A second unicast destination (line B).
    #[arg(long, value_name = "ADDR:PORT", value_parser = args::address, requires = "udp")]
    pub(crate) udp_b: Option<SocketAddr>,
    /// The largest datagram in bytes (128 to 65,507; default 1,472: an Ethernet MTU less the IPv4 and UDP headers).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DATAGRAM_SIZE as u64, value_parser = clap::value_parser!(u64).range(MIN_DATAGRAM_SIZE as u64..=MAX_DATAGRAM_SIZE as u64))]
    pub(crate) datagram_size: u64,
    /// Multicast TTL (hops; 1 stays on the local network).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=255))]
    pub(crate) ttl: u32,
    /// Send the datagrams from the server's event loop (batches that wait together fill datagrams together) instead of from the publishing thread (the default: no wait for the loop to wake up).
    #[arg(long)]
    pub(crate) datagrams_by_loop: bool,
}

impl FeedArgs {
    /// The server's datagram output, if any line was given.
    pub(crate) fn output(&self) -> Option<DatagramOutputConfig> {
        let (a, b) = match (self.multicast, self.udp) {
            (Some(a), _) => (a, self.multicast_b),
            (None, Some(a)) => (a, self.udp_b),
            (None, None) => return None,
        };
        let mut config = DatagramOutputConfig::new(a);
        config.line_b = b;
        config.interface = self.multicast_if;
        config.max_datagram = usize::try_from(self.datagram_size).unwrap_or(MAX_DATAGRAM_SIZE);
        config.ttl = self.ttl;
        Some(config)
    }

    /// Which thread of the server sends the datagrams.
    pub(crate) fn sender(&self) -> DatagramSender {
        if self.datagrams_by_loop {
            DatagramSender::EventLoop
        } else {
            DatagramSender::Publisher
        }
    }
}

/// Where `subscribe` and `record` receive a datagram feed.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct ReceiveArgs {
    /// Receive datagrams from this IP multicast group (line A) instead of a TCP login.
    #[arg(long, value_name = "GROUP:PORT", value_parser = args::address, conflicts_with = "udp")]
    pub(crate) multicast: Option<SocketAddr>,
    /// A second multicast group (line B): each frame is taken from whichever line brings it first.
    #[arg(long, value_name = "GROUP:PORT", value_parser = args::address, requires = "multicast")]
    pub(crate) multicast_b: Option<SocketAddr>,
    /// The IPv4 address of the interface to join the groups on.
    #[arg(long, value_name = "IFADDR")]
    pub(crate) multicast_if: Option<Ipv4Addr>,
    /// Receive unicast datagrams on this local address (line A) instead of a TCP login.
    #[arg(long, value_name = "ADDR:PORT", value_parser = args::address)]
    pub(crate) udp: Option<SocketAddr>,
    /// A second local unicast address (line B).
    #[arg(long, value_name = "ADDR:PORT", value_parser = args::address, requires = "udp")]
    pub(crate) udp_b: Option<SocketAddr>,
    /// The TCP server to recover lost datagrams from (protocol section 9):
    /// the publisher, or any server of the session. Without it, a lost
    /// range that the other line does not fill is reported as a gap.
    #[arg(long, value_name = "ADDR", value_parser = args::address)]
    pub(crate) retransmit: Option<SocketAddr>,
    /// The reorder window in frames (16 to 16,777,216): frames held while
    /// a hole before them is recovered. It must hold what arrives during a
    /// recovery (about rate × 10 ms), and with --from, the range before the
    /// first datagram; a hole pushed out of it is reported as a gap.
    #[arg(long, value_name = "FRAMES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(16..=1 << 24))]
    pub(crate) window: u64,
}

impl ReceiveArgs {
    /// The client's settings, if a datagram line was given.
    pub(crate) fn config(&self, from: u64) -> Option<DatagramClientConfig> {
        let (a, b) = match (self.multicast, self.udp) {
            (Some(a), _) => (a, self.multicast_b),
            (None, Some(a)) => (a, self.udp_b),
            (None, None) => return None,
        };
        let mut config = DatagramClientConfig::new(a);
        config.line_b = b;
        config.interface = self.multicast_if;
        config.retransmit = self.retransmit;
        config.receiver.window = usize::try_from(self.window).unwrap_or(1 << 16);
        if from > 0 {
            config.receiver.start = Some(from);
        }
        Some(config)
    }
}

fn line_name(line: Line) -> &'static str {
    match line {
        Line::A => "a",
        _ => "b",
    }
}

/// One datagram event as one JSON object (no newline): frames, gaps, new
/// sessions and discards as `dump` prints them (protocol section 7),
/// EndOfSession as `subscribe` prints it over TCP.
fn event_json(event: &DatagramEvent) -> Option<String> {
    Some(match event {
        DatagramEvent::Frame(copy) => JsonEvent(&Event::Frame(copy.message()?)).to_string(),
        DatagramEvent::Gap(g) => JsonEvent(&Event::Gap(*g)).to_string(),
        DatagramEvent::NewSession {
            session_id,
            sequence,
        } => JsonEvent(&Event::NewSession {
            session_id: *session_id,
            sequence: *sequence,
        })
        .to_string(),
        DatagramEvent::EndOfSession { sequence } => {
            format!(r#"{{"type":"end_of_session","sequence":{sequence}}}"#)
        }
        DatagramEvent::Discarded { discard, .. } => {
            JsonEvent(&Event::Discarded(*discard)).to_string()
        }
        DatagramEvent::LineSilent { line } => {
            format!(r#"{{"type":"line_silent","line":"{}"}}"#, line_name(*line))
        }
        DatagramEvent::LineAlive { line } => {
            format!(r#"{{"type":"line_alive","line":"{}"}}"#, line_name(*line))
        }
        DatagramEvent::FeedDead => r#"{"type":"feed_dead"}"#.to_string(),
        _ => return None,
    })
}

/// Polls `client` until `on_event` says stop (`Ok(true)`), the stop flag is
/// set or `end` passes; returns why. `on_event` gets each event, and `None`
/// after each poll.
fn drive(
    client: &mut DatagramClient,
    end: Option<Instant>,
    mut on_event: impl FnMut(&DatagramClient, Option<DatagramEvent>) -> io::Result<bool>,
) -> io::Result<&'static str> {
    let stop = crate::interrupted()?;
    let mut events = Vec::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok("signal");
        }
        let now = Instant::now();
        if end.is_some_and(|end| now >= end) {
            return Ok("duration elapsed");
        }
        let wait = end.map_or(STEP, |end| STEP.min(end.saturating_duration_since(now)));
        client.poll(Some(wait), |e| events.push(e))?;
        for event in events.drain(..) {
            if on_event(client, Some(event))? {
                return Ok("count reached");
            }
        }
        on_event(client, None)?;
    }
}

fn summary(frames: u64, s: &DatagramClientStats) -> String {
    let r = &s.receiver;
    format!(
        "{frames} data frames over datagrams ({} on line A, {} on line B); \
         {} gaps ({} missing), {} duplicates ({} on A, {} on B), {} reordered, {} recovered by \
         {} retransmit requests over {} connects; {} datagrams discarded",
        r.datagrams[0],
        r.datagrams[1],
        r.gaps,
        r.unrecoverable,
        r.duplicates[0] + r.duplicates[1],
        r.duplicates[0],
        r.duplicates[1],
        r.reordered,
        r.recovered,
        r.requests,
        s.connects,
        r.discarded_datagrams
    )
}

fn open(mut config: DatagramClientConfig) -> io::Result<DatagramClient> {
    crate::security::datagram_client(&mut config)?;
    let line = config.line_a;
    DatagramClient::new(config)
        .map_err(|e| io::Error::other(format!("cannot receive datagrams on {line}: {e}")))
}

/// `tickwire subscribe` over datagrams.
pub(crate) fn subscribe(
    config: DatagramClientConfig,
    json: bool,
    duration: Option<Duration>,
) -> io::Result<()> {
    let mut client = open(config)?;
    info!("receiving datagrams on {:?}", client.local_addrs());
    let end = crate::deadline(duration);
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let (mut frames, mut total, mut next_status) =
        (0u64, 0u64, Instant::now() + Duration::from_secs(1));
    let ended = drive(&mut client, end, |_, event| {
        let Some(event) = event else {
            out.flush()?;
            if !json && Instant::now() >= next_status {
                info!("{frames} frames/s over datagrams");
                frames = 0;
                next_status += Duration::from_secs(1);
            }
            return Ok(false);
        };
        if let DatagramEvent::Frame(_) = event {
            frames += 1;
            total += 1;
        }
        if !json {
            match &event {
                DatagramEvent::Gap(g) => {
                    warning!("gap {}..={} ({} frames)", g.first, g.last, g.len())
                }
                DatagramEvent::LineSilent { line } => {
                    warning!("line {} silent", line_name(*line));
                }
                DatagramEvent::LineAlive { line } => {
                    info!("line {} alive", line_name(*line));
                }
                DatagramEvent::FeedDead => warning!("feed dead"),
                _ => {}
            }
        }
        if json {
            if let Some(line) = event_json(&event) {
                writeln!(out, "{line}")?;
            }
        }
        Ok(false)
    })?;
    out.flush()?;
    info!("{}; stopped: {ended}", summary(total, &client.stats()));
    Ok(())
}

/// `tickwire record` over datagrams: the data frames in order, each once,
/// after a LoginAccepted naming the session (and one more at each new
/// session), as the TCP recorder writes them.
pub(crate) fn record(
    config: DatagramClientConfig,
    output: &Path,
    mode: Mode,
    count: Option<u64>,
    duration: Option<Duration>,
) -> io::Result<()> {
    if mode == Mode::Append {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--append works over TCP (--connect) only",
        ));
    }
    let mut out = Recording::plan(output, mode)?;
    let mut client = open(config)?;
    let end = crate::deadline(duration);
    let target = count.unwrap_or(u64::MAX);
    let (mut frames, mut session) = (0u64, None::<u64>);
    let ended = drive(&mut client, end, |client, event| {
        let Some(event) = event else {
            return Ok(false);
        };
        let login = |out: &mut Recording, session_id: u64, sequence: u64| -> io::Result<()> {
            let mut frame = [0u8; 32];
            let n = tickwire::encode(
                &Payload::LoginAccepted { session_id },
                sequence,
                unix_nanos(),
                &mut frame,
            )
            .map_err(io::Error::other)?;
            out.stage(frame.get(..n).unwrap_or_default())
        };
        match event {
            DatagramEvent::Frame(copy) => {
                if session.is_none() {
                    let id = client.receiver().session().unwrap_or(0);
                    session = Some(id);
                    login(&mut out, id, copy.sequence())?;
                }
                out.write_all(copy.as_bytes())?;
                frames += 1;
                return Ok(frames >= target);
            }
            DatagramEvent::NewSession {
                session_id,
                sequence,
            } => {
                info!(
                    "new session {} from sequence {sequence}",
                    session_label(session_id)
                );
                session = Some(session_id);
                login(&mut out, session_id, sequence)?;
            }
            DatagramEvent::Gap(g) => warning!(
                "gap: sequences {}..={} ({} frames) could not be recovered",
                g.first,
                g.last,
                g.len()
            ),
            _ => {}
        }
        Ok(false)
    })
    .map_err(|e| crate::write_error(output, e))?;
    out.flush().map_err(|e| crate::write_error(output, e))?;
    info!(
        "{} {} {}; stopped: {ended}",
        summary(frames, &client.stats()),
        if out.opened() {
            "written to"
        } else {
            "nothing written:"
        },
        if out.opened() {
            output.display().to_string()
        } else {
            format!("{} not created or changed", output.display())
        }
    );
    Ok(())
}
