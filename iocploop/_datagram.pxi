# The datagram transport's hot paths in compiled code (included by
# _scheduler.pyx): sendto, asyncio's checks then (Linux) the send at once
# with sendto(2) to a socket address parsed once per destination and kept
# (SendAddresses); and the drain of a burst after each posted receive
# (datagram_drain: recvfrom(2) until EAGAIN, the address tuple made in C).
# Both read the transport's slots at their offsets (_slots.pxi).  Queued
# sends, the posted receive, closing and Windows stay in _transports/datagram.py,
# which owns the state.
#
# (Reads on readiness, a multishot poll and recvfrom(2) per datagram as
# uvloop does, were tried and measured slower than the io_uring RECVMSG
# kept posted: two receive calls per wakeup instead of one.)

cdef extern from *:
    """
    #ifdef _WIN32
    /* Windows queues its sends (see _transports/datagram.py): never called. */
    static Py_ssize_t ioc_dgram_sendto(long long fd, const char *buf, Py_ssize_t n,
                                       const char *sa, int len)
    { (void)fd; (void)buf; (void)n; (void)sa; (void)len; return -ENOSYS; }
    static int ioc_sockaddr_in(const char *host, unsigned port, char *out, int *len)
    { (void)host; (void)port; (void)out; (void)len; return 0; }
    static int ioc_sockaddr_in6(const char *host, unsigned port, unsigned flowinfo,
                                unsigned scope_id, char *out, int *len)
    { (void)host; (void)port; (void)flowinfo; (void)scope_id; (void)out; (void)len; return 0; }
    static Py_ssize_t ioc_dgram_recvfrom(long long fd, char *buf, Py_ssize_t n,
                                         char *sa, int *len)
    { (void)fd; (void)buf; (void)n; (void)sa; (void)len; return -ENOSYS; }
    static PyObject *ioc_inet_address(const char *sa, int len)
    { (void)sa; (void)len; Py_RETURN_NONE; }
    #else
    #include <arpa/inet.h>
    #include <netinet/in.h>
    /* sa NULL: a connected socket's send */
    static Py_ssize_t ioc_dgram_sendto(long long fd, const char *buf, Py_ssize_t n,
                                       const char *sa, int len)
    {
        ssize_t r = sendto((int)fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL,
                           (const struct sockaddr *)sa, (socklen_t)len);
        return r < 0 ? -(Py_ssize_t)errno : (Py_ssize_t)r;
    }
    /* One datagram, if one waits (MSG_DONTWAIT): its size, or a negated
       errno; *len is the sender's address length on entry and return. */
    static Py_ssize_t ioc_dgram_recvfrom(long long fd, char *buf, Py_ssize_t n,
                                         char *sa, int *len)
    {
        socklen_t sl = (socklen_t)*len;
        ssize_t r = recvfrom((int)fd, buf, (size_t)n, MSG_DONTWAIT,
                             (struct sockaddr *)sa, &sl);
        *len = (int)sl;
        return r < 0 ? -(Py_ssize_t)errno : (Py_ssize_t)r;
    }
    /* The address tuple Python's socket module makes for an IPv4 or IPv6
       socket address (makesockaddr: inet_ntop, no scope in the host):
       (host, port) or (host, port, flowinfo, scope_id). */
    static PyObject *ioc_inet_address(const char *sa, int len)
    {
        char host[INET6_ADDRSTRLEN];
        const struct sockaddr *a = (const struct sockaddr *)sa;
        if (a->sa_family == AF_INET && len >= (int)sizeof(struct sockaddr_in)) {
            /* inet_ntop's dotted quad, without its sprintf (a tenth of
               the receive path's user time) */
            const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
            const unsigned char *octet = (const unsigned char *)&v4->sin_addr;
            char *at = host;
            int i;
            for (i = 0; i < 4; i++) {
                unsigned v = octet[i];
                if (v >= 100) { *at++ = (char)('0' + v / 100); v %= 100; *at++ = (char)('0' + v / 10); }
                else if (v >= 10) *at++ = (char)('0' + v / 10);
                *at++ = (char)('0' + v % 10);
                *at++ = '.';
            }
            PyObject *text = PyUnicode_FromStringAndSize(host, at - host - 1);
            if (!text)
                return NULL;
            PyObject *port = PyLong_FromLong((long)ntohs(v4->sin_port));
            if (!port) {
                Py_DECREF(text);
                return NULL;
            }
            PyObject *pair = PyTuple_New(2);
            if (!pair) {
                Py_DECREF(text);
                Py_DECREF(port);
                return NULL;
            }
            PyTuple_SET_ITEM(pair, 0, text);
            PyTuple_SET_ITEM(pair, 1, port);
            return pair;
        }
        if (a->sa_family == AF_INET6 && len >= (int)sizeof(struct sockaddr_in6)) {
            const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
            if (!inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host)))
                return PyErr_SetFromErrno(PyExc_OSError);
            return Py_BuildValue("siII", host, (int)ntohs(v6->sin6_port),
                                 (unsigned int)ntohl(v6->sin6_flowinfo),
                                 (unsigned int)v6->sin6_scope_id);
        }
        PyErr_SetString(PyExc_ValueError, "not an IPv4 or IPv6 socket address");
        return NULL;
    }
    /* The socket address of a numeric IPv4 host: 1, or 0 if host is none. */
    static int ioc_sockaddr_in(const char *host, unsigned port, char *out, int *len)
    {
        struct sockaddr_in a;
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_port = htons((unsigned short)port);
        if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
            return 0;
        memcpy(out, &a, sizeof(a));
        *len = (int)sizeof(a);
        return 1;
    }
    static int ioc_sockaddr_in6(const char *host, unsigned port, unsigned flowinfo,
                                unsigned scope_id, char *out, int *len)
    {
        struct sockaddr_in6 a;
        memset(&a, 0, sizeof(a));
        a.sin6_family = AF_INET6;
        a.sin6_port = htons((unsigned short)port);
        a.sin6_flowinfo = htonl(flowinfo);
        a.sin6_scope_id = scope_id;
        if (inet_pton(AF_INET6, host, &a.sin6_addr) != 1)
            return 0;
        memcpy(out, &a, sizeof(a));
        *len = (int)sizeof(a);
        return 1;
    }
    #endif
    """
    Py_ssize_t ioc_dgram_sendto(long long fd, const char *buf, Py_ssize_t n,
                                const char *sa, int len) nogil
    int ioc_sockaddr_in(const char *host, unsigned port, char *out, int *len)
    Py_ssize_t ioc_dgram_recvfrom(long long fd, char *buf, Py_ssize_t n, char *sa,
                                  int *len) nogil
    object ioc_inet_address(const char *sa, int len)
    int ioc_sockaddr_in6(const char *host, unsigned port, unsigned flowinfo,
                         unsigned scope_id, char *out, int *len)

