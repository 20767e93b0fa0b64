"""Echo benchmark: iocploop vs asyncio vs uvloop, four server styles (Linux).

    python -m benchmarks.echo [--runs 3] [--duration 5] [--warmup 1]
        [--loops asyncio,uvloop,iocploop] [--styles sockets,streams,protocol,buffered]
        [--sizes 1,10,100] [--concurrency 1,16] [--json out.json]

Each measurement starts a fresh server process (pinned to CPU 0) and the C
load generator benchmarks/loadgen.c (compiled on first use, pinned to CPU 1):
ping-pong echo, each connection sends a message of SIZE KiB and waits for it
to come back.  Configurations run interleaved, loop after loop, so drift on a
shared machine hits every loop alike.  The table shows the median requests/s,
p50/p99 latency, the server's and the load generator's CPU use over the
measured window (a load generator near 100% means it, not the server, was
the limit), and each loop's ratio to uvloop.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
LOADGEN_SRC = os.path.join(HERE, "loadgen.c")
LOADGEN = os.path.join(ROOT, "build", "bench", "loadgen")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def build_loadgen() -> str:
    if not os.path.exists(LOADGEN) or os.path.getmtime(LOADGEN) < os.path.getmtime(LOADGEN_SRC):
        os.makedirs(os.path.dirname(LOADGEN), exist_ok=True)
        subprocess.run(["gcc", "-O2", "-o", LOADGEN, LOADGEN_SRC], check=True)
    return LOADGEN


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime


def taskset(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if os.cpu_count() and os.cpu_count() > 1 else []


def measure(loop: str, style: str, size_kib: int, conns: int, warmup: float,
            duration: float) -> dict:
    server = subprocess.Popen(
        [*taskset(0), sys.executable, "-m", "benchmarks.echo_server", loop, style],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        gen = subprocess.Popen(
            [*taskset(1), LOADGEN, "127.0.0.1", str(port), str(conns), str(size_kib * 1024),
             str(warmup), str(duration)], stdout=subprocess.PIPE, text=True)
        time.sleep(warmup)
        ticks0, t0 = cpu_ticks(server.pid), time.monotonic()
        out, _ = gen.communicate(timeout=warmup + duration + 60)
        ticks1, t1 = cpu_ticks(server.pid), time.monotonic()
        if gen.returncode != 0:
            raise RuntimeError(f"load generator failed for {loop}/{style}")
        result = json.loads(out)
        result["rps"] = result["requests"] / result["seconds"]
        result["server_cpu"] = (ticks1 - ticks0) / CLK_TCK / (t1 - t0)
        result["loadgen_cpu"] = result["loadgen_cpu_s"] / result["seconds"]
        return result
    finally:
        server.kill()
        server.wait()


def available(loops):
    found = []
    for name in loops:
        if subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT,
                          capture_output=True).returncode == 0:
            found.append(name)
        else:
            print(f"({name} is not importable: left out)", file=sys.stderr)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--loops", default="asyncio,uvloop,iocploop")
    parser.add_argument("--styles", default="sockets,streams,protocol,buffered")
    parser.add_argument("--sizes", default="1,10,100", help="message sizes in KiB")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--json", help="write all samples and medians here")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        sys.exit("benchmarks.echo runs on Linux (never read performance from Wine)")
    build_loadgen()
    loops = available(args.loops.split(","))
    styles = args.styles.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    concurrency = [int(c) for c in args.concurrency.split(",")]
    configs = list(itertools.product(styles, sizes, concurrency))
    samples = {}
    total = args.runs * len(configs) * len(loops)
    done = 0
    started = time.monotonic()
    for run in range(args.runs):
        for config in configs:
            for loop in loops:
                style, size, conns = config
                samples.setdefault((*config, loop), []).append(
                    measure(loop, style, size, conns, args.warmup, args.duration))
                done += 1
                eta = (time.monotonic() - started) / done * (total - done)
                print(f"\r  {done}/{total} measurements, about {eta:.0f}s left   ",
                      end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    reference = "uvloop" if "uvloop" in loops else "asyncio"
    print(f"{'style':<9}{'KiB':>5}{'conns':>6}  {'loop':<9}{'req/s':>10}{'p50 us':>9}"
          f"{'p99 us':>9}{'srv cpu':>9}{'gen cpu':>9}{'vs ' + reference:>11}")
    table = []
    for config in configs:
        medians = {}
        for loop in loops:
            runs = samples[(*config, loop)]
            medians[loop] = {key: statistics.median(r[key] for r in runs)
                             for key in ("rps", "p50_us", "p99_us", "server_cpu", "loadgen_cpu")}
        for loop in loops:
            m = medians[loop]
            ratio = m["rps"] / medians[reference]["rps"] if medians[reference]["rps"] else 0
            style, size, conns = config
            print(f"{style:<9}{size:>5}{conns:>6}  {loop:<9}{m['rps']:>10.0f}{m['p50_us']:>9.0f}"
                  f"{m['p99_us']:>9.0f}{m['server_cpu']:>8.0%}{m['loadgen_cpu']:>9.0%}"
                  f"{ratio:>10.2f}x")
            table.append({"style": style, "kib": size, "connections": conns, "loop": loop, **m,
                          "ratio_to_" + reference: ratio})
    print(f"(median of {args.runs} interleaved runs of {args.duration:g}s after "
          f"{args.warmup:g}s warm-up; server on CPU 0, load generator on CPU 1; "
          f"python {sys.version.split()[0]})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"medians": table,
                       "samples": {"/".join(map(str, k)): v for k, v in samples.items()}},
                      f, indent=2)


if __name__ == "__main__":
    main()
