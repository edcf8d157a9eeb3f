#!/usr/bin/env bash
# Side by side, in the same minutes: every scenario against progress-hub, against the
# floor (`progress-hub-bench floor`: the least relay of the hub's shape, the baseline
# every figure is divided by) and, where it can run it, against the original Python
# design (../shared/reference/fastapi_seed, uvicorn + uvloop, Redis pool cap raised);
# then the reconnect storm (hub only). Writes BENCHMARKS.md. Loopback only; every
# scenario is bounded in time.
#
#   bash scripts/bench.sh                 # needs redis-server, python3 (fastapi, uvicorn[standard], redis)
#   RUNS=3 bash scripts/bench.sh          # three rounds: the report shows each and the median
#   SMALL=1 SIDES="hub floor" BUILD=debug OUT=/tmp/b.md bash scripts/bench.sh
#                                         # a quick small-scale check of the tooling
#
# Each run of a scenario gets a fresh redis-server on a free port and a fresh server
# process; the sides run one after the other for each scenario, so a hub figure and
# the floor figure it is divided by are minutes apart at most. The load tool and the
# server share the 2-core machine: absolute numbers are noisy, the ratios are the claim.
set -euo pipefail
# The load tool is one client creating every project: no per-client project quota (the
# environment, which a hub that predates the quota ignores).
export HUB_MAX_PROJECTS_PER_CLIENT=0 HUB_NEW_PROJECTS_PER_MINUTE=0
# C = 19,000 needs that many descriptors in the tool and in the server (hard limit here: 20,000).
ulimit -n "$(ulimit -Hn)"
cd "$(dirname "$0")/.."
REF=${REF:-../shared/reference/fastapi_seed}
OUT=${OUT:-BENCHMARKS.md}
RUNS=${RUNS:-1}
SIDES=${SIDES:-hub floor python}
BUILD=${BUILD:-release}
RAW=$(mktemp)
if [ "$BUILD" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
BENCH=target/$BUILD/progress-hub-bench
HUB=target/$BUILD/progress-hub
if [[ " $SIDES " == *" python "* ]]; then
  python3 -c 'import fastapi, uvicorn, redis, uvloop' 2>/dev/null || python3 -m pip install --quiet fastapi 'uvicorn[standard]' redis
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# name | sides that run it | scenario args (the same for every side). With history
# and resume on, events go through the hub's publish path (POST .../events: publish.lua
# = XADD + state + PUBLISH, frames with ids); the floor has no history and gets the same
# events by plain PUBLISH, so hub ÷ floor there is the whole cost of history + resume +
# the HTTP publish endpoint on the delivering side. The Python design cannot run it.
if [ -n "${SMALL:-}" ]; then
  SCENARIOS=(
    "fanout C=200 R=50|hub floor python|fanout -c 200 -r 50 -d 3"
    "fanout C=200 R=50 publish path|hub floor|fanout -c 200 -r 50 -d 3 --publish http"
    "spread C=1000 P=500 R=500|hub floor python|spread -c 1000 -p 500 -r 500 -d 3"
    "idle C=2000|hub floor python|idle -c 2000 -d 2"
    "churn K=1000 Q=50 new project per cycle|hub floor python|churn -k 1000 -q 50 --project-per-cycle"
  )
  STORMS=(
    "storm C=1000 P=100|storm -c 1000 -p 100 -r 10 --warmup 2 --tail 1"
    "storm C=1000 P=1|storm -c 1000 -p 1 -r 10 --warmup 2 --tail 1"
  )
else
  SCENARIOS=(
    "fanout C=100 R=10|hub floor python|fanout -c 100 -r 10 -d 10"
    "fanout C=1000 R=100|hub floor python|fanout -c 1000 -r 100 -d 10"
    "fanout C=10000 R=10|hub floor python|fanout -c 10000 -r 10 -d 10"
    "spread C=10000 P=5000 R=5000|hub floor python|spread -c 10000 -p 5000 -r 5000 -d 10"
    "idle C=5000|hub floor python|idle -c 5000 -d 3"
    "churn K=5000 Q=50|hub floor python|churn -k 5000 -q 50"
    "churn K=5000 Q=50 new project per cycle|hub floor python|churn -k 5000 -q 50 --project-per-cycle"
    "fanout C=100 R=1000 2KB|hub floor python|fanout -c 100 -r 1000 -d 10 --pad 2000"
    "fanout C=100 R=1000 2KB + 1 stalled|hub floor python|fanout -c 100 -r 1000 -d 10 --pad 2000 --slow 1"
    "idle C=19000|hub floor|idle -c 19000 -d 3 --sources 64"
    "fanout C=1000 R=100 publish path|hub floor|fanout -c 1000 -r 100 -d 10 --publish http"
    "fanout C=10000 R=10 publish path|hub floor|fanout -c 10000 -r 10 -d 10 --publish http"
    "spread C=10000 P=5000 R=5000 publish path|hub floor|spread -c 10000 -p 5000 -r 5000 -d 10 --publish http"
  )
  # The reconnect storm (#16): 19,000 clients, 10 events/s per project throughout.
  STORMS=(
    "storm C=19000 P=100|storm -c 19000 -p 100 -r 10"
    "storm C=19000 P=1|storm -c 19000 -p 1 -r 10"
  )
fi

start_redis() {
  RPORT=$(free_port)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --maxclients 40000 >/dev/null 2>&1 &
  RPID=$!
  wait_port "$RPORT"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# One scenario against one side, with a fresh redis-server and a fresh server process
# (so that RSS per connection is measured from a clean start).
run_one() {
  local run=$1 side=$2 name=$3 args=$4
  local sport; sport=$(free_port)
  start_redis
  case $side in
    hub) "$HUB" serve --listen "127.0.0.1:$sport" --redis-url "redis://127.0.0.1:$RPORT" --no-worker >/dev/null 2>&1 & ;;
    floor) "$BENCH" floor --listen "127.0.0.1:$sport" --redis-url "redis://127.0.0.1:$RPORT" >/dev/null 2>&1 & ;;
    python) (cd "$REF" && REDIS_URL="redis://127.0.0.1:$RPORT/0?max_connections=100000" \
      exec python3 -m uvicorn app.main:app --host 127.0.0.1 --port "$sport" --log-level warning --loop uvloop) >/dev/null 2>&1 & ;;
  esac
  local spid=$!
  wait_port "$sport"
  echo "== run $run $side: $name" | tee -a "$RAW"
  # The floor has no publish endpoint: it gets the same events by plain PUBLISH.
  [ "$side" = hub ] || args=${args/--publish http/}
  local extra=()
  [[ $args == churn* ]] || extra=(--redis-url "redis://127.0.0.1:$RPORT")
  if [[ $args == *"--publish http"* ]]; then extra+=(--http-url "http://127.0.0.1:$sport"); fi
  timeout 180 "$BENCH" $args --url "ws://127.0.0.1:$sport" --server-pid "$spid" "${extra[@]}" 2>&1 \
    | tee -a "$RAW" | grep -v '^RESULT' || echo "(no result: the run failed or timed out)" | tee -a "$RAW"
  kill -0 "$spid" 2>/dev/null || echo "(the server died)" | tee -a "$RAW"
  stop "$spid"; stop "$RPID"
}

