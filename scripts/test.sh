#!/usr/bin/env bash
# The one command that passes every test, on a fresh machine:
# installs what the tests need (redis-server, redis-py, chromium, playwright-core,
# llvm-tools, cargo-llvm-cov), then runs formatting, lints, all tests and coverage.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! need redis-server; then
  echo "==> installing redis-server"
  as_root apt-get update -qq
  as_root apt-get install -y -qq redis-server
fi
if ! python3 -c 'import redis' >/dev/null 2>&1; then
  echo "==> installing redis-py (for the interop test with the original Python publisher)"
  python3 -m pip install --quiet redis
fi
if ! [ -x /usr/bin/chromium ]; then
  echo "==> installing chromium (for the browser tests)"
  as_root apt-get update -qq
  as_root apt-get install -y -qq chromium
fi
if ! [ -d tests/browser/node_modules/playwright-core ]; then
  echo "==> installing playwright-core (drives Debian's chromium; downloads no browser)"
  (cd tests/browser && npm ci --no-audit --no-fund)
fi
if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
  echo "==> installing llvm-tools-preview"
  rustup component add llvm-tools-preview
fi
if ! need cargo-llvm-cov; then
  echo "==> installing cargo-llvm-cov"
  cargo install cargo-llvm-cov --locked
fi

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "==> tests with line coverage (fails under 85%)"
cargo llvm-cov --locked --fail-under-lines 85 --summary-only
echo "==> browser tests (headless chromium against a real hub)"
cargo build --locked
(cd tests/browser && npm test)
