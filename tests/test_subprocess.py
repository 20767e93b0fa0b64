"""Subprocesses through asyncio's API: create_subprocess_exec/_shell and the
low-level loop.subprocess_exec/_shell with a SubprocessProtocol.  Big I/O
through each pipe, children that exit early or never read their input, kill,
terminate and signals, wait/returncode/communicate, stdout=PIPE with
stderr=STDOUT, DEVNULL, pass_fds, env and cwd, a missing program, concurrent
children, the protocol's callback order and StreamReader backpressure.

Every async test runs on iocploop and on stock asyncio (the reference: the
selector loop on Linux, ProactorEventLoop on Windows).  Children are
`sys.executable -c` scripts; each test starts as few of them as it can (a
child start costs up to a second under Wine).
"""
from __future__ import annotations

import asyncio
import errno
import functools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from _helpers import IS_LINUX, IS_WINDOWS, TIMEOUT, bounded, until

PIPE = asyncio.subprocess.PIPE
STDOUT = asyncio.subprocess.STDOUT
DEVNULL = asyncio.subprocess.DEVNULL

MiB = 1 << 20
#: The size the issue asks for through each pipe, on both systems.
BIG = 10 * MiB
#: 10 MiB through a child Python and back takes seconds under Wine.
BIG_TIMEOUT = 60.0 if IS_WINDOWS else 20.0

#: Return codes of a child ended by kill() / terminate(): the signal number,
#: negated, on POSIX; TerminateProcess(handle, 1) on Windows.
KILLED = 1 if IS_WINDOWS else -signal.SIGKILL
TERMINATED = 1 if IS_WINDOWS else -signal.SIGTERM


@functools.lru_cache(maxsize=2)
def _data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def py(script: str) -> list[str]:
    """argv of a child Python that runs script."""
    return [sys.executable, "-c", textwrap.dedent(script)]


def fd_count():
    """Open file descriptors of this process (Linux); None elsewhere."""
    return len(os.listdir("/proc/self/fd")) if IS_LINUX else None


async def reap(proc) -> None:
    """Make sure a child of a failed test does not outlive it."""
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(proc.wait(), TIMEOUT)
        except (asyncio.TimeoutError, OSError):
            pass


# Child scripts.  Binary I/O through sys.std*.buffer: no newline translation
# on Windows.
COPY_STDIN_TO_STDOUT = """
    import shutil, sys
    shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer, 1 << 16)
"""

COPY_STDIN_TO_STDERR = """
    import sys
    n = 0
    while True:
        chunk = sys.stdin.buffer.read(1 << 16)
        if not chunk:
            break
        sys.stderr.buffer.write(chunk)
        n += len(chunk)
    sys.stderr.flush()
    sys.stdout.buffer.write(b"copied %d" % n)
"""

READY_THEN_SLEEP = """
    import sys, time
    sys.stdout.buffer.write(b"ready\\n")
    sys.stdout.flush()
    time.sleep(30)
"""


# -- 10 MiB through each pipe ------------------------------------------------------


@pytest.mark.asyncio
async def test_10_mib_through_stdin_and_stdout():
    data = _data(BIG)
    proc = await bounded(asyncio.create_subprocess_exec(
        *py(COPY_STDIN_TO_STDOUT), stdin=PIPE, stdout=PIPE))
    try:
        out, err = await bounded(proc.communicate(data), BIG_TIMEOUT)
    finally:
        await reap(proc)
    assert err is None
    assert len(out) == len(data)
    assert out == data
    assert proc.returncode == 0


@pytest.mark.asyncio
async def test_10_mib_through_stderr_while_stdout_is_read_too():
    data = _data(BIG, seed=1)
    proc = await bounded(asyncio.create_subprocess_exec(
        *py(COPY_STDIN_TO_STDERR), stdin=PIPE, stdout=PIPE, stderr=PIPE))
    try:
        out, err = await bounded(proc.communicate(data), BIG_TIMEOUT)
    finally:
        await reap(proc)
    assert out == b"copied %d" % len(data)
    assert len(err) == len(data)
    assert err == data
    assert proc.returncode == 0


