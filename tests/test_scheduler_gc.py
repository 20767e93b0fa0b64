"""Handles and the cyclic garbage collector.

iocploop's ready queue and timer heap untrack the handles they hold (and a
context copied for one handle alone) while they hold them: the collector
would only walk objects that are alive anyway (_scheduler.pyx, "parking").
What must hold, on both loops: a reference cycle through a handle is
collected once the handle has left the queue or the heap, whether it ran,
was cancelled, or the loop was closed.  iocploop-only checks look at the
tracking itself.
"""
from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from _tcp_helpers import is_iocploop


class Owner:
    """obj -> handle -> bound method -> obj: the cycle a class that keeps
    its own timer or callback handle makes."""

    def __init__(self):
        self.handle = None
        self.ran = False

    def callback(self):
        self.ran = True


def _owner_of(schedule):
    """(a weak reference to an Owner, its handle): owner.handle =
    schedule(owner.callback), the only strong reference to the owner being
    the cycle through its handle."""
    owner = Owner()
    owner.handle = schedule(owner.callback)
    return weakref.ref(owner), owner.handle


def _collected(ref) -> bool:
    gc.collect()
    return ref() is None


@pytest.mark.asyncio
async def test_a_cycle_through_a_handle_that_ran_is_collected():
    ref = _owner_of(asyncio.get_running_loop().call_soon)[0]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert _collected(ref)


@pytest.mark.asyncio
async def test_a_cycle_through_a_cancelled_timer_is_collected_once_it_leaves_the_heap():
    loop = asyncio.get_running_loop()
    ref, handle = _owner_of(lambda cb: loop.call_later(0.01, cb))
    handle.cancel()
    del handle
    await asyncio.sleep(0.05)   # the cancelled timer reaches the top and leaves
    assert _collected(ref)


@pytest.mark.asyncio
async def test_a_cycle_through_a_timer_that_fired_is_collected():
    loop = asyncio.get_running_loop()
    fired = []
    ref, handle = _owner_of(
        lambda cb: loop.call_later(0.001, lambda: (cb(), fired.append(True))))
    del handle
    await asyncio.sleep(0.05)
    assert fired == [True]
    assert _collected(ref)


@pytest.mark.asyncio
async def test_many_cancelled_timers_dropped_at_once_leave_no_cycle():
    # More than half of over 100 cancelled: the heap drops them all at once.
    loop = asyncio.get_running_loop()
    refs = []
    for _ in range(300):
        ref, handle = _owner_of(lambda cb: loop.call_later(3600, cb))
        handle.cancel()
        refs.append(ref)
    del handle
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 0


def test_handles_left_at_close_are_collected(loop_factory_name):
    loop = _new_loop(loop_factory_name)
    refs = []
    for schedule in (loop.call_soon, lambda cb: loop.call_later(3600, cb)):
        refs.append(_owner_of(schedule)[0])
    loop.close()   # the queue and the heap are cleared, nothing ran
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


@pytest.mark.asyncio
async def test_a_handle_returned_to_the_caller_is_tracked_again_after_it_ran():
    loop = asyncio.get_running_loop()
    handle = loop.call_soon(lambda: None)
    timer = loop.call_later(0.001, lambda: None)
    if is_iocploop():
        # Parked: the queue and the heap hold them, the collector skips them.
        assert not gc.is_tracked(handle) and not gc.is_tracked(timer)
        assert not gc.is_tracked(handle._context)
    await asyncio.sleep(0.05)
    assert gc.is_tracked(handle) and gc.is_tracked(timer)
    assert gc.is_tracked(handle._context)


@pytest.mark.asyncio
async def test_a_context_passed_in_is_never_untracked():
    import contextvars
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    loop.call_soon(lambda: None, context=context)
    loop.call_later(0.001, lambda: None, context=context)
    assert gc.is_tracked(context)
    await asyncio.sleep(0.05)
    assert gc.is_tracked(context)


# -- loops made by hand ---------------------------------------------------------------


@pytest.fixture(params=["asyncio", "iocploop"])
def loop_factory_name(request):
    return request.param


def _new_loop(name):
    if name == "iocploop":
        import iocploop
        return iocploop.new_event_loop()
    return asyncio.new_event_loop()


@pytest.mark.asyncio
async def test_what_a_caller_can_do_to_a_parked_handle_is_safe():
    # A parked handle's own context is untracked, and CPython frees a context
    # assuming it is tracked: nothing a caller does may let it go meanwhile.
    loop = asyncio.get_running_loop()
    handle = loop.call_soon(lambda: None)
    timer = loop.call_later(3600, lambda: None)
    if is_iocploop():
        for h in (handle, timer):
            with pytest.raises(AttributeError):
                h._context = None
        with pytest.raises(TypeError):
            import pickle
            pickle.dumps(handle)
        # __init__ again: the old context is tracked again before it goes.
        type(handle).__init__(handle, lambda: None, (), loop)
        type(timer).__init__(timer, loop.time() + 3600, lambda: None, (), loop)
        gc.collect()
    timer.cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gc.collect()
