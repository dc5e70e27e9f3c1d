//! `tickwire export`: every field of every table equal to what `dump`
//! prints, for clean and damaged recordings; Parquet read back with the
//! `parquet` crate's column readers (types, logical types, row groups);
//! the message of a build without the `parquet` feature.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::Output;

use serde_json::Value;

#[path = "common/cli.rs"]
mod cli_util;
use cli_util::tickwire;
#[path = "common/fs.rs"]
mod fs_util;
use fs_util::TempDir;

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const QUOTES: [&str; 7] = [
    "sequence",
    "timestamp",
    "instrument_id",
    "bid_price",
    "ask_price",
    "bid_size",
    "ask_size",
];
const TRADES: [&str; 7] = [
    "sequence",
    "timestamp",
    "instrument_id",
    "price",
    "size",
    "side",
    "flags",
];
const CONTROL: [&str; 5] = ["type", "sequence", "timestamp", "session_id", "count"];

/// dump's frames (duplicates left out, as export leaves them out), split
/// into the export's tables: each row as strings, "" for null.
fn dump_tables(file: &str) -> [Vec<Vec<String>>; 3] {
    let out = ok(tickwire(&["dump", file]));
    let mut tables: [Vec<Vec<String>>; 3] = Default::default();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v.get("sequence").is_none()
            || v.get("duplicate").is_some()
            || v["type"] == "new_session"
            || v["type"] == "gap"
        {
            continue;
        }
        let (i, columns): (usize, &[&str]) = match v["type"].as_str().unwrap() {
            "quote" => (0, &QUOTES),
            "trade" => (1, &TRADES),
            _ => (2, &CONTROL),
        };
        tables[i].push(
            columns
                .iter()
                .map(|c| match &v.get(*c) {
                    None => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                })
                .collect(),
        );
    }
    tables
}

/// A seeded recording, damaged with probability `corrupt`, with a
/// LoginAccepted (protocol test vector) at the end for the session_id column.
fn recording(dir: &TempDir, corrupt: &str) -> String {
    let file = dir.file("in.twr");
    ok(tickwire(&[
        "gen",
        "--count",
        "30000",
        "--seed",
        "12",
        "--corrupt",
        corrupt,
        "-o",
        &file,
    ]));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(&[
        0xa5, 0x01, 0x03, 0x20, 0x2a, 0, 0, 0, 0, 0, 0, 0, 0x15, 0xcd, 0x85, 0x3d, 0xfe, 0x9c,
        0x97, 0x17, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0x33, 0x37, 0x05, 0x36,
    ]);
    std::fs::write(&file, bytes).unwrap();
    file
}

#[test]
fn csv_tables_equal_dump_clean_and_damaged() {
    for corrupt in ["0", "0.02"] {
        let dir = TempDir::new(&format!("csv-{corrupt}"), true);
        let file = recording(&dir, corrupt);
        let out_dir = dir.file("out");
        let out = ok(tickwire(&[
            "export", &file, "--format", "csv", "-o", &out_dir,
        ]));
        let summary = String::from_utf8_lossy(&out.stderr);
        assert!(summary.contains("quotes"), "{summary}");
        if corrupt != "0" {
            assert!(!summary.contains("discarded 0 bytes"), "{summary}");
        }
        let want = dump_tables(&file);
        assert!(want[0].len() > 15_000 && want[1].len() > 7_000 && want[2].len() > 2_000);
        for (i, (name, columns)) in [
            ("quotes", &QUOTES[..]),
            ("trades", &TRADES),
            ("control", &CONTROL),
        ]
        .into_iter()
        .enumerate()
        {
            let text =
                std::fs::read_to_string(Path::new(&out_dir).join(format!("{name}.csv"))).unwrap();
            let mut lines = text.lines();
            assert_eq!(lines.next().unwrap(), columns.join(","));
            let rows: Vec<Vec<String>> = lines
                .map(|l| l.split(',').map(str::to_owned).collect())
                .collect();
            assert_eq!(rows, want[i], "{name} ({corrupt})");
        }
    }
}

