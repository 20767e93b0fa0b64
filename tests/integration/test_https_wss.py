"""The same libraries over TLS on iocploop: aiohttp's HTTPS server with the
aiohttp and httpx clients (aiohttp also through a CONNECT proxy, which makes
it use loop.start_tls), websockets over wss://, uvicorn serving HTTPS.
Certificates: the main suite's session PKI (tests/_tls_helpers.py)."""
from __future__ import annotations

import asyncio
import hashlib
import io

import aiohttp
import httpx
import pytest
import pytest_asyncio
import uvicorn
from aiohttp import web
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from _integration import (DOWNLOAD_CHUNK, TEST_TIMEOUT, assert_on_iocploop,
                          expected_download_sha256, make_aiohttp_app, payload, sha256)
from _starlette_app import app as starlette_app

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def https_server(pki):
    """aiohttp.web over TLS at 127.0.0.1 (port 0); yields its base URL."""
    runner = web.AppRunner(make_aiohttp_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context())
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_aiohttp_https(https_server, pki):
    assert_on_iocploop()
    connector = aiohttp.TCPConnector(ssl=pki.client_context(), limit=1)
    async with asyncio.timeout(TEST_TIMEOUT), \
            aiohttp.ClientSession(https_server, connector=connector) as s:
        async with s.get("/hello") as resp:
            assert resp.status == 200 and await resp.text() == "hello from aiohttp"
        body = payload(8 * 1024 * 1024, seed=21)
        async with s.post("/echo", data=io.BytesIO(body)) as resp:
            got = await resp.read()
        assert sha256(got) == sha256(body)
        chunks = 128
        h = hashlib.sha256()
        async with s.get("/download", params={"chunks": chunks}) as resp:
            async for chunk in resp.content.iter_chunked(DOWNLOAD_CHUNK):
                h.update(chunk)
        assert h.hexdigest() == expected_download_sha256(chunks)
        peers = set()
        for _ in range(5):
            async with s.get("/peer") as resp:
                info = await resp.json()
                assert info["tls"].startswith("TLSv1.")
                peers.add(tuple(info["peer"]))
        assert len(peers) == 1
    # a client that does not trust the server's CA is refused
    distrust = aiohttp.TCPConnector(ssl=pki.client_context(trust="other_ca"))
    async with asyncio.timeout(TEST_TIMEOUT), \
            aiohttp.ClientSession(https_server, connector=distrust) as s:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await s.get("/hello")


async def test_httpx_https(https_server, pki):
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT), \
            httpx.AsyncClient(base_url=https_server, verify=pki.client_context()) as client:
        r = await client.get("/json/3")
        assert r.json() == {"n": 3, "squares": [0, 1, 4]}
        body = payload(2 * 1024 * 1024, seed=22)
        r = await client.post("/echo", content=body)
        assert r.content == body
        results = await asyncio.gather(*(client.get("/hello") for _ in range(10)))
        assert {r.text for r in results} == {"hello from aiohttp"}


async def test_websockets_wss(pki):
    assert_on_iocploop()

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async with asyncio.timeout(TEST_TIMEOUT), \
            serve(echo, "127.0.0.1", 0, ssl=pki.server_context(), max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"wss://127.0.0.1:{port}", ssl=pki.client_context(),
                           max_size=None) as ws:
            for i in range(5):
                await ws.send(f"text {i}")
                assert await ws.recv() == f"text {i}"
            big = payload(4 * 1024 * 1024, seed=23)
            await ws.send(big)
            assert await ws.recv() == big
            pong = await ws.ping()
            await pong
        assert ws.close_code == 1000


async def test_uvicorn_https(pki):
    assert_on_iocploop()
    config = uvicorn.Config(starlette_app, host="127.0.0.1", port=0, log_level="warning",
                            ssl_certfile=str(pki.server_cert), ssl_keyfile=str(pki.server_key))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            while not server.started:
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}",
                                         verify=pki.client_context()) as client:
                r = await client.get("/loop")
                assert r.json()["loop"] == "iocploop.loop.Loop"
                body = payload(1024 * 1024, seed=24)
                r = await client.post("/upload", content=body)
                assert r.json() == {"size": len(body), "sha256": sha256(body)}
            async with connect(f"wss://127.0.0.1:{port}/ws", ssl=pki.client_context()) as ws:
                await ws.send(b"\x00binary")
                assert await ws.recv() == b"\x00binary"
    finally:
        server.should_exit = True
        async with asyncio.timeout(TEST_TIMEOUT):
            await task


async def test_aiohttp_https_through_a_connect_proxy(https_server, pki):
    """aiohttp reaches an HTTPS server through an HTTP CONNECT proxy: a plain
    connection to the proxy, then TLS over it with loop.start_tls.  The proxy
    is a small asyncio streams server on the same iocploop loop."""
    assert_on_iocploop()
    tunnels: list[str] = []

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def proxy(reader, writer):
        request = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ")
        assert method == "CONNECT", request
        tunnels.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    proxy_server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    proxy_url = f"http://127.0.0.1:{proxy_server.sockets[0].getsockname()[1]}"
    try:
        async with asyncio.timeout(TEST_TIMEOUT), aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=pki.client_context())) as s:
            async with s.get(f"{https_server}/peer", proxy=proxy_url) as resp:
                info = await resp.json()
                assert info["tls"].startswith("TLSv1.") and info["loop"] == "Loop"
            body = payload(3 * 1024 * 1024, seed=25)
            async with s.post(f"{https_server}/echo", data=io.BytesIO(body),
                              proxy=proxy_url) as resp:
                assert sha256(await resp.read()) == sha256(body)
        assert tunnels and set(tunnels) == {https_server.removeprefix("https://")}
    finally:
        proxy_server.close()
        await proxy_server.wait_closed()