@pytest.mark.asyncio
async def test_stream_write_and_drain_while_reading_stdout():
    # StreamWriter.drain() on the stdin pipe waits for the child to take the
    # data; stdout is read at the same time.  write_eof() ends the input.
    data = _data(4 * MiB, seed=2)
    proc = await bounded(asyncio.create_subprocess_exec(
        *py(COPY_STDIN_TO_STDOUT), stdin=PIPE, stdout=PIPE))
    try:
        assert proc.stdin.can_write_eof()

        async def feed():
            for i in range(0, len(data), 256 * 1024):
                proc.stdin.write(data[i:i + 256 * 1024])
                await proc.stdin.drain()
            proc.stdin.write_eof()
            await proc.stdin.wait_closed()

        _, out = await bounded(asyncio.gather(feed(), proc.stdout.read()), BIG_TIMEOUT)
        assert proc.stdin.is_closing()
        assert await bounded(proc.wait()) == 0
    finally:
        await reap(proc)
    assert out == data


# -- children that exit early or never read -----------------------------------------


@pytest.mark.asyncio
async def test_communicate_with_a_child_that_exits_before_reading_all_input():
    data = _data(BIG)
    proc = await bounded(asyncio.create_subprocess_exec(*py("""
        import sys
        head = sys.stdin.buffer.read(10)
        sys.stdout.buffer.write(head)
        sys.exit(3)
    """), stdin=PIPE, stdout=PIPE))
    try:
        # The broken pipe is swallowed by communicate(), as asyncio does.
        out, err = await bounded(proc.communicate(data), BIG_TIMEOUT)
    finally:
        await reap(proc)
    assert out == data[:10]
    assert err is None
    assert proc.returncode == 3


@pytest.mark.asyncio
async def test_communicate_with_a_child_that_never_reads_stdin():
    proc = await bounded(asyncio.create_subprocess_exec(*py("""
        import sys, time
        sys.stdout.buffer.write(b"not reading")
        sys.stdout.flush()
        time.sleep(0.2)
    """), stdin=PIPE, stdout=PIPE, stderr=PIPE))
    try:
        out, err = await bounded(proc.communicate(_data(BIG)), BIG_TIMEOUT)
    finally:
        await reap(proc)
    assert (out, err) == (b"not reading", b"")
    assert proc.returncode == 0


@pytest.mark.asyncio
async def test_writing_while_the_child_exits_raises_a_broken_pipe_at_drain():
    proc = await bounded(asyncio.create_subprocess_exec(*py("""
        import sys
        sys.stdin.buffer.read(100)
        sys.stdout.buffer.write(b"bye")
        sys.exit(3)
    """), stdin=PIPE, stdout=PIPE))
    try:
        chunk = b"w" * (64 * 1024)
        written = 0
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            while written < BIG:   # a pipe never holds 10 MiB: the error comes first
                proc.stdin.write(chunk)
                written += len(chunk)
                await bounded(proc.stdin.drain())
        assert written < BIG
        assert proc.stdin.is_closing()
        # Later writes are dropped silently, as asyncio's pipe transports do.
        proc.stdin.write(b"dropped")
        assert await bounded(proc.stdout.read()) == b"bye"
        assert await bounded(proc.wait()) == 3
    finally:
        await reap(proc)


@pytest.mark.asyncio
async def test_stdout_eof_comes_before_exit_when_the_child_closes_it():
    # The stdout pipe ends when the child closes it, not when the child exits.
    proc = await bounded(asyncio.create_subprocess_exec(*py("""
        import os, sys
        sys.stdout.buffer.write(b"bye\\n")
        sys.stdout.flush()
        os.close(1)
        sys.stdin.buffer.read()
    """), stdin=PIPE, stdout=PIPE, stderr=PIPE))
    try:
        assert await bounded(proc.stdout.read()) == b"bye\n"
        assert proc.stdout.at_eof()
        await asyncio.sleep(0.05)
        assert proc.returncode is None
        proc.stdin.close()
        assert await bounded(proc.wait()) == 0
        assert await bounded(proc.stderr.read()) == b""
    finally:
        await reap(proc)


@pytest.mark.asyncio
async def test_output_written_before_exit_is_readable_after_wait():
    data = _data(1000, seed=3)
    proc = await bounded(asyncio.create_subprocess_exec(*py(f"""
        import sys
        sys.stdout.buffer.write(bytes.fromhex("{data.hex()}"))
    """), stdout=PIPE))
    try:
        assert await bounded(proc.wait()) == 0
        assert await bounded(proc.stdout.read()) == data
    finally:
        await reap(proc)


