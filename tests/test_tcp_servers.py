"""TCP servers and connections through asyncio's API: create_server,
create_connection, streams, connect_accepted_socket, and what a closed server
leaves behind.  Every async test runs on iocploop and on stock asyncio (the
reference behaviour)."""
from __future__ import annotations

import asyncio
import gc
import socket
import sys
import time
import warnings

import pytest

import iocploop
from _helpers import IS_LINUX, IS_WINDOWS, TIMEOUT, run
from _tcp_helpers import (
    LOOPBACKS, SCALE, BufferedEcho, Echo, Recorder, Tracker, bounded, close_all, connected_pair,
    echo_roundtrip, fd_count, free_port_socket, is_iocploop, loop_kept_fds, payload, requires_ipv6,
    set_linger_reset, stalled_listener, until,
)

#: Concurrent clients of the echo tests.
CLIENTS = 3 if IS_WINDOWS else 30


def _client_payloads(clients=CLIENTS):
    # Sizes from 1 byte up (Linux: to ~230 KiB), each client its own bytes.
    return [payload(1 + i * 7919, seed=i) for i in range(clients)]


async def _echo_many(host, port, clients=CLIENTS):
    datas = _client_payloads(clients)
    echoed = await bounded(asyncio.gather(*(echo_roundtrip(host, port, d) for d in datas)),
                           TIMEOUT * 2)
    for i, (sent, got) in enumerate(zip(datas, echoed)):
        assert len(got) == len(sent), f"client {i}: {len(got)} of {len(sent)} bytes echoed"
        assert got == sent, f"client {i}: echo differs"


def _port_of(server, family=None):
    for sock in server.sockets:
        if family is None or sock.family == family:
            return sock.getsockname()[1]
    raise AssertionError(f"no socket of family {family} in {server.sockets}")


# -- echo servers in each style ------------------------------------------------


@pytest.mark.asyncio
async def test_echo_server_protocol_concurrent_clients():
    loop = asyncio.get_running_loop()
    tracker = Tracker(Echo)
    server = await loop.create_server(tracker, "127.0.0.1", 0)
    async with server:
        await _echo_many("127.0.0.1", _port_of(server))
        await tracker.all_lost()
    assert len(tracker.protocols) == CLIENTS
    assert all(p.lost.result() is None for p in tracker.protocols)
    sizes = sorted(len(d) for d in _client_payloads())
    assert sorted(p.received for p in tracker.protocols) == sizes


