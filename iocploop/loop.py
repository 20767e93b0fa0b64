"""The event loop: asyncio's scheduling on top of a completion port.

`Loop` reuses asyncio's `BaseEventLoop` for scheduling (ready queue, timer
heap, debug mode, executors, exception handling, async generators), so
callback and timer ordering is asyncio's own.  What it adds is the I/O
phase: each iteration blocks in the completion port (`CompletionPort.select`)
and then runs the callbacks of the operations the kernel finished, in the
order the kernel finished them, within the same iteration.  Completions do
not become futures plus an extra `call_soon` hop as in CPython's Proactor.

Networking, pipes, subprocesses, signals and readiness callbacks arrive with
later milestones; until then those methods raise NotImplementedError.
"""
from __future__ import annotations

import asyncio
import signal
import sys
import threading

from ._port import IS_WINDOWS, CompletionPort

__all__ = ["Loop"]


def _not_yet(name: str, milestone: str):
    def method(self, *args, **kwargs):
        raise NotImplementedError(
            f"iocploop does not implement loop.{name}() yet: it arrives with {milestone}. "
            "Use asyncio's default loop for this program until then.")

    method.__name__ = name
    method.__qualname__ = f"Loop.{name}"
    method.__doc__ = f"Not implemented yet ({milestone})."
    return method


# Methods that later milestones implement, and which one.
_PENDING_FEATURES = {
    "TCP support (issue #3)": [
        "sock_recv", "sock_recv_into", "sock_sendall", "sock_connect", "sock_accept",
        "create_connection", "create_server", "connect_accepted_socket",
    ],
    "sendfile support (issue #4)": ["sock_sendfile", "sendfile"],
    "UDP support (issue #5)": [
        "sock_recvfrom", "sock_recvfrom_into", "sock_sendto", "create_datagram_endpoint",
    ],
    "TLS support (issue #6)": ["start_tls"],
    "pipes, subprocesses, local sockets, signals and readiness callbacks (issue #7)": [
        "connect_read_pipe", "connect_write_pipe", "subprocess_exec", "subprocess_shell",
        "create_unix_connection", "create_unix_server", "add_reader", "remove_reader",
        "add_writer", "remove_writer", "add_signal_handler", "remove_signal_handler",
    ],
}


class Loop(asyncio.BaseEventLoop):
    """A completion-based asyncio event loop (IOCP on Windows, io_uring on Linux)."""

    def __init__(self, *, queue_depth: int = 256):
        super().__init__()
        # BaseEventLoop's iteration calls self._selector.select(timeout): the
        # completion port plays that part.
        self._port = CompletionPort(queue_depth)
        self._selector = self._port
        self._port.on_console_ctrl = self._on_console_ctrl

    def __repr__(self):
        return (f"<{type(self).__name__} backend={self._port.backend} "
                f"running={self.is_running()} closed={self.is_closed()} "
                f"debug={self.get_debug()} pending_ops={self._port.pending}>")

    # -- the I/O phase of an iteration ----------------------------------------

    def _process_events(self, count: int) -> None:
        for op in self._port.completed(count):
            try:
                op.callback(op)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self.call_exception_handler({
                    "message": f"Exception in completion callback of {op!r}",
                    "exception": exc,
                })

    def _write_to_self(self) -> None:
        # call_soon_threadsafe's wakeup: a completion packet / eventfd write,
        # and only when the loop thread is actually asleep.
        self._port.wakeup()

    # -- Ctrl+C ---------------------------------------------------------------

    def run_forever(self):
        # On Windows a console Ctrl+C does not interrupt a thread blocked in
        # the completion port; the core turns it into a completion while the
        # loop sleeps (see ioc_console_ctrl).  On Linux the signal interrupts
        # io_uring_enter and Python runs its handler as we return.
        ctrl = IS_WINDOWS and threading.current_thread() is threading.main_thread()
        if ctrl:
            self._port.console_ctrl(True)
        try:
            return super().run_forever()
        finally:
            if ctrl and not self._port.closed:
                self._port.console_ctrl(False)

    def _on_console_ctrl(self, ctrl_type: int) -> None:
        # Re-raise the event as the signal the C runtime would have raised, in
        # this thread, so Python's handler (KeyboardInterrupt, or the handler
        # asyncio.Runner installs) runs exactly as without us.
        signum = signal.SIGINT if ctrl_type == 0 else getattr(signal, "SIGBREAK", signal.SIGINT)
        signal.raise_signal(signum)

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        super().close()
        self._port.close()

    # -- later milestones -----------------------------------------------------

    for _milestone, _names in _PENDING_FEATURES.items():
        for _name in _names:
            locals()[_name] = _not_yet(_name, _milestone)
    del _milestone, _names, _name
