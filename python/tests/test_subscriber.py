"""tickwire.Subscriber against a `tickwire serve` started here (127.0.0.1, bounded, cleaned up)."""

import pathlib
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

import tickwire
from conftest import run, tickwire_bin


@pytest.fixture
def server():
    """A `tickwire serve` on a free port of 127.0.0.1 at 20K msg/s, stopped after the test."""
    proc = subprocess.Popen(
        [tickwire_bin(), "-q", "serve", "--listen", "127.0.0.1:0", "--rate", "20000", "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("listening "), line
        yield proc, line.split()[1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dead_address() -> str:
    """An address of 127.0.0.1 where nothing listens (a port just released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


def collect(sub, want, seconds=15.0):
    quotes, trades, gaps, events = [], [], [], []
    end = time.monotonic() + seconds
    n = 0
    while n < want and time.monotonic() < end:
        batch = sub.next_batch(timeout=0.5)
        if batch is None:
            continue
        assert batch.quotes.dtype == tickwire.QUOTE_DTYPE and batch.trades.dtype == tickwire.TRADE_DTYPE
        quotes.append(batch.quotes)
        trades.append(batch.trades)
        gaps.extend(batch.gaps.tolist())
        events.extend(batch.events)
        n += len(batch)
    q = np.concatenate(quotes) if quotes else np.empty(0, tickwire.QUOTE_DTYPE)
    t = np.concatenate(trades) if trades else np.empty(0, tickwire.TRADE_DTYPE)
    return q, t, gaps, events


def test_replays_from_one_then_live_without_gap_or_repeat(server):
    _, addr = server
    time.sleep(0.5)  # some frames published before we log in: they come as replay
    with tickwire.Subscriber(addr, from_seq=1) as sub:
        q, t, gaps, events = collect(sub, 30_000)
        assert sub.server == addr
    seqs = np.sort(np.concatenate([q["sequence"], t["sequence"]]))
    assert len(seqs) >= 30_000, len(seqs)
    np.testing.assert_array_equal(seqs, np.arange(1, len(seqs) + 1, dtype=np.uint64))
    assert gaps == []
    assert any(e[0] == "logged_in" and e[2] == 1 for e in events), events[:5]
    assert (q["timestamp"] > np.datetime64("2020-01-01")).all()
    # (np.concatenate drops the records' padding: compare the fields.)
    assert q.dtype.names == tickwire.QUOTE_DTYPE.names and t.dtype.names == tickwire.TRADE_DTYPE.names


def test_fails_over_from_a_dead_server_to_a_live_one(server):
    _, addr = server
    dead = dead_address()
    sub = tickwire.Subscriber([dead, addr], from_seq=1, max_retries=1)
    try:
        q, t, gaps, events = collect(sub, 5_000)
    finally:
        sub.close()
    kinds = [e[0] for e in events]
    assert "fail_over" in kinds and ("fail_over", addr) in events, kinds
    assert len(q) + len(t) >= 5_000
    seqs = np.sort(np.concatenate([q["sequence"], t["sequence"]]))
    assert seqs[0] == 1 and (np.diff(seqs) == 1).all()


def test_resumes_after_the_server_goes_away(server):
    """The server stops mid-feed: the subscriber reports it and retries with backoff."""
    proc, addr = server
    sub = tickwire.Subscriber(addr, from_seq=1, max_retries=2)
    try:
        collect(sub, 1_000)
        proc.terminate()
        proc.wait(timeout=10)
        events = []
        with pytest.raises(tickwire.GaveUpError, match=r"gave up after \d+ attempts; last: connect failed"):
            end = time.monotonic() + 20
            while time.monotonic() < end:
                b = sub.next_batch(timeout=0.5)
                if b is not None:
                    events.extend(b.events)
        kinds = [e[0] for e in events]
        assert "end_of_session" in kinds or "lost" in kinds, kinds
        assert "retrying" in kinds, kinds
        assert sub.stopped
        assert sub.next_batch(timeout=0.1) is None
    finally:
        sub.close()


def test_gives_up_with_the_rust_message():
    sub = tickwire.Subscriber(dead_address(), max_retries=0)
    with pytest.raises(tickwire.GaveUpError, match=r"127\.0\.0\.1:\d+: gave up after \d+ attempts; last: connect failed: connection refused"):
        for _ in range(100):
            sub.next_batch(timeout=0.2)
    assert issubclass(tickwire.GaveUpError, tickwire.TickwireError)


def test_waiting_releases_the_gil():
    # Unlimited retries against nothing: next_batch waits in Rust for 1 s.
    sub = tickwire.Subscriber(dead_address())
    count = 0
    stop = threading.Event()

    def spin():
        nonlocal count
        while not stop.is_set():
            count += 1

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            sub.next_batch(timeout=0.2)
    finally:
        stop.set()
        thread.join(timeout=5)
        sub.close()
    # A thread starved by a held GIL would count a handful per switch interval.
    assert count > 100_000, count


def test_bad_arguments():
    with pytest.raises(ValueError, match="invalid address"):
        tickwire.Subscriber("not an address")
    with pytest.raises(ValueError, match="at least one server"):
        tickwire.Subscriber([])
    with pytest.raises(ValueError, match="heartbeat_interval"):
        tickwire.Subscriber("127.0.0.1:1", heartbeat_interval=0)


def test_reads_a_tickwire_record_file(server, tmp_path):
    from conftest import dump, run

    _, addr = server
    path = tmp_path / "rec.twr"
    run("-q", "record", "--connect", addr, "--from", "1", "--count", "5000", "-o", str(path))
    lines = dump(path)
    rec = tickwire.read(path)
    assert len(rec.quotes) + len(rec.trades) == 5000 and not rec.damaged
    assert len(rec.sessions) == 1 and rec.sessions[0][1] == 1
    assert rec.stats["login_accepted"] == 1
    la = [l for l in lines if l["type"] == "login_accepted"]
    assert rec.sessions == [(la[0]["session_id"], la[0]["sequence"])]
    for kind, table, fields in (
        ("quote", rec.quotes, ["sequence", "instrument_id", "bid_price", "ask_price", "bid_size", "ask_size"]),
        ("trade", rec.trades, ["sequence", "instrument_id", "price", "size", "side", "flags"]),
    ):
        rows = [l for l in lines if l["type"] == kind]
        for f in fields:
            assert table[f].tolist() == [r[f] for r in rows], f
        assert table["timestamp"].view("int64").tolist() == [r["timestamp"] for r in rows]


def test_reconnects_with_backoff_to_a_restarted_server():
    """The server restarts on the same port: the subscriber reconnects by itself and
    reports the new session; the frames before and after are each in order."""
    first = subprocess.Popen(
        [tickwire_bin(), "-q", "serve", "--listen", "127.0.0.1:0", "--rate", "20000", "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    second = None
    try:
        addr = first.stdout.readline().decode().split()[1]
        sub = tickwire.Subscriber(addr, from_seq=1)
        try:
            q, t, gaps, events = collect(sub, 2_000)
            before = np.sort(np.concatenate([q["sequence"], t["sequence"]]))
            assert before[0] == 1 and (np.diff(before) == 1).all()
            first.terminate()  # EndOfSession, then the port is free
            first.wait(timeout=10)
            restart = np.datetime64(time.time_ns(), "ns")
            second = subprocess.Popen(
                [tickwire_bin(), "-q", "serve", "--listen", addr, "--rate", "20000", "--duration", "60",
                 "--seed", "2"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
            assert second.stdout.readline().decode().startswith("listening ")
            q, t, gaps, events = collect(sub, 2_000)
            kinds = [e[0] for e in events]
            assert "end_of_session" in kinds or "lost" in kinds, kinds
            logins = [e for e in events if e[0] == "logged_in"]
            assert logins, kinds
            sessions = {e[1] for e in logins}
            assert len(q) + len(t) >= 2_000
            seqs = np.concatenate([q["sequence"], t["sequence"]])
            stamps = np.concatenate([q["timestamp"], t["timestamp"]])
            # What the first server sent before it stopped, then the new session from 1.
            old, new = np.sort(seqs[stamps < restart]), np.sort(seqs[stamps >= restart])
            if len(old):
                assert old[0] == before[-1] + 1 and (np.diff(old) == 1).all()
            assert len(new) > 1_000 and new[0] == 1 and (np.diff(new) == 1).all()
            assert "new_session" in kinds and len(sessions) == 1, kinds
        finally:
            sub.close()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


TLS_DIR = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data" / "tls"


def test_a_key_inside_tls_and_a_refused_key(tmp_path):
    """Protocol sections 11 and 12: a key made by keygen, a server that requires it, inside TLS."""
    key = tmp_path / "py.key"
    line = run("keygen", "--key-id", "py-desk", "--secret-file", str(key)).stdout.decode()
    creds = tmp_path / "credentials"
    creds.write_text(line)
    creds.chmod(0o600)
    proc = subprocess.Popen(
        [tickwire_bin(), "-q", "serve", "--listen", "127.0.0.1:0", "--rate", "20000", "--duration", "60",
         "--auth", str(creds), "--tls-cert", str(TLS_DIR / "server.pem"), "--tls-key", str(TLS_DIR / "server.key")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        addr = proc.stdout.readline().decode().split()[1]
        tls = dict(tls=True, ca=str(TLS_DIR / "ca.pem"), server_name="localhost")
        with tickwire.Subscriber(addr, from_seq=1, key_id="py-desk", secret_file=str(key), **tls) as sub:
            q, t, gaps, events = collect(sub, 2_000)
        seqs = np.sort(np.concatenate([q["sequence"], t["sequence"]]))
        assert len(seqs) >= 2_000 and seqs[0] == 1 and (np.diff(seqs) == 1).all()
        # A key the server does not know: refused, not retried.
        other = tmp_path / "other.key"
        run("keygen", "--key-id", "nobody", "--secret-file", str(other))
        sub = tickwire.Subscriber(addr, from_seq=1, key_id="nobody", secret_file=str(other), **tls)
        with pytest.raises(tickwire.GaveUpError, match="not_authorized|not authorized"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                sub.next_batch(timeout=0.5)
        sub.close()
        with pytest.raises(ValueError, match="secret_file needs key_id"):
            tickwire.Subscriber(addr, secret_file=str(key))
        key.chmod(0o644)
        with pytest.raises(ValueError, match="chmod 600"):
            tickwire.Subscriber(addr, key_id="py-desk", secret_file=str(key), **tls)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
