//! `tickwire export`: a recording as Parquet or CSV tables, one per kind of
//! frame, in a directory.
//!
//! `OUT/quotes.parquet`, `OUT/trades.parquet` and `OUT/control.parquet`
//! (or `.csv`): one table per message type (the control frames share one),
//! not one table with a `type` column. Each table is dense: every column
//! of it applies to every row, so there are no nulls, each column has its
//! exact type and its row-group statistics (min/max of `bid_price`, of
//! `instrument_id`…) are meaningful for pruning; the columns are the
//! protocol's field names, the same as the Python package's arrays. And it
//! is 2.5 times fewer values to encode than one wide table (14 columns, most
//! of them null on any row): the wide table measured 3.5 M frames/s, the
//! per-type tables over 10 M. Rows are in stream order in each table;
//! within a session `sequence` orders quotes and trades together (merge on
//! it to interleave them), and the `login_accepted` rows of `control` mark
//! where a session (and its sequence space) starts.
//!
//! | table | column | Parquet type |
//! |---|---|---|
//! | all | `sequence` | uint64 |
//! | all | `timestamp` | int64 timestamp(ns, UTC) |
//! | quotes | `instrument_id`, `bid_size`, `ask_size` | uint32 |
//! | quotes | `bid_price`, `ask_price` | int32 (4 implied decimals) |
//! | trades | `instrument_id`, `size` | uint32 |
//! | trades | `price` | int32 (4 implied decimals) |
//! | trades | `side`, `flags` | uint8 |
//! | control | `type` | string: `heartbeat`, `login`, `login_accepted`, `end_of_session`, `packet`, `retransmit` |
//! | control | `session_id` | uint64, null but for login_accepted, packet, retransmit |
//! | control | `count` | uint64, null but for retransmit |
//!
//! Row groups hold up to 1,048,576 rows (a few MB to 25 MB of compressed
//! columns: big enough for column scans, small enough to prune and to read
//! in parallel); `sequence` and `timestamp` are delta-encoded, the prices
//! plain and Snappy-compressed, the other columns dictionary-encoded.
//! CSV files have the same columns with a header line (timestamps as
//! integer nanoseconds, as `dump` prints them; empty cells for nulls). Duplicate frames (`"duplicate":true` in `dump`) are left
//! out and counted; discarded bytes and gaps are counted; all of it is
//! reported on stderr.

use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use tickwire::parse::{Event, Parser};
use tickwire::Message;

/// Compression of the Parquet price columns (the only ones it shrinks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Compress {
    /// Snappy: about 15% smaller files, about 20% more CPU time.
    #[default]
    Snappy,
    /// None: the fastest export.
    None,
}

/// The output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Apache Parquet (needs the `parquet` feature).
    Parquet,
    /// Comma-separated values with a header line.
    Csv,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }
}

/// The tables and their columns, in order.
const QUOTE_COLUMNS: [&str; 7] = [
    "sequence",
    "timestamp",
    "instrument_id",
    "bid_price",
    "ask_price",
    "bid_size",
    "ask_size",
];
const TRADE_COLUMNS: [&str; 7] = [
    "sequence",
    "timestamp",
    "instrument_id",
    "price",
    "size",
    "side",
    "flags",
];
const CONTROL_COLUMNS: [&str; 5] = ["type", "sequence", "timestamp", "session_id", "count"];

/// Where rows go.
trait Sink {
    fn row(&mut self, m: &Message<'_>) -> io::Result<()>;
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// What was exported and what was not.
#[derive(Default)]
struct Tally {
    quotes: u64,
    trades: u64,
    control: u64,
    duplicates: u64,
    gaps: u64,
}

/// The tables, by name.
const TABLES: [&str; 3] = ["quotes", "trades", "control"];

/// The file of `table` in the output directory.
fn final_path(dir: &Path, table: &str, format: Format) -> PathBuf {
    dir.join(format!("{table}.{}", format.extension()))
}

/// Where `table` is written until the export succeeds (then renamed to
/// [`final_path`]; removed if it fails).
fn table_path(dir: &Path, table: &str, format: Format) -> PathBuf {
    dir.join(format!(
        ".{table}.{}.partial-{}",
        format.extension(),
        std::process::id()
    ))
}

fn create(path: &Path) -> io::Result<File> {
    File::create(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))
}

pub(crate) fn run(
    input: &Path,
    format: Format,
    output: &Path,
    compression: Compress,
) -> io::Result<()> {
    // Before anything is created: a Parquet export needs the feature.
    #[cfg(not(feature = "parquet"))]
    if format == Format::Parquet {
        return Err(io::Error::new(
            ErrorKind::Unsupported,
            "this tickwire was built without the `parquet` feature, so it cannot write Parquet: \
             rebuild it with `--features cli,parquet` (or export with `--format csv`)",
        ));
    }
    let mut source = crate::open_input(input)?;
    if output.is_file() {
        return Err(io::Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "{} is a file: -o names a directory, which gets quotes.{ext}, trades.{ext} and control.{ext}",
                output.display(),
                ext = format.extension()
            ),
        ));
    }
    let created = !output.exists();
    std::fs::create_dir_all(output).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot create {}: {e}", output.display()))
    })?;
    // The tables are written under temporary names and renamed once all is
    // well: a failed export leaves no table (and the tables of an earlier
    // export as they were), and no directory it created.
    let written = write(&mut source, input, format, output, compression).and_then(|()| {
        TABLES.iter().try_for_each(|table| {
            let to = final_path(output, table, format);
            std::fs::rename(table_path(output, table, format), &to).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", to.display()))
            })
        })
    });
    if written.is_err() {
        for table in TABLES {
            let _ = std::fs::remove_file(table_path(output, table, format));
        }
        if created {
            let _ = std::fs::remove_dir(output);
        }
    }
    written
}

