"""The TCP transport on completion operations.

States (each independent):

  reading:  one strategy per platform, in its own file: Linux reads on
            readiness (tcp_linux.py, in compiled code), Windows keeps one
            receive posted (tcp_windows.py).  Pausing and the delivery of
            what was read are base.PausableReading's.
  writing:  idle (nothing in flight) -> sending (one send in flight, later
            writes queue up) -> idle; when the send completes, everything
            queued goes out in one gathered send (WSASend with several
            buffers / SENDMSG).  Write buffer size = bytes in flight + queued.
  closing:  close() stops reading, flushes the writes, then shuts the socket;
            abort() cancels everything at once.  The socket is closed, and
            connection_lost called, only when the kernel has finished every
            operation of the transport (on Linux closing an fd does not cancel
            io_uring operations on it).
"""
from __future__ import annotations

import contextvars
import errno
import functools
import socket
import sys
from asyncio import base_events, constants, futures, protocols, transports

from .._scheduler import bind_tcp_transport, hold_write, stream_is_closing, stream_write
from .._socket_kind import set_nodelay
from .base import PausableReading, QueuedWrites, SocketTransportBase

# How it reads: one strategy per platform, each in its own file.
if sys.platform == "win32":
    from .tcp_windows import CompletionReading as _PlatformReading
else:
    from .tcp_linux import ReadinessReading as _PlatformReading

__all__ = ["TCPTransport"]

_SEND_AT_ONCE = sys.platform != "win32"   # see write()
# Linux: what a send reports when io_uring gives up waiting for room (_on_sent).
_SEND_WOULD_BLOCK = None if sys.platform == "win32" else -errno.EAGAIN
_SERVER_ATTACH_TAKES_TRANSPORT = sys.version_info >= (3, 13)