from cpython.bytes cimport PyBytes_FromStringAndSize
import socket as _socket

cdef int _AF_INET = _socket.AF_INET
cdef int _AF_INET6 = _socket.AF_INET6

cdef Py_ssize_t _ADDRESSES_KEPT = 1024   # addresses a table keeps (then starts over)
cdef bint _SENDS_EMPTY = sys.version_info >= (3, 13)   # asyncio changed in 3.13
cdef Py_ssize_t _DGRAM_HEADER = 8 if sys.version_info >= (3, 12) else 0


cdef struct _DgramSlots:
    # Offsets of the DatagramTransport slots sendto and the drain use (_slots.pxi).
    Py_ssize_t address, connected, conn_lost, closing, arrivals, queue, send_ops
    Py_ssize_t send_budget, send_addresses, sock, protocol, loop

cdef _DgramSlots _dg
cdef type _dgram_class = None
cdef Py_ssize_t _send_at_once_max = 0


def bind_datagram_transport(type cls, Py_ssize_t send_at_once_max):
    """Find DatagramTransport's slots for the compiled paths (_transports/datagram.py, once)."""
    global _dg, _dgram_class, _send_at_once_max
    cdef _DgramSlots found   # all found before any is used
    found.address = _slot_offset(cls, "_address")
    found.connected = _slot_offset(cls, "_connected")
    found.conn_lost = _slot_offset(cls, "_conn_lost")
    found.closing = _slot_offset(cls, "_closing")
    found.arrivals = _slot_offset(cls, "_arrivals")
    found.queue = _slot_offset(cls, "_queue")
    found.send_ops = _slot_offset(cls, "_send_ops")
    found.send_budget = _slot_offset(cls, "_send_budget")
    found.send_addresses = _slot_offset(cls, "_send_addresses")
    found.sock = _slot_offset(cls, "_sock")
    found.protocol = _slot_offset(cls, "_protocol")
    found.loop = _slot_offset(cls, "_loop")
    _dg = found
    _send_at_once_max = send_at_once_max
    _dgram_class = cls


