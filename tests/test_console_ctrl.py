"""Windows: a real console Ctrl+C (GenerateConsoleCtrlEvent) reaches a running
loop through the C runtime's console control handler.

Each child gets a console of its own (CREATE_NEW_CONSOLE) and sends the
event to that console's processes from a thread while its loop runs.
Wine delivers CTRL_C_EVENT this way; it does not deliver CTRL_BREAK_EVENT
(GenerateConsoleCtrlEvent fails), so SIGBREAK is tested with
signal.raise_signal in test_signals.py.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from _helpers import child_env

pytestmark = pytest.mark.skipif(sys.platform != "win32",
                                reason="console control events are a Windows feature")

_PRELUDE = textwrap.dedent("""
    import asyncio, ctypes, signal, sys, threading, time
    import iocploop

    def ctrl_c_soon(delay=0.3):
        def fire():
            time.sleep(delay)
            if not ctypes.windll.kernel32.GenerateConsoleCtrlEvent(0, 0):
                print("GenerateConsoleCtrlEvent failed", flush=True)
        threading.Thread(target=fire, daemon=True).start()
""")


def _run_child(body: str, cwd) -> subprocess.CompletedProcess:
    # cwd: away from the source tree, whose iocploop/ has no built core.
    return subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(body)],
                          creationflags=subprocess.CREATE_NEW_CONSOLE, capture_output=True,
                          env=child_env(), cwd=cwd, timeout=60)


def test_ctrl_c_runs_the_loops_sigint_handler(tmp_path):
    proc = _run_child("""
        async def main():
            loop = asyncio.get_running_loop()
            got = asyncio.Event()
            loop.add_signal_handler(signal.SIGINT, got.set)
            ctrl_c_soon()
            await asyncio.wait_for(got.wait(), 10)
            assert loop.remove_signal_handler(signal.SIGINT)
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
            print("handled", flush=True)
        iocploop.run(main())
    """, tmp_path)
    assert proc.stdout.decode().split() == ["handled"], proc.stderr.decode()[-2000:]
    assert proc.returncode == 0


@pytest.mark.parametrize("runner", ["iocploop.run", "asyncio.run"])
def test_ctrl_c_cancels_the_main_task_as_in_asyncio(runner, tmp_path):
    proc = _run_child(f"""
        async def main():
            ctrl_c_soon()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                print("main task cancelled", flush=True)
                raise
        started = time.monotonic()
        try:
            {runner}(main())
        except KeyboardInterrupt:
            print("KeyboardInterrupt after %.0f s" % (time.monotonic() - started), flush=True)
    """, tmp_path)
    out = proc.stdout.decode().splitlines()
    assert out[0] == "main task cancelled", (out, proc.stderr.decode()[-2000:])
    assert out[1].startswith("KeyboardInterrupt after ")
    assert float(out[1].split()[-2]) < 10
