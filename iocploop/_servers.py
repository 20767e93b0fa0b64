"""Servers and connections: the hooks asyncio's BaseEventLoop calls.

BaseEventLoop implements create_server, create_connection (happy eyeballs,
interleave, all_errors), connect_accepted_socket, the Server object and
streams on top of three hooks: _make_socket_transport, _start_serving and
_stop_serving.  This mixin provides them on completion operations:

* each listening socket gets an accept pool: `accept_pool_size` accepts kept
  posted at all times (Windows: AcceptEx into sockets made ahead of need,
  GetAcceptExSockaddrs, SO_UPDATE_ACCEPT_CONTEXT; Linux: io_uring accept);
* an accept that fails for one connection never stops the listener;
* when the server closes, pending accepts are cancelled, and a connection the
  kernel accepted in that race is closed, not leaked.
"""
from __future__ import annotations

import errno
import socket
from asyncio import base_events, constants

from ._port import IS_WINDOWS
from ._transports import TCPTransport

__all__ = ["ServerMethods", "DEFAULT_ACCEPT_POOL_SIZE"]

#: Accepts kept posted per listening socket (libuv posts 32 on Windows).
DEFAULT_ACCEPT_POOL_SIZE = 32

# Errors after which accepting at once would fail again: wait, then retry.
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class _AcceptPool:
    """The accepts posted on one listening socket."""

    def __init__(self, loop, sock, protocol_factory, server, size):
        self._loop = loop
        self._port = loop._port
        self._sock = sock
        self._protocol_factory = protocol_factory
        self._server = server
        self._size = size
        self._ops = set()
        self._stopped = False

    def start(self):
        for _ in range(self._size):
            self._post()

    def stop(self):
        self._stopped = True
        for op in list(self._ops):
            self._port.cancel(op)

    def release(self):
        """After the port closed (its operations drained without callbacks):
        close the sockets made ahead of need for accepts that never ran."""
        for op in self._ops:
            target = op.buffer[1]
            if target is not None:
                target.close()
        self._ops.clear()

    def _post(self):
        if self._stopped or len(self._ops) >= self._size:
            return
        target = None
        try:
            if IS_WINDOWS:
                # AcceptEx accepts into a socket made ahead of need.
                target = socket.socket(self._sock.family, self._sock.type, self._sock.proto)
            op = self._port.accept(self._sock, self._on_accept, target)
        except OSError as exc:
            if target is not None:
                target.close()
            self._accept_failed(exc)
            return
        self._ops.add(op)

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
        target = op.buffer[1]
        if op.result < 0:
            if target is not None:
                target.close()
            if not op.cancelled:
                self._accept_failed(op.error)
            return
        try:
            conn, address = self._port.accepted(op)
        except OSError as exc:
            self._accept_failed(exc)
            return
        if self._stopped:
            conn.close()   # accepted in the race with the server's close
            return
        self._post()
        self._serve(conn, address)

    def _serve(self, conn, address):
        try:
            protocol = self._protocol_factory()
            TCPTransport(self._loop, conn, protocol, extra={"peername": address},
                         server=self._server)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            conn.close()
            self._loop.call_exception_handler({
                "message": "Error in connection callback of the accept pool",
                "exception": exc,
                "socket": conn,
            })


class ServerMethods:
    """Mixin for Loop: transports and accept pools for BaseEventLoop's TCP API."""

    def _init_server_methods(self, accept_pool_size: int):
        if not isinstance(accept_pool_size, int) or accept_pool_size < 1:
            raise ValueError(f"accept_pool_size must be a positive int, not {accept_pool_size!r}")
        self.accept_pool_size = accept_pool_size
        self._accept_pools = {}

    def _make_socket_transport(self, sock, protocol, waiter=None, extra=None, server=None):
        return TCPTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(self, *args, **kwargs):
        raise NotImplementedError(
            "iocploop does not implement TLS (ssl=) yet: it arrives with TLS support "
            "(issue #6). Use asyncio's default loop for this program until then.")

    def _start_serving(self, protocol_factory, sock, sslcontext=None, server=None,
                       backlog=100, ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        if sslcontext is not None:
            self._make_ssl_transport()
        if sock in self._accept_pools:
            return
        pool = _AcceptPool(self, sock, protocol_factory, server, self.accept_pool_size)
        self._accept_pools[sock] = pool
        pool.start()

    def _stop_serving(self, sock):
        pool = self._accept_pools.pop(sock, None)
        if pool is not None:
            pool.stop()
        # As asyncio does: the listening socket closes now.  Pending accepts
        # complete as cancelled (Linux: the io_uring request holds its own
        # reference to the socket until then).
        sock.close()

    def _close_accept_pools(self):
        """At loop close: the listening sockets stay with their Server (as in
        asyncio); the pools' own sockets are closed once the port is closed."""
        pools, self._accept_pools = list(self._accept_pools.values()), {}
        for pool in pools:
            pool.stop()
        return pools
