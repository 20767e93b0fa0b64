"""HTTP benchmark: keep-alive, static files and connection churn, on every loop (Linux).

    python -m benchmarks.http [--runs 3] [--duration 5] [--warmup 1]
        [--loops asyncio,uvloop,rloop,iocploop,iocploop-noreuse]
        [--tests keepalive,static,churn,client-churn] [--modes sendfile,readwrite]
        [--sizes 16,1024] [--concurrency 16] [--keepalive-concurrency 100]
        [--verify-every 16] [--json out.json]

Tests (the loop under test always runs in a fresh process pinned to CPU 0,
the C side -- benchmarks/httpgen.c, compiled on first use -- on CPU 1):

* keepalive: vmbench's HTTP benchmark, the one most servers resemble:
  benchmarks/httptools_server.py (an asyncio.Protocol parsing with
  httptools, answering each GET with a fixed 1 KiB body) and httpgen's
  --keepalive-concurrency (100) keep-alive connections, each sending GET and
  reading the whole response before the next.
* static: benchmarks/http_server.py serves files of --sizes KiB over
  keep-alive connections to httpgen's --concurrency connections.  Modes:
  sendfile (transport.write(head), loop.sendfile) and readwrite (readinto a
  reused buffer, transport.write, drain).  uvloop (issue #228) and rloop have
  no loop.sendfile: their sendfile rows are served by the readwrite code and
  say so.
* churn: a new connection per request (httpgen connects, sends GET with
  "Connection: close", reads to EOF, closes) for a 1 KiB file.  iocploop runs
  with socket reuse on and off (iocploop-noreuse); the server's socket_stats
  are printed below the table (on Linux accepted sockets are never reused:
  expect 0 reused there).
* client-churn: the same churn driven from the loop under test
  (benchmarks/http_client.py: open_connection, GET, read to EOF, close, in
  --concurrency tasks) against httpgen's fixed C server; Linux iocploop reuses
  client sockets, and its socket_stats show it.

Configurations run interleaved; the table shows medians over --runs: req/s,
body MB/s, p50/p99 latency, the CPU share of the loop's process, its CPU per
request (microseconds), the CPU share of the C peer (near 100% means the
peer, not the loop, was the limit), and the ratios of req/s to uvloop's and
rloop's.  httpgen checks every response's status and length and compares
every --verify-every'th body with the file; any error is reported in the
note column.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import tempfile

from ._harness import (Unsupported, available, base_parser, build_c_tool, drive, medians_of, number,
                       ratio_cells, ratio_header, ratios, run_interleaved, taskset, unsupported,
                       write_json)

TESTS = ("keepalive", "static", "churn", "client-churn")
CHURN_KIB = 1
KEEPALIVE_BODY = 1024   # bytes: vmbench's default
HOST = "127.0.0.1"
#: What a loop cannot run although it has the API (checked by hand; the rows say so).
KNOWN_GAPS = {
    ("churn", "rloop"): "rloop 0.5.0's transport.close() on an accepted connection never "
                        "closes it: the client waits for the end forever",
}
KEYS = ("rps", "mbps", "p50_us", "p99_us", "loop_cpu", "loop_us_per_req", "peer_cpu", "errors")


def loop_args(variant: str) -> list[str]:
    """iocploop-noreuse -> iocploop --no-socket-reuse."""
    if variant == "iocploop-noreuse":
        return ["iocploop", "--no-socket-reuse"]
    return [variant]


def fetch_stats(port: int) -> dict:
    """GET /_stats from the server (before it is killed).  Reads Content-Length
    bytes of body rather than to the end: rloop 0.5.0 never closes."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(b"GET /_stats HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return {"server": json.loads(data.partition(b"\r\n\r\n")[2])}


def length(response: bytes) -> int:
    """The Content-Length of a response whose head has arrived."""
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("no Content-Length in the /_stats response")


