"""The Python face of the C completion core: one `CompletionPort` per loop.

The port owns the C core (an I/O completion port on Windows, an io_uring on
Linux) and every `Operation` submitted through it.  Ownership rules:

* The C core owns the per-operation records (OVERLAPPED / io_uring user data).
* The port owns the Python side of each operation, including the buffer the
  kernel reads or writes, in ``self._ops`` from submission until the kernel's
  completion has been dequeued, cancelled operations included.  Only then is
  the operation handed to its callback and forgotten.
* If the kernel has not finished some operations when the port closes (it
  should always finish, cancellation is quick), their buffers are kept in
  ``_ABANDONED`` for the life of the process rather than freed under the
  kernel's feet.
"""
from __future__ import annotations

import errno
import operator
import os
import socket
import sys
import warnings
import weakref

from ._errors import BackendUnavailableError
from ._sharing import SharedValues
from ._socket_kind import family_of
from ._ioc import ffi, lib
from ._scheduler import CompletionBatch, OperationBase, lendable, set_cancelled_result

# What differs between IOCP and io_uring, one module each.
if sys.platform == "win32":
    from . import _port_windows as _platform
else:
    from . import _port_linux as _platform

BACKEND: str = ffi.string(lib.ioc_backend_name()).decode()
ERR_CANCELLED: int = lib.ioc_err_cancelled()
set_cancelled_result(ERR_CANCELLED)
IS_WINDOWS = sys.platform == "win32"
#: What ffi.from_buffer returns: recv_prepared refuses anything else.
_CDATA_FROM_BUFFER = type(ffi.from_buffer(bytearray(1)))


def c_buffer(obj, writable: bool = False):
    """The cffi view of obj's memory that an operation hands the kernel.
    Every view goes through here: see `lendable` for why a memoryview must
    not be exported as it is."""
    return ffi.from_buffer(lendable(obj, writable), require_writable=writable)

#: Largest single transfer handed to the kernel (WSABUF.len is a ULONG; keep
#: well inside a signed 32-bit count on both systems).
MAX_TRANSFER = 0x7FFFF000

#: Windows: the errors with which a receive reports an ICMP port-unreachable
#: for an earlier datagram (WSAECONNRESET, ERROR_PORT_UNREACHABLE).
WINDOWS_PORT_UNREACHABLE = (10054, 1234)

_WAIT_BATCH = 256
_DRAIN_MS = 5000

_MORE = lib.IOC_COMPLETION_MORE
_STRAY = lib.IOC_COMPLETION_STRAY
_NOT_FINAL = _MORE | _STRAY   # completions that end no operation of _ops

_EXTENSION_NAMES = {
    lib.IOC_EXT_ACCEPTEX: "AcceptEx",
    lib.IOC_EXT_CONNECTEX: "ConnectEx",
    lib.IOC_EXT_GETACCEPTEXSOCKADDRS: "GetAcceptExSockaddrs",
    lib.IOC_EXT_TRANSMITFILE: "TransmitFile",
    lib.IOC_EXT_DISCONNECTEX: "DisconnectEx",
    lib.IOC_EXT_TRANSMITPACKETS: "TransmitPackets",
    lib.IOC_EXT_WSARECVMSG: "WSARecvMsg",
    lib.IOC_EXT_WSASENDMSG: "WSASendMsg",
}

# Buffers of operations the kernel never finished before their port closed.
_ABANDONED: list = []
_LIVE_PORTS: "weakref.WeakSet[CompletionPort]" = weakref.WeakSet()


#: An OSError for a positive system error code of this backend.
os_error = _platform.os_error

_CANCEL_BUSY = _platform.CANCEL_BUSY
_FD_MAX = _platform.FD_MAX


def _fileno(sock) -> int:
    fd = sock if isinstance(sock, int) else _socket_attr(sock, "fileno")()
    if fd < 0:
        raise OSError(9, "Bad file descriptor: the socket is closed")  # EBADF
    if _FD_MAX is not None and fd > _FD_MAX:
        raise OverflowError("fd is greater than maximum")
    return fd


def _socket_attr(sock, name: str):
    """sock.name, or the TypeError a socket function raises for a non-socket."""
    try:
        return getattr(sock, name)
    except AttributeError:
        raise TypeError(f"a socket object is required, not {type(sock).__name__!r}") from None


def _unix_sockaddr(address):
    """(sockaddr_un, length) for a path (str, bytes or path-like); a path
    starting with NUL is a Linux abstract name, which takes no terminator."""
    path = os.fsencode(address) if not isinstance(address, (bytes, bytearray)) else bytes(address)
    if not path.startswith(b"\0"):
        path += b"\0"
    if len(path) > 108:   # sizeof(sun_path)
        raise OSError(errno.ENAMETOOLONG if hasattr(errno, "ENAMETOOLONG") else 0,
                      "AF_UNIX path too long")
    raw = socket.AF_UNIX.to_bytes(2, sys.byteorder) + path
    out = ffi.new("char[]", raw)
    return out, len(raw)


