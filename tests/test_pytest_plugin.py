"""The pytest plugin (iocploop/pytest_plugin.py): a project's own
pytest-asyncio tests run on iocploop with one option or ini setting.  Each
case runs pytest in a child process on a small project made in tmp_path."""
from __future__ import annotations

import re
import textwrap

import pytest

from _helpers import child_env, run_python

USER_TESTS = textwrap.dedent('''
    import asyncio
    import pytest
    import pytest_asyncio

    @pytest.mark.asyncio
    async def test_which_loop():
        loop = asyncio.get_running_loop()
        print("LOOP=" + type(loop).__module__ + "." + type(loop).__name__)
        await asyncio.sleep(0)

    @pytest_asyncio.fixture
    async def served():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        yield server
        server.close()
        await server.wait_closed()

    @pytest.mark.asyncio
    async def test_async_fixture_on_the_same_loop(served):
        assert served.get_loop() is asyncio.get_running_loop()
''')


def _pytest(tmp_path, *args, ini: str = "", conftest: str = ""):
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n" + ini)
    if conftest:
        (tmp_path / "conftest.py").write_text(conftest)
    # Plugins named explicitly, not found through entry points: the
    # checkout may or may not have iocploop's metadata on the path.
    done = run_python(["-m", "pytest", "-p", "asyncio", "-p", "iocploop.pytest_plugin",
                       "-p", "no:cacheprovider", "-s", "-v", *args], cwd=tmp_path, timeout=120,
                      env=child_env(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"))
    return done.returncode, done.stdout + done.stderr


def _loops(output: str) -> list[str]:
    return re.findall(r"LOOP=(\S+)", output)


def test_option_runs_every_asyncio_test_on_iocploop(tmp_path):
    code, out = _pytest(tmp_path, "--asyncio-loop=iocploop")
    assert code == 0, out
    assert _loops(out) == ["iocploop.loop.Loop"], out
    assert "2 passed" in out


def test_ini_setting_both_runs_each_test_on_each_loop(tmp_path):
    code, out = _pytest(tmp_path, ini="asyncio_loop = both\n")
    assert code == 0, out
    loops = _loops(out)
    assert sorted(loops) == sorted(["iocploop.loop.Loop", loops[0]]) and len(set(loops)) == 2, out
    assert "test_which_loop[asyncio]" in out and "test_which_loop[iocploop]" in out
    assert "4 passed" in out


def test_without_the_option_the_plugin_changes_nothing(tmp_path):
    code, out = _pytest(tmp_path)
    assert code == 0, out
    assert _loops(out) and "iocploop" not in _loops(out)[0], out


def test_the_command_line_overrides_the_ini_setting(tmp_path):
    code, out = _pytest(tmp_path, "--asyncio-loop=asyncio", ini="asyncio_loop = iocploop\n")
    assert code == 0, out
    assert "iocploop" not in _loops(out)[0], out


def test_a_wrong_ini_value_is_a_usage_error(tmp_path):
    code, out = _pytest(tmp_path, ini="asyncio_loop = uvloop\n")
    assert code == pytest.ExitCode.USAGE_ERROR, out
    assert "asyncio_loop = 'uvloop'" in out


def test_the_projects_own_hook_wins(tmp_path):
    conftest = textwrap.dedent('''
        import asyncio

        class Mine(asyncio.SelectorEventLoop):
            pass

        def pytest_asyncio_loop_factories(config, item):
            return {"mine": Mine}
    ''')
    code, out = _pytest(tmp_path, "--asyncio-loop=iocploop", conftest=conftest)
    assert code == 0, out
    assert _loops(out) == ["conftest.Mine"], out
