"""Socket reuse (iocploop/_reuse.py, the accept pools' spares in _accept_pool.py).

A connection that ends cleanly gives its socket back instead of closing it;
``loop.socket_stats()`` counts what happened.  Covered:

* Linux, real path (client sockets dissolved with connect(AF_UNSPEC)): a
  client that reads to EOF after the server closed first is reused by the
  next connection; each connection gets a new Python socket object and the
  old one reads as closed (fileno() == -1); a client that closes first is
  not reused and its peer sees a clean EOF (twin test with stock asyncio);
  a reset seen after EOF does not poison the next user of the socket.
* socket_reuse=False / set_socket_reuse(): created only, nothing pooled.
* Sockets iocploop did not make (sock=) and aborted connections are never
  recycled.
* Fake providers at the core boundary (Linux emulating Windows: the port's
  disconnect is a shutdown plus an io_uring poll, accepted() transplants the
  new connection into the spare socket with dup2, as AcceptEx accepts into
  it): a provider that ACCEPTS recycled server sockets (reuse happens, every
  echo right, the pools stay within their bounds, no fd leak after the loop
  closes, a failing disconnect closes the socket), and one that REFUSES them
  at submission or at completion, and a refused client spare: no connection
  is lost, the refusal is counted once, and reuse is then off for that kind
  of socket.
* Windows, real path: many short connections (real Windows reuses; under
  Wine the reuse probe finds recycled accept sockets dead and client
  recycled sockets are refused: refused >= 1, reuse then off).
* Linux: 10,000 connection cycles leave no descriptor behind but the pool's.

The debug-mode and local_addr tests guard two bugs found while writing
them (a recycled socket that read as blocking; a socket bound by local_addr
pooled with its binding).
"""
from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
import time
import warnings

import pytest

import iocploop
from iocploop._port import AcceptOperation
from iocploop._reuse import SparePool
from iocploop._socket_kind import kind_of as _kind
from _helpers import IS_LINUX, IS_WINDOWS, TIMEOUT, run
from _tcp_helpers import UNDER_WINE, bounded, fd_count, is_iocploop, until

if IS_LINUX:
    import select

IOCP_ONLY = pytest.mark.asyncio(loop_factories=["iocploop"])
linux_only = pytest.mark.skipif(not IS_LINUX, reason="Linux path (io_uring, /proc/self/fd)")
fake_provider = pytest.mark.skipif(
    not IS_LINUX, reason="the fake provider emulates DisconnectEx / AcceptEx with io_uring "
    "(Linux); Windows has the real ones")

HOST = "127.0.0.1"


# -- helpers --------------------------------------------------------------------------


class EchoOnce:
    """asyncio.start_server callback: echo one line, then close (the server
    closes first), or with wait_eof wait for the client's EOF first (the
    client closes first: on Windows the server's DisconnectEx then completes
    at once instead of after TIME_WAIT).  Errors are recorded."""

    def __init__(self, hold: asyncio.Event | None = None, wait_eof: bool = False):
        self.hold = hold
        self.wait_eof = wait_eof
        self.served = 0
        self.errors: list[BaseException] = []
        self.sockets: list = []
        self.writers: list = []
        self.ask_for_socket = True   # at the start of each connection

    async def __call__(self, reader, writer):
        self.writers.append(writer)
        if self.ask_for_socket:
            self.sockets.append(writer.get_extra_info("socket"))
        try:
            line = await reader.readline()
            if self.hold is not None:
                await self.hold.wait()
            writer.write(line)
            await writer.drain()
            if self.wait_eof:
                rest = await reader.read()
                assert rest == b"", rest
            self.served += 1
        except Exception as exc:   # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except Exception as exc:   # noqa: BLE001
                self.errors.append(exc)


async def start_echo_once(hold=None, wait_eof=False, **kwargs):
    handler = EchoOnce(hold, wait_eof)
    server = await asyncio.start_server(handler, HOST, 0, **kwargs)
    return server, server.sockets[0].getsockname()[1], handler


async def echo_cycle(port: int, msg: bytes, client_first: bool = False):
    """One client connection: send a line, read the echo to EOF (or, with
    client_first, read the echoed line and close first), close.
    Returns (echo, TransportSocket of the connection)."""
    reader, writer = await bounded(asyncio.open_connection(HOST, port))
    tsock = writer.get_extra_info("socket")
    try:
        writer.write(msg + b"\n")
        echo = await bounded(reader.readline() if client_first else reader.read())
    finally:
        writer.close()
        await bounded(writer.wait_closed())
    assert echo == msg + b"\n", (msg, echo)
    return echo, tsock


async def echo_cycles(port: int, tasks: int, cycles: int, tag: str = "",
                      client_first: bool = False) -> int:
    """`tasks` concurrent clients doing `cycles` echo cycles each."""

    async def client(t):
        for i in range(cycles):
            await echo_cycle(port, f"{tag}{t}:{i}".encode(), client_first)
        return cycles

    done = await asyncio.gather(*(client(t) for t in range(tasks)))
    return sum(done)


