"""Unix domain stream sockets (Linux): create_unix_server, create_unix_connection,
asyncio.start_unix_server / open_unix_connection and the sock_* methods on
AF_UNIX sockets.  Every async test runs on iocploop and on stock asyncio (the
reference behaviour).

Covered: echo servers (protocols, streams, several clients, a 1 MiB payload,
TLS); get_extra_info; str, bytes and path-like paths; the argument errors of
asyncio; a stale socket file removed before bind; EADDRINUSE (a regular file
at the path, an abstract name in use); abstract names; connection errors;
sock_connect / sock_accept / sock_recv / sock_sendall; the socket file removed
when the server closes as the running asyncio does (by default from Python
3.13, cleanup_socket=True; iocploop takes cleanup_socket=True on every
version), cleanup_socket=False, and a file that replaced the socket's is left
alone; datagram senders' addresses.
"""
from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import shutil
import socket
import ssl
import sys
import tempfile
import uuid

import pytest

from _helpers import IS_WINDOWS, TIMEOUT
from _tcp_helpers import Echo, Recorder, bounded, is_iocploop, payload, until
from _tls_helpers import pki  # noqa: F401 - the session's certificates (fixture)

pytestmark = pytest.mark.skipif(
    IS_WINDOWS, reason="Unix domain sockets: both Windows loops (iocploop and the "
    "ProactorEventLoop) raise NotImplementedError for create_unix_server/connection")

MiB = 1 << 20
#: asyncio removes the socket file when its server closes from 3.13 on.
ASYNCIO_CLEANS_UP = sys.version_info >= (3, 13)
NO_CLEANUP_BEFORE_313 = ("asyncio before 3.13 never removes a Unix server's socket file "
                         "and has no cleanup_socket argument: no reference behaviour")


