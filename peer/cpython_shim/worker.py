"""Run one module of CPython's test.test_asyncio with plain unittest; write
one JSON object per line to an events file (peer/cpython_suite.py reads it).

    python worker.py --module test.test_asyncio.test_events --target iocploop
                     --platform linux --events FILE [--exclude-file F]
                     [--only-file F] [--test-timeout S]

Runs in the interpreter under test (Linux CPython, or Windows CPython under
Wine), with peer/cpython_shim/site first on PYTHONPATH (the sitecustomize hook
that makes iocploop the default loop when IOCPLOOP_PEER_TARGET=iocploop).

Each "result" event says which loop the test ran on ("loop": iocploop,
stock or none; peer/loop_probe.py) and, for the iocploop classes that
peer/cpython_shim/extras.py adds, which stock tests are its reference
("reference": their ids), so that peer/report.py compares test by test.

A watchdog thread ends the process (os._exit) when one test -- or the gap
between two tests, where class and module fixtures run -- takes longer than
--test-timeout: it writes a "timeout" event and dumps every thread's stack to
stderr first.  The runner then records the test as an error and starts a new
worker for the rest of the module (--exclude-file lists what already ran).
"""
from __future__ import annotations

import argparse
import faulthandler
import fnmatch
import importlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = "test.test_asyncio."

# deselect, extras (PYTHONSAFEPATH may have left this folder out) and
# peer/loop_probe.py.
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import deselect  # noqa: E402
import extras  # noqa: E402
import loop_probe  # noqa: E402


class Events:
    def __init__(self, path: str):
        self._f = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def emit(self, **event) -> None:
        event.setdefault("t", time.time())
        line = json.dumps(event, default=repr)
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()


class Watchdog(threading.Thread):
    """Ends the process when the current phase runs past the limit."""

    def __init__(self, events: Events, limit: float):
        super().__init__(name="peer-watchdog", daemon=True)
        self.events = events
        self.limit = limit
        self.phase = "(import)"
        self.since = time.monotonic()

    def mark(self, phase: str) -> None:
        self.phase, self.since = phase, time.monotonic()

    def run(self) -> None:
        while True:
            time.sleep(0.25)
            if time.monotonic() - self.since > self.limit:
                phase = self.phase
                self.events.emit(ev="timeout", id=phase, limit=self.limit,
                                 loop=loop_probe.verdict())
                sys.stderr.write(f"\n*** peer worker: {phase} ran past {self.limit:.0f} s; "
                                 "stacks of all threads:\n")
                sys.stderr.flush()
                try:
                    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                except Exception:
                    pass
                sys.stderr.flush()
                os._exit(124)


def _message(err) -> str:
    try:
        return "".join(traceback.format_exception_only(err[0], err[1])).strip()
    except Exception:
        return repr(err[1])


