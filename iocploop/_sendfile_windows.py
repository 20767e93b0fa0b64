"""The native sendfile on Windows (_sendfile.py has the rest): TransmitFile
through the completion port, a piece at a time."""
from __future__ import annotations

from asyncio import exceptions

from ._ioc import lib

__all__ = ["PIECE", "send_pieces", "rewind"]

#: Bytes per TransmitFile call (its limit is 2**31 - 2).  Tests lower it to
#: check the splitting without sending gigabytes through Wine.
PIECE = lib.IOC_SENDFILE_MAX


async def send_pieces(loop, sock, transfer) -> None:
    """Send transfer's range, advancing transfer.pos as each piece is done."""
    if "TransmitFile" not in loop._port.extensions(sock):
        raise exceptions.SendfileNotAvailableError(
            "the socket's provider has no TransmitFile")
    while transfer.pos < transfer.end:
        piece = min(transfer.end - transfer.pos, PIECE)
        await loop._run_op(loop._port.sendfile, sock, transfer.file, transfer.pos, piece)
        transfer.pos += piece


def rewind(file, fileno: int, offset: int) -> None:
    """TransmitFile leaves the file object's position: set it back."""
    file.seek(offset)
