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
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::publish::PublishError;
use super::server_config::new_session_id;
pub(crate) use crate::journal::Ticket;
use crate::journal::{
    FsyncMode, Journal, JournalCold, JournalConfig, JournalError, Recovered, SyncHandle, WriteMode,
};
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

/// Opens and recovers the journal of `settings`, logging what recovery did.
fn recover(settings: &JournalSettings) -> io::Result<(Journal, Recovered)> {
    let (journal, recovered) =
        Journal::open(&settings.dir, settings.config.clone()).map_err(start_error)?;
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
    Ok((journal, recovered))
}

/// How often a journal with a retention by age is checked for segments
/// past it (besides each segment roll and the start): a quiet journal
/// still lets its old segments go.
const RETENTION_PERIOD: Duration = Duration::from_secs(1);

/// The thread that applies a journal's retention by age while the server
/// runs ([`Wal::expire`] every [`RETENTION_PERIOD`]), so that a quiet
/// journal, which never rolls, still deletes its old segments. It holds the
/// journal's lock only to pick the segments (a `stat` of the oldest) and
/// deletes their files with no lock held: publishers never wait for an
/// `unlink`, and neither does an event loop.
#[derive(Debug, Default)]
struct Retention {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Retention {
    /// Starts the thread of `wal` (it holds the log weakly: a dropped
    /// server ends it).
    fn spawn(wal: &Arc<Wal>, age: Duration) {
        let weak = Arc::downgrade(wal);
        let stop = Arc::clone(&wal.retention.stop);
        let spawned = std::thread::Builder::new()
            .name("tickwire-journal-retention".into())
            .spawn(move || {
                let (flag, wake) = &*stop;
                let mut stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
                while !*stopped {
                    stopped = wake
                        .wait_timeout(stopped, RETENTION_PERIOD)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    if *stopped {
                        break;
                    }
                    drop(stopped);
                    match weak.upgrade() {
                        Some(wal) => wal.expire(),
                        None => return,
                    }
                    stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
                }
            });
        match spawned {
            Ok(thread) => {
                *wal.retention
                    .thread
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(thread);
                log::debug!(
                    "journal: retention by age ({age:?}) checked every {RETENTION_PERIOD:?}"
                );
            }
            // Retention still applies at each roll and at start.
            Err(e) => {
                log::warn!("journal: no retention thread ({e}): old segments go only at rolls")
            }
        }
    }

    /// Stops the thread and waits for it (unless called from it).
    fn stop(&self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        // Not joined: the last handle of the log may be the thread's own.
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
    }
}

/// What a relay's journal holds of its last session (see [`RelayJournal`]).
#[cfg_attr(not(feature = "net"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) session_id: u64,
    /// The sequence after its last frame: where the relay resumes upstream.
    pub(crate) next: u64,
    /// Its oldest sequence still in the journal (`next` when none is).
    pub(crate) oldest: u64,
}

/// A relay's journal, opened (and recovered) before the relay logs in
/// upstream: what it holds decides where the relay resumes (issue 24,
/// point 5). Its frames are its upstream's, numbered there, so its session
/// goes on whenever the upstream's is the same, even after a reboot that
/// took an unsynced tail with it: the relay fetches that tail again, byte
/// for byte, instead of renumbering anything.
#[cfg_attr(not(feature = "net"), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct RelayJournal {
    journal: Journal,
    settings: JournalSettings,
    held: Option<Held>,
    new_session_required: bool,
}

/// The journal of a relay's server `config` (`None`: none configured).
#[cfg_attr(not(feature = "net"), allow(dead_code))]
pub(crate) fn open_relay(config: &super::ServerConfig) -> io::Result<Option<RelayJournal>> {
    let Some(settings) = &config.journal else {
        return Ok(None);
    };
    let (journal, recovered) = recover(settings)?;
    let held = recovered.session.map(|s| Held {
        session_id: s.session_id,
        next: s.next,
        oldest: journal
            .oldest_of_last(s.session_id)
            .unwrap_or(s.next)
            .min(s.next),
    });
    Ok(Some(RelayJournal {
        journal,
        settings: settings.clone(),
        held,
        new_session_required: recovered.new_session_required,
    }))
}

#[cfg_attr(not(feature = "net"), allow(dead_code))]
impl RelayJournal {
    /// The session the journal holds, if any.
    pub(crate) fn held(&self) -> Option<Held> {
        self.held
    }