@pytest.fixture
def folder():
    """A short folder for socket files (sun_path holds 107 bytes)."""
    path = tempfile.mkdtemp(prefix="iul-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def path(folder):
    return os.path.join(folder, "s.sock")


def abstract_name() -> str:
    return f"\0iocploop-test-{uuid.uuid4().hex}"


def same(got, expected) -> bool:
    """Byte equality without pytest's diff of megabytes (which takes minutes)."""
    return bytes(got) == bytes(expected)


def stale_socket_file(path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()   # the file stays, nobody listens
    assert os.path.exists(path)


async def echo_once(path, data: bytes) -> bytes:
    reader, writer = await bounded(asyncio.open_unix_connection(path))

    async def send():
        writer.write(data)
        await writer.drain()
        writer.write_eof()

    try:
        # Sending and reading at once: the echo comes back while we send.
        _, echoed = await bounded(asyncio.gather(send(), reader.read()), TIMEOUT * 2)
        return echoed
    finally:
        writer.close()
        await bounded(writer.wait_closed())


async def echo_handler(reader, writer):
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
    finally:
        writer.close()
        # Bounded: a handler cancelled at teardown must not hang the test.
        try:
            await asyncio.wait_for(writer.wait_closed(), TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError):
            pass


# -- echo servers --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_streams_echo_several_clients_and_a_mebibyte(path):
    server = await asyncio.start_unix_server(echo_handler, path)
    async with server:
        datas = [payload(MiB, seed=0)] + [payload(1 + 3001 * i, seed=i) for i in range(1, 6)]
        echoed = await bounded(asyncio.gather(*(echo_once(path, d) for d in datas)),
                               TIMEOUT * 2)
    for i, (sent, got) in enumerate(zip(datas, echoed)):
        assert len(got) == len(sent), f"client {i}: {len(got)} of {len(sent)} bytes"
        assert same(got, sent), f"client {i}: echo differs"


@pytest.mark.asyncio
async def test_protocol_echo_and_extra_info(path):
    loop = asyncio.get_running_loop()
    servers_side = []

    def factory():
        proto = Echo()
        servers_side.append(proto)
        return proto

    server = await loop.create_unix_server(factory, path)
    assert len(server.sockets) == 1
    listener = server.sockets[0]
    assert listener.family == socket.AF_UNIX and listener.getsockname() == path
    async with server:
        transport, proto = await bounded(loop.create_unix_connection(Recorder, path))
        try:
            await until(lambda: servers_side and servers_side[0].transport is not None)
            # Client side: connected to path, itself unnamed.
            assert transport.get_extra_info("peername") == path
            assert transport.get_extra_info("sockname") == ""
            sock = transport.get_extra_info("socket")
            assert sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM
            assert sock.getpeername() == path
            # Server side: the other way round.
            server_transport = servers_side[0].transport
            assert server_transport.get_extra_info("sockname") == path
            assert server_transport.get_extra_info("peername") == ""
            assert server_transport.get_extra_info("socket").family == socket.AF_UNIX
            data = payload(200_000, seed=5)
            transport.write(data)
            await until(lambda: len(proto.data) >= len(data))
            assert same(proto.data, data)
        finally:
            transport.close()
        await bounded(proto.lost)


@pytest.mark.asyncio
async def test_tls_over_a_unix_socket(path, pki):  # noqa: F811 - pki is a fixture
    server = await asyncio.start_unix_server(echo_handler, path, ssl=pki.server_context())
    async with server:
        reader, writer = await bounded(asyncio.open_unix_connection(
            path, ssl=pki.client_context(), server_hostname="localhost"))
        try:
            assert writer.get_extra_info("ssl_object") is not None
            data = payload(100_000, seed=9)
            writer.write(data)
            await bounded(writer.drain())
            got = await bounded(reader.readexactly(len(data)))
            assert same(got, data)
        finally:
            writer.close()
            try:
                await bounded(writer.wait_closed())
            except (ssl.SSLError, ConnectionError):
                pass


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["bytes", "pathlike"])
async def test_bytes_and_path_like_paths(path, kind):
    where = os.fsencode(path) if kind == "bytes" else pathlib.Path(path)
    server = await asyncio.start_unix_server(echo_handler, where)
    async with server:
        assert os.path.exists(path)
        assert await echo_once(where, b"any path type") == b"any path type"


@pytest.mark.asyncio
async def test_server_on_a_premade_socket(path):
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    server = await loop.create_unix_server(Echo, sock=sock)
    async with server:
        assert [s.fileno() for s in server.sockets] == [sock.fileno()]
        assert sock.gettimeout() == 0   # made non-blocking
        assert await echo_once(path, b"premade") == b"premade"


@pytest.mark.asyncio
async def test_connection_on_a_premade_socket(path):
    loop = asyncio.get_running_loop()
    server = await asyncio.start_unix_server(echo_handler, path)
    async with server:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)   # blocking connect, then handed over
        transport, proto = await bounded(loop.create_unix_connection(Recorder, sock=sock))
        try:
            assert sock.gettimeout() == 0
            assert transport.get_extra_info("peername") == path
            transport.write(b"premade client")
            await until(lambda: bytes(proto.data) == b"premade client")
        finally:
            transport.close()
        await bounded(proto.lost)


# -- argument errors ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_server_argument_errors(path):
    loop = asyncio.get_running_loop()
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inet = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ValueError):
            await loop.create_unix_server(Echo, path, sock=unix)
        with pytest.raises(ValueError):
            await loop.create_unix_server(Echo)
        with pytest.raises(ValueError):
            await loop.create_unix_server(Echo, sock=inet)
        with pytest.raises(ValueError):
            await loop.create_unix_server(Echo, sock=dgram)
        assert not os.path.exists(path)
    finally:
        for s in (unix, inet, dgram):
            s.close()


