"""loop.sock_sendfile and loop.sendfile without copying through Python.

asyncio's BaseEventLoop owns the public methods (argument checks, the
fallback that copies in 256 KiB chunks, the transport-level protocol swap);
this mixin supplies the two native hooks it calls:

* Windows: TransmitFile through the completion port, in pieces of at most
  IOC_SENDFILE_MAX bytes (TransmitFile's per-call limit), so files of any
  size go out.
* Linux: sendfile(2) on the non-blocking socket, and an io_uring poll for
  writability whenever the socket buffer is full.  Chosen over io_uring
  splice (file -> pipe -> socket): splice needs a pipe pair per transfer and
  two linked operations per piece, and a splice into a non-blocking socket
  that would block is retried by io_uring's worker threads; sendfile moves
  the same pages with one system call per socket-buffer's worth.

The file position afterwards follows the running asyncio: start offset +
bytes sent; when nothing was sent, older releases leave it alone and newer
ones (CPython's 3.13 maintenance releases on, 3.14) set it to the offset.
"""
from __future__ import annotations

import errno
import inspect
import os
import select
import stat
import sys
from asyncio import base_events, constants, exceptions

from ._port import IS_WINDOWS, lib

__all__ = ["SendfileMethods", "TRANSMIT_MAX"]

#: Bytes per TransmitFile call (its limit is 2**31 - 2).  Tests lower it to
#: check the splitting without sending gigabytes through Wine.
TRANSMIT_MAX = lib.IOC_SENDFILE_MAX

# sendfile(2) moves at most 0x7ffff000 bytes per call anyway.
_LINUX_PIECE = 0x7FFFF000


def _sets_position_when_nothing_sent() -> bool:
    """Whether this asyncio sets the file position after a sendfile that
    sent nothing.  The same CPython change made its copying fallback seek
    to the offset first (`if hasattr(file, 'seek')` where it had `if
    offset:`), which tells the two rules apart."""
    try:
        source = inspect.getsource(base_events.BaseEventLoop._sock_sendfile_fallback)
    except (OSError, TypeError):   # no source shipped: the newer rule from 3.14
        return sys.version_info >= (3, 14)
    return "if offset:" not in source


_SETS_POSITION_WHEN_NOTHING_SENT = _sets_position_when_nothing_sent()


def _position_after(file, fileno, offset, sent):
    """The file position after a transfer from offset, as asyncio leaves it
    (the native path on Linux moves the descriptor's offset; Windows' and
    every transfer that sent something, the file object's)."""
    if sent:
        file.seek(offset + sent)
    elif _SETS_POSITION_WHEN_NOTHING_SENT:
        if IS_WINDOWS:
            file.seek(offset)
        else:
            os.lseek(fileno, offset, os.SEEK_SET)


def _regular_file(file):
    """(fileno, size) of a regular file, else SendfileNotAvailableError."""
    try:
        fileno = file.fileno()
    except (AttributeError, OSError, ValueError) as exc:
        raise exceptions.SendfileNotAvailableError("not a regular file") from exc
    try:
        st = os.fstat(fileno)
    except OSError as exc:
        raise exceptions.SendfileNotAvailableError("not a regular file") from exc
    if not stat.S_ISREG(st.st_mode):
        raise exceptions.SendfileNotAvailableError("not a regular file")
    return fileno, st.st_size


class SendfileMethods:
    """Mixin for Loop: the native paths behind sock_sendfile and sendfile."""

    async def _sock_sendfile_native(self, sock, file, offset, count):
        fileno, size = _regular_file(file)
        end = min(offset + count, size) if count else size
        if offset >= end:
            if count or size:   # (asyncio returns before anything for an empty file)
                _position_after(file, fileno, offset, 0)
            return 0
        if IS_WINDOWS:
            return await self._transmit_file(sock, file, fileno, offset, end)
        return await self._sendfile_linux(sock, file, fileno, offset, end)

    async def _transmit_file(self, sock, file, fileno, offset, end):
        if "TransmitFile" not in self._port.extensions(sock):
            raise exceptions.SendfileNotAvailableError(
                "the socket's provider has no TransmitFile")
        pos = offset
        try:
            while pos < end:
                piece = min(end - pos, TRANSMIT_MAX)
                await self._run_op(self._port.sendfile, sock, file, pos, piece)
                pos += piece
        finally:
            _position_after(file, fileno, offset, pos - offset)
        return pos - offset

    async def _sendfile_linux(self, sock, file, fileno, offset, end):
        fd = sock.fileno()
        pos = offset
        try:
            while pos < end:
                try:
                    sent = os.sendfile(fd, fileno, pos, min(end - pos, _LINUX_PIECE))
                except (BlockingIOError, InterruptedError):
                    await self._run_op(self._port.poll_ready, sock, select.POLLOUT)
                    continue
                except OSError as exc:
                    if pos == offset:
                        # As asyncio: nothing sent yet, so let the caller fall
                        # back to plain sends (which report a real socket error).
                        raise exceptions.SendfileNotAvailableError(
                            "os.sendfile call failed") from exc
                    if exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                        raise ConnectionError("socket is not connected", errno.ENOTCONN) from exc
                    raise
                if sent == 0:
                    break   # the file ended early (truncated meanwhile)
                pos += sent
        finally:
            _position_after(file, fileno, offset, pos - offset)
        return pos - offset

    async def _sendfile_native(self, transp, file, offset, count):
        if getattr(transp, "_sendfile_compatible", None) is not constants._SendfileMode.TRY_NATIVE:
            raise exceptions.SendfileNotAvailableError(
                f"native sendfile is not supported for transport {transp!r}")
        resume_reading = transp.is_reading()
        transp.pause_reading()
        await transp._make_empty_waiter()
        try:
            return await self.sock_sendfile(transp._sock, file, offset, count, fallback=False)
        finally:
            transp._reset_empty_waiter()
            if resume_reading:
                transp.resume_reading()
