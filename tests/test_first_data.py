"""First-data accepts: create_server(..., first_data_timeout=seconds).

An iocploop-only server mode (stock asyncio has none): each connection
reaches the protocol together with its first bytes, and a client that
connects and stays silent for first_data_timeout seconds is dropped before
any protocol exists (Windows: AcceptEx with a receive buffer plus a
SO_CONNECT_TIME guard; Linux: a receive with a timer after the accept).
Covered:

* connection_made followed at once by data_received with the first bytes:
  Protocol (small, exactly 4 KiB and large first sends), BufferedProtocol,
  asyncio.start_server streams, data followed by an immediate FIN;
  start_serving=False then start_serving() keeps the mode.
* Silent clients: dropped after (not before) the timeout without a protocol
  factory call, counted in socket_stats()["first_data_dropped"], the client
  reads EOF or a reset, and the pool recovers (more silent clients than
  accept_pool_size, then a real client is served).
* A client that connects and closes (FIN) without sending is delivered as a
  normal connection whose first event is eof_received (Linux; Windows: the
  same, or dropped); one that resets is dropped quietly.
* first_data_timeout validation; None is a normal server.
* pause_reading() in connection_made holds the first data until
  resume_reading().
* A server (or the loop) closed with silent clients pending leaks no
  descriptor and warns nothing.
"""
from __future__ import annotations

import asyncio
import gc
import math
import socket
import time
import warnings

import pytest

import iocploop
from _helpers import IS_LINUX, IS_WINDOWS, TIMEOUT, run
from _tcp_helpers import (
    BufferedEcho, Recorder, Tracker, bounded, fd_count, payload, set_linger_reset, until,
)

IOCP_ONLY = pytest.mark.asyncio(loop_factories=["iocploop"])
HOST = "127.0.0.1"

#: first_data_timeout of the silent-client tests.  Windows' guard reads
#: SO_CONNECT_TIME (whole seconds) every max(0.5, timeout / 2) s.
SILENCE = 1.0 if IS_WINDOWS else 0.5
#: How long after the timeout a silent client may still be connected.
DROP_SLACK = 3.0 if IS_WINDOWS else 1.5


class Chunks(Recorder):
    """Recorder that also keeps each data_received chunk."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.chunks: list[bytes] = []

    def data_received(self, data):
        self.chunks.append(bytes(data))
        super().data_received(data)


class PauseOnMade(Chunks):
    """Pauses reading inside connection_made."""

    def connection_made(self, transport):
        super().connection_made(transport)
        self.pause_reading()


class BufferedEchoMade(BufferedEcho):
    def connection_made(self, transport):
        self.calls.append("made")
        super().connection_made(transport)


def port_of(server) -> int:
    return server.sockets[0].getsockname()[1]


def read_outcome(sock: socket.socket, timeout: float = TIMEOUT) -> str:
    """What a blocking client socket reads next: 'eof', 'reset', 'timeout'
    or the data (as a repr)."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(1)
    except (ConnectionResetError, ConnectionAbortedError):
        return "reset"
    except socket.timeout:
        return "timeout"
    return "eof" if data == b"" else repr(data)


def silent_client(port: int) -> socket.socket:
    """A plain blocking client that connects and sends nothing (the kernel
    completes the handshake: no loop iteration needed)."""
    return socket.create_connection((HOST, port), timeout=TIMEOUT)


def dropped(loop) -> int:
    return loop.socket_stats()["first_data_dropped"]


# -- the first bytes arrive with the connection ------------------------------------------


@IOCP_ONLY
@pytest.mark.parametrize("size", [11, 4096, 100_000 if IS_LINUX else 20_000],
                         ids=["small", "4KiB", "large"])
async def test_protocol_meets_the_connection_with_its_first_bytes(size):
    loop = asyncio.get_running_loop()
    tracker = Tracker(Chunks)
    server = await loop.create_server(tracker, HOST, 0, first_data_timeout=1.0)
    data = payload(size, seed=size)
    async with server:
        reader, writer = await bounded(asyncio.open_connection(HOST, port_of(server)))
        writer.write(data)
        proto = await tracker.next()
        await proto.wait_bytes(size)
        assert proto.events[:2] == ["made", "data"], proto.events
        assert proto.chunks[0] and data.startswith(proto.chunks[0])
        assert bytes(proto.data) == data
        assert proto.transport.get_extra_info("peername") == writer.get_extra_info("sockname")
        # The connection is an ordinary one afterwards: both ways.
        proto.transport.write(b"reply")
        assert await bounded(reader.readexactly(5)) == b"reply"
        writer.close()
        await bounded(writer.wait_closed())
        await bounded(asyncio.shield(proto.lost))
    assert proto.events[-2:] == ["eof", "lost"], proto.events
    assert len(tracker.protocols) == 1
    assert dropped(loop) == 0


