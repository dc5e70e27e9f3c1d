//! A bounded outbound byte queue with partial-write handling.

use std::prelude::rust_2021::*;

use std::io::{self, Write};

/// Bytes waiting to be written, at most `cap` of them.
#[derive(Debug)]
pub(crate) struct OutQueue {
    buf: Vec<u8>,
    start: usize,
    cap: usize,
}

/// How far a flush got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// The queue is empty.
    Done,
    /// The socket would block; wait for the next writable event.
    Blocked,
}

impl OutQueue {
    pub(crate) fn new(cap: usize) -> OutQueue {
        OutQueue {
            buf: Vec::new(),
            start: 0,
            cap,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn room(&self) -> usize {
        self.cap.saturating_sub(self.len())
    }

    /// Appends `bytes` whole, or nothing if they do not fit under the cap.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.room() {
            return false;
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        true
    }

    /// Writes until the queue is empty or the writer would block.
    pub(crate) fn flush_into<W: Write>(&mut self, writer: &mut W) -> io::Result<(Flushed, usize)> {
        let mut written = 0;
        loop {
            let Some(pending) = self.buf.get(self.start..).filter(|p| !p.is_empty()) else {
                self.buf.clear();
                self.start = 0;
                return Ok((Flushed::Done, written));
            };
            match writer.write(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.start += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((Flushed::Blocked, written));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes as much of `bytes` as the writer takes without blocking.
pub(crate) fn write_some<W: Write>(writer: &mut W, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while let Some(rest) = bytes.get(written..).filter(|r| !r.is_empty()) {
        match writer.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    /// Accepts `limit` bytes per call, then blocks once every other call.
    struct Choppy {
        got: Vec<u8>,
        limit: usize,
        calls: usize,
    }

    impl Write for Choppy {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if self.calls.is_multiple_of(5) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.limit);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_and_would_block_keep_every_byte_in_order() {
        let mut q = OutQueue::new(1000);
        let data: Vec<u8> = (0..=255).collect();
        assert!(q.push(&data));
        assert!(q.push(&data));
        assert!(!q.push(&[0; 600]), "over the cap");
        let mut w = Choppy {
            got: Vec::new(),
            limit: 7,
            calls: 0,
        };
        let mut rounds = 0;
        while !q.is_empty() {
            let (_, _) = q.flush_into(&mut w).unwrap();
            assert!(q.push(&[]));
            rounds += 1;
            assert!(rounds < 1000);
        }
        let mut want = data.clone();
        want.extend(&data);
        assert_eq!(w.got, want);
        assert_eq!(q.room(), 1000);
    }
}
