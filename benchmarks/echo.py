"""Echo benchmark: iocploop vs asyncio vs uvloop, four server styles (Linux).

    python -m benchmarks.echo [--runs 3] [--duration 5] [--warmup 1]
        [--loops asyncio,uvloop,iocploop,c-uring] [--styles sockets,streams,protocol,buffered]
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
import glob
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
LOADGEN = os.path.join(ROOT, "build", "bench", "loadgen")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def build_c_tool(name: str, libs=()) -> str:
    """benchmarks/NAME.c compiled into build/bench/NAME (again whenever it or a
    header in benchmarks/ is newer), linked with libs (e.g. "-lssl")."""
    src = os.path.join(HERE, name + ".c")
    exe = os.path.join(ROOT, "build", "bench", name)
    newest = max(map(os.path.getmtime, [src, *glob.glob(os.path.join(HERE, "*.h"))]))
    if not os.path.exists(exe) or os.path.getmtime(exe) < newest:
        os.makedirs(os.path.dirname(exe), exist_ok=True)
        subprocess.run(["gcc", "-O2", "-o", exe, src, *libs], check=True)
    return exe


def build_loadgen() -> str:
    return build_c_tool("loadgen")


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime


def taskset(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if os.cpu_count() and os.cpu_count() > 1 else []


def drive(server_cmd, client_cmd, warmup, duration, label, after=None) -> dict:
    """Start server_cmd (it prints the port it listens on), then client_cmd(port),
    which runs warmup + duration seconds and prints one JSON line with requests,
    seconds and loadgen_cpu_s (its own CPU seconds in the measured window).
    Adds rps, server_cpu (the server's CPU share over the measured window) and
    loadgen_cpu; after(port), if given, runs before the server is killed and
    its dict joins the result."""
    server = subprocess.Popen(server_cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        gen = subprocess.Popen(client_cmd(port), cwd=ROOT, stdout=subprocess.PIPE, text=True)
        time.sleep(warmup)
        ticks0, t0 = cpu_ticks(server.pid), time.monotonic()
        out, _ = gen.communicate(timeout=warmup + duration + 60)
        ticks1, t1 = cpu_ticks(server.pid), time.monotonic()
        if gen.returncode != 0:
            raise RuntimeError(f"load generator failed for {label}")
        result = json.loads(out)
        result["rps"] = result["requests"] / result["seconds"]
        result["server_cpu"] = (ticks1 - ticks0) / CLK_TCK / (t1 - t0)
        result["loadgen_cpu"] = result["loadgen_cpu_s"] / result["seconds"]
        if after is not None:
            result.update(after(port))
        return result
    finally:
        server.kill()
        server.wait()


#: The physical-limit reference: benchmarks/uring_echo.c, listed with the
#: loops under this name (protocol rows only: it has no styles).
C_SERVER = "c-uring"


def measure(loop: str, style: str, size_kib: int, conns: int, warmup: float,
            duration: float, server_args=(), gen=LOADGEN, gen_args=()) -> dict:
    """One run of benchmarks.echo_server LOOP STYLE *server_args (or of the C
    server) against gen HOST PORT CONNS BYTES WARMUP DURATION *gen_args."""
    if loop == C_SERVER:
        server = [build_c_tool("uring_echo")]
    else:
        server = [sys.executable, "-m", "benchmarks.echo_server", loop, style, *server_args]
    return drive(
        [*taskset(0), *server],
        lambda port: [*taskset(1), gen, "127.0.0.1", str(port), str(conns),
                      str(size_kib * 1024), str(warmup), str(duration), *gen_args],
        warmup, duration, f"{loop}/{style}/{size_kib}/{conns}")


def run_interleaved(runs: int, jobs: list, measure_job) -> dict:
    """measure_job(job) for every job, `runs` rounds in the given order (so
    drift on a shared machine hits every loop alike); {job: [samples]}."""
    samples = {}
    total = runs * len(jobs)
    done = 0
    started = time.monotonic()
    for _run in range(runs):
        for job in jobs:
            samples.setdefault(job, []).append(measure_job(job))
            done += 1
            eta = (time.monotonic() - started) / done * (total - done)
            print(f"\r  {done}/{total} measurements, about {eta:.0f}s left   ",
                  end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return samples


def medians_of(runs: list, keys) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in keys}


def base_parser(doc: str, loops: str, loops_help: str | None = None) -> argparse.ArgumentParser:
    """The options the socket suites share: --runs --duration --warmup --loops --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--loops", default=loops, help=loops_help)
    parser.add_argument("--json", help="write all samples and medians here")
    return parser


def write_json(path: str, table: list, samples: dict, **extra) -> None:
    with open(path, "w") as f:
        json.dump({**extra, "medians": table,
                   "samples": {"/".join(map(str, k)): v for k, v in samples.items()}},
                  f, indent=2)


def available(loops):
    found = []
    for name in loops:
        if name == C_SERVER or subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT,
                          capture_output=True).returncode == 0:
            found.append(name)
        else:
            print(f"({name} is not importable: left out)", file=sys.stderr)
    return found


