"""Futures, tasks, task factories, the exception handler API and debug mode."""
from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import threading
import time

import pytest

import iocploop
from _helpers import TIMEOUT, run, run_forever_bounded

# -- futures and tasks ---------------------------------------------------------


def test_create_future_belongs_to_loop(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()
    loop.call_soon(fut.set_result, 7)
    assert run(loop, fut) == 7


def test_create_task_name_and_context(loop):
    var = contextvars.ContextVar("var", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "from-context")

    async def read_var():
        await asyncio.sleep(0)
        return var.get(), asyncio.current_task().get_name()

    async def main():
        t1 = loop.create_task(read_var(), name="named-task")
        t2 = loop.create_task(read_var(), context=ctx)
        return await asyncio.gather(t1, t2)

    (v1, n1), (v2, _n2) = run(loop, main())
    assert (v1, n1) == ("default", "named-task")
    assert v2 == "from-context"


def test_task_factory(loop):
    made = []

    def factory(ev_loop, coro, **kwargs):
        task = asyncio.Task(coro, loop=ev_loop, **kwargs)
        made.append(task)
        return task

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def child():
        return "child"

    async def main():
        return await loop.create_task(child(), name="via-factory")

    assert run(loop, main()) == "child"
    # run_until_complete's own task plus the wait_for/child tasks went through it.
    assert any(t.get_name() == "via-factory" for t in made)
    assert all(t.get_loop() is loop for t in made)
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    with pytest.raises(TypeError):
        loop.set_task_factory(42)


@pytest.mark.asyncio
async def test_tasks_cancel_and_await():
    started = asyncio.Event()

    async def forever():
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(forever())
    await asyncio.wait_for(started.wait(), TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT)
    assert task.cancelled()


@pytest.mark.asyncio
async def test_wait_for_times_out():
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.sleep(3600), 0.05)


# -- exception handler API -----------------------------------------------------


def test_exception_handler_get_set(loop):
    assert loop.get_exception_handler() is None

    def handler(ev_loop, context):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None
    with pytest.raises(TypeError):
        loop.set_exception_handler("not callable")


def test_call_exception_handler_reaches_custom_handler(loop):
    seen = []
    loop.set_exception_handler(lambda ev_loop, ctx: seen.append((ev_loop, ctx)))
    ctx = {"message": "hello", "custom": 1}
    loop.call_exception_handler(ctx)
    assert seen == [(loop, ctx)]


def test_default_exception_handler_logs(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    try:
        raise KeyError("boom")
    except KeyError as exc:
        err = exc
    loop.default_exception_handler({"message": "something failed", "exception": err})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert "something failed" in records[0].getMessage()
    assert records[0].exc_info[1] is err


def test_call_exception_handler_without_handler_logs(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop.call_exception_handler({"message": "no handler here"})
    assert any("no handler here" in r.getMessage() for r in caplog.records)


def test_failing_exception_handler_is_logged(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")

    def bad_handler(ev_loop, ctx):
        raise RuntimeError("handler broke")

    loop.set_exception_handler(bad_handler)
    loop.call_exception_handler({"message": "original"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Unhandled error in exception handler" in text


def _callback_error_context(factory, debug: bool):
    ev_loop = factory()
    try:
        ev_loop.set_debug(debug)
        seen = []
        ev_loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))

        def bad():
            raise ZeroDivisionError("in call_soon callback")

        handle = ev_loop.call_soon(bad)
        ev_loop.call_soon(ev_loop.stop)
        assert not run_forever_bounded(ev_loop)
        return seen, handle
    finally:
        ev_loop.set_debug(False)
        ev_loop.close()


@pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])
def test_callback_exception_context_matches_asyncio(debug):
    got, got_handle = _callback_error_context(iocploop.new_event_loop, debug)
    ref, ref_handle = _callback_error_context(asyncio.new_event_loop, debug)
    assert len(got) == len(ref) == 1
    assert sorted(got[0]) == sorted(ref[0])
    assert isinstance(got[0]["exception"], ZeroDivisionError)
    assert got[0]["handle"] is got_handle
    assert got[0]["message"].startswith("Exception in callback")
    assert ref[0]["message"].startswith("Exception in callback")


def test_callback_exception_reaches_handler(loop):
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))

    def bad():
        raise ValueError("bad callback")

    loop.call_soon(bad)
    loop.call_later(0.01, bad)
    loop.call_later(0.02, loop.stop)
    assert not run_forever_bounded(loop)
    assert [type(c["exception"]) for c in seen] == [ValueError, ValueError]
    assert {"message", "exception", "handle"} <= set(seen[0])


