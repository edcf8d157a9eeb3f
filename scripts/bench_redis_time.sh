#!/usr/bin/env bash
# Redis time per published event (issue 22 §2): the publish script before this change
# (publish.lua at OLD_REF), the current one, and the floor (XADD + HSET + PUBLISH, what
# one event costs Redis with no script), measured side by side in the same run, on a
# fresh redis-server on a free port. Each phase runs N log events of one project (its
# history full after the first 1,000: trimming is in the steady state), from the Python
# SDK's own builder (`script_call`, so the call is the one every publisher makes); the
# phases alternate ROUNDS times and the median of each is printed, in µs per event,
# from INFO commandstats (usec_per_call of EVALSHA; of XADD, HSET and PUBLISH summed).
#
#   scripts/bench_redis_time.sh            # N=3000 ROUNDS=3 OLD_REF=f163f08
#
# The machine is shared: only the ratios within one run mean much.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-3000}"
ROUNDS="${ROUNDS:-3}"
OLD_REF="${OLD_REF:-f163f08}"
PY="${PY:-clients/python/.venv/bin/python}"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
redis-server --port "$port" --save '' --appendonly no --dir "$dir" --daemonize yes \
  --logfile "$dir/redis.log" >/dev/null
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
git show "$OLD_REF:src/broker/redis/publish.lua" > "$dir/old.lua"

PYTHONPATH=clients/python/src "$PY" - "$port" "$N" "$ROUNDS" "$dir/old.lua" <<'EOF'
import statistics
import sys

import redis

from progress_hub import _contract, _event
from progress_hub._redis import Target, new_epoch, script_call
from progress_hub.config import Config

port, n, rounds, old_path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
r = redis.Redis(port=port)
old = r.script_load(open(old_path, encoding="utf-8").read())
new = r.script_load(_contract.publish_script())
config, target = Config(), Target.parse(f"redis://127.0.0.1:{port}")


def stats() -> dict[str, float]:
    info = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["usec_per_call"] for k, v in info.items()}


def run(phase: str, round_: int) -> float:
    project = f"bench-{phase}-{round_}"
    r.config_resetstat()
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        event = _event.log("INFO", f"step {i} of the benchmark, a log line of usual length")
        prepared = _event.prepare(event, project, "en")
        if phase == "new":
            keys, argv = script_call(project, prepared, f"r{i}", None, target, config)
            pipe.evalsha(new, len(keys), *keys, *argv)
        elif phase == "old":
            keys = [f"progress:{{{project}}}:{k}" for k in ("history", "state", f"pub:r{i}")]
            keys.append("progress:era")
            s = prepared.state
            argv = [target.channel(project), new_epoch(), config.history_len,
                    config.active_ttl, config.retention, prepared.name, prepared.head,
                    prepared.mid, prepared.tail, "", "", "", "", "", "", s.get("updated_at"),
                    "", "PUBLISH", "", config.history_bytes]
            pipe.evalsha(old, len(keys), *keys, *argv)
        else:
            frame = prepared.head + f"e:{i + 1}" + prepared.mid + prepared.tail
            pipe.xadd(f"progress:{{{project}}}:history", {"frame": frame}, id=f"0-{i + 1}",
                      maxlen=config.history_len, approximate=False)
            pipe.hset(f"progress:{{{project}}}:state", mapping={"seq": i + 1, "last_event_id": f"e:{i + 1}", "updated_at": s_at(prepared)})
            pipe.publish(target.channel(project), frame)
        if len(pipe) >= 500:
            pipe.execute()
    pipe.execute()
    got = stats()
    if phase in ("old", "new"):
        return got["evalsha"]
    return got["xadd"] + got["hset"] + got["publish"]


def s_at(prepared: _event.Prepared) -> str:
    return prepared.state.get("updated_at") or ""


results: dict[str, list[float]] = {"old": [], "new": [], "floor": []}
for round_ in range(rounds):
    for phase in results:
        results[phase].append(run(phase, round_))
median = {phase: statistics.median(values) for phase, values in results.items()}
print(f"redis-server {r.info('server')['redis_version']}, {n} log events per phase, {rounds} rounds")
for phase, values in results.items():
    shown = ", ".join(f"{v:.2f}" for v in values)
    print(f"{phase:>6}: median {median[phase]:6.2f} µs/event  (rounds: {shown})")
print(f"old/floor {median['old'] / median['floor']:.1f}x, new/floor {median['new'] / median['floor']:.1f}x")
EOF
