# The datagram transport's sendto in compiled code (included by
# _scheduler.pyx): asyncio's checks, then (Linux) the send at once with
# sendto(2), to a socket address parsed once per destination and kept
# (SendAddresses).  Queued sends, receiving, closing and Windows stay in
# _datagram.py, which owns the state.
#
# (Reads on readiness, a multishot poll and recvfrom(2) per datagram as
# uvloop does, were tried and measured slower than the io_uring RECVMSG
# kept posted: two receive calls per wakeup instead of one.)

cdef extern from *:
    """
    #ifdef _WIN32
    /* Windows queues its sends (see _datagram.py): never called. */
    static Py_ssize_t ioc_dgram_sendto(long long fd, const char *buf, Py_ssize_t n,
                                       const char *sa, int len)
    { (void)fd; (void)buf; (void)n; (void)sa; (void)len; return -ENOSYS; }
    static int ioc_sockaddr_in(const char *host, unsigned port, char *out, int *len)
    { (void)host; (void)port; (void)out; (void)len; return 0; }
    static int ioc_sockaddr_in6(const char *host, unsigned port, unsigned flowinfo,
                                unsigned scope_id, char *out, int *len)
    { (void)host; (void)port; (void)flowinfo; (void)scope_id; (void)out; (void)len; return 0; }
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
    int ioc_sockaddr_in6(const char *host, unsigned port, unsigned flowinfo,
                         unsigned scope_id, char *out, int *len)

from cpython.bytes cimport PyBytes_FromStringAndSize
import socket as _socket

cdef int _AF_INET = _socket.AF_INET
cdef int _AF_INET6 = _socket.AF_INET6

cdef Py_ssize_t _ADDRESSES_KEPT = 1024   # addresses a table keeps (then starts over)
cdef bint _SENDS_EMPTY = sys.version_info >= (3, 13)   # asyncio changed in 3.13
cdef Py_ssize_t _DGRAM_HEADER = 8 if sys.version_info >= (3, 12) else 0


def datagram_sendto(self, data, addr=None, *, source=None):
    """DatagramTransport.sendto (asyncio's; iocploop extension: source = the
    local IP address to send from).  Linux sends at once when nothing is
    queued; the rest goes to DatagramTransport._sendto_queued."""
    cdef Py_buffer view
    cdef Py_ssize_t n
    cdef const char *sa = NULL
    cdef int salen = 0
    if not isinstance(data, _BYTES_LIKE):
        raise TypeError(f"data argument must be a bytes-like object, "
                        f"not {type(data).__name__!r}")
    if not data and not _SENDS_EMPTY:
        return
    if self._address:
        if addr is not None and addr != self._address:
            raise ValueError(f"Invalid address: must be None or {self._address}")
        addr = self._address
    if self._connected:
        addr = None   # a connected socket sends to its peer, as asyncio's send()
    if self._conn_lost and self._address:
        if self._conn_lost >= _LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            _logger.warning("socket.send() raised exception.")
        self._conn_lost += 1
        return
    if self._closing:
        return
    if addr is None and not self._connected:
        # What socket.sendto(data, None) raises, handled as asyncio does.
        self._fatal_error(TypeError("an address is required: the socket is not connected"),
                          "Fatal write error on datagram transport")
        return
    if source is None and self._arrivals is not None and addr is not None:
        source = self._arrivals.get(addr[:2])
    if (self._send_at_once and source is None and not self._queue and not self._send_ops
            and self._send_budget > 0):
        # Linux: a datagram send rarely blocks, and a send done at once
        # costs one system call and no completion to process.  At most
        # _SEND_AT_ONCE_MAX per pass of the loop, though: a burst beyond
        # that goes through io_uring, paced by the loop, so a receiver on
        # this host gets to read between sends and nothing overflows.
        if self._send_budget == self._send_at_once_max:
            self._loop.call_soon(self._refill_send_budget)
        self._send_budget -= 1
        if addr is not None:
            raw = (<SendAddresses>self._send_addresses).lookup(addr)
            if raw is None:
                # Not a numeric address of the socket's family: the socket
                # module resolves it (or raises what asyncio reports).
                return self._sendto_by_socket(data, addr)
            sa = PyBytes_AS_STRING(<PyObject *>raw)
            salen = <int>len(<bytes>raw)
        fd = self._sock.fileno()
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
            self._protocol.error_received(_os_error(-n))
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
