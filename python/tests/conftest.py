"""Shared helpers: the `tickwire` binary (built by run-tests.sh), `dump`'s JSON lines."""

import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tickwire_bin() -> str:
    """The CLI: $TICKWIRE_BIN, else the repository's debug or release build, else PATH."""
    env = os.environ.get("TICKWIRE_BIN")
    if env:
        return env
    for profile in ("debug", "release"):
        candidate = ROOT / "target" / profile / "tickwire"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("tickwire")
    if found is None:
        pytest.fail("no tickwire binary: run python/run-tests.sh or set TICKWIRE_BIN")
    return found


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([tickwire_bin(), *args], check=True, capture_output=True, timeout=120, **kw)


def dump(path) -> list:
    """Every line `tickwire dump` prints, parsed."""
    out = run("dump", str(path)).stdout.decode()
    return [json.loads(line) for line in out.splitlines() if line]


def gen(path, count: int, seed: int = 1, corrupt: float = 0.0) -> pathlib.Path:
    run("gen", "--count", str(count), "--seed", str(seed), "--corrupt", str(corrupt), "-o", str(path))
    return pathlib.Path(path)


@pytest.fixture
def tw():
    return tickwire_bin()