def encode_address(family: int, address):
    """(sockaddr as a cffi char array, its length) for a numeric (host, port[, flowinfo,
    scope_id]) address or an AF_UNIX path; raises like socket.connect would for a bad one."""
    if _platform.UNIX_PATHS and family == socket.AF_UNIX:
        if not isinstance(address, (str, bytes, bytearray, os.PathLike)):
            raise TypeError(f"a bytes-like object is required, not {type(address).__name__!r}")
        return _unix_sockaddr(address)
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise NotImplementedError(
            f"iocploop: socket family {family!r} is not supported yet (local sockets arrive "
            "with issue #7)")
    if not isinstance(address, tuple) or len(address) < 2:
        raise TypeError(f"{'AF_INET' if family == socket.AF_INET else 'AF_INET6'} address "
                        f"must be a tuple (host, port), not {address!r}")
    host, port = address[0], address[1]
    if not isinstance(host, str):
        raise TypeError(f"str, bytes or bytearray expected, not {type(host).__name__}")
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise OverflowError("port must be 0-65535.")
    addr = ffi.new("ioc_addr *")
    addr.family = family
    addr.port = port
    packed = socket.inet_pton(family, host.partition("%")[0] if family == socket.AF_INET6 else host)
    ffi.memmove(addr.addr, packed, len(packed))
    if family == socket.AF_INET6:
        addr.flowinfo = address[2] if len(address) > 2 else 0
        addr.scope_id = address[3] if len(address) > 3 else 0
    out = ffi.new("char[]", 128)
    n = lib.ioc_encode_addr(addr, out, len(out))
    if n < 0:
        raise ValueError(f"cannot encode address {address!r}")
    return out, n


# Connections from one peer host share its text (_sharing.py).  IPv4 and
# IPv6 keys differ in length, so they cannot collide.
_PEER_HOSTS = SharedValues(1024)


def _host_text(family, packed):
    return _PEER_HOSTS.get(packed) or _PEER_HOSTS.keep(packed, socket.inet_ntop(family, packed))


def decode_address(addr):
    """The Python address tuple of an ioc_addr, or None for an unknown family."""
    if addr.family == socket.AF_INET:
        return _host_text(socket.AF_INET, bytes(ffi.buffer(addr.addr, 4))), addr.port
    if addr.family == socket.AF_INET6:
        return (_host_text(socket.AF_INET6, bytes(ffi.buffer(addr.addr, 16))), addr.port,
                addr.flowinfo, addr.scope_id)
    return None


_SOCKADDR_SPACE = 128   # sizeof(struct sockaddr_storage)
_AF_UNIX = getattr(socket, "AF_UNIX", 1)


def _ip_address(host: str):
    """An ioc_addr (port 0) for a numeric IPv4 or IPv6 address string."""
    if not isinstance(host, str):
        raise TypeError(f"a numeric IP address string is required, not {type(host).__name__}")
    addr = ffi.new("ioc_addr *")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            packed = socket.inet_pton(family, host.partition("%")[0])
        except (OSError, ValueError):
            continue
        addr.family = family
        ffi.memmove(addr.addr, packed, len(packed))
        return addr
    raise ValueError(f"not a numeric IP address: {host!r}")


def _unix_address(name, namelen):
    """An AF_UNIX sockaddr as the socket module reports it: the path as str,
    a Linux abstract name as bytes."""
    path = bytes(ffi.buffer(name, namelen))[2:]   # after sun_family
    if path.startswith(b"\0"):
        return path
    return os.fsdecode(path.partition(b"\0")[0])


def _message(nbytes, name, control, result):
    """(nbytes, sender, flags, local address or None) of a received datagram.
    The sender is None when the kernel gave none (an unnamed AF_UNIX peer)."""
    sender = None
    if result.namelen:
        family = int.from_bytes(bytes(ffi.buffer(name, 2)), sys.byteorder)
        if family == _AF_UNIX:
            sender = _unix_address(name, result.namelen)
        else:
            addr = ffi.new("ioc_addr *")
            if lib.ioc_decode_sockaddr(name, result.namelen, addr) == 0:
                sender = decode_address(addr)
    local = None
    if control != ffi.NULL and result.controllen:
        addr = ffi.new("ioc_addr *")
        ifindex = ffi.new("uint32_t *")
        if lib.ioc_pktinfo_parse(control, result.controllen, addr, ifindex) == 1:
            local = decode_address(addr)[0]
    return nbytes, sender, result.flags, local


