"""Memory lent to the kernel through cffi, and CPython's cyclic collector.

The collector clears a memoryview found in a reference cycle even while a
cffi view still exports it; freeing the cffi view afterwards writes through
a NULL pointer and kills the process (seen under Wine in uvloop's suite, in
gc.collect()).  `c_buffer` hands cffi a stand-in the collector never sees.
The crash kills the interpreter, so the cycles are made in a child process.
"""
from __future__ import annotations

import gc
import textwrap

import pytest

from iocploop._port import c_buffer
from iocploop._scheduler import lendable

from _helpers import poll_until, run_python, socketpair

# Each case makes the caller's memoryview first, so that it is the first
# object of the cycle the collector clears: the order that crashed.
_REFUSED_IN_A_CYCLE = textwrap.dedent("""
    import gc, socket, sys
    from iocploop._port import CompletionPort

    port = CompletionPort()

    class Holder:
        pass

    def submit(kind, sock, view):
        noop = lambda op: None
        if kind == "recv":
            port.recv(sock, view, noop)
        elif kind == "send":
            port.send(sock, view, noop)
        elif kind == "sendv":
            port.sendv(sock, [view, view], noop)
        elif kind == "recvmsg":
            port.recvmsg(sock, view, noop)
        elif kind == "sendmsg":
            port.sendmsg(sock, [view], None, noop)

    def refused_into_a_cycle(kind):
        view = memoryview(bytearray(64))[8:40]
        holder = Holder()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.close()
        try:
            submit(kind, sock, view)
        except OSError as exc:   # its traceback holds the submitting frames
            holder.exc = exc
        else:
            sys.exit(f"{kind} on a closed socket was not refused")
        holder.me = holder

    for kind in sys.argv[1:]:
        for _ in range(5):
            refused_into_a_cycle(kind)
            gc.collect()
    port.close()
    print("collected")
""")


@pytest.mark.parametrize("kind", ["recv", "send", "sendv", "recvmsg", "sendmsg"])
def test_refused_operation_in_a_cycle_is_collected_safely(kind, tmp_path):
    # Away from the source tree: the child imports the iocploop under test.
    proc = run_python(["-c", _REFUSED_IN_A_CYCLE, kind], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "collected"
    assert "exported buffer" not in proc.stderr   # the collector never met an export


_IN_FLIGHT_IN_A_CYCLE = textwrap.dedent("""
    import asyncio, gc, socket
    import iocploop

    class Holder:
        pass

    def abandoned_loop():
        view = memoryview(bytearray(4096))[16:]
        holder = Holder()
        loop = iocploop.new_event_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        # A receive the peer never answers: still in the kernel when the
        # loop, its port and the operation become garbage together.
        task = loop.create_task(loop.sock_recv_into(a, view))
        loop.run_until_complete(asyncio.sleep(0.01))
        holder.parts = (loop, task, a, b)
        holder.me = holder

    for _ in range(3):
        abandoned_loop()
        gc.collect()
    print("collected")
""")


def test_in_flight_operation_of_an_abandoned_loop_is_collected_safely(tmp_path):
    proc = run_python(["-W", "ignore", "-c", _IN_FLIGHT_IN_A_CYCLE], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "collected"
    assert "exported buffer" not in proc.stderr


def test_bytes_and_bytearray_are_lent_as_they_are():
    data, buf = b"abc", bytearray(3)
    assert lendable(data) is data
    assert lendable(buf, True) is buf


def test_the_stand_in_is_outside_the_collector_and_shows_the_same_memory():
    buf = bytearray(b"0123456789")
    stand_in = lendable(memoryview(buf)[2:5], True)
    assert not gc.is_tracked(stand_in)
    view = c_buffer(memoryview(buf)[2:5], writable=True)
    assert len(view) == 3
    view[0:3] = b"xyz"
    assert buf == bytearray(b"01xyz56789")


def test_the_caller_buffer_stays_exported_until_the_cffi_view_is_freed():
    buf = bytearray(16)
    view = c_buffer(memoryview(buf)[4:], writable=True)
    with pytest.raises(BufferError):
        buf.extend(b"x")   # the kernel may be writing into it
    del view
    buf.extend(b"x")
    assert len(buf) == 17


@pytest.mark.parametrize("bad, writable, error", [
    (memoryview(b"read only"), True, BufferError),
    (5, False, TypeError),
    (memoryview(bytearray(10))[::2], False, BufferError),   # not contiguous
    (b"bytes", True, BufferError),
])
def test_bad_buffers_get_the_errors_cffi_gives(bad, writable, error):
    from iocploop._port import ffi

    with pytest.raises(error) as ours:
        c_buffer(bad, writable=writable)
    with pytest.raises(error) as cffis:
        ffi.from_buffer(bad, require_writable=writable)
    assert str(ours.value) == str(cffis.value)


def test_a_lent_send_delivers_the_right_bytes(port):
    a, b = socketpair()
    try:
        done = []
        data = memoryview(b"..hello..")[2:7]
        port.send(a, data, done.append)
        assert poll_until(port, lambda: done)
        assert done[0].result == 5
        assert b.recv(16) == b"hello"
    finally:
        a.close()
        b.close()