cdef inline int _check_dgram(t) except -1:
    if _dgram_class is None or not isinstance(t, _dgram_class):
        raise TypeError(f"expected a DatagramTransport, got {type(t).__name__!r}")
    return 0


def datagram_sendto(self, data, addr=None, *, source=None):
    """DatagramTransport.sendto (asyncio's; iocploop extension: source = the
    local IP address to send from).  Linux sends at once when nothing is
    queued; the rest goes to DatagramTransport._sendto_queued."""
    cdef Py_buffer view
    cdef Py_ssize_t n, budget
    cdef const char *sa = NULL
    cdef int salen = 0
    _check_dgram(self)
    if not isinstance(data, _BYTES_LIKE):
        raise TypeError(f"data argument must be a bytes-like object, "
                        f"not {type(data).__name__!r}")
    if not data and not _SENDS_EMPTY:
        return
    address = slot(self, _dg.address)
    if address:
        if addr is not None and addr != address:
            raise ValueError(f"Invalid address: must be None or {address}")
        addr = address
    connected = slot(self, _dg.connected)
    if connected:
        addr = None   # a connected socket sends to its peer, as asyncio's send()
    conn_lost = slot(self, _dg.conn_lost)
    if conn_lost and address:
        if conn_lost >= _LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            _logger.warning("socket.send() raised exception.")
        set_slot(self, _dg.conn_lost, conn_lost + 1)
        return
    if slot(self, _dg.closing):
        return
    if addr is None and not connected:
        # What socket.sendto(data, None) raises, handled as asyncio does.
        self._fatal_error(TypeError("an address is required: the socket is not connected"),
                          "Fatal write error on datagram transport")
        return
    arrivals = slot(self, _dg.arrivals)
    if source is None and arrivals is not None and addr is not None:
        source = arrivals.get(addr[:2])
    budget = slot(self, _dg.send_budget)
    if (IOC_STREAM_SEND_AT_ONCE and source is None   # (Linux; _stream.pxi) and not slot(self, _dg.queue)
            and not slot(self, _dg.send_ops) and budget > 0):
        # Linux: a datagram send rarely blocks, and a send done at once
        # costs one system call and no completion to process.  At most
        # _SEND_AT_ONCE_MAX per pass of the loop, though: a burst beyond
        # that goes through io_uring, paced by the loop, so a receiver on
        # this host gets to read between sends and nothing overflows.
        if budget == _send_at_once_max:
            slot(self, _dg.loop).call_soon(self._refill_send_budget)
        set_slot(self, _dg.send_budget, budget - 1)
        if addr is not None:
            raw = (<SendAddresses>slot(self, _dg.send_addresses)).lookup(addr)
            if raw is None:
                # Not a numeric address of the socket's family: the socket
                # module resolves it (or raises what asyncio reports).
                return self._sendto_by_socket(data, addr)
            sa = PyBytes_AS_STRING(<PyObject *>raw)
            salen = <int>len(<bytes>raw)
        fd = slot(self, _dg.sock).fileno()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            while True:
                n = ioc_dgram_sendto(fd, <const char *>view.buf, view.len, sa, salen)
                if n != -EINTR:
                    break
                PyErr_CheckSignals()
        finally:
            PyBuffer_Release(&view)
        if n >= 0:
            return
        if n != -EAGAIN and n != -EWOULDBLOCK:
            slot(self, _dg.protocol).error_received(_os_error(-n))
            return
    self._sendto_queued(data, addr, source)


