"""The pipe transports' platform I/O on Linux: file descriptors.

A pipe end is a non-blocking fd (a FIFO, a socket or a character device).
Writes go out at once with os.write while nothing is queued, as asyncio's
Unix transport writes, so the bytes are in the pipe when write() returns (a
queued io_uring WRITE would reach the kernel only at the next wait).  A
write-only end watches for its reader going away with an io_uring poll:
POLLERR on the write end of a FIFO, readable on a socket (its peer closed).
"""
from __future__ import annotations

import os
import stat

__all__ = ["FdPipes"]

_POLLIN = 0x1


class FdPipes:
    """The pipe transports' I/O strategy on Linux (pipes.py picks it)."""
    __slots__ = ()

    _HANDLE_WORD = "fd"

    @staticmethod
    def _checked_handle(fd):
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            raise ValueError("Pipe transport is for pipes/sockets only.")
        os.set_blocking(fd, False)
        return fd

    def _is_end_of_file(self, exc) -> bool:
        return False   # a read at the end completes with 0 bytes

    def _write_at_once(self, data):
        """What is left of data after writing what the pipe takes now (None:
        nothing left, or the write failed and the transport is closing)."""
        if self._send_op is not None:
            return data   # behind the write in flight
        n = self._write_now(self._os_write, data, self._WRITE_ERROR)
        if n is None or n == len(data):
            return None
        return memoryview(data).cast("B")[n:]

    def _submit_watch(self):
        """The operation that completes when the reader goes away (None: not
        a pipe or socket, nothing to watch)."""
        mode = os.fstat(self._handle).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return None
        return self._port.poll_ready(self._handle, _POLLIN,
                                     self._in_context(self._on_watch_done))

    def _watch_means_reader_gone(self, op) -> bool:
        return True   # the poll fires only for that
