//! `tickwire._tickwire`: the Rust half of the Python package.
//!
//! Frames are decoded by the tickwire crate and their fields packed, one
//! fixed-size native-endian record per frame, into a `Vec<u8>` per message
//! type; numpy gets that vector as a `uint8` array without a copy
//! (`IntoPyArray`: the array owns the vector) and the Python side views it
//! with the structured dtype of the records (`tickwire.QUOTE_DTYPE`,
//! `tickwire.TRADE_DTYPE`). No Python object is made per frame, and the GIL
//! is released while files are read and parsed and while the subscriber
//! waits.
//!
//! Record layouts (C layout, natural alignment, native byte order; the
//! dtypes in `tickwire/__init__.py` must match them field for field):
//!
//! ```text
//! quote (40 bytes): sequence u64 @0, timestamp u64 @8 (datetime64[ns]), instrument_id u32 @16,
//!                   bid_price i32 @20, ask_price i32 @24, bid_size u32 @28, ask_size u32 @32, pad @36
//! trade (32 bytes): sequence u64 @0, timestamp u64 @8, instrument_id u32 @16, price i32 @20,
//!                   size u32 @24, side u8 @28, flags u8 @29, pad @30
//! ```
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use numpy::{IntoPyArray, PyArray1, PyArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tickwire::net::{Client, ClientConfig, ClientError};
use tickwire::parse::{Event, ParseStats, Parser};
use tickwire::policy::Backoff;
use tickwire::sequence::SequenceStats;
use tickwire::session::{ClientEvent, ClientState};
use tickwire::wire::{Quote, Trade};
use tickwire::Message;

create_exception!(
    _tickwire,
    TickwireError,
    PyException,
    "Base class of the errors of tickwire (the messages are the Rust errors')."
);
create_exception!(
    _tickwire,
    GaveUpError,
    TickwireError,
    "The subscriber's retries are exhausted (every server, for a list)."
);

/// Bytes of one quote record.
const QUOTE_SIZE: usize = 40;
/// Bytes of one trade record.
const TRADE_SIZE: usize = 32;
/// The read buffer of `read` and of the chunk reader.
const READ_BUFFER: usize = 4 << 20;

/// Where records go: a caller's buffer (numpy's, sized from the file) while
/// it has room, then a vector.
#[derive(Default)]
struct Out<'a> {
    fixed: &'a mut [u8],
    used: usize,
    spill: Vec<u8>,
}

impl<'a> Out<'a> {
    fn vec(capacity: usize) -> Out<'a> {
        Out {
            fixed: &mut [],
            used: 0,
            spill: Vec::with_capacity(capacity),
        }
    }

    fn fixed(fixed: &'a mut [u8]) -> Out<'a> {
        Out {
            fixed,
            used: 0,
            spill: Vec::new(),
        }
    }

    #[inline(always)]
    fn push(&mut self, record: &[u8]) {
        match self.fixed.get_mut(self.used..self.used + record.len()) {
            Some(slot) => {
                slot.copy_from_slice(record);
                self.used += record.len();
            }
            None => self.spill.extend_from_slice(record),
        }
    }
}

/// What a read or a batch found: the records, and everything that was not a
/// clean frame (never dropped silently).
#[derive(Default)]
struct Columns<'a> {
    quotes: Out<'a>,
    trades: Out<'a>,
    /// Data frames pushed (quotes + trades).
    data_frames: usize,
    gaps: Vec<(u64, u64)>,
    discards: Vec<(u64, &'static str)>,
    sessions: Vec<(u64, u64)>,
    /// Data frames dropped as duplicates (already passed).
    duplicates: u64,
}

