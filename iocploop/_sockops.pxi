# The sock_* methods' hot path in compiled code (included by _scheduler.pyx).
#
# sock_recv, sock_recv_into and sock_sendall are compiled coroutines: a call
# submits a compiled operation (SocketReceive / SocketSend, no Python
# Operation) straight to the core, and the operation's completion sets the
# caller's future from C.  SocketEngine keeps, per loop, what the sock_*
# methods share: the receive and accept operations in flight on each socket
# and the stash of what a cancelled one delivered (see _sockets.py for the
# rules; its Python methods, recvfrom and accept among them, use the same
# engine).
#
# Cancellation, in short: a caller that stops waiting orphans its operation
# (the kernel is asked to cancel it); what the operation still delivers goes
# to the socket's stash, and the next call on that socket waits until no
# orphan is left, then takes from the stash first.  A caller cancelled after
# its result arrived but before it resumed gives the result back to the
# stash.  So no byte and no connection is lost.

from cpython.ref cimport Py_REFCNT

from asyncio import exceptions as _asyncio_exceptions
import weakref as _weakref

try:
    from ssl import SSLSocket as _ssl_socket_type
except ImportError:   # Python built without ssl: no socket can be one
    _ssl_socket_type = None
cdef object _weak_ref = _weakref.ref
cdef object _BlockingIOError = BlockingIOError
cdef object _InterruptedError = InterruptedError

# One receive asks the kernel for at most this much (the port's MAX_TRANSFER).
cdef Py_ssize_t _MAX_TRANSFER = 0x7FFFF000
# sock_recv_into receives into memory of its own, copied out on success (after
# a cancellation the kernel must not write into the caller's buffer): at most
# this much per call, as recv may return less than asked anyway.
cdef Py_ssize_t _RECV_INTO_LIMIT = 256 * 1024


@cython.auto_pickle(False)
cdef class GuardQueue:
    """The compiled half of _socket_guard.SocketGuard (Linux): the operations
    watched since the ring was last published, and the flag the core reads
    to know a publish must ask the guard first.  watch() runs once per
    sock_* submission, so it is compiled; the rest (before_publish, detach)
    runs once per publish and stays Python, in the subclass."""
    cdef public list _queued         # (operation, socket) since the last publish
    cdef int *armed_flag             # the core's int, owned by the subclass

    def __cinit__(self, *args, **kwargs):
        self._queued = []

    def _use_flag(self, uintptr_t address):
        """address: the int (cffi memory the subclass keeps) set on a watch."""
        self.armed_flag = <int *>address

    cpdef watch(self, op, sock):
        """op runs on sock: check sock before the ring is published."""
        if not self._queued and self.armed_flag != NULL:
            self.armed_flag[0] = 1
        self._queued.append((op, sock))