def refusal_error() -> OSError:
    """The error a provider refuses a recycled socket with (Wine's AcceptEx:
    WSAEINVAL; Linux codes: EINVAL / EISCONN)."""
    if IS_WINDOWS:
        return OSError(0, "refused", None, 10022)
    return OSError(errno.EINVAL, "refused")


def only_pool(loop):
    pools = list(loop._accept_pools.values())
    assert len(pools) == 1, pools
    return pools[0]


class FakeProvider:
    """Linux emulation of Windows' server-side reuse on `loop`'s port:

    * can_reuse(sock, "server") is true (unless off or refused, as the real
      policy), client sockets keep the real policy;
    * disconnect(sock, cb): shutdown(SHUT_RDWR), then a real operation that
      completes later (an io_uring poll for POLLOUT on the socket, or, with a
      gate, for POLLIN on the gate socket: it completes when the test writes
      to the gate);
    * op.accepted() of its accepts: when the accept was given a spare
      (op.buffer[1]), the new connection is moved into it with dup2, so the
      spare really carries it.

    Install before create_server (the accept pool decides its reuse home when
    it is made)."""

    def __init__(self, loop, gate: socket.socket | None = None):
        self.loop = loop
        self.port = loop._port
        self.recycler = loop._recycler
        self.gate = gate
        self.transplants = 0
        self.disconnects = 0
        self.refused = set()   # (role, kind) the recycler was told were refused
        self._real_can_reuse = self.recycler.can_reuse
        self._real_refuse = self.recycler.refuse
        self._real_accept = self.port.accept
        self.recycler.can_reuse = self.can_reuse
        self.recycler.refuse = self.refuse
        self.port.disconnect = self.disconnect
        self.port.accept = self.accept
        provider = self

        class TransplantingAccept(AcceptOperation):
            __slots__ = ()

            def accepted(self):
                return provider.transplant(self, AcceptOperation.accepted(self))

        self._accept_class = TransplantingAccept

    def can_reuse(self, sock, role):
        if role != "server":
            return self._real_can_reuse(sock, role)
        # The real policy answers False for "server" on Linux: Windows' answer
        # for a provider with DisconnectEx, minus what was refused.
        return (self.recycler.enabled and ("server", _kind(sock)) not in self.refused
                and sock.type == socket.SOCK_STREAM
                and sock.family in (socket.AF_INET, socket.AF_INET6))

    def refuse(self, sock, exc, role="server", *args, **kwargs):
        self.refused.add((role, _kind(sock)))
        return self._real_refuse(sock, exc, role, *args, **kwargs)

    def disconnect(self, sock, callback):
        self.disconnects += 1
        sock.shutdown(socket.SHUT_RDWR)
        if self.gate is not None:
            return self.port.poll_ready(self.gate, select.POLLIN, callback)
        return self.port.poll_ready(sock, select.POLLOUT, callback)

    def accept(self, listener, callback, accept_sock=None, first_data=0):
        op = self._real_accept(listener, callback, accept_sock, first_data)
        op.__class__ = self._accept_class   # (same layout: a subclass with no slots)
        return op

    def transplant(self, op, accepted):
        conn, address = accepted
        target = op.buffer[1]
        if target is None:
            return conn, address
        os.dup2(conn.fileno(), target.fileno(), inheritable=False)
        conn.close()
        target.setblocking(False)   # as the real accepted() does for AcceptEx's socket
        self.transplants += 1
        return target, address


class SpareTracker:
    """Remembers the sockets an accept pool hands out of its spares."""

    def __init__(self, pool):
        self.taken: list = []
        real_take = pool.spares.take

        def take():
            sock = real_take()
            if sock is not None:
                self.taken.append(sock)
            return sock

        pool.spares.take = take

    def __contains__(self, sock):
        return any(s is sock for s in self.taken)


def refuse_spares(loop, tracker: SpareTracker, mode: str) -> list:
    """Make the port's accept refuse every spare socket, at submission
    (OSError) or at completion (the operation fails with EINVAL: an io_uring
    accept on a socket that is not listening).  Returns the refusal log."""
    port = loop._port
    real_accept = port.accept
    refusals = []
    not_listening = socket.socket()
    loop._test_not_listening = not_listening   # closed by the caller via close_fake()

    def accept(listener, callback, accept_sock=None, first_data=0):
        if accept_sock is not None and accept_sock in tracker:
            refusals.append(mode)
            if mode == "at_submit":
                raise refusal_error()
            return real_accept(not_listening, callback, accept_sock, first_data)
        return real_accept(listener, callback, accept_sock, first_data)

    port.accept = accept
    return refusals


def close_fake(loop):
    s = getattr(loop, "_test_not_listening", None)
    if s is not None:
        s.close()