class TCPTransport(SocketTransportBase, _PlatformReading, PausableReading, QueuedWrites,
                   transports._FlowControlMixin):
    # Slots, not a __dict__: a third less memory per connection (10,000 idle
    # connections are a server's ordinary day).
    __slots__ = ("_sock", "_port", "_server", "_protocol", "_buffered", "_closing",
                 "_conn_lost", "_eof_written", "_want_eof", "_paused", "_recv_op",
                 "_recv_buf", "_recv_for", "_room_wait", "_held", "_send_op",
                 "_in_flight_chunks", "_queue", "_queued_size", "_in_flight_size",
                 "_ops_in_flight", "_lost_exc", "_aborting", "_sock_closed", "_empty_waiter",
                 "_reuse_home", "_recycle_when_idle", "_context", "_recv_cbuf", "_reader",
                 "_flush_due", "_write_iteration", "_trsock", "_sockname", "_peername",
                 "__weakref__")
    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None,
                 reuse_home=None, first_data=b"", peername=None):
        self._init_socket_transport(loop, sock, extra)
        self._server = server
        self._protocol = None
        self._buffered = False
        self._eof_written = False
        self._want_eof = False
        self._paused = False
        self._recv_op = None
        self._recv_buf = None           # reused receive buffer (plain Protocol)
        self._recv_for = None           # the BufferedProtocol the posted receive fills
        self._held = None               # a completed receive held while paused
        self._send_op = None
        self._room_wait = False
        self._in_flight_chunks = None   # what the send in flight carries
        # Queued bytes (a partly sent one: a memoryview of its tail); the
        # deque is made by the first write that has to queue (_write_queue).
        self._queue = None
        self._flush_due = False         # Linux: held for the iteration's end (hold_write)
        self._write_iteration = None    # Linux: the loop iteration of the last send at once
        self._queued_size = 0
        self._in_flight_size = 0
        self._ops_in_flight = 0
        self._empty_waiter = None       # loop.sendfile waits for the writes to drain
        self._reuse_home = reuse_home   # where the socket goes after a clean end (_reuse.py)
        self._recycle_when_idle = False  # once its cancelled receive has completed
        # Protocol callbacks run in the context the transport was made in, as
        # asyncio's (its reader/writer handles copy that context).
        # (A partial per operation, not one kept here: that would be a
        # reference cycle keeping closed transports for the collector.)
        self._context = contextvars.copy_context()
        self._recv_cbuf = None   # Windows: (our receive buffer, its cffi view), reused
        self._reader = self._make_reader(loop)   # Linux: reads on readiness, compiled
        self._port.associate(sock)   # Windows, once: the lean receive path skips it
        self._init_socket_extra(sock, peername)
        set_nodelay(sock)
        self.set_protocol(protocol)
        if server is not None:
            if _SERVER_ATTACH_TAKES_TRANSPORT:
                server._attach(self)
            else:
                server._attach()
        self._loop.call_soon(self._protocol.connection_made, self)
        if first_data:   # a first-data accept brought the connection's first bytes
            self._loop.call_soon(self._on_first_data, first_data, context=self._context)
        else:
            self._loop.call_soon(self._start_reading)
        if waiter is not None:
            self._loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        info = [type(self).__name__]
        if self._sock is None or self._sock_closed:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        if self._sock is not None:
            info.append(f"fd={self._sock.fileno()}")
        info.append("read=paused" if self._paused else "read=polling")
        info.append(f"write=<{'sending' if self._send_op else 'idle'}, "
                    f"bufsize={self.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    # -- protocol -------------------------------------------------------------

    def set_protocol(self, protocol):
        if self._protocol is not None and protocol is not self._protocol:
            # A pause_writing the old protocol got is not the new one's: it
            # must never see a resume_writing without a pause (start_tls
            # swaps in an SSLProtocol that asserts on that).  A later write
            # above the high-water mark pauses the new protocol afresh.
            self._protocol_paused = False
        self._buffered = isinstance(protocol, protocols.BufferedProtocol)
        self._protocol = protocol


    # -- reading --------------------------------------------------------------

    is_closing = stream_is_closing   # compiled: asked once per request by many servers

    def _reading_resumed(self):
        if self._recv_op is None:
            self._loop.call_soon(self._start_reading)
        else:
            self._resumed_while_posted()   # the platform's

    def _on_first_data(self, data):
        if self._closing:
            return
        if self._paused:
            self._held = (data, len(data), None)
            return
        self._deliver(data, len(data), None)

    def _start_reading(self):
        if self._closing or self._paused or self._recv_op is not None or self._held:
            return
        self._post_read()   # the platform's (tcp_linux.py, tcp_windows.py)

    def _read_op_ended(self) -> bool:
        """The read operation (poll or receive) is over; True if the
        transport is closing, which this ending may let finish."""
        self._recv_op = None
        self._ops_in_flight -= 1
        if not self._closing:
            return False
        if self._recycle_when_idle:
            self._recycle()   # it waited for this operation (_release_socket)
        else:
            self._maybe_finish_close()
        return True

    # _deliver's hooks (base.PausableReading): Windows' receives, first data
    def _received_size(self, buf, nbytes, filled_for):
        return nbytes

    def _feed_protocol(self, buf, nbytes, filled_for):
        if self._buffered and filled_for is self._protocol:
            self._protocol.buffer_updated(nbytes)
        elif self._buffered:   # set_protocol() since the receive was posted
            protocols._feed_data_to_buffered_proto(self._protocol,
                                                   bytes(memoryview(buf)[:nbytes]))
        else:
            self._protocol.data_received(bytes(memoryview(buf)[:nbytes]))

    def _read_on(self):
        self._start_reading()

    # -- writing --------------------------------------------------------------

    # Compiled (_stream.pxi): the checks, then Linux holds bytes for one
    # send at the end of the iteration (hold_write, flush_writes).
    write = stream_write

    def _write_queued(self, data):
        """write()'s rest: what was not sent at once is queued."""
        # The caller may reuse a bytearray or memoryview: send a snapshot.
        self._queue_write(data if isinstance(data, bytes) else bytes(data))

    def writelines(self, list_of_data):
        if self._eof_written or self._want_eof:
            raise RuntimeError("Cannot call writelines() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to write; sendfile is in progress")
        if self._conn_lost:
            self._conn_lost += 1
            return
        chunks = []
        for data in list_of_data:   # all checked before any is queued
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"data argument must be a bytes-like object, "
                                f"not {type(data).__name__!r}")
            if data:
                chunks.append(data if isinstance(data, bytes) else bytes(data))
        if _SEND_AT_ONCE:
            for chunk in chunks:
                hold_write(self, chunk)
            return
        for chunk in chunks:
            self._write_queue().append(chunk)
            self._queued_size += len(chunk)
        if self._send_op is None and self._queue and not self._room_wait:
            self._send_queued()
        self._maybe_pause_protocol()

    # QueuedWrites' hooks (base.py)
    _WRITE_ERROR = "Fatal write error on socket transport"

    def _submit_send(self, chunks):
        on_sent = functools.partial(self._context.run, self._on_sent)
        if len(chunks) == 1:
            op = self._port.send(self._sock, chunks[0], on_sent)
        else:
            op = self._port.sendv(self._sock, chunks, on_sent)
        self._ops_in_flight += 1
        return op

    def _send_ended(self, op):
        self._ops_in_flight -= 1

    def _send_would_block(self, op, chunks):
        if op.result != _SEND_WOULD_BLOCK:
            return False
        # io_uring ends a send with EAGAIN, instead of waiting for room, when
        # the peer has shut down its writing side and our buffer is full:
        # wait for room, then send the same bytes.
        self._requeue_unsent(chunks, 0)
        self._wait_for_room()
        return True

    def _all_written(self):
        if self._empty_waiter is not None and not self._empty_waiter.done():
            self._empty_waiter.set_result(None)
        if self._want_eof and not self._eof_written:
            self._shutdown_write()

    def _wait_for_room(self):
        """Linux: wait for room through the loop's epoll set (add_writer's):
        an io_uring poll would end at once, as io_uring always reports the
        peer's shutdown (POLLRDHUP) whatever was asked."""
        self._room_wait = True
        self._loop._add_watch(self._sock, "writer", self._context.run, (self._on_room,))

    def _stop_waiting_for_room(self):
        if self._room_wait:
            self._room_wait = False
            self._loop._remove_watch(self._sock, "writer")

    def _on_room(self):
        self._stop_waiting_for_room()
        if self._queue and not self._sock_closed:
            self._send_queued()   # an error shows in the send itself
        else:
            self._maybe_finish_close()

    def _make_empty_waiter(self):
        """For loop.sendfile: a future done once every queued write went out."""
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._empty_waiter = self._loop.create_future()
        if self._send_op is None and not self._queue:
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _reset_empty_waiter(self):
        self._empty_waiter = None

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self._closing or self._eof_written or self._want_eof:
            return
        self._want_eof = True
        if self._send_op is None and not self._queue:
            self._shutdown_write()   # else when the writes are out (_writes_drained)

    def _shutdown_write(self):
        self._eof_written = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fatal_error(exc, "Fatal error on socket.shutdown()")

    # -- closing --------------------------------------------------------------

    def close(self):
        if self._closing:
            return
        self._closing = True
        if not self._queue and self._send_op is None:
            self._conn_lost += 1   # as asyncio: later writes are dropped
        if self._recv_op is not None:
            self._port.cancel(self._recv_op)
        self._held = None
        self._maybe_finish_close()

    def _forget_writes(self):
        self._queued_size = 0
        self._in_flight_size = 0   # dropped now, as asyncio reports
        self._held = None

    def _kernel_ops(self):
        return [op for op in (self._recv_op, self._send_op) if op is not None]

    def _maybe_finish_close(self):
        """Close the socket once closing and the kernel holds no operation of ours."""
        if not self._closing or self._sock_closed:
            return
        if not self._aborting and (self._queue or self._send_op is not None):
            return   # close(): let the writes drain first
        if self._recv_op is not None and not self._recv_op.done:
            self._port.cancel(self._recv_op)
        if self._send_op is not None:
            return   # the kernel still holds a send (a cancelled one too)
        self._stop_waiting_for_room()
        # A receive still posted is cancelled and completes on its own (its
        # buffer lives in its operation record until then): the socket may
        # close without waiting for it, and connection_lost runs in the next
        # turn, as asyncio's does.  A caller that cancelled
        # create_connection(sock=) then finds its socket closed.  (The loop
        # submits the cancellation before that turn; an io_uring receive holds
        # its own reference to the socket.)
        self._sock_closed = True
        self._loop.call_soon(self._call_connection_lost, self._lost_exc, context=self._context)

    def _recycles(self) -> bool:
        """Whether the socket goes to socket reuse after the end rather than
        being closed: after a clean end of a connection from a reuse pool."""
        return not (self._reuse_home is None or self._aborting or self._lost_exc is not None
                    or self._empty_waiter is not None)

    def _release_socket(self):
        """Close the socket -- or, after a clean end, hand it to socket reuse,
        which disconnects it and pools it for a later connection."""
        if not self._recycles():
            self._reuse_home = None
            self._sock.close()
        elif self._recv_op is None:
            self._recycle()
        else:
            # Reuse takes an idle socket: it goes there when the cancelled
            # receive has completed (_on_recv).  The socket object the
            # caller may hold looks closed from now on, as after a close;
            # get_extra_info('socket') keeps wrapping that object.
            self._transport_socket()
            self._sock = self._loop._recycler.rewrap(self._sock)
            self._recycle_when_idle = True

    def _recycle(self):
        self._recycle_when_idle = False
        home, self._reuse_home = self._reuse_home, None
        self._loop._recycler.recycle(self._sock, home)

    def _call_connection_lost(self, exc):
        if self._empty_waiter is not None and not self._empty_waiter.done():
            self._empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))
        try:
            if self._protocol is not None:
                self._protocol.connection_lost(exc)
        finally:
            self._release_socket()
            self._protocol = None
            # The reader holds this transport: cut the cycle.  (A poll still
            # in flight keeps both until its last completion, which the
            # transport still needs: _on_poll_ended, a recycle.)
            self._reader = None
            server = self._server
            if server is not None:
                if _SERVER_ATTACH_TAKES_TRANSPORT:
                    server._detach(self)
                else:
                    server._detach()
                self._server = None


bind_tcp_transport(TCPTransport)   # the compiled paths read its slots