@pytest.mark.asyncio
async def test_echo_server_buffered_protocol_receives_into_its_buffer():
    """BufferedProtocol: data lands in the very buffer get_buffer returned
    (BufferedEcho echoes from its backing store, not from the transport)."""
    loop = asyncio.get_running_loop()
    tracker = Tracker(BufferedEcho, size=1000)   # small: many receives per client
    server = await loop.create_server(tracker, "127.0.0.1", 0)
    async with server:
        await _echo_many("127.0.0.1", _port_of(server))
        await tracker.all_lost()
    assert len(tracker.protocols) == CLIENTS
    sizes = sorted(len(d) for d in _client_payloads())
    assert sorted(p.received for p in tracker.protocols) == sizes
    for proto in tracker.protocols:
        assert proto.lost.result() is None
        assert proto.calls[-2:] == ["eof", "lost"]
        # At least ceil(size / buffer size) receives, each into its own buffer.
        assert proto.calls.count("buffer_updated") >= -(-proto.received // 1000)


@pytest.mark.asyncio
async def test_buffered_protocol_client_big_buffer_byte_exact():
    """A BufferedProtocol on the client side of create_connection too."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    data = payload(SCALE * 50_000, seed=7)
    done = loop.create_future()

    class Collect(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(64 * 1024)
            self.got = bytearray()
            self.lost = loop.create_future()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, n):
            self.got += self.buf[:n]
            if len(self.got) >= len(data) and not done.done():
                done.set_result(None)

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    transport, proto = await bounded(loop.create_connection(Collect, "127.0.0.1",
                                                            _port_of(server)))
    transport.write(data)
    await bounded(done)
    assert bytes(proto.got) == data
    await close_all(server, [transport], [proto])


@pytest.mark.asyncio
async def test_echo_server_streams_concurrent_clients():
    handled = []

    async def handle(reader, writer):
        total = 0
        while chunk := await reader.read(65536):
            total += len(chunk)
            writer.write(chunk)
            await writer.drain()
        handled.append(total)
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        await _echo_many("127.0.0.1", _port_of(server))
        await until(lambda: len(handled) == CLIENTS)
    assert sorted(handled) == sorted(len(d) for d in _client_payloads())


# -- create_server ---------------------------------------------------------------


@requires_ipv6
@pytest.mark.asyncio
async def test_create_server_host_list_ipv4_and_ipv6():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, ["127.0.0.1", "::1"], 0)
    async with server:
        assert sorted(s.family for s in server.sockets) == sorted(
            [socket.AF_INET, socket.AF_INET6])
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            assert port != 0
            data = payload(3000, seed=port)
            assert await echo_roundtrip(host, port, data) == data


@pytest.mark.asyncio
@pytest.mark.parametrize("host,family", LOOPBACKS)
async def test_create_server_each_family_port_zero(host, family):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, 0, family=family)
    async with server:
        assert len(server.sockets) == 1
        sock = server.sockets[0]
        assert sock.family == family and sock.type == socket.SOCK_STREAM
        assert sock.getsockname()[0] == host and sock.getsockname()[1] != 0
        await _echo_many(host, sock.getsockname()[1], clients=min(CLIENTS, 4))


@pytest.mark.asyncio
async def test_create_server_premade_listening_socket():
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    with pytest.raises(ValueError):
        await loop.create_server(Echo, "127.0.0.1", 0, sock=sock)
    server = await loop.create_server(Echo, sock=sock)
    async with server:
        assert [s.fileno() for s in server.sockets] == [sock.fileno()]
        assert sock.gettimeout() == 0   # made non-blocking
        data = payload(5000, seed=3)
        assert await echo_roundtrip(*sock.getsockname(), data) == data
    assert sock.fileno() == -1   # the server owned it and closed it


def _listen_backlog(sock):
    """Linux: a listening socket's backlog, from TCP_INFO (tcpi_sacked holds
    sk_max_ack_backlog for a socket in LISTEN state)."""
    import struct

    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("<I", info, 28)[0]


@pytest.mark.asyncio
@pytest.mark.parametrize("backlog", [None, 1, 7])
async def test_create_server_backlog(backlog):
    loop = asyncio.get_running_loop()
    kwargs = {} if backlog is None else {"backlog": backlog}
    server = await loop.create_server(Echo, "127.0.0.1", 0, **kwargs)
    async with server:
        if IS_LINUX:
            assert _listen_backlog(server.sockets[0]) == (backlog or 100)
        for i in range(3):   # one at a time: the accept queue never overflows
            data = payload(100 + i, seed=i)
            assert await echo_roundtrip("127.0.0.1", _port_of(server), data) == data


@pytest.mark.asyncio
@pytest.mark.parametrize("reuse", [True, False])
async def test_create_server_reuse_address(reuse):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, reuse_address=reuse)
    async with server:
        value = server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert bool(value) is reuse
        data = b"reuse-address"
        assert await echo_roundtrip("127.0.0.1", _port_of(server), data) == data


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"),
                    reason="socket.SO_REUSEPORT does not exist on this platform")
@pytest.mark.asyncio
async def test_create_server_reuse_port_two_servers_share_a_port():
    loop = asyncio.get_running_loop()
    t1, t2 = Tracker(Echo), Tracker(Echo)
    s1 = await loop.create_server(t1, "127.0.0.1", 0, reuse_port=True)
    port = _port_of(s1)
    s2 = await loop.create_server(t2, "127.0.0.1", port, reuse_port=True)
    async with s1, s2:
        for s in (s1, s2):
            assert s.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        await _echo_many("127.0.0.1", port, clients=16)
        await until(lambda: len(t1.protocols) + len(t2.protocols) == 16)


@pytest.mark.asyncio
async def test_start_serving_false_then_start_serving():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
    async with server:
        assert not server.is_serving()
        assert len(server.sockets) == 1
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()   # again: a no-op
        data = payload(2000, seed=11)
        assert await echo_roundtrip("127.0.0.1", _port_of(server), data) == data
    assert not server.is_serving()


@pytest.mark.asyncio
async def test_serve_forever_until_cancelled():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
    port = _port_of(server)
    task = asyncio.create_task(server.serve_forever())
    await until(server.is_serving)
    data = payload(1500, seed=5)
    assert await echo_roundtrip("127.0.0.1", port, data) == data
    with pytest.raises(RuntimeError):   # serve_forever is already running
        await server.serve_forever()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(task)
    assert not server.is_serving()
    assert server.sockets == ()
    with pytest.raises(ConnectionRefusedError):
        await bounded(asyncio.open_connection("127.0.0.1", port))


@pytest.mark.asyncio
async def test_server_attributes():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    try:
        assert server.get_loop() is loop
        assert server.is_serving()
        socks = server.sockets
        assert isinstance(socks, tuple) and len(socks) == 1
        assert socks[0].getsockname()[0] == "127.0.0.1"
        assert socks[0].fileno() >= 0
    finally:
        server.close()
        await bounded(server.wait_closed())


@pytest.mark.asyncio
async def test_close_and_wait_closed_existing_connection_lives_on():
    loop = asyncio.get_running_loop()
    tracker = Tracker(Echo)
    server = await loop.create_server(tracker, "127.0.0.1", 0)
    port = _port_of(server)
    reader, writer = await bounded(asyncio.open_connection("127.0.0.1", port))
    writer.write(b"ping")
    assert await bounded(reader.readexactly(4)) == b"ping"
    server.close()
    server.close()   # again: a no-op
    assert not server.is_serving()
    assert server.sockets == ()
    with pytest.raises(ConnectionRefusedError):
        await bounded(asyncio.open_connection("127.0.0.1", port))
    # Closing the server leaves the established connection alone.
    writer.write(b"still here")
    assert await bounded(reader.readexactly(10)) == b"still here"
    writer.close()
    await bounded(writer.wait_closed())
    await bounded(server.wait_closed())   # 3.12+: waits for the connection
    await bounded(tracker.protocols[0].lost)


@pytest.mark.asyncio
async def test_server_async_context_manager_closes():
    loop = asyncio.get_running_loop()
    async with await loop.create_server(Echo, "127.0.0.1", 0) as server:
        assert server.is_serving()
        port = _port_of(server)
        assert await echo_roundtrip("127.0.0.1", port, b"ctx") == b"ctx"
    assert not server.is_serving()
    with pytest.raises(ConnectionRefusedError):
        await bounded(asyncio.open_connection("127.0.0.1", port))


needs_313 = pytest.mark.skipif(sys.version_info < (3, 13),
                               reason="Server.close_clients/abort_clients arrive in Python 3.13")


@needs_313
@pytest.mark.asyncio
async def test_server_close_clients():
    loop = asyncio.get_running_loop()
    tracker = Tracker(Recorder)
    server = await loop.create_server(tracker, "127.0.0.1", 0)
    clients = []
    for _ in range(2):
        transport, proto = await bounded(loop.create_connection(
            Recorder, "127.0.0.1", _port_of(server)))
        clients.append((transport, proto))
    await until(lambda: len(tracker.protocols) == 2)
    server.close()
    server.close_clients()
    await bounded(server.wait_closed())
    for peer in tracker.protocols:
        assert await bounded(peer.lost) is None
        assert peer.lost_calls == 1
    for transport, proto in clients:
        await bounded(proto.eof)    # an orderly close reached the client
        assert await bounded(proto.lost) is None


@needs_313
@pytest.mark.asyncio
async def test_server_abort_clients():
    loop = asyncio.get_running_loop()
    tracker = Tracker(Recorder)
    server = await loop.create_server(tracker, "127.0.0.1", 0)
    transport, client = await bounded(loop.create_connection(
        Recorder, "127.0.0.1", _port_of(server)))
    peer = await tracker.next()
    peer.transport.pause_reading()
    peer.transport.write(b"x" * 100_000)   # dropped by the abort, or not
    server.close()
    server.abort_clients()
    await bounded(server.wait_closed())
    assert await bounded(peer.lost) is None
    assert peer.lost_calls == 1
    exc = await bounded(client.lost)
    assert exc is None or isinstance(exc, ConnectionResetError)
    transport.close()


# -- create_connection -------------------------------------------------------------


@pytest.mark.asyncio
async def test_create_connection_local_addr():
    loop = asyncio.get_running_loop()
    tracker = Tracker(Recorder)
    server = await loop.create_server(tracker, "127.0.0.1", 0)
    transport, client = await bounded(loop.create_connection(
        Recorder, "127.0.0.1", _port_of(server), local_addr=("127.0.0.1", 0)))
    peer = await tracker.next()
    sockname = transport.get_extra_info("sockname")
    assert sockname[0] == "127.0.0.1" and sockname[1] != 0
    assert peer.transport.get_extra_info("peername") == sockname
    await close_all(server, [transport], [client, peer])


async def _echo_server_and_a_connected_socket():
    """(an echo server, a non-blocking socket connected to it by hand)."""
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    sock = socket.create_connection(("127.0.0.1", _port_of(server)), timeout=TIMEOUT)
    sock.setblocking(False)
    return server, sock


@pytest.mark.asyncio
async def test_create_connection_premade_socket():
    loop = asyncio.get_running_loop()
    server, sock = await _echo_server_and_a_connected_socket()
    with pytest.raises(ValueError):
        await loop.create_connection(Recorder, "127.0.0.1", 1, sock=sock)
    transport, client = await bounded(loop.create_connection(Recorder, sock=sock))
    assert transport.get_extra_info("socket").fileno() == sock.fileno()
    data = payload(10_000, seed=1)
    transport.write(data)
    await client.wait_bytes(len(data))
    assert bytes(client.data) == data
    await close_all(server, [transport], [client])


@pytest.mark.asyncio
async def test_cancelled_create_connection_with_a_premade_socket_has_closed_it():
    # As asyncio (and uvloop's test_create_connection_sock_cancel_detaches):
    # when the caller resumes from the cancellation, the transport that was
    # being made has closed the socket, although its receive was posted.
    loop = asyncio.get_running_loop()
    server, sock = await _echo_server_and_a_connected_socket()
    task = asyncio.ensure_future(loop.create_connection(Recorder, sock=sock))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sock.fileno() == -1
    server.close()
    await bounded(server.wait_closed())


@pytest.mark.asyncio
async def test_connection_lost_comes_a_turn_after_close_with_a_receive_posted():
    # asyncio calls connection_lost in the turn after close() when nothing is
    # left to send; iocploop does not wait for the cancelled receive first.
    server, transport, client, peer = await connected_pair()
    transport.close()
    assert not client.lost.done()
    await asyncio.sleep(0)
    assert client.lost.done()
    assert transport.get_extra_info("socket").fileno() == -1
    await close_all(server, [peer.transport], [peer])


@pytest.mark.asyncio
async def test_create_connection_refused():
    loop = asyncio.get_running_loop()
    with free_port_socket() as dead:
        with pytest.raises(ConnectionRefusedError):
            await bounded(loop.create_connection(Recorder, *dead.getsockname()))


def _fake_resolver(loop, infos):
    """Make loop.getaddrinfo answer `infos` (family, sockaddr) for any name."""
    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        return [(fam, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", addr)
                for fam, addr in infos if family in (0, fam)]
    loop.getaddrinfo = getaddrinfo


def _record_connects(loop):
    """Record the addresses create_connection tries, in order."""
    tried = []
    original = loop.sock_connect

    async def sock_connect(sock, address):
        tried.append(address[:2])
        return await original(sock, address)

    loop.sock_connect = sock_connect
    return tried


@pytest.mark.asyncio
async def test_happy_eyeballs_stalled_first_address_loses_to_second():
    """The first address never answers (accept queue full): after
    happy_eyeballs_delay the second is tried and wins; the stalled attempt is
    cancelled and leaves nothing behind."""
    loop = asyncio.get_running_loop()
    before_fds = fd_count() if IS_LINUX else None
    before_pending = loop._port.pending if is_iocploop(loop) else None
    listener, filler = stalled_listener()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    live = ("127.0.0.1", _port_of(server))
    stalled = listener.getsockname()
    _fake_resolver(loop, [(socket.AF_INET, stalled), (socket.AF_INET, live)])
    tried = _record_connects(loop)
    delay = 0.1
    try:
        start = time.monotonic()
        transport, client = await bounded(loop.create_connection(
            Recorder, "happy-eyeballs.invalid", 4242, happy_eyeballs_delay=delay))
        elapsed = time.monotonic() - start
        assert tried == [stalled, live]
        assert elapsed >= delay * 0.9
        assert transport.get_extra_info("peername")[:2] == live
        transport.write(b"hello")
        await client.wait_bytes(5)
        await close_all(server, [transport], [client])
    finally:
        del loop.getaddrinfo, loop.sock_connect
        listener.close()
        filler.close()
    if before_pending is not None:
        await until(lambda: loop._port.pending == before_pending)
    if before_fds is not None:
        await until(lambda: fd_count() - loop_kept_fds(loop) == before_fds)


@requires_ipv6
@pytest.mark.asyncio
@pytest.mark.parametrize("kwargs,expect", [
    ({}, ["v6a", "v6b", "v4"]),
    ({"interleave": 1}, ["v6a", "v4"]),
    ({"happy_eyeballs_delay": 0.25}, ["v6a", "v4"]),   # interleave defaults to 1
    ({"happy_eyeballs_delay": 0.25, "interleave": 2}, ["v6a", "v6b", "v4"]),
], ids=["sequential", "interleave", "happy-eyeballs", "happy-eyeballs-interleave-2"])
async def test_create_connection_address_order(kwargs, expect):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    with free_port_socket("::1") as d1, free_port_socket("::1") as d2:
        addrs = {"v6a": d1.getsockname()[:2], "v6b": d2.getsockname()[:2],
                 "v4": ("127.0.0.1", _port_of(server))}
        _fake_resolver(loop, [(socket.AF_INET6, d1.getsockname()),
                              (socket.AF_INET6, d2.getsockname()),
                              (socket.AF_INET, addrs["v4"])])
        tried = _record_connects(loop)
        try:
            transport, client = await bounded(loop.create_connection(
                Recorder, "interleave.invalid", 4242, **kwargs))
        finally:
            del loop.getaddrinfo, loop.sock_connect
    assert tried == [addrs[name] for name in expect]
    assert transport.get_extra_info("peername")[:2] == addrs["v4"]
    await close_all(server, [transport], [client])


@pytest.mark.asyncio
async def test_create_connection_every_address_fails():
    loop = asyncio.get_running_loop()
    with free_port_socket() as d1, free_port_socket() as d2:
        dead = [d1.getsockname(), d2.getsockname()]
        _fake_resolver(loop, [(socket.AF_INET, addr) for addr in dead])
        try:
            with pytest.raises(OSError) as info:
                await bounded(loop.create_connection(Recorder, "dead.invalid", 4242))
        finally:
            del loop.getaddrinfo
    exc = info.value
    if IS_WINDOWS:
        # The proactor's connect errors do not name the address: the
        # messages are equal and asyncio raises the first error itself.
        assert isinstance(exc, ConnectionRefusedError)
    else:
        # The selector loop's do ("Connect call failed ('127.0.0.1', port)"),
        # so the messages differ and asyncio combines them.
        assert type(exc) is OSError
        assert str(exc).startswith("Multiple exceptions:")
        for addr in dead:
            assert str(addr) in str(exc)


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="create_connection(all_errors=True) arrives in Python 3.12")
@pytest.mark.asyncio
async def test_create_connection_all_errors_exception_group():
    loop = asyncio.get_running_loop()
    with free_port_socket() as d1, free_port_socket() as d2:
        _fake_resolver(loop, [(socket.AF_INET, d1.getsockname()),
                              (socket.AF_INET, d2.getsockname())])
        try:
            with pytest.raises(ExceptionGroup) as info:  # noqa: F821 (3.11+)
                await bounded(loop.create_connection(
                    Recorder, "dead.invalid", 4242, all_errors=True))
        finally:
            del loop.getaddrinfo
    errors = info.value.exceptions
    assert len(errors) == 2
    assert all(isinstance(e, ConnectionRefusedError) for e in errors)


@pytest.mark.asyncio
async def test_connect_accepted_socket():
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client_sock = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        conn, _ = listener.accept()
    conn.setblocking(False)
    client_sock.setblocking(False)
    transport, proto = await bounded(loop.connect_accepted_socket(Echo, conn))
    assert transport.get_extra_info("peername") == client_sock.getsockname()
    reader, writer = await bounded(asyncio.open_connection(sock=client_sock))
    data = payload(20_000, seed=9)
    writer.write(data)
    writer.write_eof()
    assert await bounded(reader.read()) == data
    assert await bounded(proto.lost) is None
    writer.close()
    await bounded(writer.wait_closed())


@pytest.mark.asyncio
async def test_protocol_factory_error_does_not_stop_the_server():
    """A protocol_factory that raises for one connection: that connection is
    closed and the server goes on accepting."""
    loop = asyncio.get_running_loop()
    if IS_WINDOWS and not is_iocploop(loop):
        pytest.skip("stock asyncio's proactor stops accepting after a protocol_factory "
                    "error: no reference behaviour")
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    calls = []

    def factory():
        calls.append(None)
        if len(calls) == 1:
            raise ValueError("no protocol for you")
        return Echo()

    try:
        with warnings.catch_warnings():
            # asyncio leaves the refused connection's socket to the garbage collector.
            warnings.simplefilter("ignore", ResourceWarning)
            server = await loop.create_server(factory, "127.0.0.1", 0)
            async with server:
                port = _port_of(server)
                reader, writer = await bounded(asyncio.open_connection("127.0.0.1", port))
                try:
                    assert await bounded(reader.read()) == b""
                except ConnectionResetError:
                    pass
                writer.close()
                assert await echo_roundtrip("127.0.0.1", port, b"next one") == b"next one"
                gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert len(calls) == 2
    assert all(isinstance(c.get("exception"), ValueError) for c in contexts)


@pytest.mark.asyncio
async def test_clients_resetting_at_once_do_not_stop_the_server():
    loop = asyncio.get_running_loop()
    if IS_WINDOWS and not is_iocploop(loop):
        pytest.skip("stock asyncio's proactor closes the listener when an accept fails "
                    "(WSAENOTCONN for a reset client): no reference behaviour")
    tracker = Tracker(Recorder)
    server = await loop.create_server(tracker, "127.0.0.1", 0)
    async with server:
        port = _port_of(server)
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            set_linger_reset(s)
            s.close()
        data = payload(3000, seed=2)
        reader, writer = await bounded(asyncio.open_connection("127.0.0.1", port))
        writer.write(data)
        await until(lambda: any(p.data == data for p in tracker.protocols))
        writer.close()
        await bounded(writer.wait_closed())
        await tracker.all_lost()
    assert len(tracker.protocols) == 4
    for proto in tracker.protocols:
        exc = proto.lost.result()
        assert exc is None or isinstance(exc, ConnectionResetError), exc
        assert proto.lost_calls == 1


def test_accept_pool_of_one_serves_concurrent_clients():
    """iocploop's accept pool refills after each accept (accept_pool_size=1)."""
    loop = iocploop.Loop(accept_pool_size=1)
    try:
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            async with server:
                await _echo_many("127.0.0.1", _port_of(server))
        run(loop, main(), TIMEOUT * 2)
    finally:
        loop.close()