@IOCP_ONLY
async def test_buffered_protocol_gets_the_first_bytes_through_its_buffer():
    """BufferedProtocol (1000-byte buffers): the first bytes go through
    get_buffer / buffer_updated like any later ones, and the echo is exact."""
    loop = asyncio.get_running_loop()
    tracker = Tracker(BufferedEchoMade, size=1000)
    server = await loop.create_server(tracker, HOST, 0, first_data_timeout=1.0)
    data = payload(30_000, seed=3)
    async with server:
        reader, writer = await bounded(asyncio.open_connection(HOST, port_of(server)))
        writer.write(data)
        echoed = await bounded(reader.readexactly(len(data)))
        writer.close()
        await bounded(writer.wait_closed())
        await until(lambda: tracker.protocols and tracker.protocols[0].lost.done())
    assert echoed == data
    proto = tracker.protocols[0]
    assert proto.calls[:3] == ["made", "get_buffer", "buffer_updated"], proto.calls[:5]
    assert proto.received == len(data)
    assert proto.lost.result() is None


@IOCP_ONLY
async def test_streams_start_server_first_data_timeout():
    """asyncio.start_server passes first_data_timeout through; the handler
    starts with the first bytes already in its reader."""
    loop = asyncio.get_running_loop()
    seen = []

    async def handle(reader, writer):
        seen.append(len(reader._buffer))   # filled before the handler's first step
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, HOST, 0, first_data_timeout=1.0)
    async with server:
        for i in range(3):
            reader, writer = await bounded(asyncio.open_connection(HOST, port_of(server)))
            writer.write(b"hello %d\n" % i)
            assert await bounded(reader.read()) == b"HELLO %d\n" % i
            writer.close()
            await bounded(writer.wait_closed())
    assert len(seen) == 3 and all(n > 0 for n in seen), seen
    assert dropped(loop) == 0


@IOCP_ONLY
async def test_data_then_fin_at_once():
    """A client that sends and closes at once: made, data, eof, lost."""
    loop = asyncio.get_running_loop()
    tracker = Tracker(Chunks)
    server = await loop.create_server(tracker, HOST, 0, first_data_timeout=1.0)
    async with server:
        client = socket.create_connection((HOST, port_of(server)), timeout=TIMEOUT)
        client.sendall(b"request")
        client.shutdown(socket.SHUT_WR)
        proto = await tracker.next()
        await bounded(asyncio.shield(proto.lost))
        client.close()
    assert proto.events == ["made", "data", "eof", "lost"], proto.events
    assert bytes(proto.data) == b"request"


@IOCP_ONLY
async def test_start_serving_false_then_start_serving_keeps_the_mode():
    loop = asyncio.get_running_loop()
    tracker = Tracker(Chunks)
    server = await loop.create_server(tracker, HOST, 0, first_data_timeout=SILENCE,
                                      start_serving=False)
    assert not server.is_serving()
    await server.start_serving()
    async with server:
        silent = silent_client(port_of(server))
        try:
            await until(lambda: dropped(loop) == 1, SILENCE + DROP_SLACK)
            assert not tracker.protocols
            assert read_outcome(silent) in ("eof", "reset")
        finally:
            silent.close()
        reader, writer = await bounded(asyncio.open_connection(HOST, port_of(server)))
        writer.write(b"x")
        proto = await tracker.next()
        await proto.wait_bytes(1)
        assert proto.events[:2] == ["made", "data"]
        writer.close()
        await bounded(writer.wait_closed())
        await bounded(asyncio.shield(proto.lost))


# -- silent clients ------------------------------------------------------------------------