def measure(job, files: dict, args) -> dict:
    test, mode, kib, conns, variant = job
    if (test, variant) in KNOWN_GAPS:
        raise Unsupported(KNOWN_GAPS[test, variant])
    label = "/".join(map(str, job))
    timing = [str(args.warmup), str(args.duration)]
    name = f"{kib}k.bin"
    if test == "client-churn":
        result = drive(
            [*taskset(1), args.httpgen, "serve", files[kib]],
            lambda port: [*taskset(0), sys.executable, "-m", "benchmarks.http_client",
                          *loop_args(variant), HOST, str(port), str(conns), "/" + name, *timing],
            args.warmup, args.duration, label)
        # drive's "server" is the C peer here, its "load generator" the loop.
        result["loop_cpu"], result["peer_cpu"] = result["loadgen_cpu"], result["server_cpu"]
    elif test == "keepalive":
        result = drive(
            [*taskset(0), sys.executable, "-m", "benchmarks.httptools_server", variant],
            lambda port: [*taskset(1), args.httpgen, "keepalive", HOST, str(port), str(conns),
                          f"/{KEEPALIVE_BODY}", files["keepalive"], *timing,
                          str(args.verify_every)],
            args.warmup, args.duration, label)
        result["loop_cpu"], result["peer_cpu"] = result["server_cpu"], result["loadgen_cpu"]
    else:
        result = drive(
            [*taskset(0), sys.executable, "-m", "benchmarks.http_server",
             *loop_args(variant), mode, args.dir],
            lambda port: [*taskset(1), args.httpgen, "keepalive" if test == "static" else "churn",
                          HOST, str(port), str(conns), "/" + name, files[kib], *timing,
                          str(args.verify_every)],
            args.warmup, args.duration, label, after=fetch_stats)
        result["loop_cpu"], result["peer_cpu"] = result["server_cpu"], result["loadgen_cpu"]
        result["socket_stats"] = result["server"]["socket_stats"]
    result["mbps"] = result["bytes"] / result["seconds"] / 1e6
    result["loop_us_per_req"] = result["loop_cpu"] * 1e6 / result["rps"] if result["rps"] else None
    return result


def note(test: str, mode: str, runs: list) -> str:
    reason = unsupported(runs)
    if reason:
        return f"not supported: {reason}"
    notes = []
    errors = sum(r["errors"] for r in runs)
    if errors:
        notes.append(f"ERRORS: {errors}")
    if test == "static" and mode == "sendfile":
        native = sum(r["server"]["sendfile_native"] for r in runs)
        fallback = sum(r["server"]["sendfile_fallback"] for r in runs)
        if fallback and not native:
            notes.append("no loop.sendfile: readwrite copy")
        elif fallback:
            notes.append(f"sendfile: {native} native, {fallback} copied")
    return ", ".join(notes)


