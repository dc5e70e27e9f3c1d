//! Group commit: one `fdatasync` covers every batch written before it,
//! done by whichever waiter comes first, with no lock of the caller held.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::layout::sync_dir;
use super::{FsyncMode, JournalError, Ticket};

/// A point of the journal: `pos` bytes appended since it was opened, the
/// session's next sequence `end` then, in session `epoch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) pos: u64,
    pub(crate) end: u64,
    pub(crate) epoch: u64,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// The segment being appended to.
    pub(crate) current: Option<Arc<File>>,
    /// Files rolled away from with writes not synced yet (segment, index).
    pub(crate) retired: Vec<Arc<File>>,
    /// Segment files were created or removed: the directory needs a sync.
    pub(crate) dir_dirty: bool,
    /// What was appended (handed to the OS).
    pub(crate) written: Mark,
    /// The segment written in place or behind (its number) and its
    /// committed bytes: the bytes after them are reserved zeros, a batch
    /// being encoded or one being written, which readers of this process
    /// must not read (`None`: the segment is written with `pwrite` on the
    /// publishing thread, its file's size is its content).
    pub(crate) content: Option<(u64, u64)>,
    /// What a sync covered.
    pub(crate) synced: Mark,
    /// The session's first sequence of the current epoch (nothing of it
    /// is durable before it).
    pub(crate) epoch_start: u64,
    syncing: bool,
    failed: Option<String>,
    pub(crate) syncs: u64,
    stop: bool,
    /// Tests: a sync waits while set (a disk that does not finish a flush).
    #[cfg(test)]
    sync_paused: bool,
}

/// The state the writer and every [`SyncHandle`] share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    pub(crate) mode: FsyncMode,
    dir: PathBuf,
    /// A sync failed (`State::failed` says why): read on every append
    /// without the lock.
    broken: AtomicBool,
}

/// A handle on a [`Journal`](super::Journal)'s durability, for the threads
/// that publish: cloneable, `Send + Sync`, usable while the journal's
/// owner appends (it needs none of its locks).
///
/// [`wait`](Self::wait) blocks until a batch is durable. With
/// [`FsyncMode::Always`], the first waiter to find no sync running starts
/// one `fdatasync` (of the segment's descriptor, shared with the writer) that
/// covers every batch written before it began; the others wait on a
/// condition variable and are all released by it (group commit).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tickwire::journal::{FsyncMode, Journal, JournalConfig};
/// use tickwire::session::Batch;
/// use tickwire::{encode::QuoteFields, Payload, Sequencer};
///
/// let dir = std::env::temp_dir().join(format!("tw-doc-sync-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let config = JournalConfig { fsync: FsyncMode::Always, ..JournalConfig::default() };
/// let (mut journal, _) = Journal::open(&dir, config)?;
/// journal.start_session(7, 1)?;
/// let sync = journal.sync_handle();
/// let journal = Arc::new(Mutex::new(journal));
/// let threads: Vec<_> = (0..4u64)
///     .map(|_| {
///         let (journal, sync) = (Arc::clone(&journal), sync.clone());
///         std::thread::spawn(move || -> Result<(), tickwire::journal::JournalError> {
///             for _ in 0..10 {
///                 let ticket = {
///                     let mut j = journal.lock().unwrap(); // the publish lock
///                     let mut bytes = vec![0u8; 44];
///                     let mut seq = tickwire::Sequencer::starting_at(j.next_sequence());
///                     seq.encode_batch(&[(0, Payload::Quote(QuoteFields::default()))], &mut bytes);
///                     j.append(&Batch::new(bytes).unwrap())?
///                 };
///                 sync.wait(ticket)?; // not under the lock
///                 assert!(sync.durable_end() >= ticket.end());
///             }
///             Ok(())
///         })
///     })
///     .collect();
/// for t in threads {
///     t.join().unwrap()?;
/// }
/// assert_eq!(sync.durable_end(), 41);
/// assert!(sync.syncs() <= 40);
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct SyncHandle {
    pub(crate) shared: Arc<Shared>,
}

impl Shared {
    /// How much of segment `number` a reader may read, at most `file_len`.
    pub(crate) fn readable(&self, number: u64, file_len: u64) -> u64 {
        match self.lock().content {
            Some((n, len)) if n == number => file_len.min(len),
            // A segment created after the one being written (written
            // behind: the writer thread has not reached it yet).
            Some((n, _)) if number > n => 0,
            _ => file_len,
        }
    }

    /// Whether the writer is still writing segment `number` (or one
    /// before it) in place or behind: its reader must not move past it.
    pub(crate) fn writing(&self, number: u64) -> bool {
        matches!(self.lock().content, Some((n, _)) if n <= number)
    }

