"""`tickwire export --format parquet|csv` read back with pyarrow and pandas: every field equal to dump's."""

import numpy as np
import pytest

from conftest import dump, gen, run

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

COLUMNS = ["type", "sequence", "timestamp", "session_id", "count", "instrument_id", "bid_price",
           "ask_price", "bid_size", "ask_size", "price", "size", "side", "flags"]


def dump_rows(path):
    """dump's frame lines (duplicates are left out of exports), as dicts with every column."""
    rows = []
    for line in dump(path):
        if "sequence" not in line or line.get("duplicate") or line["type"] == "new_session":
            continue
        rows.append({c: line.get(c) for c in COLUMNS})
    return rows


@pytest.fixture(params=[0.0, 0.02], ids=["clean", "damaged"])
def recording(request, tmp_path):
    path = gen(tmp_path / "x.twr", 25_000, seed=8, corrupt=request.param)
    # A LoginAccepted (the session_id column) too, from the protocol's test vectors.
    extra = bytes.fromhex(
        "a5010320 2a00000000000000 15cd853dfe9c9717 efcdab8967452301 33370536".replace(" ", "")
    )
    path.write_bytes(path.read_bytes() + extra)
    return path


def test_parquet_equals_dump(recording, tmp_path):
    out = tmp_path / "x.parquet"
    run("export", str(recording), "--format", "parquet", "-o", str(out))
    table = pq.read_table(out)
    schema = table.schema
    assert schema.names == COLUMNS
    assert schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert not schema.field("timestamp").nullable and not schema.field("type").nullable
    assert schema.field("sequence").type == pa.uint64() and schema.field("session_id").type == pa.uint64()
    assert schema.field("bid_price").type == pa.int32() and schema.field("bid_size").type == pa.uint32()
    assert schema.field("side").type == pa.uint8()
    want = dump_rows(recording)
    got = table.to_pylist()
    assert len(got) == len(want)
    # to_pylist turns ns timestamps into datetime (µs): compare the column as integers instead.
    ts = table.column("timestamp").cast(pa.int64()).to_pylist()
    for g, t in zip(got, ts):
        g["timestamp"] = t
    assert got == want
    assert got[-1]["type"] == "login_accepted" and got[-1]["session_id"] == 0x0123456789ABCDEF
    assert sum(1 for g in got if g["type"] == "heartbeat") > 1000


def test_parquet_with_pandas(recording, tmp_path):
    out = tmp_path / "x.parquet"
    run("export", str(recording), "--format", "parquet", "-o", str(out))
    df = pd.read_parquet(out)
    want = dump_rows(recording)
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    np.testing.assert_array_equal(df["timestamp"].astype("int64").to_numpy(), [w["timestamp"] for w in want])
    quotes = df[df["type"] == "quote"]
    wq = [w for w in want if w["type"] == "quote"]
    for c in ("sequence", "instrument_id", "bid_price", "ask_price", "bid_size", "ask_size"):
        np.testing.assert_array_equal(quotes[c].to_numpy().astype(np.int64), [w[c] for w in wq], err_msg=c)


def test_parquet_row_groups(tmp_path):
    path = gen(tmp_path / "big.twr", 1_100_000, seed=2)
    out = tmp_path / "big.parquet"
    run("export", str(path), "--format", "parquet", "-o", str(out))
    meta = pq.ParquetFile(out).metadata
    assert meta.num_rows == 1_100_000
    assert meta.num_row_groups == 2 and meta.row_group(0).num_rows == 1 << 20


def test_csv_equals_dump(recording, tmp_path):
    out = tmp_path / "x.csv"
    run("export", str(recording), "--format", "csv", "-o", str(out))
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.columns) == COLUMNS
    want = dump_rows(recording)
    assert len(df) == len(want)
    got = df.to_dict("records")
    for g, w in zip(got, want):
        assert g == {c: ("" if w[c] is None else str(w[c])) for c in COLUMNS}


def test_export_errors(tmp_path):
    import subprocess

    from conftest import tickwire_bin

    r = subprocess.run([tickwire_bin(), "export", str(tmp_path / "nope"), "--format", "csv", "-o", str(tmp_path / "o")],
                       capture_output=True, timeout=60)
    assert r.returncode == 1 and b"cannot open" in r.stderr
    src = gen(tmp_path / "a.twr", 10)
    r = subprocess.run([tickwire_bin(), "export", str(src), "--format", "parquet", "-o", "-"], capture_output=True, timeout=60)
    assert r.returncode == 1
    assert b"stdout" in r.stderr or b"parquet" in r.stderr
