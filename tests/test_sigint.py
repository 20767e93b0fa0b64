"""Ctrl+C interrupts a loop blocked in its wait, on both systems, as in asyncio.

Each test runs on iocploop and on stock asyncio (the reference).
"""
import asyncio
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import iocploop
from _helpers import child_env, run_forever_bounded

FACTORIES = {"iocploop": iocploop.new_event_loop, "asyncio": asyncio.new_event_loop}

in_main_thread = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="Python runs signal handlers in the main thread only")


def _sigint_soon(loop=None, delay=0.2):
    """A thread that sends this process SIGINT after delay seconds.

    Linux: a process-directed kill(), which the kernel hands to the main
    thread (raise() from a thread targets that thread and wakes no loop,
    asyncio's included).  Windows: signal.raise_signal from the thread, as
    CPython's own test_ctrl_c does; Python sets its SIGINT event.
    If the loop still runs 5 s later, stop it so the test fails, not hangs."""
    def fire():
        time.sleep(delay)
        if sys.platform == "win32":
            signal.raise_signal(signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        target = loop or watched.get("loop")
        if target is not None and target.is_running():
            watched["hung"] = True
            target.call_soon_threadsafe(target.stop)

    watched = {}
    thread = threading.Thread(target=fire, daemon=True)
    thread.watched = watched
    return thread


@in_main_thread
@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
def test_sigint_from_another_thread_interrupts_run_forever(factory):
    # The loop is idle (nothing scheduled): it sleeps in the kernel with no
    # timeout until the signal arrives.
    loop = factory()
    thread = _sigint_soon(loop)
    try:
        loop.call_soon(thread.start)
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
        assert time.monotonic() - started < 5
        assert not loop.is_running()
        # The loop runs again afterwards.
        assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"
    finally:
        loop.close()


@in_main_thread
@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
def test_sigint_cancels_the_main_task_of_a_runner(factory):
    cancelled = []

    async def main():
        thread = _sigint_soon()
        thread.watched["loop"] = asyncio.get_running_loop()
        thread.start()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    started = time.monotonic()
    with asyncio.Runner(loop_factory=factory) as runner:
        with pytest.raises(KeyboardInterrupt):
            runner.run(main())
    assert cancelled == [True]
    assert time.monotonic() - started < 5


CONSOLE_CHILD = textwrap.dedent("""
    import asyncio, ctypes, sys, threading, time
    import iocploop

    factory = {"iocploop": iocploop.new_event_loop, "asyncio": asyncio.new_event_loop}[sys.argv[2]]
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

    def press_ctrl_c():
        time.sleep(0.5)
        # A real console Ctrl+C, delivered to every process on this console.
        if not kernel32.GenerateConsoleCtrlEvent(0, 0):
            with open(sys.argv[1], "w") as out:
                out.write(f"GenerateConsoleCtrlEvent failed: {ctypes.get_last_error()}")

    async def main():
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        await asyncio.sleep(20)

    started = time.monotonic()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
        outcome = "fell through"
    except KeyboardInterrupt:
        outcome = "KeyboardInterrupt"
    with open(sys.argv[1], "a") as out:
        out.write(f"{outcome} {time.monotonic() - started:.2f}")
""")


@pytest.mark.skipif(sys.platform != "win32", reason="console control events exist on Windows only")
@pytest.mark.parametrize("loop_name", FACTORIES.keys())
def test_console_ctrl_c_interrupts_a_sleeping_loop(tmp_path, loop_name):
    script = tmp_path / "child.py"
    script.write_text(CONSOLE_CHILD)
    result = tmp_path / "result.txt"
    env = child_env()
    # A console of its own, so the Ctrl+C reaches the child and not pytest.
    child = subprocess.run([sys.executable, str(script), str(result), loop_name], env=env,
                           creationflags=subprocess.CREATE_NEW_CONSOLE, timeout=60)
    outcome = result.read_text()
    assert child.returncode == 0, outcome
    assert outcome.startswith("KeyboardInterrupt"), outcome
    assert float(outcome.split()[-1]) < 10


_SLEEPER = textwrap.dedent("""
    import asyncio

    async def main():
        print("ready", flush=True)
        await asyncio.sleep(30)

    asyncio.run(main())
""")


def _interrupt_child(args, cwd):
    """Start a child, wait for its "ready", send SIGINT; return
    (returncode, stderr, seconds from signal to exit)."""
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=child_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True)
    reader.start()
    try:
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            pytest.fail("the child never printed 'ready'")
        assert line.strip() == "ready"
        time.sleep(0.3)   # let it block in the kernel
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("the child did not exit within 5 s of SIGINT")
        elapsed = time.monotonic() - t0
        stderr = proc.stderr.read()
        return proc.returncode, stderr, elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
        reader.join(5)


@pytest.mark.skipif(sys.platform == "win32", reason="a console Ctrl+C needs a console of its own: "
                    "test_console_ctrl_c_interrupts_a_sleeping_loop covers Windows")
def test_sigint_stops_python_m_iocploop_like_plain_python(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text(_SLEEPER, encoding="utf-8")
    rc, err, elapsed = _interrupt_child(["-m", "iocploop", str(script)], str(tmp_path))
    ref_rc, ref_err, _ = _interrupt_child([str(script)], str(tmp_path))
    assert "KeyboardInterrupt" in ref_err
    assert "KeyboardInterrupt" in err, err
    assert elapsed < 5
    assert rc == ref_rc
    # asyncio.run cancels the main task first: the same traceback shape.
    assert ("CancelledError" in err) == ("CancelledError" in ref_err)


@in_main_thread
def test_failed_reentrant_run_forever_keeps_sigint_working(loop):
    """A run_forever() refused because the loop already runs must leave the
    running loop's Ctrl+C handling alone (on Windows iocploop arms and disarms
    a SIGINT watch around run_forever)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sender = _sigint_soon(loop)
    refused = []

    def reenter():
        try:
            loop.run_forever()
        except RuntimeError as exc:
            refused.append(str(exc))
        sender.start()

    loop.call_soon(reenter)
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_forever_bounded(loop, timeout=10)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert refused and "already running" in refused[0]
    assert time.monotonic() - t0 < 5, "SIGINT did not interrupt the sleeping loop"
