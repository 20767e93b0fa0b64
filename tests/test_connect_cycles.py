"""A failed connection leaves no reference cycle behind.

asyncio clears the frames of create_connection, _connect_sock and
sock_connect when they raise (`exceptions = None`, `fut = None` in
`finally`), so the exception the caller catches is referred to by the
caller alone.  A frame that keeps a list of exceptions, a future or an
operation alive through the exception's traceback makes a cycle: the whole
chain (sockets' Python objects, futures, buffers) then waits for the cyclic
garbage collector, and a caller that keeps the exception keeps all of it.

Each test catches the exception, runs gc.collect() and asks
gc.get_referrers which objects still refer to it: only the test's own frame
and coroutine may.  Every test runs on iocploop and on the stock loop.
"""
from __future__ import annotations

import asyncio
import gc
import socket
import sys

import pytest

from _helpers import IS_WINDOWS, is_iocploop_loop

HOST = "127.0.0.1"


def _refusing_port() -> tuple[socket.socket, int]:
    """A port bound on 127.0.0.1 with nobody listening: connects are refused."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    return sock, sock.getsockname()[1]


def _foreign_referrers(exc: BaseException, own_frame) -> list:
    """What refers to exc besides own_frame (the test's) and its coroutine."""
    gc.collect()
    task = asyncio.current_task()
    own = {id(own_frame), id(task.get_coro()) if task is not None else None}
    return [r for r in gc.get_referrers(exc) if id(r) not in own]


def _describe(referrers: list) -> str:
    return "; ".join(f"{type(r).__name__}: {r!r:.120}" for r in referrers)


PROACTOR_CONNECT_CYCLE = (
    "CPython's ProactorEventLoop.sock_connect keeps its _OverlappedFuture in a cycle with "
    "the exception (iocploop has none): no reference behaviour on Windows")


def assert_no_cycle(exc: BaseException) -> None:
    """Only the calling test refers to exc once the collector has run.

    Call it one turn after the exception was caught (`await
    asyncio.sleep(0)`): until then the Handle that resumed the test (the
    task's wakeup by the failed future, when the test awaited that future
    directly, as wait_for does from 3.12) is still running it."""
    referrers = _foreign_referrers(exc, sys._getframe(1))
    if referrers and IS_WINDOWS and not is_iocploop_loop(asyncio.get_running_loop()) and all(
            type(r).__name__ == "_OverlappedFuture" for r in referrers):
        pytest.xfail(PROACTOR_CONNECT_CYCLE)
    assert not referrers, f"the exception is still referred to by: {_describe(referrers)}"


def _fake_resolver(loop, port: int, hosts: list[str]):
    """Make 'several.invalid' resolve to the given numeric hosts on this
    loop (every loop resolves through loop.getaddrinfo)."""
    async def getaddrinfo(host, port_, *, family=0, type=0, proto=0, flags=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (h, port))
                for h in hosts]
    loop.getaddrinfo = getaddrinfo


# CPython's own staggered_race (happy eyeballs) kept its exceptions in
# cycles until python/cpython#124858, fixed in 3.12 and 3.13 maintenance
# releases, never in 3.11: every loop built on BaseEventLoop inherits it.
_STAGGERED_RACE_CYCLES = pytest.mark.xfail(
    sys.version_info < (3, 12), strict=True,
    reason="CPython 3.11's asyncio.staggered.staggered_race keeps the exceptions in a "
           "cycle (python/cpython#124858, fixed from 3.12): stock asyncio fails too")


@pytest.mark.asyncio
@pytest.mark.parametrize("happy_eyeballs_delay", [
    None, pytest.param(0.05, marks=_STAGGERED_RACE_CYCLES)], ids=["sequential", "happy"])
@pytest.mark.parametrize("addresses", [1, 2])
async def test_failed_create_connection_leaves_no_cycle(addresses, happy_eyeballs_delay):
    loop = asyncio.get_running_loop()
    listener, port = _refusing_port()
    with listener:
        # The same address twice fails twice with the same message, and then
        # asyncio raises the first exception itself (not a combined one).
        _fake_resolver(loop, port, ["127.0.0.1"] * addresses)
        try:
            await asyncio.wait_for(loop.create_connection(
                asyncio.Protocol, "several.invalid", port,
                happy_eyeballs_delay=happy_eyeballs_delay), 5.0)
        except OSError as exc:
            err = exc
        else:
            pytest.fail("the connection to a port nobody listens on succeeded")
    await asyncio.sleep(0)
    assert_no_cycle(err)


@pytest.mark.asyncio
async def test_failed_sock_connect_leaves_no_cycle():
    loop = asyncio.get_running_loop()
    listener, port = _refusing_port()
    with listener, socket.socket() as sock:
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), 5.0)
        except OSError as exc:
            err = exc
        else:
            pytest.fail("the connection to a port nobody listens on succeeded")
    await asyncio.sleep(0)
    assert_no_cycle(err)


@pytest.mark.asyncio(loop_factories=["iocploop"])
async def test_failed_connect_of_a_recycled_socket_leaves_no_cycle():
    """socket_reuse: create_connection connects a pooled spare socket (on
    Windows, one a provider refuses to reuse falls back to a fresh one)."""
    loop = asyncio.get_running_loop()
    recycler = loop._recycler
    spare = socket.socket()
    spare.setblocking(False)
    recycler.adopt_client(spare)
    home = recycler.client_home(spare)
    if home is None:
        spare.close()
        pytest.skip("this provider takes no recycled client socket (socket reuse off)")
    home.give(spare)
    assert recycler.take_client_spare(socket.AF_INET, socket.SOCK_STREAM) is spare
    home.give(spare)
    listener, port = _refusing_port()
    with listener:
        try:
            await asyncio.wait_for(loop.create_connection(asyncio.Protocol, HOST, port), 5.0)
        except OSError as exc:
            err = exc
        else:
            pytest.fail("the connection to a port nobody listens on succeeded")
    assert recycler.take_client_spare(socket.AF_INET, socket.SOCK_STREAM) is None, (
        "the spare socket was not used")
    assert spare.fileno() == -1, "the failed spare socket was not closed"
    await asyncio.sleep(0)
    assert_no_cycle(err)


def test_failed_create_connection_without_socket_reuse_leaves_no_cycle():
    import iocploop

    async def main():
        listener, port = _refusing_port()
        with listener:
            try:
                await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                    asyncio.Protocol, HOST, port), 5.0)
            except OSError as exc:
                err = exc
        await asyncio.sleep(0)
        assert_no_cycle(err)

    loop = iocploop.new_event_loop(socket_reuse=False)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
