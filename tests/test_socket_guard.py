"""An operation on a user's socket never runs on the next socket given its fd number.

Linux queues each io_uring submission until the loop's next wait; the
kernel resolves the fd number only then.  A socket closed in between (say,
right after its sock_recv task was cancelled) would have its queued receive
run on whichever socket gets that number next, taking that socket's bytes.
The sock_* methods guard their operations (iocploop/_socket_guard.py): an
operation whose socket is closed before the publish completes with EBADF,
or as cancelled, and its SQE becomes a no-op.

Windows starts every operation inside its submit call: nothing is queued
there, so this file runs on Linux only.
"""
from __future__ import annotations

import asyncio
import errno
import socket
import sys

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("Windows queues no submission: an operation starts inside its submit call",
                allow_module_level=True)

import iocploop
from iocploop._port import CompletionPort

from _helpers import TIMEOUT, poll_until, socketpair


def _pair_on_fd(fd: int):
    """A new connected pair whose first socket has fd number fd (just freed:
    the lowest free number, so one of the two new sockets gets it)."""
    c, d = socketpair()
    if d.fileno() == fd:
        c, d = d, c
    if c.fileno() != fd:
        c.close()
        d.close()
        pytest.fail(f"fd {fd} was not reused by the next socket ({c.fileno()}, {d.fileno()})")
    return c, d


# -- the port ------------------------------------------------------------------


@pytest.fixture
def port():
    p = CompletionPort(queue_depth=8)
    yield p
    p.close()


def _guarded_receive_of_a_closed_socket(port):
    """A guarded receive queued on a socket closed at once, and a new pair
    (c, d) whose c has the closed socket's fd number, d's bytes on their way."""
    a, b = socketpair()
    done = []
    op = port.recv(a, bytearray(64), done.append)
    port.guard(op, a)
    fd = a.fileno()
    a.close()
    b.close()
    c, d = _pair_on_fd(fd)
    d.send(b"for c only")
    return op, done, c, d


def test_a_queued_receive_of_a_closed_socket_completes_with_ebadf(port):
    op, done, c, d = _guarded_receive_of_a_closed_socket(port)
    with c, d:
        assert poll_until(port, lambda: done)
        assert op.result == -errno.EBADF
        assert c.recv(100) == b"for c only"
    assert port.pending == 0 and port.stats()["in_flight"] == 0


def test_cancelled_after_the_close_it_still_completes_with_ebadf(port):
    op, done, c, d = _guarded_receive_of_a_closed_socket(port)
    with c, d:
        port.cancel(op)   # publishes the queue: the guard voids op first, EBADF wins
        assert poll_until(port, lambda: done)
        assert op.result == -errno.EBADF
        assert c.recv(100) == b"for c only"


def test_an_open_socket_keeps_its_guarded_receive(port):
    a, b = socketpair()
    with a, b:
        done = []
        buf = bytearray(64)
        op = port.recv(a, buf, done.append)
        port.guard(op, a)
        b.send(b"hello")
        assert poll_until(port, lambda: done)
        assert op.result == 5 and bytes(buf[:5]) == b"hello"


def test_a_full_ring_flushed_inside_a_submit_still_voids_the_closed_socket(port):
    """The core publishes by itself when a submit finds the ring full (8
    entries here): the guard runs then too."""
    op, done, c, d = _guarded_receive_of_a_closed_socket(port)
    others = [socketpair() for _ in range(12)]
    try:
        more = [port.recv(x, bytearray(8), done.append) for x, _ in others]
        assert port.stats()["enters"] >= 1   # the ring filled and was published
        assert poll_until(port, lambda: op.done)
        assert op.result == -errno.EBADF
        assert c.recv(100) == b"for c only"
        for other in more:
            port.cancel(other)
        assert poll_until(port, lambda: port.pending == 0)
    finally:
        for x, y in others:
            x.close()
            y.close()
        c.close()
        d.close()


def test_closing_the_port_does_not_run_the_receive_on_the_next_socket():
    port = CompletionPort()
    op, _, c, d = _guarded_receive_of_a_closed_socket(port)
    with c, d:
        port.close()   # cancels and drains what is in flight: publishes first
        assert op.done and op.cancelled
        assert c.recv(100) == b"for c only"


def test_guard_refuses_what_is_not_an_operation(port):
    a, b = socketpair()
    with a, b:
        for wrong in (None, 3, "op"):
            with pytest.raises(TypeError):
                port.guard(wrong, a)


# -- the loop ------------------------------------------------------------------


def _run(loop_factory, main):
    loop = loop_factory()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    finally:
        loop.close()


LOOPS = {"iocploop": iocploop.new_event_loop, "asyncio": asyncio.SelectorEventLoop}