def test_silent_clients_dropped_after_the_timeout_and_the_pool_recovers():
    """More silent clients than accept_pool_size: none gets a protocol, each
    is dropped after (not before) first_data_timeout, counted, and reads EOF
    or a reset; then a real client is still served."""
    pool_size = 4
    n_silent = pool_size + 2
    loop = iocploop.Loop(accept_pool_size=pool_size)
    silent = []
    try:
        async def main():
            tracker = Tracker(Chunks)
            server = await loop.create_server(tracker, HOST, 0, first_data_timeout=SILENCE)
            port = port_of(server)
            async with server:
                started = time.monotonic()
                silent.extend(silent_client(port) for _ in range(n_silent))
                await asyncio.sleep(SILENCE / 2)
                assert dropped(loop) == 0, "dropped before the timeout"
                assert not tracker.protocols
                # Windows: the pool's accepts hold the first pool_size clients;
                # the others wait in the backlog for a second round.
                budget = (SILENCE + DROP_SLACK) * (2 if IS_WINDOWS else 1)
                await until(lambda: dropped(loop) >= n_silent, budget)
                elapsed = time.monotonic() - started
                assert dropped(loop) == n_silent
                assert not tracker.protocols, "a protocol was made for a silent client"
                if IS_LINUX:
                    assert elapsed >= SILENCE * 0.9, elapsed
                else:
                    # SO_CONNECT_TIME counts whole seconds: never before ceil(timeout).
                    assert elapsed >= math.ceil(SILENCE) * 0.9, elapsed
                outcomes = await asyncio.gather(
                    *(asyncio.to_thread(read_outcome, s) for s in silent))
                assert set(outcomes) <= {"eof", "reset"}, outcomes
                # The pool recovered: a real client is served at once.
                reader, writer = await bounded(asyncio.open_connection(HOST, port))
                writer.write(b"real client")
                proto = await tracker.next()
                await proto.wait_bytes(11)
                assert proto.events[:2] == ["made", "data"]
                assert bytes(proto.data) == b"real client"
                writer.close()
                await bounded(writer.wait_closed())
                await bounded(asyncio.shield(proto.lost))
                assert len(tracker.protocols) == 1

        run(loop, main(), TIMEOUT + 2 * (SILENCE + DROP_SLACK) * 2)
    finally:
        for s in silent:
            s.close()
        loop.close()


@IOCP_ONLY
async def test_client_closing_without_data_is_delivered_with_eof():
    """A client that connects and closes (FIN) without sending is not
    silent: iocploop delivers it as a normal connection whose first event
    after connection_made is eof_received (Linux: the first receive returns
    end-of-file; Windows: AcceptEx completes with zero bytes; a provider that
    keeps waiting would let the guard drop it instead, also accepted there).
    Both a half-close (shutdown) and a full close."""
    loop = asyncio.get_running_loop()
    tracker = Tracker(Chunks)
    server = await loop.create_server(tracker, HOST, 0, first_data_timeout=SILENCE)
    async with server:
        half = silent_client(port_of(server))
        half.shutdown(socket.SHUT_WR)
        full = silent_client(port_of(server))
        full.close()
        try:
            await until(lambda: len(tracker.protocols) + dropped(loop) >= 2,
                        SILENCE + DROP_SLACK)
            await until(lambda: all(p.lost.done() for p in tracker.protocols))
            # The half-closed client still reads: the server closed after EOF.
            assert read_outcome(half) in ("eof", "reset")
        finally:
            half.close()
    if IS_LINUX or tracker.protocols:
        assert len(tracker.protocols) == 2, (len(tracker.protocols), dropped(loop))
        for proto in tracker.protocols:
            assert proto.events == ["made", "eof", "lost"], proto.events
            assert not proto.data
        assert dropped(loop) == 0
    else:
        assert dropped(loop) == 2


@IOCP_ONLY
async def test_client_resetting_before_sending_is_dropped_quietly():
    """A client that resets before sending anything never reaches a
    protocol, calls no exception handler and does not stop the server."""
    loop = asyncio.get_running_loop()
    handler_calls = []
    loop.set_exception_handler(lambda lp, ctx: handler_calls.append(ctx))
    tracker = Tracker(Chunks)
    server = await loop.create_server(tracker, HOST, 0, first_data_timeout=SILENCE)
    async with server:
        for _ in range(3):
            s = silent_client(port_of(server))
            set_linger_reset(s)
            s.close()
        await asyncio.sleep(0.2)
        assert not tracker.protocols
        reader, writer = await bounded(asyncio.open_connection(HOST, port_of(server)))
        writer.write(b"after resets")
        proto = await tracker.next()
        await proto.wait_bytes(12)
        writer.close()
        await bounded(writer.wait_closed())
        await bounded(asyncio.shield(proto.lost))
    assert len(tracker.protocols) == 1
    assert not handler_calls, handler_calls
    if IS_LINUX:
        assert dropped(loop) == 0   # not silent: reset, as a failed accept


# -- validation ---------------------------------------------------------------------------


@IOCP_ONLY
@pytest.mark.parametrize("bad", [0, -1, -0.5, "x", float("inf"), float("nan"), True],
                         ids=["zero", "minus1", "negative", "str", "inf", "nan", "bool"])
