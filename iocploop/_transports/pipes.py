"""Pipe transports on completion operations: connect_read_pipe,
connect_write_pipe, the pipes of subprocesses and Windows named pipes.

A pipe is a handle (Windows, opened for overlapped I/O) or a file
descriptor (Linux) read and written with `CompletionPort.read` / `write`
(ReadFile / WriteFile; io_uring READ / WRITE).  States, as in the TCP
transport:

  reading:  one read posted while reading.  pause_reading leaves it posted;
            data it brings while paused is held until resume_reading.
            End of file (0 bytes; Windows: ERROR_BROKEN_PIPE) gives
            eof_received, then the transport closes.
  writing:  Linux writes at once when idle (os.write, as asyncio does) and
            hands the rest, if the pipe is full, to the completion path.
            Windows posts every write.
            idle -> one write in flight, later writes queue -> the queue
            leaves as one write when the write in flight completes.  A short
            write sends the rest.  Flow control is asyncio's
            (_FlowControlMixin: pause_writing above the high-water mark).
  watching: a write-only pipe watches for its reader going away while it is
            idle (Linux: a poll; Windows: a read posted on the handle).  As
            asyncio's Unix transport does, the transport then closes:
            connection_lost(None), or BrokenPipeError if data was waiting to
            be written.

What differs by platform (the handle's checks, the end of file, writing at
once, the watch) is in its own file: pipes_linux.py, pipes_windows.py.
  closing:  close() stops reading and flushes the writes; abort() drops
            them.  connection_lost runs, and the pipe is closed, only after
            the kernel has finished every operation of the transport.
"""
from __future__ import annotations

import contextvars
import functools
import os
import sys
import warnings
from asyncio import base_events, constants, futures, transports

from .base import READ_SIZE_MAX, PausableReading, QueuedWrites, TransportBase

# The platform's I/O: one strategy per platform, each in its own file.
if sys.platform == "win32":
    from .pipes_windows import HandlePipes as _PlatformPipes
else:
    from .pipes_linux import FdPipes as _PlatformPipes

__all__ = ["ReadPipeTransport", "WritePipeTransport", "DuplexPipeTransport"]


def _pipe_handle(pipe) -> int:
    """The handle (Windows) or fd (Linux) of a pipe object, checked."""
    fd = pipe.fileno()
    if not isinstance(fd, int):
        raise TypeError(f"pipe.fileno() returned {fd!r}, not an integer")
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return _PlatformPipes._checked_handle(fd)


class _PipeBase(_PlatformPipes, TransportBase):
    """What every pipe transport shares: the handle, the operations the
    kernel holds, and a close that waits for them."""

    def _init_pipe(self, loop, pipe, protocol, extra):
        if isinstance(self, transports._FlowControlMixin):
            transports._FlowControlMixin.__init__(self, extra, loop)
        else:
            transports.BaseTransport.__init__(self, extra)
        self._pipe = None            # set once the pipe passed its checks
        self._loop = loop
        self._port = loop._port
        self._protocol = protocol
        self._closing = False
        self._aborting = False
        self._lost_exc = None
        self._lost_scheduled = False
        self._handle_closed = False
        self._ops = set()            # operations the kernel still holds
        # Protocol callbacks run in the context the transport was made in,
        # as asyncio's (its reader callback keeps the context of its creation).
        self._context = contextvars.copy_context()
        self._handle = _pipe_handle(pipe)
        self._pipe = pipe
        self._extra["pipe"] = pipe

    def _start(self, waiter):
        """connection_made in the next turn, then the caller's waiter; a
        reading transport posts its read now (a peer already gone is seen
        at once), and what it brings waits for connection_made."""
        self._loop._port.associate_handle(self._handle)
        self._loop.call_soon(self._connection_made)
        if isinstance(self, _Reading):
            self._post_read()
        if waiter is not None:
            self._loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        state = "closed" if self._pipe is None else "closing" if self._closing else "open"
        return (f"<{type(self).__name__} {self._HANDLE_WORD}={self._handle} "
                f"{state}>")

    def __del__(self, _warn=warnings.warn):
        if getattr(self, "_pipe", None) is not None and not self._lost_scheduled:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            if not self._ops:
                self._pipe.close()

    def set_protocol(self, protocol):
        self._protocol = protocol

    def _in_context(self, callback):
        return functools.partial(self._context.run, callback)

    def _submit(self, submit, *args):
        """Submit one operation of this transport; None if the port refused
        (the error is then the transport's fatal error)."""
        try:
            op = submit(self._handle, *args)
        except (OSError, RuntimeError) as exc:
            self._fatal_error(exc, "Fatal error submitting a pipe operation")
            return None
        self._ops.add(op)
        return op

    def _done(self, op) -> None:
        self._ops.discard(op)

    # TransportBase._force_close's hooks
    def _ended(self) -> bool:
        return self._lost_scheduled

    def _drop_writes(self):
        pass   # (_Writing's)

    def _kernel_ops(self):
        return list(self._ops)

    def _writes_pending(self) -> bool:
        return False

    def _maybe_finish_close(self):
        """connection_lost once closing, with no write left to flush and no
        operation in the kernel."""
        if not self._closing or self._lost_scheduled:
            return
        if self._writes_pending() and not self._aborting:
            return
        # Flushed: what is still posted (a read, a watch, an aborted write)
        # is cancelled and completes on its own later, its buffer kept in
        # its operation record.  The handle closes now (a named pipe's name
        # goes with its last handle) and the protocol hears in the next
        # turn, as with asyncio.  (An io_uring operation holds its own
        # reference to the file; Windows ends a closed handle's I/O.)
        for op in self._kernel_ops():
            self._port.cancel(op)
        self._lost_scheduled = True
        self._close_handle()
        self._loop.call_soon(self._call_connection_lost, self._lost_exc, context=self._context)

    def _close_handle(self):
        if not self._handle_closed:
            self._handle_closed = True
            self._port.forget_handle(self._handle)
            self._pipe.close()

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._pipe = None
            self._protocol = None


