"""Ctrl+C interrupts a loop blocked in its wait, on both systems, as in asyncio.

Each test runs on iocploop and on stock asyncio (the reference).
"""
import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import iocploop

FACTORIES = {"iocploop": iocploop.new_event_loop, "asyncio": asyncio.new_event_loop}
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(iocploop.__file__)))

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
    import signal

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
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    # A console of its own, so the Ctrl+C reaches the child and not pytest.
    child = subprocess.run([sys.executable, str(script), str(result), loop_name], env=env,
                           creationflags=subprocess.CREATE_NEW_CONSOLE, timeout=60)
    outcome = result.read_text()
    assert child.returncode == 0, outcome
    assert outcome.startswith("KeyboardInterrupt"), outcome
    assert float(outcome.split()[-1]) < 10
