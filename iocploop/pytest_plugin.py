"""pytest plugin: run a project's pytest-asyncio tests on iocploop.

Installed with iocploop (entry point ``pytest11``), inert until asked:

    pytest --asyncio-loop=iocploop         every asyncio test on iocploop
    pytest --asyncio-loop=both             each test twice: [asyncio] and [iocploop]

or in the project's configuration (``[tool.pytest.ini_options]``)::

    asyncio_loop = "iocploop"

It answers pytest-asyncio's ``pytest_asyncio_loop_factories`` hook (1.5 and
later), so tests, fixtures and ``loop_factories`` marks work as usual. A
``pytest_asyncio_loop_factories`` in the project's own conftest.py still wins.
"""
from __future__ import annotations

import asyncio

import pytest

CHOICES = ("asyncio", "iocploop", "both")


def pytest_addoption(parser):
    group = parser.getgroup("iocploop")
    group.addoption("--asyncio-loop", dest="iocploop_asyncio_loop", default=None,
                    choices=CHOICES,
                    help="event loop of pytest-asyncio tests: asyncio (pytest-asyncio's "
                         "default), iocploop, or both (each test on each loop)")
    parser.addini("asyncio_loop", default="asyncio",
                  help="default of --asyncio-loop: asyncio, iocploop or both")


class _LoopFactories:
    """Registered only when iocploop was chosen: with the hook implemented,
    pytest-asyncio parametrises every asyncio test over these factories."""

    def __init__(self, factories: dict):
        self.factories = factories

    @pytest.hookimpl(trylast=True)
    def pytest_asyncio_loop_factories(self, config, item):
        return dict(self.factories)


def _factories(choice: str) -> dict:
    import iocploop

    if choice == "iocploop":
        return {"iocploop": iocploop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "iocploop": iocploop.new_event_loop}


def pytest_configure(config):
    choice = config.getoption("iocploop_asyncio_loop") or config.getini("asyncio_loop")
    if choice not in CHOICES:
        raise pytest.UsageError(f"asyncio_loop = {choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return
    if not config.pluginmanager.hasplugin("asyncio"):
        raise pytest.UsageError(
            f"--asyncio-loop={choice} needs pytest-asyncio 1.5 or later (not loaded)")
    import pytest_asyncio.plugin as asyncio_plugin

    if not hasattr(asyncio_plugin, "PytestAsyncioSpecs"):
        raise pytest.UsageError(
            f"--asyncio-loop={choice} needs pytest-asyncio 1.5 or later "
            "(its pytest_asyncio_loop_factories hook)")
    config.pluginmanager.register(_LoopFactories(_factories(choice)), "iocploop-loop-factories")
