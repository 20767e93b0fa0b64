"""add_reader/add_writer's readiness on Windows (_readiness.py has the
rest): one IOCTL_AFD_POLL per socket, posted through the completion port."""
from __future__ import annotations

__all__ = ["AfdBackend"]

_POLLNVAL = 0x20   # poll(2)'s bit, as the core reports AFD's events


class AfdBackend:
    """Windows: one AFD poll per socket through the completion port."""

    def __init__(self, loop):
        self._loop = loop

    def update(self, watch, fresh=False):
        if fresh:
            watch.dead = False
        loop = self._loop
        mask = watch.mask() if loop._watches.get(watch.fd) is watch else 0
        if watch.op is not None:
            if not fresh and watch.op_mask == mask:
                return
            loop._port.cancel(watch.op)
            watch.op = None
        if mask == 0 or watch.dead or loop.is_closed():
            return
        watch.op = loop._port.poll_ready(watch.fd, mask, self._on_ready)
        watch.op_mask = mask

    def _on_ready(self, op):
        watch = self._loop._watches.get(op.buffer)
        if watch is None or watch.op is not op:
            return   # removed, or replaced by a newer poll
        watch.op = None
        if op.result < 0 or op.result & _POLLNVAL:
            if not op.cancelled:
                watch.dead = True   # closed under the poll: stop, as epoll drops it
            return
        self._loop._dispatch_ready(watch, op.result)
        self._loop.call_soon(self._rearm, watch)

    def _rearm(self, watch):
        if self._loop._watches.get(watch.fd) is not watch or watch.op is not None:
            return
        try:
            self.update(watch)
        except OSError:
            watch.dead = True

    def close(self):
        pass   # the port cancels the polls in flight as it closes
