#!/usr/bin/env bash
# The one command that passes every test, on a fresh machine: provisions what the tests
# need (scripts/setup.sh), then runs formatting, lints, all tests with line coverage,
# the browser tests, and the TypeScript client's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy (every member of the workspace)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> crate and module dependencies run one way (no cycles)"
python3 scripts/module_deps.py --check
# In parallel (the harness's default, one test per core): no test may depend on having
# the machine to itself. The suite is checked five times in a row beside two
# CPU-burning processes (BENCHMARKS.md, "Tests under load").
echo "==> tests with line coverage over the workspace's members (fails under 85%), slow #[ignore]d ones included"
# Without backtraces: a failing test's message then ends its output, where CI's summary
# shows it.
RUST_BACKTRACE=0 cargo llvm-cov --workspace --locked --fail-under-lines 85 --summary-only -- --include-ignored
echo "==> browser tests (headless chromium against a real hub)"
cargo build --locked
(cd tests/browser && npm test)
echo "==> TypeScript client (typecheck, size budget, embedded build freshness, tests against the hub)"
(cd clients/js && npm test)
echo "==> Python SDK (clients/python: ruff, mypy --strict, pytest against a real hub, Redis and Celery workers, on Python 3.10-3.13; the sdist on all but the main one)"
bash scripts/test_python.sh
