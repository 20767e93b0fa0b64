"""TLS, continued: start_tls in the middle of a plaintext conversation (with
streams and with transports; on a closed transport), cancellation during the
handshake, handshake and shutdown timeouts on each side, and sendfile over
TLS (asyncio's fallback; none without it).

Every async test runs on iocploop and on stock asyncio (the reference
behaviour).  Certificates are made at test time (tests/_tls_helpers.py);
handshakes, extra info, verification, close_notify and leaks are in
test_tls.py.
"""
from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import tempfile
import threading
import time
import warnings

import pytest

from _helpers import IS_LINUX, IS_WINDOWS, TIMEOUT
from _tcp_helpers import bounded, fd_count, loop_kept_fds, payload, until
from _tls_helpers import (
    open_connections,
    ThreadPeer, describe_errors, no_ops_in_flight, outcome, pki,  # noqa: F401 (fixture)
    record_errors,
)

#: Slack allowed past a timeout before the loop acts on it (Wine is slow).
SLACK = 2.0 if IS_WINDOWS else 1.0


async def close_writer(writer):
    writer.close()
    await bounded(writer.wait_closed())


async def close_server(server):
    """Close the server once its connections are gone, failed handshakes
    included (Python 3.12+'s wait_closed waits for them; 3.11's does not,
    so the count asyncio's Server keeps is checked here)."""
    await until(lambda: open_connections(server) == 0)
    server.close()
    await bounded(server.wait_closed())


def fds_now(loop) -> int | None:
    """Linux: this process's descriptors, less the sockets iocploop keeps
    for reuse (the loop's, not leaks)."""
    return fd_count() - loop_kept_fds(loop) if IS_LINUX else None


async def read_until_closed(loop, sock) -> bytes:
    """What a plain non-blocking socket receives until its peer closes (an
    orderly end or a reset)."""
    got = bytearray()
    try:
        while chunk := await bounded(loop.sock_recv(sock, 65536)):
            got += chunk
    except ConnectionResetError:
        pass
    return bytes(got)


def is_client_hello(data: bytes) -> bool:
    """A TLS handshake record (0x16) holding a ClientHello (1)."""
    return len(data) > 5 and data[0] == 0x16 and data[5] == 1


# -- start_tls in the middle of a conversation ----------------------------------------------


@pytest.mark.asyncio
async def test_streams_start_tls_mid_conversation(pki):
    """Plaintext lines, then STARTTLS: the server upgrades with
    StreamWriter.start_tls, the client too; then lines both ways over TLS,
    and a graceful end."""
    server_side = asyncio.get_running_loop().create_future()

    async def cb(reader, writer):
        try:
            assert await reader.readline() == b"HELLO\n"
            writer.write(b"PLAIN HELLO\n")
            assert await reader.readline() == b"STARTTLS\n"
            writer.write(b"GO\n")
            await writer.start_tls(pki.server_context())
            version = writer.get_extra_info("ssl_object").version()
            lines = []
            while line := await reader.readline():
                lines.append(line)
                writer.write(b"TLS " + line)
                await writer.drain()
            server_side.set_result((version, lines))
        except BaseException as exc:
            if not server_side.done():
                server_side.set_exception(exc)
            raise
        finally:
            writer.close()

    server = await asyncio.start_server(cb, "127.0.0.1", 0)
    reader, writer = await bounded(asyncio.open_connection(
        "127.0.0.1", server.sockets[0].getsockname()[1]))
    writer.write(b"HELLO\n")
    assert await bounded(reader.readline()) == b"PLAIN HELLO\n"
    assert writer.get_extra_info("ssl_object") is None
    plain_transport = writer.transport
    writer.write(b"STARTTLS\n")
    assert await bounded(reader.readline()) == b"GO\n"
    await bounded(writer.start_tls(pki.client_context(), server_hostname="localhost"))
    assert writer.transport is not plain_transport
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
    assert writer.get_extra_info("peercert")["subjectAltName"]
    assert writer.get_extra_info("peername") == plain_transport.get_extra_info("peername")
    for i in range(3):
        writer.write(b"secret %d\n" % i)
        assert await bounded(reader.readline()) == b"TLS secret %d\n" % i
    big = payload(20_000, seed=5).hex().encode() + b"\n"   # under the 64 KiB line limit
    writer.write(big)
    assert await bounded(reader.readline()) == b"TLS " + big
    await close_writer(writer)
    version, lines = await bounded(server_side)
    assert version == "TLSv1.3"
    assert lines == [b"secret 0\n", b"secret 1\n", b"secret 2\n", big]
    await close_server(server)
    await no_ops_in_flight()


