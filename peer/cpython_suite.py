#!/usr/bin/env python3
"""Run CPython's own test.test_asyncio with iocploop as the loop (or stock asyncio).

    python peer/cpython_suite.py --target iocploop|asyncio [--platform linux|wine]
                                 [--out build/peer] [--jobs 2] [--test-timeout S]
                                 [--timeout S] [--reruns 1] [--modules a,b]

Run from the repository root with the project's Python (.venv/bin/python;
`source tools/venv.sh` sets $PY).  Writes, per run,
  build/peer/cpython-<platform>-py<X.Y>-<target>.xml              JUnit, one <testsuite> per module
  build/peer/cpython-<platform>-py<X.Y>-<target>-deselected.json  {module: count}
  build/peer/cpython-<platform>-py<X.Y>-<target>-summary.json     counts, times, flaky tests
  build/peer/logs/cpython-<platform>-<target>/<module>.*           worker output and events
peer/report.py compares the two runs test by test (each <testcase> says
which loop it ran on, and an iocploop class's tests name their stock
reference).

Where the tests come from (never from this repository):
  linux  the interpreter's own Lib/test (pyenv 3.11.7 for .venv);
  wine   Windows CPython (.cache/wine/py/cp311) has no Lib/test: the pure-Python
         test package (test/__init__, support/, test_asyncio/, certdata/) of the
         host interpreter of the same minor version is copied to .cache/peer/cp311/
         and put on the Windows Python's PYTHONPATH.

How iocploop becomes the loop: peer/cpython_shim/site/sitecustomize.py (first on
PYTHONPATH, so child interpreters get it too) rebinds asyncio.DefaultEventLoopPolicy
to iocploop.EventLoopPolicy when IOCPLOOP_PEER_TARGET=iocploop; modules that
hard-code a loop class get iocploop subclasses from peer/cpython_shim/extras.py.
peer/cpython_shim/deselect.py lists the tests taken out (both targets).

Each module runs in its own worker process (plain unittest,
peer/cpython_shim/worker.py), --jobs at a time, longest first.  A test running
past --test-timeout ends its worker (stacks dumped to the module's log); it is
recorded as an error and a new worker goes on with the rest of the module.
The whole run stops at --timeout (tests not run are recorded as errors).
Failed tests are run once more (--reruns) in a fresh worker; one that passes
then counts as passed and is listed as flaky in the summary.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from _wine_tools import load_wine_tools

ROOT = Path(__file__).resolve().parent.parent
SHIM = ROOT / "peer" / "cpython_shim"
SITE = SHIM / "site"
WORKER = SHIM / "worker.py"
PEER_CACHE = ROOT / ".cache" / "peer"
PKG = "test.test_asyncio."

# Rough seconds per module (Linux, stock), to start the long ones first when
# no earlier run's times are at hand.
DEFAULT_COST = {
    "test_events": 40, "test_tasks": 20, "test_ssl": 25, "test_subprocess": 25,
    "test_sendfile": 10, "test_streams": 10, "test_base_events": 10, "test_sslproto": 8,
    "test_sock_lowlevel": 8, "test_unix_events": 8, "test_locks": 5, "test_runners": 5,
    "test_waitfor": 5, "test_timeouts": 4, "test_queues": 3, "test_futures": 3,
    "test_windows_events": 5, "test_selector_events": 3, "test_proactor_events": 3,
}

_print_lock = threading.Lock()


def say(msg: str = "") -> None:
    with _print_lock:
        print(msg, flush=True)


# --------------------------------------------------------------------------- records

@dataclass
class Record:
    id: str                      # full test id, or "<module>" / fixture description
    outcome: str                 # passed failed error skipped xfail
    message: str = ""
    details: str = ""
    duration: float = 0.0
    classname: str = ""
    name: str = ""
    flaky: str = ""              # first failure's message when a rerun passed
    note: str = ""               # e.g. timeout
    loop: str = ""               # iocploop / stock / none (peer/loop_probe.py); "" unknown
    reference: list = field(default_factory=list)  # stock test ids an iocploop class compares to


@dataclass
class ModuleResult:
    module: str
    records: dict = field(default_factory=dict)   # id -> Record
    fixtures: list = field(default_factory=list)  # Records for fixture/module events
    deselected: dict = field(default_factory=dict)
    total: int = 0
    added: list = field(default_factory=list)
    wall: float = 0.0
    workers: int = 0
    env: dict = field(default_factory=dict)
    plan: list = field(default_factory=list)
    deselected_n: int | None = None               # whole module out: its test count


def split_id(test_id: str) -> tuple[str, str]:
    head, _, tail = test_id.rpartition(".")
    return head, tail


_FIXTURE = re.compile(r"^(\w+) \((.+)\)$")


def fixture_record(module: str, desc: str, outcome: str, message: str, details: str) -> Record:
    m = _FIXTURE.match(desc)
    if m:
        classname, name = m.group(2), m.group(1)
    else:
        classname, name = module, desc
    return Record(id=f"{classname}.{name}", outcome=outcome, message=message, details=details,
                  classname=classname, name=name)


# --------------------------------------------------------------------------- launchers

class Launcher:
    """Starts one worker process; subclasses know the platform."""

    platform = "?"

    def __init__(self, target: str, log_dir: Path):
        self.target = target
        self.log_dir = log_dir
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()

    # paths as the worker sees them
    def path(self, p: Path) -> str:
        return str(p)

    def command(self, worker_args: list[str]) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        raise NotImplementedError

    def popen(self, cmd, env, log_file):
        raise NotImplementedError

    def kill(self, proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.kill()

    def kill_all(self) -> None:
        with self.lock:
            procs = list(self.procs)
        for proc in procs:
            self.kill(proc)

    def run(self, worker_args: list[str], log: Path, events: Path, stall: float,
            deadline: float) -> tuple[int | None, str]:
        """Run a worker until it exits, its events file stalls for `stall`
        seconds (the worker's own watchdog failed), or the deadline passes.
        Returns (exit code or None, why it was killed)."""
        with open(log, "ab") as logf:
            proc = self.popen(self.command(worker_args), self.env(), logf)
            with self.lock:
                self.procs.add(proc)
            why = ""
            last_size, last_change = -1, time.monotonic()
            try:
                while True:
                    try:
                        rc = proc.wait(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    now = time.monotonic()
                    size = events.stat().st_size if events.exists() else 0
                    if size != last_size:
                        last_size, last_change = size, now
                    if now > deadline:
                        why = "overall timeout"
                    elif now - last_change > stall:
                        why = f"no progress for {stall:.0f} s (watchdog did not fire)"
                    if why:
                        self.kill(proc)
                        proc.wait()
                        rc = None
                        break
            finally:
                with self.lock:
                    self.procs.discard(proc)
                self.after(proc)
        return rc, why

    def after(self, proc) -> None:
        pass


class LinuxLauncher(Launcher):
    platform = "linux"

    def __init__(self, target, log_dir, python: str):
        super().__init__(target, log_dir)
        self.python = python

    def command(self, worker_args):
        return [self.python, str(WORKER), *worker_args]

    def env(self):
        env = dict(os.environ)
        for k in ("PYTHONSAFEPATH", "PYTHONHOME", "PYTHONSTARTUP"):
            env.pop(k, None)
        env["PYTHONPATH"] = os.pathsep.join([str(SITE), str(ROOT)])
        env["IOCPLOOP_PEER_TARGET"] = self.target
        env["PYTHONFAULTHANDLER"] = "1"
        env.setdefault("PYTHONIOENCODING", "utf-8")
        return env

    def popen(self, cmd, env, log_file):
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)


class WineLauncher(Launcher):
    """Windows CPython under Wine, as tools/wine.py starts it: WINEPREFIX of
    .cache/wine, WINEDEBUG=-all, stdin from /dev/null, output through a pipe
    that a thread copies to the log (and stops reading 5 s after exit)."""
    platform = "wine"

    def __init__(self, target, log_dir, wt, minor: str, test_lib: Path):
        super().__init__(target, log_dir)
        self.wt = wt
        self.minor = minor
        self.test_lib = test_lib
        self.readers: dict[int, threading.Thread] = {}

    def path(self, p: Path) -> str:
        return self.wt.winpath(p)

    def command(self, worker_args):
        return [self.wt.WINE, str(self.wt.python_exe(self.minor)), self.wt.winpath(WORKER), *worker_args]

    def env(self):
        tag = self.wt.tag_of(self.minor)
        parts = [self.wt.winpath(SITE)]
        if self.target == "iocploop":
            parts.append(self.wt.winpath(self.wt.stage_dir(self.minor)))
        parts.append(self.wt.winpath(self.test_lib))
        return self.wt.wine_env({
            "PYTHONPATH": ";".join(parts),
            "IOCPLOOP_PEER_TARGET": self.target,
            "PYTHONFAULTHANDLER": "1",
            # bytecode is fine, but outside the repository's folders
            "PYTHONDONTWRITEBYTECODE": "",
            "PYTHONPYCACHEPREFIX": self.wt.winpath(PEER_CACHE / f"pycache-{tag}"),
        })

    def popen(self, cmd, env, log_file):
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)

        def pump():
            for raw in iter(proc.stdout.readline, b""):
                with contextlib.suppress(ValueError):
                    log_file.write(raw.replace(b"\r\n", b"\n"))
                    log_file.flush()

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        self.readers[proc.pid] = t
        return proc

    def after(self, proc):
        t = self.readers.pop(proc.pid, None)
        if t is not None:
            t.join(timeout=5)  # a Wine helper may hold the pipe open


# --------------------------------------------------------------------------- one module

class Runner:
    def __init__(self, args, launcher: Launcher, modules: list[str], deadline: float):
        self.args = args
        self.launcher = launcher
        self.modules = modules
        self.deadline = deadline
        self.log_dir = launcher.log_dir
        self.done_count = 0
        self.stopping = False

    def worker_args(self, module: str, events: Path, exclude: Path | None, only: Path | None):
        a = ["--module", module, "--target", self.args.target, "--platform", self.args.platform,
             "--events", self.launcher.path(events), "--test-timeout", str(self.args.test_timeout)]
        if exclude is not None:
            a += ["--exclude-file", self.launcher.path(exclude)]
        if only is not None:
            a += ["--only-file", self.launcher.path(only)]
        return a

    def run_module(self, module: str, only: list[str] | None = None, tag: str = "") -> ModuleResult:
        short = module[len(PKG):]
        res = ModuleResult(module=module)
        started = time.monotonic()
        done_ids: set[str] = set()
        attempt = 0
        collected = False
        stuck = 0
        log = self.log_dir / f"{short}{tag}.log"
        log.unlink(missing_ok=True)
        while True:
            attempt += 1
            events = self.log_dir / f"{short}{tag}.{attempt}.jsonl"
            events.unlink(missing_ok=True)
            exclude = None
            if done_ids:
                exclude = self.log_dir / f"{short}{tag}.{attempt}.exclude"
                exclude.write_text("\n".join(sorted(done_ids)) + "\n")
            only_path = None
            if only is not None:
                only_path = self.log_dir / f"{short}{tag}.only"
                only_path.write_text("\n".join(only) + "\n")
            with open(log, "ab") as f:
                f.write(f"\n===== worker {attempt} =====\n".encode())
                offset = f.tell()
            if self.stopping or time.monotonic() > self.deadline:
                rc, why = None, "overall timeout"
            else:
                rc, why = self.launcher.run(
                    self.worker_args(module, events, exclude, only_path), log, events,
                    stall=self.args.test_timeout * 2 + 60, deadline=self.deadline)
            res.workers = attempt
            evs = []
            if events.exists():
                for line in events.read_text(encoding="utf-8", errors="replace").splitlines():
                    with contextlib.suppress(ValueError):
                        evs.append(json.loads(line))
            finished = False
            last_start = None
            timeout_ev = None
            progress = False
            for ev in evs:
                kind = ev.get("ev")
                if kind == "env":
                    res.env = {k: v for k, v in ev.items() if k not in ("ev", "t")}
                elif kind == "collected" and not collected:
                    collected = True
                    res.total = ev["total"]
                    res.added = ev.get("added", [])
                    des = ev.get("deselected", {})
                    if "*" in des:  # whole module out
                        n, reason = des["*"]
                        res.deselected = {f"{module} (whole module)": reason}
                        res.total = n
                        res.deselected_n = n
                    else:
                        res.deselected = des
                elif kind == "listed":
                    res.plan.append(ev["id"])
                elif kind == "start":
                    last_start = ev["id"]
                    progress = True
                elif kind == "result":
                    cls, name = split_id(ev["id"])
                    res.records[ev["id"]] = Record(
                        id=ev["id"], outcome=ev["outcome"], message=ev.get("message", ""),
                        details=ev.get("details", ""), duration=ev.get("duration", 0.0),
                        classname=cls, name=name, loop=ev.get("loop", ""),
                        reference=ev.get("reference", []))
                    done_ids.add(ev["id"])
                    if last_start == ev["id"]:
                        last_start = None
                elif kind == "fixture":
                    res.fixtures.append(fixture_record(module, ev["id"], ev["outcome"],
                                                       ev.get("message", ""), ev.get("details", "")))
                elif kind == "module_skip":
                    res.fixtures.append(Record(id=module, outcome="skipped", message=ev.get("message", ""),
                                               classname=module, name="(module)"))
                elif kind == "module_error":
                    res.fixtures.append(Record(id=module, outcome="error", message=ev.get("message", ""),
                                               details=ev.get("details", ""), classname=module,
                                               name="(module)"))
                elif kind == "timeout":
                    timeout_ev = ev
                elif kind == "done":
                    finished = True
            if finished:
                break
            # The worker died, was stopped, or timed out.
            tail = log_tail(log, 80, offset)
            if timeout_ev is not None:
                why = why or f"timeout: ran past {timeout_ev['limit']:.0f} s"
            elif not why:
                why = f"worker exited with status {rc} before the end of the module"
            if last_start is not None:
                cls, name = split_id(last_start)
                res.records[last_start] = Record(
                    id=last_start, outcome="error", message=why, details=tail,
                    classname=cls, name=name, note="timeout" if timeout_ev else "died",
                    loop=(timeout_ev or {}).get("loop", ""))
                done_ids.add(last_start)
                stuck = 0
            else:
                phase = timeout_ev["id"] if timeout_ev else "(between tests)"
                res.fixtures.append(Record(id=f"{module}.{phase}", outcome="error",
                                           message=f"{why} in {phase}", details=tail,
                                           classname=module, name=phase[:120]))
                stuck = 0 if progress else stuck + 1
            if why == "overall timeout" or stuck >= 2 or attempt >= 12 or not collected:
                self.record_unrun(res, why if why == "overall timeout" else f"not run: {why}", only)
                break
        res.wall = time.monotonic() - started
        return res

    def record_unrun(self, res: ModuleResult, why: str, only) -> None:
        """Tests that were planned but never reported: errors, so they are seen."""
        planned = only if only is not None else self.plan_of(res.module)
        for tid in planned:
            if tid not in res.records:
                cls, name = split_id(tid)
                res.records[tid] = Record(id=tid, outcome="error", message=f"not run ({why})",
                                          classname=cls, name=name, note="unrun")

    def plan_of(self, module: str) -> list[str]:
        """The ids the module would run (a --list-only worker)."""
        if time.monotonic() > self.deadline:
            return []
        short = module[len(PKG):]
        events = self.log_dir / f"{short}.plan.jsonl"
        events.unlink(missing_ok=True)
        a = self.worker_args(module, events, None, None) + ["--list-only"]
        self.launcher.run(a, self.log_dir / f"{short}.plan.log", events, stall=120,
                          deadline=min(self.deadline + 120, time.monotonic() + 120))
        ids = []
        if events.exists():
            for line in events.read_text(encoding="utf-8", errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    ev = json.loads(line)
                    if ev.get("ev") == "listed":
                        ids.append(ev["id"])
        return ids


def log_tail(path: Path, n: int, offset: int = 0) -> str:
    """The last n lines of what a worker wrote to its log from offset on."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------- output

def counts(res: ModuleResult) -> dict:
    c = {"passed": 0, "failed": 0, "skipped": 0, "deselected": deselected_count(res)}
    for rec in list(res.records.values()) + res.fixtures:
        if rec.outcome in ("failed", "error"):
            c["failed"] += 1
        elif rec.outcome in ("skipped", "xfail"):
            c["skipped"] += 1
        else:
            c["passed"] += 1
    return c


def deselected_count(res: ModuleResult) -> int:
    return res.deselected_n if res.deselected_n is not None else len(res.deselected)


def write_junit(path: Path, name: str, results: list[ModuleResult]) -> None:
    root = ET.Element("testsuites", name=name)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    host = socket.gethostname()
    for res in sorted(results, key=lambda r: r.module):
        recs = sorted(res.records.values(), key=lambda r: r.id) + res.fixtures
        suite = ET.SubElement(root, "testsuite", name=res.module, hostname=host)
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="deselected", value=str(deselected_count(res)))
        if res.added:
            ET.SubElement(props, "property", name="iocploop_classes", value=",".join(res.added))
        ET.SubElement(props, "property", name="wall_seconds", value=f"{res.wall:.1f}")
        n = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for rec in recs:
            case = ET.SubElement(suite, "testcase", classname=rec.classname, name=rec.name,
                                 time=f"{rec.duration:.3f}")
            # What peer/report.py compares by: the loop the test ran on, and
            # the stock tests that are the reference of an iocploop class's.
            if rec.loop or rec.reference:
                case_props = ET.SubElement(case, "properties")
                if rec.loop:
                    ET.SubElement(case_props, "property", name="loop", value=rec.loop)
                if rec.reference:
                    ET.SubElement(case_props, "property", name="reference",
                                  value=",".join(rec.reference))
            n["tests"] += 1
            if rec.outcome == "failed":
                n["failures"] += 1
                el = ET.SubElement(case, "failure", message=clean(rec.message)[:1000])
                el.text = clean(rec.details)
            elif rec.outcome == "error":
                n["errors"] += 1
                el = ET.SubElement(case, "error", message=clean(rec.message)[:1000])
                el.text = clean(rec.details)
            elif rec.outcome in ("skipped", "xfail"):
                n["skipped"] += 1
                ET.SubElement(case, "skipped", message=clean(rec.message)[:1000])
            if rec.flaky:
                out = ET.SubElement(case, "system-out")
                out.text = clean("flaky: failed on the first run, passed on a rerun; first failure: "
                                 + rec.flaky)
        for k, v in n.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("time", f"{res.wall:.3f}")
        totals["time"] += res.wall
    for k, v in totals.items():
        root.set(k, f"{v:.3f}" if k == "time" else str(v))
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


