"""The arrival interface of UDP endpoints (iocploop's extension, docs/udp.md).

A protocol that defines ``datagram_received_on(data, addr, local_address)``
gets each datagram with the local IP address it arrived on (IP_PKTINFO /
IPV6_PKTINFO), and ``transport.sendto(data, addr)`` then answers from the
address that peer last wrote to; ``sendto(data, addr, source=...)`` picks the
source address explicitly.  Stock asyncio has nothing like it, so every test
here runs on iocploop only.

Linux: the loopback interface owns all of 127.0.0.0/8, so a server bound to
0.0.0.0 is reachable at 127.0.0.1 and 127.0.0.2, and a reply from the wrong
one is visible to the client.  Windows (also under Wine): the same with
127.0.0.1 only, when the socket's provider has WSARecvMsg; without it,
creating an endpoint whose protocol opts in raises a clear OSError.

Covered: the arrival address per destination, replies leaving from it (also
when one peer switches addresses), explicit source= (overriding the arrival
address, and on plain protocols), plain protocols unaffected, a protocol
defining both methods, IPv6 and IPv4-mapped arrivals, a burst through the
drained receive path, connected endpoints, the refusal path (its socket is
closed), and cleanliness (descriptors, warnings, kernel operations).
"""
from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import pytest

from _helpers import IS_LINUX, IS_WINDOWS, TIMEOUT
from _tcp_helpers import bounded, fd_count, requires_ipv6, until

IOCP_ONLY = pytest.mark.asyncio(loop_factories=["iocploop"])


def _second_loopback_address() -> str | None:
    """127.0.0.2 where this host delivers it locally (Linux: lo owns 127/8)."""
    if not IS_LINUX:
        return None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
    except OSError:
        return None
    return "127.0.0.2"


SECOND = _second_loopback_address()
#: The local addresses clients write to.
ADDRESSES = ["127.0.0.1"] + ([SECOND] if SECOND else [])
requires_second = pytest.mark.skipif(
    SECOND is None, reason="needs a second loopback address (127.0.0.2 on Linux's lo)")
BURST = 100 if IS_WINDOWS else 1000


def _winsock_extensions() -> frozenset:
    """The Winsock extension functions of a UDP socket's provider (Windows)."""
    if not IS_WINDOWS:
        return frozenset()
    import iocploop

    loop = iocploop.new_event_loop()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            return loop._port.extensions(s)
    finally:
        loop.close()


_EXTENSIONS = _winsock_extensions()
#: Windows needs WSARecvMsg to learn arrival addresses (without it an opt-in
#: is refused) and WSASendMsg to send from a chosen address.
HAS_WSARECVMSG = not IS_WINDOWS or "WSARecvMsg" in _EXTENSIONS
HAS_WSASENDMSG = not IS_WINDOWS or "WSASendMsg" in _EXTENSIONS
requires_recvmsg = pytest.mark.skipif(
    not (HAS_WSARECVMSG and HAS_WSASENDMSG),
    reason="this Winsock provider lacks WSARecvMsg or WSASendMsg (with no WSARecvMsg the "
    "arrival interface is refused: test_opt_in_without_wsarecvmsg_is_refused)")
requires_sendmsg = pytest.mark.skipif(
    not HAS_WSASENDMSG, reason="this Winsock provider has no WSASendMsg: no source= sends")


class Arrivals(asyncio.DatagramProtocol):
    """Opts in: records (data, addr, local_address); echoes b"re:" + data,
    from the address given after b"src=" if the datagram names one."""

    def __init__(self, echo: bool = True):
        loop = asyncio.get_running_loop()
        self.echo = echo
        self.transport = None
        self.arrivals: list[tuple[bytes, object, object]] = []
        self.plain_calls = 0
        self.errors: list[Exception] = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received_on(self, data, addr, local_address):
        self.arrivals.append((data, addr, local_address))
        if not self.echo:
            return
        if data.startswith(b"src="):
            self.transport.sendto(b"re:" + data, addr, source=data[4:].decode())
        else:
            self.transport.sendto(b"re:" + data, addr)

    def datagram_received(self, data, addr):
        # For other loops; iocploop must not call it on an opted-in protocol.
        self.plain_calls += 1

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


