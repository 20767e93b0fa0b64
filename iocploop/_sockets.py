"""loop.sock_* methods on completion operations.

sock_recv, sock_recv_into and sock_sendall are compiled (_sockops.pxi); the
rest are here.  All of them share one SocketEngine (the compiled per-loop
state: operations in flight per socket, orphans, the stash).

Each call submits one kernel operation and resolves a future from its
completion.  Cancelling the future cancels the operation; if the kernel
finished it anyway (the race every completion API has), the result is not
thrown away: received bytes and accepted connections are kept in a per-socket
stash and handed to the next sock_recv / sock_recv_into / sock_accept on that
socket.  The same holds when the result did reach the future but the task
awaiting it was cancelled before it resumed (asyncio then drops the result):
it goes back to the front of the stash.  So cancellation leaves no
operation behind and loses no byte.
"""
from __future__ import annotations

import collections
import operator
import socket
from asyncio import base_events, exceptions

from . import _scheduler
from ._port import IS_WINDOWS, WINDOWS_PORT_UNREACHABLE
from ._socket_kind import kind_of

__all__ = ["SocketMethods"]



def _check_size(n, call: str) -> None:
    """A receive size as the socket module checks it (ValueError for a
    negative one; a buffer slice would quietly take it from the end)."""
    if operator.index(n) < 0:   # TypeError for a size that is no integer
        raise ValueError(f"negative buffersize in {call}")

class _Stash:
    """What the kernel delivered for a socket after its caller stopped waiting."""

    __slots__ = ("data", "datagrams", "accepted")

    def __init__(self):
        self.data = bytearray()
        self.datagrams = collections.deque()   # (bytes, address) from cancelled recvfroms
        self.accepted = collections.deque()


def _set_result_unless_done(fut) -> None:
    if not fut.done():
        fut.set_result(None)


def _put_back_datagram(stash, datagram):
    stash.datagrams.appendleft(datagram)


def _put_back_connection(stash, accepted):
    stash.accepted.appendleft(accepted)


# recvfrom's receive buffers are reused: zero-filling a fresh 256 KiB
# bytearray for every call would cost more than the receive itself.
_POOLED_BUFFER_SIZE = 256 * 1024
_POOL_LIMIT = 16


