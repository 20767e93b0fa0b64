"""Networking and other methods of later milestones raise NotImplementedError
naming the method (iocploop only: asyncio implements them)."""
from __future__ import annotations

import asyncio
import re
import socket

import pytest

import iocploop
from _helpers import TIMEOUT

# method name -> positional arguments that would be valid for asyncio's loop
_S = object()   # placeholder: replaced by a real socket in the test
NOT_YET = {
    "connect_read_pipe": (asyncio.Protocol, None),
    "connect_write_pipe": (asyncio.Protocol, None),
    "subprocess_exec": (asyncio.SubprocessProtocol, "python"),
    "subprocess_shell": (asyncio.SubprocessProtocol, "echo"),
    "create_unix_connection": (asyncio.Protocol, "/nonexistent"),
    "create_unix_server": (asyncio.Protocol, "/nonexistent"),
    "add_reader": (_S, print),
    "remove_reader": (_S,),
    "add_writer": (_S, print),
    "remove_writer": (_S,),
    "add_signal_handler": (2, print),
    "remove_signal_handler": (2,),
}


@pytest.fixture
def sock():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("name", sorted(NOT_YET))
def test_method_raises_not_implemented_naming_it(iocp_loop, sock, name):
    args = tuple(sock if a is _S else a for a in NOT_YET[name])
    method = getattr(iocp_loop, name)
    with pytest.raises(NotImplementedError, match=re.escape(f"loop.{name}()")) as info:
        result = method(*args)
        # Should a later version make it a coroutine, awaiting it must raise.
        if asyncio.iscoroutine(result):
            iocp_loop.run_until_complete(asyncio.wait_for(result, TIMEOUT))
    assert "iocploop" in str(info.value)
    assert not iocp_loop.is_running()


@pytest.mark.asyncio(loop_factories=["iocploop"])
async def test_loop_keeps_working_after_not_implemented():
    ev_loop = asyncio.get_running_loop()
    assert isinstance(ev_loop, iocploop.Loop)
    a, b = socket.socketpair()
    try:
        with pytest.raises(NotImplementedError, match=r"loop\.add_reader\(\)"):
            ev_loop.add_reader(a, print)
    finally:
        a.close()
        b.close()
    assert await asyncio.wait_for(asyncio.sleep(0, "alive"), TIMEOUT) == "alive"


def test_table_covers_every_pending_method():
    from iocploop.loop import _PENDING_FEATURES

    pending = {name for names in _PENDING_FEATURES.values() for name in names}
    assert pending == set(NOT_YET)


def test_not_implemented_methods_are_documented(iocp_loop):
    for name in NOT_YET:
        method = getattr(type(iocp_loop), name)
        assert method.__name__ == name
        assert "Not implemented yet" in (method.__doc__ or "")
