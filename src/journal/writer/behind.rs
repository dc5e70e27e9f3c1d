//! [`WriteMode::Behind`](super::super::WriteMode::Behind): the segment
//! written by a thread of the journal, behind the publisher.
//!
//! ```text
//!  publisher (journal lock)                      writer thread
//!  reserve blocks (fallocate KEEP_SIZE) ─┐
//!  number, bookkeeping, queue the ops ───┼─▶ ops: Write Mark Write Index Mark …
//!                                        │     one pwritev per run of contiguous writes,
//!                                        │     the last Mark (`written`, `content`), the Index
//!  event loop: releases up to ◀──────────┴──── durable_end() = written.end, then wakes the loop
//! ```
//!
//! The publisher hands the thread everything, in order, under the
//! journal's lock: the batch's bytes (shared with the retention: no copy),
//! the index entries due, and the mark that says the batch is in. The
//! thread writes the bytes and only then moves the shared `written` mark
//! (and the readers' `content` bound), which is what the server releases
//! to clients up to and what the interval sync covers: write-ahead holds.
//! A roll waits for the thread (once per segment), so a segment is whole
//! and sealed before the next exists. Space is reserved before a batch is
//! numbered, so a write here cannot fail for space; any other error
//! poisons the journal (nothing queued after it is written or released;
//! publishing fails).
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fs::File;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::super::sync::{Mark, Shared};
use crate::session::Batch;

/// Blocks reserved at a time ahead of the content (one `fallocate` per
/// this many bytes published).
pub(super) const RESERVE: u64 = 8 << 20;

/// While the thread has written within this long, it looks for batches
/// every [`POLL`] instead of waiting to be woken: under load (batches
/// closer than this) no wake-up per batch; at a lower rate, a wake-up per
/// batch and few polls (at 500,000 frames/s in the `serve` command's
/// batches, 1 ms here cost the thread 12% of a core in polls).
const BUSY: Duration = Duration::from_micros(100);

/// How often a busy thread looks for batches: what a batch may wait for
/// the thread under load (an idle one is woken at once). The pause lets
/// batches gather into one `pwritev` and one wake-up of the event loop.
const POLL: Duration = Duration::from_micros(20);

/// The most buffers one `pwritev` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// One step for the thread, done in the order queued.
#[derive(Debug)]
pub(super) enum Op {
    /// A batch's bytes (the retention's own: shared, not copied) at `at`
    /// of the segment `file`.
    Write {
        file: Arc<File>,
        at: u64,
        batch: Arc<Batch>,
    },
    /// Index entries at `at` of the index `file`: written after the pass's
    /// mark, so that no reader of this process finds an entry past what
    /// it may read.
    Index {
        file: Arc<File>,
        at: u64,
        entries: Vec<u8>,
    },
    /// Everything queued before it is in: the journal's `written` mark and
    /// the readers' bound (segment number, content).
    Mark { mark: Mark, content: (u64, u64) },
}

#[derive(Debug, Default)]
struct Queue {
    ops: Vec<Op>,
    /// The thread is writing ops it took.
    busy: bool,
    /// The thread sleeps until it is notified (idle for `BUSY`).
    waiting: bool,
    /// Tests: the thread takes nothing while set (a stalled disk).
    #[cfg(test)]
    paused: bool,
    stop: bool,
    failed: Option<String>,
    /// Called after each pass (the server's loop).
    wake: Option<WakeFn>,
    /// Passes made and `pwritev` calls (for [`JournalStats`](super::super::JournalStats)).
    passes: u64,
    writes: u64,
}

/// What the thread calls once batches are in.
pub(crate) type Wake = Arc<dyn Fn() + Send + Sync>;

/// [`Wake`], printable.
#[derive(Clone)]
pub(super) struct WakeFn(pub(super) Wake);

impl std::fmt::Debug for WakeFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WakeFn")
    }
}

