"""Ctrl+C: SIGINT interrupts a loop blocked in the kernel, as on asyncio.

A real console Ctrl+C on Windows is a console control event, which needs a
real console: test_sigint.py::test_console_ctrl_c_interrupts_a_sleeping_loop
(the lead's Windows test) covers it, and test_sigint.py also covers a SIGINT
sent from another thread on both systems."""
from __future__ import annotations

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

from _helpers import IS_WINDOWS, child_env, run_forever_bounded

WINDOWS_REASON = ("console control events need a real console; covered by "
                  "test_sigint.py::test_console_ctrl_c_interrupts_a_sleeping_loop")

in_main_thread = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="Python runs signal handlers in the main thread only")

_SLEEPER = textwrap.dedent("""
    import asyncio

    async def main():
        print("ready", flush=True)
        await asyncio.sleep(30)

    asyncio.run(main())
""")


def _sigint_from_thread(delay: float) -> threading.Thread:
    """A (not yet started) thread that sends this process SIGINT after delay:
    a process-directed kill() on Linux (the kernel hands it to the main
    thread), signal.raise_signal on Windows (Python sets its SIGINT event)."""
    def fire():
        time.sleep(delay)
        if IS_WINDOWS:
            signal.raise_signal(signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGINT)

    return threading.Thread(target=fire, daemon=True)


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


@pytest.mark.skipif(IS_WINDOWS, reason=WINDOWS_REASON)
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
@pytest.mark.skipif(IS_WINDOWS, reason="os.kill(SIGINT) is a console control event on Windows; "
                    "test_sigint.py covers the Windows path with signal.raise_signal")
def test_sigint_from_timer_thread_interrupts_run_forever(loop):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    killer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    try:
        killer.start()
        with pytest.raises(KeyboardInterrupt):
            run_forever_bounded(loop, timeout=10)
    finally:
        killer.cancel()
        killer.join(5)
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - t0 < 5
    assert not loop.is_running()
    # The loop can run again afterwards.
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


@in_main_thread
def test_failed_reentrant_run_forever_keeps_sigint_working(loop):
    """A run_forever() refused because the loop already runs must leave the
    running loop's Ctrl+C handling alone (on Windows iocploop arms and disarms
    a SIGINT watch around run_forever)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sender = _sigint_from_thread(0.2)
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
        if sender.is_alive():
            sender.join(5)
        signal.signal(signal.SIGINT, previous)
    assert refused and "already running" in refused[0]
    assert time.monotonic() - t0 < 5, "SIGINT did not interrupt the sleeping loop"
