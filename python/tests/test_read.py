"""tickwire.read and read_chunks against `tickwire dump`, field by field."""

import warnings

import numpy as np
import pytest

import tickwire
from conftest import dump, gen, run

QUOTE_FIELDS = ["sequence", "timestamp", "instrument_id", "bid_price", "ask_price", "bid_size", "ask_size"]
TRADE_FIELDS = ["sequence", "timestamp", "instrument_id", "price", "size", "side", "flags"]


def expected(lines, kind, fields):
    rows = [l for l in lines if l["type"] == kind and not l.get("duplicate")]
    return {f: np.array([r[f] for r in rows], dtype=np.uint64 if f in ("sequence", "timestamp") else np.int64) for f in fields}


def assert_table_equals_dump(table, lines, kind, fields):
    want = expected(lines, kind, fields)
    assert len(table) == len(want["sequence"])
    for f in fields:
        got = table[f]
        if f == "timestamp":
            assert got.dtype == np.dtype("M8[ns]")
            got = got.view(np.int64).astype(np.uint64)
        np.testing.assert_array_equal(got.astype(want[f].dtype), want[f], err_msg=f)


def test_every_field_equals_dump(tmp_path):
    path = gen(tmp_path / "clean.twr", 20_000, seed=3)
    lines = dump(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file warns about nothing
        rec = tickwire.read(path)
    assert rec.quotes.dtype == tickwire.QUOTE_DTYPE and rec.trades.dtype == tickwire.TRADE_DTYPE
    assert len(rec.quotes) > 10_000 and len(rec.trades) > 5_000
    assert_table_equals_dump(rec.quotes, lines, "quote", QUOTE_FIELDS)
    assert_table_equals_dump(rec.trades, lines, "trade", TRADE_FIELDS)
    assert not rec.damaged and len(rec.gaps) == 0 and rec.discards == []
    assert rec.stats["frames"] == sum(1 for l in lines if "sequence" in l)
    assert rec.stats["heartbeats"] == sum(1 for l in lines if l["type"] == "heartbeat")


def test_protocol_extremes_round_trip(tmp_path):
    # The protocol's test vectors 6-9: negative prices, u32 maxima, flags 0x81.
    vectors = [
        "a5 01 10 2c 07 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 2a 00 00 00 44 d6 12 00 a8 d6 12 00 64 00 00 00 c8 00 00 00 c0 49 8b a2",
        "a5 01 10 2c 08 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 00 28 6b ee fb ff ff ff 00 00 00 00 00 00 00 00 ff ff ff ff 37 00 a1 82",
        "a5 01 11 28 09 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 2a 00 00 00 76 d6 12 00 32 00 00 00 01 00 00 00 d2 4f d1 29",
        "a5 01 11 28 0a 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 07 00 00 00 ff ff ff ff 01 00 00 00 02 81 00 00 5c 18 0d 76",
    ]
    path = tmp_path / "vectors.twr"
    path.write_bytes(b"".join(bytes.fromhex(v) for v in vectors))
    rec = tickwire.read(path, on_damage="ignore")
    lines = dump(path)
    assert_table_equals_dump(rec.quotes, lines, "quote", QUOTE_FIELDS)
    assert_table_equals_dump(rec.trades, lines, "trade", TRADE_FIELDS)
    assert rec.quotes[1]["instrument_id"] == 4_000_000_000 and rec.quotes[1]["ask_size"] == 2**32 - 1
    assert rec.quotes[1]["bid_price"] == -5 and rec.trades[1]["flags"] == 0x81
    assert rec.quotes[0]["timestamp"] == np.datetime64(1700000000123456789, "ns")
    assert tickwire.price_to_decimal(int(rec.trades[0]["price"])) == __import__("decimal").Decimal("123.4550")
    # Sequence 7 first: the tracker reports nothing before the first frame.
    assert len(rec.gaps) == 0


def test_damaged_file_reports_counts_and_gaps(tmp_path):
    path = gen(tmp_path / "damaged.twr", 30_000, seed=5, corrupt=0.02)
    lines = dump(path)
    with pytest.warns(tickwire.DamageWarning, match="bytes discarded"):
        rec = tickwire.read(path)
    assert rec.damaged
    discards = [l for l in lines if l["type"] == "discarded"]
    gaps = [l for l in lines if l["type"] == "gap"]
    assert len(discards) > 100 and len(gaps) > 50
    assert rec.discards == [(d["bytes"], d["reason"]) for d in discards]
    assert rec.stats["discarded_bytes"] == sum(d["bytes"] for d in discards)
    assert rec.stats["discard_runs"] == len(discards)
    assert [tuple(g) for g in rec.gaps.tolist()] == [(g["first"], g["last"]) for g in gaps]
    assert rec.stats["gaps"] == len(gaps) and rec.stats["missing"] == sum(g["missing"] for g in gaps)
    assert rec.missing == rec.stats["missing"]
    # Every frame that survived is there, equal to dump's.
    assert_table_equals_dump(rec.quotes, lines, "quote", QUOTE_FIELDS)
    assert_table_equals_dump(rec.trades, lines, "trade", TRADE_FIELDS)
    with pytest.raises(tickwire.DamageError, match="bytes discarded"):
        tickwire.read(path, on_damage="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tickwire.read(path, on_damage="ignore")


def test_duplicates_are_counted_not_returned(tmp_path):
    src = gen(tmp_path / "a.twr", 500, seed=9).read_bytes()
    path = tmp_path / "dup.twr"
    path.write_bytes(src + src[: len(src) // 2])  # the first half again: late frames
    lines = dump(path)
    dups = sum(1 for l in lines if l.get("duplicate"))
    assert dups > 100
    with pytest.warns(tickwire.DamageWarning, match="duplicate"):
        rec = tickwire.read(path)
    assert rec.duplicates == dups == rec.stats["duplicates"]
    assert_table_equals_dump(rec.quotes, lines, "quote", QUOTE_FIELDS)


@pytest.mark.parametrize("frames", [1, 7, 1000, 4096, 10**6])
def test_chunks_equal_whole_read(tmp_path, frames):
    path = gen(tmp_path / "chunks.twr", 12_000, seed=11, corrupt=0.01)
    whole = tickwire.read(path, on_damage="ignore")
    chunks = list(tickwire.read_chunks(path, frames, on_damage="ignore"))
    assert all(len(c) == frames for c in chunks[:-1]) and 0 < len(chunks[-1]) <= frames
    np.testing.assert_array_equal(np.concatenate([c.quotes for c in chunks]), whole.quotes)
    np.testing.assert_array_equal(np.concatenate([c.trades for c in chunks]), whole.trades)
    np.testing.assert_array_equal(np.concatenate([c.gaps for c in chunks]), whole.gaps)
    assert [d for c in chunks for d in c.discards] == whole.discards
    total = {k: sum(c.stats[k] for c in chunks) for k in whole.stats}
    assert total == whole.stats
    assert [c.stats["quotes"] + c.stats["trades"] - c.duplicates for c in chunks] == [len(c) for c in chunks]


def test_chunks_warn_on_damage(tmp_path):
    path = gen(tmp_path / "d.twr", 3000, seed=2, corrupt=0.05)
    with pytest.warns(tickwire.DamageWarning, match="chunk with"):
        list(tickwire.read_chunks(path, 1000))
    with pytest.raises(ValueError):
        list(tickwire.read_chunks(path, 0))


def test_empty_and_junk_files(tmp_path):
    empty = tmp_path / "empty.twr"
    empty.write_bytes(b"")
    rec = tickwire.read(empty)
    assert len(rec.quotes) == 0 and len(rec.trades) == 0 and not rec.damaged
    assert list(tickwire.read_chunks(empty)) == []
    junk = tmp_path / "junk.twr"
    junk.write_bytes(bytes(range(256)) * 10 + b"\xa5\x01\x10")
    with pytest.warns(tickwire.DamageWarning):
        rec = tickwire.read(junk)
    assert rec.stats["discarded_bytes"] == 2563 and len(rec.quotes) == 0


def test_errors_are_python_exceptions_with_rust_messages(tmp_path):
    missing = tmp_path / "nope.twr"
    with pytest.raises(FileNotFoundError, match=r"cannot open .*nope\.twr: No such file"):
        tickwire.read(missing)
    with pytest.raises(FileNotFoundError, match="cannot open"):
        next(tickwire.read_chunks(missing))
    with pytest.raises(IsADirectoryError, match="cannot read"):
        tickwire.read(tmp_path)
    with pytest.raises(ValueError, match="on_damage"):
        tickwire.read(missing, on_damage="maybe")


def test_to_pandas_and_prices(tmp_path):
    pd = pytest.importorskip("pandas")
    path = gen(tmp_path / "p.twr", 2000, seed=4)
    rec = tickwire.read(path)
    frames = rec.to_pandas()
    q, t = frames["quotes"], frames["trades"]
    assert list(q.columns) == QUOTE_FIELDS and list(t.columns) == TRADE_FIELDS
    assert str(q["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert (q["timestamp"].astype("int64").to_numpy() == rec.quotes["timestamp"].view("int64")).all()
    assert (q["bid_price"].to_numpy() == rec.quotes["bid_price"]).all()
    fl = rec.to_pandas(prices="float")["trades"]["price"].to_numpy()
    np.testing.assert_allclose(fl, rec.trades["price"] / 10_000)
    dec = rec.to_pandas(prices="decimal")["quotes"]["ask_price"]
    assert [d.scaleb(4) for d in dec[:50]] == [int(p) for p in rec.quotes["ask_price"][:50]]
    with pytest.raises(ValueError, match="prices"):
        rec.to_pandas(prices="cents")


def test_pandas_timestamps_are_consistent(tmp_path):
    """Issue 23: ``pd.DataFrame(rec.quotes)`` gave naive timestamps and
    ``to_pandas()`` UTC ones, with nothing saying so. ``tz=None`` gives
    exactly the DataFrame of the numpy array; the default is the same
    instants in UTC; another zone converts."""
    pd = pytest.importorskip("pandas")
    rec = tickwire.read(gen(tmp_path / "tz.twr", 500, seed=9))
    for name, table in (("quotes", rec.quotes), ("trades", rec.trades)):
        plain = pd.DataFrame(table)
        naive = rec.to_pandas(tz=None)[name]
        pd.testing.assert_frame_equal(naive, plain)
        utc = rec.to_pandas()[name]["timestamp"]
        assert str(utc.dtype) == "datetime64[ns, UTC]"
        pd.testing.assert_series_equal(utc, plain["timestamp"].dt.tz_localize("UTC"))
        ny = rec.to_pandas(tz="America/New_York")[name]["timestamp"]
        assert (ny == utc).all() and str(ny.dt.tz) == "America/New_York"


def test_trade_sides_have_names(tmp_path):
    """Issue 23: ``side`` was a bare 1/2. ``Side`` names the values and
    compares equal to the column's integers; ``sides="name"`` gives a
    categorical column."""
    pd = pytest.importorskip("pandas")
    assert [(s.name, int(s)) for s in tickwire.Side] == [("UNKNOWN", 0), ("BUY", 1), ("SELL", 2)]
    rec = tickwire.read(gen(tmp_path / "sides.twr", 2000, seed=5))
    sides = rec.trades["side"]
    buys, sells = int((sides == tickwire.Side.BUY).sum()), int((sides == tickwire.Side.SELL).sum())
    assert buys > 0 and sells > 0
    assert buys + sells + int((sides == tickwire.Side.UNKNOWN).sum()) == len(sides)
    named = rec.to_pandas(sides="name")["trades"]["side"]
    assert list(named.cat.categories) == ["unknown", "buy", "sell"]
    assert (named == "buy").sum() == buys and (named == "sell").sum() == sells
    assert (rec.to_pandas()["trades"]["side"].to_numpy() == sides).all()
    with pytest.raises(ValueError, match="sides"):
        rec.to_pandas(sides="letters")


def test_price_helpers():
    assert tickwire.PRICE_SCALE == 10_000
    assert str(tickwire.price_to_decimal(-1)) == "-0.0001"
    np.testing.assert_array_equal(tickwire.price_to_float(np.array([1234500], dtype=np.int32)), [123.45])


def test_arrays_own_their_memory(tmp_path):
    # The arrays outlive everything else and are writable numpy arrays.
    path = gen(tmp_path / "own.twr", 1000)
    q = tickwire.read(path).quotes
    import gc

    gc.collect()
    assert q.base is not None and q["sequence"][0] >= 1
    q["bid_price"][0] = 1
    assert q["bid_price"][0] == 1


def test_no_python_object_per_frame(tmp_path):
    import sys

    path = gen(tmp_path / "many.twr", 200_000, seed=6)
    tickwire.read(path)  # warm up: imports, caches
    before = sys.getallocatedblocks()
    rec = tickwire.read(path)
    grown = sys.getallocatedblocks() - before
    assert len(rec.quotes) + len(rec.trades) > 150_000
    # A Python object per frame would be 150,000 blocks or more.
    assert grown < 1_000, grown


def test_reads_a_pipe(tmp_path):
    # A FIFO has no size: every record goes to Rust vectors handed to numpy.
    import os
    import threading

    src = gen(tmp_path / "src.twr", 5000, seed=13)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as w:
            w.write(src.read_bytes())

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        piped = tickwire.read(fifo)
    finally:
        writer.join(timeout=10)
    whole = tickwire.read(src)
    np.testing.assert_array_equal(piped.quotes, whole.quotes)
    np.testing.assert_array_equal(piped.trades, whole.trades)
    assert piped.stats == whole.stats


def test_a_journal_directory_reads_as_its_sessions_in_order(tmp_path):
    # A journal (PROTOCOL.md appendix A) made by hand: the manifest, one
    # segment of session 7 from sequence 1 (a recording's bytes), its index
    # (empty here: the reader only takes the creation time from it).
    path = gen(tmp_path / "clean.twr", 5_000, seed=4)
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "JOURNAL").write_text(
        "tickwire-journal 1\nprotocol 1 3\nid 000102030405060708090a0b0c0d0e0f\nserver tickwire\n"
    )
    stem = "0000000001-0000000000000007-00000000000000000001"
    (journal / f"{stem}.twr").write_bytes(path.read_bytes())
    (journal / f"{stem}.twi").write_bytes(b"")
    whole = tickwire.read(path)
    rec = tickwire.read(journal)
    assert rec.sessions == [(7, 1)]
    np.testing.assert_array_equal(rec.quotes, whole.quotes)
    np.testing.assert_array_equal(rec.trades, whole.trades)
    lines = dump(journal)
    assert_table_equals_dump(rec.quotes, lines, "quote", QUOTE_FIELDS)
    chunks = list(tickwire.read_chunks(journal, frames=1000))
    np.testing.assert_array_equal(np.concatenate([c.quotes for c in chunks]), whole.quotes)
    # A directory that is not a journal is no recording.
    with pytest.raises(IsADirectoryError, match="cannot read"):
        tickwire.read(tmp_path)


def test_a_journal_written_by_serve_reads_whole_across_segments_and_restarts(tmp_path):
    # A journal as `serve --journal` writes it (small segments, so several;
    # two runs: the second continues the session of the first, as after a
    # restart): one session from sequence 1, every number once, the same
    # frames as the CLI's reader of the same directory.
    journal = tmp_path / "journal"
    for _ in range(2):
        run(
            "serve", "--listen", "127.0.0.1:0", "--rate", "20000", "--duration", "1",
            "--journal", str(journal), "--journal-segment", "64K", "-q",
        )
    segments = sorted(journal.glob("*.twr"))
    assert len(segments) >= 4, segments
    rec = tickwire.read(journal)
    assert len(rec.sessions) == 1 and rec.sessions[0][1] == 1, rec.sessions
    seqs = np.sort(np.concatenate([rec.quotes["sequence"], rec.trades["sequence"]]).astype(np.uint64))
    assert len(seqs) > 20_000
    np.testing.assert_array_equal(seqs, np.arange(1, len(seqs) + 1, dtype=np.uint64))
    lines = dump(journal)
    assert_table_equals_dump(rec.quotes, lines, "quote", QUOTE_FIELDS)
    assert_table_equals_dump(rec.trades, lines, "trade", TRADE_FIELDS)
    chunks = list(tickwire.read_chunks(journal, frames=4096))
    np.testing.assert_array_equal(np.concatenate([c.quotes for c in chunks]), rec.quotes)
    np.testing.assert_array_equal(np.concatenate([c.trades for c in chunks]), rec.trades)