def _reraise(op, exc):
    raise exc


class Operation(OperationBase):
    """One submitted kernel operation and the memory it uses.

    ``callback(op)`` runs once, in the loop thread, after the kernel reported
    the operation done.  Then ``op.result`` is the byte count, or a negated
    system error (``op.error`` builds the OSError; ``op.cancelled`` tells a
    cancellation apart).  A multishot poll's callback runs once per wakeup
    with ``op.done`` still False, and a last time with it True.  The fields
    live in the compiled OperationBase (token, kind, callback, buffer,
    result, flags, done), which the scheduler's dispatch fills in C.
    """

    __slots__ = ()

    def release(self) -> None:
        """Drop the cffi views of the operation's memory once its callback ran.

        A cffi view exports the caller's buffer; a memoryview that is freed
        while exported crashes CPython 3.11's garbage collector when the
        operation ends up in a reference cycle (a traceback holding it, say).
        """
        self._cbuf = None

    @property
    def cancelled(self) -> bool:
        return self.result == ERR_CANCELLED

    @property
    def error(self) -> OSError | None:
        if self.result is None or self.result >= 0:
            return None
        return os_error(-self.result)

    def __repr__(self):
        state = "pending" if not self.done else f"result={self.result}"
        return f"<Operation {self.kind} #{self.token} {state}>"


class AcceptOperation(Operation):
    """An accept (CompletionPort.accept), which decodes its own result."""

    __slots__ = ("_port",)

    def first_data(self) -> bytes:
        """The bytes a successful first-data accept received (Windows)."""
        first_data = self.buffer[2]
        if not first_data or self.result <= 0:
            return b""
        return ffi.buffer(self._cbuf[0], min(self.result, first_data))[:]

    def accepted(self):
        """(socket, peer address) of a successful accept: the new socket is
        non-blocking; on Windows it got SO_UPDATE_ACCEPT_CONTEXT."""
        listener, accept_sock, first_data = self.buffer
        addrbuf, addrlen = self._cbuf
        conn = _platform.accepted_socket(listener, accept_sock, self.result)
        # The new connection is ours from here: whatever fails (the listener
        # closed while the accept was in the kernel, the port closed), it is
        # closed, never left as a bare fd or to the garbage collector.
        try:
            local = ffi.new("ioc_addr *")
            remote = ffi.new("ioc_addr *")
            rc = lib.ioc_accept_finish(self._port._checked_core(), _fileno(listener),
                                       conn.fileno(), addrbuf, addrlen[0], first_data,
                                       local, remote)
            if rc < 0:
                raise os_error(-rc)
            conn.setblocking(False)
            address = decode_address(remote)
            if address is None:   # a family we do not decode: ask the socket
                address = conn.getpeername()
        except BaseException:
            conn.close()
            raise
        return conn, address


class MessageOperation(Operation):
    """A datagram receive (CompletionPort.recvmsg), which decodes its own result."""

    __slots__ = ()

    def message(self):
        """(nbytes, sender address, flags, local address or None).  The
        sender is None when it is not an IP address (a connected socket may
        report none)."""
        _cbuf, name, control, result = self._cbuf
        return _message(self.result, name, control, result)


_FORKED_MESSAGE = (
    "this event loop was inherited through fork(); its completion port belongs to "
    "the parent process. Create a new event loop in the child.")


def _address(cdata) -> int:
    """The address a cffi pointer (or array, or function) holds."""
    return int(ffi.cast("uintptr_t", cdata))


def _check_operation(op) -> None:
    if not isinstance(op, OperationBase):   # Operation, or a compiled one
        raise TypeError(f"an Operation of this port is required, not {type(op).__name__!r}")


