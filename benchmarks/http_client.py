"""Client-side connection churn for benchmarks/http.py, on the loop under test.

    python -m benchmarks.http_client LOOP HOST PORT CONNECTIONS PATH WARMUP_S DURATION_S
        [--no-socket-reuse]

CONNECTIONS tasks each repeat: asyncio.open_connection, send "GET PATH" with
"Connection: close", read to EOF, check the response's length, close.  Prints
one JSON line in httpgen's format (requests and body bytes finished in the
measured window, p50/p99 latency in microseconds, errors, its own CPU seconds
over the window) plus the loop's socket_stats() where it has them (iocploop:
client sockets are what Linux can reuse).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from ._loops import loop_arguments, run_on


def _check(response: bytes) -> int:
    """The body length of a complete 200 response; ValueError otherwise."""
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 200"):
        raise ValueError(f"bad response head {head[:40]!r}")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            if int(value) != len(body):
                raise ValueError(f"Content-Length {int(value)}, body {len(body)} bytes")
            return len(body)
    raise ValueError("no Content-Length")


async def churn(host, port, conns, path, warmup, duration):
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    measure_from = time.monotonic() + warmup
    measure_until = measure_from + duration
    latencies = []
    totals = {"bytes": 0, "errors": 0}
    window = {}

    def window_opens():
        window["cpu"] = time.process_time()

    async def worker():
        while time.monotonic() < measure_until:
            started = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                response = await reader.read()
                writer.close()
                await writer.wait_closed()
                body = _check(response)
            except (OSError, ValueError) as exc:
                totals["errors"] += 1
                if totals["errors"] <= 5:
                    print(f"http_client: {exc!r}", file=sys.stderr)
                continue
            done = time.monotonic()
            if measure_from <= done < measure_until:
                latencies.append((done - started) * 1e6)
                totals["bytes"] += body

    loop.call_later(warmup, window_opens)
    await asyncio.gather(*(worker() for _ in range(conns)))
    cpu = time.process_time() - window.get("cpu", time.process_time())
    latencies.sort()

    def quantile(q):
        return latencies[min(int(q * len(latencies)), len(latencies) - 1)] if latencies else 0

    get_stats = getattr(loop, "socket_stats", None)
    return {"requests": len(latencies), "bytes": totals["bytes"], "seconds": duration,
            "p50_us": round(quantile(0.50)), "p99_us": round(quantile(0.99)),
            "errors": totals["errors"], "loadgen_cpu_s": cpu,
            "socket_stats": get_stats() if get_stats is not None else None}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop_arguments(parser)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("connections", type=int)
    parser.add_argument("path")
    parser.add_argument("warmup", type=float)
    parser.add_argument("duration", type=float)
    args = parser.parse_args(argv)
    result = run_on(args.loop, churn(args.host, args.port, args.connections, args.path,
                                     args.warmup, args.duration),
                    socket_reuse=not args.no_socket_reuse)
    print(json.dumps(result), flush=True)

if __name__ == "__main__":
    main()
