"""A tag with N projects (issue 26, "Measured"): how long a tag subscription's snapshot
takes, and the Redis commands it costs, against a floor measured in the same run (one
client pipelining HGETALL of the same N state hashes: the least Redis work that reads
them all). Then the commands per second the subscription's polling costs while all N
runs are active, with K subscriptions to the tag (on K connections): a tag is polled
once per hub, so K subscriptions should cost what one does.

    python scripts/tag_snapshot_bench.py target/release/progress-hub [N] [K]

Needs redis-server on PATH and the Python SDK's dependencies (clients/python/.venv);
starts its own redis-server and hub on free ports.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "clients/python/src"))

import progress_hub
from progress_hub import _event, _sync

TAG = "bench:tag"
COUNTED = ("zrevrangebyscore", "evalsha", "eval", "hgetall", "zrem")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command_counts(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in COUNTED}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {c: after[c] - before[c] for c in COUNTED if after[c] != before[c]}


async def snapshot(url: str, n: int) -> float:
    async with websockets.connect(url, max_size=None) as ws:
        assert json.loads(await ws.recv())["event"] == "connected"
        start = time.perf_counter()
        await ws.send(json.dumps({"event": "subscribe", "data": {"tag": TAG}}))
        got = 0
        while got < n:
            frame = json.loads(await ws.recv())
            if frame["event"] == "project_state":
                got += 1
        return time.perf_counter() - start


async def poll_cost(
    url: str, client: redis.Redis, n: int, seconds: float, k: int
) -> dict[str, int]:
    sockets = []
    try:
        for _ in range(k):
            ws = await websockets.connect(url, max_size=None)
            sockets.append(ws)
            await ws.recv()
            await ws.send(json.dumps({"event": "subscribe", "data": {"tag": TAG}}))
            got = 0
            while got < n:
                if json.loads(await ws.recv())["event"] == "project_state":
                    got += 1
        before = command_counts(client)
        await asyncio.sleep(seconds)
        return delta(before, command_counts(client))
    finally:
        for ws in sockets:
            await ws.close()


def main() -> None:
    hub_bin, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    k = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    port = free_port()
    rds = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    hub = None
    try:
        client = redis.Redis(port=port, decode_responses=True)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        url = f"redis://127.0.0.1:{port}"
        hub = subprocess.Popen(
            [
                hub_bin,
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--redis-url",
                url,
                "--no-worker",
            ],
            stderr=subprocess.STDOUT,
            stdout=subprocess.PIPE,
            text=True,
            env={"HUB_LOG_FORMAT": "text", "PATH": "/usr/bin:/bin"},
        )
        addr = None
        assert hub.stdout is not None
        for line in iter(hub.stdout.readline, ""):
            if m := re.search(r"listening on http://([0-9.:]+)", line):
                addr = m.group(1)
                break
        assert addr, "the hub did not start"
        # Keep reading its log, so it never blocks on a full pipe.
        out = hub.stdout
        threading.Thread(target=lambda: [None for _ in out], daemon=True).start()
        progress_hub.configure(redis_url=url, hub_url=None, coalesce_window=0.0)
        publisher = _sync.publisher()
        projects = [f"p{i:05d}" for i in range(n)]
        for project in projects:
            event = _event.progress_update("RENDERING", 10, "rendering", None)
            publisher.publish(project, event, tags=[TAG])
        # The floor: every state hash in one pipelined round trip.
        start = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for project in projects:
            pipe.hgetall(f"progress:{{{project}}}:state")
        pipe.execute()
        floor = time.perf_counter() - start
        ws_url = f"ws://{addr}/api/v1/progress"
        before = command_counts(client)
        took = asyncio.run(snapshot(ws_url, n))
        used = delta(before, command_counts(client))
        polled = asyncio.run(poll_cost(ws_url, client, n, 10.0, k))
        print(f"projects: {n}")
        print(f"floor (pipelined HGETALL of {n} states): {floor * 1000:.0f} ms")
        print(
            f"tag snapshot (subscribe → {n} project_state): {took * 1000:.0f} ms = {took / floor:.1f}x the floor"
        )
        print(
            f"Redis commands for the snapshot: {used} = {sum(used.values()) / n:.2f} per project"
        )
        print(
            f"Redis commands per second while {k} subscription(s) follow {n} active projects: "
            f"{ {c: round(v / 10.0) for c, v in polled.items()} }"
        )
    finally:
        if hub is not None:
            hub.terminate()
            hub.wait()
        rds.terminate()
        rds.wait()


if __name__ == "__main__":
    main()