ECHO_KEYS = ("rps", "p50_us", "p99_us", "server_cpu", "loadgen_cpu")


def echo_parser(doc: str, styles: str, sizes: str,
                loops: str = "asyncio,uvloop,iocploop") -> argparse.ArgumentParser:
    """base_parser and the echo suites' --styles --sizes --concurrency."""
    parser = base_parser(doc, loops)
    parser.add_argument("--styles", default=styles)
    parser.add_argument("--sizes", default=sizes, help="message sizes in KiB")
    parser.add_argument("--concurrency", default="1,16")
    return parser


def run_echo_suite(args, loops: list, measure_job, note=None, footer: str = "") -> dict:
    """Measure every (style, KiB, conns, loop) of args interleaved, print the
    table (medians, ratio to uvloop -- asyncio's without it; note(runs), if
    given, fills a last column), write --json; returns the samples."""
    configs = list(itertools.product(args.styles.split(","),
                                     [int(s) for s in args.sizes.split(",")],
                                     [int(c) for c in args.concurrency.split(",")]))
    jobs = [(*config, loop) for config in configs for loop in loops
            if loop != C_SERVER or config[0] == "protocol"]
    samples = run_interleaved(args.runs, jobs, measure_job)
    reference = next((name for name in ("uvloop", "asyncio") if name in loops), loops[0])
    print(f"{'style':<9}{'KiB':>5}{'conns':>6}  {'loop':<9}{'req/s':>10}{'p50 us':>9}"
          f"{'p99 us':>9}{'srv cpu':>9}{'gen cpu':>9} {'vs ' + reference:>11}"
          + ("  note" if note else ""))
    table = []
    for config in configs:
        row_loops = [loop for loop in loops if (*config, loop) in samples]
        medians = {loop: medians_of(samples[(*config, loop)], ECHO_KEYS) for loop in row_loops}
        for loop in row_loops:
            m = medians[loop]
            base = medians.get(reference, {}).get("rps")
            ratio = m["rps"] / base if base else 0
            style, size, conns = config
            row = {"style": style, "kib": size, "connections": conns, "loop": loop, **m,
                   "ratio_to_" + reference: ratio}
            if note:
                row["note"] = note(samples[(*config, loop)])
            print(f"{style:<9}{size:>5}{conns:>6}  {loop:<9}{m['rps']:>10.0f}{m['p50_us']:>9.0f}"
                  f"{m['p99_us']:>9.0f}{m['server_cpu']:>8.0%}{m['loadgen_cpu']:>9.0%}"
                  f"{ratio:>11.2f}x  {row.get('note', '')}".rstrip())
            table.append(row)
    print(f"(median of {args.runs} interleaved runs of {args.duration:g}s after "
          f"{args.warmup:g}s warm-up; server on CPU 0, load generator on CPU 1; "
          f"{footer}python {sys.version.split()[0]})")
    if args.json:
        write_json(args.json, table, samples)
    return samples


def main(argv=None):
    args = echo_parser(__doc__, "sockets,streams,protocol,buffered", "1,10,100",
                       "asyncio,uvloop,iocploop," + C_SERVER).parse_args(argv)
    if not sys.platform.startswith("linux"):
        sys.exit("benchmarks.echo runs on Linux (never read performance from Wine)")
    build_loadgen()
    loops = available(args.loops.split(","))
    run_echo_suite(args, loops, lambda job: measure(job[3], job[0], job[1], job[2],
                                                    args.warmup, args.duration))


if __name__ == "__main__":
    main()
