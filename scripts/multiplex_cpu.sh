#!/bin/bash
# Issue 26 "Measured": traffic delivered over single-project sockets (the floor) and
# over multiplexed connections, alternating in one run, a fresh hub (Redis backend, no
# worker) for each: hub CPU per delivered frame, RSS per connection, lost, p99. The two
# argument strings are `progress-hub-bench spread` arguments, e.g. the same deliveries:
#   scripts/multiplex_cpu.sh HUB BENCH "-c 1000 -p 1000 -r 2000 -d 10" \
#       "-c 1 -p 1000 --per-connection 1000 -r 2000 -d 10" 3
# Usage: scripts/multiplex_cpu.sh HUB_BIN BENCH_BIN SINGLE_ARGS MUX_ARGS [ROUNDS]
set -eu
HUB_BIN=$1; BENCH=$2; SINGLE=$3; MUX=$4; ROUNDS=${5:-3}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
D=$(mktemp -d)
RP=$(free_port)
redis-server --port $RP --bind 127.0.0.1 --save '' --appendonly no --maxclients 40000 >$D/redis.log 2>&1 &
REDIS=$!
HUB=
trap 'kill $HUB $REDIS 2>/dev/null || true; rm -rf $D' EXIT
until redis-cli -p $RP ping >/dev/null 2>&1; do sleep 0.05; done
start_hub() {
  HP=$(free_port)
  $HUB_BIN serve --listen 127.0.0.1:$HP --redis-url redis://127.0.0.1:$RP --no-worker >$D/hub.log 2>&1 &
  HUB=$!
  until curl -sf http://127.0.0.1:$HP/readyz >/dev/null; do sleep 0.05; done
}
run() { # $1: label, then the bench's own arguments
  local label=$1; shift
  start_hub
  echo "== $label (load $(cut -d' ' -f1-3 /proc/loadavg))"
  $BENCH spread --url ws://127.0.0.1:$HP --server-pid $HUB --redis-url redis://127.0.0.1:$RP \
    $@ | grep -E '^(RESULT|server|deliveries|latency|connected)'
  kill $HUB; wait $HUB 2>/dev/null || true
}
for r in $(seq $ROUNDS); do
  run "round $r single-project sockets (floor): $SINGLE" $SINGLE
  run "round $r multiplexed: $MUX" $MUX
done
