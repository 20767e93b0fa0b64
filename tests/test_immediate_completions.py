"""Operations that finish inside their submit call and operations that wait,
for every kind of operation of the completion port (iocploop only).

Windows: sockets whose provider allows it (XP1_IFS_HANDLES; stream sockets
only), pipes and the AFD device skip the completion port on success
(FILE_SKIP_COMPLETION_PORT_ON_SUCCESS): an operation that finishes at once
queues no packet, and the core delivers its completion itself from the next
wait (``stats()["immediate"]`` counts them), in the order a packet would have
had.  Linux (io_uring) has no such path: the same scenarios run there and
check the same results.

Each scenario checks the completion's result and what it did, that it is
delivered exactly once (a packet queued after all would name a recycled
record) and that nothing is left in flight.  Under Wine the counter is
checked against what Wine does (docs/windows-under-wine.md, W6 and W7):
receives, sends, polls, pipe reads and writes finish at once when they can;
AcceptEx, ConnectEx and TransmitFile always say "pending" (their status
block may be final by then); DisconnectEx says "pending" but is done.
"""
from __future__ import annotations

import os
import select
import socket
import tempfile
import time

import pytest

from iocploop._port import CompletionPort
from _helpers import IS_WINDOWS, TIMEOUT, poll_until
from _tcp_helpers import UNDER_WINE, tcp_pair

POLLIN, POLLOUT = 0x1, 0x4
AT_ONCE, WAITS = "at once", "waits"


def _wait_readable(sock) -> None:
    assert select.select([sock], [], [], TIMEOUT)[0], "no data reached the socket"


def _fill(sock) -> int:
    """Fill sock's send path until the kernel takes no more."""
    sent = 0
    chunk = bytes(65536)
    while True:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            return sent


def _drain(sock, nbytes: int) -> bytes:
    """Exactly nbytes from sock (fewer if they do not come in time)."""
    got = bytearray()
    deadline = time.monotonic() + TIMEOUT
    while len(got) < nbytes and time.monotonic() < deadline:
        try:
            chunk = sock.recv(min(1 << 20, nbytes - len(got)))
        except BlockingIOError:
            time.sleep(0.005)
            continue
        if not chunk:
            break
        got += chunk
    return bytes(got)


class Run:
    """Submit one operation, deliver it, and check it was delivered once."""

    def __init__(self, port):
        self.port = port
        self.done = []

    def submit(self, submit, then=None):
        """then(op), if given, runs in the callback (where the operation's
        memory is still there: op.accepted(), op.message())."""
        def callback(op):
            self.done.append(op)
            if then is not None:
                self.outcome = then(op)

        before = self.port.stats()
        self.op = submit(callback)
        self.immediate = self.port.stats()["immediate"] - before["immediate"]
        return self.op

    def deliver(self):
        assert poll_until(self.port, lambda: self.done), f"{self.op!r} never completed"
        assert self.done == [self.op]
        # Nothing more comes for it: no packet for a record the core recycled.
        assert self.port.poll(0.05) == 0
        assert self.done == [self.op]
        assert self.port.pending == 0
        assert self.port.stats()["in_flight"] == 0
        return self.op

    def check_path(self, when: str, windows_at_once: bool = True) -> None:
        """On Windows an operation that could finish at once did (under
        Wine: where Wine finishes it at once); one that waited did not."""
        if not IS_WINDOWS or when == WAITS:
            assert self.immediate == 0, f"{self.op!r} counted as finished at once"
        elif windows_at_once:
            assert self.immediate == 1, f"{self.op!r} went through the port"


# -- sockets: receives and sends ------------------------------------------------------------


@pytest.mark.parametrize("when", [AT_ONCE, WAITS])
@pytest.mark.parametrize("kind", ["recv", "recvmsg"])
def test_receive(port, pair, kind, when):
    a, b = pair
    buf = bytearray(100)
    submit = {"recv": lambda cb: port.recv(a, buf, cb),
              "recvmsg": lambda cb: port.recvmsg(a, buf, cb)}[kind]
    run = Run(port)
    if when == AT_ONCE:
        b.send(b"waiting data")
        _wait_readable(a)
        run.submit(submit)
    else:
        run.submit(submit)
        port.poll(0)
        assert not run.done
        b.send(b"waiting data")
    op = run.deliver()
    assert op.result == len(b"waiting data") and buf[:op.result] == b"waiting data"
    run.check_path(when)


