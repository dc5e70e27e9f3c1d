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
//!   mapping. Only the `Tail` writes, only at or after the mapping's
//!   *content* mark, and only below the file's *reserved* size (blocks
//!   allocated with `fallocate` and the file extended over them, so a write
//!   through the mapping can neither hit the end of the file nor run out of
//!   space: it never raises `SIGBUS`).
//! - **Readers below the mark.** [`SegmentMap::bytes`] gives ranges below
//!   the content mark only, which [`Tail::commit`] moves forward and never
//!   back: bytes that can be read are never written again, and a `&mut`
//!   slice from the `Tail` (which borrows it) is gone before the mark moves
//!   over its bytes.
//! - **The file stays.** [`Tail::seal`] cuts the file back to the content
//!   mark, consuming the `Tail`; readers never read past the mark. What no
//!   code of this process can prevent: another process truncating a
//!   mapped segment (the journal's directory is the server's alone, and its
//!   lock file keeps other tickwire writers out); accesses past the new end
//!   would then raise `SIGBUS`, as with every mapped log (Chronicle Queue,
//!   Aeron's archive).
//!
//! A third thread, the [`Populater`], faults pages in ahead of the writer
//! (`MADV_POPULATE_WRITE`): page-cache allocation and zeroing leave the
//! publishing thread. It only calls `madvise`, which makes no reference
//! into the mapping and does not change its bytes.
#![deny(unsafe_op_in_unsafe_fn)]
#![allow(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fmt;
use std::fs::File;
use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use rustix::fs::{fallocate, FallocateFlags};
use rustix::mm::{madvise, mmap, munmap, Advice, MapFlags, ProtFlags};

use crate::session::SharedBytes;

/// How far ahead of the written bytes the [`Populater`] keeps pages
/// faulted in, and the most the file is reserved ahead of them.
pub(crate) const AHEAD: u64 = 16 << 20;
/// The populater's step: one `madvise` at a time.
const STEP: usize = 1 << 20;
const PAGE: u64 = 4096;

/// A segment file mapped shared, read and write, at its full virtual size.
pub(crate) struct SegmentMap {
    ptr: NonNull<u8>,
    len: usize,
    /// Bytes `0..content` are written, committed and never written again.
    content: AtomicUsize,
}

// SAFETY: the mapping is plain memory, shared by the process's threads;
// `SegmentMap` gives out shared slices below the content mark only and the
// one `Tail` writes at or after it (see the module's documentation), so a
// `SegmentMap` may be used from any thread.
unsafe impl Send for SegmentMap {}
// SAFETY: as for `Send`: `bytes` (shared, below the mark) and `populate`
// (`madvise`, no reference made) are the only methods on `&SegmentMap`, and
// the mark is an atomic.
unsafe impl Sync for SegmentMap {}

impl fmt::Debug for SegmentMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentMap")
            .field("len", &self.len)
            .field("content", &self.content.load(Ordering::Relaxed))
            .finish()
    }
}