@cython.final
@cython.auto_pickle(False)
cdef class SocketEngine:
    """What a loop's sock_* methods share: operations in flight per socket,
    orphans and the waits for them, the stash."""
    cdef object loop
    cdef object port
    cdef CompletionBatch batch
    cdef GuardQueue guard        # Linux: the port's SocketGuard (_socket_guard.py)
    cdef object associate        # Windows: port.associate
    cdef object os_error
    cdef readonly object stashes   # WeakKeyDictionary: socket -> _Stash
    cdef dict stash_table          # stashes.data, read here without a Python call
    cdef object new_stash
    cdef dict in_flight          # socket -> its newest receive/accept in flight
    cdef dict settle_waiters     # socket -> [future]: waiting until no orphan is left

    def __init__(self, loop, port, new_stash, bint windows):
        self.loop = loop
        self.port = port
        self.batch = <CompletionBatch?>port._batch
        self.guard = <GuardQueue?>port._guard if port._guard is not None else None
        self.associate = port.associate if windows else None
        self.os_error = self.batch.os_error
        self.stashes = _weakref.WeakKeyDictionary()
        self.stash_table = self.stashes.data
        self.new_stash = new_stash
        self.in_flight = {}
        self.settle_waiters = {}

    @property
    def in_flight_count(self):
        """Receive/accept operations in flight on all sockets (for tests)."""
        cdef Py_ssize_t n = 0
        cdef OperationBase op
        for head in self.in_flight.values():
            op = head
            while op is not None:
                n += 1
                op = op.next_on_socket
        return n

    # -- the checks every call makes -------------------------------------------

    cdef intptr_t checked_fd(self, sock) except? -1:
        """sock's descriptor, after asyncio's checks (an SSL socket, debug
        mode's blocking socket) and EBADF for a closed socket."""
        # asyncio's _check_ssl_socket, inline: a Python call less per call.
        if _ssl_socket_type is not None and isinstance(sock, _ssl_socket_type):
            raise TypeError("Socket cannot be of type SSLSocket")
        if (<Scheduler>self.loop)._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        fd = sock.fileno()
        if fd < 0:
            raise OSError(9, "Bad file descriptor")   # EBADF, as sock.recv would
        if self.associate is not None:
            self.associate(sock)
        return fd

    # -- the stash ---------------------------------------------------------------

    cpdef stash_of(self, sock):
        """sock's stash, or None."""
        if not self.stash_table:
            return None
        return self.stash_table.get(_weak_ref(sock))

    cpdef stash_for(self, sock):
        """sock's stash, made if it has none."""
        stash = self.stash_of(sock)
        if stash is None:
            stash = self.stashes[sock] = self.new_stash()
        return stash

    cdef object take_stashed_data(self, sock, Py_ssize_t n):
        stash = self.stash_of(sock)
        if stash is None or not stash.data:
            return None
        chunk = bytes(stash.data[:n])
        del stash.data[:n]
        return chunk

    # -- operations in flight per socket -----------------------------------------

    cpdef watch(self, sock, OperationBase op, waiter):
        """op, a receive or accept on sock, is in flight; its caller awaits waiter."""
        op.waiter = waiter
        head = self.in_flight.get(sock)
        op.next_on_socket = <OperationBase?>head if head is not None else None
        self.in_flight[sock] = op

    cpdef settled(self, sock, OperationBase op):
        """op, watched on sock, completed (its completion calls this first)."""
        cdef OperationBase prev
        head = self.in_flight.get(sock)
        if head is op:
            if op.next_on_socket is None:
                del self.in_flight[sock]
            else:
                self.in_flight[sock] = op.next_on_socket
        elif head is not None:
            prev = <OperationBase>head
            while prev.next_on_socket is not None and prev.next_on_socket is not op:
                prev = prev.next_on_socket
            if prev.next_on_socket is op:
                prev.next_on_socket = op.next_on_socket
        op.next_on_socket = None
        if op.orphaned and not self.has_orphans(sock):
            waiters = self.settle_waiters.pop(sock, None)
            if waiters:
                for w in waiters:
                    if not w.done():
                        w.set_result(None)

    cdef bint has_orphans(self, sock):
        cdef OperationBase op = self.in_flight.get(sock)
        while op is not None:
            if op.orphaned:
                return True
            op = op.next_on_socket
        return False

    cpdef orphan(self, sock, OperationBase op):
        """op's caller stopped waiting: cancel op; what it still delivers
        goes to sock's stash, and later calls on sock wait for it."""
        if op.done or op.orphaned:
            return
        op.orphaned = True
        self.port.cancel(op)

    cpdef unsettled(self, sock):
        """Whether a cancelled receive/accept of sock is still in the kernel
        (a future cancelled a moment ago, whose caller has not resumed yet,
        is orphaned here first)."""
        cdef OperationBase op = self.in_flight.get(sock)
        cdef bint found = False
        while op is not None:
            if not op.orphaned and op.waiter is not None and op.waiter.cancelled():
                self.orphan(sock, op)
            if op.orphaned:
                found = True
            op = op.next_on_socket
        return found

    async def settle(self, sock):
        """Wait until no cancelled receive/accept of sock is in the kernel:
        what it delivers reaches the stash before the caller looks there."""
        while self.unsettled(sock):
            waiter = self.loop.create_future()
            self.settle_waiters.setdefault(sock, []).append(waiter)
            await waiter

    cdef bint busy(self, sock):
        """Anything in flight or stashed for sock (else a call goes straight
        to the kernel)."""
        return sock in self.in_flight or (
            self.stash_table and self.stash_table.get(_weak_ref(sock)) is not None)

    # -- compiled operations -----------------------------------------------------

    cdef SocketReceive receive(self, sock, intptr_t fd, Py_ssize_t n):
        """A receive of up to n bytes on sock, watched, into bytes of its own."""
        cdef SocketReceive op = SocketReceive.__new__(SocketReceive)
        cdef PyObject *raw = _new_bytes(NULL, n)
        op.buffer = <object>raw
        Py_DECREF(<object>raw)
        op.kind = "recv"
        op.engine = self
        op.sock = sock
        self.batch.submit_buffer(op, False, fd, PyBytes_AS_STRING(raw), <uint32_t>n, 0)
        if self.guard is not None:
            self.guard.watch(op, sock)
        self.watch(sock, op, self.loop.create_future())
        return op

    cdef SocketSend send(self, sock, intptr_t fd, _Lent data, Py_ssize_t offset):
        """A send of data[offset:] (at most _MAX_TRANSFER bytes of it)."""
        cdef SocketSend op = SocketSend.__new__(SocketSend)
        cdef Py_ssize_t n = data._view.len - offset
        if n > _MAX_TRANSFER:
            n = _MAX_TRANSFER
        op.buffer = data
        op.kind = "send"
        op.engine = self
        op.waiter = self.loop.create_future()
        self.batch.submit_buffer(op, True, fd, <char *>data._view.buf + offset, <uint32_t>n, 0)
        if self.guard is not None:
            self.guard.watch(op, sock)
        return op

    cdef int give_back_data(self, sock, data) except -1:
        stash = self.stash_for(sock)
        stash.data[0:0] = data
        return 0


