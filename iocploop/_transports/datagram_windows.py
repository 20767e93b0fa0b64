"""DatagramTransport's receiving on Windows: several posted receives.

Sixteen receives (WSARecvFrom, or WSARecvMsg for arrival addresses) stay
posted, each into a buffer of its own, so a burst finds the kernel ready;
the port completes them in arrival order, one datagram each.  Each is posted
again once its datagram is delivered.
"""
from __future__ import annotations

from .._port import WINDOWS_PORT_UNREACHABLE
from .._port_windows import bind_if_unbound

__all__ = ["PostedReceives"]


class PostedReceives:
    """DatagramTransport's receiving strategy on Windows (datagram.py picks it)."""
    __slots__ = ()

    _RECVS_POSTED = 16
    _NOTHING_RECEIVED = None   # every completed receive brought a datagram or an error

    def _prepare_socket(self, sock):
        # A receive posted on an unbound socket fails (WSAEINVAL); a first
        # send would bind it to the wildcard address anyway.
        bind_if_unbound(sock)

    def _check_arrival_info(self):
        if "WSARecvMsg" not in self._port.extensions(self._sock):
            raise OSError(
                "iocploop: this socket's Winsock provider has no WSARecvMsg, so the arrival "
                "address of datagrams (datagram_received_on) is not available; define only "
                "datagram_received to use this endpoint")

    def _after_receive(self, buf):
        pass   # the other posted receives hold the rest of a burst

    def _unreported(self, exc) -> bool:
        # As asyncio's proactor (CPython gh-91227): an unconnected socket is
        # not told that one of its earlier datagrams found no listener.
        return not self._connected and exc.winerror in WINDOWS_PORT_UNREACHABLE