    pub(crate) fn new(mode: FsyncMode, dir: PathBuf) -> Shared {
        Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            mode,
            dir,
            broken: AtomicBool::new(false),
        }
    }

    /// The state, locked (a panic elsewhere while it was held leaves it
    /// whole: every change is one assignment).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a sync failed (`State::failed` says why), without
    /// taking the lock.
    pub(crate) fn broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// One sync of everything written so far; the state is unlocked during
    /// the system calls.
    fn sync_locked<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.syncing = true;
        #[cfg(test)]
        while st.sync_paused {
            st = self
                .cond
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let retired = std::mem::take(&mut st.retired);
        let dir_dirty = std::mem::replace(&mut st.dir_dirty, false);
        let current = st.current.clone();
        let covered = st.written;
        drop(st);
        let result = (|| -> std::io::Result<()> {
            for file in &retired {
                file.sync_data()?;
            }
            if let Some(file) = &current {
                file.sync_data()?;
            }
            if dir_dirty {
                sync_dir(&self.dir)?;
            }
            Ok(())
        })();
        let mut st = self.lock();
        st.syncing = false;
        st.syncs += 1;
        match result {
            Ok(()) => {
                if covered.pos >= st.synced.pos {
                    st.synced = covered;
                }
            }
            // A failed fdatasync may have dropped the dirty pages it could
            // not write: nothing after the last good sync can be trusted.
            Err(e) => {
                st.failed = Some(e.to_string());
                self.broken.store(true, Ordering::Release);
            }
        }
        self.cond.notify_all();
        st
    }

    fn needs_sync(st: &State) -> bool {
        st.written.pos > st.synced.pos || !st.retired.is_empty() || st.dir_dirty
    }

    /// Syncs now (or waits for the sync running to end, then syncs if
    /// anything is left).
    pub(crate) fn sync_now(&self) -> Result<(), JournalError> {
        let mut st = self.lock();
        loop {
            if let Some(why) = &st.failed {
                return Err(JournalError::SyncFailed { why: why.clone() });
            }
            if st.syncing {
                st = self
                    .cond
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            if !Shared::needs_sync(&st) {
                return Ok(());
            }
            st = self.sync_locked(st);
        }
    }

    /// Tests: stalls every sync (`true`: it starts, then waits before its
    /// system calls, as on a disk that does not finish the flush) or lets
    /// them go on.
    #[cfg(test)]
    pub(crate) fn pause_sync(&self, paused: bool) {
        self.lock().sync_paused = paused;
        self.cond.notify_all();
    }

    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.cond.notify_all();
    }

    /// The `Interval` mode's thread: a sync at least every `every` while
    /// anything is unsynced.
    pub(crate) fn spawn_interval(shared: &Arc<Shared>, every: Duration) -> Option<JoinHandle<()>> {
        let shared = Arc::clone(shared);
        let every = every.max(Duration::from_millis(1));
        std::thread::Builder::new()
            .name("tickwire-journal-sync".into())
            .spawn(move || {
                let mut due = Instant::now() + every;
                let mut st = shared.lock();
                loop {
                    if st.stop {
                        return;
                    }
                    let now = Instant::now();
                    if now < due {
                        st = shared
                            .cond
                            .wait_timeout(st, due - now)
                            .map_or_else(|e| e.into_inner().0, |(g, _)| g);
                        continue;
                    }
                    due = now + every;
                    if Shared::needs_sync(&st) && !st.syncing && st.failed.is_none() {
                        st = shared.sync_locked(st);
                    }
                }
            })
            .ok()
    }
}

impl SyncHandle {
    /// Blocks until the batch of `ticket` is durable: synced, for
    /// [`FsyncMode::Always`] and [`FsyncMode::Interval`] (this waiter syncs
    /// if no sync is running; one sync covers every batch written before
    /// it); at once for [`FsyncMode::Never`].
    ///
    /// # Errors
    /// [`JournalError::SyncFailed`] if an `fdatasync` failed: the journal
    /// can no longer say what is on disk; reopen it (recovery).
    pub fn wait(&self, ticket: Ticket) -> Result<(), JournalError> {
        if self.shared.mode == FsyncMode::Never {
            return Ok(());
        }
        let shared = &self.shared;
        let mut st = shared.lock();
        loop {
            if st.synced.pos >= ticket.position {
                return Ok(());
            }
            if let Some(why) = &st.failed {
                return Err(JournalError::SyncFailed { why: why.clone() });
            }
            if st.syncing {
                st = shared
                    .cond
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            } else {
                st = shared.sync_locked(st);
            }
        }
    }

    /// Syncs everything written so far, whatever the mode (end of day,
    /// before a planned reboot).
    ///
    /// # Errors
    /// [`JournalError::SyncFailed`], as for [`wait`](Self::wait).
    pub fn sync(&self) -> Result<(), JournalError> {
        self.shared.sync_now()
    }

    /// The sequence the owner may release frames up to (exclusive), in the
    /// current session: with [`FsyncMode::Always`], the end of what is
    /// synced; otherwise, the end of what was appended (handed to the OS:
    /// a killed process loses none of it).
    #[must_use]
    pub fn durable_end(&self) -> u64 {
        let st = self.shared.lock();
        match self.shared.mode {
            FsyncMode::Always => synced_end(&st),
            _ => st.written.end,
        }
    }

    /// The end of what is synced in the current session, whatever the mode.
    #[must_use]
    pub fn synced_end(&self) -> u64 {
        synced_end(&self.shared.lock())
    }

    /// The sync calls made so far (each syncs the segment being written,
    /// and files rolled away from with unsynced writes).
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.shared.lock().syncs
    }
}

fn synced_end(st: &State) -> u64 {
    if st.synced.epoch == st.written.epoch {
        st.synced.end
    } else {
        st.epoch_start
    }
}
