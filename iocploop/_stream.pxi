# The TCP transport's hot path in compiled code (included by _scheduler.pyx,
# so that there is one extension module).
#
# What runs per request of a server: the poll's wakeup (Linux reads on
# readiness), the read into bytes or into a BufferedProtocol's buffer, the
# protocol's callback, and the protocol's write(), which sends at once when
# the transport is idle.  In Python these steps cost more than the kernel's
# own work of a small request (perf: 15% of the server's time).  Everything
# else of TCPTransport (queued writes, flow control, closing, reuse, the
# Windows completion path) stays in _transports.py, which owns the state;
# these functions read and write its slots.
#
# ReadyReader is the transport's reader on Linux: its on_readable is the
# multishot poll's callback, called by the completion dispatch with no
# Python frame in between.  The transport holds it (reading state: read
# size, end of file, the peer's shutdown) and it holds the transport; the
# transport lets it go once connection_lost has run.

cdef extern from *:
    """
    #include <errno.h>
    #include <string.h>
    #ifdef _WIN32
    /* Windows reads on completions and queues its writes: never called. */
    static Py_ssize_t ioc_stream_recv(long long fd, char *buf, Py_ssize_t n)
    { (void)fd; (void)buf; (void)n; return -ENOSYS; }
    static Py_ssize_t ioc_stream_send(long long fd, const char *buf, Py_ssize_t n)
    { (void)fd; (void)buf; (void)n; return -ENOSYS; }
    static Py_ssize_t ioc_stream_sendv(long long fd, Py_buffer *views, int count)
    { (void)fd; (void)views; (void)count; return -ENOSYS; }
    #else
    #include <sys/socket.h>
    static Py_ssize_t ioc_stream_recv(long long fd, char *buf, Py_ssize_t n)
    {
        ssize_t r = recv((int)fd, buf, (size_t)n, 0);
        return r < 0 ? -(Py_ssize_t)errno : (Py_ssize_t)r;
    }
    /* MSG_NOSIGNAL: a closed peer is an EPIPE error, even in a process
       that restored SIGPIPE's default action. */
    static Py_ssize_t ioc_stream_send(long long fd, const char *buf, Py_ssize_t n)
    {
        ssize_t r = send((int)fd, buf, (size_t)n, MSG_NOSIGNAL);
        return r < 0 ? -(Py_ssize_t)errno : (Py_ssize_t)r;
    }
    #define IOC_STREAM_MAX_IOV 64
    /* One gathered send of count (<= IOC_STREAM_MAX_IOV) buffers. */
    static Py_ssize_t ioc_stream_sendv(long long fd, Py_buffer *views, int count)
    {
        struct iovec iov[IOC_STREAM_MAX_IOV];
        struct msghdr msg;
        int i;
        for (i = 0; i < count; i++) {
            iov[i].iov_base = views[i].buf;
            iov[i].iov_len = (size_t)views[i].len;
        }
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)count;
        ssize_t r = sendmsg((int)fd, &msg, MSG_NOSIGNAL);
        return r < 0 ? -(Py_ssize_t)errno : (Py_ssize_t)r;
    }
    #endif
    """
    Py_ssize_t ioc_stream_recv(long long fd, char *buf, Py_ssize_t n) nogil
    Py_ssize_t ioc_stream_send(long long fd, const char *buf, Py_ssize_t n) nogil
    Py_ssize_t ioc_stream_sendv(long long fd, Py_buffer *views, int count) nogil
    int EAGAIN
    int EWOULDBLOCK
    int EINTR
    char *strerror(int)

cdef extern from "Python.h":
    PyObject *_new_bytes "PyBytes_FromStringAndSize"(const char *, Py_ssize_t) except NULL
    char *PyBytes_AS_STRING(PyObject *)
    int _PyBytes_Resize(PyObject **, Py_ssize_t) except -1

from asyncio import constants as _constants
from collections import deque as _deque

cdef tuple _BYTES_LIKE = (bytes, bytearray, memoryview)
cdef object _LOG_THRESHOLD_FOR_CONNLOST_WRITES = _constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES


cdef object _os_error(Py_ssize_t err):
    """OSError for an errno: the subclass Python would raise (ConnectionResetError...)."""
    return OSError(err, strerror(<int>err).decode("utf-8", "replace"))


cdef Py_ssize_t _recv(long long fd, char *buf, Py_ssize_t n) except? -1000000:
    """recv, retried after EINTR once the signal handlers ran (as Python's
    socket does): the count, or a negated errno."""
    cdef Py_ssize_t r
    while True:
        r = ioc_stream_recv(fd, buf, n)
        if r != -EINTR:
            return r
        PyErr_CheckSignals()


cdef Py_ssize_t _send(long long fd, const char *buf, Py_ssize_t n) except? -1000000:
    cdef Py_ssize_t r
    while True:
        r = ioc_stream_send(fd, buf, n)
        if r != -EINTR:
            return r
        PyErr_CheckSignals()


