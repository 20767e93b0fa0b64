"""add_reader / add_writer / remove_reader / remove_writer on a completion loop.

The registrations (one `Watch` per file descriptor: its reader and writer
handles) are kept here; how readiness is learned is the backend's job:

* Linux (`EpollBackend`, _readiness_linux.py): the descriptors sit in one epoll set per loop,
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
* Windows (`AfdBackend`, _readiness_windows.py): one IOCTL_AFD_POLL per socket sent to the socket
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

import sys

from ._scheduler import Watch, dispatch_ready

# How readiness is learned: one backend per platform, each in its own file.
if sys.platform == "win32":
    from ._readiness_windows import AfdBackend as _PlatformBackend
else:
    from ._readiness_linux import EpollBackend as _PlatformBackend

__all__ = ["ReadinessMethods"]


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
        self._readiness = _PlatformBackend(self)

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
