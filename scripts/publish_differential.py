#!/usr/bin/env python3
"""A differential check of the publish script: publish.lua at a base revision (907c022),
called with the base's inputs (its contract's sorted input names), against publish.lua
as checked out here (HEAD), called as the Python SDK calls it (`_redis.script_call`).

For each seed, the same random sequence of publishes goes to both scripts, each on a
project of its own in one redis-server this script starts on a free port: log lines
(small and above the history's per-frame share), progress updates (backwards too),
stage changes, errors, completes (ends_run), QUEUED starts (starts_run, with or without
a run_holder), publishes under a fence (tokens going up and down, parallel units, units
counted done), retries of one of the last 10 publishes (the same call again, with retry=1
for HEAD's script; the base looks every receipt up), the last call sent again as it was
(as a client library resends a call), keyed publishes with repeated keys,
changed history limits and TTLs, the history deleted between publishes and a new era.

After every step it compares: the answers (the id, and whether a history or run began:
the base answers {id, begun}; HEAD the id alone or {id, 1}), the errors (STALE refusals:
the same text), the histories (entry ids and frames), the states (but their receipts:
`receipts`, `receipt`, `receipt_<n>`), the fences set, the units hash, the keyed receipt keys and
whether the run is in the running set; at each seed's end the webhook outbox's entries
of each project. The keys' TTLs differ by design: the base's are `ttl` after an append;
HEAD's at least `ttl` and at most `ttl + ttl/8` (checked after every append, and never
above that bound).

Run with the SDK's venv: clients/python/.venv/bin/python scripts/publish_differential.py
[--seeds N] [--steps N] [--base REV] (default 907c022, the script before this one).
Exit status 1 on a mismatch, with a reproduction (the shortest failing sequence of
steps found, as JSON).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "clients" / "python" / "src"))

import redis  # noqa: E402

from progress_hub import _contract, _redis  # noqa: E402
from progress_hub._event import (  # noqa: E402
    COMPLETE_STATUSES,
    LEVELS,
    PREVIOUS_STAGES,
    STAGES,
    Event,
    complete,
    error,
    log,
    prepare,
    progress_update,
    stage_change,
)
from progress_hub._redis import Claim, Target  # noqa: E402
from progress_hub.config import Config  # noqa: E402

LUA_PATH = "crates/hub/src/broker/redis/publish.lua"
INPUTS_PATH = "contract/publish-inputs.json"
#: Fields of a state that hold receipts (the base's one string; HEAD's last one,
#: `receipt`, and its ring, `receipt_<n>`): every field whose name starts so.
RECEIPT_PREFIX = "receipt"
#: (history_len, history_bytes): the default, and limits a few frames reach.
LIMITS = [(1000, 4 * 1024 * 1024), (10, 3000), (5, 2000), (20, 1000), (3, 100_000), (50, 6000)]
#: (active_ttl, retention) in seconds: retention below active shrinks the TTL at the end.
TTLS = [(3600, 86400), (600, 7200), (1200, 300), (40, 40)]
UNITS = [None, None, "u1", "u2", "u3"]
KEYS_POOL = ["key-1", "key-2", "key-3"]
#: How far back a retry goes, in publishes: HEAD remembers the last 10; the base at least
#: the last 12 (400 bytes of 'receipt=id ' entries, 16-digit receipts).
RETRY_BACK = 10


def git_show(rev: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], Any]:
    for _ in range(20):
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client: Any = redis.Redis(port=port, decode_responses=True)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if client.ping():
                    return proc, client
            except redis.ConnectionError:
                time.sleep(0.02)
        stop(proc)
    raise SystemExit("redis-server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------
# Steps: plain data (JSON), every random choice made, so a sequence replays exactly.


@dataclass
class Gen:
    """Makes one seed's steps."""

    rng: random.Random
    limits: tuple[int, int] = LIMITS[0]
    ttls: tuple[int, int] = TTLS[0]
    tokens: dict[str, int] = field(default_factory=dict[str, int])
    holders: list[str] = field(default_factory=list[str])
    #: The publishes made, newest last.
    sent: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])

    def receipt(self) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(16))

    def epoch(self) -> str:
        return "".join(self.rng.choice(string.ascii_letters + string.digits) for _ in range(10))

    def event(self) -> tuple[str, list[Any]]:
        """An event: its kind and the arguments of its `_event` constructor."""
        r = self.rng
        kind = r.choices(
            ["log", "big_log", "progress", "units", "stage", "complete", "error"],
            weights=[20, 5, 20, 4, 8, 5, 2],
        )[0]
        stages = STAGES
        if kind == "log":
            return "log", [r.choice(LEVELS), "m" * r.randint(1, 120)]
        if kind == "big_log":
            return "log", [r.choice(LEVELS), "B" * r.randint(200, 8000)]
        if kind == "progress":
            return "progress_update", [r.choice(stages), r.randint(0, 100), "s", r.randint(0, 9)]
        if kind == "units":
            total = r.randint(1, 5)
            return "units", [r.choice(stages), r.randint(0, 100), r.randint(0, total), total]
        if kind == "stage":
            prev = r.choice([None, *PREVIOUS_STAGES])
            return "stage_change", [prev, r.choice(stages), r.randint(0, 100)]
        if kind == "complete":
            url = r.choice([None, "https://youtube.com/watch?v=1"])
            return "complete", [r.choice(COMPLETE_STATUSES), url]
        return "error", ["INTERNAL_ERROR", "boom", r.choice(stages), 0, 3]

    def claim(self) -> list[Any] | None:
        r = self.rng
        if r.random() >= 0.35:
            return None
        # Mostly the current holder; a new one now and then; an old one (refused).
        pick = r.random()
        if not self.holders or pick < 0.15:
            self.holders.append(f"job-{len(self.holders)}")
            holder = self.holders[-1]
        elif pick < 0.8:
            holder = self.holders[-1]
        else:
            holder = r.choice(self.holders)
        newest = self.tokens.get(holder, 0)
        token = max(1, newest + r.choice([-2, -1, 0, 1, 1, 2]))
        self.tokens[holder] = max(newest, token)
        unit = r.choice(UNITS)
        done_of = None
        if unit is not None and r.random() < 0.4:
            a = r.randint(0, 80)
            done_of = [r.randint(1, 4), a, r.randint(a, 100)]
        return [holder, token, unit, done_of]

    def step(self) -> dict[str, Any]:
        r = self.rng
        what = r.choices(
            ["publish", "retry", "resend", "keyed", "queued", "limits", "ttls", "delete", "era"],
            weights=[64, 10, 4, 6, 5, 3, 2, 3, 1],
        )[0]
        if what == "limits":
            self.limits = r.choice(LIMITS)
            return {"do": "limits", "limits": list(self.limits)}
        if what == "ttls":
            self.ttls = r.choice(TTLS)
            return {"do": "ttls", "ttls": list(self.ttls)}
        if what == "delete":
            return {"do": "delete"}
        if what == "era":
            return {"do": "era", "era": self.epoch()}
        # One of the last publishes again, exactly (its answer was lost): one whose first
        # attempt was among the last RETRY_BACK publishes.
        recent = [s for s in self.sent[-RETRY_BACK:] if len(self.sent) - s["origin"] <= RETRY_BACK]
        if what == "retry" and recent:
            again = dict(r.choice(recent))
            again["retry"] = True
            self.sent.append(again)
            return again
        # The last call sent again as it was, as a Redis client library resends a call by
        # itself (HEAD checks the last publish's receipt on every publish).
        if what == "resend" and self.sent:
            again = dict(self.sent[-1])
            self.sent.append(again)
            return again
        kind, args = self.event()
        step: dict[str, Any] = {
            "do": "publish",
            "event": kind,
            "args": args,
            "tags": r.choice([None, None, None, ["user:7"]]),
            "receipt": self.receipt(),
            "claim": self.claim(),
            "epoch": self.epoch(),
            "limits": list(self.limits),
            "ttls": list(self.ttls),
            "keyed": False,
            "retry": False,
            "origin": len(self.sent),  # its first attempt's place among the publishes
        }
        if what == "keyed":
            step["keyed"] = True
            step["receipt"] = r.choice(KEYS_POOL)
        if what == "queued":
            step["starts_run"] = True
            # No holder; a new one (which then publishes); one that has published (refused).
            fresh = f"job-{len(self.holders)}"
            step["run_holder"] = r.choice(["", fresh, fresh, *self.holders[-2:]])
            if step["run_holder"] == fresh:
                self.holders.append(fresh)
            step["queue_position"] = r.randint(0, 9)
        self.sent.append(step)
        return step


