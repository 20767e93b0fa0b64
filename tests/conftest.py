"""Shared configuration of iocploop's test suite.

Every behavioural test runs twice: once on iocploop and once on the stock
asyncio loop of the platform, which is the reference behaviour.

* ``@pytest.mark.asyncio`` tests: the pytest-asyncio hook
  ``pytest_asyncio_loop_factories`` below parametrises each of them over both
  loop factories (test ids ``[iocploop]`` and ``[asyncio]``).  This is also the
  configuration to copy into a project whose async tests should run on
  iocploop (return only the "iocploop" entry there).  A test about iocploop's
  internals narrows it with ``@pytest.mark.asyncio(loop_factories=["iocploop"])``.
* Synchronous tests that drive a loop themselves take the ``loop`` fixture,
  parametrised the same way; the loop is closed at teardown.
"""
from __future__ import annotations

import asyncio

import pytest

import iocploop

LOOP_FACTORIES = {
    "iocploop": iocploop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def pytest_asyncio_loop_factories(config, item):
    """pytest-asyncio (>= 1.5) hook: the event loops each asyncio test runs on."""
    return dict(LOOP_FACTORIES)


@pytest.fixture(params=list(LOOP_FACTORIES), ids=list(LOOP_FACTORIES))
def loop(request):
    """A fresh, not running event loop of each kind; closed at teardown."""
    ev_loop = LOOP_FACTORIES[request.param]()
    try:
        yield ev_loop
    finally:
        if not ev_loop.is_closed():
            ev_loop.close()


@pytest.fixture
def port():
    """A bare completion port (tests of the port itself); closed at teardown."""
    from iocploop._port import CompletionPort

    p = CompletionPort()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def pair():
    """A connected, non-blocking TCP pair over 127.0.0.1 (modules that want
    another kind of pair define their own)."""
    from _tcp_helpers import tcp_pair

    a, b = tcp_pair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def iocp_loop():
    """A fresh iocploop loop only (tests of iocploop's own parts)."""
    ev_loop = iocploop.new_event_loop()
    try:
        yield ev_loop
    finally:
        if not ev_loop.is_closed():
            ev_loop.close()
