//! The retention ring: the last N data frames, by sequence, for replay.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::collections::VecDeque;

/// Encoded data frames `oldest..next`, back to back.
#[derive(Debug)]
pub(crate) struct Retention {
    bytes: VecDeque<u8>,
    /// Absolute byte position of each retained frame; frame `i` has
    /// sequence `oldest + i`.
    starts: VecDeque<u64>,
    /// Absolute byte position of `bytes[0]`.
    base: u64,
    oldest: u64,
    max_frames: usize,
}

impl Retention {
    pub(crate) fn new(max_frames: usize) -> Retention {
        Retention {
            bytes: VecDeque::new(),
            starts: VecDeque::new(),
            base: 0,
            oldest: 1,
            max_frames: max_frames.max(1),
        }
    }

    /// The sequence the next pushed frame must have.
    pub(crate) fn next(&self) -> u64 {
        self.oldest + self.starts.len() as u64
    }

    /// The oldest retained sequence (equal to `next()` when empty).
    pub(crate) fn oldest(&self) -> u64 {
        self.oldest
    }

    /// Appends frames numbered from `first`, whose lengths are `lens`; older
    /// frames fall out beyond the capacity.
    pub(crate) fn push(&mut self, first: u64, frames: &[u8], lens: impl Iterator<Item = usize>) {
        if first != self.next() {
            // A new numbering: start over rather than mix sequence spaces.
            self.bytes.clear();
            self.starts.clear();
            self.oldest = first;
        }
        let mut position = self.base + self.bytes.len() as u64;
        for len in lens {
            self.starts.push_back(position);
            position += len as u64;
        }
        self.bytes.extend(frames);
        let excess = self.starts.len().saturating_sub(self.max_frames);
        if excess > 0 {
            self.starts.drain(..excess);
            self.oldest += excess as u64;
            let new_base = self.starts.front().copied().unwrap_or(position);
            let drop = usize::try_from(new_base - self.base).unwrap_or(usize::MAX);
            self.bytes.drain(..drop.min(self.bytes.len()));
            self.base = new_base;
        }
    }

    /// Appends to `out` the frames from `from` on, whole, at most `max_bytes`
    /// of them (at least one frame if any is left); returns the next sequence
    /// to copy.
    pub(crate) fn copy_from(&self, from: u64, max_bytes: usize, out: &mut Vec<u8>) -> u64 {
        let from = from.max(self.oldest);
        let Some(first) = from
            .checked_sub(self.oldest)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return from;
        };
        let Some(&start) = self.starts.get(first) else {
            return from;
        };
        let end_of_data = self.base + self.bytes.len() as u64;
        let mut end = start;
        let mut next = from;
        for i in first..self.starts.len() {
            let frame_end = self.starts.get(i + 1).copied().unwrap_or(end_of_data);
            if next > from && frame_end - start > max_bytes as u64 {
                break;
            }
            end = frame_end;
            next += 1;
        }
        let (a, b) = self.bytes.as_slices();
        let lo = usize::try_from(start - self.base).unwrap_or(0);
        let hi = usize::try_from(end - self.base).unwrap_or(0);
        copy_range(a, b, lo, hi, out);
        next
    }
}

/// Appends bytes `lo..hi` of the concatenation `a ++ b` to `out`.
fn copy_range(a: &[u8], b: &[u8], lo: usize, hi: usize, out: &mut Vec<u8>) {
    if lo < a.len() {
        out.extend_from_slice(a.get(lo..hi.min(a.len())).unwrap_or_default());
    }
    if hi > a.len() {
        let from = lo.saturating_sub(a.len());
        out.extend_from_slice(b.get(from..hi - a.len()).unwrap_or_default());
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn frames(first: u64, n: u64) -> (Vec<u8>, Vec<usize>) {
        // Frame k is `k` repeated, 3 or 5 bytes long.
        let mut bytes = Vec::new();
        let mut lens = Vec::new();
        for k in first..first + n {
            let len = if k % 2 == 0 { 3 } else { 5 };
            bytes.extend(std::iter::repeat(k as u8).take(len));
            lens.push(len);
        }
        (bytes, lens)
    }

    #[test]
    fn keeps_the_last_frames_and_copies_whole_frames() {
        let mut r = Retention::new(10);
        for batch in 0..5 {
            let (b, l) = frames(1 + batch * 4, 4);
            r.push(1 + batch * 4, &b, l.into_iter());
        }
        assert_eq!((r.oldest(), r.next()), (11, 21));
        let mut out = Vec::new();
        let next = r.copy_from(3, 1 << 20, &mut out);
        assert_eq!(next, 21, "clamped to the oldest, copied to the end");
        assert_eq!(out, frames(11, 10).0);
        out.clear();
        let next = r.copy_from(12, 9, &mut out);
        assert_eq!(
            out,
            frames(12, 2).0,
            "8 bytes fit, the third frame would not"
        );
        assert_eq!(next, 14);
        out.clear();
        assert_eq!(r.copy_from(21, 100, &mut out), 21);
        assert!(out.is_empty());
    }
}
