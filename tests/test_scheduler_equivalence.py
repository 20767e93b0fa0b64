"""The compiled scheduler runs callbacks exactly as asyncio's does.

Hypothesis writes random programs of call_soon, call_later, call_at,
call_soon_threadsafe, cancel and stop, nested (a callback's own actions run
when it runs), and each program runs on stock asyncio and on iocploop.
Both must produce the same trace: which callbacks ran, in which order, at
which loop time, what cancel() reported, and where the loop stopped.

Time is a fake clock (loop.time replaced on the instance; both loops read
the time only through it) that moves 1 ms on each reading, so timers come
due on the same iteration on both loops whatever the machine does; only
the waits for I/O are real, and short.
"""
from __future__ import annotations

import asyncio
import functools
import sys

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import iocploop

DELAYS = [-0.01, 0.0, 0.001, 0.002, 0.004]
# The reference: asyncio's scheduling with nothing of its own in the ready
# queue.  On Windows that is the selector loop: the ProactorEventLoop keeps
# a self-pipe read posted whose callbacks add iterations (and so readings
# of the clock) that are the proactor's, not the scheduler's.
REFERENCE = asyncio.SelectorEventLoop if sys.platform == "win32" else asyncio.new_event_loop
MAX_ROUNDS = 6


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        self.now += 0.001
        return self.now


def _leaf():
    return st.one_of(
        st.tuples(st.just("cancel"), st.integers(0, 20)),
        st.tuples(st.just("stop")),
        st.tuples(st.just("soon"), st.just(())),
        st.tuples(st.just("later"), st.sampled_from(DELAYS), st.just(())),
    )


def _extend(children):
    kids = st.lists(children, max_size=3).map(tuple)
    return st.one_of(
        st.tuples(st.just("soon"), kids),
        st.tuples(st.just("threadsafe"), kids),
        st.tuples(st.just("later"), st.sampled_from(DELAYS), kids),
        st.tuples(st.just("at"), st.sampled_from(DELAYS), kids),
    )


ACTION = st.recursive(_leaf(), _extend, max_leaves=30)
PROGRAM = st.lists(ACTION, min_size=1, max_size=6)


class Run:
    """One program on one loop; `trace` is what it observed."""

    def __init__(self, loop):
        self.loop = loop
        self.clock = FakeClock()
        loop.time = self.clock
        self.handles = []
        self.trace = []

    def perform(self, action):
        kind = action[0]
        loop = self.loop
        if kind == "cancel":
            index = action[1]
            if index < len(self.handles):
                handle = self.handles[index]
                handle.cancel()
                self.trace.append(("cancel", index, handle.cancelled()))
            return
        if kind == "stop":
            loop.stop()
            self.trace.append(("stop",))
            return
        children = action[-1]
        node = len(self.handles)
        callback = functools.partial(self.fire, node, children)
        if kind == "soon":
            handle = loop.call_soon(callback)
        elif kind == "threadsafe":
            handle = loop.call_soon_threadsafe(callback)
        elif kind == "later":
            handle = loop.call_later(action[1], callback)
        else:   # "at"
            handle = loop.call_at(self.clock.now + action[1], callback)
            self.trace.append(("when", node, round(handle.when() - 1000.0, 6)))
        self.handles.append(handle)

    def fire(self, node, children):
        self.trace.append(("ran", node, round(self.loop.time() - 1000.0, 6)))
        for child in children:
            self.perform(child)

    def run(self, program):
        for action in program:
            self.perform(action)
        for _ in range(MAX_ROUNDS):
            live = [h.when() for h in self.loop._scheduled if not h.cancelled()]
            if not self.loop._ready and not live:
                break
            # A round ends by a stop() of the program or, once nothing is
            # left, by this timer, just after the last one.
            end = self.loop.call_at(max(live, default=self.clock.now) + 0.0005, self.loop.stop)
            self.loop.run_forever()
            end.cancel()
            self.trace.append(("round",))
        return self.trace


def _trace_on(factory, program):
    loop = factory()
    try:
        return Run(loop).run(program)
    finally:
        loop.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PROGRAM)
@example([("later", 0.0, ()), ("at", 0.0, ()), ("soon", ()), ("cancel", 0),
          ("later", 0.002, (("stop",), ("soon", ()))), ("at", 0.002, ())])
@example([("later", 0.005, ()), ("later", 0.005, ()), ("later", 0.001, ()),
          ("later", 0.005, ()), ("cancel", 2), ("at", 0.005, ())])
def test_random_programs_run_as_on_asyncio(program):
    expected = _trace_on(REFERENCE, program)
    got = _trace_on(iocploop.new_event_loop, program)
    assert got == expected


def test_many_cancelled_timers_are_dropped_by_asyncios_rule():
    """Over 100 timers with more than half cancelled: the heap is rebuilt
    (asyncio's rule); the timers left still fire in asyncio's order."""
    def program():
        actions = [("later", 0.001 * (i % 7), ()) for i in range(300)]
        actions += [("cancel", i) for i in range(0, 300, 3)]
        actions += [("cancel", i) for i in range(1, 300, 3)]
        return actions

    expected = _trace_on(REFERENCE, program())
    got = _trace_on(iocploop.new_event_loop, program())
    assert got == expected
    assert sum(1 for entry in got if entry[0] == "ran") == 100


@pytest.mark.parametrize("name", ["call_soon", "call_soon_threadsafe"])
def test_handles_keep_asyncios_api(name):
    loop = iocploop.new_event_loop()
    try:
        handle = getattr(loop, name)(print, "x")
        assert not handle.cancelled()
        assert handle.get_context() is not None
        assert repr(handle).startswith("<Handle print(")
        handle.cancel()
        assert handle.cancelled()
        assert repr(handle) == "<Handle cancelled>"
        timer = loop.call_later(10, print)
        assert timer.when() == pytest.approx(loop.time() + 10, abs=1)
        assert repr(timer).startswith("<TimerHandle when=")
        other = loop.call_at(timer.when() + 1, print)
        assert timer < other and other > timer and timer != other
        assert hash(timer) == hash(timer.when())
        timer.cancel()
        assert timer.cancelled()
        other.cancel()
    finally:
        loop.close()