@cython.final
@cython.auto_pickle(False)
cdef class SendAddresses:
    """A datagram socket's table of destination addresses already parsed:
    (host, port[, flowinfo, scope_id]) -> its sockaddr, as bytes.  Only
    numeric hosts of the socket's own family are parsed here; anything else
    is left to the socket module."""
    cdef int family
    cdef dict table

    def __cinit__(self, int family):
        self.family = family
        self.table = {}

    cdef object lookup(self, addr):
        cdef char out[64]
        cdef int length = 0
        cdef int ok
        if type(addr) is not tuple or self.family not in (_AF_INET, _AF_INET6):
            return None
        n = len(<tuple>addr)
        raw = self.table.get(addr)
        if raw is not None:
            # Equal is not enough: ("h", 80.0) == ("h", 80), and only the
            # second is an address the socket module takes.
            for i in range(1, n):
                if type(addr[i]) is not int:
                    return None
            return raw
        if self.family == _AF_INET and n != 2 or self.family == _AF_INET6 and not 2 <= n <= 4:
            return None
        host, port = addr[0], addr[1]
        if type(host) is not str or type(port) is not int or not 0 <= port <= 65535:
            return None
        encoded = (<str>host).encode("ascii", "replace")
        if b"\0" in encoded:
            return None   # the socket module refuses an embedded NUL
        if self.family == _AF_INET:
            ok = ioc_sockaddr_in(encoded, port, out, &length)
        else:
            flowinfo = addr[2] if n > 2 else 0
            scope_id = addr[3] if n > 3 else 0
            if (type(flowinfo) is not int or type(scope_id) is not int
                    or not 0 <= flowinfo <= 0xFFFFF or not 0 <= scope_id <= 0xFFFFFFFF):
                return None
            ok = ioc_sockaddr_in6(encoded, port, flowinfo, scope_id, out, &length)
        if not ok:
            return None
        raw = PyBytes_FromStringAndSize(out, length)
        if len(self.table) >= _ADDRESSES_KEPT:
            self.table.clear()
        self.table[addr] = raw
        return raw


def datagram_drain(t, buf, Py_ssize_t limit):
    """Linux, an IPv4 or IPv6 DatagramTransport t: deliver up to limit
    datagrams already waiting, read with non-blocking recvfrom(2) into buf
    (the transport's receive buffer, free meanwhile), each as bytes and the
    address tuple Python's recvfrom gives.  Stops at the first EAGAIN (no
    exception raised for it), or when t starts closing; an error of one
    receive goes to error_received, as asyncio's."""
    cdef Py_buffer view
    cdef char address[128]   # sizeof(struct sockaddr_storage)
    cdef int address_len
    cdef Py_ssize_t n, i
    _check_dgram(t)
    # The socket stays open while t is not closing (it closes a turn after).
    fd = slot(t, _dg.sock).fileno()
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    try:
        for i in range(limit):
            if slot(t, _dg.closing):
                return
            address_len = sizeof(address)
            while True:
                n = ioc_dgram_recvfrom(fd, <char *>view.buf, view.len, address, &address_len)
                if n != -EINTR:
                    break
                PyErr_CheckSignals()
            if n < 0:
                if n == -EAGAIN or n == -EWOULDBLOCK:
                    return
                slot(t, _dg.protocol).error_received(_os_error(-n))
                continue
            data = PyBytes_FromStringAndSize(<char *>view.buf, n)
            slot(t, _dg.protocol).datagram_received(data, ioc_inet_address(address, address_len))
    finally:
        PyBuffer_Release(&view)
