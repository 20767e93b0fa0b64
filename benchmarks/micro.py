"""Loop micro-benchmarks: iocploop side by side with asyncio, uvloop and rloop.

    python -m benchmarks.micro [--runs 3] [--scale 1.0] [--json out.json]

Each (loop, benchmark) pair runs in a fresh interpreter pinned to one CPU
(the last one: vmbench's way, so the scheduler never moves it); runs are
interleaved (loop A, B, C, A, B, C, ...) so drift on a shared machine hits
all loops alike; the table shows the median of the runs in ns per operation
and iocploop's rate as a ratio to uvloop's and to rloop's (to asyncio's when
neither is installed).  Numbers from Wine say nothing about Windows: run on
Windows.
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

LOOPS = ("asyncio", "uvloop", "rloop", "iocploop")
BENCHMARKS = ("call_soon", "call_soon_chain", "call_later", "call_later_cancel",
              "future_pingpong", "queue_pingpong", "sleep0", "threadsafe")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the child side: one benchmark on one loop ------------------------------

def _make_loop(name: str):
    from benchmarks._loops import loop_factory

    return loop_factory(name)()


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


def bench_call_soon_chain(loop, n):
    """One callback per iteration: each schedules the next (the loop's
    per-iteration cost: an empty wait, the timer check, one handle)."""
    done = loop.create_future()
    count = 0

    def cb():
        nonlocal count
        count += 1
        if count == n:
            done.set_result(None)
        else:
            loop.call_soon(cb)

    t0 = time.perf_counter()
    loop.call_soon(cb)
    loop.run_until_complete(done)
    return time.perf_counter() - t0


def bench_call_later(loop, n):
    """n timers, all due within a millisecond, scheduled and then fired."""
    cb, done = _countdown(loop, n)
    t0 = time.perf_counter()
    for i in range(n):
        loop.call_later(i * 1e-8, cb)
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


def bench_queue_pingpong(loop, n):
    """Two tasks pass a token through two asyncio.Queues, n round trips."""
    async def main():
        there, back = asyncio.Queue(), asyncio.Queue()

        async def echo():
            for _ in range(n):
                back.put_nowait(await there.get())

        task = asyncio.ensure_future(echo())
        for i in range(n):
            there.put_nowait(i)
            await back.get()
        await task

    t0 = time.perf_counter()
    loop.run_until_complete(main())
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
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
    loop = _make_loop(loop_name)
    func = globals()["bench_" + bench]
    func(loop, max(1, n // 10))   # warm-up
    elapsed = func(loop, n)
    loop.close()
    print(json.dumps({"ns_per_op": elapsed / n * 1e9}))


# ---- the parent side: interleave, collect, report ---------------------------

SIZES = {"call_soon": 200_000, "call_soon_chain": 200_000, "call_later": 100_000,
         "call_later_cancel": 100_000, "future_pingpong": 100_000, "queue_pingpong": 50_000,
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
    references = [r for r in ("uvloop", "rloop") if r in loops] or ["asyncio"]
    header = f"{'benchmark':<20}" + "".join(f"{l + ' ns/op':>16}" for l in loops)
    if "iocploop" in loops:
        header += "".join(f"{'vs ' + r:>12}" for r in references)
    print(header)
    results = {}
    for bench in benches:
        medians = {l: statistics.median(samples[(bench, l)]) for l in loops}
        results[bench] = medians
        row = f"{bench:<20}" + "".join(f"{medians[l]:>16.0f}" for l in loops)
        if "iocploop" in medians:
            # rate ratio: >1 means iocploop does more operations per second
            row += "".join(f"{medians[r] / medians['iocploop']:>11.2f}x" for r in references)
        print(row)
    print(f"(median of {args.runs} interleaved runs, fresh process each; "
          f"python {sys.version.split()[0]}, {sys.platform})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": args.runs, "references": references, "ns_per_op": results,
                       "samples": {f"{b}/{l}": v for (b, l), v in samples.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
