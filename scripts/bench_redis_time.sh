#!/usr/bin/env bash
# Redis time per published event (issue 22 §2): the publish script before this change
# (publish.lua at OLD_REF, called with the same named inputs: it ignores those it does not
# know), the current one, and the floor (XADD + HSET + PUBLISH, what one event costs Redis
# with no script), measured side by side in the same run, on a fresh redis-server on a
# free port. Log events of one project per phase (its history full after the first
# 1,000: trimming is in the steady state), from the Python SDK's own builder
# (`script_call`, so the call is the one every publisher makes). The phases take turns
# every CHUNK events, N events each in all, so a burst of load on the shared machine
# falls on all of them alike; µs per event from INFO commandstats (the usec of EVALSHA;
# of XADD, HSET and PUBLISH summed), read before and after each chunk; then the keys each
# script's project left and their MEMORY USAGE.
#
#   scripts/bench_redis_time.sh            # N=5000 CHUNK=100 OLD_REF=c851439
#
# The machine is shared: only the ratios within one run mean much.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-5000}"
CHUNK="${CHUNK:-100}"
OLD_REF="${OLD_REF:-c851439}"
PY="${PY:-clients/python/.venv/bin/python}"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
redis-server --port "$port" --save '' --appendonly no --dir "$dir" --daemonize yes \
  --logfile "$dir/redis.log" >/dev/null
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
# The script's path before and after the Cargo workspace (crates/hub).
git show "$OLD_REF:crates/hub/src/broker/redis/publish.lua" > "$dir/old.lua" 2>/dev/null ||
  git show "$OLD_REF:src/broker/redis/publish.lua" > "$dir/old.lua"

PYTHONPATH=clients/python/src "$PY" - "$port" "$N" "$CHUNK" "$dir/old.lua" <<'EOF'
import sys

import redis

from progress_hub import _contract, _event
from progress_hub._redis import Target, script_call
from progress_hub.config import Config

port, n, chunk = (int(a) for a in sys.argv[1:4])
r = redis.Redis(port=port)
scripts = {
    "old": r.script_load(open(sys.argv[4], encoding="utf-8").read()),
    "new": r.script_load(_contract.publish_script()),
}
config, target = Config(), Target.parse(f"redis://127.0.0.1:{port}")
COMMANDS = {"old": ["evalsha"], "new": ["evalsha"], "floor": ["xadd", "hset", "publish"]}


def usec(phase: str) -> int:
    info = r.info("commandstats")
    return sum(info.get(f"cmdstat_{c}", {"usec": 0})["usec"] for c in COMMANDS[phase])


def chunk_of(phase: str, start: int) -> int:
    """Publishes events start.. of the phase's project: the Redis µs they took."""
    project = f"bench-{phase}"
    pipe = r.pipeline(transaction=False)
    for i in range(start, start + chunk):
        event = _event.log("INFO", f"step {i} of the benchmark, a log line of usual length")
        prepared = _event.prepare(event, project, "en")
        if phase in scripts:
            keys, argv = script_call(project, prepared, f"r{i}", None, target, config)
            pipe.evalsha(scripts[phase], len(keys), *keys, *argv)
        else:
            frame = prepared.head + f"e:{i + 1}" + prepared.mid + prepared.tail
            pipe.xadd(f"progress:{{{project}}}:history", {"frame": frame}, id=f"0-{i + 1}",
                      maxlen=config.history_len, approximate=False)
            fields = {"seq": i + 1, "last_event_id": f"e:{i + 1}",
                      "updated_at": prepared.state.get("updated_at") or ""}
            pipe.hset(f"progress:{{{project}}}:state", mapping=fields)
            pipe.publish(target.channel(project), frame)
    before = usec(phase)
    pipe.execute()
    return usec(phase) - before


total = dict.fromkeys(COMMANDS, 0)
for start in range(0, n, chunk):
    for phase in total:
        total[phase] += chunk_of(phase, start)
per = {phase: us / n for phase, us in total.items()}
print(f"redis-server {r.info('server')['redis_version']}, {n} log events per phase, in turns of {chunk}")
for phase, value in per.items():
    print(f"{phase:>6}: {value:6.2f} µs/event")
print(f"old/floor {per['old'] / per['floor']:.1f}x, new/floor {per['new'] / per['floor']:.1f}x, "
      f"new/old {per['new'] / per['old']:.2f}")
# What each script's project keeps in Redis (the receipts of unkeyed publishes, ...).
for phase in scripts:
    keys = r.keys(f"progress:{{bench-{phase}}}:*")
    size = sum(r.memory_usage(k) or 0 for k in keys)
    print(f"{phase:>6}: {len(keys)} keys, {size / 1024:.0f} KiB (MEMORY USAGE)")
EOF
