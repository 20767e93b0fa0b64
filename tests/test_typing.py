"""Type hints of the public API (iocploop/py.typed): what a user's type
checker sees."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import typing

import pytest

import iocploop
from _helpers import PACKAGE_PARENT

PUBLIC_CALLABLES = [iocploop.new_event_loop, iocploop.run, iocploop.install,
                    iocploop.open_pipe_connection, iocploop.start_pipe_server,
                    iocploop.Loop.stats, iocploop.Loop.socket_stats,
                    iocploop.Loop.set_socket_reuse, iocploop.Loop.create_server]


def test_the_package_says_it_is_typed():
    assert os.path.isfile(os.path.join(os.path.dirname(iocploop.__file__), "py.typed"))


@pytest.mark.parametrize("func", PUBLIC_CALLABLES, ids=lambda f: f.__qualname__)
def test_public_callables_are_annotated(func):
    hints = typing.get_type_hints(func)
    assert "return" in hints, f"{func.__qualname__} has no return annotation"
    params = [p for p in func.__code__.co_varnames[:func.__code__.co_argcount
                                                     + func.__code__.co_kwonlyargcount]
              if p != "self"]
    assert all(p in hints for p in params), (func.__qualname__, params, hints)


USER_PROGRAM = textwrap.dedent('''
    import asyncio
    import iocploop

    async def main() -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        server.close()
        return 1

    result: int = iocploop.run(main())
    loop: iocploop.Loop = iocploop.new_event_loop(queue_depth=64)
    stats: dict[str, object] = loop.stats()
    with asyncio.Runner(loop_factory=iocploop.new_event_loop) as runner:
        again: int = runner.run(main())
''')


def _mypy(tmp_path, program: str) -> subprocess.CompletedProcess:
    path = tmp_path / "user_program.py"
    path.write_text(program)
    env = dict(os.environ, MYPYPATH=PACKAGE_PARENT)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--no-incremental", "--cache-dir", os.devnull, str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(sys.platform == "win32", reason="mypy reads the same Python source on every "
                    "system; it runs in the Linux job (tests/requirements.txt installs it there)")
def test_a_user_program_type_checks_strictly_and_a_wrong_one_does_not(tmp_path):
    good = _mypy(tmp_path, USER_PROGRAM)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = _mypy(tmp_path, USER_PROGRAM + "wrong: str = iocploop.run(main())\n")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert 'expression has type "int", variable has type "str"' in bad.stdout
