"""Benchmark: tickwire.read into numpy vs databento-dbn, and `tickwire export --format parquet`.

Builds a recording of N frames with `tickwire gen` (60% quotes, 30% trades,
10% heartbeats), reads it with tickwire.read, and builds a DBN file of the
same quotes (as MBP-1 records) and trades (as trade records), in the same
order, which databento-dbn decodes (DBNDecoder: its records). Then times
`tickwire export --format parquet`. Prints one table; run it under the
benchmark lock:

    flock /work/bench.lock python python/bench/bench_read.py [--frames 10000000] [--runs 5]

Needs: the tickwire package installed, numpy, databento-dbn, and a release
build of the CLI with Parquet (cargo build --release --features parquet),
found at target/release/tickwire or $TICKWIRE_BIN.
"""

import argparse
import resource
from importlib.metadata import version
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import tickwire

ROOT = pathlib.Path(__file__).resolve().parents[2]

MBP1 = np.dtype(
    [
        ("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"),
        ("ts_event", "<u8"), ("price", "<i8"), ("size", "<u4"), ("action", "S1"), ("side", "S1"),
        ("flags", "u1"), ("depth", "u1"), ("ts_recv", "<u8"), ("ts_in_delta", "<i4"),
        ("sequence", "<u4"), ("bid_px", "<i8"), ("ask_px", "<i8"), ("bid_sz", "<u4"),
        ("ask_sz", "<u4"), ("bid_ct", "<u4"), ("ask_ct", "<u4"),
    ]
)
TRADE = np.dtype(
    [
        ("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"),
        ("ts_event", "<u8"), ("price", "<i8"), ("size", "<u4"), ("action", "S1"), ("side", "S1"),
        ("flags", "u1"), ("depth", "u1"), ("ts_recv", "<u8"), ("ts_in_delta", "<i4"),
        ("sequence", "<u4"),
    ]
)
assert MBP1.itemsize == 80 and TRADE.itemsize == 48
# DBN prices are in units of 1e-9; the wire's have 4 decimals.
DBN_SCALE = 100_000


def tickwire_bin() -> str:
    return os.environ.get("TICKWIRE_BIN") or str(ROOT / "target" / "release" / "tickwire")


def dbn_file(rec: "tickwire.Recording", path: pathlib.Path) -> int:
    """Writes the recording's quotes and trades, in stream order, as a DBN file."""
    import databento_dbn as dbn

    q, t = rec.quotes, rec.trades
    mq = np.zeros(len(q), MBP1)
    mq["length"], mq["rtype"], mq["publisher_id"] = 20, 0x01, 1
    mq["instrument_id"] = q["instrument_id"]
    mq["ts_event"] = mq["ts_recv"] = q["timestamp"].view("u8")
    mq["price"] = dbn.UNDEF_PRICE
    mq["action"], mq["side"] = b"A", b"N"
    mq["sequence"] = q["sequence"].astype("u4")
    mq["bid_px"] = q["bid_price"].astype("i8") * DBN_SCALE
    mq["ask_px"] = q["ask_price"].astype("i8") * DBN_SCALE
    mq["bid_sz"], mq["ask_sz"] = q["bid_size"], q["ask_size"]
    mt = np.zeros(len(t), TRADE)
    mt["length"], mt["rtype"], mt["publisher_id"] = 12, 0x00, 1
    mt["instrument_id"] = t["instrument_id"]
    mt["ts_event"] = mt["ts_recv"] = t["timestamp"].view("u8")
    mt["price"] = t["price"].astype("i8") * DBN_SCALE
    mt["size"] = t["size"]
    mt["action"] = b"T"
    mt["side"] = np.where(t["side"] == 1, b"B", np.where(t["side"] == 2, b"A", b"N"))
    mt["flags"] = t["flags"]
    mt["sequence"] = t["sequence"].astype("u4")
    # Interleave in sequence order: both record sizes are multiples of 16
    # bytes, so place 16-byte units.
    seq = np.concatenate([q["sequence"], t["sequence"]])
    units = np.concatenate([np.full(len(q), 5), np.full(len(t), 3)])
    order = np.argsort(seq, kind="stable")
    start = np.empty(len(seq), np.int64)
    start[order] = np.concatenate([[0], np.cumsum(units[order])[:-1]])
    body = np.zeros(int(units.sum()), "V16")
    qu, tu = mq.view("V16").reshape(-1, 5), mt.view("V16").reshape(-1, 3)
    for k in range(5):
        body[start[: len(q)] + k] = qu[:, k]
    for k in range(3):
        body[start[len(q):] + k] = tu[:, k]
    meta = dbn.Metadata(
        dataset="TWIR.SYN",
        start=int(q["timestamp"].view("u8")[0]) if len(q) else 0,
        stype_in=dbn.SType.INSTRUMENT_ID,
        stype_out=dbn.SType.INSTRUMENT_ID,
        schema=None,
    )
    with open(path, "wb") as f:
        f.write(meta.encode())
        f.write(body.tobytes())
    return len(seq)


