"""Turns the raw output of scripts/bench.sh into BENCHMARKS.md: every figure of the hub
divided by the floor's in the same run (and the Python design's where it ran), each
run's ratio and the median of the runs, and the reconnect storm."""
import platform
import re
import statistics
import subprocess
import sys

raw = open(sys.argv[1], encoding="utf-8").read()
# results[name][side] = [RESULT dict of run 1, run 2, ...]
results = {}
names = []
side = name = None
for line in raw.splitlines():
    m = re.match(r"== (?:run (\d+) )?(hub|floor|python): (.*)", line)
    if m:
        side, name = m.group(2), m.group(3)
        if name not in names:
            names.append(name)
        continue
    if line.startswith("RESULT ") and side:
        fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        results.setdefault(name, {}).setdefault(side, []).append(fields)
        side = None
runs = max((len(v) for r in results.values() for v in r.values()), default=0)


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# Counts are whole numbers; everything else keeps two decimals below 100.
COUNTS = {"lost", "duplicates", "clients", "resumed", "unrecovered", "expected", "received", "published"}


def fmt(value, digits=2, count=False):
    if value is None:
        return "—"
    if count or abs(value) >= 100:
        return f"{value:,.0f}"
    if value == 0:
        return "0"
    return f"{value:.{digits}f}"


def cell(dicts, key):
    """The median of the runs, and every run's value when there are several."""
    values = [num(d.get(key)) for d in dicts]
    m = median(values)
    if m is None:
        return "—"
    count = key in COUNTS
    if len(values) == 1:
        return fmt(m, count=count)
    return f"{fmt(m, count=count)} ({' / '.join(fmt(v, count=count) for v in values)})"


def cpu():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return out.split("Model name:")[1].splitlines()[0].strip()
    except Exception:
        return platform.processor()


storms = [n for n in names if any(d.get("scenario") == "storm" for v in results.get(n, {}).values() for d in v)]
scenarios = [n for n in names if n not in storms]

print("# Benchmarks\n")
print("Produced by `bash scripts/bench.sh` (load tool: `target/release/progress-hub-bench`). Every "
      "scenario runs against progress-hub, against the **floor** (`progress-hub-bench floor`: the "
      "least relay of the hub's shape — one Redis subscriber, SUBSCRIBE per watched project, every "
      "message written to every client of the project, `connected` first, pings answered, the hub's "
      "socket settings; no history, see docs/benchmark-notes.md) and, where it can, against the "
      "original Python design (FastAPI + uvicorn/uvloop, Redis pool cap raised): one after the "
      "other, each with its own fresh redis-server and server process. Absolute figures on this "
      "shared machine move 2× between runs, so the claims are the **ratios within a run**.\n")
print(f"Machine: {cpu()}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores; "
      f"load tool, server and Redis on the same box (loopback). Runs: {runs}; "
      "a cell is the median of the runs, with each run's value in brackets.\n")