cdef enum:
    _MAX_IOV = 64   # buffers per gathered send (IOC_STREAM_MAX_IOV)


cdef Py_ssize_t _sendv(long long fd, chunks, Py_ssize_t count) except? -1000000:
    """One gathered send of the first count (<= _MAX_IOV) chunks: the count
    sent, or a negated errno."""
    cdef Py_buffer views[_MAX_IOV]
    cdef Py_ssize_t held = 0, r
    try:
        for chunk in chunks:
            if held == count:
                break
            PyObject_GetBuffer(chunk, &views[held], PyBUF_SIMPLE)
            held += 1
        while True:
            r = ioc_stream_sendv(fd, views, <int>held)
            if r != -EINTR:
                return r
            PyErr_CheckSignals()
    finally:
        while held:
            held -= 1
            PyBuffer_Release(&views[held])


@cython.final
@cython.auto_pickle(False)
cdef class ReadyReader:
    """A TCP transport's reads on readiness (Linux)."""
    cdef object transport
    cdef object context
    cdef object loop
    cdef public Py_ssize_t read_size    # grows while reads fill it
    cdef Py_ssize_t read_size_max
    cdef public bint read_eof           # end of file seen: poll no more
    cdef public bint peer_done          # the peer shut down: read to the end
    cdef long long peer_done_bits

    def __cinit__(self, transport, context, loop, Py_ssize_t read_size,
                  Py_ssize_t read_size_max, long long peer_done_bits):
        self.transport = transport
        self.context = context
        self.loop = loop
        self.read_size = read_size
        self.read_size_max = read_size_max
        self.peer_done_bits = peer_done_bits

    def __repr__(self):
        return f"<ReadyReader of {self.transport!r}>"

    def on_readable(self, OperationBase op):
        """The multishot poll's callback, in the transport's context: data
        came in (op.done False), or the poll ended (TCPTransport._on_poll_ended)."""
        t = self.transport
        PyContext_Enter(self.context)
        try:
            if op.done:
                t._on_poll_ended(op)
            elif not (t._closing or t._paused):
                if <long long>op.result & self.peer_done_bits:
                    # The end of file, or an error, wakes up once: read on
                    # to it even after a short read.
                    self.peer_done = True
                self._read_ready(t)
        finally:
            PyContext_Exit(self.context)

    def poll_ended(self, long long result):
        """The poll's last wakeup (TCPTransport._on_poll_ended): read like
        any other wakeup."""
        if result & self.peer_done_bits:
            self.peer_done = True
        self._read_ready(self.transport)

    def read_ready(self):
        """Read what waits on the socket into the protocol (as asyncio's
        selector transport does on readiness)."""
        self._read_ready(self.transport)

    cdef int _read_ready(self, t) except -1:
        if self.read_eof:
            return 0   # a wakeup, or a read scheduled, from before the end of file
        if t._buffered:
            return self._read_into_buffer(t)
        cdef Py_ssize_t size = self.read_size
        cdef Py_ssize_t n
        cdef PyObject *raw
        try:
            fd = t._sock.fileno()
            raw = _new_bytes(NULL, size)
            try:
                n = _recv(fd, PyBytes_AS_STRING(raw), size)
                if n > 0 and n < size:
                    _PyBytes_Resize(&raw, n)   # frees raw on failure
            except BaseException:
                Py_XDECREF(raw)
                raise
            data = <object>raw
            Py_DECREF(<object>raw)   # data holds it now
            if n < 0:
                if n == -EAGAIN or n == -EWOULDBLOCK:
                    return 0   # a wakeup whose data an earlier read took
                raise _os_error(-n)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            t._fatal_error(exc, "Fatal read error on socket transport")
            return 0
        if n == 0:
            t._read_at_eof()
            return 0
        if n == size:
            if size < self.read_size_max:
                self.read_size = 2 * size
            self.loop.call_soon(t._read_more)
        elif self.peer_done:
            self.loop.call_soon(t._read_more)
        try:
            t._protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            t._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
        return 0

    cdef int _read_into_buffer(self, t) except -1:
        cdef Py_buffer view
        cdef Py_ssize_t n, room
        protocol = t._protocol
        try:
            buf = protocol.get_buffer(-1)
            if not len(buf):
                raise RuntimeError("get_buffer() returned an empty buffer")
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            t._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
            return 0
        try:
            fd = t._sock.fileno()
            PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
            try:
                room = view.len
                n = _recv(fd, <char *>view.buf, room)
            finally:
                PyBuffer_Release(&view)
            if n < 0:
                if n == -EAGAIN or n == -EWOULDBLOCK:
                    return 0
                raise _os_error(-n)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            t._fatal_error(exc, "Fatal read error on socket transport")
            return 0
        if n == 0:
            t._read_at_eof()
            return 0
        if n == room or self.peer_done:
            self.loop.call_soon(t._read_more)
        try:
            protocol.buffer_updated(n)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            t._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
        return 0


