"""loop.sock_sendfile and loop.sendfile (issue #4).

Every ``@pytest.mark.asyncio`` test runs twice (pytest-asyncio hook in
conftest.py): on iocploop and on the platform's stock asyncio loop, which is
the reference behaviour.  Covered:

* sock_sendfile of an empty, a small and a large file (Linux 100 MiB, Windows
  2 MiB, checked by hash), offset / count variants (offset only, count only,
  both, count beyond EOF, offset at or beyond EOF) and the file position
  afterwards (offset + bytes sent when something was sent, else unchanged);
  byte ranges of a sparse file larger than 4 GiB (Linux).
* loop.sendfile over a create_server / create_connection TCP pair: writes
  queued before the file arrive before it, writes after arrive after;
  write()/writelines() while the file is in flight raise RuntimeError; reading
  is paused during the transfer and resumed after it; return value and file
  position; fallback=False; a closing transport.
* Fallbacks and argument checks: objects without a file descriptor
  (io.BytesIO) and a pipe (Linux) fall back with fallback=True and raise
  SendfileNotAvailableError with fallback=False; datagram sockets, text-mode
  files, bad offset/count values and blocking sockets in debug mode raise what
  asyncio raises.
* A peer that resets mid-file (a clean ConnectionError, no hang, the loop
  keeps working) and a sock_sendfile cancelled mid-file (the task ends
  cancelled, file position within the file, nothing left in flight).
* iocploop only: the piece splitting (``PIECE`` of iocploop's
  ``_sendfile_windows`` / ``_sendfile_linux``, lowered to 100 000 bytes) and, on
  Linux, one transfer of more than 2**31 bytes.

Every wait is bounded, so a lost byte fails a test, never hangs it.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import time

import pytest

import iocploop._sendfile as sendfile_impl
from _helpers import IS_LINUX, IS_WINDOWS, TIMEOUT, iterations_until_no_pending_ops
from _tcp_helpers import (MiB, Recorder, Tracker, close_all, is_iocploop, payload,
                          set_linger_reset, tcp_pair)

# Wine's loopback is slow: keep the Windows transfers at a few MiB at most.
BIG_SIZE = 2 * MiB if IS_WINDOWS else 100 * MiB
MEDIUM_SIZE = 256 * 1024 + 7 if IS_WINDOWS else MiB + 7
STREAM_FILE_SIZE = MiB + 3 if IS_WINDOWS else 8 * MiB + 3
HEADER_SIZE = 256 * 1024 if IS_WINDOWS else 2 * MiB
#: Socket buffers for the tests that need a transfer to block.
SMALL_BUF = 64 * 1024
#: Bound for the large transfers (the machine may be busy).
BIG_TIMEOUT = 60.0

END = b"<END>"   # sent after a file: a byte too many or too few shows up
#: The running asyncio sets the file position after a sendfile that sent
#: nothing, and its copying fallback seeks to the offset before it starts
#: (CPython's 3.13 maintenance releases on, 3.14).
NEW_POSITION_RULE = sendfile_impl._SETS_POSITION_WHEN_NOTHING_SENT
ASYNCIO_LSEEKS_A_PIPE = (
    "this asyncio (the newer position rule) moves the position of a pipe after its failed "
    "sendfile(2) and raises ESPIPE instead of SendfileNotAvailableError: iocploop raises "
    "the latter")
PEER_GONE = ConnectionError   # BrokenPipe, ConnectionReset, ConnectionAborted

ASYNCIO_SEES_A_PIPE_EMPTY = (
    "stock asyncio sizes the file with fstat(): a pipe has st_size 0, so it is taken for an "
    "empty file -- sock_sendfile returns 0 and sends nothing (fallback=False does not raise)")


# -- helpers --------------------------------------------------------------------------


async def _bounded(aw, timeout: float = TIMEOUT):
    return await asyncio.wait_for(aw, timeout)


@pytest.fixture
def small_pair():
    """A pair whose socket buffers hold little: an unread transfer blocks soon."""
    a, b = tcp_pair(sndbuf=SMALL_BUF, rcvbuf=SMALL_BUF)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _write_file(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)
    return path


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """(path, size, sha256) of a random file of BIG_SIZE bytes."""
    path = tmp_path_factory.mktemp("sendfile") / "big.bin"
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = BIG_SIZE
        while left:
            chunk = os.urandom(min(left, 4 * MiB))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return path, BIG_SIZE, h.hexdigest()


@pytest.fixture(scope="module")
def medium_file(tmp_path_factory):
    """(path, content) of a file of MEDIUM_SIZE pseudo-random bytes."""
    data = payload(MEDIUM_SIZE, seed=4)
    path = _write_file(tmp_path_factory.mktemp("sendfile") / "medium.bin", data)
    return path, data


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory):
    data = payload(STREAM_FILE_SIZE, seed=5)
    path = _write_file(tmp_path_factory.mktemp("sendfile") / "stream.bin", data)
    return path, data


#: Most bytes asked of one sock_recv_into.  iocploop receives into a buffer of
#: its own as large as the one given (then copies), so a call's cost grows with
#: the size of the view: slices of the preallocated buffer keep it bounded.
RECV_SLICE = MiB


async def _recv_exactly(loop, sock, n: int, timeout: float = TIMEOUT) -> bytearray:
    """sock_recv_into a preallocated buffer until n bytes arrived."""
    buf = bytearray(n)
    got = 0

    async def reader():
        nonlocal got
        with memoryview(buf) as view:
            while got < n:
                k = await loop.sock_recv_into(sock, view[got:got + RECV_SLICE])
                assert k, f"EOF after {got} of {n} bytes"
                got += k

    try:
        await asyncio.wait_for(reader(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"only {got} of {n} bytes arrived within {timeout} s")
    return buf


async def _recv_to_eof(loop, sock, timeout: float = TIMEOUT) -> bytes:
    out = bytearray()

    async def reader():
        while True:
            data = await loop.sock_recv(sock, 256 * 1024)
            if not data:
                return
            out.extend(data)

    await asyncio.wait_for(reader(), timeout)
    return bytes(out)


async def _sendfile_then_end(loop, sock, file, *args, **kwargs):
    """sock_sendfile, then END with sock_sendall; returns sock_sendfile's result."""
    sent = await loop.sock_sendfile(sock, file, *args, **kwargs)
    await loop.sock_sendall(sock, END)
    return sent


