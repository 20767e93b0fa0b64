"""Ordering of callbacks and timers; asyncio's loop is the reference."""
from __future__ import annotations

import asyncio
import time

import pytest

import iocploop
from _helpers import TIMEOUT, run, run_forever_bounded


def test_call_soon_is_fifo(loop):
    out = []
    for i in range(100):
        loop.call_soon(out.append, i)
    loop.call_soon(loop.stop)
    assert not run_forever_bounded(loop)
    assert out == list(range(100))


def test_call_soon_passes_args_and_context(loop):
    import contextvars

    var = contextvars.ContextVar("var", default="outer")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inner")
    out = []
    loop.call_soon(lambda a, b: out.append((a, b, var.get())), 1, "x")
    loop.call_soon(lambda: out.append(var.get()), context=ctx)
    loop.call_soon(loop.stop)
    assert not run_forever_bounded(loop)
    assert out == [(1, "x", "outer"), "inner"]


def test_call_later_orders_by_time(loop):
    out = []
    delays = [0.05, 0.01, 0.04, 0.02, 0.03, 0.0]
    for i, d in enumerate(delays):
        loop.call_later(d, out.append, (d, i))
    loop.call_later(0.1, loop.stop)
    assert not run_forever_bounded(loop)
    assert out == sorted(out)
    assert [d for d, _ in out] == sorted(delays)


def test_call_at_orders_by_time(loop):
    out = []
    base = loop.time() + 0.02
    offsets = [0.04, 0.0, 0.03, 0.01, 0.02]
    for off in offsets:
        loop.call_at(base + off, out.append, off)
    loop.call_at(base + 0.08, loop.stop)
    assert not run_forever_bounded(loop)
    assert out == sorted(offsets)


def test_two_timers_with_same_deadline_run_in_scheduling_order(loop):
    out = []
    when = loop.time() + 0.01
    loop.call_at(when, out.append, "first")
    loop.call_at(when, out.append, "second")
    loop.call_at(when + 0.02, loop.stop)
    assert not run_forever_bounded(loop)
    assert out == ["first", "second"]


def _tie_sequence(factory, n):
    ev_loop = factory()
    try:
        out = []
        when = ev_loop.time() + 0.01
        for i in range(n):
            ev_loop.call_at(when, out.append, i)
        ev_loop.call_at(when + 0.02, ev_loop.stop)
        assert not run_forever_bounded(ev_loop)
        return out
    finally:
        ev_loop.close()


@pytest.mark.parametrize("n", [3, 7, 20])
def test_many_timers_with_same_deadline_match_asyncio(n):
    # asyncio's timer heap is not stable for equal deadlines (3 ties already
    # come out 0, 2, 1): the reference is asyncio's own sequence.
    got = _tie_sequence(iocploop.new_event_loop, n)
    ref = _tie_sequence(asyncio.new_event_loop, n)
    assert sorted(got) == list(range(n))
    assert got == ref


def test_cancelled_handles_never_run(loop):
    out = []
    keep = [loop.call_soon(out.append, "soon-kept")]
    gone = loop.call_soon(out.append, "soon-cancelled")
    keep.append(loop.call_later(0.01, out.append, "later-kept"))
    gone_later = loop.call_later(0.01, out.append, "later-cancelled")
    gone_at = loop.call_at(loop.time() + 0.02, out.append, "at-cancelled")
    for h in (gone, gone_later, gone_at):
        h.cancel()
        assert h.cancelled()

    def cancel_from_callback():
        # Cancelling a handle that is already in this iteration's ready queue.
        victim.cancel()

    loop.call_soon(cancel_from_callback)
    victim = loop.call_soon(out.append, "cancelled-by-callback")
    loop.call_later(0.05, loop.stop)
    assert not run_forever_bounded(loop)
    assert out == ["soon-kept", "later-kept"]
    assert not any(h.cancelled() for h in keep)


def _nested_scenario(ev_loop):
    """A mix of call_soon, nested call_soon and timers; returns the trace."""
    trace = []

    def cb(name, depth):
        trace.append(name)
        if depth:
            ev_loop.call_soon(cb, name + ".s", depth - 1)
            if depth == 2:
                ev_loop.call_later(0, cb, name + ".l0", 0)

    ev_loop.call_soon(cb, "a", 2)
    ev_loop.call_soon(cb, "b", 1)
    ev_loop.call_later(0.01, cb, "t1", 1)
    ev_loop.call_soon(cb, "c", 0)
    ev_loop.call_later(0.05, ev_loop.stop)
    assert not run_forever_bounded(ev_loop)
    return trace


