"""References and memory through the compiled scheduler.

Ten million handles and timers (call_soon, call_soon_threadsafe, timers
that fire, timers cancelled) go through one loop: its process's memory
(RSS) and the memory Python tracks (tracemalloc, over one million of them)
stay flat, and the reference counts of the callback and its argument come
back to where they started, so no handle, argument or context is kept.

Under Wine (slow, and no /proc) a smaller run checks the same with
tracemalloc and reference counts only; so does the AddressSanitizer run
(tools/asan.sh), whose quarantine of freed memory makes RSS grow by design.
"""
from __future__ import annotations

import gc
import os
import sys
import tracemalloc

import iocploop
from _helpers import IS_LINUX, rss_bytes

# Each round puts this many operations of each of four kinds through the loop.
PER_KIND = 2_500
ROUND = 4 * PER_KIND
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
TOTAL = 10_000_000 if IS_LINUX and not UNDER_ASAN else 200_000
TRACED = 1_000_000 if IS_LINUX and not UNDER_ASAN else 100_000
MEASURE_RSS = IS_LINUX and not UNDER_ASAN


class Callback:
    """A callable whose reference count the test watches."""

    def __init__(self):
        self.calls = 0

    def __call__(self, arg=None):
        self.calls += 1


def _round(loop, callback, arg):
    loop.call_soon(_schedule, loop, callback, arg)
    loop.run_forever()
    # One more iteration: it drops the round's cancelled timers (asyncio's
    # rule), so every round ends with the heap empty.
    loop.call_soon(loop.stop)
    loop.run_forever()


def _schedule(loop, callback, arg):
    for _ in range(PER_KIND):
        loop.call_soon(callback, arg)
        loop.call_soon_threadsafe(callback, arg)
        loop.call_later(0, callback, arg)
        loop.call_later(3600, callback, arg).cancel()
    # Runs after the ready callbacks and the due timers (the heap orders by
    # time, and this one is the latest).
    loop.call_later(0, loop.stop)


def test_ten_million_handles_and_timers_leave_memory_flat():
    loop = iocploop.new_event_loop()
    callback, arg = Callback(), object()
    try:
        for _ in range(20):   # warm up: free lists, the ring and the heap grown
            _round(loop, callback, arg)
        gc.collect()
        refs_before = (sys.getrefcount(callback), sys.getrefcount(arg))
        rss_before = rss_bytes() if MEASURE_RSS else None

        tracemalloc.start()
        traced_before = tracemalloc.get_traced_memory()[0]
        done = 0
        while done < TRACED:
            _round(loop, callback, arg)
            done += ROUND
        gc.collect()
        traced_growth = tracemalloc.get_traced_memory()[0] - traced_before
        tracemalloc.stop()

        while done < TOTAL:
            _round(loop, callback, arg)
            done += ROUND
        gc.collect()
        refs_after = (sys.getrefcount(callback), sys.getrefcount(arg))
        # Every handle that was not cancelled ran; the cancelled timers
        # left the heap by asyncio's rule.
        assert callback.calls == (20 * ROUND + done) * 3 // 4
        assert not loop._ready and not loop._scheduled
    finally:
        loop.close()
    assert refs_after == refs_before, "the callback or its argument kept references"
    assert traced_growth < 64 * 1024, f"Python memory grew by {traced_growth} bytes"
    if rss_before is not None:
        growth = rss_bytes() - rss_before
        assert growth < 8 * 1024 * 1024, f"RSS grew by {growth // 1024} KiB over {TOTAL} ops"
