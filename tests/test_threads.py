"""call_soon_threadsafe: delivery from many threads, waking a sleeping loop."""
from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

import iocploop
from _helpers import IS_WINDOWS, TIMEOUT, run, run_forever_bounded

N_THREADS = 8
N_CALLS = 200


def test_call_soon_threadsafe_from_many_threads_delivers_each_call_once(loop):
    received = []
    total = N_THREADS * N_CALLS
    done = loop.create_future()
    start = threading.Barrier(N_THREADS)

    def on_call(tid, i):
        received.append((tid, i))
        if len(received) == total and not done.done():
            done.set_result(None)

    def producer(tid):
        start.wait(TIMEOUT)
        for i in range(N_CALLS):
            loop.call_soon_threadsafe(on_call, tid, i)
            if i % 50 == 0:
                time.sleep(0.001)   # let the loop fall asleep now and then

    threads = [threading.Thread(target=producer, args=(t,), daemon=True)
               for t in range(N_THREADS)]
    for t in threads:
        t.start()
    try:
        run(loop, asyncio.shield(done), timeout=30)
    finally:
        for t in threads:
            t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    # Let any straggler (a duplicate would be one) run.
    run(loop, asyncio.sleep(0.05))
    assert len(received) == total
    assert sorted(received) == [(t, i) for t in range(N_THREADS) for i in range(N_CALLS)]
    # Calls from one thread keep their order.
    for tid in range(N_THREADS):
        assert [i for t, i in received if t == tid] == list(range(N_CALLS))


def test_call_soon_threadsafe_wakes_a_loop_sleeping_on_a_long_timer(loop):
    woke = loop.create_future()
    loop.call_later(30, lambda: None)   # the loop would sleep 30 s without a wakeup
    timer_thread = threading.Timer(
        0.1, lambda: loop.call_soon_threadsafe(
            lambda: woke.done() or woke.set_result(time.monotonic())))
    t0 = time.monotonic()
    timer_thread.start()
    try:
        woken_at = run(loop, asyncio.shield(woke), timeout=10)
    finally:
        timer_thread.cancel()
        timer_thread.join(TIMEOUT)
    assert woken_at - t0 < 3.0
    assert time.monotonic() - t0 < 3.0


def test_call_soon_threadsafe_wakes_a_loop_with_nothing_scheduled(loop):
    """run_forever with no timer at all blocks without a timeout; a stop from
    another thread must still end it."""
    stopper = threading.Timer(0.1, lambda: loop.call_soon_threadsafe(loop.stop))
    t0 = time.monotonic()
    stopper.start()
    try:
        # The safety timer of run_forever_bounded is far away (10 s) so the
        # loop really does block.
        assert not run_forever_bounded(loop, timeout=10)
    finally:
        stopper.cancel()
        stopper.join(TIMEOUT)
    assert time.monotonic() - t0 < 3.0


def test_repeated_wakeups_each_wake_the_loop(loop):
    """Many sleep/wake cycles: no wakeup is lost after the first."""
    count = 20
    woken = []

    def waker(futs):
        for fut in futs:
            time.sleep(0.005)
            loop.call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))

    async def main():
        futs = [loop.create_future() for _ in range(count)]
        th = threading.Thread(target=waker, args=(futs,), daemon=True)
        th.start()
        try:
            for fut in futs:
                await asyncio.wait_for(fut, TIMEOUT)
                woken.append(True)
        finally:
            await loop.run_in_executor(None, th.join, TIMEOUT)

    loop.call_later(60, lambda: None)   # long sleeps unless woken
    run(loop, main(), timeout=30)
    assert len(woken) == count


def test_wakeups_racing_the_loop_going_to_sleep_are_never_lost(loop):
    """A waker posting at random moments, often just as the loop decides to
    block: every callback runs promptly (a lost wakeup would leave the loop
    asleep on its 60 s timer and the wait_for would time out)."""
    rounds = 200 if IS_WINDOWS else 3000
    rng = random.Random(5)
    pauses = [rng.choice((0, 0, 1e-5, 5e-5, 2e-4)) for _ in range(rounds)]

    def waker(futs):
        for fut, pause in zip(futs, pauses):
            if pause:
                time.sleep(pause)
            loop.call_soon_threadsafe(fut.set_result, None)

    async def main():
        futs = [loop.create_future() for _ in range(rounds)]
        th = threading.Thread(target=waker, args=(futs,), daemon=True)
        th.start()
        try:
            for fut in futs:
                await asyncio.wait_for(fut, TIMEOUT)
        finally:
            await loop.run_in_executor(None, th.join, TIMEOUT)

    loop.call_later(60, lambda: None)   # long sleeps unless woken
    run(loop, main(), timeout=60)


