# The TCP transport's hot path in compiled code (included by _scheduler.pyx,
# so that there is one extension module).
#
# What runs per request of a server: the poll's wakeup (Linux reads on
# readiness), the read into bytes or into a BufferedProtocol's buffer, the
# protocol's callback, and the protocol's write(), which sends at once when
# the transport is idle.  In Python these steps cost more than the kernel's
# own work of a small request (perf: 15% of the server's time).  Everything
# else of TCPTransport (queued writes, flow control, closing, reuse, the
# Windows completion path) stays in _transports/tcp.py, which owns the state;
# these functions read and write its slots.
#
# ReadyReader is the transport's reader on Linux: it posts the multishot
# poll (a StreamPoll, a compiled operation) whose completions the dispatch
# hands straight to its on_poll, with no Python frame in between.  The
# transport holds it (reading state: read size, end of file, the peer's
# shutdown) and it holds the transport; the transport lets it go once
# connection_lost has run.

cdef extern from *:
    """
    #include <errno.h>
    #include <string.h>
    #ifdef _WIN32
    #define IOC_STREAM_SEND_AT_ONCE 0
    /* Windows reads on completions and queues its writes: never called. */
    static Py_ssize_t ioc_stream_recv(long long fd, char *buf, Py_ssize_t n)
    { (void)fd; (void)buf; (void)n; return -ENOSYS; }
    static Py_ssize_t ioc_stream_send(long long fd, const char *buf, Py_ssize_t n)
    { (void)fd; (void)buf; (void)n; return -ENOSYS; }
    static Py_ssize_t ioc_stream_sendv(long long fd, Py_buffer *views, int count)
    { (void)fd; (void)views; (void)count; return -ENOSYS; }
    #else
    #define IOC_STREAM_SEND_AT_ONCE 1
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
    /* The descriptor of a socket.socket, as its fileno() returns it (-1
       once closed) but with no method call: CPython's socket object keeps
       it right after the object header (Modules/socketmodule.h,
       PySocketSockObject.sock_fd, int on POSIX).  Windows (a SOCKET there)
       and other objects: -2, and the caller asks fileno(). */
    typedef struct { PyObject_HEAD int sock_fd; } ioc_socket_head;
    static PyTypeObject *ioc_socket_type;
    static long long ioc_socket_fd(PyObject *sock)
    {
    #ifdef _WIN32
        (void)sock;
        return -2;
    #else
        if (ioc_socket_type == NULL || !PyObject_TypeCheck(sock, ioc_socket_type))
            return -2;
        return ((ioc_socket_head *)sock)->sock_fd;
    #endif
    }
    """
    PyTypeObject *ioc_socket_type
    long long ioc_socket_fd(object sock)
    Py_ssize_t ioc_stream_recv(long long fd, char *buf, Py_ssize_t n) nogil
    Py_ssize_t ioc_stream_send(long long fd, const char *buf, Py_ssize_t n) nogil
    Py_ssize_t ioc_stream_sendv(long long fd, Py_buffer *views, int count) nogil
    bint IOC_STREAM_SEND_AT_ONCE   # Linux sends at once; Windows posts its sends
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


cdef struct _TcpSlots:
    # Offsets of the TCPTransport slots the hot paths use (_slots.pxi).
    Py_ssize_t sock, protocol, loop, buffered, closing, paused, conn_lost
    Py_ssize_t eof_written, want_eof, empty_waiter, send_op, queue, queued_size
    Py_ssize_t in_flight_size, flush_due, write_iteration, room_wait, sock_closed
    Py_ssize_t high_water

cdef _TcpSlots _tcp
cdef type _tcp_class = None


def bind_tcp_transport(type cls):
    """Find TCPTransport's slots for the compiled paths (_transports/tcp.py, once)."""
    global _tcp, _tcp_class
    cdef _TcpSlots found   # all found before any is used
    found.sock = _slot_offset(cls, "_sock")
    found.protocol = _slot_offset(cls, "_protocol")
    found.loop = _slot_offset(cls, "_loop")
    found.buffered = _slot_offset(cls, "_buffered")
    found.closing = _slot_offset(cls, "_closing")
    found.paused = _slot_offset(cls, "_paused")
    found.conn_lost = _slot_offset(cls, "_conn_lost")
    found.eof_written = _slot_offset(cls, "_eof_written")
    found.want_eof = _slot_offset(cls, "_want_eof")
    found.empty_waiter = _slot_offset(cls, "_empty_waiter")
    found.send_op = _slot_offset(cls, "_send_op")
    found.queue = _slot_offset(cls, "_queue")
    found.queued_size = _slot_offset(cls, "_queued_size")
    found.in_flight_size = _slot_offset(cls, "_in_flight_size")
    found.flush_due = _slot_offset(cls, "_flush_due")
    found.write_iteration = _slot_offset(cls, "_write_iteration")
    found.room_wait = _slot_offset(cls, "_room_wait")
    found.sock_closed = _slot_offset(cls, "_sock_closed")
    found.high_water = _slot_offset(cls, "_high_water")
    _tcp = found
    _tcp_class = cls


