#!/usr/bin/env bash
# The Python package's tests, in three steps that each say what they do:
#  1. `cargo build --all-features --bin tickwire`: the tests run the
#     `tickwire` binary (after `cargo test --all-features` it is up to date
#     and this takes a second);
#  2. a virtual environment (target/python-venv, made once) with pytest,
#     numpy, pandas and pyarrow from PyPI;
#  3. `pip install ./python`: maturin compiles the extension, which builds
#     this crate again in release mode (in target/python-build, kept between
#     runs, so only the first run takes the full build of about a minute),
#     with cargo's progress shown;
# then pytest. Usage: python/run-tests.sh [pytest arguments]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="${TICKWIRE_VENV:-$root/target/python-venv}"
python="${PYTHON:-python3}"

step() { printf '==> %s (%s)\n' "$*" "$(date +%T)"; }

step "building the tickwire binary the tests run"
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

if [ ! -x "$venv/bin/python" ]; then
  step "making the virtual environment $venv"
  make_venv
fi
step "installing pytest, numpy, pandas, pyarrow (PyPI; nothing to do when present)"
"$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar on --upgrade pip
"$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar on pytest numpy pandas pyarrow |
  { grep -v '^Requirement already satisfied' || true; }
step "building and installing the package (pip install ./python: maturin compiles the crate in release mode)"
# -v shows cargo's lines as they come (maturin's output is hidden without it);
# the build's target directory outlives pip's temporary build directory.
export CARGO_TARGET_DIR="$target/python-build"
# (pipefail: pip's status is the pipeline's.)
"$venv/bin/python" -m pip install --disable-pip-version-check --force-reinstall --no-deps -v "$here" 2>&1 |
  { grep -E --line-buffered '^ *(Compiling|Finished|Building|Built wheel|Successfully)|[Ee]rror' || true; }
step "running pytest"
# From the tests' directory, so that `import tickwire` is the installed
# package, not the source directory.
cd "$here/tests"
"$venv/bin/python" -m pytest -p no:cacheprovider -q "$@"
