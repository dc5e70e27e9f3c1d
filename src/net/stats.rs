//! The server's counters ([`ServerStats`], both servers): kept by the
//! server core and by the drivers, read from any thread.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "net")]
use std::{
    sync::{atomic::AtomicBool, Mutex, PoisonError},
    vec::Vec,
};

use crate::session::{CloseReason, CoreStats};

/// A snapshot of the server's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ServerStats {
    /// Connections now, logged in or not (see
    /// [`unauthenticated`](Self::unauthenticated)).
    pub clients: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Data frames published.
    pub frames_published: u64,
    /// Data frames queued whole to clients, replay included.
    pub frames_sent: u64,
    /// Bytes written to client sockets.
    pub bytes_sent: u64,
    /// Of those, bytes the mio server sent from the journal's files with
    /// `sendfile` (replays from disk over plain TCP on Linux; see
    /// [`ServerCore::set_file_ranges`](crate::session::ServerCore::set_file_ranges)).
    /// Always 0 on the tokio server and under TLS.
    #[cfg_attr(feature = "serde", serde(default))]
    pub file_bytes_sent: u64,
    /// Times a client was marked slow.
    pub slow_marks: u64,
    /// Batches a slow client was skipped for.
    pub skipped_batches: u64,
    /// Data frames slow clients were skipped for: the gaps they were told
    /// of. With [`replay_trimmed`](Self::replay_trimmed), every data frame a
    /// logged-in client was not sent is counted here.
    #[cfg_attr(feature = "serde", serde(default))]
    pub skipped_frames: u64,
    /// Frames replays could not send because the retention dropped them first.
    pub replay_trimmed: u64,
    /// Times accepting paused on EMFILE / ENFILE.
    pub accept_pauses: u64,
    /// The most bytes ever queued in user space for one client (never more
    /// than the core's [`queue_limit`](crate::session::ServerSessionConfig::queue_limit)).
    pub peak_client_queue: u64,
    /// Connections closed, by [`CloseReason`] (in the order of [`CloseReason::ALL`]).
    pub closed: [u64; CloseReason::ALL.len()],
    /// Connections now that have not logged in: those counted against
    /// [`CoreConfig::max_unauthenticated`](crate::session::CoreConfig::max_unauthenticated)
    /// (at most that many) and those still within their
    /// [`admission_grace`](crate::session::CoreConfig::admission_grace).
    pub unauthenticated: u64,
    /// Of the connections closed for
    /// [`CloseReason::UnauthenticatedLimit`], those displaced by the
    /// per-peer limit
    /// ([`CoreConfig::max_unauthenticated_per_peer`](crate::session::CoreConfig::max_unauthenticated_per_peer));
    /// the rest were displaced by the overall limit.
    pub displaced_per_peer: u64,
    /// Datagrams sent by the datagram output, counting each line's copy.
    pub datagrams_sent: u64,
    /// Datagrams the datagram output could not send (a full send buffer,
    /// an unreachable line), counting each line's copy: receivers recover
    /// them by retransmission.
    pub datagrams_dropped: u64,
    /// System calls the datagram output made to send them (`sendmmsg` or
    /// `send_to`).
    pub datagram_syscalls: u64,
    /// Retransmission connections now (protocol section 9; at most
    /// [`CoreConfig::max_retransmission_connections`](crate::session::CoreConfig::max_retransmission_connections),
    /// not counted against `max_clients`).
    pub retransmission_connections: u64,
    /// Published batches a publishing thread wrote to the TCP clients
    /// itself, the mio event loop being asleep (one event loop, at most 8
    /// logged-in clients, none replaying, batches up to 64 KiB: see
    /// `LoopOptions::publisher_writes`); the others went through the loop.
    /// Always 0 on the tokio server.
    #[cfg_attr(feature = "serde", serde(default))]
    pub direct_batches: u64,
}

impl ServerStats {
    /// Connections closed for `reason`.
    #[must_use]
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed.get(reason.index()).copied().unwrap_or(0)
    }
}

