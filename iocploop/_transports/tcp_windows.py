"""TCPTransport's reading on Windows: completions.

One receive is posted at a time, into the transport's own buffer (its cffi
view kept from one receive to the next: CompletionPort.recv_prepared), or
into the BufferedProtocol's buffer.  The buffer starts at READ_SIZE_MIN
and doubles up to READ_SIZE_MAX whenever a receive fills it.  On
pause_reading the posted receive is left in place (cancelling a WSARecv
could lose bytes already on their way, CPython bpo-33694): if it completes
while paused, its data is held and delivered on resume_reading.
"""
from __future__ import annotations

import errno
import functools

from .._port import c_buffer
from .base import READ_SIZE_MAX, READ_SIZE_MIN

__all__ = ["CompletionReading"]


class CompletionReading:
    """TCPTransport's reading strategy on Windows (tcp.py picks it)."""
    __slots__ = ()

    def _make_reader(self, loop):
        return None   # no readiness reader: receives are posted

    def _reading_paused(self):
        pass   # the posted receive stays (see the module's docstring)

    def _resumed_while_posted(self):
        pass   # the posted receive delivers when it completes

    def _post_read(self):
        try:
            if self._buffered:
                buf = self._protocol.get_buffer(-1)
                if not len(buf):
                    raise RuntimeError("get_buffer() returned an empty buffer")
            else:
                buf = self._recv_buf
                if buf is None:
                    buf = self._recv_buf = bytearray(READ_SIZE_MIN)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
            return
        self._recv_for = self._protocol if self._buffered else None
        on_recv = functools.partial(self._context.run, self._on_recv)
        try:
            if buf is self._recv_buf:
                # The hot path: our own buffer, its cffi view kept between receives.
                if self._recv_cbuf is None or self._recv_cbuf[0] is not buf:
                    self._recv_cbuf = (buf, c_buffer(buf, writable=True))
                fd = self._sock.fileno()
                if fd < 0:
                    raise OSError(errno.EBADF, "Bad file descriptor: the socket is closed")
                self._recv_op = self._port.recv_prepared(fd, self._recv_cbuf[1], buf, on_recv)
            else:
                self._recv_op = self._port.recv(self._sock, buf, on_recv)
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        self._ops_in_flight += 1


    def _on_recv(self, op):
        if self._read_op_ended():
            return
        if op.result < 0:
            if op.cancelled:
                return
            self._fatal_error(op.error, "Fatal read error on socket transport")
            return
        if op.buffer is self._recv_buf and op.result == len(op.buffer) < READ_SIZE_MAX:
            self._recv_buf = bytearray(2 * op.result)   # receives fill it: grow
        if self._paused:
            self._held = (op.buffer, op.result, self._recv_for)
            return
        self._deliver(op.buffer, op.result, self._recv_for)

