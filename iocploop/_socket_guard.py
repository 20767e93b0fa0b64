"""Linux: an operation on a user's socket follows that socket's close.

Two io_uring facts make closing a socket that has an operation in flight
differ from closing it under a selector loop:

* A submission waits in the ring until the loop's next wait (or a flush, or
  a cancel) publishes it, and the kernel looks up the fd number it names
  only then.  A user's code may close its socket in between, for instance
  right after cancelling a ``sock_recv`` task, whose cancellation reaches
  the port one step later; a new socket given the same fd number would then
  have its bytes taken by the old receive.
* Once published, the operation holds the socket's file: ``close()`` only
  drops the fd number, the socket stays open and its peer sees no end of
  stream (a listener keeps its port) until the operation ends.

So the sock_* methods `watch` each operation they submit on a user's socket.
Before the core publishes the ring while anything is newly watched, it calls
`SocketGuard.before_publish` (through ``ioc_set_publish_hook``): an operation
whose socket is already closed is voided, its SQE turned into a no-op.
While operations are watched, the port's `select` calls `before_wait`,
which sweeps them at most every `SWEEP_INTERVAL` seconds: one whose socket
was closed since is cancelled.  Either way it completes with EBADF.  The
sweep adds no wakeup to an idle loop: after one, the loop blocks for as long
as it asked; the first wait after that is cut at the next sweep's time.

Transports need none of this: they own their socket and cancel their
operations (which publishes the queue) before closing it.  Windows starts
every operation inside its submit call, and closing a socket ends its
operations there: the port keeps no guard.
"""
from __future__ import annotations

import time

from ._ioc import ffi, lib

#: Seconds between sweeps: how late at most a peer sees a socket closed under
#: an operation (while the loop runs); a sweep looks once at each watched
#: operation.
SWEEP_INTERVAL = 0.1


class SocketGuard:
    """The watched operations of one completion core.

    A watched operation carries its socket in ``op.guarded_sock``; the
    sweep walks the port's table of operations in flight, so an operation
    that ended is forgotten with no work here (a list of our own kept them
    alive until the next sweep, a load the garbage collector felt)."""

    __slots__ = ("_core", "_ops", "_queued", "_next_sweep", "watching", "armed")

    def __init__(self, core, ops: dict):
        self._core = core
        self._ops = ops              # the port's operations in flight, by token
        self._queued: list = []      # operations watched since the last publish
        self._next_sweep = 0.0
        self.watching = False        # some watched operation may be in flight
        self.armed = ffi.new("int *")   # read and cleared by the core

    def watch(self, op, sock) -> None:
        op.guarded_sock = sock
        queued = self._queued
        if not queued:
            self.armed[0] = 1
            self.watching = True
        queued.append(op)

    def before_publish(self) -> None:
        queued, self._queued = self._queued, []
        core = self._core
        if core is None:
            return
        for op in queued:
            try:
                closed = op.guarded_sock.fileno() < 0
            except Exception:   # not a socket object after all: leave it be
                continue
            if closed and op._record is not None:
                lib.ioc_void_queued(core, op._record, op.token)

    def before_wait(self, timeout: float | None) -> float | None:
        """Sweep if it is time, or cut the coming wait at the next sweep's
        time; returns the timeout to wait with."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self.sweep()
            self._next_sweep = now + SWEEP_INTERVAL
            return timeout   # wait as asked: an idle loop sleeps on
        left = self._next_sweep - now
        return left if timeout is None or timeout > left else timeout

    def sweep(self) -> None:
        """Cancel each watched operation in flight whose socket was closed."""
        core = self._core
        if core is None:
            return
        remaining = False
        # Cancelling may publish the queue (before_publish runs), but neither
        # adds nor removes operations of the table.
        for op in self._ops.values():
            sock = op.guarded_sock
            if sock is None:
                continue
            if _is_closed(sock):
                # (A queued op is voided by the publish this cancel makes.)
                lib.ioc_cancel_closed(core, op._record, op.token)
                op.guarded_sock = None   # cancelled once is enough
            else:
                remaining = True
        self.watching = remaining or bool(self._queued)

    def detach(self) -> None:
        """The core is freed: nothing can be published any more."""
        self._core = None
        self._ops = {}   # the port's table holds buffers: not ours to keep
        self._queued.clear()
        self.watching = False


def _is_closed(sock) -> bool:
    try:
        return sock.fileno() < 0
    except Exception:   # not a socket object after all: leave the operation be
        return False


@ffi.def_extern()
def ioc_py_before_publish(arg) -> None:
    # Called by the core with the GIL taken back; an exception here would
    # only be printed by cffi, so before_publish raises none of its own.
    ffi.from_handle(arg).before_publish()