def make_steps(seed: int, steps: int) -> list[dict[str, Any]]:
    gen = Gen(random.Random(seed))
    return [gen.step() for _ in range(steps)]


def make_event(kind: str, args: list[Any]) -> Event:
    if kind == "log":
        return log(args[0], args[1])
    if kind == "progress_update":
        return progress_update(args[0], args[1], args[2], args[3])
    if kind == "units":
        return progress_update(args[0], args[1], "s", None, units_done=args[2], units_total=args[3])
    if kind == "stage_change":
        return stage_change(args[0], args[1], args[2])
    if kind == "complete":
        return complete(args[0], args[1])
    return error(args[0], args[1], args[2], args[3], args[4], "en")


# ---------------------------------------------------------------------------------------
# The two calls.


@dataclass
class Side:
    """One script and the project it publishes to."""

    name: str
    project: str
    script: Any  # redis-py's registered Script
    names: list[str]  # its inputs, sorted
    key_names: list[str]
    target: Target
    given_only: list[str] = field(default_factory=list)  # (none before the count)

    def argv(self, values: dict[str, str], patch: list[str]) -> list[str]:
        """Its ARGV for these named inputs, as its contract lays them out."""
        contract = {"inputs": self.names, "given_only": self.given_only}
        return _redis.script_argv(contract, values, patch)

    def values(self, argv: list[str]) -> tuple[dict[str, str], list[str]]:
        """The named inputs and the patch of an ARGV made as `argv` makes it."""
        always = [name for name in self.names if name not in self.given_only]
        values = dict(zip(always, argv[: len(always)], strict=True))
        rest = argv[len(always) :]
        if self.given_only:
            count, rest = int(rest[0]), rest[1:]
            values.update(zip(self.given_only[:count], rest[:count], strict=True))
            rest = rest[count:]
        return values, rest

    def keys(self, receipt: str) -> list[str]:
        by_name = {
            "history": _redis.history_key(self.project),
            "state": _redis.state_key(self.project),
            "receipt": _redis.receipt_key(self.project, receipt),
            "fences": _redis.fences_key(self.project),
            "units": _redis.units_key(self.project),
            "era?": _redis.ERA_KEY,
            "outbox?": _redis.OUTBOX_KEY,
            "running?": _redis.RUNNING_KEY,
        }
        return [by_name[name] for name in self.key_names]

    @property
    def channel(self) -> str:
        return self.target.channel(self.project)


