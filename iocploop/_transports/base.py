"""What iocploop's transports share.

TransportBase (every transport: sockets here, pipes in pipes.py): the
protocol accessors, abort() and the teardown it starts (_force_close: drop
the writes, cancel what the kernel holds, end when the transport's own
_maybe_finish_close says so), how a fatal error is reported, and what the
end of the peer's data does (_on_eof).

PausableReading and QueuedWrites (TCP and pipes): one machine for pausing,
delivering what was read, and the writes that wait.

SocketTransportBase (TCP in tcp.py, UDP in datagram.py): the socket's
extra info, the unclosed-transport warning and the teardown's socket side.
A transport using it keeps these attributes: _sock, _protocol, _loop,
_port, _closing, _aborting, _sock_closed, _conn_lost, _lost_exc, _queue;
and provides _forget_writes() (drop what is queued or in flight from the
write-buffer count), _kernel_ops() (its operations the kernel may still
hold) and _maybe_finish_close().
"""
from __future__ import annotations

import collections
import warnings
from asyncio import base_events, trsock

from .._sharing import SharedValues

__all__ = ["READ_SIZE_MAX", "READ_SIZE_MIN", "PausableReading", "QueuedWrites",
           "SocketTransportBase", "TransportBase"]


class TransportBase:
    __slots__ = ()   # a subclass may have no __dict__ (TCPTransport's slots)

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    def abort(self):
        self._force_close(None)

    def _force_close(self, exc):
        """Drop the writes and cancel every operation the kernel holds; the
        transport ends, connection_lost(exc), when its _maybe_finish_close
        says so.  The transport provides _ended(), _drop_writes() and
        _kernel_ops()."""
        if self._aborting or self._ended():
            return
        self._aborting = True
        self._closing = True
        self._lost_exc = exc
        self._drop_writes()
        for op in self._kernel_ops():
            self._port.cancel(op)
        self._maybe_finish_close()

    def _fatal_error(self, exc, message="Fatal error on transport"):
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                base_events.logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })
        self._force_close(exc)

    def _write_now(self, write, data, message):
        """Write at once with write(data) (a non-blocking send or os.write):
        the count written, 0 if the kernel buffer is full, or None after an
        error, which is then the transport's fatal error."""
        try:
            return write(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._conn_lost += 1
            self._fatal_error(exc, message)
            return None

    def _on_eof(self):
        """The peer sent all it will: eof_received, then close unless the
        protocol keeps the transport half open and it can be."""
        if self._loop.get_debug():
            base_events.logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not (keep_open and self._can_stay_half_open()):
            self.close()

    def _can_stay_half_open(self) -> bool:
        return True


class PausableReading:
    """pause_reading / resume_reading, as asyncio's, for the TCP and pipe
    transports.  A pause stops deliveries; what the kernel brings meanwhile
    is held (_held: the arguments of the transport's _deliver) and
    delivered in the turn after resume_reading, unless paused again by
    then.  The transport provides _reading_paused() (stop asking the kernel,
    if it can) and _reading_resumed() (ask again, nothing being held), and
    the hooks of _deliver.  (Linux TCP delivers its reads on readiness in
    compiled code instead: _stream.pxi.)"""
    __slots__ = ()

    def is_reading(self):
        return not self._paused and not self._closing

    def pause_reading(self):
        if self._closing or self._paused:
            return
        self._paused = True
        self._reading_paused()
        if self._loop.get_debug():
            base_events.logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        if self._held is not None:
            self._loop.call_soon(self._deliver_held, context=self._context)
        else:
            self._reading_resumed()
        if self._loop.get_debug():
            base_events.logger.debug("%r resumes reading", self)

    def _deliver_held(self):
        if self._paused or self._closing or self._held is None:
            return   # paused again before this ran: the data stays held
        held, self._held = self._held, None
        self._deliver(*held)

    def _deliver(self, *received):
        """Hand what a read brought to the protocol (nothing: the end of
        file), then read on.  The transport provides _received_size,
        _feed_protocol and _read_on for its kind of read."""
        if self._closing:
            return
        if not self._received_size(*received):
            self._on_eof()
            return
        try:
            self._feed_protocol(*received)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
            return
        self._read_on()


class QueuedWrites:
    """The writes a transport could not finish at once, for the TCP and pipe
    transports: a queue of bytes (a partly written one as a view of its
    tail), which leaves in one operation at a time -- a gathered one of up
    to MAX_GATHER chunks where the kernel can gather -- and asyncio's flow
    control on the bytes queued and in flight.  A short write puts the rest
    back at the front, chunk by chunk, never copying the backlog again.

    The transport provides _submit_send(chunks) (the operation, or None
    after reporting its failure), _send_ended(op), _all_written() (what
    waited for the queue to empty), _WRITE_ERROR, and may override
    _send_would_block(op, chunks)."""
    __slots__ = ()

    MAX_GATHER = 64

    def get_write_buffer_size(self):
        return self._queued_size + self._in_flight_size

    def _write_queue(self):
        if self._queue is None:
            self._queue = collections.deque()
        return self._queue

    def _queue_write(self, chunk):
        """Queue what a write could not finish at once (bytes, or a view of
        bytes: nothing may change it), sent now if nothing is in flight."""
        self._write_queue().append(chunk)
        self._queued_size += len(chunk)
        if self._send_op is None:
            self._send_queued()
        self._maybe_pause_protocol()

    def _send_queued(self):
        """Send what is queued (up to MAX_GATHER chunks) in one operation."""
        queue = self._queue
        if len(queue) == 1:
            chunks = [queue.popleft()]
        else:
            chunks = [queue.popleft() for _ in range(min(len(queue), self.MAX_GATHER))]
        size = sum(map(len, chunks))
        self._queued_size -= size
        self._in_flight_size = size
        try:
            op = self._submit_send(chunks)
        except OSError as exc:
            op = None
            self._fatal_error(exc, self._WRITE_ERROR)
        if op is None:
            self._in_flight_size = 0
            return
        self._send_op = op
        self._in_flight_chunks = chunks

    def _on_sent(self, op):
        self._send_op = None
        self._send_ended(op)
        sent_size, self._in_flight_size = self._in_flight_size, 0
        chunks, self._in_flight_chunks = self._in_flight_chunks, None
        if self._aborting:
            self._maybe_finish_close()   # the writes were dropped
            return
        if op.result < 0:
            if self._send_would_block(op, chunks):
                return
            if not op.cancelled:
                self._conn_lost += 1
                self._fatal_error(op.error, self._WRITE_ERROR)
            self._maybe_finish_close()
            return
        if op.result < sent_size:
            self._requeue_unsent(chunks, op.result)
        if self._queue:
            self._send_queued()
        self._writes_drained()

    def _send_would_block(self, op, chunks) -> bool:
        return False

    def _requeue_unsent(self, chunks, sent):
        """Put what was not written back at the front of the queue."""
        for i, chunk in enumerate(chunks):
            if sent < len(chunk):
                break
            sent -= len(chunk)
        rest = chunks[i:]
        if sent:
            rest[0] = memoryview(rest[0])[sent:]
        self._write_queue().extendleft(reversed(rest))
        self._queued_size += sum(map(len, rest))

    def _writes_drained(self):
        """Writes went out: resume the protocol below the low-water mark;
        with nothing left to write, what waited for that goes on."""
        self._maybe_resume_protocol()
        if self._send_op is None:
            if not self._queue:
                self._all_written()
            self._maybe_finish_close()


# Equal local addresses share one tuple (_sharing.py).
_LOCAL_ADDRESSES = SharedValues(256)
_DEFAULT_LOW_WATER = 16 * 1024   # asyncio's default (a quarter of 64 KiB)

# A stream transport's reads: up to what asyncio's transports read at once
# (256 KiB); TCP's start small, so that idle connections stay cheap, and
# double while reads fill them.
READ_SIZE_MIN = 16 * 1024
READ_SIZE_MAX = 256 * 1024


def _shared_address(address):
    if type(address) is not tuple:
        return address   # None, or an AF_UNIX path
    return _LOCAL_ADDRESSES.get(address) or _LOCAL_ADDRESSES.keep(address, address)


class SocketTransportBase(TransportBase):
    """get_extra_info's socket, sockname and peername live in slots
    (_trsock, _sockname, _peername) rather than in the extra dict, which
    stays None unless the maker passed extras: that dict and the
    TransportSocket were a quarter of an idle connection's memory."""
    __slots__ = ()

    def _init_socket_transport(self, loop, sock, extra):
        """The state every socket transport starts with (asyncio's flow
        control included: _FlowControlMixin, next in the MRO)."""
        super().__init__(extra, loop)
        self._extra = extra   # None: no dict (get_extra_info below)
        self._sock = sock
        self._port = loop._port
        self._closing = False
        self._conn_lost = 0
        self._sock_closed = False
        self._aborting = False
        self._lost_exc = None

    def _init_socket_extra(self, sock, peername=None):
        """Note sockname and peername, as asyncio's transports do when made
        (they stay readable after the socket closes).  peername: the
        accepted peer's address, if the caller knows it already."""
        self._trsock = None   # get_extra_info('socket') makes it
        self._loop._transports[sock.fileno()] = self   # add_reader refuses its fd
        try:
            self._sockname = _shared_address(sock.getsockname())
        except OSError:
            self._sockname = None
        if peername is None and self._extra is not None:
            peername = self._extra.get("peername")
        if peername is None:
            try:
                peername = sock.getpeername()
            except OSError:
                peername = None
        self._peername = peername

    def get_extra_info(self, name, default=None):
        if name == "peername":
            return self._peername
        if name == "sockname":
            return self._sockname
        if name == "socket":
            return self._transport_socket()
        extra = self._extra
        return default if extra is None else extra.get(name, default)

    def _set_write_buffer_limits(self, high=None, low=None):
        # (_FlowControlMixin's, next in the MRO.)  Its default low-water
        # mark is computed, a new int per transport; this one is shared.
        super()._set_write_buffer_limits(high, low)
        if self._low_water == _DEFAULT_LOW_WATER:
            self._low_water = _DEFAULT_LOW_WATER

    def _transport_socket(self):
        """The TransportSocket of get_extra_info('socket'): made once, on
        first asking (a transport that hands its socket to socket reuse makes
        it first, so that it keeps wrapping this connection's socket)."""
        trsock_ = self._trsock
        if trsock_ is None:
            trsock_ = self._trsock = trsock.TransportSocket(self._sock)
        return trsock_

    def __del__(self, _warn=warnings.warn):
        if self._sock is not None and not self._sock_closed:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()

    def _ended(self) -> bool:
        return self._sock_closed

    def _drop_writes(self):
        if self._queue:   # (a TCP transport that never queued has None)
            self._queue.clear()
        self._forget_writes()
        if not self._conn_lost:
            self._conn_lost = 1
