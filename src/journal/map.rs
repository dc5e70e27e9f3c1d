//! The active segment mapped into memory, so that the publisher encodes
//! each batch straight into the journal (no copy, no system call per
//! batch), and the retention keeps the journal's own bytes (file-backed
//! pages, not a second copy on the heap). Linux, 64-bit.
//!
//! The only `unsafe` code of the journal: `mmap`, `munmap`, `madvise` and
//! slices over the mapping. Everything that keeps those slices sound is in
//! this file and checked here at run time, not left to the callers:
//!
//! - **One writer.** [`SegmentMap::new`] hands out the one [`Tail`] of a
//!   mapping. Only the `Tail` writes through the mapping, only at or after
//!   the *content* mark, and only below the *prepared* mark: bytes already
//!   written to the file as zeros (`pwrite`, which extends the file and
//!   makes the file system reserve their blocks), so a write through the
//!   mapping can neither pass the end of the file nor run out of space: it
//!   never raises `SIGBUS`.
//! - **Readers below the content mark.** [`SegmentMap::bytes`] gives ranges
//!   below it only, which [`Tail::commit`] moves forward and never back:
//!   bytes that can be read are never written again, and a `&mut` slice
//!   from the `Tail` (which borrows it) is gone before the mark moves over
//!   its bytes.
//! - **Zeros only ahead.** Zeros are written (by the [`Preparer`] thread,
//!   or by the `Tail` itself when it gets ahead of it) only at or after the
//!   prepared mark, under a lock, and the mark moves only after they are
//!   written: never over bytes the `Tail` may be writing.
//! - **Written pages leave the page tables.** The `Preparer` drops the
//!   page-table entries of committed pages a few MiB behind the writer
//!   (`MADV_DONTNEED`, which on a shared file mapping keeps the bytes in
//!   the page cache and the addresses mapped): readers that come back fault
//!   the same bytes in again, and the kernel's writeback of those pages
//!   needs no TLB shootdown.
//! - **The file stays.** [`Tail::trim`] cuts the file back to the content
//!   mark and stops the zeros; readers never read past the mark. What no
//!   code of this process can prevent: another process truncating a
//!   mapped segment (the journal's directory is the server's alone, and its
//!   lock file keeps other tickwire writers out); accesses past the new end
//!   would then raise `SIGBUS`, as with every mapped log (Chronicle Queue,
//!   Aeron's archive).
//!
//! Why zeros with `pwrite` ahead, not `fallocate` and
//! `MADV_POPULATE_WRITE`: on the reference VM (ext4, Linux 6.18) putting a
//! page into the page cache costs about three times less through `pwrite`
//! (no read-ahead of unwritten extents, no fault path); the `Preparer` then
//! maps the pages in (`MADV_POPULATE_WRITE` on pages already cached: no
//! allocation, no zeroing), so the writer takes no page fault
//! (`notes/issue-24-journal.md`).
#![deny(unsafe_op_in_unsafe_fn)]
#![allow(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use rustix::mm::{madvise, mmap, munmap, Advice, MapFlags, ProtFlags};

use crate::session::SharedBytes;

/// How far ahead of the written bytes the [`Preparer`] keeps zeros.
pub(crate) const AHEAD: u64 = 16 << 20;
/// Zeros written at a time.
const STEP: usize = 1 << 20;
/// How far behind the content mark the [`Preparer`] unmaps written pages
/// from this process (see [`SegmentMap::release`]), and in what steps.
const RELEASE_LAG: u64 = 4 << 20;
const RELEASE_STEP: u64 = 2 << 20;
static ZEROS: [u8; STEP] = [0; STEP];

/// A segment file mapped shared, read and write, at its full virtual size.
pub(crate) struct SegmentMap {
    ptr: NonNull<u8>,
    len: usize,
    /// Bytes `0..content` are written, committed and never written again.
    content: AtomicUsize,
    /// Bytes `0..prepared` are in the file (the file is at least this
    /// long, their blocks reserved): the `Tail` may write below it.
    prepared: AtomicU64,
    /// Held while zeros are written at `prepared`; `None` once trimmed
    /// (no zeros any more).
    file: Mutex<Option<Arc<File>>>,
}