@pytest.mark.asyncio
async def test_many_small_writes_from_the_child_arrive_in_order():
    lines = 2000
    proc = await bounded(asyncio.create_subprocess_exec(*py(f"""
        import sys
        for i in range({lines}):
            sys.stdout.buffer.write(b"line %d\\n" % i)
            sys.stdout.flush()
    """), stdout=PIPE))
    try:
        for i in range(lines):
            assert await bounded(proc.stdout.readline()) == b"line %d\n" % i
        assert await bounded(proc.stdout.readline()) == b""
        assert await bounded(proc.wait()) == 0
    finally:
        await reap(proc)


# -- kill, terminate, send_signal ---------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("method, expected", [("kill", KILLED), ("terminate", TERMINATED)])
async def test_kill_and_terminate_end_a_sleeping_child(method, expected):
    proc = await bounded(asyncio.create_subprocess_exec(*py(READY_THEN_SLEEP), stdout=PIPE))
    try:
        assert await bounded(proc.stdout.readline()) == b"ready\n"
        assert proc.returncode is None
        started = time.monotonic()
        getattr(proc, method)()
        assert await bounded(proc.wait()) == expected
        assert time.monotonic() - started < TIMEOUT
        assert proc.returncode == expected
        assert await bounded(proc.stdout.read()) == b""
        # Once the transport has finished, asyncio has no process to signal.
        with pytest.raises(ProcessLookupError):
            getattr(proc, method)()
    finally:
        await reap(proc)


@pytest.mark.asyncio
async def test_communicate_cut_by_a_timeout_then_kill():
    proc = await bounded(asyncio.create_subprocess_exec(
        *py(READY_THEN_SLEEP), stdin=PIPE, stdout=PIPE))
    try:
        assert await bounded(proc.stdout.readline()) == b"ready\n"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.communicate(b"unread"), 0.2)
        assert proc.returncode is None
        proc.kill()
        assert await bounded(proc.wait()) == KILLED
    finally:
        await reap(proc)


@pytest.mark.asyncio
async def test_send_signal():
    if IS_WINDOWS:
        # Windows: send_signal(SIGTERM) is terminate(); other signals are
        # console events that need a console group.
        proc = await bounded(asyncio.create_subprocess_exec(*py(READY_THEN_SLEEP), stdout=PIPE))
        try:
            assert await bounded(proc.stdout.readline()) == b"ready\n"
            proc.send_signal(signal.SIGTERM)
            assert await bounded(proc.wait()) == TERMINATED
        finally:
            await reap(proc)
        return
    proc = await bounded(asyncio.create_subprocess_exec(*py("""
        import signal, sys, time
        def handler(signum, frame):
            sys.stdout.buffer.write(b"got %d\\n" % signum)
            sys.stdout.flush()
            sys.exit(7)
        signal.signal(signal.SIGUSR1, handler)
        sys.stdout.buffer.write(b"ready\\n")
        sys.stdout.flush()
        time.sleep(30)
    """), stdout=PIPE))
    try:
        assert await bounded(proc.stdout.readline()) == b"ready\n"
        proc.send_signal(signal.SIGUSR1)
        assert await bounded(proc.stdout.readline()) == b"got %d\n" % signal.SIGUSR1
        assert await bounded(proc.wait()) == 7
    finally:
        await reap(proc)


# -- wait, returncode, communicate ----------------------------------------------------


@pytest.mark.asyncio
async def test_wait_returncode_and_concurrent_waiters():
    proc = await bounded(asyncio.create_subprocess_exec(*py("""
        import sys
        sys.stdin.buffer.read()
        sys.exit(5)
    """), stdin=PIPE))
    try:
        assert isinstance(proc.pid, int) and proc.pid > 0
        assert proc.stdout is None and proc.stderr is None
        waiters = [asyncio.ensure_future(proc.wait()) for _ in range(2)]
        await asyncio.sleep(0.1)
        assert not any(w.done() for w in waiters)
        assert proc.returncode is None
        proc.stdin.close()
        assert await bounded(asyncio.gather(*waiters)) == [5, 5]
        assert proc.returncode == 5
        assert await bounded(proc.wait()) == 5
    finally:
        await reap(proc)