async def _transfer(loop, a, b, file, expected: bytes, *args, **kwargs) -> int:
    """sock_sendfile file from a (then END), b receives; the bytes must be expected."""
    sent, got = await asyncio.gather(
        _sendfile_then_end(loop, a, file, *args, **kwargs),
        _recv_exactly(loop, b, len(expected) + len(END)))
    assert bytes(got) == expected + END
    return sent


async def _assert_no_pending_ops(loop) -> None:
    """iocploop: no kernel operation is left in flight.  On Linux io_uring
    cancels at submission, so the next wait or two reap it; a lingering poll
    would otherwise only end when the socket happens to become writable."""
    if not is_iocploop(loop):
        return
    iterations = await iterations_until_no_pending_ops(loop)
    if not IS_WINDOWS:
        assert iterations <= 2, f"cancellation took {iterations} loop iterations"


def _forbid_fallback(loop, monkeypatch) -> None:
    """Make asyncio's copy-through-Python fallbacks fail: a regular file on a
    TCP socket goes the native way on both loops (and both platforms)."""

    async def forbidden(*args, **kwargs):
        raise AssertionError("the fallback ran: the native path was not taken")

    monkeypatch.setattr(loop, "_sock_sendfile_fallback", forbidden)
    monkeypatch.setattr(loop, "_sendfile_fallback", forbidden)


def _require_blocked(task) -> None:
    """The transfer must still be in flight (the peer reads nothing, the
    socket buffers are small).  Under Wine the buffers are the host's, so a
    transfer that went through at once skips the test there."""
    if not task.done():
        return
    if IS_WINDOWS:
        pytest.skip("the socket buffers took the whole file: the transfer cannot be made "
                    "to block")
    pytest.fail(f"the transfer was expected to block, but it ended: {task!r}")


async def _loop_still_works(loop, tmp_path) -> None:
    """A fresh small sock_sendfile goes through."""
    path = _write_file(tmp_path / "after.bin", b"still working")
    a, b = tcp_pair()
    try:
        with open(path, "rb") as f:
            assert await _transfer(loop, a, b, f, b"still working") == 13
    finally:
        a.close()
        b.close()