class SocketMethods:
    """Mixin for Loop: the sock_* API.  Needs self._port (a CompletionPort)."""

    sock_recv = _scheduler.sock_recv
    sock_recv_into = _scheduler.sock_recv_into
    sock_sendall = _scheduler.sock_sendall

    def _init_socket_methods(self):
        self._attach_sockets(_scheduler.SocketEngine(self, self._port, _Stash, IS_WINDOWS))
        self._free_recv_buffers: list[bytearray] = []

    def _take_recv_buffer(self, n: int) -> bytearray:
        if n <= _POOLED_BUFFER_SIZE:
            if self._free_recv_buffers:
                return self._free_recv_buffers.pop()
            return bytearray(_POOLED_BUFFER_SIZE)
        return bytearray(n)

    def _give_back_recv_buffer(self, buf: bytearray) -> None:
        if len(buf) == _POOLED_BUFFER_SIZE and len(self._free_recv_buffers) < _POOL_LIMIT:
            self._free_recv_buffers.append(buf)

    # -- helpers --------------------------------------------------------------

    def _check_sock(self, sock) -> None:
        base_events._check_ssl_socket(sock)
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        if sock.fileno() < 0:
            raise OSError(9, "Bad file descriptor")   # EBADF, as sock.recv would

    @property
    def _stashes(self):
        return self._sock_engine.stashes

    def _watch(self, fut, op, sock) -> None:
        """op, a receive or accept on sock, is in flight for fut's caller."""
        self._sock_engine.watch(sock, op, fut)

    async def _settle(self, sock) -> None:
        """Before a receive/accept on sock looks at its stash: wait until no
        cancelled operation of sock is still in the kernel."""
        engine = self._sock_engine
        if engine.unsettled(sock):
            await engine.settle(sock)

    async def _delivered(self, op, sock, give_back):
        """await op's future.  A caller that stops waiting orphans op; one
        cancelled after the result arrived but before it resumed (asyncio
        then drops that result) gives it back to sock's stash, for the next
        call (give_back(stash, result))."""
        fut = op.waiter
        try:
            return await fut
        except BaseException:
            engine = self._sock_engine
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                give_back(engine.stash_for(sock), fut.result())
            elif not op.done:
                engine.orphan(sock, op)
            raise

    # -- datagrams ------------------------------------------------------------

    async def sock_recvfrom(self, sock, bufsize):
        """Receive a datagram of up to bufsize bytes: (data, address)
        (asyncio.loop.sock_recvfrom)."""
        self._check_sock(sock)
        _check_size(bufsize, "recvfrom")
        await self._settle(sock)
        stashed = self._take_stashed_datagram(sock, bufsize)
        if stashed is not None:
            return stashed
        return await self._delivered(self._recvfrom_op(sock, bufsize), sock,
                                     _put_back_datagram)

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive a datagram into buf: (nbytes, address)
        (asyncio.loop.sock_recvfrom_into)."""
        self._check_sock(sock)
        view = memoryview(buf).cast("B")
        if view.readonly:
            raise TypeError("sock_recvfrom_into() needs a writable buffer, not "
                            f"{type(buf).__name__}")
        if nbytes < 0:
            raise ValueError("negative buffersize in recvfrom_into")
        if nbytes > len(view):
            raise ValueError("nbytes is greater than the length of the buffer")
        nbytes = nbytes or len(view)
        await self._settle(sock)
        stashed = self._take_stashed_datagram(sock, nbytes)
        if stashed is None:
            # Received into a buffer of ours and copied: after a cancellation
            # the kernel must not write into the caller's memory.
            stashed = await self._delivered(self._recvfrom_op(sock, nbytes), sock,
                                            _put_back_datagram)
        data, address = stashed
        view[:len(data)] = data
        return len(data), address

    def _take_stashed_datagram(self, sock, bufsize):
        stash = self._sock_engine.stash_of(sock)
        if stash is None or not stash.datagrams:
            return None
        data, address = stash.datagrams.popleft()
        return data[:bufsize], address

    def _recvfrom_op(self, sock, n):
        """An operation for one datagram of up to n bytes, whose waiter's
        result is (data, address)."""
        if n < 0:
            raise ValueError("negative buffersize in recvfrom")
        fut = self.create_future()
        buf = self._take_recv_buffer(n)

        def done(op):
            self._sock_engine.settled(sock, op)
            if op.result < 0:
                self._give_back_recv_buffer(buf)
                if fut.done():
                    return
                if IS_WINDOWS and op.error.winerror in WINDOWS_PORT_UNREACHABLE:
                    # asyncio's proactor turns an ICMP port-unreachable into an
                    # empty datagram from nowhere (CPython gh-91227).
                    fut.set_result((b"", None))
                else:
                    fut.set_exception(op.error)
                return
            nbytes, address, _flags, _local = op.message()
            datagram = (bytes(memoryview(buf)[:nbytes]), address)
            self._give_back_recv_buffer(buf)
            if fut.done():
                # Cancelled, but a datagram arrived first: keep it for the next call.
                self._sock_engine.stash_for(sock).datagrams.append(datagram)
            else:
                fut.set_result(datagram)

        op = self._port.recvmsg(sock, memoryview(buf)[:n], done)
        self._port.guard(op, sock)
        self._watch(fut, op, sock)
        return op

    async def sock_sendto(self, sock, data, address):
        """Send a datagram to address; returns the bytes sent
        (asyncio.loop.sock_sendto)."""
        self._check_sock(sock)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            address = await self._numeric_address(sock, address)
        return await self._run_op(self._port.sendmsg, sock, [data], address)

    async def _numeric_address(self, sock, address):
        """address with its host resolved to a numeric one (socket.sendto
        resolves names too)."""
        try:
            socket.inet_pton(sock.family, address[0].partition("%")[0])
            return address
        except (OSError, TypeError, ValueError, IndexError, AttributeError):
            pass
        if not isinstance(address, tuple) or len(address) < 2:
            raise TypeError(f"{sock.family!r} address must be a tuple (host, port), "
                            f"not {address!r}")
        resolved = await self._ensure_resolved(address, family=sock.family, type=sock.type,
                                               proto=sock.proto, loop=self)
        return resolved[0][4]

    # -- sending --------------------------------------------------------------

    async def _run_op(self, submit, *args):
        """Submit one operation and wait for its completion; cancelling the
        wait cancels the operation (its completion still arrives later and
        finds the future done)."""
        fut = self.create_future()

        def done(op, fut=fut):   # its own reference: the frame drops fut below
            if fut.done():
                return
            if op.result < 0:
                fut.set_exception(op.error)
            else:
                fut.set_result(op.result)

        op = submit(*args, done)
        self._port.guard(op, args[0])   # args[0]: the caller's socket
        try:
            return await fut
        except BaseException:
            if not op.done:
                self._port.cancel(op)
            raise
        finally:
            fut = None   # break the cycle through a traceback

    async def _room_in(self, sock):
        room = self.create_future()
        self._add_watch(sock, "writer", _set_result_unless_done, (room,))
        try:
            await room
        finally:
            self._remove_watch(sock, "writer")

    # -- connecting -----------------------------------------------------------

    async def sock_connect(self, sock, address):
        """Connect sock to a remote address (asyncio.loop.sock_connect)."""
        self._check_sock(sock)
        family, type_ = kind_of(sock)   # ints: no enum member made per read
        if family in (socket.AF_INET, socket.AF_INET6):
            resolved = await self._ensure_resolved(
                address, family=family, type=type_, proto=sock.proto, loop=self)
            _, _, _, _, address = resolved[0]
        if type_ == socket.SOCK_DGRAM:
            # A datagram socket's connect() only names its default peer: it
            # never waits.  asyncio's loops do it at once (the selector's
            # connect(), the proactor's WSAConnect), and ConnectEx is for
            # connection-oriented sockets only, so no operation is submitted.
            sock.connect(address)
            return None
        fut = self.create_future()

        def done(op, fut=fut):   # its own reference: the frame drops fut below
            if fut.done():
                return
            if op.result < 0:
                exc = op.error
                if not IS_WINDOWS:   # worded as the selector loop words it
                    exc = OSError(exc.errno, f"Connect call failed {address}")
                fut.set_exception(exc)
            else:
                try:
                    self._port.connected(sock)
                except OSError as exc:
                    fut.set_exception(exc)
                else:
                    fut.set_result(None)

        op = self._port.connect(sock, address, done)
        # The connection attempt starts now, as connect() would start it
        # (Linux queues it until the next wait otherwise): code that goes on
        # to accept it synchronously, or to time it, sees asyncio's order.
        self._port.flush()
        # Cancelling the wait cancels the connection attempt.
        fut.add_done_callback(
            lambda f, op=op, port=self._port: f.cancelled() and not op.done and port.cancel(op))
        try:
            return await fut
        finally:
            # The exception's traceback holds this frame: drop what refers
            # back to it (fut holds the exception; done and op hold fut), so
            # a failed connect leaves no cycle, as asyncio's.
            fut = done = op = None

    # -- accepting ------------------------------------------------------------

    async def sock_accept(self, sock):
        """Accept a connection: (conn, address) (asyncio.loop.sock_accept)."""
        self._check_sock(sock)
        await self._settle(sock)
        stash = self._sock_engine.stash_of(sock)
        if stash is not None and stash.accepted:
            return stash.accepted.popleft()
        fut = self.create_future()
        target = socket.socket(sock.family, sock.type, sock.proto) if IS_WINDOWS else None

        def done(op):
            self._sock_engine.settled(sock, op)
            if op.result < 0:
                if target is not None:
                    target.close()
                if not fut.done():
                    fut.set_exception(op.error)
                return
            try:
                accepted = op.accepted()
            except OSError as exc:
                if not fut.done():
                    fut.set_exception(exc)
                return
            if fut.done():
                # Cancelled, but a peer was accepted first: keep the connection.
                self._sock_engine.stash_for(sock).accepted.append(accepted)
            else:
                fut.set_result(accepted)

        try:
            op = self._port.accept(sock, done, target)
        except BaseException:
            if target is not None:
                target.close()
            raise
        self._port.guard(op, sock)
        self._watch(fut, op, sock)
        return await self._delivered(op, sock, _put_back_connection)
