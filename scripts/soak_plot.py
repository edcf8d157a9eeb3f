#!/usr/bin/env python3
"""Judges and plots a soak's samples (the CSV of `progress-hub-bench soak`).

Why: "no memory leak over long runs" is a claim about a curve, so the soak writes the
curve and this script states the bound it is held to and says whether it held:

- hub RSS: every sample after the warm-up within +10 % of its median over the 10
  minutes after the warm-up (minutes 10-20 of the hour), and the last 10 minutes'
  median within +10 % of it too;
- hub open descriptors: the last 10 minutes' median within 10 of the median over the
  10 minutes after the warm-up (the churners' few connections come and go, and a
  reconnect storm empties the hub for a moment, so single samples swing);
- hub threads: the last 10 minutes' median no higher than the first 10 minutes' after
  warm-up plus 2 (tokio's blocking pool grows and shrinks on its own);
- Redis used_memory: the same bound as RSS (each project's history is capped, so it
  must level off), leaving out the sample taken just after each restart (Redis is then
  still loading its AOF: ~1 MB, not a steady-state figure).

The references are medians over a window rather than the one sample at minute 10: that
sample is taken just after a Redis restart and a reconnect storm's recovery.

Also printed, for the record: the least-squares slope of RSS after the warm-up, per hour.
The verdict goes to stdout as a Markdown table (for BENCHMARKS.md); with --png and
matplotlib available, the plot is written too (without matplotlib, only the verdict).

    python3 scripts/soak_plot.py docs/soak/soak.csv --warmup 600 --png docs/soak/soak.png
"""

import argparse
import csv
import statistics
import sys


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{path}: no samples")
    return rows


def series(rows, name):
    """(t, value) for every sample that has the value (a sample during a Redis
    restart may lack Redis's)."""
    return [(int(r["t_s"]), float(r[name])) for r in rows if r.get(name)]


def median_between(points, lo, hi):
    values = [v for t, v in points if lo <= t < hi]
    return statistics.median(values) if values else float("nan")


def slope_per_hour(points):
    n = len(points)
    if n < 2:
        return float("nan")
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / den * 3600 if den else float("nan")


def restart_ticks(rows):
    """The samples taken just after a Redis restart (its counter steps there)."""
    ticks, prev = set(), 0
    for r in rows:
        if int(r["redis_restarts"]) > prev:
            ticks.add(int(r["t_s"]))
        prev = int(r["redis_restarts"])
    return ticks


def verdict(rows, warmup):
    end = int(rows[-1]["t_s"])
    window = min(600, max(10, (end - warmup) // 2))
    checks = []

    rss = series(rows, "hub_rss_kib")
    ref = median_between(rss, warmup, warmup + window)
    after = [(t, v) for t, v in rss if t >= warmup]
    peak = max(v for _, v in after)
    last = median_between(rss, end - window, end + 1)
    checks.append((
        "hub RSS (MiB)",
        f"{rss[0][1] / 1024:.1f}",
        f"{ref / 1024:.1f}",
        f"{peak / 1024:.1f}",
        f"{rss[-1][1] / 1024:.1f}",
        "max and last-window median ≤ +10 % of the first window's median",
        peak <= ref * 1.10 and last <= ref * 1.10,
        f"max {100 * (peak / ref - 1):+.1f} %, last-window median {100 * (last / ref - 1):+.1f} %, "
        f"slope {slope_per_hour(after) / 1024:+.2f} MiB/h",
    ))

    # Descriptors and threads: the last window's median against the first's after warm-up.
    for label, column, bound, held in [
        ("hub open fds", "hub_fds", "last-window median within ±10 of the first window's after warm-up",
         lambda first, last: abs(last - first) <= 10),
        ("hub threads", "hub_threads", "last-window median ≤ first window's after warm-up + 2",
         lambda first, last: last <= first + 2),
    ]:
        points = series(rows, column)
        first = median_between(points, warmup, warmup + window)
        last = median_between(points, end - window, end + 1)
        checks.append((
            label,
            f"{points[0][1]:.0f}",
            f"{first:.0f}",
            f"{max(v for t, v in points if t >= warmup):.0f}",
            f"{points[-1][1]:.0f}",
            bound,
            held(first, last),
            f"medians {first:.0f} → {last:.0f}",
        ))

    restarted = restart_ticks(rows)
    used = [(t, v) for t, v in series(rows, "redis_used_memory") if t not in restarted]
    ref = median_between(used, warmup, warmup + window)
    peak = max(v for t, v in used if t >= warmup)
    last = median_between(used, end - window, end + 1)
    checks.append((
        "Redis used_memory (MiB)",
        f"{used[0][1] / 2**20:.1f}",
        f"{ref / 2**20:.1f}",
        f"{peak / 2**20:.1f}",
        f"{used[-1][1] / 2**20:.1f}",
        "max and last-window median ≤ +10 % of the first window's median (restart samples left out)",
        peak <= ref * 1.10 and last <= ref * 1.10,
        f"max {100 * (peak / ref - 1):+.1f} %, last-window median {100 * (last / ref - 1):+.1f} %",
    ))
    return checks, window


def plot(rows, warmup, png):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib not found: {png} not written)")
        return
    minutes = lambda points: [t / 60 for t, _ in points]  # noqa: E731
    panels = [
        ("hub RSS (MiB)", series(rows, "hub_rss_kib"), 1 / 1024),
        ("hub open fds", series(rows, "hub_fds"), 1),
        ("hub threads", series(rows, "hub_threads"), 1),
        ("Redis used_memory (MiB)", series(rows, "redis_used_memory"), 1 / 2**20),
        ("hub connections", series(rows, "hub_connections"), 1),
    ]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(10, 12))
    # Where the events were: a storm or a restart shows as a step in its counter.
    marks = {"storms": ("tab:orange", "reconnect storm"), "redis_restarts": ("tab:red", "Redis restart")}
    for ax, (label, points, scale) in zip(axes, panels):
        ax.plot(minutes(points), [v * scale for _, v in points], lw=1)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.axvline(warmup / 60, color="grey", ls="--", lw=1)
        for column, (color, _) in marks.items():
            prev = 0
            for r in rows:
                if int(r[column]) > prev:
                    ax.axvline(int(r["t_s"]) / 60, color=color, lw=0.8, alpha=0.7)
                prev = int(r[column])
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    handles = [plt.Line2D([], [], color=c, label=l) for c, l in marks.values()]
    handles.append(plt.Line2D([], [], color="grey", ls="--", label="end of warm-up"))
    axes[0].legend(handles=handles, loc="lower right", fontsize=8)
    fig.suptitle("progress-hub soak: one release hub, Redis mode, sampled every 10 s")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    print(f"wrote {png}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--warmup", type=int, default=600, help="seconds of warm-up")
    parser.add_argument("--png")
    args = parser.parse_args()
    rows = read(args.csv)
    checks, window = verdict(rows, args.warmup)
    print(f"\nwarm-up {args.warmup} s; windows of {window} s\n")
    print("| series | start | first window after warm-up (median) | max after warm-up | end | bound | held | figures |")
    print("|---|---|---|---|---|---|---|---|")
    for name, start, ref, peak, end, bound, held, figures in checks:
        print(f"| {name} | {start} | {ref} | {peak} | {end} | {bound} | {'yes' if held else 'NO'} | {figures} |")
    print(f"\nverdict: {'flat within every bound' if all(c[6] for c in checks) else 'NOT flat'}")
    if args.png:
        plot(rows, args.warmup, args.png)


if __name__ == "__main__":
    main()
