#!/usr/bin/env bash
# Per-shard traffic on a Redis Cluster: does each event cross only its project's shard?
#
#   bash scripts/bench_cluster.sh          # needs redis-server and redis-cli 7, python3, curl
#   C=2000 P=500 R=1000 D=20 bash scripts/bench_cluster.sh
#
# Starts its own 3-master cluster (no replicas) on free ports in a temp dir and two
# release hubs (--no-worker) on it, then runs the load tool's `spread` scenario (C
# clients over P projects, each project's clients spread over the two hubs; R events/s
# for D s) three times:
#   1. http:     published through the hubs' publish path (POST .../events, alternately
#                to each hub): publish.lua with SPUBLISH on the project's shard;
#   2. spublish: SPUBLISH progress:{id} straight to the cluster (no script);
#   3. publish:  plain PUBLISH progress:{id} (what a legacy publisher would send): Redis
#                broadcasts it to every node over the cluster bus; the hubs, subscribed
#                with SSUBSCRIBE, do not receive it. The cost sharding avoids.
# Around each run it reads every node's INFO commandstats / stats / cpu and CLUSTER INFO
# and prints a per-node table of the differences. Everything is torn down at the end.
# Loopback only; the load tool, the hubs and Redis share the machine.
set -euo pipefail
# The load tool is one client creating every project: no per-client project quota (the
# environment, which a hub that predates the quota ignores).
export HUB_MAX_PROJECTS_PER_CLIENT=0 HUB_NEW_PROJECTS_PER_MINUTE=0
ulimit -n "$(ulimit -Hn)"
cd "$(dirname "$0")/.."
C=${C:-2000}
P=${P:-500}
R=${R:-1000}
D=${D:-20}
cargo build --release --quiet --bin progress-hub --bin progress-hub-bench
BENCH=target/release/progress-hub-bench
HUB=target/release/progress-hub
DIR=$(mktemp -d -t bench-cluster.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Polls `$@` up to 10 s (a process starting has no event to wait on from a shell).
until_ok() { for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "timed out: $*" >&2; return 1; }

PORTS=()
for _ in 1 2 3; do
  port=$(free_port)
  bus=$(free_port) # explicit: the default, port + 10000, is refused above 55535
  mkdir -p "$DIR/$port"
  (cd "$DIR/$port" && exec redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-port "$bus" --cluster-config-file nodes.conf --save '' --appendonly no \
    --protected-mode no --maxclients 40000) >"$DIR/$port/log" 2>&1 &
  PIDS+=($!)
  PORTS+=("$port")
done
for port in "${PORTS[@]}"; do until_ok redis-cli -p "$port" ping; done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${PORTS[@]}") --cluster-replicas 0 --cluster-yes >/dev/null
for port in "${PORTS[@]}"; do
  until_ok bash -c "redis-cli -p $port cluster info | grep -q cluster_state:ok"
done
URL="redis+cluster://$(printf '127.0.0.1:%s,' "${PORTS[@]}" | sed 's/,$//')"

HUB_PORTS=()
HUB_PIDS=()
for n in 1 2; do
  port=$(free_port)
  "$HUB" serve --listen "127.0.0.1:$port" --redis-url "$URL" --no-worker >"$DIR/hub$n.log" 2>&1 &
  PIDS+=($!)
  HUB_PIDS+=($!)
  HUB_PORTS+=("$port")
done
for port in "${HUB_PORTS[@]}"; do until_ok curl -sf "http://127.0.0.1:$port/readyz"; done
WS=$(printf 'ws://127.0.0.1:%s,' "${HUB_PORTS[@]}" | sed 's/,$//')
HTTP=$(printf 'http://127.0.0.1:%s,' "${HUB_PORTS[@]}" | sed 's/,$//')

# snapshot NAME: every node's counters and both hubs' CPU ticks.
snapshot() {
  for port in "${PORTS[@]}"; do
    {
      redis-cli -p "$port" info commandstats
      redis-cli -p "$port" info stats
      redis-cli -p "$port" info cpu
      redis-cli -p "$port" cluster info
      echo "myslots:$(redis-cli -p "$port" cluster nodes | awk '/myself/ {for (i = 9; i <= NF; i++) printf "%s ", $i}')"
    } | tr -d '\r' >"$DIR/$1-node-$port.txt"
  done
  for pid in "${HUB_PIDS[@]}"; do awk '{print $14 + $15}' "/proc/$pid/stat"; done >"$DIR/$1-hubs.txt"
}

echo "cluster nodes ${PORTS[*]}, hubs ${HUB_PORTS[*]}; C=$C P=$P R=$R D=$D; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
for phase in http spublish publish; do
  case $phase in
    http) args=(--publish http --http-url "$HTTP") ;;
    spublish) args=(--publish redis --redis-url "$URL") ;;
    publish) args=(--publish redis --redis-url "$URL" --plain-publish) ;;
  esac
  snapshot "$phase-before"
  echo "== $phase: progress-hub-bench spread -c $C -p $P -r $R -d $D --url $WS ${args[*]}"
  timeout 300 "$BENCH" spread -c "$C" -p "$P" -r "$R" -d "$D" --url "$WS" "${args[@]}" \
    | grep -v -e '^RESULT' -e '^server' | tee "$DIR/$phase-bench.txt"
  snapshot "$phase-after"