/// Exports `source` into the temporary tables in `output`.
fn write(
    source: &mut dyn Read,
    input: &Path,
    format: Format,
    output: &Path,
    compression: Compress,
) -> io::Result<()> {
    let mut sink: Box<dyn Sink> = match format {
        Format::Csv => Box::new(csv::Csv::new(output)?),
        #[cfg(feature = "parquet")]
        Format::Parquet => Box::new(pq::ParquetSink::new(output, pq::ROW_GROUP, compression)?),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => {
            let _ = compression;
            return Err(io::Error::from(ErrorKind::Unsupported));
        }
    };
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
                    _ => tally.control += 1,
                }
                if let Err(e) = sink.row(&m) {
                    failed = Some(e);
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
    sink.finish().map_err(|e| crate::write_error(output, e))?;
    let s = parser.stats();
    let t = parser.tracker().stats();
    crate::not_a_recording(input, &s)?;
    crate::logging::info!(
        "{} quotes, {} trades, {} control frames to {}/{{quotes,trades,control}}.{}; \
         discarded {} bytes in {} runs; {} gaps ({} missing); {} duplicates left out",
        tally.quotes,
        tally.trades,
        tally.control,
        output.display(),
        format.extension(),
        s.discarded_bytes,
        s.discard_runs,
        tally.gaps,
        t.missing,
        tally.duplicates,
    );
    Ok(())
}

mod csv {
    //! Hand-written: every value is an integer or one of six fixed type
    //! names, so nothing ever needs quoting or escaping, and the `csv` crate
    //! (a dependency, and its serde path) would buy nothing here.
    use super::*;

    pub(super) struct Csv {
        quotes: BufWriter<File>,
        trades: BufWriter<File>,
        control: BufWriter<File>,
    }

    fn open(dir: &Path, table: &str, columns: &[&str]) -> io::Result<BufWriter<File>> {
        let path = table_path(dir, table, Format::Csv);
        let mut out = BufWriter::with_capacity(1 << 20, create(&path)?);
        writeln!(out, "{}", columns.join(","))?;
        Ok(out)
    }

    impl Csv {
        pub(super) fn new(dir: &Path) -> io::Result<Csv> {
            Ok(Csv {
                quotes: open(dir, "quotes", &QUOTE_COLUMNS)?,
                trades: open(dir, "trades", &TRADE_COLUMNS)?,
                control: open(dir, "control", &CONTROL_COLUMNS)?,
            })
        }
    }

    impl Sink for Csv {
        fn row(&mut self, m: &Message<'_>) -> io::Result<()> {
            match m {
                Message::Quote(q) => writeln!(
                    self.quotes,
                    "{},{},{},{},{},{},{}",
                    q.sequence(),
                    q.timestamp(),
                    q.instrument_id(),
                    q.bid_price(),
                    q.ask_price(),
                    q.bid_size(),
                    q.ask_size()
                ),
                Message::Trade(t) => writeln!(
                    self.trades,
                    "{},{},{},{},{},{},{}",
                    t.sequence(),
                    t.timestamp(),
                    t.instrument_id(),
                    t.price(),
                    t.size(),
                    t.side(),
                    t.flags()
                ),
                other => {
                    let o = &mut self.control;
                    write!(
                        o,
                        "{},{},{},",
                        other.msg_type().name(),
                        other.sequence(),
                        other.timestamp()
                    )?;
                    match other {
                        Message::LoginAccepted(la) => writeln!(o, "{},", la.session_id()),
                        Message::Packet(p) => writeln!(o, "{},", p.session_id()),
                        Message::Retransmit(r) => writeln!(o, "{},{}", r.session_id(), r.count()),
                        _ => writeln!(o, ","),
                    }
                }
            }
        }

