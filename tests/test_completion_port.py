"""The completion port under the loop (iocploop only): operations, cancellation,
buffer lifetime, closing, errors, and its integration with the loop."""
from __future__ import annotations

import array
import asyncio
import gc
import socket
import time
import warnings
import weakref

import pytest

import iocploop
from iocploop._port import BACKEND, ERR_CANCELLED, CompletionPort, Operation
from _helpers import IS_WINDOWS, TIMEOUT, poll_until, recv_all_nonblocking, socketpair
from _tcp_helpers import tcp_pair


@pytest.fixture
def pair():
    a, b = socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_backend_name():
    assert BACKEND == ("iocp" if IS_WINDOWS else "io_uring")
    assert ERR_CANCELLED < 0


def test_recv_send_roundtrip(port, pair):
    a, b = pair
    done = []
    buf = bytearray(64)
    rop = port.recv(a, buf, done.append)
    assert isinstance(rop, Operation)
    assert rop.kind == "recv" and not rop.done and rop.result is None
    assert port.pending == 1
    sop = port.send(b, b"hello, port", done.append)
    assert sop.kind == "send"
    assert poll_until(port, lambda: len(done) == 2)
    assert set(done) == {rop, sop}
    assert rop.done and sop.done
    assert sop.result == len(b"hello, port")
    assert rop.result == len(b"hello, port")
    assert bytes(buf[:rop.result]) == b"hello, port"
    assert not rop.cancelled and rop.error is None
    assert port.pending == 0


def test_recv_gets_data_sent_by_plain_socket(port, pair):
    a, b = pair
    done = []
    buf = bytearray(16)
    port.recv(a, buf, done.append)
    b.sendall(b"abc")
    assert poll_until(port, lambda: done)
    assert done[0].result == 3 and bytes(buf[:3]) == b"abc"


def test_send_is_readable_by_plain_socket(port, pair):
    a, b = pair
    done = []
    port.send(a, b"xyz" * 10, done.append)
    assert poll_until(port, lambda: done)
    assert done[0].result == 30
    assert recv_all_nonblocking(b, 30) == b"xyz" * 10


def test_recv_memoryview_slice(port, pair):
    a, b = pair
    done = []
    backing = bytearray(b"." * 10)
    port.recv(a, memoryview(backing)[2:6], done.append)
    port.send(b, b"ABCDEFGH", done.append)
    assert poll_until(port, lambda: len(done) == 2)
    rop = next(op for op in done if op.kind == "recv")
    assert rop.result == 4
    assert backing == bytearray(b"..ABCD....")
    assert recv_all_nonblocking(a, 4) == b"EFGH"


def test_recv_sees_orderly_shutdown_as_zero(port, pair):
    a, b = pair
    done = []
    port.recv(a, bytearray(8), done.append)
    b.shutdown(socket.SHUT_WR)
    assert poll_until(port, lambda: done)
    assert done[0].result == 0


def test_cancel_recv_without_data(port, pair):
    a, b = pair
    done = []
    op = port.recv(a, bytearray(8), done.append)
    port.poll(0)   # let the kernel start it
    assert port.cancel(op) is True
    assert poll_until(port, lambda: done)
    assert done == [op]
    assert op.cancelled
    assert op.result == ERR_CANCELLED
    assert isinstance(op.error, OSError)
    assert port.pending == 0
    # Cancelling again, after completion, is a no-op.
    assert port.cancel(op) is False


def test_cancel_before_any_poll(port, pair):
    a, b = pair
    done = []
    op = port.recv(a, bytearray(8), done.append)
    port.cancel(op)
    assert poll_until(port, lambda: done)
    assert op.cancelled