class Plain(asyncio.DatagramProtocol):
    """No datagram_received_on: an ordinary asyncio protocol (echoes)."""

    def __init__(self, echo: bool = True):
        self.echo = echo
        self.transport = None
        self.received: list[tuple[bytes, object]] = []
        self.errors: list[Exception] = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received.append((data, addr))
        if self.echo:
            self.transport.sendto(b"re:" + data, addr)

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def _server(factory=Arrivals, host="0.0.0.0"):
    loop = asyncio.get_running_loop()
    transport, proto = await bounded(loop.create_datagram_endpoint(factory,
                                                                   local_addr=(host, 0)))
    return transport, proto, transport.get_extra_info("sockname")[1]


async def _close(transport, proto) -> None:
    transport.close()
    await bounded(asyncio.shield(proto.lost))


def _client(host="127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


async def _ask(client, data: bytes, to):
    """Send data to `to` from client; return the reply (data, sender)."""
    loop = asyncio.get_running_loop()
    await bounded(loop.sock_sendto(client, data, to))
    try:
        return await bounded(loop.sock_recvfrom(client, 1024), 2.0)
    except asyncio.TimeoutError:
        pytest.fail(f"no reply to {data!r} sent to {to}")


async def _assert_no_pending_ops(loop) -> None:
    await until(lambda: loop._port.pending == 0)


# -- arrival addresses and replies --------------------------------------------------------


@IOCP_ONLY
@requires_recvmsg
@pytest.mark.parametrize("destination", ADDRESSES)
async def test_arrival_address_and_the_reply_leaves_from_it(destination):
    server, proto, port = await _server()
    try:
        with _client() as client:
            data, sender = await _ask(client, b"hello", (destination, port))
            assert data == b"re:hello"
            # The client sees the reply come from the address it wrote to.
            assert sender == (destination, port)
            assert proto.arrivals == [(b"hello", client.getsockname(), destination)]
            assert proto.plain_calls == 0 and proto.errors == []
    finally:
        await _close(server, proto)


@IOCP_ONLY
@requires_second
async def test_each_reply_follows_the_address_the_peer_last_wrote_to():
    server, proto, port = await _server()
    try:
        with _client() as client:
            for destination in ["127.0.0.1", SECOND, SECOND, "127.0.0.1", SECOND]:
                _, sender = await _ask(client, b"to " + destination.encode(),
                                       (destination, port))
                assert sender == (destination, port)
            assert [local for _, _, local in proto.arrivals] == [
                "127.0.0.1", SECOND, SECOND, "127.0.0.1", SECOND]
        # Two clients at once, one per address: each keeps its own.
        with _client() as one, _client() as two:
            _, sender1 = await _ask(one, b"one", ("127.0.0.1", port))
            _, sender2 = await _ask(two, b"two", (SECOND, port))
            _, sender1b = await _ask(one, b"one again", ("127.0.0.1", port))
            assert (sender1, sender2, sender1b) == (
                ("127.0.0.1", port), (SECOND, port), ("127.0.0.1", port))
    finally:
        await _close(server, proto)


@IOCP_ONLY
@requires_recvmsg
async def test_explicit_source_overrides_the_arrival_address():
    # Linux: arrived on 127.0.0.1, answered from 127.0.0.2.  Windows: the
    # explicit source is the only loopback address there is.
    source = SECOND or "127.0.0.1"
    server, proto, port = await _server()
    try:
        with _client() as client:
            data, sender = await _ask(client, b"src=" + source.encode(), ("127.0.0.1", port))
            assert data == b"re:src=" + source.encode()
            assert sender == (source, port)
            assert proto.arrivals[0][2] == "127.0.0.1"
            # The next reply without source= follows the arrival address again.
            _, sender = await _ask(client, b"plain", ("127.0.0.1", port))
            assert sender == ("127.0.0.1", port)
    finally:
        await _close(server, proto)


@IOCP_ONLY
@requires_sendmsg
async def test_explicit_source_on_a_plain_protocol():
    source = SECOND or "127.0.0.1"
    loop = asyncio.get_running_loop()
    server, proto, _ = await _server(lambda: Plain(echo=False))
    try:
        with _client() as client:
            server.sendto(b"chosen source", client.getsockname(), source=source)
            data, sender = await bounded(loop.sock_recvfrom(client, 100))
            assert data == b"chosen source"
            assert sender == (source, server.get_extra_info("sockname")[1])
            assert proto.errors == []
    finally:
        await _close(server, proto)


@IOCP_ONLY
@pytest.mark.parametrize("destination", ADDRESSES)
async def test_a_plain_protocol_is_unaffected(destination):
    server, proto, port = await _server(Plain)
    try:
        assert not hasattr(proto, "datagram_received_on")
        with _client() as client:
            data, sender = await _ask(client, b"hi", (destination, port))
            assert data == b"re:hi"
            assert proto.received == [(b"hi", client.getsockname())]
            # Without the arrival interface the system picks the source: on
            # Linux 127.0.0.1 for a client at 127.0.0.1, whatever the client
            # wrote to (the very problem the interface solves).
            if IS_LINUX:
                assert sender == ("127.0.0.1", port)
    finally:
        await _close(server, proto)


@IOCP_ONLY
@requires_recvmsg
async def test_datagram_received_on_takes_the_place_of_datagram_received():
    server, proto, port = await _server()
    try:
        with _client() as client:
            for i in range(3):
                await _ask(client, b"%d" % i, ("127.0.0.1", port))
        assert [data for data, _, _ in proto.arrivals] == [b"0", b"1", b"2"]
        assert proto.plain_calls == 0
    finally:
        await _close(server, proto)


@IOCP_ONLY
@requires_recvmsg
@requires_ipv6
async def test_ipv6_arrival_address():
    server, proto, port = await _server(host="::")
    try:
        with _client("::1") as client:
            data, sender = await _ask(client, b"v6", ("::1", port))
            assert data == b"re:v6"
            assert sender[:2] == ("::1", port)
            ((_, addr, local),) = proto.arrivals
            assert local == "::1"
            assert addr[:2] == client.getsockname()[:2]
    finally:
        await _close(server, proto)


@IOCP_ONLY
@requires_second
@requires_ipv6
async def test_ipv4_mapped_arrival_on_a_dual_stack_server():
    server, proto, port = await _server(host="::")
    try:
        if server.get_extra_info("socket").getsockopt(socket.IPPROTO_IPV6,
                                                      socket.IPV6_V6ONLY):
            pytest.skip("IPv6 sockets are IPv6-only by default on this host")
        with _client() as client:
            data, sender = await _ask(client, b"mapped", (SECOND, port))
            assert data == b"re:mapped"
            assert sender == (SECOND, port)
            assert proto.arrivals[0][2] == "::ffff:" + SECOND
    finally:
        await _close(server, proto)


@IOCP_ONLY
@requires_recvmsg
async def test_a_burst_keeps_its_arrival_addresses():
    """BURST datagrams from an endpoint on the same loop, to the last
    address: each one arrives with it (Linux: most through the drained
    recvmsg calls, not the posted receive)."""
    loop = asyncio.get_running_loop()
    destination = ADDRESSES[-1]
    server, proto, port = await _server(lambda: Arrivals(echo=False))
    sender, sproto = await bounded(loop.create_datagram_endpoint(
        lambda: Plain(echo=False), remote_addr=(destination, port)))
    try:
        for i in range(BURST):
            sender.sendto(b"%06d" % i)
        try:
            await until(lambda: len(proto.arrivals) >= BURST, TIMEOUT * 2)
        except AssertionError:
            pytest.fail(f"{len(proto.arrivals)} of {BURST} datagrams arrived")
        assert sorted(data for data, _, _ in proto.arrivals) == [b"%06d" % i
                                                                 for i in range(BURST)]
        assert {local for _, _, local in proto.arrivals} == {destination}
        assert {addr for _, addr, _ in proto.arrivals} == {sender.get_extra_info("sockname")}
        assert proto.errors == [] and sproto.errors == []
    finally:
        sender.close()
        await bounded(asyncio.shield(sproto.lost))
        await _close(server, proto)


@IOCP_ONLY
@requires_recvmsg
async def test_a_connected_endpoint_reports_its_arrival_address():
    loop = asyncio.get_running_loop()
    server, sproto, port = await _server(Plain, host="127.0.0.1")
    client, cproto = await bounded(loop.create_datagram_endpoint(
        lambda: Arrivals(echo=False), remote_addr=("127.0.0.1", port)))
    try:
        client.sendto(b"ping")
        await until(lambda: cproto.arrivals)
        assert cproto.arrivals == [(b"re:ping", ("127.0.0.1", port), "127.0.0.1")]
        assert cproto.plain_calls == 0
    finally:
        await _close(client, cproto)
        await _close(server, sproto)


# -- refusal -------------------------------------------------------------------------------


@IOCP_ONLY
@pytest.mark.skipif(HAS_WSARECVMSG, reason="only where Winsock's provider lacks WSARecvMsg")
async def test_opt_in_without_wsarecvmsg_is_refused():
    loop = asyncio.get_running_loop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(OSError, match="WSARecvMsg"):
            await bounded(loop.create_datagram_endpoint(Arrivals, local_addr=("0.0.0.0", 0)))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(OSError, match="WSARecvMsg"):
            await bounded(loop.create_datagram_endpoint(Arrivals, sock=sock))
        assert sock.fileno() == -1, "the refused endpoint's socket was left open"
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, leaked
    # A plain protocol works on the same loop.
    server, proto, port = await _server(Plain)
    try:
        with _client() as client:
            assert (await _ask(client, b"plain", ("127.0.0.1", port)))[0] == b"re:plain"
    finally:
        await _close(server, proto)
    await _assert_no_pending_ops(loop)


@IOCP_ONLY
@pytest.mark.skipif(not hasattr(socket, "AF_UNIX") or IS_WINDOWS,
                    reason="needs AF_UNIX datagram sockets")
async def test_a_refused_opt_in_closes_its_socket():
    """The same refusal path on Linux: a socket without IP_PKTINFO (AF_UNIX)
    given to an opting-in protocol.  The error propagates, the socket is
    closed, nothing warns."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with pytest.raises(OSError):
                await bounded(loop.create_datagram_endpoint(Arrivals, sock=a))
            gc.collect()
        assert a.fileno() == -1
        leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert not leaked, leaked
    finally:
        a.close()
        b.close()
    await _assert_no_pending_ops(loop)


# -- cleanliness ------------------------------------------------------------------------------


@IOCP_ONLY
@requires_recvmsg
async def test_arrival_endpoints_leave_nothing_behind():
    loop = asyncio.get_running_loop()
    gc.collect()
    before = fd_count() if IS_LINUX else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        server, proto, port = await _server()
        with _client() as client:
            for destination in ADDRESSES:
                await _ask(client, b"x", (destination, port))
        aborted, aproto, aport = await _server()
        with _client() as client:
            await _ask(client, b"y", ("127.0.0.1", aport))
        aborted.abort()
        await bounded(asyncio.shield(aproto.lost))
        await _close(server, proto)
        await _assert_no_pending_ops(loop)
        del server, proto, aborted, aproto
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, leaked
    if IS_LINUX:
        assert fd_count() == before
