"""The accepts posted on one listening socket (one _AcceptPool per listener).

* `size` accepts are kept posted at all times (Windows: AcceptEx into
  sockets made ahead of need -- or recycled ones, see _reuse.py --
  GetAcceptExSockaddrs, SO_UPDATE_ACCEPT_CONTEXT; Linux: io_uring accept);
* an accept that fails for one connection never stops the listener;
* when the server closes, pending accepts are cancelled, and a connection the
  kernel accepted in that race is closed, not leaked;
* first-data mode (create_server(first_data_timeout=...)): connections reach
  the protocol with their first bytes, silent ones are dropped
  (docs/scalability.md).
"""
from __future__ import annotations

import contextvars
import errno
import functools
import math
import socket
from asyncio import constants, sslproto

from ._port import IS_WINDOWS
from ._reuse import SparePool
from ._transports import TCPTransport

__all__ = ["AcceptPool", "DEFAULT_ACCEPT_POOL_SIZE"]

#: Accepts kept posted per listening socket (libuv posts 32 on Windows).
DEFAULT_ACCEPT_POOL_SIZE = 32

#: First-data mode: bytes that may arrive with an accepted connection.
_FIRST_DATA_SIZE = 4096
_SO_CONNECT_TIME = 0x700C   # Windows: seconds since the peer connected

