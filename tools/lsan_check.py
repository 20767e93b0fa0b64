"""Reads AddressSanitizer's reports (one file per process, from tools/asan.sh)
and fails on any memory error, or if a leaked block was allocated by
iocploop's C core.

CPython keeps much of its memory until exit on purpose, so every process of
the suite reports thousands of "leaks" in the interpreter: only the blocks
whose allocation stack passes through the core (functions ioc_*, files under
csrc/, the _ioc module) or through the compiled scheduler's own arrays (the
ready queue's and the timer heap's push) are ours; Python objects the
scheduler makes are the interpreter's to free.

    python3 tools/lsan_check.py REPORT_DIR
"""
from __future__ import annotations

import pathlib
import re
import sys

OURS = re.compile(r" in ioc_\w+ |csrc/ioc_|/_ioc\.|_scheduler_\w*(_Ring|TimerHeap)_push")


def leak_blocks(text: str):
    """Each 'Direct/Indirect leak of N byte(s)' block with its stack."""
    block: list[str] = []
    for line in text.splitlines():
        if re.match(r"(Direct|Indirect) leak of ", line):
            if block:
                yield block
            block = [line]
        elif block and line.strip():
            block.append(line)
        elif block:
            yield block
            block = []
    if block:
        yield block


def main(folder: str) -> int:
    reports = sorted(pathlib.Path(folder).glob("*"))
    ours = []
    interpreter = 0
    errors = []
    for report in reports:
        text = report.read_text(errors="replace")
        if "ERROR: AddressSanitizer:" in text:
            errors.append((report.name, text.splitlines()[:40]))
        for block in leak_blocks(text):
            if any(OURS.search(line) for line in block[1:]):
                ours.append((report.name, block))
            else:
                interpreter += 1
    print(f"LeakSanitizer: {len(reports)} process report(s), {interpreter} interpreter "
          f"block(s) ignored, {len(ours)} block(s) from iocploop's core")
    for name, block in ours[:20]:
        print(f"--- {name}\n" + "\n".join(block[:12]))
    for name, lines in errors:
        print(f"--- {name}: memory error\n" + "\n".join(lines))
    return 1 if ours or errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
