//! A journaled relay of a datagram feed resuming after an outage longer
//! than its receiver's reorder window catches up over TCP first: the
//! window could not hold the range between the journal's end and the
//! datagrams' live edge (the receiver would give its oldest part up as a
//! gap), so the relay logs in to the retransmission server from the
//! journal's next sequence, as a TCP relay resumes, until it is within a
//! quarter window of the datagrams, then hands over to them.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::io;
use std::time::{Duration, Instant};

use super::{Pump, RelayError, RelayFeed, UPSTREAM_POLL};
use crate::net::client::Client;
use crate::net::client_config::ClientConfig;
use crate::net::datagram::{DatagramClient, DatagramClientConfig};
use crate::net::journaled::Held;

/// The session and sequence the datagram receiver of a relay resuming from
/// `held` starts at: `held`'s own when the datagrams' live edge is within
/// half the receiver's window of it (retransmission recovers the outage)
/// or there is no retransmission server (the outage then reaches the
/// clients as a gap, reported); otherwise where a catch-up over TCP from
/// the retransmission server left off, its frames handed to `feed` (the
/// journal, the clients) as a TCP relay's are. `timeout` bounds the wait
/// for the first datagram and for each step of the catch-up.
pub(super) fn catch_up(
    config: &DatagramClientConfig,
    held: &Held,
    feed: &RelayFeed,
    timeout: Duration,
) -> Result<(u64, u64), RelayError> {
    let resumed = (held.session_id, held.next);
    let Some(server) = config.retransmit else {
        return Ok(resumed);
    };
    // Where the datagrams are: a receiver of the same lines that asks for
    // nothing and resumes nothing (the relay's own comes after it: they
    // share the port).
    let mut probe_config = config.clone();
    probe_config.retransmit = None;
    probe_config.receiver.start = None;
    probe_config.receiver.resume_session = None;
    let window = probe_config.receiver.window.max(1).next_power_of_two() as u64;
    let mut probe = DatagramClient::new(probe_config)
        .map_err(|e| RelayError::Io(io::Error::other(e.to_string())))?;
    let deadline = Instant::now() + timeout;
    while probe.receiver().session().is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RelayError::NoUpstream);
        }
        probe.poll(Some(left.min(UPSTREAM_POLL)), |_| {})?;
    }
    let live = probe.receiver().expected();
    if probe.receiver().session() == Some(held.session_id)
        && live.saturating_sub(held.next) <= window / 2
    {
        return Ok(resumed);
    }
    log::info!(
        "relay: the datagrams are at {live} (session {:#018x}), the journal at {} (session {:#018x}): \
         catching up over TCP from {server} first (the receiver's window is {window})",
        probe.receiver().session().unwrap_or_default(),
        held.next,
        held.session_id,
    );
    let mut upstream = ClientConfig::new(server);
    upstream.from = held.next;
    upstream.resume_session = Some(held.session_id);
    upstream.heartbeat_interval = config.heartbeat_interval;
    upstream.connect_timeout = config.connect_timeout;
    upstream.backoff = config.backoff;
    let mut client = Client::new(upstream)?;
    let mut pump = Pump::resuming(held.session_id, held.next);
    pump.wait_for(&mut client, timeout, |p| p.logins > 0)?;
    pump.flush(feed)?;
    let mut progress = (pump.flushed_next, Instant::now());
    loop {
        probe.poll(Some(Duration::ZERO), |_| {})?;
        let caught_up = pump.session == probe.receiver().session()
            && pump.flushed_next.saturating_add(window / 4) >= probe.receiver().expected();
        if caught_up {
            break;
        }
        if let Some(why) = pump.gave_up.take() {
            return Err(RelayError::GaveUp(why));
        }
        if progress.0 != pump.flushed_next {
            progress = (pump.flushed_next, Instant::now());
        } else if progress.1.elapsed() > timeout {
            return Err(RelayError::GaveUp(format!(
                "catching up over TCP from {server}: nothing new for {timeout:?} at {}",
                pump.flushed_next
            )));
        }
        client.poll(Some(Duration::from_millis(1)), |e| pump.on_event(e))?;
        pump.flush(feed)?;
    }
    client.disconnect(|e| pump.on_event(e));
    pump.flush(feed)?;
    let session_id = pump.session.unwrap_or(held.session_id);
    log::info!(
        "relay: caught up over TCP to {} (session {session_id:#018x}); the datagrams take over",
        pump.flushed_next
    );
    Ok((session_id, pump.flushed_next))
}
