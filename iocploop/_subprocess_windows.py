"""Children on Windows (_subprocess.py has the rest): windows_utils.Popen
(overlapped pipes, as CPython's Proactor), and a wait registration on the
process handle that posts to the completion port (ioc_submit_wait_handle)."""
from __future__ import annotations

__all__ = ["ExitWatches", "popen"]


def popen(args, *, shell, stdin, stdout, stderr, bufsize, **kwargs):
    from asyncio import windows_utils   # (win32 only: imported where it runs)

    return windows_utils.Popen(args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
                               bufsize=bufsize, **kwargs)


class ExitWatches:
    """The children of one loop whose exit is awaited: each has a wait on
    its process handle posted to the port."""

    def __init__(self, loop) -> None:
        self._loop = loop

    def watch(self, transport) -> None:
        proc = transport._proc

        def exited(op):
            if not op.cancelled:
                transport._on_exit(proc.poll())

        self._loop._port.wait_handle(int(proc._handle), exited)

    def close(self) -> None:
        """Nothing to release: the port cancels the waits as it closes."""
