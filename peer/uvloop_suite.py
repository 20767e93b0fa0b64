#!/usr/bin/env python3
"""Run uvloop's own test suite against iocploop (or, as the reference, stock
asyncio) through the shim in peer/uvloop_shim/.

    python peer/uvloop_suite.py --target iocploop|asyncio [--platform linux|wine]
                                [--python 3.11] [--out build/peer] [--timeout S]
                                [--test-timeout S] [--modules tcp,udp,...]

Steps
-----
1. Fetch uvloop's pinned sdist once (pip download, sha256 checked) and extract
   only tests/ and uvloop/_testbase.py into .cache/peer/uvloop-0.23.0/ (never
   uvloop's own package: the shim is the only `uvloop` anyone imports).
2. Install peer/requirements.txt: into .venv on Linux; on Wine, download the
   win_amd64 wheels and pip-install them into the Windows Python under Wine
   with --no-index (once, recorded by a marker file in .cache/peer/markers/).
3. Run pytest on the fetched tests, one process per test module (a process that
   dies or times out loses only its module; it is restarted without the test
   that was running, which is recorded as an error), with PYTHONPATH starting
   with the shim, IOCPLOOP_PEER_TARGET set, `-s`, pytest-timeout per test and
   the plugin peer/uvloop_plugin.py (deselect list, os._exit at the end).
   Linux: the project venv (.venv, Python --python) and the in-tree iocploop.
   Wine: Windows CPython from .cache/wine/py/cpXY/ and the iocploop staged by
   `tools/wine.py build` in build/wine/cpXY/, a curated set of modules.
4. Merge the per-module reports into OUT/uvloop-<platform>-py<ver>-<target>.xml
   (JUnit) and ...-deselected.json ({module: count}); print a table of
   passed/failed/skipped/deselected per module and the failing test ids (also
   written to ...-failed.txt).  Logs: OUT/logs/.

Exit status: 0 when no test failed or errored, 1 otherwise, 2 on a setup error.
The whole run is bounded by --timeout (each pytest process gets what is left).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from _wine_tools import load_wine_tools

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "peer"
SHIM = PEER / "uvloop_shim"
REQUIREMENTS = PEER / "requirements.txt"
CACHE = ROOT / ".cache" / "peer"
MARKERS = CACHE / "markers"

UVLOOP_VERSION = "0.23.0"
UVLOOP_SHA256 = "28d160f51ab4da3b187063652e643dea6831072add4adc1e6d62afbe73b6be27"
SUITE = CACHE / f"uvloop-{UVLOOP_VERSION}"
TESTBASE = SUITE / "uvloop" / "_testbase.py"

# uvloop's own pytest options (its pyproject.toml), minus --capture=no (we pass -s).
PYTEST_INI = """\
# Written by peer/uvloop_suite.py: uvloop's pytest options.
[pytest]
addopts = --assert=plain --strict-markers --tb=native --import-mode=importlib
filterwarnings = default
junit_logging = no
"""

# Under Wine: the modules that make sense on Windows (peer-suites.md).  The
# others are POSIX-only (unix sockets, signals, pipes, processes, fork) or
# import fcntl (test_base).
WINE_MODULES = ["tcp", "udp", "dns", "context", "executors", "sockets", "runner",
                "aiohttp", "dealloc"]

DEFAULT_TIMEOUT = {"linux": 1200, "wine": 3000}       # the whole run, seconds
DEFAULT_TEST_TIMEOUT = {"linux": 30, "wine": 60}      # one test (pytest-timeout)
HARD_TIMEOUT_EXTRA = 30                               # then the process is ended
MAX_RESTARTS = 3                                      # per module, after a crash


class Failure(Exception):
    pass


def say(msg: str = "") -> None:
    print(msg, flush=True)


def sha256_of(path: Path) -> str:
    return load_wine_tools().sha256_of(path)


def marker_ok(name: str, key: str) -> bool:
    return load_wine_tools().marker_done(name, key, MARKERS)


def marker_set(name: str, key: str) -> None:
    load_wine_tools().marker_set(name, key, MARKERS)


def run_host(cmd: list[str], log: Path, what: str, timeout: float = 900) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=f,
                            stderr=subprocess.STDOUT, timeout=timeout).returncode
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise Failure(f"{what} failed (exit {rc}); log {log}:\n{tail}")


def requirements_key() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()
                          + (ROOT / "tests" / "requirements.txt").read_bytes()).hexdigest()


# --------------------------------------------------------------------------- fetch

def fetch_suite(host_py: str) -> None:
    """uvloop's sdist, pinned and hash-checked; only tests/ and _testbase.py."""
    if marker_ok("uvloop-suite", UVLOOP_SHA256) and TESTBASE.is_file() \
            and (SUITE / "tests" / "test_tcp.py").is_file():
        return
    sdist_dir = CACHE / "sdist"
    sdist = sdist_dir / f"uvloop-{UVLOOP_VERSION}.tar.gz"
    if not (sdist.is_file() and sha256_of(sdist) == UVLOOP_SHA256):
        sdist.unlink(missing_ok=True)
        say(f"==> fetching uvloop {UVLOOP_VERSION} sdist")
        run_host([host_py, "-m", "pip", "download", "--no-deps", "--no-binary", "uvloop",
                  f"uvloop=={UVLOOP_VERSION}", "-d", str(sdist_dir)],
                 CACHE / "logs" / "pip-download-uvloop.log", "pip download uvloop")
    got = sha256_of(sdist)
    if got != UVLOOP_SHA256:
        sdist.unlink()
        raise Failure(f"{sdist.name}: sha256 {got} differs from the pinned {UVLOOP_SHA256}")
    if SUITE.exists():
        shutil.rmtree(SUITE)
    top = f"uvloop-{UVLOOP_VERSION}/"
    with tarfile.open(sdist) as tf:
        wanted = [m for m in tf.getmembers()
                  if (m.name.startswith(top + "tests/") or m.name == top + "uvloop/_testbase.py")
                  and (m.isfile() or m.isdir())]
        for m in wanted:
            rel = m.name[len(top):]
            dest = SUITE / rel
            if m.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tf.extractfile(m) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
    (SUITE / "pytest.ini").write_text(PYTEST_INI)
    say(f"    extracted tests/ and uvloop/_testbase.py to {SUITE.relative_to(ROOT)}/")
    marker_set("uvloop-suite", UVLOOP_SHA256)


