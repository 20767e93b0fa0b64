"""UDP echo benchmark: datagrams/s, iocploop vs asyncio, uvloop and rloop (Linux).

    python -m benchmarks.udp [--runs 3] [--duration 5] [--warmup 1]
        [--loops asyncio,uvloop,rloop,iocploop] [--sizes 64,1024] [--concurrency 1,16]
        [--timeout-ms 250] [--json out.json]

Each measurement starts a fresh benchmarks/udp_server.py (an
asyncio.DatagramProtocol echoing with transport.sendto(data, addr); pinned
to CPU 0) and the C load generator benchmarks/udpgen.c (compiled on first
use, pinned to CPU 1): --concurrency UDP client sockets, each ping-ponging
one datagram of --sizes bytes at a time and checking every echo; a datagram
with no echo after --timeout-ms counts as lost and the client sends the next.
Configurations run interleaved, loop after loop.  The table shows the median
packets/s (echoes received per second), p50/p99 round-trip latency, the CPU
share of the server, its CPU per echo (microseconds), the CPU share of the
load generator over the measured window, and the ratios to uvloop and rloop;
the note column sums over all runs the datagrams lost
(and how many of those came back late), wrong echoes, and losses during the
warm-up.  Where datagrams were lost it also shows how many the kernel dropped
for a full receive buffer meanwhile (Udp RcvbufErrors, counted system-wide
from the server's start to its end, so warm-up and the datagrams still
outstanding when the load generator stops count too): with many clients or large datagrams the server socket's default buffer
overflows on every loop that leaves datagrams queued in the kernel.
"""
from __future__ import annotations

import itertools
import sys

from ._harness import (available, base_parser, build_c_tool, drive, medians_of, number,
                       ratio_cells, ratio_header, ratios, run_interleaved, taskset, unsupported,
                       write_json)

KEYS = ("rps", "p50_us", "p99_us", "server_cpu", "server_us_per_req", "loadgen_cpu")


def rcvbuf_errors() -> int:
    """The kernel's count of UDP datagrams dropped because a socket's receive
    buffer was full (Udp RcvbufErrors in /proc/net/snmp: every socket of this
    network namespace, not only the benchmark's)."""
    with open("/proc/net/snmp") as f:
        names, values = [line.split() for line in f if line.startswith("Udp:")][:2]
    return int(values[names.index("RcvbufErrors")])


def measure(job, args) -> dict:
    size, clients, loop = job
    timing = [str(args.warmup), str(args.duration), str(args.timeout_ms)]
    drops = rcvbuf_errors()
    result = drive(
        [*taskset(0), sys.executable, "-m", "benchmarks.udp_server", loop],
        lambda port: [*taskset(1), args.udpgen, "127.0.0.1", str(port), str(clients),
                      str(size), *timing],
        args.warmup, args.duration, "/".join(map(str, job)))
    result["rcvbuf_drops"] = rcvbuf_errors() - drops
    return result


def note(runs: list) -> str:
    reason = unsupported(runs)
    if reason:
        return f"not supported: {reason}"
    total = {key: sum(r[key] for r in runs)
             for key in ("lost", "late", "errors", "lost_warmup", "rcvbuf_drops")}
    notes = []
    if total["lost"]:
        notes.append(f"LOST {total['lost']}" + (f" ({total['late']} late)" if total["late"] else ""))
    if total["lost"] or total["lost_warmup"]:
        notes.append(f"kernel rcvbuf drops {total['rcvbuf_drops']}")
    if total["errors"]:
        notes.append(f"ERRORS {total['errors']}")
    if total["lost_warmup"]:
        notes.append(f"lost {total['lost_warmup']} in warm-up")
    return ", ".join(notes)


def main(argv=None):
    parser = base_parser(__doc__, "asyncio,uvloop,rloop,iocploop")
    parser.add_argument("--sizes", default="64,1024", help="datagram sizes in bytes (8..65507)")
    parser.add_argument("--concurrency", default="1,16",
                        help="client sockets, each with one datagram outstanding")
    parser.add_argument("--timeout-ms", type=float, default=250.0,
                        help="no echo after this long: the datagram counts as lost")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        sys.exit("benchmarks.udp runs on Linux (never read performance from Wine)")
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(not 8 <= s <= 65507 for s in sizes):
        sys.exit("--sizes: each datagram is 8..65507 bytes (it carries an 8-byte header)")
    concurrency = [int(c) for c in args.concurrency.split(",")]
    args.udpgen = build_c_tool("udpgen")
    loops = available(args.loops.split(","))
    configs = list(itertools.product(sizes, concurrency))
    jobs = [(*config, loop) for config in configs for loop in loops]
    samples = run_interleaved(args.runs, jobs, lambda job: measure(job, args))

    print(f"{'bytes':>6}{'clients':>8}  {'loop':<9}{'pkt/s':>9}{'p50 us':>8}{'p99 us':>8}"
          f"{'srv cpu':>8}{'us/pkt':>7}{'gen cpu':>8}{ratio_header()}  note")
    table = []
    for size, clients in configs:
        medians = {loop: medians_of(samples[(size, clients, loop)], KEYS) for loop in loops}
        for loop, m in medians.items():
            m = m or dict.fromkeys(KEYS)
            row = {"bytes": size, "clients": clients, "loop": loop, **m,
                   **ratios(m["rps"], medians), "note": note(samples[(size, clients, loop)])}
            print(f"{size:>6}{clients:>8}  {loop:<9}{number(m['rps'], '.0f', 9)}"
                  f"{number(m['p50_us'], '.0f', 8)}{number(m['p99_us'], '.0f', 8)}"
                  f"{number(m['server_cpu'], '.0%', 8)}{number(m['server_us_per_req'], '.1f', 7)}"
                  f"{number(m['loadgen_cpu'], '.0%', 8)}{ratio_cells(row)}  {row['note']}".rstrip())
            table.append(row)
    print(f"(median of {args.runs} interleaved runs of {args.duration:g}s after {args.warmup:g}s "
          f"warm-up; server on CPU 0, load generator on CPU 1; us/pkt: microseconds of server "
          f"CPU per echo; one datagram outstanding per client, lost after {args.timeout_ms:g} ms; "
          f"python {sys.version.split()[0]})")
    if args.json:
        write_json(args.json, table, samples, timeout_ms=args.timeout_ms)


if __name__ == "__main__":
    main()
