//! `tickwire subscribe`: the reference client, printing JSON lines of every
//! frame and client event, or a status line per second.

use std::io::{self, BufWriter, ErrorKind, IsTerminal, Write};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tickwire::net::{Client, ClientConfig};
use tickwire::policy::Backoff;
use tickwire::session::{ClientEvent, ClientState};

use crate::drive::{self, client_event_json, drive_client, Narrator, Step};
use crate::logging::info;

/// With stdout not a terminal, buffered JSON lines wait at most this long.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(5);

/// The client settings `subscribe` and `record` share.
pub(crate) fn client_config(
    connect: &[SocketAddr],
    from: u64,
    max_retries: Option<u32>,
) -> io::Result<ClientConfig> {
    let mut config = ClientConfig::with_servers(connect)
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "--connect needs an address"))?;
    config.from = from;
    config.backoff = Backoff::default()
        .with_max_retries(max_retries)
        .with_jitter(u64::from(std::process::id()));
    crate::security::client(&mut config);
    Ok(config)
}

pub(crate) fn run(
    connect: &[SocketAddr],
    from: u64,
    json: bool,
    duration: Option<Duration>,
    max_retries: Option<u32>,
    busy_poll: bool,
) -> io::Result<()> {
    let stop = crate::interrupted()?;
    let end = crate::deadline(duration);
    let mut client = Client::new(client_config(connect, from, max_retries)?)?;
    let mut narrator = Narrator::new(connect, max_retries);
    let stdout = io::stdout();
    let terminal = stdout.is_terminal();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut write_error = None;
    let mut dirty_since: Option<Instant> = None;
    let started = Instant::now();
    let mut next_status = started + Duration::from_secs(1);
    let (mut frames, mut bytes, mut gaps, mut discarded) = (0u64, 0u64, 0u64, 0u64);
    let mut state = client.state();
    let max_wait = if json { FLUSH_AFTER } else { drive::STEP };
    let ended = drive_client(&mut client, &stop, end, max_wait, busy_poll, |step| {
        let Step::Event(event) = step else {
            // Written lines reach stdout at once on a terminal, else within
            // FLUSH_AFTER of the first unflushed one (or when the buffer fills).
            if dirty_since.is_some_and(|t| terminal || t.elapsed() >= FLUSH_AFTER) {
                dirty_since = None;
                if let Err(e) = out.flush() {
                    write_error = Some(e);
                    return ControlFlow::Break(());
                }
            }
            return ControlFlow::Continue(());
        };
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
        narrator.event(&event);
        if json {
            if let Err(e) = writeln!(out, "{}", client_event_json(&event)) {
                write_error = Some(e);
                return ControlFlow::Break(());
            }
            dirty_since.get_or_insert_with(Instant::now);
            return ControlFlow::Continue(());
        }
        if Instant::now() >= next_status && state == ClientState::LoggedIn {
            info!(
                "{} | {frames} frames/s, {:.1} MB/s | so far: {gaps} missing, {discarded} bytes discarded",
                drive::state_name(state),
                bytes as f64 / 1e6
            );
            (frames, bytes) = (0, 0);
            next_status = Instant::now() + Duration::from_secs(1);
        }
        ControlFlow::Continue(())
    })?;
    let flushed = out.flush();
    if let Some(e) = write_error {
        return Err(e);
    }
    flushed?;
    let s = client.stats();
    info!(
        "{} frames ({} quotes, {} trades, {} heartbeats), {} bytes; discarded {} bytes; \
         {} gaps ({} missing), {} duplicates; connection attempts: {} ({} connected), {} failovers; {}; stopped: {}",
        s.parse.frames(),
        s.parse.quotes,
        s.parse.trades,
        s.parse.heartbeats,
        s.parse.frame_bytes,
        s.parse.discarded_bytes,
        s.gaps,
        s.missing,
        s.duplicates,
        narrator.attempts(client.state()),
        s.connects,
        s.failovers,
        drive::state_name(client.state()),
        ended.describe()
    );
    narrator.result(ended)
}