def module_files(names: list[str] | None) -> list[Path]:
    files = sorted((SUITE / "tests").glob("test_*.py"))
    if names is None:
        return files
    byname = {f.stem.removeprefix("test_"): f for f in files}
    missing = [n for n in names if n not in byname]
    if missing:
        raise Failure(f"no such test module(s): {', '.join(missing)}")
    return [byname[n] for n in names]


# --------------------------------------------------------------------------- results

STATUSES = ("passed", "failed", "error", "skipped")


def case_status(case: ET.Element) -> str:
    if case.find("failure") is not None:
        return "failed"
    if case.find("error") is not None:
        return "error"
    if case.find("skipped") is not None:
        return "skipped"
    return "passed"


def read_cases(xml_file: Path) -> list[ET.Element]:
    try:
        tree = ET.parse(xml_file)
    except (ET.ParseError, FileNotFoundError):
        return []
    return list(tree.getroot().iter("testcase"))


def synthetic_case(nodeid: str, message: str, detail: str, loop: str = "") -> ET.Element:
    """The <testcase> of a test whose process died: an error, with the loop it
    had built by then (the plugin's progress file), if it said."""
    path, _, rest = nodeid.partition("::")
    parts = rest.split("::")
    classname = ".".join([path.removesuffix(".py").replace("/", ".")] + parts[:-1])
    case = ET.Element("testcase", classname=classname, name=parts[-1], time="0")
    if loop:
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", name="loop", value=loop)
    err = ET.SubElement(case, "error", message=message)
    err.text = detail
    return case


def case_key(case: ET.Element) -> tuple[str, str]:
    return case.get("classname", ""), case.get("name", "")


def loop_of_case(case: ET.Element) -> str:
    """The "loop" property the plugin recorded ("" if none)."""
    for prop in case.iter("property"):
        if prop.get("name") == "loop":
            return prop.get("value", "")
    return ""