@pytest.mark.parametrize("when", [AT_ONCE, WAITS])
@pytest.mark.parametrize("kind", ["send", "sendv", "sendmsg"])
def test_send(port, kind, when):
    a, b = tcp_pair(sndbuf=8192, rcvbuf=8192)
    with a, b:
        data = bytes(range(256)) * 256   # 64 KiB: more than the buffers hold
        if when == AT_ONCE:
            data = data[:1000]
        submit = {"send": lambda cb: port.send(a, data, cb),
                  "sendv": lambda cb: port.sendv(a, [data[:7], data[7:]], cb),
                  "sendmsg": lambda cb: port.sendmsg(a, [data[:7], data[7:]], None, cb)}[kind]
        run = Run(port)
        filled = 0
        if when == WAITS:
            filled = _fill(a)
        run.submit(submit)
        if when == WAITS:
            port.poll(0)
            assert not run.done, "a send on a full socket finished at once"
            assert _drain(b, filled) == bytes(filled)
        received = []
        assert poll_until(port, lambda: run.done or received.append(_drain_now(b)) or False)
        op = run.deliver()
        # Windows sends all of it; Linux may end a send short.
        assert op.result == len(data) if IS_WINDOWS else 0 < op.result <= len(data)
        rest = _drain(b, op.result - sum(map(len, received)))
        assert b"".join(received) + rest == data[:op.result]
        run.check_path(when)


def _drain_now(sock) -> bytes:
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


@pytest.mark.parametrize("when", [AT_ONCE, WAITS])
def test_poll(port, pair, when):
    a, b = pair
    run = Run(port)
    if when == AT_ONCE:
        b.send(b"x")
        _wait_readable(a)
        run.submit(lambda cb: port.poll_ready(a, POLLIN, cb))
    else:
        run.submit(lambda cb: port.poll_ready(a, POLLIN, cb))
        port.poll(0)
        assert not run.done
        b.send(b"x")
    op = run.deliver()
    assert op.result & POLLIN
    run.check_path(when)


def test_udp_sockets_keep_their_packets(port):
    """Datagram sockets do not skip the port (on them Windows' Winsock reports
    a datagram cut short at once as pending, with no packet to follow): a
    receive of a datagram already there still completes through the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        a.setblocking(False)
        b.sendto(b"datagram", a.getsockname())
        _wait_readable(a)
        buf = bytearray(100)
        run = Run(port)
        run.submit(lambda cb: port.recvmsg(a, buf, cb), then=lambda op: op.message())
        run.deliver()
        assert run.outcome[:2] == (8, b.getsockname())
        assert run.immediate == 0
        # A datagram cut short, waiting: delivered cut, through the port.
        b.sendto(b"a datagram longer than the buffer", a.getsockname())
        _wait_readable(a)
        small = bytearray(4)
        run = Run(port)
        run.submit(lambda cb: port.recvmsg(a, small, cb))
        op = run.deliver()
        assert op.result == 4 and small == b"a da"
        assert run.immediate == 0


# -- connections ------------------------------------------------------------------------------


@pytest.mark.parametrize("when", [AT_ONCE, WAITS])
def test_accept(port, when):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        target = socket.socket() if IS_WINDOWS else None
        client = socket.socket()
        try:
            run = Run(port)
            if when == AT_ONCE:
                client.connect(listener.getsockname())   # waits in the backlog
                run.submit(lambda cb: port.accept(listener, cb, target), then=lambda op: op.accepted())
            else:
                run.submit(lambda cb: port.accept(listener, cb, target), then=lambda op: op.accepted())
                port.poll(0)
                assert not run.done
                client.connect(listener.getsockname())
            op = run.deliver()
            assert op.result >= 0
            conn, address = run.outcome
            with conn:
                assert address == client.getsockname()
                client.send(b"over the accepted connection")
                conn.settimeout(TIMEOUT)
                assert conn.recv(100) == b"over the accepted connection"
            # Wine's AcceptEx says "pending" even with a peer waiting (W6).
            run.check_path(when, windows_at_once=not UNDER_WINE)
        finally:
            client.close()
            if target is not None:
                target.close()


def test_connect(port):
    """ConnectEx to a listener.  Wine's reports every ConnectEx as pending,
    but on loopback its status block may be final by the time the call
    returns: the core then completes it at once and keeps the record out of
    use until its packet comes -- either way, one completion."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        client.setblocking(False)
        with client:
            run = Run(port)
            run.submit(lambda cb: port.connect(client, listener.getsockname(), cb))
            op = run.deliver()
            assert op.result == 0
            port.connected(client)
            assert client.getpeername() == listener.getsockname()


