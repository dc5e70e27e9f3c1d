//! The journal in the servers (issue 24), shared by the mio and tokio
//! drivers: [`JournalSettings`] ([`ServerConfig::journal`](super::ServerConfig::journal)),
//! and the write-ahead log both drivers append to before any client or
//! datagram line can see a batch.
//!
//! ```text
//!  publish ─▶ (numbering lock) encode ─▶ Wal::append ─pwrite─▶ segment     a failed append: the
//!                                   │                                      numbers are taken back
//!                 Interval / Never  │ Always: Wal::wait(ticket), no lock held (group commit)
//!                                   ▼
//!                 core.publish (retention, sessions) and datagrams, in sequence order,
//!                 only up to Wal::durable_end()
//!
//!  Login older than the retention ─▶ the core's cold source (JournalCold) ─▶ checked frames
//! ```
//!
//! Where each piece lives: the journal itself (files, recovery, group
//! commit, readers) is [`tickwire::journal`](crate::journal); the core
//! (no_std) knows only [`session::cold`](crate::session::cold)'s traits,
//! which [`JournalCold`] implements; this module opens the journal for a
//! server, decides its session at start, appends, waits and closes; each
//! driver calls it from its publish path and its shutdown.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::publish::PublishError;
use super::server_config::new_session_id;
pub(crate) use crate::journal::Ticket;
use crate::journal::{FsyncMode, Journal, JournalCold, JournalConfig, JournalError, SyncHandle};
use crate::session::cold::ColdSource;
use crate::session::Batch;

/// A server's journal: [`ServerConfig::journal`](super::ServerConfig::journal).
///
/// With it, every published batch is appended to the journal in `dir`
/// before any client or datagram line can see it; a server started again
/// on the same directory continues the session (same session id, numbering
/// from the next sequence: [`ServerHandle::next_sequence`](super::ServerHandle::next_sequence)),
/// and a login (or a retransmission request) older than the in-memory
/// retention is served from the journal, from any sequence it still holds.
///
/// **The session at start.** The journal's last session continues, unless
/// the journal says a new one is required (the machine rebooted and the
/// session was written neither with [`FsyncMode::Always`] nor closed
/// cleanly: frames clients saw may be missing from it) or
/// [`core.session.session_id`](crate::session::CoreConfig) names another
/// non-zero id; a new session then starts (a random id for 0). A fixed id
/// that equals the journal's and cannot continue is an error at start.
///
/// **A graceful stop** (`shutdown`, SIGINT, SIGTERM) does not end the
/// session: clients are written what is queued for them and closed without
/// EndOfSession, datagram lines get none, and the journal is closed cleanly
/// (so the session continues at the next start, even after a reboot). Set
/// [`end_session_on_stop`](Self::end_session_on_stop) to end it (the end of
/// a trading day): EndOfSession to everyone, and the next start on the
/// journal serves a new session.
///
/// ```
/// use tickwire::journal::FsyncMode;
/// use tickwire::net::{JournalSettings, ServerConfig};
/// let mut journal = JournalSettings::new("/var/lib/feed/journal");
/// journal.config.fsync = FsyncMode::Never;
/// journal.config.retain_bytes = Some(100 << 30);
/// let config = ServerConfig { journal: Some(journal), ..ServerConfig::default() };
/// assert!(!config.journal.as_ref().unwrap().end_session_on_stop);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct JournalSettings {
    /// The journal's directory (created if missing).
    pub dir: PathBuf,
    /// How it writes: durability mode (`Interval(1 s)` by default),
    /// segment size, retention of segments.
    pub config: JournalConfig,
    /// A graceful stop sends EndOfSession to every client and datagram
    /// line, ending the session: the next start serves a new one (false,
    /// the default: no EndOfSession, the next start continues it).
    pub end_session_on_stop: bool,
}

impl JournalSettings {
    /// A journal in `dir` with the default [`JournalConfig`].
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> JournalSettings {
        JournalSettings {
            dir: dir.into(),
            config: JournalConfig::default(),
            end_session_on_stop: false,
        }
    }
}