@pytest.mark.asyncio
async def test_communicate_returns_stdout_and_stderr():
    proc = await bounded(asyncio.create_subprocess_exec(*py("""
        import sys
        data = sys.stdin.buffer.read()
        sys.stdout.buffer.write(data.upper())
        sys.stderr.buffer.write(data[::-1])
        sys.exit(2)
    """), stdin=PIPE, stdout=PIPE, stderr=PIPE))
    try:
        out, err = await bounded(proc.communicate(b"abc"))
    finally:
        await reap(proc)
    assert (out, err) == (b"ABC", b"cba")
    assert proc.returncode == 2


# -- shell -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_create_subprocess_shell():
    # The same line works in /bin/sh and in cmd.exe.
    proc = await bounded(asyncio.create_subprocess_shell(
        "echo hello&& exit 3", stdout=PIPE, stderr=PIPE))
    try:
        out, err = await bounded(proc.communicate())
    finally:
        await reap(proc)
    assert out.strip() == b"hello"
    assert err == b""
    assert proc.returncode == 3


# -- stdio redirections, pass_fds, env and cwd ----------------------------------------


@pytest.mark.asyncio
async def test_stderr_to_stdout():
    proc = await bounded(asyncio.create_subprocess_exec(*py("""
        import sys
        for stream, line in ((sys.stdout, b"one\\n"), (sys.stderr, b"two\\n"),
                             (sys.stdout, b"three\\n")):
            stream.buffer.write(line)
            stream.flush()
    """), stdout=PIPE, stderr=STDOUT))
    try:
        assert proc.stderr is None
        out, err = await bounded(proc.communicate())
    finally:
        await reap(proc)
    assert out == b"one\ntwo\nthree\n"
    assert err is None
    assert proc.returncode == 0


@pytest.mark.asyncio
async def test_devnull_stdin_and_stderr():
    proc = await bounded(asyncio.create_subprocess_exec(*py("""
        import sys
        data = sys.stdin.buffer.read()
        sys.stderr.buffer.write(b"to devnull")
        sys.stdout.buffer.write(b"stdin gave %d bytes" % len(data))
    """), stdin=DEVNULL, stdout=PIPE, stderr=DEVNULL))
    try:
        assert proc.stdin is None and proc.stderr is None
        out, err = await bounded(proc.communicate())
    finally:
        await reap(proc)
    assert (out, err) == (b"stdin gave 0 bytes", None)
    assert proc.returncode == 0


@pytest.mark.asyncio
@pytest.mark.skipif(not IS_LINUX, reason="pass_fds is POSIX only")
async def test_pass_fds():
    # The child writes to the write end of an os.pipe() it got through
    # pass_fds; the parent reads the other end through a read-pipe transport.
    loop = asyncio.get_running_loop()
    passed_r, passed_w = os.pipe()
    other_r, other_w = os.pipe()
    reader = asyncio.StreamReader()
    rt = None
    try:
        proc = await bounded(asyncio.create_subprocess_exec(*py("""
            import os, sys
            passed, other = map(int, sys.argv[1:])
            os.write(passed, b"through the passed fd")
            try:
                os.fstat(other)
                sys.stdout.buffer.write(b"inherited")
            except OSError as exc:
                sys.stdout.buffer.write(b"errno %d" % exc.errno)
        """), str(passed_w), str(other_w), stdout=PIPE, pass_fds=(passed_w,)))
        os.close(passed_w)
        passed_w = None
        rt, _ = await bounded(loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), open(passed_r, "rb", buffering=0)))
        passed_r = None   # the transport's now
        try:
            out, _ = await bounded(proc.communicate())
        finally:
            await reap(proc)
        assert proc.returncode == 0
        # EOF once the child, the last holder of the write end, is gone.
        assert await bounded(reader.read()) == b"through the passed fd"
        # close_fds=True (the default): fds not in pass_fds stay behind.
        assert out == b"errno %d" % errno.EBADF
    finally:
        if rt is not None:
            rt.close()
        for fd in (passed_r, passed_w, other_r, other_w):
            if fd is not None:
                os.close(fd)


