#!/usr/bin/env bash
# Redis time per published event (issue 22 §2): the publish script before (publish.lua at
# OLD_REF, which takes its inputs as name/value pairs: the same inputs are given it so, and
# at PREV_REF, which takes them as the current one does), the current one, and the floor
# (XADD + HSET + PUBLISH, what one event costs Redis with no script), measured side by
# side in the same run, on a fresh redis-server on a free port. Bare scripts show what any
# script costs on this Redis: `empty` is called exactly as publish.lua is (same KEYS and
# ARGV) and does nothing; `issue` runs HINCRBY + XADD + PUBLISH in a script, the issue's
# yardstick of its machine (≈ 4.8 µs there), by which its 8 µs is scaled to this one (and
# by `old`, 17.3 µs there, and the floor, 1.5 µs there);
# `bare` runs the floor's XADD + HSET + PUBLISH in a script, given only their arguments;
# `least`, called as publish.lua is, runs only the calls no publish.lua can do without
# (read the state, the era, XADD, HSET with the receipt and its ring field, PTTL,
# PUBLISH), no check, no trimming, no receipt lookup: what publish.lua would cost with
# all of its logic free.
# Log events of one project per phase (its history full after the first 1,000: trimming is
# in the steady state), from the Python SDK's own builder (`script_call`, so the call is
# the one every publisher makes). The phases take turns every CHUNK events, N events each
# in all, so a burst of load on the shared machine falls on all of them alike; µs per event
# from INFO commandstats (the usec of EVALSHA, which includes the script's own calls; of
# XADD, HSET and PUBLISH summed for the floor), read before and after each chunk: the mean
# over all chunks, and the median chunk (a chunk the scheduler preempted weighs less);
# then the keys each script's project left and their MEMORY USAGE. SUBSCRIBE=1 puts a
# subscriber on every phase's channel, as the hub is (each PUBLISH then delivers a
# message).
#
#   scripts/bench_redis_time.sh      # N=5000 CHUNK=100 OLD_REF=c851439 PREV_REF=907c022
#
# The machine is shared: only the ratios within one run mean much.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-5000}"
CHUNK="${CHUNK:-100}"
OLD_REF="${OLD_REF:-c851439}"
PREV_REF="${PREV_REF:-907c022}"
SUBSCRIBE="${SUBSCRIBE:-0}"
PY="${PY:-clients/python/.venv/bin/python}"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
redis-server --port "$port" --save '' --appendonly no --dir "$dir" --daemonize yes \
  --logfile "$dir/redis.log" >/dev/null
for _ in $(seq 300); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
# The script at a commit: its path before the Cargo workspace, or after (crates/hub).
script_at() {
  git show "$1:crates/hub/src/broker/redis/publish.lua" 2>/dev/null ||
    git show "$1:src/broker/redis/publish.lua"
}
script_at "$OLD_REF" > "$dir/old.lua"
script_at "$PREV_REF" > "$dir/prev.lua"
# Its inputs' names (the order of its ARGV, with its given_only, if any, after their count).
git show "$PREV_REF:contract/publish-inputs.json" > "$dir/prev.json"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

PYTHONPATH=clients/python/src "$PY" - "$port" "$N" "$CHUNK" "$dir" "$SUBSCRIBE" <<'EOF'
import json
import statistics
import sys

import redis

from progress_hub import _contract, _event
from progress_hub._redis import Target, script_argv, script_call
from progress_hub.config import Config

port, n, chunk = (int(a) for a in sys.argv[1:4])
folder, subscribe = sys.argv[4], sys.argv[5] == "1"
r = redis.Redis(port=port)
BARE = """
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], ARGV[2], 'frame', ARGV[3])
redis.call('HSET', KEYS[2], 'seq', ARGV[4], 'last_event_id', ARGV[5], 'updated_at', ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[3])
"""
# The issue's yardstick of a machine (≈ 4.8 µs on its machine): HINCRBY + XADD + PUBLISH
# in a script.
ISSUE = """
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '0-' .. seq, 'frame', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
"""
NAMES = sorted(_contract.publish_inputs()["inputs"])
GIVEN_ONLY = _contract.publish_inputs()["given_only"]
ALWAYS = [name for name in NAMES if name not in GIVEN_ONLY]
arg = {name: f"ARGV[{i + 1}]" for i, name in enumerate(ALWAYS)}
# (the patch follows the count of the given_only inputs and those)
PATCH_AT = f"{len(ALWAYS) + 2} + tonumber(ARGV[{len(ALWAYS) + 1}])"
LEAST = f"""
local s = redis.call('HMGET', KEYS[2], 'epoch', 'seq', 'progress', 'bytes', 'run_ended', 'era')
local era = redis.call('GET', KEYS[6])
local n = (tonumber(s[2]) or 0) + 1
local seq = tostring(n)
local id = 'e:' .. seq
local frame = {arg['head']} .. id .. {arg['mid']} .. {arg['tail']}
redis.call('XADD', KEYS[1], 'MAXLEN', {arg['max_len']}, '0-' .. seq, 'frame', frame)
local receipt = {arg['receipt']} .. '=' .. id
redis.call('HSET', KEYS[2], 'seq', seq, 'last_event_id', id, 'receipt', receipt,
  'receipt_' .. string.sub(seq, -1), receipt, unpack(ARGV, {PATCH_AT}))
if redis.call('PTTL', KEYS[2]) < 0 then
  redis.call('EXPIRE', KEYS[1], {arg['active_ttl']})
  redis.call('EXPIRE', KEYS[2], {arg['active_ttl']})
end
redis.call('PUBLISH', {arg['channel']}, frame)
return id
"""
scripts = {
    "old": r.script_load(open(f"{folder}/old.lua", encoding="utf-8").read()),
    "prev": r.script_load(open(f"{folder}/prev.lua", encoding="utf-8").read()),
    "new": r.script_load(_contract.publish_script()),
    "empty": r.script_load("return 1"),
    "issue": r.script_load(ISSUE),
    "bare": r.script_load(BARE),
    "least": r.script_load(LEAST),
}
PREV_CONTRACT = json.load(open(f"{folder}/prev.json", encoding="utf-8"))
PAIRS = {"old"}  # the scripts that take name/value pairs ('state.<field>': the patch)
config, target = Config(), Target.parse(f"redis://127.0.0.1:{port}")
phases = ["old", "prev", "new", "least", "empty", "bare", "issue", "floor"]
COMMANDS = {p: ["evalsha"] for p in phases} | {"floor": ["xadd", "hset", "publish"]}

