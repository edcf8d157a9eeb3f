#!/usr/bin/env bash
# Side by side: the same scenarios against progress-hub and against the original Python
# design (../shared/reference/fastapi_seed, uvicorn + uvloop, Redis pool cap raised), in
# one run; writes BENCHMARKS.md. Loopback only; every scenario is bounded in time.
#
#   bash scripts/bench.sh            # needs redis-server, python3 (fastapi, uvicorn[standard], redis)
#
# Each side gets its own fresh redis-server on a free port. The load tool and the server
# run on the same 2-core machine, so absolute numbers are noisy; the ratios are the claim.
set -euo pipefail
# C = 19,000 needs that many descriptors in the tool and in the server (hard limit here: 20,000).
ulimit -n "$(ulimit -Hn)"
cd "$(dirname "$0")/.."
REF=${REF:-../shared/reference/fastapi_seed}
OUT=${OUT:-BENCHMARKS.md}
RAW=$(mktemp)
cargo build --release --quiet
BENCH=target/release/progress-hub-bench
HUB=target/release/progress-hub
python3 -c 'import fastapi, uvicorn, redis, uvloop' 2>/dev/null || python3 -m pip install --quiet fastapi 'uvicorn[standard]' redis

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# name, scenario args — the same for both sides
SCENARIOS=(
  "fanout C=100 R=10|fanout -c 100 -r 10 -d 10"
  "fanout C=1000 R=100|fanout -c 1000 -r 100 -d 10"
  "fanout C=10000 R=10|fanout -c 10000 -r 10 -d 10"
  "spread C=10000 P=5000 R=5000|spread -c 10000 -p 5000 -r 5000 -d 10"
  "idle C=5000|idle -c 5000 -d 3"
  "churn K=5000 Q=50|churn -k 5000 -q 50"
  "fanout C=100 R=1000 2KB|fanout -c 100 -r 1000 -d 10 --pad 2000"
  "fanout C=100 R=1000 2KB + 1 stalled|fanout -c 100 -r 1000 -d 10 --pad 2000 --slow 1"
  "idle C=19000 (hub only)|idle -c 19000 -d 3 --sources 64"
  # History and resume on: events go through the hub's publish path (POST .../events,
  # the publish script: XADD + state + PUBLISH), which the Python design does not have.
  "fanout C=1000 R=100 publish path (hub only)|fanout -c 1000 -r 100 -d 10 --publish http"
  "fanout C=10000 R=10 publish path (hub only)|fanout -c 10000 -r 10 -d 10 --publish http"
)

# One scenario against one side, with a fresh redis-server and a fresh server process
# (so that RSS per connection is measured from a clean start).
run_one() {
  local side=$1 name=$2 args=$3
  local rport sport; rport=$(free_port); sport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --maxclients 40000 >/dev/null 2>&1 &
  local rpid=$!
  wait_port "$rport"
  if [ "$side" = hub ]; then
    "$HUB" serve --listen "127.0.0.1:$sport" --redis-url "redis://127.0.0.1:$rport" --no-worker >/dev/null 2>&1 &
  else
    (cd "$REF" && REDIS_URL="redis://127.0.0.1:$rport/0?max_connections=100000" \
      exec python3 -m uvicorn app.main:app --host 127.0.0.1 --port "$sport" --log-level warning --loop uvloop) >/dev/null 2>&1 &
  fi
  local spid=$!
  wait_port "$sport"
  echo "== $side: $name" | tee -a "$RAW"
  local extra=()
  [[ $args == churn* ]] || extra=(--redis-url "redis://127.0.0.1:$rport")
  [[ $args == *"--publish http"* ]] && extra+=(--http-url "http://127.0.0.1:$sport")
  timeout 180 "$BENCH" $args --url "ws://127.0.0.1:$sport" --server-pid "$spid" "${extra[@]}" 2>&1 \
    | tee -a "$RAW" | grep -v '^RESULT' || echo "(no result: the run failed or timed out)" | tee -a "$RAW"
  kill -0 "$spid" 2>/dev/null || echo "(the server died)" | tee -a "$RAW"
  kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true
  kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true
}

for entry in "${SCENARIOS[@]}"; do
  name=${entry%%|*}; args=${entry#*|}
  run_one hub "$name" "$args"
  [[ $name == *"(hub only)"* ]] || run_one python "$name" "$args"
done
python3 scripts/bench_report.py "$RAW" > "$OUT"
echo "wrote $OUT (raw output: $RAW)"