class StartTLSServer(asyncio.Protocol):
    """Server side of a STARTTLS conversation with transports: answers each
    plain line with PLAIN <line>; on STARTTLS pauses reading at once, answers
    GO and upgrades with loop.start_tls after `delay` seconds: the client's
    ClientHello arrives meanwhile and must wait, unread, for the TLS layer.
    Over TLS, echoes."""

    def __init__(self, ctx, delay: float = 0.0):
        loop = asyncio.get_running_loop()
        self.ctx = ctx
        self.delay = delay
        self.buf = b""
        self.tls_transport = None
        self.upgraded = loop.create_future()
        self.received = bytearray()
        self.eof = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.tls_transport is not None:
            self.received += data
            self.tls_transport.write(data)
            return
        assert not self.upgraded.done() and b"STARTTLS" not in self.buf, \
            "plaintext after STARTTLS: reading was not paused"
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line == b"STARTTLS":
                self.transport.pause_reading()
                self.transport.write(b"GO\n")
                asyncio.ensure_future(self._upgrade())
                return
            self.transport.write(b"PLAIN " + line + b"\n")

    async def _upgrade(self):
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(self.delay)
            self.tls_transport = await loop.start_tls(
                self.transport, self, self.ctx, server_side=True)
        except BaseException as exc:
            self.upgraded.set_exception(exc)
        else:
            self.upgraded.set_result(self.tls_transport)

    def eof_received(self):
        self.eof.set_result(None)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class LineClient(asyncio.Protocol):
    def __init__(self):
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.lost = loop.create_future()
        self.made = 0

    def connection_made(self, transport):
        self.made += 1
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        self.lost.set_result(exc)

    async def expect(self, what: bytes) -> None:
        await until(lambda: len(self.data) >= len(what) or self.lost.done())
        got, self.data = bytes(self.data[:len(what)]), self.data[len(what):]
        assert got == what


@pytest.mark.asyncio
@pytest.mark.parametrize("delay", [0.0, 0.1], ids=["at-once", "hello-waits"])
async def test_loop_start_tls_mid_conversation(pki, delay):
    """The same with loop.start_tls on both sides, transports and protocols:
    the same protocol goes on over the new transport (connection_made is not
    called again).  With a delay the server upgrades after the ClientHello
    has arrived, while its reading is paused."""
    loop = asyncio.get_running_loop()
    errors = record_errors()
    made = []

    def factory():
        made.append(StartTLSServer(pki.server_context(), delay))
        return made[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0)
    transport, client = await bounded(loop.create_connection(
        LineClient, "127.0.0.1", server.sockets[0].getsockname()[1]))
    transport.write(b"one\ntwo\n")
    await client.expect(b"PLAIN one\nPLAIN two\n")
    transport.write(b"STARTTLS\n")
    await client.expect(b"GO\n")
    tls = await bounded(loop.start_tls(transport, client, pki.client_context(),
                                       server_hostname="localhost"))
    assert tls is not transport and client.made == 1
    assert tls.get_protocol() is client
    assert tls.get_extra_info("ssl_object").version() == "TLSv1.3"
    server_tls = await bounded(made[0].upgraded)
    assert server_tls.get_extra_info("ssl_object").server_side
    data = payload(300_000, seed=7)
    tls.write(data)
    await client.expect(data)
    assert bytes(made[0].received) == data
    tls.close()
    assert await bounded(client.lost) is None
    assert await bounded(made[0].lost) is None
    assert made[0].eof.done()   # the client's close_notify reached the protocol
    assert transport.is_closing()
    await close_server(server)
    await no_ops_in_flight()
    assert not errors, describe_errors(errors)


