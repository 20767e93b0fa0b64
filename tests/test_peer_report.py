"""The peer-suite report counts JUnit results per module and gates on
iocploop passing no fewer tests than stock asyncio."""
from __future__ import annotations

import importlib.util
import json
import pathlib

_PATH = pathlib.Path(__file__).resolve().parent.parent / "peer" / "report.py"
_spec = importlib.util.spec_from_file_location("peer_report", _PATH)
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def _junit(path, cases):
    body = []
    for classname, outcome in cases:
        inner = {"passed": "", "failed": "<failure message='x'/>", "error": "<error/>",
                 "skipped": "<skipped/>"}[outcome]
        body.append(f'<testcase classname="{classname}" name="t">{inner}</testcase>')
    path.write_text(f"<testsuites><testsuite>{''.join(body)}</testsuite></testsuites>")


def test_module_of_strips_the_class():
    assert report.module_of("tests.test_tcp.Test_UV_TCP") == "tests.test_tcp"
    assert report.module_of("test.test_asyncio.test_events.SelectorEventLoopTests") == \
        "test.test_asyncio.test_events"
    assert report.module_of("test_module") == "test_module"


def test_counts_and_gate(tmp_path):
    _junit(tmp_path / "uvloop-linux-py3.11-asyncio.xml",
           [("tests.test_a.T", "passed")] * 3 + [("tests.test_b.T", "skipped")])
    _junit(tmp_path / "uvloop-linux-py3.11-iocploop.xml",
           [("tests.test_a.T", "passed")] * 2 + [("tests.test_a.T", "failed"),
                                                 ("tests.test_b.T", "error")])
    (tmp_path / "uvloop-linux-py3.11-iocploop-deselected.json").write_text(
        json.dumps({"tests.test_b": 2}))
    text, problems = report.render(report.collect(tmp_path))
    assert "| tests.test_a | 2/1/0/0 | 3/0/0/0 | FAIL (1 fewer) |" in text
    assert "| tests.test_b | 0/1/0/2 | 0/0/1/0 | ok |" in text
    assert problems == ["uvloop/linux/py3.11 tests.test_a: iocploop passed 2, asyncio 3"]


def test_a_run_without_its_twin_fails_the_gate(tmp_path):
    _junit(tmp_path / "cpython-wine-py3.11-iocploop.xml", [("m.T", "passed")])
    _, problems = report.render(report.collect(tmp_path))
    assert problems == ["cpython/wine/py3.11: only ['iocploop'] ran"]
