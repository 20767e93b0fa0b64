"""Nothing of AbstractEventLoop is missing: every method an asyncio program
may call is iocploop's own or asyncio's BaseEventLoop's, never the abstract
stub.  The only refusals are the platform's, and they match the stock loop
of that platform (Unix sockets on Windows, named pipes on Linux)."""
from __future__ import annotations

import asyncio
import inspect
import sys

import pytest

import iocploop
from _helpers import TIMEOUT

IS_WINDOWS = sys.platform == "win32"

# Methods a platform's own asyncio loop does not offer either.
PLATFORM_ONLY = {"create_unix_connection", "create_unix_server"} if IS_WINDOWS else set()


def _abstract_methods():
    return sorted(name for name, member in vars(asyncio.AbstractEventLoop).items()
                  if inspect.isfunction(member) and not name.startswith("__"))


@pytest.mark.parametrize("name", _abstract_methods())
def test_no_abstract_stub_is_left(name):
    impl = getattr(iocploop.Loop, name)
    if name in PLATFORM_ONLY:
        return   # checked below: refused as the stock loop refuses it
    assert impl is not getattr(asyncio.AbstractEventLoop, name), (
        f"loop.{name}() is AbstractEventLoop's stub")


@pytest.mark.skipif(not IS_WINDOWS, reason="Unix sockets are refused on Windows only")
@pytest.mark.parametrize("name", ["create_unix_connection", "create_unix_server"])
def test_unix_sockets_are_refused_on_windows_like_the_proactor(iocp_loop, name):
    with pytest.raises(NotImplementedError):
        iocp_loop.run_until_complete(
            asyncio.wait_for(getattr(iocp_loop, name)(asyncio.Protocol, "x"), TIMEOUT))
    stock = asyncio.new_event_loop()
    try:
        with pytest.raises(NotImplementedError):
            stock.run_until_complete(getattr(stock, name)(asyncio.Protocol, "x"))
    finally:
        stock.close()


@pytest.mark.skipif(IS_WINDOWS, reason="named pipes are refused on Linux only")
@pytest.mark.parametrize("name", ["start_serving_pipe", "create_pipe_connection"])
def test_named_pipes_are_refused_on_linux_with_a_pointer(iocp_loop, name):
    with pytest.raises(NotImplementedError, match="Unix domain sockets"):
        iocp_loop.run_until_complete(
            asyncio.wait_for(getattr(iocp_loop, name)(asyncio.Protocol, "x"), TIMEOUT))
