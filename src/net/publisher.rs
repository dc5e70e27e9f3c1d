//! [`Publisher`]: numbers and encodes data frames on the publishing thread
//! and hands them to the server's event loop as shared [`Batch`]es.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError, Weak};

use mio::Waker;

use super::datagram::DatagramOutput;
use super::server::{Server, ToLoop};
use crate::encode::{Payload, Sequencer};
use crate::session::Batch;
use crate::wire::MAX_FRAME_LEN;

/// Data messages to publish: `(timestamp, payload)` pairs.
pub type Messages = Vec<(u64, Payload)>;

/// Why a batch was not published.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The queue is full (back-pressure): the messages are handed back,
    /// none was numbered.
    Full(Messages),
    /// The server has stopped.
    Closed,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Full(b) => write!(
                f,
                "publisher queue full ({} messages handed back): the server is behind; retry or slow down",
                b.len()
            ),
            PublishError::Closed => f.write_str("the server has stopped"),
        }
    }
}

impl std::error::Error for PublishError {}

/// What all publishers of one server share: the numbering, under a lock
/// that also orders their batches in the queue and on the datagram lines.
///
/// **Lock order** (every thread takes them in this order, never back):
/// 1. `sequencer` (a publisher numbering its batch);
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
/// poisoned sequencer ends publishing with [`PublishError::Closed`] rather
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
    /// The first loop's state while it runs, when it is the only loop: a
    /// publisher that finds it asleep (the lock free) and no batch waiting
    /// in the queue writes its batch to the clients itself (see
    /// [`Server::publish_direct`]), which saves the loop's wake-up.
    pub(super) direct_tcp: OnceLock<Weak<Mutex<Server>>>,
}

/// `mutex` locked if no other thread holds it now (a panic while it was
/// held left the data whole: every holder keeps it consistent between
/// calls).
fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
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

/// Publishes data frames into a running server from any thread. Clone it
/// freely; it feeds the event loop through a bounded queue and wakes it,
/// or, with few clients and small batches while the loop sleeps, writes
/// the batch to the clients itself
/// ([`ServerConfig::publisher_writes`](super::ServerConfig::publisher_writes)).
///
/// Frames are numbered and encoded (CRC included) on the publishing thread,
/// under a lock that keeps every publisher's batches in sequence order, so
/// the event loop only stores and sends bytes: each batch is encoded once
/// and shared by the retention and every client's queue. With a datagram
/// feed ([`ServerConfig::datagrams`](super::ServerConfig::datagrams)), the
/// publishing thread also sends the batch's datagrams itself, within the
/// call, so they do not wait for the event loop to wake up (unless
/// [`DatagramSender::EventLoop`](super::DatagramSender::EventLoop) is
/// chosen).
#[derive(Clone, Debug)]
pub struct Publisher {
    pub(super) numbering: Arc<Numbering>,
}

impl Publisher {
    /// Queues a batch, blocking while the queue is full. Each message is
    /// `(timestamp, payload)`; only data payloads (Quote, Trade) are sent,
    /// numbered 1, 2, 3… across all publishers of the server. Timestamps are
    /// nanoseconds since the Unix epoch (see [`unix_nanos`](super::unix_nanos)).
    ///
    /// # Errors
    /// [`PublishError::Closed`] once the server has stopped.
    pub fn publish(&self, batch: Messages) -> Result<(), PublishError> {
        self.send(batch, true)
    }

    /// Queues a batch if there is room now.
    ///
    /// # Errors
    /// [`PublishError::Full`] with the batch when the queue is full (the
    /// server is behind: this is the back-pressure signal; nothing was
    /// numbered); [`PublishError::Closed`] once the server has stopped.
    pub fn try_publish(&self, batch: Messages) -> Result<(), PublishError> {
        self.send(batch, false)
    }

    fn send(&self, mut batch: Messages, block: bool) -> Result<(), PublishError> {
        batch.retain(|(_, payload)| payload.msg_type().is_data());
        if batch.is_empty() {
            return Ok(());
        }
        let n = &self.numbering;
        let mut sequencer = n.sequencer.lock().map_err(|_| PublishError::Closed)?;
        let before = *sequencer;
        let mut bytes = vec![0u8; batch.len() * MAX_FRAME_LEN];
        let done = sequencer.encode_batch(&batch, &mut bytes);
        bytes.truncate(done.bytes);
        let encoded = Arc::new(Batch::encoded(
            before.next_sequence(),
            done.frames as u64,
            bytes,
        ));
        // The loop asleep and nothing queued before this batch (the numbering
        // lock keeps other publishers out): write it to the clients here.
        if n.pending.load(Ordering::SeqCst) == 0 {
            if let Some(core) = n.direct_tcp.get().and_then(Weak::upgrade) {
                // Held: the loop is in a turn, queue the batch for it.
                let server = try_lock(&core);
                if let Some(mut server) = server.filter(|s| s.direct_ok(&encoded)) {
                    n.send_datagrams(&encoded);
                    let wake = server.publish_direct(&encoded);
                    drop(server);
                    drop(sequencer);
                    if wake {
                        let _ = n.waker.wake();
                    }
                    return Ok(());
                }
            }
        }
        let for_loop = ToLoop::Batch(Arc::clone(&encoded));
        n.batch_queued();
        let sent = if block {
            n.tx.send(for_loop).map_err(|_| PublishError::Closed)
        } else {
            n.tx.try_send(for_loop).map_err(|e| match e {
                TrySendError::Full(_) => PublishError::Full(Vec::new()),
                TrySendError::Disconnected(_) => PublishError::Closed,
            })
        };
        match sent {
            Ok(()) => {
                // The datagrams leave from here (under the numbering lock:
                // in sequence order), before the loop is woken (if it is:
                // see `Numbering::eager`).
                n.send_datagrams(&encoded);
                drop(sequencer);
                n.wake_for_batch();
                Ok(())
            }
            Err(PublishError::Full(_)) => {
                n.batch_gone();
                *sequencer = before; // nothing was published: take the numbers back
                Err(PublishError::Full(batch))
            }
            Err(e) => {
                n.batch_gone();
                Err(e)
            }
        }
    }
}
