"""Windows named pipes: loop.start_serving_pipe and loop.create_pipe_connection,
twin-run against CPython's ProactorEventLoop (the only stock loop that has
them), plus iocploop's stream helpers.  Linux refuses them (see
test_completeness.py)."""
from __future__ import annotations

import asyncio
import itertools
import os
import sys

import pytest

import iocploop
from _helpers import TIMEOUT

pytestmark = pytest.mark.skipif(sys.platform != "win32",
                                reason="named pipes are a Windows feature")

_names = itertools.count()


def pipe_address():
    return r"\\.\pipe\iocploop-test-%d-%d" % (os.getpid(), next(_names))


class Echo(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


class Collect(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.lost = asyncio.get_running_loop().create_future()
        self.eof = False

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def _until(predicate, timeout=TIMEOUT):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_echo_server_serves_several_clients():
    loop = asyncio.get_running_loop()
    address = pipe_address()
    servers = await loop.start_serving_pipe(Echo, address)
    assert len(servers) == 1
    try:
        clients = []
        for i in range(3):
            transport, proto = await asyncio.wait_for(
                loop.create_pipe_connection(Collect, address), TIMEOUT)
            assert transport.get_extra_info("addr") == address
            assert transport.get_extra_info("pipe") is not None
            clients.append((transport, proto))
        for i, (transport, _) in enumerate(clients):
            transport.write(b"client %d " % i * 100)
        for i, (_, proto) in enumerate(clients):
            await _until(lambda p=proto, i=i: len(p.data) >= len(b"client %d " % i * 100))
            assert bytes(proto.data) == b"client %d " % i * 100
        for transport, proto in clients:
            transport.close()
            assert await asyncio.wait_for(proto.lost, TIMEOUT) is None
    finally:
        servers[0].close()


@pytest.mark.asyncio
async def test_large_transfer_both_ways_loses_no_byte():
    loop = asyncio.get_running_loop()
    address = pipe_address()
    [server] = await loop.start_serving_pipe(Echo, address)
    try:
        transport, proto = await loop.create_pipe_connection(Collect, address)
        payload = os.urandom(2 * 1024 * 1024)
        for i in range(0, len(payload), 100_000):
            transport.write(payload[i:i + 100_000])
        await _until(lambda: len(proto.data) >= len(payload), timeout=4 * TIMEOUT)
        assert bytes(proto.data) == payload
        transport.close()
        await asyncio.wait_for(proto.lost, TIMEOUT)
    finally:
        server.close()


@pytest.mark.asyncio
async def test_client_closing_gives_the_server_eof_and_connection_lost():
    loop = asyncio.get_running_loop()
    address = pipe_address()
    server_protos = []

    def factory():
        proto = Collect()
        server_protos.append(proto)
        return proto

    [server] = await loop.start_serving_pipe(factory, address)
    try:
        transport, _ = await loop.create_pipe_connection(asyncio.Protocol, address)
        transport.write(b"bye")
        await _until(lambda: server_protos and server_protos[0].data == b"bye")
        transport.close()
        assert await asyncio.wait_for(server_protos[0].lost, TIMEOUT) is None
        assert server_protos[0].eof
    finally:
        server.close()


@pytest.mark.asyncio
async def test_connecting_to_a_missing_pipe_raises_file_not_found():
    loop = asyncio.get_running_loop()
    with pytest.raises(FileNotFoundError):
        await asyncio.wait_for(loop.create_pipe_connection(asyncio.Protocol, pipe_address()),
                               TIMEOUT)


@pytest.mark.asyncio(loop_factories=["iocploop"])
async def test_closed_server_keeps_its_connections_then_the_name_goes():
    # iocploop only: CPython's Proactor stops serving the connections already
    # made when its PipeServer closes (no echo comes back).
    loop = asyncio.get_running_loop()
    address = pipe_address()
    [server] = await loop.start_serving_pipe(Echo, address)
    transport, proto = await loop.create_pipe_connection(Collect, address)
    server.close()
    assert server.closed()
    transport.write(b"still here")
    await _until(lambda: bytes(proto.data) == b"still here")
    transport.close()
    await asyncio.wait_for(proto.lost, TIMEOUT)
    await asyncio.sleep(0.2)   # the server's end of that connection closes too
    # No instance of the pipe is left: the name is gone.
    with pytest.raises(FileNotFoundError):
        await asyncio.wait_for(loop.create_pipe_connection(asyncio.Protocol, address), TIMEOUT)


@pytest.mark.asyncio
async def test_server_closing_its_side_gives_the_client_eof():
    loop = asyncio.get_running_loop()
    address = pipe_address()
    served = []

    def factory():
        proto = Echo()
        served.append(proto)
        return proto

    [server] = await loop.start_serving_pipe(factory, address)
    try:
        transport, proto = await loop.create_pipe_connection(Collect, address)
        await _until(lambda: served and served[0].transport is not None)
        served[0].transport.write(b"last words")
        served[0].transport.close()
        assert await asyncio.wait_for(proto.lost, TIMEOUT) is None
        assert bytes(proto.data) == b"last words"
        assert proto.eof
    finally:
        server.close()


@pytest.mark.asyncio(loop_factories=["iocploop"])
async def test_stream_helpers_echo():
    address = pipe_address()

    async def handle(reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    server = await iocploop.start_pipe_server(handle, address)
    try:
        assert isinstance(server, iocploop.PipeServer)
        reader, writer = await iocploop.open_pipe_connection(address)
        writer.write(b"named pipes\n")
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"NAMED PIPES\n"
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.close()
    finally:
        server.close()


@pytest.mark.asyncio(loop_factories=["iocploop"])
async def test_a_burst_of_clients_finds_instances_waiting():
    # iocploop keeps several instances posted: clients connecting together
    # all get through (CPython's single instance makes them retry).
    loop = asyncio.get_running_loop()
    address = pipe_address()
    [server] = await loop.start_serving_pipe(Echo, address)
    try:
        pairs = await asyncio.wait_for(asyncio.gather(
            *[loop.create_pipe_connection(Collect, address) for _ in range(8)]), TIMEOUT)
        for transport, proto in pairs:
            transport.write(b"x")
        for transport, proto in pairs:
            await _until(lambda p=proto: bytes(p.data) == b"x")
            transport.close()
            await asyncio.wait_for(proto.lost, TIMEOUT)
    finally:
        server.close()