_BAD_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def clean(text: str) -> str:
    return _BAD_XML.sub("?", text or "")


# --------------------------------------------------------------------------- setup

def host_test_dir() -> Path:
    return Path(os.__file__).resolve().parent / "test"


def copy_test_package(minor: str) -> Path:
    """.cache/peer/cpXYZ/lib/test: the host interpreter's pure-Python test
    package pieces test_asyncio needs (same minor version)."""
    host_minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if host_minor != minor:
        raise SystemExit(f"the test package must come from a CPython {minor}; this is {host_minor}: "
                         f"run the runner with a {minor} interpreter (.venv/bin/python)")
    src = host_test_dir()
    if not (src / "test_asyncio").is_dir():
        raise SystemExit(f"{src}/test_asyncio not found (this interpreter ships no test suite)")
    tag = "cp" + minor.replace(".", "")
    lib = PEER_CACHE / tag / "lib"
    dest = lib / "test"
    key = f"{sys.version.split()[0]} {src}"
    marker = PEER_CACHE / tag / "source.txt"
    if marker.is_file() and marker.read_text() == key and (dest / "test_asyncio").is_dir():
        return lib
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy2(src / "__init__.py", dest / "__init__.py")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for sub in ("support", "test_asyncio", "certdata"):
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dest / sub, ignore=ignore)
    marker.write_text(key)
    say(f"copied the test package of CPython {sys.version.split()[0]} ({src}) to {dest.relative_to(ROOT)}")
    return lib


