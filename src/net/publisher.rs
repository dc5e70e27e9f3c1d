//! [`Publisher`]: numbers and encodes data frames on the publishing thread
//! and hands them to the server's event loop as shared [`Batch`]es.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fmt;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use mio::Waker;

use super::server::ToLoop;
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
/// that also orders their batches in the queue.
#[derive(Debug)]
pub(super) struct Numbering {
    pub(super) sequencer: Mutex<Sequencer>,
    pub(super) tx: SyncSender<ToLoop>,
    pub(super) waker: Arc<Waker>,
}

/// Publishes data frames into a running server from any thread. Clone it
/// freely; it feeds the event loop through a bounded queue and wakes it.
///
/// Frames are numbered and encoded (CRC included) on the publishing thread,
/// under a lock that keeps every publisher's batches in sequence order, so
/// the event loop only stores and sends bytes: each batch is encoded once
/// and shared by the retention and every client's queue.
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
        let encoded = ToLoop::Batch(encoded);
        let sent = if block {
            n.tx.send(encoded).map_err(|_| PublishError::Closed)
        } else {
            n.tx.try_send(encoded).map_err(|e| match e {
                TrySendError::Full(_) => PublishError::Full(Vec::new()),
                TrySendError::Disconnected(_) => PublishError::Closed,
            })
        };
        match sent {
            Ok(()) => {
                drop(sequencer);
                // A failed wake only delays the batch to the loop's next wake-up.
                let _ = n.waker.wake();
                Ok(())
            }
            Err(PublishError::Full(_)) => {
                *sequencer = before; // nothing was published: take the numbers back
                Err(PublishError::Full(batch))
            }
            Err(e) => Err(e),
        }
    }
}