def test_unretrieved_task_exception_is_reported(loop):
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))

    async def fails():
        raise LookupError("never retrieved")

    async def main():
        task = loop.create_task(fails())
        await asyncio.sleep(0.01)
        assert task.done()
        # Drop the only reference without retrieving the exception.

    run(loop, main())
    for _ in range(3):
        gc.collect()
    msgs = [c for c in seen if "never retrieved" in c.get("message", "")]
    assert len(msgs) == 1
    assert isinstance(msgs[0]["exception"], LookupError)
    assert "future" in msgs[0]


def test_unretrieved_future_exception_is_reported(loop):
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
    fut = loop.create_future()
    fut.set_exception(OSError("lost"))
    del fut
    for _ in range(3):
        gc.collect()
    assert any("never retrieved" in c.get("message", "")
               and isinstance(c.get("exception"), OSError) for c in seen)


# -- debug mode ----------------------------------------------------------------


def test_set_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_slow_callback_is_logged_in_debug_mode(loop, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow():
        time.sleep(0.1)

    loop.call_soon(slow)
    loop.call_soon(loop.stop)
    try:
        assert not run_forever_bounded(loop)
    finally:
        loop.set_debug(False)
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any("Executing" in m and "took" in m and "slow" in m for m in msgs), msgs


def test_fast_callback_is_not_logged(loop, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 10.0
    loop.call_soon(lambda: None)
    loop.call_soon(loop.stop)
    try:
        assert not run_forever_bounded(loop)
    finally:
        loop.set_debug(False)
    assert not any("Executing" in r.getMessage() for r in caplog.records)


def test_handles_carry_source_traceback_in_debug_mode(loop):
    h0 = loop.call_soon(lambda: None)
    assert h0._source_traceback is None
    loop.set_debug(True)
    try:
        h1 = loop.call_soon(lambda: None)
        h2 = loop.call_later(10, lambda: None)
        fut = loop.create_future()
    finally:
        loop.set_debug(False)
    for obj in (h1, h2, fut):
        tb = obj._source_traceback
        assert tb, obj
        # Each ends at its creator.  (asyncio's future also shows its Python
        # create_future; iocploop's, compiled as uvloop's, has no frame.)
        frame = tb[-2] if tb[-1].name == "create_future" else tb[-1]
        assert frame.name == "test_handles_carry_source_traceback_in_debug_mode"
        assert frame.filename == __file__
    h2.cancel()
    fut.cancel()


def test_source_traceback_depth_matches_asyncio():
    def make(factory):
        ev_loop = factory()
        try:
            ev_loop.set_debug(True)
            h = ev_loop.call_soon(lambda: None)
            t = ev_loop.call_later(1, lambda: None)
            t.cancel()
            return [(f.name, f.lineno - h._source_traceback[-1].lineno)
                    for f in h._source_traceback[-2:]], t._source_traceback[-1].name
        finally:
            ev_loop.set_debug(False)
            ev_loop.close()

    assert make(iocploop.new_event_loop) == make(asyncio.new_event_loop)


def test_call_soon_from_wrong_thread_in_debug_mode_raises(loop):
    loop.set_debug(True)
    errors = []
    out = []

    def from_thread():
        try:
            loop.call_soon(out.append, "wrong")
        except RuntimeError as exc:
            errors.append(str(exc))

    async def main():
        th = threading.Thread(target=from_thread)
        th.start()
        await loop.run_in_executor(None, th.join, TIMEOUT)
        await asyncio.sleep(0)

    try:
        run(loop, main())
    finally:
        loop.set_debug(False)
    assert len(errors) == 1, errors
    assert "thread" in errors[0].lower()
    assert out == []


def test_call_soon_threadsafe_from_other_thread_allowed_in_debug_mode(loop):
    loop.set_debug(True)
    out = []

    async def main():
        th = threading.Thread(target=lambda: loop.call_soon_threadsafe(out.append, "ok"))
        th.start()
        await loop.run_in_executor(None, th.join, TIMEOUT)
        for _ in range(100):
            if out:
                break
            await asyncio.sleep(0.01)

    try:
        run(loop, main())
    finally:
        loop.set_debug(False)
    assert out == ["ok"]


def test_callback_error_log_shows_handle_origin_in_debug_mode(loop, caplog):
    """In debug mode an exception in a callback carries its source traceback."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop.set_debug(True)

    def bad():
        raise ValueError("debug callback failure")

    loop.call_soon(bad)
    loop.call_soon(loop.stop)
    try:
        assert not run_forever_bounded(loop)
    finally:
        loop.set_debug(False)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Exception in callback" in text
    assert "created at" in text


@pytest.mark.asyncio
async def test_current_loop_debug_toggle():
    ev_loop = asyncio.get_running_loop()
    old = ev_loop.get_debug()
    ev_loop.set_debug(True)
    try:
        assert ev_loop.get_debug()
        h = ev_loop.call_soon(lambda: None)
        assert h._source_traceback
        h.cancel()
    finally:
        ev_loop.set_debug(old)