done

python3 - "$DIR" "$P" "$R" "$D" "${PORTS[@]}" <<'EOF'
import sys

d, projects, rate, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ports = sys.argv[5:]
events = rate * duration


def crc16(data):  # CRC16-XMODEM, Redis Cluster's key hash
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def read(name, port):
    fields = {}
    for line in open(f"{d}/{name}-node-{port}.txt"):
        if ":" in line and not line.startswith("#"):
            key, value = line.strip().split(":", 1)
            fields[key] = value
    return fields


def stat(fields, cmd, what="calls"):
    for part in fields.get(f"cmdstat_{cmd}", "").split(","):
        if part.startswith(f"{what}="):
            return int(part[len(what) + 1:])
    return 0


def calls(fields, cmd):
    return stat(fields, cmd)


def number(fields, key):
    return float(fields.get(key, 0) or 0)


def owned_slots(fields):
    slots = set()
    for part in fields.get("myslots", "").split():
        if part.startswith("["):
            continue
        lo, _, hi = part.partition("-")
        slots.update(range(int(lo), int(hi or lo) + 1))
    return slots


# Events go round robin over the projects bench-0..bench-(P-1); a project's slot is that
# of its hash tag.
per_project = [events // projects + (1 if i < events % projects else 0) for i in range(projects)]
slot_of = [crc16(f"bench-{i}".encode()) % 16384 for i in range(projects)]
for phase in ("http", "spublish", "publish"):
    print(f"\n### {phase}: {events} events over {projects} projects\n")
    # EVALSHA+EVAL: publish.lua, plus replay.lua reads of sessions and subscribers
    print("| node | projects owned | events owned | SPUBLISH | PUBLISH | EVALSHA+EVAL | EVALSHA µs/call | SSUBSCRIBE | net out MB | bus msgs sent (publish / publishshard) | Redis CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    total = {"spublish": 0, "publish": 0, "bus": 0}
    for port in ports:
        a, b = read(f"{phase}-before", port), read(f"{phase}-after", port)
        slots = owned_slots(b)
        mine = [i for i in range(projects) if slot_of[i] in slots]
        delta = lambda cmd: calls(b, cmd) - calls(a, cmd)
        diff = lambda key: number(b, key) - number(a, key)
        cpu = diff("used_cpu_sys") + diff("used_cpu_user")
        script_us = (stat(b, "evalsha", "usec") - stat(a, "evalsha", "usec")) / max(delta("evalsha"), 1)
        bus_pub = diff("cluster_stats_messages_publish_sent")
        bus_shard = diff("cluster_stats_messages_publishshard_sent")
        total["spublish"] += delta("spublish")
        total["publish"] += delta("publish")
        total["bus"] += bus_pub + bus_shard
        print(
            f"| {port} | {len(mine)} | {sum(per_project[i] for i in mine)} | {delta('spublish')} | {delta('publish')} "
            f"| {delta('evalsha') + delta('eval')} | {script_us:.1f} | {delta('ssubscribe')} | {diff('total_net_output_bytes') / 1e6:.2f} "
            f"| {bus_pub:.0f} / {bus_shard:.0f} | {cpu:.2f} |"
        )
    hubs_a = [int(x) for x in open(f"{d}/{phase}-before-hubs.txt").read().split()]
    hubs_b = [int(x) for x in open(f"{d}/{phase}-after-hubs.txt").read().split()]
    hub_cpu = ", ".join(f"{(y - x) / 100:.2f}" for x, y in zip(hubs_a, hubs_b))
    print(
        f"\ntotal: {events} events published; SPUBLISH {total['spublish']}, PUBLISH {total['publish']}, "
        f"cluster-bus publish messages sent {total['bus']:.0f}; hub CPU s: {hub_cpu}"
    )
EOF
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
