"""DatagramTransport's receiving on Linux: one posted receive, then a drain.

One io_uring RECVMSG stays posted (several would all wake for each datagram,
the rest failing with EAGAIN).  When it completes, what else is queued is
read with non-blocking receive calls, up to DRAIN_MAX per completion, so a
burst is read in one pass of the loop: compiled for IP sockets
(datagram_drain, _datagram.pxi), the socket module's recvfrom for AF_UNIX
ones (their addresses are paths), the port's recvmsg_now when the protocol
wants arrival addresses.  (Reads on readiness, as uvloop's, measured
slower: two receive calls per wakeup.)
"""
from __future__ import annotations

import errno

from .._scheduler import datagram_drain

__all__ = ["DrainingReceives", "DRAIN_MAX"]

DRAIN_MAX = 64   # datagrams read at once per completion


class DrainingReceives:
    """DatagramTransport's receiving strategy on Linux (datagram.py picks it)."""
    __slots__ = ()

    _RECVS_POSTED = 1
    # A receive that found nothing (its datagram taken by a drain): not an
    # error to report.
    _NOTHING_RECEIVED = -errno.EAGAIN

    def _prepare_socket(self, sock):
        pass   # io_uring receives on an unbound socket as recvmsg does

    def _check_arrival_info(self):
        pass   # recvmsg gives IP_PKTINFO everywhere

    def _after_receive(self, buf):
        """Read what else waits, into buf, before the receive is posted again."""
        if self._arrivals is None:
            if self._sock.family in self._INET_FAMILIES:
                datagram_drain(self, buf, DRAIN_MAX)   # compiled
            else:
                self._drain_plain()   # AF_UNIX: its addresses are paths
            return
        for _ in range(DRAIN_MAX):
            if self._closing:
                return
            try:
                message = self._port.recvmsg_now(self._sock, buf, True)
            except OSError as exc:
                self._protocol.error_received(exc)
                continue
            if message is None:
                return
            self._deliver(buf, message)

    def _drain_plain(self):
        # No control data wanted, not an IP socket: the socket module's own
        # recvfrom makes the address.
        recvfrom = self._sock.recvfrom
        for _ in range(DRAIN_MAX):
            if self._closing:
                return
            try:
                data, addr = recvfrom(self.max_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
                continue
            self._protocol.datagram_received(data, addr)

    def _unreported(self, exc) -> bool:
        return False   # Linux reports ICMP errors to connected sockets only
