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
import sys
import threading

from ._datagram import DatagramMethods
from ._port import IS_WINDOWS, CompletionPort
from ._sendfile import SendfileMethods
from ._servers import DEFAULT_ACCEPT_POOL_SIZE, ServerMethods
from ._sockets import SocketMethods

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
    "pipes, subprocesses, local sockets, signals and readiness callbacks (issue #7)": [
        "connect_read_pipe", "connect_write_pipe", "subprocess_exec", "subprocess_shell",
        "create_unix_connection", "create_unix_server", "add_reader", "remove_reader",
        "add_writer", "remove_writer", "add_signal_handler", "remove_signal_handler",
    ],
}


class Loop(SocketMethods, SendfileMethods, ServerMethods, DatagramMethods,
           asyncio.BaseEventLoop):
    """A completion-based asyncio event loop (IOCP on Windows, io_uring on Linux)."""

    def __init__(self, *, queue_depth: int = 256,
                 accept_pool_size: int = DEFAULT_ACCEPT_POOL_SIZE, socket_reuse: bool = True):
        super().__init__()
        # BaseEventLoop's iteration calls self._selector.select(timeout): the
        # completion port plays that part.
        try:
            self._port = CompletionPort(queue_depth)
        except BaseException:
            # A loop that never got its port is born closed, so that
            # BaseEventLoop.__del__ has nothing to report or close.
            self._closed = True
            raise
        self._selector = self._port
        self._init_socket_methods()
        self._init_server_methods(accept_pool_size, socket_reuse)

    def __repr__(self):
        port = getattr(self, "_port", None)
        pending = port.pending if port is not None else 0
        return (f"<{type(self).__name__} backend={CompletionPort.backend} "
                f"running={self.is_running()} closed={self.is_closed()} "
                f"debug={self.get_debug()} pending_ops={pending}>")

    # -- the I/O phase of an iteration ----------------------------------------

    def _process_events(self, count: int) -> None:
        if not count:
            return
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
            finally:
                op.release()

    def _write_to_self(self) -> None:
        # call_soon_threadsafe's wakeup: a completion packet / eventfd write,
        # and only when the loop thread is actually asleep.
        self._port.wakeup()

    # -- Ctrl+C ---------------------------------------------------------------

    def run_forever(self):
        # Linux: SIGINT interrupts io_uring_enter and Python runs its handler
        # as the wait returns.  Windows: nothing interrupts a thread blocked in
        # the completion port, so while the loop runs in the main thread (the
        # only one where Python runs signal handlers) the core watches the
        # interpreter's SIGINT event and ends the wait when it is set.
        self._check_closed()
        self._check_running()   # a refused nested call must not touch the watch
        watch = IS_WINDOWS and threading.current_thread() is threading.main_thread()
        if watch:
            self._port.watch_sigint(True)
        try:
            return super().run_forever()
        finally:
            if watch:
                self._port.watch_sigint(False)

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        super().close()
        pools = self._close_accept_pools()
        self._port.close()
        for pool in pools:
            pool.release()
        self._recycler.close()

    # -- later milestones -----------------------------------------------------

    for _milestone, _names in _PENDING_FEATURES.items():
        for _name in _names:
            locals()[_name] = _not_yet(_name, _milestone)
    del _milestone, _names, _name
