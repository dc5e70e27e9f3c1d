//! [`Publisher`]: numbers and encodes data frames on the publishing thread
//! and hands them to the server's event loop as shared [`Batch`]es.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::sync::atomic::Ordering;
use std::sync::mpsc::TrySendError;
use std::sync::{Arc, Weak};

use super::feed::{try_lock, Numbering, ToLoop};
use super::publish::{Messages, PublishError};
use crate::session::Batch;
use crate::wire::MAX_DATA_FRAME_LEN;
use crate::Sequencer;

/// Publishes data frames into a running server from any thread. Clone it
/// freely; it feeds the event loop through a bounded queue and wakes it,
/// or, with few clients and small batches while the loop sleeps, writes
/// the batch to the clients itself
/// ([`LoopOptions::publisher_writes`](super::LoopOptions::publisher_writes)).
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
    /// Published means numbered and queued to the event loop (or written
    /// by this thread, see [`LoopOptions::publisher_writes`](super::LoopOptions::publisher_writes)):
    /// a client whose Login from 0 (live only) the loop reads before it
    /// takes the batch still gets the batch as live data. The tokio
    /// server's `publish` hands the batch to the server core itself, so
    /// there a batch whose `publish` returned is never sent to a later
    /// Login from 0. Nothing is lost or repeated either way.
    ///
    /// With a journal ([`ServerConfig::journal`](super::ServerConfig::journal)),
    /// the batch is appended to it first (under the numbering lock); with
    /// `fsync always` this returns once the batch is durable (and only then
    /// can clients and datagram lines see it).
    ///
    /// # Errors
    /// [`PublishError::Closed`] once the server has stopped;
    /// [`PublishError::Journal`] when the journal refused the batch (a full
    /// disk: nothing was numbered or sent, the server goes on).
    pub fn publish(&self, batch: Messages) -> Result<(), PublishError> {
        self.send(batch, true)
    }

    /// Queues a batch if there is room now.
    ///
    /// # Errors
    /// [`PublishError::Full`] with the batch when the queue is full (the
    /// server is behind: this is the back-pressure signal; nothing was
    /// numbered); [`PublishError::Closed`] once the server has stopped;
    /// [`PublishError::Journal`] as for [`publish`](Self::publish).
    pub fn try_publish(&self, batch: Messages) -> Result<(), PublishError> {
        self.send(batch, false)
    }

    /// The sequence the next published frame gets (after a restart on a
    /// journal, where the session goes on: see
    /// [`ServerConfig::journal`](super::ServerConfig::journal)).
    ///
    /// ```
    /// use tickwire::net::{Server, ServerConfig};
    /// let config = ServerConfig { listen: "127.0.0.1:0".parse()?, ..ServerConfig::default() };
    /// let server = Server::bind(config)?.spawn()?;
    /// assert_eq!(server.publisher().next_sequence(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn next_sequence(&self) -> u64 {
        self.numbering
            .sequencer
            .lock()
            .map_or(0, |s| s.next_sequence())
    }

    fn send(&self, mut batch: Messages, block: bool) -> Result<(), PublishError> {
        batch.retain(|(_, payload)| payload.msg_type().is_data());
        if batch.is_empty() {
            return Ok(());
        }
        let n = &self.numbering;
        let mut sequencer = n.sequencer.lock().map_err(|_| PublishError::Closed)?;
        if n.wal.is_some() && !block && n.pending.load(Ordering::SeqCst) >= n.capacity {
            // Once journaled a batch is published: with a journal, room is
            // made sure of first (under the numbering lock, only the loop
            // takes from the queue).
            return Err(PublishError::Full(batch));
        }
        let before = *sequencer;
        let max = batch.len() * MAX_DATA_FRAME_LEN;
        // Write-ahead: in the journal before anything else sees it; where
        // the journal's segment is mapped, numbered and encoded straight
        // into it (no copy, no system call).
        let in_place = match &n.wal {
            Some(wal) => {
                let seq: &mut Sequencer = &mut sequencer;
                let encode = |dst: &mut [u8]| {
                    let done = seq.encode_batch(&batch, dst);
                    (done.bytes, done.frames as u64)
                };
                match wal.append_in_place(before.next_sequence(), max, encode) {
                    Ok(done) => done.map(|(ticket, b)| (Arc::new(b), Some((wal, ticket)))),
                    Err(e) => {
                        *sequencer = before; // nothing was published: the numbers go back
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        // Appended behind: the journal's thread wakes the loop.
        let mut behind = false;
        let (encoded, ticket) = match in_place {
            Some(done) => done,
            None => {
                let mut bytes = vec![0u8; max];
                let done = sequencer.encode_batch(&batch, &mut bytes);
                bytes.truncate(done.bytes);
                let encoded = Arc::new(Batch::encoded(
                    before.next_sequence(),
                    done.frames as u64,
                    bytes,
                ));
                // Written behind (the journal's thread) or here.
                let appended = n.wal.as_ref().map(|wal| {
                    wal.append_encoded(&encoded)
                        .map(|(ticket, queued)| (wal, ticket, queued))
                });
                let ticket = match appended {
                    Some(appended) => match appended {
                        Ok((wal, ticket, queued)) => {
                            behind = queued;
                            Some((wal, ticket))
                        }
                        Err(e) => {
                            *sequencer = before; // nothing was published: the numbers go back
                            return Err(e);
                        }
                    },
                    None => None,
                };
                (encoded, ticket)
            }
        };
        // `fsync always`: the batch reaches the clients (and the datagram
        // lines: the loop sends them then) once durable; written behind,
        // once written; the loop holds it until then.
        let hold = ticket.as_ref().is_some_and(|(wal, _)| wal.holds());
        // The loop asleep and nothing queued before this batch (the numbering
        // lock keeps other publishers out): write it to the clients here.
        if !hold && n.pending.load(Ordering::SeqCst) == 0 {
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
        // Journaled, the batch is published: there is room (see above).
        let sent = if block || ticket.is_some() {
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
                if let (Some((wal, _)), true) = (&ticket, behind) {
                    // In the loop's queue now: the journal's thread writes
                    // it, then wakes the loop to release it (no wake-up
                    // from here). Under the numbering lock: in order.
                    wal.kick();
                    return Ok(());
                }
                drop(sequencer);
                match ticket {
                    Some((wal, ticket)) if wal.always() => {
                        // Group commit: no lock held; then the loop
                        // releases every batch the sync covered, in order.
                        let durable = wal.wait(ticket);
                        let _ = n.waker.wake();
                        durable
                    }
                    _ => {
                        n.wake_for_batch();
                        Ok(())
                    }
                }
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