    /// The log of a relay serving `session_id` from `next`: the held
    /// session goes on if it is that one (from its own next sequence),
    /// else a new journal session starts at `next`.
    pub(crate) fn serve(mut self, session_id: u64, next: u64) -> io::Result<Opened> {
        let dir = self.settings.dir.display().to_string();
        let next = match self.held {
            Some(held) if held.session_id == session_id => {
                if self.new_session_required {
                    // Same session, in a segment of this boot's own.
                    self.journal
                        .start_session(session_id, held.next)
                        .map_err(start_error)?;
                    log::info!(
                        "journal {dir}: session {session_id:#018x} goes on at {} after a reboot                          (a relay's frames are its upstream's: a lost tail is fetched again)",
                        held.next
                    );
                }
                held.next
            }
            held => {
                self.journal
                    .start_session(session_id, next)
                    .map_err(start_error)?;
                match held {
                    Some(old) => log::info!(
                        "journal {dir}: upstream session {session_id:#018x} from {next}                          follows {:#018x}",
                        old.session_id
                    ),
                    None => log::info!(
                        "journal {dir}: new, upstream session {session_id:#018x} from {next}"
                    ),
                }
                next.max(1)
            }
        };
        Ok(Wal::serving(self.journal, &self.settings, session_id, next))
    }
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
    /// Batches are written behind ([`WriteMode::Behind`](crate::journal::WriteMode::Behind)):
    /// the loop holds each until the journal's written mark covers it.
    behind: bool,
    cold: Arc<JournalCold>,
    end_session: bool,
    /// The thread that applies retention by age on a quiet journal.
    retention: Retention,
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
        let (mut journal, recovered) = recover(settings)?;
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
        Ok(Wal::serving(journal, settings, session_id, next))
    }

    /// The server's log on `journal`, whose session `session_id` goes on
    /// at `next`.
    fn serving(journal: Journal, settings: &JournalSettings, session_id: u64, next: u64) -> Opened {
        let hook: crate::journal::ErrorHook = Arc::new(|e: &JournalError| {
            log::warn!("journal replay: {e}");
        });
        let cold = Arc::new(JournalCold::with_error_hook(&journal, hook));
        let retain_age = journal.config().retain_age;
        let wal = Arc::new(Wal {
            sync: journal.sync_handle(),
            always: journal.config().fsync == FsyncMode::Always,
            behind: journal.config().writes == WriteMode::Behind
                && journal.config().fsync != FsyncMode::Always,
            journal: Mutex::new(Some(journal)),
            cold,
            end_session: settings.end_session_on_stop,
            retention: Retention::default(),
        });
        if let Some(age) = retain_age {
            Retention::spawn(&wal, age);
        }
        Opened {
            wal,
            session_id,
            next,
        }
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

    /// [`Journal::append_in_place`]: `encode` numbers and encodes the batch
    /// into the mapped segment (room for `max` bytes; it says how many
    /// bytes and frames). `Ok(None)`: not in place, encode and `append`.
    pub(crate) fn append_in_place(
        &self,
        first: u64,
        max: usize,
        encode: impl FnOnce(&mut [u8]) -> (usize, u64),
    ) -> Result<Option<(Ticket, Batch)>, PublishError> {
        let mut guard = self.lock();
        let journal = guard.as_mut().ok_or(PublishError::Closed)?;
        let done = journal
            .append_in_place(first, max, encode)
            .map_err(|e| publish_error(&e))?;
        if done.is_some() {
            self.cold.update(journal);
        }
        Ok(done)
    }

    /// An encoded batch into the journal, under one lock: queued for the
    /// journal's writer thread ([`Journal::append_behind`], `true`: call
    /// [`kick`](Self::kick) once it is in the loop's queue, release it
    /// only once [`durable_end`](Self::durable_end) covers it) or written
    /// here ([`Journal::append`], `false`). Call under the driver's
    /// numbering lock.
    pub(crate) fn append_encoded(
        &self,
        batch: &Arc<Batch>,
    ) -> Result<(Ticket, bool), PublishError> {
        let mut guard = self.lock();
        let journal = guard.as_mut().ok_or(PublishError::Closed)?;
        let done = match journal.append_behind(batch) {
            Ok(Some(ticket)) => Ok((ticket, true)),
            Ok(None) => journal.append(batch).map(|ticket| (ticket, false)),
            Err(e) => Err(e),
        }
        .map_err(|e| publish_error(&e))?;
        self.cold.update(journal);
        Ok(done)
    }

    /// Waits until the journal's writer thread has written what is queued
    /// (a failure there is the journal's: publishing already fails).
    pub(crate) fn write_queued(&self) {
        if let Some(journal) = self.lock().as_mut() {
            let _ = journal.write_queued();
        }
    }

    /// [`Journal::kick`]: the batches appended behind go to the journal's
    /// writer thread (call under the numbering lock, once they are in the
    /// loop's queue: the thread wakes the loop after writing them).
    pub(crate) fn kick(&self) {
        if let Some(journal) = self.lock().as_mut() {
            journal.kick();
        }
    }

    /// Tests: stalls the journal's writer thread, or lets it go on.
    #[cfg(test)]
    pub(crate) fn pause_writer(&self, paused: bool) {
        if let Some(journal) = self.lock().as_mut() {
            journal.pause_writer(paused);
        }
    }

    /// What the journal's writer thread calls after each pass (the event
    /// loop's waker: batches it holds may go).
    pub(crate) fn set_wake(&self, wake: crate::journal::Wake) {
        if let Some(journal) = self.lock().as_mut() {
            journal.set_wake(wake);
        }
    }

    /// Retention on a quiet journal (the retention thread): segments past
    /// it leave the journal under the lock, their files are deleted after.
    fn expire(&self) {
        let files = {
            let mut guard = self.lock();
            let Some(journal) = guard.as_mut() else {
                return;
            };
            let files = journal.expire(SystemTime::now());
            if !files.is_empty() {
                self.cold.update(journal);
            }
            files
        };
        for path in files {
            match std::fs::remove_file(&path) {
                Ok(()) => log::info!("journal: retention deleted {}", path.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Left on disk: the next start's retention meets it again.
                Err(e) => log::warn!("journal: retention cannot delete {}: {e}", path.display()),
            }
        }
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

    /// Whether the mio server holds batches until
    /// [`durable_end`](Self::durable_end) covers them: `always`, or
    /// written behind.
    pub(crate) fn holds(&self) -> bool {
        self.always || self.behind
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
        self.retention.stop();
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests;
