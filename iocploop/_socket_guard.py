"""Linux: an operation on a user's socket never runs on the next socket given its fd number.

io_uring queues a submission in the ring until the loop's next wait (or a
flush, or a cancel) publishes it, and the kernel looks up the fd number it
names only then.  A user's code may close its socket in between, for
instance right after cancelling a ``sock_recv`` task, whose cancellation
reaches the port one step later; a new socket given the same fd number
would then have its bytes taken by the old receive.

So the sock_* methods `watch` each operation they submit on a user's socket.
Before the core publishes the ring while anything is watched, it calls
`SocketGuard.before_publish` (through ``ioc_set_publish_hook``), and each
watched operation whose socket is closed by then is voided: the core turns
its SQE into a no-op that completes with EBADF.

Once published, the operation holds the socket's file, and closing the fd
cannot redirect it: as on uvloop, the socket stays open until the operation
ends (its data still arrives; cancelling the task ends it at once).

Transports need no watching: they own their socket and cancel their
operations (which publishes the queue) before closing it.  Windows starts
every operation inside its submit call, so nothing is ever queued there and
the port keeps no guard.
"""
from __future__ import annotations

from ._ioc import ffi, lib
from ._scheduler import GuardQueue


class SocketGuard(GuardQueue):
    """The watched operations of one completion core, until its next publish.
    watch(op, sock) is GuardQueue's, compiled: the sock_* methods call it
    once per submission."""

    __slots__ = ("_core", "armed")

    def __init__(self, core):
        self._core = core
        self.armed = ffi.new("int *")   # read and cleared by the core
        self._use_flag(int(ffi.cast("uintptr_t", self.armed)))

    def before_publish(self) -> None:
        queued, self._queued = self._queued, []
        core = self._core
        if core is None:
            return
        for op, sock in queued:
            try:
                closed = sock.fileno() < 0
            except Exception:   # not a socket object after all: leave it be
                continue
            if closed and op._record is not None:
                lib.ioc_void_queued(core, ffi.cast("ioc_op *", op._record), op.token)

    def detach(self) -> None:
        """The core is freed: nothing can be published any more."""
        self._core = None
        self._queued.clear()


@ffi.def_extern()
def ioc_py_before_publish(arg) -> None:
    # Called by the core with the GIL taken back; an exception here would
    # only be printed by cffi, so before_publish raises none of its own.
    ffi.from_handle(arg).before_publish()
