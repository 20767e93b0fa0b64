"""IPC benchmark: subprocess pipes, spawning, Unix sockets, add_reader (Linux).

    python -m benchmarks.ipc [--runs 3] [--duration 3] [--warmup 0.5]
        [--loops asyncio,uvloop,rloop,iocploop] [--workloads pipe,spawn,unix,reader]
        [--cpu 0] [--json out.json]

Each measurement is one workload on one loop in a fresh interpreter
(`python -m benchmarks.ipc --child WORKLOAD LOOP ...`, driven by
asyncio.Runner(loop_factory=...), pinned with taskset to --cpu, and so are
the processes it starts); configurations run interleaved, loop after loop,
so drift on a shared machine hits every loop alike.  Each workload runs
--warmup seconds, then is measured for --duration seconds:

* pipe:   asyncio.create_subprocess_exec("cat") with stdin and stdout pipes;
          a writer task streams 256 KiB chunks into stdin (write + drain()),
          a reader task reads stdout in 256 KiB chunks; MB/s (10^6 bytes)
          read back through cat.  At the end stdin is closed and the bytes
          read until EOF must equal the bytes written.
* spawn:  `await (await create_subprocess_exec("/bin/true")).wait()` in a
          row; processes started and reaped per second.
* unix:   an asyncio.Protocol echo server from loop.create_unix_server (in a
          temporary directory) and 16 loop.create_unix_connection clients in
          the same process, each sending 1 KiB and waiting for its echo;
          round trips/s and p50/p99 round-trip latency.
* reader: socket.socketpair(), both ends non-blocking, a loop.add_reader
          callback on each reading 64 bytes and sending them back; round
          trips/s.

The table shows the median of --runs for every (workload, loop), the CPU of
the loop's process per unit over the same window (microseconds per MB, spawn
or round trip; a spawned process's own CPU is not counted), and the ratios to
uvloop's and rloop's.  A child that raises, hangs or reads back the wrong
byte count fails its cell (FAILED, traceback below the table) instead of the
whole run; a loop that lacks the API a workload needs (NotImplementedError:
rloop 0.5.0 has no Unix sockets) gets "not supported" in the note.
"""
from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

from ._harness import (ROOT, available, base_parser, medians_of, number,
                       ratio_cells, ratio_header, ratios, taskset, write_json)
from ._loops import missing_api, run_on

WORKLOADS = ("pipe", "spawn", "unix", "reader")
UNITS = {"pipe": "MB/s", "spawn": "spawns/s", "unix": "rt/s", "reader": "rt/s"}
PER = {"pipe": "MB", "spawn": "spawn", "unix": "rt", "reader": "rt"}   # what cpu us is per
CHUNK = 256 * 1024      # pipe: bytes per write and per read
UNIX_CLIENTS = 16
UNIX_MESSAGE = 1024
READER_MESSAGE = 64
HANG_GRACE = 15.0       # child: the workload is declared hung this long after its end


# ---- the child side: one workload on one loop ----------------------------------

class Window:
    """After warmup seconds, note counter() and the time; after warmup +
    duration, again, and set stopping.  measuring is true in between."""

    def __init__(self, warmup: float, duration: float, counter):
        loop = asyncio.get_running_loop()
        self.counter = counter
        self.measuring = self.stopping = False
        self.t0 = self.t1 = None
        self.stopped = loop.create_future()
        loop.call_later(warmup, self._start)
        loop.call_later(warmup + duration, self._stop)

    def _start(self):
        self.measuring = True
        self.c0, self.t0, self.cpu0 = self.counter(), time.perf_counter(), time.process_time()

    def _stop(self):
        self.measuring, self.stopping = False, True
        self.c1, self.t1, self.cpu1 = self.counter(), time.perf_counter(), time.process_time()
        self.stopped.set_result(None)

    def rate(self) -> float:
        return (self.c1 - self.c0) / (self.t1 - self.t0)

    def cpu_share(self) -> float:
        """This process's CPU (every thread) over the window, as a share of the wall time."""
        return (self.cpu1 - self.cpu0) / (self.t1 - self.t0)


