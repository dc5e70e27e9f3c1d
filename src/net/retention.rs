//! The retention ring: the last N data frames, by sequence, for replay.
//!
//! Frames are kept as the encoded batches they were published in (shared
//! with the broadcast, never copied); the oldest batch is trimmed frame by
//! frame so that exactly the last N frames are retained.
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::collections::VecDeque;
use std::sync::Arc;

/// One published batch: frames `first..first + frames`, starting at byte
/// `start` of `bytes` (earlier frames of the batch have been evicted).
#[derive(Debug)]
struct Chunk {
    first: u64,
    frames: u64,
    start: usize,
    bytes: Arc<Vec<u8>>,
}

/// Encoded data frames `oldest..next`.
#[derive(Debug)]
pub(crate) struct Retention {
    chunks: VecDeque<Chunk>,
    retained: u64,
    next: u64,
    max_frames: u64,
}

/// Byte length of the frame at the start of `bytes` (its fourth byte), at least 1.
fn frame_len(bytes: &[u8]) -> usize {
    bytes.get(3).map_or(1, |&len| usize::from(len).max(1))
}

impl Retention {
    pub(crate) fn new(max_frames: usize) -> Retention {
        Retention {
            chunks: VecDeque::new(),
            retained: 0,
            next: 1,
            max_frames: max_frames.max(1) as u64,
        }
    }

    /// The sequence the next pushed frame must have.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// The oldest retained sequence (equal to `next()` when empty).
    pub(crate) fn oldest(&self) -> u64 {
        self.next - self.retained
    }

    /// Appends `frames` frames numbered from `first`, encoded back to back in
    /// `bytes`; the oldest frames fall out beyond the capacity.
    pub(crate) fn push(&mut self, first: u64, frames: u64, bytes: Arc<Vec<u8>>) {
        if first != self.next {
            // A new numbering: start over rather than mix sequence spaces.
            self.chunks.clear();
            self.retained = 0;
        }
        self.chunks.push_back(Chunk {
            first,
            frames,
            start: 0,
            bytes,
        });
        self.retained += frames;
        self.next = first + frames;
        while self.retained > self.max_frames {
            let excess = self.retained - self.max_frames;
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.frames <= excess {
                self.retained -= front.frames;
                self.chunks.pop_front();
            } else {
                for _ in 0..excess {
                    let rest = front.bytes.get(front.start..).unwrap_or_default();
                    front.start += frame_len(rest);
                }
                front.first += excess;
                front.frames -= excess;
                self.retained -= excess;
            }
        }
    }

    /// Appends to `out` the frames from `from` on, whole, at most `max_bytes`
    /// of them (at least one frame if any is left); returns the next sequence
    /// to copy.
    pub(crate) fn copy_from(&self, from: u64, max_bytes: usize, out: &mut Vec<u8>) -> u64 {
        let mut next = from.max(self.oldest());
        let index = self.chunks.partition_point(|c| c.first + c.frames <= next);
        for chunk in self.chunks.range(index..) {
            // Skip to `next` inside the chunk, then take whole frames.
            let mut at = chunk.start;
            for _ in chunk.first..next.max(chunk.first) {
                at += frame_len(chunk.bytes.get(at..).unwrap_or_default());
            }
            let begin = at;
            while next < chunk.first + chunk.frames {
                let len = frame_len(chunk.bytes.get(at..).unwrap_or_default());
                let taken = out.len() + (at - begin);
                if taken > 0 && taken + len > max_bytes {
                    out.extend_from_slice(chunk.bytes.get(begin..at).unwrap_or_default());
                    return next;
                }
                at += len;
                next += 1;
            }
            out.extend_from_slice(chunk.bytes.get(begin..at).unwrap_or_default());
        }
        next
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    /// Frames `first..first + n`; frame k is 4 or 6 bytes, its fourth byte
    /// its length, every byte otherwise `k`.
    fn frames(first: u64, n: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        for k in first..first + n {
            let len = if k % 2 == 0 { 4 } else { 6 };
            let mut f = vec![k as u8; len];
            f[3] = len as u8;
            bytes.extend(f);
        }
        bytes
    }

    #[test]
    fn keeps_exactly_the_last_frames_and_copies_whole_frames() {
        let mut r = Retention::new(10);
        for batch in 0..5 {
            r.push(1 + batch * 4, 4, Arc::new(frames(1 + batch * 4, 4)));
        }
        assert_eq!((r.oldest(), r.next()), (11, 21));
        let mut out = Vec::new();
        let next = r.copy_from(3, 1 << 20, &mut out);
        assert_eq!(next, 21, "clamped to the oldest, copied to the end");
        assert_eq!(out, frames(11, 10));
        out.clear();
        let next = r.copy_from(12, 11, &mut out);
        assert_eq!(
            out,
            frames(12, 2),
            "10 bytes fit, the third frame would not"
        );
        assert_eq!(next, 14);
        out.clear();
        assert_eq!(r.copy_from(21, 100, &mut out), 21);
        assert!(out.is_empty());
        // One batch larger than the capacity is trimmed inside.
        let mut r = Retention::new(3);
        r.push(1, 8, Arc::new(frames(1, 8)));
        assert_eq!(r.oldest(), 6);
        r.copy_from(1, 1 << 20, &mut out);
        assert_eq!(out, frames(6, 3));
    }
}