@pytest.mark.asyncio
async def test_start_tls_verification_failure_closes_the_connection(pki):
    """The client upgrades, then rejects the server's certificate: its
    start_tls raises SSLCertVerificationError, the connection is closed, and
    the server's start_tls fails too."""
    loop = asyncio.get_running_loop()
    made = []

    def factory():
        made.append(StartTLSServer(pki.server_context()))
        return made[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0)
    transport, client = await bounded(loop.create_connection(
        LineClient, "127.0.0.1", server.sockets[0].getsockname()[1]))
    transport.write(b"STARTTLS\n")
    await client.expect(b"GO\n")
    with pytest.raises(ssl.SSLCertVerificationError):
        await bounded(loop.start_tls(transport, client, pki.client_context(),
                                     server_hostname="wrong.example"))
    assert transport.is_closing()
    kind, exc_type = await outcome(made[0].upgraded, TIMEOUT)
    assert kind == "raised" and issubclass(exc_type, (ConnectionError, ssl.SSLError)), exc_type
    await bounded(made[0].lost)
    await close_server(server)
    await no_ops_in_flight()


@pytest.mark.asyncio
@pytest.mark.parametrize("state", ["closing", "closed"])
async def test_writer_start_tls_after_close_raises(pki, state):
    """StreamWriter.start_tls after close(): ConnectionResetError('Connection
    lost'), from its drain(), as asyncio does."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    reader, writer = await bounded(asyncio.open_connection(
        "127.0.0.1", server.sockets[0].getsockname()[1]))
    writer.close()
    if state == "closed":
        await bounded(writer.wait_closed())
    with pytest.raises(ConnectionResetError):
        await bounded(writer.start_tls(pki.client_context(), server_hostname="localhost"))
    await bounded(writer.wait_closed())
    await close_server(server)
    await no_ops_in_flight()


@pytest.mark.asyncio
async def test_loop_start_tls_on_closed_transport_never_completes(pki):
    """loop.start_tls on a transport whose connection is already lost neither
    succeeds nor fails, even past ssl_handshake_timeout: asyncio's
    SSLProtocol only aborts through the (closed) transport, and nothing
    calls its connection_lost.  The caller's own timeout ends the wait.
    (asyncio then leaves that SSLProtocol's app transport unclosed: its
    ResourceWarning at collection is absorbed here, on both loops.)"""
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    transport, client = await bounded(loop.create_connection(
        LineClient, "127.0.0.1", server.sockets[0].getsockname()[1]))
    transport.close()
    await bounded(client.lost)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed transport <asyncio._SSLProtocolTransport",
                                ResourceWarning)
        got = await outcome(loop.start_tls(transport, client, pki.client_context(),
                                           server_hostname="localhost",
                                           ssl_handshake_timeout=0.2), 0.6)
        assert got == ("pending", None)
        assert transport.is_closing()
        await close_server(server)
        await no_ops_in_flight()
        del transport, client
        gc.collect()


# -- cancellation and handshake timeouts --------------------------------------------------


@pytest.mark.asyncio
async def test_cancel_during_handshake(pki):
    """The server stalls the handshake (it reads the ClientHello and answers
    nothing); cancelling open_connection raises CancelledError and closes
    the client's socket: no descriptor, no ResourceWarning, nothing in flight."""
    loop = asyncio.get_running_loop()
    gc.collect()
    before = fds_now(loop)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.setblocking(False)
            task = asyncio.ensure_future(asyncio.open_connection(
                "127.0.0.1", listener.getsockname()[1], ssl=pki.client_context(),
                server_hostname="localhost"))
            peer, _ = await bounded(loop.sock_accept(listener))
            with peer:
                peer.setblocking(False)
                hello = await bounded(loop.sock_recv(peer, 65536))
                assert is_client_hello(hello), hello[:8]
                await asyncio.sleep(0.05)
                assert not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await bounded(task)
                assert task.cancelled()
                # The client's socket is closed: the stalled server sees the end.
                await read_until_closed(loop, peer)
        await no_ops_in_flight()
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, leaked
    if IS_LINUX:
        assert fds_now(loop) == before, "a descriptor leaked"


