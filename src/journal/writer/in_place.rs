//! The active segment written in place: mapped, zeros written ahead of its
//! content by a thread (pages in the page cache, blocks reserved), and each
//! batch encoded by the publisher straight into it (Linux, 64-bit; elsewhere, and
//! with [`JournalConfig::in_place`] off, every batch is written with
//! `pwrite`). The unsafe part is `journal/map.rs`; this is its safe user.
//!
//! On disk the only difference is a tail of zeros while the segment is
//! written (the zeros written ahead of the content): recovery cuts it without
//! reporting it (a frame starts with the sync byte 0xA5, never with a zero
//! byte), every reader stops at it, and a sealed or closed segment has none.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fs::File;
use std::io;
use std::sync::Arc;

use super::super::JournalConfig;
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
use super::super::{FsyncMode, WriteMode};

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub(super) use linux::Mapped;

/// What a mapping has room for beyond the segment size: a batch that
/// starts a segment may be larger than the segment size.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
const SLACK: u64 = 64 << 20;

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod linux {
    use super::*;
    use crate::journal::map::{Preparer, SegmentMap, Tail, AHEAD};
    use crate::session::SharedBytes;

    /// How far to prepare once the content reaches `end`: [`AHEAD`] more,
    /// but not past the segment size `cap`.
    fn want(cap: u64, end: u64) -> u64 {
        end.saturating_add(AHEAD).min(cap.max(end))
    }

    /// The active segment, mapped.
    #[derive(Debug)]
    pub(in super::super) struct Mapped {
        /// The segment size: reserved ahead up to it (and past it only
        /// for a batch that needs it).
        cap: u64,
        map: Arc<SegmentMap>,
        tail: Tail,
        preparer: Option<Preparer>,
    }

    impl Mapped {
        /// Maps `seg` (`content` bytes long) if the configuration asks for
        /// it and the system can: `None` means `pwrite`.
        pub(in super::super) fn new(
            config: &JournalConfig,
            seg: &Arc<File>,
            content: u64,
        ) -> Option<Mapped> {
            // `always` waits for the disk on every batch anyway, and would
            // sync the zeros ahead with it: `pwrite`.
            if config.writes != WriteMode::InPlace || config.fsync == FsyncMode::Always {
                return None;
            }
            let len = config
                .segment_bytes
                .max(content)
                .saturating_add(SLACK)
                .min(1 << 46);
            let (map, mut tail) = SegmentMap::new(seg, len, content).ok()?;
            let cap = config.segment_bytes;
            // A file system that cannot do it (or a full one): `pwrite`.
            tail.reserve(content + 1).ok()?;
            let mut preparer = Preparer::spawn(&map).ok();
            if let Some(p) = preparer.as_mut() {
                p.ask(want(cap, content));
            }
            Some(Mapped {
                cap,
                map,
                tail,
                preparer,
            })
        }

        /// Whether `len` bytes from `at` fit the mapping.
        pub(in super::super) fn fits(&self, at: u64, len: u64) -> bool {
            at.checked_add(len).is_some_and(|end| end <= self.map_len())
        }

        fn map_len(&self) -> u64 {
            // The mapping's length is what `reserve` may reach.
            self.tail.limit()
        }

        /// Reserves room for `len` bytes at `at` (the content mark) and
        /// hands them to `write`, which says how many it wrote.
        pub(in super::super) fn write(
            &mut self,
            at: u64,
            len: usize,
            write: impl FnOnce(&mut [u8]) -> usize,
        ) -> io::Result<usize> {
            let end = at + len as u64;
            self.tail.reserve(end)?;
            let start = usize::try_from(at).map_err(io::Error::other)?;
            let slice = self
                .tail
                .slice_mut(start, len)
                .ok_or_else(|| io::Error::other("outside the reserved bytes"))?;
            Ok(write(slice).min(len))
        }

        /// Commits the bytes up to `end`; asks for pages ahead of them.
        pub(in super::super) fn commit(&mut self, end: u64) {
            self.tail.commit(usize::try_from(end).unwrap_or(usize::MAX));
            if let Some(p) = self.preparer.as_mut() {
                p.ask(want(self.cap, end));
            }
        }

        /// The mapping, for a batch to hold its committed bytes.
        pub(in super::super) fn shared(&self) -> Arc<dyn SharedBytes> {
            Arc::clone(&self.map) as Arc<dyn SharedBytes>
        }

        /// Cuts the file back to its content (a roll, a close, a drop).
        pub(in super::super) fn trim(&mut self) -> io::Result<()> {
            self.tail.trim()
        }
    }
}

/// No mapping on this system: every batch is written with `pwrite`.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
#[derive(Debug)]
pub(super) enum Mapped {}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
impl Mapped {
    pub(super) fn new(_: &JournalConfig, _: &Arc<File>, _: u64) -> Option<Mapped> {
        None
    }
    pub(super) fn fits(&self, _: u64, _: u64) -> bool {
        match *self {}
    }
    pub(super) fn write(
        &mut self,
        _: u64,
        _: usize,
        _: impl FnOnce(&mut [u8]) -> usize,
    ) -> io::Result<usize> {
        match *self {}
    }
    pub(super) fn commit(&mut self, _: u64) {
        match *self {}
    }
    pub(super) fn shared(&self) -> Arc<dyn crate::session::SharedBytes> {
        match *self {}
    }
    pub(super) fn trim(&mut self) -> io::Result<()> {
        match *self {}
    }
}