@pytest.mark.asyncio
async def test_connection_argument_errors(path):
    loop = asyncio.get_running_loop()
    clients = []

    async def count(reader, writer):
        clients.append(1)
        writer.close()

    server = await asyncio.start_unix_server(count, path)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inet = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        async with server:
            with pytest.raises(ValueError):
                await loop.create_unix_connection(Recorder, path, sock=unix)
            with pytest.raises(ValueError):
                await loop.create_unix_connection(Recorder)
            with pytest.raises(ValueError):
                await loop.create_unix_connection(Recorder, sock=inet)
            with pytest.raises(ValueError):
                await loop.create_unix_connection(Recorder, sock=dgram)
            with pytest.raises(ValueError):   # ssl without server_hostname
                await loop.create_unix_connection(Recorder, path,
                                                  ssl=ssl.create_default_context())
            with pytest.raises(ValueError):   # server_hostname without ssl
                await loop.create_unix_connection(Recorder, path, server_hostname="localhost")
            with pytest.raises(ValueError):   # the same through the streams API
                await asyncio.open_unix_connection(path, server_hostname="localhost")
            await asyncio.sleep(0.05)
            # Each was refused before connecting.
            assert clients == []
    finally:
        for s in (unix, inet, dgram):
            s.close()


# -- binding ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_stale_socket_file_is_removed_before_bind(path):
    stale_socket_file(path)
    server = await asyncio.start_unix_server(echo_handler, path)
    async with server:
        assert await echo_once(path, b"over the stale file") == b"over the stale file"


@pytest.mark.asyncio
async def test_a_regular_file_at_the_path_is_address_in_use(path):
    """Only a socket file counts as stale: a regular file stays, and bind
    fails with EADDRINUSE."""
    with open(path, "w") as f:
        f.write("not a socket")
    with pytest.raises(OSError) as info:
        await asyncio.start_unix_server(echo_handler, path)
    assert info.value.errno == errno.EADDRINUSE
    with open(path) as f:
        assert f.read() == "not a socket"


@pytest.mark.asyncio
async def test_an_abstract_name_in_use_is_address_in_use():
    name = abstract_name()
    first = await asyncio.start_unix_server(echo_handler, name)
    async with first:
        with pytest.raises(OSError) as info:
            await asyncio.start_unix_server(echo_handler, name)
        assert info.value.errno == errno.EADDRINUSE
        assert await echo_once(name, b"first still serves") == b"first still serves"


@pytest.mark.asyncio
async def test_abstract_names(folder):
    name = abstract_name()
    loop = asyncio.get_running_loop()
    server = await asyncio.start_unix_server(echo_handler, name)
    async with server:
        assert server.sockets[0].getsockname() == name.encode()
        assert os.listdir(folder) == []   # no file anywhere
        transport, proto = await bounded(loop.create_unix_connection(Recorder, name))
        try:
            assert transport.get_extra_info("peername") == name.encode()
            transport.write(b"abstract")
            await until(lambda: bytes(proto.data) == b"abstract")
        finally:
            transport.close()
        await bounded(proto.lost)


@pytest.mark.asyncio
async def test_an_abstract_name_is_free_once_the_server_closed():
    """An abstract name has no file: it is released when the listening socket
    closes, which server.close() does at once -- a server leaving `async with`
    can be replaced by a new one on the same name right away."""
    name = abstract_name()
    async with await asyncio.start_unix_server(echo_handler, name):
        assert await echo_once(name, b"first") == b"first"
    again = await asyncio.start_unix_server(echo_handler, name)   # no await in between
    async with again:
        assert await echo_once(name, b"again") == b"again"
    await asyncio.sleep(0)
    with pytest.raises(ConnectionRefusedError):
        await bounded(asyncio.open_unix_connection(name))


@pytest.mark.asyncio
async def test_connecting_to_nothing(path):
    loop = asyncio.get_running_loop()
    with pytest.raises(FileNotFoundError):
        await bounded(loop.create_unix_connection(Recorder, path))
    with pytest.raises(FileNotFoundError):
        await bounded(asyncio.open_unix_connection(path))
    stale_socket_file(path)
    with pytest.raises(ConnectionRefusedError):
        await bounded(loop.create_unix_connection(Recorder, path))
    with pytest.raises(ConnectionRefusedError):
        await bounded(loop.create_unix_connection(Recorder, abstract_name()))


