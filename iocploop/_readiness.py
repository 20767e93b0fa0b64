"""add_reader / add_writer / remove_reader / remove_writer on a completion loop.

A readiness callback is a one-shot poll operation kept posted per file
descriptor: io_uring POLL_ADD on Linux, IOCTL_AFD_POLL through the socket
driver on Windows (sockets only, as select() on Windows) -- the way libuv,
wepoll and trio get readiness out of a completion port.  When the poll
completes, the reader and/or writer handle joins the ready queue, and the
poll is posted again *after* those callbacks ran (a deferred re-arm), so
that it reports what is still unread then: level-triggered, like the
selector loops.  (On Linux the poll is queued at once: the kernel sees it
only when the next wait submits it, after the callbacks.)

A registration is keyed by file descriptor, and also found by its object
when that object was closed since (as selectors do), so remove_reader
works on a socket closed while watched.  A poll that reports the handle
closed (POLLNVAL; Windows: AFD_POLL_LOCAL_CLOSE) or fails stops polling
that descriptor without forgetting the registration, as epoll drops a
closed descriptor.  On Linux a posted poll keeps the file open: remove the
reader before closing the socket, as asyncio's documentation asks anyway.
"""
from __future__ import annotations

import errno
import os
import stat
import sys
from asyncio import events

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


class _Watch:
    """The reader and writer of one file descriptor and its posted poll."""
    __slots__ = ("fd", "fileobj", "reader", "writer", "op", "op_mask", "dead")

    def __init__(self, fd, fileobj):
        self.fd = fd
        self.fileobj = fileobj
        self.reader = None
        self.writer = None
        self.op = None
        self.op_mask = 0
        self.dead = False

    def mask(self) -> int:
        return (POLLIN if self.reader is not None else 0) | \
               (POLLOUT if self.writer is not None else 0)


class ReadinessMethods:
    """Loop methods for readiness callbacks (mixed into Loop)."""

    def _init_readiness_methods(self):
        self._watches: dict[int, _Watch] = {}

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
        if not IS_WINDOWS and stat.S_ISREG(os.fstat(fd).st_mode):
            # epoll refuses regular files (they are always ready).
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        handle = events.Handle(callback, args, self, None)
        watch = self._watches.get(fd)
        if watch is None:
            watch = self._watches[fd] = _Watch(fd, fileobj)
        watch.fileobj = fileobj
        watch.dead = False
        old = getattr(watch, role)
        setattr(watch, role, handle)
        if old is not None:
            old.cancel()
        try:
            # A fresh poll every time: the descriptor may now be another file
            # than the one a poll in flight watches.
            self._post_poll(watch, force=True)
        except OSError:
            setattr(watch, role, None)
            if watch.mask() == 0:
                del self._watches[fd]
            raise

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
            if watch.op is not None:
                self._port.cancel(watch.op)
                watch.op = None
        return True

    # -- polling ----------------------------------------------------------------

    def _post_poll(self, watch, force=False):
        mask = watch.mask()
        if watch.op is not None:
            if not force and watch.op_mask == mask:
                return
            self._port.cancel(watch.op)
            watch.op = None
        if mask == 0 or watch.dead or self.is_closed():
            return
        watch.op = self._port.poll_ready(watch.fd, mask, self._on_ready)
        watch.op_mask = mask

    def _on_ready(self, op):
        watch = self._watches.get(op.buffer)
        if watch is None or watch.op is not op:
            return   # removed, or replaced by a newer poll
        watch.op = None
        if op.result < 0 or op.result & POLLNVAL:
            if not op.cancelled:
                watch.dead = True   # closed under the poll: stop, as epoll drops it
            return
        ready = op.result
        if watch.reader is not None and ready & (POLLIN | POLLERR | POLLHUP):
            self._add_callback(watch.reader)
        if watch.writer is not None and ready & (POLLOUT | POLLERR | POLLHUP):
            self._add_callback(watch.writer)
        if IS_WINDOWS:
            # The AFD ioctl is issued at once: post it after this
            # iteration's callbacks ran, so it sees what they left unread.
            self.call_soon(self._rearm, watch)
        else:
            # An io_uring poll is only looked at when the next wait submits
            # it, which is after the callbacks ran: post it now.
            self._rearm(watch)

    def _rearm(self, watch):
        if self._watches.get(watch.fd) is watch and watch.op is None:
            for role in ("reader", "writer"):
                handle = getattr(watch, role)
                if handle is not None and handle.cancelled():
                    setattr(watch, role, None)
            if watch.mask() == 0:
                del self._watches[watch.fd]
                return
            try:
                self._post_poll(watch)
            except OSError:
                watch.dead = True