def test_cancel_while_data_races_in_loses_no_byte(port, pair):
    """Data arriving around a cancellation: either the op gets it, or the op
    is cancelled and the data is still in the socket.  The send is placed
    before the cancel, right after it, and from another thread."""
    import threading

    a, b = pair
    outcomes = {"data": 0, "cancelled": 0}
    for i in range(45):
        msg = f"msg-{i:03d}".encode()
        done = []
        buf = bytearray(64)
        op = port.recv(a, buf, done.append)
        port.poll(0)
        variant = i % 3
        sender = None
        if variant == 0:
            b.sendall(msg)
            port.cancel(op)
        elif variant == 1:
            port.cancel(op)
            port.poll(0)   # the cancel reaches the kernel first
            b.sendall(msg)
        else:
            sender = threading.Thread(target=b.sendall, args=(msg,))
            sender.start()
            port.cancel(op)
        try:
            assert poll_until(port, lambda: done), f"round {i}: no completion"
        finally:
            if sender is not None:
                sender.join(TIMEOUT)
        if op.cancelled:
            outcomes["cancelled"] += 1
            # Then the data must still be waiting in the socket.
            assert recv_all_nonblocking(a, len(msg)) == msg, f"round {i}"
        else:
            outcomes["data"] += 1
            assert op.result == len(msg), (i, op.result)
            assert bytes(buf[:op.result]) == msg
    assert port.pending == 0
    assert sum(outcomes.values()) == 45


def test_pending_counts(port, pair):
    a, b = pair
    done = []
    ops = [port.recv(a, bytearray(4), done.append) for _ in range(5)]
    assert port.pending == 5
    port.send(b, b"1234", done.append)
    assert port.pending == 6
    assert poll_until(port, lambda: len(done) >= 2)
    assert port.pending == 4
    for op in ops:
        port.cancel(op)
    assert poll_until(port, lambda: len(done) == 6)
    assert port.pending == 0
    assert sum(1 for op in ops if op.cancelled) == 4


def test_buffer_is_held_while_pending_and_released_after(port, pair):
    a, b = pair
    done = []
    buf = array.array("b", bytes(64))
    ref = weakref.ref(buf)
    op = port.recv(a, buf, done.append)
    del buf
    gc.collect()
    assert ref() is not None, "the port must keep the buffer alive while the kernel may write it"
    port.cancel(op)
    assert poll_until(port, lambda: done)
    assert op.cancelled
    del op
    done.clear()
    gc.collect()
    assert ref() is None, "the buffer leaked after its operation completed"


def test_buffer_kept_alive_receives_data_after_references_dropped(port, pair):
    a, b = pair
    done = []
    buf = array.array("b", bytes(8))
    ref = weakref.ref(buf)
    port.recv(a, buf, done.append)
    del buf
    gc.collect()
    b.sendall(b"\x01\x02\x03")
    assert poll_until(port, lambda: done)
    assert done[0].result == 3
    assert ref() is not None and list(ref()[:3]) == [1, 2, 3]
    done.clear()
    gc.collect()
    assert ref() is None


def test_close_with_pending_operations(pair):
    a, b = pair
    port = CompletionPort()
    done = []
    bufs = [array.array("b", bytes(32)) for _ in range(4)]
    refs = [weakref.ref(x) for x in bufs]
    ops = [port.recv(a, x, done.append) for x in bufs]
    del bufs
    port.poll(0)
    port.close()
    assert port.closed
    assert port.pending == 0
    assert all(op.done for op in ops)
    assert all(op.cancelled for op in ops)
    # Callbacks of ops pending at close are not run.
    assert done == []
    del ops
    gc.collect()
    assert all(r() is None for r in refs), "buffers of closed-port operations were not released"
    port.close()   # idempotent


def test_close_with_pending_send_and_recv_then_socket_still_usable(pair):
    a, b = pair
    port = CompletionPort()
    port.recv(a, bytearray(8), lambda op: None)
    port.close()
    # The socket itself is untouched: plain I/O still works.
    b.sendall(b"after")
    assert recv_all_nonblocking(a, 5) == b"after"


