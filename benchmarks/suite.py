"""The benchmark tool: every suite in one run, one table each, JSON and a chart.

    python -m benchmarks [--suites echo,many,http,udp,tls,idle,ipc,micro] [--quick]
        [--runs 3] [--duration 3] [--warmup 1] [--out build/bench/report]

Linux: each suite (benchmarks/<suite>.py, also runnable on its own) measures
iocploop, stock asyncio, uvloop and rloop side by side (where rloop lacks an
API, its rows say so), each configuration in a fresh server process, runs
interleaved loop after loop, medians printed with p50/p99 latency, the
server's CPU per request, the load generator's CPU and ratios to uvloop and
rloop; `echo` also runs benchmarks/uring_echo.c, the C io_uring reference,
and both parameterisations of its sockets and streams servers (vmbench's and
ours, benchmarks/echo_server.py).  `many` is the echo with
1,000 connections, `idle` the memory of 10,000 idle ones, `ipc` subprocess
pipes, spawns, Unix sockets and add_reader (benchmarks/ipc.py).  Writes
OUT/<suite>.json, OUT/results.json (all of them, with the command and the
machine) and OUT/chart.png (matplotlib, from benchmarks/requirements.txt).

Windows (Wine here): only the loop micro-benchmarks, on iocploop and the
ProactorEventLoop, as a correctness smoke: timings under Wine say nothing
about Windows, and the output says so.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITES = ("echo", "many", "http", "udp", "tls", "idle", "ipc", "micro")
WINE_NOTE = ("Windows smoke (Wine here): iocploop and the ProactorEventLoop run the loop "
             "micro-benchmarks to show they work; Wine timings say nothing about Windows "
             "performance and are not results.")


def suite_argv(suite: str, args) -> list[str]:
    """The command line each suite gets: its own defaults, trimmed to a
    run of reasonable length, the common timing options, --quick smaller."""
    timing = ["--runs", str(args.runs), "--duration", str(args.duration),
              "--warmup", str(args.warmup)]
    if suite == "echo":
        return ["--styles", "sockets,streams,protocol,buffered", "--params", "vmbench,ours",
                "--sizes", "1" if args.quick else "1,10,100", "--concurrency", "16", *timing]
    if suite == "many":
        return ["--styles", "protocol", "--sizes", "1", "--concurrency",
                "200" if args.quick else "1000", "--loops", "asyncio,uvloop,rloop,iocploop",
                *timing]
    if suite == "http":
        return ["--sizes", "16", "--modes", "readwrite"] * args.quick + timing
    if suite == "udp":
        return ["--sizes", "1024", "--concurrency", "16"] + timing
    if suite == "tls":
        return ["--sizes", "1" if args.quick else "1,100", "--concurrency", "16", *timing]
    if suite == "idle":
        return ["--runs", str(args.runs), "--connections", "1000" if args.quick else "10000"]
    if suite == "ipc":
        return timing
    if suite == "micro":
        return ["--runs", str(args.runs)] + (["--scale", "0.1"] if args.quick else [])
    raise ValueError(suite)


def run_suite(suite: str, argv: list[str], json_path: str) -> dict:
    module = importlib.import_module(f"benchmarks.{'echo' if suite == 'many' else suite}")
    module.main([*argv, "--json", json_path])
    with open(json_path) as f:
        return json.load(f)


# ---- chart -------------------------------------------------------------------

_LABEL_KEYS = ("workload", "style", "params", "test", "mode", "kib", "bytes", "connections",
               "clients")


def _bars(suite: str, data: dict) -> list[tuple[str, str, float]]:
    """(configuration label, loop, ratio to uvloop -- higher is better) rows."""
    rows = []
    if suite == "micro":
        for bench, by_loop in data["ns_per_op"].items():
            ref = by_loop.get(data["references"][0])
            for loop, ns in by_loop.items():
                rows.append((bench, loop, ref / ns if ref and ns else 0.0))
        return rows
    for row in data["medians"]:
        ratio = row.get("ratio_to_uvloop")
        if ratio is None:
            continue
        if suite == "idle":
            ratio = 1 / ratio if ratio else 0.0   # memory: fewer KiB is better
        label = " ".join(f"{row[k]}{'KiB' if k == 'kib' else ''}" for k in _LABEL_KEYS
                         if row.get(k, "-") != "-" and k not in ("connections", "clients"))
        conns = row.get("connections", row.get("clients"))
        rows.append((f"{label} x{conns}" if conns else label, row["loop"], ratio))
    return rows


def write_chart(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = [s for s in results["suites"] if _bars(s, results["suites"][s])]
    colours = {"asyncio": "#9e9e9e", "uvloop": "#4c72b0", "rloop": "#8172b3", "iocploop": "#dd8452",
               "c-uring": "#55a868"}
    heights = [max(1, len({r[0] for r in _bars(s, results["suites"][s])})) for s in suites]
    fig, axes = plt.subplots(len(suites), 1, figsize=(10, 1.2 + 0.55 * sum(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, suite in zip(axes[:, 0], suites):
        rows = _bars(suite, results["suites"][suite])
        labels = list(dict.fromkeys(r[0] for r in rows))
        loops = list(dict.fromkeys(r[1] for r in rows))
        width = 0.8 / len(loops)
        for i, loop in enumerate(loops):
            ys, xs = [], []
            for j, label in enumerate(labels):
                match = [r[2] for r in rows if r[0] == label and r[1] == loop]
                if match:
                    ys.append(j + i * width)
                    xs.append(match[0])
            ax.barh(ys, xs, height=width, label=loop, color=colours.get(loop))
        ax.set_yticks([j + width * (len(loops) - 1) / 2 for j in range(len(labels))])
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", linewidth=0.8)
        what = "memory per idle connection, inverted" if suite == "idle" else "rate"
        ax.set_title(f"{suite}: {what}, ratio to uvloop (higher is better)", fontsize=9)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"iocploop benchmarks, {results['date']}, {results['machine']}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))   # room for the title
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main --------------------------------------------------------------------

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default=",".join(SUITES))
    parser.add_argument("--quick", action="store_true", help="smaller configurations, 1 run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "bench", "report"))
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration, args.warmup = 1, min(args.duration, 1.0), 0.5
    os.makedirs(args.out, exist_ok=True)
    windows = sys.platform == "win32"
    suites = ["micro"] if windows else args.suites.split(",")
    if windows:
        print(WINE_NOTE)
    results = {"command": "python -m benchmarks " + " ".join(argv or sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d %H:%M"),
               "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus, "
                          f"python {platform.python_version()}",
               "note": WINE_NOTE if windows else "", "suites": {}}
    started = time.monotonic()
    for number, suite in enumerate(suites, 1):
        print(f"\n=== [{number}/{len(suites)}] {suite} "
              f"({time.monotonic() - started:.0f}s so far) ===", flush=True)
        argv_suite = suite_argv(suite, args)
        results["suites"][suite] = run_suite(suite, argv_suite,
                                             os.path.join(args.out, f"{suite}.json"))
        results["suites"][suite]["argv"] = argv_suite
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {os.path.join(args.out, 'results.json')}")
    if windows:
        print(WINE_NOTE)
        return   # no chart of Wine timings
    chart = os.path.join(args.out, "chart.png")
    write_chart(results, chart)
    print(f"wrote {chart}")