async def test_first_data_timeout_validation(bad):
    loop = asyncio.get_running_loop()
    gc.collect()
    before = fd_count() if IS_LINUX else None
    with pytest.raises(ValueError, match="first_data_timeout"):
        await loop.create_server(Recorder, HOST, 0, first_data_timeout=bad)
    with pytest.raises(ValueError, match="first_data_timeout"):
        await asyncio.start_server(lambda r, w: None, HOST, 0, first_data_timeout=bad)
    if before is not None:
        gc.collect()
        assert fd_count() == before, "a listening socket was left open"


@IOCP_ONLY
async def test_first_data_timeout_none_is_a_normal_server():
    """None (the default): a client that sends nothing still gets its
    protocol at once, and nothing is dropped."""
    loop = asyncio.get_running_loop()
    tracker = Tracker(Chunks)
    server = await loop.create_server(tracker, HOST, 0, first_data_timeout=None)
    async with server:
        s = silent_client(port_of(server))
        try:
            proto = await tracker.next()
            assert proto.events == ["made"]
            await asyncio.sleep(0.1)
            assert proto.events == ["made"] and dropped(loop) == 0
        finally:
            s.close()
        await bounded(asyncio.shield(proto.lost))


@IOCP_ONLY
async def test_integer_first_data_timeout_accepted():
    loop = asyncio.get_running_loop()
    tracker = Tracker(Chunks)
    server = await loop.create_server(tracker, HOST, 0, first_data_timeout=2)
    async with server:
        reader, writer = await bounded(asyncio.open_connection(HOST, port_of(server)))
        writer.write(b"int")
        proto = await tracker.next()
        await proto.wait_bytes(3)
        writer.close()
        await bounded(writer.wait_closed())
        await bounded(asyncio.shield(proto.lost))


# -- flow control --------------------------------------------------------------------------


@IOCP_ONLY
async def test_pause_reading_in_connection_made_holds_the_first_data():
    loop = asyncio.get_running_loop()
    tracker = Tracker(PauseOnMade)
    server = await loop.create_server(tracker, HOST, 0, first_data_timeout=1.0)
    async with server:
        reader, writer = await bounded(asyncio.open_connection(HOST, port_of(server)))
        writer.write(b"first")
        proto = await tracker.next()
        await asyncio.sleep(0.1)
        writer.write(b"second")      # arrives while paused: held in the kernel
        await asyncio.sleep(0.2)
        assert proto.events == ["made"], proto.events
        assert not proto.transport.is_reading()
        proto.resume_reading()
        await proto.wait_bytes(len(b"firstsecond"))
        assert bytes(proto.data) == b"firstsecond"
        assert proto.chunks[0] == b"first"
        assert proto.data_while_paused == 0
        writer.close()
        await bounded(writer.wait_closed())
        await bounded(asyncio.shield(proto.lost))
    assert proto.events[:2] == ["made", "data"]
    assert proto.events[-2:] == ["eof", "lost"]


# -- what a closed server leaves behind ----------------------------------------------------


@pytest.mark.parametrize("closing", ["server", "loop"])
def test_closed_with_silent_clients_pending_leaks_nothing(closing):
    """Silent clients are waiting (Linux: accepted, a receive and a timer
    pending; Windows: AcceptEx pending) when the server closes -- or when the
    loop closes with the server still open: no descriptor is left (Linux),
    no ResourceWarning, no protocol made."""
    gc.collect()
    before = fd_count() if IS_LINUX else None
    silent = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        loop = iocploop.Loop(accept_pool_size=4)
        tracker = Tracker(Chunks)
        server = None
        try:
            async def main():
                nonlocal server
                server = await loop.create_server(tracker, HOST, 0, first_data_timeout=30)
                silent.extend(silent_client(port_of(server)) for _ in range(6))
                await asyncio.sleep(0.2)   # accepted (Linux: all; Windows: the pool's)
                if closing == "server":
                    server.close()
                    await bounded(server.wait_closed())
                    outcomes = await asyncio.gather(
                        *(asyncio.to_thread(read_outcome, s) for s in silent))
                    assert set(outcomes) <= {"eof", "reset"}, outcomes

            run(loop, main())
        finally:
            loop.close()
            if server is not None:
                server.close()
            for s in silent:
                s.close()
        assert not tracker.protocols
        del server, tracker, main
        silent.clear()
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, leaked
    if before is not None:
        assert fd_count() == before
