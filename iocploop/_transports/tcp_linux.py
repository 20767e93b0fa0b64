"""TCPTransport's reading on Linux: readiness, then a read.

As asyncio's selector loop reads: one multishot io_uring poll stays posted
for POLLIN, and each wakeup reads what waits with a non-blocking recv
(recv_into the protocol's buffer for a BufferedProtocol), in compiled code
(ReadyReader, _stream.pxi), its read size growing from READ_SIZE_MIN to
READ_SIZE_MAX while reads fill it.  No buffer is lent to the kernel, so an
idle connection costs its Python objects only, and the kernel keeps what
the protocol has not read: TCP's window tells the peer, as with asyncio.
pause_reading only stops deliveries, so a short pause (asyncio's sendfile
pauses around each file) costs no kernel work; the first wakeup while
paused cancels the poll, and resume_reading posts it again, or reads once
if it was never stopped.  Every delivery runs in the transport's context.
"""
from __future__ import annotations

import errno
import select

from .._scheduler import ReadyReader, StreamPoll
from .base import READ_SIZE_MAX, READ_SIZE_MIN

__all__ = ["ReadinessReading"]

_READABLE = select.POLLIN | select.POLLRDHUP
# A wakeup with these bits: the peer has shut down (or the connection
# failed); the end of file waits behind the data and wakes no one again.
_PEER_DONE = select.POLLRDHUP | select.POLLHUP | select.POLLERR


class ReadinessReading:
    """TCPTransport's reading strategy on Linux (tcp.py picks it)."""
    __slots__ = ()

    def _make_reader(self, loop):
        # It holds the transport until connection_lost.
        return ReadyReader(self, self._context, loop, READ_SIZE_MIN, READ_SIZE_MAX, _PEER_DONE)

    def _reading_paused(self):
        """The poll stays posted: a short pause (asyncio's sendfile pauses
        around every file) then costs no cancellation and no new poll.  A
        wakeup while paused stops it (_poll_woke_while_paused)."""

    def _poll_woke_while_paused(self):
        """Data came while paused (ReadyReader.on_poll): stop watching, so a
        long pause is not woken by every segment; resume_reading polls again."""
        if type(self._recv_op) is StreamPoll:
            self._port.cancel(self._recv_op)

    def _resumed_while_posted(self):
        """resume_reading found the poll still posted (or its cancellation
        not yet done): data that came before or during the pause wakes no
        one, so read once, as a new poll would at once.  The read runs in
        the transport's context, as every delivery does, not in the
        caller's (start_tls resumes from the caller's task)."""
        self._loop.call_soon(self._read_more, context=self._context)

    def _post_read(self):
        if self._reader.read_eof:
            return
        fd = self._sock.fileno()
        try:
            if fd < 0:
                raise OSError(errno.EBADF, "Bad file descriptor: the socket is closed")
            self._recv_op = self._reader.watch(fd, _READABLE)
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        self._ops_in_flight += 1

    def _on_poll_ended(self, op):
        """The readiness poll ended (ReadyReader.on_poll): cancelled by
        pause_reading, close or end of file, or ended by the kernel with a
        last wakeup (then it is posted again)."""
        if self._read_op_ended():
            return
        if op.result < 0:
            if not op.cancelled:
                self._fatal_error(op.error, "Fatal read error on socket transport")
                return
        elif not self._paused:
            # The kernel ended the poll with a last wakeup (it does when the
            # completion queue overflows, thousands of connections at once):
            # a wakeup like the others, read before polling again.
            self._reader.poll_ended(op.result)
        self._start_reading()   # unless paused, closing or at end of file

    def _read_more(self):
        """A read filled its buffer, or the peer has shut down: more may wait
        (the end of file at least), which no wakeup announces."""
        if not (self._closing or self._paused or self._recv_op is None):
            self._reader.read_ready()

    def _read_at_eof(self):
        self._reader.read_eof = True   # the socket stays readable: stop polling it
        if self._recv_op is not None:
            self._port.cancel(self._recv_op)
        self._on_eof()
