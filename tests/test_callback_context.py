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


class StreamRecorder(asyncio.Protocol):
    def __init__(self, seen):
        self.s = seen

    def connection_made(self, transport):
        self.transport = transport
        self.s.note("connection_made")

    def data_received(self, data):
        self.s.note("data_received")

    def eof_received(self):
        self.s.note("eof_received")

    def connection_lost(self, exc):
        self.s.note("connection_lost")


@pytest.mark.asyncio
async def test_tcp_client_and_accepted_protocols():
    loop = asyncio.get_running_loop()
    server_seen, client_seen = Seen(), Seen()
    server = await made_in("server", lambda: loop.create_server(
        lambda: StreamRecorder(server_seen), "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    transport, proto = await made_in("client", lambda: loop.create_connection(
        lambda: StreamRecorder(client_seen), "127.0.0.1", port))
    transport.write(b"x")
    transport.write_eof()
    while "eof_received" not in server_seen.seen:
        await bounded(server_seen.event.wait())
        server_seen.event.clear()
    transport.close()
    server.close()
    await bounded(server.wait_closed())
    assert server_seen.io_driven() == {
        "connection_made": "server", "data_received": "server", "eof_received": "server"}
    # (The server's end of file may reach the client before its close.)
    assert client_seen.io_driven().get("connection_made") == "client"
    assert set(client_seen.io_driven().values()) == {"client"}


class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self, seen):
        self.s = seen

    def connection_made(self, transport):
        self.s.note("connection_made")

    def datagram_received(self, data, addr):
        self.s.note("datagram_received")

    def error_received(self, exc):
        self.s.note("error_received")


@pytest.mark.asyncio
async def test_datagram_protocol():
    loop = asyncio.get_running_loop()
    seen = Seen()
    transport, _ = await made_in("endpoint", lambda: loop.create_datagram_endpoint(
        lambda: DatagramRecorder(seen), local_addr=("127.0.0.1", 0)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.sendto(b"x", transport.get_extra_info("sockname"))
        while "datagram_received" not in seen.seen:
            await bounded(seen.event.wait())
            seen.event.clear()
    transport.close()
    assert seen.io_driven() == {"connection_made": "endpoint", "datagram_received": "endpoint"}


@pytest.mark.asyncio
async def test_read_pipe_protocol():
    loop = asyncio.get_running_loop()
    seen = Seen()
    rpipe, wpipe = make_pipe()
    transport, _ = await made_in("pipe", lambda: loop.connect_read_pipe(
        lambda: StreamRecorder(seen), rpipe))
    # The writer is made (and writes) in the loop's own context.
    writer, _ = await loop.connect_write_pipe(asyncio.Protocol, wpipe)
    writer.write(b"x")
    writer.close()
    while "connection_lost" not in seen.seen:
        await bounded(seen.event.wait())
        seen.event.clear()
    assert seen.io_driven() == {
        "connection_made": "pipe", "data_received": "pipe", "eof_received": "pipe"}


class ProcessRecorder(asyncio.SubprocessProtocol):
    def __init__(self, seen):
        self.s = seen

    def pipe_data_received(self, fd, data):
        self.s.note("pipe_data_received")

    def process_exited(self):
        self.s.note("process_exited")


@pytest.mark.asyncio
async def test_subprocess_pipe_protocol():
    loop = asyncio.get_running_loop()
    seen = Seen()
    transport, _ = await made_in("process", lambda: loop.subprocess_exec(
        lambda: ProcessRecorder(seen), sys.executable, "-c", "print('hi')",
        stdin=None, stdout=asyncio.subprocess.PIPE, stderr=None))
    try:
        while not {"pipe_data_received", "process_exited"} <= set(seen.seen):
            await bounded(seen.event.wait(), TIMEOUT * 4)
            seen.event.clear()
    finally:
        transport.close()
    assert seen.io_driven() == {"pipe_data_received": "process"}
