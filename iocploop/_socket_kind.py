"""A socket's family and type as plain ints, read without socket.socket's enums.

socket.socket's ``family`` and ``type`` properties build an AddressFamily or
SocketKind member on every read: three Python calls, about 0.5 us each time.
A client connection read them 19 times on its way through create_connection,
the transport and socket reuse, so those paths read the C members of
``_socket.socket`` instead (0.07 us).  The ints compare and hash equal to the
enum members, so sets and dicts keyed by either agree.

An object that only looks like a socket (not a ``_socket.socket``) is read
through its own attributes, as before.
"""
from __future__ import annotations

import _socket
import socket

__all__ = ["family_of", "type_of", "kind_of", "set_nodelay"]

_family = _socket.socket.family.__get__
_type = _socket.socket.type.__get__
_INET = (socket.AF_INET, socket.AF_INET6)


def family_of(sock) -> int:
    try:
        return _family(sock)
    except TypeError:
        return sock.family


def type_of(sock) -> int:
    try:
        return _type(sock)
    except TypeError:
        return sock.type


def kind_of(sock) -> tuple:
    """(family, type): what a recycled socket must match.  Not the protocol
    number: Windows reports 0 or 6 for the same TCP socket depending on how
    the object was made."""
    try:
        return _family(sock), _type(sock)
    except TypeError:
        return sock.family, sock.type


def set_nodelay(sock) -> None:
    """asyncio's base_events._set_nodelay: TCP_NODELAY on a TCP socket."""
    if (family_of(sock) in _INET and type_of(sock) == socket.SOCK_STREAM
            and sock.proto == socket.IPPROTO_TCP):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
