//! `tickwire export`: a recording as one Parquet or CSV table.
//!
//! One table with a `type` column, not one table per message type: a row
//! per frame, in stream order, holding every frame `dump` prints (quotes,
//! trades and the control frames: LoginAccepted rows mark where a session
//! starts), so one file is the whole recording and the interleaving of
//! quotes and trades (what as-of joins and replay need) is kept. Fields a
//! type does not have are null (Parquet definition levels: about a bit per
//! row and column, run-length encoded) or empty (CSV). Duplicate frames
//! (already passed, `"duplicate":true` in `dump`) are left out and counted;
//! discarded bytes and gaps are counted and reported on stderr.
//!
//! | column | Parquet type | which frames |
//! |---|---|---|
//! | `type` | string (dictionary) | all: `quote`, `trade`, `heartbeat`, `login`, `login_accepted`, `end_of_session`, `packet`, `retransmit` |
//! | `sequence` | uint64 | all |
//! | `timestamp` | int64 timestamp(ns, UTC) | all |
//! | `session_id` | uint64, null | login_accepted, packet, retransmit |
//! | `count` | uint64, null | retransmit |
//! | `instrument_id` | uint32, null | quote, trade |
//! | `bid_price`, `ask_price` | int32, null | quote |
//! | `bid_size`, `ask_size` | uint32, null | quote |
//! | `price` | int32, null | trade |
//! | `size` | uint32, null | trade |
//! | `side`, `flags` | uint8, null | trade |
//!
//! Prices are the wire's integers (4 implied decimals). Row groups hold
//! 1,048,576 rows (about 20 MB of compressed columns); `sequence` and
//! `timestamp` are delta-encoded, the other columns dictionary- or
//! plain-encoded; pages are Snappy-compressed. CSV has the same columns
//! (timestamps as integer nanoseconds, as `dump` prints them).

use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::path::Path;

use tickwire::parse::{Event, Parser};
use tickwire::Message;

/// The output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Apache Parquet (needs the `parquet` feature).
    Parquet,
    /// Comma-separated values with a header line.
    Csv,
}

/// Rows per Parquet row group.
pub(crate) const ROW_GROUP: usize = 1 << 20;

/// The columns, in order.
const COLUMNS: [&str; 14] = [
    "type",
    "sequence",
    "timestamp",
    "session_id",
    "count",
    "instrument_id",
    "bid_price",
    "ask_price",
    "bid_size",
    "ask_size",
    "price",
    "size",
    "side",
    "flags",
];

/// What was exported and what was not.
#[derive(Default)]
struct Tally {
    rows: u64,
    quotes: u64,
    trades: u64,
    duplicates: u64,
    gaps: u64,
}

/// Where rows go.
trait Sink {
    fn row(&mut self, m: &Message<'_>) -> io::Result<()>;
    fn finish(self: Box<Self>) -> io::Result<()>;
}

pub(crate) fn run(input: &Path, format: Format, output: &Path) -> io::Result<()> {
    let mut source = crate::open_input(input)?;
    let sink: Box<dyn Sink> = match format {
        Format::Csv => Box::new(csv::Csv::new(crate::open_output(output)?, output)?),
        Format::Parquet => parquet_sink(output)?,
    };
    let mut sink = Some(sink);
    let mut parser = Parser::with_capacity(4 << 20).map_err(io::Error::other)?;
    let mut tally = Tally::default();
    let mut failed = None;
    loop {
        let spare = parser.spare();
        match source.read(spare) {
            Ok(0) => parser.finish(),
            Ok(n) => parser.commit(n).map_err(io::Error::other)?,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", input.display()),
                ))
            }
        }
        parser.drain(|event| match event {
            Event::Frame(m) => {
                if failed.is_some() {
                    return;
                }
                match &m {
                    Message::Quote(_) => tally.quotes += 1,
                    Message::Trade(_) => tally.trades += 1,
                    _ => {}
                }
                tally.rows += 1;
                if let Some(s) = sink.as_mut() {
                    if let Err(e) = s.row(&m) {
                        failed = Some(e);
                    }
                }
            }
            Event::Duplicate(_) => tally.duplicates += 1,
            Event::Gap(_) => tally.gaps += 1,
            _ => {}
        });
        if let Some(e) = failed {
            return Err(crate::write_error(output, e));
        }
        if parser.is_finished() {
            break;
        }
    }
    if let Some(s) = sink.take() {
        s.finish().map_err(|e| crate::write_error(output, e))?;
    }
    let s = parser.stats();
    let t = parser.tracker().stats();
    eprintln!(
        "tickwire export: {} rows ({} quotes, {} trades, {} control frames) to {} ({}); \
         discarded {} bytes in {} runs; {} gaps ({} missing); {} duplicates left out",
        tally.rows,
        tally.quotes,
        tally.trades,
        tally.rows - tally.quotes - tally.trades,
        output.display(),
        match format {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        },
        s.discarded_bytes,
        s.discard_runs,
        tally.gaps,
        t.missing,
        tally.duplicates,
    );
    Ok(())
}

