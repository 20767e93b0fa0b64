"""Servers and connections: the hooks asyncio's BaseEventLoop calls.

BaseEventLoop implements create_server, create_connection (happy eyeballs,
interleave, all_errors), connect_accepted_socket, the Server object and
streams on top of a few hooks: _make_socket_transport, _start_serving,
_stop_serving and _connect_sock.  This mixin provides them on completion
operations -- an AcceptPool per listening socket (_accept_pool.py), socket
reuse (_reuse.py) -- and adds iocploop's extras: create_server's
first_data_timeout, socket_stats() and set_socket_reuse().
"""
from __future__ import annotations

import asyncio
import math
import numbers
import weakref
from asyncio import constants, sslproto
from typing import Any, Callable, Sequence

from ._accept_pool import DEFAULT_ACCEPT_POOL_SIZE, AcceptPool
from ._reuse import SocketRecycler
from ._transports import TCPTransport

__all__ = ["ServerMethods", "DEFAULT_ACCEPT_POOL_SIZE"]

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

    def socket_stats(self) -> dict[str, Any]:
        """Counters of this loop's connection sockets: created (fresh
        sockets), reused (connections served by a recycled socket), refused
        (recycled sockets the provider refused; reuse is then off for that
        kind of socket), pooled (recycled sockets waiting), disconnecting
        (DisconnectEx in flight), first_data_dropped (silent connections a
        first-data server dropped), and whether reuse is enabled."""
        stats = self._recycler.stats()
        stats["first_data_dropped"] = self._recycler.first_data_dropped
        return stats

    async def create_server(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                            host: str | Sequence[str] | None = None, port: int | None = None, *,
                            first_data_timeout: float | None = None,
                            **kwargs: Any) -> asyncio.Server:
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
        try:
            if spare is None:
                sock = await super()._connect_sock(exceptions, addr_info, local_addr_infos)
                self._recycler.created += 1
                if local_addr_infos is None:
                    # A socket bound to a local address the caller chose
                    # stays theirs to bind again: it is not recycled.
                    self._recycler.adopt_client(sock)
                return sock
            return await self._connect_spare(spare, exceptions, addr_info, local_addr_infos)
        finally:
            # A failure's traceback holds this frame: the list that holds
            # the exception must not stay reachable from it (asyncio's rule).
            exceptions = None

    async def _connect_spare(self, spare, exceptions, addr_info, local_addr_infos):
        my_exceptions = []
        exceptions.append(my_exceptions)
        try:
            await self.sock_connect(spare, addr_info[4])
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
        finally:
            exceptions = my_exceptions = None
        self._recycler.reused += 1
        self._recycler.adopt_client(spare)
        return spare

    def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *,
                            server_side=False, server_hostname=None, extra=None, server=None,
                            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        """TLS on a TCP transport: asyncio's own SSLProtocol (ssl.MemoryBIO)
        between the socket transport and the user's protocol.  Ciphertext is
        received straight into SSLProtocol's buffer (it is a BufferedProtocol)
        and the records it writes are bytes, sent without another copy."""
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    def _start_serving(self, protocol_factory, sock, sslcontext=None, server=None,
                       backlog=100, ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        if sock in self._accept_pools:
            return
        tls = None
        if sslcontext is not None:
            tls = (sslcontext, ssl_handshake_timeout, ssl_shutdown_timeout)
        pool = AcceptPool(self, sock, protocol_factory, server, self.accept_pool_size,
                           self._first_data_socks.get(sock), tls)
        self._accept_pools[sock] = pool
        pool.start()

    def _stop_serving(self, sock):
        pool = self._accept_pools.pop(sock, None)
        if pool is not None:
            pool.stop()
        self._remove_unix_socket_file(sock)
        # As asyncio does: the listening socket closes now.  Pending accepts
        # complete as cancelled.  On Linux an io_uring request holds its own
        # reference to the socket until then: flushing the cancellations
        # lets it go now, so the address (a port, an abstract name) is free
        # as soon as server.close() returns, as with asyncio.
        if not self._port.closed:
            self._port.flush()
        sock.close()

    def _close_accept_pools(self):
        """At loop close: the listening sockets stay with their Server (as in
        asyncio); the pools' own sockets are closed once the port is closed."""
        pools, self._accept_pools = list(self._accept_pools.values()), {}
        for pool in pools:
            pool.stop()
        return pools
