"""iocploop.run, asyncio.Runner / asyncio.run with a loop factory, the policy,
install(), and `python -m iocploop`."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import warnings

import pytest

import iocploop
from _helpers import IS_WINDOWS, child_env, run_python


async def _running_loop_info(value):
    await asyncio.sleep(0.001)
    ev_loop = asyncio.get_running_loop()
    return value, type(ev_loop), ev_loop.get_debug()


def test_run_returns_result_on_iocploop():
    value, loop_type, debug = iocploop.run(_running_loop_info("result"))
    assert value == "result"
    assert loop_type is iocploop.Loop
    assert debug is False


def test_run_debug_true():
    _, loop_type, debug = iocploop.run(_running_loop_info(None), debug=True)
    assert loop_type is iocploop.Loop
    assert debug is True


def test_run_propagates_exception():
    async def fails():
        await asyncio.sleep(0)
        raise ConnectionError("from main")

    with pytest.raises(ConnectionError, match="from main"):
        iocploop.run(fails())


def test_run_shuts_down_async_generators_and_executor():
    events = []

    async def agen():
        try:
            yield 1
        finally:
            events.append("agen-finally")

    gens = []

    async def main():
        g = agen()
        gens.append(g)
        await g.__anext__()
        await asyncio.get_running_loop().run_in_executor(None, lambda: None)
        return asyncio.get_running_loop()

    ev_loop = iocploop.run(main())
    assert events == ["agen-finally"]
    assert ev_loop.is_closed()
    assert ev_loop._port.closed


@pytest.mark.parametrize("runner", ["iocploop.run", "asyncio.run"])
def test_run_refuses_inside_running_loop(runner):
    """Like asyncio.run: a clear error, before any loop is created (so no
    "coroutine ... was never awaited" warning from a half-built Runner)."""
    run_fn = iocploop.run if runner == "iocploop.run" else asyncio.run

    import gc

    async def outer():
        coro = _running_loop_info(None)
        gc.collect()   # leftovers of earlier tests must not count here
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with pytest.raises(RuntimeError,
                                   match="cannot be called from a running event loop"):
                    run_fn(coro)
                gc.collect()
        finally:
            coro.close()
        return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]

    assert iocploop.run(outer()) == []


def test_asyncio_runner_with_loop_factory():
    with asyncio.Runner(loop_factory=iocploop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), iocploop.Loop)
        value, loop_type, _ = runner.run(_running_loop_info(1))
        value2, _, _ = runner.run(_running_loop_info(2))
        ev_loop = runner.get_loop()
    assert (value, value2) == (1, 2)
    assert loop_type is iocploop.Loop
    assert ev_loop.is_closed()


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.run() has no loop_factory argument before Python 3.12")
def test_asyncio_run_with_loop_factory():
    value, loop_type, _ = asyncio.run(_running_loop_info("x"), loop_factory=iocploop.new_event_loop)
    assert value == "x"
    assert loop_type is iocploop.Loop


def _get_policy():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return asyncio.get_event_loop_policy()


def _set_policy(policy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(policy)


def test_event_loop_policy_creates_iocploop_loops():
    policy = iocploop.EventLoopPolicy()
    ev_loop = policy.new_event_loop()
    try:
        assert isinstance(ev_loop, iocploop.Loop)
    finally:
        ev_loop.close()
    assert "iocploop" in repr(policy)


def test_install_makes_asyncio_run_use_iocploop():
    previous = _get_policy()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            iocploop.install()
        deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
        if sys.version_info >= (3, 12):
            assert deprecations, "install() should warn DeprecationWarning on 3.12+"
            assert any("iocploop.run" in str(w.message) for w in deprecations)
            # stacklevel points at the caller.
            assert any(w.filename == __file__ for w in deprecations)
        else:
            assert deprecations == []
        assert isinstance(_get_policy(), iocploop.EventLoopPolicy)
        _, loop_type, _ = asyncio.run(_running_loop_info(None))
        assert loop_type is iocploop.Loop
        ev_loop = asyncio.new_event_loop()
        try:
            assert isinstance(ev_loop, iocploop.Loop)
        finally:
            ev_loop.close()
    finally:
        _set_policy(previous)
    _, loop_type, _ = asyncio.run(_running_loop_info(None))
    assert loop_type is not iocploop.Loop


def test_public_names():
    for name in iocploop.__all__:
        assert hasattr(iocploop, name), name
    assert issubclass(iocploop.BackendUnavailableError, OSError)
    assert isinstance(iocploop.__version__, str)


# -- python -m iocploop ----------------------------------------------------------

_REPORT = textwrap.dedent("""
    import asyncio, json, sys

    async def main():
        return type(asyncio.get_running_loop()).__module__ + "." + \\
            type(asyncio.get_running_loop()).__qualname__

    loop_type = asyncio.run(main())
    print(json.dumps({"argv": sys.argv, "name": __name__, "path": sys.path,
                      "loop": loop_type}))
