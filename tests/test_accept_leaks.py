"""An accept that completes after its listener closed leaks no socket.

On Linux an io_uring accept already in the kernel holds its own reference
to the listening socket (the socket guard lets it run, as uvloop's suite
expects of operations in flight), so a client that connects after the
user closed the listener can still be accepted; and a server's accept pool
can see accepts complete that raced with server.close().  Either way the
new connection must be closed, never left as a bare fd (Linux) or a socket
object for the garbage collector (Windows).

Leaks are counted two ways: the process's open fds (Linux), and the
ResourceWarning an unclosed socket object gives when it is collected
(both systems).  Every test runs on iocploop and on the stock loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import warnings

from _helpers import IS_LINUX, TIMEOUT
from _tcp_helpers import fd_count

import pytest

HOST = "127.0.0.1"
CLIENTS = 4


@contextlib.contextmanager
def no_socket_leaked():
    gc.collect()
    before = fd_count() if IS_LINUX else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not unclosed, f"sockets left to the garbage collector: {unclosed}"
    if before is not None:
        assert fd_count() == before, f"{fd_count() - before} fd(s) leaked"


def _connect_clients(address, n: int = CLIENTS) -> list[socket.socket]:
    """Blocking connects (the kernel completes them from the backlog, before
    any accept); a refused one is left out."""
    clients = []
    for _ in range(n):
        try:
            clients.append(socket.create_connection(address, timeout=TIMEOUT))
        except OSError:
            pass
    return clients


async def _settle():
    """Give completions that are on their way time to arrive."""
    for _ in range(5):
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_listener_closed_under_pending_sock_accept_leaks_nothing():
    loop = asyncio.get_running_loop()
    with no_socket_leaked():
        listener = socket.socket()
        listener.bind((HOST, 0))
        listener.listen(16)
        listener.setblocking(False)
        address = listener.getsockname()
        tasks = [asyncio.ensure_future(loop.sock_accept(listener)) for _ in range(3)]
        await _settle()   # the accepts are posted (and, on Linux, in the kernel)
        listener.close()
        clients = await loop.run_in_executor(None, _connect_clients, address)
        await _settle()
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            # Accepted before the close was seen: the caller owns it.
            if isinstance(result, tuple):
                result[0].close()
            else:
                assert isinstance(result, (asyncio.CancelledError, OSError)), result
        for client in clients:
            client.close()
        await _settle()


@pytest.mark.asyncio
async def test_server_closed_while_accepts_complete_leaks_nothing():
    loop = asyncio.get_running_loop()
    with no_socket_leaked():
        for _ in range(3):
            server = await loop.create_server(asyncio.Protocol, HOST, 0)
            address = server.sockets[0].getsockname()
            # The clients sit in the kernel's backlog (and, on iocploop, the
            # pool's accepts complete) before the loop looks again; the
            # server closes in the same turn.
            clients = _connect_clients(address)
            assert clients, "no client could connect to the open server"
            server.close()
            await asyncio.wait_for(server.wait_closed(), TIMEOUT)
            await _settle()
            for client in clients:
                client.close()
        await _settle()