def test_datagram_connect_completes_without_the_kernel(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.bind(("127.0.0.1", 0))
        b.setblocking(False)
        run = Run(port)
        run.submit(lambda cb: port.connect(b, a.getsockname(), cb))
        op = run.deliver()
        assert op.result == 0 and b.getpeername() == a.getsockname()
        if IS_WINDOWS:
            assert run.immediate == 1


@pytest.mark.skipif(not IS_WINDOWS, reason="DisconnectEx is Windows'; Linux dissolves a "
                    "connection with connect(AF_UNSPEC), synchronously")
@pytest.mark.parametrize("peer", ["closed first", "closes after"])
def test_disconnect(port, peer):
    """DisconnectEx completes once, with its result.  Wine's finishes inside
    the call (a shutdown) yet reports it as pending (W7): on a socket that
    skips the port no packet follows, so the core completes it itself and
    keeps the record out of use in case a packet does come."""
    a, b = tcp_pair()
    with a, b:
        if peer == "closed first":
            b.close()
            _wait_readable(a)
        run = Run(port)
        run.submit(lambda cb: port.disconnect(a, cb))
        if peer == "closes after":
            b.close()
        op = run.deliver()
        assert op.result == 0, op.error
        if UNDER_WINE:
            assert run.immediate == 1
    # The port goes on: records are not mixed up.
    c, d = tcp_pair()
    with c, d:
        for i in range(20):
            buf = bytearray(10)
            reader = Run(port)
            reader.submit(lambda cb: port.recv(c, buf, cb))
            d.send(b"%02d" % i)
            assert reader.deliver().result == 2 and buf[:2] == b"%02d" % i


# -- TransmitFile ------------------------------------------------------------------------


@pytest.mark.skipif(not IS_WINDOWS, reason="the core's sendfile is TransmitFile; Linux "
                    "calls sendfile(2) from the loop (test_sendfile.py)")
@pytest.mark.parametrize("when", [AT_ONCE, WAITS])
def test_sendfile(port, when):
    a, b = tcp_pair(sndbuf=8192, rcvbuf=8192)
    content = os.urandom(200_000 if when == WAITS else 1000)
    with a, b, tempfile.TemporaryFile() as f:
        f.write(content)
        f.flush()
        run = Run(port)
        run.submit(lambda cb: port.sendfile(a, f, 0, len(content), cb))
        received = []
        assert poll_until(port, lambda: run.done or received.append(_drain_now(b)) or False)
        op = run.deliver()
        assert op.result == len(content)
        assert b"".join(received) + _drain(b, len(content) - sum(map(len, received))) == content
        # Wine's TransmitFile says "pending" even with room to send (W6).
        run.check_path(when, windows_at_once=not UNDER_WINE)


@pytest.mark.skipif(not IS_WINDOWS, reason="the core's sendfile is TransmitFile; Linux "
                    "calls sendfile(2) from the loop (test_sendfile.py)")
@pytest.mark.parametrize("offset", ["at the end", "past the end"])
def test_sendfile_reports_the_bytes_it_sent_not_the_bytes_asked(port, pair, offset):
    """TransmitFile from the end of the file (or past it) sends nothing and
    succeeds: the result is 0.  The core used to replace a 0 by the count
    asked for ("Wine reports 0 for a successful TransmitFile", a mistaken
    probe: Wine reports every byte, W2), so a file truncated under a
    transfer read as sent in full."""
    a, b = pair
    with tempfile.TemporaryFile() as f:
        f.write(b"z" * 1000)
        f.flush()
        run = Run(port)
        run.submit(lambda cb: port.sendfile(a, f, 1000 if offset == "at the end" else 5000,
                                            100, cb))
        op = run.deliver()
        assert op.result == 0
        assert _drain_now(b) == b""


# -- pipes ---------------------------------------------------------------------------------


def _pipe():
    """(read handle, write handle) of one pipe, opened for overlapped I/O
    on Windows (fds on Linux)."""
    if IS_WINDOWS:
        from asyncio import windows_utils

        return windows_utils.pipe(overlapped=(True, True), duplex=True)
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


def _close_pipe(r, w):
    if IS_WINDOWS:
        import _winapi

        _winapi.CloseHandle(r)
        _winapi.CloseHandle(w)
    else:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("when", [AT_ONCE, WAITS])
def test_pipe_read(port, when):
    r, w = _pipe()
    try:
        buf = bytearray(100)
        run = Run(port)
        writer = Run(port)
        if when == AT_ONCE:
            writer.submit(lambda cb: port.write(w, b"through the pipe", cb))
            assert writer.deliver().result == 16
            run.submit(lambda cb: port.read(r, buf, cb))
        else:
            run.submit(lambda cb: port.read(r, buf, cb))
            port.poll(0)
            assert not run.done
            writer.submit(lambda cb: port.write(w, b"through the pipe", cb))
            assert poll_until(port, lambda: writer.done)
        op = run.deliver()
        assert op.result == 16 and buf[:16] == b"through the pipe"
        run.check_path(when)
    finally:
        port.forget_handle(r)
        port.forget_handle(w)
        _close_pipe(r, w)


def test_pipe_write_waits_for_room(port):
    r, w = _pipe()
    try:
        data = bytes(range(256)) * 4096   # 1 MiB: more than a pipe holds
        run = Run(port)
        run.submit(lambda cb: port.write(w, data, cb))
        got = bytearray()
        while not run.done:
            buf = bytearray(65536)
            reader = Run(port)
            reader.submit(lambda cb: port.read(r, buf, cb))
            assert poll_until(port, lambda: reader.done)
            got += buf[:reader.op.result]
        assert run.op.result > 0
        while len(got) < run.op.result:
            buf = bytearray(65536)
            reader = Run(port)
            reader.submit(lambda cb: port.read(r, buf, cb))
            got += buf[:reader.deliver().result]
        assert bytes(got) == data[:run.op.result]
        assert port.pending == 0
        if IS_WINDOWS:
            assert run.immediate == 0, "a write larger than the pipe finished at once"
    finally:
        port.forget_handle(r)
        port.forget_handle(w)
        _close_pipe(r, w)


@pytest.mark.skipif(not IS_WINDOWS, reason="named pipes are Windows'")
@pytest.mark.parametrize("when", [AT_ONCE, WAITS])
def test_connect_pipe(port, when):
    import _winapi

    name = r"\\.\pipe\iocploop-immediate-%d-%s" % (os.getpid(), when.replace(" ", "-"))
    server = _winapi.CreateNamedPipe(
        name, _winapi.PIPE_ACCESS_DUPLEX | _winapi.FILE_FLAG_OVERLAPPED
        | _winapi.FILE_FLAG_FIRST_PIPE_INSTANCE, _winapi.PIPE_WAIT, 1, 8192, 8192, 0, 0)
    client = None

    def open_client():
        return _winapi.CreateFile(name, _winapi.GENERIC_READ | _winapi.GENERIC_WRITE, 0, 0,
                                  _winapi.OPEN_EXISTING, _winapi.FILE_FLAG_OVERLAPPED, 0)

    try:
        run = Run(port)
        if when == AT_ONCE:
            client = open_client()   # ConnectNamedPipe then reports ERROR_PIPE_CONNECTED
            run.submit(lambda cb: port.connect_pipe(server, cb))
        else:
            run.submit(lambda cb: port.connect_pipe(server, cb))
            port.poll(0)
            assert not run.done
            client = open_client()
        assert run.deliver().result == 0
        run.check_path(when)
        # The connection carries data.
        writer = Run(port)
        writer.submit(lambda cb: port.write(client, b"hi", cb))
        writer.deliver()
        buf = bytearray(10)
        reader = Run(port)
        reader.submit(lambda cb: port.read(server, buf, cb))
        assert reader.deliver().result == 2 and buf[:2] == b"hi"
    finally:
        for handle in (server, client):
            if handle is not None:
                port.forget_handle(handle)
                _winapi.CloseHandle(handle)


@pytest.mark.skipif(not IS_WINDOWS, reason="wait registrations are Windows' (Linux polls a "
                    "pidfd)")
def test_wait_handle_always_comes_through_the_port(port):
    import ctypes

    kernel32 = ctypes.windll.kernel32
    kernel32.CreateEventW.restype = ctypes.c_void_p
    event = kernel32.CreateEventW(None, True, False, None)
    try:
        run = Run(port)
        run.submit(lambda cb: port.wait_handle(event, cb))
        port.poll(0)
        assert not run.done
        kernel32.SetEvent(ctypes.c_void_p(event))
        assert run.deliver().result == 0
        assert run.immediate == 0   # the thread pool's callback posts its packet
    finally:
        kernel32.CloseHandle(ctypes.c_void_p(event))


# -- order ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["recv", "recvmsg"])
def test_finished_at_once_after_an_earlier_packet_on_its_socket(port, pair, kind):
    """A receive completes in the kernel while its packet waits in the port;
    a second receive on the same socket then finishes at once with the next
    bytes.  The first must still be delivered first: the second came after
    it, and handing out what finished at once before the port's packets
    would reorder the stream."""
    a, b = pair
    first, second = bytearray(5), bytearray(100)
    recv = port.recv if kind == "recv" else port.recvmsg
    order = []
    op1 = recv(a, first, order.append)
    port.poll(0)
    assert not order
    b.send(b"12345abcdef")
    time.sleep(0.2)   # the first receive completes in the kernel: its packet waits
    _wait_readable(a)   # the rest waits in the socket
    op2 = recv(a, second, order.append)
    assert poll_until(port, lambda: len(order) == 2)
    assert order == [op1, op2]
    assert bytes(first) == b"12345"
    assert bytes(second[:op2.result]) == b"abcdef"
    if IS_WINDOWS:
        assert port.stats()["immediate"] >= 1


def test_many_finished_at_once_come_in_submission_order(port, pair):
    """Sends that all finish at once are delivered in the order they were
    submitted, and their bytes leave in that order."""
    a, b = pair
    order = []
    ops = [port.send(a, b"%03d" % i, order.append) for i in range(100)]
    assert poll_until(port, lambda: len(order) == 100)
    assert order == ops
    assert _drain(b, 300) == b"".join(b"%03d" % i for i in range(100))
    if IS_WINDOWS:
        assert port.stats()["immediate"] == 100


def test_finished_at_once_beyond_one_wait_batch(pair):
    """More completions finished at once than one wait hands out (a queue of
    8): they come over several waits, all of them, in order."""
    a, b = pair
    port = CompletionPort(8)
    try:
        order = []
        ops = [port.send(a, b"%03d" % i, order.append) for i in range(50)]
        counts = []
        while len(order) < 50:
            n = port.poll(TIMEOUT)
            assert n > 0
            counts.append(n)
        assert order == ops
        if IS_WINDOWS:   # io_uring's completion queue is larger than its submission queue
            assert max(counts) <= 8 and len(counts) >= 7
        assert _drain(b, 150) == b"".join(b"%03d" % i for i in range(50))
    finally:
        port.close()


def test_close_with_operations_finished_at_once_not_yet_delivered(pair):
    """Closing the port with completions the core holds (finished at once,
    not yet handed out): nothing leaks, no callback runs, the buffers go."""
    import gc
    import weakref
    import warnings

    a, b = pair

    class Buf(bytearray):
        pass

    port = CompletionPort()
    b.send(b"data")
    _wait_readable(a)
    buf = Buf(10)
    ref = weakref.ref(buf)
    done = []
    op = port.recv(a, buf, done.append)
    del buf
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        port.close()
    assert done == [] and op.done
    del op
    gc.collect()
    assert ref() is None
