"""The peer-suite report: per suite and module, what passed on iocploop next
to what passed on stock asyncio on the same machine.

    python peer/report.py [--dir build/peer] [--out build/peer/report.md]

Reads the JUnit XML files the runners write,
``<suite>-<platform>-py<version>-<target>.xml`` (target iocploop or
asyncio), with ``...-deselected.json`` beside each ({module: count} of the
tests the suite's deselect list took out).  Prints the report, writes it as
Markdown, and exits with status 1 when iocploop passes fewer tests than
stock asyncio in any module both runs have (the gate .ci/run applies), or
when a run's twin is missing.
"""
from __future__ import annotations

import argparse
import collections
import json
import pathlib
import re
import sys
import xml.etree.ElementTree as ET

OUTCOMES = ("passed", "failed", "skipped", "deselected")
_NAME = re.compile(r"^(?P<suite>[a-z]+)-(?P<platform>[a-z]+)-py(?P<python>[\d.]+)-"
                   r"(?P<target>iocploop|asyncio)\.xml$")


def module_of(classname: str) -> str:
    """The module of a JUnit classname: "tests.test_tcp.Test_UV_TCP" ->
    "tests.test_tcp" (a classname without a class is its own module)."""
    head, _, tail = classname.rpartition(".")
    return head if head and tail[:1].isupper() else classname


def counts_of(xml_path: pathlib.Path) -> dict:
    """{module: Counter(passed=, failed=, skipped=, deselected=)} of one run."""
    table = collections.defaultdict(collections.Counter)
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        # A module skipped at collection has no class: its name is the module.
        module = module_of(case.get("classname") or case.get("name", "?"))
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            table[module]["failed"] += 1
        elif "skipped" in tags:
            table[module]["skipped"] += 1
        else:
            table[module]["passed"] += 1
    deselected = xml_path.with_name(xml_path.stem + "-deselected.json")
    if deselected.exists():
        for module, n in json.loads(deselected.read_text()).items():
            table[module]["deselected"] += n
    return table


def collect(directory: pathlib.Path) -> dict:
    """{(suite, platform, python): {target: counts}} for every run found."""
    runs = collections.defaultdict(dict)
    for path in sorted(directory.glob("*.xml")):
        match = _NAME.match(path.name)
        if match:
            key = (match["suite"], match["platform"], match["python"])
            runs[key][match["target"]] = counts_of(path)
    return runs


def _cell(counter) -> str:
    return "/".join(str(counter.get(k, 0)) for k in OUTCOMES)


def render(runs: dict) -> tuple[str, list[str]]:
    """(the Markdown report, the problems that fail the gate)."""
    lines, problems = [], []
    lines.append("# Peer suites: iocploop next to stock asyncio\n")
    lines.append("Cells are passed/failed/skipped/deselected. A module fails the gate when "
                 "iocploop passes fewer of its tests than stock asyncio.\n")
    for (suite, platform, python), targets in sorted(runs.items()):
        lines.append(f"## {suite} on {platform}, Python {python}\n")
        if set(targets) != {"iocploop", "asyncio"}:
            problems.append(f"{suite}/{platform}/py{python}: only {sorted(targets)} ran")
            lines.append(f"Missing a twin: only {sorted(targets)} ran.\n")
            continue
        ours, stock = targets["iocploop"], targets["asyncio"]
        lines.append("| module | iocploop | asyncio | gate |")
        lines.append("|---|---|---|---|")
        total = {"iocploop": collections.Counter(), "asyncio": collections.Counter()}
        for module in sorted(set(ours) | set(stock)):
            a, b = ours.get(module, collections.Counter()), stock.get(module, collections.Counter())
            total["iocploop"].update(a)
            total["asyncio"].update(b)
            verdict = "ok"
            if module in ours and module in stock and a["passed"] < b["passed"]:
                verdict = f"FAIL ({b['passed'] - a['passed']} fewer)"
                problems.append(f"{suite}/{platform}/py{python} {module}: iocploop passed "
                                f"{a['passed']}, asyncio {b['passed']}")
            lines.append(f"| {module} | {_cell(a)} | {_cell(b)} | {verdict} |")
        lines.append(f"| **total** | {_cell(total['iocploop'])} | {_cell(total['asyncio'])} | |")
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
