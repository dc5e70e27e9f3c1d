//! The event loop's input: what publishers, a relay feed and the first
//! loop send it ([`ToLoop`]), the numbering all publishers share
//! ([`Numbering`], with the lock order), and the one call a publisher makes
//! into a sleeping loop ([`DirectWrite`]). The server, the publisher and the
//! relay feed all import this; none of them imports another for it.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError, Weak};

use mio::Waker;

use super::datagram_output::DatagramOutput;
use crate::encode::Sequencer;
use crate::session::Batch;

/// What an event loop receives, in order.
#[derive(Debug)]
pub(super) enum ToLoop {
    /// A published batch (from a publisher, or forwarded by the first loop).
    Batch(Arc<Batch>),
    /// A client that just logged in, handed to a worker loop.
    Client(Box<Handoff>),
    /// A worker's last message: shut down.
    Stop,
    /// A relay's control of the sequence space (see [`RelayFeed`]).
    Relay(RelayControl),
}

/// What a [`RelayFeed`] tells the loops besides batches, in order with them.
#[derive(Clone, Copy, Debug)]
pub(super) enum RelayControl {
    /// Sequences before `next` that were not published will never be.
    Advance(u64),
    /// The upstream session changed: EndOfSession and close every client,
    /// then serve `session_id` from `next`.
    Session { session_id: u64, next: u64 },
}

/// A client that logged in on the first loop, moving to a worker: its
/// socket and its state, detached from the first loop's core.
#[derive(Debug)]
pub(super) struct Handoff {
    pub(super) stream: super::transport::Stream,
    pub(super) conn: crate::session::Detached,
}

/// What a publisher may do with the first event loop's state while the loop
/// sleeps (the loop implements it; see
/// [`LoopOptions::publisher_writes`](super::LoopOptions::publisher_writes)).
pub(super) trait DirectWrite: Send + std::fmt::Debug {
    /// Whether the publisher may write `batch` to the clients itself now.
    fn direct_ok(&self, batch: &Batch) -> bool;
    /// What the loop's turn would do with `batch`, on the publisher's
    /// thread; whether the loop must be woken anyway.
    fn publish_direct(&mut self, batch: &Arc<Batch>) -> bool;
}

/// What all publishers of one server share: the numbering, under a lock
/// that also orders their batches in the queue and on the datagram lines.
///
/// **Lock order** (every thread takes them in this order, never back):
/// 1. `sequencer` (a publisher numbering its batch), and under it the
///    journal's writer (`wal`: the batch is appended before anything else
///    sees it; with `fsync always` the publisher then waits for its batch
///    to be durable after letting go of the sequencer, and the loop holds
///    the batch until then);
/// 2. the first loop's state, `Mutex<Server>` (`direct_tcp`: the loop
///    holds it for each turn, never while it sleeps in epoll; a publisher
///    only *tries* it, under the sequencer, to write its batch itself);
/// 3. `datagrams` (the output: taken by a publisher under the sequencer,
///    or by the loop within its turn).
///
/// **Poisoning**, one rule: a lock is taken as it is after a panic when its
/// data is whole between calls (the loop's state: the server core is
/// consistent after each of its calls; the datagram output), and the server
/// keeps serving; the sequencer is not (a panic between numbering a batch
/// and queueing it leaves numbers taken for frames never published), so a
/// poisoned sequencer ends publishing with [`PublishError::Closed`](super::PublishError::Closed) rather
/// than ever number a gap. The panic itself ends its thread (the loop's
/// ends the server, and [`ServerHandle::shutdown`](super::ServerHandle::shutdown)
/// reports it).
#[derive(Debug)]
pub(super) struct Numbering {
    pub(super) sequencer: Mutex<Sequencer>,
    pub(super) tx: SyncSender<ToLoop>,
    pub(super) waker: Arc<Waker>,
    /// The datagram output (the first loop's numbering only).
    pub(super) datagrams: Option<Mutex<DatagramOutput>>,
    /// Whether the publishing threads send the datagrams
    /// ([`DatagramSender::Publisher`](super::DatagramSender::Publisher)).
    pub(super) direct: bool,
    /// Batches queued and not yet taken by the loop.
    pub(super) pending: AtomicUsize,
    /// Whether the loop wants a wake-up per batch. A loop with a datagram
    /// output and no TCP subscriber clears it while batches flow: the
    /// datagrams are already out, and it takes the batches (into the
    /// retention, for retransmission) within [`LAZY_TICK`] by itself, so
    /// that its wake-ups do not compete for a core with the receivers'.
    pub(super) eager: AtomicBool,
    /// Wake the loop anyway once this many batches wait.
    pub(super) wake_at: usize,
    /// The queue's capacity (`LoopOptions::publish_queue`).
    pub(super) capacity: usize,
    /// The journal every batch is appended to first (the first loop's
    /// numbering only; `ServerConfig::journal`).
    pub(super) wal: Option<Arc<super::Wal>>,
    /// The first loop's state while it runs, when it is the only loop: a
    /// publisher that finds it asleep (the lock free) and no batch waiting
    /// in the queue writes its batch to the clients itself (see
    /// [`DirectWrite::publish_direct`]), which saves the loop's wake-up.
    pub(super) direct_tcp: OnceLock<Weak<Mutex<dyn DirectWrite>>>,
}