def stream_write(self, data):
    """TCPTransport.write: checks as asyncio's, then (Linux) an idle
    transport's first write of an iteration is sent at once and later ones
    are held for one send at the iteration's end (hold_write); Windows
    queues for a posted send (_write_queued)."""
    cdef Py_buffer view
    cdef Py_ssize_t n, size
    if not isinstance(data, _BYTES_LIKE):
        raise TypeError(f"data argument must be a bytes-like object, "
                        f"not {type(data).__name__!r}")
    if self._eof_written or self._want_eof:
        raise RuntimeError("Cannot call write() after write_eof()")
    if self._empty_waiter is not None:
        raise RuntimeError("unable to write; sendfile is in progress")
    if not data:
        return
    if self._conn_lost:
        if self._conn_lost >= _LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            _logger.warning("socket.send() raised exception.")
        self._conn_lost += 1
        return
    if not self._send_at_once:
        self._write_queued(data)
        return
    cdef Scheduler loop = <Scheduler?>self._loop
    if self._send_op is not None or self._queue:
        # Behind writes still waiting: queued (a snapshot of a mutable buffer).
        hold_write(self, data if isinstance(data, bytes) else bytes(data))
        return
    if isinstance(data, bytes) and self._write_iteration == loop._iteration:
        # A second write in one iteration (a streams handler's lines, a
        # response's parts): held, and all leave in one send at its end.
        hold_write(self, data)
        return
    # The first write of an iteration (or a buffer the caller may reuse,
    # which holding would copy) is sent now, as asyncio's and uvloop's are.
    self._write_iteration = loop._iteration
    try:
        fd = self._sock.fileno()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            size = view.len
            n = _send(fd, <const char *>view.buf, size)
        finally:
            PyBuffer_Release(&view)
        if n < 0:
            if n == -EAGAIN or n == -EWOULDBLOCK:
                n = 0
            else:
                raise _os_error(-n)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        self._conn_lost += 1
        self._fatal_error(exc, "Fatal write error on socket transport")
        return
    if n == size:
        return
    if n:
        data = memoryview(data).cast("B")[n:]
    self._write_queued(data)   # the rest waits for room: a send operation


def hold_write(t, bytes chunk):
    """Queue chunk on TCP transport t (Linux).  An idle transport's queue is
    sent when the iteration ends (flush_writes), as uvloop's writes are; one
    with a send in flight sends it when that completes (_on_sent).  Past the
    high-water mark it is sent at once, then the protocol may be paused."""
    q = t._queue
    if q is None:
        q = t._queue = _deque()
    q.append(chunk)
    t._queued_size += len(chunk)
    if not t._flush_due and t._send_op is None and not t._room_wait:
        t._flush_due = True
        (<Scheduler?>t._loop).unflushed.append(t)
    if t._queued_size + t._in_flight_size > t._high_water:
        if t._flush_due:
            _flush_stream(t)
        t._maybe_pause_protocol()


cdef int flush_writes(Scheduler loop) except -1:
    """Send the writes the loop's transports held during the iteration.  A
    protocol called meanwhile (resume_writing) may write again: loop until
    nothing is held, so that the next wait never sleeps on held bytes."""
    while loop.unflushed:
        pending = loop.unflushed
        loop.unflushed = []
        for t in pending:
            if t._flush_due:
                _flush_stream(t)
    return 0


cdef int _flush_stream(t) except -1:
    """Send transport t's queue in one send (a gathered one for several
    chunks); what the socket has no room for goes to a send operation,
    which completes when it is sent (_send_queued)."""
    cdef Py_ssize_t n, count
    t._flush_due = False
    q = t._queue
    if not q or t._send_op is not None or t._room_wait or t._sock_closed:
        return 0
    try:
        fd = t._sock.fileno()
        count = len(q)
        if count == 1:
            n = _sendv(fd, q, 1)
        else:
            n = _sendv(fd, q, count if count < _MAX_IOV else _MAX_IOV)
        if n < 0:
            if n == -EAGAIN or n == -EWOULDBLOCK:
                n = 0
            else:
                raise _os_error(-n)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        t._conn_lost += 1
        t._fatal_error(exc, "Fatal write error on socket transport")
        return 0
    t._queued_size -= n
    while n:
        head = q[0]
        size = len(head)
        if n < size:
            q[0] = memoryview(head)[n:]
            break
        q.popleft()
        n -= size
    if q:
        t._send_queued()
        t._maybe_pause_protocol()
    elif t._closing or t._want_eof or t._empty_waiter is not None or t._protocol_paused:
        t._writes_drained()
    return 0
