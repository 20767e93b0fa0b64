"""The UDP transport on completion operations.

  receiving: one strategy per platform, in its own file: Windows keeps
             several receives posted (datagram_windows.py); Linux keeps one
             posted and drains a burst when it completes (datagram_linux.py).
  sending:   sendto is compiled (_datagram.pxi).  Linux sends at once when
             nothing is queued (a UDP send rarely blocks; that saves a
             completion per datagram), up to _SEND_AT_ONCE_MAX per pass of
             the loop, with the socket address of a numeric destination
             parsed once and kept.  What would block, what exceeds that and
             everything on Windows is queued: one sendmsg per datagram, up
             to _SENDS_IN_FLIGHT at once.  The write buffer size counts
             queued and in-flight bytes, for pause_writing / resume_writing.
  errors:    as asyncio's datagram transports: an OSError of a receive or a
             send (an ICMP port-unreachable reported on a connected socket,
             a datagram too large, ...) goes to protocol.error_received and
             the transport goes on.
  closing:   close() stops reading, flushes the queued datagrams, then
             closes; abort() drops them.  The socket is closed and
             connection_lost called in the next turn, as asyncio's, even
             while cancelled operations are still in the kernel.

Arrival interface (iocploop's extension, docs/udp.md): a protocol that
defines datagram_received_on(data, addr, local_address) gets each datagram
with the local address it arrived on (IP_PKTINFO / IPV6_PKTINFO through
WSARecvMsg or recvmsg), instead of datagram_received; replies sent with
sendto(data, addr) then leave from the address the peer last wrote to (or
from sendto(..., source=address)).
"""
from __future__ import annotations

import collections
import contextvars
import functools
import socket
import sys
from asyncio import futures, transports

from .._scheduler import SendAddresses, bind_datagram_transport, datagram_sendto
from .base import SocketTransportBase

# How it receives: one strategy per platform, each in its own file.
if sys.platform == "win32":
    from .datagram_windows import PostedReceives as _PlatformReceiving
else:
    from .datagram_linux import DrainingReceives as _PlatformReceiving

# Errors a receive may report about earlier datagrams (ICMP), not about the socket.
_DATAGRAM_ERRORS = (ConnectionRefusedError, ConnectionResetError)

__all__ = ["DatagramTransport", "DatagramMethods"]

_RECV_SIZE = 65536                  # the largest UDP payload fits
_SENDS_IN_FLIGHT = 8
_SEND_AT_ONCE_MAX = 128
_ARRIVALS_REMEMBERED = 4096         # peers whose arrival address replies reuse
_AF_UNIX = getattr(socket, "AF_UNIX", None)
_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_SENDS_EMPTY_DATAGRAMS = sys.version_info >= (3, 13)   # asyncio changed in 3.13
# asyncio 3.12+ counts a per-datagram header in the write buffer size.
_HEADER_SIZE = 8 if sys.version_info >= (3, 12) else 0


