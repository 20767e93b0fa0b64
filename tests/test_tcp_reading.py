"""Reading on a TCP transport, on both loops.

Linux reads on readiness (one multishot poll stays posted, each wakeup reads
with recv); Windows keeps one receive posted into the transport's buffer.
What must hold either way: pausing stops delivery at once and loses nothing,
a bulk transfer arrives whole and in order, and many connections with data
at once all deliver every byte.  One iocploop-only check looks at the
mechanism: an idle Linux connection holds no receive buffer.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest

from _helpers import IS_LINUX, until
from _tcp_helpers import digest, is_iocploop, payload


class Collector(asyncio.Protocol):
    def __init__(self):
        self.chunks = []
        self.made = asyncio.get_running_loop().create_future()
        self.eof = asyncio.get_running_loop().create_future()
        self.calls_while_paused = 0
        self.paused = False

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(None)

    def data_received(self, data):
        if self.paused:
            self.calls_while_paused += 1
        self.chunks.append(data)

    def eof_received(self):
        if not self.eof.done():
            self.eof.set_result(None)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


@contextlib.asynccontextmanager
async def connected():
    """(the server side's Collector, a blocking client socket) of a fresh
    server; everything is closed afterwards."""
    loop = asyncio.get_running_loop()
    made = loop.create_future()

    def factory():
        proto = Collector()
        if not made.done():
            made.set_result(proto)
        return proto

    server = await loop.create_server(factory, "127.0.0.1", 0)
    client = socket.create_connection(server.sockets[0].getsockname())
    proto = None
    try:
        proto = await asyncio.wait_for(made, 5)
        await asyncio.wait_for(proto.made, 5)
        yield proto, client
    finally:
        client.close()
        if proto is not None:
            proto.transport.close()
        server.close()
        await server.wait_closed()


def _reads_on_readiness(transport) -> bool:
    op = transport._recv_op
    return op is not None and op.kind == "poll_multishot"


@pytest.mark.asyncio
async def test_pause_reading_stops_delivery_and_resume_delivers_the_rest_in_order():
    async with connected() as (proto, client):
        client.sendall(b"first")
        await until(lambda: proto.data == b"first")
        proto.transport.pause_reading()
        proto.paused = True
        rest = payload(200_000, seed=3)
        client.sendall(rest)
        await asyncio.sleep(0.2)
        assert proto.calls_while_paused == 0
        proto.paused = False
        proto.transport.resume_reading()
        await until(lambda: len(proto.data) == 5 + len(rest))
        assert digest(proto.data) == digest(b"first" + rest)


@pytest.mark.asyncio
async def test_pause_and_resume_in_one_turn_loses_and_reorders_nothing():
    async with connected() as (proto, client):
        sent = b""
        for i in range(20):
            chunk = payload(3000, seed=i)
            client.sendall(chunk)
            sent += chunk
            proto.transport.pause_reading()
            await asyncio.sleep(0)
            proto.transport.resume_reading()
            await asyncio.sleep(0)
        await until(lambda: len(proto.data) == len(sent))
        assert proto.data == sent


@pytest.mark.asyncio
async def test_a_bulk_transfer_arrives_whole_and_then_eof():
    async with connected() as (proto, client):
        data = payload(4 * 1024 * 1024, seed=7)
        reader = getattr(proto.transport, "_reader", None)   # iocploop on Linux
        await asyncio.get_running_loop().run_in_executor(None, client.sendall, data)
        client.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(proto.eof, 10)
        assert digest(proto.data) == digest(data)
        if is_iocploop() and IS_LINUX:
            # Reads filled their buffer: the read size grew to asyncio's 256 KiB.
            assert reader.read_size == 256 * 1024


@pytest.mark.asyncio
async def test_many_connections_with_data_at_once_each_deliver_every_byte():
    loop = asyncio.get_running_loop()
    protos = []

    def factory():
        proto = Collector()
        protos.append(proto)
        return proto

    count = 80
    server = await loop.create_server(factory, "127.0.0.1", 0, backlog=count)
    clients = []
    try:
        for _ in range(count):
            clients.append(socket.create_connection(server.sockets[0].getsockname()))
        await until(lambda: len(protos) == count and all(p.made.done() for p in protos),
                    timeout=10)
        await asyncio.sleep(0.1)   # every receive posted
        for i, client in enumerate(clients):
            client.sendall(payload(1000, seed=i))
        # All of it waits in the sockets while the loop is blocked; the next
        # wait then finds every connection readable at once.
        time.sleep(0.2)
        await until(lambda: all(len(p.data) == 1000 for p in protos), timeout=10)
        got = sorted(p.data for p in protos)
        assert got == sorted(payload(1000, seed=i) for i in range(count))
    finally:
        for client in clients:
            client.close()
        for proto in protos:
            proto.transport.close()
        server.close()
        await server.wait_closed()


@pytest.mark.skipif(not IS_LINUX, reason="Windows posts a receive into the transport's buffer")
@pytest.mark.asyncio(loop_factories=["iocploop"])
async def test_an_idle_linux_connection_holds_no_receive_buffer_of_its_own():
    async with connected() as (proto, client):
        client.sendall(b"x" * 5000)
        await until(lambda: len(proto.data) == 5000)
        assert _reads_on_readiness(proto.transport)
        assert proto.transport._recv_buf is None
        port = asyncio.get_running_loop()._port
        stats_before = port.stats()
        client.sendall(b"y" * 10)
        await until(lambda: len(proto.data) == 5010)
        # The chunk woke the poll that stays posted: nothing was submitted for it.
        assert port.stats()["submitted"] == stats_before["submitted"]