class _Reading(PausableReading):
    """One read posted at a time; pause holds, never cancels."""

    def _init_reading(self):
        self._made = False           # connection_made has run
        self._early = None           # data (or b"" for EOF) that came before it
        self._paused = False
        self._read_op = None
        self._on_read_in_context = self._in_context(self._on_read)
        self._held = None            # (data,) read while paused (b"": end of file)

    def _reading_paused(self):
        pass   # the posted read stays: cancelling it could lose what it read

    def _reading_resumed(self):
        if self._read_op is None:
            self._post_read()

    def _post_read(self):
        if self._closing or self._paused or self._read_op is not None:
            return
        try:
            # Read straight into a new bytes object: no copy to deliver it.
            op = self._port.read_bytes(self._handle, READ_SIZE_MAX, self._on_read_in_context)
        except OSError as exc:
            if self._is_end_of_file(exc):
                # Windows: the other end was gone before the read was posted: ReadFile
                # says so at once, and that is end of file too.  With nothing
                # else in flight the dead handle closes now (a named pipe's
                # name goes with its last handle); the protocol still hears
                # of the end in order.
                if not self._ops:
                    self._close_handle()
                self._loop.call_soon(self._deliver_or_hold, b"")
            else:
                self._fatal_error(exc, "Fatal read error on pipe transport")
            return
        except RuntimeError as exc:   # the port is closed
            self._fatal_error(exc, "Fatal read error on pipe transport")
            return
        self._ops.add(op)
        self._read_op = op

    def _on_read(self, op):
        self._done(op)
        self._read_op = None
        if self._closing:
            self._maybe_finish_close()
            return
        if op.result < 0:
            exc = op.error
            if self._is_end_of_file(exc):
                data = b""
            else:
                self._fatal_error(exc, "Fatal read error on pipe transport")
                return
        else:
            data = op.buffer
        self._deliver_or_hold(data)

    def _connection_made(self):
        self._protocol.connection_made(self)
        # Deliveries start in the next turn, together with the resumption of
        # the connect_*_pipe caller (its waiter is set right after this), as
        # with asyncio's ordering.  asyncio's subprocess transport relies on
        # it: a pipe whose end of file came at once (a child killed while its
        # pipes were being connected) must not lose its connection before
        # the transport has recorded the pipe.
        self._loop.call_soon(self._start_delivering)

    def _start_delivering(self):
        self._made = True
        early, self._early = self._early, None
        if early is not None:
            self._deliver_or_hold(early)

    def _deliver_or_hold(self, data):
        if not self._made:
            self._early = data
        elif self._paused:
            self._held = (data,)
        else:
            self._deliver(data)

    # _deliver's hooks (base.PausableReading)
    def _received_size(self, data):
        return len(data)

    def _feed_protocol(self, data):
        self._protocol.data_received(data)

    def _read_on(self):
        self._post_read()

    def _can_stay_half_open(self):
        return isinstance(self, _Writing)   # a read-only pipe has nothing left to do


