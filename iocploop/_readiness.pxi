# Readiness callbacks (add_reader / add_writer) in compiled code (included
# by _scheduler.pyx): the registrations (Watch) and the queueing of their
# handles when a descriptor is ready, for both systems, and on Linux the
# poll of the loop's epoll set (EpollPoller), which _readiness.py keeps
# posted while anything is watched.  Registering and removing stay in
# _readiness.py.

cdef extern from *:
    """
    #ifdef _WIN32
    /* Windows polls each socket through AFD (see _readiness.py): never called. */
    static int ioc_epoll_ready(long long epfd, int *fds, unsigned *events, int max)
    { (void)epfd; (void)fds; (void)events; (void)max; return -ENOSYS; }
    #else
    #include <sys/epoll.h>
    #define IOC_EPOLL_BATCH 256
    /* epoll_wait(epfd, 0): the ready descriptors (as registered by Python's
       select.epoll, data.fd) and their events; the count or a negated errno. */
    static int ioc_epoll_ready(long long epfd, int *fds, unsigned *events, int max)
    {
        struct epoll_event e[IOC_EPOLL_BATCH];
        int n, i;
        if (max > IOC_EPOLL_BATCH)
            max = IOC_EPOLL_BATCH;
        do {
            n = epoll_wait((int)epfd, e, max, 0);
        } while (n < 0 && errno == EINTR);
        if (n < 0)
            return -errno;
        for (i = 0; i < n; i++) {
            fds[i] = e[i].data.fd;
            events[i] = e[i].events;
        }
        return n;
    }
    #endif
    """
    int ioc_epoll_ready(long long epfd, int *fds, unsigned *events, int max) nogil

cdef enum:
    _POLLIN = 0x1
    _POLLOUT = 0x4
    _POLLERR = 0x8
    _POLLHUP = 0x10
    _READY_BATCH = 256


@cython.final
@cython.auto_pickle(False)
cdef class Watch:
    """The reader and writer handles of one file descriptor."""
    cdef public object fd
    cdef public object fileobj
    cdef public object reader       # Handle, or None
    cdef public object writer
    cdef public object op           # Windows: the AFD poll in flight
    cdef public int op_mask
    cdef public bint dead           # Windows: closed under its poll
    cdef public bint registered     # Linux: in the epoll set

    def __cinit__(self, fd, fileobj):
        self.fd = fd
        self.fileobj = fileobj

    cpdef int mask(self):
        return (_POLLIN if self.reader is not None else 0) | \
               (_POLLOUT if self.writer is not None else 0)


cdef int _queue_ready(Scheduler loop, Watch watch, unsigned ready) except -1:
    """Queue the handles of watch that ready (poll bits) wakes; a handle
    cancelled by hand is unregistered instead, as selectors do."""
    cdef Handle handle
    if watch.reader is not None and ready & (_POLLIN | _POLLERR | _POLLHUP):
        handle = <Handle?>watch.reader
        if handle._cancelled:
            loop._remove_watch(watch.fileobj, "reader")
        else:
            loop.ready.ring.push(handle)
    if watch.writer is not None and ready & (_POLLOUT | _POLLERR | _POLLHUP):
        handle = <Handle?>watch.writer
        if handle._cancelled:
            loop._remove_watch(watch.fileobj, "writer")
        else:
            loop.ready.ring.push(handle)
    return 0


def dispatch_ready(Scheduler loop, Watch watch, unsigned ready):
    """_queue_ready for Python (Windows' AFD polls)."""
    _queue_ready(loop, watch, ready)


@cython.final
@cython.auto_pickle(False)
cdef class EpollPoller(OperationBase):
    """Linux: the loop's epoll set, asked through a one-shot ring poll of
    its fd.  The poll's completion reads the ready descriptors (epoll_wait,
    no timeout) and queues their handles.  While the set keeps having ready
    descriptors ("hot"), the loop asks it directly before each wait, as a
    selector loop would, which saves the ring poll and an io_uring_enter
    per iteration; the first time it has none, the ring poll is posted
    again.  Either way the set is asked after the callbacks ran, so it
    reports only what they left unread."""
    cdef Scheduler loop
    cdef dict watches               # fd -> Watch (the loop's)
    cdef object epoll               # the select.epoll whose fd is polled
    cdef long long epfd
    cdef object cancelled_result
    cdef public bint armed          # the ring poll is posted
    cdef public bint hot            # asked directly before each wait

    def __init__(self, Scheduler loop, dict watches, epoll, cancelled_result):
        self.loop = loop
        self.watches = watches
        self.epoll = epoll
        self.epfd = epoll.fileno()
        self.cancelled_result = cancelled_result
        self.kind = "poll"
        self.callback = run_completion
        loop.readiness = self

    def arm(self):
        """Post the ring poll, unless posted, asked directly, nothing is
        watched or the loop is closed."""
        if self.armed or self.hot or not self.watches or self.loop._closed:
            return
        self.loop.batch.submit_poll(self, self.epfd, _POLLIN)
        self.armed = True

    def detach(self):
        """The set is closing: the loop asks it no more."""
        self.hot = False
        if self.loop.readiness is self:
            self.loop.readiness = None

    cdef int poll_now(self) except -1:
        """Ask the set directly (hot): queue what is ready, or post the ring
        poll again when nothing is."""
        if self.read_ready() <= 0:
            self.hot = False
            self.arm()
        return 0

    cdef int read_ready(self) except? -1:
        """epoll_wait with no timeout; queue the handles of what is ready.
        The count (a failure is logged, and counts as none)."""
        cdef int fds[_READY_BATCH]
        cdef unsigned events[_READY_BATCH]
        cdef int n, i
        n = ioc_epoll_ready(self.epfd, fds, events, _READY_BATCH)
        if n < 0:
            _logger.error("reading the readiness set failed: %s", _os_error(-n))
            return 0
        for i in range(n):
            watch = self.watches.get(fds[i])
            if watch is not None:
                _queue_ready(self.loop, <Watch>watch, events[i])
        return n

    cdef int complete(self) except -1:
        self.armed = False
        if self.result < 0:
            if self.result != self.cancelled_result:
                _logger.error("polling the readiness set failed: %s",
                              self.loop.batch.os_error(-self.result))
            return 0
        if self.loop.readiness is not self:
            return 0   # closed meanwhile
        if self.read_ready() > 0:
            self.hot = True
        else:
            self.arm()
        return 0

    def __repr__(self):
        return f"<EpollPoller epfd={self.epfd} armed={self.armed} hot={self.hot}>"