def test_call_soon_threadsafe_before_run_is_delivered(loop):
    out = []
    th = threading.Thread(target=lambda: loop.call_soon_threadsafe(out.append, "x"))
    th.start()
    th.join(TIMEOUT)
    loop.call_soon(loop.stop)
    assert not run_forever_bounded(loop)
    assert out == ["x"]


def test_call_soon_threadsafe_after_close_raises(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_soon_threadsafe(lambda: None)
    errors = []

    def other_thread():
        try:
            loop.call_soon_threadsafe(lambda: None)
        except RuntimeError as exc:
            errors.append(exc)

    th = threading.Thread(target=other_thread)
    th.start()
    th.join(TIMEOUT)
    assert len(errors) == 1 and "closed" in str(errors[0])


def test_run_coroutine_threadsafe(loop):
    async def add(a, b):
        await asyncio.sleep(0.01)
        return a + b

    results = []

    def client():
        fut = asyncio.run_coroutine_threadsafe(add(2, 3), loop)
        results.append(fut.result(TIMEOUT))
        loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=client, daemon=True)
    th.start()
    try:
        assert not run_forever_bounded(loop)
    finally:
        th.join(TIMEOUT)
    assert results == [5]


def test_loop_in_another_thread_is_stopped_from_main_thread(loop):
    started = threading.Event()
    finished = threading.Event()
    errors = []

    def body():
        try:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            run_forever_bounded(loop, timeout=10)
        except BaseException as exc:   # pragma: no cover - reported below
            errors.append(exc)
        finally:
            asyncio.set_event_loop(None)
            finished.set()

    th = threading.Thread(target=body, daemon=True)
    th.start()
    assert started.wait(TIMEOUT)
    t0 = time.monotonic()
    loop.call_soon_threadsafe(loop.stop)
    assert finished.wait(TIMEOUT)
    th.join(TIMEOUT)
    assert time.monotonic() - t0 < 3.0
    assert errors == []
    assert not loop.is_running()


def test_wakeup_counters_move():
    """iocploop only: a cross-thread wakeup is counted as sent or merged."""
    ev_loop = iocploop.new_event_loop()
    try:
        before = ev_loop._port.stats()
        stopper = threading.Timer(0.05, lambda: ev_loop.call_soon_threadsafe(ev_loop.stop))
        stopper.start()
        try:
            assert not run_forever_bounded(ev_loop, timeout=10)
        finally:
            stopper.join(TIMEOUT)
        after = ev_loop._port.stats()
        moved = ((after["wakeups_sent"] - before["wakeups_sent"])
                 + (after["wakeups_merged"] - before["wakeups_merged"]))
        assert moved >= 1
        assert after["wakeups_sent"] >= before["wakeups_sent"]
        assert after["waits"] > before["waits"]
    finally:
        ev_loop.close()


def test_closing_while_other_threads_call_soon_threadsafe(loop):
    """Threads racing call_soon_threadsafe against close(): each call either
    succeeds or raises RuntimeError('... closed'); nothing crashes."""
    stop = threading.Event()
    outcomes = {"ok": 0, "closed": 0}
    errors = []
    lock = threading.Lock()

    def hammer():
        while not stop.is_set():
            try:
                loop.call_soon_threadsafe(lambda: None)
                key = "ok"
            except RuntimeError as exc:
                if "closed" not in str(exc):
                    errors.append(exc)
                key = "closed"
            with lock:
                outcomes[key] += 1
            if key == "closed":
                return

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        run(loop, asyncio.sleep(0.05))
        loop.close()
        time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert outcomes["ok"] > 0
    assert outcomes["closed"] == len(threads)


def test_port_wakeup_racing_close_is_safe():
    """iocploop only: CompletionPort.wakeup() is documented as safe from any
    thread and after close; hammer it while the port closes."""
    from iocploop._port import CompletionPort

    for _ in range(5):
        port = CompletionPort()
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                port.wakeup()

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            port.select(0.01)
            port.close()
            time.sleep(0.01)
        finally:
            stop.set()
            for t in threads:
                t.join(TIMEOUT)
        assert port.closed
        assert not any(t.is_alive() for t in threads)
