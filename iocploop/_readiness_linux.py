"""add_reader/add_writer's readiness on Linux (_readiness.py has the rest):
one level-triggered epoll set per loop, whose fd the completion port polls
(the compiled EpollPoller, _readiness.pxi)."""
from __future__ import annotations

import select

from ._port import ERR_CANCELLED
from ._scheduler import EpollPoller

__all__ = ["EpollBackend"]


class EpollBackend:
    """Linux: one level-triggered epoll set, whose fd the completion port polls."""

    def __init__(self, loop):
        self._loop = loop
        self._epoll = None
        self._poller = None      # the io_uring poll on the epoll fd (compiled)

    def update(self, watch, fresh=False):
        mask = watch.mask()   # EPOLLIN/EPOLLOUT have poll's values
        if mask == 0 or self._loop._watches.get(watch.fd) is not watch:
            if watch.registered:
                watch.registered = False
                try:
                    self._epoll.unregister(watch.fd)
                except OSError:
                    pass   # closed since: epoll dropped it already
            return
        if self._epoll is None:
            self._epoll = select.epoll()
            self._poller = EpollPoller(self._loop, self._loop._watches, self._epoll,
                                       ERR_CANCELLED)
        if watch.registered:
            try:
                self._epoll.modify(watch.fd, mask)
            except FileNotFoundError:
                # The descriptor was closed (epoll dropped it) and its number
                # now names another file: register that one.
                self._epoll.register(watch.fd, mask)
        else:
            try:
                self._epoll.register(watch.fd, mask)
            except FileExistsError:
                self._epoll.modify(watch.fd, mask)
            watch.registered = True
        self._arm()

    def _arm(self):
        self._poller.arm()

    def close(self):
        if self._poller is not None:
            self._poller.detach()
            if self._poller.armed:
                self._loop._port.cancel(self._poller)
        if self._epoll is not None:
            self._epoll.close()   # the poll in flight holds its own reference
