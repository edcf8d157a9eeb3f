"""Time from a job's `complete` to the webhook receiver, p50/p99 over N jobs.

Starts its own redis-server and `progress-hub serve --webhook` (the binary given, e.g.
target/release/progress-hub) on free ports, and a receiver (stdlib HTTP server) here.
Each job is a `complete` POSTed to the hub's publish API, one at a time; its latency is
the time from just before that POST to the webhook's arrival (the POST's own time to its
202 is printed too). The floor, measured in the same run: a
POST from here straight to the same receiver (what one HTTP delivery costs at least).

    python3 scripts/webhook_latency.py target/release/progress-hub 1000
"""

import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    binary, jobs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    arrived: dict[str, float] = {}
    done = threading.Condition()

    class Receiver(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            at = time.perf_counter()
            project = json.loads(body).get("data", {}).get("project_id", "")
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()
            with done:
                arrived.setdefault(project, at)
                done.notify_all()

        def log_message(self, *args: object) -> None:
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"

    workdir = tempfile.mkdtemp()
    redis_port, hub_port = free_port(), free_port()
    redis = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(redis_port),
            "--save",
            "",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    hub = subprocess.Popen(
        [
            binary,
            "serve",
            "--listen",
            f"127.0.0.1:{hub_port}",
            "--no-worker",
            "--redis-url",
            f"redis://127.0.0.1:{redis_port}",
            "--webhook",
            hook,
            "--webhook-secret",
            SECRET,
            "--max-projects-per-client",
            "0",
            "--new-projects-per-minute",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        for _ in range(300):
            if hub.poll() is not None:
                sys.exit(f"the hub exited ({hub.returncode}) before it was ready")
            try:
                probe = http.client.HTTPConnection("127.0.0.1", hub_port, timeout=1)
                probe.request("GET", "/readyz")
                if probe.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            sys.exit("the hub was not ready within 30 s")
        conn = http.client.HTTPConnection("127.0.0.1", hub_port)
        sent: dict[str, float] = {}
        accepted: list[float] = []
        event = json.dumps({"event": "complete", "data": {"status": "COMPLETED"}})
        for n in range(jobs):
            project = f"lat{n}"
            sent[project] = time.perf_counter()
            conn.request(
                "POST",
                f"/api/v1/projects/{project}/events",
                event,
                {"content-type": "application/json"},
            )
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 202, answer.status
            accepted.append((time.perf_counter() - sent[project]) * 1000)
            with done:  # one at a time: a latency, not a queue's depth
                done.wait_for(lambda p=project: p in arrived, timeout=10)
        latencies = [(arrived[p] - sent[p]) * 1000 for p in sent if p in arrived]
        floor_conn = http.client.HTTPConnection("127.0.0.1", receiver.server_address[1])
        floor = []
        for n in range(jobs):
            body = json.dumps({"data": {"project_id": f"floor{n}"}})
            start = time.perf_counter()
            floor_conn.request(
                "POST", "/hook", body, {"content-type": "application/json"}
            )
            floor_conn.getresponse().read()
            floor.append((time.perf_counter() - start) * 1000)
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        f50, f99 = percentile(floor, 50), percentile(floor, 99)
        print(f"jobs {jobs}, delivered {len(latencies)}")
        print(f"complete -> receiver  p50 {p50:.2f} ms  p99 {p99:.2f} ms")
        a50, a99 = percentile(accepted, 50), percentile(accepted, 99)
        print(
            f"of which the publish  p50 {a50:.2f} ms  p99 {a99:.2f} ms (POST to its 202)"
        )
        print(f"floor (direct POST)   p50 {f50:.2f} ms  p99 {f99:.2f} ms")
        print(f"ratio                 p50 {p50 / f50:.1f}x  p99 {p99 / f99:.1f}x")
    finally:
        hub.terminate()
        redis.terminate()
        hub.wait()
        redis.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