/// Counters shared with handles on other threads: what the drivers count
/// themselves (accept pauses, datagrams, direct writes), and each mio event
/// loop's server-core counters as of its last turn.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(super) accept_pauses: AtomicU64,
    pub(super) datagrams_sent: AtomicU64,
    pub(super) datagrams_dropped: AtomicU64,
    pub(super) datagram_syscalls: AtomicU64,
    pub(super) direct_batches: AtomicU64,
    /// The mio server's: stop the event loops.
    #[cfg(feature = "net")]
    pub(super) stop: AtomicBool,
    /// A relay's upstream is lost: no idle Heartbeats or Packet-only
    /// datagrams (protocol section 10.3). False (alive) for an origin.
    #[cfg(feature = "net")]
    pub(super) upstream_down: AtomicBool,
    /// The session id now (a relay's changes with its upstream's).
    #[cfg(feature = "net")]
    pub(super) session_id: AtomicU64,
    /// A graceful stop keeps the session (the mio server with a journal):
    /// no EndOfSession.
    #[cfg(feature = "net")]
    pub(super) keep_session: AtomicBool,
    /// Each event loop's server-core counters as of its last turn (the mio
    /// server; loop 0 accepts and counts every publish once).
    #[cfg(feature = "net")]
    pub(super) cores: Mutex<Vec<CoreStats>>,
}

pub(super) fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Shared {
    /// Loop `index`'s core counters now.
    #[cfg(feature = "net")]
    pub(super) fn set_core(&self, index: usize, stats: CoreStats) {
        let mut cores = self.cores.lock().unwrap_or_else(PoisonError::into_inner);
        if cores.len() <= index {
            cores.resize(index + 1, CoreStats::default());
        }
        if let Some(place) = cores.get_mut(index) {
            *place = stats;
        }
    }

    /// Logged-in clients of the loops other than the first (they count
    /// against `max_clients` where logins happen).
    #[cfg(feature = "net")]
    pub(super) fn clients_of_workers(&self) -> u64 {
        let cores = self.cores.lock().unwrap_or_else(PoisonError::into_inner);
        cores.iter().skip(1).map(|c| c.clients).sum()
    }

    /// The counters of every loop together: sums, but a publish counted
    /// once (every loop's core sees every batch) and the peak queue the
    /// highest of any.
    #[cfg(feature = "net")]
    pub(super) fn snapshot_of_loops(&self) -> ServerStats {
        let cores = self
            .cores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut sum = CoreStats::default();
        for (i, c) in cores.iter().enumerate() {
            if i == 0 {
                sum.frames_published = c.frames_published;
            }
            sum.accepted += c.accepted;
            sum.open += c.open;
            sum.clients += c.clients;
            sum.retransmission_connections += c.retransmission_connections;
            sum.unauthenticated += c.unauthenticated;
            sum.in_grace += c.in_grace;
            sum.frames_sent += c.frames_sent;
            sum.bytes_sent += c.bytes_sent;
            sum.file_bytes_sent += c.file_bytes_sent;
            sum.slow_marks += c.slow_marks;
            sum.skipped_batches += c.skipped_batches;
            sum.skipped_frames += c.skipped_frames;
            sum.replay_trimmed += c.replay_trimmed;
            sum.displaced_per_peer += c.displaced_per_peer;
            sum.displaced_overall += c.displaced_overall;
            sum.peak_queue = sum.peak_queue.max(c.peak_queue);
            for (total, n) in sum.closed.iter_mut().zip(c.closed) {
                *total += n;
            }
        }
        self.snapshot_with(&sum)
    }

    /// The counters of a server whose connections a server core holds:
    /// the core's, and this one's for the rest (datagrams, accept pauses).
    pub(crate) fn snapshot_with(&self, core: &CoreStats) -> ServerStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            clients: core.open,
            accepted: core.accepted,
            frames_published: core.frames_published,
            frames_sent: core.frames_sent,
            bytes_sent: core.bytes_sent,
            file_bytes_sent: core.file_bytes_sent,
            slow_marks: core.slow_marks,
            skipped_batches: core.skipped_batches,
            skipped_frames: core.skipped_frames,
            replay_trimmed: core.replay_trimmed,
            accept_pauses: get(&self.accept_pauses),
            peak_client_queue: core.peak_queue,
            closed: core.closed,
            unauthenticated: core.unauthenticated + core.in_grace,
            displaced_per_peer: core.displaced_per_peer,
            datagrams_sent: get(&self.datagrams_sent),
            datagrams_dropped: get(&self.datagrams_dropped),
            datagram_syscalls: get(&self.datagram_syscalls),
            retransmission_connections: core.retransmission_connections,
            direct_batches: get(&self.direct_batches),
        }
    }
}
