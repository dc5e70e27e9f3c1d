#!/usr/bin/env bash
# The Python package's tests: a fresh virtual environment, the package built
# from this directory (pip install ./python: maturin, the Rust crate by
# path), pytest, numpy, pandas and pyarrow from PyPI; the tests run the
# `tickwire` binary (a debug build with the parquet feature, built here).
# Usage: python/run-tests.sh [pytest arguments]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="${TICKWIRE_VENV:-$root/target/python-venv}"
python="${PYTHON:-python3}"

(cd "$root" && cargo build --features parquet --bin tickwire)
export TICKWIRE_BIN="$root/target/debug/tickwire"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "$here" pytest numpy pandas pyarrow
# From the tests' directory, so that `import tickwire` is the installed
# package, not the source directory.
cd "$here/tests"
"$venv/bin/python" -m pytest -p no:cacheprovider -q "$@"
