"""What iocploop's socket transports (TCP in _transports.py, UDP in
_datagram.py) share: the socket's extra info, the unclosed-transport
warning, and the way a fatal error or abort() tears a transport down.

A transport using this mixin keeps these attributes: _sock, _protocol,
_loop, _port, _closing, _aborting, _sock_closed, _conn_lost, _lost_exc,
_queue; and provides _forget_writes() (drop what is queued or in flight
from the write-buffer count), _kernel_ops() (its operations the kernel may
still hold) and _maybe_finish_close().
"""
from __future__ import annotations

import warnings
from asyncio import base_events, trsock

__all__ = ["SocketTransportBase"]


class SocketTransportBase:

    def _init_socket_extra(self, sock):
        """get_extra_info's socket, sockname and peername, as asyncio's."""
        self._extra["socket"] = trsock.TransportSocket(sock)
        self._loop._transports[sock.fileno()] = self   # add_reader refuses its fd
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None

    def __del__(self, _warn=warnings.warn):
        if self._sock is not None and not self._sock_closed:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    def abort(self):
        self._force_close(None)

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

    def _force_close(self, exc):
        """Drop the writes, cancel every operation; the socket closes (and
        connection_lost(exc) runs) once the kernel has finished them."""
        if self._sock_closed or self._aborting:
            return
        self._aborting = True
        self._closing = True
        self._lost_exc = exc
        self._queue.clear()
        self._forget_writes()
        for op in self._kernel_ops():
            self._port.cancel(op)
        if not self._conn_lost:
            self._conn_lost = 1
        self._maybe_finish_close()