def merge_cases(cases: list[ET.Element]) -> list[ET.Element]:
    """One entry per test: pytest 9 reports subtests as extra <testcase>s with
    the same name; the worst status wins, and keeps the test's "loop"
    property (only the test's own teardown report carries it)."""
    rank = {"failed": 3, "error": 2, "passed": 1, "skipped": 0}
    best: dict[tuple[str, str], ET.Element] = {}
    loops: dict[tuple[str, str], str] = {}
    for case in cases:
        key = case_key(case)
        if loop_of_case(case):
            loops.setdefault(key, loop_of_case(case))
        if key not in best or rank[case_status(case)] > rank[case_status(best[key])]:
            best[key] = case
    for key, case in best.items():
        if key in loops and not loop_of_case(case):
            props = case.find("properties")
            if props is None:
                props = ET.Element("properties")
                case.insert(0, props)
            ET.SubElement(props, "property", name="loop", value=loops[key])
    return list(best.values())


def module_of_case(case: ET.Element) -> str:
    # classname "tests.test_tcp.Test_UV_TCP" -> "test_tcp"
    parts = (case.get("classname") or case.get("name", "")).split(".")
    for p in parts:
        if p.startswith("test_"):
            return p
    return parts[0]


def nodeid_of_case(case: ET.Element) -> str:
    if not case.get("classname"):  # a module skipped or broken at collection
        return case.get("name", "").replace(".", "/") + ".py"
    parts = case.get("classname", "").split(".")
    i = next((k for k, p in enumerate(parts) if p.startswith("test_")), 0)
    return "/".join(parts[:i + 1]) + ".py::" + "::".join(parts[i + 1:] + [case.get("name", "")])


def write_junit(cases: list[ET.Element], path: Path, name: str, seconds: float) -> None:
    counts = defaultdict(int)
    for c in cases:
        counts[case_status(c)] += 1
    suite = ET.Element("testsuite", name=name, tests=str(len(cases)),
                       failures=str(counts["failed"]), errors=str(counts["error"]),
                       skipped=str(counts["skipped"]), time=f"{seconds:.1f}")
    suite.extend(cases)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


# --------------------------------------------------------------------------- platforms