class _Writing(QueuedWrites):
    """Writes: Linux writes at once when idle; the rest is queued, one write
    operation in flight (base.QueuedWrites); asyncio's flow control."""

    _WRITE_ERROR = "Fatal write error on pipe transport"

    def _init_writing(self):
        self._os_write = functools.partial(os.write, self._handle)   # (Linux's _write_at_once)
        self._send_op = None
        self._in_flight_chunks = None
        self._in_flight_size = 0     # bytes of the write in flight
        self._queue = None
        self._queued_size = 0
        self._eof_wanted = False
        self._conn_lost = 0

    def can_write_eof(self):
        return True

    def write(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self._closing or self._eof_wanted or self._handle_closed:
            # Dropped, as asyncio's pipe transports drop it.
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                base_events.logger.warning("pipe closed by peer or "
                                           "os.write(pipe, data) raised exception.")
            self._conn_lost += 1
            return
        if not data:
            return
        # Linux writes what the pipe takes now; the rest goes to the
        # completion path (the platform's file says why).
        data = self._write_at_once(data)
        if data is None:
            return
        # The rest is kept until written: a bytes object as it is (nothing
        # can change it), anything else copied, since the caller may reuse
        # its buffer while the kernel reads ours.
        if type(data) is not bytes and not (type(data) is memoryview
                                            and type(data.obj) is bytes):
            data = bytes(data)
        self._queue_write(data)

    def writelines(self, list_of_data):
        for data in list_of_data:
            self.write(data)

    # QueuedWrites' hooks (base.py).  A pipe write takes one buffer: the
    # chunks are joined (a short write still puts back only the rest).
    def _submit_send(self, chunks):
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._submit(self._port.write, data, self._in_context(self._on_sent))

    def _send_ended(self, op):
        self._done(op)

    def _all_written(self):
        if self._eof_wanted:
            self._closing = True

    def write_eof(self):
        if self._closing or self._eof_wanted:
            return
        self._eof_wanted = True
        if isinstance(self, _Reading):
            # A duplex pipe has no half-close: the write side ends with it.
            self.close()
            return
        self._closing = True
        self._maybe_finish_close()

    def _writes_pending(self):
        return self._send_op is not None or bool(self._queue)

    def _drop_writes(self):
        if self._queue:
            self._queue.clear()
        self._queued_size = 0
        self._in_flight_size = 0


class ReadPipeTransport(_Reading, _PipeBase, transports.ReadTransport):

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        self._init_pipe(loop, pipe, protocol, extra)
        self._init_reading()
        self._start(waiter)

    def close(self):
        if not self._closing:
            self._closing = True
            self._maybe_finish_close()


class WritePipeTransport(_Writing, _PipeBase, transports._FlowControlMixin):

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        self._init_pipe(loop, pipe, protocol, extra)
        self._init_writing()
        self._watch_op = None
        self._watch_buf = None
        self._start(waiter)

    def close(self):
        if not self._closing:
            self.write_eof()

    def _connection_made(self):
        self._protocol.connection_made(self)
        # The watch starts in the next turn, with the resumption of the
        # connect_write_pipe caller: a reader gone already must not close the
        # transport before the caller has it (see _Reading._connection_made).
        self._loop.call_soon(self._watch_reader)

    def _watch_reader(self):
        """Be told when the reading end goes away (see the module doc)."""
        if self._closing:
            return
        try:
            op = self._submit_watch()
        except OSError as exc:
            if self._is_end_of_file(exc):
                self._reader_gone()   # gone already
            return   # else a one-way handle: the next write tells instead
        if op is None:
            return   # nothing to watch
        self._ops.add(op)
        self._watch_op = op

    def _on_watch_done(self, op):
        self._done(op)
        self._watch_op = None
        if self._closing:
            self._maybe_finish_close()
            return
        if self._watch_means_reader_gone(op):
            self._reader_gone()

    def _reader_gone(self):
        self._force_close(BrokenPipeError() if self._writes_pending() else None)


class DuplexPipeTransport(_Reading, _Writing, _PipeBase, transports._FlowControlMixin):
    """Both directions of a Windows named pipe."""

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        self._init_pipe(loop, pipe, protocol, extra)
        self._init_reading()
        self._init_writing()
        self._start(waiter)

    def can_write_eof(self):
        return False

    def close(self):
        if not self._closing:
            self._closing = True
            self._maybe_finish_close()