def settle_fds(before: int, extra=lambda: 0, timeout: float = TIMEOUT) -> int:
    """Wait (collecting garbage) until the fd count is back to before+extra();
    returns the last count."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        now = fd_count()
        if now <= before + extra() or time.monotonic() > deadline:
            return now
        time.sleep(0.01)


# -- Linux: the real path (client sockets) ---------------------------------------------


@linux_only
@IOCP_ONLY
async def test_linux_client_sockets_reused_when_peer_closed_first():
    """The server echoes and closes first; the client reads to EOF and closes:
    both FINs are exchanged, so the client socket is dissolved and serves the
    next connection.  Every connection has its own Python socket object, and
    the one a finished transport used reads as closed."""
    loop = asyncio.get_running_loop()
    n = 40
    server, port, handler = await start_echo_once()
    tsocks = []
    async with server:
        for i in range(n):
            _, tsock = await echo_cycle(port, b"msg %d" % i)
            # The transport is done: what the user kept is closed, never the
            # next connection's socket.
            assert tsock.fileno() == -1
            tsocks.append(tsock)
            assert loop.socket_stats()["pooled"] <= 1
    assert not handler.errors
    assert handler.served == n
    raw = [t._sock for t in tsocks]   # the socket objects behind the wrappers
    assert len({id(s) for s in raw}) == n, "a socket object served two connections"
    assert all(s.fileno() == -1 for s in raw)
    stats = loop.socket_stats()
    assert stats["enabled"] is True
    assert stats["refused"] == 0
    assert stats["reused"] >= n - 1, stats
    assert stats["pooled"] <= 1, stats
    # Linux: n accepted sockets (never recycled) + the first client socket.
    assert stats["created"] + stats["reused"] == 2 * n, stats
    assert stats["disconnecting"] == 0


@pytest.mark.asyncio
async def test_client_closing_first_is_not_reused_and_peer_sees_clean_eof():
    """The client closes while the server is still open (no EOF received):
    on Linux the socket must not be dissolved while the connection is live
    (that would reset the peer); it may be recycled only after the server
    finished the close.  The server reads the data then a clean EOF, not
    ConnectionResetError.  Twin test: stock asyncio is the reference."""
    loop = asyncio.get_running_loop()
    outcomes: asyncio.Queue = asyncio.Queue()
    got_data = asyncio.Queue()

    async def handler(reader, writer):
        try:
            first = await reader.readexactly(5)
            got_data.put_nowait(first)
            rest = await reader.read()          # to the client's EOF
            outcomes.put_nowait(("eof", first + rest))
        except Exception as exc:   # noqa: BLE001
            outcomes.put_nowait(("error", exc))
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    server = await asyncio.start_server(handler, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    rounds = 5
    async with server:
        for i in range(rounds):
            reader, writer = await bounded(asyncio.open_connection(HOST, port))
            tsock = writer.get_extra_info("socket")
            writer.write(b"hello")
            assert await bounded(got_data.get()) == b"hello"
            writer.close()                      # first: the server is still open
            await bounded(writer.wait_closed())
            assert tsock.fileno() == -1
            kind, value = await bounded(outcomes.get())
            assert kind == "eof", f"round {i}: the server saw {value!r}, not a clean EOF"
            assert value == b"hello"
    if is_iocploop(loop) and IS_LINUX:
        stats = loop.socket_stats()
        assert stats["refused"] == 0, stats
        # Every connection had a socket: fresh (server and client) or recycled.
        assert stats["created"] + stats["reused"] == 2 * rounds, stats


@linux_only
@IOCP_ONLY
async def test_socket_asked_for_after_the_end_is_not_the_next_connections():
    """get_extra_info('socket') makes its wrapper on first asking.  Asked for
    only after the connection ended and its socket went to reuse, it wraps
    that connection's socket object, which reads as closed: never the
    socket now serving another connection."""
    loop = asyncio.get_running_loop()
    server, port, handler = await start_echo_once()
    writers = []
    async with server:
        for i in range(10):
            reader, writer = await bounded(asyncio.open_connection(HOST, port))
            writer.write(b"msg %d\n" % i)
            assert await bounded(reader.read()) == b"msg %d\n" % i
            writer.close()
            await bounded(writer.wait_closed())
            writers.append(writer)
        # One more connection open now, on a reused socket.
        reader, writer = await bounded(asyncio.open_connection(HOST, port))
        live = writer.get_extra_info("socket")
        ended = [w.get_extra_info("socket") for w in writers]
        assert all(tsock.fileno() == -1 for tsock in ended), [t.fileno() for t in ended]
        assert all(tsock._sock is not live._sock for tsock in ended)
        writer.write(b"last\n")
        assert await bounded(reader.read()) == b"last\n"
        writer.close()
        await bounded(writer.wait_closed())
    assert not handler.errors
    assert loop.socket_stats()["reused"] >= 10


@linux_only
@IOCP_ONLY
async def test_linux_reset_after_eof_does_not_poison_the_next_connection():
    """The server closed first; the client reads EOF, then writes (the peer's
    kernel answers with a reset the transport never reads, since nothing
    reads after EOF), then closes cleanly.  The socket is still dissolved and
    pooled with the reset pending in SO_ERROR; the next connection that draws
    it must work (the kernel clears the error on connect)."""
    loop = asyncio.get_running_loop()
    server, port, handler = await start_echo_once()
    async with server:
        reader, writer = await bounded(asyncio.open_connection(HOST, port))
        writer.write(b"one\n")
        assert await bounded(reader.read()) == b"one\n"
        await asyncio.sleep(0.05)      # the server's socket is fully closed
        writer.write(b"late\n")        # answered by a reset
        await bounded(writer.drain())
        await asyncio.sleep(0.05)
        writer.close()
        await bounded(writer.wait_closed())
        before = loop.socket_stats()
        for i in range(3):
            await echo_cycle(port, b"after %d" % i)
        after = loop.socket_stats()
    assert after["reused"] >= before["reused"] + 1, (before, after)
    assert after["refused"] == 0


@pytest.mark.asyncio
async def test_reused_client_socket_in_debug_mode():
    """In debug mode sock_connect refuses a socket whose gettimeout() is not
    0: a recycled client socket must still read as non-blocking, so every
    connection succeeds."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    old = loop.slow_callback_duration
    loop.slow_callback_duration = 10.0   # no slow-callback noise under load
    try:
        server, port, handler = await start_echo_once()
        async with server:
            for i in range(4):
                await echo_cycle(port, b"debug %d" % i)
        assert not handler.errors
        if is_iocploop(loop) and IS_LINUX:
            assert loop.socket_stats()["reused"] >= 3
    finally:
        loop.slow_callback_duration = old
        loop.set_debug(False)


