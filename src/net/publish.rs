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
