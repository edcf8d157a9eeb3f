#!/usr/bin/env bash
# The Python SDK's checks (scripts/test.sh runs them; scripts/setup.sh makes the venvs):
# ruff, mypy --strict and the whole pytest suite (a real hub, Redis and Celery workers)
# on the main venv's Python with the package installed editable, then the whole suite
# again on every other Python from 3.10 to 3.13 with the package installed from its
# sdist, as pip installs it for a user (so the sdist is built, installed and tested).
# Every Python from 3.10 to 3.13 must be there: a missing venv or version fails the run
# (it does not skip), naming what to run.
set -euo pipefail
cd "$(dirname "$0")/../clients/python"
export HUB_BIN="${HUB_BIN:-$PWD/../../target/debug/progress-hub}"
MINORS="3.10 3.11 3.12 3.13"

fail() { echo "test_python.sh: $*" >&2; exit 1; }
[ -x .venv/bin/python ] || fail "no clients/python/.venv: run scripts/setup.sh"
main=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case " $MINORS " in *" $main "*) ;; *) fail "clients/python/.venv is Python $main, not one of $MINORS";; esac
others=()
for minor in $MINORS; do
  [ "$minor" = "$main" ] && continue
  venv=".venv-$minor"
  [ -x "$venv/bin/python" ] || fail "no Python $minor venv (clients/python/$venv): run scripts/setup.sh"
  found=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$found" = "$minor" ] || fail "clients/python/$venv is Python $found, not $minor"
  "$venv/bin/python" -m pytest --version >/dev/null 2>&1 \
    || fail "clients/python/$venv has no pytest: run scripts/setup.sh"
  others+=("$venv")
done

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict
echo "==> Python $main (editable install): pytest"
.venv/bin/pytest -q

sdist_dir=$(mktemp -d)
trap 'rm -rf "$sdist_dir"' EXIT
.venv/bin/python -m hatchling build -t sdist -d "$sdist_dir" >/dev/null
sdist=$(ls "$sdist_dir"/progress_hub-*.tar.gz)
for venv in "${others[@]}"; do
  minor=${venv#.venv-}
  echo "==> Python $minor (installed from the sdist): pytest"
  # --no-deps: the venv holds the pinned dependencies; --no-build-isolation: and hatchling.
  "$venv/bin/python" -m pip install --quiet --no-deps --force-reinstall --no-build-isolation \
    "$sdist"
  "$venv/bin/python" -c "import progress_hub, sys; assert '/site-packages/' in progress_hub.__file__, progress_hub.__file__"
  # The Celery canvas matrix (tests/test_canvas.py) runs whole on the main venv only;
  # here its one shape that covers them all (a chord in a chain).
  "$venv/bin/pytest" -q -p no:cacheprovider -m "not canvas_matrix"
done
