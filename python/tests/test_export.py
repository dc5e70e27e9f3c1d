"""`tickwire export --format parquet|csv` read back with pyarrow and pandas: every field equal to dump's."""

import subprocess

import numpy as np
import pytest

from conftest import dump, gen, run, tickwire_bin

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

TABLES = {
    "quotes": ["sequence", "timestamp", "instrument_id", "bid_price", "ask_price", "bid_size", "ask_size"],
    "trades": ["sequence", "timestamp", "instrument_id", "price", "size", "side", "flags"],
    "control": ["type", "sequence", "timestamp", "session_id", "count"],
}
TYPES = {
    "sequence": pa.uint64(), "timestamp": pa.timestamp("ns", tz="UTC"), "instrument_id": pa.uint32(),
    "bid_price": pa.int32(), "ask_price": pa.int32(), "bid_size": pa.uint32(), "ask_size": pa.uint32(),
    "price": pa.int32(), "size": pa.uint32(), "side": pa.uint8(), "flags": pa.uint8(), "type": pa.string(),
    "session_id": pa.uint64(), "count": pa.uint64(),
}


def dump_tables(path):
    """dump's frame lines (duplicates are left out of exports) split as export splits them."""
    tables = {name: [] for name in TABLES}
    for line in dump(path):
        if "sequence" not in line or line.get("duplicate") or line["type"] in ("new_session", "gap"):
            continue
        name = {"quote": "quotes", "trade": "trades"}.get(line["type"], "control")
        tables[name].append({c: line.get(c) for c in TABLES[name]})
    return tables


@pytest.fixture(params=[0.0, 0.02], ids=["clean", "damaged"])
def recording(request, tmp_path):
    path = gen(tmp_path / "x.twr", 25_000, seed=8, corrupt=request.param)
    # A LoginAccepted (the session_id column), from the protocol's test vectors.
    extra = bytes.fromhex("a50103202a0000000000000015cd853dfe9c9717efcdab896745230133370536")
    path.write_bytes(path.read_bytes() + extra)
    return path


def test_parquet_equals_dump(recording, tmp_path):
    out = tmp_path / "pq"
    run("export", str(recording), "--format", "parquet", "-o", str(out))
    want = dump_tables(recording)
    assert len(want["quotes"]) > 10_000 and len(want["trades"]) > 5_000 and len(want["control"]) > 1_000
    for name, columns in TABLES.items():
        table = pq.read_table(out / f"{name}.parquet")
        assert table.schema.names == columns
        for c in columns:
            assert table.schema.field(c).type == TYPES[c], (name, c)
            assert table.schema.field(c).nullable == (c in ("session_id", "count")), (name, c)
        got = table.to_pydict()
        # to_pydict gives datetimes (µs): compare the ns timestamps as integers.
        got["timestamp"] = table.column("timestamp").cast(pa.int64()).to_pylist()
        rows = [dict(zip(columns, values)) for values in zip(*(got[c] for c in columns))]
        assert rows == want[name], name
    control = pq.read_table(out / "control.parquet").to_pylist()
    assert control[-1]["type"] == "login_accepted" and control[-1]["session_id"] == 0x0123456789ABCDEF
    assert control[0]["type"] == "heartbeat" and control[0]["session_id"] is None


def test_parquet_with_pandas(recording, tmp_path):
    out = tmp_path / "pq"
    run("export", str(recording), "--format", "parquet", "-o", str(out))
    want = dump_tables(recording)
    for name in ("quotes", "trades"):
        df = pd.read_parquet(out / f"{name}.parquet")
        assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
        np.testing.assert_array_equal(df["timestamp"].astype("int64").to_numpy(), [w["timestamp"] for w in want[name]])
        for c in TABLES[name][2:]:
            np.testing.assert_array_equal(df[c].to_numpy().astype(np.int64), [w[c] for w in want[name]], err_msg=c)


def test_parquet_row_groups(tmp_path):
    path = gen(tmp_path / "big.twr", 1_900_000, seed=2)
    out = tmp_path / "big"
    run("export", str(path), "--format", "parquet", "-o", str(out))
    meta = pq.ParquetFile(out / "quotes.parquet").metadata
    assert meta.num_rows > 1 << 20
    assert meta.num_row_groups == 2 and meta.row_group(0).num_rows == 1 << 20
    assert pq.ParquetFile(out / "trades.parquet").metadata.num_row_groups == 1


def test_csv_equals_dump(recording, tmp_path):
    out = tmp_path / "csv"
    run("export", str(recording), "--format", "csv", "-o", str(out))
    want = dump_tables(recording)
    for name, columns in TABLES.items():
        df = pd.read_csv(out / f"{name}.csv", dtype=str, keep_default_na=False)
        assert list(df.columns) == columns
        got = df.to_dict("records")
        assert got == [{c: ("" if w[c] is None else str(w[c])) for c in columns} for w in want[name]], name


def test_export_errors(tmp_path):
    def export(*args):
        return subprocess.run([tickwire_bin(), "export", *args], capture_output=True, timeout=60)

    r = export(str(tmp_path / "nope"), "--format", "csv", "-o", str(tmp_path / "o"))
    assert r.returncode == 1 and b"cannot open" in r.stderr
    src = gen(tmp_path / "a.twr", 10)
    r = export(str(src), "--format", "parquet", "-o", str(src))
    assert r.returncode == 1 and b"is a file: -o names a directory" in r.stderr