def test_operations_on_closed_port_raise(pair):
    a, b = pair
    port = CompletionPort()
    op = port.recv(a, bytearray(4), lambda op: None)
    port.close()
    with pytest.raises(RuntimeError, match="closed"):
        port.recv(a, bytearray(4), lambda op: None)
    with pytest.raises(RuntimeError, match="closed"):
        port.send(b, b"x", lambda op: None)
    with pytest.raises(RuntimeError, match="closed"):
        port.select(0)
    with pytest.raises(RuntimeError, match="closed"):
        port.stats()
    with pytest.raises(RuntimeError, match="closed"):
        port.extensions(a)
    # cancel of an op that the close already finished: nothing to do.
    assert port.cancel(op) is False
    port.wakeup()   # documented as safe after close


def test_recv_into_read_only_buffer_raises(port, pair):
    a, b = pair
    for ro in (b"immutable", memoryview(b"immutable"), memoryview(bytearray(8)).toreadonly()):
        with pytest.raises((TypeError, BufferError)):
            port.recv(a, ro, lambda op: None)
    assert port.pending == 0
    with pytest.raises(TypeError):
        port.recv(a, "not a buffer", lambda op: None)
    with pytest.raises(TypeError):
        port.send(a, "str is not bytes", lambda op: None)
    assert port.pending == 0


def test_recv_on_closed_socket_raises(port):
    a, b = socketpair()
    a.close()
    b.close()
    with pytest.raises(OSError):
        port.recv(a, bytearray(4), lambda op: None)
    with pytest.raises(OSError):
        port.send(b, b"x", lambda op: None)
    assert port.pending == 0


def test_send_to_closed_peer_fails_cleanly(port, pair):
    """A send to a closed peer fails either at submission (Wine's Winsock
    reports the reset at once: OSError raised, no completion follows) or
    through its completion (io_uring, Windows when already pending)."""
    a, b = pair
    b.close()
    failure = None
    for _ in range(50):   # the first sends may still land in the buffer
        done = []
        try:
            port.send(a, b"x" * 1024, done.append)
        except OSError as exc:
            failure = exc
            assert port.pending == 0   # nothing left behind by a refused submit
            break
        assert poll_until(port, lambda: done)
        if done[0].result < 0:
            assert not done[0].cancelled
            failure = done[0].error
            break
    assert isinstance(failure, OSError), "sending to a closed peer never failed"
    assert failure.errno is not None


@pytest.mark.parametrize("queue_depth", [8, 256])
def test_many_concurrent_operations_account_for_every_byte(queue_depth):
    """200 recv + 200 send in flight at once, also through a queue far smaller
    than that (submissions then flush while they are being made)."""
    port = CompletionPort(queue_depth)
    pairs = [socketpair() for _ in range(20)]
    try:
        per_pair = 10
        size = 100
        results = []
        bufs = []
        for pi, (a, b) in enumerate(pairs):
            for k in range(per_pair):
                buf = bytearray(size)
                bufs.append((pi, buf))
                port.recv(a, buf, results.append)
        for pi, (a, b) in enumerate(pairs):
            for k in range(per_pair):
                payload = bytes([pi]) * size
                port.send(b, payload, results.append)
        total_ops = 2 * len(pairs) * per_pair
        assert port.pending == total_ops
        assert poll_until(port, lambda: len(results) == total_ops, timeout=30)
        assert port.pending == 0
        sent = sum(op.result for op in results if op.kind == "send")
        received = sum(op.result for op in results if op.kind == "recv")
        assert all(op.result >= 0 for op in results), [op for op in results if op.result < 0]
        assert sent == len(pairs) * per_pair * size
        # recv may return short reads; whatever did not arrive yet is still queued.
        leftover = 0
        for a, b in pairs:
            while True:
                try:
                    chunk = a.recv(65536)
                except BlockingIOError:
                    break
                leftover += len(chunk)
                if not chunk:
                    break
        assert received + leftover == sent
        # Every recv'd byte belongs to the pair it was received on.
        recv_ops = [op for op in results if op.kind == "recv"]
        for op in recv_ops:
            pi = next(p for p, buf in bufs if buf is op.buffer)
            assert bytes(op.buffer[:op.result]) == bytes([pi]) * op.result
    finally:
        port.close()
        for a, b in pairs:
            a.close()
            b.close()


