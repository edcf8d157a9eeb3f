#!/usr/bin/env bash
# The hub's instructions per HTTP publish, counted by callgrind (a count, not a time: it
# does not move with the machine's load the way CPU seconds do on a shared box). The
# hub runs under valgrind --tool=callgrind beside a fresh redis-server; the load tool
# publishes the spread scenario's shape (--publish http, every project's clients on
# it); the same run at two durations, so the difference is the cost of the extra
# publishes alone (start-up and connecting cancel out).
#
#   bash scripts/publish_instructions.sh <progress-hub> [OUT_DIR]
#   BENCH=... CLIENTS=200 PROJECTS=100 RATE=100 bash scripts/publish_instructions.sh ...
# Prints, per duration, the load tool's RESULT line and the hub's total Ir; then the Ir
# per extra publish. Per-function costs: callgrind_annotate --inclusive=yes OUT_DIR/*.cg
set -euo pipefail
export HUB_MAX_PROJECTS_PER_CLIENT=0 HUB_NEW_PROJECTS_PER_MINUTE=0
ulimit -n "$(ulimit -Hn)"
hub=$1 out=${2:-$(mktemp -d)}
BENCH=${BENCH:-target/release/progress-hub-bench}
CLIENTS=${CLIENTS:-200} PROJECTS=${PROJECTS:-100} RATE=${RATE:-100}
SHORT=${SHORT:-4} LONG=${LONG:-14}
mkdir -p "$out"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
run() {
  local d=$1 rport sport rpid spid
  rport=$(free_port); sport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
  rpid=$!; wait_port "$rport"
  valgrind --tool=callgrind --callgrind-out-file="$out/d$d.cg" "$hub" serve \
    --listen "127.0.0.1:$sport" --redis-url "redis://127.0.0.1:$rport" --no-worker >"$out/d$d.log" 2>&1 &
  spid=$!; wait_port "$sport"
  redis-cli -p "$rport" config resetstat >/dev/null
  timeout 600 "$BENCH" spread -c "$CLIENTS" -p "$PROJECTS" -r "$RATE" -d "$d" --publish http \
    --url "ws://127.0.0.1:$sport" --http-url "http://127.0.0.1:$sport" \
    --redis-url "redis://127.0.0.1:$rport" --server-pid "$spid" 2>&1 | grep '^RESULT' >&2
  redis-cli -p "$rport" info commandstats >"$out/d$d.commandstats"
  kill -TERM "$spid"; wait "$spid" || true
  kill "$rpid"; wait "$rpid" 2>/dev/null || true
  sed -n 's/^totals: //p' "$out/d$d.cg"
}
short=$(run "$SHORT"); echo "d=$SHORT: $short Ir"
long=$(run "$LONG"); echo "d=$LONG: $long Ir"
echo "Ir per extra publish: $(( (long - short) / (RATE * (LONG - SHORT)) ))  ($out)"