# -- sock_* methods on AF_UNIX sockets ---------------------------------------------------------


@pytest.mark.asyncio
async def test_sock_methods_on_unix_sockets(path):
    loop = asyncio.get_running_loop()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn = None
    try:
        listener.bind(path)
        listener.listen(8)
        listener.setblocking(False)
        client.setblocking(False)
        accepting = asyncio.ensure_future(loop.sock_accept(listener))
        await bounded(loop.sock_connect(client, path))
        conn, addr = await bounded(accepting)
        assert addr == ""   # an unnamed client
        assert conn.family == socket.AF_UNIX
        assert conn.gettimeout() == 0
        assert client.getpeername() == path

        await bounded(loop.sock_sendall(client, b"ping"))
        assert await bounded(loop.sock_recv(conn, 100)) == b"ping"
        await bounded(loop.sock_sendall(conn, b"pong"))
        assert await bounded(loop.sock_recv(client, 100)) == b"pong"

        # A mebibyte each way at once: sock_sendall waits for the reader.
        data = payload(MiB, seed=1)

        async def receive(sock):
            got = bytearray()
            while len(got) < len(data):
                chunk = await loop.sock_recv(sock, 65536)
                if not chunk:
                    break
                got += chunk
            return bytes(got)

        results = await bounded(asyncio.gather(
            loop.sock_sendall(client, data), loop.sock_sendall(conn, data[::-1]),
            receive(conn), receive(client)), TIMEOUT * 2)
        assert len(results[2]) == len(data) and same(results[2], data)
        assert len(results[3]) == len(data) and same(results[3], data[::-1])

        client.close()
        assert await bounded(loop.sock_recv(conn, 100)) == b""
    finally:
        for s in (listener, client, conn):
            if s is not None:
                s.close()