listener = None
if subscribe:
    pubsub = r.pubsub()
    pubsub.subscribe(**{target.channel(f"bench-{phase}"): lambda _: None for phase in phases})
    listener = pubsub.run_in_thread(sleep_time=0.01, daemon=True)


def named(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """The inputs of a call made as publish.lua's contract says, by name, and its patch."""
    values = dict(zip(ALWAYS, argv[: len(ALWAYS)]))
    count = int(argv[len(ALWAYS)])
    values.update(zip(GIVEN_ONLY[:count], argv[len(ALWAYS) + 1 : len(ALWAYS) + 1 + count]))
    return values, argv[len(ALWAYS) + 1 + count :]


def as_pairs(argv: list[str]) -> list[str]:
    """The same inputs, as the scripts before positional inputs took them."""
    values, patch = named(argv)
    pairs = [x for name, value in sorted(values.items()) if value != "" for x in (name, value)]
    for field, value in zip(patch[::2], patch[1::2]):
        pairs += [f"state.{field}", value]
    return pairs


def as_prev(argv: list[str]) -> list[str]:
    """The same inputs, in the order of the names PREV_REF's contract gives."""
    values, patch = named(argv)
    return script_argv(PREV_CONTRACT, values, patch)


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
        history, state = f"progress:{{{project}}}:history", f"progress:{{{project}}}:state"
        frame = prepared.head + f"e:{i + 1}" + prepared.mid + prepared.tail
        updated_at = prepared.state.get("updated_at") or ""
        if phase == "floor":
            pipe.xadd(history, {"frame": frame}, id=f"0-{i + 1}",
                      maxlen=config.history_len, approximate=False)
            fields = {"seq": i + 1, "last_event_id": f"e:{i + 1}", "updated_at": updated_at}
            pipe.hset(state, mapping=fields)
            pipe.publish(target.channel(project), frame)
        elif phase == "bare":
            pipe.evalsha(scripts[phase], 2, history, state, config.history_len, f"0-{i + 1}",
                         frame, i + 1, f"e:{i + 1}", updated_at, target.channel(project))
        elif phase == "issue":
            pipe.evalsha(scripts[phase], 2, history, state, config.history_len, frame,
                         target.channel(project))
        else:
            keys, argv = script_call(project, prepared, f"r{i}", None, target, config)
            if phase in PAIRS:
                argv = as_pairs(argv)
            elif phase == "prev":
                argv = as_prev(argv)
            pipe.evalsha(scripts[phase], len(keys), *keys, *argv)
    before = usec(phase)
    pipe.execute()
    return usec(phase) - before


per_chunk: dict[str, list[float]] = {phase: [] for phase in phases}
for start in range(0, n, chunk):
    for phase in phases:
        per_chunk[phase].append(chunk_of(phase, start) / chunk)
mean = {phase: statistics.fmean(v) for phase, v in per_chunk.items()}
median = {phase: statistics.median(v) for phase, v in per_chunk.items()}
print(f"redis-server {r.info('server')['redis_version']}, {n} log events per phase, in turns "
      f"of {chunk}, {'a subscriber on each channel' if subscribe else 'no subscriber'}")
print("         µs/event (mean, ÷floor)   µs/event (median chunk, ÷floor)")
for phase in phases:
    print(f"{phase:>6}: {mean[phase]:7.2f} {mean[phase] / mean['floor']:5.1f}x"
          f"        {median[phase]:7.2f} {median[phase] / median['floor']:5.1f}x")
print(f"new/old {mean['new'] / mean['old']:.2f}, new/prev {mean['new'] / mean['prev']:.2f} (means)")
# The issue's 8 µs, on this machine: scaled by each of its yardsticks (median chunks).
print(f"8 µs on the issue's machine is here {8 * median['issue'] / 4.8:.2f} µs by `issue` "
      f"(÷ 4.8), {8 * median['old'] / 17.3:.2f} by `old` (÷ 17.3), "
      f"{8 * median['floor'] / 1.5:.2f} by the floor (÷ 1.5)")
# What each script's project keeps in Redis (the receipts of unkeyed publishes, ...).
for phase in ("old", "prev", "new"):
    keys = r.keys(f"progress:{{bench-{phase}}}:*")
    size = sum(r.memory_usage(k) or 0 for k in keys)
    print(f"{phase:>6}: {len(keys)} keys, {size / 1024:.0f} KiB (MEMORY USAGE)")
if listener is not None:
    listener.stop()
EOF
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
