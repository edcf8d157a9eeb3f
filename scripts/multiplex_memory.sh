#!/bin/bash
# Memory per subscription on one hub (in-process broker, no worker): RSS after start,
# after 10 connections x 1,000 subscriptions to 10,000 new projects (a topic each), and
# after 10 more connections x 1,000 subscriptions to the same projects (subscriptions only).
# Usage: scripts/multiplex_memory.sh target/release/progress-hub [port]   (Node >= 20.10)
set -eu
BIN=$1; PORT=${2:-18931}; D=$(mktemp -d); S=$(dirname "$0")
rm -f $D/hold1 $D/hold2 $D/out1 $D/out2; mkfifo $D/hold1 $D/hold2
$BIN serve --listen 127.0.0.1:$PORT --no-worker >$D/hub.log 2>&1 &
HUB=$!
trap "kill $HUB 2>/dev/null || true; rm -rf $D" EXIT
for i in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
sleep 1
rss() { awk '/VmRSS/{print $2}' /proc/$HUB/status; }
echo "idle_rss_kib $(rss)"
run() { # $1: fifo, $2: output
  node --experimental-websocket $S/multiplex_subscribe.mjs ws://127.0.0.1:$PORT/api/v1/progress $HUB 10 1000 0 <$1 >$2 2>&1 &
}
run $D/hold1 $D/out1; exec 3>$D/hold1
until grep -q rss_kib $D/out1; do sleep 0.2; done
echo "after_10x1000_new_projects_rss_kib $(rss) ($(cat $D/out1 | tr '\n' ' '))"
run $D/hold2 $D/out2; exec 4>$D/hold2
until grep -q rss_kib $D/out2; do sleep 0.2; done
echo "after_10x1000_more_same_projects_rss_kib $(rss) ($(cat $D/out2 | tr '\n' ' '))"
exec 3>&- 4>&-
