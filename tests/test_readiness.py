"""Readiness callbacks: loop.add_reader / add_writer / remove_reader / remove_writer.

Linux: every test runs on iocploop and on stock asyncio (the selector loop,
the reference behaviour).  Windows: asyncio's ProactorEventLoop has no
readiness callbacks (NotImplementedError, asserted by
test_stock_proactor_has_no_readiness_callbacks), so the tests run on iocploop
alone there, against the selector loop's semantics.

Covered: a reader fires when data arrives and, level-triggered, once per loop
iteration for as long as data stays unread; a writer fires while the socket is
writable and stops when its buffer is full; removal from inside the callback;
remove_* returning True/False; re-adding replaces the callback (the old one is
never called again, even when it was already due); reader and writer on one
socket are independent; a socket object and its fileno() are the same
registration; closed sockets and closed loops; peer close; many sockets; a
callback that raises; invalid file objects; an idle loop woken by readiness;
a pipe (Linux).
"""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

import pytest

from _helpers import IS_LINUX, IS_WINDOWS, TIMEOUT, socketpair, until
from conftest import LOOP_FACTORIES

#: Async tests: twins on Linux, iocploop alone on Windows (no reference there).
TWIN = pytest.mark.asyncio(loop_factories=["iocploop"]) if IS_WINDOWS else pytest.mark.asyncio
READY_LOOPS = ["iocploop"] if IS_WINDOWS else ["iocploop", "asyncio"]

#: Socket pairs of the many-sockets test (Wine: each pair is a TCP connection).
PAIRS = 8 if IS_WINDOWS else 50
#: How long "nothing more happens" is watched for.
QUIET = 0.1


@pytest.fixture(params=READY_LOOPS, ids=READY_LOOPS)
def loop(request):
    """A fresh, not running loop (Windows: iocploop only); closed at teardown."""
    ev_loop = LOOP_FACTORIES[request.param]()
    try:
        yield ev_loop
    finally:
        if not ev_loop.is_closed():
            ev_loop.close()


@pytest.fixture
def pair():
    a, b = socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


async def settle(iterations: int = 5, quiet: float = QUIET) -> None:
    """Let the loop run a few iterations and some wall time."""
    for _ in range(iterations):
        await asyncio.sleep(0)
    await asyncio.sleep(quiet)
    for _ in range(iterations):
        await asyncio.sleep(0)


class Ticker:
    """Counts loop iterations: a callback that re-schedules itself with call_soon
    runs exactly once per iteration."""

    def __init__(self, loop):
        self.loop = loop
        self.count = 0
        self.running = True
        loop.call_soon(self._tick)

    def _tick(self):
        if self.running:
            self.count += 1
            self.loop.call_soon(self._tick)

    def stop(self):
        self.running = False


def drain(sock) -> int:
    total = 0
    while True:
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return total
        if not chunk:
            return total
        total += len(chunk)


def _readable(sock) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def fill(sock, cap: int = 32 << 20) -> int:
    """Send until the socket would block (or cap bytes: never loop for ever)."""
    total = 0
    chunk = b"x" * 65536
    while total < cap:
        try:
            total += sock.send(chunk)
        except (BlockingIOError, InterruptedError):
            break
    return total


# -- the reference on Windows -------------------------------------------------------


@pytest.mark.skipif(not IS_WINDOWS, reason="asyncio's ProactorEventLoop is Windows' stock loop")
def test_stock_proactor_has_no_readiness_callbacks():
    """The twin of every test below on Windows: the stock loop has no
    readiness callbacks at all, which is why they run on iocploop alone."""
    ref = asyncio.new_event_loop()
    a, b = socketpair()
    try:
        assert isinstance(ref, asyncio.ProactorEventLoop)
        for name, args in [("add_reader", (a, print)), ("add_writer", (a, print)),
                           ("remove_reader", (a,)), ("remove_writer", (a,))]:
            with pytest.raises(NotImplementedError):
                getattr(ref, name)(*args)
    finally:
        a.close()
        b.close()
        ref.close()