""")


def _last_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert lines, "child printed nothing"
    return json.loads(lines[-1])


def _norm(path: str) -> str:
    return os.path.normcase(os.path.normpath(path))


@pytest.fixture
def app_dir(tmp_path):
    d = tmp_path / "app"
    d.mkdir()
    (d / "script.py").write_text(_REPORT, encoding="utf-8")
    return d


def test_module_runs_script_with_its_argv_and_main(app_dir, tmp_path):
    script = str(app_dir / "script.py")
    res = run_python(["-m", "iocploop", script, "a", "b"], cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    info = _last_json(res.stdout)
    assert info["argv"] == [script, "a", "b"]
    assert info["name"] == "__main__"
    assert _norm(info["path"][0]) == _norm(str(app_dir))
    assert info["loop"] == "iocploop.loop.Loop"


def test_module_runs_script_given_relative_path(app_dir, tmp_path):
    res = run_python(["-m", "iocploop", os.path.join("app", "script.py")], cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    info = _last_json(res.stdout)
    assert info["argv"] == [os.path.join("app", "script.py")]
    assert _norm(info["path"][0]) == _norm(str(app_dir))
    assert info["loop"] == "iocploop.loop.Loop"


def test_plain_python_reference(app_dir, tmp_path):
    """The same script under plain python: asyncio's own loop, same argv."""
    script = str(app_dir / "script.py")
    res = run_python([script, "a", "b"], cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    info = _last_json(res.stdout)
    assert info["argv"] == [script, "a", "b"]
    assert info["name"] == "__main__"
    assert info["loop"] != "iocploop.loop.Loop"


@pytest.mark.parametrize("safe_path", [False, True], ids=["normal", "safe_path"])
def test_script_sys_path_matches_plain_python(app_dir, tmp_path, safe_path):
    """sys.path as `python script.py` gives it, also in safe-path mode
    (-P / PYTHONSAFEPATH=1, which the Wine runner uses), where Python does
    not prepend the script's folder and PYTHONPATH must stay intact."""
    script = str(app_dir / "script.py")
    extra = {"PYTHONSAFEPATH": "1"} if safe_path else {}
    ref = run_python([script], cwd=str(tmp_path), env=child_env(**extra))
    got = run_python(["-m", "iocploop", script], cwd=str(tmp_path), env=child_env(**extra))
    assert ref.returncode == 0, ref.stderr
    assert got.returncode == 0, got.stderr
    assert [_norm(p) for p in _last_json(got.stdout)["path"]] == \
        [_norm(p) for p in _last_json(ref.stdout)["path"]]


@pytest.fixture
def module_dir(tmp_path):
    (tmp_path / "pkgmod.py").write_text(_REPORT, encoding="utf-8")
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "__main__.py").write_text(_REPORT, encoding="utf-8")
    return tmp_path


def test_module_runs_module_with_dash_m(module_dir):
    res = run_python(["-m", "iocploop", "-m", "pkgmod", "x", "y"], cwd=str(module_dir))
    assert res.returncode == 0, res.stderr
    info = _last_json(res.stdout)
    assert info["name"] == "__main__"
    assert _norm(info["argv"][0]) == _norm(str(module_dir / "pkgmod.py"))
    assert info["argv"][1:] == ["x", "y"]
    assert info["loop"] == "iocploop.loop.Loop"