async def bench_pipe(warmup: float, duration: float) -> dict:
    proc = await asyncio.create_subprocess_exec(
        "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=CHUNK)
    chunk = b"x" * CHUNK
    written = read = 0
    window = Window(warmup, duration, lambda: read)

    async def writer():
        nonlocal written
        while not window.stopping:
            proc.stdin.write(chunk)
            written += len(chunk)
            await proc.stdin.drain()
        proc.stdin.close()
        await proc.stdin.wait_closed()

    async def reader():
        nonlocal read
        while data := await proc.stdout.read(CHUNK):
            read += len(data)

    await asyncio.gather(writer(), reader())
    returncode = await proc.wait()
    if read != written:
        raise RuntimeError(f"pipe: wrote {written} bytes into cat, read {read} back")
    if returncode != 0:
        raise RuntimeError(f"pipe: cat exited with {returncode}")
    return {"value": window.rate() / 1e6, "cpu": window.cpu_share(),
            "mib_written": written / 2**20}


async def bench_spawn(warmup: float, duration: float) -> dict:
    true = "/bin/true" if os.path.exists("/bin/true") else shutil.which("true")
    spawned = 0
    window = Window(warmup, duration, lambda: spawned)
    while not window.stopping:
        proc = await asyncio.create_subprocess_exec(true)
        returncode = await proc.wait()
        if returncode != 0:
            raise RuntimeError(f"spawn: {true} exited with {returncode}")
        spawned += 1
    return {"value": window.rate(), "cpu": window.cpu_share(), "spawned": spawned}


class EchoServer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class PingClient(asyncio.Protocol):
    """Sends UNIX_MESSAGE bytes, waits for all of them to come back, again,
    until the window stops; done resolves then."""

    def __init__(self, stats, window_holder):
        self.stats, self.holder = stats, window_holder
        self.done = asyncio.get_running_loop().create_future()
        self.got = 0

    def connection_made(self, transport):
        self.transport = transport

    def send(self):
        self.sent_at = time.perf_counter()
        self.transport.write(b"p" * UNIX_MESSAGE)

    def data_received(self, data):
        self.got += len(data)
        if self.got < UNIX_MESSAGE:
            return
        if self.got > UNIX_MESSAGE:
            self.done.set_exception(RuntimeError(f"unix: {self.got} bytes echoed for "
                                                 f"{UNIX_MESSAGE}"))
            return
        self.got = 0
        window = self.holder[0]
        if window.measuring:
            self.stats["latencies"].append(time.perf_counter() - self.sent_at)
        self.stats["round_trips"] += 1
        if window.stopping:
            self.done.set_result(None)
        else:
            self.send()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"unix: client connection lost ({exc!r})"))