def named_call(step: dict[str, Any], head: Side) -> tuple[dict[str, str], list[str], list[str]]:
    """The step's inputs by name, as the SDK builds them for HEAD's side
    (`_redis.script_call`), with what the SDK never sends set as the step says (a QUEUED
    start, a keyed receipt, the epoch); the SDK's KEYS and the state patch."""
    event = make_event(step["event"], step["args"])
    # What the event makes up is fixed, so a step replays the same.
    event.data["timestamp"] = "2026-12-06T00:00:00.000Z"
    if "trace_id" in event.data:
        event.data["trace_id"] = step["receipt"]
    tags = tuple(step["tags"]) if step["tags"] else None
    prepared = prepare(event, head.project, "en", tags)
    claim = None
    if step["claim"] is not None:
        holder, token, unit, done_of = step["claim"]
        claim = Claim(holder, token, unit, tuple(done_of) if done_of else None)
    history_len, history_bytes = step["limits"]
    active, retention = step["ttls"]
    config = Config(
        history_len=history_len, history_bytes=history_bytes, active_ttl=active, retention=retention
    )
    keys, argv = _redis.script_call(
        head.project, prepared, step["receipt"], claim, head.target, config, step["retry"]
    )
    values, patch = head.values(argv)
    values["new_epoch"] = step["epoch"]
    if step["keyed"]:
        values["keyed"] = "1"
    if step.get("starts_run"):
        values["starts_run"] = "1"
        values["run_holder"] = step["run_holder"]
        patch += ["status", "QUEUED", "queue_position", str(step["queue_position"])]
    return values, keys, patch


