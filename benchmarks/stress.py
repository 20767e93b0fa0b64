"""Load and churn: many connections held at once, many more opened and closed (Linux).

    python -m benchmarks.stress [--scenario hold,churn] [--loops iocploop]
        [--connections 10000] [--size 1024] [--warmup 2] [--duration 10]
        [--churn 100000] [--churn-warmup 1000] [--sample-every 20000]
        [--concurrency 64] [--settle 2] [--runs 1] [--quick] [--json out.json]

    python -m benchmarks.stress --quick          # CI smoke: 500 held, 3,000 churned
    python -m benchmarks.stress --loops asyncio,uvloop,iocploop

hold: a server process (benchmarks.echo_server's protocol echo on the loop
under test, CPU 0) and the C load generator benchmarks/loadgen.c (CPU 1)
hold CONNECTIONS connections, each ping-ponging SIZE-byte messages for
DURATION seconds after WARMUP; 32 of them are probes, threads of this process
doing the same, a second view of the latency from outside the generator
(and the mean: connections / requests per second, Little's law, "mean us").  Reports requests/s (the
generator's), p50/p99 latency (the generator's, ">=10000000" when capped, and
the probes'), the server's resident memory before the connections and at its
peak (VmHWM), and its file descriptor count at the peak.  The server counts
the connections it accepted and the ones that echoed: a run that did not
hold them all is flagged.

churn: a server process (CPU 0) and a client process (CPU 1), both on the loop
under test.  The client opens connections with loop.create_connection
(iocploop's client socket reuse pool is used), CONCURRENCY at a time; each
sends one SIZE-byte message naming its number, checks that exactly those bytes
come back, closes the transport and waits for connection_lost.  After a
warm-up of CHURN_WARMUP connections (pools and caches made) and SETTLE
seconds, both processes report file descriptors and VmRSS ("start"), again
every SAMPLE_EVERY connections and after CHURN more plus SETTLE seconds
("end"); each report follows a gc.collect() in that process.  Flat is the
goal: the table shows how far fds and RSS moved from start to end.  Every
exception counts as a failure.  TIME_WAIT: the client closes first, so each
connection leaves a TIME_WAIT entry on 127.0.0.1 (ephemeral ports
32768-60999 here); tcp_tw_reuse (2: loopback) lets connect() reuse them, and
no error here came from it.  The checkpoint table shows the machine's
TIME_WAIT count (all of it, earlier runs' too).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import resource
import select
import socket
import statistics
import subprocess
import sys
import threading
import time

from ._loops import loop_factory
from ._harness import ROOT, available, base_parser, run_interleaved, taskset, write_json
from .echo import build_loadgen
from .echo_server import EchoProtocol
from .idle import _raise_fd_limit

SCENARIOS = ("hold", "churn")
#: Defaults, full run and --quick (an option given on the command line wins).
FULL = {"connections": 10_000, "duration": 10.0, "warmup": 2.0, "churn": 100_000,
        "churn_warmup": 1_000, "sample_every": 20_000, "settle": 2.0}
QUICK = {"connections": 500, "duration": 3.0, "warmup": 1.0, "churn": 3_000,
         "churn_warmup": 300, "sample_every": 1_000, "settle": 1.0}
HIST_CAP_US = 10_000_000   # benchmarks/echogen.h: the histogram ends at 10 s
PROBES = 32             # hold: connections timed from this process
TCP_TIME_WAIT = "06"    # the st column of /proc/net/tcp


# ---- what a process costs, read from /proc ------------------------------------

def proc_stats(pid: int) -> dict:
    """Open file descriptors, VmRSS and VmHWM (KiB) of process pid."""
    stats = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                stats[key.lower()[2:] + "_kib"] = int(value.split()[0])
    return stats


def time_wait_count() -> int:
    """IPv4 TCP connections in TIME_WAIT on this machine."""
    with open("/proc/net/tcp") as f:
        next(f)
        return sum(1 for line in f if line.split()[3] == TCP_TIME_WAIT)


# ---- the children: a command on each stdin line, a JSON line back --------------

def answer_commands(loop, handle) -> asyncio.Future:
    """A thread reads commands from stdin, runs handle(words) on loop and
    prints its result as one JSON line; the future is done at end of input."""
    finished = loop.create_future()

    def read():
        for line in sys.stdin:
            result = asyncio.run_coroutine_threadsafe(handle(line.split()), loop).result()
            print(json.dumps(result), flush=True)
        loop.call_soon_threadsafe(finished.set_result, None)

    threading.Thread(target=read, daemon=True).start()
    return finished


def snapshot(extra: dict) -> dict:
    gc.collect()
    return {**extra, **proc_stats(os.getpid())}


def server_child(loop_name: str, max_connections: int) -> None:
    """Echo on 127.0.0.1:0; prints the port; "stats" answers with counters."""
    _raise_fd_limit(max_connections + 256)
    counts = {"accepted": 0, "open": 0, "peak_open": 0, "echoing": 0, "bytes": 0}

    class Counting(EchoProtocol):
        echoed = False

        def connection_made(self, transport):
            super().connection_made(transport)
            counts["accepted"] += 1
            counts["open"] += 1
            counts["peak_open"] = max(counts["peak_open"], counts["open"])

        def data_received(self, data):
            super().data_received(data)
            counts["bytes"] += len(data)
            if not self.echoed:
                self.echoed = True
                counts["echoing"] += 1

        def connection_lost(self, exc):
            counts["open"] -= 1

    async def handle(words):
        return snapshot(counts)

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Counting, "127.0.0.1", 0, backlog=4096)
        finished = answer_commands(loop, handle)
        print(server.sockets[0].getsockname()[1], flush=True)
        await finished
        server.close()

    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        runner.run(serve())


class OneShot(asyncio.Protocol):
    """Sends message once; echoed: the bytes that came back (all of them)."""

    def __init__(self, message: bytes):
        loop = asyncio.get_running_loop()
        self.message = message
        self.received = bytearray()
        self.echoed = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        transport.write(self.message)

    def data_received(self, data):
        self.received += data
        if len(self.received) >= len(self.message) and not self.echoed.done():
            self.echoed.set_result(None)

    def eof_received(self):
        self._fail(ConnectionError("end of file before the echo"))

    def connection_lost(self, exc):
        self._fail(exc or ConnectionError("connection lost before the echo"))
        if not self.lost.done():
            self.lost.set_result(None)

    def _fail(self, exc):
        if not self.echoed.done():
            self.echoed.set_exception(exc)


async def one_connection(loop, host: str, port: int, number: int, size: int) -> None:
    """Connect, send size bytes naming number, check the echo, close cleanly."""
    message = (b"%09d," % number * (size // 10 + 1))[:size]
    transport, proto = await loop.create_connection(lambda: OneShot(message), host, port)
    try:
        await asyncio.wait_for(proto.echoed, 30)
    finally:
        transport.close()
    await asyncio.wait_for(proto.lost, 30)
    if proto.received != message:
        raise ValueError(f"connection {number}: {len(proto.received)} bytes came back, "
                         f"not the {len(message)} sent")


async def churn_batch(host: str, port: int, size: int, concurrency: int,
                      first: int, count: int) -> dict:
    """Connections first .. first+count-1, concurrency at a time."""
    loop = asyncio.get_running_loop()
    numbers = iter(range(first, first + count))
    errors = collections.Counter()

    async def worker():
        for number in numbers:
            try:
                await one_connection(loop, host, port, number, size)
            except Exception as exc:   # every one is a failure, none is hidden
                errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"connections": count, "seconds": time.perf_counter() - started,
            "failures": sum(errors.values()), "errors": dict(errors.most_common(5))}


def churn_child(loop_name: str, host: str, port: int, size: int, concurrency: int) -> None:
    """"run N": churn N connections; "stats": fds, RSS, socket_stats."""
    _raise_fd_limit(4 * concurrency + 256)

    async def main():
        loop = asyncio.get_running_loop()
        done = 0

        async def handle(words):
            nonlocal done
            if words[0] == "run":
                result = await churn_batch(host, port, size, concurrency, done, int(words[1]))
                done += int(words[1])
                return result
            reuse = loop.socket_stats() if hasattr(loop, "socket_stats") else None
            return snapshot({"done": done, "socket_stats": reuse})

        await answer_commands(loop, handle)

    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        runner.run(main())


# ---- the parent: starts the children and asks them ------------------------------

class Child:
    """A child process of this module: its first line, then ask() for more."""

    def __init__(self, cpu: int, *args):
        self.proc = subprocess.Popen(
            [*taskset(cpu), sys.executable, "-m", "benchmarks.stress", "--child", *map(str, args)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        text = self.proc.stdout.readline() if ready else ""
        if not text:
            state = "exited" if self.proc.poll() is not None else f"no answer in {timeout:g}s"
            raise RuntimeError(f"child {' '.join(self.proc.args[-6:])}: {state}")
        return text

    def ask(self, command: str, timeout: float = 60) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.line(timeout))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """End of input ends the child cleanly; one that does not is killed."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def start_server(loop: str, max_connections: int) -> tuple[Child, int]:
    server = Child(0, "server", loop, max_connections)
    return server, int(server.line(30))


