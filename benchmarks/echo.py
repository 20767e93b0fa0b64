"""Echo benchmark: iocploop vs asyncio, uvloop and rloop, four server styles (Linux).

    python -m benchmarks.echo [--runs 3] [--duration 5] [--warmup 1]
        [--loops asyncio,uvloop,rloop,iocploop,c-uring]
        [--styles sockets,streams,protocol,buffered] [--sizes 1,10,100]
        [--concurrency 1,16] [--params vmbench|ours|vmbench,ours] [--json out.json]

Each measurement starts a fresh server process (benchmarks/echo_server.py,
pinned to CPU 0) and the C load generator benchmarks/loadgen.c (compiled on
first use, pinned to CPU 1): ping-pong echo, each connection sends a request
and waits for all of it to come back.  --params picks the servers' reads:
vmbench (the default; MagicStack/vmbench's servers: sock_recv(conn, 102400),
streams read lines and each request is 5 lines) or ours (sock_recv(conn,
256 KiB), streams read(256 KiB) + drain, one message per request); both
when given as vmbench,ours.  Configurations run interleaved, loop after loop,
so drift on a shared machine hits every loop alike.  The table shows the
median requests/s, p50/p99 latency, the server's CPU share and its CPU per
request (microseconds), the load generator's CPU share (near 100% means it,
not the server, was the limit: compare CPU per request then) and each loop's
ratio to uvloop's and to rloop's requests/s.
"""
from __future__ import annotations

import itertools
import os
import sys

from ._harness import (ROOT, available, base_parser, build_c_tool, drive,
                       medians_of, number, ratio_cells, ratio_header, ratios, run_interleaved,
                       taskset, unsupported, write_json)
from .echo_server import PARAMS

LOADGEN = os.path.join(ROOT, "build", "bench", "loadgen")
#: The physical-limit reference: benchmarks/uring_echo.c, listed with the
#: loops under this name (protocol rows only: it has no styles).
C_SERVER = "c-uring"
ECHO_KEYS = ("rps", "p50_us", "p99_us", "server_cpu", "server_us_per_req", "loadgen_cpu")
PARAM_STYLES = ("sockets", "streams")   # the styles --params changes
GEN_BOUND = 0.9   # a load generator this busy may be the limit


def build_loadgen() -> str:
    return build_c_tool("loadgen")


def measure(loop: str, style: str, size_kib: int, conns: int, warmup: float,
            duration: float, params: str = "vmbench", server_args=(), gen=LOADGEN,
            gen_args=()) -> dict:
    """One run of benchmarks.echo_server LOOP STYLE --params PARAMS *server_args
    (or of the C server) against gen HOST PORT CONNS BYTES WARMUP DURATION
    *gen_args (loadgen: plus the lines per request of the streams style)."""
    if loop == C_SERVER:
        server = [build_c_tool("uring_echo")]
    else:
        server = [sys.executable, "-m", "benchmarks.echo_server", loop, style,
                  "--params", params, *server_args]
    if gen == LOADGEN and style == "streams":
        gen_args = [str(PARAMS[params].lines), *gen_args]
    return drive(
        [*taskset(0), *server],
        lambda port: [*taskset(1), gen, "127.0.0.1", str(port), str(conns),
                      str(size_kib * 1024), str(warmup), str(duration), *gen_args],
        warmup, duration, f"{loop}/{style}/{size_kib}/{conns}/{params}")


def echo_parser(doc: str, styles: str, sizes: str,
                loops: str = "asyncio,uvloop,rloop,iocploop"):
    """base_parser and the echo suites' --styles --sizes --concurrency."""
    parser = base_parser(doc, loops)
    parser.add_argument("--styles", default=styles)
    parser.add_argument("--sizes", default=sizes, help="message sizes in KiB")
    parser.add_argument("--concurrency", default="1,16")
    return parser