def test_module_runs_package_main_with_dash_m(module_dir):
    res = run_python(["-m", "iocploop", "-m", "mypkg"], cwd=str(module_dir))
    assert res.returncode == 0, res.stderr
    info = _last_json(res.stdout)
    assert info["name"] == "__main__"
    assert _norm(info["argv"][0]) == _norm(str(module_dir / "mypkg" / "__main__.py"))
    assert info["loop"] == "iocploop.loop.Loop"


def test_dash_m_sys_path_matches_plain_python(module_dir):
    ref = run_python(["-m", "pkgmod"], cwd=str(module_dir))
    got = run_python(["-m", "iocploop", "-m", "pkgmod"], cwd=str(module_dir))
    assert ref.returncode == 0, ref.stderr
    assert got.returncode == 0, got.stderr
    assert [_norm(p) for p in _last_json(got.stdout)["path"]] == \
        [_norm(p) for p in _last_json(ref.stdout)["path"]]


def test_script_exit_code_propagates(tmp_path):
    script = tmp_path / "exits.py"
    script.write_text(textwrap.dedent("""
        import asyncio

        async def main():
            await asyncio.sleep(0)
            raise SystemExit(3)

        asyncio.run(main())
    """), encoding="utf-8")
    res = run_python(["-m", "iocploop", str(script)], cwd=str(tmp_path))
    assert res.returncode == 3, res.stderr
    ref = run_python([str(script)], cwd=str(tmp_path))
    assert ref.returncode == 3


def test_script_exception_gives_traceback_and_exit_1(tmp_path):
    script = tmp_path / "raises.py"
    script.write_text("raise LookupError('script failed')\n", encoding="utf-8")
    res = run_python(["-m", "iocploop", str(script)], cwd=str(tmp_path))
    assert res.returncode == 1
    assert "LookupError: script failed" in res.stderr


def test_missing_script(tmp_path):
    missing = str(tmp_path / "no_such_script.py")
    res = run_python(["-m", "iocploop", missing], cwd=str(tmp_path))
    assert res.returncode == 2
    assert "no_such_script.py" in res.stderr
    assert "can't open file" in res.stderr
    assert "Traceback" not in res.stderr


def test_no_arguments_prints_usage(tmp_path):
    res = run_python(["-m", "iocploop"], cwd=str(tmp_path))
    assert res.returncode == 2
    assert "usage" in res.stderr.lower()
    res = run_python(["-m", "iocploop", "--help"], cwd=str(tmp_path))
    assert res.returncode == 0
    assert "usage" in res.stdout.lower()


def test_dash_m_without_module_name(tmp_path):
    res = run_python(["-m", "iocploop", "-m"], cwd=str(tmp_path))
    assert res.returncode == 2
    assert "usage" in res.stderr.lower()


def test_missing_module(tmp_path):
    res = run_python(["-m", "iocploop", "-m", "no_such_module_xyz"], cwd=str(tmp_path))
    assert res.returncode != 0
    assert "no_such_module_xyz" in res.stderr


def test_script_sees_new_event_loop_and_runner_as_iocploop(tmp_path):
    script = tmp_path / "loops.py"
    script.write_text(textwrap.dedent("""
        import asyncio, json
        ev = asyncio.new_event_loop()
        kinds = [type(ev).__name__]
        ev.close()
        with asyncio.Runner() as r:
            kinds.append(type(r.get_loop()).__name__)
        print(json.dumps(kinds))
    """), encoding="utf-8")
    res = run_python(["-m", "iocploop", str(script)], cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == ["Loop", "Loop"]


@pytest.mark.skipif(not IS_WINDOWS, reason="checks the Windows backend name in a child")
def test_child_uses_iocp_backend_on_windows(tmp_path):   # pragma: no cover - Windows
    script = tmp_path / "backend.py"
    script.write_text("import asyncio\nasync def m():\n    return asyncio.get_running_loop()._port.backend\n"
                      "print(asyncio.run(m()))\n", encoding="utf-8")
    res = run_python(["-m", "iocploop", str(script)], cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "iocp"