/// Reserves the blocks of `len` bytes at `at` of `file` without changing
/// its size (`fallocate` with `FALLOC_FL_KEEP_SIZE`): writes there cannot
/// fail for space. Elsewhere than Linux: `Unsupported`.
pub(super) fn reserve(file: &File, at: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{fallocate, FallocateFlags};
        fallocate(file, FallocateFlags::KEEP_SIZE, at, len).map_err(io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, at, len);
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[derive(Debug, Default)]
struct Inner {
    queue: Mutex<Queue>,
    cond: Condvar,
    /// A write failed (`Queue::failed` says why): read on every append
    /// without the lock.
    broken: AtomicBool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer thread and its queue.
#[derive(Debug)]
pub(super) struct Behind {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl Behind {
    /// Starts the thread; it moves `shared`'s marks.
    pub(super) fn spawn(shared: &Arc<Shared>) -> io::Result<Behind> {
        let inner = Arc::new(Inner::default());
        let (work, shared) = (Arc::clone(&inner), Arc::clone(shared));
        let thread = std::thread::Builder::new()
            .name("tickwire-journal-writer".into())
            .spawn(move || run(&work, &shared))?;
        Ok(Behind {
            inner,
            thread: Some(thread),
        })
    }

    /// Queues `ops` (in order, after everything queued before).
    pub(super) fn push(&self, ops: &mut Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let mut q = self.inner.lock();
        q.ops.append(ops);
        let waiting = q.waiting;
        drop(q);
        // A thread that polls (it wrote in the last `BUSY`) finds them
        // within `POLL`: no wake-up per batch (on a VM, each is an
        // interrupt between CPUs).
        if waiting {
            self.inner.cond.notify_all();
        }
    }

    /// Why the thread stopped writing, if it did.
    #[cfg(test)]
    pub(super) fn failed(&self) -> Option<String> {
        self.inner.lock().failed.clone()
    }

    /// Whether the thread stopped writing (`Queue::failed` says
    /// why), without taking its lock.
    pub(super) fn broken(&self) -> bool {
        self.inner.broken.load(Ordering::Acquire)
    }

    /// Sets what the thread calls after a pass.
    pub(super) fn set_wake(&self, wake: WakeFn) {
        self.inner.lock().wake = Some(wake);
    }

    /// Tests: stops the thread from taking ops (`true`) or lets it go on.
    #[cfg(test)]
    pub(super) fn pause(&self, paused: bool) {
        self.inner.lock().paused = paused;
        self.inner.cond.notify_all();
    }

    /// (passes, `pwritev` calls) so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        let q = self.inner.lock();
        (q.passes, q.writes)
    }

    /// Waits until everything queued is written (or the thread failed:
    /// its reason).
    pub(super) fn drain(&self) -> Result<(), String> {
        let mut q = self.inner.lock();
        loop {
            if let Some(why) = &q.failed {
                return Err(why.clone());
            }
            if q.ops.is_empty() && !q.busy {
                return Ok(());
            }
            q = self
                .inner
                .cond
                .wait(q)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Behind {
    fn drop(&mut self) {
        // What is queued is written first (the thread stops once empty).
        self.inner.lock().stop = true;
        self.inner.cond.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread: takes every op queued, writes them, moves the marks.
fn run(inner: &Inner, shared: &Shared) {
    let mut spare = Vec::new();
    let mut last = Instant::now();
    let mut q = inner.lock();
    loop {
        if q.failed.is_some() {
            // Nothing after a failed write is written (or marked).
            q.ops.clear();
            return;
        }
        #[cfg(test)]
        if q.paused && !q.stop {
            q = inner.cond.wait(q).unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        if q.ops.is_empty() {
            if q.stop {
                return;
            }
            if last.elapsed() < BUSY {
                drop(q);
                std::thread::sleep(POLL);
                q = inner.lock();
            } else {
                q.waiting = true;
                q = inner.cond.wait(q).unwrap_or_else(PoisonError::into_inner);
                q.waiting = false;
            }
            continue;
        }
        std::mem::swap(&mut q.ops, &mut spare);
        q.busy = true;
        drop(q);
        let mut writes = 0;
        let result = pass(&spare, shared, &mut writes);
        // The batches' bytes are let go with no lock held.
        spare.clear();
        last = Instant::now();
        q = inner.lock();
        q.busy = false;
        q.passes += 1;
        q.writes += writes;
        let wake = q.wake.clone();
        if let Err(e) = result {
            q.failed = Some(e.to_string());
            inner.broken.store(true, Ordering::Release);
            q.ops.clear();
        }
        drop(q);
        inner.cond.notify_all();
        if let Some(WakeFn(wake)) = wake {
            wake();
        }
        q = inner.lock();
    }
}

/// Writes `ops`: the batches' bytes in order, then the last mark among
/// them, then the index entries (a reader of this process checks entries
/// against the mark).
fn pass(ops: &[Op], shared: &Shared, writes: &mut u64) -> io::Result<()> {
    let mut run = Run::default();
    let mut mark = None;
    for op in ops {
        match op {
            Op::Write { file, at, batch } => run.add(file, *at, batch.bytes(), writes)?,
            Op::Index { .. } => {}
            Op::Mark { mark: m, content } => mark = Some((*m, *content)),
        }
    }
    run.flush(writes)?;
    if let Some((m, content)) = mark {
        let mut st = shared.lock();
        st.written = m;
        st.content = Some(content);
    }
    for op in ops {
        if let Op::Index { file, at, entries } = op {
            run.add(file, *at, entries, writes)?;
        }
    }
    run.flush(writes)
}

/// Contiguous writes to one file, written with one `pwritev`.
#[derive(Default)]
struct Run<'a> {
    file: Option<Arc<File>>,
    at: u64,
    len: u64,
    bufs: Vec<IoSlice<'a>>,
}

impl<'a> Run<'a> {
    /// `bytes` at `at` of `file`: in this run if it follows it.
    fn add(
        &mut self,
        file: &Arc<File>,
        at: u64,
        bytes: &'a [u8],
        writes: &mut u64,
    ) -> io::Result<()> {
        let follows =
            self.file.as_ref().is_some_and(|f| Arc::ptr_eq(f, file)) && self.at + self.len == at;
        if !follows || self.bufs.len() == IOV_MAX {
            self.flush(writes)?;
            self.file = Some(Arc::clone(file));
            self.at = at;
        }
        self.bufs.push(IoSlice::new(bytes));
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self, writes: &mut u64) -> io::Result<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let mut bufs = std::mem::take(&mut self.bufs);
        let mut slices: &mut [IoSlice<'_>] = &mut bufs;
        let mut at = self.at;
        while !slices.is_empty() {
            let n = rustix::io::pwritev(&*file, slices, at)?;
            *writes += 1;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwritev wrote 0 bytes",
                ));
            }
            at += n as u64;
            IoSlice::advance_slices(&mut slices, n);
        }
        self.len = 0;
        bufs.clear();
        self.bufs = bufs; // its capacity, for the next run
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::encode::{Payload, QuoteFields, Sequencer};
    use crate::journal::{
        check, FsyncMode, Journal, JournalConfig, JournalError, JournalReader, WriteMode,
    };
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::sync::Mutex;

    fn batch(first: u64, n: usize) -> Arc<Batch> {
        let mut bytes = vec![0u8; n * 44];
        let msgs: Vec<_> = (0..n)
            .map(|i| {
                let q = QuoteFields {
                    bid_price: i32::try_from(first + i as u64).unwrap_or(i32::MAX),
                    ..QuoteFields::default()
                };
                (first + i as u64, Payload::Quote(q))
            })
            .collect();
        let done = Sequencer::starting_at(first).encode_batch(&msgs, &mut bytes);
        bytes.truncate(done.bytes);
        Arc::new(Batch::new(bytes).unwrap())
    }

    fn dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tickwire-behind-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn behind(segment_bytes: u64) -> JournalConfig {
        JournalConfig {
            fsync: FsyncMode::Never,
            segment_bytes,
            index_every: 4 << 10,
            writes: WriteMode::Behind,
            ..JournalConfig::default()
        }
    }

    fn read_all(mut reader: JournalReader) -> Result<Vec<u8>, JournalError> {
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        while reader.read(u64::MAX, 64 << 10, &mut buf)?.is_some() {
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    /// Batches written behind across many rolls (64 KiB segments): the
    /// journal holds them byte for byte, every segment's size is its
    /// content (no reserved tail, no zeros), the index is whole, and a
    /// reopen continues after the last one.
    #[test]
    fn batches_written_behind_cross_rolls_and_read_back_whole() {
        let dir = dir("rolls");
        let (mut journal, _) = Journal::open(&dir, behind(64 << 10)).unwrap();
        journal.start_session(9, 1).unwrap();
        let mut all = Vec::new();
        for i in 0..3_000u64 {
            let b = batch(journal.next_sequence(), 1 + (i % 23) as usize);
            all.extend_from_slice(b.bytes());
            let ticket = journal.append_behind(&b).unwrap().expect("written behind");
            journal.kick();
            assert_eq!(ticket.end(), journal.next_sequence());
        }
        journal.write_queued().unwrap();
        assert_eq!(journal.durable_end(), journal.next_sequence());
        let stats = journal.stats();
        assert!(
            stats.behind_passes > 0 && stats.behind_writes > 0,
            "{stats:?}"
        );
        assert!(journal.segments() > 20, "rolled: {}", journal.segments());
        assert_eq!(read_all(journal.reader(1).unwrap()).unwrap(), all);
        let next = journal.next_sequence();
        drop(journal);
        let report = check(&dir).unwrap();
        assert!(!report.is_damaged(), "{report:?}");
        let sessions: Vec<_> = report
            .sessions
            .iter()
            .map(|s| (s.session_id, s.first, s.end, s.holes))
            .collect();
        assert_eq!(sessions, [(9, 1, next, 0)]);
        let mut on_disk = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "twr") {
                let meta = std::fs::metadata(&path).unwrap();
                // No block reserved past the content is left behind.
                assert!(
                    meta.blocks() * 512 <= meta.len().next_multiple_of(4096) + 4096,
                    "{path:?}"
                );
                on_disk += meta.len();
            }
        }
        assert_eq!(
            on_disk,
            all.len() as u64,
            "every segment's size is its content"
        );
        let (journal, recovered) = Journal::open(&dir, behind(64 << 10)).unwrap();
        assert_eq!(recovered.truncated, None);
        assert_eq!(journal.next_sequence(), next);
        drop(journal);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Readers of the same process while batches are written behind (and
    /// segments roll under them): never a torn frame, never more than the
    /// written mark, always a prefix of what was appended.
    #[test]
    fn readers_never_see_a_batch_the_writer_thread_has_not_written() {
        let dir = dir("readers");
        let (mut journal, _) = Journal::open(&dir, behind(256 << 10)).unwrap();
        journal.start_session(3, 1).unwrap();
        let journal = Arc::new(Mutex::new(journal));
        let all = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (journal, all) = (Arc::clone(&journal), Arc::clone(&all));
            std::thread::spawn(move || {
                for i in 0..4_000u64 {
                    let mut j = journal.lock().unwrap();
                    let b = batch(j.next_sequence(), 1 + (i % 97) as usize);
                    // Before the thread can write it (readers read with no
                    // lock held).
                    all.lock().unwrap().extend_from_slice(b.bytes());
                    j.append_behind(&b).unwrap().unwrap();
                    j.kick();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() || reads == 0 {
            let reader = journal.lock().unwrap().reader(1).unwrap();
            let got = read_all(reader).unwrap();
            let all = all.lock().unwrap();
            assert!(
                got.len() <= all.len() && all[..got.len()] == got[..],
                "a prefix: {} of {} bytes",
                got.len(),
                all.len()
            );
            reads += 1;
            assert!(reads < 100_000);
        }
        writer.join().unwrap();
        let mut j = journal.lock().unwrap();
        j.write_queued().unwrap();
        let got = read_all(j.reader(1).unwrap()).unwrap();
        assert_eq!(got, *all.lock().unwrap());
        drop(j);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A write the thread cannot do poisons it: nothing after it is
    /// marked written (so nothing is released), later ops are dropped,
    /// and the journal refuses appends from then on.
    #[test]
    fn a_failed_write_poisons_and_moves_no_mark() {
        let dir = dir("poison");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("read-only");
        std::fs::write(&path, b"").unwrap();
        let shared = Arc::new(Shared::new(FsyncMode::Never, dir.clone()));
        let thread = Behind::spawn(&shared).unwrap();
        let file = Arc::new(File::open(&path).unwrap()); // read only: writes fail
        let mark = |end| Op::Mark {
            mark: Mark {
                pos: end * 44,
                end,
                epoch: 1,
            },
            content: (1, end * 44),
        };
        let mut ops = vec![
            Op::Write {
                file: Arc::clone(&file),
                at: 0,
                batch: batch(1, 4),
            },
            mark(5),
        ];
        thread.push(&mut ops);
        assert!(thread.drain().is_err());
        assert!(thread.failed().is_some());
        assert_eq!(shared.lock().written.end, 0, "no mark moved");
        let mut later = vec![mark(9)];
        thread.push(&mut later);
        assert!(thread.drain().is_err());
        assert_eq!(shared.lock().written.end, 0);
        drop(thread);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What readers of this process may read while a segment is written
    /// behind: the written part of it, nothing of a segment created after
    /// it, every byte of the ones before.
    #[test]
    fn readers_are_bounded_by_the_segment_being_written() {
        let shared = Shared::new(FsyncMode::Never, std::env::temp_dir());
        shared.lock().content = Some((3, 100));
        assert_eq!(shared.readable(3, 500), 100);
        assert_eq!(shared.readable(4, 500), 0);
        assert_eq!(shared.readable(2, 500), 500);
    }
}
