//! What the publishers of both servers (mio and tokio) take and how they
//! fail: [`Messages`], [`PublishError`].
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fmt;

use crate::encode::Payload;

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
    /// The server's journal could not take the batch (a full disk, an I/O
    /// error; `ServerConfig::journal`): nothing was numbered, sent or
    /// kept, and the server goes on serving. Publish again once the
    /// journal can be written (after a failed `fdatasync` the journal
    /// refuses every batch until the server is restarted).
    Journal(String),
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
            PublishError::Journal(why) => write!(f, "not published: {why}"),
        }
    }
}

impl std::error::Error for PublishError {}

/// The frames of `batch` at or after `next` (the journal's next sequence:
/// a relay restarted on its journal is sent again what it holds), `None`
/// when it holds them all.
pub(crate) fn not_journaled(
    batch: crate::session::Batch,
    next: Option<u64>,
) -> Option<crate::session::Batch> {
    let next = next.unwrap_or(0);
    if batch.first() >= next {
        return Some(batch);
    }
    if batch.end() <= next {
        return None;
    }
    let batch = std::sync::Arc::new(batch);
    let rest = crate::session::Segment::tail(&batch, next);
    Some(crate::session::Batch::encoded(
        rest.first(),
        rest.frames(),
        rest.bytes().to_vec(),
    ))
}
