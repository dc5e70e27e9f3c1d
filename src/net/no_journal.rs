//! Without the `journal` feature: the drivers' journal hooks, never
//! reached (a [`Wal`] cannot exist), so that their code is the same with
//! and without the feature.
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::publish::PublishError;
use crate::session::cold::ColdSource;
use crate::session::Batch;

/// No journal: uninhabited.
#[derive(Debug)]
pub(crate) enum Wal {}

/// No journal, no ticket.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ticket {}

/// Never made without the feature.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) wal: Arc<Wal>,
    pub(crate) session_id: u64,
    pub(crate) next: u64,
}

/// No journal is ever configured without the feature.
#[allow(clippy::unnecessary_wraps)]
pub(crate) fn open_for(
    _config: &super::ServerConfig,
    _configured: u64,
) -> std::io::Result<Option<Opened>> {
    Ok(None)
}

/// What a relay's journal holds (never, without the feature).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub(crate) struct Held {
    pub(crate) session_id: u64,
    pub(crate) next: u64,
    pub(crate) oldest: u64,
}

/// No relay journal: uninhabited.
#[derive(Debug)]
pub(crate) enum RelayJournal {}

/// No journal is ever configured without the feature.
#[allow(clippy::unnecessary_wraps, dead_code)]
pub(crate) fn open_relay(_config: &super::ServerConfig) -> std::io::Result<Option<RelayJournal>> {
    Ok(None)
}

#[allow(clippy::unused_self, dead_code)]
impl RelayJournal {
    pub(crate) fn held(&self) -> Option<Held> {
        match *self {}
    }
    pub(crate) fn serve(self, _session_id: u64, _next: u64) -> std::io::Result<Opened> {
        match self {}
    }
}

#[allow(clippy::unused_self, dead_code)]
impl Wal {
    pub(crate) fn append(&self, _batch: &Batch) -> Result<Ticket, PublishError> {
        match *self {}
    }
    pub(crate) fn append_in_place(
        &self,
        _first: u64,
        _max: usize,
        _encode: impl FnOnce(&mut [u8]) -> (usize, u64),
    ) -> Result<Option<(Ticket, Batch)>, PublishError> {
        match *self {}
    }
    pub(crate) fn append_encoded(
        &self,
        _batch: &Arc<Batch>,
    ) -> Result<(Ticket, bool), PublishError> {
        match *self {}
    }
    pub(crate) fn set_wake(&self, _wake: Arc<dyn Fn() + Send + Sync>) {
        match *self {}
    }
    pub(crate) fn holds(&self) -> bool {
        match *self {}
    }
    pub(crate) fn write_queued(&self) {
        match *self {}
    }
    pub(crate) fn kick(&self) {
        match *self {}
    }
    pub(crate) fn next_sequence(&self) -> Option<u64> {
        match *self {}
    }
    pub(crate) fn start_session(&self, _id: u64, _next: u64) -> Result<(), PublishError> {
        match *self {}
    }
    pub(crate) fn always(&self) -> bool {
        match *self {}
    }
    pub(crate) fn wait(&self, ticket: Ticket) -> Result<(), PublishError> {
        match ticket {}
    }
    pub(crate) fn durable_end(&self) -> u64 {
        match *self {}
    }
    pub(crate) fn cold(&self) -> Arc<dyn ColdSource> {
        match *self {}
    }
    pub(crate) fn ends_session(&self) -> bool {
        match *self {}
    }
    pub(crate) fn close(&self) {
        match *self {}
    }
}