@pytest.mark.asyncio
async def test_local_addr_port_free_again_after_the_connection():
    """create_connection(local_addr=(host, port)) binds the client socket
    explicitly.  Once that connection is over (peer closed first, so no
    TIME_WAIT on the client), the same local_addr works again, and a later
    connection without local_addr does not silently use that port."""
    loop = asyncio.get_running_loop()
    server, port, handler = await start_echo_once()
    probe = socket.socket()
    probe.bind((HOST, 0))
    local_port = probe.getsockname()[1]
    probe.close()
    async with server:
        for i in range(2):
            reader, writer = await bounded(asyncio.open_connection(
                HOST, port, local_addr=(HOST, local_port)))
            assert writer.get_extra_info("sockname")[1] == local_port
            writer.write(b"bound %d\n" % i)
            assert await bounded(reader.read()) == b"bound %d\n" % i
            writer.close()
            await bounded(writer.wait_closed())
            # The next connection, without local_addr, gets its own port.
            reader, writer = await bounded(asyncio.open_connection(HOST, port))
            try:
                assert writer.get_extra_info("sockname")[1] != local_port
                writer.write(b"free\n")
                assert await bounded(reader.read()) == b"free\n"
            finally:
                writer.close()
                await bounded(writer.wait_closed())
    assert not handler.errors


@linux_only
@IOCP_ONLY
async def test_socket_passed_in_and_aborted_connections_are_not_recycled():
    """Only sockets iocploop made are recycled: a socket passed with sock= is
    closed by its transport (as asyncio does), never pooled; an aborted
    connection is closed, never pooled, even after a clean EOF."""
    loop = asyncio.get_running_loop()
    server, port, handler = await start_echo_once()
    async with server:
        own = socket.socket()
        own.setblocking(False)
        await bounded(loop.sock_connect(own, (HOST, port)))
        reader, writer = await bounded(asyncio.open_connection(sock=own))
        writer.write(b"mine\n")
        assert await bounded(reader.read()) == b"mine\n"
        writer.close()
        await bounded(writer.wait_closed())
        assert own.fileno() == -1
        assert loop.socket_stats()["pooled"] == 0

        reader, writer = await bounded(asyncio.open_connection(HOST, port))
        writer.write(b"abort\n")
        assert await bounded(reader.read()) == b"abort\n"
        writer.transport.abort()
        await bounded(writer.wait_closed())
        assert loop.socket_stats()["pooled"] == 0
    stats = loop.socket_stats()
    assert stats["reused"] == 0 and stats["refused"] == 0, stats
    assert not handler.errors


# -- switching reuse off -------------------------------------------------------------


def test_socket_reuse_off_from_the_start():
    """Loop(socket_reuse=False): every connection gets a fresh socket."""
    loop = iocploop.Loop(socket_reuse=False)
    n = 10 if IS_WINDOWS else 30
    try:
        async def main():
            server, port, handler = await start_echo_once()
            async with server:
                for i in range(n):
                    _, tsock = await echo_cycle(port, b"off %d" % i)
                    assert tsock.fileno() == -1
            assert not handler.errors
            return loop.socket_stats()

        stats = run(loop, main(), TIMEOUT * 4)
    finally:
        loop.close()
    assert stats["enabled"] is False
    assert stats["reused"] == 0 and stats["refused"] == 0, stats
    assert stats["pooled"] == 0 and stats["disconnecting"] == 0, stats
    if IS_LINUX:
        assert stats["created"] == 2 * n, stats    # n accepted + n client sockets
    else:
        assert stats["created"] >= 2 * n, stats    # + AcceptEx sockets made ahead of need