def call(side: Side, values: dict[str, str], patch: list[str], receipt: str) -> Any:
    """The side's script with these named inputs: its ARGV in its own names' order."""
    # (its own project's channel; every other input the same)
    own = dict(values, channel=side.channel)
    argv = side.argv(own, patch)
    try:
        return ("ok", side.script(keys=side.keys(receipt), args=argv))
    except redis.ResponseError as err:
        return ("error", str(err))


def answer(raw: Any) -> Any:
    """(id, begun) of an answer, either script's; errors as they are."""
    kind, value = raw
    if kind == "error":
        return raw
    if isinstance(value, str):
        return ("ok", value, 0)
    return ("ok", str(value[0]), int(value[1]))  # {id, begun}


# ---------------------------------------------------------------------------------------
# Comparison.


def snapshot(client: Any, side: Side, receipts: list[str]) -> dict[str, Any]:
    p = side.project
    pipe = client.pipeline(transaction=True)
    pipe.xrange(_redis.history_key(p))
    pipe.hgetall(_redis.state_key(p))
    pipe.smembers(_redis.fences_key(p))
    pipe.hgetall(_redis.units_key(p))
    pipe.sismember(_redis.RUNNING_KEY, side.channel)
    pipe.pttl(_redis.history_key(p))
    pipe.pttl(_redis.state_key(p))
    pipe.ttl(_redis.fences_key(p))
    pipe.ttl(_redis.units_key(p))
    for receipt in receipts:
        pipe.get(_redis.receipt_key(p, receipt))
        pipe.ttl(_redis.receipt_key(p, receipt))
    out = pipe.execute()
    history, state, fences, units, running, h_pttl, s_pttl, f_ttl, u_ttl = out[:9]
    kept = {k: v for k, v in state.items() if not k.startswith(RECEIPT_PREFIX)}
    return {
        "history": history,
        "state": kept,
        "fences": sorted(fences),
        "units": units,
        "running": running,
        "ttl": (h_pttl, s_pttl),
        # EXPIRE of whole seconds on both sides: equal but for a second's tick.
        "other_ttls": (f_ttl, u_ttl),
        "receipt_keys": out[9:],
    }


def outbox(client: Any, side: Side) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = []
    stream = cast(list[tuple[str, dict[str, str]]], client.xrange(_redis.OUTBOX_KEY))
    for _, fields in stream:
        if fields.get("channel") != side.channel:
            continue
        entries.append(
            {k: v for k, v in fields.items() if k != "channel" and not k.startswith(RECEIPT_PREFIX)}
        )
    return entries


def close(a: int, b: int) -> bool:
    return a == b or (a >= 0 and b >= 0 and abs(a - b) <= 1)