async def bench_unix(warmup: float, duration: float) -> dict:
    loop = asyncio.get_running_loop()
    stats = {"round_trips": 0, "latencies": []}
    holder = []
    with tempfile.TemporaryDirectory(prefix="iocploop-ipc-") as tmp:
        path = os.path.join(tmp, "echo.sock")
        server = await loop.create_unix_server(EchoServer, path)
        clients = []
        for _ in range(UNIX_CLIENTS):
            _, client = await loop.create_unix_connection(
                lambda: PingClient(stats, holder), path)
            clients.append(client)
        holder.append(Window(warmup, duration, lambda: stats["round_trips"]))
        for client in clients:
            client.send()
        await asyncio.gather(*(c.done for c in clients))
        for client in clients:
            client.transport.close()
        server.close()
        await server.wait_closed()
    window = holder[0]
    lat = sorted(stats["latencies"])
    return {"value": window.rate(), "cpu": window.cpu_share(),
            "p50_us": lat[len(lat) // 2] * 1e6 if lat else 0.0,
            "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6 if lat else 0.0}


async def bench_reader(warmup: float, duration: float) -> dict:
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    round_trips = got = 0
    window = Window(warmup, duration, lambda: round_trips)
    done = loop.create_future()

    def on_a():
        nonlocal round_trips, got
        try:
            data = a.recv(READER_MESSAGE)
        except BlockingIOError:
            return
        if not data:
            if not done.done():
                done.set_exception(RuntimeError("reader: peer closed"))
            return
        got += len(data)
        if got < READER_MESSAGE:
            a.send(data)   # a short read: pass it on, the rest follows
            return
        got -= READER_MESSAGE
        round_trips += 1
        if window.stopping:
            if not done.done():
                done.set_result(None)
        else:
            a.send(data)

    def on_b():
        try:
            data = b.recv(READER_MESSAGE)
        except BlockingIOError:
            return
        if data:
            b.send(data)

    loop.add_reader(a.fileno(), on_a)
    loop.add_reader(b.fileno(), on_b)
    try:
        a.send(b"r" * READER_MESSAGE)
        await done
    finally:
        loop.remove_reader(a.fileno())
        loop.remove_reader(b.fileno())
        a.close()
        b.close()
    return {"value": window.rate(), "cpu": window.cpu_share()}


async def guarded(workload: str, warmup: float, duration: float) -> dict:
    """The workload, or RuntimeError with its stack if it is not done
    HANG_GRACE seconds after its measuring window ends."""
    task = asyncio.create_task(globals()["bench_" + workload](warmup, duration))
    done, _ = await asyncio.wait({task}, timeout=warmup + duration + HANG_GRACE)
    if not done:
        stack = "".join(traceback.format_list(
            traceback.extract_stack(task.get_stack(limit=None)[-1])))
        task.cancel()
        raise RuntimeError(f"{workload}: hung, not done {HANG_GRACE:g}s after the window "
                           f"ended; the task was at:\n{stack}")
    return task.result()


def child(workload: str, loop_name: str, warmup: float, duration: float) -> None:
    # Last resort: a loop stuck outside Python code (or in closing) dumps every stack.
    faulthandler.dump_traceback_later(warmup + duration + HANG_GRACE + 10, exit=True)
    try:
        result = run_on(loop_name, guarded(workload, warmup, duration))
    except NotImplementedError as exc:
        result = {"unsupported": f"{loop_name} {missing_api(exc)}"}
    faulthandler.cancel_dump_traceback_later()
    print(json.dumps(result), flush=True)


# ---- the parent side: interleave, collect, report ------------------------------

def run_child(job, args) -> dict:
    """One fresh, pinned child for job = (workload, loop): its result dict, or
    {"error": text} if it failed, hung or printed no result."""
    workload, loop = job
    cmd = [*taskset(args.cpu), sys.executable, "-m", "benchmarks.ipc", "--child", workload, loop,
           str(args.warmup), str(args.duration)]
    limit = args.warmup + args.duration + HANG_GRACE + 30
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # the child and whatever it started
        out, err = proc.communicate()
        return {"error": f"killed after {limit:g}s without a result\n{err}"}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0 or not out.strip():
        return {"error": f"exit status {proc.returncode}\n{err}"}
    result = json.loads(out.strip().splitlines()[-1])
    if err.strip():
        result["stderr"] = err
    return result


def shown(workload: str, result: dict) -> str:
    if "unsupported" in result:
        return "not supported: " + result["unsupported"]
    if "error" in result:
        return "FAILED: " + result["error"].strip().splitlines()[-1][:100]
    text = f"{result['value']:.1f} {UNITS[workload]}"
    if "p50_us" in result:
        text += f", p50 {result['p50_us']:.0f} us, p99 {result['p99_us']:.0f} us"
    return text


def run_all(jobs: list, args) -> dict:
    """Every job, --runs rounds in the given order (as _harness.run_interleaved),
    one progress line per measurement on stderr; {job: [results]}.  An
    unsupported job runs once."""
    samples = {job: [] for job in jobs}
    total, done, started = args.runs * len(jobs), 0, time.monotonic()
    for run in range(1, args.runs + 1):
        for job in jobs:
            if any("unsupported" in r for r in samples[job]):
                done += 1
                continue
            result = run_child(job, args)
            samples[job].append(result)
            done += 1
            left = (time.monotonic() - started) / done * (total - done)
            print(f"  [{done:>{len(str(total))}}/{total}] {job[0]:<7}{job[1]:<9} run {run}: "
                  f"{shown(job[0], result)}  (about {left:.0f}s left)", file=sys.stderr, flush=True)
    return samples


def main(argv=None):
    parser = base_parser(__doc__, "asyncio,uvloop,rloop,iocploop")
    parser.set_defaults(duration=3.0, warmup=0.5)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--cpu", type=int, default=0, help="pin each child (taskset) to this CPU")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        workload, loop, warmup, duration = args.child
        child(workload, loop, float(warmup), float(duration))
        return
    if not sys.platform.startswith("linux"):
        sys.exit("benchmarks.ipc runs on Linux (never read performance from Wine)")
    workloads = args.workloads.split(",")
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        sys.exit(f"--workloads: unknown {', '.join(sorted(unknown))} (have {', '.join(WORKLOADS)})")
    command = shlex.join([os.path.relpath(sys.executable, ROOT), "-m", "benchmarks.ipc",
                          *(sys.argv[1:] if argv is None else argv)])
    print(f"$ {command}", flush=True)
    loops = available(args.loops.split(","))
    jobs = [(workload, loop) for workload in workloads for loop in loops]
    samples = run_all(jobs, args)

    print(f"{'workload':<9}{'loop':<10}{'median':>10}  {'unit':<10}{'cpu us':>8} {'per':<6}"
          f"{ratio_header()}{'p50 us':>8}{'p99 us':>8}  note")
    table, failures = [], []
    for workload in workloads:
        medians = {}
        for loop in loops:
            runs = samples[(workload, loop)]
            good = [r for r in runs if "error" not in r]
            keys = ["value", "cpu_us"] + (["p50_us", "p99_us"] if workload == "unix" else [])
            for r in good:
                if "value" in r:
                    r["cpu_us"] = r["cpu"] * 1e6 / r["value"] if r["value"] else None
            medians[loop] = medians_of(good, keys) if good else None
        for loop in loops:
            runs = samples[(workload, loop)]
            errors = [r["error"] for r in runs if "error" in r]
            m = medians[loop]
            value = m["value"] if m else None
            row = {"workload": workload, "loop": loop, "unit": UNITS[workload],
                   **(m or {"value": None, "cpu_us": None}), **ratios(value, medians, "value"),
                   "failed_runs": len(errors)}
            notes = [f"{len(errors)}/{len(runs)} runs FAILED"] if errors else []
            if any("unsupported" in r for r in runs):
                notes.append("not supported: " + runs[0]["unsupported"])
            if any("stderr" in r for r in runs):
                notes.append("wrote to stderr (see --json)")
            if workload == "pipe" and m:
                written = statistics.median(r["mib_written"] for r in runs if "error" not in r)
                notes.append(f"{written:.0f} MiB written")
            shown_value = (f"{value:>10.1f}" if value is not None else
                           f"{'-' if m is None and not errors else 'FAILED':>10}")
            lat = (f"{m['p50_us']:>8.0f}{m['p99_us']:>8.0f}" if m and "p50_us" in m
                   else f"{'':>16}")
            print(f"{workload:<9}{loop:<10}{shown_value}  {UNITS[workload]:<10}"
                  f"{number(m and m['cpu_us'], '.1f', 8)} {PER[workload]:<6}{ratio_cells(row)}"
                  f"{lat}  {', '.join(notes)}".rstrip())
            table.append({**row, "note": ", ".join(notes)})
            if errors:
                failures.append((workload, loop, len(errors), len(runs), errors[0]))
    print(f"(median of {args.runs} interleaved runs of {args.duration:g}s after {args.warmup:g}s "
          f"warm-up, a fresh process each, pinned to CPU {args.cpu} with its children; cpu us: "
          f"microseconds of the loop process's CPU per unit; "
          f"python {sys.version.split()[0]})")
    for workload, loop, failed, runs, error in failures:
        print(f"\n{workload}/{loop}: {failed}/{runs} runs failed; the first:\n{error.rstrip()}")
    if args.json:
        write_json(args.json, table, samples, command=command)


if __name__ == "__main__":
    main()
