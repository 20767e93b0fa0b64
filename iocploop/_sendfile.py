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

The file position afterwards follows asyncio: start offset + bytes sent, set
only if something was sent.
"""
from __future__ import annotations

import errno
import os
import select
import stat
from asyncio import constants, exceptions

from ._port import IS_WINDOWS, lib

__all__ = ["SendfileMethods", "TRANSMIT_MAX"]

#: Bytes per TransmitFile call (its limit is 2**31 - 2).  Tests lower it to
#: check the splitting without sending gigabytes through Wine.
TRANSMIT_MAX = lib.IOC_SENDFILE_MAX

# sendfile(2) moves at most 0x7ffff000 bytes per call anyway.
_LINUX_PIECE = 0x7FFFF000


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
            return 0
        if IS_WINDOWS:
            return await self._transmit_file(sock, file, offset, end)
        return await self._sendfile_linux(sock, file, fileno, offset, end)

    async def _transmit_file(self, sock, file, offset, end):
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
            if pos > offset:
                file.seek(pos)
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
            if pos > offset:
                file.seek(pos)
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
