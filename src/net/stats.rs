//! The server's counters: updated by the event loop, read from any thread.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::session::{CloseReason, CoreStats, ServerSessionStats};

const REASONS: usize = CloseReason::ALL.len();

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
    /// than [`ServerConfig::client_queue`](super::ServerConfig::client_queue)).
    pub peak_client_queue: u64,
    /// Connections closed, by [`CloseReason`] (in the order of [`CloseReason::ALL`]).
    pub closed: [u64; REASONS],
    /// Connections now that have not logged in (at most
    /// [`ServerConfig::max_unauthenticated`](super::ServerConfig::max_unauthenticated)).
    pub unauthenticated: u64,
    /// Of the connections closed for
    /// [`CloseReason::UnauthenticatedLimit`], those displaced by the
    /// per-peer limit
    /// ([`ServerConfig::max_unauthenticated_per_peer`](super::ServerConfig::max_unauthenticated_per_peer));
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
    /// [`ServerConfig::max_retransmission_connections`](super::ServerConfig::max_retransmission_connections),
    /// not counted against `max_clients`).
    pub retransmission_connections: u64,
    /// Published batches a publishing thread wrote to the TCP clients
    /// itself, the event loop being asleep (one event loop, at most 8
    /// logged-in clients, none replaying, batches up to 64 KiB: see
    /// [`ServerConfig::publisher_writes`](super::ServerConfig::publisher_writes));
    /// the others went through the loop.
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

/// Counters shared with handles on other threads.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(super) stop: AtomicBool,
    pub(crate) clients: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) frames_published: AtomicU64,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    slow_marks: AtomicU64,
    skipped_batches: AtomicU64,
    skipped_frames: AtomicU64,
    replay_trimmed: AtomicU64,
    pub(super) accept_pauses: AtomicU64,
    pub(super) peak_client_queue: AtomicU64,
    closed: [AtomicU64; REASONS],
    pub(crate) unauthenticated: AtomicU64,
    pub(crate) displaced_per_peer: AtomicU64,
    pub(super) datagrams_sent: AtomicU64,
    pub(super) datagrams_dropped: AtomicU64,
    pub(super) datagram_syscalls: AtomicU64,
    pub(crate) retransmission_connections: AtomicU64,
    pub(super) direct_batches: AtomicU64,
    /// A relay's upstream is lost: no idle Heartbeats or Packet-only
    /// datagrams (protocol section 10.3). False (alive) for an origin.
    pub(super) upstream_down: AtomicBool,
    /// The session id now (a relay's changes with its upstream's).
    pub(super) session_id: AtomicU64,
}

pub(super) fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Shared {
    pub(crate) fn count_close(&self, reason: CloseReason) {
        if let Some(counter) = self.closed.get(reason.index()) {
            add(counter, 1);
        }
    }

    pub(crate) fn add_session(&self, s: &ServerSessionStats) {
        add(&self.frames_sent, s.frames_queued);
        add(&self.bytes_sent, s.bytes_sent);
        add(&self.slow_marks, s.slow_marks);
        add(&self.skipped_batches, s.skipped_batches);
        add(&self.skipped_frames, s.skipped_frames);
        add(&self.replay_trimmed, s.replay_trimmed);
    }

    /// The counters of a server whose connections a server core holds:
    /// the core's, and this one's for the rest (datagrams, accept pauses).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn snapshot_with(&self, core: &CoreStats) -> ServerStats {
        let mut s = self.snapshot();
        s.clients = core.open;
        s.accepted = core.accepted;
        s.frames_published = core.frames_published;
        s.frames_sent = core.frames_sent;
        s.bytes_sent = core.bytes_sent;
        s.slow_marks = core.slow_marks;
        s.skipped_batches = core.skipped_batches;
        s.skipped_frames = core.skipped_frames;
        s.replay_trimmed = core.replay_trimmed;
        s.peak_client_queue = core.peak_queue;
        s.closed = core.closed;
        s.unauthenticated = core.unauthenticated;
        s.displaced_per_peer = core.displaced_per_peer;
        s.retransmission_connections = core.retransmission_connections;
        s
    }

    pub(crate) fn snapshot(&self) -> ServerStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            clients: get(&self.clients),
            accepted: get(&self.accepted),
            frames_published: get(&self.frames_published),
            frames_sent: get(&self.frames_sent),
            bytes_sent: get(&self.bytes_sent),
            slow_marks: get(&self.slow_marks),
            skipped_batches: get(&self.skipped_batches),
            skipped_frames: get(&self.skipped_frames),
            replay_trimmed: get(&self.replay_trimmed),
            accept_pauses: get(&self.accept_pauses),
            peak_client_queue: get(&self.peak_client_queue),
            closed: std::array::from_fn(|i| self.closed.get(i).map_or(0, get)),
            unauthenticated: get(&self.unauthenticated),
            displaced_per_peer: get(&self.displaced_per_peer),
            datagrams_sent: get(&self.datagrams_sent),
            datagrams_dropped: get(&self.datagrams_dropped),
            datagram_syscalls: get(&self.datagram_syscalls),
            retransmission_connections: get(&self.retransmission_connections),
            direct_batches: get(&self.direct_batches),
        }
    }
}
