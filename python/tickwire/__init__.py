"""Read tickwire recordings into numpy structured arrays; subscribe to a live feed.

The frames are decoded and checked (CRC-32C, sequence tracking) by the Rust
crate; their fields are packed in Rust into one buffer per message type which
numpy views with :data:`QUOTE_DTYPE` / :data:`TRADE_DTYPE`: no Python object
is made per frame.

>>> import tickwire
>>> rec = tickwire.read("feed.twr")                          # doctest: +SKIP
>>> rec.quotes["bid_price"][:3]                              # doctest: +SKIP
array([1234500, 1234400, 1234600], dtype=int32)
>>> rec.gaps, rec.stats["discarded_bytes"]                   # doctest: +SKIP
([], 0)

Prices are the wire's integers: fixed point with 4 implied decimals
(:data:`PRICE_SCALE`), so ``1234500`` means ``123.4500``. Use
:func:`price_to_float` for float arrays, :func:`price_to_decimal` for exact
:class:`decimal.Decimal` values, or ``to_pandas(prices=...)``.

Timestamps are UTC. A numpy ``datetime64[ns]`` column cannot carry a time
zone, so ``pd.DataFrame(rec.quotes)`` has naive timestamps (UTC wall time);
:meth:`Recording.to_pandas` gives ``datetime64[ns, UTC]`` by default and the
same naive columns with ``tz=None``: see :meth:`~Recording.to_pandas`.

A trade's ``side`` is 0, 1 or 2: :class:`Side` names them (``Side.BUY ==
1``), and ``to_pandas(sides="name")`` gives a categorical column of
``"unknown"``, ``"buy"``, ``"sell"``.

Damage is never silent: a recording with discarded bytes, gaps or duplicate
frames has them in :attr:`Recording.stats`, :attr:`Recording.gaps` and
:attr:`Recording.discards`, and :func:`read` warns with :class:`DamageWarning`
(or raises :class:`DamageError` with ``on_damage="raise"``).
"""

from __future__ import annotations

import decimal
import enum
import os
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _tickwire
from ._tickwire import GaveUpError, TickwireError

__all__ = [
    "QUOTE_DTYPE",
    "TRADE_DTYPE",
    "GAP_DTYPE",
    "PRICE_SCALE",
    "Side",
    "Recording",
    "Chunk",
    "Batch",
    "Subscriber",
    "read",
    "read_chunks",
    "price_to_float",
    "price_to_decimal",
    "TickwireError",
    "GaveUpError",
    "DamageError",
    "DamageWarning",
]

__version__ = "0.1.0"

#: Prices are fixed point with 4 implied decimals: ``price / PRICE_SCALE``.
PRICE_SCALE = 10_000

#: One quote per row. Field names are the protocol's (PROTOCOL.md section 2);
#: ``timestamp`` is the frame's nanoseconds since the Unix epoch (UTC) as
#: ``datetime64[ns]``. 40 bytes, naturally aligned (the last 4 are padding).
QUOTE_DTYPE = np.dtype(
    {
        "names": ["sequence", "timestamp", "instrument_id", "bid_price", "ask_price", "bid_size", "ask_size"],
        "formats": ["=u8", "=M8[ns]", "=u4", "=i4", "=i4", "=u4", "=u4"],
        "offsets": [0, 8, 16, 20, 24, 28, 32],
        "itemsize": 40,
    }
)

#: One trade per row (``side``: a :class:`Side` value, 0 unknown, 1 buy,
#: 2 sell; ``flags`` as sent).
#: 32 bytes, naturally aligned (the last 2 are padding).
TRADE_DTYPE = np.dtype(
    {
        "names": ["sequence", "timestamp", "instrument_id", "price", "size", "side", "flags"],
        "formats": ["=u8", "=M8[ns]", "=u4", "=i4", "=u4", "u1", "u1"],
        "offsets": [0, 8, 16, 20, 24, 28, 29],
        "itemsize": 32,
    }
)

class Side(enum.IntEnum):
    """A trade's aggressor side, as the wire's ``side`` byte (PROTOCOL.md
    section 2). An :class:`enum.IntEnum`: it compares equal to the integers
    of the ``side`` column.

    >>> Side.BUY == 1, Side(2).name
    (True, 'SELL')
    >>> trades = np.zeros(3, dtype=TRADE_DTYPE)
    >>> trades["side"] = [1, 2, 1]
    >>> int((trades["side"] == Side.BUY).sum())
    2
    """

    UNKNOWN = 0
    BUY = 1
    SELL = 2


