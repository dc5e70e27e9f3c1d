//! Opening a journal: the checks of every file before anything is
//! touched, recovery of the last segment's tail, the shared marks.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::collections::VecDeque;
use std::fs::{self, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::super::layout::{
    self, fsync_code, open_rw, read_index, write_at, Entry, EntryKind, Header, Listed, Manifest,
    ENTRY_LEN, FSYNC_ALWAYS, HEADER_LEN, INDEX_EXT, LAYOUT_VERSION, LOCK, MANIFEST,
    PROTOCOL_REVISION,
};
use super::super::sync::{Mark, Shared};
use super::super::tail;
use super::super::{
    FsyncMode, JournalConfig, JournalError, JournalStats, Recovered, RecoveredSession, Truncation,
};
use super::{in_place, write_error, Active, Journal, Seg};

fn check_versions(
    path: &Path,
    layout: u16,
    protocol: u8,
    revision: u8,
) -> Result<(), JournalError> {
    if layout != LAYOUT_VERSION || protocol != crate::wire::VERSION || revision > PROTOCOL_REVISION
    {
        return Err(JournalError::Version {
            path: path.to_path_buf(),
            found: format!(
                "journal layout {layout}, protocol version {protocol} revision {revision} \
                 (this crate: layout {LAYOUT_VERSION}, version {} up to revision {PROTOCOL_REVISION})",
                crate::wire::VERSION
            ),
        });
    }
    Ok(())
}

/// The checks of the files that open makes before it touches anything:
/// the validated segments (with their headers), and leftovers to remove.
struct Survey {
    manifest: Option<Manifest>,
    segments: Vec<(Listed, Header)>,
    leftovers: Vec<PathBuf>,
    /// Index headers to rewrite (the last segment's, unreadable).
    repairs: Vec<(PathBuf, Header)>,
    warnings: Vec<String>,
}

fn survey(dir: &Path, config: &JournalConfig) -> Result<Survey, JournalError> {
    let manifest = match Manifest::read(dir) {
        Err(e) => return Err(JournalError::io("read", dir.join(MANIFEST), e)),
        Ok(None) => None,
        Ok(Some(Err(why))) => {
            return Err(JournalError::Foreign {
                path: dir.join(MANIFEST),
                why: format!("not a tickwire journal manifest ({why})"),
            })
        }
        Ok(Some(Ok(m))) => {
            check_versions(&dir.join(MANIFEST), m.layout, m.protocol, m.revision)?;
            if m.server != config.server {
                return Err(JournalError::Foreign {
                    path: dir.to_path_buf(),
                    why: format!(
                        "the journal belongs to server {:?}, this is {:?}",
                        m.server, config.server
                    ),
                });
            }
            Some(m)
        }
    };
    let listed = layout::list(dir).map_err(|e| JournalError::io("list", dir, e))?;
    let Some(manifest_ref) = &manifest else {
        if let Some(l) = listed.first() {
            return Err(JournalError::Foreign {
                path: l
                    .segment
                    .clone()
                    .or_else(|| l.index.clone())
                    .unwrap_or_default(),
                why: format!("a segment file in a directory without a {MANIFEST} manifest"),
            });
        }
        return Ok(Survey {
            manifest,
            segments: Vec::new(),
            leftovers: Vec::new(),
            repairs: Vec::new(),
            warnings: Vec::new(),
        });
    };
    let mut segments = Vec::new();
    let mut leftovers = Vec::new();
    let mut repairs = Vec::new();
    let mut warnings = Vec::new();
    let last = listed.len().saturating_sub(1);
    for (i, l) in listed.iter().enumerate() {
        if let Some(prev) = listed.get(i.wrapping_sub(1)).filter(|_| i > 0) {
            if prev.number == l.number {
                return Err(JournalError::Foreign {
                    path: dir.to_path_buf(),
                    why: format!("two segments numbered {}", l.number),
                });
            }
        }
        let (Some(segment), Some(index)) = (&l.segment, &l.index) else {
            match (&l.segment, &l.index) {
                (Some(segment), None) => {
                    return Err(JournalError::Damaged {
                        path: segment.clone(),
                        offset: 0,
                        why: format!("a segment without its index (.{INDEX_EXT})"),
                    })
                }
                // An index alone: before any segment, what an interrupted
                // deletion left; the last one, an interrupted creation.
                (None, Some(index)) if segments.is_empty() || i == last => {
                    leftovers.push(index.clone());
                }
                // In the middle: a segment deleted by hand. Kept: the
                // readers and `check` report the missing range.
                _ => {}
            }
            continue;
        };
        let header = match layout::read_header(index) {
            Err(e) => return Err(JournalError::io("read", index, e)),
            Ok(Err(why)) => {
                let empty = fs::metadata(segment).map(|m| m.len() == 0).unwrap_or(false);
                if i == last && empty {
                    // Created, header torn, never written to.
                    leftovers.push(segment.clone());
                    leftovers.push(index.clone());
                    continue;
                }
                // The segment is kept: its name says what it is. Readers
                // and `check` stop at it; the last one's header is
                // rewritten from its name, its writer unknown (so a new
                // session is required unless it was closed cleanly).
                let header = Header {
                    layout: LAYOUT_VERSION,
                    protocol: crate::wire::VERSION,
                    revision: PROTOCOL_REVISION,
                    session_id: l.session_id,
                    first: l.first,
                    number: l.number,
                    journal_id: manifest_ref.journal_id,
                    boot_id: [0; 16],
                    created: 0,
                    fsync: 0,
                    index_every: 0,
                };
                warnings.push(format!(
                    "{}: index header unreadable ({why:?}){}",
                    index.display(),
                    if i == last {
                        "; rewritten from the file name, its writer unknown"
                    } else {
                        "; a reader stops at this segment"
                    }
                ));
                if i == last {
                    repairs.push((index.clone(), header));
                }
                segments.push((l.clone(), header));
                continue;
            }
            Ok(Ok(h)) => h,
        };
        check_versions(index, header.layout, header.protocol, header.revision)?;
        if header.journal_id != manifest_ref.journal_id {
            return Err(JournalError::Foreign {
                path: index.clone(),
                why: format!(
                    "it belongs to journal {}, this is journal {}",
                    layout::hex(&header.journal_id),
                    layout::hex(&manifest_ref.journal_id)
                ),
            });
        }
        if (header.number, header.session_id, header.first) != (l.number, l.session_id, l.first) {
            return Err(JournalError::Foreign {
                path: index.clone(),
                why: format!(
                    "its header says segment {} of session {:016x} from {}, not what its name says",
                    header.number, header.session_id, header.first
                ),
            });
        }
        segments.push((l.clone(), header));
    }
    Ok(Survey {
        manifest,
        segments,
        leftovers,
        repairs,
        warnings,
    })
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and recovers it: the last
    /// segment's tail is read from its last index entry with the
    /// resynchronizing parser and cut at the first byte that is not a good
    /// frame (reported in [`Recovered::truncated`]).
    ///
    /// Refused, with nothing touched: a manifest of another server
    /// ([`JournalConfig::server`]) or another layout or protocol version,
    /// segments of another journal, a segment without its index, a
    /// directory that cannot be written ([`JournalError::ReadOnly`]),
    /// another writer ([`JournalError::Locked`], after waiting up to a
    /// second: a child process holds the lock from its fork to its exec).
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("tw-doc-open-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// use tickwire::journal::{Journal, JournalConfig, JournalError};
    /// let a = JournalConfig { server: "feed-a".into(), ..JournalConfig::default() };
    /// let (journal, _) = Journal::open(&dir, a.clone())?;
    /// // One writer at a time (after a second's wait for a lock that a
    /// // forked child might hold until its exec).
    /// assert!(matches!(Journal::open(&dir, a.clone()), Err(JournalError::Locked { .. })));
    /// drop(journal);
    /// let b = JournalConfig { server: "feed-b".into(), ..JournalConfig::default() };
    /// let e = Journal::open(&dir, b).unwrap_err();
    /// assert!(e.to_string().contains("belongs to server \"feed-a\""), "{e}");
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// A [`JournalError`] naming the file and what is wrong.
    pub fn open(
        dir: impl AsRef<Path>,
        config: JournalConfig,
    ) -> Result<(Journal, Recovered), JournalError> {
        Journal::open_in_boot(dir, config, layout::boot_id())
    }

    /// [`open`](Self::open) as if the machine's boot id were `boot_id`:
    /// for tests of what a reboot does. Not part of the stable API.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    #[doc(hidden)]
    pub fn open_in_boot(
        dir: impl AsRef<Path>,
        config: JournalConfig,
        boot_id: [u8; 16],
    ) -> Result<(Journal, Recovered), JournalError> {
        let dir = dir.as_ref().to_path_buf();
        if config.segment_bytes == 0 || config.index_every == 0 {
            return Err(JournalError::Config(
                "segment_bytes and index_every must be at least 1".into(),
            ));
        }
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(JournalError::Foreign {
                    path: dir,
                    why: "not a directory".into(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir).map_err(|e| write_error("create", &dir, e))?;
            }
            Err(e) => return Err(JournalError::io("open", &dir, e)),
        }
        let survey = survey(&dir, &config)?;
        // Everything checked: from here on the directory is written.
        let manifest = match survey.manifest {
            Some(m) => m,
            None => {
                let m = Manifest::new(&config.server);
                m.write(&dir)
                    .map_err(|e| write_error("create", &dir.join(MANIFEST), e))?;
                m
            }
        };
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| write_error("create", &lock_path, e))?;
        // A lock held by another writer, or for an instant by a child
        // process between its fork and its exec (the descriptor is
        // close-on-exec, but a fork shares the lock until then): waited for
        // up to a second.
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(JournalError::Locked { path: lock_path })
                }
                Err(TryLockError::Error(e)) => return Err(JournalError::io("lock", &lock_path, e)),
            }
        }
        let mut removed = Vec::new();
        for path in survey.leftovers {
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(JournalError::io("remove", &path, e)),
            }
        }
        for (path, header) in &survey.repairs {
            open_rw(path)
                .and_then(|f| write_at(&f, &header.encode(), 0))
                .map_err(|e| JournalError::io("repair", path, e))?;
        }
        let mut segments = VecDeque::new();
        let mut next_number = 1;
        let mut last_header = None;
        for (l, header) in survey.segments {
            let (Some(segment), Some(index)) = (l.segment, l.index) else {
                continue;
            };
            let bytes = fs::metadata(&segment)
                .map_err(|e| JournalError::io("read", &segment, e))?
                .len();
            next_number = l.number + 1;
            segments.push_back(Seg {
                session_id: l.session_id,
                first: l.first,
                segment,
                index,
                bytes,
            });
            last_header = Some(header);
        }
        let mode = config.fsync;
        let shared = Arc::new(Shared::new(mode, dir.clone()));
        let mut journal = Journal {
            dir,
            config,
            manifest,
            boot_id,
            _lock: lock,
            shared,
            syncer: None,
            segments,
            back_run: None,
            active: None,
            next_number,
            session: None,
            next: 1,
            new_session_required: false,
            poisoned: false,
            stats: JournalStats::default(),
            pos: 0,
            epoch: 0,
            behind: None,
            ops: Vec::new(),
            behind_off: false,
            wake: None,
        };
        journal.set_back_run();
        let mut recovered = Recovered {
            session: None,
            truncated: None,
            new_session_required: false,
            boot_changed: false,
            segments: 0,
            bytes: 0,
            removed,
            warnings: survey.warnings,
        };
        if let Some(header) = last_header {
            journal.recover_last(&header, &mut recovered)?;
        }
        journal.init_shared();
        if mode != FsyncMode::Never {
            // What a killed process left in the page cache is made durable
            // before anything of it can be released.
            journal.sync_active()?;
        }
        journal.apply_retention(SystemTime::now())?;
        recovered.segments = journal.segments.len();
        recovered.bytes = journal.total_bytes();
        if let Some(s) = &mut recovered.session {
            s.oldest = journal.oldest_of(s.session_id).unwrap_or(s.next);
        }
        if let FsyncMode::Interval(every) = mode {
            journal.syncer = Shared::spawn_interval(&journal.shared, every);
        }
        Ok((journal, recovered))
    }

    /// Recovers the last segment: cuts its torn tail, repairs its index,
    /// decides whether the session continues, and makes it the active one.
    fn recover_last(&mut self, header: &Header, out: &mut Recovered) -> Result<(), JournalError> {
        let Some(last) = self.segments.back().cloned() else {
            return Ok(());
        };
        let index = match read_index(&last.index) {
            Err(e) => return Err(JournalError::io("read", &last.index, e)),
            Ok(Err(why)) => {
                return Err(JournalError::Damaged {
                    path: last.index.clone(),
                    offset: 0,
                    why: format!("index header unreadable ({why:?})"),
                })
            }
            Ok(Ok(index)) => index,
        };
        let seg = open_rw(&last.segment).map_err(|e| write_error("open", &last.segment, e))?;
        let idx = open_rw(&last.index).map_err(|e| write_error("open", &last.index, e))?;
        let len = last.bytes;
        let tail = tail::scan(
            &seg,
            len,
            header.first,
            &index.entries,
            self.config.index_every,
        )
        .map_err(|e| JournalError::io("read", &last.segment, e))?;
        if tail.good_end < len {
            seg.set_len(tail.good_end)
                .map_err(|e| JournalError::io("truncate", &last.segment, e))?;
        }
        if tail.good_end < len && !tail.zeros {
            out.truncated = Some(Truncation {
                path: last.segment.clone(),
                offset: tail.good_end,
                bytes: len - tail.good_end,
            });
        }
        // Entries past the good frames go; the scanned part is indexed.
        let kept: Vec<Entry> = index
            .entries
            .iter()
            .take(tail.keep)
            .copied()
            .take_while(|e| {
                e.offset < tail.good_end
                    || (e.offset == tail.good_end && e.kind != EntryKind::Position)
            })
            .collect();
        let kept_len = (HEADER_LEN + kept.len() * ENTRY_LEN) as u64;
        let mut idx_len = kept_len;
        if index.file_len != kept_len || !tail.rebuilt.is_empty() {
            idx.set_len(kept_len)
                .map_err(|e| JournalError::io("truncate", &last.index, e))?;
            for e in &tail.rebuilt {
                write_at(&idx, &e.encode(), idx_len)
                    .map_err(|err| JournalError::io("write", &last.index, err))?;
                idx_len += ENTRY_LEN as u64;
            }
        }
        let last_entry = tail.rebuilt.last().or(kept.last()).copied();
        let sealed =
            last_entry.is_some_and(|e| e.kind == EntryKind::Seal && e.offset == tail.good_end);
        let clean = last_entry.is_some_and(|e| {
            e.kind == EntryKind::Synced && e.offset == tail.good_end && e.sequence == tail.next
        });
        if let Some(back) = self.segments.back_mut() {
            back.bytes = tail.good_end;
        }
        let unknown = self.boot_id == [0; 16] || header.boot_id == [0; 16];
        out.boot_changed = unknown || header.boot_id != self.boot_id;
        out.new_session_required = out.boot_changed && header.fsync != FSYNC_ALWAYS && !clean;
        out.session = Some(RecoveredSession {
            session_id: header.session_id,
            next: tail.next,
            oldest: tail.next,
        });
        self.next = tail.next;
        self.new_session_required = out.new_session_required;
        let seg = Arc::new(seg);
        self.active = Some(Active {
            mapped: in_place::Mapped::new(&self.config, &seg, tail.good_end),
            seg,
            idx: Arc::new(idx),
            len: tail.good_end,
            idx_len,
            last_entry_at: tail.last_entry_at,
            pending: Vec::new(),
            reserved: tail.good_end,
        });
        if out.new_session_required {
            // `start_session` rolls; the old segment stays as it is.
            return Ok(());
        }
        self.session = Some(header.session_id);
        let same_writer =
            header.boot_id == self.boot_id && header.fsync == fsync_code(self.config.fsync);
        if sealed || !same_writer {
            // A segment's header describes the one writer of its bytes.
            self.roll(header.session_id, tail.next)?;
        }
        Ok(())
    }

    /// Syncs the active segment, its index and the directory.
    fn sync_active(&self) -> Result<(), JournalError> {
        if let (Some(active), Some(seg)) = (&self.active, self.segments.back()) {
            active
                .seg
                .sync_data()
                .map_err(|e| JournalError::io("sync", &seg.segment, e))?;
            active
                .idx
                .sync_data()
                .map_err(|e| JournalError::io("sync", &seg.index, e))?;
        }
        self.shared.sync_now()?;
        layout::sync_dir(&self.dir).map_err(|e| JournalError::io("sync", &self.dir, e))
    }

    fn init_shared(&mut self) {
        let mark = Mark {
            pos: 0,
            end: self.next,
            epoch: 0,
        };
        let mut st = self.shared.lock();
        st.written = mark;
        st.synced = mark;
        st.epoch_start = self.next;
        st.current = self.active.as_ref().map(|a| Arc::clone(&a.seg));
        let bound = self.bounds_readers();
        st.content = self
            .active
            .as_ref()
            .filter(|a| a.mapped.is_some() || bound)
            .map(|a| (self.next_number.saturating_sub(1), a.len));
    }
}