@pytest.mark.asyncio
async def test_client_handshake_timeout(pki):
    """A listener that accepts and says nothing: open_connection with
    ssl_handshake_timeout=0.5 fails with asyncio's ConnectionAbortedError
    ("SSL handshake is taking longer than ...") in about 0.5 s, and closes
    its socket."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        start = time.monotonic()
        task = asyncio.ensure_future(asyncio.open_connection(
            "127.0.0.1", listener.getsockname()[1], ssl=pki.client_context(),
            server_hostname="localhost", ssl_handshake_timeout=0.5))
        peer, _ = await bounded(loop.sock_accept(listener))
        with peer:
            peer.setblocking(False)
            with pytest.raises((ConnectionAbortedError, TimeoutError)) as info:
                await bounded(task)
            elapsed = time.monotonic() - start
            assert isinstance(info.value, ConnectionAbortedError), repr(info.value)
            assert 0.45 <= elapsed <= 0.5 + SLACK, elapsed
            assert is_client_hello(await read_until_closed(loop, peer))
    await no_ops_in_flight()


class ServerRecorder(asyncio.Protocol):
    def __init__(self):
        loop = asyncio.get_running_loop()
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.data = bytearray()
        self.closed_at = None

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        self.lost.set_result((exc, time.monotonic()))


@pytest.mark.asyncio
async def test_server_handshake_timeout(pki):
    """A client that connects and never starts the handshake: a server made
    with ssl_handshake_timeout=0.5 drops it after about 0.5 s (its protocol
    never sees connection_made) and goes on serving."""
    loop = asyncio.get_running_loop()
    made = []

    def factory():
        made.append(ServerRecorder())
        return made[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=pki.server_context(),
                                      ssl_handshake_timeout=0.5)
    port = server.sockets[0].getsockname()[1]
    with socket.socket() as silent:
        silent.setblocking(False)
        await bounded(loop.sock_connect(silent, ("127.0.0.1", port)))
        start = time.monotonic()
        assert await read_until_closed(loop, silent) == b""
        elapsed = time.monotonic() - start
    # (the server's timer starts at its accept, a little before sock_connect returns)
    assert 0.4 <= elapsed <= 0.5 + SLACK, elapsed
    assert all(not p.made.done() for p in made)
    transport, client = await bounded(loop.create_connection(
        LineClient, "127.0.0.1", port, ssl=pki.client_context(), server_hostname="localhost"))
    transport.write(b"served")
    await until(lambda: len(made) == 2 and made[-1].data == b"served")
    transport.close()
    await bounded(client.lost)
    await close_server(server)
    await no_ops_in_flight()


# -- shutdown timeouts ----------------------------------------------------------------------


def _tls_server_never_answering_close_notify(ctx):
    """ThreadPeer target: handshake, say "ready", then read nothing more until
    the test ends (a close_notify sent to it is never answered)."""

    def target(conn, stop):
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ready")
            stop.wait(TIMEOUT)
        return "held"

    return target


@pytest.mark.asyncio
async def test_client_shutdown_timeout(pki):
    """The peer never answers close_notify: with ssl_shutdown_timeout=0.5 the
    transport gives up after about 0.5 s; connection_lost gets asyncio's
    TimeoutError."""
    loop = asyncio.get_running_loop()
    with ThreadPeer(_tls_server_never_answering_close_notify(pki.server_context())) as peer:
        transport, client = await bounded(loop.create_connection(
            LineClient, "127.0.0.1", peer.port, ssl=pki.client_context(),
            server_hostname="localhost", ssl_shutdown_timeout=0.5))
        await client.expect(b"ready")
        start = time.monotonic()
        transport.close()
        exc = await bounded(client.lost)
        elapsed = time.monotonic() - start
        assert isinstance(exc, TimeoutError), repr(exc)
        assert 0.45 <= elapsed <= 0.5 + SLACK, elapsed
        assert transport.is_closing()
    assert await peer.result() == "held"
    await no_ops_in_flight()


def _tls_client_never_answering_close_notify(port, ctx, stop):
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"close me")
            stop.wait(TIMEOUT)


@pytest.mark.asyncio
async def test_server_shutdown_timeout(pki):
    """The same for a connection of a server made with ssl_shutdown_timeout=0.5:
    the server closes it, the client never answers close_notify."""
    loop = asyncio.get_running_loop()
    made = []

    class CloseOnData(ServerRecorder):
        def data_received(self, data):
            super().data_received(data)
            if bytes(self.data) == b"close me":
                self.closed_at = time.monotonic()
                self.transport.close()

    def factory():
        made.append(CloseOnData())
        return made[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=pki.server_context(),
                                      ssl_shutdown_timeout=0.5)
    stop = threading.Event()
    client = asyncio.ensure_future(asyncio.to_thread(
        _tls_client_never_answering_close_notify, server.sockets[0].getsockname()[1],
        pki.client_context(), stop))
    try:
        await until(lambda: made and made[0].lost.done())
        exc, lost_at = made[0].lost.result()
        assert isinstance(exc, TimeoutError), repr(exc)
        assert 0.45 <= lost_at - made[0].closed_at <= 0.5 + SLACK, lost_at - made[0].closed_at
    finally:
        stop.set()
        await bounded(client)
    await close_server(server)
    await no_ops_in_flight()


# -- sendfile -------------------------------------------------------------------------------


async def _tls_sink(pki):
    """A TLS server that collects what each connection sends until EOF."""
    loop = asyncio.get_running_loop()
    got = loop.create_future()

    async def cb(reader, writer):
        try:
            got.set_result(await reader.read())
        finally:
            writer.close()

    server = await asyncio.start_server(cb, "127.0.0.1", 0, ssl=pki.server_context())
    reader, writer = await bounded(asyncio.open_connection(
        "127.0.0.1", server.sockets[0].getsockname()[1], ssl=pki.client_context(),
        server_hostname="localhost"))
    return server, writer, got


@pytest.mark.asyncio
@pytest.mark.parametrize("offset,count", [(0, None), (1000, 70_000)], ids=["whole", "part"])
async def test_sendfile_over_tls_falls_back(pki, offset, count):
    """loop.sendfile on a TLS transport copies through the transport
    (asyncio's fallback): the bytes arrive intact, the file's position ends
    after the last byte sent."""
    loop = asyncio.get_running_loop()
    data = payload(300_000, seed=9)
    server, writer, got = await _tls_sink(pki)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        sent = await bounded(loop.sendfile(writer.transport, f, offset, count))
        end = len(data) if count is None else offset + count
        assert sent == end - offset
        assert f.tell() == end
    writer.write(b"|after")
    await close_writer(writer)
    assert await bounded(got) == data[offset:end] + b"|after"
    await close_server(server)
    await no_ops_in_flight()


@pytest.mark.asyncio
async def test_sendfile_over_tls_without_fallback_raises(pki):
    """fallback=False: RuntimeError("fallback is disabled and native sendfile
    is not supported for transport ..."); nothing sent, the file's position
    unchanged, the transport still usable."""
    loop = asyncio.get_running_loop()
    server, writer, got = await _tls_sink(pki)
    with tempfile.TemporaryFile() as f:
        f.write(b"never sent")
        f.seek(0)
        with pytest.raises(RuntimeError,
                           match="fallback is disabled and native sendfile is not supported"):
            await bounded(loop.sendfile(writer.transport, f, fallback=False))
        assert f.tell() == 0
    assert not writer.transport.is_closing()
    writer.write(b"still works")
    await close_writer(writer)
    assert await bounded(got) == b"still works"
    await close_server(server)
    await no_ops_in_flight()