@IOCP_ONLY
async def test_set_socket_reuse_off_and_on_again():
    loop = asyncio.get_running_loop()
    server, port, handler = await start_echo_once()
    async with server:
        for i in range(3):
            await echo_cycle(port, b"on %d" % i)
        on = loop.socket_stats()
        loop.set_socket_reuse(False)
        assert loop.socket_stats()["enabled"] is False
        for i in range(5):
            await echo_cycle(port, b"off %d" % i)
        off = loop.socket_stats()
        if IS_LINUX:   # Windows: listener spares pooled before are still used
            assert off["reused"] == on["reused"], (on, off)
        # Sockets pooled before stay (unused); nothing new is pooled.
        assert off["pooled"] <= on["pooled"], (on, off)
        assert off["created"] >= on["created"] + 10, (on, off)   # 5 clients + 5 accepted
        loop.set_socket_reuse(True)
        for i in range(3):
            await echo_cycle(port, b"on again %d" % i)
        again = loop.socket_stats()
    assert not handler.errors
    assert again["enabled"] is True
    if IS_LINUX:
        assert on["reused"] >= 2, on
        assert again["reused"] >= off["reused"] + 2, (off, again)


@linux_only
@IOCP_ONLY
async def test_set_socket_reuse_off_applies_to_connections_already_open():
    """A connection opened while reuse was on and ended after it was switched
    off must not be pooled (Linux: the dissolve path)."""
    loop = asyncio.get_running_loop()
    server, port, handler = await start_echo_once()
    async with server:
        reader, writer = await bounded(asyncio.open_connection(HOST, port))
        loop.set_socket_reuse(False)
        writer.write(b"x\n")
        assert await bounded(reader.read()) == b"x\n"
        writer.close()
        await bounded(writer.wait_closed())
        stats = loop.socket_stats()
    assert stats["pooled"] == 0, stats


# -- fake provider that accepts server-side reuse (Linux) -----------------------------------


@fake_provider
def test_fake_provider_server_sockets_reused_no_loss_no_leak():
    gc.collect()
    before = fd_count()
    loop = iocploop.Loop(accept_pool_size=4)
    fake = FakeProvider(loop)
    try:
        async def main():
            server, port, handler = await start_echo_once()
            pool = only_pool(loop)
            assert pool._home is pool.spares, "the fake provider did not enable server reuse"
            async with server:
                total = await echo_cycles(port, 1, 60, "seq")        # one at a time
                total += await echo_cycles(port, 8, 30, "conc")      # eight at a time
                await until(lambda: loop.socket_stats()["disconnecting"] == 0)
                stats = loop.socket_stats()
            return total, handler, stats

        total, handler, stats = run(loop, main(), TIMEOUT * 6)
        assert total == 60 + 8 * 30
        assert handler.served == total, "a connection was lost"
        assert not handler.errors, handler.errors
        # Listener sockets served again (each transplant is an accept into a
        # spare), and counted with the reused client sockets.
        assert fake.transplants >= total // 4, (fake.transplants, total)
        assert stats["reused"] >= fake.transplants, (stats, fake.transplants)
        assert stats["refused"] == 0, stats
        # Each connection is two sockets (client + accepted): fresh or reused.
        assert stats["created"] + stats["reused"] == 2 * total, stats
    finally:
        loop.close()
    after = settle_fds(before)
    assert after == before, f"{after - before} descriptors leaked"


@fake_provider
def test_fake_provider_socket_asked_for_after_the_end_reads_as_closed():
    """The server closes first and its socket goes to socket reuse.  The
    wrapper get_extra_info('socket') makes when first asked after that end
    wraps the connection's own (now closed) object, never the one serving a
    later connection.  (Windows also recycles a socket whose cancelled
    receive is still in the kernel; that path makes the wrapper before it
    rewraps the socket: _release_socket.)"""
    loop = iocploop.Loop(accept_pool_size=4)
    fake = FakeProvider(loop)
    try:
        async def main():
            server, port, handler = await start_echo_once()
            handler.ask_for_socket = False
            async with server:
                assert await echo_cycles(port, 1, 12, "seq") == 12
                await until(lambda: loop.socket_stats()["disconnecting"] == 0)
                ended = [w.get_extra_info("socket") for w in handler.writers]
            assert not handler.errors, handler.errors
            return ended

        ended = run(loop, main(), TIMEOUT * 3)
        assert fake.transplants > 0, "no server socket was reused"
        assert all(tsock.fileno() == -1 for tsock in ended), [t.fileno() for t in ended]
        raw = [tsock._sock for tsock in ended]
        assert len({id(s) for s in raw}) == len(raw), "a socket object served two connections"
    finally:
        loop.close()


