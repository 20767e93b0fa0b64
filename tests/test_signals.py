"""Signal handlers: loop.add_signal_handler / remove_signal_handler.

Linux: every test runs on iocploop and on stock asyncio (the Unix selector
loop, the reference behaviour), with SIGUSR1/SIGUSR2 and friends, and SIGINT.
Windows: iocploop handles SIGINT and SIGBREAK (console control events) and
refuses other signals with NotImplementedError; asyncio's ProactorEventLoop
refuses every signal (asserted by test_windows_stock_proactor_has_no_signal_handlers),
so the tests run on iocploop alone there, with SIGINT and SIGBREAK delivered
by signal.raise_signal() from another thread (as CPython's own tests do).

Covered: the handler runs in the loop (not inside the signal handler) with
its args; replacing; remove_signal_handler returns True/False and restores
Python's default disposition; argument errors (coroutine function, non-int,
invalid number, uncatchable signal); another thread; a closed loop;
loop.close() removes the handlers; a signal wakes an idle loop; a burst of
different signals; a raising handler; Ctrl+C of a child process whose main()
handles SIGINT itself (iocploop.run and asyncio.run).
"""
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

from _helpers import IS_WINDOWS, TIMEOUT, child_env, until
from conftest import LOOP_FACTORIES

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="Python handles signals in the main thread only")

#: Async tests: twins on Linux, iocploop alone on Windows (no reference there).
TWIN = pytest.mark.asyncio(loop_factories=["iocploop"]) if IS_WINDOWS else pytest.mark.asyncio
SIGNAL_LOOPS = ["iocploop"] if IS_WINDOWS else ["iocploop", "asyncio"]

if IS_WINDOWS:
    SIG, OTHER = signal.SIGINT, signal.SIGBREAK
    BURST = [signal.SIGINT, signal.SIGBREAK]
    CATCHABLE = [pytest.param(signal.SIGINT, id="SIGINT"),
                 pytest.param(signal.SIGBREAK, id="SIGBREAK")]
else:
    SIG, OTHER = signal.SIGUSR1, signal.SIGUSR2
    # SIGWINCH and SIGURG are ignored by default: harmless if one went astray.
    BURST = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGURG]
    CATCHABLE = [pytest.param(signal.SIGUSR1, id="SIGUSR1"),
                 pytest.param(signal.SIGINT, id="SIGINT")]

USED = sorted({signal.SIGINT, SIG, OTHER, *BURST})

@pytest.fixture(params=SIGNAL_LOOPS, ids=SIGNAL_LOOPS)
def loop(request):
    """A fresh, not running loop (Windows: iocploop only); closed at teardown."""
    ev_loop = LOOP_FACTORIES[request.param]()
    try:
        yield ev_loop
    finally:
        if not ev_loop.is_closed():
            ev_loop.close()


@pytest.fixture(autouse=True)
def restore_dispositions():
    """Whatever a failing test leaves behind, the next test starts with the
    signal dispositions this one started with."""
    saved = {sig: signal.getsignal(sig) for sig in USED}
    yield
    for sig, handler in saved.items():
        if signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)


def default_of(sig):
    return signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL


def deliver(*sigs) -> None:
    """Send this process each signal, returning once they are sent.
    Linux: kill(getpid()), process-directed.  Windows: raise_signal() from
    another thread (the C runtime calls the handler in that thread)."""
    if IS_WINDOWS:
        thread = threading.Thread(target=lambda: [signal.raise_signal(s) for s in sigs])
        thread.start()
        thread.join(TIMEOUT)
    else:
        for sig in sigs:
            os.kill(os.getpid(), sig)


def deliver_later(ev_loop, sigs, delay=0.1):
    """A started thread that sends the signals after delay seconds, and
    stops ev_loop if it still runs TIMEOUT seconds later (fail, never hang)."""
    def fire():
        time.sleep(delay)
        for sig in sigs:
            if IS_WINDOWS:
                signal.raise_signal(sig)
            else:
                os.kill(os.getpid(), sig)
        time.sleep(TIMEOUT)
        if ev_loop.is_running():
            ev_loop.call_soon_threadsafe(ev_loop.stop)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


# -- the reference on Windows ------------------------------------------------------------