# -- readers ------------------------------------------------------------------------------


@TWIN
async def test_reader_fires_when_data_arrives_with_its_args(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    calls = []

    def on_readable(*args):
        calls.append((args, a.recv(100)))
        loop.remove_reader(a)

    loop.add_reader(a, on_readable, "x", 2)
    await settle()
    assert calls == [], "the reader fired before any data arrived"
    b.send(b"hello")
    await until(lambda: calls)
    await settle()
    assert calls == [(("x", 2), b"hello")]


@TWIN
async def test_readers_keep_firing_across_busy_and_idle_spells(pair):
    """A ping-pong keeps the readiness set busy (iocploop then asks its
    epoll set directly before each wait instead of through a ring poll), an
    idle spell lets the loop sleep (the ring poll is posted again), and a
    reader added while the set is busy fires too.  No wakeup is lost in
    either direction."""
    loop = asyncio.get_running_loop()
    a, b = pair
    c, d = socketpair()
    rounds = {"a": 0, "b": 0, "c": 0}
    states = set()
    poller = getattr(getattr(loop, "_readiness", None), "_poller", None)

    def echo(name, sock):
        def on_readable():
            if poller is not None:
                states.add("hot" if poller.hot else "cold")
            data = sock.recv(100)
            rounds[name] += 1
            if data and name != "c":
                sock.send(data)
        return on_readable

    try:
        loop.add_reader(a, echo("a", a))
        loop.add_reader(b, echo("b", b))
        a.send(b"ping")
        await until(lambda: rounds["a"] >= 100)
        loop.add_reader(c, echo("c", c))   # added while the ping-pong runs
        d.send(b"busy")
        await until(lambda: rounds["c"] == 1)
        await until(lambda: rounds["a"] >= 150)
        loop.remove_reader(a)                # the ping-pong ends
        loop.remove_reader(b)
        await asyncio.sleep(0.05)            # idle: the loop sleeps in its wait
        if poller is not None:
            assert not poller.hot and poller.armed
        d.send(b"after the idle spell")
        await until(lambda: rounds["c"] == 2)
        if poller is not None:
            assert states == {"hot", "cold"}, states
    finally:
        for sock in (a, b, c):
            loop.remove_reader(sock)
        c.close()
        d.close()


@TWIN
async def test_reader_is_level_triggered_one_call_per_iteration(pair):
    """While data stays unread the reader fires again, each time in a later
    iteration; once everything is read it stops."""
    loop = asyncio.get_running_loop()
    a, b = pair
    ticks = []
    ticker = Ticker(loop)

    def on_readable():
        ticks.append(ticker.count)
        assert a.recv(1)   # one byte per call: the rest stays unread

    try:
        b.send(b"12345")
        loop.add_reader(a, on_readable)
        await until(lambda: len(ticks) >= 5)
        await settle()
    finally:
        ticker.stop()
        removed = loop.remove_reader(a)
    assert len(ticks) == 5, f"{len(ticks)} calls for 5 bytes read one by one: {ticks}"
    assert all(x < y for x, y in zip(ticks, ticks[1:])), \
        f"two calls in one loop iteration (iteration numbers {ticks})"
    assert removed is True


@TWIN
async def test_unread_data_keeps_the_reader_firing(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    calls = []
    loop.add_reader(a, calls.append, "r")
    b.send(b"never read")
    try:
        await until(lambda: len(calls) >= 20)
    finally:
        assert loop.remove_reader(a) is True
    count = len(calls)
    await settle()
    assert len(calls) == count, "the reader fired after remove_reader"
    assert a.recv(100) == b"never read"


@TWIN
async def test_peer_close_makes_the_reader_fire_with_eof(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    got = []

    def on_readable():
        got.append(a.recv(100))
        loop.remove_reader(a)

    loop.add_reader(a, on_readable)
    await settle(iterations=2, quiet=0.02)
    assert got == []
    b.close()
    await until(lambda: got)
    assert got == [b""]


@TWIN
async def test_reader_wakes_a_loop_waiting_on_a_timer(pair):
    """Data sent from another thread while the loop waits reaches the reader
    long before the loop's only timer."""
    loop = asyncio.get_running_loop()
    a, b = pair
    fired = loop.create_future()

    def on_readable():
        loop.remove_reader(a)
        fired.set_result(a.recv(100))

    loop.add_reader(a, on_readable)
    threading.Timer(0.1, b.send, (b"wake",)).start()
    started = time.monotonic()
    assert await asyncio.wait_for(fired, TIMEOUT) == b"wake"
    assert time.monotonic() - started < 2


def test_reader_wakes_an_idle_loop(loop, pair):
    """run_forever() with nothing scheduled at all blocks until the reader fires."""
    a, b = pair
    got = []

    def on_readable():
        got.append(a.recv(100))
        loop.remove_reader(a)
        loop.stop()

    def sender():
        time.sleep(0.1)
        b.send(b"idle")
        time.sleep(TIMEOUT)
        if loop.is_running():   # the reader never came: fail, never hang
            loop.call_soon_threadsafe(loop.stop)

    loop.add_reader(a, on_readable)
    loop.call_soon(threading.Thread(target=sender, daemon=True).start)
    started = time.monotonic()
    loop.run_forever()
    assert got == [b"idle"]
    assert time.monotonic() - started < 2


# -- writers ------------------------------------------------------------------------------


@TWIN
async def test_writer_fires_when_writable(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    calls = []

    def on_writable(tag):
        calls.append(tag)
        a.send(b"from writer")
        calls.append(loop.remove_writer(a))

    loop.add_writer(a, on_writable, "w")
    await until(lambda: calls)
    await settle()
    assert calls == ["w", True]
    assert loop.remove_writer(a) is False
    await until(lambda: b.recv(100) == b"from writer" if _readable(b) else False)


@TWIN
async def test_writer_stops_while_the_buffer_is_full_and_resumes_after_drain(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    sent = []

    def on_writable():
        sent.append(fill(a))

    loop.add_writer(a, on_writable)
    try:
        await until(lambda: sent)
        await settle(quiet=0.2)
        assert len(sent) == 1 and sent[0] > 0, \
            f"the writer fired {len(sent)} times with a full send buffer"
        received = 0
        deadline = time.monotonic() + TIMEOUT
        while len(sent) == 1 and time.monotonic() < deadline:
            received += drain(b)
            await asyncio.sleep(0.005)
        assert len(sent) >= 2, "the writer did not fire again after the peer read everything"
    finally:
        assert loop.remove_writer(a) is True
    received += drain(b)
    # Everything written is readable on the other side.
    deadline = time.monotonic() + TIMEOUT
    while received < sum(sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
        received += drain(b)
    assert received == sum(sent)


# -- removal --------------------------------------------------------------------------------


@TWIN
async def test_remove_reader_inside_its_callback(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    calls = []

    def on_readable():
        calls.append(loop.remove_reader(a))   # the data stays unread

    b.send(b"unread")
    loop.add_reader(a, on_readable)
    await until(lambda: calls)
    await settle()
    assert calls == [True]
    assert loop.remove_reader(a) is False


@TWIN
async def test_remove_writer_inside_its_callback(pair):
    loop = asyncio.get_running_loop()
    a, _ = pair
    calls = []

    def on_writable():
        calls.append(loop.remove_writer(a))

    loop.add_writer(a, on_writable)
    await until(lambda: calls)
    await settle()
    assert calls == [True]
    assert loop.remove_writer(a) is False


@TWIN
async def test_remove_returns_false_when_nothing_is_registered(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(b.fileno()) is False
    loop.add_reader(a, print)
    # A reader is no writer.
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False


@TWIN
async def test_remove_reader_before_its_data_is_handled(pair):
    """Data that arrived is not delivered to a reader removed in the meantime."""
    loop = asyncio.get_running_loop()
    a, b = pair
    calls = []
    loop.add_reader(a, calls.append, "r")
    b.send(b"x")
    time.sleep(0.05)   # readable now, and the loop has not looked yet
    assert loop.remove_reader(a) is True
    await settle()
    assert calls == []


# -- replacing --------------------------------------------------------------------------------


@TWIN
async def test_adding_again_replaces_the_callback(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    calls = []

    def first():
        calls.append("first")

    def second(tag):
        calls.append(tag)
        a.recv(100)
        loop.remove_reader(a)

    loop.add_reader(a, first)
    loop.add_reader(a, second, "second")
    b.send(b"x")
    await until(lambda: calls)
    await settle()
    assert calls == ["second"]
    assert loop.remove_reader(a) is False   # one registration, removed once


@TWIN
async def test_a_callback_replacing_itself(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    calls = []

    def first():
        calls.append("first")
        loop.add_reader(a, second)

    def second():
        calls.append("second")
        if len(calls) == 3:
            a.recv(100)
            loop.remove_reader(a)

    b.send(b"x")
    loop.add_reader(a, first)
    await until(lambda: len(calls) >= 3)
    await settle()
    assert calls == ["first", "second", "second"]


@TWIN
async def test_replaced_callback_already_due_is_not_called():
    """Two sockets become readable together; whichever reader runs first
    replaces the other's.  The replaced callback must not run, even if the
    loop had already picked it to run in this iteration (asyncio cancels the
    old handle)."""
    loop = asyncio.get_running_loop()
    (a, b), (c, d) = socketpair(), socketpair()
    calls = []

    def original(name, own, other, other_name):
        calls.append(("original", name))
        own.recv(100)
        loop.remove_reader(own)
        loop.add_reader(other, replacement, other_name, other)

    def replacement(name, own):
        calls.append(("replacement", name))
        own.recv(100)
        loop.remove_reader(own)

    try:
        loop.add_reader(a, original, "a", a, c, "c")
        loop.add_reader(c, original, "c", c, a, "a")
        b.send(b"x")
        d.send(b"y")
        await until(lambda: len(calls) >= 2)
        await settle()
    finally:
        loop.remove_reader(a)
        loop.remove_reader(c)
        for s in (a, b, c, d):
            s.close()
    assert len(calls) == 2, calls
    (kind1, name1), (kind2, name2) = calls
    assert (kind1, kind2) == ("original", "replacement"), calls
    assert {name1, name2} == {"a", "c"}, calls


# -- reader and writer, object and fileno ----------------------------------------------


@TWIN
async def test_reader_and_writer_on_one_socket_are_independent(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    events = []

    def on_writable():
        events.append("w")
        if events.count("w") == 3:
            assert loop.remove_writer(a) is True

    def on_readable():
        events.append(("r", a.recv(100)))
        assert loop.remove_reader(a) is True

    loop.add_reader(a, on_readable)
    loop.add_writer(a, on_writable)
    await until(lambda: events.count("w") == 3)
    await settle()
    # The writer fired (writable), the reader did not (nothing to read), and
    # removing the writer left the reader in place.
    assert events == ["w", "w", "w"]
    assert loop.remove_writer(a) is False
    b.send(b"data")
    await until(lambda: len(events) == 4)
    await settle()
    assert events[3] == ("r", b"data")
    assert loop.remove_reader(a) is False


@TWIN
async def test_removing_the_reader_keeps_the_writer(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    writes = []
    loop.add_reader(a, print)
    loop.add_writer(a, writes.append, 1)
    assert loop.remove_reader(a) is True
    await until(lambda: len(writes) >= 2)
    assert loop.remove_writer(a) is True


@TWIN
async def test_socket_object_and_fileno_are_one_registration(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    calls = []

    def by_object():
        calls.append("object")

    def by_fileno():
        calls.append("fileno")
        a.recv(100)

    loop.add_reader(a, by_object)
    loop.add_reader(a.fileno(), by_fileno)   # the same fd: replaces
    b.send(b"x")
    await until(lambda: calls)
    await settle()
    assert calls == ["fileno"]
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a.fileno()) is False

    writes = []
    loop.add_writer(a.fileno(), writes.append, "w")
    await until(lambda: writes)
    assert loop.remove_writer(a) is True
    assert loop.remove_writer(a.fileno()) is False


# -- closed sockets ----------------------------------------------------------------------


@TWIN
async def test_closed_socket_object_is_rejected():
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.close()
    assert s.fileno() == -1
    with pytest.raises(ValueError):
        loop.add_reader(s, print)
    with pytest.raises(ValueError):
        loop.add_writer(s, print)


@TWIN
@pytest.mark.parametrize("kind", ["reader", "writer"])
async def test_close_while_registered_then_remove(kind):
    """add_reader (add_writer), close the socket, then remove_reader
    (remove_writer) with the closed socket object: True, no exception.  (Only
    one kind registered: with both, asyncio's selector fails to modify the
    closed descriptor's registration.)"""
    loop = asyncio.get_running_loop()
    add = getattr(loop, f"add_{kind}")
    remove = getattr(loop, f"remove_{kind}")
    a, b = socketpair()
    calls = []
    try:
        add(a, calls.append, kind)
        if kind == "writer":
            await until(lambda: calls)
        a.close()
        assert remove(a) is True
        count = len(calls)
        await settle()
        assert len(calls) == count
    finally:
        a.close()
        b.close()


@TWIN
async def test_close_while_registered_loop_iterates_then_remove():
    """The loop keeps running (no exception, no stray call) between the
    close of a registered socket and its remove_reader."""
    loop = asyncio.get_running_loop()
    handler_calls = []
    loop.set_exception_handler(lambda lp, ctx: handler_calls.append(ctx))
    a, b = socketpair()
    calls = []
    try:
        loop.add_reader(a, calls.append, "r")
        a.close()
        await settle()
        assert loop.remove_reader(a) is True
        await settle(iterations=2, quiet=0.02)
    finally:
        a.close()
        b.close()
    assert calls == []
    assert handler_calls == []


@TWIN
async def test_closing_a_registered_socket_closes_it_for_the_peer():
    """A registered socket closed without remove_reader is closed: its peer
    reads EOF at once (the loop holds no hidden reference to the socket)."""
    loop = asyncio.get_running_loop()
    a, b = socketpair()
    eof = []

    def on_peer_readable():
        eof.append(b.recv(100))
        loop.remove_reader(b)

    try:
        loop.add_reader(a, print)
        await settle(iterations=2, quiet=0.02)   # let the loop start watching a
        a.close()
        loop.add_reader(b, on_peer_readable)
        await until(lambda: eof, timeout=1)
        assert eof == [b""]
    finally:
        loop.remove_reader(a)
        loop.remove_reader(b)
        a.close()
        b.close()


# -- closed loop, invalid objects ------------------------------------------------------------


def test_closed_loop_refuses_adds_and_removes_nothing(loop, pair):
    a, _ = pair
    loop.add_reader(a, print)
    loop.close()
    with pytest.raises(RuntimeError):
        loop.add_reader(a, print)
    with pytest.raises(RuntimeError):
        loop.add_writer(a, print)
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False


@TWIN
@pytest.mark.parametrize("bad", ["not a file", object(), -1, 1.5], ids=["str", "object", "minus1", "float"])
async def test_invalid_file_objects_raise_value_error(bad):
    loop = asyncio.get_running_loop()
    with pytest.raises(ValueError):
        loop.add_reader(bad, print)
    with pytest.raises(ValueError):
        loop.add_writer(bad, print)


@TWIN
@pytest.mark.parametrize("bad", ["not a file", object()], ids=["str", "object"])
async def test_removing_an_invalid_file_object_raises_value_error(bad):
    loop = asyncio.get_running_loop()
    with pytest.raises(ValueError):
        loop.remove_reader(bad)
    with pytest.raises(ValueError):
        loop.remove_writer(bad)


@TWIN
async def test_a_socket_owned_by_a_transport_is_refused():
    """As asyncio's selector loop: a socket that a transport reads is not
    available to add_reader/add_writer/remove_* (RuntimeError)."""
    loop = asyncio.get_running_loop()
    a, b = socketpair()
    transport, _ = await asyncio.wait_for(
        loop.create_connection(asyncio.Protocol, sock=a), TIMEOUT)
    try:
        for call in (lambda: loop.add_reader(a, print), lambda: loop.add_writer(a, print),
                     lambda: loop.remove_reader(a), lambda: loop.remove_writer(a)):
            with pytest.raises(RuntimeError):
                call()
    finally:
        transport.close()
        b.close()
    await settle(iterations=3, quiet=0.01)


# -- many sockets, exceptions --------------------------------------------------------------


@TWIN
async def test_many_sockets_each_fire_once():
    loop = asyncio.get_running_loop()
    pairs = [socketpair() for _ in range(PAIRS)]
    fired = []

    def on_readable(i, sock):
        fired.append((i, sock.recv(100)))
        loop.remove_reader(sock)

    try:
        for i, (a, _) in enumerate(pairs):
            loop.add_reader(a, on_readable, i, a)
        for i, (_, b) in enumerate(pairs):
            b.send(b"%d" % i)
        await until(lambda: len(fired) >= PAIRS)
        await settle()
    finally:
        for a, b in pairs:
            loop.remove_reader(a)
            a.close()
            b.close()
    assert sorted(fired) == [(i, b"%d" % i) for i in range(PAIRS)]


@TWIN
async def test_a_raising_callback_goes_to_the_exception_handler_and_stays(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    calls = []

    def on_readable():
        calls.append(1)
        if len(calls) == 1:
            raise ZeroDivisionError("boom")
        a.recv(100)
        loop.remove_reader(a)

    loop.add_reader(a, on_readable)
    b.send(b"x")
    await until(lambda: len(calls) >= 2)
    await settle()
    assert len(calls) == 2, "the reader did not stay registered after raising"
    assert len(contexts) == 1
    assert isinstance(contexts[0].get("exception"), ZeroDivisionError)
    assert "message" in contexts[0]


@TWIN
async def test_a_raising_writer_goes_to_the_exception_handler(pair):
    loop = asyncio.get_running_loop()
    a, _ = pair
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    calls = []

    def on_writable():
        calls.append(1)
        if len(calls) == 2:
            loop.remove_writer(a)
        raise KeyError("writer")

    loop.add_writer(a, on_writable)
    await until(lambda: len(calls) >= 2)
    await settle()
    assert len(calls) == 2
    assert [type(c.get("exception")) for c in contexts] == [KeyError, KeyError]


# -- pipes (Linux) ------------------------------------------------------------------------------


@pytest.mark.skipif(not IS_LINUX, reason="os.pipe() on Windows makes anonymous pipes, which have "
                    "no readiness (select() and iocploop's AFD poll take sockets only)")
@TWIN
async def test_pipe_reader_and_writer():
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    got = []
    writable = []

    def on_readable():
        got.append(os.read(r, 100))
        if b"".join(got) == b"through a pipe":
            loop.remove_reader(r)

    try:
        loop.add_reader(r, on_readable)
        loop.add_writer(w, writable.append, "w")
        await until(lambda: writable)
        assert loop.remove_writer(w) is True
        os.write(w, b"through a pipe")
        await until(lambda: b"".join(got) == b"through a pipe")
        await settle()
        assert b"".join(got) == b"through a pipe"
        assert loop.remove_reader(r) is False
        # EOF of a pipe wakes its reader too.
        eof = []
        loop.add_reader(r, lambda: eof.append(os.read(r, 100)) or loop.remove_reader(r))
        os.close(w)
        w = -1
        await until(lambda: eof)
        assert eof == [b""]
    finally:
        loop.remove_reader(r)
        os.close(r)
        if w != -1:
            os.close(w)