def hold(loop: str, args) -> dict:
    """The C load generator and a few probe connections hold args.connections."""
    _raise_fd_limit(args.connections + 256)   # the load generator inherits it
    server, port = start_server(loop, args.connections)
    with server:
        before = server.ask("stats")
        probes = Probes(port, min(PROBES, args.connections // 2), args.size)
        gen = subprocess.Popen(
            [*taskset(1), build_loadgen(), "127.0.0.1", str(port),
             str(args.connections - len(probes.socks)), str(args.size), str(args.warmup),
             str(args.duration)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        peak = watch_peak(server.pid, gen, args.warmup + args.duration + 300)
        latency = probes.stop(time.monotonic() - args.duration)
        out = gen.stdout.read()
        after = server.ask("stats")
    if gen.returncode != 0:
        return {"error": f"load generator exited with {gen.returncode}", "server": after}
    result = json.loads(out)
    rps = result["requests"] / result["seconds"]
    problems = [f"{key} {after[key]} != {args.connections}"
                for key in ("accepted", "echoing", "peak_open") if after[key] != args.connections]
    problems += latency.pop("errors")
    return {**result, "rps": rps, "connections": args.connections, "size": args.size,
            "mean_us": args.connections / rps * 1e6 if rps else None,
            "p99_capped": result["p99_us"] >= HIST_CAP_US, **latency,
            "server_rss_before_kib": before["rss_kib"], "server_fds_before": before["fds"],
            "server_peak_rss_kib": after["hwm_kib"], "server_peak_fds": peak["fds"],
            "server_rss_at_peak_fds_kib": peak["rss_kib"], "server": after,
            "error": "; ".join(problems) or None}


class Probes:
    """count of the held connections ping-pong from threads of this process,
    timing every round trip without the load generator's 100 ms cap."""

    def __init__(self, port: int, count: int, size: int):
        self.socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        self.done = threading.Event()
        self.samples = []   # (monotonic end, microseconds)
        self.errors = []
        self.threads = [threading.Thread(target=self.ping, args=(sock, b"p" * size))
                        for sock in self.socks]
        for thread in self.threads:
            thread.start()

    def ping(self, sock, message: bytes) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(60)
        try:
            while not self.done.is_set():
                began = time.monotonic()
                sock.sendall(message)
                got = 0
                while got < len(message):
                    chunk = sock.recv(len(message) - got)
                    if not chunk:
                        raise ConnectionError("the server closed a probe connection")
                    got += len(chunk)
                ended = time.monotonic()
                self.samples.append((ended, (ended - began) * 1e6))
        except OSError as exc:
            self.errors.append(f"probe: {type(exc).__name__}: {exc}")

    def stop(self, window_start: float) -> dict:
        """Round trips that ended after window_start: count, p50, p99 (us)."""
        self.done.set()
        for thread in self.threads:
            thread.join()
        for sock in self.socks:
            sock.close()
        took = sorted(us for ended, us in self.samples if ended >= window_start)
        if len(took) < 2:
            return {"probe_samples": len(took), "errors": self.errors + ["too few probe samples"]}
        cuts = statistics.quantiles(took, n=100)
        return {"probes": len(self.socks), "probe_samples": len(took), "probe_p50_us": cuts[49],
                "probe_p99_us": cuts[98], "probe_max_us": took[-1], "errors": self.errors}


def watch_peak(pid: int, gen: subprocess.Popen, timeout: float) -> dict:
    """Samples pid's /proc until gen exits: the sample with the most fds."""
    peak = {"fds": 0}
    deadline = time.monotonic() + timeout
    while gen.poll() is None:
        if time.monotonic() > deadline:
            gen.kill()
            gen.wait()
            break
        sample = proc_stats(pid)
        if sample["fds"] >= peak["fds"]:
            peak = sample
        time.sleep(0.25)
    return peak


def churn(loop: str, args) -> dict:
    """A client child churns args.churn connections against a server child."""
    server, port = start_server(loop, 4 * args.concurrency)
    with server, Child(1, "churn", loop, "127.0.0.1", port, args.size, args.concurrency) as client:
        points = [checkpoint("pre-warmup", client, server)]
        warm = client.ask(f"run {args.churn_warmup}", timeout=batch_timeout(args.churn_warmup))
        time.sleep(args.settle)
        points.append(checkpoint("start", client, server))
        batches = []
        while sum(b["connections"] for b in batches) < args.churn:
            count = min(args.sample_every, args.churn - sum(b["connections"] for b in batches))
            batches.append(client.ask(f"run {count}", timeout=batch_timeout(count)))
            if sum(b["connections"] for b in batches) < args.churn:
                points.append(checkpoint("during", client, server))
        time.sleep(args.settle)
        points.append(checkpoint("end", client, server))
    return churn_summary(warm, batches, points)


def batch_timeout(count: int) -> float:
    return 120 + count / 100   # a hang ends the run instead of the machine's patience


def checkpoint(label: str, client: Child, server: Child) -> dict:
    return {"label": label, "client": client.ask("stats"), "server": server.ask("stats"),
            "time_wait": time_wait_count()}


def churn_summary(warm: dict, batches: list, points: list) -> dict:
    start, end = points[1], points[-1]
    count = sum(b["connections"] for b in batches)
    seconds = sum(b["seconds"] for b in batches)
    errors = collections.Counter()
    for batch in [warm, *batches]:
        errors.update(batch["errors"])
    deltas = {f"{side}_{key}_delta": end[side][key] - start[side][key]
              for side in ("client", "server") for key in ("fds", "rss_kib")}
    return {"connections": count, "seconds": seconds, "conn_per_s": count / seconds,
            "failures": warm["failures"] + sum(b["failures"] for b in batches),
            "errors": dict(errors.most_common(5)), **deltas,
            "server_open_at_end": end["server"]["open"],
            "server_accepted": end["server"]["accepted"],
            "socket_stats": end["client"]["socket_stats"], "checkpoints": points}


# ---- tables ------------------------------------------------------------------------

def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def print_hold(rows: list) -> None:
    print(f"\nhold  {'loop':<9}{'conns':>7}{'bytes':>6}{'req/s':>9}{'p50 us':>8}{'p99 us':>9}"
          f"{'probe p50':>10}{'probe p99':>10}{'mean us':>9}{'RSS0 MiB':>9}{'peak MiB':>9}"
          f"{'KiB/conn':>9}{'fds':>7}  check")
    for loop, r in rows:
        if "rps" not in r:
            print(f"      {loop:<9}FAILED: {r['error']}")
            continue
        p99 = (">=" if r["p99_capped"] else "") + f"{r['p99_us']:.0f}"
        per_conn = (r["server_peak_rss_kib"] - r["server_rss_before_kib"]) / r["connections"]
        print(f"      {loop:<9}{r['connections']:>7}{r['size']:>6}{r['rps']:>9.0f}"
              f"{r['p50_us']:>8.0f}{p99:>9}{r.get('probe_p50_us', 0):>10.0f}"
              f"{r.get('probe_p99_us', 0):>10.0f}{r['mean_us']:>9.0f}"
              f"{mib(r['server_rss_before_kib']):>9}{mib(r['server_peak_rss_kib']):>9}"
              f"{per_conn:>9.1f}{r['server_peak_fds']:>7}  {r['error'] or 'all held and echoed'}")


def print_churn(rows: list) -> None:
    print(f"\nchurn {'loop':<9}{'conns':>8}{'conn/s':>8}{'fail':>5}  "
          f"{'client fds':>14}{'client RSS MiB':>19}  {'server fds':>14}{'server RSS MiB':>19}"
          f"  reused/created")
    for loop, r in rows:
        if "conn_per_s" not in r:
            print(f"      {loop:<9}FAILED: {r['error']}")
            continue
        start, end = r["checkpoints"][1], r["checkpoints"][-1]
        cells = []
        for side in ("client", "server"):
            a, b = start[side], end[side]
            cells.append(f"{a['fds']:>5}->{b['fds']:<5}{b['fds'] - a['fds']:>+4}")
            cells.append(f"{mib(a['rss_kib']):>6}->{mib(b['rss_kib']):<6}"
                         f"{(b['rss_kib'] - a['rss_kib']) / 1024:>+6.1f}")
        reuse = r["socket_stats"]
        reused = f"{reuse['reused']}/{reuse['created']}" if reuse else "-"
        print(f"      {loop:<9}{r['connections']:>8}{r['conn_per_s']:>8.0f}{r['failures']:>5}  "
              f"{cells[0]:>14}{cells[1]:>19}  {cells[2]:>14}{cells[3]:>19}  {reused}")
        for error, n in r["errors"].items():
            print(f"        {n} x {error}")
    print_checkpoints(rows)


def print_checkpoints(rows: list) -> None:
    print(f"\n  {'loop':<9}{'point':<11}{'done':>7}{'cli fds':>8}{'cli KiB':>9}"
          f"{'srv fds':>8}{'srv KiB':>9}{'srv open':>9}{'TIME_WAIT':>10}  pooled/disconnecting")
    for loop, r in rows:
        for p in r.get("checkpoints", []):
            c, s, reuse = p["client"], p["server"], p["client"]["socket_stats"]
            pools = f"{reuse['pooled']}/{reuse['disconnecting']}" if reuse else "-"
            print(f"  {loop:<9}{p['label']:<11}{c['done']:>7}{c['fds']:>8}{c['rss_kib']:>9}"
                  f"{s['fds']:>8}{s['rss_kib']:>9}{s['open']:>9}{p['time_wait']:>10}  {pools}")


# ---- main ------------------------------------------------------------------------------

def parse(argv) -> argparse.Namespace:
    parser = base_parser(__doc__, "iocploop", "asyncio,uvloop,iocploop (each in turn)")
    parser.set_defaults(runs=1, duration=None, warmup=None)
    parser.add_argument("--scenario", default=",".join(SCENARIOS))
    parser.add_argument("--connections", type=int, help="hold: connections held (10000)")
    parser.add_argument("--size", type=int, default=1024, help="message bytes")
    parser.add_argument("--churn", type=int, help="churn: connections opened and closed (100000)")
    parser.add_argument("--churn-warmup", type=int, help="churn: before the start figures (1000)")
    parser.add_argument("--sample-every", type=int, help="churn: figures every N (20000)")
    parser.add_argument("--concurrency", type=int, default=64, help="churn: at a time")
    parser.add_argument("--settle", type=float, help="churn: seconds before start/end figures")
    parser.add_argument("--quick", action="store_true", help="a smoke: small numbers")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def run_child(words: list) -> None:
    if words[0] == "server":
        server_child(words[1], int(words[2]))
    else:
        churn_child(words[1], words[2], int(words[3]), int(words[4]), int(words[5]))


def measure(job: tuple, args) -> dict:
    scenario, loop = job
    try:
        return (hold if scenario == "hold" else churn)(loop, args)
    except Exception as exc:   # reported in the table, the other jobs still run
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(argv=None):
    args = parse(argv)
    if args.child:
        run_child(args.child)
        return
    if not sys.platform.startswith("linux"):
        sys.exit("benchmarks.stress runs on Linux only (io_uring, /proc)")
    scenarios = [s for s in args.scenario.split(",") if s]
    if set(scenarios) - set(SCENARIOS):
        sys.exit(f"benchmarks.stress: scenarios are {', '.join(SCENARIOS)}")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if "hold" in scenarios and hard != resource.RLIM_INFINITY and args.connections + 256 > hard:
        sys.exit(f"benchmarks.stress: {args.connections} connections need "
                 f"{args.connections + 256} file descriptors, the hard limit is {hard}")
    build_loadgen()
    loops = available(args.loops.split(","))
    started = time.monotonic()
    jobs = [(scenario, loop) for scenario in scenarios for loop in loops]
    samples = run_interleaved(args.runs, jobs, lambda job: measure(job, args))
    rows = [(job, r) for job in jobs for r in samples[job]]
    if "hold" in scenarios:
        print_hold([(loop, r) for (s, loop), r in rows if s == "hold"])
    if "churn" in scenarios:
        print_churn([(loop, r) for (s, loop), r in rows if s == "churn"])
    wall = time.monotonic() - started
    print(f"\n({wall:.0f}s; hold: {args.duration:g}s after {args.warmup:g}s warm-up, server on "
          f"CPU 0, load generator on CPU 1; churn: {args.concurrency} at a time, start/end "
          f"after {args.churn_warmup} warm-up connections, gc and {args.settle:g}s; "
          f"python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d')})")
    if args.json:
        table = [{"scenario": s, "loop": loop,
                  **{k: v for k, v in r.items() if k not in ("checkpoints", "server")}}
                 for (s, loop), r in rows]
        write_json(args.json, table, samples, argv=sys.argv, wall_seconds=wall,
                   options={k: v for k, v in vars(args).items() if k != "child"})
    if any(r.get("error") or r.get("failures") for _, r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