@pytest.mark.asyncio
async def test_env_and_cwd(tmp_path, monkeypatch):
    monkeypatch.setenv("IOCPLOOP_PARENT_ONLY", "parent")
    env = dict(os.environ)
    del env["IOCPLOOP_PARENT_ONLY"]
    env["IOCPLOOP_TEST_VALUE"] = "a value with spaces"
    proc = await bounded(asyncio.create_subprocess_exec(*py("""
        import os, sys
        report = [os.environ.get("IOCPLOOP_TEST_VALUE"),
                  os.environ.get("IOCPLOOP_PARENT_ONLY"), os.getcwd()]
        sys.stdout.buffer.write(repr(report).encode("utf-8"))
    """), stdout=PIPE, env=env, cwd=str(tmp_path)))
    try:
        out, _ = await bounded(proc.communicate())
    finally:
        await reap(proc)
    assert proc.returncode == 0
    value, parent_only, cwd = eval(out.decode("utf-8"))
    assert value == "a value with spaces"
    assert parent_only is None
    assert os.path.samefile(cwd, tmp_path)


@pytest.mark.asyncio
async def test_missing_program_raises_file_not_found(tmp_path):
    loop = asyncio.get_running_loop()
    missing = str(tmp_path / "no-such-program")
    fds_before = fd_count()
    with pytest.raises(FileNotFoundError):
        await bounded(asyncio.create_subprocess_exec(missing, stdin=PIPE, stdout=PIPE, stderr=PIPE))
    with pytest.raises(FileNotFoundError):
        await bounded(loop.subprocess_exec(asyncio.SubprocessProtocol, missing, stdout=PIPE))
    if IS_LINUX:
        # The pipes made for the child that never started are closed again.
        assert fd_count() == fds_before
    # The loop goes on working.
    assert await bounded(asyncio.sleep(0.01, "alive")) == "alive"


@pytest.mark.asyncio
async def test_invalid_arguments_are_refused_before_starting_anything():
    loop = asyncio.get_running_loop()
    argv = py("pass")
    factory = asyncio.SubprocessProtocol
    for kwargs in ({"universal_newlines": True}, {"shell": True}, {"bufsize": 1},
                   {"text": True}, {"encoding": "utf-8"}, {"errors": "strict"}):
        with pytest.raises(ValueError):
            await bounded(loop.subprocess_exec(factory, *argv, **kwargs))
    with pytest.raises(ValueError):
        await bounded(loop.subprocess_shell(factory, ["echo", "list"]))
    for kwargs in ({"universal_newlines": True}, {"shell": False}, {"bufsize": 1}):
        with pytest.raises(ValueError):
            await bounded(loop.subprocess_shell(factory, "echo x", **kwargs))


# -- many children ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_five_concurrent_children():
    script = py("""
        import sys
        data = sys.stdin.buffer.read()
        sys.stdout.buffer.write(data[::-1])
        sys.exit(len(data) % 100)
    """)

    async def one(i):
        proc = await asyncio.create_subprocess_exec(*script, stdin=PIPE, stdout=PIPE)
        try:
            out, _ = await proc.communicate(b"child %d;" % i * (i + 1))
        finally:
            await reap(proc)
        return proc.pid, out, proc.returncode

    fds_before = fd_count()
    results = await bounded(asyncio.gather(*(one(i) for i in range(5))), 2 * BIG_TIMEOUT)
    # Every pipe (and, where the loop uses one, every process handle) closed.
    await until(lambda: fd_count() == fds_before)
    for i, (pid, out, returncode) in enumerate(results):
        sent = b"child %d;" % i * (i + 1)
        assert out == sent[::-1]
        assert returncode == len(sent) % 100
    assert len({pid for pid, _, _ in results}) == 5


# -- the low-level API and the protocol's callbacks ---------------------------------------


