# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The loop's scheduler in compiled code: handles, the ready queue, the
timer heap and one iteration of the loop (asyncio's `_run_once`).

`Scheduler` is a base class of `iocploop.Loop`, placed before
`asyncio.BaseEventLoop` in its bases, so these methods replace
BaseEventLoop's own; everything else (executors, exception handling,
debug helpers, async generators, create_task) stays BaseEventLoop's.
The rules are asyncio's, step for step:

* call_soon / call_soon_threadsafe append a Handle to the ready queue
  (FIFO); call_at / call_later push a TimerHandle on a binary heap ordered
  by `_when` with the same sift algorithm as the heapq module, so timers
  due at the same moment run in the order asyncio would run them.
* One iteration: drop cancelled timers (all of them, rebuilding the heap,
  when more than half of over 100 are cancelled; else those at the top),
  wait for I/O (zero timeout when callbacks are ready or the loop is
  stopping, else until the first timer, at most a day), run the I/O
  phase, move the timers due by `time() + _clock_resolution` to the ready
  queue, then run exactly the callbacks that were ready at that point:
  those they schedule wait for the next iteration.
* Handle._run calls the callback in its context; an exception goes to
  the loop's exception handler with asyncio's context keys.

Debug mode keeps asyncio's behaviour by asking BaseEventLoop's own Python
helpers (thread and callback checks, source tracebacks, the slow-callback
report), which is not on the hot path.