def make_files(directory: str, sizes_kib) -> dict:
    """The files served, by size in KiB, and "keepalive": the body the
    httptools server sends (KEEPALIVE_BODY bytes of "X"), for httpgen to check."""
    files = {}
    for kib in sorted(set(sizes_kib)):
        path = os.path.join(directory, f"{kib}k.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(kib * 1024))
        files[kib] = path
    files["keepalive"] = os.path.join(directory, "keepalive.body")
    with open(files["keepalive"], "wb") as f:
        f.write(b"X" * KEEPALIVE_BODY)
    return files


def main(argv=None):
    parser = base_parser(__doc__, "asyncio,uvloop,rloop,iocploop,iocploop-noreuse",
                         "iocploop-noreuse (socket_reuse=False) runs in the churn tests only")
    parser.add_argument("--tests", default=",".join(TESTS), help="a subset of the default")
    parser.add_argument("--modes", default="sendfile,readwrite", help="static test only")
    parser.add_argument("--sizes", default="16,1024", help="static file sizes in KiB")
    parser.add_argument("--concurrency", default="16", help="static and churn tests")
    parser.add_argument("--keepalive-concurrency", default="100", help="keepalive test")
    parser.add_argument("--verify-every", type=int, default=16,
                        help="compare every Nth body per connection with the file (0: never)")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        sys.exit("benchmarks.http runs on Linux (never read performance from Wine)")
    tests = args.tests.split(",")
    for test in tests:
        if test not in TESTS:
            sys.exit(f"unknown test {test!r}; choose from {', '.join(TESTS)}")
    args.httpgen = build_c_tool("httpgen")
    variants = args.loops.split(",")
    importable = available(sorted({loop_args(v)[0] for v in variants}))
    variants = [v for v in variants if loop_args(v)[0] in importable]
    sizes = [int(s) for s in args.sizes.split(",")]
    concurrency = [int(c) for c in args.concurrency.split(",")]
    configs = []
    for test in tests:
        if test == "keepalive":
            configs += [(test, "httptools", KEEPALIVE_BODY // 1024, int(conns))
                        for conns in args.keepalive_concurrency.split(",")]
        elif test == "static":
            configs += [(test, mode, kib, conns) for mode in args.modes.split(",")
                        for kib in sizes for conns in concurrency]
        else:
            mode = "readwrite" if test == "churn" else "-"
            configs += [(test, mode, CHURN_KIB, conns) for conns in concurrency]

    def variants_for(test):
        return [v for v in variants if test in ("churn", "client-churn")
                or v != "iocploop-noreuse"]

    jobs = [(*config, v) for config in configs for v in variants_for(config[0])]
    with tempfile.TemporaryDirectory(prefix="iocploop-http-") as directory:
        args.dir = directory
        files = make_files(directory, sizes + [CHURN_KIB])
        samples = run_interleaved(args.runs, jobs, lambda job: measure(job, files, args))

    print(f"{'test':<13}{'mode':<10}{'KiB':>4}{'conns':>6}  {'loop':<17}{'req/s':>8}{'MB/s':>8}"
          f"{'p50 us':>8}{'p99 us':>8}{'loop cpu':>9}{'us/req':>7}{'peer cpu':>9}"
          f"{ratio_header()}  note")
    table = []
    for config in configs:
        test, mode, kib, conns = config
        medians = {v: medians_of(samples[(*config, v)], KEYS) for v in variants_for(test)}
        for v, m in medians.items():
            m = m or dict.fromkeys(KEYS)
            row = {"test": test, "mode": mode, "kib": kib, "connections": conns, "loop": v,
                   **m, **ratios(m["rps"], medians), "note": note(test, mode, samples[(*config, v)])}
            print(f"{test:<13}{mode:<10}{kib:>4}{conns:>6}  {v:<17}{number(m['rps'], '.0f', 8)}"
                  f"{number(m['mbps'], '.1f', 8)}{number(m['p50_us'], '.0f', 8)}"
                  f"{number(m['p99_us'], '.0f', 8)}{number(m['loop_cpu'], '.0%', 9)}"
                  f"{number(m['loop_us_per_req'], '.1f', 7)}{number(m['peer_cpu'], '.0%', 9)}"
                  f"{ratio_cells(row)}  {row['note']}".rstrip())
            table.append(row)
    print(f"(median of {args.runs} interleaved runs of {args.duration:g}s after {args.warmup:g}s "
          f"warm-up; loop on CPU 0, C peer on CPU 1; loop cpu, us/req: the server's process, or "
          f"the client's in client-churn; python {sys.version.split()[0]})")
    stats_rows = [(job, runs[-1]["socket_stats"]) for job, runs in samples.items()
                  if job[0] in ("churn", "client-churn") and runs[-1].get("socket_stats")]
    if stats_rows:
        print("\nsocket_stats of the last run (churn: the server's loop, accepted sockets; "
              "client-churn: the client's loop):")
        for (test, _mode, _kib, conns, v), stats in stats_rows:
            counters = " ".join(f"{k}={stats[k]}" for k in
                                ("created", "reused", "refused", "pooled", "disconnecting"))
            print(f"  {test:<13}{conns:>3} conns  {v:<17}{counters}")
    if args.json:
        write_json(args.json, table, samples)


if __name__ == "__main__":
    main()