class DatagramTransport(SocketTransportBase, _PlatformReceiving, transports._FlowControlMixin,
                        transports.DatagramTransport):
    # Slots, which the compiled sendto and drain read at their offsets.
    __slots__ = ("_sock", "_port", "_protocol", "_address", "_closing", "_conn_lost",
                 "_sock_closed", "_aborting", "_recv_ops", "_send_ops", "_queue",
                 "_buffer_size", "_arrivals", "_lost_exc", "_error_in_batch",
                 "_send_budget", "_context", "_on_recv_in_context", "_on_sent_in_context",
                 "_connected", "_send_addresses", "_trsock", "_sockname", "_peername",
                 "__weakref__")
    max_size = _RECV_SIZE
    _INET_FAMILIES = _INET_FAMILIES
    sendto = datagram_sendto   # compiled; its slow half is _sendto_queued

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        self._init_socket_transport(loop, sock, extra)
        self._protocol = protocol
        self._address = address
        self._recv_ops = set()
        self._send_ops = set()
        self._queue = collections.deque()   # (bytes, address, source)
        self._buffer_size = 0
        self._arrivals = None
        self._error_in_batch = None     # receive error already reported this batch
        self._send_budget = _SEND_AT_ONCE_MAX   # Linux: sends done at once this pass
        # Protocol callbacks run in the context the endpoint was made in, as
        # asyncio's (its reader callback keeps the context of its creation).
        context = self._context = contextvars.copy_context()
        self._on_recv_in_context = functools.partial(context.run, self._on_recv)
        self._on_sent_in_context = functools.partial(context.run, self._on_sent)
        self._prepare_socket(sock)
        self._init_socket_extra(sock)
        # Connected: it has a peer (an AF_UNIX peer may be unnamed: '').
        self._connected = self._peername is not None
        if callable(getattr(protocol, "datagram_received_on", None)):
            try:
                self._enable_arrival_info()
            except BaseException:
                self._sock_closed = True   # the endpoint never existed
                sock.close()
                raise
        self._send_addresses = SendAddresses(sock.family)
        self._loop.call_soon(self._protocol.connection_made, self)
        self._loop.call_soon(self._start_reading)
        if waiter is not None:
            self._loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def _enable_arrival_info(self):
        self._check_arrival_info()
        self._port.enable_pktinfo(self._sock)
        self._arrivals = collections.OrderedDict()

    def __repr__(self):
        state = "closed" if self._sock_closed else "closing" if self._closing else "open"
        fd = self._sock.fileno() if self._sock is not None else -1
        return (f"<{type(self).__name__} {state} fd={fd} "
                f"bufsize={self.get_write_buffer_size()}>")

    # -- protocol / state -----------------------------------------------------

    def set_protocol(self, protocol):
        self._protocol = protocol


    def get_write_buffer_size(self):
        return self._buffer_size

    # -- receiving ------------------------------------------------------------

    def _start_reading(self):
        for _ in range(self._RECVS_POSTED - len(self._recv_ops)):
            if not self._post_recv(bytearray(_RECV_SIZE)):
                return

    def _post_recv(self, buf) -> bool:
        if self._closing:
            return False
        try:
            op = self._port.recvmsg(self._sock, buf, self._on_recv_in_context,
                                    pktinfo=self._arrivals is not None)
        except OSError as exc:
            if isinstance(exc, _DATAGRAM_ERRORS):
                # An ICMP error Winsock reports when the receive is posted:
                # the endpoint hears of it and goes on, as after a failed
                # receive.
                self._report_receive_error(getattr(exc, "winerror", None) or exc.errno, exc)
                self._loop.call_soon(self._post_recv, buf)
                return True
            self._fatal_error(exc, "Fatal read error on datagram transport")
            return False
        self._recv_ops.add(op)
        return True

    def _on_recv(self, op):
        self._recv_ops.discard(op)
        if self._closing:
            self._maybe_finish_close()
            return
        try:
            if op.result < 0:
                if not op.cancelled and op.result != self._NOTHING_RECEIVED:
                    self._receive_failed(op)
            else:
                self._deliver(op.buffer, op.message())
                self._after_receive(op.buffer)
        finally:
            # A protocol that raised still gets the next datagram.
            self._post_recv(op.buffer)

    def _receive_failed(self, op):
        self._report_receive_error(op.result, op.error)

    def _report_receive_error(self, code, exc):
        if self._unreported(exc):
            return
        # One ICMP error can fail every posted receive at once (Wine does
        # so): report it once per batch of completions, as one receive would.
        if code == self._error_in_batch:
            return
        if self._error_in_batch is None:
            self._loop.call_soon(self._end_error_batch)
        self._error_in_batch = code
        self._protocol.error_received(exc)

    def _end_error_batch(self):
        self._error_in_batch = None

    def _deliver(self, buf, message):
        nbytes, addr, _flags, local = message
        data = bytes(memoryview(buf)[:nbytes])
        if addr is None and self._sock.family != _AF_UNIX:
            addr = self._peername
        if self._arrivals is None:
            self._protocol.datagram_received(data, addr)
            return
        if local is not None:
            self._remember_arrival(addr, local)
        self._protocol.datagram_received_on(data, addr, local)

    def _remember_arrival(self, addr, local):
        arrivals = self._arrivals
        key = addr[:2]
        arrivals[key] = local
        arrivals.move_to_end(key)
        if len(arrivals) > _ARRIVALS_REMEMBERED:
            arrivals.popitem(last=False)

    # -- sending --------------------------------------------------------------

    def _sendto_by_socket(self, data, addr):
        """sendto's send at once, by the socket module: a destination that
        is no numeric address of the socket's family (a host name, '',
        '<broadcast>', a malformed one: what it raises is reported as
        asyncio reports it)."""
        try:
            self._sock.sendto(data, addr)
            return
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:   # a malformed address, as asyncio handles it
            self._fatal_error(exc, "Fatal write error on datagram transport")
            return
        self._sendto_queued(data, addr, None)

    def _sendto_queued(self, data, addr, source):
        self._queue.append((bytes(data), addr, source))
        self._buffer_size += len(data) + _HEADER_SIZE
        self._send_queued()
        self._maybe_pause_protocol()

    def _refill_send_budget(self):
        self._send_budget = _SEND_AT_ONCE_MAX

    def _send_queued(self):
        while self._queue and len(self._send_ops) < _SENDS_IN_FLIGHT:
            data, addr, source = self._queue.popleft()
            try:
                try:
                    op = self._port.sendmsg(self._sock, [data], addr, self._on_sent_in_context, source)
                except OSError:
                    if addr is None:
                        raise
                    # A host name: resolved as socket.sendto resolves it.
                    addr = self._resolve(addr)
                    op = self._port.sendmsg(self._sock, [data], addr, self._on_sent_in_context, source)
            except OSError as exc:
                self._buffer_size -= len(data) + _HEADER_SIZE
                self._protocol.error_received(exc)
                continue
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:   # a malformed address or source
                self._buffer_size -= len(data) + _HEADER_SIZE
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
            self._send_ops.add(op)

    def _resolve(self, addr):
        infos = socket.getaddrinfo(addr[0], addr[1], self._sock.family, socket.SOCK_DGRAM)
        return infos[0][4]

    def _on_sent(self, op):
        self._send_ops.discard(op)
        if self._sock_closed:
            return   # aborted: the protocol has been told of the end already
        if not self._aborting:   # abort() already emptied the count
            self._buffer_size -= len(op.buffer[0]) + _HEADER_SIZE
        if op.result < 0 and not op.cancelled:
            try:
                self._protocol.error_received(op.error)
            finally:
                self._after_send()
            return
        self._after_send()

    def _after_send(self):
        if not self._aborting:
            self._send_queued()
        self._maybe_resume_protocol()
        self._maybe_finish_close()

    # -- closing --------------------------------------------------------------

    def close(self):
        if self._closing:
            return
        self._closing = True
        if not self._queue and not self._send_ops:
            self._conn_lost += 1
        for op in list(self._recv_ops):
            self._port.cancel(op)
        self._maybe_finish_close()

    def _forget_writes(self):
        self._buffer_size = 0

    def _kernel_ops(self):
        return list(self._recv_ops) + list(self._send_ops)

    def _maybe_finish_close(self):
        """Close once closing and, for close(), every queued datagram is sent.
        Operations the kernel still holds (cancelled receives, aborted sends)
        do not delay it: they complete on their own, their buffers kept in
        their operation records until then.  The socket closes and
        connection_lost runs in the next turn, as asyncio's.  (The cancels
        reach the kernel before that turn; an io_uring operation holds its
        own reference to the socket, and Windows aborts a closed socket's.)"""
        if not self._closing or self._sock_closed:
            return
        if not self._aborting and (self._queue or self._send_ops):
            return   # close(): the queued datagrams go out first
        self._sock_closed = True
        # In the transport's context, as its other protocol callbacks, from
        # whichever context close() was called.
        self._loop.call_soon(self._call_connection_lost, self._lost_exc, context=self._context)

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            self._protocol = None


class DatagramMethods:
    """Mixin for Loop: the hook BaseEventLoop.create_datagram_endpoint calls
    (it does the option handling: local_addr, remote_addr, reuse_port,
    allow_broadcast, sock, ...)."""

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        return DatagramTransport(self, sock, protocol, address, waiter, extra)


bind_datagram_transport(DatagramTransport, _SEND_AT_ONCE_MAX)   # for the compiled paths