// SAFETY: the mapping is plain memory, shared by the process's threads;
// `SegmentMap` gives out shared slices below the content mark only and the
// one `Tail` writes at or after it (see the module's documentation), so a
// `SegmentMap` may be used from any thread.
unsafe impl Send for SegmentMap {}
// SAFETY: as for `Send`: `bytes` (shared, below the mark), `prepare`
// (`pwrite` at or after the prepared mark, under the lock) and the marks
// (atomics) are all `&SegmentMap` offers.
unsafe impl Sync for SegmentMap {}

impl fmt::Debug for SegmentMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentMap")
            .field("len", &self.len)
            .field("content", &self.content.load(Ordering::Relaxed))
            .field("prepared", &self.prepared.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SegmentMap {
    /// Maps `len` bytes of `file` (opened for reading and writing), whose
    /// size is `content`, all of it written; the one [`Tail`] writes after
    /// it.
    pub(crate) fn new(file: &Arc<File>, len: u64, content: u64) -> io::Result<(Arc<Self>, Tail)> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("segment too large to map"))?;
        let content_at = usize::try_from(content)
            .ok()
            .filter(|c| *c <= len)
            .ok_or_else(|| io::Error::other("segment larger than its mapping"))?;
        if len == 0 {
            return Err(io::Error::other("an empty mapping"));
        }
        // SAFETY: a new mapping at an address the kernel chooses, so it
        // overlaps no memory of this process; `len` is not zero. Pages past
        // the file's end are never touched (the `Tail` writes below the
        // prepared mark only, readers below the content mark).
        let p = unsafe {
            mmap(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file,
                0,
            )
        }?;
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        // Large folios where the file system has them: fewer faults (a
        // hint; its failure changes nothing).
        // SAFETY: the whole mapping made above; MADV_HUGEPAGE changes how
        // the kernel backs it, not its contents.
        let _ = unsafe { madvise(ptr.as_ptr().cast(), len, Advice::LinuxHugepage) };
        let map = Arc::new(SegmentMap {
            ptr,
            len,
            content: AtomicUsize::new(content_at),
            prepared: AtomicU64::new(content),
            file: Mutex::new(Some(Arc::clone(file))),
        });
        Ok((Arc::clone(&map), Tail { map }))
    }

    /// The committed bytes `at..at + len` (`None` past the content mark).
    pub(crate) fn bytes(&self, at: usize, len: usize) -> Option<&[u8]> {
        let end = at.checked_add(len)?;
        if end > self.content.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: inside the mapping (the mark never passes `self.len`),
        // which lives as long as `self`; below the content mark, so written
        // once, initialized, and never written again (the `Tail` writes at
        // or after the mark only): no `&mut` to these bytes exists or will.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(at), len) })
    }

    /// The content mark.
    pub(crate) fn content(&self) -> usize {
        self.content.load(Ordering::Acquire)
    }

    /// The prepared mark.
    pub(crate) fn prepared(&self) -> u64 {
        self.prepared.load(Ordering::Acquire)
    }

    /// Maps the prepared pages `at..at + len` into this process's page
    /// tables, writable (`MADV_POPULATE_WRITE`): the writer's first write
    /// to each then takes no page fault. The pages are in the page cache
    /// already (zeros written), so nothing is allocated or zeroed here.
    fn fault_in(&self, at: u64, len: u64) -> io::Result<()> {
        let end = at.checked_add(len).filter(|e| *e <= self.prepared());
        let (Some(_), Ok(at), Ok(len)) = (end, usize::try_from(at), usize::try_from(len)) else {
            return Err(io::Error::other("past the prepared bytes"));
        };
        if len == 0 {
            return Ok(());
        }
        // SAFETY: inside the mapping (below the prepared mark, which never
        // passes `self.len`); MADV_POPULATE_WRITE faults pages in as a
        // write would but writes nothing and makes no reference, so it may
        // run while the `Tail` writes these pages and readers read others.
        // Pages past the file's end (a trim meanwhile) fail with EFAULT,
        // never a signal.
        unsafe {
            madvise(
                self.ptr.as_ptr().add(at).cast(),
                len,
                Advice::LinuxPopulateWrite,
            )
        }?;
        Ok(())
    }

    /// Takes the committed pages `at..at + len` out of this process's
    /// page tables (`MADV_DONTNEED`; the bytes stay in the file's page
    /// cache, dirty until written back). Why: the kernel's writeback
    /// cleans a page by write-protecting every mapping of it, and a page
    /// mapped here costs a TLB shootdown, an interrupt to every CPU this
    /// process runs on (a VM exit on a virtual machine): about three per
    /// 184 KB batch in the bench's `sustained` section, where a batch took
    /// 290–321 µs with them and 190–276 µs without, in runs of the same
    /// kind (`notes/issue-24-journal.md`).
    /// Released in 2 MiB steps behind the writer, one flush per step. A
    /// reader that comes back to them (a replay from the retention) faults
    /// them in again, read-only.
    fn release(&self, at: u64, len: u64) -> io::Result<()> {
        let end = at.checked_add(len).filter(|e| *e <= self.content() as u64);
        let (Some(_), Ok(at), Ok(len)) = (end, usize::try_from(at), usize::try_from(len)) else {
            return Err(io::Error::other("past the content mark"));
        };
        if len == 0 {
            return Ok(());
        }
        // SAFETY: inside the mapping, below the content mark: no `&mut`
        // covers these bytes (the `Tail` writes at or after the mark). On a
        // shared file mapping MADV_DONTNEED only drops the page-table
        // entries: the address range stays mapped, the bytes stay the
        // file's (dirty bits move to the page cache), and the next access
        // maps the same page again, so every `&[u8]` readers hold over
        // them stays valid and reads the same bytes.
        unsafe { madvise(self.ptr.as_ptr().add(at).cast(), len, Advice::LinuxDontNeed) }?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Option<Arc<File>>> {
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes zeros from the prepared mark up to `to` (at most one `step`
    /// of them when `step`; never past the mapping), moving the mark as
    /// they are written. A full disk fails here (`ENOSPC`), with the mark
    /// after what was written.
    fn prepare(&self, to: u64, step: bool) -> io::Result<()> {
        let guard = self.lock();
        let Some(file) = guard.as_ref() else {
            return Err(io::Error::other("the segment was trimmed"));
        };
        let to = to.min(self.len as u64);
        let mut at = self.prepared.load(Ordering::Acquire);
        while at < to {
            let n = usize::try_from(to - at).unwrap_or(STEP).min(STEP);
            let zeros = ZEROS.get(..n).unwrap_or_default();
            match file.write_at(zeros, at) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => {
                    at += w as u64;
                    self.prepared.store(at, Ordering::Release);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if step {
                break;
            }
        }
        Ok(())
    }
}

impl Drop for SegmentMap {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once, here; every slice
        // of it borrows `self` (or the `Tail`, which holds an `Arc` of it),
        // so none outlives it.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Committed bytes, as a batch holds them.
impl SharedBytes for SegmentMap {
    fn get(&self, at: usize, len: usize) -> &[u8] {
        self.bytes(at, len).unwrap_or_default()
    }
}

/// The writing end of a [`SegmentMap`]: one per mapping.
#[derive(Debug)]
pub(crate) struct Tail {
    map: Arc<SegmentMap>,
}

impl Tail {
    /// The mapping's length: the most the segment can hold.
    pub(crate) fn limit(&self) -> u64 {
        self.map.len as u64
    }

    /// Makes sure the bytes up to `need` can be written: zeros written up
    /// to it now if the [`Preparer`] is not that far yet. A full disk fails
    /// here (`ENOSPC`), never in a write through the mapping.
    pub(crate) fn reserve(&mut self, need: u64) -> io::Result<()> {
        if need <= self.map.prepared() {
            return Ok(());
        }
        if need > self.map.len as u64 {
            return Err(io::Error::other("a batch past the segment's mapping"));
        }
        self.map.prepare(need, false)
    }

    /// The bytes `at..at + len` to write: at or after the content mark,
    /// below the prepared mark (`None` otherwise).
    pub(crate) fn slice_mut(&mut self, at: usize, len: usize) -> Option<&mut [u8]> {
        let end = at.checked_add(len)?;
        let prepared = usize::try_from(self.map.prepared()).ok()?;
        if at < self.map.content() || end > prepared || end > self.map.len {
            return None;
        }
        // SAFETY: inside the mapping and below the prepared mark, so inside
        // the file with its blocks reserved (no SIGBUS, no ENOSPC), and the
        // mapping lives as long as `self.map`; at or after the content
        // mark, which only this `Tail` moves and cannot move while the
        // slice borrows it, so no shared slice covers these bytes; the
        // `Tail` is the mapping's only one and the slice borrows it
        // mutably, so no other `&mut` exists; zeros are only written at or
        // after the prepared mark, past these bytes.
        Some(unsafe { std::slice::from_raw_parts_mut(self.map.ptr.as_ptr().add(at), len) })
    }

    /// Moves the content mark to `end` (forward only, within the prepared
    /// bytes): the bytes before it are committed, readable and never
    /// written again.
    pub(crate) fn commit(&mut self, end: usize) {
        let prepared = usize::try_from(self.map.prepared()).unwrap_or(usize::MAX);
        let end = end.min(prepared).min(self.map.len);
        if end > self.map.content() {
            self.map.content.store(end, Ordering::Release);
        }
    }

    /// Cuts the file back to the content mark and writes no zeros any
    /// more (the [`Preparer`] stops): a sealed or closed segment's size is
    /// its content. The `Tail` writes nothing after this.
    pub(crate) fn trim(&mut self) -> io::Result<()> {
        let mut guard = self.map.lock();
        let content = self.map.content() as u64;
        if let Some(file) = guard.as_ref() {
            file.set_len(content)?;
        }
        *guard = None;
        self.map.prepared.store(content, Ordering::Release);
        drop(guard);
        // Nothing more is written: the pages the `Preparer` had not yet
        // released (a full segment's last MiB) leave the page tables too.
        let _ = self.map.release(0, content);
        Ok(())
    }
}

/// A thread that writes zeros ahead of the writer (1 MiB at a time, the
/// lock released between them) and maps them in, up to the mark it is
/// given.
#[derive(Debug)]
pub(crate) struct Preparer {
    shared: Arc<(Mutex<Goal>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    /// The last goal given (the writer's copy: no lock to compare).
    asked: u64,
}

#[derive(Debug, Default)]
struct Goal {
    upto: u64,
    stop: bool,
}

impl Preparer {
    /// Starts preparing `map`.
    pub(crate) fn spawn(map: &Arc<SegmentMap>) -> io::Result<Preparer> {
        let shared = Arc::new((Mutex::new(Goal::default()), Condvar::new()));
        let (theirs, map) = (Arc::clone(&shared), Arc::clone(map));
        let asked = map.prepared();
        let thread = thread::Builder::new()
            .name("tickwire-journal-prepare".into())
            .spawn(move || prepare_loop(&map, &theirs))?;
        Ok(Preparer {
            shared,
            thread: Some(thread),
            asked,
        })
    }

    /// Prepare up to `upto` (rounded down to a step). Cheap when the goal
    /// moved less than a step: no lock, no wake.
    pub(crate) fn ask(&mut self, upto: u64) {
        let upto = upto / STEP as u64 * STEP as u64;
        if upto <= self.asked {
            return;
        }
        self.asked = upto;
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(PoisonError::into_inner).upto = upto;
        wake.notify_one();
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn prepare_loop(map: &SegmentMap, shared: &(Mutex<Goal>, Condvar)) {
    let (lock, wake) = shared;
    // Pages below this are out of this process's page tables.
    let mut released = 0u64;
    loop {
        let upto = {
            let mut goal = lock.lock().unwrap_or_else(PoisonError::into_inner);
            while !goal.stop && goal.upto <= map.prepared() {
                goal = wake.wait(goal).unwrap_or_else(PoisonError::into_inner);
            }
            if goal.stop {
                return;
            }
            goal.upto
        };
        while map.prepared() < upto {
            // A failure (a full disk, the segment trimmed) costs nothing
            // but speed: the writer prepares what it needs itself, and
            // its own failure refuses its batch.
            let from = map.prepared();
            if map.prepare(upto, true).is_err() {
                break;
            }
            // Mapped in here, not by the writer's page faults (a failure:
            // the writer faults them in itself).
            let _ = map.fault_in(from, map.prepared().saturating_sub(from));
        }
        // Written pages well behind the writer out of the page tables,
        // before the kernel's writeback reaches them (a failure: they stay
        // mapped, which costs speed only).
        let below =
            (map.content() as u64).saturating_sub(RELEASE_LAG) / RELEASE_STEP * RELEASE_STEP;
        if below > released && map.release(released, below - released).is_ok() {
            released = below;
        }
        // Wait for a new goal (or retry a failed one when asked again).
        let mut goal = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if goal.upto <= upto && !goal.stop {
            goal.upto = map.prepared();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> (std::path::PathBuf, Arc<File>) {
        let dir = std::env::temp_dir().join(format!("tw-map-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seg");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        (dir, Arc::new(f))
    }

    #[test]
    fn the_tail_writes_after_the_mark_and_readers_read_before_it() {
        let (dir, f) = file("mark");
        let (map, mut tail) = SegmentMap::new(&f, 1 << 20, 0).unwrap();
        // Nothing prepared: nothing to write, nothing to read.
        assert!(tail.slice_mut(0, 10).is_none());
        assert!(map.bytes(0, 1).is_none());
        tail.reserve(10).unwrap();
        assert_eq!((map.prepared(), f.metadata().unwrap().len()), (10, 10));
        tail.slice_mut(0, 10)
            .unwrap()
            .copy_from_slice(b"0123456789");
        assert!(map.bytes(0, 10).is_none(), "not committed yet");
        tail.commit(10);
        assert_eq!(map.bytes(0, 10).unwrap(), b"0123456789");
        assert!(
            tail.slice_mut(5, 10).is_none(),
            "committed bytes are never written again"
        );
        assert!(tail.slice_mut(10, 1).is_none(), "past the prepared bytes");
        assert!(tail.reserve(2 << 20).is_err(), "past the mapping");
        tail.reserve(100).unwrap();
        tail.slice_mut(10, 90).unwrap().fill(b'x');
        tail.commit(5); // never back
        assert_eq!(map.content(), 10);
        tail.trim().unwrap();
        assert_eq!(f.metadata().unwrap().len(), 10);
        assert_eq!(std::fs::read(dir.join("seg")).unwrap(), b"0123456789");
        assert_eq!(SharedBytes::get(&*map, 2, 3), b"234");
        assert!(tail.reserve(20).is_err(), "trimmed: no zeros any more");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn released_pages_keep_their_bytes_for_readers_and_the_file() {
        let (dir, f) = file("release");
        let len = 6usize << 20;
        let (map, mut tail) = SegmentMap::new(&f, len as u64 + (1 << 20), 0).unwrap();
        tail.reserve(len as u64).unwrap();
        let pattern = |i: usize| u8::try_from(i % 251).unwrap_or(0);
        for (i, b) in tail.slice_mut(0, len).unwrap().iter_mut().enumerate() {
            *b = pattern(i);
        }
        assert!(map.release(0, 4096).is_err(), "nothing committed yet");
        tail.commit(len);
        // A reader holds a slice across the release.
        let held = map.bytes(0, len).unwrap();
        map.release(0, 4 << 20).unwrap();
        assert!(held.iter().enumerate().all(|(i, b)| *b == pattern(i)));
        assert!(
            map.release(4 << 20, 3 << 20).is_err(),
            "past the content mark"
        );
        tail.trim().unwrap();
        let on_disk = std::fs::read(dir.join("seg")).unwrap();
        assert_eq!(on_disk.len(), len);
        assert!(on_disk.iter().enumerate().all(|(i, b)| *b == pattern(i)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Resident size of the mapping starting at `start`, from
    /// `/proc/self/smaps` (page-table entries of this process, in bytes).
    fn resident(start: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let head = format!("{start:x}-");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
        lines.next()?;
        let rss = lines.find_map(|l| l.strip_prefix("Rss:"))?;
        rss.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|k| k << 10)
    }

    #[test]
    fn the_preparer_takes_written_pages_out_of_the_page_tables() {
        let (dir, f) = file("release-thread");
        let (len, written) = (64usize << 20, 48usize << 20);
        let (map, mut tail) = SegmentMap::new(&f, len as u64, 0).unwrap();
        let mut p = Preparer::spawn(&map).unwrap();
        let mark = |i: usize| 1 + u8::try_from(i % 199).unwrap();
        // As the journal's writer does: ask for zeros ahead, write, commit.
        for (i, at) in (0..written).step_by(1 << 20).enumerate() {
            p.ask((at + (1 << 20)) as u64 + AHEAD);
            tail.reserve((at + (1 << 20)) as u64).unwrap();
            tail.slice_mut(at, 1 << 20).unwrap().fill(mark(i));
            tail.commit(at + (1 << 20));
        }
        let start = map.ptr.as_ptr() as usize;
        // Mapped: what is prepared ahead (16 MiB) and the last 4–6 MiB
        // written; without the release, all 64 MiB would be.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut rss = resident(start);
        while map.prepared() < len as u64 || rss.is_none_or(|r| r > 24 << 20) {
            assert!(
                std::time::Instant::now() < deadline,
                "prepared {}, resident {rss:?}",
                map.prepared()
            );
            thread::sleep(std::time::Duration::from_millis(5));
            rss = resident(start);
        }
        drop(p);
        // Trimmed (a segment sealed or closed): nothing stays mapped.
        tail.trim().unwrap();
        assert_eq!(resident(start), Some(0));
        // And every byte reads back, through the mapping and from the file.
        let bytes = map.bytes(0, written).unwrap();
        for (i, chunk) in bytes.chunks(1 << 20).enumerate() {
            assert!(chunk.iter().all(|b| *b == mark(i)), "MiB {i}");
        }
        let on_disk = std::fs::read(dir.join("seg")).unwrap();
        assert!(on_disk.as_slice() == bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_preparer_writes_zeros_ahead_and_never_over_the_writer() {
        let mark = |i: usize| 1 + u8::try_from(i % 200).unwrap();
        let (dir, f) = file("prepare");
        let (map, mut tail) = SegmentMap::new(&f, 8 << 20, 0).unwrap();
        let mut p = Preparer::spawn(&map).unwrap();
        p.ask(4 << 20);
        // The writer goes on meanwhile, preparing what it needs itself.
        for i in 0..1000usize {
            tail.reserve((i as u64 + 1) * 100).unwrap();
            tail.slice_mut(i * 100, 100).unwrap().fill(mark(i));
            tail.commit((i + 1) * 100);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while map.prepared() < 4 << 20 {
            assert!(std::time::Instant::now() < deadline, "{map:?}");
            thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(p);
        let bytes = map.bytes(0, 100_000).unwrap();
        for (i, chunk) in bytes.chunks(100).enumerate() {
            assert!(chunk.iter().all(|b| *b == mark(i)), "chunk {i}");
        }
        assert_eq!(f.metadata().unwrap().len(), 4 << 20);
        tail.trim().unwrap();
        assert_eq!(f.metadata().unwrap().len(), 100_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
