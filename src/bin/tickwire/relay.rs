//! `tickwire relay`: subscribe upstream, serve the same session again
//! (protocol section 10), with [`tickwire::net::Relay`].

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tickwire::net::{DatagramClientConfig, Relay, RelayConfig};

use crate::dgram::FeedArgs;
use crate::drive::servers;
use crate::drive::session_label;
use crate::journal::JournalArgs;
use crate::logging::info;

pub(crate) fn run(
    connect: &[SocketAddr],
    datagram_upstream: Option<DatagramClientConfig>,
    listen: SocketAddr,
    retain: u64,
    start_timeout: Duration,
    duration: Option<Duration>,
    (datagrams, journal): (&FeedArgs, &JournalArgs),
) -> io::Result<()> {
    let stop = crate::interrupted()?;
    let (upstream, mut config) = match datagram_upstream {
        Some(feed) => (
            format!(
                "datagrams on {} (retransmission from {})",
                feed.line_a,
                servers(connect)
            ),
            RelayConfig::from_datagrams(feed, listen),
        ),
        None => (
            servers(connect),
            RelayConfig::new(connect, listen).ok_or_else(|| {
                io::Error::new(ErrorKind::InvalidInput, "--connect needs an address")
            })?,
        ),
    };
    config.server.core.retain = usize::try_from(retain).unwrap_or(usize::MAX);
    config.server.datagrams = datagrams.output();
    config.server.journal = journal.settings();
    config.server.mio.datagram_sender = datagrams.sender();
    config.start_timeout = start_timeout;
    crate::security::server(&mut config.server);
    crate::security::client(&mut config.upstream);
    if let Some(feed) = config.datagram_upstream.as_mut() {
        crate::security::datagram_client(feed)?;
    }
    let relay = Relay::start(config)
        .map_err(|e| io::Error::other(format!("relay of {upstream} on {listen}: {e}")))?;
    println!("listening {}", relay.local_addr());
    info!(
        "session {} from {upstream}{}; Ctrl-C or SIGTERM stops",
        session_label(relay.session_id()),
        datagrams
            .output()
            .map_or(String::new(), |d| format!(", datagrams to {}", d.line_a))
    );
    let started = Instant::now();
    let end = crate::deadline(duration);
    let mut next_status = started + Duration::from_secs(1);
    let mut last = 0;
    while !stop.load(Ordering::SeqCst)
        && end.is_none_or(|end| Instant::now() < end)
        && relay.is_running()
    {
        std::thread::sleep(Duration::from_millis(20));
        if Instant::now() >= next_status {
            let stats = relay.stats();
            let up = relay.upstream_stats();
            info!(
                "{} clients | {} frames/s relayed | upstream: {} gaps ({} missing), {} duplicates, {} connects, {} failovers",
                stats.clients,
                stats.frames_published - last,
                up.gaps,
                up.missing,
                up.duplicates,
                up.connects,
                up.failovers
            );
            last = stats.frames_published;
            next_status += Duration::from_secs(1);
        }
    }
    let signal = stop.load(Ordering::SeqCst);
    let session = relay.session_id();
    let up = relay.upstream_stats();
    let stats = relay
        .shutdown()
        .map_err(|e| io::Error::other(format!("relay of {upstream}: {e}")))?;
    info!(
        "stopped after {:.1} s{}: session {}, {} frames relayed, {} sent, \
         {} datagrams sent; upstream: {} gaps ({} missing), {} duplicates, {} connects, {} failovers",
        started.elapsed().as_secs_f64(),
        if signal { " (signal)" } else { "" },
        session_label(session),
        stats.frames_published,
        stats.frames_sent,
        stats.datagrams_sent,
        up.gaps,
        up.missing,
        up.duplicates,
        up.connects,
        up.failovers
    );
    Ok(())
}