@pytest.mark.parametrize("queue_depth", [8, 256])
def test_close_with_more_pending_operations_than_the_queue_holds(queue_depth):
    port = CompletionPort(queue_depth)
    pairs = [socketpair() for _ in range(30)]
    try:
        refs = []
        ops = []
        for a, _ in pairs:
            for _ in range(10):
                buf = array.array("b", bytes(16))
                refs.append(weakref.ref(buf))
                ops.append(port.recv(a, buf, lambda op: None))
        del buf
        port.poll(0)
        assert port.pending == 300
        t0 = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)   # nothing may be abandoned
            port.close()
        assert time.monotonic() - t0 < TIMEOUT
        assert all(op.done and op.cancelled for op in ops)
        del ops
        gc.collect()
        assert sum(r() is not None for r in refs) == 0
    finally:
        port.close()
        for a, b in pairs:
            a.close()
            b.close()


def test_stats_counters_move(port, pair):
    a, b = pair
    before = port.stats()
    assert {"submitted", "completed", "cancels", "waits", "in_flight"} <= set(before)
    done = []
    op = port.recv(a, bytearray(4), done.append)
    assert port.stats()["submitted"] == before["submitted"] + 1
    assert port.stats()["in_flight"] == before["in_flight"] + 1
    port.cancel(op)
    assert poll_until(port, lambda: done)
    port.send(b, b"ab", done.append)
    assert poll_until(port, lambda: len(done) == 2)
    after = port.stats()
    assert after["submitted"] == before["submitted"] + 2
    assert after["completed"] == before["completed"] + 2
    assert after["cancels"] == before["cancels"] + 1
    assert after["waits"] > before["waits"]
    assert after["in_flight"] == before["in_flight"]


def test_select_timeout_without_work(port):
    t0 = time.monotonic()
    assert port.select(0.05) == 0
    assert 0.02 <= time.monotonic() - t0 < TIMEOUT
    assert port.select(0) == 0
    assert port.poll(0) == 0


def test_wakeup_interrupts_select(port):
    import threading

    timer = threading.Timer(0.05, port.wakeup)
    t0 = time.monotonic()
    timer.start()
    try:
        port.select(10)
    finally:
        timer.join(TIMEOUT)
    assert time.monotonic() - t0 < 3.0


def test_extensions(port, pair):
    a, b = pair
    ext = port.extensions(a)
    assert isinstance(ext, frozenset)
    if IS_WINDOWS:
        # Every provider we target has these (Microsoft's and Wine's).
        assert {"AcceptEx", "ConnectEx", "GetAcceptExSockaddrs", "TransmitFile",
                "DisconnectEx", "WSARecvMsg", "WSASendMsg"} <= ext
        if _running_under_wine():
            # Wine's provider has no TransmitPackets (docs/windows-under-wine.md, W1):
            # a gap detected, not a crash.
            assert "TransmitPackets" not in ext
        # Loaded once per provider: the second socket's answer is the cached one.
        assert port.extensions(b) == ext
    else:
        assert ext == frozenset()


def _running_under_wine() -> bool:
    import ctypes

    return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")


def test_operation_repr(port, pair):
    a, b = pair
    done = []
    op = port.recv(a, bytearray(4), done.append)
    assert "pending" in repr(op) and "recv" in repr(op)
    port.cancel(op)
    assert poll_until(port, lambda: done)
    assert f"result={ERR_CANCELLED}" in repr(op)


# -- the port inside a running loop --------------------------------------------