impl<'a> Columns<'a> {
    fn with_capacity(quotes: usize, trades: usize) -> Columns<'a> {
        Columns {
            quotes: Out::vec(quotes * QUOTE_SIZE),
            trades: Out::vec(trades * TRADE_SIZE),
            ..Columns::default()
        }
    }

    #[inline]
    fn quote(&mut self, q: &Quote) {
        let mut r = [0u8; QUOTE_SIZE];
        put(&mut r, 0, &q.sequence().to_ne_bytes());
        put(&mut r, 8, &q.timestamp().to_ne_bytes());
        put(&mut r, 16, &q.instrument_id().to_ne_bytes());
        put(&mut r, 20, &q.bid_price().to_ne_bytes());
        put(&mut r, 24, &q.ask_price().to_ne_bytes());
        put(&mut r, 28, &q.bid_size().to_ne_bytes());
        put(&mut r, 32, &q.ask_size().to_ne_bytes());
        self.quotes.push(&r);
        self.data_frames += 1;
    }

    #[inline]
    fn trade(&mut self, t: &Trade) {
        let mut r = [0u8; TRADE_SIZE];
        put(&mut r, 0, &t.sequence().to_ne_bytes());
        put(&mut r, 8, &t.timestamp().to_ne_bytes());
        put(&mut r, 16, &t.instrument_id().to_ne_bytes());
        put(&mut r, 20, &t.price().to_ne_bytes());
        put(&mut r, 24, &t.size().to_ne_bytes());
        put(&mut r, 28, &[t.side(), t.flags()]);
        self.trades.push(&r);
        self.data_frames += 1;
    }

    /// One parser event (a file or chunk).
    #[inline]
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Frame(Message::Quote(q)) => self.quote(q),
            Event::Frame(Message::Trade(t)) => self.trade(t),
            Event::Frame(_) => {} // control frames: counted in the parser's stats
            Event::Duplicate(_) => self.duplicates += 1,
            Event::Gap(g) => self.gaps.push((g.first, g.last)),
            Event::NewSession {
                session_id,
                sequence,
            } => self.sessions.push((session_id, sequence)),
            Event::Discarded(d) => self.discards.push((d.bytes, d.reason.as_str())),
            _ => {}
        }
    }

    /// The Python view: a dict of numpy `uint8` arrays and lists. Records
    /// collected in vectors become arrays that own them (no copy); for a
    /// caller's buffer, the dict says how many bytes of it were used
    /// (`quotes_used`) and holds what did not fit (`quotes_spill`).
    fn into_py<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, out) in [("quotes", self.quotes), ("trades", self.trades)] {
            let used = out.used;
            let spill: Bound<'py, PyArray1<u8>> = out.spill.into_pyarray(py);
            d.set_item(format!("{name}_used"), used)?;
            d.set_item(format!("{name}_spill"), spill)?;
        }
        d.set_item("gaps", self.gaps)?;
        d.set_item("discards", self.discards)?;
        d.set_item("sessions", self.sessions)?;
        d.set_item("duplicates", self.duplicates)?;
        Ok(d)
    }
}

/// Writes `bytes` at `at` in a record (offsets are constants that fit).
#[inline(always)]
fn put(record: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(slot) = record.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

fn stats_dict<'py>(
    py: Python<'py>,
    parse: &ParseStats,
    seq: &SequenceStats,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("frames", parse.frames())?;
    d.set_item("quotes", parse.quotes)?;
    d.set_item("trades", parse.trades)?;
    d.set_item("heartbeats", parse.heartbeats)?;
    d.set_item("logins", parse.logins)?;
    d.set_item("login_accepted", parse.login_accepted)?;
    d.set_item("end_of_session", parse.end_of_session)?;
    d.set_item("packets", parse.packets)?;
    d.set_item("retransmits", parse.retransmits)?;
    d.set_item("auths", parse.auths)?;
    d.set_item("rejected", parse.rejected)?;
    d.set_item("frame_bytes", parse.frame_bytes)?;
    d.set_item("discarded_bytes", parse.discarded_bytes)?;
    d.set_item("discard_runs", parse.discard_runs)?;
    d.set_item("gaps", seq.gaps)?;
    d.set_item("missing", seq.missing)?;
    d.set_item("duplicates", seq.duplicates)?;
    d.set_item("sessions", seq.sessions)?;
    Ok(d)
}

/// A recording to read: a file, or a journal directory read as one
/// recording (`tickwire::journal::Recording`: each session after a
/// LoginAccepted, then its segments). Its length in bytes too.
type Source = Box<dyn Read + Send + Sync>;