@fake_provider
@pytest.mark.parametrize("pool_size,max_spares", [(4, 64), (8, 3)], ids=["pool4", "max3"])
def test_fake_provider_spare_pool_is_bounded(pool_size, max_spares):
    """Twelve connections end at once: the listener keeps at most
    min(accept_pool_size, max_spares) spares, the client pool at most
    max_spares; the rest are closed; serving continues."""
    bound = min(pool_size, max_spares)
    gc.collect()
    before = fd_count()
    loop = iocploop.Loop(accept_pool_size=pool_size)
    loop._recycler.max_spares = max_spares
    FakeProvider(loop)
    try:
        async def main():
            hold = asyncio.Event()
            server, port, handler = await start_echo_once(hold)
            pool = only_pool(loop)
            seen = []

            async def sample():
                while True:
                    seen.append(len(pool.spares))
                    await asyncio.sleep(0)

            sampler = asyncio.create_task(sample())
            async with server:
                clients = [asyncio.create_task(echo_cycle(port, b"held %d" % i))
                           for i in range(12)]
                await until(lambda: len(handler.sockets) == 12)
                hold.set()
                await bounded(asyncio.gather(*clients))
                await until(lambda: loop.socket_stats()["disconnecting"] == 0)
                full = len(pool.spares)
                client_pooled = sum(map(len, loop._recycler._client_spares.values()))
                stats = loop.socket_stats()
                await echo_cycles(port, 4, 10, "after")
                sampler.cancel()
            return full, client_pooled, seen, stats, handler

        full, client_pooled, seen, stats, handler = run(loop, main(), TIMEOUT * 4)
        assert not handler.errors
        assert handler.served == 12 + 40
        assert max(seen) <= bound, (max(seen), bound)
        assert full == bound, (full, bound)
        assert 0 < client_pooled <= max_spares, client_pooled
        assert stats["pooled"] == full + client_pooled, stats
    finally:
        loop.close()
    assert settle_fds(before) == before


@fake_provider
def test_fake_provider_disconnects_in_flight_bounded_and_closed_with_the_loop():
    """At most max_disconnecting disconnects are in flight (the others'
    sockets are closed at once); disconnects still in flight when the server
    and then the loop close leave no descriptor and no ResourceWarning."""
    gc.collect()
    before = fd_count()
    gate_r, gate_w = socket.socketpair()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        loop = iocploop.Loop(accept_pool_size=4)
        loop._recycler.max_disconnecting = 3
        fake = FakeProvider(loop, gate=gate_r)
        try:
            async def main():
                server, port, handler = await start_echo_once()
                pool = only_pool(loop)
                await echo_cycles(port, 1, 10, "a")
                # The disconnects wait for the gate: 3 in flight, 7 closed.
                stats = loop.socket_stats()
                assert stats["disconnecting"] == 3, stats
                assert len(pool.spares) == 0
                gate_w.send(b"x")
                await until(lambda: loop.socket_stats()["disconnecting"] == 0)
                assert len(pool.spares) == 3
                gate_r.recv(1)
                # Spares serve accepts again; their disconnects wait once more.
                await echo_cycles(port, 1, 8, "b")
                assert fake.transplants > 0
                assert loop.socket_stats()["disconnecting"] > 0
                server.close()
                await bounded(server.wait_closed())
                assert not handler.errors
                assert handler.served == 18

            run(loop, main(), TIMEOUT * 3)
        finally:
            loop.close()
        gate_r.close()
        gate_w.close()
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, leaked
    assert settle_fds(before) == before


@fake_provider
@pytest.mark.parametrize("failure", ["at_submit", "at_completion"])
def test_fake_provider_failed_disconnect_closes_the_socket(failure):
    """A disconnect the provider rejects (at submission, or completing with an
    error) closes the socket instead of pooling it; serving goes on."""
    gc.collect()
    before = fd_count()
    loop = iocploop.Loop(accept_pool_size=4)
    fake = FakeProvider(loop)
    port_ = loop._port
    not_listening = socket.socket()

    def failing_disconnect(sock, callback):
        if failure == "at_submit":
            raise OSError(errno.EOPNOTSUPP, "no disconnect")
        # An io_uring accept on a socket that is not listening fails (EINVAL).
        return port_.accept(not_listening, callback)

    port_.disconnect = failing_disconnect
    try:
        async def main():
            server, port, handler = await start_echo_once()
            pool = only_pool(loop)
            async with server:
                await echo_cycles(port, 2, 10, failure)
                await until(lambda: loop.socket_stats()["disconnecting"] == 0)
                assert len(pool.spares) == 0
            assert not handler.errors
            assert handler.served == 20

        run(loop, main(), TIMEOUT * 3)
        assert fake.transplants == 0
    finally:
        loop.close()
        not_listening.close()
    assert settle_fds(before) == before


# -- refusals ---------------------------------------------------------------------------


def windows_server_reuse_verdict(timeout: float = 20.0):
    """Windows: the once-per-process probe's verdict (iocploop/_reuse_probe.py)
    on whether this provider serves AcceptEx into a recycled socket (real
    Windows: True; Wine: False).  Waits for it, starting the probe if needed."""
    from iocploop._reuse_probe import server_reuse_verdict

    deadline = time.monotonic() + timeout
    while True:
        verdict = server_reuse_verdict(socket.AF_INET, lambda family, ok: None)
        if verdict is not None or time.monotonic() > deadline:
            return verdict
        time.sleep(0.05)


