"""The event loop: asyncio's scheduling, compiled, on top of a completion port.

`Loop` takes its scheduling from `_scheduler.Scheduler` (compiled: handles,
the ready queue, the timer heap, one iteration of the loop, with asyncio's
rules and ordering) and the rest from asyncio's `BaseEventLoop` (debug
mode, executors, exception handling, async generators, tasks).  What it
adds is the I/O phase: each iteration blocks in the completion port
(`CompletionPort.select`) and then runs the callbacks of the operations the
kernel finished, in the order the kernel finished them, within the same
iteration.  Completions do not become futures plus an extra `call_soon`
hop as in CPython's Proactor.

The rest of AbstractEventLoop comes from mixins, one module each: sockets
(_sockets.py), servers and connections (_servers.py), sendfile, datagrams,
Unix sockets (_unix.py), Windows named pipes (_named_pipes.py), pipes and
subprocesses (_subprocess.py), signals (_signals.py) and readiness
callbacks (_readiness.py).
"""
from __future__ import annotations

import asyncio
import functools
import sys
import threading
import weakref
from asyncio.log import logger

from ._transports import DatagramMethods
from ._named_pipes import PipeMethods
from ._port import IS_WINDOWS, CompletionPort
from ._sendfile import SendfileMethods
from ._servers import DEFAULT_ACCEPT_POOL_SIZE, ServerMethods
from ._readiness import ReadinessMethods
from ._scheduler import Scheduler
from ._signals import SignalMethods
from ._sockets import SocketMethods
from ._stats import StatsMethods
from ._subprocess import SubprocessMethods
from ._unix import UnixMethods

__all__ = ["Loop"]


def _describe_callback(callback) -> str:
    """'TCPTransport._on_readable() of <TCPTransport fd=7 ...>' for a
    callback, seen through the context.run partial that transports wrap it in."""
    if isinstance(callback, functools.partial) and callback.args:
        callback = callback.args[-1]
    name = getattr(callback, "__qualname__", None)
    if name is None:
        return repr(callback)
    owner = getattr(callback, "__self__", None)
    return f"{name}() of {owner!r}" if owner is not None else f"{name}()"


class Loop(SocketMethods, SendfileMethods, ServerMethods, DatagramMethods, UnixMethods,
           PipeMethods, SubprocessMethods, SignalMethods, ReadinessMethods, StatsMethods,
           Scheduler, asyncio.BaseEventLoop):
    """A completion-based asyncio event loop (IOCP on Windows, io_uring on Linux)."""

    def __init__(self, *, queue_depth: int = 256,
                 accept_pool_size: int = DEFAULT_ACCEPT_POOL_SIZE, socket_reuse: bool = True):
        super().__init__()
        # Each iteration waits on the port and dispatches its completions
        # (the compiled scheduler's I/O phase); the port is also _selector.
        try:
            self._port = CompletionPort(queue_depth)
        except BaseException:
            # A loop that never got its port is born closed, so that
            # BaseEventLoop.__del__ has nothing to report or close.
            self._closed = True
            raise
        self._attach_port(self._port, self._completion_callback_failed,
                          self._run_completion_timed)
        self._transports = weakref.WeakValueDictionary()   # fd -> socket transport
        self._init_socket_methods()
        self._init_server_methods(accept_pool_size, socket_reuse)
        self._init_unix_methods()
        self._init_subprocess_methods()
        self._init_signal_methods()
        self._init_readiness_methods()

    def __repr__(self):
        port = getattr(self, "_port", None)
        pending = port.pending if port is not None else 0
        return (f"<{type(self).__name__} backend={CompletionPort.backend} "
                f"running={self.is_running()} closed={self.is_closed()} "
                f"debug={self.get_debug()} pending_ops={pending}>")

    # -- the I/O phase of an iteration ----------------------------------------

    def _process_events(self, count: int) -> None:
        if count:
            if self._debug:
                self._port.run_completed(self._completion_callback_failed,
                                         self._run_completion_timed)
            else:
                self._port.run_completed(self._completion_callback_failed)

    def _run_completion_timed(self, op) -> None:
        # Completion callbacks (data_received and the like) run here, not in
        # a Handle, so debug mode's slow-callback report is made here too,
        # in the words asyncio uses for a Handle.
        start = self.time()
        try:
            op.callback(op)
        finally:
            took = self.time() - start
            if took >= self.slow_callback_duration:
                logger.warning("Executing <completion of %r: %s> took %.3f seconds",
                               op, _describe_callback(op.callback), took)

    def _completion_callback_failed(self, op, exc) -> None:
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
            self._run_forever_setup()
            try:
                self._run_until_stopped()   # the compiled loop of iterations
            finally:
                self._run_forever_cleanup()
        finally:
            if watch:
                self._port.watch_sigint(False)

    if not hasattr(asyncio.BaseEventLoop, "_run_forever_setup"):
        # Python 3.11's run_forever has its setup and cleanup inline; these
        # are the same steps, as 3.12 split them out.
        def _run_forever_setup(self):
            self._check_closed()
            self._check_running()
            self._set_coroutine_origin_tracking(self._debug)
            self._old_agen_hooks = sys.get_asyncgen_hooks()
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            asyncio.events._set_running_loop(self)

        def _run_forever_cleanup(self):
            self._stopping = False
            self._thread_id = None
            asyncio.events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            old_agen_hooks = getattr(self, "_old_agen_hooks", None)
            if old_agen_hooks is not None:
                self._old_agen_hooks = None
                sys.set_asyncgen_hooks(*old_agen_hooks)

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        self._close_signal_handlers()
        super().close()
        pools = self._close_accept_pools()
        self._port.close()
        for pool in pools:
            pool.release()
        self._recycler.close()
        self._close_signal_channel()
        self._close_exit_watches()
        self._close_readiness()
