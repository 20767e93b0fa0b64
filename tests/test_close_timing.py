"""When a transport closed with an operation still posted lets go of its
socket or pipe: one loop turn after close() or abort(), as asyncio's.

asyncio's transports schedule connection_lost with call_soon and close the
socket or pipe in it, so one `await asyncio.sleep(0)` later the handle is
closed and the protocol has heard.  Libraries rely on it (closing from
several tasks, closing inside a cancelled scope, then checking the socket).
iocploop's transports have receives, reads or watches in the kernel at
that moment; they close at once all the same and the kernel's operations
complete on their own later (their buffers live in their operation records
until then).

Every test runs on iocploop and on the platform's stock loop.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile

import pytest

from _helpers import IS_LINUX, IS_WINDOWS, is_iocploop_loop, iterations_until_no_pending_ops
from _helpers import make_pipe, pipe_closed
from _tcp_helpers import Recorder, bounded, requires_ipv6


class Lost(asyncio.DatagramProtocol):
    """Counts connection_lost calls (datagram endpoints)."""

    def __init__(self):
        self.lost_calls = 0

    def connection_lost(self, exc):
        self.lost_calls += 1


async def _turns_until_posted():
    """Let a new transport post its first receive or read (every loop does
    within a few turns of connection_made)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def _after_one_turn_closed(transport, closed, protocol_lost, how: str):
    """Close transport (how: 'close' or 'abort'), run one loop turn, and
    assert the handle is closed and connection_lost ran exactly once."""
    getattr(transport, how)()
    await asyncio.sleep(0)
    assert closed(), f"the handle is still open one turn after {how}()"
    assert protocol_lost() == 1, f"connection_lost did not run one turn after {how}()"


async def _no_operation_left():
    loop = asyncio.get_running_loop()
    if is_iocploop_loop(loop):
        await iterations_until_no_pending_ops(loop)


# -- UDP --------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["close", "abort"])
@pytest.mark.parametrize("connected", [False, True], ids=["unconnected", "connected"])
@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=requires_ipv6)])
async def test_datagram_endpoint_closes_its_socket_one_turn_later(host, connected, how):
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as peer:
        peer.bind((host, 0))
        if connected:
            kwargs = {"remote_addr": peer.getsockname()[:2]}
        else:
            kwargs = {"local_addr": (host, 0)}
        transport, proto = await bounded(loop.create_datagram_endpoint(Lost, **kwargs))
        await _turns_until_posted()
        sock = transport.get_extra_info("socket")
        assert sock.fileno() != -1
        await _after_one_turn_closed(transport, lambda: sock.fileno() == -1,
                                     lambda: proto.lost_calls, how)
    await _no_operation_left()
    assert proto.lost_calls == 1


@pytest.mark.asyncio
@pytest.mark.skipif(not IS_LINUX, reason="AF_UNIX datagram endpoints: Linux only here")
@pytest.mark.parametrize("how", ["close", "abort"])
async def test_unix_datagram_endpoint_closes_its_socket_one_turn_later(how):
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "dgram")
        transport, proto = await bounded(loop.create_datagram_endpoint(
            Lost, local_addr=path, family=socket.AF_UNIX))
        await _turns_until_posted()
        sock = transport.get_extra_info("socket")
        await _after_one_turn_closed(transport, lambda: sock.fileno() == -1,
                                     lambda: proto.lost_calls, how)
    await _no_operation_left()


# -- streams over sockets ----------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.skipif(not IS_LINUX, reason="AF_UNIX stream sockets: Linux only here")
@pytest.mark.parametrize("how", ["close", "abort"])
async def test_unix_stream_transport_closes_its_socket_one_turn_later(how):
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "stream")
        accepted = []
        server = await loop.create_unix_server(lambda: accepted.append(Recorder()) or accepted[-1],
                                               path)
        try:
            transport, proto = await bounded(loop.create_unix_connection(Recorder, path))
            await _turns_until_posted()
            sock = transport.get_extra_info("socket")
            await _after_one_turn_closed(transport, lambda: sock.fileno() == -1,
                                         lambda: proto.lost_calls, how)
        finally:
            server.close()
            for peer in accepted:
                if peer.transport is not None:
                    peer.transport.close()
            await bounded(server.wait_closed())
    await _no_operation_left()


# -- pipes -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_read_pipe_closes_one_turn_after_close():
    loop = asyncio.get_running_loop()
    rpipe, wpipe = make_pipe()
    try:
        transport, proto = await bounded(loop.connect_read_pipe(Recorder, rpipe))
        await _turns_until_posted()
        await _after_one_turn_closed(transport, lambda: pipe_closed(rpipe),
                                     lambda: proto.lost_calls, "close")
    finally:
        wpipe.close()
    await _no_operation_left()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["close", "abort"])
async def test_write_pipe_closes_one_turn_after_close(how):
    loop = asyncio.get_running_loop()
    rpipe, wpipe = make_pipe()
    try:
        transport, proto = await bounded(loop.connect_write_pipe(Recorder, wpipe))
        await _turns_until_posted()   # the watch for the reader is posted
        await _after_one_turn_closed(transport, lambda: pipe_closed(wpipe),
                                     lambda: proto.lost_calls, how)
    finally:
        rpipe.close()
    await _no_operation_left()


@pytest.mark.asyncio
async def test_subprocess_pipe_closes_one_turn_after_close():
    loop = asyncio.get_running_loop()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdin.read()",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        transport = proc._transport
        stdout = transport.get_pipe_transport(1)
        pipe = stdout.get_extra_info("pipe")
        await _turns_until_posted()
        stdout.close()
        await asyncio.sleep(0)
        assert pipe_closed(pipe), "the child's stdout pipe is still open one turn after close()"
        # asyncio's pipe protocol marks itself in its connection_lost.
        assert transport._pipes[1].disconnected, "the pipe's connection_lost did not run"
    finally:
        proc.stdin.close()
        await bounded(proc.wait())
    await _no_operation_left()
    del loop


@pytest.mark.asyncio
@pytest.mark.skipif(not IS_WINDOWS, reason="named pipes are a Windows feature")
@pytest.mark.parametrize("how", ["close", "abort"])
async def test_named_pipe_client_closes_one_turn_later(how):
    loop = asyncio.get_running_loop()
    address = r"\\.\pipe\iocploop-close-timing-%d-%s" % (os.getpid(), how)
    servers = []
    [server] = await loop.start_serving_pipe(lambda: servers.append(Recorder()) or servers[-1],
                                             address)
    try:
        transport, proto = await bounded(loop.create_pipe_connection(Recorder, address))
        await _turns_until_posted()
        pipe = transport.get_extra_info("pipe")
        await _after_one_turn_closed(transport, lambda: pipe_closed(pipe),
                                     lambda: proto.lost_calls, how)
    finally:
        server.close()
        for peer in servers:
            if peer.transport is not None:
                peer.transport.close()
        await asyncio.sleep(0.05)
    await _no_operation_left()
