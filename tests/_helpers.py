"""Small helpers shared by the test modules (no test lives here)."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import iocploop

IS_WINDOWS = sys.platform == "win32"
IS_LINUX = sys.platform.startswith("linux")

if IS_WINDOWS:
    from asyncio import windows_utils

#: Generous limit for anything that should happen "promptly" (Wine is slow).
TIMEOUT = 5.0

#: The folder that holds the iocploop package under test (the repository root
#: on Linux, the staged tree under Wine): children put it on PYTHONPATH.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(iocploop.__file__)))


def run(loop, coro, timeout: float = TIMEOUT):
    """Run coro to completion on loop, failing (never hanging) after timeout."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def run_forever_bounded(loop, timeout: float = TIMEOUT):
    """loop.run_forever() with a safety stop; returns True if the safety stop
    was what ended it (i.e. the test's own stop never came)."""
    fired = []

    def safety():
        fired.append(True)
        loop.stop()

    guard = loop.call_later(timeout, safety)
    try:
        loop.run_forever()
    finally:
        guard.cancel()
    return bool(fired)


def child_env(**extra: str) -> dict:
    """Environment for a child Python: PYTHONPATH starts with PACKAGE_PARENT."""
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + old if old else "")
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("PYTHONASYNCIODEBUG", None)
    # The Wine runner sets PYTHONSAFEPATH=1 for itself; children get the
    # ordinary sys.path rules unless a test asks for safe-path mode.
    env.pop("PYTHONSAFEPATH", None)
    env.update(extra)
    return env


def run_python(args, *, timeout: float = 60.0, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Run `sys.executable *args` to completion (killed after timeout)."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env if env is not None else child_env(),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, encoding="utf-8", errors="replace", timeout=timeout)


def socketpair():
    """A connected, non-blocking stream socket pair (AF_INET on Windows)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def poll_until(port, predicate, timeout: float = TIMEOUT) -> bool:
    """Poll a CompletionPort (running callbacks) until predicate() or timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        port.poll(min(left, 0.05))
    return True


def recv_all_nonblocking(sock, expected: int, timeout: float = TIMEOUT) -> bytes:
    """Read from a non-blocking socket until `expected` bytes or timeout."""
    chunks = []
    got = 0
    deadline = time.monotonic() + timeout
    while got < expected and time.monotonic() < deadline:
        try:
            chunk = sock.recv(expected - got)
        except (BlockingIOError, InterruptedError):
            time.sleep(0.005)
            continue
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def make_pipe():
    """(read end, write end) as pipe objects for connect_read_pipe /
    connect_write_pipe; each transport closes its own.

    Windows: both handles overlapped (the Proactor needs it) and the pipe
    duplex, as asyncio's own windows_utils.Popen makes a child's stdin: the
    Proactor's write-pipe transport posts a read on its handle to learn when
    the reader goes away, which a write-only handle refuses."""
    if IS_WINDOWS:
        r, w = windows_utils.pipe(overlapped=(True, True), duplex=True)
        return windows_utils.PipeHandle(r), windows_utils.PipeHandle(w)
    r, w = os.pipe()
    return open(r, "rb", buffering=0), open(w, "wb", buffering=0)


def pipe_closed(pipe) -> bool:
    try:
        pipe.fileno()
    except ValueError:
        return True
    return False


# -- waiting without hanging ---------------------------------------------------


async def bounded(aw, timeout: float = TIMEOUT):
    """Await aw, failing (never hanging) after timeout."""
    return await asyncio.wait_for(aw, timeout)


async def until(predicate, timeout: float = TIMEOUT, interval: float = 0.005) -> None:
    """Let the loop run until predicate() is true; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        await asyncio.sleep(interval)


# -- kernel operations in flight (iocploop) ------------------------------------------


def is_iocploop_loop(loop) -> bool:
    return isinstance(loop, iocploop.Loop)


async def iterations_until_no_pending_ops(loop) -> int:
    """iocploop: run the loop until no kernel operation is in flight; returns
    how many iterations that took (fails after TIMEOUT)."""
    deadline = time.monotonic() + TIMEOUT
    iterations = 0
    while loop._port.pending:
        assert time.monotonic() < deadline, (
            f"{loop._port.pending} operation(s) still in flight after {TIMEOUT} s")
        # Plain iterations first; then give a slow cancellation (Wine) real time.
        await asyncio.sleep(0 if iterations < 5 else 0.005)
        iterations += 1
    return iterations


async def until_op_pending(task, loop) -> None:
    """Let a freshly created task start and submit (or register) its operation."""
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done(), "the operation was expected to be waiting"
    if is_iocploop_loop(loop):
        assert loop._port.pending >= 1


def rss_bytes() -> int:
    """This process's resident memory (Linux: /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