#[test]
fn export_needs_a_directory_and_a_readable_input() {
    let dir = TempDir::new("errors", true);
    let out = tickwire(&[
        "export",
        &dir.file("missing.twr"),
        "--format",
        "csv",
        "-o",
        &dir.file("o"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
    let file = recording(&dir, "0");
    let out = tickwire(&["export", &file, "--format", "csv", "-o", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a file: -o names a directory"));
    let out = tickwire(&["export", &file, "--format", "xml", "-o", &dir.file("o")]);
    assert_eq!(out.status.code(), Some(2));
}

#[cfg(not(feature = "parquet"))]
#[test]
fn parquet_without_the_feature_says_so() {
    let dir = TempDir::new("nofeature", true);
    let file = recording(&dir, "0");
    let out = tickwire(&["export", &file, "--format", "parquet", "-o", &dir.file("o")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built without the `parquet` feature"), "{err}");
    assert!(!Path::new(&dir.file("o")).exists(), "nothing is created");
}

#[cfg(feature = "parquet")]
mod parquet_tables {
    use super::*;
    use parquet::basic::{IntType, LogicalType, TimeUnit, TimestampType, Type as PhysicalType};
    use parquet::column::reader::ColumnReader;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Every column of a Parquet file as strings ("" for null), row-major,
    /// read with the typed column readers (raw values, no conversion).
    fn read_parquet(
        path: &Path,
        columns: &[&str],
    ) -> (Vec<Vec<String>>, SerializedFileReader<std::fs::File>) {
        let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        let names: Vec<String> = schema
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        assert_eq!(names, columns);
        let mut cols: Vec<Vec<String>> = vec![Vec::new(); columns.len()];
        for g in 0..reader.num_row_groups() {
            let group = reader.get_row_group(g).unwrap();
            let rows = usize::try_from(group.metadata().num_rows()).unwrap();
            for (c, out) in cols.iter_mut().enumerate() {
                let descr = schema.column(c);
                let unsigned = matches!(
                    descr.logical_type_ref(),
                    Some(LogicalType::Integer(IntType {
                        is_signed: false,
                        ..
                    }))
                );
                let mut def = Vec::new();
                let strings: Vec<String> = match group.get_column_reader(c).unwrap() {
                    ColumnReader::Int32ColumnReader(mut r) => {
                        let mut v = Vec::new();
                        r.read_records(rows, Some(&mut def), None, &mut v).unwrap();
                        v.iter()
                            .map(|x: &i32| {
                                if unsigned {
                                    u32::from_ne_bytes(x.to_ne_bytes()).to_string()
                                } else {
                                    x.to_string()
                                }
                            })
                            .collect()
                    }
                    ColumnReader::Int64ColumnReader(mut r) => {
                        let mut v = Vec::new();
                        r.read_records(rows, Some(&mut def), None, &mut v).unwrap();
                        v.iter()
                            .map(|x: &i64| {
                                if unsigned || descr.name() == "timestamp" {
                                    u64::from_ne_bytes(x.to_ne_bytes()).to_string()
                                } else {
                                    x.to_string()
                                }
                            })
                            .collect()
                    }
                    ColumnReader::ByteArrayColumnReader(mut r) => {
                        let mut v = Vec::new();
                        r.read_records(rows, Some(&mut def), None, &mut v).unwrap();
                        v.iter().map(|b| b.as_utf8().unwrap().to_owned()).collect()
                    }
                    _ => panic!("unexpected column type"),
                };
                if descr.max_def_level() == 0 {
                    assert_eq!(strings.len(), rows);
                    out.extend(strings);
                } else {
                    assert_eq!(def.len(), rows);
                    let mut values = strings.into_iter();
                    out.extend(def.iter().map(|d| {
                        if *d == 1 {
                            values.next().unwrap()
                        } else {
                            String::new()
                        }
                    }));
                }
            }
        }
        let n = cols.first().map_or(0, Vec::len);
        let rows = (0..n)
            .map(|r| cols.iter().map(|c| c[r].clone()).collect())
            .collect();
        (rows, reader)
    }

    #[test]
    fn parquet_tables_equal_dump_clean_and_damaged() {
        for corrupt in ["0", "0.02"] {
            let dir = TempDir::new(&format!("pq-{corrupt}"), true);
            let file = recording(&dir, corrupt);
            let out_dir = dir.file("out");
            ok(tickwire(&[
                "export", &file, "--format", "parquet", "-o", &out_dir,
            ]));
            let want = dump_tables(&file);
            for (i, (name, columns)) in [
                ("quotes", &QUOTES[..]),
                ("trades", &TRADES),
                ("control", &CONTROL),
            ]
            .into_iter()
            .enumerate()
            {
                let (rows, reader) = read_parquet(
                    &Path::new(&out_dir).join(format!("{name}.parquet")),
                    columns,
                );
                assert_eq!(rows, want[i], "{name} ({corrupt})");
                let schema = reader.metadata().file_metadata().schema_descr_ptr();
                let ts = schema
                    .columns()
                    .iter()
                    .find(|c| c.name() == "timestamp")
                    .unwrap();
                assert_eq!(ts.physical_type(), PhysicalType::INT64);
                assert_eq!(
                    ts.logical_type_ref(),
                    Some(&LogicalType::Timestamp(TimestampType {
                        is_adjusted_to_u_t_c: true,
                        unit: TimeUnit::NANOS
                    }))
                );
            }
        }
    }

    #[test]
    fn compression_none_writes_the_same_rows_uncompressed() {
        use parquet::basic::Compression;
        let dir = TempDir::new("compression", true);
        let file = recording(&dir, "0.01");
        let (snappy, none) = (dir.file("snappy"), dir.file("none"));
        ok(tickwire(&[
            "export", &file, "--format", "parquet", "-o", &snappy,
        ]));
        ok(tickwire(&[
            "export",
            &file,
            "--format",
            "parquet",
            "--compression",
            "none",
            "-o",
            &none,
        ]));
        let want = dump_tables(&file);
        for (name, columns, price) in [("quotes", &QUOTES[..], 3), ("trades", &TRADES, 3)] {
            let (a, ra) =
                read_parquet(&Path::new(&snappy).join(format!("{name}.parquet")), columns);
            let (b, rb) = read_parquet(&Path::new(&none).join(format!("{name}.parquet")), columns);
            assert_eq!(a, b);
            assert_eq!(a, want[if name == "quotes" { 0 } else { 1 }]);
            let codec = |r: &SerializedFileReader<std::fs::File>, c: usize| {
                r.metadata().row_group(0).column(c).compression()
            };
            assert_eq!(codec(&ra, price), Compression::SNAPPY);
            assert_eq!(codec(&rb, price), Compression::UNCOMPRESSED);
            assert_eq!(
                codec(&ra, 0),
                Compression::UNCOMPRESSED,
                "sequence is delta-encoded only"
            );
        }
    }

    #[test]
    fn parquet_row_groups_hold_a_mebirow() {
        let dir = TempDir::new("groups", true);
        let file = dir.file("big.twr");
        ok(tickwire(&[
            "gen", "--count", "1900000", "--seed", "3", "-o", &file,
        ]));
        let out_dir = dir.file("out");
        ok(tickwire(&[
            "export", &file, "--format", "parquet", "-o", &out_dir,
        ]));
        let reader = SerializedFileReader::new(
            std::fs::File::open(Path::new(&out_dir).join("quotes.parquet")).unwrap(),
        )
        .unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.num_row_groups(), 2);
        assert_eq!(meta.row_group(0).num_rows(), 1 << 20);
        assert!(meta.file_metadata().num_rows() > 1 << 20);
    }
}
