"""httpx.AsyncClient (httpcore on anyio's asyncio backend) against the aiohttp
server, both on iocploop: GET and POST, a streamed request and response,
keep-alive, timeouts."""
from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from _integration import (DOWNLOAD_CHUNK, TEST_TIMEOUT, assert_on_iocploop, free_port,
                          expected_download_sha256, payload, sha256)


@pytest.mark.asyncio
async def test_get_and_post(aiohttp_server):
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT), httpx.AsyncClient(base_url=aiohttp_server) as client:
        r = await client.get("/hello")
        assert r.status_code == 200 and r.text == "hello from aiohttp"
        assert r.http_version == "HTTP/1.1"
        r = await client.get("/json/5")
        assert r.json() == {"n": 5, "squares": [0, 1, 4, 9, 16]}
        body = payload(300_000, seed=7)
        r = await client.post("/echo", content=body)
        assert r.status_code == 200 and r.content == body
        assert r.headers["x-body-sha256"] == sha256(body)
        r = await client.get("/missing")
        assert r.status_code == 404

        results = await asyncio.gather(*(client.post("/echo", content=payload(5000, seed=i))
                                         for i in range(30)))
        assert [r.content for r in results] == [payload(5000, seed=i) for i in range(30)]


@pytest.mark.asyncio
async def test_streamed_request_and_response(aiohttp_server):
    assert_on_iocploop()
    sent = hashlib.sha256()

    async def body():
        for i in range(8):
            chunk = payload(512 * 1024, seed=100 + i)
            sent.update(chunk)
            yield chunk

    chunks = 64  # 4 MiB
    async with asyncio.timeout(TEST_TIMEOUT), httpx.AsyncClient(base_url=aiohttp_server) as client:
        r = await client.post("/upload", content=body())
        assert r.status_code == 200
        assert r.json()["size"] == 8 * 512 * 1024
        assert r.json()["sha256"] == sent.hexdigest()

        got = hashlib.sha256()
        size = 0
        async with client.stream("GET", "/download", params={"chunks": chunks}) as r:
            assert r.status_code == 200
            assert r.headers["transfer-encoding"] == "chunked"
            async for chunk in r.aiter_bytes():
                got.update(chunk)
                size += len(chunk)
    assert size == chunks * DOWNLOAD_CHUNK
    assert got.hexdigest() == expected_download_sha256(chunks)


@pytest.mark.asyncio
async def test_keep_alive(aiohttp_server):
    """One pooled connection serves every request in turn."""
    assert_on_iocploop()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with asyncio.timeout(TEST_TIMEOUT), \
            httpx.AsyncClient(base_url=aiohttp_server, limits=limits) as client:
        peers = set()
        for i in range(10):
            r = await client.get("/peer")
            assert r.json()["loop"] == "Loop"
            peers.add(tuple(r.json()["peer"]))
            r = await client.post("/echo", content=b"y" * i)
            assert r.content == b"y" * i
        assert len(peers) == 1, peers


@pytest.mark.asyncio
async def test_read_timeout(aiohttp_server):
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT), httpx.AsyncClient(base_url=aiohttp_server) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/slow", timeout=httpx.Timeout(5.0, read=0.2))
        r = await client.get("/hello")
        assert r.text == "hello from aiohttp"


@pytest.mark.asyncio
async def test_connection_refused():
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT), httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{free_port()}/")
