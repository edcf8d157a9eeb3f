#!/usr/bin/env bash
# Provisioning, for a fresh machine: installs what the tests need when it is missing
# (redis-server, redis-py, chromium, playwright-core, the TypeScript client's npm
# devDependencies, llvm-tools, cargo-llvm-cov, and the Python SDK's venvs in
# clients/python/.venv and clients/python/.venv-3.X, one per other Python 3.10-3.13).
# Idempotent: each step checks first. `scripts/test.sh` calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root apt-get install -y -qq "$@"
}

if ! need redis-server; then
  echo "==> installing redis-server"
  apt_install redis-server
fi
if ! python3 -c 'import redis' >/dev/null 2>&1; then
  echo "==> installing redis-py (for the interop test with the original Python publisher)"
  python3 -m pip install --quiet redis
fi
if ! [ -x /usr/bin/chromium ]; then
  echo "==> installing chromium (for the browser tests)"
  apt_install chromium
fi
if ! [ -d tests/browser/node_modules/playwright-core ]; then
  echo "==> installing playwright-core (drives Debian's chromium; downloads no browser)"
  (cd tests/browser && npm ci --no-audit --no-fund)
fi
if ! [ -d clients/js/node_modules ]; then
  echo "==> installing the TypeScript client's devDependencies (tsc, esbuild, ws, react, playwright-core)"
  (cd clients/js && npm ci --no-audit --no-fund)
fi
if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
  echo "==> installing llvm-tools-preview"
  rustup component add llvm-tools-preview
fi
if ! need cargo-llvm-cov; then
  echo "==> installing cargo-llvm-cov"
  cargo install cargo-llvm-cov --locked
fi
if ! [ -x clients/python/.venv/bin/python ]; then
  echo "==> creating clients/python/.venv (the Python SDK's tools and tests)"
  python3 -m venv clients/python/.venv
fi
# Reinstalls when the pins or the package's metadata changed since the last install.
py_wanted=$(cat clients/python/requirements-dev.txt clients/python/pyproject.toml)
if [ "$py_wanted" != "$(cat clients/python/.venv/.installed 2>/dev/null)" ]; then
  echo "==> installing the Python SDK (editable, with its extras) and its pinned dev tools"
  clients/python/.venv/bin/python -m pip install --quiet --upgrade pip
  clients/python/.venv/bin/python -m pip install --quiet -r clients/python/requirements-dev.txt \
    -e "clients/python[http,celery]"
  printf '%s' "$py_wanted" > clients/python/.venv/.installed
fi
# The SDK claims Python >= 3.10: its tests also run on every other minor version from
# 3.10 to 3.13, each in a venv of its own (clients/python/.venv-3.X) holding the pinned
# test dependencies; scripts/test.sh installs the package's sdist into them.
python_minor() { # the interpreter of Python 3.X: pyenv's newest 3.X.*, else python3.X
  local found
  found=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python"$1" 2>/dev/null | sort -V | tail -1)
  if [ -z "$found" ] && "python$1" -c '' >/dev/null 2>&1; then found=$(command -v "python$1"); fi
  if [ -z "$found" ] && need pyenv; then
    echo "==> installing Python $1 (pyenv)" >&2
    pyenv install --skip-existing "$1" >&2
    found=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python"$1" 2>/dev/null | sort -V | tail -1)
  fi
  [ -n "$found" ] || { echo "setup: no Python $1 (install it, e.g. pyenv install $1)" >&2; return 1; }
  echo "$found"
}
main_minor=$(clients/python/.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
for minor in 3.10 3.11 3.12 3.13; do
  [ "$minor" = "$main_minor" ] && continue
  venv="clients/python/.venv-$minor"
  if ! [ -x "$venv/bin/python" ]; then
    echo "==> creating $venv (the Python SDK's tests on Python $minor)"
    "$(python_minor "$minor")" -m venv "$venv"
  fi
  if [ "$py_wanted" != "$(cat "$venv/.installed" 2>/dev/null)" ]; then
    echo "==> installing the Python SDK's pinned test dependencies for Python $minor"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -r clients/python/requirements-dev.txt
    printf '%s' "$py_wanted" > "$venv/.installed"
  fi
done