@pytest.mark.skipif(not IS_WINDOWS, reason="asyncio's ProactorEventLoop is Windows' stock loop")
def test_windows_stock_proactor_has_no_signal_handlers():
    """The twin of every test below on Windows: the stock loop refuses every
    signal, which is why they run on iocploop alone."""
    ref = asyncio.new_event_loop()
    try:
        assert isinstance(ref, asyncio.ProactorEventLoop)
        for sig in (signal.SIGINT, signal.SIGBREAK, signal.SIGTERM):
            with pytest.raises(NotImplementedError):
                ref.add_signal_handler(sig, print)
            with pytest.raises(NotImplementedError):
                ref.remove_signal_handler(sig)
    finally:
        ref.close()


@pytest.mark.skipif(not IS_WINDOWS, reason="Windows only: Linux handles every catchable signal")
def test_windows_other_signals_are_not_implemented(iocp_loop):
    for name in ["SIGTERM", "SIGABRT", "SIGFPE", "SIGSEGV", "SIGILL"]:
        sig = getattr(signal, name)
        before = signal.getsignal(sig)
        with pytest.raises(NotImplementedError):
            iocp_loop.add_signal_handler(sig, print)
        assert signal.getsignal(sig) is before, name


# -- the handler runs, through the loop --------------------------------------------------


@TWIN
async def test_handler_runs_in_the_loop_with_its_args():
    loop = asyncio.get_running_loop()
    calls = []

    def handler(*args):
        calls.append((args, asyncio.get_running_loop() is loop,
                      threading.current_thread() is threading.main_thread()))

    loop.add_signal_handler(SIG, handler, "a", 1)
    try:
        deliver(SIG)
        # Python already ran its signal handler: the callback is only scheduled.
        assert calls == [], "the callback ran inside the signal handler, not from the loop"
        await until(lambda: calls)
        await settle()
        assert calls == [(("a", 1), True, True)]
        # Each delivery runs it again.
        deliver(SIG)
        await until(lambda: len(calls) == 2)
    finally:
        assert loop.remove_signal_handler(SIG) is True


@TWIN
async def test_a_plain_int_is_accepted():
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    loop.add_signal_handler(int(SIG), got.set_result, "int")
    try:
        deliver(SIG)
        assert await asyncio.wait_for(got, TIMEOUT) == "int"
    finally:
        assert loop.remove_signal_handler(SIG) is True


@TWIN
async def test_adding_again_replaces_the_handler():
    loop = asyncio.get_running_loop()
    calls = []
    loop.add_signal_handler(SIG, calls.append, "first")
    loop.add_signal_handler(SIG, calls.append, "second")
    try:
        deliver(SIG)
        await until(lambda: calls)
        await settle()
        assert calls == ["second"]
    finally:
        assert loop.remove_signal_handler(SIG) is True
    assert loop.remove_signal_handler(SIG) is False


@TWIN
@pytest.mark.parametrize("sig", CATCHABLE)
async def test_remove_returns_true_once_and_restores_the_default(sig):
    loop = asyncio.get_running_loop()
    assert loop.remove_signal_handler(sig) is False
    # (SIGINT: the Runner of pytest-asyncio has its own handler in place.)
    before = signal.getsignal(sig)
    loop.add_signal_handler(sig, print)
    assert signal.getsignal(sig) is not before   # the loop took the signal
    assert loop.remove_signal_handler(sig) is True
    assert signal.getsignal(sig) is default_of(sig)
    assert loop.remove_signal_handler(sig) is False


@TWIN
async def test_handlers_of_different_signals_are_independent():
    loop = asyncio.get_running_loop()
    calls = []
    loop.add_signal_handler(SIG, calls.append, "sig")
    loop.add_signal_handler(OTHER, calls.append, "other")
    try:
        assert loop.remove_signal_handler(OTHER) is True
        assert signal.getsignal(OTHER) is default_of(OTHER)
        deliver(SIG)
        await until(lambda: calls)
        await settle()
        assert calls == ["sig"]
    finally:
        assert loop.remove_signal_handler(SIG) is True


@TWIN
async def test_a_burst_of_signals_runs_each_handler():
    loop = asyncio.get_running_loop()
    calls = []
    for sig in BURST:
        loop.add_signal_handler(sig, calls.append, sig)
    try:
        deliver(*BURST)
        await until(lambda: len(calls) >= len(BURST))
        await settle()
        assert sorted(calls) == sorted(BURST)
    finally:
        for sig in BURST:
            assert loop.remove_signal_handler(sig) is True


