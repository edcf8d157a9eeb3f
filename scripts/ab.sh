#!/usr/bin/env bash
# A/B: the same scenarios against two hub binaries, alternating A, B, A, B in the same
# minutes (absolute figures on this shared machine move 2x between runs; only a
# side-by-side pair is a claim). Fresh redis-server and hub per run.
#
#   bash scripts/ab.sh /tmp/hub-before target/release/progress-hub [ROUNDS]
#   FLOOR=1 bash scripts/ab.sh ...   # also the floor (progress-hub-bench floor) each round, as F
set -euo pipefail
# The load tool is one client creating every project: no per-client project quota (the
# environment, which a hub that predates the quota ignores).
export HUB_MAX_PROJECTS_PER_CLIENT=0 HUB_NEW_PROJECTS_PER_MINUTE=0
ulimit -n "$(ulimit -Hn)"
cd "$(dirname "$0")/.."
A=$1 B=$2 ROUNDS=${3:-2}
BENCH=${BENCH:-target/release/progress-hub-bench}
SCENARIOS=(
  "fanout -c 1000 -r 100 -d 10"
  "churn -k 5000 -q 50"
  "churn -k 5000 -q 50 --project-per-cycle"
)
# Or others: SCENARIOS_LIST='idle -c 5000;churn -k 5000 -q 50' bash scripts/ab.sh ...
# ('... --publish http': through the hub's publish path; the floor publishes plainly.)
if [ -n "${SCENARIOS_LIST:-}" ]; then
  IFS=';' read -r -a SCENARIOS <<< "$SCENARIOS_LIST"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
run_one() {
  local label=$1 hub=$2 args=$3 rport sport
  rport=$(free_port); sport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --maxclients 40000 >/dev/null 2>&1 &
  local rpid=$!; wait_port "$rport"
  if [ "$hub" = floor ]; then
    "$BENCH" floor --listen "127.0.0.1:$sport" --redis-url "redis://127.0.0.1:$rport" >/dev/null 2>&1 &
  else
    "$hub" serve --listen "127.0.0.1:$sport" --redis-url "redis://127.0.0.1:$rport" --no-worker >/dev/null 2>&1 &
  fi
  local spid=$!; wait_port "$sport"
  local extra=()
  [[ $args == churn* ]] || extra=(--redis-url "redis://127.0.0.1:$rport")
  # Through the publish path: the POSTs go to the hub under test (the floor has none).
  if [[ $args == *"--publish http"* ]]; then
    if [ "$hub" = floor ]; then args=${args/--publish http/}; else extra+=(--http-url "http://127.0.0.1:$sport"); fi
  fi
  printf '%s\t%s\t' "$label" "$args"
  timeout 180 "$BENCH" $args --url "ws://127.0.0.1:$sport" --server-pid "$spid" "${extra[@]}" 2>&1 | grep '^RESULT' || echo "(no result)"
  kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true
  kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true
}
for _ in $(seq "$ROUNDS"); do
  for args in "${SCENARIOS[@]}"; do
    run_one A "$A" "$args"
    run_one B "$B" "$args"
    if [ -n "${FLOOR:-}" ]; then run_one F floor "$args"; fi
  done
done
