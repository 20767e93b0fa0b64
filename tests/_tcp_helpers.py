"""Helpers shared by test_tcp_servers.py and test_tcp_transport.py (no test here).

Protocols record every call the transport makes on them, so that a test can
assert the order and count of callbacks on iocploop and on stock asyncio alike.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import struct

import pytest

import iocploop
from _helpers import IS_WINDOWS, TIMEOUT, bounded, until  # noqa: F401 - re-exported

#: Traffic and connection counts: Wine's loopback round trip is ~5 ms.
SCALE = 1 if IS_WINDOWS else 20
MiB = 1 << 20


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_loopback()


def _running_under_wine() -> bool:
    if not IS_WINDOWS:
        return False
    import ctypes

    return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")


UNDER_WINE = _running_under_wine()
requires_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback (::1) on this machine")

#: (host, family) of the loopback addresses the tests listen on.
LOOPBACKS = [
    pytest.param("127.0.0.1", socket.AF_INET, id="ipv4"),
    pytest.param("::1", socket.AF_INET6, id="ipv6", marks=requires_ipv6),
]


def is_iocploop(loop=None) -> bool:
    return isinstance(loop or asyncio.get_running_loop(), iocploop.Loop)


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def digest(data) -> str:
    return hashlib.sha256(data).hexdigest()


def fd_count() -> int:
    """Open file descriptors of this process (Linux)."""
    return len(os.listdir("/proc/self/fd"))


def loop_kept_fds(loop) -> int:
    """Sockets iocploop keeps for reuse (pooled, or waiting for their
    connection to finish closing): the loop's, closed with it, not leaks."""
    if not is_iocploop(loop):
        return 0
    stats = loop.socket_stats()
    return stats["pooled"] + stats["disconnecting"]


def set_linger_reset(sock: socket.socket) -> None:
    """SO_LINGER (on, 0 s): close() then sends RST instead of FIN."""
    fmt = "HH" if IS_WINDOWS else "ii"   # struct linger: u_short pair on Windows
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack(fmt, 1, 0))


def tcp_pair(sndbuf: int | None = None, rcvbuf: int | None = None):
    """(sender, receiver): a connected non-blocking TCP pair over 127.0.0.1;
    buffer sizes set before the connection exists (so the window is small)."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.settimeout(TIMEOUT)
        a.settimeout(TIMEOUT)
        a.connect(lsock.getsockname())
        b, _ = lsock.accept()
    except BaseException:
        a.close()
        raise
    finally:
        lsock.close()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def free_port_socket(host: str = "127.0.0.1") -> socket.socket:
    """A bound, not listening socket: connecting to its port is refused, and
    no other socket can take the port while it lives."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    return s