class ProcRecorder(asyncio.SubprocessProtocol):
    """Records every callback; futures for process_exited and connection_lost."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.transport = None
        self.events: list[tuple] = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.exited = loop.create_future()
        self.lost = loop.create_future()
        self.resumed = loop.create_future()
        self.returncode_at_exit = "not called"

    def connection_made(self, transport):
        self.events.append(("made",))
        self.transport = transport

    def pipe_data_received(self, fd, data):
        assert isinstance(data, (bytes, bytearray))
        self.events.append(("data", fd))
        self.data[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd, exc))

    def pause_writing(self):
        self.events.append(("pause_writing",))

    def resume_writing(self):
        self.events.append(("resume_writing",))
        self.resumed.set_result(None)

    def process_exited(self):
        self.events.append(("exited",))
        self.returncode_at_exit = self.transport.get_returncode()
        self.exited.set_result(None)

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.lost.set_result(exc)


def check_callback_order(proto: ProcRecorder, fds) -> None:
    events = proto.events
    assert events[0] == ("made",)
    assert events.count(("made",)) == 1
    assert events.count(("exited",)) == 1
    assert events[-1] == ("lost", None)
    assert sum(1 for e in events if e[0] == "lost") == 1
    for fd in fds:
        lost = [i for i, e in enumerate(events) if e[:2] == ("pipe_lost", fd)]
        assert len(lost) == 1, (fd, events)
        assert events[lost[0]][2] is None
        # No data for a pipe after its pipe_connection_lost.
        assert all(i < lost[0] for i, e in enumerate(events) if e == ("data", fd))


@pytest.mark.asyncio
async def test_subprocess_exec_protocol_callbacks_and_transport():
    loop = asyncio.get_running_loop()
    transport, proto = await bounded(loop.subprocess_exec(ProcRecorder, *py("""
        import os, sys
        sys.stdout.buffer.write(b"%d\\n" % os.getpid())
        sys.stdout.flush()
        data = sys.stdin.buffer.read()
        sys.stderr.buffer.write(b"err:" + data)
        sys.stderr.flush()
        sys.stdout.buffer.write(b"out:" + data)
        sys.exit(4)
    """), stdin=PIPE, stdout=PIPE, stderr=PIPE))
    try:
        # connection_made comes before subprocess_exec() returns.
        assert proto.events == [("made",)]
        assert proto.transport is transport
        assert isinstance(transport, asyncio.SubprocessTransport)
        pid = transport.get_pid()
        assert isinstance(pid, int) and pid > 0
        assert transport.get_extra_info("subprocess").pid == pid
        assert transport.get_returncode() is None
        assert not transport.is_closing()
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        assert isinstance(transport.get_pipe_transport(1), asyncio.ReadTransport)
        assert isinstance(transport.get_pipe_transport(2), asyncio.ReadTransport)
        assert transport.get_pipe_transport(3) is None

        await until(lambda: proto.data[1].endswith(b"\n"))
        assert int(proto.data[1]) == pid
        stdin.write(b"ping")
        stdin.write_eof()
        assert await bounded(proto.lost) is None
    finally:
        transport.close()
    assert bytes(proto.data[1]) == b"%d\nout:ping" % pid
    assert bytes(proto.data[2]) == b"err:ping"
    assert proto.returncode_at_exit == 4
    assert transport.get_returncode() == 4
    assert transport.is_closing()
    check_callback_order(proto, fds=(0, 1, 2))


@pytest.mark.asyncio
async def test_subprocess_protocol_write_flow_control():
    # The stdin pipe's pause_writing/resume_writing reach the
    # SubprocessProtocol while the child is not reading yet.
    loop = asyncio.get_running_loop()
    data = _data(MiB, seed=4)
    transport, proto = await bounded(loop.subprocess_exec(ProcRecorder, *py("""
        import sys, time
        time.sleep(0.2)
        data = sys.stdin.buffer.read()
        sys.stdout.buffer.write(b"%d" % len(data))
    """), stdin=PIPE, stdout=PIPE))
    try:
        stdin = transport.get_pipe_transport(0)
        stdin.write(data)
        assert ("pause_writing",) in proto.events
        assert stdin.get_write_buffer_size() > 0
        await bounded(proto.resumed)
        stdin.write_eof()
        assert await bounded(proto.lost) is None
    finally:
        transport.close()
    assert bytes(proto.data[1]) == b"%d" % len(data)
    assert proto.events.count(("pause_writing",)) == 1
    assert proto.events.count(("resume_writing",)) == 1
    assert proto.events.index(("pause_writing",)) < proto.events.index(("resume_writing",))
    assert transport.get_returncode() == 0
    check_callback_order(proto, fds=(0, 1))


@pytest.mark.asyncio
async def test_subprocess_exec_without_pipes():
    loop = asyncio.get_running_loop()
    transport, proto = await bounded(loop.subprocess_exec(
        ProcRecorder, *py("import sys; sys.exit(9)"),
        stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL))
    try:
        assert all(transport.get_pipe_transport(fd) is None for fd in (0, 1, 2))
        assert await bounded(proto.lost) is None
    finally:
        transport.close()
    assert proto.events == [("made",), ("exited",), ("lost", None)]
    assert transport.get_returncode() == 9


@pytest.mark.asyncio
async def test_subprocess_shell_protocol():
    loop = asyncio.get_running_loop()
    transport, proto = await bounded(loop.subprocess_shell(
        ProcRecorder, "echo shell", stdin=DEVNULL, stdout=PIPE, stderr=PIPE))
    try:
        assert await bounded(proto.lost) is None
    finally:
        transport.close()
    assert bytes(proto.data[1]).strip() == b"shell"
    assert bytes(proto.data[2]) == b""
    assert transport.get_returncode() == 0
    check_callback_order(proto, fds=(1, 2))


@pytest.mark.asyncio
async def test_transport_close_kills_a_running_child():
    loop = asyncio.get_running_loop()
    transport, proto = await bounded(loop.subprocess_exec(
        ProcRecorder, *py(READY_THEN_SLEEP), stdin=PIPE, stdout=PIPE))
    try:
        await until(lambda: bytes(proto.data[1]) == b"ready\n")
        started = time.monotonic()
        transport.close()
        assert transport.is_closing()
        transport.close()   # a second close is a no-op
        # The child is killed; the protocol still hears of its exit, then of
        # the end of the transport.
        assert await bounded(proto.lost) is None
        assert time.monotonic() - started < TIMEOUT
    finally:
        transport.close()
    assert proto.returncode_at_exit == KILLED
    assert transport.get_returncode() == KILLED
    check_callback_order(proto, fds=(0, 1))


# -- StreamReader backpressure -----------------------------------------------------------


@pytest.mark.asyncio
async def test_stream_reader_backpressure_holds_back_a_fast_child():
    limit = 64 * 1024
    chunks = 128   # 8 MiB in 64 KiB chunks, each filled with its index
    proc = await bounded(asyncio.create_subprocess_exec(*py(f"""
        import sys
        for i in range({chunks}):
            sys.stdout.buffer.write(bytes([i % 256]) * 65536)
        sys.stdout.flush()
    """), stdout=PIPE, limit=limit))
    try:
        # Nobody reads: the reader pauses its pipe, the OS pipe fills and the
        # child blocks long before it has written everything.
        await until(lambda: len(proc.stdout._buffer) >= 2 * limit)
        await asyncio.sleep(0.3)
        assert proc.returncode is None
        # Paused at 2 * limit; at most one more read of the transport after it.
        assert len(proc.stdout._buffer) <= 2 * limit + 256 * 1024
        # Now read it all, slowly.
        got = bytearray()
        reads = 0
        while True:
            part = await bounded(proc.stdout.read(limit // 2))
            if not part:
                break
            got += part
            reads += 1
            if reads % 16 == 0:
                await asyncio.sleep(0.002)
                assert len(proc.stdout._buffer) <= 2 * limit + 256 * 1024
        assert await bounded(proc.wait()) == 0
    finally:
        await reap(proc)
    assert len(got) == chunks * 65536
    for i in range(chunks):
        block = got[i * 65536:(i + 1) * 65536]
        assert block == bytes([i % 256]) * 65536, f"chunk {i} differs"


# -- creation cancelled ------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("pipes", [
    dict(stdin=PIPE, stdout=PIPE, stderr=PIPE),
    dict(stdin=PIPE, stdout=DEVNULL, stderr=DEVNULL),
    dict(stdin=DEVNULL, stdout=PIPE, stderr=DEVNULL),
], ids=["all-pipes", "stdin-only", "stdout-only"])
async def test_cancelling_subprocess_exec_right_after_start_kills_the_child(pipes):
    # CPython's test_cancel_post_init: the cancel lands while the pipes are
    # being connected.  The loop kills the child and waits for its exit
    # before the CancelledError reaches the caller; it must not hang (a pipe
    # whose end of file came at once once lost its connection before the
    # transport had recorded it, and the transport never finished).
    loop = asyncio.get_running_loop()
    protos = []

    def factory():
        protos.append(ProcRecorder())
        return protos[-1]

    task = loop.create_task(loop.subprocess_exec(
        factory, *py("import time; time.sleep(60)"), **pipes))
    loop.call_soon(task.cancel)
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await bounded(task)
    assert time.monotonic() - started < TIMEOUT
    # The protocol is still told of the child's end, killed.
    proto, = protos
    await bounded(proto.lost)
    assert proto.returncode_at_exit == KILLED