from cpython.bytes cimport PyBytes_FromStringAndSize
from _socket import socket as _socket_class
ioc_socket_type = <PyTypeObject *>_socket_class


cdef inline long long _fileno(sock) except? -3:
    """sock.fileno(), read straight from a socket.socket."""
    cdef long long fd = ioc_socket_fd(sock)
    return fd if fd != -2 else sock.fileno()


cdef inline int _check_tcp(t) except -1:
    if _tcp_class is None or not isinstance(t, _tcp_class):
        raise TypeError(f"expected a TCPTransport, got {type(t).__name__!r}")
    return 0


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


cdef class ReadyReader


@cython.final
@cython.auto_pickle(False)
cdef class StreamPoll(CompiledOperation):
    """The multishot readiness poll of a TCP transport (Linux)."""
    cdef ReadyReader reader

    cdef int complete(self) except -1:
        reader = self.reader
        if self.done:
            self.reader = None   # its last completion
        reader.on_poll(self)
        return 0


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
    cdef CompletionBatch batch          # the loop's, which delivers the poll
    cdef unsigned long long read_in     # batch.taken at the last read

    def __cinit__(self, transport, context, loop, Py_ssize_t read_size,
                  Py_ssize_t read_size_max, long long peer_done_bits):
        _check_tcp(transport)
        self.transport = transport
        self.context = context
        self.loop = loop
        self.read_size = read_size
        self.read_size_max = read_size_max
        self.peer_done_bits = peer_done_bits
        self.batch = (<Scheduler?>loop).batch

    def __repr__(self):
        return f"<ReadyReader of {self.transport!r}>"

    def watch(self, long long fd, uint32_t events):
        """Post the multishot poll of the transport's socket for events: a
        StreamPoll, completed from the dispatch straight into on_poll."""
        cdef StreamPoll op = StreamPoll.__new__(StreamPoll)
        op.kind = "poll_multishot"
        op.callback = run_completion   # (debug mode's timed dispatch calls it)
        op.reader = self
        (<Scheduler?>self.loop).batch.submit_poll_multishot(op, fd, events)
        return op

    cdef int on_poll(self, StreamPoll op) except -1:
        """The poll's completion, in the transport's context: data came in
        (op.done False), or the poll ended (TCPTransport._on_poll_ended)."""
        t = self.transport
        PyContext_Enter(self.context)
        try:
            if op.done:
                t._on_poll_ended(op)
            elif slot(t, _tcp.paused) and not slot(t, _tcp.closing):
                t._poll_woke_while_paused()   # pause_reading left it posted
            elif not slot(t, _tcp.closing):
                if <long long>op.result & self.peer_done_bits:
                    # The end of file, or an error, wakes up once: read on
                    # to it even after a short read.
                    self.peer_done = True
                elif self.read_in == self.batch.taken:
                    # Read since this batch was taken, so after this wakeup
                    # was posted: that read emptied the socket, or filled
                    # its buffer and _read_more follows.  One read per batch
                    # as a level-triggered poll gives (asyncio's).
                    return 0
                self._read_ready(t)
        finally:
            PyContext_Exit(self.context)
        return 0

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
        self.read_in = self.batch.taken
        if slot(t, _tcp.buffered):
            return self._read_into_buffer(t)
        cdef Py_ssize_t size = self.read_size
        cdef Py_ssize_t n
        cdef long long fd
        cdef PyObject *raw
        cdef char *scratch
        try:
            fd = _fileno(slot(t, _tcp.sock))
            if size <= READ_SCRATCH_SIZE:
                # Reads that never fill 16 KiB (requests, answers): into
                # the loop's scratch, then bytes of the size read, rather
                # than a 16 KiB allocation cut down after each read.
                scratch = (<Scheduler>self.loop).read_scratch
                n = _recv(fd, scratch, size)
                data = PyBytes_FromStringAndSize(scratch, n) if n > 0 else None
            else:
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
        if n == size and size < self.read_size_max:
            self.read_size = 2 * size
        try:
            slot(t, _tcp.protocol).data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            t._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
        if n == size or self.peer_done:
            # More may wait, which no wakeup announces.  Read it after what
            # the protocol scheduled (a reader's task consumes first, as
            # under asyncio's one read per poll).
            self.loop.call_soon(t._read_more, context=self.context)
        return 0

    cdef int _read_into_buffer(self, t) except -1:
        cdef Py_buffer view
        cdef Py_ssize_t n, room
        cdef long long fd
        protocol = slot(t, _tcp.protocol)
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
            fd = _fileno(slot(t, _tcp.sock))
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
        try:
            protocol.buffer_updated(n)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            t._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
        if n == room or self.peer_done:
            self.loop.call_soon(t._read_more, context=self.context)   # as in _read_ready
        return 0