@dataclass
class Run:
    client: Any
    base: Side
    head: Side
    publishes: int = 0
    retries: int = 0
    refusals: int = 0
    appended: int = 0
    begun: int = 0
    from_receipt: int = 0  # retries and repeated keys answered with an earlier id
    ttl_checks: int = 0
    last_ttl: int = 0  # ms: the TTL the last append gave (HEAD: up to an eighth more)

    def replay(self, steps: list[dict[str, Any]]) -> str | None:
        """Runs `steps` on a fresh database; the first mismatch, or None."""
        self.client.flushall()
        keyed_seen: list[str] = []
        for i, step in enumerate(steps):
            problem = self.one(step, keyed_seen)
            if problem is not None:
                return f"step {i}: {problem}"
        a, b = outbox(self.client, self.base), outbox(self.client, self.head)
        if a != b:
            return f"outbox differs at the end: base {a} != head {b}"
        return None

    def one(self, step: dict[str, Any], keyed_seen: list[str]) -> str | None:
        c = self.client
        if step["do"] in ("limits", "ttls"):
            return None
        if step["do"] == "delete":
            c.delete(_redis.history_key(self.base.project), _redis.history_key(self.head.project))
            return None
        if step["do"] == "era":
            c.set(_redis.ERA_KEY, step["era"])
            return None
        values, _, patch = named_call(step, self.head)
        if step["keyed"] and step["receipt"] not in keyed_seen:
            keyed_seen.append(step["receipt"])
        before = snapshot(c, self.head, [])
        started = time.monotonic()
        got_base = answer(call(self.base, values, patch, step["receipt"]))
        got_head = answer(call(self.head, values, patch, step["receipt"]))
        a, b = snapshot(c, self.base, keyed_seen), snapshot(c, self.head, keyed_seen)
        elapsed_ms = (time.monotonic() - started) * 1000 + 2
        self.publishes += 1
        self.retries += int(step["retry"])
        if got_base != got_head:
            return f"answers differ: base {got_base} != head {got_head}"
        if got_base[0] == "error":
            self.refusals += 1
        else:
            grew = bool(b["history"]) and (
                not before["history"] or b["history"][-1][0] != before["history"][-1][0]
            )
            self.appended += int(grew)
            self.begun += got_base[2]
            self.from_receipt += int(not grew)
        for what in ("history", "state", "fences", "units", "running"):
            if a[what] != b[what]:
                return f"{what} differs: base {a[what]!r} != head {b[what]!r}"
        keys_a, keys_b = a["receipt_keys"], b["receipt_keys"]
        if keys_a[::2] != keys_b[::2] or not all(
            close(x, y) for x, y in zip(keys_a[1::2], keys_b[1::2], strict=True)
        ):
            return f"keyed receipts differ: base {keys_a} != head {keys_b}"
        if not all(close(x, y) for x, y in zip(a["other_ttls"], b["other_ttls"], strict=True)):
            return f"fences/units TTLs differ: base {a['other_ttls']} != head {b['other_ttls']}"
        return self.ttls(step, values, a, b, before, elapsed_ms)

    def ttls(
        self,
        step: dict[str, Any],
        values: dict[str, str],
        a: dict[str, Any],
        b: dict[str, Any],
        before: dict[str, Any],
        elapsed_ms: float,
    ) -> str | None:
        """The base's keys live `ttl` after an append; HEAD's between `ttl` and
        `ttl + ttl/8`, and never more."""
        appended = len(b["history"]) > 0 and (
            not before["history"] or b["history"][-1][0] != before["history"][-1][0]
        )
        if (a["ttl"][0] == -2) != (b["ttl"][0] == -2):
            return f"one history is there, not the other: base {a['ttl']} head {b['ttl']}"
        if b["ttl"][0] == -2:
            return None
        self.ttl_checks += 1
        if appended:
            ends = values.get("ends_run") == "1"
            ttl = int(values["retention_ttl" if ends else "active_ttl"]) * 1000
            self.last_ttl = ttl
            for pttl in b["ttl"]:
                if not ttl - elapsed_ms <= pttl <= ttl + ttl // 8:
                    return f"head's TTLs {b['ttl']} not within [{ttl}, {ttl + ttl // 8}] ms"
            for pttl in a["ttl"]:
                if not ttl - elapsed_ms <= pttl <= ttl:
                    return f"base's TTLs {a['ttl']} not {ttl} ms after an append"
            return None
        # Nothing appended (a refusal, a retry answered from its receipt): the TTL the
        # last append set, on both keys.
        top = self.last_ttl + self.last_ttl // 8
        for pttl in b["ttl"]:
            if not 0 < pttl <= top:
                return f"head's TTLs {b['ttl']} not within (0, {top}] ms"
        return None