@pytest.fixture(params=list(LOOPS), ids=list(LOOPS))
def loop_factory(request):
    return LOOPS[request.param]


async def _close_under_a_queued_sock_recv(cancel: bool):
    """A sock_recv task queues its receive; in the same iteration the task
    is cancelled (or not) and its socket closed; the next socket, given the
    same fd number, must get its own bytes.  Returns the first task."""
    loop = asyncio.get_running_loop()
    a, b = socketpair()
    task = asyncio.ensure_future(loop.sock_recv(a, 100))
    await asyncio.sleep(0)   # the task queued its receive
    if cancel:
        task.cancel()
    fd = a.fileno()
    a.close()
    b.close()
    c, d = _pair_on_fd(fd)
    with c, d:
        d.send(b"for c only")
        assert await loop.sock_recv(c, 100) == b"for c only"
    return task


def test_cancelled_then_closed_sock_recv_leaves_the_next_socket_alone(loop_factory):
    async def main():
        task = await _close_under_a_queued_sock_recv(cancel=True)
        with pytest.raises(asyncio.CancelledError):
            await task

    _run(loop_factory, main)


def test_sock_recv_of_a_socket_closed_under_it_fails_with_ebadf():
    """No cancellation at all: the receive ends with EBADF (the selector loop
    leaves such a task waiting for good) and the next socket keeps its bytes."""
    async def main():
        task = await _close_under_a_queued_sock_recv(cancel=False)
        with pytest.raises(OSError) as caught:
            await task
        assert caught.value.errno == errno.EBADF

    _run(iocploop.new_event_loop, main)


def test_cancelled_then_closed_sock_accept_leaves_the_next_listener_alone(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        old = socket.create_server(("127.0.0.1", 0))
        old.setblocking(False)
        task = asyncio.ensure_future(loop.sock_accept(old))
        await asyncio.sleep(0)
        task.cancel()
        fd = old.fileno()
        old.close()
        new = socket.create_server(("127.0.0.1", 0))
        new.setblocking(False)
        with new:
            assert new.fileno() == fd
            client = socket.create_connection(new.getsockname())
            with client:
                conn, _ = await loop.sock_accept(new)
                conn.close()
        with pytest.raises(asyncio.CancelledError):
            await task

    _run(loop_factory, main)


def test_cancelled_then_closed_sock_sendto_sends_nothing_from_the_next_socket(loop_factory):
    """The selector loop sends at once (its task is done before the cancel);
    iocploop's send is still queued and is dropped.  Either way no datagram
    leaves from the socket that got the fd number next."""
    async def main():
        loop = asyncio.get_running_loop()
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        old = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        old.bind(("127.0.0.1", 0))
        old.setblocking(False)
        old_address = old.getsockname()
        task = asyncio.ensure_future(
            loop.sock_sendto(old, b"from old", receiver.getsockname()))
        await asyncio.sleep(0)
        task.cancel()
        fd = old.fileno()
        old.close()
        new = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        new.bind(("127.0.0.1", 0))
        new.setblocking(False)
        with receiver, new:
            assert new.fileno() == fd
            await loop.sock_sendto(new, b"from new", receiver.getsockname())
            got = [await loop.sock_recvfrom(receiver, 100)]
            await asyncio.sleep(0.05)
            while True:
                try:
                    got.append(receiver.recvfrom(100))
                except BlockingIOError:
                    break
            assert (b"from new", new.getsockname()) in got
            assert set(got) <= {(b"from new", new.getsockname()), (b"from old", old_address)}
            assert len(got) == len(set(got))
        try:
            await task
        except asyncio.CancelledError:
            pass

    _run(loop_factory, main)


# -- a socket closed while the kernel holds its operation --------------------


def test_a_socket_closed_under_a_receive_in_the_kernel_still_gets_its_data():
    """Once published, the receive holds the socket: closing the fd does not
    end it, and the data that comes is delivered, as uvloop's suite expects
    (test_socket_recv_and_close; the selector loop leaves such a task
    waiting for good).  No sweep turns it into an error: the same suite
    expects a task cancelled later to end cancelled (test_socket_cancel_sock_recv_2)."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socketpair()
        with b:
            task = asyncio.ensure_future(loop.sock_recv(a, 100))
            await asyncio.sleep(0.05)   # the receive is in the kernel
            a.close()
            await asyncio.sleep(0.3)
            assert not task.done()
            b.send(b"helo")
            assert await task == b"helo"

        c, d = socketpair()
        with d:
            task = asyncio.ensure_future(loop.sock_recv(c, 100))
            await asyncio.sleep(0.05)
            c.close()
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    _run(iocploop.new_event_loop, main)