def test_callbacks_from_callbacks_run_in_next_iteration(loop):
    trace = _nested_scenario(loop)
    # First iteration: a, b, c.  a's and b's call_soon go to the next one.
    assert trace[:3] == ["a", "b", "c"]
    assert trace.index("a.s") > trace.index("c")
    assert trace.index("b.s") > trace.index("c")
    assert trace.index("a.s.s") > trace.index("b.s")
    assert set(trace) == {"a", "b", "c", "a.s", "b.s", "a.s.s", "a.l0", "t1", "t1.s"}
    assert trace.index("t1") < trace.index("t1.s")


def test_nested_scheduling_sequence_matches_asyncio():
    loops = [iocploop.new_event_loop(), asyncio.new_event_loop()]
    try:
        got, ref = (_nested_scenario(ev) for ev in loops)
    finally:
        for ev in loops:
            ev.close()
    assert got == ref


def test_loop_iteration_boundaries(loop):
    """A callback scheduled by a callback does not run in the same iteration:
    a callback that reschedules itself N times lets others interleave."""
    trace = []

    def ping(n):
        trace.append(("ping", n))
        if n:
            loop.call_soon(ping, n - 1)

    def pong(n):
        trace.append(("pong", n))
        if n:
            loop.call_soon(pong, n - 1)

    loop.call_soon(ping, 3)
    loop.call_soon(pong, 3)
    loop.call_later(0.02, loop.stop)
    assert not run_forever_bounded(loop)
    assert trace == [(name, n) for n in (3, 2, 1, 0) for name in ("ping", "pong")]


def test_time_is_monotonic_and_advances(loop):
    samples = [loop.time() for _ in range(1000)]
    assert all(b >= a for a, b in zip(samples, samples[1:]))
    t0 = loop.time()
    time.sleep(0.05)
    # Allow for a coarse clock (Windows ticks at ~15.6 ms).
    assert loop.time() - t0 >= 0.03
    assert abs(loop.time() - time.monotonic()) < 1.0


def test_time_inside_running_loop(loop):
    seen = []

    async def main():
        for _ in range(5):
            seen.append(loop.time())
            await asyncio.sleep(0.01)

    run(loop, main())
    assert seen == sorted(seen)
    assert seen[-1] > seen[0]


def test_call_at_in_the_past_runs_promptly(loop):
    out = []
    t0 = time.monotonic()
    loop.call_later(0.5, out.append, "late")
    loop.call_at(loop.time() - 10, out.append, "past")
    loop.call_at(loop.time() - 10, lambda: loop.call_soon(loop.stop))
    assert not run_forever_bounded(loop)
    # "late" (0.5 s) has not run: the past timers did not wait for it.
    assert out == ["past"]
    assert time.monotonic() - t0 < TIMEOUT


def test_negative_call_later_runs_promptly(loop):
    out = []
    t0 = time.monotonic()
    loop.call_later(-5, out.append, 1)
    loop.call_later(-5, loop.stop)
    assert not run_forever_bounded(loop)
    assert out == [1]
    assert time.monotonic() - t0 < TIMEOUT


def test_timer_handle_when(loop):
    when = loop.time() + 10
    h = loop.call_at(when, lambda: None)
    assert h.when() == when
    h2 = loop.call_later(10, lambda: None)
    assert 9 < h2.when() - loop.time() <= 10
    h.cancel()
    h2.cancel()


def test_sleep_durations_are_respected(loop):
    async def main():
        t0 = loop.time()
        await asyncio.sleep(0.05)
        return loop.time() - t0

    elapsed = run(loop, main())
    # Never early by more than clock granularity, never absurdly late.
    assert 0.03 <= elapsed < TIMEOUT


@pytest.mark.asyncio
async def test_gather_of_sleeps_finish_in_delay_order():
    out = []

    async def sleeper(d):
        await asyncio.sleep(d)
        out.append(d)

    await asyncio.wait_for(asyncio.gather(*(sleeper(d) for d in (0.04, 0.0, 0.02, 0.01, 0.03))),
                           TIMEOUT)
    assert out == [0.0, 0.01, 0.02, 0.03, 0.04]


@pytest.mark.asyncio
async def test_tasks_start_in_creation_order():
    out = []

    async def worker(i):
        out.append(i)

    tasks = [asyncio.create_task(worker(i)) for i in range(20)]
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert out == list(range(20))