fn open(path: &str) -> io::Result<(Source, u64)> {
    // A directory that is not a journal is opened as a file: reading it
    // fails as before (`IsADirectoryError`).
    if tickwire::journal::is_journal(path) {
        let recording = tickwire::journal::Recording::open(path).map_err(io::Error::from)?;
        let len = recording.len();
        return Ok((Box::new(recording), len));
    }
    let file = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {path}: {e}")))?;
    let len = file.metadata().map_err(|e| read_error(path, e))?.len();
    Ok((Box::new(file), len))
}

fn read_error(path: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot read {path}: {e}"))
}

/// Reads a whole recording into `columns`: the parser's push path
/// (`drain`), 4 MiB reads.
fn read_all(
    mut file: Source,
    path: &str,
    columns: &mut Columns<'_>,
) -> io::Result<(ParseStats, SequenceStats)> {
    let mut parser = Parser::with_capacity(READ_BUFFER).map_err(io::Error::other)?;
    loop {
        let spare = parser.spare();
        match file.read(spare) {
            Ok(0) => parser.finish(),
            Ok(n) => parser.commit(n).map_err(io::Error::other)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(path, e)),
        }
        parser.drain(|event| columns.event(event));
        if parser.is_finished() {
            break;
        }
    }
    Ok((parser.stats(), *parser.tracker().stats()))
}

/// Reads a recording: `{"quotes": uint8 array, "quotes_used": bytes of it
/// filled, "quotes_spill": records that did not fit, the same for trades,
/// "gaps": [(first, last)], "discards": [(bytes, reason)], "sessions":
/// [(session_id, sequence)], "duplicates": n, "stats": {...}}`.
///
/// The record arrays are numpy's own (`zeros`: untouched pages cost
/// nothing, and numpy asks for huge pages, so filling them takes few page
/// faults), sized for the most quotes and trades the file's size allows;
/// Rust fills them with the GIL released.
#[pyfunction]
fn read_raw<'py>(py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyDict>> {
    let (file, len) = open(path)?;
    let most = |frame: u64, record: usize| {
        usize::try_from(len / frame)
            .ok()
            .and_then(|n| n.checked_mul(record))
            .ok_or_else(|| {
                TickwireError::new_err(format!(
                    "{path} is too large to read at once: use read_chunks"
                ))
            })
    };
    let quotes = PyArray1::<u8>::zeros(py, most(44, QUOTE_SIZE)?, false);
    let trades = PyArray1::<u8>::zeros(py, most(40, TRADE_SIZE)?, false);
    let (raw, parse, seq) = {
        let mut q = quotes.readwrite();
        let mut t = trades.readwrite();
        let (qs, ts) = (q.as_slice_mut()?, t.as_slice_mut()?);
        let path = path.to_owned();
        let (columns, parse, seq) = py.detach(move || -> io::Result<_> {
            let mut columns = Columns {
                quotes: Out::fixed(qs),
                trades: Out::fixed(ts),
                ..Columns::default()
            };
            let (parse, seq) = read_all(file, &path, &mut columns)?;
            Ok((columns, parse, seq))
        })?;
        (columns.into_py(py)?, parse, seq)
    };
    raw.set_item("quotes", quotes)?;
    raw.set_item("trades", trades)?;
    raw.set_item("stats", stats_dict(py, &parse, &seq)?)?;
    Ok(raw)
}

/// Counters of one chunk, from its events (what `stats_dict` shows for a
/// whole file, for the part of the stream the chunk covers).
#[derive(Default)]
struct Tally {
    parse: ParseStats,
    gaps: u64,
    missing: u64,
    duplicates: u64,
    sessions: u64,
}

