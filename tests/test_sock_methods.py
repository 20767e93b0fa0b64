"""loop.sock_recv / sock_recv_into / sock_sendall / sock_connect / sock_accept.

Every test runs twice (pytest-asyncio hook in conftest.py): on iocploop and on
the platform's stock asyncio loop, which is the reference behaviour.  Checks of
iocploop's internals (``loop._port.pending``) run on the iocploop variant only.
Every wait is bounded, so a lost byte or connection fails a test, never hangs it.
"""
from __future__ import annotations

import asyncio
import hashlib
import random
import select
import socket
import struct
import threading
import time

import pytest

import iocploop
from _helpers import (
    IS_WINDOWS, TIMEOUT, is_iocploop_loop, iterations_until_no_pending_ops, until_op_pending,
)

# Wine's loopback round trips cost milliseconds: keep the traffic small there.
ECHO_CLIENTS, ECHO_BYTES, ECHO_CHUNK = (5, 2048, 1024) if IS_WINDOWS else (50, 32 * 1024, 4096)
BIG_SENDALL = 256 * 1024 if IS_WINDOWS else 8 * 1024 * 1024
RACE_ROUNDS = 60 if IS_WINDOWS else 200

# Where the reference itself, asyncio's ProactorEventLoop (Windows), falls short.
PROACTOR_SKIPS_CHECKS = (
    "asyncio's ProactorEventLoop sock_* methods check neither blocking sockets in debug mode "
    "nor SSL sockets (only the selector loop does): no reference behaviour on Windows")
PROACTOR_NO_RESOLVE = (
    "asyncio's ProactorEventLoop.sock_connect does not resolve the address (it hands the "
    "tuple to ConnectEx as is): no reference behaviour on Windows")
PROACTOR_READ_ONLY = (
    "asyncio's ProactorEventLoop.sock_recv_into accepts a read-only buffer (WSARecvInto "
    "writes into it): no reference behaviour on Windows")
PROACTOR_CANCEL_LOSES = (
    "asyncio's ProactorEventLoop throws away what an overlapped WSARecv/AcceptEx delivers "
    "as it is cancelled (the race of bpo-33694, fixed there for transports only)")

SOCK_METHODS = ["sock_recv", "sock_recv_into", "sock_sendall", "sock_connect", "sock_accept"]


# -- helpers --------------------------------------------------------------------------


def _is_proactor_reference(loop) -> bool:
    return IS_WINDOWS and not is_iocploop_loop(loop)


def _xfail_on_proactor_reference(request, loop) -> None:
    """Known data/connection loss of the reference loop on Windows: the test
    still runs there, reported as xfail (or xpass when the race went well)."""
    if _is_proactor_reference(loop):
        request.applymarker(pytest.mark.xfail(reason=PROACTOR_CANCEL_LOSES, strict=False))


async def _bounded(aw, timeout: float = TIMEOUT):
    return await asyncio.wait_for(aw, timeout)


def _listener(family=socket.AF_INET, host="127.0.0.1", backlog=128) -> socket.socket:
    lsock = socket.socket(family, socket.SOCK_STREAM)
    try:
        lsock.bind((host, 0))
        lsock.listen(backlog)
        lsock.setblocking(False)
    except BaseException:
        lsock.close()
        raise
    return lsock


def _tcp_pair(family=socket.AF_INET, host="127.0.0.1"):
    """A connected, non-blocking TCP socket pair (socket._tcp_pair() is AF_UNIX
    on Linux, and resets and buffers are TCP matters)."""
    with _listener(family, host, backlog=1) as lsock:
        a = socket.create_connection(lsock.getsockname()[:2], timeout=TIMEOUT)
        lsock.setblocking(True)
        lsock.settimeout(TIMEOUT)
        b, _ = lsock.accept()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _client(family=socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


def _linger_zero(sock) -> None:
    """Make close() send an RST (struct linger is two u_shorts on Windows)."""
    fmt = "HH" if IS_WINDOWS else "ii"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack(fmt, 1, 0))


def _ipv6_loopback_available() -> str | None:
    """None if ::1 works, else the reason why not."""
    if not socket.has_ipv6:
        return "Python was built without IPv6 support"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        return f"the host has no IPv6 loopback (::1): {exc}"
    return None


async def _assert_no_pending_ops(loop) -> None:
    if not is_iocploop_loop(loop):
        return
    iterations = await iterations_until_no_pending_ops(loop)
    if not IS_WINDOWS:
        # io_uring cancels synchronously at submission: the next wait reaps it.
        assert iterations <= 2, f"cancellation took {iterations} loop iterations"