#: ``to_pandas(sides="name")``'s categories, by wire value.
_SIDE_NAMES = [side.name.lower() for side in Side]

#: A gap: the first and last missing data sequence (inclusive).
GAP_DTYPE = np.dtype([("first", "=u8"), ("last", "=u8")])

assert QUOTE_DTYPE.itemsize == _tickwire.QUOTE_SIZE
assert TRADE_DTYPE.itemsize == _tickwire.TRADE_SIZE

#: Price columns of each table.
_PRICE_FIELDS = {"quotes": ("bid_price", "ask_price"), "trades": ("price",)}


class DamageWarning(UserWarning):
    """A recording had discarded bytes, gaps or duplicate frames."""


class DamageError(TickwireError):
    """Raised by ``read(..., on_damage="raise")`` for a damaged recording."""


def price_to_float(prices: np.ndarray) -> np.ndarray:
    """Wire prices (int32, 4 implied decimals) as float64: ``prices / 10_000``.

    Floats cannot hold every decimal exactly; use :func:`price_to_decimal`
    where that matters.

    >>> price_to_float(np.array([1234500, -5], dtype=np.int32))
    array([ 1.2345e+02, -5.0000e-04])
    """
    return np.asarray(prices, dtype=np.float64) / PRICE_SCALE


def price_to_decimal(prices: Union[int, np.ndarray, Sequence[int]]) -> Any:
    """Wire prices as exact :class:`decimal.Decimal` values with 4 decimals.

    An int gives one Decimal, an array or sequence a numpy object array.

    >>> price_to_decimal(1234500)
    Decimal('123.4500')
    >>> price_to_decimal(np.array([-1, 0], dtype=np.int32))
    array([Decimal('-0.0001'), Decimal('0.0000')], dtype=object)
    """
    if isinstance(prices, (int, np.integer)):
        return decimal.Decimal(int(prices)).scaleb(-4)
    flat = np.asarray(prices)
    out = np.empty(flat.shape, dtype=object)
    for i, p in enumerate(flat.flat):
        out.flat[i] = decimal.Decimal(int(p)).scaleb(-4)
    return out


def _records(raw: Dict[str, Any], name: str, dtype: np.dtype) -> np.ndarray:
    # A zero-copy view of the bytes Rust filled: the part of numpy's buffer
    # that was used, then (rarely: a file that grew while read, a chunk, a
    # batch) the records collected in a Rust vector, which numpy owns.
    used = raw[f"{name}_used"]
    spill = raw[f"{name}_spill"]
    if len(spill) == 0:
        return raw[name][:used].view(dtype)
    if used == 0:
        return spill.view(dtype)
    return np.concatenate([raw[name][:used], spill]).view(dtype)


def _gaps(pairs: List[Tuple[int, int]]) -> np.ndarray:
    return np.array(pairs, dtype=GAP_DTYPE) if pairs else np.empty(0, dtype=GAP_DTYPE)


def _frame(table: np.ndarray, name: str, prices: str, tz: Optional[str], sides: str) -> Any:
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("to_pandas() needs pandas: pip install pandas") from e
    columns = {}
    for field in table.dtype.names:
        column = table[field]
        if field == "timestamp":
            if tz is not None:
                column = pd.DatetimeIndex(column).tz_localize("UTC")
                if tz != "UTC":
                    column = column.tz_convert(tz)
        elif field == "side":
            if sides == "name":
                # A value the protocol does not define is a missing category.
                column = pd.Categorical.from_codes(
                    np.where(column <= Side.SELL, column, -1).astype(np.int8), categories=_SIDE_NAMES
                )
            elif sides != "int":
                raise ValueError(f"sides must be 'int' or 'name', not {sides!r}")
        elif field in _PRICE_FIELDS[name]:
            if prices == "float":
                column = price_to_float(column)
            elif prices == "decimal":
                column = price_to_decimal(column)
            elif prices != "int":
                raise ValueError(f"prices must be 'int', 'float' or 'decimal', not {prices!r}")
        columns[field] = column
    return pd.DataFrame(columns)