        fn finish(mut self: Box<Self>) -> io::Result<()> {
            self.quotes.flush()?;
            self.trades.flush()?;
            self.control.flush()
        }
    }
}

#[cfg(feature = "parquet")]
mod pq {
    //! The `parquet` crate's column writer API (no arrow): each table buffers
    //! a row group's columns as plain vectors; a thread per table encodes
    //! and writes them column by column.
    use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
    use std::sync::Arc;
    use std::thread::{self, JoinHandle};

    use parquet::basic::{Compression, Encoding};
    use parquet::column::writer::ColumnWriter;
    use parquet::data_type::ByteArray;
    use parquet::errors::ParquetError;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use parquet::schema::types::ColumnPath;

    use super::*;

    /// Rows per Parquet row group, at most.
    pub(super) const ROW_GROUP: usize = 1 << 20;

    const QUOTES: &str = "message quotes {
        required int64 sequence (INTEGER(64,false));
        required int64 timestamp (TIMESTAMP(NANOS,true));
        required int32 instrument_id (INTEGER(32,false));
        required int32 bid_price (INTEGER(32,true));
        required int32 ask_price (INTEGER(32,true));
        required int32 bid_size (INTEGER(32,false));
        required int32 ask_size (INTEGER(32,false));
    }";

    const TRADES: &str = "message trades {
        required int64 sequence (INTEGER(64,false));
        required int64 timestamp (TIMESTAMP(NANOS,true));
        required int32 instrument_id (INTEGER(32,false));
        required int32 price (INTEGER(32,true));
        required int32 size (INTEGER(32,false));
        required int32 side (INTEGER(8,false));
        required int32 flags (INTEGER(8,false));
    }";

    const CONTROL: &str = "message control {
        required binary type (STRING);
        required int64 sequence (INTEGER(64,false));
        required int64 timestamp (TIMESTAMP(NANOS,true));
        optional int64 session_id (INTEGER(64,false));
        optional int64 count (INTEGER(64,false));
    }";

    fn perr(e: ParquetError) -> io::Error {
        io::Error::other(e)
    }

    /// A u64 as the i64 Parquet stores (same bits; the column's logical type is unsigned).
    fn bits64(x: u64) -> i64 {
        i64::from_ne_bytes(x.to_ne_bytes())
    }

    /// A u32 as the i32 Parquet stores (same bits; the column's logical type is unsigned).
    fn bits32(x: u32) -> i32 {
        i32::from_ne_bytes(x.to_ne_bytes())
    }

    /// One column of a row group being filled.
    enum Column {
        I32(Vec<i32>),
        I64(Vec<i64>),
        /// Values of the non-null rows and a definition level per row.
        NullableI64(Vec<i64>, Vec<i16>),
        Bytes(Vec<ByteArray>),
    }

    impl Column {
        fn clear(&mut self) {
            match self {
                Column::I32(v) => v.clear(),
                Column::I64(v) => v.clear(),
                Column::NullableI64(v, d) => {
                    v.clear();
                    d.clear();
                }
                Column::Bytes(v) => v.clear(),
            }
        }
    }

    impl Column {
        /// An empty column of the same kind.
        fn empty_like(&self, capacity: usize) -> Column {
            match self {
                Column::I32(_) => Column::I32(Vec::with_capacity(capacity)),
                Column::I64(_) => Column::I64(Vec::with_capacity(capacity)),
                Column::NullableI64(..) => Column::NullableI64(Vec::new(), Vec::new()),
                Column::Bytes(_) => Column::Bytes(Vec::new()),
            }
        }
    }

    /// Writes one row group's columns.
    fn write_group(writer: &mut SerializedFileWriter<File>, columns: &[Column]) -> io::Result<()> {
        let mut group = writer.next_row_group().map_err(perr)?;
        let mut columns = columns.iter();
        while let Some(mut writer) = group.next_column().map_err(perr)? {
            let written = match (columns.next(), writer.untyped()) {
                (Some(Column::I32(v)), ColumnWriter::Int32ColumnWriter(w)) => {
                    w.write_batch(v, None, None)
                }
                (Some(Column::I64(v)), ColumnWriter::Int64ColumnWriter(w)) => {
                    w.write_batch(v, None, None)
                }
                (Some(Column::NullableI64(v, d)), ColumnWriter::Int64ColumnWriter(w)) => {
                    w.write_batch(v, Some(d), None)
                }
                (Some(Column::Bytes(v)), ColumnWriter::ByteArrayColumnWriter(w)) => {
                    w.write_batch(v, None, None)
                }
                _ => Err(ParquetError::General(
                    "a column does not have the schema's type".into(),
                )),
            };
            written.map_err(perr)?;
            writer.close().map_err(perr)?;
        }
        group.close().map_err(perr)?;
        Ok(())
    }

    /// One Parquet file: the row group being filled here, and a thread
    /// that encodes and writes the full ones (so parsing, and the three
    /// tables, run in parallel). The channel holds one row group: at most
    /// three exist per table.
    struct Table {
        columns: Vec<Column>,
        rows: usize,
        row_group: usize,
        full: Option<SyncSender<Vec<Column>>>,
        recycled: Receiver<Vec<Column>>,
        worker: Option<JoinHandle<io::Result<()>>>,
    }

    impl Table {
        fn new(
            path: &Path,
            schema: &str,
            row_group: usize,
            compress: Compress,
        ) -> io::Result<Table> {
            let compression = match compress {
                Compress::Snappy => Compression::SNAPPY,
                Compress::None => Compression::UNCOMPRESSED,
            };
            let schema = Arc::new(parse_message_type(schema).map_err(perr)?);
            let delta = |b: parquet::file::properties::WriterPropertiesBuilder, c: &str| {
                b.set_column_dictionary_enabled(ColumnPath::from(c), false)
                    .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED)
            };
            // Only the plain-encoded prices gain from compression (about
            // 25%); the delta- and dictionary-encoded columns gain nothing
            // and compressing them took a tenth of the time.
            let mut props = WriterProperties::builder()
                .set_compression(Compression::UNCOMPRESSED)
                .set_max_row_group_row_count(Some(row_group))
                .set_created_by(format!("tickwire {}", env!("CARGO_PKG_VERSION")));
            props = delta(props, "sequence");
            props = delta(props, "timestamp");
            // Prices take many values: plain, then Snappy, beats a dictionary.
            for c in ["bid_price", "ask_price", "price"] {
                props = props
                    .set_column_dictionary_enabled(ColumnPath::from(c), false)
                    .set_column_compression(ColumnPath::from(c), compression);
            }
            // Min/max of a string column costs a comparison per row; the
            // type names need none.
            props = props
                .set_column_statistics_enabled(ColumnPath::from("type"), EnabledStatistics::None);
            let columns = schema
                .get_fields()
                .iter()
                .map(|f| match (f.get_physical_type(), f.is_optional()) {
                    (parquet::basic::Type::INT32, _) => Column::I32(Vec::with_capacity(row_group)),
                    (parquet::basic::Type::INT64, false) => {
                        Column::I64(Vec::with_capacity(row_group))
                    }
                    (parquet::basic::Type::INT64, true) => {
                        Column::NullableI64(Vec::new(), Vec::new())
                    }
                    _ => Column::Bytes(Vec::new()),
                })
                .collect();
            let mut writer =
                SerializedFileWriter::new(create(path)?, schema, Arc::new(props.build()))
                    .map_err(perr)?;
            let (full, groups) = sync_channel::<Vec<Column>>(1);
            let (give_back, recycled) = sync_channel(2);
            let worker = thread::Builder::new()
                .name("parquet".into())
                .spawn(move || {
                    for mut columns in groups {
                        write_group(&mut writer, &columns)?;
                        columns.iter_mut().for_each(Column::clear);
                        let _ = give_back.try_send(columns);
                    }
                    writer.close().map_err(perr)?;
                    Ok(())
                })?;
            Ok(Table {
                columns,
                rows: 0,
                row_group,
                full: Some(full),
                recycled,
                worker: Some(worker),
            })
        }

        /// Counts a row whose values were pushed; hands a full row group over.
        #[inline]
        fn row_done(&mut self) -> io::Result<()> {
            self.rows += 1;
            if self.rows >= self.row_group {
                self.flush()?;
            }
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            if self.rows == 0 {
                return Ok(());
            }
            let fresh = self.recycled.try_recv().unwrap_or_else(|_| {
                self.columns
                    .iter()
                    .map(|c| c.empty_like(self.row_group))
                    .collect()
            });
            let full = std::mem::replace(&mut self.columns, fresh);
            self.rows = 0;
            let sent = self.full.as_ref().map(|tx| tx.send(full));
            match sent {
                Some(Ok(())) => Ok(()),
                // The worker stopped: its error says why.
                _ => self.join(),
            }
        }

        /// Ends the worker and returns its result.
        fn join(&mut self) -> io::Result<()> {
            self.full = None;
            match self.worker.take().map(JoinHandle::join) {
                Some(Ok(result)) => result,
                Some(Err(_)) => Err(io::Error::other("the Parquet writer thread panicked")),
                None => Err(io::Error::other("the Parquet writer already stopped")),
            }
        }

        fn close(mut self) -> io::Result<()> {
            self.flush()?;
            self.join()
        }
    }

    /// Pushes onto column `i` of a table (the schema fixes which kind it is).
    macro_rules! push {
        ($table:expr, $i:expr, I32, $v:expr) => {
            if let Some(Column::I32(c)) = $table.columns.get_mut($i) {
                c.push($v);
            }
        };
        ($table:expr, $i:expr, I64, $v:expr) => {
            if let Some(Column::I64(c)) = $table.columns.get_mut($i) {
                c.push($v);
            }
        };
    }

    pub(super) struct ParquetSink {
        quotes: Table,
        trades: Table,
        control: Table,
        /// One `ByteArray` per control type name, cloned per row (a reference count).
        names: Vec<(&'static str, ByteArray)>,
    }

    impl ParquetSink {
        pub(super) fn new(
            dir: &Path,
            row_group: usize,
            compress: Compress,
        ) -> io::Result<ParquetSink> {
            let path = |t| table_path(dir, t, Format::Parquet);
            Ok(ParquetSink {
                quotes: Table::new(&path("quotes"), QUOTES, row_group, compress)?,
                trades: Table::new(&path("trades"), TRADES, row_group, compress)?,
                control: Table::new(&path("control"), CONTROL, row_group, compress)?,
                names: Vec::new(),
            })
        }

        fn name(&mut self, name: &'static str) -> ByteArray {
            if let Some((_, b)) = self.names.iter().find(|(n, _)| *n == name) {
                return b.clone();
            }
            let b = ByteArray::from(name.as_bytes().to_vec());
            self.names.push((name, b.clone()));
            b
        }
    }

    impl Sink for ParquetSink {
        #[inline]
        fn row(&mut self, m: &Message<'_>) -> io::Result<()> {
            match m {
                Message::Quote(q) => {
                    let t = &mut self.quotes;
                    push!(t, 0, I64, bits64(q.sequence()));
                    push!(t, 1, I64, bits64(q.timestamp()));
                    push!(t, 2, I32, bits32(q.instrument_id()));
                    push!(t, 3, I32, q.bid_price());
                    push!(t, 4, I32, q.ask_price());
                    push!(t, 5, I32, bits32(q.bid_size()));
                    push!(t, 6, I32, bits32(q.ask_size()));
                    t.row_done()
                }
                Message::Trade(tr) => {
                    let t = &mut self.trades;
                    push!(t, 0, I64, bits64(tr.sequence()));
                    push!(t, 1, I64, bits64(tr.timestamp()));
                    push!(t, 2, I32, bits32(tr.instrument_id()));
                    push!(t, 3, I32, tr.price());
                    push!(t, 4, I32, bits32(tr.size()));
                    push!(t, 5, I32, i32::from(tr.side()));
                    push!(t, 6, I32, i32::from(tr.flags()));
                    t.row_done()
                }
                other => {
                    let name = self.name(other.msg_type().name());
                    let (session_id, count) = match other {
                        Message::LoginAccepted(la) => (Some(la.session_id()), None),
                        Message::Packet(p) => (Some(p.session_id()), None),
                        Message::Retransmit(r) => (Some(r.session_id()), Some(r.count())),
                        _ => (None, None),
                    };
                    let t = &mut self.control;
                    if let Some(Column::Bytes(c)) = t.columns.get_mut(0) {
                        c.push(name);
                    }
                    push!(t, 1, I64, bits64(other.sequence()));
                    push!(t, 2, I64, bits64(other.timestamp()));
                    for (i, value) in [(3, session_id), (4, count)] {
                        if let Some(Column::NullableI64(v, d)) = t.columns.get_mut(i) {
                            if let Some(x) = value {
                                v.push(bits64(x));
                            }
                            d.push(i16::from(value.is_some()));
                        }
                    }
                    t.row_done()
                }
            }
        }

        fn finish(self: Box<Self>) -> io::Result<()> {
            let ParquetSink {
                quotes,
                trades,
                control,
                ..
            } = *self;
            // Every table is closed (and its thread joined) even if one failed.
            let results = [quotes.close(), trades.close(), control.close()];
            results.into_iter().collect()
        }
    }
}