async def _recv_exactly(loop, sock, n: int, timeout: float = TIMEOUT) -> bytes:
    """sock_recv until n bytes arrived (fails on EOF or after timeout)."""
    out = bytearray()

    async def reader():
        while len(out) < n:
            data = await loop.sock_recv(sock, n - len(out))
            assert data, f"EOF after {len(out)} of {n} bytes"
            out.extend(data)

    try:
        await asyncio.wait_for(reader(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"only {len(out)} of {n} bytes arrived within {timeout} s")
    return bytes(out)


def _nothing_to_read(sock) -> bool:
    try:
        sock.recv(1)
    except (BlockingIOError, InterruptedError):
        return True
    return False


@pytest.fixture
def pair():
    a, b = _tcp_pair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


# -- an echo server made of sock_accept / sock_recv / sock_sendall ---------------------


@pytest.mark.asyncio
async def test_echo_server_serves_concurrent_clients():
    loop = asyncio.get_running_loop()
    listener = _listener(backlog=ECHO_CLIENTS + 16)
    address = listener.getsockname()
    handlers: list[asyncio.Task] = []
    served_bytes = []

    async def handle(conn):
        total = 0
        with conn:
            while True:
                data = await loop.sock_recv(conn, 65536)
                if not data:
                    served_bytes.append(total)
                    return
                total += len(data)
                await loop.sock_sendall(conn, data)

    async def serve():
        for _ in range(ECHO_CLIENTS):
            conn, _ = await loop.sock_accept(listener)
            handlers.append(asyncio.ensure_future(handle(conn)))

    async def client(i):
        payload = random.Random(i).randbytes(ECHO_BYTES)
        with _client() as sock:
            await loop.sock_connect(sock, address)
            echoed = bytearray()
            for off in range(0, ECHO_BYTES, ECHO_CHUNK):
                await loop.sock_sendall(sock, payload[off:off + ECHO_CHUNK])
                # The echo never runs ahead of what was sent.
                while len(echoed) < min(off + ECHO_CHUNK, ECHO_BYTES):
                    data = await loop.sock_recv(sock, 65536)
                    assert data, f"client {i}: the server closed early"
                    echoed += data
            sock.shutdown(socket.SHUT_WR)
            # The server closes its side once it has seen our EOF.
            assert await loop.sock_recv(sock, 100) == b""
            return hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()

    server = asyncio.ensure_future(serve())
    clients = [asyncio.ensure_future(client(i)) for i in range(ECHO_CLIENTS)]
    try:
        results = await _bounded(asyncio.gather(server, *clients), TIMEOUT * 4)
        assert results[1:] == [True] * ECHO_CLIENTS
        await _bounded(asyncio.gather(*handlers))
        assert served_bytes == [ECHO_BYTES] * ECHO_CLIENTS
        await _assert_no_pending_ops(loop)
    finally:
        for task in [server, *clients, *handlers]:
            task.cancel()
        await asyncio.gather(server, *clients, *handlers, return_exceptions=True)
        listener.close()


# -- sock_connect ----------------------------------------------------------------------


async def _connect_and_check(loop, family, host, connect_to):
    with _listener(family, host) as listener, _client(family) as sock:
        address = listener.getsockname()
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        try:
            await _bounded(loop.sock_connect(sock, connect_to(address)))
            conn, peer = await _bounded(accept)
        finally:
            accept.cancel()
        with conn:
            assert sock.getpeername() == address
            assert peer == sock.getsockname() == conn.getpeername()
            await _bounded(loop.sock_sendall(sock, b"ping"))
            assert await _recv_exactly(loop, conn, 4) == b"ping"
            await _bounded(loop.sock_sendall(conn, b"pong"))
            assert await _recv_exactly(loop, sock, 4) == b"pong"


@pytest.mark.asyncio
async def test_sock_connect_ipv4_loopback():
    loop = asyncio.get_running_loop()
    await _connect_and_check(loop, socket.AF_INET, "127.0.0.1", lambda address: address)


@pytest.mark.asyncio
async def test_sock_connect_ipv6_loopback():
    reason = _ipv6_loopback_available()
    if reason:
        pytest.skip(reason)
    loop = asyncio.get_running_loop()
    # The full (host, port, flowinfo, scope_id) form, as getsockname() gives it.
    await _connect_and_check(loop, socket.AF_INET6, "::1", lambda address: address)


@pytest.mark.asyncio
async def test_sock_connect_ipv6_loopback_short_address():
    reason = _ipv6_loopback_available()
    if reason:
        pytest.skip(reason)
    loop = asyncio.get_running_loop()
    if _is_proactor_reference(loop):
        pytest.skip(PROACTOR_NO_RESOLVE)
    # The short (host, port) form; the accept reports the 4-tuple.
    await _connect_and_check(loop, socket.AF_INET6, "::1", lambda address: address[:2])


@pytest.mark.asyncio
async def test_sock_connect_resolves_a_hostname():
    loop = asyncio.get_running_loop()
    if _is_proactor_reference(loop):
        pytest.skip(PROACTOR_NO_RESOLVE)
    try:
        infos = socket.getaddrinfo("localhost", None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        pytest.skip(f"'localhost' does not resolve to IPv4 on this host: {exc}")
    host = infos[0][4][0]
    await _connect_and_check(loop, socket.AF_INET, host,
                             lambda address: ("localhost", address[1]))


@pytest.mark.asyncio
async def test_sock_connect_to_a_closed_port_is_refused():
    loop = asyncio.get_running_loop()
    # A bound socket that does not listen holds the port: connecting is refused.
    with socket.socket() as holder, _client() as sock:
        holder.bind(("127.0.0.1", 0))
        with pytest.raises(ConnectionRefusedError):
            await _bounded(loop.sock_connect(sock, holder.getsockname()))
    await _assert_no_pending_ops(loop)


def _stalled_listener():
    """(listener, fillers) such that a further connect to the listener stays
    pending (a full accept queue drops SYNs), or None where the host does not
    behave like that."""
    listener = _listener(backlog=0)
    address = listener.getsockname()
    fillers = []
    try:
        for _ in range(16):
            probe = _client()
            probe.connect_ex(address)
            # Wait for the probe's connect to finish, with plain select().
            _, writable, _ = select.select([], [probe], [], 0.3)
            if not writable:
                probe.close()
                return listener, fillers
            fillers.append(probe)
    except BaseException:
        for s in fillers:
            s.close()
        listener.close()
        raise
    for s in fillers:
        s.close()
    listener.close()
    return None


@pytest.mark.asyncio
async def test_sock_connect_times_out_under_wait_for():
    loop = asyncio.get_running_loop()
    stalled = _stalled_listener()
    if stalled is None:
        pytest.skip("the host completes connects beyond a full accept queue, so no connect "
                    "can be made to stay pending deterministically")
    listener, fillers = stalled
    try:
        with _client() as sock:
            start = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(loop.sock_connect(sock, listener.getsockname()), 0.2)
            assert time.monotonic() - start < TIMEOUT
            await _assert_no_pending_ops(loop)
        # The loop is still fine: a fresh connect to a free listener works.
        await _connect_and_check(loop, socket.AF_INET, "127.0.0.1", lambda address: address)
    finally:
        for s in fillers:
            s.close()
        listener.close()


# -- receiving ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sock_recv_returns_empty_bytes_at_eof(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    b.sendall(b"tail")
    b.shutdown(socket.SHUT_WR)
    assert await _recv_exactly(loop, a, 4) == b"tail"
    assert await _bounded(loop.sock_recv(a, 10)) == b""
    assert await _bounded(loop.sock_recv(a, 10)) == b""   # EOF stays EOF
    buf = bytearray(4)
    assert await _bounded(loop.sock_recv_into(a, buf)) == 0


@pytest.mark.asyncio
async def test_pending_sock_recv_sees_eof(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    task = asyncio.ensure_future(loop.sock_recv(a, 10))
    await until_op_pending(task, loop)
    b.shutdown(socket.SHUT_WR)
    assert await _bounded(task) == b""


@pytest.mark.asyncio
async def test_sock_recv_returns_what_is_there_without_filling_n(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    task = asyncio.ensure_future(loop.sock_recv(a, 1000))
    await until_op_pending(task, loop)
    b.sendall(b"short")
    assert await _bounded(task) == b"short"


@pytest.mark.asyncio
async def test_sock_recv_into_bytearray(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    buf = bytearray(16)
    b.sendall(b"hello")
    assert await _bounded(loop.sock_recv_into(a, buf)) == 5
    assert buf == b"hello" + bytes(11)
    # And while waiting.
    task = asyncio.ensure_future(loop.sock_recv_into(a, buf))
    await until_op_pending(task, loop)
    b.sendall(b"world!")
    assert await _bounded(task) == 6
    assert buf == b"world!" + bytes(10)


@pytest.mark.asyncio
async def test_sock_recv_into_memoryview_slices(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    backing = bytearray(b"." * 12)
    b.sendall(b"ABCDEFGH")
    # A 4-byte window in the middle: only it is written, the rest stays queued.
    assert await _bounded(loop.sock_recv_into(a, memoryview(backing)[3:7])) == 4
    assert backing == bytearray(b"...ABCD.....")
    assert await _bounded(loop.sock_recv_into(a, memoryview(backing)[8:])) == 4
    assert backing == bytearray(b"...ABCD.EFGH")
    # A pending receive into a slice of a slice.
    view = memoryview(backing)[2:10]
    task = asyncio.ensure_future(loop.sock_recv_into(a, view[1:3]))
    await until_op_pending(task, loop)
    b.sendall(b"xy")
    assert await _bounded(task) == 2
    assert backing == bytearray(b"...xyCD.EFGH")


@pytest.mark.asyncio
@pytest.mark.parametrize("make_buffer", [lambda: b"12345678", lambda: memoryview(b"12345678")[2:]],
                         ids=["bytes", "memoryview-of-bytes"])
async def test_sock_recv_into_a_read_only_buffer_raises_and_consumes_nothing(pair, make_buffer):
    loop = asyncio.get_running_loop()
    if _is_proactor_reference(loop):
        pytest.skip(PROACTOR_READ_ONLY)
    a, b = pair
    b.sendall(b"hello")
    await asyncio.sleep(0.01)   # the data is there before the call
    with pytest.raises(TypeError):
        await _bounded(loop.sock_recv_into(a, make_buffer()))
    # The bytes are still there for the next call.
    assert await _recv_exactly(loop, a, 5, timeout=1.0) == b"hello"


# -- sending ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sock_sendall_large_payload_to_a_slow_reader(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    payload = random.Random(8).randbytes(BIG_SENDALL)
    digest = hashlib.sha256()
    received = [0]
    reader_error = []
    chunk, pause = (16 * 1024, 0.005) if IS_WINDOWS else (64 * 1024, 0.001)

    def slow_reader():
        try:
            b.settimeout(TIMEOUT * 4)
            time.sleep(0.05)   # let the sender fill every buffer first
            while True:
                data = b.recv(chunk)
                if not data:
                    return
                digest.update(data)
                received[0] += len(data)
                time.sleep(pause)
        except BaseException as exc:   # reported by the test below
            reader_error.append(exc)

    reader = threading.Thread(target=slow_reader, name="slow-reader", daemon=True)
    reader.start()
    try:
        result = await _bounded(loop.sock_sendall(a, payload), TIMEOUT * 6)
        if not _is_proactor_reference(loop):   # the Proactor returns a byte count
            assert result is None
        a.shutdown(socket.SHUT_WR)
    finally:
        await loop.run_in_executor(None, reader.join, TIMEOUT * 6)
    assert not reader.is_alive(), "the reader did not see EOF"
    assert not reader_error, reader_error
    assert received[0] == len(payload)
    assert digest.digest() == hashlib.sha256(payload).digest()


@pytest.mark.asyncio
async def test_sock_sendall_sends_exactly_a_memoryview_slice(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    backing = bytearray(b"0123456789")
    await _bounded(loop.sock_sendall(a, memoryview(backing)[2:7]))
    await _bounded(loop.sock_sendall(a, bytearray(b"!")))
    assert await _recv_exactly(loop, b, 6) == b"23456!"


@pytest.mark.asyncio
@pytest.mark.parametrize("empty", [b"", bytearray(), memoryview(b"abc")[1:1]],
                         ids=["bytes", "bytearray", "memoryview"])
async def test_sock_sendall_of_nothing_returns_at_once(pair, empty):
    loop = asyncio.get_running_loop()
    a, b = pair
    task = asyncio.ensure_future(loop.sock_sendall(a, empty))
    for _ in range(5):
        if task.done():
            break
        await asyncio.sleep(0)
    assert task.done(), "sock_sendall(b'') did not return within a few loop iterations"
    if not _is_proactor_reference(loop):   # the Proactor returns a byte count
        assert task.result() is None
    assert _nothing_to_read(b)
    await _assert_no_pending_ops(loop)


# -- cancellation ---------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into"])
async def test_cancelled_receive_leaves_nothing_behind(pair, method):
    loop = asyncio.get_running_loop()
    a, b = pair
    buf = bytearray(32)
    args = (a, 32) if method == "sock_recv" else (a, buf)
    task = asyncio.ensure_future(getattr(loop, method)(*args))
    await until_op_pending(task, loop)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await _bounded(task)
    await _assert_no_pending_ops(loop)
    assert buf == bytes(32), "a cancelled sock_recv_into wrote into the caller's buffer"
    b.sendall(b"next data")
    if method == "sock_recv":
        assert await _recv_exactly(loop, a, 9) == b"next data"
    else:
        assert await _bounded(loop.sock_recv_into(a, buf)) == 9
        assert buf[:9] == b"next data"


@pytest.mark.asyncio
async def test_cancelling_receives_while_data_arrives_loses_no_byte(pair, request):
    """Round after round a receive is waiting when data is sent and the
    receive is cancelled in the same loop iteration (or with a thread sending
    at the same moment).  Whatever the race decides, the bytes read by the
    un-cancelled calls and by the later calls are exactly the bytes sent, in
    order."""
    loop = asyncio.get_running_loop()
    _xfail_on_proactor_reference(request, loop)
    a, b = pair
    rng = random.Random(1234)
    sent = bytearray()
    received = bytearray()
    outcomes = {"cancelled": 0, "completed": 0}

    for i in range(RACE_ROUNDS):
        msg = bytes([i % 251]) * rng.randint(1, 300)
        variant = i % 4
        buf = bytearray(rng.choice([7, 64, 4096]))
        if variant == 2:
            view = memoryview(buf)
            task = asyncio.ensure_future(loop.sock_recv_into(a, view[1:]))
        else:
            task = asyncio.ensure_future(loop.sock_recv(a, len(buf)))
        await until_op_pending(task, loop)
        sender = None
        if variant in (0, 2):        # data first, then the cancel
            b.sendall(msg)
            task.cancel()
        elif variant == 1:           # the cancel first, then the data
            task.cancel()
            b.sendall(msg)
        else:                        # a thread sends while we cancel
            sender = threading.Thread(target=b.sendall, args=(msg,))
            sender.start()
            task.cancel()
        sent += msg
        try:
            result = await _bounded(task)
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
        else:
            outcomes["completed"] += 1
            received += buf[1:1 + result] if variant == 2 else result
        finally:
            if sender is not None:
                sender.join(TIMEOUT)
        # The rest of this round's bytes come from later calls, alternating kinds.
        while len(received) < len(sent):
            want = len(sent) - len(received)
            try:
                if i % 2:
                    data = await _bounded(loop.sock_recv(a, want))
                else:
                    into = bytearray(want)
                    data = into[:await _bounded(loop.sock_recv_into(a, into))]
            except asyncio.TimeoutError:
                pytest.fail(f"round {i} (variant {variant}): {want} byte(s) sent never "
                            f"arrived; outcomes so far {outcomes}")
            assert data, f"round {i}: unexpected EOF"
            received += data
        assert received == sent, f"round {i} (variant {variant}): bytes out of order"
    assert _nothing_to_read(a)
    assert sum(outcomes.values()) == RACE_ROUNDS
    await _assert_no_pending_ops(loop)


@pytest.mark.asyncio
async def test_receive_cancelled_after_its_data_came_loses_no_byte_under_load(pair, request):
    """A busy loop: many other completions are ready at the same time as the
    data of a receive that gets cancelled (as asyncio.timeout() or wait_for
    would), and the caller receives again at once.  The next receive must get
    that data, not wait for data that will never come."""
    loop = asyncio.get_running_loop()
    _xfail_on_proactor_reference(request, loop)
    a, b = pair
    c, d = _tcp_pair()
    flood = 600   # more completions than one wait of the loop hands out (256)
    try:
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await until_op_pending(task, loop)
        # Tasks that each send one byte on another connection: they start in
        # the next iteration, together with the rest of this test.
        senders = [asyncio.ensure_future(loop.sock_sendall(c, b"x")) for _ in range(flood)]
        await asyncio.sleep(0)   # the senders have started
        b.sendall(b"the data")
        task.cancel()
        await asyncio.sleep(0)   # the cancellation is delivered
        if not task.done():
            with pytest.raises(asyncio.CancelledError):
                await _bounded(task)
        if task.cancelled():
            # As code retrying after a timeout does: receive again at once.
            try:
                data = await _bounded(loop.sock_recv(a, 100), 1.0)
            except asyncio.TimeoutError:
                pytest.fail("the data of the cancelled receive never reached the next one")
        else:
            data = task.result()
        assert data == b"the data"
        await _bounded(asyncio.gather(*senders))
        assert await _recv_exactly(loop, d, flood) == b"x" * flood
        await _assert_no_pending_ops(loop)
    finally:
        c.close()
        d.close()


def _cancel_once_result_is_in(task):
    """Cancel task in the loop iteration in which the future it awaits got
    its result, before the task resumes: the moment asyncio drops that
    result (what a timeout firing at the same time does)."""
    loop = task.get_loop()

    def check():
        waiter = task._fut_waiter
        if task.done():
            return
        if waiter is not None and waiter.done() and not waiter.cancelled():
            task.cancel()
            return
        loop.call_soon(check)

    loop.call_soon(check)


RESULT_THEN_CANCEL_NO_REFERENCE = (
    "asyncio's loops drop a result that reached the future of a task cancelled before it "
    "resumed (the bytes are gone): iocploop puts it back for the next call; no reference")


@pytest.mark.asyncio(loop_factories=["iocploop"])
@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into", "sock_accept"])
async def test_a_result_that_came_just_before_the_cancel_goes_to_the_next_call(pair, method):
    # uvloop's test_sock_send_before_cancel under Wine, made deterministic:
    # the data (or connection) is in the caller's future, then the caller is
    # cancelled before it resumed.  The next call gets it.
    # (RESULT_THEN_CANCEL_NO_REFERENCE says why asyncio is not run.)
    loop = asyncio.get_running_loop()
    a, b = pair
    with _listener() as listener:
        buf = bytearray(16)
        call = {"sock_recv": lambda: loop.sock_recv(a, 16),
                "sock_recv_into": lambda: loop.sock_recv_into(a, buf),
                "sock_accept": lambda: loop.sock_accept(listener)}[method]
        task = asyncio.ensure_future(call())
        await until_op_pending(task, loop)
        _cancel_once_result_is_in(task)
        client = _client()
        if method == "sock_accept":
            client.connect_ex(listener.getsockname())
        else:
            b.sendall(b"in the future")
        with client:
            with pytest.raises(asyncio.CancelledError):
                await _bounded(task)
            if method == "sock_accept":
                conn, peer = await _bounded(loop.sock_accept(listener))
                with conn:
                    assert peer == client.getsockname()
            else:
                assert await _recv_exactly(loop, a, 13) == b"in the future"
        await _assert_no_pending_ops(loop)


@pytest.mark.asyncio
async def test_cancelled_sock_accept_loses_no_connection():
    loop = asyncio.get_running_loop()
    with _listener() as listener:
        address = listener.getsockname()
        task = asyncio.ensure_future(loop.sock_accept(listener))
        await until_op_pending(task, loop)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await _bounded(task)
        await _assert_no_pending_ops(loop)
        with _client() as client:
            client.connect_ex(address)
            conn, peer = await _bounded(loop.sock_accept(listener))
            with conn:
                assert peer == client.getsockname()
                assert conn.getpeername() == client.getsockname()


@pytest.mark.asyncio
async def test_cancelling_sock_accept_while_a_client_connects_loses_no_connection(request):
    loop = asyncio.get_running_loop()
    _xfail_on_proactor_reference(request, loop)
    rounds = 10 if IS_WINDOWS else 40
    with _listener() as listener:
        address = listener.getsockname()
        for i in range(rounds):
            task = asyncio.ensure_future(loop.sock_accept(listener))
            await until_op_pending(task, loop)
            with _client() as client:
                if i % 2:
                    client.connect_ex(address)
                    task.cancel()
                else:
                    task.cancel()
                    client.connect_ex(address)
                try:
                    conn, peer = await _bounded(task)
                except asyncio.CancelledError:
                    try:
                        conn, peer = await _bounded(loop.sock_accept(listener))
                    except asyncio.TimeoutError:
                        pytest.fail(f"round {i}: the connection was lost")
                with conn:
                    assert peer == client.getsockname(), f"round {i}: another connection"
        await _assert_no_pending_ops(loop)


@pytest.mark.asyncio
async def test_accept_cancelled_after_its_connection_came_loses_nothing_under_load(request):
    """As the receive case above, for sock_accept: a connection that arrived
    for a cancelled accept reaches the next sock_accept, even when the loop is
    busy with many other completions at that moment."""
    loop = asyncio.get_running_loop()
    _xfail_on_proactor_reference(request, loop)
    c, d = _tcp_pair()
    flood = 600   # more completions than one wait of the loop hands out (256)
    with _listener() as listener, _client() as client:
        try:
            task = asyncio.ensure_future(loop.sock_accept(listener))
            await until_op_pending(task, loop)
            senders = [asyncio.ensure_future(loop.sock_sendall(c, b"x")) for _ in range(flood)]
            await asyncio.sleep(0)   # the senders have started
            client.connect_ex(listener.getsockname())
            task.cancel()
            await asyncio.sleep(0)   # the cancellation is delivered
            if not task.done():
                with pytest.raises(asyncio.CancelledError):
                    await _bounded(task)
            if task.cancelled():
                try:
                    conn, peer = await _bounded(loop.sock_accept(listener), 1.0)
                except asyncio.TimeoutError:
                    pytest.fail("the connection of the cancelled accept never reached the "
                                "next sock_accept")
            else:
                conn, peer = task.result()
            with conn:
                assert peer == client.getsockname()
            await _bounded(asyncio.gather(*senders))
            assert await _recv_exactly(loop, d, flood) == b"x" * flood
            await _assert_no_pending_ops(loop)
        finally:
            c.close()
            d.close()
            if is_iocploop_loop(loop) and listener in loop._stashes:
                # A connection left behind by the failure this test looks for.
                for conn, _ in loop._stashes[listener].accepted:
                    conn.close()


@pytest.mark.asyncio
async def test_sock_accept_returns_a_non_blocking_socket_and_the_peer_address():
    loop = asyncio.get_running_loop()
    with _listener() as listener, _client() as client:
        connect = asyncio.ensure_future(loop.sock_connect(client, listener.getsockname()))
        conn, peer = await _bounded(loop.sock_accept(listener))
        await _bounded(connect)
        with conn:
            assert conn.gettimeout() == 0.0
            assert conn.getblocking() is False
            assert conn.family == listener.family
            assert conn.type == socket.SOCK_STREAM
            assert peer == client.getsockname()
            assert conn.getsockname() == listener.getsockname()
            client.sendall(b"over the accepted socket")
            assert await _recv_exactly(loop, conn, 24) == b"over the accepted socket"


# -- errors ---------------------------------------------------------------------------


async def _call(loop, method, sock, target_address=("127.0.0.1", 9)):
    if method == "sock_recv":
        return await loop.sock_recv(sock, 10)
    if method == "sock_recv_into":
        return await loop.sock_recv_into(sock, bytearray(10))
    if method == "sock_sendall":
        return await loop.sock_sendall(sock, b"data")
    if method == "sock_connect":
        return await loop.sock_connect(sock, target_address)
    return await loop.sock_accept(sock)


@pytest.mark.asyncio
@pytest.mark.parametrize("method", SOCK_METHODS)
async def test_closed_socket_raises_oserror(method):
    loop = asyncio.get_running_loop()
    if method == "sock_accept":
        sock = _listener()
    elif method == "sock_connect":
        sock = _client()
    else:
        sock, other = _tcp_pair()
        other.close()
    sock.close()
    with pytest.raises(OSError):
        await _bounded(_call(loop, method, sock))
    await _assert_no_pending_ops(loop)


@pytest.mark.asyncio
@pytest.mark.parametrize("method", SOCK_METHODS)
async def test_blocking_socket_in_debug_mode_raises_value_error(method):
    loop = asyncio.get_running_loop()
    if IS_WINDOWS and not is_iocploop_loop(loop):
        pytest.skip(PROACTOR_SKIPS_CHECKS)
    a, b = _tcp_pair()
    listener = _listener()
    sock = listener if method == "sock_accept" else (_client() if method == "sock_connect" else a)
    sock.setblocking(True)
    was_debug = loop.get_debug()
    loop.set_debug(True)
    try:
        with pytest.raises(ValueError, match="non-blocking"):
            await _bounded(_call(loop, method, sock, listener.getsockname()))
    finally:
        loop.set_debug(was_debug)
        for s in (a, b, listener, sock):
            s.close()
    await _assert_no_pending_ops(loop)


@pytest.mark.asyncio
@pytest.mark.parametrize("method", SOCK_METHODS)
async def test_ssl_socket_is_rejected(method):
    ssl = pytest.importorskip("ssl", reason="Python was built without the ssl module")
    loop = asyncio.get_running_loop()
    if IS_WINDOWS and not is_iocploop_loop(loop):
        pytest.skip(PROACTOR_SKIPS_CHECKS)
    context = ssl.create_default_context()
    with context.wrap_socket(socket.socket(), server_hostname="localhost",
                             do_handshake_on_connect=False) as sock:
        sock.setblocking(False)
        with pytest.raises(TypeError, match="(?i)ssl"):
            await _bounded(_call(loop, method, sock))
    await _assert_no_pending_ops(loop)


async def _reset_outcome(when: str) -> str:
    """What sock_recv makes of a peer that resets (SO_LINGER 0 + close), on the
    running loop: the exception's class name, or "eof"."""
    loop = asyncio.get_running_loop()
    a, b = _tcp_pair()
    try:
        _linger_zero(b)
        if when == "pending":
            task = asyncio.ensure_future(loop.sock_recv(a, 100))
            await until_op_pending(task, loop)
            b.close()
        else:
            b.close()
            await asyncio.sleep(0.05)   # the RST arrives before the call
            task = asyncio.ensure_future(loop.sock_recv(a, 100))
        try:
            data = await _bounded(task)
        except OSError as exc:
            return type(exc).__name__
        return "eof" if data == b"" else f"data {data!r}"
    finally:
        a.close()
        b.close()


def _reference_outcome(when: str) -> str:
    """The same scenario on stock asyncio, in a thread of its own."""
    ref_loop = asyncio.new_event_loop()
    try:
        return ref_loop.run_until_complete(_reset_outcome(when))
    finally:
        ref_loop.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("when", ["pending", "before"])
async def test_peer_reset_outcome_matches_asyncio(when):
    loop = asyncio.get_running_loop()
    outcome = await _reset_outcome(when)
    reference = await loop.run_in_executor(None, _reference_outcome, when)
    assert outcome in ("ConnectionResetError", "eof"), outcome
    assert outcome == reference, f"this loop: {outcome}; stock asyncio: {reference}"
    await _assert_no_pending_ops(loop)


PEER_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


@pytest.mark.asyncio
async def test_sock_sendall_to_a_closed_peer_eventually_fails(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    b.close()

    async def keep_sending():
        for _ in range(10_000):
            await loop.sock_sendall(a, b"x" * 4096)
            await asyncio.sleep(0.001)
        return "never failed"

    with pytest.raises(PEER_GONE):
        await _bounded(keep_sending())
    await _assert_no_pending_ops(loop)


@pytest.mark.asyncio
async def test_blocked_sock_sendall_fails_when_the_peer_resets(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    # More than every socket buffer holds: with no reader, sock_sendall is stuck.
    task = asyncio.ensure_future(loop.sock_sendall(a, bytes(16 * 1024 * 1024)))
    await asyncio.sleep(0.2)
    if task.done():
        pytest.skip("this host's socket buffers hold 16 MiB: sock_sendall cannot be made "
                    "to block")
    _linger_zero(b)
    b.close()
    with pytest.raises(PEER_GONE):
        await _bounded(task)
    await _assert_no_pending_ops(loop)


@pytest.mark.asyncio
async def test_recv_right_after_cancelling_a_pending_recv_gets_the_data():
    if IS_WINDOWS and not isinstance(asyncio.get_running_loop(), iocploop.Loop):
        pytest.skip("asyncio's ProactorEventLoop loses the bytes a cancelled overlapped "
                    "receive already took (CPython bpo-33694): no reference behaviour")
    # The data reaches the kernel's pending receive, the task is cancelled
    # and a new sock_recv starts in the same step, before the cancelled
    # future's callbacks ran: the new call must find the bytes (uvloop's
    # test_sock_send_before_cancel).
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    with a, b:
        pending = asyncio.ensure_future(loop.sock_recv(a, 1))
        await asyncio.sleep(0.01)
        b.send(b"1")   # the kernel hands it to the pending receive
        pending.cancel()
        assert await asyncio.wait_for(loop.sock_recv(a, 1), 5) == b"1"


SELECTOR_TAKES_FIRST = (
    "asyncio's selector loop tries a new sock_recv at once, before the reader callback of "
    "the receive that waited since earlier: the later call takes the first bytes (and the "
    "earlier one waits for more); no reference for kernel order on Linux")


@pytest.mark.asyncio
@pytest.mark.parametrize("second", ["sock_recv", "sock_recv_into"])
async def test_receives_on_one_socket_complete_in_the_order_they_were_made(second):
    """A receive waits on a socket; its data comes while the loop is busy, with
    more behind it; a second receive is made then (Windows: it finishes inside
    its submit call, the socket skipping the completion port on success).
    On both Windows loops the first gets the first bytes.  iocploop also
    completes them in that order (the core places what finished at once
    after the packets of earlier operations: handing it out first would
    resolve the second first); asyncio's proactor resolves an overlapped
    operation that finished at once inside its call, so its second receive
    resolves first (not asserted for it)."""
    loop = asyncio.get_running_loop()
    if not IS_WINDOWS and not is_iocploop_loop(loop):
        pytest.skip(SELECTOR_TAKES_FIRST)
    a, b = _tcp_pair()
    with a, b:
        order = []

        async def receive(name, call):
            data = await call
            order.append(name)
            return data

        buf = bytearray(100)
        first = asyncio.ensure_future(receive("first", loop.sock_recv(a, 5)))
        for _ in range(3):
            await asyncio.sleep(0)   # the first receive is posted and waits
        b.send(b"12345abcdef")
        time.sleep(0.3)   # the loop is busy: the first receive completes meanwhile
        call = loop.sock_recv(a, 100) if second == "sock_recv" else loop.sock_recv_into(a, buf)
        later = asyncio.ensure_future(receive("second", call))
        got_first, got_second = await asyncio.wait_for(asyncio.gather(first, later), TIMEOUT)
        if second == "sock_recv_into":
            got_second = bytes(buf[:got_second])
        assert (got_first, got_second) == (b"12345", b"abcdef")
        if is_iocploop_loop(loop):
            assert order == ["first", "second"]
