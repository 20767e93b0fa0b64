"""loop.stats() (iocploop/_stats.py) and the reprs a user sees in logs."""
from __future__ import annotations

import asyncio
import re

import pytest

import iocploop
from _helpers import bounded, until

iocploop_only = pytest.mark.asyncio(loop_factories=["iocploop"])


async def _close_served(writers, expected: int = 1) -> None:
    """Close the server's side of its connections: from 3.12
    Server.wait_closed() waits for them.  The client's connect can finish
    before the server's callback recorded its writer (the accept completes
    later, as under Wine's ProactorEventLoop), so wait for it first: a writer
    missed here would hold wait_closed() until its timeout."""
    await until(lambda: len(writers) >= expected)
    for writer in writers:
        writer.close()


@iocploop_only
async def test_stats_follow_a_server_and_a_connection():
    loop = asyncio.get_running_loop()
    before = loop.stats()
    assert before["backend"] in ("iocp", "io_uring")
    assert before["accept_pools"] == {"listeners": 0, "posted": 0, "size": loop.accept_pool_size}

    served = []
    server = await asyncio.start_server(lambda r, w: served.append(w), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    await until(lambda: loop.stats()["transports"] >= 2)
    during = loop.stats()
    assert during["accept_pools"]["listeners"] == 1
    assert during["accept_pools"]["posted"] == loop.accept_pool_size
    assert during["operations"]["pending_by_kind"]["accept"] == loop.accept_pool_size
    assert during["operations"]["pending"] == sum(during["operations"]["pending_by_kind"].values())
    assert during["operations"]["submitted"] > before["operations"]["submitted"]
    assert during["operations"]["completed"] >= before["operations"]["completed"] + 2  # connect, accept
    assert during["waits"]["waits"] > before["waits"]["waits"]
    assert during["waits"]["completions_per_wait"] > 0
    assert set(during["sockets"]) >= {"created", "reused", "pooled", "enabled"}

    writer.close()
    await _close_served(served)
    server.close()
    await bounded(server.wait_closed())
    assert loop.stats()["accept_pools"]["listeners"] == 0
    # The cancelled accepts leave once the kernel reports them.
    await until(lambda: "accept" not in loop.stats()["operations"]["pending_by_kind"])


@iocploop_only
async def test_stats_count_scheduled_callbacks_and_threadsafe_wakeups():
    loop = asyncio.get_running_loop()
    timer = loop.call_later(60, lambda: None)
    loop.call_soon(lambda: None)
    snapshot = loop.stats()
    assert snapshot["scheduler"]["timers"] >= 1
    assert snapshot["scheduler"]["ready"] >= 1
    timer.cancel()
    done = loop.create_future()
    await loop.run_in_executor(None, loop.call_soon_threadsafe, done.set_result, None)
    await bounded(done)
    wakeups = loop.stats()["wakeups"]
    assert wakeups["sent"] + wakeups["merged"] >= 1


def test_stats_of_a_closed_loop_raise_as_other_calls_do(iocp_loop):
    iocp_loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        iocp_loop.stats()


@pytest.mark.asyncio
async def test_reprs_say_what_asyncio_s_say():
    """Loop and TCP transport reprs carry the facts asyncio's carry, in the
    same words, so logs read the same on either loop."""
    loop = asyncio.get_running_loop()
    assert re.search(r"running=True closed=False debug=(True|False)", repr(loop)), repr(loop)
    served = []
    server = await asyncio.start_server(lambda r, w: served.append(w), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    text = repr(writer.transport)
    # The selector loop's words (the Proactor shows its pending future instead).
    if not isinstance(loop, asyncio.ProactorEventLoop if hasattr(asyncio, "ProactorEventLoop")
                      else ()):
        assert re.search(r"fd=\d+ read=polling write=<idle, bufsize=0>>$", text), text
    writer.close()
    assert re.search(r" (closing|closed) ", repr(writer.transport)), repr(writer.transport)
    assert "sockets=(" in repr(server)
    await _close_served(served)
    server.close()
    await bounded(server.wait_closed())
    if isinstance(loop, iocploop.Loop):
        assert "backend=" in repr(loop) and "pending_ops=" in repr(loop)
