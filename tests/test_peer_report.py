"""The peer-suite gate (peer/report.py) compares the iocploop run with the
stock asyncio run test by test, counting only the tests that ran on
iocploop; peer/loop_probe.py tells which loop a test ran on."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import pathlib
import sys

import pytest

import iocploop

_PEER = pathlib.Path(__file__).resolve().parent.parent / "peer"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"peer_{name}", _PEER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


report = _load("report")
loop_probe = _load("loop_probe")

_OUTCOME_XML = {"passed": "", "failed": "<failure message='boom'/>", "error": "<error/>",
                "skipped": "<skipped message='why'/>"}


def _junit(path, cases):
    """cases: (classname, name, outcome, loop or None, reference or None)."""
    body = []
    for classname, name, outcome, loop, reference in cases:
        props = ""
        if loop or reference:
            props = "<properties>"
            if loop:
                props += f'<property name="loop" value="{loop}"/>'
            if reference:
                props += f'<property name="reference" value="{reference}"/>'
            props += "</properties>"
        body.append(f'<testcase classname="{classname}" name="{name}">'
                    f"{props}{_OUTCOME_XML[outcome]}</testcase>")
    path.write_text(f"<testsuites><testsuite>{''.join(body)}</testsuite></testsuites>")


def _case(classname, name, outcome, loop="iocploop", reference=None):
    return (classname, name, outcome, loop, reference)


def _render(tmp_path, expected=()):
    return report.render(report.collect(tmp_path), expected=list(expected))


def test_module_of_strips_the_class():
    assert report.module_of("tests.test_tcp.Test_UV_TCP") == "tests.test_tcp"
    assert report.module_of("test.test_asyncio.test_events.SelectorEventLoopTests") == \
        "test.test_asyncio.test_events"
    assert report.module_of("test_module") == "test_module"


def test_one_test_failing_on_iocploop_fails_the_gate_though_the_counts_match(tmp_path):
    # The module passes as many tests on each loop (2), which the old
    # per-module count let through: t1 passes on asyncio and fails on iocploop.
    _junit(tmp_path / "uvloop-linux-py3.11-asyncio.xml",
           [_case("tests.test_a.T", "t1", "passed", "stock"),
            _case("tests.test_a.T", "t2", "passed", "stock"),
            _case("tests.test_a.T", "t3", "failed", "stock")])
    _junit(tmp_path / "uvloop-linux-py3.11-iocploop.xml",
           [_case("tests.test_a.T", "t1", "failed"),
            _case("tests.test_a.T", "t2", "passed"),
            _case("tests.test_a.T", "t3", "passed")])
    (tmp_path / "uvloop-linux-py3.11-iocploop-deselected.json").write_text(
        json.dumps({"tests.test_a": 2}))
    text, problems = _render(tmp_path)
    assert problems == ["uvloop/linux/py3.11 tests.test_a.T.t1: failed on iocploop, "
                        "passed on asyncio (tests.test_a.T.t1)"]
    assert "| tests.test_a | 2/1/0/2 | 0/0/0/0 | 2/1/0/0 | FAIL (1) |" in text
    assert "- `tests.test_a.T.t1`: failed: boom" in text


def test_tests_on_stock_loops_in_the_iocploop_run_are_not_counted(tmp_path):
    # uvloop's AIO flavour runs on asyncio's loop in the iocploop run too: its
    # failure says nothing about iocploop, and its passes are no iocploop passes.
    _junit(tmp_path / "uvloop-wine-py3.11-asyncio.xml",
           [_case("tests.test_a.Test_AIO", "t", "passed", "stock"),
            _case("tests.test_a.Test_UV", "t", "passed", "stock"),
            _case("tests.test_a.Test_AIO", "u", "passed", "stock")])
    _junit(tmp_path / "uvloop-wine-py3.11-iocploop.xml",
           [_case("tests.test_a.Test_AIO", "t", "failed", "stock"),
            _case("tests.test_a.Test_UV", "t", "passed", "iocploop"),
            _case("tests.test_a.Test_AIO", "u", "passed", "stock")])
    text, problems = _render(tmp_path)
    assert problems == []
    assert "| tests.test_a | 1/0/0/0 | 1/1/0/0 | 3/0/0/0 | ok |" in text


def test_a_test_that_built_no_loop_is_not_counted(tmp_path):
    _junit(tmp_path / "cpython-linux-py3.11-asyncio.xml",
           [_case("m.T", "helper", "passed", "none")])
    _junit(tmp_path / "cpython-linux-py3.11-iocploop.xml",
           [_case("m.T", "helper", "failed", "none")])
    assert _render(tmp_path)[1] == []


def test_an_iocploop_class_is_compared_with_its_reference(tmp_path):
    ref = "m.EPollTests.t"
    _junit(tmp_path / "cpython-linux-py3.11-asyncio.xml",
           [_case("m.EPollTests", "t", "passed", "stock"),
            _case("m.EPollTests", "u", "failed", "stock")])
    _junit(tmp_path / "cpython-linux-py3.11-iocploop.xml",
           [_case("m.EPollTests", "t", "passed", "stock"),
            _case("m.EPollTests", "u", "failed", "stock"),
            _case("m.IocploopTests", "t", "failed", reference=ref),
            _case("m.IocploopTests", "u", "failed", reference="m.EPollTests.u")])
    text, problems = _render(tmp_path)
    assert problems == ["cpython/linux/py3.11 m.IocploopTests.t: failed on iocploop, "
                        "passed on asyncio (m.EPollTests.t)"]
    # u fails on the stock loop as well: shown, not a gate failure.
    assert "Failed on iocploop and on asyncio alike (or without a reference): 1" in text
    assert "- `m.IocploopTests.u`: boom" in text


def test_skipped_on_iocploop_only_fails_unless_expected(tmp_path):
    _junit(tmp_path / "cpython-linux-py3.11-asyncio.xml", [_case("m.T", "t", "passed", "stock")])
    _junit(tmp_path / "cpython-linux-py3.11-iocploop.xml", [_case("m.T", "t", "skipped")])
    _, problems = _render(tmp_path)
    assert problems == ["cpython/linux/py3.11 m.T.t: skipped on iocploop, passed on asyncio (m.T.t)"]
    expected = [("cpython", "*", "m.T.*", "reads the selector's internals"),
                ("cpython", "wine", "m.T.t", "a Wine-only entry: not applied on Linux"),
                ("cpython", "linux", "m.Gone.t", "a stale entry")]
    text, problems = _render(tmp_path, expected)
    assert problems == []
    assert "- `m.T.t` (skipped): reads the selector's internals" in text
    assert "- cpython/linux: `m.Gone.t`" in text          # stale: reported
    assert "`m.T.*`" not in text.split("matched nothing")[-1]   # used: not stale
    assert "cpython/wine" not in text                     # no Wine run here: not stale


def test_a_test_missing_from_the_iocploop_run_fails_the_gate(tmp_path):
    _junit(tmp_path / "uvloop-linux-py3.11-asyncio.xml",
           [_case("tests.test_a.T", "t", "passed", "stock"),
            _case("tests.test_a.T", "gone_but_failed", "failed", "stock")])
    _junit(tmp_path / "uvloop-linux-py3.11-iocploop.xml", [])
    _, problems = _render(tmp_path)
    assert problems == ["uvloop/linux/py3.11 tests.test_a.T.t: passed on asyncio, "
                        "did not run on iocploop"]


def test_a_test_whose_process_died_before_saying_counts(tmp_path):
    # No loop property: the runner's record of a crash or a timeout.
    _junit(tmp_path / "uvloop-wine-py3.11-asyncio.xml", [_case("tests.test_a.T", "t", "passed", "stock")])
    _junit(tmp_path / "uvloop-wine-py3.11-iocploop.xml", [_case("tests.test_a.T", "t", "error", None)])
    assert len(_render(tmp_path)[1]) == 1


def test_subtests_keep_the_worst_outcome_and_the_loop(tmp_path):
    path = tmp_path / "uvloop-linux-py3.11-iocploop.xml"
    _junit(path, [_case("tests.test_a.T", "t", "passed", "iocploop"),
                  _case("tests.test_a.T", "t", "failed", None),
                  _case("tests.test_a.T", "t", "passed", None)])
    (case,) = report.read_run(path).values()
    assert (case.outcome, case.loop) == ("failed", "iocploop")


def test_a_run_without_its_twin_fails_the_gate(tmp_path):
    _junit(tmp_path / "cpython-wine-py3.11-iocploop.xml", [_case("m.T", "t", "passed")])
    _, problems = _render(tmp_path)
    assert problems == ["cpython/wine/py3.11: only ['iocploop'] ran"]


def test_the_expected_differences_file_loads_and_gives_reasons():
    for suite, platform, pattern, reason in report.load_expected():
        assert suite in ("cpython", "uvloop") and platform in ("linux", "wine", "*")
        assert pattern and len(reason) > 20


@pytest.fixture
def probe():
    loop_probe.install()
    try:
        yield loop_probe
    finally:
        loop_probe.uninstall()


def test_the_probe_tells_which_loop_a_test_built(probe):
    probe.start()
    assert probe.verdict() == "none"
    asyncio.new_event_loop().close()
    assert probe.verdict() == "stock"
    iocploop.new_event_loop().close()
    assert probe.verdict() == "iocploop"
    probe.start()
    assert probe.verdict() == "none"
    seen = []
    probe.install(on_loop=seen.append)      # a second install only adds the listener
    asyncio.new_event_loop().close()
    iocploop.new_event_loop().close()
    assert seen == ["stock", "iocploop"]


def test_the_probe_leaves_no_trace_when_removed(probe):
    probe.uninstall()
    probe.start()
    asyncio.new_event_loop().close()
    assert probe.verdict() == "none"
    assert not hasattr(asyncio.BaseEventLoop.__init__, "_peer_loop_probe")
