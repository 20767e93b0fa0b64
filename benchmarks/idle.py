"""Memory of idle connections: what each open, quiet connection costs a server.

    python -m benchmarks.idle [--connections 10000] [--runs 3]
        [--loops asyncio,uvloop,iocploop] [--json out.json]

For each loop a fresh server process (benchmarks.echo_server's protocol echo)
notes its resident memory, accepts CONNECTIONS connections from this
process, echoes one 1 KiB message on each (so every connection has read and
written once, as a real one would), and then, with all of them idle, notes
its resident memory again.  The table shows the growth per connection (KiB),
median of the runs, and each loop's ratio to uvloop's (lower is better).
Runs are interleaved, loop after loop.  Linux.
"""
from __future__ import annotations

import asyncio
import gc
import json
import resource
import socket
import statistics
import subprocess
import sys
import time

from ._loops import loop_factory
from ._harness import ROOT, available, base_parser, run_interleaved, write_json

MESSAGE = b"m" * 1024


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            sys.exit(f"benchmarks.idle: {need} file descriptors needed, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


# ---- the server side ----------------------------------------------------------

def child(loop_name: str, connections: int) -> None:
    from .echo_server import EchoProtocol

    _raise_fd_limit(connections + 256)
    echoed = 0

    class Counting(EchoProtocol):
        def data_received(self, data):
            nonlocal echoed
            super().data_received(data)
            echoed += len(data)

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Counting, "127.0.0.1", 0, backlog=4096)
        await asyncio.sleep(0.2)
        gc.collect()
        before = _rss_kib()
        print(server.sockets[0].getsockname()[1], flush=True)
        while echoed < connections * len(MESSAGE):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)   # every connection idle
        gc.collect()
        print(json.dumps({"rss_before_kib": before, "rss_after_kib": _rss_kib()}), flush=True)
        await asyncio.sleep(3600)   # until killed, connections open

    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        runner.run(serve())


# ---- the client side ------------------------------------------------------------

def measure(loop_name: str, connections: int) -> dict:
    _raise_fd_limit(connections + 256)
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.idle", "--child", loop_name,
                               str(connections)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    socks = []
    try:
        port = int(server.stdout.readline())
        for _ in range(connections):
            socks.append(socket.create_connection(("127.0.0.1", port)))
        for sock in socks:
            sock.sendall(MESSAGE)
        for sock in socks:
            got = 0
            while got < len(MESSAGE):
                chunk = sock.recv(len(MESSAGE) - got)
                if not chunk:
                    raise RuntimeError(f"{loop_name}: the server closed a connection")
                got += len(chunk)
        result = json.loads(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
        for sock in socks:
            sock.close()
    growth = result["rss_after_kib"] - result["rss_before_kib"]
    return {**result, "kib_per_connection": growth / connections}


def main(argv=None):
    parser = base_parser(__doc__, "asyncio,uvloop,iocploop")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--child", nargs=2, help=argparse_suppress())
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    if not sys.platform.startswith("linux"):
        sys.exit("benchmarks.idle runs on Linux")
    loops = available(args.loops.split(","))
    samples = run_interleaved(args.runs, loops, lambda loop: measure(loop, args.connections))
    reference = next((name for name in ("uvloop", "asyncio") if name in loops), loops[0])
    medians = {loop: statistics.median(r["kib_per_connection"] for r in samples[loop])
               for loop in loops}
    print(f"{'loop':<10}{'conns':>7}{'KiB/conn':>10}{'vs ' + reference:>12}")
    table = []
    for loop in loops:
        ratio = medians[loop] / medians[reference] if medians[reference] else None
        shown = f"{ratio:>11.2f}x" if ratio is not None else f"{'-':>12}"
        print(f"{loop:<10}{args.connections:>7}{medians[loop]:>10.2f}{shown}")
        table.append({"loop": loop, "connections": args.connections,
                      "kib_per_connection": medians[loop], "ratio_to_" + reference: ratio})
    print(f"(median of {args.runs} interleaved runs; resident memory growth of the server "
          f"process after {args.connections} connections each echoed 1 KiB and went idle; "
          f"lower is better; python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d')})")
    if args.json:
        write_json(args.json, table, {(k,): v for k, v in samples.items()})


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
