"""Type stubs of the tickwire package (see the docstrings in __init__.py)."""

import decimal
import enum
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from ._tickwire import GaveUpError as GaveUpError
from ._tickwire import TickwireError as TickwireError

__version__: str
PRICE_SCALE: int
QUOTE_DTYPE: np.dtype[np.void]
TRADE_DTYPE: np.dtype[np.void]
GAP_DTYPE: np.dtype[np.void]

class Side(enum.IntEnum):
    UNKNOWN = 0
    BUY = 1
    SELL = 2

_Path = Union[str, "os.PathLike[str]", bytes]

class DamageWarning(UserWarning): ...
class DamageError(TickwireError): ...

def price_to_float(prices: npt.ArrayLike) -> npt.NDArray[np.float64]: ...
def price_to_decimal(prices: Union[int, np.integer[Any], npt.ArrayLike]) -> Any: ...

class _Tables:
    quotes: npt.NDArray[np.void]
    trades: npt.NDArray[np.void]
    gaps: npt.NDArray[np.void]
    discards: List[Tuple[int, str]]
    sessions: List[Tuple[int, int]]
    duplicates: int
    @property
    def discarded_bytes(self) -> int: ...
    @property
    def missing(self) -> int: ...
    @property
    def damaged(self) -> bool: ...
    def to_pandas(self, prices: str = ..., tz: Optional[str] = ..., sides: str = ...) -> Dict[str, Any]: ...

class Recording(_Tables):
    stats: Dict[str, int]
    path: str
    def damage_summary(self) -> str: ...

class Chunk(_Tables):
    stats: Dict[str, int]
    def __len__(self) -> int: ...

class Batch(_Tables):
    events: List[Tuple[Any, ...]]
    def __len__(self) -> int: ...

def read(path: _Path, on_damage: str = ...) -> Recording: ...
def read_chunks(path: _Path, frames: int = ..., on_damage: str = ...) -> Iterator[Chunk]: ...

class Subscriber:
    def __init__(
        self,
        servers: Union[str, Sequence[str]],
        from_seq: int = ...,
        *,
        max_retries: Optional[int] = ...,
        heartbeat_interval: float = ...,
        connect_timeout: float = ...,
        max_batch: int = ...,
    ) -> None: ...
    def next_batch(self, timeout: Optional[float] = ...) -> Optional[Batch]: ...
    def __iter__(self) -> Subscriber: ...
    def __next__(self) -> Batch: ...
    def close(self) -> None: ...
    def __enter__(self) -> Subscriber: ...
    def __exit__(self, *exc: Any) -> None: ...
    @property
    def stopped(self) -> bool: ...
    @property
    def server(self) -> str: ...
    @property
    def next_sequence(self) -> int: ...
    def stats(self) -> Dict[str, int]: ...