cdef class _SocketOperation(CompiledOperation):
    cdef SocketEngine engine


@cython.final
@cython.auto_pickle(False)
cdef class SocketReceive(_SocketOperation):
    """sock_recv's operation: the bytes received become its future's result."""
    cdef object sock

    def __cinit__(self):
        self.callback = run_completion

    cdef int complete(self) except -1:
        cdef PyObject *raw
        cdef Py_ssize_t n = self.result
        engine, sock, fut = self.engine, self.sock, self.waiter
        self.engine = None
        self.sock = None
        self.waiter = None
        engine.settled(sock, self)
        data = self.buffer
        self.buffer = None
        if n < 0:
            if not fut.done():
                fut.set_exception(engine.os_error(-n))
            return 0
        if n < len(data) and Py_REFCNT(data) > 1:
            data = data[:n]      # (not expected: nothing else holds it)
        elif n < len(data):
            raw = <PyObject *>data
            Py_INCREF(data)
            data = None          # raw is the only reference now: it may be resized
            _PyBytes_Resize(&raw, n)   # frees raw on failure
            data = <object>raw
            Py_DECREF(data)
        if fut.done():
            # Cancelled, but the data arrived first: kept for the next call.
            engine.stash_for(sock).data += data
        else:
            fut.set_result(data)
        return 0


@cython.final
@cython.auto_pickle(False)
cdef class BytesRead(CompiledOperation):
    """A pipe read straight into a new bytes object (CompletionBatch.read_new_bytes):
    when its callback runs, its buffer is the bytes read (b"" at end of
    file), or None after an error."""

    cdef int complete(self) except -1:
        cdef Py_ssize_t n = self.result
        cdef PyObject *raw
        data = self.buffer
        self.buffer = None
        if n < 0:
            data = None
        elif n < len(data):
            if Py_REFCNT(data) > 1:
                data = data[:n]      # (not expected: nothing else holds it)
            else:
                raw = <PyObject *>data
                Py_INCREF(data)
                data = None          # raw is the only reference now: it may be resized
                _PyBytes_Resize(&raw, n)   # frees raw on failure
                data = <object>raw
                Py_DECREF(data)
        self.buffer = data
        data = None
        self.callback(self)
        return 0


@cython.final
@cython.auto_pickle(False)
cdef class SocketSend(_SocketOperation):
    """sock_sendall's operation for what the socket buffer did not take at once."""

    def __cinit__(self):
        self.callback = run_completion

    cdef int complete(self) except -1:
        engine, fut = self.engine, self.waiter
        self.engine = None
        self.waiter = None
        self.buffer = None
        if fut.done():
            return 0
        if self.result < 0:
            fut.set_exception(engine.os_error(-self.result))
        else:
            fut.set_result(self.result)
        return 0


