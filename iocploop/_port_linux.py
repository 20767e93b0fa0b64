"""The completion port's Linux part (io_uring): what _port.py asks of its
platform, as _port_windows.py answers it for IOCP.

io_uring takes any file descriptor as it is: nothing is attached to the
ring, a failed submit never reaches the kernel, an accept makes its socket,
and a connect needs no bound socket.  What Linux adds is the guard of
operations on sockets their owner may close (_socket_guard.py) and the
cancellation a full submission ring cannot queue yet.
"""
from __future__ import annotations

import errno
import os
import socket

from ._ioc import ffi, lib
from ._socket_guard import SocketGuard

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
]

#: Linux file descriptors are C ints: a larger number must not wrap to a real one.
FD_MAX = 0x7FFFFFFF

#: What ioc_cancel returns when the submission ring is full and the kernel
#: takes no more: the port asks again before the next wait.
CANCEL_BUSY = -errno.EBUSY

#: AF_UNIX addresses are paths the port encodes itself (_port.encode_address).
UNIX_PATHS = True

#: A refused submit never reached the kernel: nothing of it outlives the call.
REFUSED_SUBMITS_LEAVE_STRAYS = False


#: Why the core refused with EEXIST (no operation it makes fails so).
RING_OF_ANOTHER_THREAD = (
    "this event loop's io_uring ring belongs to the thread that created the loop, "
    "and it has operations in flight: a ring moves to another thread only while "
    "nothing is in flight.  Create the loop in the thread that runs it, or close "
    "its connections and servers before running it in another thread.")


def os_error(code: int) -> Exception:
    """An OSError for a positive errno; RuntimeError for the core's EEXIST,
    a loop used from a thread its ring refuses (ioc_ring_thread)."""
    if code == errno.EEXIST:
        return RuntimeError(RING_OF_ANOTHER_THREAD)
    return OSError(code, os.strerror(code))


class Attachments:
    """Nothing to attach: the ring takes any fd (Windows attaches handles)."""

    def __init__(self, port) -> None:
        pass

    def socket(self, sock) -> None:
        pass

    def handle(self, handle: int) -> None:
        pass

    def forget_handle(self, handle: int) -> None:
        pass

    def adopt(self, old_sock, new_sock) -> None:
        pass


def install_guard(core):
    """The SocketGuard of a new core, hooked before each publish of the
    submission ring, and the cffi handle that keeps it reachable from C."""
    guard = SocketGuard(core)
    handle = ffi.new_handle(guard)
    lib.ioc_set_publish_hook(core, lib.ioc_py_before_publish, handle, guard.armed)
    return guard, handle


def accept_arguments(accept_sock, first_data: int):
    """(fd to accept into, first-data bytes) for ioc_submit_accept: the
    kernel makes the socket, and there is no AcceptEx first data."""
    return -1, 0


def accepted_socket(listener, accept_sock, result: int) -> socket.socket:
    """The socket of a successful accept: result is its new fd."""
    return socket.socket(listener.family, listener.type, listener.proto, fileno=result)


def discard_unread_accept(result: int) -> None:
    """An accept completed in a batch the closing port never read: its new
    fd (result, if not an error) would be orphaned."""
    if result >= 0:
        os.close(result)


def before_connect(sock) -> None:
    """connect(2) binds an unbound socket itself."""


def transmit_file_handle(file) -> int:
    raise OSError(errno.EOPNOTSUPP, "the core's sendfile is TransmitFile (Windows); "
                  "Linux sends files with sendfile(2) (iocploop/_sendfile.py)")


def watch_sigint(core, enable: bool) -> None:
    """Signals interrupt io_uring_enter: nothing to arrange."""