# -- many connections -----------------------------------------------------------------


def test_connections_ending_at_once_past_the_completion_queue_all_end():
    """iocploop: a completion queue far smaller than the connections that
    wake at once (queue_depth=8: 32 entries, 300 connections echoing, then
    ending together).  io_uring ends a multishot poll it cannot report in
    the queue with a last wakeup; every connection still gets its echo and
    its end, and the loop goes idle again (it once re-polled forever)."""
    count = 30 if IS_WINDOWS else 300
    _raise_fd_limit(2 * count + 256)
    loop = iocploop.Loop(queue_depth=8)
    try:
        async def main():
            tracker = Tracker(Echo)
            server = await loop.create_server(tracker, "127.0.0.1", 0, backlog=count)
            port = _port_of(server)
            clients = [await bounded(loop.create_connection(Recorder, "127.0.0.1", port))
                       for _ in range(count)]
            for i, (transport, _) in enumerate(clients):
                transport.write(b"%05d" % i)
            for i, (_, proto) in enumerate(clients):
                await proto.wait_bytes(5)
                assert bytes(proto.data) == b"%05d" % i
            for transport, _ in clients:
                transport.close()
            await bounded(asyncio.gather(*(p.lost for p in tracker.protocols)), TIMEOUT * 2)
            waits = loop._port.stats()["waits"]
            await asyncio.sleep(0.2)
            assert loop._port.stats()["waits"] - waits < 100, "the loop keeps spinning"
            server.close()
            await bounded(server.wait_closed())
        run(loop, main(), TIMEOUT * 3)
    finally:
        loop.close()