# -- the methods (Loop.sock_recv = sock_recv, ...) -----------------------------------


cdef inline SocketEngine _engine(loop):
    return (<Scheduler>loop).sockets


async def sock_recv(self, sock, n):
    """Receive up to n bytes from sock (asyncio.loop.sock_recv)."""
    cdef SocketEngine engine = _engine(self)
    cdef intptr_t fd = engine.checked_fd(sock)
    cdef Py_ssize_t size = n
    if size < 0:
        raise ValueError("negative buffersize in recv")
    if engine.busy(sock):
        if engine.unsettled(sock):
            await engine.settle(sock)
            fd = engine.checked_fd(sock)
        stashed = engine.take_stashed_data(sock, size)
        if stashed is not None:
            return stashed
    if size == 0:
        return b""
    if size > _MAX_TRANSFER:
        size = _MAX_TRANSFER
    op = engine.receive(sock, fd, size)
    fut = op.waiter
    try:
        return await fut
    except BaseException:
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            engine.give_back_data(sock, fut.result())
        elif not op.done:
            engine.orphan(sock, op)
        raise


async def sock_recv_into(self, sock, buf):
    """Receive into buf; returns the number of bytes written."""
    cdef SocketEngine engine = _engine(self)
    cdef intptr_t fd = engine.checked_fd(sock)
    view = memoryview(buf).cast("B")
    if view.readonly:
        raise TypeError("sock_recv_into() needs a writable buffer, not "
                        f"{type(buf).__name__}")
    cdef Py_ssize_t size = len(view)
    if engine.busy(sock):
        if engine.unsettled(sock):
            await engine.settle(sock)
            fd = engine.checked_fd(sock)
        stashed = engine.take_stashed_data(sock, size)
        if stashed is not None:
            view[:len(stashed)] = stashed
            return len(stashed)
    if size == 0:
        return 0
    op = engine.receive(sock, fd, min(size, _RECV_INTO_LIMIT))
    fut = op.waiter
    try:
        data = await fut
    except BaseException:
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            engine.give_back_data(sock, fut.result())
        elif not op.done:
            engine.orphan(sock, op)
        raise
    view[:len(data)] = data
    return len(data)


async def sock_sendall(self, sock, data):
    """Send all of data (asyncio.loop.sock_sendall)."""
    cdef SocketEngine engine = _engine(self)
    cdef intptr_t fd = engine.checked_fd(sock)
    cdef Py_ssize_t size, sent = 0
    cdef _Lent lent
    cdef SocketSend op
    if type(data) is not bytes and type(data) is not bytearray:
        data = memoryview(data).cast("B")   # asyncio's errors for what is no buffer
    lent = _Lent(data, False)
    size = lent._view.len
    if not size:
        return None
    # Send at once what the socket buffer takes, as asyncio does: the bytes
    # leave before sock_sendall's first await (a queued io_uring send would
    # reach the kernel only at the next wait, after code that closes the
    # socket meanwhile), and a send that fits needs no completion at all, so
    # the caller resumes in the same turn on both systems (uvloop's
    # test_sock_send_before_cancel cancels a receive in that turn).
    if engine.associate is None:
        sent = _send(fd, <const char *>lent._view.buf, size)
        if sent < 0:
            if sent != -EAGAIN and sent != -EWOULDBLOCK:
                raise _os_error(-sent)
            sent = 0
    else:
        try:
            sent = sock.send(data)
        except (_BlockingIOError, _InterruptedError):
            sent = 0
    while sent < size:
        op = engine.send(sock, fd, lent, sent)
        fut = op.waiter
        try:
            sent += await fut
        except _BlockingIOError:
            if engine.associate is not None:
                raise
            # io_uring ends a send with EAGAIN, instead of waiting for room,
            # when the peer has shut down its writing side (and its polls
            # report that shutdown whatever is asked): wait for room through
            # the loop's epoll set, as add_writer does.
            await self._room_in(sock)
        except BaseException:
            if not op.done:
                engine.port.cancel(op)
            raise
        finally:
            fut = None   # no cycle through a traceback
    return None
