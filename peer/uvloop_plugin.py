"""pytest plugin for running uvloop's suite through the shim (peer/uvloop_shim).

Loaded with `-p peer.uvloop_plugin` by peer/uvloop_suite.py.  It

* deselects the tests in peer/uvloop_shim/deselect.py (DESELECT for every
  target and platform; on Windows also STOCK_PROACTOR_HANGS, where the stock
  Proactor runs them) and writes how many per module to the JSON file
  named by --peer-deselected-json;
* records which loop each test ran on (peer/loop_probe.py) as the JUnit
  property "loop" of its <testcase> ("iocploop", "stock" or "none"), so that
  peer/report.py counts only the tests that ran on iocploop;
* writes the node id of the running test to $IOCPLOOP_PEER_PROGRESS, and on
  a second line the loop it built, so that the runner can name the test (and
  its loop) when a process dies or times out;
* arms a hard per-test watchdog ($IOCPLOOP_PEER_HARD_TIMEOUT seconds,
  faulthandler: dumps every thread's stack, then ends the process).
  pytest-timeout's signal method (Linux) raises its Failed once, and a test
  whose subtests catch it (unittest's subTest records BaseExceptions as
  sub-failures) or a loop stuck in C would otherwise never end;
* where pyOpenSSL cannot be imported (under Wine 8, cryptography's Rust
  extension does not load), puts a stand-in `OpenSSL` module in sys.modules
  so that test_tcp still imports: the two tests that use pyOpenSSL skip
  (unittest.SkipTest on first use) instead of the whole module erroring;
* ends the process with os._exit() once pytest has written its reports: a
  test that fails on a loop can leave a non-daemon thread blocked (an executor
  thread in Test_UV_UDP::test_socketpair, for one) and the interpreter would
  never exit.
"""
from __future__ import annotations

import faulthandler
import fnmatch
import json
import os
import runpy
import sys
from pathlib import Path

import pytest

from peer import loop_probe

_DESELECT_FILE = Path(__file__).resolve().parent / "uvloop_shim" / "deselect.py"
_state = {"exitstatus": None}


def load_deselect() -> dict[str, str]:
    """The patterns that apply to this run: DESELECT always; on Windows
    STOCK_PROACTOR_HANGS too, for the tests that run on the stock loop
    (see that list; "AIO" classes run on asyncio's loop in every target)."""
    lists = runpy.run_path(str(_DESELECT_FILE))
    patterns = dict(lists["DESELECT"])
    if sys.platform == "win32":
        on_stock = os.environ.get("IOCPLOOP_PEER_TARGET") == "asyncio"
        for pattern, why in lists["STOCK_PROACTOR_HANGS"].items():
            if on_stock:
                patterns[pattern] = why
            else:
                module, _, rest = pattern.partition("::*::")
                for cls in ("Test_AIO_*", "TestAIO*"):
                    patterns[f"{module}::{cls}::{rest}"] = why
    return patterns


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")


def _stand_in_for_pyopenssl() -> None:
    try:
        import OpenSSL.SSL  # noqa: F401
        return
    except ImportError as exc:
        reason = f"pyOpenSSL does not import here ({exc})"
    import types
    import unittest

    class _Missing(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            raise unittest.SkipTest(reason)

    pkg = types.ModuleType("OpenSSL")
    pkg.SSL = _Missing("OpenSSL.SSL")
    pkg.crypto = _Missing("OpenSSL.crypto")
    sys.modules.update({"OpenSSL": pkg, "OpenSSL.SSL": pkg.SSL, "OpenSSL.crypto": pkg.crypto})
    sys.stderr.write(f"peer.uvloop_plugin: {reason}; tests that use it will skip\n")


def pytest_configure(config):
    _stand_in_for_pyopenssl()
    loop_probe.install(on_loop=_on_loop)


def pytest_addoption(parser):
    parser.addoption("--peer-deselected-json", default=None,
                     help="write {module: number of deselected tests} here")


def pytest_collection_modifyitems(session, config, items):
    # IOCPLOOP_PEER_NO_DESELECT=1: run listed tests too (to look into one).
    patterns = {} if os.environ.get("IOCPLOOP_PEER_NO_DESELECT") else load_deselect()
    keep, dropped = [], []
    counts: dict[str, int] = {}
    for item in items:
        counts.setdefault(module_of(item.nodeid), 0)
        if any(fnmatch.fnmatchcase(item.nodeid, p) for p in patterns):
            dropped.append(item)
            counts[module_of(item.nodeid)] += 1
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    out = config.getoption("--peer-deselected-json")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")


_running = {"nodeid": ""}


def _progress(text: str) -> None:
    path = os.environ.get("IOCPLOOP_PEER_PROGRESS")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def _on_loop(kind: str) -> None:
    # The first iocploop loop (or the first loop) of a test: tell the runner.
    if _running["nodeid"]:
        _progress(f"{_running['nodeid']}\n{loop_probe.verdict()}")


def _hard_timeout() -> float:
    try:
        return float(os.environ.get("IOCPLOOP_PEER_HARD_TIMEOUT", "0"))
    except ValueError:
        return 0.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # Around the whole test (setup, call, teardown), once per test: unlike
    # pytest_runtest_logstart/logfinish, not repeated for each subtest.
    loop_probe.start()
    _running["nodeid"] = item.nodeid
    _progress(item.nodeid)
    hard = _hard_timeout()
    if hard > 0:
        sys.stderr.flush()
        faulthandler.dump_traceback_later(hard, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        if hard > 0:
            faulthandler.cancel_dump_traceback_later()
        _running["nodeid"] = ""
        _progress("")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item, call):
    # junitxml writes the teardown report's user_properties into <testcase>.
    if call.when == "teardown":
        item.user_properties.append(("loop", loop_probe.verdict()))


def pytest_sessionfinish(session, exitstatus):
    _state["exitstatus"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    status = _state["exitstatus"]
    if status is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
