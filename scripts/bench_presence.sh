#!/usr/bin/env bash
# A/B: the churn scenario against the hub before presence (hub-before, main at c851439)
# and with it (hub-after), same tool, same minutes, fresh Redis and hub per run.
set -uo pipefail
export HUB_MAX_PROJECTS_PER_CLIENT=0 HUB_NEW_PROJECTS_PER_MINUTE=0
ulimit -n "$(ulimit -Hn)"
# Put the two release binaries and progress-hub-bench in D first.
D=${D:-/tmp/presence-bench}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
for run in 1 2 3; do
  for side in before after; do
    for mode in "" "--project-per-cycle"; do
      rport=$(free_port); redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly no --daemonize no >/dev/null 2>&1 & rpid=$!
      wait_port "$rport" || { echo "run=$run side=$side redis did not start"; continue; }
      sport=$(free_port)
      "$D/hub-$side" serve --listen "127.0.0.1:$sport" --redis-url "redis://127.0.0.1:$rport" --no-worker >/dev/null 2>&1 & spid=$!
      wait_port "$sport"
      c0=$(redis-cli -p "$rport" info stats | awk -F: '/total_commands_processed/{print $2+0}')
      out=$(timeout 120 "$D/bench" churn -k 5000 -q 50 $mode --url "ws://127.0.0.1:$sport" --server-pid "$spid" 2>&1 | grep RESULT)
      sleep 0.5  # presence writes of the last leaves land (after side) before counting
      c1=$(redis-cli -p "$rport" info stats | awk -F: '/total_commands_processed/{print $2+0}')
      echo "run=$run side=$side mode=${mode:-reuse100} redis_cmds=$((c1-c0)) $out"
      kill "$spid"; wait "$spid" 2>/dev/null; kill "$rpid"; wait "$rpid" 2>/dev/null
    done
  done
done