def run_echo_suite(args, loops: list, measure_job, note=None, footer: str = "",
                   params=("vmbench",)) -> dict:
    """Measure every (style, KiB, conns, params, loop) of args interleaved,
    print the table (medians, ratios to uvloop and rloop; note(runs), if
    given, adds to the note column), write --json; returns the samples."""
    # Only sockets and streams read differently under the params: the other
    # styles run once, their params shown as "-".
    configs = [(style, size, conns, param)
               for style, size, conns in itertools.product(
                   args.styles.split(","), [int(s) for s in args.sizes.split(",")],
                   [int(c) for c in args.concurrency.split(",")])
               for param in (params if style in PARAM_STYLES else ["-"])]
    jobs = [(*config, loop) for config in configs for loop in loops
            if loop != C_SERVER or config[0] == "protocol"]
    samples = run_interleaved(args.runs, jobs, measure_job)
    print(f"{'style':<9}{'KiB':>5}{'conns':>6} {'params':<8} {'loop':<9}{'req/s':>9}"
          f"{'p50 us':>8}{'p99 us':>8}{'srv cpu':>8}{'us/req':>7}{'gen cpu':>8}"
          f"{ratio_header()}  note")
    table = []
    for config in configs:
        row_loops = [loop for loop in loops if (*config, loop) in samples]
        medians = {loop: medians_of(samples[(*config, loop)], ECHO_KEYS) for loop in row_loops}
        for loop in row_loops:
            runs = samples[(*config, loop)]
            m = medians[loop] or dict.fromkeys(ECHO_KEYS)
            style, size, conns, param = config
            row = {"style": style, "kib": size, "connections": conns, "params": param,
                   "loop": loop, **m, **ratios(m["rps"], medians), "note": row_note(runs, note)}
            print(f"{style:<9}{size:>5}{conns:>6} {param:<8} {loop:<9}"
                  f"{number(m['rps'], '.0f', 9)}{number(m['p50_us'], '.0f', 8)}"
                  f"{number(m['p99_us'], '.0f', 8)}{number(m['server_cpu'], '.0%', 8)}"
                  f"{number(m['server_us_per_req'], '.1f', 7)}{number(m['loadgen_cpu'], '.0%', 8)}"
                  f"{ratio_cells(row)}  {row['note']}".rstrip())
            table.append(row)
    print(f"(median of {args.runs} interleaved runs of {args.duration:g}s after "
          f"{args.warmup:g}s warm-up; server on CPU 0, load generator on CPU 1; us/req: "
          f"microseconds of server CPU per request; params: see --help; "
          f"{footer}python {sys.version.split()[0]})")
    if args.json:
        write_json(args.json, table, samples)
    return samples


def row_note(runs: list, note=None) -> str:
    reason = unsupported(runs)
    if reason:
        return f"not supported: {reason}"
    notes = []
    if note is not None and note(runs):
        notes.append(note(runs))
    if any(r["loadgen_cpu"] >= GEN_BOUND for r in runs):
        notes.append("generator-bound: compare us/req")
    if runs and "lines" in runs[0] and runs[0]["lines"] > 1:
        notes.append(f"{runs[0]['lines']} lines/request")
    return ", ".join(notes)


def main(argv=None):
    parser = echo_parser(__doc__, "sockets,streams,protocol,buffered", "1,10,100",
                         "asyncio,uvloop,rloop,iocploop," + C_SERVER)
    parser.add_argument("--params", default="vmbench",
                        help="vmbench, ours or both (vmbench,ours): how the sockets and "
                             "streams servers read (benchmarks/echo_server.py PARAMS)")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        sys.exit("benchmarks.echo runs on Linux (never read performance from Wine)")
    params = args.params.split(",")
    for name in params:
        if name not in PARAMS:
            sys.exit(f"--params: {name!r} is not one of {', '.join(PARAMS)}")
    build_loadgen()
    loops = available(args.loops.split(","), always=(C_SERVER,))

    def measure_job(job):
        style, size, conns, param, loop = job
        result = measure(loop, style, size, conns, args.warmup, args.duration,
                         param if param in PARAMS else "vmbench")
        result["lines"] = PARAMS[param].lines if style == "streams" else 1
        return result

    run_echo_suite(args, loops, measure_job, params=params)


if __name__ == "__main__":
    main()