def minimize(run: Run, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A shorter sequence that still fails (one step dropped at a time, last first)."""
    i = len(steps) - 1
    while i >= 0:
        shorter = steps[:i] + steps[i + 1 :]
        if run.replay(shorter) is not None:
            steps = shorter
        i -= 1
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--first-seed", type=int, default=1)
    # The script before receipts on retry and the TTL once per ttl/8 (session 13): its
    # keys live exactly `ttl` after an append, which `Run` checks the base against.
    parser.add_argument("--base", default="907c022")
    parser.add_argument(
        "--head-lua",
        type=Path,
        help="another script to run as HEAD's (with HEAD's inputs): to check that this "
        "check finds a difference",
    )
    args = parser.parse_args()

    base_lua = git_show(args.base, LUA_PATH)
    base_inputs = json.loads(git_show(args.base, INPUTS_PATH))
    head_lua = args.head_lua.read_text() if args.head_lua else _contract.publish_script()
    head_inputs = _contract.publish_inputs()
    committed = git_show("HEAD", LUA_PATH)
    note = "" if committed == head_lua else f" (NOT as committed: {args.head_lua or 'changed'})"
    proc, client = start_redis()
    try:
        target = Target.parse("redis://127.0.0.1")

        def side(name: str, lua: str, inputs: dict[str, Any]) -> Side:
            """One script on its own project, called by its contract's names."""
            keys = [k["name"] for k in inputs["keys"]]
            script = client.register_script(lua)
            names, given_only = sorted(inputs["inputs"]), inputs.get("given_only", [])
            return Side(name, f"diff-{name}", script, names, keys, target, given_only)

        base = side("base", base_lua, base_inputs)
        head = side("head", head_lua, head_inputs)
        print(
            f"base {args.base}: {len(base.names)} inputs; head HEAD{note}: {len(head.names)} "
            f"inputs (only in head: {sorted(set(head.names) - set(base.names))}, only in "
            f"base: {sorted(set(base.names) - set(head.names))})"
        )
        run = Run(client, base, head)
        started = time.monotonic()
        failed: list[int] = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            steps = make_steps(seed, args.steps)
            problem = run.replay(steps)
            if problem is not None:
                failed.append(seed)
                print(f"seed {seed}: MISMATCH at {problem}")
                if len(failed) == 1:
                    short = minimize(run, steps)
                    print(f"seed {seed}: reproduced by {len(short)} steps:")
                    print(json.dumps(short, indent=1))
                    print(f"  -> {run.replay(short)}")
            done = seed - args.first_seed + 1
            if done % 25 == 0:
                print(
                    f"  ... {done} seeds, {run.publishes} publishes, {len(failed)} mismatched, "
                    f"{time.monotonic() - started:.0f} s",
                    flush=True,
                )
        took = time.monotonic() - started
        print(
            f"{args.seeds} seeds x {args.steps} steps: {run.publishes} publishes compared "
            f"({run.appended} appended, {run.begun} began a history or run, "
            f"{run.retries} retries, {run.from_receipt} answered from a receipt, "
            f"{run.refusals} refused as STALE), {run.ttl_checks} TTL "
            f"checks, {len(failed)} seeds with a mismatch {failed[:20]}, {took:.1f} s"
        )
        return 1 if failed else 0
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