def stream_is_closing(self):
    """TCPTransport.is_closing, compiled: a server asks it before each answer."""
    _check_tcp(self)
    return slot(self, _tcp.closing)


def stream_write(self, data):
    """TCPTransport.write: checks as asyncio's, then (Linux) an idle
    transport's first write of an iteration is sent at once and later ones
    are held for one send at the iteration's end (hold_write); Windows
    queues for a posted send (_write_queued)."""
    cdef Py_buffer view
    cdef Py_ssize_t n, size
    cdef long long fd
    _check_tcp(self)
    if not isinstance(data, _BYTES_LIKE):
        raise TypeError(f"data argument must be a bytes-like object, "
                        f"not {type(data).__name__!r}")
    if slot(self, _tcp.eof_written) or slot(self, _tcp.want_eof):
        raise RuntimeError("Cannot call write() after write_eof()")
    if slot(self, _tcp.empty_waiter) is not None:
        raise RuntimeError("unable to write; sendfile is in progress")
    if not data:
        return
    conn_lost = slot(self, _tcp.conn_lost)
    if conn_lost:
        if conn_lost >= _LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            _logger.warning("socket.send() raised exception.")
        set_slot(self, _tcp.conn_lost, conn_lost + 1)
        return
    if not IOC_STREAM_SEND_AT_ONCE:
        self._write_queued(data)
        return
    cdef Scheduler loop = <Scheduler?>slot(self, _tcp.loop)
    if slot(self, _tcp.send_op) is not None or slot(self, _tcp.queue):
        # Behind writes still waiting: queued (a snapshot of a mutable buffer).
        hold_write(self, data if isinstance(data, bytes) else bytes(data))
        return
    if isinstance(data, bytes) and slot(self, _tcp.write_iteration) is loop.iteration_mark:
        # A second write in one iteration (a streams handler's lines, a
        # response's parts): held, and all leave in one send at its end.
        hold_write(self, data)
        return
    # The first write of an iteration (or a buffer the caller may reuse,
    # which holding would copy) is sent now, as asyncio's and uvloop's are.
    set_slot(self, _tcp.write_iteration, loop.iteration_mark)
    try:
        fd = _fileno(slot(self, _tcp.sock))
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
        set_slot(self, _tcp.conn_lost, slot(self, _tcp.conn_lost) + 1)
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
    _check_tcp(t)
    q = slot(t, _tcp.queue)
    if q is None:
        q = _deque()
        set_slot(t, _tcp.queue, q)
    q.append(chunk)
    cdef Py_ssize_t queued = <Py_ssize_t>slot(t, _tcp.queued_size) + len(chunk)
    set_slot(t, _tcp.queued_size, queued)
    if not (slot(t, _tcp.flush_due) or slot(t, _tcp.send_op) is not None
            or slot(t, _tcp.room_wait)):
        set_slot(t, _tcp.flush_due, True)
        (<Scheduler?>slot(t, _tcp.loop)).unflushed.append(t)
    if queued + <Py_ssize_t>slot(t, _tcp.in_flight_size) > <Py_ssize_t>slot(t, _tcp.high_water):
        if slot(t, _tcp.flush_due):
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
            if slot(t, _tcp.flush_due):
                _flush_stream(t)
    return 0


cdef int _flush_stream(t) except -1:
    """Send transport t's queue in one send (a gathered one for several
    chunks); what the socket has no room for goes to a send operation,
    which completes when it is sent (_send_queued)."""
    cdef Py_ssize_t n, count, size
    cdef long long fd
    set_slot(t, _tcp.flush_due, False)
    q = slot(t, _tcp.queue)
    if (not q or slot(t, _tcp.send_op) is not None or slot(t, _tcp.room_wait)
            or slot(t, _tcp.sock_closed)):
        return 0
    try:
        fd = _fileno(slot(t, _tcp.sock))
        count = len(q)
        n = _sendv(fd, q, count if count < _MAX_IOV else _MAX_IOV)
        if n < 0:
            if n == -EAGAIN or n == -EWOULDBLOCK:
                n = 0
            else:
                raise _os_error(-n)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        set_slot(t, _tcp.conn_lost, slot(t, _tcp.conn_lost) + 1)
        t._fatal_error(exc, "Fatal write error on socket transport")
        return 0
    set_slot(t, _tcp.queued_size, <Py_ssize_t>slot(t, _tcp.queued_size) - n)
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
    elif (slot(t, _tcp.closing) or slot(t, _tcp.want_eof)
          or slot(t, _tcp.empty_waiter) is not None or t._protocol_paused):
        t._writes_drained()
    return 0