@pytest.mark.asyncio
async def test_sock_connect_errors_on_unix_sockets(path):
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        with pytest.raises(FileNotFoundError):
            await bounded(loop.sock_connect(s, path))
    stale_socket_file(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        with pytest.raises(ConnectionRefusedError):
            await bounded(loop.sock_connect(s, path))


# -- the socket file when the server closes -------------------------------------------------------


def cleanup_requested() -> dict:
    """create_unix_server arguments that ask for the file's removal at close:
    iocploop takes cleanup_socket=True on every version, asyncio from 3.13."""
    if not is_iocploop() and not ASYNCIO_CLEANS_UP:
        pytest.skip(NO_CLEANUP_BEFORE_313)
    return {"cleanup_socket": True}


@pytest.mark.asyncio
async def test_closing_the_server_handles_its_socket_file_as_the_running_asyncio(path):
    # Removed by default from 3.13 on; kept before, as asyncio and uvloop do
    # (the next bind to the path removes the stale file).
    server = await asyncio.start_unix_server(echo_handler, path)
    assert await echo_once(path, b"x") == b"x"
    assert os.path.exists(path)
    server.close()
    await bounded(server.wait_closed())
    assert os.path.exists(path) != ASYNCIO_CLEANS_UP


@pytest.mark.asyncio
async def test_closing_the_server_removes_its_socket_file_when_asked(path):
    server = await asyncio.start_unix_server(echo_handler, path, **cleanup_requested())
    assert await echo_once(path, b"x") == b"x"
    assert os.path.exists(path)
    server.close()
    await bounded(server.wait_closed())
    assert not os.path.exists(path)


@pytest.mark.asyncio
async def test_a_server_on_a_premade_socket_cleans_up_as_the_running_asyncio(path):
    # A socket the caller bound is the caller's: its file is removed by
    # default from 3.13 on (asyncio's cleanup_socket=True), kept before --
    # on both loops (CPython's 3.11 tests remove such a file themselves).
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    server = await loop.create_unix_server(Echo, sock=sock)
    server.close()
    await bounded(server.wait_closed())
    assert os.path.exists(path) != ASYNCIO_CLEANS_UP


@pytest.mark.asyncio(loop_factories=["iocploop"])
async def test_cleanup_socket_true_removes_a_premade_sockets_file_on_every_version(path):
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    server = await loop.create_unix_server(Echo, sock=sock, cleanup_socket=True)
    server.close()
    await bounded(server.wait_closed())
    assert not os.path.exists(path)


@pytest.mark.asyncio
async def test_cleanup_socket_false_keeps_the_file(path):
    if not is_iocploop() and not ASYNCIO_CLEANS_UP:
        pytest.skip(NO_CLEANUP_BEFORE_313)
    server = await asyncio.start_unix_server(echo_handler, path, cleanup_socket=False)
    server.close()
    await bounded(server.wait_closed())
    assert os.path.exists(path)
    # Stale now: the next server removes it before binding.
    again = await asyncio.start_unix_server(echo_handler, path, cleanup_socket=True)
    async with again:
        assert await echo_once(path, b"y") == b"y"
    if is_iocploop() or ASYNCIO_CLEANS_UP:
        assert not os.path.exists(path)


@pytest.mark.asyncio
@pytest.mark.parametrize("replacement", ["regular file", "other socket"])
async def test_a_file_that_replaced_the_socket_is_left_alone(path, replacement):
    server = await asyncio.start_unix_server(echo_handler, path, **cleanup_requested())
    os.unlink(path)
    other = None
    if replacement == "regular file":
        with open(path, "w") as f:
            f.write("someone else's")
    else:
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(path)
    try:
        server.close()
        await bounded(server.wait_closed())
        assert os.path.exists(path), "the server removed a file it did not create"
    finally:
        if other is not None:
            other.close()


@pytest.mark.asyncio
async def test_a_removed_socket_file_is_no_error_at_close(path):
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    server = await asyncio.start_unix_server(echo_handler, path, **cleanup_requested())
    os.unlink(path)
    server.close()
    await bounded(server.wait_closed())
    assert not os.path.exists(path)
    assert errors == []


@pytest.mark.asyncio
async def test_abstract_server_close_touches_no_file(folder):
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        server = await asyncio.start_unix_server(echo_handler, abstract_name())
        server.close()
        await bounded(server.wait_closed())
        assert os.listdir(folder) == []
    finally:
        os.chdir(cwd)


# -- datagram endpoints on AF_UNIX sockets: the sender's address -------------------------


class DatagramCollector(asyncio.DatagramProtocol):
    def __init__(self):
        self.got = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.got.put_nowait((data, addr))


@pytest.mark.asyncio
async def test_unix_datagram_senders_are_reported_as_the_socket_module_does(folder):
    # A bound sender: its path (str); an abstract one: its name (bytes); an
    # unnamed one: None.  (uvloop's test_create_datagram_endpoint_sock_unix_domain.)
    loop = asyncio.get_running_loop()
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(os.path.join(folder, "r.sock"))
    transport, proto = await loop.create_datagram_endpoint(DatagramCollector, sock=receiver)
    named = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    named.bind(os.path.join(folder, "s.sock"))
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind(abstract_name().encode())
    unnamed = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for sender in (named, abstract, unnamed):
            sender.sendto(b"hi", receiver.getsockname())
            data, addr = await bounded(proto.got.get())
            assert data == b"hi"
            assert addr == (sender.getsockname() or None)
    finally:
        transport.close()
        for s in (named, abstract, unnamed):
            s.close()


@pytest.mark.asyncio
async def test_unix_datagram_socketpair_sender_is_none():
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    transport, proto = await loop.create_datagram_endpoint(DatagramCollector, sock=a)
    try:
        b.send(b"hello, socketpair")
        assert await bounded(proto.got.get()) == (b"hello, socketpair", None)
        if is_iocploop():
            # iocploop (as uvloop) sends to the connected peer without an
            # address; asyncio's transport calls sendto(data, None) and fails.
            transport.sendto(b"back")
            b.settimeout(TIMEOUT)
            assert await loop.run_in_executor(None, b.recv, 100) == b"back"
    finally:
        transport.close()
        b.close()
