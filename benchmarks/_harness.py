"""What the network benchmarks share (Linux): the C tools, a server and its C
peer pinned to their own cores, the server's CPU, runs interleaved, medians,
the ratios to uvloop and rloop, the JSON file."""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: Every table's ratio columns: each loop's rate over these loops' rates.
REFERENCES = ("uvloop", "rloop")


class Unsupported(Exception):
    """The loop lacks an API the server needs (the server said so)."""


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


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime, all threads


def taskset(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if os.cpu_count() and os.cpu_count() > 1 else []


def drive(server_cmd, client_cmd, warmup, duration, label, after=None) -> dict:
    """Start server_cmd (it prints the port it listens on, or "unsupported:
    ..."), then client_cmd(port), which runs warmup + duration seconds and
    prints one JSON line with requests, seconds and loadgen_cpu_s (its own CPU
    seconds in the measured window).  Adds rps, server_cpu (the server's CPU
    share over the measured window), server_us_per_req (microseconds of
    server CPU per request) and loadgen_cpu; after(port), if given, runs
    before the server is killed and its dict joins the result.  Raises
    Unsupported when the server cannot run on its loop."""
    with tempfile.TemporaryFile("w+") as errors:
        server = subprocess.Popen(server_cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=errors, text=True)
        try:
            first = server.stdout.readline().strip()
            if first.startswith("unsupported:"):
                raise Unsupported(first.partition(":")[2].strip())
            if not first.isdigit():
                errors.seek(0)
                raise RuntimeError(f"server for {label} did not start:\n{errors.read()}")
            port = int(first)
            gen = subprocess.Popen(client_cmd(port), cwd=ROOT, stdout=subprocess.PIPE, text=True)
            time.sleep(warmup)
            ticks0, t0 = cpu_ticks(server.pid), time.monotonic()
            out, _ = gen.communicate(timeout=warmup + duration + 60)
            ticks1, t1 = cpu_ticks(server.pid), time.monotonic()
            if gen.returncode != 0:
                errors.seek(0)
                raise RuntimeError(f"load generator failed for {label}; server's stderr:\n"
                                   f"{errors.read()}")
            result = json.loads(out)
            result["rps"] = result["requests"] / result["seconds"]
            result["server_cpu"] = (ticks1 - ticks0) / CLK_TCK / (t1 - t0)
            # A ratio of two rates, so the two windows need not match exactly.
            result["server_us_per_req"] = (result["server_cpu"] * 1e6 / result["rps"]
                                           if result["rps"] else None)
            result["loadgen_cpu"] = result["loadgen_cpu_s"] / result["seconds"]
            if after is not None:
                result.update(after(port))
            return result
        finally:
            server.kill()
            server.wait()


def run_interleaved(runs: int, jobs: list, measure_job) -> dict:
    """measure_job(job) for every job, `runs` rounds in the given order (so
    drift on a shared machine hits every loop alike); {job: [samples]}.  A job
    whose measure_job raises Unsupported gets one {"unsupported": reason}
    sample and is not run again."""
    samples = {}
    total = runs * len(jobs)
    done = 0
    started = time.monotonic()
    for _run in range(runs):
        for job in jobs:
            done += 1
            if any("unsupported" in s for s in samples.get(job, ())):
                continue
            try:
                sample = measure_job(job)
            except Unsupported as exc:
                sample = {"unsupported": str(exc)}
            samples.setdefault(job, []).append(sample)
            eta = (time.monotonic() - started) / done * (total - done)
            print(f"\r  {done}/{total} measurements, about {eta:.0f}s left   ",
                  end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return samples


def unsupported(runs: list) -> str | None:
    """Why the loop could not run this job, or None."""
    return next((r["unsupported"] for r in runs if "unsupported" in r), None)


def medians_of(runs: list, keys) -> dict | None:
    """The median of each key over the runs (None when the loop was unsupported)."""
    if unsupported(runs):
        return None
    return {key: (statistics.median(values) if (values := [r[key] for r in runs
                                                           if r.get(key) is not None])
                  else None)
            for key in keys}


def ratios(value, medians: dict, key: str = "rps") -> dict:
    """{"ratio_to_uvloop": value / uvloop's, "ratio_to_rloop": ...}, None where
    a reference has no figure in this run."""
    out = {}
    for ref in REFERENCES:
        base = (medians.get(ref) or {}).get(key)
        out["ratio_to_" + ref] = value / base if value and base else None
    return out


def ratio_header() -> str:
    return "".join(f"{'vs ' + ref:>10}" for ref in REFERENCES)


def ratio_cells(row: dict) -> str:
    return "".join(f"{row['ratio_to_' + ref]:>9.2f}x" if row.get("ratio_to_" + ref)
                   else f"{'-':>10}" for ref in REFERENCES)


def number(value, fmt: str, width: int) -> str:
    """value formatted, or '-' (a loop with no figure) in the same width."""
    return f"{value:>{width}{fmt}}" if value is not None else f"{'-':>{width}}"


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


def available(loops, always=()):
    """The loops of `loops` that import here (names in `always` are kept as they are)."""
    found = []
    for name in loops:
        if name in always or subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT,
                                            capture_output=True).returncode == 0:
            found.append(name)
        else:
            print(f"({name} is not importable: left out)", file=sys.stderr)
    return found