#[cfg(not(feature = "parquet"))]
fn parquet_sink(_output: &Path) -> io::Result<Box<dyn Sink>> {
    Err(io::Error::new(
        ErrorKind::Unsupported,
        "this tickwire was built without the `parquet` feature, so it cannot write Parquet: \
         rebuild it with `--features cli,parquet` (or use `--format csv`)",
    ))
}

#[cfg(feature = "parquet")]
fn parquet_sink(output: &Path) -> io::Result<Box<dyn Sink>> {
    if output.as_os_str() == "-" {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "Parquet cannot be written to stdout (its footer is written last): give a file with -o",
        ));
    }
    let file = std::fs::File::create(output).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot create {}: {e}", output.display()))
    })?;
    Ok(Box::new(pq::ParquetSink::new(file, ROW_GROUP)?))
}

/// A u64 as the i64 Parquet stores (same bits; the column's logical type is unsigned).
fn bits64(x: u64) -> i64 {
    i64::from_ne_bytes(x.to_ne_bytes())
}

/// A u32 as the i32 Parquet stores (same bits; the column's logical type is unsigned).
fn bits32(x: u32) -> i32 {
    i32::from_ne_bytes(x.to_ne_bytes())
}

mod csv {
    //! Hand-written: every value is an integer or one of eight fixed type
    //! names, so nothing ever needs quoting or escaping, and a dependency
    //! (the `csv` crate) would buy nothing here.
    use super::*;

    pub(super) struct Csv {
        out: BufWriter<Box<dyn Write>>,
    }

    impl Csv {
        pub(super) fn new(out: Box<dyn Write>, path: &Path) -> io::Result<Csv> {
            let mut out = BufWriter::with_capacity(1 << 20, out);
            writeln!(out, "{}", COLUMNS.join(",")).map_err(|e| crate::write_error(path, e))?;
            Ok(Csv { out })
        }
    }

    impl Sink for Csv {
        fn row(&mut self, m: &Message<'_>) -> io::Result<()> {
            let o = &mut self.out;
            write!(
                o,
                "{},{},{},",
                m.msg_type().name(),
                m.sequence(),
                m.timestamp()
            )?;
            match m {
                Message::Quote(q) => writeln!(
                    o,
                    ",,{},{},{},{},{},,,,",
                    q.instrument_id(),
                    q.bid_price(),
                    q.ask_price(),
                    q.bid_size(),
                    q.ask_size()
                ),
                Message::Trade(t) => writeln!(
                    o,
                    ",,{},,,,,{},{},{},{}",
                    t.instrument_id(),
                    t.price(),
                    t.size(),
                    t.side(),
                    t.flags()
                ),
                Message::LoginAccepted(la) => writeln!(o, "{},,,,,,,,,,", la.session_id()),
                Message::Packet(p) => writeln!(o, "{},,,,,,,,,,", p.session_id()),
                Message::Retransmit(r) => {
                    writeln!(o, "{},{},,,,,,,,,", r.session_id(), r.count())
                }
                _ => writeln!(o, ",,,,,,,,,,"),
            }
        }

        fn finish(mut self: Box<Self>) -> io::Result<()> {
            self.out.flush()
        }
    }
}

#[cfg(feature = "parquet")]
mod pq {
    use std::fs::File;
    use std::sync::Arc;

    use parquet::basic::{Compression, Encoding};
    use parquet::column::writer::ColumnWriter;
    use parquet::data_type::ByteArray;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use parquet::schema::types::ColumnPath;
    use tickwire::MsgType;

    use super::*;