/// `mutex` locked if no other thread holds it now (a panic while it was
/// held left the data whole: every holder keeps it consistent between
/// calls).
pub(super) fn try_lock<T: ?Sized>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// How long a loop that is not woken per batch leaves batches waiting at
/// most (see [`Numbering::eager`]); below the receivers' default
/// retransmission wait, so the retention has a batch before anyone asks
/// for it again.
pub(super) const LAZY_TICK: std::time::Duration = std::time::Duration::from_millis(1);

impl Numbering {
    /// The datagram output, locked, if the server has one. (A panic while
    /// it was held left it consistent: every method leaves it whole.)
    pub(super) fn datagrams(&self) -> Option<MutexGuard<'_, DatagramOutput>> {
        self.datagrams
            .as_ref()
            .map(|d| d.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The datagram output, if the server has one and no other thread
    /// holds it now (`Err(())`: held, most likely by a publisher sending,
    /// which is not worth waiting for to read or send an idle deadline).
    pub(super) fn try_datagrams(&self) -> Option<Result<MutexGuard<'_, DatagramOutput>, ()>> {
        self.datagrams.as_ref().map(|d| try_lock(d).ok_or(()))
    }

    /// Sends `batch`'s datagrams if the publishing threads send them (call
    /// under the numbering lock: in sequence order).
    pub(super) fn send_datagrams(&self, batch: &Batch) {
        if let Some(mut output) = self.direct_datagrams() {
            let now = output.now();
            output.publish(batch, now);
        }
    }

    /// The datagram output, locked, if the publishing threads send it.
    pub(super) fn direct_datagrams(&self) -> Option<MutexGuard<'_, DatagramOutput>> {
        if self.direct {
            self.datagrams()
        } else {
            None
        }
    }

    /// The datagram output, locked, if the event loop sends it.
    pub(super) fn loop_datagrams(&self) -> Option<MutexGuard<'_, DatagramOutput>> {
        if self.direct {
            None
        } else {
            self.datagrams()
        }
    }

    /// A batch is about to be queued (call before sending it).
    pub(super) fn batch_queued(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// A batch counted by [`batch_queued`](Self::batch_queued) was not
    /// queued after all, or the loop took it.
    pub(super) fn batch_gone(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether batches were queued to the first loop that it has not taken
    /// yet (a replay's writes give way to them: see `Server::flush_all`).
    pub(super) fn batches_waiting(&self) -> bool {
        self.pending.load(Ordering::Relaxed) > 0
    }

    /// Wakes the loop for a queued batch, unless it takes batches by itself
    /// within [`LAZY_TICK`] and not too many wait.
    pub(super) fn wake_for_batch(&self) {
        // SeqCst: the loop stores `eager` then reads `pending`; this adds
        // to `pending` then reads `eager`: one of the two sees the other.
        if !self.direct
            || self.eager.load(Ordering::SeqCst)
            || self.pending.load(Ordering::SeqCst) >= self.wake_at
        {
            // A failed wake only delays the batch to the loop's next wake-up.
            let _ = self.waker.wake();
        }
    }
}