@pytest.mark.asyncio(loop_factories=["iocploop"])
async def test_loop_dispatches_completions():
    ev_loop = asyncio.get_running_loop()
    port = ev_loop._port
    a, b = socketpair()
    try:
        fut = ev_loop.create_future()
        buf = bytearray(32)

        def on_recv(op):
            assert asyncio.get_running_loop() is ev_loop
            fut.set_result(op.result)

        port.recv(a, buf, on_recv)
        assert "pending_ops=1" in repr(ev_loop)
        ev_loop.call_later(0.02, b.send, b"via loop")
        n = await asyncio.wait_for(fut, TIMEOUT)
        assert bytes(buf[:n]) == b"via loop"
        assert port.pending == 0
    finally:
        a.close()
        b.close()


@pytest.mark.asyncio(loop_factories=["iocploop"])
async def test_completion_callback_exception_goes_to_handler():
    ev_loop = asyncio.get_running_loop()
    seen = []
    ev_loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
    a, b = socketpair()
    try:
        def bad(op):
            raise ValueError("completion callback failed")

        port = ev_loop._port
        port.recv(a, bytearray(8), bad)
        port.send(b, b"x", lambda op: None)
        for _ in range(500):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert len(seen) == 1
        assert isinstance(seen[0]["exception"], ValueError)
        assert "completion callback" in seen[0]["message"]
        # The loop keeps running.
        assert await asyncio.wait_for(asyncio.sleep(0, 1), TIMEOUT) == 1
    finally:
        ev_loop.set_exception_handler(None)
        a.close()
        b.close()


def test_loop_close_with_pending_operation_releases_buffer(pair):
    a, b = pair
    ev_loop = iocploop.new_event_loop()
    buf = array.array("b", bytes(16))
    ref = weakref.ref(buf)
    op = ev_loop._port.recv(a, buf, lambda op: None)
    del buf
    ev_loop.run_until_complete(asyncio.sleep(0))
    ev_loop.close()
    assert op.done and op.cancelled
    del op
    gc.collect()
    assert ref() is None


@pytest.mark.skipif(not IS_WINDOWS, reason="a socket belongs to one completion port on Windows only")
def test_socket_belongs_to_one_port_on_windows(pair):
    a, b = pair
    p1, p2 = CompletionPort(), CompletionPort()
    try:
        p1.associate(a)
        with pytest.raises(OSError, match="one event loop"):
            p2.associate(a)
    finally:
        p1.close()
        p2.close()


# -- KeyboardInterrupt must not lose completions ---------------------------------
#
# On Linux a SIGINT interrupts the wait, and Python runs its handler (raising
# KeyboardInterrupt) as soon as the wait returns -- possibly after the core
# has already taken completions off the kernel's queue.  Like asyncio, whose
# ready callbacks stay queued when one raises KeyboardInterrupt, the loop must
# deliver those completions on its next run.


async def _until_true(predicate):
    while not predicate():
        await asyncio.sleep(0.005)


def test_keyboardinterrupt_in_completion_callback_keeps_the_rest_of_the_batch(iocp_loop):
    pairs = [socketpair() for _ in range(3)]
    try:
        port = iocp_loop._port
        delivered = []
        raised = []

        def callback(op):
            if not raised:
                raised.append(op)
                raise KeyboardInterrupt   # e.g. a Ctrl+C landing in this callback
            delivered.append(op)

        ops = [port.recv(a, bytearray(8), callback) for a, _ in pairs]
        for _, b in pairs:
            b.send(b"data")
        time.sleep(0.05)   # data is there: all three complete in the first wait
        with pytest.raises(KeyboardInterrupt):
            iocp_loop.run_until_complete(asyncio.sleep(1))
        assert len(raised) == 1
        iocp_loop.run_until_complete(asyncio.wait_for(
            _until_true(lambda: len(delivered) == 2), 2.0))
        assert {id(op) for op in delivered + raised} == {id(op) for op in ops}
        assert port.pending == 0
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_a_batch_taken_but_not_dispatched_is_returned_first(port, pair):
    """Python's SIGINT handler may raise KeyboardInterrupt right after the
    kernel wait returned a batch, before any of it is dispatched (the real
    window on Linux; the compiled loop's iteration calls this same wait).
    The next wait returns that batch again, at once, and nothing is lost."""
    a, b = pair
    got = []
    port.recv(a, bytearray(8), got.append)
    b.send(b"data")
    assert port.select(TIMEOUT) == 1
    # (the KeyboardInterrupt would strike here)
    start = time.monotonic()
    assert port.select(30) == 1, "the batch taken by the first wait was dropped"
    assert time.monotonic() - start < 5, "the second wait blocked instead of returning the batch"
    port.run_completed(_reraise_error)
    assert [op.result for op in got] == [4]
    assert port.pending == 0


