"""Turns the raw output of scripts/bench.sh into BENCHMARKS.md (tables with ratios)."""
import platform
import re
import subprocess
import sys

raw = open(sys.argv[1], encoding="utf-8").read()
results = {}
side = name = None
for line in raw.splitlines():
    m = re.match(r"== (hub|python): (.*)", line)
    if m:
        side, name = m.group(1), m.group(2)
        continue
    if line.startswith("RESULT ") and side:
        results[(side, name)] = dict(kv.split("=", 1) for kv in line.split()[1:])

def cpu():
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True).stdout.split("Model name:")[1].splitlines()[0].strip()
    except Exception:
        return platform.processor()

names = []
for (_, n) in results:
    if n not in names:
        names.append(n)
cols = [("lost", "lost"), ("duplicates", "dup"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
        ("p999_ms", "p99.9 ms"), ("max_ms", "max ms"), ("cpu_us_per_frame", "server µs/frame"),
        ("rss_per_conn_kib", "server KiB/conn"), ("cycles_per_s", "cycles/s"), ("clients", "connected")]
print("# Benchmarks\n")
print("Produced by `bash scripts/bench.sh` (load tool: `target/release/progress-hub-bench`); "
      "the same scenarios against progress-hub and the original Python design "
      "(FastAPI + uvicorn/uvloop, Redis pool cap raised), each with its own fresh redis-server, "
      "one after the other on this machine.\n")
print(f"Machine: {cpu()}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores; "
      "load tool, server and Redis on the same box (loopback).\n")
print("| scenario | side | " + " | ".join(c[1] for c in cols) + " |")
print("|---|---|" + "---|" * len(cols))
for n in names:
    for s in ("hub", "python"):
        r = results.get((s, n))
        if r is None:
            print(f"| {n} | {s} | " + " | ".join("—" for _ in cols) + " |")
            continue
        print(f"| {n} | {s} | " + " | ".join(r.get(k, "—") for k, _ in cols) + " |")
print("\n## Ratios (Python ÷ hub; above 1 means the hub is better)\n")
print("| scenario | p99 latency | server CPU per frame | RSS per connection | churn cycles/s (hub ÷ Python) |")
print("|---|---|---|---|---|")
def ratio(a, b):
    try:
        a, b = float(a), float(b)
        return f"{a / b:.1f}×" if b > 0 else "—"
    except (TypeError, ValueError):
        return "—"
for n in names:
    h, p = results.get(("hub", n), {}), results.get(("python", n), {})
    print(f"| {n} | {ratio(p.get('p99_ms'), h.get('p99_ms'))} | {ratio(p.get('cpu_us_per_frame'), h.get('cpu_us_per_frame'))} | "
          f"{ratio(p.get('rss_per_conn_kib'), h.get('rss_per_conn_kib'))} | {ratio(h.get('cycles_per_s'), p.get('cycles_per_s'))} |")

try:
    print(open("docs/benchmark-notes.md", encoding="utf-8").read())
except OSError:
    pass
