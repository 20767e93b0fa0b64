"""The completion port's Windows part (IOCP): what _port.py asks of its
platform, as _port_linux.py answers it for io_uring.

An I/O completion port delivers only for handles attached to it, once
each; AcceptEx accepts into a socket the caller made, ConnectEx needs a
bound socket, TransmitFile takes a file handle, and a provider may start
an operation before it fails the call (a stray: the core reports when the
kernel is done with its memory).
"""
from __future__ import annotations

import ctypes
import socket
import weakref

from ._ioc import lib

__all__ = [
    "FD_MAX",
    "CANCEL_BUSY",
    "UNIX_PATHS",
    "REFUSED_SUBMITS_LEAVE_STRAYS",
    "os_error",
    "Attachments",
    "install_guard",
    "accept_arguments",
    "accepted_socket",
    "discard_unread_accept",
    "before_connect",
    "transmit_file_handle",
    "watch_sigint",
    "bind_if_unbound",
]

#: Handles are not C ints: no range of their own to check.
FD_MAX = None

#: CancelIoEx needs no queue slot: ioc_cancel never asks to be asked again.
CANCEL_BUSY = None

#: AF_UNIX is not one of the port's families on Windows.
UNIX_PATHS = False

#: A refused submit may have been started by the provider (make_stray in
#: ioc_core_win.c): its memory is kept until IOC_COMPLETION_STRAY.
REFUSED_SUBMITS_LEAVE_STRAYS = True

_ERROR_INVALID_PARAMETER = 87


def os_error(code: int) -> OSError:
    """An OSError for a positive Windows error code (OSError derives errno)."""
    return OSError(0, ctypes.FormatError(code).strip(), None, code)


class Attachments:
    """The sockets and handles attached to one port.

    Sockets are remembered weakly, by object: a handle number reused by a
    later socket is never mistaken for one already attached.  Pipe handles
    are remembered by number until their owner forgets them on close."""

    def __init__(self, port) -> None:
        self._port = port
        self._sockets: "weakref.WeakSet" = weakref.WeakSet()
        self._handles: set[int] = set()

    def socket(self, sock) -> None:
        if sock in self._sockets:
            return
        if isinstance(sock, int):
            raise TypeError("on Windows the completion port needs the socket object, "
                            "not its handle number")
        from ._port import _fileno

        rc = lib.ioc_associate(self._port._checked_core(), _fileno(sock))
        if rc < 0:
            if -rc == _ERROR_INVALID_PARAMETER:
                raise OSError(0, "the socket is already attached to another completion port; "
                              "on Windows a socket can belong to one event loop only",
                              None, _ERROR_INVALID_PARAMETER)
            raise os_error(-rc)
        self._sockets.add(sock)

    def handle(self, handle: int) -> None:
        if handle in self._handles:
            return
        rc = lib.ioc_associate(self._port._checked_core(), handle)
        if rc < 0:
            raise os_error(-rc)
        self._handles.add(handle)

    def forget_handle(self, handle: int) -> None:
        self._handles.discard(handle)

    def adopt(self, old_sock, new_sock) -> None:
        """new_sock wraps old_sock's detached handle, which stays attached."""
        if old_sock in self._sockets:
            self._sockets.add(new_sock)


def install_guard(core):
    """No guard: a closed socket's handle fails its posted operations."""
    return None, None


def accept_arguments(accept_sock, first_data: int):
    """(socket to accept into, first-data bytes) for AcceptEx."""
    if accept_sock is None:
        raise ValueError("AcceptEx needs a fresh socket to accept into")
    return accept_sock.fileno(), first_data


def accepted_socket(listener, accept_sock, result: int):
    """AcceptEx accepted into the caller's socket."""
    return accept_sock


def discard_unread_accept(result: int) -> None:
    """The accept socket is the caller's, closed with its pool."""


def before_connect(sock) -> None:
    """ConnectEx refuses an unbound socket: bind it to the wildcard address,
    as connect() would implicitly (a datagram socket connects at once)."""
    if sock.type == socket.SOCK_DGRAM:
        return
    bind_if_unbound(sock)


def bind_if_unbound(sock) -> None:
    try:
        sock.getsockname()
        return
    except OSError:
        pass
    sock.bind(("0.0.0.0", 0) if sock.family == socket.AF_INET else ("::", 0))


def transmit_file_handle(file) -> int:
    """The Windows handle of an open file object, for TransmitFile."""
    import msvcrt

    return msvcrt.get_osfhandle(file.fileno())


def watch_sigint(core, enable: bool) -> None:
    """Let SIGINT (console Ctrl+C, signal.raise_signal) end a wait, so
    Python's handler runs."""
    rc = lib.ioc_watch_sigint(core, lib.ioc_py_sigint_event() if enable else 0)
    if rc < 0:
        raise os_error(-rc)