impl SegmentMap {
    /// Maps `len` bytes of `file` (opened for reading and writing), whose
    /// first `content` bytes are written and whose size is `content`; the
    /// one [`Tail`] writes after them.
    pub(crate) fn new(file: &Arc<File>, len: u64, content: u64) -> io::Result<(Arc<Self>, Tail)> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("segment too large to map"))?;
        let content = usize::try_from(content)
            .ok()
            .filter(|c| *c <= len)
            .ok_or_else(|| io::Error::other("segment larger than its mapping"))?;
        if len == 0 {
            return Err(io::Error::other("an empty mapping"));
        }
        // SAFETY: a new mapping at an address the kernel chooses, so it
        // overlaps no memory of this process; `len` is not zero. Pages past
        // the file's end are never touched (the `Tail` writes below the
        // reserved size only, readers below the content mark).
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
        let map = Arc::new(SegmentMap {
            ptr,
            len,
            content: AtomicUsize::new(content),
        });
        // Large folios where the file system has them: fewer pages to
        // fault in (a hint; its failure changes nothing).
        // SAFETY: the whole mapping made above; MADV_HUGEPAGE changes how
        // the kernel backs it, not its contents.
        let _ = unsafe { madvise(ptr.as_ptr().cast(), len, Advice::LinuxHugepage) };
        let tail = Tail {
            map: Arc::clone(&map),
            file: Arc::clone(file),
            reserved: content as u64,
        };
        Ok((map, tail))
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

    /// Faults `at..at + len` in, writable (`MADV_POPULATE_WRITE`), without
    /// changing a byte. Pages past the file's end fail with `EFAULT`.
    fn populate(&self, at: usize, len: usize) -> io::Result<()> {
        if at.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::other("outside the mapping"));
        }
        // SAFETY: inside the mapping (checked above); MADV_POPULATE_WRITE
        // faults pages in as a write would but writes nothing and makes no
        // reference, so it may run while the `Tail` writes the same pages
        // and readers read others.
        unsafe {
            madvise(
                self.ptr.as_ptr().add(at).cast(),
                len,
                Advice::LinuxPopulateWrite,
            )
        }?;
        Ok(())
    }

    /// The content mark.
    pub(crate) fn content(&self) -> usize {
        self.content.load(Ordering::Acquire)
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
    file: Arc<File>,
    /// The file's size: blocks allocated up to here.
    reserved: u64,
}

impl Tail {
    /// The file's size (allocated up to it).
    pub(crate) fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The mapping's length: the most `reserve` can reach.
    pub(crate) fn limit(&self) -> u64 {
        self.map.len as u64
    }

    /// Makes sure the bytes up to `need` can be written, and if it can,
    /// up to `want` too: `fallocate` allocates the blocks (at most up to
    /// the mapping) and the file is extended over them. The wish is
    /// granted in steps of at least half of [`AHEAD`] (one system call per
    /// several MiB written), the need at once. `need` fails on a full disk
    /// (`ENOSPC`, nothing changed): a write through the mapping never does.
    pub(crate) fn reserve(&mut self, need: u64, want: u64) -> io::Result<()> {
        let want = want.max(need);
        if need <= self.reserved && want <= self.reserved.saturating_add(AHEAD / 2) {
            return Ok(());
        }
        let limit = self.map.len as u64;
        if need > limit {
            return Err(io::Error::other("a batch past the segment's mapping"));
        }
        let round = |n: u64| n.div_ceil(PAGE).saturating_mul(PAGE).min(limit);
        let mut target = round(want);
        let mut result = self.allocate(target);
        if result.is_err() {
            if need <= self.reserved {
                return Ok(()); // the wish failed (a disk filling up); the need is met
            }
            target = need;
            result = self.allocate(target);
        }
        result?;
        if target > self.reserved {
            self.file.set_len(target)?;
            self.reserved = target;
        }
        Ok(())
    }

    fn allocate(&self, to: u64) -> io::Result<()> {
        let len = to.saturating_sub(self.reserved);
        if len == 0 {
            return Ok(());
        }
        fallocate(&self.file, FallocateFlags::KEEP_SIZE, self.reserved, len)?;
        Ok(())
    }

    /// The bytes `at..at + len` to write: at or after the content mark,
    /// below the reserved size (`None` otherwise).
    pub(crate) fn slice_mut(&mut self, at: usize, len: usize) -> Option<&mut [u8]> {
        let end = at.checked_add(len)?;
        let reserved = usize::try_from(self.reserved).ok()?;
        if at < self.map.content() || end > reserved || end > self.map.len {
            return None;
        }
        // SAFETY: inside the mapping and inside the file's allocated size
        // (checked above: no SIGBUS, no ENOSPC), and the mapping lives as
        // long as `self.map`; at or after the content mark, which only this
        // `Tail` moves and cannot move while the slice borrows it, so no
        // shared slice covers these bytes; the `Tail` is the mapping's only
        // one and the slice borrows it mutably, so no other `&mut` exists.
        // `populate` may run on these pages meanwhile: it writes nothing.
        Some(unsafe { std::slice::from_raw_parts_mut(self.map.ptr.as_ptr().add(at), len) })
    }

