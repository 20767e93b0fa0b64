"""References and memory through the compiled sock_* methods (_sockops.pxi).

Two tasks of one loop play ping-pong over a socket pair with sock_sendall
and sock_recv / sock_recv_into: each round trip is two compiled receive
operations (submitted to the core, completed from C) and two sends.  Over
250,000 round trips (a million calls) on Linux the process's memory (RSS),
the memory Python tracks (tracemalloc), the reference counts of the payload
and of the receiving buffer, and the engine's table of operations in flight
stay flat.  A second test cancels 100,000 receives, half of them after
their data came (the stash path), and counts the same things.

Under Wine (slow) and under the AddressSanitizer (its quarantine grows RSS
by design) smaller runs check tracemalloc and the reference counts.
"""
from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
import tracemalloc

import iocploop
from _helpers import IS_LINUX, rss_bytes

UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
FULL = IS_LINUX and not UNDER_ASAN
ROUND_TRIPS = 250_000 if FULL else 3_000
CANCELS = 100_000 if FULL else 2_000
PAYLOAD = b"x" * 1024


def _pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _in_flight(loop) -> int:
    return loop._sock_engine.in_flight_count


async def _memory_stays_flat(run, count: int) -> None:
    """await run(count) twice: the first settles what tracemalloc sees, the
    second must grow neither traced memory nor (Linux) the process's RSS."""
    rss_before = rss_bytes() if FULL else None
    tracemalloc.start()
    try:
        await run(count)
        traced_before = tracemalloc.get_traced_memory()[0]
        await run(count)
        traced_after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert traced_after - traced_before < 64 * 1024, (traced_before, traced_after)
    if FULL:
        assert rss_bytes() - rss_before < 4 * 1024 * 1024, "RSS grew by more than 4 MiB"


def test_round_trips_leave_memory_and_references_flat():
    loop = iocploop.new_event_loop()
    a, b = _pair()
    into = bytearray(4096)

    async def echo():
        while data := await loop.sock_recv(a, 4096):
            await loop.sock_sendall(a, data)

    async def ping(rounds):
        for _ in range(rounds):
            await loop.sock_sendall(b, PAYLOAD)
            got = 0
            while got < len(PAYLOAD):
                got += await loop.sock_recv_into(b, into)

    async def main():
        echoing = loop.create_task(echo())
        await ping(ROUND_TRIPS // 10)
        gc.collect()
        refs_payload = sys.getrefcount(PAYLOAD)
        refs_into = sys.getrefcount(into)
        await _memory_stays_flat(ping, ROUND_TRIPS // 2)
        gc.collect()
        # (Counted before asserting: pytest's rewritten assert holds its operands.)
        payload_now = sys.getrefcount(PAYLOAD)
        into_now = sys.getrefcount(into)
        in_flight = _in_flight(loop)   # the echo task's receive
        assert payload_now == refs_payload
        assert into_now == refs_into
        assert in_flight == 1
        b.shutdown(socket.SHUT_WR)
        await echoing

    try:
        with a, b:
            loop.run_until_complete(main())
        assert _in_flight(loop) == 0
    finally:
        loop.close()


def test_cancelled_receives_leave_memory_and_references_flat():
    """Rounds of a receive cancelled before its data comes, as it comes
    (orphaned in the kernel: what it still receives goes to the stash), and
    after it came but before its task resumed (given back to the stash).
    The next call reads the bytes; none is lost, nothing piles up."""
    loop = iocploop.new_event_loop()
    a, b = _pair()

    async def rounds(count):
        for i in range(count):
            racing = loop.create_task(loop.sock_recv(a, 4096))
            await asyncio.sleep(0)        # submitted, nothing to receive yet
            if i % 3 == 0:
                racing.cancel()           # before any data: the next call receives it
                b.send(PAYLOAD)
            elif i % 3 == 1:
                b.send(PAYLOAD)
                racing.cancel()           # as the data comes: orphaned in the kernel
            else:
                b.send(PAYLOAD)
                await asyncio.sleep(0)    # its data came, the task has not resumed:
                racing.cancel()           # the data goes back to the stash
            try:
                got = len(await racing)
            except asyncio.CancelledError:
                got = 0
            while got < len(PAYLOAD):
                got += len(await loop.sock_recv(a, 4096))
            assert got == len(PAYLOAD)

    async def main():
        await rounds(CANCELS // 10)
        gc.collect()
        refs_payload = sys.getrefcount(PAYLOAD)
        await _memory_stays_flat(rounds, CANCELS // 4)
        gc.collect()
        payload_now = sys.getrefcount(PAYLOAD)
        assert payload_now == refs_payload
        for _ in range(100):   # let the last cancellations complete
            await asyncio.sleep(0)

    try:
        with a, b:
            loop.run_until_complete(main())
            assert _in_flight(loop) == 0
            stash = loop._sock_engine.stash_of(a)
            assert stash is None or not stash.data
    finally:
        loop.close()
