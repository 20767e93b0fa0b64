"""The peer-suite report and gate: each suite's run on iocploop next to its
run on stock asyncio on the same machine, compared test by test.

    python peer/report.py [--dir build/peer] [--out build/peer/report.md]

Reads the JUnit XML files the runners write,
``<suite>-<platform>-py<version>-<target>.xml`` (target iocploop or
asyncio), with ``...-deselected.json`` beside each ({module: count} of the
tests the suite's deselect list took out).  Each <testcase> of a run carries
the property "loop" (peer/loop_probe.py: "iocploop", "stock" or "none"), and
the tests of the iocploop classes CPython's runner adds carry "reference":
the ids of the stock tests they repeat on iocploop.

Only the tests of the iocploop run that ran on iocploop count for iocploop
(loop "iocploop"; a test whose process died before it said counts too).
The others of that run -- uvloop's AIO flavour, CPython classes that
hard-code asyncio's own loops, unit tests that build no loop -- are shown
apart and never compared.

The gate (.ci/run applies it) fails when
* a test that passed on stock asyncio (its reference, or the same test id)
  did not pass on iocploop (failed, errored or skipped), unless
  peer/expected_differences.py lists it with its reason;
* a test that passed on stock asyncio is missing from the iocploop run;
* a run's twin is missing.
Prints the report, writes it as Markdown, exits with status 1 when the gate
fails.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import fnmatch
import json
import pathlib
import re
import runpy
import sys
import xml.etree.ElementTree as ET

HERE = pathlib.Path(__file__).resolve().parent
EXPECTED_FILE = HERE / "expected_differences.py"
OUTCOMES = ("passed", "failed", "skipped", "deselected")
_NAME = re.compile(r"^(?P<suite>[a-z]+)-(?P<platform>[a-z]+)-py(?P<python>[\d.]+)-"
                   r"(?P<target>iocploop|asyncio)\.xml$")
_RANK = {"passed": 0, "skipped": 1, "failed": 2}


@dataclasses.dataclass
class Case:
    id: str
    module: str
    outcome: str              # passed, failed (failure or error), skipped
    loop: str = ""            # iocploop, stock, none; "" = not recorded
    reference: tuple = ()     # stock test ids this test repeats on iocploop
    message: str = ""

    @property
    def on_iocploop(self) -> bool:
        """Counts for iocploop: it built an iocploop loop, or its process
        died before it could say which loop it built."""
        return self.loop not in ("stock", "none")


def module_of(classname: str) -> str:
    """The module of a JUnit classname: "tests.test_tcp.Test_UV_TCP" ->
    "tests.test_tcp" (a classname without a class is its own module)."""
    head, _, tail = classname.rpartition(".")
    return head if head and tail[:1].isupper() else classname


def read_run(xml_path: pathlib.Path) -> dict[str, Case]:
    """{test id: Case} of one run; a test reported more than once (subtests)
    keeps its worst outcome."""
    cases: dict[str, Case] = {}
    for el in ET.parse(xml_path).getroot().iter("testcase"):
        # A module skipped at collection has no class: its name is the module.
        classname = el.get("classname") or ""
        name = el.get("name", "?")
        tid = f"{classname}.{name}" if classname else name
        tags = {child.tag for child in el}
        message = ""
        if tags & {"failure", "error"}:
            outcome = "failed"
            bad = el.find("failure")
            bad = bad if bad is not None else el.find("error")
            message = bad.get("message", "")
        elif "skipped" in tags:
            outcome = "skipped"
            message = el.find("skipped").get("message", "")
        else:
            outcome = "passed"
        props = {p.get("name"): p.get("value", "") for p in el.iter("property")}
        case = Case(id=tid, module=module_of(classname or name), outcome=outcome,
                    loop=props.get("loop", ""),
                    reference=tuple(r for r in props.get("reference", "").split(",") if r),
                    message=message)
        old = cases.get(tid)
        if old is None or _RANK[outcome] > _RANK[old.outcome]:
            if old is not None:
                case.loop = case.loop or old.loop
                case.reference = case.reference or old.reference
            cases[tid] = case
    return cases


def read_deselected(xml_path: pathlib.Path) -> dict[str, int]:
    path = xml_path.with_name(xml_path.stem + "-deselected.json")
    return json.loads(path.read_text()) if path.exists() else {}


def collect(directory: pathlib.Path) -> dict:
    """{(suite, platform, python): {target: (cases, deselected)}} for every run found."""
    runs: dict = collections.defaultdict(dict)
    for path in sorted(directory.glob("*.xml")):
        match = _NAME.match(path.name)
        if match:
            key = (match["suite"], match["platform"], match["python"])
            runs[key][match["target"]] = (read_run(path), read_deselected(path))
    return runs


def load_expected(path: pathlib.Path = EXPECTED_FILE) -> list[tuple[str, str, str, str]]:
    return list(runpy.run_path(str(path))["EXPECTED"])


def expected_reason(expected, suite: str, platform: str, tid: str) -> str | None:
    for e_suite, e_platform, pattern, reason in expected:
        if e_suite == suite and e_platform in ("*", platform) and fnmatch.fnmatchcase(tid, pattern):
            return reason
    return None


@dataclasses.dataclass
class Comparison:
    regressions: list = dataclasses.field(default_factory=list)   # (Case, reference id)
    missing: list = dataclasses.field(default_factory=list)       # stock Case not run on iocploop
    expected: list = dataclasses.field(default_factory=list)      # (Case, reference id, reason)
    unmatched: list = dataclasses.field(default_factory=list)     # iocploop failures, no passing twin
    used_patterns: set = dataclasses.field(default_factory=set)


def compare(ours: dict[str, Case], stock: dict[str, Case], expected, suite: str,
            platform: str) -> Comparison:
    """Test by test: every test that ran on iocploop, against the stock test
    it repeats (its reference, else the same id)."""
    result = Comparison()
    for tid, case in sorted(ours.items()):
        if not case.on_iocploop:
            continue
        twins = [stock[r] for r in (case.reference or (tid,)) if r in stock]
        passed_twin = next((t for t in twins if t.outcome == "passed"), None)
        if case.outcome == "passed":
            continue
        if passed_twin is None:
            if case.outcome == "failed":
                result.unmatched.append(case)
            continue
        reason = expected_reason(expected, suite, platform, tid)
        if reason is not None:
            result.expected.append((case, passed_twin.id, reason))
            result.used_patterns.update(
                p for s, pl, p, _ in expected
                if s == suite and pl in ("*", platform) and fnmatch.fnmatchcase(tid, p))
        else:
            result.regressions.append((case, passed_twin.id))
    for tid, case in sorted(stock.items()):
        if case.outcome == "passed" and tid not in ours:
            result.missing.append(case)
    return result


def _count(cases, deselected: dict[str, int]) -> dict[str, collections.Counter]:
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for case in cases:
        table[case.module][case.outcome] += 1
    for module, n in deselected.items():
        table[module]["deselected"] += n
    return table


def _cell(counter) -> str:
    return "/".join(str(counter.get(k, 0)) for k in OUTCOMES)


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."


def render(runs: dict, expected=None) -> tuple[str, list[str]]:
    """(the Markdown report, the problems that fail the gate)."""
    if expected is None:
        expected = load_expected()
    lines: list[str] = []
    problems: list[str] = []
    used: set = set()
    lines.append("# Peer suites: iocploop next to stock asyncio, test by test\n")
    lines.append(
        "Cells are passed/failed/skipped/deselected. **iocploop** counts only the tests of the "
        "iocploop run that ran on iocploop; **stock loops** are that run's other tests (a "
        "class bound to asyncio's own loops, or no loop at all), never compared. "
        "**asyncio** is the reference run. The gate fails on any test that passed on asyncio "
        "and not on iocploop, unless peer/expected_differences.py gives its reason.\n")
    for (suite, platform, python), targets in sorted(runs.items()):
        where = f"{suite}/{platform}/py{python}"
        lines.append(f"## {suite} on {platform}, Python {python}\n")
        if set(targets) != {"iocploop", "asyncio"}:
            problems.append(f"{where}: only {sorted(targets)} ran")
            lines.append(f"Missing a twin: only {sorted(targets)} ran.\n")
            continue
        (ours, ours_desel), (stock, stock_desel) = targets["iocploop"], targets["asyncio"]
        cmp = compare(ours, stock, expected, suite, platform)
        used |= {(suite, platform, p) for p in cmp.used_patterns}
        counted = _count([c for c in ours.values() if c.on_iocploop], ours_desel)
        apart = _count([c for c in ours.values() if not c.on_iocploop], {})
        reference = _count(stock.values(), stock_desel)
        bad_by_module = collections.Counter(c.module for c, _ in cmp.regressions)
        bad_by_module.update(c.module for c in cmp.missing)
        lines.append("| module | iocploop | stock loops (iocploop run) | asyncio | gate |")
        lines.append("|---|---|---|---|---|")
        totals = [collections.Counter(), collections.Counter(), collections.Counter()]
        for module in sorted(set(counted) | set(apart) | set(reference)):
            row = [counted.get(module, collections.Counter()), apart.get(module, collections.Counter()),
                   reference.get(module, collections.Counter())]
            for total, part in zip(totals, row):
                total.update(part)
            n = bad_by_module.get(module, 0)
            verdict = f"FAIL ({n})" if n else "ok"
            lines.append(f"| {module} | {_cell(row[0])} | {_cell(row[1])} | {_cell(row[2])} "
                         f"| {verdict} |")
        lines.append(f"| **total** | {_cell(totals[0])} | {_cell(totals[1])} | {_cell(totals[2])} | |")
        lines.append("")
        for case, ref in cmp.regressions:
            problems.append(f"{where} {case.id}: {case.outcome} on iocploop, passed on asyncio "
                            f"({ref})")
        for case in cmp.missing:
            problems.append(f"{where} {case.id}: passed on asyncio, did not run on iocploop")
        if cmp.regressions or cmp.missing:
            lines.append("Passed on asyncio, not on iocploop (these fail the gate):\n")
            for case, ref in cmp.regressions:
                twin = "" if ref == case.id else f" (reference {ref})"
                lines.append(f"- `{case.id}`{twin}: {case.outcome}: {_short(case.message)}")
            for case in cmp.missing:
                lines.append(f"- `{case.id}`: not in the iocploop run")
            lines.append("")
        if cmp.expected:
            lines.append("Passed on asyncio, not on iocploop, expected "
                         "(peer/expected_differences.py):\n")
            for case, ref, reason in cmp.expected:
                lines.append(f"- `{case.id}` ({case.outcome}): {reason}")
            lines.append("")
        if cmp.unmatched:
            lines.append(f"Failed on iocploop and on asyncio alike (or without a reference): "
                         f"{len(cmp.unmatched)}\n")
            for case in cmp.unmatched:
                lines.append(f"- `{case.id}`: {_short(case.message, 120)}")
            lines.append("")
    ran = {(s, p) for (s, p, _) in runs}
    stale = []
    for e_suite, e_platform, pattern, _ in expected:
        applies = [rp for rs, rp in ran if rs == e_suite and e_platform in ("*", rp)]
        if applies and not any((e_suite, rp, pattern) in used for rp in applies):
            stale.append((e_suite, e_platform, pattern))
    if stale:
        lines.append("Entries of peer/expected_differences.py that matched nothing in these "
                     "runs (the difference is gone, or the test did not run):\n")
        for s, p, pat in stale:
            lines.append(f"- {s}/{p}: `{pat}`")
        lines.append("")
    return "\n".join(lines), problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="build/peer", type=pathlib.Path)
    parser.add_argument("--out", default=None, type=pathlib.Path)
    args = parser.parse_args(argv)
    runs = collect(args.dir)
    if not runs:
        print(f"no peer-suite results in {args.dir}", file=sys.stderr)
        return 1
    text, problems = render(runs)
    out = args.out or args.dir / "report.md"
    out.write_text(text + "\n")
    print(text)
    print(f"(written to {out})")
    for problem in problems:
        print(f"GATE: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
