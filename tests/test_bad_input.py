"""Wrong calls raise what stock asyncio raises (issue #10's table of bad input).

Each row is one wrong call: wrong types, a closed loop, closed or wrong-kind
sockets, unresolvable hosts, bad ports, wrong families, ssl where it cannot
be, negative timeouts and sizes, huge counts.  The test makes the call on
iocploop and on the platform's stock loop (the selector loop on Linux, the
ProactorEventLoop on Windows), each on a fresh loop, and asserts that both
raise, and the same exception class: the reference is measured, not written
down, so the table stays true across Python versions.  Where the Proactor
has no answer (it hangs, or connects somewhere else), PROACTOR_HAS_NO_ANSWER
names the class the selector loop raises, which the Linux run checks.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import tempfile

import pytest

import iocploop
from _helpers import IS_WINDOWS, TIMEOUT


class _Quiet(asyncio.Protocol):
    pass


@contextlib.contextmanager
def _listener():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def _udp():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


async def _connected(loop):
    """(transport, server's port listener kept open by the caller)."""
    return await loop.create_connection(_Quiet, "127.0.0.1", _LISTEN_PORT[0])


_LISTEN_PORT = [0]


# -- the rows: name -> async def (loop) making one wrong call -----------------

async def _nonexistent_host(loop):
    await loop.create_connection(_Quiet, "no-such-host.invalid", 80)


async def _port_out_of_range(loop):
    await loop.create_connection(_Quiet, "127.0.0.1", 70000)


async def _port_not_a_number(loop):
    await loop.create_connection(_Quiet, "127.0.0.1", "not-a-port")


async def _server_negative_port(loop):
    await loop.create_server(_Quiet, "127.0.0.1", -1)


async def _host_and_sock(loop):
    with socket.socket() as sock:
        await loop.create_connection(_Quiet, "127.0.0.1", 80, sock=sock)


async def _neither_host_nor_sock(loop):
    await loop.create_connection(_Quiet)


async def _ssl_on_a_udp_socket(loop):
    with _udp() as sock:
        await loop.create_connection(_Quiet, sock=sock, ssl=True, server_hostname="x")


async def _stream_on_a_udp_socket(loop):
    with _udp() as sock:
        await loop.create_connection(_Quiet, sock=sock)


async def _server_on_a_udp_socket(loop):
    with _udp() as sock:
        await loop.create_server(_Quiet, sock=sock)


async def _server_hostname_without_ssl(loop):
    await loop.create_connection(_Quiet, "127.0.0.1", _LISTEN_PORT[0], server_hostname="x")


async def _handshake_timeout_without_ssl(loop):
    await loop.create_connection(_Quiet, "127.0.0.1", _LISTEN_PORT[0], ssl_handshake_timeout=1)


async def _negative_handshake_timeout(loop):
    await loop.create_connection(_Quiet, "127.0.0.1", _LISTEN_PORT[0],
                                 ssl=ssl.create_default_context(), server_hostname="x",
                                 ssl_handshake_timeout=-1)


async def _datagram_wrong_family(loop):
    await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                        local_addr=("::1", 0), family=socket.AF_INET)


async def _datagram_stream_socket(loop):
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=sock)


async def _sock_recv_negative_size(loop):
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        await loop.sock_recv(a, -1)


async def _sock_recv_huge_size(loop):
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        await loop.sock_recv(a, 2 ** 64)


async def _sock_recv_into_bytes(loop):
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        await loop.sock_recv_into(a, b"read-only")


async def _sock_sendall_str(loop):
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        await loop.sock_sendall(a, "text")


async def _sock_recv_closed_socket(loop):
    a, b = socket.socketpair()
    with b:
        a.setblocking(False)
        a.close()
        await loop.sock_recv(a, 10)


async def _sock_connect_wrong_family(loop):
    with socket.socket(socket.AF_INET) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("::1", _LISTEN_PORT[0]))


async def _getaddrinfo_host_not_text(loop):
    await loop.getaddrinfo(12345, 80)


async def _sock_recvfrom_negative_size(loop):
    with _udp() as sock:
        sock.bind(("127.0.0.1", 0))
        await loop.sock_recvfrom(sock, -1)


async def _sock_recv_size_not_a_number(loop):
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        await loop.sock_recv(a, "10")


async def _call_later_delay_not_a_number(loop):
    loop.call_later("soon", print)


async def _transport_write_str(loop):
    transport, _ = await _connected(loop)
    try:
        transport.write("text")
    finally:
        transport.close()


async def _transport_writelines_str(loop):
    transport, _ = await _connected(loop)
    try:
        transport.writelines(["text"])
    finally:
        transport.close()


async def _write_after_write_eof(loop):
    transport, _ = await _connected(loop)
    try:
        transport.write_eof()
        transport.write(b"late")
    finally:
        transport.close()


async def _sendfile_negative_count(loop):
    transport, _ = await _connected(loop)
    try:
        with tempfile.TemporaryFile() as f:
            f.write(b"x" * 100)
            f.seek(0)
            await loop.sendfile(transport, f, count=-1)
    finally:
        transport.close()


async def _sendfile_negative_offset(loop):
    transport, _ = await _connected(loop)
    try:
        with tempfile.TemporaryFile() as f:
            await loop.sendfile(transport, f, offset=-1)
    finally:
        transport.close()


async def _sendfile_text_file(loop):
    transport, _ = await _connected(loop)
    try:
        with tempfile.TemporaryFile("w+") as f:
            await loop.sendfile(transport, f)
    finally:
        transport.close()