# The storm starts and restarts its hubs itself; a fresh redis-server per run.
run_storm() {
  local run=$1 name=$2 args=$3
  start_redis
  local log; log=$(mktemp)
  echo "== run $run hub: $name" | tee -a "$RAW"
  timeout 300 "$BENCH" $args --redis-url "redis://127.0.0.1:$RPORT" --hub-bin "$HUB" --hub-log "$log" 2>&1 \
    | tee -a "$RAW" | grep -v '^RESULT' || echo "(no result: the run failed or timed out)" | tee -a "$RAW"
  echo "(watched hubs' log: $(grep -c -E 'WARN|ERROR' "$log" || true) WARN/ERROR lines, in $log)" | tee -a "$RAW"
  stop "$RPID"
}

for run in $(seq "$RUNS"); do
  for entry in "${SCENARIOS[@]}"; do
    IFS='|' read -r name sides args <<<"$entry"
    for side in $sides; do
      if [[ " $SIDES " == *" $side "* ]]; then run_one "$run" "$side" "$name" "$args"; fi
    done
  done
  if [[ " $SIDES " == *" hub "* ]]; then
    for entry in "${STORMS[@]}"; do
      run_storm "$run" "${entry%%|*}" "${entry#*|}"
    done
  fi
done
python3 scripts/bench_report.py "$RAW" > "$OUT"
echo "wrote $OUT (raw output: $RAW)"
