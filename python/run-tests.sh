#!/usr/bin/env bash
# The Python package's tests: a fresh virtual environment, the package built
# from this directory (pip install ./python: maturin, the Rust crate by
# path), pytest, numpy, pandas and pyarrow from PyPI; the tests run the
# `tickwire` binary (built here with all features, as `cargo test
# --all-features` builds it, so after it nothing is rebuilt).
# Usage: python/run-tests.sh [pytest arguments]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="${TICKWIRE_VENV:-$root/target/python-venv}"
python="${PYTHON:-python3}"

(cd "$root" && cargo build --all-features --bin tickwire)
# Where cargo put it (CARGO_TARGET_DIR, relative to the repository, if set).
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
export TICKWIRE_BIN="$target/debug/tickwire"

make_venv() {
  "$python" -m venv "$venv" 2>/dev/null && return 0
  rm -rf "$venv"
  # Debian and Ubuntu ship venv apart from python3.
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    pyver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    { apt-get install -y -qq "python$pyver-venv" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq "python$pyver-venv" python3-venv >/dev/null; }; } || true
    "$python" -m venv "$venv" && return 0
    rm -rf "$venv"
  fi
  "$python" -m pip install -q --user virtualenv 2>/dev/null ||
    "$python" -m pip install -q --user --break-system-packages virtualenv
  "$python" -m virtualenv -q "$venv"
}

[ -x "$venv/bin/python" ] || make_venv
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "$here" pytest numpy pandas pyarrow
# From the tests' directory, so that `import tickwire` is the installed
# package, not the source directory.
cd "$here/tests"
"$venv/bin/python" -m pytest -p no:cacheprovider -q "$@"