class CompletionPort:
    """A completion core and the operations in flight on it."""

    def __init__(self, queue_depth: int = 256):
        core_out = ffi.new("ioc_core **")
        err = ffi.new("char[1024]")
        rc = lib.ioc_core_open(core_out, queue_depth, err, len(err))
        if rc != 0:
            raise BackendUnavailableError(rc, ffi.string(err).decode(errors="replace"))
        self._core = core_out[0]
        self._ops: dict[int, Operation] = {}
        # Windows: token -> memory of a submit that failed after the provider
        # had started it (a stray, see _track): kept until the core reports
        # that the kernel is done with it.
        self._strays: dict[int, tuple] = {}
        # Operations whose cancellation the core could not queue yet (Linux:
        # a full submission ring, EBUSY): asked again before the next wait.
        self._cancel_later: list[Operation] = []
        self._record_out = ffi.new("ioc_op **")
        # The same pointer read as a number: operations keep their record's address.
        self._record_address = ffi.cast("uintptr_t *", self._record_out)
        events = ffi.new("ioc_completion[]", _WAIT_BATCH)
        batch_size = ffi.new("int[1]")   # written by ioc_wait
        # The wait and the dispatch of completions run in compiled code
        # (_scheduler.CompletionBatch), calling this module's core directly.
        self._batch = CompletionBatch(
            self._ops, self._strays, self._cancel_later, self._retry_cancels,
            _address(self._core), _address(events), _address(batch_size), _WAIT_BATCH,
            _address(ffi.addressof(lib, "ioc_wait")), _address(ffi.addressof(lib, "ioc_wakeup")),
            _address(ffi.addressof(lib, "ioc_submit_recv")),
            _address(ffi.addressof(lib, "ioc_submit_send")),
            _address(ffi.addressof(lib, "ioc_submit_poll")),
            _address(ffi.addressof(lib, "ioc_submit_poll_multishot")),
            _address(ffi.addressof(lib, "ioc_submit_read")),
            _MORE, _STRAY, os_error, (events, batch_size))
        self._next_token = self._batch.next_token   # one counter with compiled submits
        self._attached = _platform.Attachments(self)
        self._forked = False
        # Linux: see _socket_guard.py; the handle keeps it reachable from C.
        self._guard, self._guard_handle = _platform.install_guard(self._core)
        _LIVE_PORTS.add(self)

    backend = BACKEND

    # -- state ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._core is None

    @property
    def pending(self) -> int:
        """Operations submitted and not yet dispatched to their callback."""
        return len(self._ops)

    def stats(self) -> dict:
        core = self._checked_core()
        out = ffi.new("ioc_stats *")
        lib.ioc_get_stats(core, out)
        return {name: getattr(out, name) for name in dir(out)}

    def _checked_core(self):
        core = self._core
        if core is None:
            raise RuntimeError("the completion port is closed")
        if self._forked:
            raise RuntimeError(_FORKED_MESSAGE)
        return core

    # -- handles -------------------------------------------------------------

    def associate(self, sock) -> None:
        """Attach a socket to the port (Windows; a no-op on Linux).

        Windows takes socket objects only: the port remembers them weakly, so
        a handle number reused by a later socket is never mistaken for one
        already attached."""
        self._attached.socket(sock)

    def extensions(self, sock) -> frozenset[str]:
        """Names of the Winsock extension functions the socket's provider offers."""
        mask = lib.ioc_extensions(self._checked_core(), _fileno(sock))
        if mask < 0:
            raise os_error(-mask)
        return frozenset(name for bit, name in _EXTENSION_NAMES.items() if mask & bit)

    # -- operations ----------------------------------------------------------

    def recv(self, sock, buffer, callback, flags: int = 0) -> Operation:
        """Receive into a writable buffer; the port keeps it alive until done."""
        cbuf = c_buffer(buffer, writable=True)
        return self._submit(lib.ioc_submit_recv, "recv", sock, buffer, cbuf, callback, flags)

    def recv_prepared(self, fd: int, cbuf, buffer, callback) -> Operation:
        """recv's lean path, for a caller that has attached its socket (Windows)
        and keeps a cffi view `cbuf` of its writable `buffer` (at most
        MAX_TRANSFER bytes) from one receive to the next: TCPTransport, whose
        receive is re-posted after every delivery."""
        core = self._core
        if core is None or self._forked:
            core = self._checked_core()   # raises what fits
        if type(cbuf) is not _CDATA_FROM_BUFFER:
            raise TypeError("recv_prepared needs c_buffer(buffer, writable=True), "
                            f"not {type(cbuf).__name__}")
        token = self._next_token()
        rc = lib.ioc_submit_recv(core, _fileno(fd), cbuf, len(cbuf), 0, token, self._record_out)
        return self._track(rc, token, "recv", callback, buffer, cbuf)

    def send(self, sock, data, callback, flags: int = 0) -> Operation:
        """Send from a bytes-like object; at most MAX_TRANSFER bytes per call."""
        cbuf = c_buffer(data)
        return self._submit(lib.ioc_submit_send, "send", sock, data, cbuf, callback, flags)

    def _submit(self, submit, kind, sock, buffer, cbuf, callback, flags) -> Operation:
        core, fd = self._prepare(sock)
        token = self._next_token()
        rc = submit(core, fd, cbuf, min(len(cbuf), MAX_TRANSFER), flags, token, self._record_out)
        return self._track(rc, token, kind, callback, buffer, cbuf)

    def _prepare(self, sock):
        """(core, fd) for a new operation on sock, attached to the port."""
        core = self._checked_core()
        fd = _fileno(sock)
        self._attached.socket(sock)
        return core, fd

    def _track(self, rc, token, kind, callback, buffer, keep, op_class=Operation) -> Operation:
        """Record a submitted operation; keep = cffi memory the kernel uses."""
        if rc < 0:
            if _platform.REFUSED_SUBMITS_LEAVE_STRAYS and self._record_out[0] != ffi.NULL:
                # The provider had started the operation before it failed the
                # call (make_stray in ioc_core_win.c): the kernel may still
                # use its memory until the core reports it (IOC_COMPLETION_STRAY).
                self._strays[token] = (buffer, keep)
            raise os_error(-rc)   # refused at once: no callback will run
        op = op_class(token, kind, callback, buffer, self._record_address[0], keep)
        self._ops[token] = op
        return op

    def sendv(self, sock, buffers, callback, flags: int = 0) -> Operation:
        """Send several bytes-like objects in one gathered operation."""
        cbufs = [c_buffer(b) for b in buffers]
        if not cbufs:
            raise ValueError("sendv needs at least one buffer")
        iov = ffi.new("ioc_iovec[]", len(cbufs))
        for i, cbuf in enumerate(cbufs):
            iov[i].base = cbuf
            iov[i].len = len(cbuf)
        core, fd = self._prepare(sock)
        token = self._next_token()
        rc = lib.ioc_submit_sendv(core, fd, iov, len(cbufs), flags, token, self._record_out)
        return self._track(rc, token, "sendv", callback, buffers, (cbufs, iov))

    def accept(self, listener, callback, accept_sock=None, first_data: int = 0) -> Operation:
        """Accept one connection.  Windows: AcceptEx into accept_sock, a fresh
        (or recycled) socket of the listener's family the caller made; with
        first_data > 0 the accept completes only once the peer sent data (up
        to that many bytes arrive with it: `op.first_data()`).  Linux
        ignores both.  Finish with `op.accepted()` once the callback reports
        success."""
        accept_fd, first_data = _platform.accept_arguments(accept_sock, first_data)
        core, fd = self._prepare(listener)
        addrbuf = ffi.new("char[]", first_data + lib.IOC_ACCEPT_ADDRBUF)
        addrlen = ffi.new("uint32_t *", 128)   # sizeof(struct sockaddr_storage)
        token = self._next_token()
        rc = lib.ioc_submit_accept(core, fd, accept_fd, addrbuf, addrlen, first_data, token, self._record_out)
        op = self._track(rc, token, "accept", callback, (listener, accept_sock, first_data),
                         (addrbuf, addrlen), AcceptOperation)
        op._port = self
        return op

    def connect(self, sock, address, callback) -> Operation:
        """Connect to a resolved (numeric) address.  Windows: ConnectEx, on a
        socket bound to the wildcard address first if it is not bound yet; a
        datagram socket is connected with connect() at once (its operation
        completes without the kernel).  Finish with `connected(sock)` once
        the callback reports success."""
        family = family_of(sock) if isinstance(sock, socket.socket) else _socket_attr(sock, "family")
        sockaddr, length = encode_address(family, address)
        core, fd = self._prepare(sock)
        _platform.before_connect(sock)
        token = self._next_token()
        rc = lib.ioc_submit_connect(core, fd, sockaddr, length, token, self._record_out)
        return self._track(rc, token, "connect", callback, sock, sockaddr)

    def connected(self, sock) -> None:
        """After a successful connect (Windows: SO_UPDATE_CONNECT_CONTEXT)."""
        rc = lib.ioc_connect_finish(self._checked_core(), _fileno(sock))
        if rc < 0:
            raise os_error(-rc)

    # -- datagrams -------------------------------------------------------------

    def recvmsg(self, sock, buffer, callback, pktinfo: bool = False) -> Operation:
        """Receive one datagram into a writable buffer, with its sender's
        address (and, with pktinfo, the local address it arrived on: the
        socket needs `enable_pktinfo` first).  Read it with `op.message()`."""
        cbuf = c_buffer(buffer, writable=True)
        name = ffi.new("char[]", _SOCKADDR_SPACE)
        control = ffi.new("char[]", lib.IOC_PKTINFO_SPACE) if pktinfo else ffi.NULL
        result = ffi.new("ioc_msg_result *")
        core, fd = self._prepare(sock)
        token = self._next_token()
        rc = lib.ioc_submit_recvmsg(core, fd, cbuf, min(len(cbuf), MAX_TRANSFER), name,
                                    _SOCKADDR_SPACE, control,
                                    lib.IOC_PKTINFO_SPACE if pktinfo else 0, 0, result, token,
                                    self._record_out)
        return self._track(rc, token, "recvmsg", callback, buffer,
                           (cbuf, name, control, result), MessageOperation)

    def recvmsg_now(self, sock, buffer, pktinfo: bool = False):
        """Linux: receive one more datagram at once, without waiting (to drain
        a socket after a completion): MessageOperation.message's tuple, or None when
        nothing is queued."""
        cbuf = c_buffer(buffer, writable=True)
        name = ffi.new("char[]", _SOCKADDR_SPACE)
        control = ffi.new("char[]", lib.IOC_PKTINFO_SPACE) if pktinfo else ffi.NULL
        result = ffi.new("ioc_msg_result *")
        n = lib.ioc_recvmsg_now(_fileno(sock), cbuf, min(len(cbuf), MAX_TRANSFER), name,
                                _SOCKADDR_SPACE, control,
                                lib.IOC_PKTINFO_SPACE if pktinfo else 0, result)
        del cbuf   # release the export of buffer at once
        if n == -errno.EAGAIN:
            return None
        if n < 0:
            raise os_error(-n)
        return _message(n, name, control, result)

    def sendmsg(self, sock, buffers, address, callback, source=None) -> Operation:
        """Send one datagram made of `buffers` to address (None: the connected
        peer); source = a local IP address string to send from (IP_PKTINFO)."""
        cbufs = [c_buffer(b) for b in buffers]
        iov = ffi.new("ioc_iovec[]", len(cbufs))
        for i, cbuf in enumerate(cbufs):
            iov[i].base = cbuf
            iov[i].len = len(cbuf)
        name, namelen = (ffi.NULL, 0) if address is None else encode_address(
            _socket_attr(sock, "family"), address)
        control, controllen = ffi.NULL, 0
        if source is not None:
            control = ffi.new("char[]", lib.IOC_PKTINFO_SPACE)
            controllen = lib.ioc_pktinfo_build(control, lib.IOC_PKTINFO_SPACE,
                                               _ip_address(source), 0)
            if controllen < 0:
                raise os_error(-controllen)
        core, fd = self._prepare(sock)
        token = self._next_token()
        rc = lib.ioc_submit_sendmsg(core, fd, iov, len(cbufs), name, namelen, control,
                                    controllen, 0, token, self._record_out)
        return self._track(rc, token, "sendmsg", callback, buffers,
                           (cbufs, iov, name, control))

    @staticmethod
    def enable_pktinfo(sock) -> None:
        """Ask the kernel for the arrival address of each datagram on sock."""
        rc = lib.ioc_pktinfo_enable(_fileno(sock), _socket_attr(sock, "family"))
        if rc < 0:
            raise os_error(-rc)

    def sendfile(self, sock, file, offset: int, count: int, callback) -> Operation:
        """Windows: TransmitFile count (1..IOC_SENDFILE_MAX) bytes of the open
        file object from offset.  The result is the byte count."""
        handle = _platform.transmit_file_handle(file)
        core, fd = self._prepare(sock)
        token = self._next_token()
        rc = lib.ioc_submit_sendfile(core, fd, handle, offset, count, token, self._record_out)
        # The file object keeps its handle open until the kernel is done.
        return self._track(rc, token, "sendfile", callback, (sock, file), None)

    def poll_ready(self, sock, events: int, callback) -> Operation:
        """Complete once sock (a socket or a file descriptor number) is ready
        for `events` (select.POLLIN / POLLOUT); the result is the ready mask
        with poll(2)'s bits.  Linux: io_uring poll on any pollable fd.
        Windows: AFD polling, sockets only; the socket need not be attached
        to the port."""
        core = self._checked_core()
        fd = _fileno(sock)
        token = self._next_token()
        rc = lib.ioc_submit_poll(core, fd, events, token, self._record_out)
        return self._track(rc, token, "poll", callback, sock, None)

    def poll_multishot(self, fd: int, events: int, callback) -> Operation:
        """A poll that stays posted on fd (Linux): callback(op) runs with
        op.done False each time fd wakes up ready for `events` -- new data
        arrived; data left unread does not complete it again -- and a last
        time with op.done True (its cancellation, or the kernel ended it)."""
        core = self._core
        if core is None or self._forked:
            core = self._checked_core()
        token = self._next_token()
        rc = lib.ioc_submit_poll_multishot(core, fd, events, token, self._record_out)
        return self._track(rc, token, "poll_multishot", callback, None, None)

    # -- pipes and processes ---------------------------------------------------

    def associate_handle(self, handle: int) -> None:
        """Windows: attach a pipe handle (opened for overlapped I/O) to the
        port; a no-op on Linux.  The caller calls `forget_handle` when it
        closes the handle, so that a reused handle number is attached again."""
        self._attached.handle(handle)

    def forget_handle(self, handle: int) -> None:
        self._attached.forget_handle(handle)

    def read(self, handle: int, buffer, callback) -> Operation:
        """Read a pipe (or another stream that is not a socket) into a
        writable buffer.  The result is the byte count, 0 at end of file."""
        cbuf = c_buffer(buffer, writable=True)
        core = self._checked_core()
        self.associate_handle(handle)
        token = self._next_token()
        rc = lib.ioc_submit_read(core, handle, cbuf, min(len(cbuf), MAX_TRANSFER), token,
                                 self._record_out)
        return self._track(rc, token, "read", callback, buffer, cbuf)

    def read_bytes(self, handle: int, size: int, callback):
        """read's lean path: up to size bytes straight into a new bytes
        object (no buffer of the caller, no copy).  When callback(op) runs,
        op.buffer is the bytes read (b"" at end of file; None after an
        error, then op.result is the negated error)."""
        size = operator.index(size)
        if not 0 < size <= MAX_TRANSFER:
            raise ValueError(f"read_bytes reads 1 to {MAX_TRANSFER} bytes, not {size}")
        self._checked_core()
        self.associate_handle(handle)
        return self._batch.read_new_bytes(handle, size, callback)

    def write(self, handle: int, data, callback) -> Operation:
        """Write a bytes-like object to a pipe; the result is the byte count
        written (possibly fewer than asked)."""
        cbuf = c_buffer(data)
        core = self._checked_core()
        self.associate_handle(handle)
        token = self._next_token()
        rc = lib.ioc_submit_write(core, handle, cbuf, min(len(cbuf), MAX_TRANSFER), token,
                                  self._record_out)
        return self._track(rc, token, "write", callback, data, cbuf)

    def connect_pipe(self, handle: int, callback) -> Operation:
        """Windows: wait for a client on a named pipe server instance."""
        core = self._checked_core()
        self.associate_handle(handle)
        token = self._next_token()
        rc = lib.ioc_submit_connect_pipe(core, handle, token, self._record_out)
        return self._track(rc, token, "connect_pipe", callback, handle, None)

    def wait_handle(self, handle: int, callback) -> Operation:
        """Windows: complete once a waitable handle (a process) is signalled."""
        core = self._checked_core()
        token = self._next_token()
        rc = lib.ioc_submit_wait_handle(core, handle, token, self._record_out)
        return self._track(rc, token, "wait_handle", callback, handle, None)

    def disconnect(self, sock, callback) -> Operation:
        """Windows: DisconnectEx(TF_REUSE_SOCKET).  After success the socket
        may serve AcceptEx or ConnectEx again, if its provider allows."""
        core, fd = self._prepare(sock)
        token = self._next_token()
        rc = lib.ioc_submit_disconnect(core, fd, token, self._record_out)
        return self._track(rc, token, "disconnect", callback, sock, None)

    @staticmethod
    def dissolve(sock) -> None:
        """Linux: connect(AF_UNSPEC) on a TCP socket whose connection is fully
        closed, so it can connect again; raises OSError otherwise."""
        rc = lib.ioc_socket_dissolve(_fileno(sock))
        if rc < 0:
            raise os_error(-rc)

    def adopt(self, old_sock, new_sock) -> None:
        """new_sock wraps the handle old_sock was detached from: it is already
        attached to this port (a handle can be attached only once)."""
        self._attached.adopt(old_sock, new_sock)

    def guard(self, op: Operation, sock) -> None:
        """op runs on sock, a socket its owner may close at any moment: if
        sock is closed before op reaches the kernel, op completes with EBADF
        instead of running on the next socket given that fd number (Linux;
        see _socket_guard.py)."""
        if op.__class__ is not Operation:
            _check_operation(op)
        guard = self._guard
        if guard is not None:
            guard.watch(op, sock)

    def cancel(self, op: Operation) -> bool:
        """Ask the kernel to cancel op.  Its callback still runs, later, with
        the cancellation or with the real result if the kernel finished
        first.  Returns False if op has already completed, or if the port
        is closed or was inherited through fork() (nothing of it runs in this
        process: cleanup code may call this freely)."""
        _check_operation(op)
        if op.done or self._ops.get(op.token) is not op or self._core is None or self._forked:
            return False
        rc = lib.ioc_cancel(self._core, ffi.cast("ioc_op *", op._record), op.token)
        if rc < 0:
            if rc == _CANCEL_BUSY:
                # No room to queue the cancellation now (it may be asked from
                # a future's done-callback, which must not raise): ask again
                # before the next wait, when completions have made room.
                if op not in self._cancel_later:
                    self._cancel_later.append(op)
                return True
            raise os_error(-rc)
        return rc == 0

    def _retry_cancels(self) -> None:
        """Before a wait (the compiled batch calls it while any wait)."""
        core = self._core
        ops = list(self._cancel_later)
        self._cancel_later.clear()   # the same list the compiled batch watches
        for op in ops:
            if op.done or self._ops.get(op.token) is not op:
                continue
            rc = lib.ioc_cancel(core, ffi.cast("ioc_op *", op._record), op.token)
            if rc == _CANCEL_BUSY:
                self._cancel_later.append(op)
            elif rc < 0:
                raise os_error(-rc)

    # -- waiting -------------------------------------------------------------

    def select(self, timeout: float | None) -> int:
        """Flush submissions and wait up to timeout seconds (None: no limit).
        Returns how many completions wait in the batch for `completed`.

        Completions the kernel has handed over are never dropped: if the last
        batch was not consumed to the end (a KeyboardInterrupt from a signal
        handler or a callback cut it short), its rest is returned first,
        without waiting.  The core writes the batch size into _batch_size
        itself, so an exception raised as ioc_wait returns loses nothing."""
        self._checked_core()
        return self._batch.wait(timeout)

    def run_completed(self, on_error, invoke=None) -> None:
        """Run the callback of every operation of the current batch, in kernel
        order, each operation marked done and its record dropped first, its
        cffi views after (the loop's I/O phase, in one pass without a
        generator).  A callback's exception goes to on_error(op, exc);
        SystemExit and KeyboardInterrupt propagate, and the rest of the batch
        then waits for the next `select`.  invoke(op), when given, runs each
        callback instead (debug mode times them)."""
        self._batch.run_completed(on_error, invoke)

    def poll(self, timeout: float | None = 0) -> int:
        """select + run each completed operation's callback (for tests and
        tools); a callback's exception propagates."""
        count = self.select(timeout)
        self.run_completed(_reraise)
        return count

    def flush(self) -> None:
        """Hand queued submissions (cancellations, say) to the kernel now;
        their completions still come through `select`."""
        rc = lib.ioc_flush(self._checked_core())
        if rc < 0:
            raise os_error(-rc)

    def wakeup(self) -> None:
        """Wake a thread blocked in select.  Safe from any thread, and after close."""
        self._batch.wakeup()

    def watch_sigint(self, enable: bool) -> None:
        """Windows: let SIGINT (console Ctrl+C, signal.raise_signal) end a wait,
        so Python's handler runs.  Linux needs nothing: signals interrupt it."""
        if self._core is not None:
            _platform.watch_sigint(self._core, enable)

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Cancel what is in flight, wait for the kernel to finish it, free the core."""
        core, self._core = self._core, None
        if core is None:
            return
        # Before the core is freed; wakeups from other threads check it
        # under the GIL, as this runs.
        self._batch.detach("the completion port is closed")
        _LIVE_PORTS.discard(self)
        if self._forked:
            lib.ioc_core_close(core, 0)   # only unmaps: the ring is the parent's
            self._ops.clear()
            self._detach_guard()
            return
        self._close_unread_accepts()
        # Linux: a ring another thread made takes no cancellation from here.
        elsewhere = lib.ioc_ring_thread(core) < 0
        left = lib.ioc_core_close(core, _DRAIN_MS)   # publishes: the guard still runs
        self._detach_guard()
        # The compiled batch holds these tables: emptied, never replaced.
        ops = dict(self._ops)
        self._ops.clear()
        strays = dict(self._strays)
        self._strays.clear()
        self._cancel_later.clear()
        if left:
            # Operations and strays the kernel may still write into.
            _ABANDONED.extend(ops.values())
            _ABANDONED.extend(strays.values())
            if elsewhere:
                why = ("were in flight when the event loop was closed from a thread other "
                       "than the one that created it, which alone can cancel them")
            else:
                why = f"did not finish within {_DRAIN_MS} ms of closing the event loop"
            warnings.warn(f"{left} kernel operations {why}; their buffers are kept alive "
                          "for good", ResourceWarning, stacklevel=2)
        for op in ops.values():
            op.done = True
            op.result = ERR_CANCELLED
            op._record = None
            if not left:
                op._cbuf = None

    def _detach_guard(self) -> None:
        if self._guard is not None:
            self._guard.detach()

    def _close_unread_accepts(self) -> None:
        """Accepted sockets in the rest of an unread batch (Linux: new fds)
        would be orphaned by close: close them."""
        for token, result, _flags in self._batch.unread:
            op = self._ops.pop(token, None)
            if isinstance(op, AcceptOperation):
                _platform.discard_unread_accept(result)

    def __del__(self):
        # An unclosed loop must not leave a port (and the kernel's view of
        # our buffers) behind: closing drains whatever is still in flight.
        if getattr(self, "_core", None) is not None:
            self.close()

    def _after_fork_in_child(self) -> None:
        self._forked = True
        self._batch.detach(_FORKED_MESSAGE)
        if self._core is not None:
            lib.ioc_core_forked(self._core)


def _mark_ports_forked() -> None:
    for port in list(_LIVE_PORTS):
        port._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_ports_forked)