class _Tables:
    """What recordings, chunks and batches share: quotes, trades and damage."""

    quotes: np.ndarray
    trades: np.ndarray
    gaps: np.ndarray
    discards: List[Tuple[int, str]]
    sessions: List[Tuple[int, int]]
    duplicates: int

    def _load(self, raw: Dict[str, Any]) -> None:
        self.quotes = _records(raw, "quotes", QUOTE_DTYPE)
        self.trades = _records(raw, "trades", TRADE_DTYPE)
        self.gaps = _gaps(raw["gaps"])
        self.discards = raw["discards"]
        self.sessions = raw["sessions"]
        self.duplicates = raw["duplicates"]

    @property
    def discarded_bytes(self) -> int:
        """Bytes discarded (damage) in this part of the stream."""
        return sum(n for n, _ in self.discards)

    @property
    def missing(self) -> int:
        """Data sequences reported missing by the gaps of this part."""
        return int((self.gaps["last"] - self.gaps["first"] + 1).sum()) if len(self.gaps) else 0

    @property
    def damaged(self) -> bool:
        """True if bytes were discarded, sequences are missing or frames repeated."""
        return bool(self.discards) or len(self.gaps) > 0 or self.duplicates > 0

    def to_pandas(self, prices: str = "int", tz: Optional[str] = "UTC", sides: str = "int") -> Dict[str, Any]:
        """``{"quotes": DataFrame, "trades": DataFrame}`` (needs pandas).

        ``prices``: ``"int"`` (the wire's integers, default), ``"float"``
        (divided by 10,000) or ``"decimal"`` (exact :class:`decimal.Decimal`
        objects, slow).

        ``tz``: timestamps become ``datetime64[ns, UTC]`` by default (the
        wire's time is UTC), converted to another zone if named
        (``tz="America/New_York"``); ``tz=None`` keeps numpy's naive UTC
        wall time, exactly what ``pd.DataFrame(rec.quotes)`` gives, so the
        two can be compared or joined. (pandas refuses to compare naive and
        aware timestamps: pick one form for a whole program.)

        ``sides``: the trades' ``side`` as the wire's integers (``"int"``,
        default; see :class:`Side`) or a categorical of ``"unknown"``,
        ``"buy"``, ``"sell"`` (``"name"``).
        """
        return {
            "quotes": _frame(self.quotes, "quotes", prices, tz, sides),
            "trades": _frame(self.trades, "trades", prices, tz, sides),
        }


class Recording(_Tables):
    """A whole recording, read by :func:`read`.

    Attributes:
        quotes: numpy array of :data:`QUOTE_DTYPE`, in stream order.
        trades: numpy array of :data:`TRADE_DTYPE`, in stream order.
        gaps: numpy array of :data:`GAP_DTYPE`: every range of data sequences
            missing from the recording (first, last, inclusive).
        discards: ``[(bytes, reason)]``: every run of discarded bytes, with
            the reason its first candidate frame failed (``bad_checksum``,
            ``truncated``, ``no_sync``, ...).
        sessions: ``[(session_id, first_sequence)]``: each session started by
            a LoginAccepted frame (``tickwire record`` writes one per session).
        duplicates: data frames already passed (repeated or late), not in the
            arrays.
        stats: counters of the whole file: ``frames``, ``quotes``, ``trades``,
            ``heartbeats``, ``logins``, ``login_accepted``, ``end_of_session``,
            ``packets``, ``retransmits``, ``auths``, ``rejected``, ``frame_bytes``,
            ``discarded_bytes``,
            ``discard_runs``, ``gaps``, ``missing``, ``duplicates``, ``sessions``.
    """

    stats: Dict[str, int]

    def __init__(self, raw: Dict[str, Any], path: str) -> None:
        self._load(raw)
        self.stats = raw["stats"]
        self.path = path

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<tickwire.Recording {self.path!r}: {len(self.quotes)} quotes, {len(self.trades)} trades, "
            f"{s['frames']} frames; {s['discarded_bytes']} bytes discarded in {s['discard_runs']} runs, "
            f"{s['gaps']} gaps ({s['missing']} missing), {s['duplicates']} duplicates>"
        )

    def damage_summary(self) -> str:
        """One line: what was discarded, missing or repeated."""
        s = self.stats
        return (
            f"{self.path}: {s['discarded_bytes']} bytes discarded in {s['discard_runs']} runs, "
            f"{s['gaps']} gaps ({s['missing']} sequences missing), {s['duplicates']} duplicate frames"
        )