async def _transport_pair(*, small_buffers: bool = False):
    """(server, client transport, client protocol, server-side protocol) over
    127.0.0.1, from sockets whose buffers are small if asked."""
    loop = asyncio.get_running_loop()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    csock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if small_buffers:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)
            csock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
        lsock.bind(("127.0.0.1", 0))
        lsock.setblocking(False)
        csock.setblocking(False)
        tracker = Tracker()
        server = await loop.create_server(tracker, sock=lsock)
    except BaseException:
        lsock.close()
        csock.close()
        raise
    try:
        await _bounded(loop.sock_connect(csock, lsock.getsockname()))
        transport, client = await _bounded(loop.create_connection(Recorder, sock=csock))
    except BaseException:
        csock.close()
        server.close()
        raise
    peer = await tracker.next()
    return server, transport, client, peer


# -- 1. sock_sendfile: sizes, ranges, file position ------------------------------------


@pytest.mark.asyncio
async def test_sock_sendfile_of_an_empty_file_returns_zero(pair, tmp_path):
    loop = asyncio.get_running_loop()
    a, b = pair
    with open(_write_file(tmp_path / "empty.bin", b""), "rb") as f:
        assert await _bounded(_transfer(loop, a, b, f, b"")) == 0
        assert f.tell() == 0


@pytest.mark.asyncio
async def test_sock_sendfile_of_a_small_file(pair, tmp_path, monkeypatch):
    loop = asyncio.get_running_loop()
    a, b = pair
    _forbid_fallback(loop, monkeypatch)
    data = b"a small file\n"
    with open(_write_file(tmp_path / "small.bin", data), "rb") as f:
        assert await _bounded(_transfer(loop, a, b, f, data)) == len(data)
        assert f.tell() == len(data)


@pytest.mark.asyncio
async def test_sock_sendfile_of_a_large_file(pair, big_file, monkeypatch):
    loop = asyncio.get_running_loop()
    a, b = pair
    _forbid_fallback(loop, monkeypatch)
    path, size, sha = big_file
    with open(path, "rb") as f:
        sent, got = await _bounded(asyncio.gather(
            _sendfile_then_end(loop, a, f),
            _recv_exactly(loop, b, size + len(END), BIG_TIMEOUT)), BIG_TIMEOUT)
        assert sent == size
        assert f.tell() == size
    assert got[size:] == END
    with memoryview(got) as view:
        assert hashlib.sha256(view[:size]).hexdigest() == sha


