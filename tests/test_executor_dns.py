"""Executors, async generator shutdown, getaddrinfo/getnameinfo."""
from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading

import pytest

import iocploop
from _helpers import run


def test_run_in_executor_default(loop):
    main_thread = threading.get_ident()

    async def main():
        return await loop.run_in_executor(None, lambda a, b: (a * b, threading.get_ident()), 6, 7)

    value, tid = run(loop, main())
    assert value == 42
    assert tid != main_thread


def test_run_in_executor_propagates_exceptions(loop):
    def fails():
        raise ArithmeticError("in worker")

    with pytest.raises(ArithmeticError, match="in worker"):
        run(loop, loop.run_in_executor(None, fails))


def test_run_in_executor_many(loop):
    async def main():
        return await asyncio.gather(*(loop.run_in_executor(None, pow, i, 2) for i in range(50)))

    assert run(loop, main(), timeout=30) == [i * i for i in range(50)]


def test_run_in_executor_explicit_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="explicit") as ex:
        name = run(loop, loop.run_in_executor(ex, lambda: threading.current_thread().name))
    assert name.startswith("explicit")


def test_set_default_executor(loop):
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom-default")
    try:
        loop.set_default_executor(ex)
        name = run(loop, loop.run_in_executor(None, lambda: threading.current_thread().name))
        assert name.startswith("custom-default")
    finally:
        ex.shutdown(wait=True)


def test_set_default_executor_rejects_process_pool_like_objects(loop):
    with pytest.raises(TypeError):
        loop.set_default_executor(object())


def test_shutdown_default_executor(loop):
    async def main():
        await loop.run_in_executor(None, lambda: None)
        executor = loop._default_executor
        assert executor is not None
        await loop.shutdown_default_executor()
        return executor

    executor = run(loop, main(), timeout=30)
    with pytest.raises(RuntimeError):
        executor.submit(lambda: None)
    # After shutdown, run_in_executor with the default executor is refused.
    with pytest.raises(RuntimeError):
        run(loop, loop.run_in_executor(None, lambda: None))


def test_shutdown_default_executor_waits_for_running_work(loop):
    finished = threading.Event()

    def work():
        finished.wait(0.1)
        finished.set()

    async def main():
        fut = loop.run_in_executor(None, work)
        await asyncio.sleep(0)
        await loop.shutdown_default_executor()
        return fut

    fut = run(loop, main(), timeout=30)
    assert finished.is_set()
    assert fut.done()


def test_shutdown_asyncgens_finalises_suspended_generator(loop):
    events = []

    async def agen():
        try:
            events.append("start")
            yield 1
            yield 2
        finally:
            events.append("finally")
            await asyncio.sleep(0)      # async cleanup is allowed
            events.append("finally-after-await")

    gens = []

    async def use():
        g = agen()
        gens.append(g)   # keep it alive: it is left suspended, not collected
        assert await g.__anext__() == 1

    run(loop, use())
    assert events == ["start"]
    run(loop, loop.shutdown_asyncgens())
    assert events == ["start", "finally", "finally-after-await"]


def test_shutdown_asyncgens_reports_failing_finaliser(loop):
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))

    async def agen():
        try:
            yield 1
        finally:
            raise ValueError("cleanup failed")

    gens = []

    async def use():
        g = agen()
        gens.append(g)
        await g.__anext__()

    run(loop, use())
    run(loop, loop.shutdown_asyncgens())
    assert any(isinstance(c.get("exception"), ValueError) for c in seen)
    assert any("asynchronous generator" in c.get("message", "") for c in seen)


def test_async_generator_collected_while_loop_runs_is_finalised(loop):
    events = []

    async def agen():
        try:
            yield 1
        finally:
            events.append("finally")

    async def main():
        g = agen()
        await g.__anext__()
        del g   # finaliser hook schedules aclose() on the loop
        import gc
        gc.collect()
        for _ in range(20):
            if events:
                break
            await asyncio.sleep(0.01)

    run(loop, main())
    assert events == ["finally"]


def _dns_results(factory):
    ev_loop = factory()
    try:
        ai = run(ev_loop, ev_loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
        ai_any = run(ev_loop, ev_loop.getaddrinfo("127.0.0.1", 80))
        ni = run(ev_loop, ev_loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST |
                                              socket.NI_NUMERICSERV))
        ni_names = run(ev_loop, ev_loop.getnameinfo(("127.0.0.1", 80)))
        return ai, ai_any, ni, ni_names
    finally:
        ev_loop.close()


def test_getaddrinfo_getnameinfo_match_asyncio():
    got = _dns_results(iocploop.new_event_loop)
    ref = _dns_results(asyncio.new_event_loop)
    assert got == ref
    ai, _ai_any, ni, _names = got
    assert ai and all(entry[4][:2] == ("127.0.0.1", 80) for entry in ai)
    assert ni == ("127.0.0.1", "80")


def test_getaddrinfo_matches_socket_module(loop):
    got = run(loop, loop.getaddrinfo("127.0.0.1", 80, family=socket.AF_INET,
                                     proto=socket.IPPROTO_TCP))
    assert got == socket.getaddrinfo("127.0.0.1", 80, family=socket.AF_INET,
                                     proto=socket.IPPROTO_TCP)


def test_getaddrinfo_error_propagates(loop):
    with pytest.raises(socket.gaierror):
        run(loop, loop.getaddrinfo("127.0.0.1", "no-such-service-name-xyz",
                                   type=socket.SOCK_STREAM))