def _on_damage(rec: Union["Recording", "Chunk"], on_damage: str, summary: str) -> None:
    if not rec.damaged or on_damage == "ignore":
        return
    if on_damage == "raise":
        raise DamageError(summary)
    warnings.warn(summary, DamageWarning, stacklevel=3)


def _check_on_damage(on_damage: str) -> None:
    if on_damage not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_damage must be 'warn', 'raise' or 'ignore', not {on_damage!r}")


def read(path: Union[str, "os.PathLike[str]"], on_damage: str = "warn") -> Recording:
    """Reads a whole recording (a ``tickwire record`` or ``tickwire gen`` file,
    or a journal directory: its sessions in order, as ``tickwire dump`` reads it).

    Every frame is checked (CRC-32C, sequence tracking, resynchronization
    after damage, exactly as ``tickwire dump`` does); the GIL is released
    while the file is read.

    Args:
        path: the recording, a journal segment (``.twr``) or a journal directory.
        on_damage: what to do when bytes were discarded, sequences are
            missing or frames repeated: ``"warn"`` (default, a
            :class:`DamageWarning`), ``"raise"`` (:class:`DamageError`) or
            ``"ignore"``; the counts and lists are on the recording either way.

    Raises:
        OSError: the file cannot be opened or read (the message names it).
    """
    _check_on_damage(on_damage)
    p = _fspath(path)
    rec = Recording(_tickwire.read_raw(p), p)
    _on_damage(rec, on_damage, rec.damage_summary())
    return rec


class Chunk(_Tables):
    """Up to N data frames of a recording (see :func:`read_chunks`).

    Same attributes as :class:`Recording`, for the part of the stream this
    chunk covers: ``gaps``, ``discards``, ``sessions``, ``duplicates`` and
    ``stats`` (the same counters as :attr:`Recording.stats`; summed over the
    chunks they are the whole file's).
    """

    stats: Dict[str, int]

    def __init__(self, raw: Dict[str, Any]) -> None:
        self._load(raw)
        self.stats = raw["stats"]

    def __len__(self) -> int:
        return len(self.quotes) + len(self.trades)


def read_chunks(
    path: Union[str, "os.PathLike[str]"], frames: int = 1_000_000, on_damage: str = "warn"
) -> Iterator[Chunk]:
    """Iterates over a recording (or a journal directory) in chunks of ``frames`` data frames.

    Each :class:`Chunk` holds at most ``frames`` quotes and trades together
    (every chunk but the last exactly ``frames``), with the same columns as
    :func:`read`, so recordings bigger than memory can be processed in
    constant memory. Concatenating the chunks' arrays gives what
    :func:`read` gives. Damage is reported per chunk as with :func:`read`.
    """
    _check_on_damage(on_damage)
    if frames < 1:
        raise ValueError("frames must be at least 1")
    p = _fspath(path)
    reader = _tickwire.ChunkReader(p, frames)
    while True:
        raw = reader.next_chunk()
        if raw is None:
            return
        chunk = Chunk(raw)
        _on_damage(
            chunk,
            on_damage,
            f"{p}: chunk with {chunk.discarded_bytes} bytes discarded in {len(chunk.discards)} runs, "
            f"{len(chunk.gaps)} gaps ({chunk.missing} sequences missing), {chunk.duplicates} duplicate frames",
        )
        yield chunk


class Batch(_Tables):
    """Frames and events a :class:`Subscriber` received since the last batch.

    Attributes:
        quotes, trades: numpy arrays as in :class:`Recording`.
        gaps: sequences the server could not replay (:data:`GAP_DTYPE`).
        discards, duplicates, sessions: as in :class:`Recording`.
        events: the client's events in order, as tuples:
            ``("state", from, to)``, ``("logged_in", session_id, sequence)``,
            ``("new_session", session_id, sequence)``,
            ``("end_of_session", next_sequence)``, ``("lost", reason)``,
            ``("retrying", attempt, delay_seconds)``, ``("gave_up", message)``,
            ``("fail_over", server)``.
    """

    events: List[Tuple[Any, ...]]

    def __init__(self, raw: Dict[str, Any]) -> None:
        self._load(raw)
        self.events = raw["events"]

    def __len__(self) -> int:
        return len(self.quotes) + len(self.trades)


