"""Children on Linux (_subprocess.py has the rest): subprocess.Popen, and
the exit learned from the child's pidfd (pidfd_open, Linux 5.3) polled
through io_uring, then reaped with waitpid.  Where pidfd_open is refused
(old kernels, seccomp filters) one thread per child waits in waitpid
instead, as asyncio's ThreadedChildWatcher does."""
from __future__ import annotations

import os
import subprocess
import threading
from asyncio import base_events

__all__ = ["ExitWatches", "popen"]

_POLLIN = 0x1


def popen(args, *, shell, stdin, stdout, stderr, bufsize, **kwargs):
    return subprocess.Popen(args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
                            universal_newlines=False, bufsize=bufsize, **kwargs)


def _exit_code_of(proc, pid):
    """Reap pid and return asyncio's returncode (-signal for a killed child)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        # Reaped elsewhere (Popen.poll() in transport.close(), for one).
        if proc.returncode is not None:
            return proc.returncode
        base_events.logger.warning(
            "child process pid %d exit status already read: will report returncode 255", pid)
        return 255
    return os.waitstatus_to_exitcode(status)


class ExitWatches:
    """The children of one loop whose exit is awaited: pidfd -> transport
    while its poll is in flight."""

    def __init__(self, loop) -> None:
        self._loop = loop
        self._by_pidfd: dict = {}

    def watch(self, transport) -> None:
        proc = transport._proc
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self._in_thread(transport)
            return
        try:
            self._loop._port.poll_ready(pidfd, _POLLIN, self._on_pidfd)
        except OSError:
            os.close(pidfd)
            self._in_thread(transport)
            return
        self._by_pidfd[pidfd] = transport

    def _on_pidfd(self, op) -> None:
        pidfd = op.buffer
        transport = self._by_pidfd.pop(pidfd, None)
        os.close(pidfd)
        if transport is None or op.cancelled:
            return
        transport._on_exit(_exit_code_of(transport._proc, transport._proc.pid))

    def _in_thread(self, transport) -> None:
        proc = transport._proc
        loop = self._loop

        def wait():
            code = _exit_code_of(proc, proc.pid)
            try:
                loop.call_soon_threadsafe(transport._on_exit, code)
            except RuntimeError:   # the loop closed meanwhile
                pass

        threading.Thread(target=wait, name=f"iocploop-waitpid-{proc.pid}", daemon=True).start()

    def close(self) -> None:
        """The pidfds of children still running (their polls end with the port)."""
        for pidfd in list(self._by_pidfd):
            os.close(pidfd)
        self._by_pidfd.clear()