    /// Moves the content mark to `end` (forward only, within the reserved
    /// size): the bytes before it are committed, readable and never
    /// written again.
    pub(crate) fn commit(&mut self, end: usize) {
        let reserved = usize::try_from(self.reserved).unwrap_or(usize::MAX);
        let end = end.min(reserved).min(self.map.len);
        if end > self.map.content() {
            self.map.content.store(end, Ordering::Release);
        }
    }

    /// Cuts the file back to the content mark and goes on writing.
    pub(crate) fn trim(&mut self) -> io::Result<()> {
        let content = self.map.content() as u64;
        self.file.set_len(content)?;
        self.reserved = content;
        Ok(())
    }
}

/// A thread that faults the mapping's pages in, writable, ahead of the
/// writer, up to the mark it is given (never past the reserved size).
#[derive(Debug)]
pub(crate) struct Populater {
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

impl Populater {
    /// Starts populating `map` from `from`.
    pub(crate) fn spawn(map: &Arc<SegmentMap>, from: u64) -> io::Result<Populater> {
        let shared = Arc::new((Mutex::new(Goal::default()), Condvar::new()));
        let (theirs, map) = (Arc::clone(&shared), Arc::clone(map));
        let thread = thread::Builder::new()
            .name("tickwire-journal-populate".into())
            .spawn(move || populate_loop(&map, &theirs, from))?;
        Ok(Populater {
            shared,
            thread: Some(thread),
            asked: from,
        })
    }

    /// Populate up to `upto` (rounded down to a step). Cheap when the goal
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

impl Drop for Populater {
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn populate_loop(map: &SegmentMap, shared: &(Mutex<Goal>, Condvar), from: u64) {
    let (lock, wake) = shared;
    let mut done = usize::try_from(from).unwrap_or(usize::MAX) / STEP * STEP;
    loop {
        let upto = {
            let mut goal = lock.lock().unwrap_or_else(PoisonError::into_inner);
            while !goal.stop && usize::try_from(goal.upto).unwrap_or(usize::MAX) <= done {
                goal = wake.wait(goal).unwrap_or_else(PoisonError::into_inner);
            }
            if goal.stop {
                return;
            }
            usize::try_from(goal.upto)
                .unwrap_or(usize::MAX)
                .min(map.len)
        };
        while done < upto {
            let len = STEP.min(upto - done);
            // A failure (no MADV_POPULATE_WRITE before Linux 5.14, a page
            // past the file's end after a seal) costs only speed: the
            // writer then faults the pages in itself.
            if map.populate(done, len).is_err() {
                return;
            }
            done += len;
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
        // Nothing reserved: nothing to write, nothing to read.
        assert!(tail.slice_mut(0, 10).is_none());
        assert!(map.bytes(0, 1).is_none());
        tail.reserve(10, 10).unwrap();
        assert_eq!(
            (tail.reserved(), f.metadata().unwrap().len()),
            (4096, 4096),
            "a page"
        );
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
        assert!(tail.slice_mut(10, 4087).is_none(), "past the reserved size");
        assert!(tail.reserve(8192, 1 << 20).is_ok());
        assert_eq!(tail.reserved(), 1 << 20, "the wish, up to the mapping");
        assert!(tail.reserve(2 << 20, 2 << 20).is_err(), "past the mapping");
        tail.commit(5); // never back
        assert_eq!(map.content(), 10);
        tail.trim().unwrap();
        assert_eq!(f.metadata().unwrap().len(), 10);
        assert_eq!(std::fs::read(dir.join("seg")).unwrap(), b"0123456789");
        assert_eq!(SharedBytes::get(&*map, 2, 3), b"234");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_populater_faults_pages_in_without_changing_them() {
        let (dir, f) = file("populate");
        let (map, mut tail) = SegmentMap::new(&f, 8 << 20, 0).unwrap();
        tail.reserve(4 << 20, 4 << 20).unwrap();
        let mut p = Populater::spawn(&map, 0).unwrap();
        p.ask(4 << 20);
        p.ask(8 << 20);
        tail.slice_mut(0, 3).unwrap().copy_from_slice(b"abc");
        tail.commit(3);
        drop(p);
        assert_eq!(map.bytes(0, 3).unwrap(), b"abc");
        tail.trim().unwrap();
        assert_eq!(f.metadata().unwrap().len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