impl Tally {
    fn event(&mut self, event: &Event<'_>) {
        let p = &mut self.parse;
        match event {
            Event::Frame(m) | Event::Duplicate(m) => {
                match m {
                    Message::Quote(_) => p.quotes += 1,
                    Message::Trade(_) => p.trades += 1,
                    Message::Heartbeat(_) => p.heartbeats += 1,
                    Message::Login(_) => p.logins += 1,
                    Message::LoginAccepted(_) => p.login_accepted += 1,
                    Message::EndOfSession(_) => p.end_of_session += 1,
                    Message::Packet(_) => p.packets += 1,
                    Message::Retransmit(_) => p.retransmits += 1,
                    Message::Auth(_) => p.auths += 1,
                    Message::Rejected(_) => p.rejected += 1,
                }
                p.frame_bytes += m.len() as u64;
                if matches!(event, Event::Duplicate(_)) {
                    self.duplicates += 1;
                }
            }
            Event::Gap(g) => {
                self.gaps += 1;
                self.missing += g.len();
            }
            Event::NewSession { .. } => self.sessions += 1,
            Event::Discarded(d) => {
                p.discarded_bytes += d.bytes;
                p.discard_runs += 1;
            }
            _ => {}
        }
    }

    fn into_py<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut seq = SequenceStats::default();
        seq.gaps = self.gaps;
        seq.missing = self.missing;
        seq.duplicates = self.duplicates;
        seq.sessions = self.sessions;
        stats_dict(py, &self.parse, &seq)
    }
}

/// A chunk being filled or ready.
struct Pending {
    columns: Columns<'static>,
    tally: Tally,
}

impl Pending {
    fn new(frames: usize) -> Pending {
        let reserve = frames.min(1 << 20);
        Pending {
            columns: Columns::with_capacity(reserve, reserve),
            tally: Tally::default(),
        }
    }

    fn is_empty(&self) -> bool {
        let c = &self.columns;
        c.data_frames == 0
            && self.tally.parse.frames() == 0
            && self.tally.parse.discard_runs == 0
            && c.gaps.is_empty()
            && c.sessions.is_empty()
    }
}

/// Reads a recording in chunks of exactly N data frames (quotes and
/// trades; the last chunk has the rest): the parser's push path, reading
/// ahead by one read (4 MiB) at most.
#[pyclass(module = "tickwire._tickwire")]
struct ChunkReader {
    path: String,
    file: Source,
    parser: Parser<Box<[u8]>>,
    frames: usize,
    current: Pending,
    ready: VecDeque<Pending>,
    finished: bool,
}

#[pymethods]
impl ChunkReader {
    #[new]
    fn new(path: &str, frames: usize) -> PyResult<ChunkReader> {
        if frames == 0 {
            return Err(PyValueError::new_err("frames must be at least 1"));
        }
        let (file, _) = open(path)?;
        let parser = Parser::with_capacity(READ_BUFFER)
            .map_err(|e| TickwireError::new_err(e.to_string()))?;
        Ok(ChunkReader {
            path: path.to_owned(),
            file,
            parser,
            frames,
            current: Pending::new(frames),
            ready: VecDeque::new(),
            finished: false,
        })
    }

    /// The next chunk (a dict like `read_raw`'s, with the chunk's own
    /// counters as `stats`), or `None` at the end of the file.
    fn next_chunk<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let ChunkReader {
            path,
            file,
            parser,
            frames,
            current,
            ready,
            finished,
        } = self;
        let frames = *frames;
        let chunk = py.detach(|| -> io::Result<Option<Pending>> {
            loop {
                if let Some(chunk) = ready.pop_front() {
                    return Ok(Some(chunk));
                }
                if *finished {
                    let last = std::mem::replace(current, Pending::new(0));
                    return Ok((!last.is_empty()).then_some(last));
                }
                match file.read(parser.spare()) {
                    Ok(0) => parser.finish(),
                    Ok(n) => parser.commit(n).map_err(io::Error::other)?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_error(path, e)),
                }
                parser.drain(|event| {
                    current.tally.event(&event);
                    current.columns.event(event);
                    if current.columns.data_frames >= frames {
                        ready.push_back(std::mem::replace(current, Pending::new(frames)));
                    }
                });
                *finished = parser.is_finished();
            }
        })?;
        let Some(chunk) = chunk else {
            return Ok(None);
        };
        let d = chunk.columns.into_py(py)?;
        d.set_item("quotes", PyArray1::<u8>::zeros(py, 0, false))?;
        d.set_item("trades", PyArray1::<u8>::zeros(py, 0, false))?;
        d.set_item("stats", chunk.tally.into_py(py)?)?;
        Ok(Some(d))
    }
}

