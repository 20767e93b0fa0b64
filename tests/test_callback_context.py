"""Protocol callbacks run in the contextvars context the transport was made
in, as asyncio's transports do (their reader callbacks keep the context of
their creation) -- not in whatever context the loop happens to be in.  That
holds for the callbacks that I/O brings (connection_made, data, end of
file); one that a call brings (connection_lost after close(), and
process_exited, which asyncio's child watchers run in the loop's context)
runs where asyncio runs it, which these tests leave alone.
uvloop's test_context checks the same.  Every test runs on iocploop and on
stock asyncio: TCP (client and accepted side), UDP, pipes and a subprocess's
pipes."""
from __future__ import annotations

import asyncio
import contextvars
import socket
import sys

import pytest

from _helpers import TIMEOUT, make_pipe
from _tcp_helpers import bounded

where = contextvars.ContextVar("where", default="loop")


class Seen:
    """Records the context variable in each callback it is told about."""

    def __init__(self):
        self.seen = {}
        self.event = asyncio.Event()

    def note(self, name):
        self.seen.setdefault(name, where.get())
        self.event.set()

    async def wait_for(self, *names, timeout=TIMEOUT):
        while not set(names) <= set(self.seen):
            await bounded(self.event.wait(), timeout)
            self.event.clear()

    def io_driven(self):
        """What the callbacks that I/O brought saw."""
        return {name: value for name, value in self.seen.items()
                if name not in ("connection_lost", "process_exited")}


async def made_in(label, make):
    """Run make() in a task whose context says label, as a user's
    connection-making task would."""
    async def maker():
        where.set(label)
        return await make()
    return await asyncio.ensure_future(maker())


_CALLBACKS = ("connection_made", "data_received", "eof_received", "connection_lost",
              "datagram_received", "error_received", "pipe_data_received", "process_exited")


def recorder(base, seen):
    """A protocol of class base whose callbacks only note, in seen, the
    context they ran in."""
    def noting(name):
        return lambda self, *args: seen.note(name)
    cls = type(f"Recording{base.__name__}", (base,),
               {name: noting(name) for name in _CALLBACKS if hasattr(base, name)})
    return cls()


@pytest.mark.asyncio
async def test_tcp_client_and_accepted_protocols():
    loop = asyncio.get_running_loop()
    server_seen, client_seen = Seen(), Seen()
    server = await made_in("server", lambda: loop.create_server(
        lambda: recorder(asyncio.Protocol, server_seen), "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    transport, proto = await made_in("client", lambda: loop.create_connection(
        lambda: recorder(asyncio.Protocol, client_seen), "127.0.0.1", port))
    transport.write(b"x")
    transport.write_eof()
    await server_seen.wait_for("eof_received")
    transport.close()
    server.close()
    await bounded(server.wait_closed())
    assert server_seen.io_driven() == {
        "connection_made": "server", "data_received": "server", "eof_received": "server"}
    # (The server's end of file may reach the client before its close.)
    assert client_seen.io_driven().get("connection_made") == "client"
    assert set(client_seen.io_driven().values()) == {"client"}


@pytest.mark.asyncio
async def test_datagram_protocol():
    loop = asyncio.get_running_loop()
    seen = Seen()
    transport, _ = await made_in("endpoint", lambda: loop.create_datagram_endpoint(
        lambda: recorder(asyncio.DatagramProtocol, seen), local_addr=("127.0.0.1", 0)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.sendto(b"x", transport.get_extra_info("sockname"))
        await seen.wait_for("datagram_received")
    transport.close()
    assert seen.io_driven() == {"connection_made": "endpoint", "datagram_received": "endpoint"}


@pytest.mark.asyncio
async def test_read_pipe_protocol():
    loop = asyncio.get_running_loop()
    seen = Seen()
    rpipe, wpipe = make_pipe()
    transport, _ = await made_in("pipe", lambda: loop.connect_read_pipe(
        lambda: recorder(asyncio.Protocol, seen), rpipe))
    # The writer is made (and writes) in the loop's own context.
    writer, _ = await loop.connect_write_pipe(asyncio.Protocol, wpipe)
    writer.write(b"x")
    writer.close()
    await seen.wait_for("connection_lost")
    assert seen.io_driven() == {
        "connection_made": "pipe", "data_received": "pipe", "eof_received": "pipe"}


@pytest.mark.asyncio
async def test_subprocess_pipe_protocol():
    loop = asyncio.get_running_loop()
    seen = Seen()
    transport, _ = await made_in("process", lambda: loop.subprocess_exec(
        lambda: recorder(asyncio.SubprocessProtocol, seen), sys.executable, "-c", "print('hi')",
        stdin=None, stdout=asyncio.subprocess.PIPE, stderr=None))
    try:
        await seen.wait_for("pipe_data_received", "process_exited", timeout=TIMEOUT * 4)
    finally:
        transport.close()
    assert seen.io_driven()["pipe_data_received"] == "process"
