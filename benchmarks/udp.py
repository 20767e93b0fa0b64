"""UDP echo benchmark: datagrams/s, iocploop vs asyncio vs uvloop (Linux).

    python -m benchmarks.udp [--runs 3] [--duration 5] [--warmup 1]
        [--loops asyncio,uvloop,iocploop] [--sizes 64,1024] [--concurrency 1,16]
        [--timeout-ms 250] [--json out.json]

Each measurement starts a fresh benchmarks/udp_server.py (an
asyncio.DatagramProtocol echoing with transport.sendto(data, addr); pinned
to CPU 0) and the C load generator benchmarks/udpgen.c (compiled on first
use, pinned to CPU 1): --concurrency UDP client sockets, each ping-ponging
one datagram of --sizes bytes at a time and checking every echo; a datagram
with no echo after --timeout-ms counts as lost and the client sends the next.
Configurations run interleaved, loop after loop.  The table shows the median
packets/s (echoes received per second), p50/p99 round-trip latency, the CPU
share of the server and of the load generator over the measured window, and
the ratio to uvloop; the note column sums over all runs the datagrams lost
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

from .echo import (available, base_parser, build_c_tool, drive, medians_of, run_interleaved,
                   taskset, write_json)

KEYS = ("rps", "p50_us", "p99_us", "server_cpu", "loadgen_cpu")


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
    parser = base_parser(__doc__, "asyncio,uvloop,iocploop")
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

    reference = "uvloop" if "uvloop" in loops else "asyncio"
    print(f"{'bytes':>6}{'clients':>8}  {'loop':<9}{'pkt/s':>9}{'p50 us':>8}{'p99 us':>8}"
          f"{'srv cpu':>9}{'gen cpu':>9}{'vs ' + reference:>11}  note")
    table = []
    for size, clients in configs:
        medians = {loop: medians_of(samples[(size, clients, loop)], KEYS) for loop in loops}
        base = medians.get(reference, {}).get("rps")
        for loop, m in medians.items():
            ratio = m["rps"] / base if base else None
            shown = f"{ratio:>10.2f}x" if ratio is not None else f"{'-':>11}"
            text = note(samples[(size, clients, loop)])
            print(f"{size:>6}{clients:>8}  {loop:<9}{m['rps']:>9.0f}{m['p50_us']:>8.0f}"
                  f"{m['p99_us']:>8.0f}{m['server_cpu']:>9.0%}{m['loadgen_cpu']:>9.0%}"
                  f"{shown}  {text}".rstrip())
            table.append({"bytes": size, "clients": clients, "loop": loop, **m, "note": text,
                          "ratio_to_" + reference: ratio})
    print(f"(median of {args.runs} interleaved runs of {args.duration:g}s after {args.warmup:g}s "
          f"warm-up; server on CPU 0, load generator on CPU 1; one datagram outstanding per "
          f"client, lost after {args.timeout_ms:g} ms; python {sys.version.split()[0]})")
    if reference != "uvloop":
        print("(no uvloop in this run: ratios are to asyncio)")
    if args.json:
        write_json(args.json, table, samples, reference=reference, timeout_ms=args.timeout_ms)


if __name__ == "__main__":
    main()