/// One client event, owned, for the Python side.
enum Note {
    State(ClientState, ClientState),
    LoggedIn(u64, u64),
    NewSession(u64, u64),
    EndOfSession(u64),
    Lost(String),
    Retrying(u32, Duration),
    GaveUp(String),
    FailOver(String),
}

fn state_name(state: ClientState) -> &'static str {
    match state {
        ClientState::Disconnected => "disconnected",
        ClientState::Connecting => "connecting",
        ClientState::Connected => "connected",
        ClientState::LoggedIn => "logged_in",
        ClientState::Reconnecting => "reconnecting",
        _ => "other",
    }
}

#[derive(Default)]
struct Batch {
    columns: Columns<'static>,
    notes: Vec<Note>,
    gave_up: Option<String>,
}

impl Batch {
    /// One event of the client, connected to `server` (of `servers`).
    fn client_event(
        &mut self,
        server: Option<SocketAddr>,
        servers: &[SocketAddr],
        event: ClientEvent<'_>,
    ) {
        let c = &mut self.columns;
        match event {
            ClientEvent::Frame(Message::Quote(q)) => c.quote(q),
            ClientEvent::Frame(Message::Trade(t)) => c.trade(t),
            ClientEvent::Frame(_) => {}
            ClientEvent::Gap(g) => c.gaps.push((g.first, g.last)),
            ClientEvent::Duplicate { .. } => c.duplicates += 1,
            ClientEvent::Discarded(d) => c.discards.push((d.bytes, d.reason.as_str())),
            ClientEvent::NewSession {
                session_id,
                sequence,
            } => {
                c.sessions.push((session_id, sequence));
                self.notes.push(Note::NewSession(session_id, sequence));
            }
            ClientEvent::State { from, to } => self.notes.push(Note::State(from, to)),
            ClientEvent::LoggedIn {
                session_id,
                sequence,
            } => self.notes.push(Note::LoggedIn(session_id, sequence)),
            ClientEvent::EndOfSession { sequence } => self.notes.push(Note::EndOfSession(sequence)),
            ClientEvent::Lost(why) => self.notes.push(Note::Lost(why.to_string())),
            ClientEvent::Retrying { attempt, delay } => {
                self.notes.push(Note::Retrying(attempt, delay));
            }
            ClientEvent::Failover { to, .. } => {
                if let Some(next) = servers.get(to) {
                    self.notes.push(Note::FailOver(next.to_string()));
                }
            }
            ClientEvent::GaveUp { attempts, last } => {
                let error = ClientError::GaveUp { attempts, last };
                let message = match server {
                    Some(server) => format!("{server}: {error}"),
                    None => error.to_string(),
                };
                self.notes.push(Note::GaveUp(message.clone()));
                self.gave_up = Some(message);
            }
            _ => {}
        }
    }

    fn has_news(&self) -> bool {
        self.columns.data_frames > 0
            || !self.notes.is_empty()
            || !self.columns.gaps.is_empty()
            || !self.columns.discards.is_empty()
            || self.columns.duplicates > 0
    }
}

/// The live subscriber over the reference client (`tickwire::net::Client`),
/// whose list of servers gives fail-over exactly as in Rust.
#[pyclass(module = "tickwire._tickwire")]
struct Subscriber {
    servers: Vec<SocketAddr>,
    client: Client,
    max_batch: usize,
    closed: bool,
}

fn resolve(address: &str) -> PyResult<SocketAddr> {
    address
        .to_socket_addrs()
        .map_err(|e| PyValueError::new_err(format!("invalid address {address:?}: {e}")))?
        .next()
        .ok_or_else(|| PyValueError::new_err(format!("invalid address {address:?}: no address")))
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "{name} must be a positive number of seconds, not {value}"
            ))
        })
}

