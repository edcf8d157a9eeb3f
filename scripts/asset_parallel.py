"""A generation job's wall time with its ASSETS stage run one unit at a time and in
parallel (`--asset-concurrency`), the mock providers' delays the same.

For each concurrency given, starts `progress-hub serve` (the binary given; in-process
broker and worker) on a free port with `--mock-delay <delay>`, then runs `runs` jobs one
after the other: each job's wall time and its ASSETS stage's time. The floor, in the
same run: the same jobs with `--mock-delay 0ms` (everything a job costs but the
providers' waits), and what the mock waits add up to on the job's
critical path (computed from the plan: 36 units one by one; in parallel, the voice, then
the images and the avatar in `--asset-concurrency` slots, in the plan's order).
The job's time runs from just before its POST to the arrival of its `complete` on an SSE
stream opened before it; the stage's, between its `stage_change` timestamps.

    python3 scripts/asset_parallel.py target/debug/progress-hub 100ms 5 1 2 4 8
"""

import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    return response.status, text


def wait_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if request(port, "GET", "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("the hub did not start")


def follow(port: int, project: str, frames: list[tuple[float, dict]], ready: threading.Event) -> None:
    """Reads the project's SSE stream until its `complete`: (arrival, frame) each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", f"/api/v1/projects/{project}/events")
    response = conn.getresponse()
    ready.set()
    buffer = b""
    while True:
        chunk = response.read1(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            for line in block.decode().splitlines():
                if line.startswith("data:"):
                    frame = json.loads(line[5:])
                    frames.append((time.monotonic(), frame))
                    if frame.get("event") == "complete":
                        conn.close()
                        return


def one_job(port: int, project: str) -> tuple[float, float]:
    """(the job's wall time, its ASSETS stage's time), in seconds."""
    frames: list[tuple[float, dict]] = []
    ready = threading.Event()
    reader = threading.Thread(target=follow, args=(port, project, frames, ready))
    reader.start()
    ready.wait(10)
    started = time.monotonic()
    status, text = request(port, "POST", f"/api/v1/projects/{project}/generate", "{}")
    if status != 202:
        raise SystemExit(f"generate: {status} {text}")
    reader.join(120)
    end, last = frames[-1]
    if last.get("event") != "complete" or last["data"]["status"] != "COMPLETED":
        raise SystemExit(f"the job did not complete: {last}")
    changes = [
        (f["data"]["current_stage"], datetime.fromisoformat(f["data"]["timestamp"].replace("Z", "+00:00")))
        for _, f in frames
        if f.get("event") == "stage_change"
    ]
    order = [stage for stage, _ in changes]
    times = dict(changes)
    after = order[order.index("ASSETS_GENERATING") + 1]
    return end - started, (times[after] - times["ASSETS_GENERATING"]).total_seconds()


def critical_path(parallel: int) -> tuple[int, int]:
    """Units of mock work on the job's critical path, and of its ASSETS stage."""
    slots = [0] * max(parallel, 1)
    for weight in [1] * 15 + [3]:  # the images, then the avatar: the plan's order
        at = slots.index(min(slots))
        slots[at] += weight
    assets = 2 + max(slots)  # the voice first
    return 3 + assets + 4 * 2 + 1 + 4, assets


def run(binary: str, delay: str, runs: int, parallel: int) -> tuple[list[float], list[float]]:
    port = free_port()
    hub = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--mock-delay", delay,
         "--asset-concurrency", str(parallel), "--retry-backoff", "5ms"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_up(port)
        results = [one_job(port, f"bench-{parallel}-{i}") for i in range(runs)]
    finally:
        hub.terminate()
        hub.wait(timeout=30)
    return [w for w, _ in results], [a for _, a in results]


def main() -> None:
    binary, delay, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    levels = [int(n) for n in sys.argv[4:]] or [1, 4]
    unit = float(delay.removesuffix("ms")) / 1000
    print(f"mock delay {delay} a unit, {runs} jobs each, medians (min–max)")
    print("| --asset-concurrency | job wall time | ASSETS stage | mock waits on the critical path (job / ASSETS) | same jobs at --mock-delay 0ms |")
    print("|---|---|---|---|---|")
    for parallel in levels:
        walls, assets = run(binary, delay, runs, parallel)
        floor, _ = run(binary, "0ms", runs, parallel)
        path, path_assets = critical_path(parallel)
        fmt = lambda xs: f"{statistics.median(xs):.2f} s ({min(xs):.2f}–{max(xs):.2f})"  # noqa: E731
        print(
            f"| {parallel} | {fmt(walls)} | {fmt(assets)} | {path * unit:.2f} s / {path_assets * unit:.2f} s "
            f"| {fmt(floor)} |"
        )


if __name__ == "__main__":
    main()