def _raise_fd_limit(needed: int) -> None:
    if IS_WINDOWS:
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed} descriptors needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


MANY = 20 if IS_WINDOWS else 1000


@pytest.mark.asyncio
async def test_many_concurrent_connections_each_echo_once():
    _raise_fd_limit(2 * MANY + 256)
    loop = asyncio.get_running_loop()
    tracker = Tracker(Echo)
    server = await loop.create_server(tracker, "127.0.0.1", 0, backlog=MANY)
    port = _port_of(server)
    ready = asyncio.Event()

    async def client(i):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await ready.wait()   # every connection open at once
            msg = f"client {i:04d}".encode()
            writer.write(msg)
            return await reader.readexactly(len(msg)) == msg
        finally:
            writer.close()
            await writer.wait_closed()

    async with server:
        tasks = [asyncio.create_task(client(i)) for i in range(MANY)]
        await until(lambda: len(tracker.protocols) == MANY or any(t.done() for t in tasks),
                    TIMEOUT * 3)
        assert len(tracker.protocols) == MANY
        ready.set()
        results = await bounded(asyncio.gather(*tasks), TIMEOUT * 3)
        assert results == [True] * MANY
        await tracker.all_lost()


# -- what a closed server leaves behind ------------------------------------------------


@pytest.mark.asyncio
async def test_server_closed_with_accepts_pending_leaks_nothing():
    """Close a server with accepts posted and connections racing in: every
    socket is closed (Linux: the fd count returns; everywhere: no unclosed
    socket is found by the garbage collector), and on iocploop no operation is
    left in the completion port."""
    loop = asyncio.get_running_loop()
    gc.collect()
    before_fds = fd_count() if IS_LINUX else None
    before_pending = loop._port.pending if is_iocploop(loop) else None
    assert before_pending in (None, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        tracker = Tracker(Echo)
        server = await loop.create_server(tracker, "127.0.0.1", 0)
        port = _port_of(server)
        if before_pending is not None:
            assert loop._port.pending > before_pending   # accepts posted
        assert await echo_roundtrip("127.0.0.1", port, b"served") == b"served"
        racers = []
        # Windows' stock proactor fails an accept that completes after
        # close() (AssertionError in Server._attach, the socket left to the
        # garbage collector): no race there, it has no reference behaviour.
        n_racers = 0 if IS_WINDOWS and not is_iocploop(loop) else 2 + SCALE // 4
        for _ in range(n_racers):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            racers.append(s)
        await asyncio.sleep(0)
        server.close()
        for s in racers:
            s.close()
        await bounded(server.wait_closed())   # 3.12+: also waits for the racers' transports
        await tracker.all_lost()
        if before_pending is not None:
            await until(lambda: loop._port.pending == 0)
        for _ in range(5):
            await asyncio.sleep(0)
        del server, racers, tracker
        gc.collect()
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, [str(w.message) for w in leaked]
    if before_fds is not None:
        await until(lambda: fd_count() - loop_kept_fds(loop) == before_fds)


@pytest.mark.parametrize("factory", [iocploop.new_event_loop, asyncio.new_event_loop],
                         ids=["iocploop", "asyncio"])
def test_loop_closed_while_server_open_leaks_nothing(factory):
    """Connections arrive while the loop is stopped, then the loop is closed
    with the server still open (as when asyncio.run ends without closing it).
    asyncio leaves them in the listen queue, closed with the listener; a
    connection the kernel accepted for iocploop's accept pool must be closed
    too, not dropped with the port (Linux: fd count; everywhere: no unclosed
    socket for the garbage collector)."""
    if IS_WINDOWS and factory is asyncio.new_event_loop:
        pytest.skip("stock asyncio's proactor cannot close a server after its loop "
                    "closed (AttributeError in _stop_serving): no reference behaviour")
    gc.collect()
    before = fd_count() if IS_LINUX else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        loop = factory()
        try:
            server = run(loop, loop.create_server(Echo, "127.0.0.1", 0))
            port = _port_of(server)
            clients = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                       for _ in range(3)]
            time.sleep(0.05)   # any system call lets io_uring finish the accepts
        finally:
            loop.close()
        server.close()
        for c in clients:
            c.close()
        del server, clients, c
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked
    if before is not None:
        assert fd_count() == before