# Errors after which accepting at once would fail again: wait, then retry.
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class AcceptPool:
    """The accepts posted on one listening socket, their spare (recycled)
    sockets, and the first-data guard."""

    def __init__(self, loop, sock, protocol_factory, server, size, first_data_timeout=None,
                 tls=None):
        self._loop = loop
        self._port = loop._port
        # Connections are made in the context create_server ran in, as the
        # selector loop's accept handle does it.
        self._context = contextvars.copy_context()
        self._recycler = loop._recycler
        self._sock = sock
        self._protocol_factory = protocol_factory
        self._server = server
        self._size = size
        self._ops = set()
        self._reused_ops = set()        # accepts posted into a recycled socket
        self._stopped = False
        self.spares = SparePool(min(size, self._recycler.max_spares), "server")
        self._home = self.spares if self._recycler.can_reuse(sock, "server") else None
        # First-data mode: each connection arrives with its first bytes;
        # silent ones are dropped after first_data_timeout seconds.
        self._first_data_timeout = first_data_timeout
        # TLS: (sslcontext, handshake timeout, shutdown timeout), or None.
        self._tls = tls
        self._guard = None
        self._silent_ops = set()        # accepts cancelled by the guard
        self._awaiting_data = {}        # Linux: conn -> (recv op, timer)

    @property
    def posted(self) -> int:
        """Accepts in flight for this listener (loop.stats())."""
        return len(self._ops)

    def start(self):
        for _ in range(self._size):
            self._post()
        if self._first_data_timeout is not None and IS_WINDOWS:
            self._arm_guard()

    def stop(self):
        self._stopped = True
        for op in list(self._ops):
            self._port.cancel(op)
        for op, timer in list(self._awaiting_data.values()):
            timer.cancel()
            self._port.cancel(op)
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        self.spares.close()
        self.spares.limit = 0   # sockets recycled from now on are closed

    def release(self):
        """After the port closed (its operations drained without callbacks):
        close the sockets made ahead of need for accepts that never ran."""
        for op in self._ops:
            target = op.buffer[1]
            if target is not None:
                target.close()
        self._ops.clear()
        for conn in self._awaiting_data:
            conn.close()
        self._awaiting_data.clear()

    def _post(self):
        if self._stopped or len(self._ops) >= self._size:
            return
        target = self.spares.take()
        reused = target is not None
        try:
            if target is None and IS_WINDOWS:
                # AcceptEx accepts into a socket made ahead of need.
                target = socket.socket(self._sock.family, self._sock.type, self._sock.proto)
                self._recycler.created += 1
            op = self._port.accept(self._sock, functools.partial(self._context.run, self._on_accept),
                                   target, self._first_data_size())
        except OSError as exc:
            if target is not None:
                if reused and self._recycler.is_refusal(exc):
                    self._refused(target, exc)
                    self._post()   # again, with a fresh socket
                    return
                target.close()
            self._accept_failed(exc)
            return
        self._ops.add(op)
        if reused:
            self._reused_ops.add(op)

    def _first_data_size(self):
        return _FIRST_DATA_SIZE if self._first_data_timeout is not None else 0

    def _refused(self, target, exc):
        self._recycler.refuse(target, exc, "server")
        self._home = None
        self.spares.close()
        self.spares.limit = 0

    def _accept_failed(self, exc):
        if self._stopped:
            return
        if exc.errno in _RESOURCE_ERRORS:
            self._loop.call_exception_handler({
                "message": "socket.accept() out of system resource",
                "exception": exc,
                "socket": self._sock,
            })
            self._loop.call_later(constants.ACCEPT_RETRY_DELAY, self._post)
        else:
            # One failed connection (reset before accept, ...) never stops the listener.
            self._loop.call_soon(self._post)

    def _on_accept(self, op):
        self._ops.discard(op)
        reused = op in self._reused_ops
        self._reused_ops.discard(op)
        silent = op in self._silent_ops
        self._silent_ops.discard(op)
        target = op.buffer[1]
        if op.result < 0:
            if target is not None:
                target.close()
            if silent:
                self._recycler.first_data_dropped += 1
                self._loop.call_soon(self._post)
            elif reused and not op.cancelled and self._recycler.is_refusal(op.error):
                self._refused(target, op.error)
                self._loop.call_soon(self._post)
            elif not op.cancelled:
                self._accept_failed(op.error)
            return
        try:
            conn, address = op.accepted()
        except OSError as exc:
            self._accept_failed(exc)
            return
        if target is not None and conn is not target:
            target.close()   # Linux accepts into a new fd: the spare went unused
        if reused and conn is target:
            self._recycler.reused += 1
        elif conn is not target:
            self._recycler.created += 1
        if self._stopped:
            conn.close()   # accepted in the race with the server's close
            return
        first_data = op.first_data()
        self._post()
        if self._first_data_timeout is not None and not IS_WINDOWS:
            self._await_first_data(conn, address)
            return
        self._serve(conn, address, first_data)

    def _tls_protocol(self, app_protocol, conn):
        """asyncio's SSLProtocol for a server-side connection; a failed
        handshake closes the connection (reported in debug mode, as asyncio
        does)."""
        sslcontext, handshake_timeout, shutdown_timeout = self._tls
        loop = self._loop
        waiter = loop.create_future()
        ssl_protocol = sslproto.SSLProtocol(
            loop, app_protocol, sslcontext, waiter, server_side=True,
            ssl_handshake_timeout=handshake_timeout, ssl_shutdown_timeout=shutdown_timeout)
        # Kept here: SSLProtocol forgets it in connection_lost, which may run
        # before this waiter's callback.
        app_transport = ssl_protocol._app_transport

        def handshake_done(fut):
            if fut.cancelled() or fut.exception() is None:
                return
            app_transport.close()
            if loop.get_debug():
                loop.call_exception_handler({
                    "message": "Error on transport creation for incoming connection",
                    "exception": fut.exception(),
                    "protocol": app_protocol,
                    "socket": conn,
                })

        waiter.add_done_callback(handshake_done)
        return ssl_protocol

    # -- first-data mode ------------------------------------------------------

    def _arm_guard(self):
        """Windows: every so often, drop the connections of pending accepts
        whose peer connected (SO_CONNECT_TIME) more than first_data_timeout
        seconds ago and has sent nothing, so silent clients cannot hold the
        pool."""
        interval = max(0.5, min(self._first_data_timeout / 2, 5.0))
        self._guard = self._loop.call_later(interval, self._check_silent)

    def _check_silent(self):
        self._guard = None
        if self._stopped:
            return
        limit = math.ceil(self._first_data_timeout)
        for op in list(self._ops):
            target = op.buffer[1]
            try:
                seconds = target.getsockopt(socket.SOL_SOCKET, _SO_CONNECT_TIME)
            except OSError:
                continue
            # 0xFFFFFFFF (-1 as a C int): not connected yet.
            if seconds not in (-1, 0xFFFFFFFF) and seconds >= limit and op not in self._silent_ops:
                # As AcceptEx's documentation advises: close the accept
                # socket; the pending AcceptEx then fails (its record stays
                # the core's until that completion) and the peer is reset.
                self._silent_ops.add(op)
                target.close()
        self._arm_guard()

    def _await_first_data(self, conn, address):
        """Linux: the same contract from the user's side -- the protocol meets
        the connection together with its first bytes, silent ones never."""
        buf = bytearray(_FIRST_DATA_SIZE)

        def on_data(op):
            self._awaiting_data.pop(conn, (None, None))[1].cancel()
            if self._stopped:
                conn.close()
            elif op.cancelled:
                self._recycler.first_data_dropped += 1
                conn.close()
            elif op.result < 0:
                conn.close()   # reset before sending anything: as AcceptEx would fail
            else:
                self._serve(conn, address, bytes(memoryview(buf)[:op.result]))

        try:
            op = self._port.recv(conn, buf, functools.partial(self._context.run, on_data))
        except OSError:
            conn.close()
            return
        timer = self._loop.call_later(self._first_data_timeout, self._port.cancel, op)
        self._awaiting_data[conn] = (op, timer)

    def _serve(self, conn, address, first_data=b""):
        try:
            protocol = self._protocol_factory()
            if self._tls is not None:
                protocol = self._tls_protocol(protocol, conn)
            TCPTransport(self._loop, conn, protocol, peername=address,
                         server=self._server, reuse_home=self._home, first_data=first_data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            conn.close()
            self._loop.call_exception_handler({
                "message": "Error in connection callback of the accept pool",
                "exception": exc,
                "socket": conn,
            })