Thread safety: call_soon_threadsafe appends under the GIL, as asyncio's
deque append does; all state is per loop, none global.
"""
cimport cython
from cpython.contextvars cimport PyContext_CopyCurrent, PyContext_Enter, PyContext_Exit
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport int64_t, intptr_t, uint32_t, uint64_t, uintptr_t
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF

import inspect
import sys
import time as _time
from asyncio import base_events as _base_events
from asyncio import events as _events
from asyncio import format_helpers as _format_helpers
from asyncio.futures import Future as _Future
from asyncio.log import logger as _logger

cdef extern from "Python.h":
    object PyObject_Call(object callable, object args, PyObject *kwargs)
    object PyObject_CallNoArgs(object callable)
    object PyLong_FromUnsignedLongLong(unsigned long long v)

# The core's interface (csrc/ioc_core.h).  The core itself is compiled once,
# into the cffi module: this extension calls it through the function
# pointers that module hands over (CompletionBatch), never a copy of its own.
cdef extern from "ioc_core.h":
    ctypedef struct ioc_core:
        pass
    ctypedef struct ioc_op:
        pass
    ctypedef struct ioc_completion:
        uint64_t token
        int64_t result
        uint32_t flags

ctypedef int (*ioc_wait_fn)(ioc_core *, int64_t, ioc_completion *, int, int *) noexcept nogil
ctypedef int (*ioc_wakeup_fn)(ioc_core *) noexcept nogil
ctypedef int (*ioc_submit_recv_fn)(ioc_core *, intptr_t, void *, uint32_t, int, uint64_t,
                                   ioc_op **) noexcept nogil
ctypedef int (*ioc_submit_send_fn)(ioc_core *, intptr_t, const void *, uint32_t, int,
                                   uint64_t, ioc_op **) noexcept nogil
ctypedef int (*ioc_submit_poll_fn)(ioc_core *, intptr_t, uint32_t, uint64_t,
                                   ioc_op **) noexcept nogil
ctypedef int (*ioc_submit_read_fn)(ioc_core *, intptr_t, void *, uint32_t, uint64_t,
                                   ioc_op **) noexcept nogil

cdef object _monotonic = _time.monotonic
cdef object _port_os_error = None   # the port's errno -> OSError (CompletionBatch sets it)
cdef object _port_cancelled_result = None   # a cancelled operation's result (the port's)


def set_cancelled_result(value):
    """The result of a cancelled operation (the port's ERR_CANCELLED)."""
    global _port_cancelled_result
    _port_cancelled_result = value

# time.monotonic()'s own clock, read without a Python call where CPython
# names it: PyTime_Monotonic from 3.13; before, on Linux, CLOCK_MONOTONIC,
# which is what time.monotonic reads there.  Elsewhere (Windows before
# 3.13) the call to time.monotonic itself.
cdef extern from *:
    """
    #if PY_VERSION_HEX >= 0x030D0000
    static int ioc_monotonic(double *out) {
        PyTime_t t;
        if (PyTime_Monotonic(&t) < 0) return -1;
        *out = PyTime_AsSecondsDouble(t);
        return 0;
    }
    #elif defined(__linux__)
    #include <time.h>
    static int ioc_monotonic(double *out) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        *out = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        return 0;
    }
    #else
    static int ioc_monotonic(double *out) { (void)out; return 1; }
    #endif
    """
    int ioc_monotonic(double *out)


cdef inline double _monotonic_now() except? -1.0:
    cdef double now
    cdef int rc = ioc_monotonic(&now)
    if rc == 0:
        return now
    if rc < 0:
        raise OSError("the monotonic clock failed")
    return _monotonic()
cdef object _format_handle = _base_events._format_handle
cdef object _extract_stack = _format_helpers.extract_stack
cdef object _getframe = sys._getframe
cdef object _Handle_repr_info = _events.Handle._repr_info

# asyncio's constants (base_events): the same numbers, the same rules.
cdef Py_ssize_t _MIN_SCHEDULED_TIMER_HANDLES = 100
cdef enum:
    READ_SCRATCH_SIZE = 16384   # iocploop._transports.base.READ_SIZE_MIN
# The mark of a token that is its operation's address (submit_poll_multishot);
# the port's counted tokens never reach it, and user-space addresses are
# below 2**63 on every 64-bit system CPython runs on.
cdef uint64_t ADDRESS_TOKEN = 1ULL << 63
cdef double _MIN_CANCELLED_TIMER_HANDLES_FRACTION = 0.5
cdef double _MAXIMUM_SELECT_TIMEOUT = 24 * 3600

# format_helpers._format_callback_source takes debug= from 3.12.
cdef bint _FORMAT_TAKES_DEBUG = (
    "debug" in inspect.signature(_format_helpers._format_callback_source).parameters)


cdef object _format_callback(object callback, object args, object loop):
    if _FORMAT_TAKES_DEBUG:
        return _format_helpers._format_callback_source(callback, args,
                                                       debug=loop.get_debug())
    return _format_helpers._format_callback_source(callback, args)


# -- handles ----------------------------------------------------------------------


@cython.freelist(256)
@cython.auto_pickle(False)   # a context cannot be pickled; and see _park
cdef class Handle:
    """asyncio.Handle's API: cancel(), cancelled(), get_context(), repr."""

    cdef public object _callback
    cdef public object _args
    cdef readonly object _context   # readonly: see _park
    cdef public object _loop
    cdef public object _source_traceback
    cdef public object _repr
    cdef public bint _cancelled
    cdef bint _own_context   # the context was copied for this handle alone
    cdef object __weakref__

    def __init__(self, callback, args, loop, context=None):
        _init_handle(self, callback, args, loop, context)
        if loop.get_debug():
            self._source_traceback = _extract_stack(_getframe())

    def _repr_info(self):
        return _Handle_repr_info(self)

    def __repr__(self):
        if self._repr is not None:
            return self._repr
        return "<{}>".format(" ".join(self._repr_info()))

    def get_context(self):
        return self._context

    def cancel(self):
        if not self._cancelled:
            self._cancel()

    cdef _cancel(self):
        self._cancelled = True
        if self._loop.get_debug():
            # As asyncio: keep the representation with the callback and
            # arguments, for the reports of debug mode.
            self._repr = repr(self)
        self._callback = None
        self._args = None

    def cancelled(self):
        return self._cancelled

    def _run(self):
        _run_handle(self)


cdef inline _init_handle(Handle h, object callback, object args, object loop, object context):
    if h._own_context:
        _unpark(h)   # __init__ again on a parked handle: its context may go now
    h._own_context = context is None
    if context is None:
        context = PyContext_CopyCurrent()
    h._context = context
    h._loop = loop
    h._callback = callback
    h._args = args
    h._cancelled = False
    h._repr = None
    h._source_traceback = None


cdef _run_handle(Handle h):
    """Call the callback in its context; an exception goes to the loop's
    exception handler (SystemExit and KeyboardInterrupt propagate)."""
    cdef object context = h._context
    cdef object callback = h._callback
    cdef object args = h._args
    try:
        PyContext_Enter(context)
        try:
            if args:
                PyObject_Call(callback, args, NULL)
            else:
                PyObject_CallNoArgs(callback)
        finally:
            # Left before the report, as context.run leaves it: from 3.13
            # the exception handler runs in the handle's context itself.
            PyContext_Exit(context)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        message = f"Exception in callback {_format_callback(h._callback, h._args, h._loop)}"
        report = {"message": message, "exception": exc, "handle": h}
        if h._source_traceback:
            report["source_traceback"] = h._source_traceback
        h._loop.call_exception_handler(report)


@cython.auto_pickle(False)
cdef class TimerHandle(Handle):
    """asyncio.TimerHandle's API: when(), comparisons, hash, cancel()."""

    cdef public object _when_obj
    cdef double _when_c
    cdef public bint _scheduled

    def __init__(self, when, callback, args, loop, context=None):
        _init_handle(self, callback, args, loop, context)
        if loop.get_debug():
            self._source_traceback = _extract_stack(_getframe())
        self._set_when(when)
        self._scheduled = False

    cdef _set_when(self, object when):
        self._when_c = when   # TypeError for a time that is not a number
        self._when_obj = when

    @property
    def _when(self):
        return self._when_obj

    def _repr_info(self):
        info = _Handle_repr_info(self)
        info.insert(2 if self._cancelled else 1, f"when={self._when_obj}")
        return info

    def when(self):
        return self._when_obj

    def __hash__(self):
        return hash(self._when_obj)

    def __richcmp__(self, other, int op):
        if not isinstance(other, TimerHandle):
            return NotImplemented
        cdef TimerHandle o = <TimerHandle>other
        if op == 0:
            return self._when_obj < o._when_obj
        if op == 4:
            return self._when_obj > o._when_obj
        equal = (self._when_obj == o._when_obj and self._callback == o._callback
                 and self._args == o._args and self._cancelled == o._cancelled)
        if op == 2:
            return equal
        if op == 3:
            return not equal
        if op == 1:
            return self._when_obj < o._when_obj or equal
        return self._when_obj > o._when_obj or equal

    def cancel(self):
        if not self._cancelled:
            self._loop._timer_handle_cancelled(self)
            self._cancel()


# -- parking: what the queue and the heap hold, the collector need not walk --------
#
# A handle in the ready queue or the timer heap stays alive as long as it is
# there, whatever refers to it: the cyclic collector gains nothing from
# walking it, or the context copied for it alone, at every collection.  It is
# the bulk of what a busy loop allocates (each call_soon, each Task step), and
# walking it was a third of the time of a loop that queues many callbacks.
# So both are untracked while parked and tracked again when they leave (run,
# dropped, cleared), before anything else can refer to them unseen: a cycle
# through a handle is collected as soon as the handle has left.
# (The calls are safe at any time, even while a collection runs.)  One rule:
# a context must be tracked when it dies (its deallocator untracks without
# looking), so a parked handle's own context is never let go: `_context` is
# read-only, handles do not pickle, and __init__ unparks first.

cdef extern from "Python.h":
    int PyObject_GC_IsTracked(object)
    void PyObject_GC_Track(void *)
    void PyObject_GC_UnTrack(void *)


cdef inline void _park(object item) noexcept:
    cdef Handle h
    if type(item) is Handle or type(item) is TimerHandle:
        h = <Handle>item
        if PyObject_GC_IsTracked(item):
            PyObject_GC_UnTrack(<void *>item)
        if h._own_context and PyObject_GC_IsTracked(h._context):
            PyObject_GC_UnTrack(<void *>h._context)


cdef inline void _unpark(object item) noexcept:
    cdef Handle h
    if type(item) is Handle or type(item) is TimerHandle:
        h = <Handle>item
        if not PyObject_GC_IsTracked(item):
            PyObject_GC_Track(<void *>item)
        if h._own_context and not PyObject_GC_IsTracked(h._context):
            PyObject_GC_Track(<void *>h._context)


# -- memory lent to the kernel through cffi ------------------------------------------
# CPython's collector clears a memoryview that sits in a reference cycle even
# while a cffi view still exports it: the view loses its managed buffer, and
# when the cffi view lets go later, the memoryview's release writes through a
# NULL pointer (an access violation inside gc.collect()).  A traceback that
# holds a refused operation's frame, or an operation still in flight, is
# enough.  So cffi is only ever handed bytes, a bytearray (neither can be
# cleared), or a _Lent: an object outside the collector's reach that holds
# the caller's buffer export and passes it on.  Nothing can clear it, and it
# keeps the caller's object until the cffi view is freed.  (Untracking a
# memoryview instead is not possible: its deallocator assumes it is tracked.)
# The one cost: a cycle that runs from the caller's object back to the cffi
# view is never collected.

cdef extern from "Python.h":
    int PyBUF_SIMPLE
    int PyBUF_WRITABLE
    int PyObject_GetBuffer(object, Py_buffer *, int) except -1
    void PyBuffer_Release(Py_buffer *)
    int PyBuffer_FillInfo(Py_buffer *, object, void *, Py_ssize_t, int, int) except -1


@cython.final
@cython.auto_pickle(False)
cdef class _Lent:
    """The caller's buffer, re-exported by an object the collector never sees."""
    cdef Py_buffer _view
    cdef bint _held

    def __cinit__(self, obj, bint writable):
        PyObject_GetBuffer(obj, &self._view, PyBUF_WRITABLE if writable else PyBUF_SIMPLE)
        self._held = True

    def __dealloc__(self):
        if self._held:
            self._held = False
            PyBuffer_Release(&self._view)

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        PyBuffer_FillInfo(buffer, self, self._view.buf, self._view.len,
                          self._view.readonly, flags)

    def __releasebuffer__(self, Py_buffer *buffer):
        pass


def lendable(obj, bint writable=False):
    """obj, or a stand-in for it, that a cffi view may export safely."""
    if type(obj) is bytes or type(obj) is bytearray:
        return obj
    return _Lent(obj, writable)


# -- the ready queue: a ring of owned references ------------------------------------


cdef class _Ring:
    cdef PyObject **items
    cdef Py_ssize_t head
    cdef Py_ssize_t count
    cdef Py_ssize_t capacity

    def __dealloc__(self):
        self.clear()
        PyMem_Free(self.items)

    cdef int push(self, object item) except -1:
        cdef Py_ssize_t cap, i, n
        cdef PyObject **grown
        if self.count == self.capacity:
            cap = self.capacity * 2 if self.capacity else 64
            grown = <PyObject **>PyMem_Realloc(self.items, cap * sizeof(PyObject *))
            if grown == NULL:
                raise MemoryError()
            # Unwrap: the items past the end move after the old capacity.
            n = self.head + self.count - self.capacity
            for i in range(n if n > 0 else 0):
                grown[self.capacity + i] = grown[i]
            self.items = grown
            self.capacity = cap
        Py_INCREF(item)
        self.items[(self.head + self.count) % self.capacity] = <PyObject *>item
        self.count += 1
        _park(item)
        return 0

    cdef object pop(self):
        """The oldest item (the queue must not be empty)."""
        cdef PyObject *item = self.items[self.head]
        self.head = (self.head + 1) % self.capacity
        self.count -= 1
        result = <object>item
        Py_DECREF(result)   # the ring's reference; `result` holds its own
        _unpark(result)
        return result

    cdef void release(self):
        PyMem_Free(self.items)
        self.items = NULL
        self.capacity = 0
        self.head = 0

    cdef void clear(self):
        cdef PyObject *item
        while self.count:
            item = self.items[self.head]
            self.head = (self.head + 1) % self.capacity
            self.count -= 1
            _unpark(<object>item)
            Py_XDECREF(item)
        self.head = 0


cdef class ReadyQueue:
    """What `loop._ready` offers BaseEventLoop and the stats: len, bool,
    append, popleft, clear and iteration over a snapshot."""
    cdef _Ring ring

    def __len__(self):
        return self.ring.count

    def __bool__(self):
        return self.ring.count > 0

    def append(self, handle):
        self.ring.push(handle)

    def popleft(self):
        if not self.ring.count:
            raise IndexError("pop from an empty ready queue")
        return self.ring.pop()

    def clear(self):
        # BaseEventLoop.close() calls this: the storage goes too.
        self.ring.clear()
        self.ring.release()

    def __iter__(self):
        cdef Py_ssize_t i
        ring = self.ring
        return iter([<object>ring.items[(ring.head + i) % ring.capacity]
                     for i in range(ring.count)])


# -- the timer heap: heapq's algorithm on a C array ---------------------------------


ctypedef struct _TimerEntry:
    double when          # the timer's _when, kept here: sifting reads no handle
    PyObject *timer      # an owned reference


cdef class TimerHeap:
    """Owned references to TimerHandles, a min-heap on _when (`<` as
    heapq compares): sift-down on push, heapq's bottom-up sift-up on pop
    and heapify, so equal times come out in the order heapq gives.  Each
    entry keeps its timer's time beside the reference (a timer's time
    never changes while it is scheduled)."""
    cdef _TimerEntry *items
    cdef Py_ssize_t count
    cdef Py_ssize_t capacity

    def __dealloc__(self):
        self._clear()
        PyMem_Free(self.items)

    def __len__(self):
        return self.count

    def __bool__(self):
        return self.count > 0

    def __iter__(self):
        cdef Py_ssize_t i
        return iter([<object>self.items[i].timer for i in range(self.count)])

    def __getitem__(self, Py_ssize_t i):
        if i < 0:
            i += self.count
        if not 0 <= i < self.count:
            raise IndexError("timer heap index out of range")
        return <object>self.items[i].timer

    def clear(self):
        # BaseEventLoop.close() calls this: the storage goes too.
        self._clear()
        PyMem_Free(self.items)
        self.items = NULL
        self.capacity = 0

    cdef void _clear(self):
        cdef Py_ssize_t i, n = self.count
        self.count = 0
        for i in range(n):
            _unpark(<object>self.items[i].timer)
            Py_XDECREF(self.items[i].timer)

    cdef inline double when(self, Py_ssize_t i):
        return self.items[i].when

    cdef inline PyObject *top(self):
        return self.items[0].timer

    cdef void _sift_down(self, Py_ssize_t start, Py_ssize_t pos):
        # Move the entry at pos up towards start while it is smaller than
        # its parent.
        cdef _TimerEntry entry = self.items[pos]
        cdef Py_ssize_t parent
        while pos > start:
            parent = (pos - 1) >> 1
            if entry.when < self.items[parent].when:
                self.items[pos] = self.items[parent]
                pos = parent
                continue
            break
        self.items[pos] = entry

    cdef void _sift_up(self, Py_ssize_t pos):
        # heapq's way: walk the smaller child up to a leaf, then sift the
        # entry there back down.
        cdef Py_ssize_t end = self.count
        cdef Py_ssize_t start = pos
        cdef _TimerEntry entry = self.items[pos]
        cdef Py_ssize_t child = 2 * pos + 1
        while child < end:
            if child + 1 < end and not (self.items[child].when < self.items[child + 1].when):
                child += 1
            self.items[pos] = self.items[child]
            pos = child
            child = 2 * pos + 1
        self.items[pos] = entry
        self._sift_down(start, pos)

    cdef int push(self, TimerHandle timer) except -1:
        cdef Py_ssize_t cap
        cdef _TimerEntry *grown
        if self.count == self.capacity:
            cap = self.capacity * 2 if self.capacity else 64
            grown = <_TimerEntry *>PyMem_Realloc(self.items, cap * sizeof(_TimerEntry))
            if grown == NULL:
                raise MemoryError()
            self.items = grown
            self.capacity = cap
        Py_INCREF(timer)
        self.items[self.count].timer = <PyObject *>timer
        self.items[self.count].when = timer._when_c
        self.count += 1
        _park(timer)
        self._sift_down(0, self.count - 1)
        return 0

    cdef TimerHandle pop(self):
        """The earliest timer (the heap must not be empty)."""
        cdef PyObject *top = self.items[0].timer
        self.count -= 1
        if self.count:
            self.items[0] = self.items[self.count]
            self._sift_up(0)
        result = <TimerHandle>top
        Py_DECREF(result)
        _unpark(result)
        return result

    cdef void heapify(self):
        cdef Py_ssize_t i = self.count // 2 - 1
        while i >= 0:
            self._sift_up(i)
            i -= 1

    cdef void drop_cancelled(self):
        """Keep only the timers not cancelled (they leave `_scheduled`), then
        heapify what is left, as asyncio rebuilds its list."""
        cdef Py_ssize_t i, kept = 0
        cdef TimerHandle timer
        for i in range(self.count):
            timer = <TimerHandle>self.items[i].timer
            if timer._cancelled:
                timer._scheduled = False
                _unpark(timer)
                Py_DECREF(timer)
            else:
                self.items[kept] = self.items[i]
                kept += 1
        self.count = kept
        self.heapify()


# -- the I/O phase: waiting on the core, dispatching a batch ------------------------


cdef class SocketEngine   # _sockops.pxi
cdef class EpollPoller    # _readiness.pxi


cdef class OperationBase:
    """The fields of one kernel operation, which the dispatch below reads
    and writes in C; iocploop._port.Operation adds the rest (its error,
    cancelled, release and repr) in Python.  The compiled sock_* methods
    (_sockops.pxi) subclass it in compiled code instead."""
    cdef public object token
    cdef public object kind
    cdef public object callback
    cdef public object buffer
    cdef public object result       # None until the kernel reports it
    cdef public uint32_t flags
    cdef public bint done
    cdef uintptr_t record           # the core's record until done (0 after)
    cdef public object _cbuf        # cffi views of the memory the kernel uses
    # A receive or accept of the sock_* methods (SocketEngine): the future
    # its caller awaits, whether that caller stopped waiting, and the next
    # such operation in flight on the same socket.
    cdef public object waiter
    cdef public bint orphaned
    cdef OperationBase next_on_socket
    cdef object __weakref__

    def __init__(self, token, kind, callback, buffer, record, cbuf):
        self.token = token
        self.kind = kind
        self.callback = callback
        self.buffer = buffer
        self.record = 0 if record is None else <uintptr_t>record
        self._cbuf = cbuf

    @property
    def _record(self):
        """The address of the core's record (None once done): what
        ioc_cancel and ioc_void_queued take, as ffi.cast("ioc_op *", it)."""
        return None if self.record == 0 else PyLong_FromUnsignedLongLong(self.record)

    @_record.setter
    def _record(self, value):
        self.record = 0 if value is None else <uintptr_t>value

    cdef int complete(self) except -1:
        """Run what the completion means; compiled operations override it."""
        self.callback(self)
        return 0


cdef class CompiledOperation(OperationBase):
    """An operation made in compiled code: Operation's repr and error."""

    def __repr__(self):
        state = "pending" if not self.done else f"result={self.result}"
        return f"<Operation {self.kind} #{self.token} {state}>"

    @property
    def error(self):
        if self.result is None or self.result >= 0:
            return None
        return _port_os_error(-self.result)

    @property
    def cancelled(self):
        return self.result is not None and self.result == _port_cancelled_result


def run_completion(OperationBase op):
    """The callback of a compiled operation, for debug mode's timed
    dispatch (which calls op.callback(op))."""
    op.complete()


cdef class CompletionBatch:
    """The completion port's wait and dispatch, in compiled code.

    `wait` calls the core's ioc_wait (through the cffi module's function
    pointer; the GIL is released while it may block) into the port's batch
    array, after asking again for the cancellations the core could not
    queue before (cancel_later, retry_cancels: the port's); `dispatch` hands
    each completion of the batch to its operation: the Operation is taken
    from the port's table (a multishot operation's wakeup, flagged MORE,
    leaves it there), marked done with its result and flags, and its
    callback runs; its cffi views are dropped after.  A completion flagged
    STRAY (Windows: a submit that failed after the provider started it)
    releases that submit's memory from `strays` and runs nothing.  A
    callback's exception goes to on_error(op, exc); SystemExit and
    KeyboardInterrupt propagate and the rest of the batch waits for the next
    wait, which returns it first, without blocking.
    """
    cdef ioc_core *core
    cdef ioc_completion *events
    cdef int *size
    cdef int capacity
    cdef int pos
    # How many batches were taken from the port: every completion of the
    # current batch was posted before anything that runs after it is taken
    # (ReadyReader.on_poll skips a wakeup the reader has already read past).
    cdef unsigned long long taken
    cdef ioc_wait_fn wait_fn
    cdef ioc_wakeup_fn wakeup_fn
    cdef ioc_submit_recv_fn submit_recv_fn
    cdef ioc_submit_send_fn submit_send_fn
    cdef ioc_submit_poll_fn submit_poll_fn
    cdef ioc_submit_poll_fn submit_poll_multishot_fn
    cdef ioc_submit_read_fn submit_read_fn
    cdef uint64_t last_token
    cdef uint32_t more_flag
    cdef uint32_t stray_flag
    cdef dict ops
    cdef dict strays
    cdef list cancel_later
    cdef object retry_cancels
    cdef object keep          # the cffi objects that own the memory above
    cdef object os_error      # errno -> OSError, as the port words it
    cdef str detached         # why the core may not be used (closed, forked)

    def __init__(self, dict ops, dict strays, list cancel_later, retry_cancels,
                 uintptr_t core, uintptr_t events, uintptr_t size, int capacity,
                 uintptr_t wait_fn, uintptr_t wakeup_fn, uintptr_t submit_recv_fn,
                 uintptr_t submit_send_fn, uintptr_t submit_poll_fn,
                 uintptr_t submit_poll_multishot_fn,
                 uintptr_t submit_read_fn, uint32_t more_flag, uint32_t stray_flag,
                 os_error, keep):
        self.ops = ops
        self.strays = strays
        self.cancel_later = cancel_later
        self.retry_cancels = retry_cancels
        self.stray_flag = stray_flag
        self.core = <ioc_core *>core
        self.events = <ioc_completion *>events
        self.size = <int *>size
        self.capacity = capacity
        self.wait_fn = <ioc_wait_fn>wait_fn
        self.wakeup_fn = <ioc_wakeup_fn>wakeup_fn
        self.submit_recv_fn = <ioc_submit_recv_fn>submit_recv_fn
        self.submit_send_fn = <ioc_submit_send_fn>submit_send_fn
        self.submit_poll_fn = <ioc_submit_poll_fn>submit_poll_fn
        self.submit_poll_multishot_fn = <ioc_submit_poll_fn>submit_poll_multishot_fn
        self.submit_read_fn = <ioc_submit_read_fn>submit_read_fn
        self.last_token = 0
        self.more_flag = more_flag
        self.os_error = os_error
        global _port_os_error
        _port_os_error = os_error
        self.keep = keep
        self.pos = 0
        self.detached = None

    def detach(self, str reason):
        """The core is closing or belongs to the parent process: no call
        reaches it from now on; wait raises RuntimeError(reason)."""
        self.core = NULL
        self.detached = reason

    def next_token(self):
        """A new operation's token (the port's and the compiled operations' one counter)."""
        self.last_token += 1
        return PyLong_FromUnsignedLongLong(self.last_token)

    cdef int submit_buffer(self, OperationBase op, bint send, intptr_t fd, void *buf,
                           uint32_t length, int flags) except -1:
        """Submit a receive into / a send from memory op keeps alive (op.buffer)
        and track op until its completion, as the port's Python submits do
        (CompletionPort._track): a refused submit raises and runs nothing."""
        cdef ioc_op *record = NULL
        cdef int rc
        cdef ioc_core *core = self.checked_core()
        self.last_token += 1
        if send:
            rc = self.submit_send_fn(core, fd, buf, length, flags, self.last_token, &record)
        else:
            rc = self.submit_recv_fn(core, fd, buf, length, flags, self.last_token, &record)
        return self.track(op, rc, record)

    cdef int submit_poll(self, OperationBase op, intptr_t fd, uint32_t events) except -1:
        """Submit a one-shot poll of fd for events, tracked as submit_buffer's."""
        cdef ioc_op *record = NULL
        cdef ioc_core *core = self.checked_core()
        self.last_token += 1
        rc = self.submit_poll_fn(core, fd, events, self.last_token, &record)
        return self.track(op, rc, record)

    cdef int submit_poll_multishot(self, OperationBase op, intptr_t fd,
                                   uint32_t events) except -1:
        """Submit a poll that stays posted (Linux; CompletionPort.poll_multishot's).

        Its token is op's own address, marked with ADDRESS_TOKEN: each of its
        wakeups (flagged MORE) finds op without a Python int and a lookup in
        the table (dispatch).  That is safe because the table keeps op alive
        until its last completion, which the kernel posts after every wakeup
        of the same request; a new operation reuses the address only once op
        is freed, so after that last completion."""
        cdef ioc_op *record = NULL
        cdef ioc_core *core = self.checked_core()
        cdef uint64_t token = <uint64_t><uintptr_t><PyObject *>op | ADDRESS_TOKEN
        rc = self.submit_poll_multishot_fn(core, fd, events, token, &record)
        return self.track_as(op, rc, record, token)

    def read_new_bytes(self, intptr_t handle, Py_ssize_t size, callback):
        """Read up to size bytes of a pipe (or another stream that is no
        socket) straight into a new bytes object: a BytesRead, whose buffer
        is the bytes read when callback(op) runs (b"" at end of file)."""
        cdef BytesRead op = BytesRead.__new__(BytesRead)
        cdef PyObject *raw = _new_bytes(NULL, size)
        cdef ioc_op *record = NULL
        cdef ioc_core *core = self.checked_core()
        op.buffer = <object>raw
        Py_DECREF(<object>raw)
        op.kind = "read"
        op.callback = callback
        self.last_token += 1
        rc = self.submit_read_fn(core, handle, PyBytes_AS_STRING(raw), <uint32_t>size,
                                 self.last_token, &record)
        self.track(op, rc, record)
        return op

    cdef inline ioc_core *checked_core(self) except NULL:
        if self.core == NULL:
            raise RuntimeError(self.detached)
        return self.core

    cdef inline int track(self, OperationBase op, int rc, ioc_op *record) except -1:
        return self.track_as(op, rc, record, self.last_token)

    cdef int track_as(self, OperationBase op, int rc, ioc_op *record,
                      uint64_t raw_token) except -1:
        token = PyLong_FromUnsignedLongLong(raw_token)
        if rc < 0:
            if record != NULL:
                # Windows: the provider started the operation before it failed
                # the call; the kernel may use the memory until the core says.
                self.strays[token] = (op.buffer, None)
            raise self.os_error(-rc)
        op.token = token
        op.record = <uintptr_t>record
        op.done = False
        op.result = None
        self.ops[token] = op
        return 0

    @property
    def unread(self):
        """(token, result, flags) of the completions of the batch not yet
        dispatched; they are dropped (the port's close looks at them)."""
        out = []
        while self.pos < self.size[0]:
            ev = &self.events[self.pos]
            self.pos += 1
            out.append((ev.token, ev.result, ev.flags))
        return out

    def wait(self, timeout):
        """Wait up to timeout seconds (None: no limit); the count of
        completions waiting to be dispatched."""
        cdef int64_t ns
        if timeout is None:
            ns = -1
        elif timeout <= 0:
            ns = 0
        else:
            ns = <int64_t>(timeout * 1e9)
        return self.wait_ns(ns)

    cdef int wait_ns(self, int64_t ns) except -1:
        cdef int n
        cdef ioc_core *core = self.core
        if core == NULL:
            raise RuntimeError(self.detached)
        if self.pos < self.size[0]:
            return self.size[0] - self.pos   # the rest of a batch cut short
        if self.cancel_later:
            self.retry_cancels()
        self.pos = 0
        self.size[0] = 0
        self.taken += 1
        if ns == 0:
            n = self.wait_fn(core, 0, self.events, self.capacity, self.size)
        else:
            with nogil:
                n = self.wait_fn(core, ns, self.events, self.capacity, self.size)
            # A signal that ended the wait: its Python handler runs now (the
            # batch is kept whatever it raises).
            PyErr_CheckSignals()
        if n < 0:
            raise self.os_error(-n)
        return n

    def run_completed(self, on_error, invoke=None):
        self.dispatch(on_error, invoke)

    cdef int dispatch(self, on_error, invoke) except -1:
        cdef ioc_completion *ev
        cdef dict ops = self.ops
        cdef uint32_t flags
        cdef OperationBase op
        while self.pos < self.size[0]:
            ev = &self.events[self.pos]
            self.pos += 1
            flags = ev.flags
            if flags & self.more_flag and ev.token & ADDRESS_TOKEN:
                # A wakeup of submit_poll_multishot's poll, which stays
                # posted: the token is its address (alive in ops till its end).
                op = <OperationBase><PyObject *><uintptr_t>(ev.token ^ ADDRESS_TOKEN)
            else:
                token = PyLong_FromUnsignedLongLong(ev.token)
                if not flags & (self.more_flag | self.stray_flag):
                    op = <OperationBase?>ops.pop(token)
                    op.done = True
                    op.record = 0        # recycled by the core: never touched again
                elif flags & self.more_flag:   # a multishot wakeup: it stays
                    op = <OperationBase?>ops[token]
                else:   # a stray: the kernel is done with a failed submit's memory
                    self.strays.pop(token, None)
                    continue
            op.result = ev.result
            op.flags = flags
            try:
                if invoke is None:
                    op.complete()
                else:
                    invoke(op)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                on_error(op, exc)
            finally:
                op._cbuf = None          # Operation.release()
        op = None
        return 0

    cdef inline void wake(self) noexcept:
        # Under the GIL, as detach is: the core cannot be freed meanwhile.
        if self.core != NULL:
            self.wakeup_fn(self.core)

    def wakeup(self):
        """Wake a thread blocked in wait.  Safe from any thread (under the
        GIL), and after close."""
        self.wake()


# -- the scheduler ----------------------------------------------------------------


cdef class Scheduler:
    """The scheduling half of the loop (a base of iocploop.Loop)."""

    cdef ReadyQueue ready
    cdef TimerHeap timers
    cdef public bint _stopping
    cdef public bint _closed
    cdef public bint _debug
    cdef public Py_ssize_t _timer_cancelled_count
    cdef public double _clock_resolution
    cdef public object _thread_id
    cdef public object _current_handle
    cdef public object _selector
    cdef CompletionBatch batch
    cdef SocketEngine sockets
    cdef EpollPoller readiness   # Linux: add_reader's epoll set, once used
    cdef object on_completion_error
    cdef object run_completion_timed
    # Linux: TCP transports whose writes wait for the end of the iteration
    # (_stream.pxi, hold_write): each sends them in one system call.
    cdef list unflushed
    cdef unsigned long long iterations
    cdef object iteration_mark   # this iteration's number, an int (stream_write)
    # Linux TCP reads of up to READ_SCRATCH_SIZE land here first
    # (ReadyReader._read_ready); filled and copied under the GIL, by this
    # loop's thread alone.
    cdef char read_scratch[READ_SCRATCH_SIZE]

    def __cinit__(self, *args, **kwargs):
        self.ready = ReadyQueue()
        self.ready.ring = _Ring()
        self.timers = TimerHeap()
        self.unflushed = []

    # BaseEventLoop's own code reads these (close() clears them, the stats
    # count them); __init__ assigns fresh empty containers, which is a no-op.
    @property
    def _ready(self):
        return self.ready

    @_ready.setter
    def _ready(self, value):
        if len(value):
            raise ValueError("the ready queue is the loop's own")

    @property
    def _scheduled(self):
        return self.timers

    @_scheduled.setter
    def _scheduled(self, value):
        if len(value):
            raise ValueError("the timer heap is the loop's own")

    def _attach_port(self, port, on_error, run_timed):
        """The I/O phase of each iteration: port's compiled wait and
        dispatch; on_error(op, exc) and (debug mode) run_timed(op) as the
        loop's own."""
        self._selector = port
        self.batch = port._batch
        self.on_completion_error = on_error
        self.run_completion_timed = run_timed

    def _readiness_handle(self, callback, args):
        """The handle add_reader / add_writer keep for a callback (asyncio's
        events.Handle(callback, args, loop, None), compiled)."""
        self._check_open()
        cdef Handle handle = Handle.__new__(Handle)
        _init_handle(handle, callback, args, self, None)
        if self._debug:
            handle._source_traceback = _extract_stack(_getframe())
        return handle

    def _attach_sockets(self, SocketEngine engine):
        """The sock_* methods' shared state (_sockops.pxi)."""
        self.sockets = engine

    @property
    def _sock_engine(self):
        return self.sockets

    cpdef double time(self) except? -1.0:
        # time.monotonic(), as asyncio's.  A subclass or a test may replace
        # it (on the class or the instance): cpdef calls the replacement.
        return _monotonic_now()

    cdef inline double _now(self) except? -1.0:
        return self.time()

    # -- scheduling --------------------------------------------------------------

    cdef inline int _check_open(self) except -1:
        if self._closed:
            raise RuntimeError("Event loop is closed")
        return 0

    cdef Handle _new_handle(self, callback, tuple args, context, str method, bint check_thread):
        self._check_open()
        if self._debug:
            if check_thread:
                self._check_thread()
            self._check_callback(callback, method)
        cdef Handle handle = Handle.__new__(Handle)
        _init_handle(handle, callback, args, self, context)
        if self._debug:
            # The caller's stack: no frame of ours is in it.
            handle._source_traceback = _extract_stack(_getframe())
        return handle

    # BaseEventLoop's two one-liners that every Future and Task costs a Python
    # frame for (the C Future asks its loop's get_debug when it is made).
    def get_debug(self):
        return self._debug

    def create_future(self):
        """Create a Future attached to the loop."""
        return _Future(loop=self)

    def call_soon(self, callback, *args, context=None):
        cdef Handle handle = self._new_handle(callback, args, context, "call_soon", True)
        self.ready.ring.push(handle)
        return handle

    def call_soon_threadsafe(self, callback, *args, context=None):
        cdef Handle handle = self._new_handle(callback, args, context,
                                              "call_soon_threadsafe", False)
        self.ready.ring.push(handle)
        self.batch.wake()   # the loop's _write_to_self, with no Python call
        return handle

    def _call_soon(self, callback, args, context):
        cdef Handle handle = Handle.__new__(Handle)
        _init_handle(handle, callback, args, self, context)
        if self._debug:
            handle._source_traceback = _extract_stack(_getframe())
        self.ready.ring.push(handle)
        return handle

    def _add_callback(self, handle):
        if not handle._cancelled:
            self.ready.ring.push(handle)

    def call_later(self, delay, callback, *args, context=None):
        if delay is None:
            raise TypeError("delay must not be None")
        return self._call_at(self._now() + delay, callback, args, context)

    def call_at(self, when, callback, *args, context=None):
        if when is None:
            raise TypeError("when cannot be None")
        return self._call_at(when, callback, args, context)

    cdef TimerHandle _call_at(self, when, callback, tuple args, context):
        self._check_open()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        cdef TimerHandle timer = TimerHandle.__new__(TimerHandle)
        _init_handle(timer, callback, args, self, context)
        timer._set_when(when)
        if self._debug:
            timer._source_traceback = _extract_stack(_getframe())
        self.timers.push(timer)
        timer._scheduled = True
        return timer

    def _timer_handle_cancelled(self, handle):
        if handle._scheduled:
            self._timer_cancelled_count += 1

    # -- one iteration -----------------------------------------------------------

    def _run_once(self):
        self._iterate()

    def _run_until_stopped(self):
        """run_forever's loop: iterate until stop() was called."""
        while True:
            self._iterate()
            if self._stopping:
                break

    cdef int _iterate(self) except -1:
        cdef TimerHeap timers = self.timers
        cdef _Ring ready = self.ready.ring
        cdef Py_ssize_t sched_count = timers.count
        cdef TimerHandle timer
        cdef Handle handle
        cdef double end_time, wait
        cdef Py_ssize_t ntodo, i

        self.iterations += 1
        self.iteration_mark = self.iterations
        if (sched_count > _MIN_SCHEDULED_TIMER_HANDLES and
                <double>self._timer_cancelled_count / sched_count
                > _MIN_CANCELLED_TIMER_HANDLES_FRACTION):
            timers.drop_cancelled()
            self._timer_cancelled_count = 0
        else:
            while timers.count and (<TimerHandle>timers.top())._cancelled:
                self._timer_cancelled_count -= 1
                timer = timers.pop()
                timer._scheduled = False

        if self.unflushed:
            flush_writes(self)   # writes made while the loop was not running

        if self.readiness is not None and self.readiness.hot:
            # The epoll set had ready descriptors last time: ask it directly
            # (epoll_wait, no timeout) instead of through a ring poll.
            self.readiness.poll_now()

        cdef int64_t timeout_ns = -1   # no limit
        if ready.count or self._stopping:
            timeout_ns = 0
        elif timers.count:
            wait = timers.when(0) - self._now()
            if wait <= 0:
                timeout_ns = 0
            else:
                if wait > _MAXIMUM_SELECT_TIMEOUT:
                    wait = _MAXIMUM_SELECT_TIMEOUT
                timeout_ns = <int64_t>(wait * 1e9)
        if self.batch.wait_ns(timeout_ns):
            self.batch.dispatch(self.on_completion_error,
                                self.run_completion_timed if self._debug else None)

        end_time = self._now() + self._clock_resolution
        while timers.count:
            if timers.when(0) >= end_time:
                break
            timer = timers.pop()
            timer._scheduled = False
            ready.push(timer)

        ntodo = ready.count
        for i in range(ntodo):
            item = ready.pop()
            if type(item) is Handle or type(item) is TimerHandle:
                handle = <Handle>item
                if handle._cancelled:
                    continue
                if self._debug:
                    self._run_handle_debug(handle)
                else:
                    _run_handle(handle)
            else:
                # Another kind of handle (asyncio.Handle given to
                # _add_callback): its own _run.
                if item._cancelled:
                    continue
                if self._debug:
                    self._run_handle_debug(item)
                else:
                    item._run()
        item = handle = None   # as asyncio: no cycle through an exception
        if self.unflushed:
            flush_writes(self)   # before the next wait, as uvloop's check phase
        return 0

    def _run_handle_debug(self, handle):
        """Debug mode: asyncio's current-handle bookkeeping and its report of
        a slow callback."""
        try:
            self._current_handle = handle
            t0 = self.time()
            handle._run()
            dt = self.time() - t0
            if dt >= self.slow_callback_duration:
                _logger.warning("Executing %s took %.3f seconds",
                                _format_handle(handle), dt)
        finally:
            self._current_handle = None


include "_slots.pxi"
include "_stream.pxi"
include "_sockops.pxi"
include "_datagram.pxi"
include "_readiness.pxi"
