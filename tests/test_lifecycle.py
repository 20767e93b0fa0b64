"""run_forever / run_until_complete / stop / close / is_running / is_closed."""
from __future__ import annotations

import asyncio
import sys
import threading

import pytest

import iocploop
from _helpers import TIMEOUT, run, run_forever_bounded


def test_fresh_loop_state(loop):
    assert not loop.is_running()
    assert not loop.is_closed()
    assert loop.get_debug() in (True, False)
    assert isinstance(loop, asyncio.AbstractEventLoop)


def test_run_until_complete_returns_result(loop):
    async def main():
        await asyncio.sleep(0)
        return 42

    assert loop.run_until_complete(main()) == 42
    assert not loop.is_running()


def test_run_until_complete_accepts_a_future(loop):
    fut = loop.create_future()
    loop.call_later(0.01, fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"


def test_run_until_complete_propagates_exception(loop):
    class Boom(Exception):
        pass

    async def main():
        await asyncio.sleep(0)
        raise Boom("x")

    with pytest.raises(Boom):
        loop.run_until_complete(main())
    # The loop is reusable afterwards.
    assert run(loop, asyncio.sleep(0, "again")) == "again"


def test_run_until_complete_stopped_early(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed"):
        loop.run_until_complete(fut)
    fut.cancel()


def test_is_running_inside_and_outside(loop):
    seen = []

    def probe():
        seen.append(loop.is_running())
        seen.append(asyncio.get_running_loop() is loop)
        loop.stop()

    loop.call_soon(probe)
    assert not run_forever_bounded(loop)
    assert seen == [True, True]
    assert not loop.is_running()
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_stop_then_run_forever_again(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop.call_soon(loop.stop)
    loop.call_soon(out.append, 2)     # same iteration as stop: still runs
    assert not run_forever_bounded(loop)
    assert out == [1, 2]
    loop.call_soon(out.append, 3)
    loop.call_soon(loop.stop)
    assert not run_forever_bounded(loop)
    assert out == [1, 2, 3]


def test_stop_before_run_forever_runs_one_iteration(loop):
    out = []
    loop.call_soon(out.append, "ready")
    loop.call_soon(lambda: loop.call_soon(out.append, "next-iteration"))
    loop.stop()
    assert not run_forever_bounded(loop)
    assert out == ["ready"]
    loop.call_soon(loop.stop)
    assert not run_forever_bounded(loop)
    assert out == ["ready", "next-iteration"]


def test_stop_from_callback_after_pending_timer(loop):
    out = []
    loop.call_later(10, out.append, "never")
    loop.call_later(0.01, loop.stop)
    assert not run_forever_bounded(loop)
    assert out == []


def test_run_forever_reentrant_raises(loop):
    refusals = []

    def reenter():
        coro = asyncio.sleep(0)
        for attempt in (loop.run_forever, lambda: loop.run_until_complete(coro)):
            try:
                attempt()
            except Exception as exc:
                refusals.append(exc)
        coro.close()
        loop.stop()

    loop.call_soon(reenter)
    assert not run_forever_bounded(loop)
    if isinstance(loop, iocploop.Loop) or sys.platform != "win32":
        assert len(refusals) == 2, refusals
        assert all(isinstance(e, RuntimeError) and "already running" in str(e)
                   for e in refusals), refusals
    else:
        # The reference, CPython's ProactorEventLoop, refuses the nested
        # run_forever, but on 3.13 that refusal resets its running state and
        # the nested run_until_complete then runs (seen under Wine).  Only the
        # first refusal is asyncio's contract; iocploop refuses both.
        assert isinstance(refusals[0], RuntimeError) and "already running" in str(refusals[0])


def _refusals_while_running(loop, other, with_run_until_complete):
    """Inside a callback of running `loop`, try to run `other`; the messages
    of the RuntimeErrors raised, in order."""
    errors = []

    def nested():
        if with_run_until_complete:
            coro = asyncio.sleep(0)
            try:
                other.run_until_complete(coro)
            except RuntimeError as exc:
                errors.append(str(exc))
                coro.close()
        try:
            other.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(nested)
    try:
        assert not run_forever_bounded(loop)
    finally:
        other.close()
    return errors


def test_running_another_loop_in_the_same_thread_raises(loop):
    other = asyncio.new_event_loop() if isinstance(loop, iocploop.Loop) else iocploop.new_event_loop()
    errors = _refusals_while_running(loop, other, with_run_until_complete=True)
    assert len(errors) == 2
    assert all("another loop is running" in e for e in errors)


def test_same_kind_nested_loop_raises(loop):
    other = type(loop)() if isinstance(loop, iocploop.Loop) else asyncio.new_event_loop()
    errors = _refusals_while_running(loop, other, with_run_until_complete=False)
    assert len(errors) == 1 and "another loop is running" in errors[0]


def test_close_is_idempotent(loop):
    loop.close()
    assert loop.is_closed()
    loop.close()
    assert loop.is_closed()
    assert not loop.is_running()


def test_close_running_loop_raises(loop):
    errors = []

    def try_close():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(try_close)
    assert not run_forever_bounded(loop)
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()
    # Still usable.
    assert run(loop, asyncio.sleep(0, 1)) == 1


def test_run_until_complete_on_closed_loop_raises(loop):
    loop.close()
    coro = asyncio.sleep(0)
    try:
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop.run_until_complete(coro)
    finally:
        coro.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_forever()


def test_call_soon_on_closed_loop_raises(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_soon(lambda: None)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_later(1, lambda: None)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_at(loop.time() + 1, lambda: None)


def test_create_task_on_closed_loop_raises(loop):
    loop.close()

    async def main():
        return 1

    coro = main()
    try:
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop.create_task(coro)
    finally:
        coro.close()


def test_close_drops_pending_callbacks_and_timers(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop.call_later(0.01, out.append, 2)
    loop.close()
    assert out == []
    assert loop.is_closed()


def test_close_from_another_thread_while_idle(loop):
    errors = []

    def closer():
        try:
            loop.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    th = threading.Thread(target=closer)
    th.start()
    th.join(TIMEOUT)
    assert errors == []
    assert loop.is_closed()


def test_callback_exception_does_not_stop_the_loop(loop):
    """A callback exception does not stop the loop: it goes to the handler."""
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx["exception"]))

    def bad():
        raise ValueError("in callback")

    loop.call_soon(bad)
    loop.call_soon(loop.stop)
    assert not run_forever_bounded(loop)
    assert len(seen) == 1 and isinstance(seen[0], ValueError)
    assert loop.is_running() is False


def test_iocploop_close_closes_the_port(iocp_loop):
    port = iocp_loop._port
    assert not port.closed
    iocp_loop.close()
    assert port.closed
    assert iocp_loop.is_closed()


def test_iocploop_repr(iocp_loop):
    text = repr(iocp_loop)
    assert "running=False" in text and "closed=False" in text
    assert iocp_loop._port.backend in text


def test_loop_is_an_iocploop_loop(iocp_loop):
    assert isinstance(iocp_loop, iocploop.Loop)
    assert isinstance(iocp_loop, asyncio.BaseEventLoop)
    assert iocp_loop._port.backend in ("io_uring", "iocp")


@pytest.mark.asyncio
async def test_running_loop_inside_asyncio_test():
    ev_loop = asyncio.get_running_loop()
    assert ev_loop.is_running()
    assert not ev_loop.is_closed()
    with pytest.raises(RuntimeError, match="already running|another loop"):
        coro = asyncio.sleep(0)
        try:
            ev_loop.run_until_complete(coro)
        finally:
            coro.close()


def test_keyboardinterrupt_in_callback_keeps_other_ready_callbacks(loop):
    out = []

    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(out.append, 1)
    loop.call_soon(interrupt)
    loop.call_soon(out.append, 2)
    with pytest.raises(KeyboardInterrupt):
        run_forever_bounded(loop)
    assert out == [1]
    assert not loop.is_running()
    loop.call_soon(loop.stop)
    assert not run_forever_bounded(loop)
    assert out == [1, 2]


def test_unclosed_loop_is_closed_when_collected(loop):
    """Dropping an unclosed loop warns ResourceWarning and closes it, as asyncio
    does; for iocploop that also closes its port."""
    import gc
    import weakref

    factory = type(loop) if isinstance(loop, iocploop.Loop) else asyncio.new_event_loop
    victim = factory()
    run(victim, asyncio.sleep(0))
    port = getattr(victim, "_port", None)
    ref = weakref.ref(victim)
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del victim
        gc.collect()
    assert ref() is None
    if port is not None:
        assert port.closed
