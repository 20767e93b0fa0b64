"""The pipe transports' platform I/O on Windows: overlapped handles.

A pipe end is a handle opened for overlapped I/O.  Every write is posted
(WriteFile through the port).  The other end going away is an error on a
read (ERROR_BROKEN_PIPE and its kin), which is the end of file.  A
write-only end watches for its reader going away with a read posted on its
handle: the duplex pipes of windows_utils.pipe and named pipes allow it; a
one-way handle refuses and is then not watched (the next write tells).
"""
from __future__ import annotations

__all__ = ["HandlePipes"]

# Errors that mean "the other end is gone" on a pipe read: end of file.
_PIPE_EOF = (109, 38, 233)   # BROKEN_PIPE, HANDLE_EOF, PIPE_NOT_CONNECTED


class HandlePipes:
    """The pipe transports' I/O strategy on Windows (pipes.py picks it)."""
    __slots__ = ()

    _HANDLE_WORD = "handle"

    @staticmethod
    def _checked_handle(handle):
        return handle

    def _is_end_of_file(self, exc) -> bool:
        return getattr(exc, "winerror", None) in _PIPE_EOF

    def _write_at_once(self, data):
        return data   # every write is posted

    def _submit_watch(self):
        self._watch_buf = bytearray(16)
        return self._port.read(self._handle, self._watch_buf,
                               self._in_context(self._on_watch_done))

    def _watch_means_reader_gone(self, op) -> bool:
        if op.result < 0:
            return self._is_end_of_file(op.error)   # else the handle cannot be read
        return op.result == 0   # data on our write handle is not ours: stop watching