class Subscriber:
    """A live feed from a tickwire server, as batches of frames.

    Built on the reference client (``tickwire::net::Client``): it logs in
    from ``from_seq`` (0: live only; n: replay from n, then live),
    reconnects with exponential backoff (100 ms doubling to 30 s, with
    jitter) and logs in again with the next sequence it needs, so that
    within the server's retention nothing is lost or repeated; what the
    server no longer has arrives as gaps. Waiting happens in Rust with the
    GIL released (other Python threads run); Ctrl-C interrupts it.

    ``servers`` is one ``"host:port"`` or a list of them (the origin and
    relays of one session) for fail-over, by the Rust client's own rules:
    when a connection ends, the next server of the list is tried at once,
    logging in with the next sequence needed (what a server that is behind
    sends again is dropped as duplicates); the backoff delay applies only
    after every server failed in turn (a round), and an accepted login
    resets it. ``max_retries`` counts rounds (3 if not given for a list;
    unlimited for one address); :class:`GaveUpError` is raised when they
    are exhausted.

    >>> with tickwire.Subscriber("127.0.0.1:7878", from_seq=1) as sub:   # doctest: +SKIP
    ...     for batch in sub:
    ...         print(len(batch.quotes), len(batch.trades), batch.gaps)

    Iteration yields :class:`Batch` objects until the subscriber stops
    (closed, or the server ended the session and ``reconnect_after_end``
    was off); :meth:`next_batch` takes a timeout.

    Authenticated logins (protocol section 11): ``key_id`` with the secret
    from ``secret_file`` (64 hex digits, readable by its owner only) or the
    environment variable ``TICKWIRE_SECRET``, never an argument; sent in
    clear only to loopback addresses unless ``allow_plain_auth``. A server
    that refuses the key is not tried again (:class:`GaveUpError` says why
    once every server has refused). TLS (section 12): ``tls=True`` with
    ``ca`` (PEM roots), optionally ``server_name`` and a client certificate
    (``client_cert``, ``client_key``); every server of the list is reached
    inside TLS, never plain.
    """

    def __init__(
        self,
        servers: Union[str, Sequence[str]],
        from_seq: int = 0,
        *,
        max_retries: Optional[int] = None,
        heartbeat_interval: float = 1.0,
        connect_timeout: float = 5.0,
        max_batch: int = 65536,
        key_id: Optional[str] = None,
        secret_file: Optional[str] = None,
        allow_plain_auth: bool = False,
        tls: bool = False,
        ca: Optional[str] = None,
        server_name: Optional[str] = None,
        client_cert: Optional[str] = None,
        client_key: Optional[str] = None,
    ) -> None:
        addresses = [servers] if isinstance(servers, str) else list(servers)
        if len(addresses) > 1 and max_retries is None:
            max_retries = 3
        self._inner = _tickwire.Subscriber(
            addresses,
            from_seq,
            max_retries,
            heartbeat_interval,
            connect_timeout,
            max_batch,
            key_id,
            secret_file,
            allow_plain_auth,
            tls,
            ca,
            server_name,
            client_cert,
            client_key,
        )

    def next_batch(self, timeout: Optional[float] = None) -> Optional[Batch]:
        """The next batch; ``None`` after ``timeout`` seconds without any, or once stopped.

        Raises:
            GaveUpError: retries exhausted (the message is the Rust client's).
        """
        raw = self._inner.next_batch(timeout)
        return None if raw is None else Batch(raw)

    def __iter__(self) -> "Subscriber":
        return self

    def __next__(self) -> Batch:
        while True:
            if self._inner.stopped:
                raise StopIteration
            batch = self.next_batch(None)
            if batch is not None:
                return batch

    def close(self) -> None:
        """Disconnects and stops."""
        self._inner.close()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def stopped(self) -> bool:
        """Whether the subscriber has stopped."""
        return self._inner.stopped

    @property
    def server(self) -> str:
        """The server in use now."""
        return self._inner.server_address

    @property
    def next_sequence(self) -> int:
        """The next data sequence needed (0 before the first login)."""
        return self._inner.next_sequence

    def stats(self) -> Dict[str, int]:
        """Counters over every connection: frames, discards, gaps, connects, reconnects, failovers."""
        return self._inner.stats()


def _fspath(path: Any) -> str:
    p = os.fspath(path)
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    return p