class Platform:
    name: str
    minor: str

    def pytest_base(self) -> list[str]:
        raise NotImplementedError

    def path(self, p: Path) -> str:
        return str(p)

    def prepare(self) -> None:
        raise NotImplementedError

    def run(self, cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> int | None:
        """Run and return the exit code, None on timeout."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Linux(Platform):
    name = "linux"

    def __init__(self, minor: str, target: str):
        self.minor = minor
        self.target = target
        self.py = str(ROOT / ".venv" / "bin" / "python")

    def prepare(self) -> None:
        if not Path(self.py).is_file():
            say("==> creating .venv (tools/venv.sh)")
            run_host(["bash", "-c", "source tools/venv.sh"], CACHE / "logs" / "venv.log",
                     "tools/venv.sh")
        ver = subprocess.run([self.py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
        if ver != self.minor:
            raise Failure(f".venv is Python {ver}, not {self.minor}")
        say("==> installing peer/requirements.txt into .venv")
        # Under tools/venv.sh's lock: .ci/run's other lane may be installing too.
        run_host(["flock", str(ROOT / ".venv" / ".pip.lock"),
                  self.py, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
                 CACHE / "logs" / "pip-install-linux.log", "pip install -r peer/requirements.txt")
        if self.target == "iocploop" and not list((ROOT / "iocploop").glob("_ioc.*.so")):
            say("==> building iocploop._ioc in place")
            run_host([self.py, "_cffi_build/build_core.py"], CACHE / "logs" / "build-core.log",
                     "build_core.py")

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": os.pathsep.join([str(SHIM), str(ROOT)]), "PYTHONSAFEPATH": "1"}

    def pytest_base(self) -> list[str]:
        return [self.py, "-m", "pytest"]

    def run(self, cmd, env, log, timeout):
        full_env = dict(os.environ)
        for k in list(full_env):
            if k.startswith(("PYTHON", "PYTEST")):
                del full_env[k]
        full_env.update(env)
        with open(log, "w", encoding="utf-8") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL,
                                    stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
            finally:
                # The whole process group: the test's children and helpers too.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()


class Wine(Platform):
    name = "wine"

    def __init__(self, minor: str, target: str):
        self.minor = minor
        self.target = target
        self.w = load_wine_tools()
        self.tag = self.w.tag_of(minor)
        self.exe = str(self.w.python_exe(minor))
        self.host_py = str(ROOT / ".venv" / "bin" / "python")
        if not Path(self.host_py).is_file():
            self.host_py = sys.executable
        self.session = None
        self._lock = None

    def path(self, p: Path) -> str:
        return self.w.winpath(p)

    def _stale_stage(self) -> bool:
        pyds = list((self.w.stage_dir(self.minor) / "iocploop").glob("_ioc.*.pyd"))
        if not pyds:
            return True
        built = pyds[0].stat().st_mtime
        sources = [*(ROOT / "iocploop").glob("*.py"), *(ROOT / "csrc").glob("*.[ch]"),
                   *(ROOT / "_cffi_build").glob("*.py")]
        return any(s.stat().st_mtime > built for s in sources)

    def prepare(self) -> None:
        self.w.check_tools(self.w.WINE, self.w.WINESERVER)
        if not self.w.marker_done(f"pip-{self.tag}", self.w.requirements_key()) \
                or not Path(self.exe).is_file():
            say(f"==> tools/wine.py setup --pythons {self.minor}")
            run_host([self.host_py, "tools/wine.py", "setup", "--pythons", self.minor],
                     CACHE / "logs" / f"wine-setup-{self.tag}.log", "tools/wine.py setup", 1800)
        if self.target == "iocploop" and self._stale_stage():
            say(f"==> tools/wine.py build --pythons {self.minor} (staged iocploop missing or older "
                "than its sources)")
            run_host([self.host_py, "tools/wine.py", "build", "--pythons", self.minor],
                     CACHE / "logs" / f"wine-build-{self.tag}.log", "tools/wine.py build", 900)
        # One Wine user of the prefix at a time (tools/wine.py's lock), one wineserver.
        self._lock = self.w.cache_lock()
        self._lock.__enter__()
        self.session = self.w.WineSession().__enter__()
        self._install_wheels()

    def _install_wheels(self) -> None:
        key = requirements_key()
        name = f"wine-pip-{self.tag}"
        if marker_ok(name, key):
            return
        wheels = CACHE / "wheels" / self.tag
        if wheels.exists():
            shutil.rmtree(wheels)
        say(f"==> downloading win_amd64 wheels of peer/requirements.txt for {self.tag}")
        run_host([self.host_py, "-m", "pip", "download", "--only-binary=:all:",
                  "--platform", "win_amd64", "--python-version", self.minor,
                  "--implementation", "cp", "-d", str(wheels), "-r", str(REQUIREMENTS)],
                 CACHE / "logs" / f"pip-download-{self.tag}.log", "pip download (win_amd64)")
        say(f"==> installing them into Windows CPython {self.minor} under Wine")
        for args, what in (
                (["-m", "pip", "install", "--no-index", "--no-warn-script-location",
                  "--find-links", self.path(wheels), "-r", self.path(REQUIREMENTS)],
                 "pip install"),
                (["-m", "pip", "check"], "pip check"),
                # Not OpenSSL: pyOpenSSL needs cryptography's Rust extension, which
                # does not load under Wine 8 (the plugin then stands in for it).
                (["-c", "import pytest_timeout, psutil, aiohttp; print('imports ok')"],
                 "import check")):
            log = CACHE / "logs" / f"wine-{what.replace(' ', '-')}-{self.tag}.log"
            res = self.session.run([self.exe, *args], timeout=900, log=log)
            if not res.ok:
                raise Failure(f"{what} under Wine failed (exit {res.rc}); log {log}:\n"
                              + "\n".join(res.lines[-15:]))
        marker_set(name, key)

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": ";".join([self.path(SHIM), self.path(self.w.stage_dir(self.minor)),
                                        self.path(ROOT)])}

    def pytest_base(self) -> list[str]:
        return [self.exe, "-m", "pytest"]

    def run(self, cmd, env, log, timeout):
        res = self.session.run(cmd, timeout=timeout, log=log, env=env)
        return res.rc

    def close(self) -> None:
        if self.session is not None:
            self.session.__exit__(None, None, None)
            self.session = None
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None


# --------------------------------------------------------------------------- run

def preflight(plat: Platform, env: dict[str, str], logs: Path) -> None:
    prog = ("import sys, uvloop; l = uvloop.new_event_loop(); "
            "print('Python', sys.version.split()[0], '| uvloop from', uvloop.__file__, "
            "'| loop', type(l).__module__ + '.' + type(l).__qualname__, "
            "'| iocploop from', getattr(sys.modules.get('iocploop'), '__file__', '-')); l.close()")
    log = logs / "preflight.log"
    rc = plat.run([*plat.pytest_base()[:1], "-c", prog], env, log, 300)
    lines = log.read_text(errors="replace").splitlines()
    say("    preflight: " + (lines[-1] if len(lines) > 1 else "(no output)"))
    if rc != 0:
        raise Failure(f"preflight failed (exit {rc}); log {log}")
    shim_path = plat.path(SHIM / "uvloop").lower()
    if shim_path not in lines[-1].lower():
        raise Failure("`import uvloop` does not give the shim; see " + str(log))


def run_module(plat: Platform, test_file: Path, env: dict[str, str], logs: Path, parts: Path,
               test_timeout: float, deadline: float) -> tuple[list[ET.Element], dict, list[str]]:
    """Run one module; restart after a crash without the test that was running.
    Returns (testcases, deselected counts, notes)."""
    mod = test_file.stem
    crashed: list[ET.Element] = []
    notes: list[str] = []
    excluded: list[str] = []
    for attempt in range(MAX_RESTARTS + 1):
        remaining = deadline - time.monotonic()
        if remaining < 10:
            notes.append(f"{mod}: not run (overall timeout)" if attempt == 0
                         else f"{mod}: rest not run (overall timeout)")
            return crashed, {}, notes
        junit = parts / f"{mod}.{attempt}.xml"
        desel = parts / f"{mod}.{attempt}.deselected.json"
        progress = parts / f"{mod}.progress"
        for p in (junit, desel, progress):
            p.unlink(missing_ok=True)
        log = logs / f"{mod}.{attempt}.log"
        cmd = [*plat.pytest_base(), "-c", plat.path(SUITE / "pytest.ini"),
               "--rootdir", plat.path(SUITE), "-p", "no:cacheprovider", "-p", "no:asyncio",
               "-p", "peer.uvloop_plugin", "-s", "-v", "-rfEs",
               f"--timeout={test_timeout:g}", f"--junitxml={plat.path(junit)}",
               f"--peer-deselected-json={plat.path(desel)}",
               *(f"--deselect={n}" for n in excluded), plat.path(test_file)]
        run_env = dict(env, IOCPLOOP_PEER_PROGRESS=plat.path(progress),
                       IOCPLOOP_PEER_HARD_TIMEOUT=f"{test_timeout + HARD_TIMEOUT_EXTRA:g}")
        start = time.monotonic()
        rc = plat.run(cmd, run_env, log, remaining)
        took = time.monotonic() - start
        cases = read_cases(junit)
        if rc in (0, 1, 5) and junit.is_file():
            counts = json.loads(desel.read_text()) if desel.is_file() else {}
            say(f"    {mod:<24} {took:6.1f}s  exit {rc}"
                + (f" (after {attempt} restart(s))" if attempt else ""))
            return crashed + cases, counts, notes
        # The plugin's progress file: the running test's node id, then (once
        # it built one) the kind of loop it ran on.
        lines = progress.read_text(encoding="utf-8").split("\n") if progress.is_file() else []
        running = lines[0].strip() if lines else ""
        loop = lines[1].strip() if len(lines) > 1 else ""
        text = log.read_text(errors="replace")
        tail = "\n".join(text.splitlines()[-80:])
        why = ("timeout (overall)" if rc is None
               else f"process ended with exit {rc} and no report"
               + (" (per-test hard timeout)" if "Timeout (0:" in text else ""))
        say(f"    {mod:<24} {took:6.1f}s  {why}; running: {running or '?'}")
        notes.append(f"{mod}: {why} while running {running or '?'} (log {log})")
        if not running:
            crashed.append(synthetic_case(f"tests/{test_file.name}::<module>", why, tail))
            return crashed, {}, notes
        crashed.append(synthetic_case(running, why, tail, loop))
        excluded.append(running)
        if rc is None:
            return crashed, {}, notes
    notes.append(f"{mod}: gave up after {MAX_RESTARTS} restarts")
    return crashed, {}, notes


def report(cases: list[ET.Element], deselected: dict[str, int], modules: list[str]) -> str:
    table: dict[str, dict[str, int]] = {m: defaultdict(int) for m in modules}
    for c in cases:
        table.setdefault(module_of_case(c), defaultdict(int))[case_status(c)] += 1
    lines = [f"  {'module':<26}{'passed':>8}{'failed':>8}{'error':>7}{'skipped':>9}{'deselected':>12}"]
    total = defaultdict(int)
    for m in sorted(table):
        row = table[m]
        d = deselected.get(m, 0)
        lines.append(f"  {m:<26}{row['passed']:>8}{row['failed']:>8}{row['error']:>7}"
                     f"{row['skipped']:>9}{d:>12}")
        for s in STATUSES:
            total[s] += row[s]
        total["deselected"] += d
    lines.append(f"  {'TOTAL':<26}{total['passed']:>8}{total['failed']:>8}{total['error']:>7}"
                 f"{total['skipped']:>9}{total['deselected']:>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, choices=["iocploop", "asyncio"])
    ap.add_argument("--platform", default="linux", choices=["linux", "wine"])
    ap.add_argument("--python", default="3.11", help="minor version (default %(default)s)")
    ap.add_argument("--out", default="build/peer", help="report folder (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="whole run, seconds (default: 1200 Linux, 3000 Wine)")
    ap.add_argument("--test-timeout", type=float, default=None,
                    help="one test, seconds (pytest-timeout; default: 30 Linux, 60 Wine)")
    ap.add_argument("--modules", default=None,
                    help="comma-separated module names without test_ (default: all on Linux, "
                         "the curated set under Wine)")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # A shell's background job starts with SIGINT ignored, and an ignored signal
    # stays ignored across exec: the suite's Ctrl+C tests (test_signals) would
    # then hang in their children.  A handled signal is reset to the default.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    deadline = started + (args.timeout or DEFAULT_TIMEOUT[args.platform])
    test_timeout = args.test_timeout or DEFAULT_TEST_TIMEOUT[args.platform]
    out = (ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    stem = f"uvloop-{args.platform}-py{args.python}-{args.target}"
    logs = out / "logs" / stem
    parts = out / "parts" / stem
    plat: Platform = (Linux if args.platform == "linux" else Wine)(args.python, args.target)
    try:
        host_py = str(ROOT / ".venv" / "bin" / "python")
        fetch_suite(host_py if Path(host_py).is_file() else sys.executable)
        names = args.modules.split(",") if args.modules else (
            WINE_MODULES if args.platform == "wine" else None)
        files = module_files(names)
        for d in (logs, parts):
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        plat.prepare()
        env = dict(plat.env(), IOCPLOOP_PEER_TARGET=args.target,
                   IOCPLOOP_PEER_TESTBASE=plat.path(TESTBASE))
        say(f"==> uvloop {UVLOOP_VERSION} suite on {args.target}, {args.platform}, "
            f"Python {args.python}: {len(files)} modules")
        preflight(plat, env, logs)
        all_cases: list[ET.Element] = []
        deselected: dict[str, int] = {}
        notes: list[str] = []
        for f in files:
            cases, counts, n = run_module(plat, f, env, logs, parts, test_timeout, deadline)
            all_cases += cases
            deselected.update(counts)
            notes += n
    except Failure as e:
        say(f"\nERROR: {e}")
        return 2
    finally:
        plat.close()

    cases = merge_cases(all_cases)
    seconds = time.monotonic() - started
    junit = out / f"{stem}.xml"
    write_junit(cases, junit, stem, seconds)
    # Keyed as the JUnit classnames name the modules (tests.test_tcp), so that
    # peer/report.py puts the deselected count in the same row.
    by_module = {f"tests.{m}": n for m, n in deselected.items()}
    (out / f"{stem}-deselected.json").write_text(json.dumps(by_module, indent=1, sort_keys=True)
                                                 + "\n")
    bad = sorted(nodeid_of_case(c) for c in cases if case_status(c) in ("failed", "error"))
    (out / f"{stem}-failed.txt").write_text("".join(b + "\n" for b in bad))
    say("")
    say(f"uvloop {UVLOOP_VERSION} suite, target {args.target}, {args.platform}, "
        f"Python {args.python} ({seconds:.0f}s)")
    say(report(cases, deselected, [f.stem for f in files]))
    for n in notes:
        say("  note: " + n)
    if bad:
        say("failed or errored:")
        for b in bad:
            say("  " + b)
    say(f"reports: {junit.relative_to(ROOT) if junit.is_relative_to(ROOT) else junit}, "
        f"{stem}-deselected.json, {stem}-failed.txt; logs {logs}")
    counts = defaultdict(int)
    for c in cases:
        counts[case_status(c)] += 1
    say(f"{counts['passed']} passed, {counts['failed'] + counts['error']} failed, "
        f"{counts['skipped']} skipped")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
