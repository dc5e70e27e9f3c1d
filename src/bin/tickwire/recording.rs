//! The output file of `record`: it never destroys data it did not write.
//!
//! An existing file is refused unless `--force` (replace it) or `--append`
//! (continue its recording). Whatever the mode, the file is created,
//! truncated or extended only when the first data frame is ready: a run
//! that ends before one (Ctrl-C, a server that cannot be reached, a
//! session that does not match) leaves an existing file as it was and
//! creates none. That the file can be created is checked at start-up, so
//! an unwritable path fails before any server sees a client.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use tickwire::parse::{Event, Parser};
use tickwire::Message;

/// What to do with an existing output file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Refuse it.
    New,
    /// Replace it (`--force`).
    Force,
    /// Continue its recording (`--append`); a missing file starts a new one.
    Append,
}

/// What an existing recording ends with, for `--append`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Existing {
    /// The session of its last LoginAccepted.
    pub(crate) session_id: u64,
    /// The last data sequence of that session in it (`None`: no data yet).
    pub(crate) last: Option<u64>,
    /// The next sequence wanted: `last + 1`, or the LoginAccepted's first sequence.
    pub(crate) next: u64,
    /// Bytes up to the end of its last whole frame (what is kept).
    keep: u64,
    /// Bytes after that (a frame cut short by a killed recorder): dropped.
    pub(crate) dropped: u64,
}

enum Target {
    Stdout,
    File(PathBuf),
}

/// The output, opened at the first data frame.
pub(crate) struct Recording {
    target: Target,
    mode: Mode,
    existing: Option<Existing>,
    /// Bytes to write before the first data frame (the recorder's LoginAccepted).
    pending: Vec<u8>,
    out: Option<BufWriter<Box<dyn Write>>>,
}

fn error(path: &Path, what: &str, e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}

impl Recording {
    /// Checks `path` for `mode` (nothing is created or changed); for
    /// `--append` to an existing file, reads where its recording ends.
    ///
    /// # Errors
    /// An existing file without `--force` or `--append`, a directory, a
    /// file that cannot be written or created, a file to append to that
    /// holds no recording.
    pub(crate) fn plan(path: &Path, mode: Mode) -> io::Result<Recording> {
        if path.as_os_str() == "-" {
            if mode == Mode::Append {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    "--append needs a file to continue, not stdout (-)",
                ));
            }
            return Ok(Recording {
                target: Target::Stdout,
                mode,
                existing: None,
                pending: Vec::new(),
                out: None,
            });
        }
        let existing = match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{} is a directory: -o names the recording's file",
                        path.display()
                    ),
                ))
            }
            Ok(_) => match mode {
                Mode::New => {
                    return Err(io::Error::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "{} exists: record does not replace a file; --append continues its \
                             recording (the same session, from its last sequence + 1), --force \
                             replaces it",
                            path.display()
                        ),
                    ))
                }
                Mode::Force => {
                    // Writable? (Opened without truncating: nothing changes.)
                    OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(|e| error(path, "write", &e))?;
                    None
                }
                Mode::Append => {
                    OpenOptions::new()
                        .append(true)
                        .open(path)
                        .map_err(|e| error(path, "write", &e))?;
                    Some(scan(path)?)
                }
            },
            Err(e) if e.kind() == ErrorKind::NotFound => {
                probe(path)?;
                None
            }
            Err(e) => return Err(error(path, "create", &e)),
        };
        Ok(Recording {
            target: Target::File(path.to_path_buf()),
            mode,
            existing,
            pending: Vec::new(),
            out: None,
        })
    }

    /// The recording `--append` continues (`None`: a new one).
    pub(crate) fn existing(&self) -> Option<Existing> {
        self.existing
    }

    /// `bytes` go out before the first data frame, if one comes.
    pub(crate) fn stage(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.out {
            Some(out) => out.write_all(bytes),
            None => {
                self.pending.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// Writes a data frame, opening the output first if it is the first.
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.out.is_none() {
            let mut out = BufWriter::with_capacity(1 << 20, self.open()?);
            out.write_all(&self.pending)?;
            self.pending = Vec::new();
            self.out = Some(out);
        }
        match &mut self.out {
            Some(out) => out.write_all(bytes),
            None => Err(io::Error::other("output not open")),
        }
    }

    /// Whether anything was written (the file exists, as created or extended).
    pub(crate) fn opened(&self) -> bool {
        self.out.is_some()
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().map_or(Ok(()), Write::flush)
    }

    fn open(&self) -> io::Result<Box<dyn Write>> {
        let path = match &self.target {
            Target::Stdout => return Ok(Box::new(io::stdout().lock())),
            Target::File(path) => path,
        };
        let file = match (self.mode, self.existing) {
            (Mode::Append, Some(existing)) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(|e| error(path, "write", &e))?;
                if existing.dropped > 0 {
                    file.set_len(existing.keep)
                        .map_err(|e| error(path, "write", &e))?;
                }
                file
            }
            (Mode::Force, _) => File::create(path).map_err(|e| error(path, "create", &e))?,
            // New, or --append to a file that did not exist: never over
            // a file that appeared since start-up.
            _ => OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| error(path, "create", &e))?,
        };
        Ok(Box::new(file))
    }
}

/// Whether a file can be created at `path` (its directory exists and is
/// writable): creates and removes a probe file next to it.
fn probe(path: &Path) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let probe = path.with_file_name(format!(".{name}.tickwire-probe-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| error(path, "create", &e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Where the recording in `path` ends: its last session and sequence, and
/// the end of its last whole frame.
fn scan(path: &Path) -> io::Result<Existing> {
    let mut input = File::open(path).map_err(|e| error(path, "open", &e))?;
    let mut parser = Parser::with_capacity(1 << 20).map_err(io::Error::other)?;
    // Bytes consumed so far, and the end of the last whole frame.
    let (mut at, mut keep) = (0u64, 0u64);
    let mut session: Option<(u64, u64)> = None;
    let mut last: Option<u64> = None;
    let mut data_without_session = false;
    loop {
        match input.read(parser.spare()) {
            Ok(0) => parser.finish(),
            Ok(n) => parser.commit(n).map_err(io::Error::other)?,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(error(path, "read", &e)),
        }
        parser.drain(|event| match event {
            Event::Frame(m) | Event::Duplicate(m) => {
                at += m.len() as u64;
                keep = at;
                match m {
                    Message::LoginAccepted(la) => {
                        session = Some((la.session_id(), la.sequence()));
                        last = None;
                    }
                    m if m.is_data() => {
                        if session.is_none() {
                            data_without_session = true;
                        }
                        last = Some(last.map_or(m.sequence(), |l: u64| l.max(m.sequence())));
                    }
                    _ => {}
                }
            }
            Event::Discarded(d) => at += d.bytes,
            _ => {}
        });
        if parser.is_finished() {
            break;
        }
    }
    let Some((session_id, first)) = session.filter(|_| !data_without_session) else {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "{} is not a recording of `tickwire record` (no LoginAccepted before its data \
                 frames): nothing to append to; --force replaces it",
                path.display()
            ),
        ));
    };
    Ok(Existing {
        session_id,
        last,
        next: last.map_or(first, |l| l.saturating_add(1)),
        keep,
        dropped: at.saturating_sub(keep),
    })
}