def stalled_listener(host: str = "127.0.0.1"):
    """(listener, filler): a listener whose accept queue is full, so a new
    connect to it neither succeeds nor fails (Linux drops the SYN).  Both
    must be closed by the caller."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(0)
    filler = socket.socket(family, socket.SOCK_STREAM)
    filler.settimeout(TIMEOUT)
    filler.connect(listener.getsockname()[:2])
    return listener, filler


class Recorder(asyncio.Protocol):
    """Records each callback in `events`; futures/events to wait on them."""

    def __init__(self, *, keep_open_on_eof: bool = False):
        loop = asyncio.get_running_loop()
        self.keep_open_on_eof = keep_open_on_eof
        self.transport = None
        self.events: list[str] = []
        self.data = bytearray()
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.eof = loop.create_future()
        self.lost_calls = 0
        self.data_while_paused = 0
        self.can_write = asyncio.Event()
        self.can_write.set()
        self._reading_paused = False

    # -- flow helpers used by tests
    def pause_reading(self):
        self._reading_paused = True
        self.transport.pause_reading()

    def resume_reading(self):
        self._reading_paused = False
        self.transport.resume_reading()

    async def wait_bytes(self, n: int, timeout: float = TIMEOUT):
        await until(lambda: len(self.data) >= n or self.lost.done(), timeout)
        assert len(self.data) >= n, f"got {len(self.data)} of {n} bytes before connection_lost"

    async def drain(self):
        await bounded(self.can_write.wait())

    # -- protocol
    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        # bytes; Python 3.11's proactor hands a bytearray
        if self._reading_paused:
            self.data_while_paused += 1
        self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        return self.keep_open_on_eof

    def pause_writing(self):
        self.events.append("pause_writing")
        self.can_write.clear()

    def resume_writing(self):
        self.events.append("resume_writing")
        self.can_write.set()

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_calls += 1
        if not self.lost.done():
            self.lost.set_result(exc)


class Echo(asyncio.Protocol):
    """Writes back what it receives; closes on EOF once the echo is flushed.
    With the writer paused it stops reading (backpressure end to end)."""

    def __init__(self):
        self.transport = None
        self.received = 0
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.received += len(data)
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


class BufferedEcho(asyncio.BufferedProtocol):
    """Echo through get_buffer/buffer_updated.  Each buffer handed out is a
    view at a varying offset of one backing store, prefilled with a marker;
    buffer_updated reads the bytes back from the backing store, so the echo
    is right only if the transport received into the very buffer returned."""

    def __init__(self, size: int = 1000):
        self.size = size
        self.backing = bytearray(size + 16)
        self.calls: list[str] = []
        self.handed = None   # (offset, view) of the last get_buffer
        self.received = 0
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.calls.append("get_buffer")
        off = len(self.calls) % 13
        self.backing[:] = b"\xa5" * len(self.backing)
        view = memoryview(self.backing)[off:off + self.size]
        self.handed = (off, view)
        return view

    def buffer_updated(self, nbytes):
        assert self.calls and self.calls[-1] == "get_buffer", "buffer_updated without get_buffer"
        self.calls.append("buffer_updated")
        off, view = self.handed
        assert 0 < nbytes <= len(view)
        # Nothing was written outside the view handed out.
        outside = self.backing[:off] + self.backing[off + len(view):]
        assert outside == b"\xa5" * len(outside)
        self.received += nbytes
        self.transport.write(bytes(self.backing[off:off + nbytes]))

    def eof_received(self):
        self.calls.append("eof")

    def connection_lost(self, exc):
        self.calls.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


class Tracker:
    """A protocol factory that remembers what it made."""

    def __init__(self, cls=Recorder, **kwargs):
        self.cls = cls
        self.kwargs = kwargs
        self.protocols: list = []
        self._queue: asyncio.Queue | None = None

    def __call__(self):
        proto = self.cls(**self.kwargs)
        self.protocols.append(proto)
        if self._queue is None:
            self._queue = asyncio.Queue()
        self._queue.put_nowait(proto)
        return proto

    async def next(self):
        """The next protocol made, once connection_made ran on it."""
        await until(lambda: self._queue is not None)
        proto = await bounded(self._queue.get())
        if isinstance(proto, Recorder):
            await bounded(proto.made)
        return proto

    async def all_lost(self, timeout: float = TIMEOUT):
        await until(lambda: all(p.lost.done() for p in self.protocols), timeout)


async def echo_roundtrip(host, port, data: bytes, **kwargs) -> bytes:
    """Streams client: send data, half-close, read the echo to EOF."""
    reader, writer = await bounded(asyncio.open_connection(host, port, **kwargs))
    try:
        writer.write(data)
        writer.write_eof()
        return await bounded(reader.read())
    finally:
        writer.close()
        await bounded(writer.wait_closed())


async def connected_pair(host="127.0.0.1", family=socket.AF_INET, client_cls=Recorder,
                         server_cls=Recorder, client_kwargs=None, server_kwargs=None):
    """(server, client transport, client protocol, server-side protocol) over loopback."""
    loop = asyncio.get_running_loop()
    tracker = Tracker(server_cls, **(server_kwargs or {}))
    server = await loop.create_server(tracker, host, 0, family=family)
    port = server.sockets[0].getsockname()[1]
    transport, client = await bounded(loop.create_connection(
        lambda: client_cls(**(client_kwargs or {})), host, port))
    peer = await tracker.next()
    return server, transport, client, peer


async def close_all(server, transports=(), protocols=()):
    """Close the transports and the server, then wait for each protocol's
    connection_lost (`lost` future)."""
    for t in transports:
        t.close()
    if server is not None:
        server.close()
        await bounded(server.wait_closed())
    for proto in protocols:
        await bounded(asyncio.shield(proto.lost))
