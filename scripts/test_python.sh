#!/usr/bin/env bash
# The Python SDK's checks (scripts/test.sh runs them; scripts/setup.sh makes the venvs):
# ruff, mypy --strict and the whole pytest suite (a real hub, Redis and Celery workers)
# on the main venv's Python with the package installed editable, then the whole suite
# again on every other Python from 3.10 to 3.13 with the package installed from its
# sdist, as pip installs it for a user (so the sdist is built, installed and tested).
set -euo pipefail
cd "$(dirname "$0")/../clients/python"
export HUB_BIN="${HUB_BIN:-$PWD/../../target/debug/progress-hub}"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict
main=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
echo "==> Python $main (editable install): pytest"
.venv/bin/pytest -q

sdist_dir=$(mktemp -d)
trap 'rm -rf "$sdist_dir"' EXIT
.venv/bin/python -m hatchling build -t sdist -d "$sdist_dir" >/dev/null
sdist=$(ls "$sdist_dir"/progress_hub-*.tar.gz)
for venv in .venv-3.*; do
  [ -x "$venv/bin/python" ] || continue
  minor=${venv#.venv-}
  echo "==> Python $minor (installed from the sdist): pytest"
  # --no-deps: the venv holds the pinned dependencies; --no-build-isolation: and hatchling.
  "$venv/bin/python" -m pip install --quiet --no-deps --force-reinstall --no-build-isolation \
    "$sdist"
  "$venv/bin/python" -c "import progress_hub, sys; assert '/site-packages/' in progress_hub.__file__, progress_hub.__file__"
  "$venv/bin/pytest" -q -p no:cacheprovider
done
