"""websockets' asyncio server and client (websockets.asyncio, websockets >= 13)
on iocploop: text and binary echo, an 8 MiB message, ping/pong, many clients
at once, and the close codes each side sees."""
from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

from _integration import TEST_TIMEOUT, assert_on_iocploop, payload, sha256

BIG = 8 * 1024 * 1024


async def echo(ws):
    assert_on_iocploop()
    async for message in ws:
        await ws.send(message)


def url_of(server) -> str:
    port = server.sockets[0].getsockname()[1]
    return f"ws://127.0.0.1:{port}"


@pytest.mark.asyncio
async def test_echo_text_binary_and_large():
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT), \
            serve(echo, "127.0.0.1", 0, max_size=2 * BIG) as server:
        async with connect(url_of(server), max_size=2 * BIG) as ws:
            for text in ["hello", "", "ünïcødé ✓ " * 100]:
                await ws.send(text)
                got = await ws.recv()
                assert isinstance(got, str) and got == text
            for data in [b"\x00\x01\x02", payload(65536, seed=1), payload(100_003, seed=2)]:
                await ws.send(data)
                got = await ws.recv()
                assert isinstance(got, bytes) and got == data
            big = payload(BIG, seed=3)
            await ws.send(big)
            got = await ws.recv()
            assert len(got) == BIG and sha256(got) == sha256(big)
            # a message sent in fragments comes back whole
            await ws.send([b"ab", b"cd", b"ef"])
            assert await ws.recv() == b"abcdef"


@pytest.mark.asyncio
async def test_ping_pong():
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT), serve(echo, "127.0.0.1", 0) as server:
        async with connect(url_of(server), ping_interval=None) as ws:
            for i in range(5):
                pong = await ws.ping(f"ping {i}".encode())
                latency = await pong
                assert latency >= 0
            assert ws.latency >= 0
            await ws.send("still open")
            assert await ws.recv() == "still open"


@pytest.mark.asyncio
async def test_many_clients_concurrently():
    assert_on_iocploop()

    async def client(url, n):
        async with connect(url) as ws:
            for i in range(10):
                msg = f"client {n} message {i}"
                await ws.send(msg)
                assert await ws.recv() == msg
        return n

    async with asyncio.timeout(TEST_TIMEOUT), serve(echo, "127.0.0.1", 0) as server:
        done = await asyncio.gather(*(client(url_of(server), n) for n in range(25)))
    assert done == list(range(25))


@pytest.mark.asyncio
async def test_close_codes():
    """The client closing normally (1000) and the server closing with an
    application code (4001) and reason: each side sees the other's code."""
    assert_on_iocploop()
    seen_by_server: list[tuple[int | None, str | None]] = []

    async def handler(ws):
        message = await ws.recv()
        if message == "close me":
            await ws.close(4001, "bye from server")
            return
        try:
            await ws.recv()
        except ConnectionClosedOK:
            seen_by_server.append((ws.close_code, ws.close_reason))

    async with asyncio.timeout(TEST_TIMEOUT), serve(handler, "127.0.0.1", 0) as server:
        async with connect(url_of(server)) as ws:
            await ws.send("hello")
        assert ws.close_code == 1000
        async with connect(url_of(server)) as ws:
            await ws.send("close me")
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.rcvd.code == 4001
            assert info.value.rcvd.reason == "bye from server"
            assert ws.close_code == 4001
            assert ws.close_reason == "bye from server"
        # the server's handler of the first connection has seen 1000 by now
        for _ in range(100):
            if seen_by_server:
                break
            await asyncio.sleep(0.01)
    assert seen_by_server == [(1000, "")]
