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
import math
import numbers
import socket
import weakref
from asyncio import base_events, constants

from ._port import IS_WINDOWS
from ._reuse import SocketRecycler, SparePool
from ._transports import TCPTransport

__all__ = ["ServerMethods", "DEFAULT_ACCEPT_POOL_SIZE"]

#: Accepts kept posted per listening socket (libuv posts 32 on Windows).
DEFAULT_ACCEPT_POOL_SIZE = 32

#: First-data mode: bytes that may arrive with an accepted connection.
_FIRST_DATA_SIZE = 4096
_SO_CONNECT_TIME = 0x700C   # Windows: seconds since the peer connected

# Errors after which accepting at once would fail again: wait, then retry.
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class _AcceptPool:
    """The accepts posted on one listening socket, their spare (recycled)
    sockets, and the first-data guard."""

    def __init__(self, loop, sock, protocol_factory, server, size, first_data_timeout=None):
        self._loop = loop
        self._port = loop._port
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
        self._guard = None
        self._silent_ops = set()        # accepts cancelled by the guard
        self._awaiting_data = {}        # Linux: conn -> (recv op, timer)

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
            op = self._port.accept(self._sock, self._on_accept, target, self._first_data_size())
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
            conn, address = self._port.accepted(op)
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
        first_data = self._port.first_data_of(op)
        self._post()
        if self._first_data_timeout is not None and not IS_WINDOWS:
            self._await_first_data(conn, address)
            return
        self._serve(conn, address, first_data)

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
            op = self._port.recv(conn, buf, on_data)
        except OSError:
            conn.close()
            return
        timer = self._loop.call_later(self._first_data_timeout, self._port.cancel, op)
        self._awaiting_data[conn] = (op, timer)

    def _serve(self, conn, address, first_data=b""):
        try:
            protocol = self._protocol_factory()
            TCPTransport(self._loop, conn, protocol, extra={"peername": address},
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


class ServerMethods:
    """Mixin for Loop: transports and accept pools for BaseEventLoop's TCP API."""

    def _init_server_methods(self, accept_pool_size: int, socket_reuse: bool):
        if not isinstance(accept_pool_size, int) or accept_pool_size < 1:
            raise ValueError(f"accept_pool_size must be a positive int, not {accept_pool_size!r}")
        self.accept_pool_size = accept_pool_size
        self._accept_pools = {}
        self._recycler = SocketRecycler(self, socket_reuse)
        # listening socket -> first_data_timeout, for servers in first-data mode
        self._first_data_socks: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    # -- public extras --------------------------------------------------------

    def set_socket_reuse(self, enabled: bool) -> None:
        """Turn socket reuse on or off for this loop (on by default; see
        docs/scalability.md).  Sockets already pooled stay until used."""
        self._recycler.enabled = bool(enabled)

    def socket_stats(self) -> dict:
        """Counters of this loop's connection sockets: created (fresh
        sockets), reused (connections served by a recycled socket), refused
        (recycled sockets the provider refused; reuse is then off for that
        kind of socket), pooled (recycled sockets waiting), disconnecting
        (DisconnectEx in flight), first_data_dropped (silent connections a
        first-data server dropped), and whether reuse is enabled."""
        stats = self._recycler.stats()
        stats["first_data_dropped"] = self._recycler.first_data_dropped
        return stats

    async def create_server(self, protocol_factory, host=None, port=None, *,
                            first_data_timeout=None, **kwargs):
        """asyncio's create_server, plus iocploop's opt-in first-data mode:
        with first_data_timeout (seconds) each connection reaches the
        protocol together with its first bytes (Windows: AcceptEx with a
        receive buffer, one completion instead of two), and a client that
        connects and sends nothing within that time is dropped before any
        protocol sees it.  asyncio.start_server passes it through."""
        if first_data_timeout is None:
            return await super().create_server(protocol_factory, host, port, **kwargs)
        if (not isinstance(first_data_timeout, numbers.Real) or isinstance(first_data_timeout, bool)
                or not first_data_timeout > 0 or math.isinf(first_data_timeout)):
            raise ValueError(f"first_data_timeout must be a positive number of seconds, "
                             f"not {first_data_timeout!r}")
        start_serving = kwargs.pop("start_serving", True)
        server = await super().create_server(protocol_factory, host, port,
                                              start_serving=False, **kwargs)
        for sock in server._sockets:
            self._first_data_socks[sock] = float(first_data_timeout)
        if start_serving:
            await server.start_serving()
        return server

    # -- BaseEventLoop hooks --------------------------------------------------

    def _make_socket_transport(self, sock, protocol, waiter=None, extra=None, server=None):
        return TCPTransport(self, sock, protocol, waiter, extra, server,
                            reuse_home=self._recycler.client_home(sock))

    async def _connect_sock(self, exceptions, addr_info, local_addr_infos=None):
        """BaseEventLoop's create_connection calls this for each address it
        tries: connect a recycled socket of the right kind when one is
        pooled, else asyncio's own (which makes a fresh socket)."""
        family, type_, proto, _, address = addr_info
        spare = None
        if local_addr_infos is None:
            spare = self._recycler.take_client_spare(family, type_)
        if spare is None:
            sock = await super()._connect_sock(exceptions, addr_info, local_addr_infos)
            self._recycler.created += 1
            if local_addr_infos is None:
                # A socket bound to a local address the caller chose stays
                # theirs to bind again: it is not recycled.
                self._recycler.adopt_client(sock)
            return sock
        my_exceptions = []
        exceptions.append(my_exceptions)
        try:
            await self.sock_connect(spare, address)
        except OSError as exc:
            if self._recycler.is_refusal(exc):
                # The provider refuses recycled sockets: a fresh one, at once.
                self._recycler.refuse(spare, exc, "client")
                exceptions.remove(my_exceptions)
                return await self._connect_sock(exceptions, addr_info, local_addr_infos)
            my_exceptions.append(exc)
            spare.close()
            raise
        except BaseException:
            spare.close()
            raise
        self._recycler.reused += 1
        self._recycler.adopt_client(spare)
        return spare

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
        pool = _AcceptPool(self, sock, protocol_factory, server, self.accept_pool_size,
                           self._first_data_socks.get(sock))
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
