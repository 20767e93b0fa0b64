"""add_reader / add_writer / remove_reader / remove_writer on a completion loop.

The registrations (one `Watch` per file descriptor: its reader and writer
handles) are kept here; how readiness is learned is the backend's job:

* Linux (`_EpollBackend`): the descriptors sit in one epoll set per loop,
  level-triggered, and the completion port polls the epoll fd itself (one
  io_uring POLL_ADD for the whole set).  When it completes, epoll_wait(0)
  says which descriptors are ready and their handles join the ready queue.
  While the set keeps having ready descriptors the loop asks it directly
  (epoll_wait(0)) before each wait, as a selector loop does; once it has
  none, the poll on the epoll fd is queued again and the kernel sees it when
  the next wait submits it.  Either way the set is asked after the callbacks
  ran, so it reports only what they left unread (the compiled EpollPoller,
  _readiness.pxi).  epoll (not one io_uring poll per descriptor) because a
  posted io_uring poll holds a reference to its file: a socket closed while
  watched would stay open for its peer.  epoll drops a closed descriptor by
  itself, exactly as the selector loops see it.
* Windows (`_AfdBackend`): one IOCTL_AFD_POLL per socket sent to the socket
  driver through the completion port, as libuv, wepoll and trio do
  (sockets only, as select() on Windows).  The ioctl is issued at once, so
  after a completion the next poll is posted with call_soon, after the
  callbacks of this iteration.  A poll that reports the socket closed
  (AFD_POLL_LOCAL_CLOSE) stops polling it, as epoll drops a closed fd.

A registration is found by file descriptor, and also by its object when
that object was closed since (as selectors do), so remove_reader works on a
socket closed while watched.
"""
from __future__ import annotations

import select
import sys

from ._port import ERR_CANCELLED
from ._scheduler import EpollPoller, Watch, dispatch_ready

__all__ = ["ReadinessMethods"]

IS_WINDOWS = sys.platform == "win32"
POLLIN, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 0x1, 0x4, 0x8, 0x10, 0x20


def _fileobj_to_fd(fileobj) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class ReadinessMethods:
    """Loop methods for readiness callbacks (mixed into Loop)."""

    def _init_readiness_methods(self):
        self._watches: dict[int, Watch] = {}
        self._readiness = (_AfdBackend if IS_WINDOWS else _EpollBackend)(self)

    # -- public ------------------------------------------------------------------

    def add_reader(self, fd, callback, *args):
        """Call callback(*args) whenever fd is readable."""
        self._ensure_fd_no_transport(fd)
        self._add_watch(fd, "reader", callback, args)

    def add_writer(self, fd, callback, *args):
        """Call callback(*args) whenever fd is writable."""
        self._ensure_fd_no_transport(fd)
        self._add_watch(fd, "writer", callback, args)

    def remove_reader(self, fd):
        """Stop watching fd for reading; True if it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_watch(fd, "reader")

    def remove_writer(self, fd):
        """Stop watching fd for writing; True if it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_watch(fd, "writer")

    # -- registrations ---------------------------------------------------------

    def _ensure_fd_no_transport(self, fd):
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"Invalid file object: {fd!r}") from None
        transport = self._transports.get(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    def _find_watch(self, fileobj):
        """The registration of fileobj, also after fileobj was closed."""
        try:
            return self._watches.get(_fileobj_to_fd(fileobj))
        except ValueError:
            for watch in self._watches.values():
                if watch.fileobj is fileobj:
                    return watch
            raise

    def _add_watch(self, fileobj, role, callback, args):
        self._check_closed()
        fd = _fileobj_to_fd(fileobj)
        handle = self._readiness_handle(callback, args)
        watch = self._watches.get(fd)
        created = watch is None
        if created:
            watch = self._watches[fd] = Watch(fd, fileobj)
        old = getattr(watch, role)
        setattr(watch, role, handle)
        try:
            self._readiness.update(watch, fresh=True)
        except OSError:
            setattr(watch, role, old)
            if created:
                del self._watches[fd]
            raise
        watch.fileobj = fileobj
        if old is not None:
            old.cancel()

    def _remove_watch(self, fileobj, role):
        if self.is_closed():
            return False
        watch = self._find_watch(fileobj)
        if watch is None or getattr(watch, role) is None:
            return False
        getattr(watch, role).cancel()
        setattr(watch, role, None)
        if watch.mask() == 0:
            del self._watches[watch.fd]
        self._readiness.update(watch)
        return True

    def _dispatch_ready(self, watch, ready):
        """Queue the handles of watch that ready (poll bits) wakes."""
        dispatch_ready(self, watch, ready)

    def _close_readiness(self):
        self._readiness.close()


class _EpollBackend:
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


class _AfdBackend:
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
        if op.result < 0 or op.result & POLLNVAL:
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

