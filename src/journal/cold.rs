//! [`JournalCold`]: the journal as the server core's cold source
//! ([`session::cold`](crate::session::cold)): replays and retransmission
//! replies read what the in-memory retention no longer holds from here.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::session::cold::{ColdChunk, ColdError, ColdReader, ColdSource};

use super::{Journal, JournalError, JournalReader};

/// Called with each error a reader of a [`JournalCold`] meets (for the log).
pub type ErrorHook = Arc<dyn Fn(&JournalError) + Send + Sync>;

/// The journal in `dir` as a [`ColdSource`]: each replaying connection
/// gets its own [`JournalReader`] (read-only descriptors, no lock), which
/// copies and checks every frame ([`JournalReader::read`]). It serves the
/// session the writer appends to now, from the oldest sequence the journal
/// holds of it; the writer's owner calls [`update`](Self::update) after
/// each append (cheap: two atomics).
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tw-doc-cold-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// use tickwire::journal::{Journal, JournalCold, JournalConfig};
/// use tickwire::session::cold::ColdSource;
/// use tickwire::{encode::QuoteFields, session::Batch, Payload, Sequencer};
/// let (mut journal, _) = Journal::open(&dir, JournalConfig::default())?;
/// journal.start_session(9, 1)?;
/// let mut bytes = vec![0u8; 4 * 44];
/// Sequencer::new().encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 4], &mut bytes);
/// journal.append(&Batch::new(bytes)?)?;
/// let cold = JournalCold::new(&journal);
/// assert_eq!((cold.oldest(9), cold.oldest(8)), (Some(1), None));
/// let mut reader = cold.open(9, 2)?;
/// let mut buf = Vec::new();
/// let chunk = reader.read(4, 1 << 20, &mut buf)?.unwrap();
/// assert_eq!((chunk.first, chunk.end, chunk.frames), (2, 4, 2));
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JournalCold {
    dir: PathBuf,
    /// The session appended to now (0: none).
    session: AtomicU64,
    /// Its oldest sequence in the journal (0: none).
    oldest: AtomicU64,
    on_error: Option<ErrorHook>,
}

impl fmt::Debug for JournalCold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalCold")
            .field("dir", &self.dir)
            .field("session", &self.session.load(Ordering::Relaxed))
            .field("oldest", &self.oldest.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl JournalCold {
    /// The cold source of `journal`'s directory, as the journal is now.
    #[must_use]
    pub fn new(journal: &Journal) -> JournalCold {
        let cold = JournalCold {
            dir: journal.dir().to_path_buf(),
            session: AtomicU64::new(0),
            oldest: AtomicU64::new(0),
            on_error: None,
        };
        cold.update(journal);
        cold
    }

    /// The same, calling `hook` with every error its readers meet.
    #[must_use]
    pub fn with_error_hook(journal: &Journal, hook: ErrorHook) -> JournalCold {
        JournalCold {
            on_error: Some(hook),
            ..JournalCold::new(journal)
        }
    }

    /// After an append, a new session or a roll: the session and its
    /// oldest sequence, as the journal says now.
    pub fn update(&self, journal: &Journal) {
        let session = journal.session_id().unwrap_or(0);
        let oldest = if session == 0 || journal.oldest() >= journal.next_sequence() {
            0 // nothing of it yet
        } else {
            journal.oldest()
        };
        // Called on every append, where neither changes but at a roll, a
        // new session or the first append of one: a load is cheaper than
        // a SeqCst store (a locked instruction). Callers holding `&Journal`
        // at the same time compute the same values (changing it takes
        // `&mut`), so skipping an equal one changes nothing readers see.
        if self.session.load(Ordering::Relaxed) != session {
            self.session.store(session, Ordering::SeqCst);
        }
        if self.oldest.load(Ordering::Relaxed) != oldest {
            self.oldest.store(oldest, Ordering::SeqCst);
        }
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn error(&self, e: &JournalError) -> ColdError {
        if let Some(hook) = &self.on_error {
            hook(e);
        }
        ColdError(e.to_string())
    }
}

impl ColdSource for JournalCold {
    fn oldest(&self, session_id: u64) -> Option<u64> {
        if session_id == 0 || self.session.load(Ordering::SeqCst) != session_id {
            return None;
        }
        match self.oldest.load(Ordering::SeqCst) {
            0 => None,
            oldest => Some(oldest),
        }
    }

    fn open(&self, session_id: u64, from: u64) -> Result<Box<dyn ColdReader>, ColdError> {
        let reader =
            JournalReader::open_session(&self.dir, session_id, from).map_err(|e| self.error(&e))?;
        Ok(Box::new(ColdJournalReader {
            reader,
            on_error: self.on_error.clone(),
        }))
    }
}

/// One connection's [`JournalReader`].
struct ColdJournalReader {
    reader: JournalReader,
    on_error: Option<ErrorHook>,
}

impl fmt::Debug for ColdJournalReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColdJournalReader")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl ColdReader for ColdJournalReader {
    fn read(
        &mut self,
        limit: u64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<ColdChunk>, ColdError> {
        let result = match self.reader.read(limit, max_bytes, buf) {
            // The journal holds everything the retention does (it is
            // written first): ending before `limit` is a range missing.
            Ok(None) if self.reader.position() < limit => Err(JournalError::Missing {
                sequence: self.reader.position(),
                why: format!(
                    "the journal ends before sequence {limit}, which the server still retains"
                ),
            }),
            other => other,
        };
        match result {
            Ok(chunk) => Ok(chunk.map(|c| ColdChunk {
                first: c.first,
                end: c.end,
                frames: c.frames,
            })),
            Err(e) => {
                if let Some(hook) = &self.on_error {
                    hook(&e);
                }
                Err(ColdError(e.to_string()))
            }
        }
    }
}
