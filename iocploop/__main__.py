"""python -m iocploop [-m module | script.py] [args...]

Runs an unmodified asyncio program on iocploop: asyncio.run(),
asyncio.new_event_loop() and asyncio.Runner() inside it create iocploop
loops.  sys.argv, sys.path[0] and ``__main__`` are what ``python script.py``
(or ``python -m module``) would give the program.
"""
from __future__ import annotations

import asyncio
import os
import runpy
import sys
import warnings

USAGE = "usage: python -m iocploop [-m module | script.py] [args...]"


def _use_iocploop_everywhere() -> None:
    import iocploop

    with warnings.catch_warnings():
        # Policies are deprecated from 3.14; they remain the one hook that
        # reaches asyncio.run() in a program we must not modify.
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(iocploop.EventLoopPolicy())


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        raise SystemExit(2 if not argv else 0)
    _use_iocploop_everywhere()
    if argv[0] == "-m":
        if len(argv) < 2:
            print(USAGE, file=sys.stderr)
            raise SystemExit(2)
        module = argv[1]
        # `python -m iocploop` already put the current directory first on
        # sys.path (unless -P / PYTHONSAFEPATH), as `python -m module` would.
        sys.argv = [module, *argv[2:]]   # runpy replaces argv[0] with the path
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    script = argv[0]
    if not os.path.exists(script):
        print(f"iocploop: can't open file {script!r}: no such file", file=sys.stderr)
        raise SystemExit(2)
    sys.argv = list(argv)
    # As for `python script.py`: the script's folder comes first on sys.path,
    # in place of the current directory that `-m iocploop` put there; in
    # safe-path mode (-P) plain Python adds nothing, and neither do we.
    if not sys.flags.safe_path:
        sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
