#!/usr/bin/env bash
# The soak of issue #23 ("no memory leak over long runs"): one release hub in Redis
# mode under steady, moderate load (events through the publish path, watchers that
# resume, clients joining and leaving over WebSocket and SSE, a reconnect storm and a
# Redis restart every 10 minutes, half a period apart), its RSS, descriptors, threads
# and Redis used_memory sampled every 10 s into a CSV, then plotted and judged against
# the flatness bound by scripts/soak_plot.py. Loopback only; the tool starts its own
# redis-server on a free port.
#
#   bash scripts/soak.sh                  # one hour (BENCHMARKS.md's figures)
#   SMOKE=1 bash scripts/soak.sh          # 2 minutes, restarts and storms every 40 s: checks the
#                                         # tooling (too short for the verdict: histories are not
#                                         # at their cap yet)
#   DURATION=1800 OUT=/tmp/soak bash scripts/soak.sh
#
# The plot needs matplotlib: PYTHON names an interpreter that has it (e.g. a venv
# outside the repository: python3 -m venv /tmp/soak-venv && /tmp/soak-venv/bin/pip
# install matplotlib); without it the CSV and the verdict are still written.
set -euo pipefail
# The load tool is one client creating every project: no per-client project quota (the
# environment, which a hub that predates the quota ignores).
export HUB_MAX_PROJECTS_PER_CLIENT=0 HUB_NEW_PROJECTS_PER_MINUTE=0
cd "$(dirname "$0")/.."
OUT=${OUT:-docs/soak}
PYTHON=${PYTHON:-python3}
BUILD=${BUILD:-release}
if [ -n "${SMOKE:-}" ]; then
  DURATION=${DURATION:-120}; EVERY=${EVERY:-40}; WARMUP=${WARMUP:-40}
else
  DURATION=${DURATION:-3600}; EVERY=${EVERY:-600}; WARMUP=${WARMUP:-600}
fi
if [ "$BUILD" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
mkdir -p "$OUT"
# The hub's log stays out of the repository (it names every restart's errors).
HUB_LOG=${HUB_LOG:-$(mktemp)}
# Moderate on purpose: the machine has 2 cores shared with other work. 50 events/s over
# 20 projects (2.5/s each: a project's history reaches its 1,000-entry cap after
# ~7 minutes, inside the warm-up), 400 watchers (1,000 deliveries/s), 8 churners.
"target/$BUILD/progress-hub-bench" soak \
  --duration "$DURATION" --sample 10 \
  --redis-restart-every "$EVERY" --storm-every "$EVERY" \
  --projects 20 --rate 50 --watchers 400 --churners 8 \
  --csv "$OUT/soak.csv" --hub-log "$HUB_LOG" | tee "$OUT/soak.txt"
echo "hub log ($HUB_LOG): $(grep -c -E 'WARN|ERROR' "$HUB_LOG" || true) WARN/ERROR lines" | tee -a "$OUT/soak.txt"
"$PYTHON" scripts/soak_plot.py "$OUT/soak.csv" --warmup "$WARMUP" --png "$OUT/soak.png" | tee -a "$OUT/soak.txt"