@TWIN
async def test_a_raising_handler_goes_to_the_exception_handler_and_stays():
    loop = asyncio.get_running_loop()
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    calls = []

    def handler():
        calls.append(1)
        raise ZeroDivisionError("from a signal handler")

    loop.add_signal_handler(SIG, handler)
    try:
        deliver(SIG)
        await until(lambda: contexts)
        deliver(SIG)
        await until(lambda: len(contexts) == 2)
        await settle()
    finally:
        assert loop.remove_signal_handler(SIG) is True
    assert len(calls) == 2
    assert [type(c.get("exception")) for c in contexts] == [ZeroDivisionError] * 2
    assert all("message" in c for c in contexts)


def test_a_signal_wakes_an_idle_loop(loop):
    """run_forever() with nothing scheduled (no timer, no I/O) sleeps in the
    kernel until the signal arrives; its handler stops the loop."""
    calls = []

    def handler():
        calls.append(time.monotonic())
        loop.stop()

    loop.add_signal_handler(SIG, handler)
    loop.call_soon(deliver_later, loop, [SIG])
    started = time.monotonic()
    loop.run_forever()
    assert len(calls) == 1, "the signal did not wake the loop"
    assert calls[0] - started < 2
    assert loop.remove_signal_handler(SIG) is True


def test_a_burst_wakes_an_idle_loop(loop):
    calls = []

    def handler(sig):
        calls.append(sig)
        if len(calls) == len(BURST):
            loop.stop()

    for sig in BURST:
        loop.add_signal_handler(sig, handler, sig)
    loop.call_soon(deliver_later, loop, BURST)
    started = time.monotonic()
    loop.run_forever()
    assert sorted(calls) == sorted(BURST)
    assert time.monotonic() - started < 2


# -- errors ---------------------------------------------------------------------------------


@TWIN
async def test_a_coroutine_function_is_rejected():
    loop = asyncio.get_running_loop()

    async def handler():
        pass

    before = signal.getsignal(SIG)
    with pytest.raises(TypeError):
        loop.add_signal_handler(SIG, handler)
    assert signal.getsignal(SIG) is before
    assert loop.remove_signal_handler(SIG) is False


@TWIN
async def test_sig_must_be_an_int():
    loop = asyncio.get_running_loop()
    for sig in ["10", 10.0, None]:
        with pytest.raises(TypeError):
            loop.add_signal_handler(sig, print)
        with pytest.raises(TypeError):
            loop.remove_signal_handler(sig)


@TWIN
async def test_an_invalid_signal_number_is_a_value_error():
    loop = asyncio.get_running_loop()
    for sig in [0, -1, 1000]:
        with pytest.raises(ValueError):
            loop.add_signal_handler(sig, print)
        with pytest.raises(ValueError):
            loop.remove_signal_handler(sig)


@pytest.mark.skipif(IS_WINDOWS, reason="SIGKILL and SIGSTOP do not exist on Windows")
@TWIN
async def test_an_uncatchable_signal_is_a_runtime_error():
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGKILL, signal.SIGSTOP):
        with pytest.raises(RuntimeError):
            loop.add_signal_handler(sig, print)
        assert loop.remove_signal_handler(sig) is False
    # The loop still handles signals afterwards.
    got = loop.create_future()
    loop.add_signal_handler(SIG, got.set_result, "ok")
    try:
        deliver(SIG)
        assert await asyncio.wait_for(got, TIMEOUT) == "ok"
    finally:
        assert loop.remove_signal_handler(SIG) is True


def test_another_thread_cannot_add_a_handler(loop):
    outcome = []

    def attempt():
        try:
            loop.add_signal_handler(SIG, print)
        except BaseException as exc:   # noqa: BLE001 - recorded for the main thread
            outcome.append(exc)
        else:
            outcome.append(None)

    before = signal.getsignal(SIG)
    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join(TIMEOUT)
    assert len(outcome) == 1
    assert isinstance(outcome[0], RuntimeError), repr(outcome[0])
    assert signal.getsignal(SIG) is before
    assert loop.remove_signal_handler(SIG) is False


def test_a_closed_loop_refuses_handlers(loop):
    loop.close()
    before = signal.getsignal(SIG)
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(SIG, print)
    assert signal.getsignal(SIG) is before
    assert loop.remove_signal_handler(SIG) is False


