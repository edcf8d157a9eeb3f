"""Publish cost from Python, in µs per event, against a local redis-server:

- `lua`: one `ProgressService.publish_log` per event (validation, frame template, one
  EVALSHA of the hub's publish.lua: history + state + PUBLISH), waiting for each reply;
- `lua pipelined`: the same script calls, `--batch` per round trip (a redis-py
  pipeline; what a bulk publisher could do);
- `plain PUBLISH`: the original ProgressService's `PUBLISH progress:<id> <json>`, one
  per round trip;
- `python side only`: validation, frame template and script arguments, no I/O.

    python bench_publish.py [--events 5000] [--batch 100]

Starts its own redis-server on a free port (needs `redis-server` on PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import time

import redis

import progress_hub
from progress_hub import ProgressService, _event, _redis, _sync, _transport_sync


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def per_event_us(started: float, events: int) -> float:
    return (time.perf_counter() - started) / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        progress_hub.configure(redis_url=f"redis://127.0.0.1:{port}")
        n = args.events
        ProgressService.publish_log("warmup", "INFO", "x")

        started = time.perf_counter()
        for i in range(n):
            ProgressService.publish_log("bench-lua", "INFO", f"[{i}/{n}] 正在生成圖片")
        lua = per_event_us(started, n)

        publisher = _sync.publisher()
        transport = publisher.transport
        assert isinstance(transport, _transport_sync.RedisTransport)
        started = time.perf_counter()
        for first in range(0, n, args.batch):
            pipe = transport.client.pipeline(transaction=False)
            for i in range(first, min(first + args.batch, n)):
                held = publisher.hold(
                    "bench-pipe", _event.log("INFO", f"[{i}/{n}] 正在生成圖片"), None
                )
                keys, argv = _redis.script_call(
                    "bench-pipe",
                    held.prepared,
                    held.receipt,
                    None,
                    transport.target,
                    transport.config,
                )
                transport.script(keys=keys, args=argv, client=pipe)
            pipe.execute()
        pipelined = per_event_us(started, n)

        started = time.perf_counter()
        for i in range(n):
            message = {
                "event": "log",
                "data": {
                    "level": "INFO",
                    "message": f"[{i}/{n}] 正在生成圖片",
                    "timestamp": _event.now_iso8601(),
                },
            }
            client.publish("progress:bench-plain", json.dumps(message))
        plain = per_event_us(started, n)

        started = time.perf_counter()
        for i in range(n):
            held = publisher.hold("bench-cpu", _event.log("INFO", f"[{i}/{n}] 正在生成圖片"), None)
            _redis.script_call(
                "bench-cpu", held.prepared, held.receipt, None, transport.target, transport.config
            )
        python_only = per_event_us(started, n)

        assert client.xlen("progress:{bench-lua}:history") == min(n, 1000)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"events={n} batch={args.batch} load average {load} on {os.cpu_count()} CPUs")
        print(f"lua (one round trip per event):   {lua:7.1f} µs/event")
        print(f"lua pipelined ({args.batch}/round trip):   {pipelined:7.1f} µs/event")
        print(f"plain PUBLISH (one per round trip): {plain:7.1f} µs/event")
        print(f"python side only (no I/O):          {python_only:7.1f} µs/event")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
