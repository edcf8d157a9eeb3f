#!/usr/bin/env bash
# Provisioning, for a fresh machine: installs what the tests need when it is missing
# (redis-server, redis-py, chromium, playwright-core, the TypeScript client's npm
# devDependencies, llvm-tools, cargo-llvm-cov, and the Python SDK's venv in
# clients/python/.venv).
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
