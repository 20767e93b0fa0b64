"""Which thread may use a loop's ring (Linux; Windows' port takes any thread).

On Linux a loop's io_uring ring is set up with IORING_SETUP_DEFER_TASKRUN:
the kernel's completion work waits for the loop's own io_uring_enter (less
CPU per request), and only the creating thread may enter the ring.  What a
user of asyncio still gets: a loop made in one thread and run in another
works (the ring is set up anew, for any thread, while nothing is in
flight) and closes cleanly from the first; what cannot work says so.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import warnings

import pytest

import iocploop
from iocploop._ioc import lib
from _helpers import IS_LINUX, TIMEOUT

linux_only = pytest.mark.skipif(not IS_LINUX, reason="a Windows completion port takes any thread")


def ring_thread(loop) -> int:
    """1: only this thread may enter the ring; -1: only another; 0: any."""
    return lib.ioc_ring_thread(loop._port._core)


def in_thread(fn):
    """fn() in a new thread, joined; its result, or its exception raised here."""
    out = {}

    def body():
        try:
            out["result"] = fn()
        except BaseException as exc:
            out["error"] = exc

    th = threading.Thread(target=body)
    th.start()
    th.join(TIMEOUT)
    assert not th.is_alive()
    if "error" in out:
        raise out["error"]
    return out["result"]


async def echo_once(payload: bytes) -> bytes:
    """One round trip through a server of the running loop."""
    async def serve(reader, writer):
        writer.write(await reader.readexactly(len(payload)))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(payload)
        got = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        return got
    finally:
        server.close()
        await server.wait_closed()


@linux_only
def test_a_loop_run_in_its_creating_thread_defers_to_its_own_enter():
    async def main():
        assert await echo_once(b"ping") == b"ping"
        return ring_thread(asyncio.get_running_loop())

    state = iocploop.run(main())
    if state == 0:
        pytest.skip("this kernel refused IORING_SETUP_DEFER_TASKRUN (Linux 6.1+): "
                    "the ring takes any thread")
    assert state == 1


def test_a_loop_made_in_one_thread_runs_in_another_and_closes_in_the_first():
    """The common pattern of a background loop: nothing in flight when the
    other thread first runs it, so its ring moves; closing it afterwards
    from the first thread leaves nothing behind."""
    loop = iocploop.new_event_loop()
    try:
        def run_there():
            got = loop.run_until_complete(echo_once(b"x" * 100_000))
            return got, ring_thread(loop)

        got, state_there = in_thread(run_there)
        assert got == b"x" * 100_000
        assert state_there == 0   # set up anew: any thread may enter it now
        # And the first thread may run it again.
        assert loop.run_until_complete(echo_once(b"again")) == b"again"
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            loop.close()


@linux_only
def test_running_a_loop_in_another_thread_with_io_in_flight_says_why_it_cannot():
    loop = iocploop.new_event_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        state = ring_thread(loop)
        if state == 0:
            pytest.skip("this kernel refused IORING_SETUP_DEFER_TASKRUN: any thread may run it")
        # A readiness watch stays posted in the ring: I/O in flight.
        loop.run_until_complete(asyncio.sleep(0))
        loop.add_reader(listener.fileno(), lambda: None)
        loop.run_until_complete(asyncio.sleep(0.01))

        with pytest.raises(RuntimeError, match="belongs to the thread that created the loop"):
            in_thread(lambda: loop.run_until_complete(asyncio.sleep(0.01)))
        # Its own thread still runs it, and its I/O still works.
        loop.remove_reader(listener.fileno())
        assert loop.run_until_complete(echo_once(b"still")) == b"still"
    finally:
        listener.close()
        loop.close()


CLOSE_FROM_ANOTHER_THREAD = """
import asyncio, socket, threading, warnings
import iocploop
from iocploop._ioc import lib
listener = socket.create_server(("127.0.0.1", 0))
made = []
def make_and_run():
    loop = iocploop.new_event_loop()
    loop.add_reader(listener.fileno(), lambda: None)
    loop.run_until_complete(asyncio.sleep(0.01))
    made.append(loop)
th = threading.Thread(target=make_and_run)
th.start()
th.join()
loop = made[0]
print("ring thread", lib.ioc_ring_thread(loop._port._core))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loop.close()
print("closed", loop.is_closed())
for w in caught:
    print(w.category.__name__, w.message)
"""


@linux_only
def test_closing_from_another_thread_with_io_in_flight_warns_and_keeps_the_memory():
    """Only the ring's thread can cancel what is in flight; another thread's
    close keeps those operations' records and buffers for good, as a close
    whose operations outlive the drain does, and says why.  In a child
    process: that memory is kept on purpose, and the sanitizer build
    (tools/asan.sh) would report it."""
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    out = subprocess.run([sys.executable, "-c", CLOSE_FROM_ANOTHER_THREAD], env=env,
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    if "ring thread 0" in out.stdout:
        pytest.skip("this kernel refused IORING_SETUP_DEFER_TASKRUN: any thread may close it")
    assert "ring thread -1" in out.stdout
    assert "closed True" in out.stdout
    assert "ResourceWarning" in out.stdout
    assert "other than the one that created it" in out.stdout