impl Subscriber {
    /// The server the client is connected (or connecting) to now.
    fn server(&self) -> SocketAddr {
        self.servers
            .get(self.client.session().server())
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

#[pymethods]
impl Subscriber {
    #[new]
    #[pyo3(signature = (servers, from_seq=0, max_retries=None, heartbeat_interval=1.0, connect_timeout=5.0, max_batch=65536, key_id=None, secret_file=None, allow_plain_auth=false, tls=false, ca=None, server_name=None, client_cert=None, client_key=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        servers: Vec<String>,
        from_seq: u64,
        max_retries: Option<u32>,
        heartbeat_interval: f64,
        connect_timeout: f64,
        max_batch: usize,
        key_id: Option<String>,
        secret_file: Option<std::path::PathBuf>,
        allow_plain_auth: bool,
        tls: bool,
        ca: Option<std::path::PathBuf>,
        server_name: Option<String>,
        client_cert: Option<std::path::PathBuf>,
        client_key: Option<std::path::PathBuf>,
    ) -> PyResult<Subscriber> {
        if servers.is_empty() {
            return Err(PyValueError::new_err(
                "at least one server address is needed",
            ));
        }
        if max_batch == 0 {
            return Err(PyValueError::new_err("max_batch must be at least 1"));
        }
        let servers = servers
            .iter()
            .map(|s| resolve(s))
            .collect::<PyResult<Vec<_>>>()?;
        let mut config = ClientConfig::with_servers(&servers)
            .ok_or_else(|| PyValueError::new_err("at least one server address is needed"))?;
        config.from = from_seq;
        config.heartbeat_interval = seconds("heartbeat_interval", heartbeat_interval)?;
        config.connect_timeout = seconds("connect_timeout", connect_timeout)?;
        config.backoff = Backoff::default()
            .with_max_retries(max_retries)
            .with_jitter(u64::from(std::process::id()));
        // Section 11: a key (the secret from a private file or
        // TICKWIRE_SECRET, never an argument); section 12: TLS.
        if let Some(id) = key_id {
            let key_id = tickwire::wire::KeyId::new(&id)
                .map_err(|e| PyValueError::new_err(format!("key_id: {e}")))?;
            let secret = tickwire::session::auth::load_secret(secret_file.as_deref())
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            config.credentials = Some(tickwire::session::auth::ClientKey { key_id, secret });
        } else if secret_file.is_some() {
            return Err(PyValueError::new_err("secret_file needs key_id"));
        }
        config.allow_plain_auth = allow_plain_auth;
        if tls {
            let ca =
                ca.ok_or_else(|| PyValueError::new_err("tls needs ca (the CA certificates, PEM)"))?;
            let mut files = tickwire::tls::TlsClientFiles::new(ca);
            files.server_name = server_name;
            match (client_cert, client_key) {
                (Some(cert), Some(key)) => files.client_cert = Some((cert, key)),
                (None, None) => {}
                _ => {
                    return Err(PyValueError::new_err(
                        "client_cert and client_key go together",
                    ))
                }
            }
            config.tls = Some(
                files
                    .load()
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            );
        } else if ca.is_some() || server_name.is_some() || client_cert.is_some() {
            return Err(PyValueError::new_err(
                "ca, server_name and client_cert need tls=True",
            ));
        }
        Ok(Subscriber {
            client: Client::new(config)?,
            servers,
            max_batch,
            closed: false,
        })
    }

    /// The next batch: waits (GIL released) up to `timeout` seconds (None:
    /// forever) for frames or events, then takes what else is already
    /// there, up to `max_batch` data frames. `None` on timeout or once the
    /// subscriber has stopped; raises `GaveUpError` when retries are
    /// exhausted.
    #[pyo3(signature = (timeout=None))]
    fn next_batch<'py>(
        &mut self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let deadline = match timeout {
            None => None,
            Some(t) => Some(
                Instant::now()
                    + Duration::try_from_secs_f64(t).map_err(|_| {
                        PyValueError::new_err(format!(
                            "timeout must be a number of seconds ≥ 0, not {t}"
                        ))
                    })?,
            ),
        };
        let mut batch = Batch::default();
        loop {
            if self.closed {
                break;
            }
            let servers = &self.servers;
            let max_batch = self.max_batch;
            let client = &mut self.client;
            let polled = py.detach(|| -> io::Result<()> {
                // Wait in slices of 50 ms so that signals (Ctrl-C) are seen.
                let slice = Duration::from_millis(50);
                let wait = deadline
                    .map(|d| d.saturating_duration_since(Instant::now()).min(slice))
                    .unwrap_or(slice);
                let server = |c: &Client| servers.get(c.session().server()).copied();
                let at = server(client);
                client.poll(Some(wait), |e| batch.client_event(at, servers, e))?;
                // Take what is already there, without waiting.
                while batch.has_news()
                    && batch.columns.data_frames < max_batch
                    && !client.is_stopped()
                {
                    let before = batch.columns.data_frames + batch.notes.len();
                    let at = server(client);
                    client.poll(Some(Duration::ZERO), |e| batch.client_event(at, servers, e))?;
                    if batch.columns.data_frames + batch.notes.len() == before {
                        break;
                    }
                }
                Ok(())
            });
            polled.map_err(|e| TickwireError::new_err(format!("poll failed: {e}")))?;
            if self.client.is_stopped() {
                self.closed = true;
                if let Some(message) = batch.gave_up.take() {
                    return Err(GaveUpError::new_err(message));
                }
            }
            if batch.has_news() {
                break;
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
        if !batch.has_news() {
            return Ok(None);
        }
        let notes = batch.notes;
        let d = batch.columns.into_py(py)?;
        d.set_item("quotes", PyArray1::<u8>::zeros(py, 0, false))?;
        d.set_item("trades", PyArray1::<u8>::zeros(py, 0, false))?;
        let events: Vec<Bound<'py, PyAny>> = notes
            .into_iter()
            .map(|n| note_tuple(py, n))
            .collect::<PyResult<_>>()?;
        d.set_item("events", events)?;
        Ok(Some(d))
    }

    /// Closes the connection and stops (idempotent).
    fn close(&mut self) {
        self.closed = true;
        self.client.disconnect(|_| {});
    }

    /// Whether the subscriber has stopped (closed, gave up, or the server
    /// ended the session and reconnecting is off).
    #[getter]
    fn stopped(&self) -> bool {
        self.closed || self.client.is_stopped()
    }

    /// The server in use now.
    #[getter]
    fn server_address(&self) -> String {
        self.server().to_string()
    }

    /// The next data sequence needed (0 before the first login).
    #[getter]
    fn next_sequence(&self) -> u64 {
        self.client.tracker().expected().unwrap_or(0)
    }

    /// Counters over every connection (and every server of a list).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.client.stats();
        let d = stats_dict(py, &s.parse, &SequenceStats::default())?;
        d.set_item("gaps", s.gaps)?;
        d.set_item("missing", s.missing)?;
        d.set_item("duplicates", s.duplicates)?;
        d.set_item("connects", s.connects)?;
        d.set_item("reconnects", s.reconnects)?;
        d.set_item("failovers", s.failovers)?;
        d.del_item("sessions")?;
        Ok(d)
    }
}

fn note_tuple(py: Python<'_>, note: Note) -> PyResult<Bound<'_, PyAny>> {
    let t = match note {
        Note::State(from, to) => ("state", state_name(from), state_name(to)).into_pyobject(py)?,
        Note::LoggedIn(s, q) => ("logged_in", s, q).into_pyobject(py)?,
        Note::NewSession(s, q) => ("new_session", s, q).into_pyobject(py)?,
        Note::EndOfSession(q) => ("end_of_session", q).into_pyobject(py)?,
        Note::Lost(why) => ("lost", why).into_pyobject(py)?,
        Note::Retrying(attempt, delay) => {
            ("retrying", attempt, delay.as_secs_f64()).into_pyobject(py)?
        }
        Note::GaveUp(message) => ("gave_up", message).into_pyobject(py)?,
        Note::FailOver(server) => ("fail_over", server).into_pyobject(py)?,
    };
    Ok(t.into_any())
}

/// The Rust half of the `tickwire` Python package.
#[pymodule]
fn _tickwire(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_raw, m)?)?;
    m.add_class::<ChunkReader>()?;
    m.add_class::<Subscriber>()?;
    m.add("TickwireError", m.py().get_type::<TickwireError>())?;
    m.add("GaveUpError", m.py().get_type::<GaveUpError>())?;
    m.add("QUOTE_SIZE", QUOTE_SIZE)?;
    m.add("TRADE_SIZE", TRADE_SIZE)?;
    Ok(())
}