def _reraise_error(op, exc):
    raise exc


def test_handle_numbers_only_where_they_are_safe(port, pair):
    """Linux takes a raw fd; Windows wants the socket object (it tracks which
    sockets are attached to the port, and handle numbers get reused)."""
    a, b = pair
    done = []
    if IS_WINDOWS:
        with pytest.raises(TypeError, match="socket object"):
            port.recv(a.fileno(), bytearray(8), done.append)
        assert port.pending == 0
    else:
        port.recv(a.fileno(), bytearray(8), done.append)
        b.send(b"fd")
        assert poll_until(port, lambda: done)
        assert done[0].result == 2


_CYCLIC_OPERATION = """
import gc, socket, sys
import iocploop
from _helpers import poll_until, socketpair
gc.disable()
loop = iocploop.new_event_loop()
port = loop._port
a, b = socketpair()
view = memoryview(bytearray(1000))[:500]   # a slice, as asyncio's sendfile fallback passes
done = []
op = port.send(a, view, done.append)
assert poll_until(port, lambda: done)
cycle = [op]
cycle.append(cycle)   # the operation in cyclic garbage, as a traceback can leave it
del op, view, done, cycle
gc.collect()
print("survived")
loop.close(); a.close(); b.close()
"""


def test_completed_operation_in_cyclic_garbage_is_collected_safely(tmp_path):
    """A completed operation no longer exports its buffer: CPython 3.11's
    collector crashed freeing an exported memoryview (found through asyncio's
    sendfile fallback on a broken socket)."""
    import os
    from _helpers import run_python

    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "cyclic_operation.py"
    script.write_text(f"import sys; sys.path.append({tests_dir!r})\n" + _CYCLIC_OPERATION)
    # Run from tmp_path: the repository's source tree must not shadow the built package.
    proc = run_python([str(script)], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "survived" in proc.stdout
    assert "BufferError" not in proc.stderr


@pytest.mark.parametrize("bound", [False, True], ids=["unbound", "bound"])
def test_connect_of_a_datagram_socket_uses_connect_not_connectex(port, bound):
    """A datagram socket is connected with connect() at once (Windows: no
    ConnectEx, which is documented for connection-oriented sockets only, and
    no binding to the wildcard address first); its operation completes with
    0 and the socket sends to the named peer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        server.bind(("127.0.0.1", 0))
        client.setblocking(False)
        if bound:
            client.bind(("127.0.0.1", 0))
        done = []
        op = port.connect(client, server.getsockname(), done.append)
        if IS_WINDOWS:
            # connect() ran inside the submit: the peer is named already.
            assert client.getpeername() == server.getsockname()
        assert poll_until(port, lambda: done)
        assert done == [op] and op.result == 0
        port.connected(client)
        assert client.getpeername() == server.getsockname()
        assert client.getsockname()[0] == "127.0.0.1"
        client.send(b"datagram")
        server.settimeout(TIMEOUT)
        assert server.recvfrom(64) == (b"datagram", client.getsockname())
        assert port.pending == 0


# -- failed submits the provider had started (Windows "strays") ----------------------------

class _Bufs(list):
    """A list of buffers that a weak reference can watch."""


def _failed_datagram_sends(port, count):
    """`count` sendmsg calls of a datagram too large for UDP (WSAEMSGSIZE at
    submission); returns weak references to each call's buffer list."""
    big = bytes(70_000)
    refs = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        b.setblocking(False)
        for _ in range(count):
            bufs = _Bufs([big])
            with pytest.raises(OSError) as info:
                port.sendmsg(b, bufs, a.getsockname(), lambda op: pytest.fail("a callback ran"))
            assert info.value.winerror == 10040   # WSAEMSGSIZE
            refs.append(weakref.ref(bufs))
            del bufs
    gc.collect()
    return refs


def _alive(refs) -> int:
    gc.collect()
    return sum(ref() is not None for ref in refs)


@pytest.mark.skipif(not IS_WINDOWS, reason="strays are submits a Windows provider started "
                    "and still failed; io_uring reports every failure as a completion")
def test_memory_of_a_failed_submit_is_kept_exactly_until_the_kernel_is_done(port):
    """A submit that fails after the provider started it (Wine refuses a
    WSASendTo with WSAEMSGSIZE after writing the OVERLAPPED, and queues a
    packet for it) keeps its memory until the core says the kernel is done
    with it, however many there are (a capped history used to drop the
    oldest); a plain refusal keeps nothing.  Then the memory goes, and no
    callback runs."""
    refs = _failed_datagram_sends(port, 4200)
    strays = port.stats()["strays"]
    assert _alive(refs) == strays, "kept memory does not match the strays in the core"
    if _running_under_wine():
        # Wine completes such a send and queues a packet for it after all
        # (docs/windows-under-wine.md, W8).
        assert strays == len(refs)
    if strays == 0:
        return   # a provider that leaves the OVERLAPPED alone (Windows' synchronous failure)
    assert poll_until(port, lambda: port.stats()["strays"] == 0), (
        f"the memory of {port.stats()['strays']} strays is still kept")
    assert _alive(refs) == 0, "memory of a stray outlived its packet"
    assert port.pending == 0 and port.stats()["in_flight"] == 0
    # The records came back: a normal round trip on the port still works.
    a, b = socketpair()
    with a, b:
        done = []
        port.recv(a, bytearray(4), done.append)
        b.send(b"ok")
        assert poll_until(port, lambda: done) and done[0].result == 2


@pytest.mark.skipif(not IS_WINDOWS, reason="strays are submits a Windows provider started "
                    "and still failed; io_uring reports every failure as a completion")
def test_close_waits_for_strays_then_lets_their_memory_go():
    port = CompletionPort()
    refs = _failed_datagram_sends(port, 50)
    strays = port.stats()["strays"]
    if _running_under_wine():
        assert strays == len(refs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        port.close()   # drains the stray packets: nothing is abandoned
    assert _alive(refs) == 0, f"{_alive(refs)} buffers of {strays} strays kept after close"


def test_port_closes_at_once_after_submits_refused_on_a_reset_connection(pair):
    """Sends to a closed peer: Wine refuses them at submission after writing
    a final status into the OVERLAPPED, and queues no packet.  Such a stray
    is done at once: its memory goes at the next wait, and closing the port
    does not wait for a packet that never comes (it waited its whole drain
    time, 5 s, and leaked the records)."""
    a, b = pair
    b.close()
    port = CompletionPort()
    refs = []
    refused = 0
    for _ in range(50):   # the first sends may still land in the buffer
        done = []
        data = _Bufs([b"x" * 1024])
        refs.append(weakref.ref(data))
        try:
            port.sendv(a, data, done.append)
        except OSError:
            refused += 1
            continue
        finally:
            del data
        assert poll_until(port, lambda: done)
        del done   # a completed operation still names its buffers
    port.poll(0)
    assert port.stats()["strays"] == 0
    assert _alive(refs) == 0
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        port.close()
    assert time.monotonic() - started < 2.0, "close waited for packets that never come"


# -- a cancellation the core cannot queue yet ----------------------------------------------

class _BusyCancels:
    """Stands in for the cffi lib: ioc_cancel answers EBUSY `times` times."""

    def __init__(self, lib, times):
        self._lib = lib
        self.busy_left = times
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._lib, name)

    def ioc_cancel(self, core, record, token):
        self.calls += 1
        if self.busy_left:
            self.busy_left -= 1
            return -16   # -EBUSY
        return self._lib.ioc_cancel(core, record, token)


@pytest.mark.skipif(IS_WINDOWS, reason="the IOCP core never refuses a cancellation "
                    "(CancelIoEx needs no queue slot); io_uring's can, with EBUSY")
def test_cancel_refused_with_ebusy_is_asked_again_and_never_raises(monkeypatch, pair):
    """io_uring refuses to queue a cancellation (EBUSY) while its rings are
    full.  Cancelling a sock_recv task runs port.cancel from the future's
    done-callback: it must not raise there (the loop's exception handler
    would get it and the receive would stay posted); the cancellation is
    asked again before the next wait."""
    import iocploop._port as port_module

    a, b = pair
    loop = iocploop.new_event_loop()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    busy = _BusyCancels(port_module.lib, times=2)
    try:
        async def scenario():
            task = asyncio.ensure_future(loop.sock_recv(a, 100))
            await asyncio.sleep(0)
            assert loop._port.pending == 1
            monkeypatch.setattr(port_module, "lib", busy)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(200):
                if loop._port.pending == 0:
                    break
                await asyncio.sleep(0.005)
            return loop._port.pending

        pending = loop.run_until_complete(asyncio.wait_for(scenario(), TIMEOUT))
        assert errors == [], errors
        assert busy.calls >= 3 and busy.busy_left == 0
        assert pending == 0, "the receive was never cancelled"
        # Nothing was lost: the next sock_recv gets the next bytes.
        b.send(b"after")
        assert loop.run_until_complete(asyncio.wait_for(loop.sock_recv(a, 100), TIMEOUT)) == (
            b"after")
    finally:
        monkeypatch.undo()
        loop.close()


# -- a send cut short by its cancellation ----------------------------------------------------

def _read_until_quiet(sock, quiet: float = 0.3) -> bytes:
    """Everything that arrives on a non-blocking socket until it stays quiet."""
    received = bytearray()
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        if not chunk:
            break
        received += chunk
        last = time.monotonic()
    return bytes(received)


@pytest.mark.parametrize("kind", [
    "send", "sendv",
    pytest.param("sendfile", marks=pytest.mark.skipif(
        not IS_WINDOWS, reason="the core's sendfile is TransmitFile (Windows)"))])
def test_cancelled_send_accounts_for_every_byte_that_left(port, kind, tmp_path):
    """A send too large for the socket buffers is cancelled while part of it
    has left: its result says how much left (a short send), never only
    "cancelled" -- the Windows core reported ERROR_OPERATION_ABORTED and
    dropped the count its packet carried (found by test_fuzz under Wine)."""
    a, b = tcp_pair(sndbuf=8192, rcvbuf=8192)
    with a, b:
        data = bytes(range(256)) * 1024   # 256 KiB
        done = []
        if kind == "send":
            op = port.send(a, data, done.append)
        elif kind == "sendv":
            op = port.sendv(a, [data[:1000], data[1000:]], done.append)
        else:
            path = tmp_path / "data.bin"
            path.write_bytes(data)
            f = open(path, "rb")
            op = port.sendfile(a, f, 0, len(data), done.append)
        poll_until(port, lambda: done, timeout=0.3)   # let the buffers fill
        port.cancel(op)
        assert poll_until(port, lambda: done)
        received = _read_until_quiet(b)
        if kind == "sendfile":
            f.close()
        if op.cancelled:
            assert received == b"", f"cancelled, yet {len(received)} bytes arrived"
        else:
            assert 0 < op.result < len(data)
            assert received == data[:op.result], (
                f"the send reports {op.result} bytes, {len(received)} arrived")
