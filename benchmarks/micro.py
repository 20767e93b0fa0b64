"""Loop micro-benchmarks: iocploop side by side with asyncio and uvloop.

    python -m benchmarks.micro [--runs 3] [--scale 1.0] [--json out.json]

Each (loop, benchmark) pair runs in a fresh interpreter; runs are interleaved
(loop A, B, C, A, B, C, ...) so drift on a shared machine hits all loops
alike; the table shows the median of the runs in ns per operation and the
ratio of each loop's rate to uvloop's (and to asyncio's when uvloop is not
installed).  Numbers from Wine say nothing about Windows: run on Windows.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

LOOPS = ("asyncio", "uvloop", "iocploop")
BENCHMARKS = ("call_soon", "call_later_cancel", "future_pingpong", "sleep0", "threadsafe")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the child side: one benchmark on one loop ------------------------------

def _make_loop(name: str):
    import asyncio

    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    import iocploop

    return iocploop.new_event_loop()


def _countdown(loop, n):
    """(callback, future): the future resolves when callback has run n times."""
    done = loop.create_future()
    count = 0

    def cb():
        nonlocal count
        count += 1
        if count == n:
            done.set_result(None)

    return cb, done


def bench_call_soon(loop, n):
    cb, done = _countdown(loop, n)
    t0 = time.perf_counter()
    for _ in range(n):
        loop.call_soon(cb)
    loop.run_until_complete(done)
    return time.perf_counter() - t0


def bench_call_later_cancel(loop, n):
    async def main():
        handles = [loop.call_later(10 + i * 1e-6, int) for i in range(n)]
        for h in handles:
            h.cancel()
        await asyncio.sleep(0)

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    return time.perf_counter() - t0


def bench_future_pingpong(loop, n):
    async def ping():
        for _ in range(n):
            fut = loop.create_future()
            loop.call_soon(fut.set_result, None)
            await fut

    t0 = time.perf_counter()
    loop.run_until_complete(ping())
    return time.perf_counter() - t0


def bench_sleep0(loop, n):
    async def main():
        for _ in range(n):
            await asyncio.sleep(0)

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    return time.perf_counter() - t0


def bench_threadsafe(loop, n):
    """Another thread posts n callbacks; measures until the loop has run all."""
    import threading

    cb, done = _countdown(loop, n)

    def producer():
        for _ in range(n):
            loop.call_soon_threadsafe(cb)

    t0 = time.perf_counter()
    thread = threading.Thread(target=producer)
    thread.start()
    loop.run_until_complete(done)
    thread.join()
    return time.perf_counter() - t0


def child(loop_name: str, bench: str, n: int) -> None:
    loop = _make_loop(loop_name)
    func = globals()["bench_" + bench]
    func(loop, max(1, n // 10))   # warm-up
    elapsed = func(loop, n)
    loop.close()
    print(json.dumps({"ns_per_op": elapsed / n * 1e9}))


# ---- the parent side: interleave, collect, report ---------------------------

SIZES = {"call_soon": 200_000, "call_later_cancel": 100_000, "future_pingpong": 100_000,
         "sleep0": 100_000, "threadsafe": 100_000}


def available_loops():
    found = []
    for name in LOOPS:
        probe = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT,
                               capture_output=True)
        if probe.returncode == 0:
            found.append(name)
        else:
            print(f"  ({name} not importable: left out)", file=sys.stderr)
    return found


def run_one(loop_name, bench, n):
    out = subprocess.run([sys.executable, "-m", "benchmarks.micro", "--child", loop_name, bench,
                          str(n)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{loop_name}/{bench} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["ns_per_op"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply operation counts")
    parser.add_argument("--json", help="write results to this file")
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    loops = available_loops()
    benches = args.only.split(",") if args.only else list(BENCHMARKS)
    samples = {(b, l): [] for b in benches for l in loops}
    total = args.runs * len(benches) * len(loops)
    done = 0
    for run in range(args.runs):
        for bench in benches:
            for loop_name in loops:
                n = max(1000, int(SIZES[bench] * args.scale))
                samples[(bench, loop_name)].append(run_one(loop_name, bench, n))
                done += 1
                print(f"\r  run {run + 1}/{args.runs}  {done}/{total} measurements",
                      end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    reference = "uvloop" if "uvloop" in loops else "asyncio"
    header = f"{'benchmark':<20}" + "".join(f"{l + ' ns/op':>18}" for l in loops)
    header += f"{'iocploop vs ' + reference:>22}"
    print(header)
    results = {}
    for bench in benches:
        medians = {l: statistics.median(samples[(bench, l)]) for l in loops}
        results[bench] = medians
        row = f"{bench:<20}" + "".join(f"{medians[l]:>18.0f}" for l in loops)
        if "iocploop" in medians:
            # rate ratio: >1 means iocploop does more operations per second
            row += f"{medians[reference] / medians['iocploop']:>21.2f}x"
        print(row)
    print(f"(median of {args.runs} interleaved runs, fresh process each; "
          f"python {sys.version.split()[0]}, {sys.platform})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": args.runs, "reference": reference, "ns_per_op": results,
                       "samples": {f"{b}/{l}": v for (b, l), v in samples.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