def test_close_removes_the_loops_handlers(loop):
    sigs = sorted({SIG, OTHER, signal.SIGINT})
    for sig in sigs:
        loop.add_signal_handler(sig, print)
        assert signal.getsignal(sig) is not default_of(sig)
    loop.close()
    for sig in sigs:
        assert signal.getsignal(sig) is default_of(sig), signal.Signals(sig).name
    assert loop.remove_signal_handler(SIG) is False


def test_a_loop_handles_signals_again_after_removing_all(loop):
    """Removing the last handler and adding one again (the loop's wakeup
    channel goes and comes back) still delivers."""
    got = []

    async def main():
        ev_loop = asyncio.get_running_loop()
        for round_ in range(3):
            ev_loop.add_signal_handler(SIG, got.append, round_)
            deliver(SIG)
            await until(lambda: len(got) == round_ + 1)
            assert ev_loop.remove_signal_handler(SIG) is True

    loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    assert got == [0, 1, 2]


# -- Ctrl+C of a program whose main() handles SIGINT -----------------------------------------


_CTRL_C_CHILD = textwrap.dedent("""
    import asyncio, signal, sys
    import iocploop

    async def main():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        print("ready", flush=True)
        await asyncio.wait_for(stop.wait(), 30)
        print("SIGINT handled, shutting down", flush=True)
        return 7

    run = {"iocploop": iocploop.run, "asyncio": asyncio.run}[sys.argv[1]]
    print("main returned", run(main()), flush=True)
""")


@pytest.mark.skipif(IS_WINDOWS, reason="sending a console Ctrl+C to a child needs a console "
                    "shared with it (CTRL_C_EVENT): test_windows_console_ctrl_c_runs_the_handler "
                    "has the child press Ctrl+C in a console of its own")
@pytest.mark.parametrize("runner", ["iocploop", "asyncio"])
def test_ctrl_c_runs_the_handler_of_main_and_exits_cleanly(tmp_path, runner):
    script = tmp_path / "ctrl_c_child.py"
    script.write_text(_CTRL_C_CHILD, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), runner], env=child_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8")
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True)
    reader.start()
    try:
        try:
            first = lines.get(timeout=60)
        except queue.Empty:
            pytest.fail("the child never printed 'ready'")
        assert first.strip() == "ready"
        time.sleep(0.2)   # let it block in the kernel
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("the child did not exit within 5 s of SIGINT")
        reader.join(5)
        rest = []
        while not lines.empty():
            rest.append(lines.get().strip())
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0, stderr
    assert rest == ["SIGINT handled, shutting down", "main returned 7"], (rest, stderr)
    assert "KeyboardInterrupt" not in stderr
    assert "Traceback" not in stderr, stderr


_CONSOLE_CHILD = textwrap.dedent("""
    import asyncio, ctypes, signal, sys, threading, time
    import iocploop

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    out = open(sys.argv[1], "w")

    def press_ctrl_c():
        time.sleep(0.5)
        # A real console Ctrl+C, delivered to every process on this console.
        if not kernel32.GenerateConsoleCtrlEvent(0, 0):
            out.write(f"GenerateConsoleCtrlEvent failed: {ctypes.get_last_error()}\\n")
            out.flush()

    async def main():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        started = time.monotonic()
        await asyncio.wait_for(stop.wait(), 20)
        out.write(f"handled {time.monotonic() - started:.2f}\\n")
        return 7

    try:
        out.write(f"main returned {iocploop.run(main())}\\n")
    except BaseException as exc:
        out.write(f"raised {exc!r}\\n")
    out.close()
""")


@pytest.mark.skipif(not IS_WINDOWS, reason="console control events exist on Windows only")
def test_windows_console_ctrl_c_runs_the_handler(tmp_path):
    """iocploop only: asyncio's Windows loops have no add_signal_handler."""
    script = tmp_path / "child.py"
    script.write_text(_CONSOLE_CHILD, encoding="utf-8")
    result = tmp_path / "result.txt"
    # A console of its own, so the Ctrl+C reaches the child and not pytest.
    child = subprocess.run([sys.executable, str(script), str(result)], env=child_env(),
                           creationflags=subprocess.CREATE_NEW_CONSOLE, timeout=60)
    lines = result.read_text().splitlines()
    assert child.returncode == 0, lines
    assert len(lines) == 2 and lines[0].startswith("handled "), lines
    assert float(lines[0].split()[1]) < 10
    assert lines[1] == "main returned 7"