    /// The schema (see the module docs).
    pub(crate) const SCHEMA: &str = "message tickwire {
        required binary type (STRING);
        required int64 sequence (INTEGER(64,false));
        required int64 timestamp (TIMESTAMP(NANOS,true));
        optional int64 session_id (INTEGER(64,false));
        optional int64 count (INTEGER(64,false));
        optional int32 instrument_id (INTEGER(32,false));
        optional int32 bid_price (INTEGER(32,true));
        optional int32 ask_price (INTEGER(32,true));
        optional int32 bid_size (INTEGER(32,false));
        optional int32 ask_size (INTEGER(32,false));
        optional int32 price (INTEGER(32,true));
        optional int32 size (INTEGER(32,false));
        optional int32 side (INTEGER(8,false));
        optional int32 flags (INTEGER(8,false));
    }";

    /// A nullable column of one row group: values of the non-null rows and
    /// a definition level per row.
    #[derive(Default)]
    struct Nullable<T> {
        values: Vec<T>,
        def: Vec<i16>,
    }

    impl<T> Nullable<T> {
        #[inline]
        fn some(&mut self, v: T) {
            self.values.push(v);
            self.def.push(1);
        }
        #[inline]
        fn none(&mut self) {
            self.def.push(0);
        }
        fn clear(&mut self) {
            self.values.clear();
            self.def.clear();
        }
    }

    fn perr(e: parquet::errors::ParquetError) -> io::Error {
        io::Error::other(e)
    }

    pub(super) struct ParquetSink {
        writer: SerializedFileWriter<File>,
        row_group: usize,
        /// One `ByteArray` per message type, cloned per row (a reference count).
        names: Vec<(MsgType, ByteArray)>,
        kind: Vec<ByteArray>,
        sequence: Vec<i64>,
        timestamp: Vec<i64>,
        session_id: Nullable<i64>,
        count: Nullable<i64>,
        instrument_id: Nullable<i32>,
        bid_price: Nullable<i32>,
        ask_price: Nullable<i32>,
        bid_size: Nullable<i32>,
        ask_size: Nullable<i32>,
        price: Nullable<i32>,
        size: Nullable<i32>,
        side: Nullable<i32>,
        flags: Nullable<i32>,
    }

    impl ParquetSink {
        pub(super) fn new(file: File, row_group: usize) -> io::Result<ParquetSink> {
            let schema = Arc::new(parse_message_type(SCHEMA).map_err(perr)?);
            let delta = |b: parquet::file::properties::WriterPropertiesBuilder, c: &str| {
                b.set_column_dictionary_enabled(ColumnPath::from(c), false)
                    .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED)
            };
            let mut props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(Some(row_group))
                .set_created_by(format!("tickwire {}", env!("CARGO_PKG_VERSION")));
            props = delta(props, "sequence");
            props = delta(props, "timestamp");
            for c in ["bid_price", "ask_price", "price"] {
                props = props.set_column_dictionary_enabled(ColumnPath::from(c), false);
            }
            let writer =
                SerializedFileWriter::new(file, schema, Arc::new(props.build())).map_err(perr)?;
            let names = [
                MsgType::Heartbeat,
                MsgType::Login,
                MsgType::LoginAccepted,
                MsgType::EndOfSession,
                MsgType::Packet,
                MsgType::Retransmit,
                MsgType::Quote,
                MsgType::Trade,
            ]
            .into_iter()
            .map(|t| (t, ByteArray::from(t.name().as_bytes().to_vec())))
            .collect();
            Ok(ParquetSink {
                writer,
                row_group,
                names,
                kind: Vec::with_capacity(row_group),
                sequence: Vec::with_capacity(row_group),
                timestamp: Vec::with_capacity(row_group),
                session_id: Nullable::default(),
                count: Nullable::default(),
                instrument_id: Nullable::default(),
                bid_price: Nullable::default(),
                ask_price: Nullable::default(),
                bid_size: Nullable::default(),
                ask_size: Nullable::default(),
                price: Nullable::default(),
                size: Nullable::default(),
                side: Nullable::default(),
                flags: Nullable::default(),
            })
        }

        fn quote_nones(&mut self) {
            self.bid_price.none();
            self.ask_price.none();
            self.bid_size.none();
            self.ask_size.none();
        }

        fn trade_nones(&mut self) {
            self.price.none();
            self.size.none();
            self.side.none();
            self.flags.none();
        }

        fn flush_group(&mut self) -> io::Result<()> {
            if self.kind.is_empty() {
                return Ok(());
            }
            let mut group = self.writer.next_row_group().map_err(perr)?;
            let mut index = 0;
            while let Some(mut column) = group.next_column().map_err(perr)? {
                let written = match (index, column.untyped()) {
                    (0, ColumnWriter::ByteArrayColumnWriter(w)) => {
                        w.write_batch(&self.kind, None, None)
                    }
                    (1, ColumnWriter::Int64ColumnWriter(w)) => {
                        w.write_batch(&self.sequence, None, None)
                    }
                    (2, ColumnWriter::Int64ColumnWriter(w)) => {
                        w.write_batch(&self.timestamp, None, None)
                    }
                    (3, ColumnWriter::Int64ColumnWriter(w)) => {
                        w.write_batch(&self.session_id.values, Some(&self.session_id.def), None)
                    }
                    (4, ColumnWriter::Int64ColumnWriter(w)) => {
                        w.write_batch(&self.count.values, Some(&self.count.def), None)
                    }
                    (i, ColumnWriter::Int32ColumnWriter(w)) => {
                        let c = match i {
                            5 => &self.instrument_id,
                            6 => &self.bid_price,
                            7 => &self.ask_price,
                            8 => &self.bid_size,
                            9 => &self.ask_size,
                            10 => &self.price,
                            11 => &self.size,
                            12 => &self.side,
                            _ => &self.flags,
                        };
                        w.write_batch(&c.values, Some(&c.def), None)
                    }
                    _ => Err(parquet::errors::ParquetError::General(format!(
                        "column {index} does not have the schema's type"
                    ))),
                };
                written.map_err(perr)?;
                column.close().map_err(perr)?;
                index += 1;
            }
            group.close().map_err(perr)?;
            self.kind.clear();
            self.sequence.clear();
            self.timestamp.clear();
            for c in [&mut self.session_id, &mut self.count] {
                c.clear();
            }
            for c in [
                &mut self.instrument_id,
                &mut self.bid_price,
                &mut self.ask_price,
                &mut self.bid_size,
                &mut self.ask_size,
                &mut self.price,
                &mut self.size,
                &mut self.side,
                &mut self.flags,
            ] {
                c.clear();
            }
            Ok(())
        }
    }

    impl Sink for ParquetSink {
        #[inline]
        fn row(&mut self, m: &Message<'_>) -> io::Result<()> {
            let t = m.msg_type();
            if let Some((_, name)) = self.names.iter().find(|(k, _)| *k == t) {
                self.kind.push(name.clone());
            }
            self.sequence.push(bits64(m.sequence()));
            self.timestamp.push(bits64(m.timestamp()));
            match m {
                Message::Quote(q) => {
                    self.session_id.none();
                    self.count.none();
                    self.instrument_id.some(bits32(q.instrument_id()));
                    self.bid_price.some(q.bid_price());
                    self.ask_price.some(q.ask_price());
                    self.bid_size.some(bits32(q.bid_size()));
                    self.ask_size.some(bits32(q.ask_size()));
                    self.trade_nones();
                }
                Message::Trade(tr) => {
                    self.session_id.none();
                    self.count.none();
                    self.instrument_id.some(bits32(tr.instrument_id()));
                    self.quote_nones();
                    self.price.some(tr.price());
                    self.size.some(bits32(tr.size()));
                    self.side.some(i32::from(tr.side()));
                    self.flags.some(i32::from(tr.flags()));
                }
                other => {
                    match other {
                        Message::LoginAccepted(la) => {
                            self.session_id.some(bits64(la.session_id()));
                            self.count.none();
                        }
                        Message::Packet(p) => {
                            self.session_id.some(bits64(p.session_id()));
                            self.count.none();
                        }
                        Message::Retransmit(r) => {
                            self.session_id.some(bits64(r.session_id()));
                            self.count.some(bits64(r.count()));
                        }
                        _ => {
                            self.session_id.none();
                            self.count.none();
                        }
                    }
                    self.instrument_id.none();
                    self.quote_nones();
                    self.trade_nones();
                }
            }
            if self.kind.len() >= self.row_group {
                self.flush_group()?;
            }
            Ok(())
        }

        fn finish(mut self: Box<Self>) -> io::Result<()> {
            self.flush_group()?;
            self.writer.close().map_err(perr)?;
            Ok(())
        }
    }
}