# (offset, count) -> the slice of the file that must go out.
RANGES = [
    pytest.param(0, None, id="whole"),
    pytest.param(1000, None, id="offset-only"),
    pytest.param(0, 5000, id="count-only"),
    pytest.param(1000, 5000, id="offset-and-count"),
    pytest.param(MEDIUM_SIZE - 100, 10_000, id="count-beyond-eof"),
    pytest.param(0, MEDIUM_SIZE + 1, id="count-one-past-eof"),
    pytest.param(MEDIUM_SIZE, None, id="offset-at-eof"),
    pytest.param(MEDIUM_SIZE + 10, None, id="offset-beyond-eof"),
    pytest.param(MEDIUM_SIZE + 10, 100, id="offset-and-count-beyond-eof"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("offset, count", RANGES)
async def test_sock_sendfile_range_and_file_position(pair, medium_file, offset, count,
                                                     monkeypatch):
    loop = asyncio.get_running_loop()
    a, b = pair
    _forbid_fallback(loop, monkeypatch)
    path, data = medium_file
    expected = data[offset:offset + count] if count is not None else data[offset:]
    with open(path, "rb") as f:
        f.seek(7)   # the transfer starts at offset, whatever the position
        sent = await _bounded(_transfer(loop, a, b, f, expected, offset, count))
        assert sent == len(expected)
        # offset + sent when something was sent; else unchanged, or the
        # offset under the newer rule (the [asyncio] run checks that the
        # rule iocploop detected is the running asyncio's).
        if sent:
            assert f.tell() == offset + sent
        else:
            assert f.tell() == (offset if NEW_POSITION_RULE else 7)


@pytest.mark.asyncio
@pytest.mark.parametrize("offset, count", [
    pytest.param(2**32 - 5000, 100_000, id="across-4GiB"),
    pytest.param(2**32 - 1000, None, id="4GiB-1000-to-eof"),
    pytest.param(2**31 - 3, 10, id="across-2GiB"),
])
async def test_sock_sendfile_range_of_a_file_larger_than_4_gib(pair, tmp_path, offset, count,
                                                              monkeypatch):
    loop = asyncio.get_running_loop()
    a, b = pair
    _forbid_fallback(loop, monkeypatch)
    size = 4 * 2**30 + 123_457   # (offset 2**32 - 5000, count 100_000) lies inside
    markers = {2**31 - 2: b"<2G>", 2**32 - 4500: b"<before 4G>", 2**32 - 4: b"<across 4G>",
               2**32 + 50_000: b"<after 4G>", size - 6: b"<end!>"}
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        # Sparse on Linux and under Wine (which keeps files on the host's
        # file system); TransmitFile's 64-bit offset (OffsetHigh) is the point.
        f.truncate(size)
        for pos, marker in markers.items():
            f.seek(pos)
            f.write(marker)
    assert os.path.getsize(path) == size
    end = min(offset + count, size) if count is not None else size
    expected = bytearray(end - offset)
    for pos, marker in markers.items():
        for i, byte in enumerate(marker):
            if offset <= pos + i < end:
                expected[pos + i - offset] = byte
    assert any(expected), "the range holds no marker"
    with open(path, "rb") as f:
        sent = await _bounded(_transfer(loop, a, b, f, bytes(expected), offset, count))
        assert sent == end - offset
        assert f.tell() == end


# -- 2. loop.sendfile over a transport ------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("offset, count", [
    pytest.param(0, None, id="whole"),
    pytest.param(12345, None, id="offset"),
    pytest.param(777, STREAM_FILE_SIZE // 2, id="offset-and-count"),
])
async def test_transport_sendfile_keeps_order_with_writes(stream_file, offset, count, monkeypatch):
    loop = asyncio.get_running_loop()
    path, data = stream_file
    _forbid_fallback(loop, monkeypatch)
    header = payload(HEADER_SIZE, seed=6)
    trailer = b"trailer written after the file"
    expected_file = data[offset:offset + count] if count is not None else data[offset:]
    server, transport, client, peer = await _transport_pair(small_buffers=True)
    try:
        transport.write(header)
        # The header is still queued (small socket buffers): sendfile has to
        # wait for it to drain before the file goes out.  (Windows' stock
        # proactor counts a send already handed to the kernel as drained.)
        if is_iocploop(loop) or not IS_WINDOWS:
            assert transport.get_write_buffer_size() > 0
        with open(path, "rb") as f:
            sent = await _bounded(loop.sendfile(transport, f, offset, count), BIG_TIMEOUT)
            assert sent == len(expected_file)
            assert f.tell() == offset + sent
        assert transport.is_reading()
        transport.write(trailer)
        total = len(header) + len(expected_file) + len(trailer)
        await peer.wait_bytes(total, BIG_TIMEOUT)
        assert len(peer.data) == total
        assert peer.data[:len(header)] == header
        assert peer.data[len(header):len(header) + len(expected_file)] == expected_file
        assert peer.data[-len(trailer):] == trailer
        # Reading works again: the peer's answer reaches the client.
        peer.transport.write(b"pong")
        await client.wait_bytes(4)
        assert bytes(client.data) == b"pong"
    finally:
        await close_all(server, [transport], [client, peer])


@pytest.mark.asyncio
async def test_transport_write_while_sendfile_is_in_flight_raises(stream_file, monkeypatch):
    loop = asyncio.get_running_loop()
    path, data = stream_file
    _forbid_fallback(loop, monkeypatch)
    server, transport, client, peer = await _transport_pair(small_buffers=True)
    try:
        peer.pause_reading()   # the file cannot go out until the peer reads again
        with open(path, "rb") as f:
            task = asyncio.ensure_future(loop.sendfile(transport, f))
            for _ in range(5):
                await asyncio.sleep(0)
            await asyncio.sleep(0.05)
            _require_blocked(task)
            assert not transport.is_reading()
            with pytest.raises(RuntimeError, match="sendfile is in progress"):
                transport.write(b"too early")
            with pytest.raises(RuntimeError, match="sendfile is in progress"):
                transport.writelines([b"too", b"early"])
            peer.resume_reading()
            assert await _bounded(task, BIG_TIMEOUT) == len(data)
            assert f.tell() == len(data)
        assert transport.is_reading()
        transport.write(END)
        await peer.wait_bytes(len(data) + len(END), BIG_TIMEOUT)
        assert peer.data == data + END
    finally:
        await close_all(server, [transport], [client, peer])


@pytest.mark.asyncio
async def test_transport_sendfile_without_fallback_of_a_regular_file(medium_file, monkeypatch):
    loop = asyncio.get_running_loop()
    path, data = medium_file
    _forbid_fallback(loop, monkeypatch)
    server, transport, client, peer = await _transport_pair()
    try:
        with open(path, "rb") as f:
            sent = await _bounded(loop.sendfile(transport, f, 100, 1000, fallback=False))
            assert sent == 1000
            assert f.tell() == 1100
        transport.write(END)
        await peer.wait_bytes(1000 + len(END))
        assert peer.data == data[100:1100] + END
    finally:
        await close_all(server, [transport], [client, peer])


@pytest.mark.asyncio
@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
async def test_transport_sendfile_of_a_bytesio(fallback):
    loop = asyncio.get_running_loop()
    data = payload(100_000, seed=7)
    buf = io.BytesIO(data)
    server, transport, client, peer = await _transport_pair()
    try:
        if fallback:
            sent = await _bounded(loop.sendfile(transport, buf, 10, 50_000))
            assert sent == 50_000
            assert buf.tell() == 50_010
            expected = data[10:50_010]
        else:
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await _bounded(loop.sendfile(transport, buf, fallback=False))
            assert buf.tell() == 0
            expected = b""
        # Either way the transport is usable again: writes and reading.
        assert transport.is_reading()
        transport.write(END)
        await peer.wait_bytes(len(expected) + len(END))
        assert peer.data == expected + END
        peer.transport.write(b"pong")
        await client.wait_bytes(4)
        assert bytes(client.data) == b"pong"
    finally:
        await close_all(server, [transport], [client, peer])


@pytest.mark.asyncio
async def test_transport_sendfile_on_a_closing_transport_raises(medium_file):
    loop = asyncio.get_running_loop()
    path, _ = medium_file
    server, transport, client, peer = await _transport_pair()
    try:
        transport.close()
        with open(path, "rb") as f:
            with pytest.raises(RuntimeError, match="Transport is closing"):
                await _bounded(loop.sendfile(transport, f))
            assert f.tell() == 0
    finally:
        await close_all(server, [transport], [client, peer])


# -- 3. fallbacks and argument checks ---------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("offset, count", [(0, None), (10, None), (10, 5000)])
async def test_sock_sendfile_of_a_bytesio_falls_back(pair, offset, count):
    loop = asyncio.get_running_loop()
    a, b = pair
    data = payload(300_000, seed=8)   # more than one 256 KiB fallback block
    buf = io.BytesIO(data)
    expected = data[offset:offset + count] if count is not None else data[offset:]
    sent = await _bounded(_transfer(loop, a, b, buf, expected, offset, count))
    assert sent == len(expected)
    assert buf.tell() == offset + sent


@pytest.mark.asyncio
async def test_sock_sendfile_of_a_bytesio_without_fallback_raises(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    buf = io.BytesIO(b"no file descriptor")
    with pytest.raises(asyncio.SendfileNotAvailableError):
        await _bounded(loop.sock_sendfile(a, buf, fallback=False))
    assert buf.tell() == 0
    # Nothing went out: the next bytes on the stream are END.
    await _bounded(loop.sock_sendall(a, END))
    assert await _recv_exactly(loop, b, len(END)) == END


def _pipe_file(data: bytes):
    """The read end of a pipe holding data (write end closed), as open(fd, 'rb')."""
    r, w = os.pipe()
    try:
        os.write(w, data)
    finally:
        os.close(w)
    return open(r, "rb")


PIPE_DATA = b"data from a pipe\n" * 100


@pytest.mark.asyncio
@pytest.mark.skipif(not IS_LINUX, reason="pipes as files: Linux only")
async def test_sock_sendfile_of_a_pipe_with_count_falls_back(pair):
    loop = asyncio.get_running_loop()
    a, b = pair
    with _pipe_file(PIPE_DATA) as f:
        # asyncio's fallback seeks a pipe, which cannot seek: after sending
        # (offset + sent, in a finally), or under the newer rule before it
        # sends anything.  io.UnsupportedOperation is an OSError.
        with pytest.raises(OSError):
            await _bounded(loop.sock_sendfile(a, f, 0, 500))
    sent = b"" if NEW_POSITION_RULE else PIPE_DATA[:500]
    await _bounded(loop.sock_sendall(a, END))
    assert await _recv_exactly(loop, b, len(sent) + len(END)) == sent + END


@pytest.mark.asyncio
@pytest.mark.skipif(not IS_LINUX, reason="pipes as files: Linux only")
async def test_sock_sendfile_of_a_pipe_with_count_without_fallback_raises(pair, request):
    loop = asyncio.get_running_loop()
    if NEW_POSITION_RULE and not is_iocploop(loop):
        request.applymarker(pytest.mark.xfail(reason=ASYNCIO_LSEEKS_A_PIPE, strict=True))
    a, b = pair
    with _pipe_file(PIPE_DATA) as f:
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await _bounded(loop.sock_sendfile(a, f, 0, 500, fallback=False))
        assert f.read() == PIPE_DATA   # nothing consumed
    await _bounded(loop.sock_sendall(a, END))
    assert await _recv_exactly(loop, b, len(END)) == END


def _xfail_on_asyncio_for_pipe(request):
    if not is_iocploop(asyncio.get_running_loop()):
        request.applymarker(pytest.mark.xfail(reason=ASYNCIO_SEES_A_PIPE_EMPTY, strict=True))


@pytest.mark.asyncio
@pytest.mark.skipif(not IS_LINUX, reason="pipes as files: Linux only")
async def test_sock_sendfile_of_a_pipe_without_count_falls_back(pair, request):
    _xfail_on_asyncio_for_pipe(request)
    loop = asyncio.get_running_loop()
    a, b = pair
    with _pipe_file(PIPE_DATA) as f:
        with pytest.raises(OSError):   # as with a count (above)
            await _bounded(loop.sock_sendfile(a, f))
    sent = b"" if NEW_POSITION_RULE else PIPE_DATA
    await _bounded(loop.sock_sendall(a, END))
    assert await _recv_exactly(loop, b, len(sent) + len(END)) == sent + END


@pytest.mark.asyncio
@pytest.mark.skipif(not IS_LINUX, reason="pipes as files: Linux only")
async def test_sock_sendfile_of_a_pipe_without_count_without_fallback_raises(pair, request):
    _xfail_on_asyncio_for_pipe(request)
    loop = asyncio.get_running_loop()
    a, b = pair
    with _pipe_file(PIPE_DATA) as f:
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await _bounded(loop.sock_sendfile(a, f, fallback=False))


@pytest.mark.asyncio
async def test_sock_sendfile_on_a_datagram_socket_raises_value_error(medium_file):
    loop = asyncio.get_running_loop()
    path, _ = medium_file
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        sock.connect(sock.getsockname())
        with open(path, "rb") as f:
            with pytest.raises(ValueError, match="SOCK_STREAM"):
                await _bounded(loop.sock_sendfile(sock, f))
            assert f.tell() == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("api", ["sock_sendfile", "sendfile"])
async def test_file_in_text_mode_raises_value_error(api, tmp_path):
    loop = asyncio.get_running_loop()
    path = _write_file(tmp_path / "text.txt", b"some text\n")
    with open(path, "r") as f:
        if api == "sock_sendfile":
            a, b = tcp_pair()
            try:
                with pytest.raises(ValueError, match="binary mode"):
                    await _bounded(loop.sock_sendfile(a, f))
            finally:
                a.close()
                b.close()
        else:
            server, transport, client, peer = await _transport_pair()
            try:
                with pytest.raises(ValueError, match="binary mode"):
                    await _bounded(loop.sendfile(transport, f))
                assert transport.is_reading()
                transport.write(END)
                await peer.wait_bytes(len(END))
                assert peer.data == END
            finally:
                await close_all(server, [transport], [client, peer])
        assert f.tell() == 0


BAD_ARGS = [
    pytest.param({"offset": -1}, ValueError, id="offset=-1"),
    pytest.param({"offset": 1.0}, TypeError, id="offset=1.0"),
    pytest.param({"offset": "1"}, TypeError, id="offset='1'"),
    pytest.param({"offset": None}, TypeError, id="offset=None"),
    pytest.param({"count": 0}, ValueError, id="count=0"),
    pytest.param({"count": -5}, ValueError, id="count=-5"),
    pytest.param({"count": 1.5}, TypeError, id="count=1.5"),
    pytest.param({"count": "10"}, TypeError, id="count='10'"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("kwargs, exc_type", BAD_ARGS)
async def test_sock_sendfile_bad_offset_or_count_raises_as_asyncio(pair, medium_file, kwargs,
                                                                   exc_type):
    loop = asyncio.get_running_loop()
    a, b = pair
    path, _ = medium_file
    with open(path, "rb") as f:
        with pytest.raises(exc_type):
            await _bounded(loop.sock_sendfile(a, f, **kwargs))
        assert f.tell() == 0
    await _bounded(loop.sock_sendall(a, END))
    assert await _recv_exactly(loop, b, len(END)) == END


@pytest.mark.asyncio
@pytest.mark.parametrize("kwargs, exc_type", BAD_ARGS)
async def test_transport_sendfile_bad_offset_or_count_raises_as_asyncio(medium_file, kwargs,
                                                                        exc_type):
    loop = asyncio.get_running_loop()
    path, _ = medium_file
    server, transport, client, peer = await _transport_pair()
    try:
        with open(path, "rb") as f:
            with pytest.raises(exc_type):
                await _bounded(loop.sendfile(transport, f, **kwargs))
            assert f.tell() == 0
        # The transport is left as it was: reading, writable.
        assert transport.is_reading()
        transport.write(END)
        await peer.wait_bytes(len(END))
        assert peer.data == END
    finally:
        await close_all(server, [transport], [client, peer])


@pytest.mark.asyncio
async def test_blocking_socket_in_debug_mode_raises_value_error(medium_file):
    loop = asyncio.get_running_loop()
    path, _ = medium_file
    a, b = tcp_pair()
    loop.set_debug(True)
    try:
        a.setblocking(True)
        with open(path, "rb") as f:
            with pytest.raises(ValueError, match="non-blocking"):
                await _bounded(loop.sock_sendfile(a, f))
    finally:
        loop.set_debug(False)
        a.close()
        b.close()


# -- 4. the peer resets mid-file --------------------------------------------------------


@pytest.mark.asyncio
async def test_peer_reset_mid_file_raises_connection_error(small_pair, big_file, tmp_path):
    loop = asyncio.get_running_loop()
    a, b = small_pair
    path, size, _ = big_file
    with open(path, "rb") as f:
        task = asyncio.ensure_future(loop.sock_sendfile(a, f))
        first = await _recv_exactly(loop, b, 32 * 1024)
        await asyncio.sleep(0.05)
        _require_blocked(task)
        set_linger_reset(b)
        b.close()
        with pytest.raises(PEER_GONE):
            await _bounded(task)
        # The file position is within the file (asyncio: offset + sent, when the
        # platform counted something as sent).
        assert 0 <= f.tell() <= size
        if IS_LINUX:
            assert f.tell() >= len(first)
    await _assert_no_pending_ops(loop)
    await _loop_still_works(loop, tmp_path)


# -- 5. cancellation -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cancelled_sock_sendfile_mid_file(small_pair, big_file, tmp_path):
    loop = asyncio.get_running_loop()
    a, b = small_pair
    path, size, _ = big_file
    with open(path, "rb") as f:
        task = asyncio.ensure_future(loop.sock_sendfile(a, f))
        await asyncio.sleep(0.1)
        _require_blocked(task)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await _bounded(task)
        assert task.cancelled()
        await _assert_no_pending_ops(loop)
        position = f.tell()
        assert 0 <= position <= size
        # What went out is a prefix of the file.
        a.close()
        received = await _recv_to_eof(loop, b, BIG_TIMEOUT)
        assert 0 < len(received) < size
        f.seek(0)
        assert f.read(len(received)) == received
        if IS_LINUX and is_iocploop(loop):
            # iocploop counts every sendfile(2) result: the position is exact.
            # (Stock asyncio leaves the position alone on cancellation.)
            assert position == len(received)
    await _loop_still_works(loop, tmp_path)


# -- 6. iocploop's own parts ------------------------------------------------------------


@pytest.mark.asyncio(loop_factories=["iocploop"])
@pytest.mark.parametrize("offset, count", [
    pytest.param(12_345, 987_654, id="offset-and-count"),
    pytest.param(54_321, None, id="offset-to-eof"),
])
async def test_pieces_split_at_the_piece_limit(pair, tmp_path, monkeypatch, offset, count):
    """The platform's PIECE (TransmitFile's, sendfile(2)'s) lowered to 100 000: a
    transfer goes out in pieces no larger, covering the range exactly."""
    loop = asyncio.get_running_loop()
    _forbid_fallback(loop, monkeypatch)
    a, b = pair
    piece = 100_000
    data = payload(1_000_003, seed=9)
    path = _write_file(tmp_path / "pieces.bin", data)
    monkeypatch.setattr(sendfile_impl._platform, "PIECE", piece)
    calls = []   # (offset, count asked, count done)
    if IS_WINDOWS:
        port = loop._port
        real_sendfile = port.sendfile

        def recording_sendfile(sock, file, pos, n, callback, *args, **kwargs):
            calls.append((pos, n, n))   # a TransmitFile piece goes out whole
            return real_sendfile(sock, file, pos, n, callback, *args, **kwargs)

        monkeypatch.setattr(port, "sendfile", recording_sendfile)
    else:
        real_sendfile = os.sendfile

        def recording_sendfile(out_fd, in_fd, pos, n):
            done = real_sendfile(out_fd, in_fd, pos, n)
            calls.append((pos, n, done))
            return done

        monkeypatch.setattr(sendfile_impl.os, "sendfile", recording_sendfile)
    end = offset + count if count is not None else len(data)
    with open(path, "rb") as f:
        sent = await _bounded(_transfer(loop, a, b, f, data[offset:end], offset, count),
                              BIG_TIMEOUT)
        assert sent == end - offset
        assert f.tell() == end
    assert calls, "the native path was not taken"
    assert max(n for _, n, _ in calls) == piece
    pos = offset
    for call_pos, asked, done in calls:
        assert call_pos == pos
        assert asked == min(piece, end - pos)
        pos += done
    assert pos == end
    if IS_WINDOWS:
        assert len(calls) == -(-(end - offset) // piece)


@pytest.mark.asyncio(loop_factories=["iocploop"])
@pytest.mark.skipif(not IS_LINUX, reason="a 2 GiB transfer is for Linux only (Wine's loopback "
                    "is slow: docs/windows-under-wine.md, W16)")
async def test_sock_sendfile_of_more_than_2_gib(pair, tmp_path, monkeypatch):
    loop = asyncio.get_running_loop()
    a, b = pair
    _forbid_fallback(loop, monkeypatch)
    size = 2**31 + 65536
    markers = {0: b"<start>", 2**31 - 4: b"<across 2G>", size - 5: b"<end>"}
    path = tmp_path / "sparse2g.bin"
    with open(path, "wb") as f:
        f.truncate(size)
        for pos, marker in markers.items():
            f.seek(pos)
            f.write(marker)
    seen = {pos: bytearray(len(m)) for pos, m in markers.items()}

    async def count_bytes():
        buf = bytearray(MiB)
        got = 0
        tail = b""
        with memoryview(buf) as view:
            while got < size + len(END):
                n = await loop.sock_recv_into(b, view)
                assert n, f"EOF after {got} bytes"
                for pos, out in seen.items():   # copy what falls on a marker
                    lo, hi = max(pos, got), min(pos + len(out), got + n)
                    if lo < hi:
                        out[lo - pos:hi - pos] = view[lo - got:hi - got]
                got += n
                tail = (tail + bytes(view[max(0, n - len(END)):n]))[-len(END):]
        return got, tail

    with open(path, "rb") as f:
        started = time.monotonic()
        sent, (got, tail) = await _bounded(
            asyncio.gather(_sendfile_then_end(loop, a, f), count_bytes()), BIG_TIMEOUT)
        elapsed = time.monotonic() - started
        assert sent == size
        assert f.tell() == size
    assert got == size + len(END)
    assert tail == END
    assert {pos: bytes(out) for pos, out in seen.items()} == markers
    assert elapsed < 30, f"2 GiB took {elapsed:.1f} s"