/// An error opening the journal, as an `io::Error` that keeps the
/// [`JournalError`] (its message names the file and what is wrong).
fn start_error(e: JournalError) -> io::Error {
    let kind = match &e {
        JournalError::Io { source, .. } | JournalError::ReadOnly { source, .. } => source.kind(),
        JournalError::Damaged { .. } | JournalError::Version { .. } => io::ErrorKind::InvalidData,
        JournalError::Foreign { .. } | JournalError::Config(_) => io::ErrorKind::InvalidInput,
        JournalError::Locked { .. } => io::ErrorKind::ResourceBusy,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// What a publish gets back for a journal error.
fn publish_error(e: &JournalError) -> PublishError {
    PublishError::Journal(e.to_string())
}

/// The server's write-ahead log: the journal, shared by the publishers
/// (appends under the driver's numbering lock), the event loop or tasks
/// (the durable watermark) and every replaying connection (the cold source).
#[derive(Debug)]
pub(crate) struct Wal {
    /// `None` once closed.
    journal: Mutex<Option<Journal>>,
    sync: SyncHandle,
    always: bool,
    cold: Arc<JournalCold>,
    end_session: bool,
}

/// The session a server serves at start, with its journal.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) wal: Arc<Wal>,
    pub(crate) session_id: u64,
    /// The next sequence to publish.
    pub(crate) next: u64,
}

/// The journal of `config`, opened for a server whose configured session
/// id is `configured` (`None`: no journal configured).
pub(crate) fn open_for(
    config: &super::ServerConfig,
    configured: u64,
) -> io::Result<Option<Opened>> {
    config
        .journal
        .as_ref()
        .map(|settings| Wal::open(settings, configured))
        .transpose()
}

impl Wal {
    /// Opens (and recovers) the journal of `settings` for a server whose
    /// configured session id is `configured` (0: any), and decides the
    /// session (see [`JournalSettings`]).
    pub(crate) fn open(settings: &JournalSettings, configured: u64) -> io::Result<Opened> {
        let dir = &settings.dir;
        let (mut journal, recovered) =
            Journal::open(dir, settings.config.clone()).map_err(start_error)?;
        for path in &recovered.removed {
            log::info!("journal: removed the leftover {}", path.display());
        }
        for warning in &recovered.warnings {
            log::warn!("journal: {warning}");
        }
        if let Some(cut) = &recovered.truncated {
            log::warn!(
                "journal: {} bytes of a torn tail cut from {} at byte {} (a write the last run did not finish)",
                cut.bytes,
                cut.path.display(),
                cut.offset
            );
        }
        let continued = recovered.session.filter(|s| {
            !recovered.new_session_required && (configured == 0 || configured == s.session_id)
        });
        let (session_id, next) = match (continued, recovered.session) {
            (Some(s), _) => {
                let held = if s.oldest < s.next {
                    format!("the journal holds {}..={}", s.oldest, s.next - 1)
                } else {
                    "the journal holds none of its frames now".to_string()
                };
                log::info!(
                    "journal {}: session {:#018x} continues at sequence {} ({held})",
                    dir.display(),
                    s.session_id,
                    s.next,
                );
                (s.session_id, s.next)
            }
            (None, previous) => {
                let old = previous.map(|s| s.session_id);
                if recovered.new_session_required && old == Some(configured) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "journal {}: session {configured:#018x} cannot continue (written in \
                             another boot, neither with fsync always nor closed cleanly), and the \
                             configured session id is that same one: configure 0 (a new random \
                             id) or another",
                            dir.display()
                        ),
                    ));
                }
                let mut id = configured;
                while id == 0 || Some(id) == old {
                    id = new_session_id();
                }
                journal.start_session(id, 1).map_err(start_error)?;
                match (old, recovered.new_session_required) {
                    (Some(old), true) => log::warn!(
                        "journal {}: session {old:#018x} cannot continue after a reboot (fsync \
                         was not always, and the journal was not closed cleanly): new session {id:#018x}",
                        dir.display()
                    ),
                    (Some(old), false) => log::info!(
                        "journal {}: session {old:#018x} ends, session {id:#018x} (configured) starts",
                        dir.display()
                    ),
                    (None, _) => log::info!(
                        "journal {}: new, session {id:#018x} starts",
                        dir.display()
                    ),
                }
                (id, 1)
            }
        };
        let hook: crate::journal::ErrorHook = Arc::new(|e: &JournalError| {
            log::warn!("journal replay: {e}");
        });
        let cold = Arc::new(JournalCold::with_error_hook(&journal, hook));
        let wal = Wal {
            sync: journal.sync_handle(),
            always: journal.config().fsync == FsyncMode::Always,
            journal: Mutex::new(Some(journal)),
            cold,
            end_session: settings.end_session_on_stop,
        };
        Ok(Opened {
            wal: Arc::new(wal),
            session_id,
            next,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Journal>> {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `batch` (call under the driver's numbering lock, before
    /// anything else sees the batch). On an error nothing of it was
    /// written: the caller takes its numbers back.
    pub(crate) fn append(&self, batch: &Batch) -> Result<Ticket, PublishError> {
        let mut guard = self.lock();
        let journal = guard.as_mut().ok_or(PublishError::Closed)?;
        // Not logged here: the publisher gets the error (a full disk would
        // be a line per batch).
        let ticket = journal.append(batch).map_err(|e| publish_error(&e))?;
        self.cold.update(journal);
        Ok(ticket)
    }

    /// The sequence the next batch starts with (or later).
    pub(crate) fn next_sequence(&self) -> Option<u64> {
        self.lock().as_ref().map(Journal::next_sequence)
    }

    /// A new session from `next` (a relay whose upstream changed session).
    pub(crate) fn start_session(&self, session_id: u64, next: u64) -> Result<(), PublishError> {
        let mut guard = self.lock();
        let journal = guard.as_mut().ok_or(PublishError::Closed)?;
        journal
            .start_session(session_id, next)
            .map_err(|e| publish_error(&e))?;
        self.cold.update(journal);
        Ok(())
    }

    /// With [`FsyncMode::Always`], whether batches reach the core only up
    /// to [`durable_end`](Self::durable_end) (the others: at once).
    pub(crate) fn always(&self) -> bool {
        self.always
    }

    /// Blocks until the batch of `ticket` is durable (call with no lock
    /// held: one `fdatasync` covers every waiter's batch).
    pub(crate) fn wait(&self, ticket: Ticket) -> Result<(), PublishError> {
        self.sync.wait(ticket).map_err(|e| {
            log::error!("journal: {e}");
            publish_error(&e)
        })
    }

    /// Batches ending at or before this sequence may reach clients.
    pub(crate) fn durable_end(&self) -> u64 {
        self.sync.durable_end()
    }

    /// The journal as the core's cold source.
    pub(crate) fn cold(&self) -> Arc<dyn ColdSource> {
        Arc::clone(&self.cold) as Arc<dyn ColdSource>
    }

    /// Whether a graceful stop ends the session.
    pub(crate) fn ends_session(&self) -> bool {
        self.end_session
    }

    /// Syncs and closes the journal cleanly (a graceful stop): the next
    /// start continues the session, even after a reboot. Appends fail
    /// with [`PublishError::Closed`] from now on.
    pub(crate) fn close(&self) {
        let Some(mut journal) = self.lock().take() else {
            return;
        };
        if self.end_session {
            // EndOfSession went out: the next start is a new session (an
            // empty one is started now, so that the journal says so).
            let old = journal.session_id().unwrap_or(0);
            let mut id = new_session_id();
            while id == old {
                id = new_session_id();
            }
            match journal.start_session(id, 1) {
                Ok(()) => log::info!(
                    "journal {}: session {old:#018x} ended; the next start serves session {id:#018x}",
                    journal.dir().display()
                ),
                Err(e) => log::error!(
                    "journal {}: cannot mark the end of session {old:#018x}: {e}",
                    journal.dir().display()
                ),
            }
        }
        let (dir, next) = (journal.dir().to_path_buf(), journal.next_sequence());
        match journal.close() {
            Ok(()) => log::info!(
                "journal {}: closed cleanly, the next start continues at {next}",
                dir.display()
            ),
            Err(e) => log::error!("journal {}: not closed cleanly: {e}", dir.display()),
        }
    }
}
