"""loop.sock_sendfile and loop.sendfile without copying through Python.

asyncio's BaseEventLoop owns the public methods (argument checks, the
fallback that copies in 256 KiB chunks, the transport-level protocol swap);
this mixin supplies the two native hooks it calls:

* Windows (_sendfile_windows.py): TransmitFile through the completion
  port, in pieces of at most IOC_SENDFILE_MAX bytes (TransmitFile's
  per-call limit), so files of any size go out.
* Linux (_sendfile_linux.py): sendfile(2) on the non-blocking socket, and an io_uring poll for
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

import inspect
import os
import stat
import sys
from asyncio import base_events, constants, exceptions

# How the bytes go out: one module per platform (send_pieces, rewind, PIECE).
if sys.platform == "win32":
    from . import _sendfile_windows as _platform
else:
    from . import _sendfile_linux as _platform

__all__ = ["SendfileMethods"]


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
    """The file position after a transfer from offset, as asyncio leaves it."""
    if sent:
        file.seek(offset + sent)
    elif _SETS_POSITION_WHEN_NOTHING_SENT:
        _platform.rewind(file, fileno, offset)


class Transfer:
    """One native transfer of [offset, end) of a file: `pos` is how far
    it got, which the platform's send_pieces advances as pieces go out."""

    __slots__ = ("file", "fileno", "offset", "pos", "end")

    def __init__(self, file, fileno: int, offset: int, end: int) -> None:
        self.file = file
        self.fileno = fileno
        self.offset = offset
        self.pos = offset
        self.end = end


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
        transfer = Transfer(file, fileno, offset, end)
        try:
            await _platform.send_pieces(self, sock, transfer)
        finally:
            _position_after(file, fileno, offset, transfer.pos - offset)
        return transfer.pos - offset

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