cols = [("lost", "lost"), ("duplicates", "dup"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
        ("p999_ms", "p99.9 ms"), ("max_ms", "max ms"), ("cpu_us_per_frame", "server µs/frame"),
        ("rss_per_conn_kib", "server KiB/conn"), ("cycles_per_s", "cycles/s"),
        ("cpu_us_per_cycle", "server µs/cycle"), ("clients", "connected")]
print("| scenario | side | " + " | ".join(c[1] for c in cols) + " |")
print("|---|---|" + "---|" * len(cols))
for n in scenarios:
    for s in ("hub", "floor", "python"):
        dicts = results.get(n, {}).get(s)
        if dicts:
            print(f"| {n} | {s} | " + " | ".join(cell(dicts, k) for k, _ in cols) + " |")


def ratios(n, a_side, b_side, key, invert=False):
    """a ÷ b per run (paired by run order), and their median."""
    a = results.get(n, {}).get(a_side, [])
    b = results.get(n, {}).get(b_side, [])
    per_run = []
    for x, y in zip(a, b):
        x, y = num(x.get(key)), num(y.get(key))
        if x is None or y is None:
            continue
        if invert:
            x, y = y, x
        per_run.append(x / y if y > 0 else None)
    m = median(per_run)
    if m is None:
        return "—"
    text = f"{m:.2f}×"
    if len(per_run) > 1:
        text += " (" + " / ".join("—" if r is None else f"{r:.2f}" for r in per_run) + ")"
    return text


print("\n## Hub ÷ floor (same run; below 1 is better than the floor, except cycles/s)\n")
print("| scenario | p50 latency | p99 latency | server CPU per frame | RSS per connection | "
      "churn cycles/s | server CPU per cycle | lost (hub / floor) |")
print("|---|---|---|---|---|---|---|---|")
for n in scenarios:
    r = results.get(n, {})
    if "hub" not in r or "floor" not in r:
        continue
    lost = f"{cell(r['hub'], 'lost')} / {cell(r['floor'], 'lost')}"
    print(f"| {n} | {ratios(n, 'hub', 'floor', 'p50_ms')} | {ratios(n, 'hub', 'floor', 'p99_ms')} | "
          f"{ratios(n, 'hub', 'floor', 'cpu_us_per_frame')} | {ratios(n, 'hub', 'floor', 'rss_per_conn_kib')} | "
          f"{ratios(n, 'hub', 'floor', 'cycles_per_s')} | {ratios(n, 'hub', 'floor', 'cpu_us_per_cycle')} | {lost} |")

if any("python" in results.get(n, {}) for n in scenarios):
    print("\n## Python ÷ hub (same run; above 1 means the hub is better)\n")
    print("| scenario | p99 latency | server CPU per frame | RSS per connection | churn cycles/s (hub ÷ Python) |")
    print("|---|---|---|---|---|")
    for n in scenarios:
        r = results.get(n, {})
        if "hub" not in r or "python" not in r:
            continue
        print(f"| {n} | {ratios(n, 'python', 'hub', 'p99_ms')} | {ratios(n, 'python', 'hub', 'cpu_us_per_frame')} | "
              f"{ratios(n, 'python', 'hub', 'rss_per_conn_kib')} | {ratios(n, 'hub', 'python', 'cycles_per_s')} |")

if storms:
    print("\n## Reconnect storm (`progress-hub-bench storm`, hub only)\n")
    print("The watched hub is stopped (SIGTERM: close 1012) and a new one started on the same port while "
          "a second hub keeps publishing through the publish path; every client reconnects with the JS "
          "client's jitter and resumes from its last id. *storm s*: the new hub's first accept → the last "
          "client's `connected`; *Redis cmds/resume*: `INFO commandstats` over the storm less what "
          "publishing alone costs per event; *hub CPU*: the new hub from its start to the last resume; "
          "*Redis CPU*: over the storm (publishing alone in brackets).\n")
    scols = [("clients", "clients"), ("resumed", "resumed"), ("storm_s", "storm s"),
             ("resumes_per_s", "resumes/s"), ("resume_p50_s", "resume p50 s"), ("resume_p99_s", "resume p99 s"),
             ("redis_cmds_per_resume", "Redis cmds/resume"), ("hub_cpu_s", "hub CPU s"),
             ("redis_cpu_s", "Redis CPU s"), ("redis_cpu_publishing_s", "(publishing)"),
             ("lost", "lost"), ("duplicates", "dup"), ("unrecovered", "unrecovered")]
    print("| scenario | " + " | ".join(c[1] for c in scols) + " |")
    print("|---|" + "---|" * len(scols))
    for n in storms:
        dicts = results[n].get("hub", [])
        print(f"| {n} | " + " | ".join(cell(dicts, k) for k, _ in scols) + " |")

try:
    print()
    print(open("docs/benchmark-notes.md", encoding="utf-8").read())
except OSError:
    pass