class Result(unittest.TestResult):
    """Streams one "result" event per test (subtest failures fold into it)."""

    def __init__(self, events: Events, watchdog: Watchdog):
        super().__init__()
        self.events = events
        self.watchdog = watchdog
        self.cur = None

    # -- per test
    def startTest(self, test):
        super().startTest(test)
        loop_probe.start()
        tid = test.id()
        self.cur = {"id": tid, "outcome": None, "message": "", "details": [],
                    "start": time.perf_counter()}
        self.watchdog.mark(tid)
        self.events.emit(ev="start", id=tid)

    def _is_current(self, test) -> bool:
        return (self.cur is not None and isinstance(test, unittest.TestCase)
                and test.id() == self.cur["id"])

    def _set(self, outcome, test, err=None, message=None):
        if (self.cur is not None and isinstance(test, unittest.case._SubTest)
                and test.test_case.id() == self.cur["id"]):
            if err is not None:
                self.cur["details"].append(self._exc_info_to_string(err, test))
            return  # a skipped subtest: the test itself still reports
        if not self._is_current(test):
            # An _ErrorHolder: setUpClass / tearDownClass / module fixtures.
            desc = getattr(test, "description", None) or test.id()
            self.events.emit(ev="fixture", id=desc, outcome=outcome,
                             message=message if message is not None else (_message(err) if err else ""),
                             details=self._exc_info_to_string(err, test) if err else "")
            return
        cur = self.cur
        rank = {"passed": 0, "skipped": 1, "xfail": 1, "failed": 2, "error": 2}
        if cur["outcome"] is None or rank[outcome] > rank[cur["outcome"]]:
            cur["outcome"] = outcome
        if message is not None and not cur["message"]:
            cur["message"] = message
        if err is not None:
            if not cur["message"]:
                cur["message"] = _message(err)
            cur["details"].append(self._exc_info_to_string(err, test))

    def addSuccess(self, test):
        super().addSuccess(test)
        if self._is_current(test) and self.cur["outcome"] is None:
            self.cur["outcome"] = "passed"

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set("failed", test, err)

    def addError(self, test, err):
        super().addError(test, err)
        self._set("error", test, err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._set("skipped", test, message=str(reason))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set("xfail", test, message="expected failure: " + _message(err))

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set("failed", test, message="unexpected success (test is marked expectedFailure)")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None and self._is_current(test):
            failed = issubclass(err[0], test.failureException)
            kind = "failed" if failed else "error"
            if self.cur["outcome"] not in ("failed", "error"):
                self.cur["outcome"] = kind
            if not self.cur["message"]:
                self.cur["message"] = f"{subtest._subDescription()}: {_message(err)}"
            self.cur["details"].append(f"--- subtest {subtest._subDescription()}\n"
                                       + self._exc_info_to_string(err, test))

    def stopTest(self, test):
        super().stopTest(test)
        cur, self.cur = self.cur, None
        if cur is None:
            return
        outcome = cur["outcome"] or ("failed" if cur["details"] else "passed")
        classname, _, name = cur["id"].rpartition(".")
        reference = [f"{ref}.{name}" for ref in extras.REFERENCES.get(classname, [])]
        self.events.emit(ev="result", id=cur["id"], outcome=outcome, message=cur["message"],
                         details="\n".join(cur["details"]),
                         duration=round(time.perf_counter() - cur["start"], 4),
                         loop=loop_probe.verdict(), reference=reference)
        self.watchdog.mark(f"(fixtures/teardown after {cur['id']})")


def flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


def matches(short_id: str, patterns) -> str | None:
    for pattern, reason in patterns:
        if "." not in pattern:
            if short_id == pattern or short_id.startswith(pattern + "."):
                return reason
        elif fnmatch.fnmatchcase(short_id, pattern):
            return reason
    return None


def read_ids(path: str | None) -> set[str] | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return {line.strip() for line in f if line.strip()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", required=True)
    ap.add_argument("--target", choices=["iocploop", "asyncio"], required=True)
    ap.add_argument("--platform", choices=["linux", "wine"], required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--exclude-file")
    ap.add_argument("--only-file")
    ap.add_argument("--test-timeout", type=float, default=60.0)
    ap.add_argument("--list-only", action="store_true",
                    help="collect and report the ids, run nothing")
    args = ap.parse_args()

    loop_probe.install()
    events = Events(args.events)
    faulthandler.enable(file=sys.stderr, all_threads=True)
    watchdog = Watchdog(events, args.test_timeout * 2)  # import + collection may be slow
    watchdog.start()

    import asyncio
    info = {"python": sys.version.split()[0], "executable": sys.executable,
            "platform": sys.platform, "default_policy": repr(asyncio.DefaultEventLoopPolicy)}
    if args.target == "iocploop":
        import iocploop
        info["iocploop"] = iocploop.__file__
        if asyncio.DefaultEventLoopPolicy is not iocploop.EventLoopPolicy:
            events.emit(ev="module_error", message="the sitecustomize hook did not run",
                        details=f"asyncio.DefaultEventLoopPolicy is {asyncio.DefaultEventLoopPolicy!r};"
                                f" sys.path={sys.path!r}")
            return 3
        loop = asyncio.new_event_loop()
        info["loop"] = type(loop).__module__ + "." + type(loop).__qualname__
        loop.close()
        asyncio.set_event_loop_policy(None)
    events.emit(ev="env", **info)

    # A private working directory, as regrtest gives each test (os_helper.TESTFN is relative).
    workdir = tempfile.mkdtemp(prefix="peer-cpython-")
    os.chdir(workdir)

    platform_patterns = deselect.PLATFORM_EXCLUDE.get(args.platform, [])
    short_module = args.module[len(PKG):] if args.module.startswith(PKG) else args.module
    excluded_reason = matches(short_module, platform_patterns) or matches(short_module, deselect.DESELECT)
    if excluded_reason is not None:
        # Whole module out: still count its tests (import only, run nothing).
        try:
            module = importlib.import_module(args.module)
            n = sum(1 for _ in flatten(unittest.defaultTestLoader.loadTestsFromModule(module)))
        except unittest.SkipTest as e:
            n = 0
            excluded_reason += f" (and it skips itself here: {e})"
        except Exception:
            n = 0
        events.emit(ev="collected", module=args.module, total=n, run=0,
                    deselected={"*": [n, excluded_reason]}, added=[])
        events.emit(ev="done")
        return 0

    try:
        module = importlib.import_module(args.module)
    except unittest.SkipTest as e:
        events.emit(ev="module_skip", module=args.module, message=str(e))
        events.emit(ev="done")
        return 0
    except BaseException as e:  # noqa: BLE001 - report whatever broke the import
        events.emit(ev="module_error", module=args.module, message=_message(sys.exc_info()),
                    details="".join(traceback.format_exception(type(e), e, e.__traceback__)))
        events.emit(ev="done")
        return 0

    added = extras.add_iocploop_classes(module) if args.target == "iocploop" else []
    loader = unittest.TestLoader()
    tests = list(flatten(loader.loadTestsFromModule(module)))
    exclude = read_ids(args.exclude_file) or set()
    only = read_ids(args.only_file)
    selected, deselected = [], {}
    for test in tests:
        tid = test.id()
        short = tid[len(PKG):] if tid.startswith(PKG) else tid
        reason = matches(short, deselect.DESELECT) or matches(short, platform_patterns)
        if reason is not None:
            deselected[tid] = reason
            continue
        if tid in exclude or (only is not None and tid not in only):
            continue
        selected.append(test)
    events.emit(ev="collected", module=args.module, total=len(tests), run=len(selected),
                deselected=deselected, added=added)
    if args.list_only:
        for test in selected:
            events.emit(ev="listed", id=test.id())
        events.emit(ev="done")
        return 0

    watchdog.limit = args.test_timeout
    watchdog.mark("(setUpModule/setUpClass of the first test)")
    result = Result(events, watchdog)
    suite = unittest.TestSuite(selected)
    try:
        suite.run(result)
    except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt from a test, etc.
        events.emit(ev="module_error", module=args.module, message=_message(sys.exc_info()),
                    details="".join(traceback.format_exception(type(e), e, e.__traceback__)))
    events.emit(ev="done")
    try:
        os.chdir(HERE)
        shutil.rmtree(workdir, ignore_errors=True)
    except Exception:
        pass
    return 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leftover non-daemon threads (executors, servers of a failed test) must not
    # keep the worker alive: the results are written.
    os._exit(rc)
