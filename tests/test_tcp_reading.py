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
import contextvars
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


class PausingInDataReceived(Collector):
    """Pauses reading inside its first data_received."""

    def data_received(self, data):
        super().data_received(data)
        if len(self.chunks) == 1:
            self.transport.pause_reading()
            self.paused = True


@pytest.mark.asyncio
async def test_data_left_unread_by_a_pause_in_data_received_arrives_after_resume():
    """The data arrives in one segment (one wakeup), the first read fills
    its size, and the protocol pauses in data_received: no new data will
    announce what is left, and resume_reading must still deliver it."""
    loop = asyncio.get_running_loop()
    made = loop.create_future()

    def factory():
        proto = PausingInDataReceived()
        made.set_result(proto)
        return proto

    server = await loop.create_server(factory, "127.0.0.1", 0)
    client = socket.create_connection(server.sockets[0].getsockname())
    try:
        proto = await asyncio.wait_for(made, 5)
        data = payload(60_000, seed=11)   # one loopback segment, past the first read's 16 KiB
        client.sendall(data)   # from the loop's thread: all there before the first read
        await until(lambda: proto.chunks)
        await asyncio.sleep(0.2)
        assert proto.calls_while_paused == 0
        if is_iocploop():
            # Its first read is 16 KiB: the rest waited unannounced.
            # (asyncio's first read of 256 KiB takes it all.)
            assert len(proto.data) < len(data)
        proto.paused = False
        proto.transport.resume_reading()
        await until(lambda: len(proto.data) == len(data))
        assert digest(proto.data) == digest(data)
    finally:
        client.close()
        if made.done():
            made.result().transport.close()
        server.close()
        await server.wait_closed()


@pytest.mark.skipif(not IS_LINUX, reason="Windows keeps its receive posted through a pause")
@pytest.mark.asyncio(loop_factories=["iocploop"])
async def test_a_short_pause_keeps_the_poll_and_a_wakeup_while_paused_stops_it():
    """pause_reading leaves the readiness poll posted, so a pause and a
    resume with nothing arriving cost no cancellation and no new poll
    (asyncio's sendfile pauses around every file); data arriving while
    paused stops the poll, so a long pause is not woken again and again."""
    async with connected() as (proto, client):
        client.sendall(b"a")
        await until(lambda: proto.data == b"a")
        poll = proto.transport._recv_op
        assert _reads_on_readiness(proto.transport)
        port = asyncio.get_running_loop()._port
        submitted = port.stats()["submitted"]
        proto.transport.pause_reading()
        await asyncio.sleep(0.05)
        proto.transport.resume_reading()
        await asyncio.sleep(0.05)
        assert proto.transport._recv_op is poll
        assert port.stats()["submitted"] == submitted   # no cancel, no new poll
        client.sendall(b"b")
        await until(lambda: proto.data == b"ab")

        proto.transport.pause_reading()
        proto.paused = True
        client.sendall(b"c")
        await until(lambda: proto.transport._recv_op is None)   # the wakeup cancelled it
        assert poll.done and poll.cancelled
        assert proto.calls_while_paused == 0
        proto.paused = False
        proto.transport.resume_reading()
        await until(lambda: proto.data == b"abc")
        assert _reads_on_readiness(proto.transport)
        assert proto.transport._recv_op is not poll


WHOSE = contextvars.ContextVar("whose", default="nobody")
DELIVERIES = contextvars.ContextVar("deliveries", default=0)


class RecordingContexts(PausingInDataReceived):
    """Records which context each data_received runs in, and counts its
    calls in a context variable of its own."""

    def __init__(self):
        super().__init__()
        self.contexts = []
        self.counts = []

    def data_received(self, data):
        self.contexts.append(WHOSE.get())
        DELIVERIES.set(DELIVERIES.get() + 1)
        self.counts.append(DELIVERIES.get())
        super().data_received(data)


@contextlib.asynccontextmanager
async def connected_from_a_task(protocol_factory):
    """(transport, protocol, peer socket) of a client connection made by a
    task that sets WHOSE to "transport" first: the transport's context."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))

    async def connect():
        WHOSE.set("transport")
        return await loop.create_connection(protocol_factory, *listener.getsockname())

    transport, proto = await asyncio.create_task(connect())
    peer, _ = listener.accept()   # in the backlog already
    try:
        yield transport, proto, peer
    finally:
        peer.close()
        listener.close()
        transport.close()


@pytest.mark.asyncio(loop_factories=["iocploop"])
async def test_data_a_resume_delivers_runs_in_the_transports_context():
    """resume_reading from another task's context delivers what waited in
    the transport's own context, as uvloop does (uvloop's
    Test_UV_Context::test_start_tls: start_tls pauses and resumes from the
    caller's task).  asyncio's selector loop uses the resumer's context here,
    which uvloop's suite calls an asyncio bug, so this runs on iocploop."""
    async with connected_from_a_task(RecordingContexts) as (transport, proto, peer):
        data = payload(60_000, seed=12)   # one loopback segment: one wakeup
        peer.sendall(data)
        await until(lambda: proto.chunks)
        await asyncio.sleep(0.2)
        assert len(proto.data) < len(data)   # the first read is 16 KiB

        async def resume():
            WHOSE.set("resumer")
            proto.paused = False
            transport.resume_reading()

        await asyncio.create_task(resume())
        await until(lambda: len(proto.data) == len(data))
        assert digest(proto.data) == digest(data)
        assert set(proto.contexts) == {"transport"}


@pytest.mark.asyncio(loop_factories=["iocploop"])
async def test_a_context_variable_set_in_data_received_holds_for_the_next_call():
    """Every data_received of a transport runs in one context, as under
    asyncio's selector loop (its reader handle's) and uvloop (the
    transport's): a variable it sets is there at its next call, also when a
    read that filled its buffer goes on reading in a later turn.  (asyncio's
    Proactor runs each receive in a copy taken before the previous delivery,
    so the test runs on iocploop only; it passes on the selector loop.)"""
    class Counting(RecordingContexts):
        def data_received(self, data):
            RecordingContexts.data_received(self, data)
            self.paused = False
            self.transport.resume_reading()   # PausingInDataReceived paused it

    async with connected_from_a_task(Counting) as (transport, proto, peer):
        data = payload(1_000_000, seed=13)
        await asyncio.get_running_loop().run_in_executor(None, peer.sendall, data)
        await until(lambda: len(proto.data) == len(data))
        assert digest(proto.data) == digest(data)
        assert len(proto.counts) > 1
        assert proto.counts == list(range(1, len(proto.counts) + 1))
        assert set(proto.contexts) == {"transport"}