ROWS = {
    "unresolvable host": _nonexistent_host,
    "port out of range": _port_out_of_range,
    "port not a number": _port_not_a_number,
    "server on a negative port": _server_negative_port,
    "host and sock both": _host_and_sock,
    "neither host nor sock": _neither_host_nor_sock,
    "ssl on a UDP socket": _ssl_on_a_udp_socket,
    "stream on a UDP socket": _stream_on_a_udp_socket,
    "server on a UDP socket": _server_on_a_udp_socket,
    "server_hostname without ssl": _server_hostname_without_ssl,
    "ssl_handshake_timeout without ssl": _handshake_timeout_without_ssl,
    "negative ssl_handshake_timeout": _negative_handshake_timeout,
    "datagram endpoint, address of the wrong family": _datagram_wrong_family,
    "datagram endpoint on a stream socket": _datagram_stream_socket,
    "sock_recv of a negative size": _sock_recv_negative_size,
    "sock_recv of a huge size": _sock_recv_huge_size,
    "sock_recv_into a read-only buffer": _sock_recv_into_bytes,
    "sock_sendall of a str": _sock_sendall_str,
    "sock_recv on a closed socket": _sock_recv_closed_socket,
    "sock_connect to the wrong family": _sock_connect_wrong_family,
    "getaddrinfo of a host that is not text": _getaddrinfo_host_not_text,
    "sock_recvfrom of a negative size": _sock_recvfrom_negative_size,
    "sock_recv of a size that is not a number": _sock_recv_size_not_a_number,
    "call_later with a delay that is not a number": _call_later_delay_not_a_number,
    "transport.write of a str": _transport_write_str,
    "transport.writelines of a str": _transport_writelines_str,
    "write after write_eof": _write_after_write_eof,
    "sendfile with a negative count": _sendfile_negative_count,
    "sendfile from a negative offset": _sendfile_negative_offset,
    "sendfile of a text file": _sendfile_text_file,
}


def _raised(factory, case) -> type[BaseException] | None:
    """The class of what case raised on a fresh loop from factory, or None."""
    loop = factory()
    try:
        loop.run_until_complete(asyncio.wait_for(case(loop), TIMEOUT * 2))
    except asyncio.TimeoutError as exc:
        if isinstance(exc.__cause__, asyncio.CancelledError):
            pytest.fail(f"{factory.__module__}: the call hung")   # not an answer
        return type(exc)
    except BaseException as exc:   # the answer being measured
        return type(exc)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return None


@pytest.fixture(scope="module", autouse=True)
def _listening():
    with _listener() as port:
        _LISTEN_PORT[0] = port
        yield


# Rows where Windows' stock loop (the ProactorEventLoop) has no answer to
# compare with: iocploop raises there what the selector loop raises on Linux
# (the Linux run checks these classes against it).
PROACTOR_HAS_NO_ANSWER = {
    "port out of range": (OverflowError, "it connects to the port modulo 65536"),
    "sock_recv of a negative size": (ValueError, "it never completes"),
    "sock_recv of a huge size": (OverflowError, "it never completes"),
    "sock_recv_into a read-only buffer": (TypeError, "it never completes"),
    "sock_recvfrom of a negative size": (ValueError, "it never completes"),
    "sock_connect to the wrong family": (socket.gaierror,
                                         "it skips resolving and gets WinError 10014"),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_a_wrong_call_raises_what_stock_asyncio_raises(name):
    case = ROWS[name]
    if IS_WINDOWS and name in PROACTOR_HAS_NO_ANSWER:
        stock = PROACTOR_HAS_NO_ANSWER[name][0]
    else:
        stock = _raised(asyncio.new_event_loop, case)
        assert stock is not None, "stock asyncio accepts this call: not a row of this table"
        if name in PROACTOR_HAS_NO_ANSWER:
            assert stock is PROACTOR_HAS_NO_ANSWER[name][0], "the Windows reference is stale"
    ours = _raised(iocploop.new_event_loop, case)
    assert ours is stock, f"iocploop raised {ours and ours.__name__}, stock asyncio {stock.__name__}"


def _closed(factory):
    loop = factory()
    loop.close()
    return loop


def _run_until_complete(loop):
    coro = asyncio.sleep(0)
    try:
        loop.run_until_complete(coro)
    finally:
        coro.close()   # refused before it started: no "never awaited" warning


def _create_connection(loop):
    coro = loop.create_connection(_Quiet, "127.0.0.1", _LISTEN_PORT[0])
    try:
        loop.run_until_complete(coro)
    finally:
        coro.close()


CLOSED_LOOP_ROWS = {
    "call_soon": lambda loop: loop.call_soon(print),
    "call_later": lambda loop: loop.call_later(1, print),
    "call_soon_threadsafe": lambda loop: loop.call_soon_threadsafe(print),
    "run_until_complete": _run_until_complete,
    "run_forever": lambda loop: loop.run_forever(),
    "create_connection": _create_connection,
}


@pytest.mark.parametrize("call", list(CLOSED_LOOP_ROWS.values()), ids=list(CLOSED_LOOP_ROWS))
def test_a_closed_loop_refuses_what_stock_asyncio_refuses(call):
    outcomes = []
    for factory in (asyncio.new_event_loop, iocploop.new_event_loop):
        try:
            call(_closed(factory))
        except Exception as exc:
            outcomes.append(type(exc))
        else:
            outcomes.append(None)
    stock, ours = outcomes
    assert stock is RuntimeError
    assert ours is stock