def timed(fn, runs):
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        if _ < runs - 1:
            del result
            result = None
    return times, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dbn-runs", type=int, default=2)
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    args = ap.parse_args()
    import databento_dbn as dbn

    tw = tickwire_bin()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = pathlib.Path(tmp)
        twr = tmp / "feed.twr"
        subprocess.run([tw, "-q", "gen", "--count", str(args.frames), "--seed", "1", "-o", str(twr)], check=True)
        size = twr.stat().st_size
        twr.read_bytes()  # into the page cache, as for every reader below

        cpu_start = time.process_time()
        tw_times, rec = timed(lambda: tickwire.read(twr), args.runs)
        tw_cpu = (time.process_time() - cpu_start) / args.runs
        frames = rec.stats["frames"]
        data = len(rec.quotes) + len(rec.trades)
        assert frames == args.frames and not rec.damaged

        dbn_path = tmp / "feed.dbn"
        records = dbn_file(rec, dbn_path)
        assert records == data
        dbn_size = dbn_path.stat().st_size

        def dbn_decode():
            dec = dbn.DBNDecoder()
            dec.write(dbn_path.read_bytes())
            return dec.decode()

        dbn_times, decoded = timed(dbn_decode, args.dbn_runs)
        # The DBN file holds the same messages: check a sample.
        assert len(decoded) == data + 1  # + its metadata
        first_quote = next(r for r in decoded[1:] if isinstance(r, dbn.MBP1Msg))
        assert first_quote.levels[0].bid_px == int(rec.quotes[0]["bid_price"]) * DBN_SCALE
        assert first_quote.ts_event == int(rec.quotes[0]["timestamp"].view("u8"))
        del decoded

        chunk_times, _ = timed(lambda: sum(len(c) for c in tickwire.read_chunks(twr, 1_000_000)), 2)
        pandas_times = None
        try:
            import pandas  # noqa: F401

            pandas_times, _ = timed(lambda: rec.to_pandas(), 2)
        except ImportError:
            pass
        del rec

        out = tmp / "parquet"
        export_times, export_cpu = [], []
        for _ in range(args.runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([tw, "-q", "export", str(twr), "--format", "parquet", "-o", str(out)], check=True,
                           stderr=subprocess.DEVNULL)
            export_times.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            export_cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        parquet_size = sum(p.stat().st_size for p in out.iterdir())
        plain_times, plain_cpu = [], []
        for _ in range(args.runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([tw, "-q", "export", str(twr), "--format", "parquet", "--compression", "none", "-o",
                            str(out)], check=True, stderr=subprocess.DEVNULL)
            plain_times.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            plain_cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        plain_size = sum(p.stat().st_size for p in out.iterdir())

    def row(name, times, n, unit="frames"):
        best, med = min(times), statistics.median(times)
        print(f"| {name} | {n:,} {unit} | {best:.3f} | {med:.3f} | {n / best / 1e6:.1f} | {n / med / 1e6:.1f} |")

    print(f"recording: {args.frames:,} frames ({data:,} quotes and trades), {size / 1e6:.0f} MB; "
          f"DBN file of the same quotes (MBP-1) and trades: {dbn_size / 1e6:.0f} MB; "
          f"Parquet tables: {parquet_size / 1e6:.0f} MB ({plain_size / 1e6:.0f} MB with --compression none)")
    print(f"CPU: {os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}; "
          f"tickwire {tickwire.__version__}, numpy {np.__version__}, databento-dbn {version('databento-dbn')}")
    print()
    print("| case | input | best s | median s | best M/s | median M/s |")
    print("|---|---:|---:|---:|---:|---:|")
    row(f"tickwire.read → numpy (best of {args.runs})", tw_times, frames)
    row("tickwire.read → numpy, quotes and trades only", tw_times, data, "messages")
    row(f"databento-dbn DBNDecoder.decode (best of {args.dbn_runs})", dbn_times, data, "messages")
    row("tickwire.read_chunks(1 M frames)", chunk_times, frames)
    if pandas_times:
        row("Recording.to_pandas() after read", pandas_times, data, "messages")
    row(f"tickwire export --format parquet (best of {args.runs})", export_times, frames)
    row(f"tickwire export --format parquet --compression none (best of {args.runs})", plain_times, frames)
    print()
    print(f"CPU time (user + system, all threads; less sensitive to other load than wall time): "
          f"tickwire.read {tw_cpu:.3f} s per run, the mean over the runs, first included "
          f"({frames / tw_cpu / 1e6:.1f} M frames per CPU-second); "
          f"export best {min(export_cpu):.3f} s, median {statistics.median(export_cpu):.3f} s "
          f"({frames / min(export_cpu) / 1e6:.1f} M frames per CPU-second); "
          f"--compression none best {min(plain_cpu):.3f} s ({frames / min(plain_cpu) / 1e6:.1f} M frames per CPU-second)")
    ratio = min(dbn_times) / min(tw_times)
    read_rate = frames / min(tw_times) / 1e6
    export_rate = frames / min(export_times) / 1e6
    plain_rate = frames / min(plain_times) / 1e6
    print(f"tickwire.read: {read_rate:.1f} M frames/s (target 50): {'met' if read_rate >= 50 else 'NOT met'}; "
          f"{ratio:.0f}x databento-dbn on the same messages ({'faster' if ratio > 1 else 'NOT faster'})")
    print(f"export --format parquet: {export_rate:.1f} M frames/s, --compression none {plain_rate:.1f} "
          f"(target 10): {'met' if export_rate >= 10 else 'NOT met'} / {'met' if plain_rate >= 10 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
