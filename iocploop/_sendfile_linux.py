"""The native sendfile on Linux (_sendfile.py has the rest): sendfile(2) on
the non-blocking socket, and an io_uring poll for writability whenever the
socket buffer is full."""
from __future__ import annotations

import errno
import os
import select
from asyncio import exceptions

__all__ = ["PIECE", "send_pieces", "rewind"]

#: sendfile(2) moves at most 0x7ffff000 bytes per call anyway.  Tests lower
#: it to check the splitting.
PIECE = 0x7FFFF000


async def send_pieces(loop, sock, transfer) -> None:
    """Send transfer's range, advancing transfer.pos as each call sends."""
    fd = sock.fileno()
    while transfer.pos < transfer.end:
        try:
            sent = os.sendfile(fd, transfer.fileno, transfer.pos,
                               min(transfer.end - transfer.pos, PIECE))
        except (BlockingIOError, InterruptedError):
            await loop._run_op(loop._port.poll_ready, sock, select.POLLOUT)
            continue
        except OSError as exc:
            if transfer.pos == transfer.offset:
                # As asyncio: nothing sent yet, so let the caller fall
                # back to plain sends (which report a real socket error).
                raise exceptions.SendfileNotAvailableError(
                    "os.sendfile call failed") from exc
            if exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                raise ConnectionError("socket is not connected", errno.ENOTCONN) from exc
            raise
        if sent == 0:
            break   # the file ended early (truncated meanwhile)
        transfer.pos += sent


def rewind(file, fileno: int, offset: int) -> None:
    """sendfile(2) moved nothing of the descriptor's offset; asyncio's
    rule sets it to the start."""
    os.lseek(fileno, offset, os.SEEK_SET)