def _refusal_loop(mode):
    if IS_WINDOWS and mode == "at_completion":
        pytest.skip("the completion-time refusal is emulated with io_uring (Linux)")
    if IS_WINDOWS and not windows_server_reuse_verdict():
        pytest.skip("this provider does not serve AcceptEx into a recycled socket (Wine: "
                    "docs/windows-under-wine.md, W3): server-side reuse is off, there is no "
                    "spare to refuse")
    loop = iocploop.Loop(accept_pool_size=4)
    if IS_LINUX:
        FakeProvider(loop)
    return loop


async def _refusal_server(loop, mode):
    # The client closes first, so that on Windows the listener's sockets are
    # disconnected (and recycled) at once, not after TIME_WAIT.
    server, port, handler = await start_echo_once(wait_eof=True)
    pool = only_pool(loop)
    if pool._home is None:
        server.close()
        await server.wait_closed()
        pytest.skip("this provider offers no DisconnectEx: listener sockets are never recycled")
    tracker = SpareTracker(pool)
    refusals = refuse_spares(loop, tracker, mode)
    return server, port, handler, pool, tracker, refusals


@pytest.mark.parametrize("mode", ["at_submit", "at_completion"])
def test_provider_refusing_recycled_server_sockets(mode):
    """The provider refuses a recycled listener socket: the socket is closed,
    a fresh one takes its place (no connection lost), refused is counted
    once, and reuse stays off for that kind of socket on this loop."""
    cycles = 20 if IS_WINDOWS else 40
    gc.collect()
    before = fd_count() if IS_LINUX else None
    loop = _refusal_loop(mode)
    try:
        async def main():
            server, port, handler, pool, tracker, refusals = await _refusal_server(loop, mode)
            async with server:
                await echo_cycles(port, 1, cycles, "r", client_first=True)
                await until(lambda: loop.socket_stats()["refused"] >= 1, TIMEOUT * 2)
                first = loop.socket_stats()
                assert len(tracker.taken) == 1, "a spare was handed out after the refusal"
                assert all(s.fileno() == -1 for s in tracker.taken)   # the refused socket
                assert pool._home is None and len(pool.spares) == 0
                # Further cycles: no more spares, no more refusals.
                await echo_cycles(port, 2, cycles // 2, "more", client_first=True)
                later = loop.socket_stats()
                listener = server.sockets[0]
                probe = socket.socket(listener.family, listener.type, listener.proto)
            try:
                refused_kind = not loop._recycler.can_reuse(probe, "server")
            finally:
                probe.close()
            return handler, refusals, first, later, refused_kind

        handler, refusals, first, later, refused_kind = run(loop, main(), TIMEOUT * 6)
        assert handler.served == 2 * cycles, "a connection was lost"
        assert not handler.errors, handler.errors
        assert refusals == [mode]
        assert first["refused"] == 1, first
        assert later["refused"] == 1, later
        assert refused_kind, "reuse is still on for the refused kind of socket"
        assert later["created"] > first["created"]
    finally:
        loop.close()
        close_fake(loop)
    if before is not None:
        assert settle_fds(before) == before


def test_provider_refusal_with_connections_open_is_counted_once():
    """Connections are open when the refusal happens; when they end, their
    sockets (whose transports were made while reuse was on) must not be
    pooled and refused again."""
    loop = _refusal_loop("at_submit")
    try:
        async def main():
            server, port, handler, pool, tracker, refusals = await _refusal_server(
                loop, "at_submit")
            hold = asyncio.Event()
            handler.hold = hold
            async with server:
                # Four connections held open; one ended and recycled; then a
                # connection whose accept draws the spare: refusal.
                held = [asyncio.create_task(echo_cycle(port, b"held %d" % i, client_first=True))
                        for i in range(4)]
                await until(lambda: len(handler.sockets) == 4)
                handler.hold = None
                await echo_cycles(port, 1, 6, "seq", client_first=True)
                await until(lambda: loop.socket_stats()["refused"] >= 1)
                hold.set()
                await bounded(asyncio.gather(*held))
                await echo_cycles(port, 1, 10, "after", client_first=True)
                stats = loop.socket_stats()
            return handler, stats, refusals

        handler, stats, refusals = run(loop, main(), TIMEOUT * 4)
        assert not handler.errors
        assert handler.served == 20
        assert stats["refused"] == 1, (stats, refusals)
    finally:
        loop.close()
        close_fake(loop)


@IOCP_ONLY
async def test_client_spare_refused_by_connect_gets_a_fresh_socket():
    """A pooled client socket that the provider refuses (ConnectEx's
    WSAEISCONN on Wine): create_connection still succeeds on a fresh socket,
    the spare is closed, refused is 1 and client reuse of that kind is off."""
    loop = asyncio.get_running_loop()
    server, port, handler = await start_echo_once()
    # Keep the listener's sockets out of the counters (Windows would recycle them).
    only_pool(loop)._home = None
    # The kind of socket create_connection makes for 127.0.0.1.
    spare = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    spare.setblocking(False)
    pool = SparePool(loop._recycler.max_spares, "client")
    pool.give(spare)
    kind = _kind(spare)
    loop._recycler._client_spares[kind] = pool
    real_sock_connect = loop.sock_connect
    attempts = []

    async def sock_connect(sock, address):
        attempts.append(sock)
        if sock is spare:
            raise refusal_error()
        return await real_sock_connect(sock, address)

    loop.sock_connect = sock_connect
    try:
        async with server:
            before = loop.socket_stats()
            _, tsock = await echo_cycle(port, b"fresh")
            assert spare.fileno() == -1
            assert tsock._sock is not spare
            assert attempts[0] is spare
            stats = loop.socket_stats()
            assert stats["refused"] == 1, stats
            assert stats["reused"] == 0, stats
            assert stats["created"] >= before["created"] + 1
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                assert not loop._recycler.can_reuse(probe, "client")
            finally:
                probe.close()
            # Later connections: no client socket of that kind is pooled any more.
            for i in range(3):
                await echo_cycle(port, b"later %d" % i)
            later = loop.socket_stats()
            assert later["refused"] == 1 and later["reused"] == 0, later
            assert len(loop._recycler._client_spares.get(kind, ())) == 0
    finally:
        del loop.sock_connect
    assert not handler.errors


# -- Windows: the real DisconnectEx path ----------------------------------------------------


@pytest.mark.skipif(not IS_WINDOWS, reason="real DisconnectEx exists on Windows only")
@IOCP_ONLY
async def test_windows_real_disconnectex_many_short_connections():
    """Real Windows recycles (reused > 0: at least the client sockets, whose
    peer closed first); on Wine recycled sockets are refused (the
    server-reuse probe finds that AcceptEx into one never delivers data;
    ConnectEx refuses one with WSAEISCONN): refused >= 1, then reuse is off
    for that role.  Either way no connection is lost."""
    loop = asyncio.get_running_loop()
    n = 30
    server, port, handler = await start_echo_once()
    async with server:
        for i in range(n):
            await echo_cycle(port, b"win %d" % i)
        # Disconnects in flight, or the server-reuse probe (a thread, once
        # per process), may still be finishing: a few more connections.
        extra = 0
        deadline = time.monotonic() + 15
        while True:
            await echo_cycle(port, b"win again %d" % extra)
            extra += 1
            stats = loop.socket_stats()
            if extra >= 5 and (stats["reused"] > 0 or stats["refused"] >= 1
                               or time.monotonic() > deadline):
                break
            await asyncio.sleep(0.1)
    n += extra
    assert handler.served == n
    assert not handler.errors, handler.errors
    assert stats["reused"] > 0 or stats["refused"] >= 1, stats
    assert stats["created"] >= n, stats
    if stats["refused"]:
        # Reuse is then off for the refused role (server or client) of that kind.
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            assert not (loop._recycler.can_reuse(probe, "server")
                        and loop._recycler.can_reuse(probe, "client"))
        finally:
            probe.close()
    if UNDER_WINE:   # Wine refuses recycled sockets (docs/windows-under-wine.md, W3)
        assert stats["refused"] >= 1, stats


# -- many cycles -----------------------------------------------------------------------


# Linux: 10,000 connection cycles (50 clients x 200 cycles), about 3-6 s on a
# loaded 2-core machine.  Windows (Wine's loopback is ~5 ms per round trip):
# 50 cycles.
MANY_TASKS, MANY_CYCLES = (5, 10) if IS_WINDOWS else (50, 200)


@IOCP_ONLY
async def test_many_connection_cycles_leave_only_the_pool():
    loop = asyncio.get_running_loop()
    gc.collect()
    before = fd_count() if IS_LINUX else None
    server, port, handler = await start_echo_once(backlog=MANY_TASKS * 2)
    started = time.monotonic()
    async with server:
        total = await bounded(echo_cycles(port, MANY_TASKS, MANY_CYCLES, "m"), 120)
    elapsed = time.monotonic() - started
    assert total == MANY_TASKS * MANY_CYCLES
    assert handler.served == total
    assert not handler.errors, handler.errors[:3]
    stats = loop.socket_stats()
    assert stats["created"] + stats["reused"] + stats["refused"] >= 2 * total, stats
    if IS_LINUX:
        assert stats["refused"] == 0
        # Nearly every client connection after the first MANY_TASKS drew a spare.
        assert stats["reused"] >= total * 9 // 10, stats
        pooled = lambda: loop.socket_stats()["pooled"]   # noqa: E731
        assert pooled() <= MANY_TASKS
        for _ in range(5):
            await asyncio.sleep(0)
        gc.collect()
        await until(lambda: fd_count() - before <= pooled())
        assert fd_count() - before >= 0
    assert elapsed < 60, f"{total} cycles took {elapsed:.1f} s"