def list_modules(test_dir: Path) -> list[str]:
    return sorted(PKG + p.stem for p in (test_dir / "test_asyncio").glob("test_*.py"))


def linux_test_dir(python: str) -> Path:
    out = subprocess.run([python, "-c", "import os, test; print(os.path.dirname(test.__file__))"],
                         capture_output=True, text=True, check=True, cwd="/",
                         env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")})
    return Path(out.stdout.strip())


@contextlib.contextmanager
def wine_lock(wt, wait: float):
    """Wait for (and hold) the lock tools/wine.py takes: one Wine run at a time."""
    wt.CACHE.mkdir(parents=True, exist_ok=True)
    with open(wt.CACHE / ".lock", "w") as f:
        start = time.monotonic()
        announced = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    say(f"waiting for {wt.CACHE / '.lock'} (another Wine run holds it)")
                    announced = True
                if time.monotonic() - start > wait:
                    raise SystemExit("gave up waiting for the Wine lock")
                time.sleep(2)
        yield


def stage_is_fresh(wt, minor: str) -> bool:
    stage = wt.stage_dir(minor) / "iocploop"
    pyds = list(stage.glob("_ioc*.pyd"))
    if not pyds:
        return False
    built = min(p.stat().st_mtime for p in pyds)
    sources = [*(ROOT / "iocploop").glob("*.py"), *(ROOT / "csrc").glob("*.[ch]"),
               *(ROOT / "_cffi_build").glob("*.py")]
    return all(p.stat().st_mtime <= built for p in sources if p.is_file())


# --------------------------------------------------------------------------- main run

def order_modules(modules: list[str], times_file: Path) -> list[str]:
    known = {}
    if times_file.is_file():
        with contextlib.suppress(ValueError):
            known = json.loads(times_file.read_text())
    def cost(m):
        short = m[len(PKG):]
        return known.get(short, DEFAULT_COST.get(short, 2))
    return sorted(modules, key=cost, reverse=True)


def execute(args, launcher: Launcher, modules: list[str], deadline: float) -> list[ModuleResult]:
    runner = Runner(args, launcher, modules, deadline)
    results: dict[str, ModuleResult] = {}
    n = len(modules)
    counter = [0]

    def one(module):
        res = runner.run_module(module)
        with _print_lock:
            counter[0] += 1
            c = counts(res)
            print(f"[{counter[0]:2}/{n}] {module[len(PKG):]:<22} passed {c['passed']:4}  "
                  f"failed {c['failed']:3}  skipped {c['skipped']:3}  deselected {c['deselected']:3}  "
                  f"{res.wall:6.1f}s" + (f"  ({res.workers} workers)" if res.workers > 1 else ""),
                  flush=True)
        return res

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futs = {m: pool.submit(one, m) for m in modules}
        try:
            for m, fut in futs.items():
                results[m] = fut.result()
        except KeyboardInterrupt:
            runner.stopping = True
            launcher.kill_all()
            raise

    # Reruns of failures, one module at a time, in fresh workers.
    for attempt in range(args.reruns):
        todo = {m: [tid for tid, r in res.records.items()
                    if r.outcome in ("failed", "error") and r.note not in ("unrun", "timeout")]
                for m, res in results.items()}
        todo = {m: ids for m, ids in todo.items() if ids}
        total = sum(len(v) for v in todo.values())
        if not total:
            break
        if total > args.max_reruns:
            say(f"{total} failed tests: more than --max-reruns {args.max_reruns}, no rerun")
            break
        if time.monotonic() > deadline - 30:
            say("no time left for reruns")
            break
        say(f"rerun {attempt + 1}: {total} failed test(s) in {len(todo)} module(s), one worker at a time")
        for m, ids in todo.items():
            rr = runner.run_module(m, only=ids, tag=f".rerun{attempt + 1}")
            for tid in ids:
                new = rr.records.get(tid)
                old = results[m].records[tid]
                if new is not None and new.outcome in ("passed", "skipped", "xfail"):
                    new.flaky = f"{old.message}\n{old.details[-3000:]}"
                    results[m].records[tid] = new
                    say(f"    flaky: {tid} passed on rerun ({old.message[:100]})")
    return list(results.values())


def run(args) -> int:
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    deadline = started + args.timeout
    wine_session = None
    lock_cm = contextlib.nullcontext()

    if args.platform == "linux":
        python = args.python or sys.executable
        version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        test_dir = linux_test_dir(python)
        if args.target == "iocploop" and not list((ROOT / "iocploop").glob("_ioc*.so")):
            raise SystemExit("iocploop._ioc is not built: run `$PY _cffi_build/build_core.py` first")
        log_dir = out / "logs" / f"cpython-linux-{args.target}"
        launcher = LinuxLauncher(args.target, log_dir, python)
    else:
        wt = load_wine_tools()
        version = args.python_version
        if not wt.python_exe(version).is_file():
            raise SystemExit(f"no {wt.python_exe(version)}: run `python3 tools/wine.py setup --pythons {version}`")
        if args.target == "iocploop" and not args.no_build and not stage_is_fresh(wt, version):
            say(f"staging iocploop for Windows: tools/wine.py build --pythons {version}")
            subprocess.run([sys.executable, str(ROOT / "tools" / "wine.py"), "build", "--pythons", version],
                           check=True, cwd=ROOT)
        if args.target == "iocploop" and not (wt.stage_dir(version) / "iocploop").is_dir():
            raise SystemExit(f"nothing staged in {wt.stage_dir(version)}: run tools/wine.py build")
        test_lib = copy_test_package(version)
        test_dir = test_lib / "test"
        log_dir = out / "logs" / f"cpython-wine-{args.target}"
        launcher = WineLauncher(args.target, log_dir, wt, version, test_lib)
        lock_cm = wine_lock(wt, wait=args.timeout)
        wine_session = wt.WineSession

    if log_dir.exists():
        shutil.rmtree(log_dir)
    log_dir.mkdir(parents=True)
    modules = list_modules(test_dir)
    if args.modules:
        wanted = {m if m.startswith(PKG) else PKG + m for m in args.modules.split(",")}
        modules = [m for m in modules if m in wanted]
    name = f"cpython-{args.platform}-py{version}-{args.target}"
    times_file = out / f".{name}-times.json"
    modules = order_modules(modules, times_file)
    say(f"==> {name}: {len(modules)} modules from {test_dir}, {args.jobs} at a time, "
        f"test timeout {args.test_timeout:.0f} s, overall {args.timeout:.0f} s")

    with lock_cm:
        session = wine_session() if wine_session else contextlib.nullcontext()
        try:
            with session:
                results = execute(args, launcher, modules, deadline)
        finally:
            launcher.kill_all()
    wall = time.monotonic() - started

    # Outputs
    xml_path = out / f"{name}.xml"
    write_junit(xml_path, name, results)
    deselected = {r.module: deselected_count(r) for r in sorted(results, key=lambda r: r.module)
                  if deselected_count(r)}
    (out / f"{name}-deselected.json").write_text(json.dumps(deselected, indent=1, sort_keys=True) + "\n")
    if not args.modules:
        times_file.write_text(json.dumps({r.module[len(PKG):]: round(r.wall, 1) for r in results},
                                         indent=1, sort_keys=True))
    table = {r.module: dict(counts(r), wall=round(r.wall, 1), workers=r.workers,
                            iocploop_classes=r.added) for r in results}
    total = {k: sum(t[k] for t in table.values()) for k in ("passed", "failed", "skipped", "deselected")}
    envs = [r.env for r in results if r.env]
    summary = {
        "name": name, "wall_seconds": round(wall, 1), "jobs": args.jobs,
        "test_timeout": args.test_timeout, "timeout": args.timeout,
        "env": envs[0] if envs else {}, "total": total, "modules": table,
        "flaky": sorted(rec.id for r in results for rec in r.records.values() if rec.flaky),
        "timeouts": sorted(rec.id for r in results for rec in r.records.values() if rec.note == "timeout"),
        "failed": sorted(rec.id for r in results for rec in list(r.records.values()) + r.fixtures
                         if rec.outcome in ("failed", "error")),
        "deselected_ids": {r.module: r.deselected for r in results if r.deselected},
    }
    (out / f"{name}-summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")

    say("")
    say(f"{'module':<24}{'passed':>7}{'failed':>7}{'skipped':>8}{'desel':>6}{'wall':>8}")
    for m in sorted(table):
        t = table[m]
        say(f"{m[len(PKG):]:<24}{t['passed']:>7}{t['failed']:>7}{t['skipped']:>8}"
            f"{t['deselected']:>6}{t['wall']:>7.1f}s")
    say(f"{'total':<24}{total['passed']:>7}{total['failed']:>7}{total['skipped']:>8}"
        f"{total['deselected']:>6}{wall:>7.1f}s (wall)")
    if summary["failed"]:
        say("\nfailed:")
        for tid in summary["failed"]:
            say(f"  {tid}")
    if summary["flaky"]:
        say("\nflaky (failed once, passed on rerun): " + ", ".join(summary["flaky"]))
    say(f"\nwritten: {xml_path.relative_to(ROOT) if xml_path.is_relative_to(ROOT) else xml_path}")
    # the plain closing line
    say(f"{name}: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped, "
        f"{total['deselected']} deselected in {wall:.1f}s")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=["iocploop", "asyncio"])
    ap.add_argument("--platform", choices=["linux", "wine"], default="linux")
    ap.add_argument("--out", default="build/peer")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--test-timeout", type=float, default=None,
                    help="seconds per test (default 45 on Linux, 90 under Wine)")
    ap.add_argument("--timeout", type=float, default=900, help="whole run, seconds (default 900)")
    ap.add_argument("--reruns", type=int, default=1, help="reruns of failed tests (default 1)")
    ap.add_argument("--max-reruns", type=int, default=60,
                    help="skip the rerun when more tests than this failed")
    ap.add_argument("--modules", help="comma-separated subset, e.g. test_events,test_tasks")
    ap.add_argument("--python", help="Linux: interpreter to test (default: this one)")
    ap.add_argument("--python-version", default="3.11", help="Wine: Windows CPython minor (default 3.11)")
    ap.add_argument("--no-build", action="store_true", help="Wine: do not restage iocploop")
    args = ap.parse_args(argv)
    if not args.target:
        ap.error("--target is required")
    if args.test_timeout is None:
        args.test_timeout = 90.0 if args.platform == "wine" else 45.0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
