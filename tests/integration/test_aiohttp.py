"""aiohttp's server (aiohttp.web) and client (ClientSession) talking to each
other on iocploop: concurrent requests, a 32 MiB streamed upload, a 16 MiB
streamed download, keep-alive reuse of one connection."""
from __future__ import annotations

import asyncio
import hashlib
import io
import sys

import aiohttp
import pytest
from aiohttp import web

from _integration import (DOWNLOAD_CHUNK, DOWNLOAD_SIZE, FILE_SIZE, TEST_TIMEOUT,
                          assert_on_iocploop, expected_download_sha256, file_content,
                          make_aiohttp_app, payload, sha256)

UPLOAD_CHUNK = 1024 * 1024
UPLOAD_CHUNKS = 32  # 32 MiB


@pytest.mark.asyncio
async def test_concurrent_get_and_post(aiohttp_server):
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT), aiohttp.ClientSession(aiohttp_server) as session:
        async def get_hello():
            async with session.get("/hello") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                return await resp.text()

        async def get_json(n):
            async with session.get(f"/json/{n}") as resp:
                assert resp.status == 200
                return await resp.json()

        async def post_echo(i):
            body = payload(1000 + 997 * i, seed=i)
            async with session.post("/echo", data=body) as resp:
                assert resp.status == 200
                got = await resp.read()
                assert resp.headers["X-Body-SHA256"] == sha256(body)
                return got == body

        results = await asyncio.gather(*(get_hello() for _ in range(20)),
                                       *(get_json(n) for n in range(20)),
                                       *(post_echo(i) for i in range(40)))
        assert results[:20] == ["hello from aiohttp"] * 20
        assert results[20:40] == [{"n": n, "squares": [i * i for i in range(n)]}
                                  for n in range(20)]
        assert results[40:] == [True] * 40

        async with session.get("/no-such-route") as resp:
            assert resp.status == 404


@pytest.mark.asyncio
async def test_large_streamed_upload(aiohttp_server):
    """32 MiB sent from an async generator (chunked encoding); the server hashes
    what arrives."""
    assert_on_iocploop()
    sent = hashlib.sha256()

    async def body():
        for i in range(UPLOAD_CHUNKS):
            chunk = payload(UPLOAD_CHUNK, seed=i)
            sent.update(chunk)
            yield chunk

    async with asyncio.timeout(TEST_TIMEOUT), aiohttp.ClientSession(aiohttp_server) as session:
        async with session.post("/upload", data=body()) as resp:
            assert resp.status == 200
            result = await resp.json()
    assert result["size"] == UPLOAD_CHUNK * UPLOAD_CHUNKS
    assert result["sha256"] == sent.hexdigest()
    assert result["chunks"] > 1


@pytest.mark.asyncio
async def test_streamed_download(aiohttp_server):
    """16 MiB written by a StreamResponse in 64 KiB chunks, read with iter_chunked."""
    assert_on_iocploop()
    h = hashlib.sha256()
    size = reads = 0
    async with asyncio.timeout(TEST_TIMEOUT), aiohttp.ClientSession(aiohttp_server) as session:
        async with session.get("/download") as resp:
            assert resp.status == 200
            assert resp.headers["Transfer-Encoding"] == "chunked"
            async for chunk in resp.content.iter_chunked(DOWNLOAD_CHUNK):
                h.update(chunk)
                size += len(chunk)
                reads += 1
    assert size == DOWNLOAD_SIZE
    assert h.hexdigest() == expected_download_sha256()
    assert reads >= DOWNLOAD_SIZE // DOWNLOAD_CHUNK


@pytest.mark.asyncio
async def test_file_response_sendfile(aiohttp_server):
    """web.FileResponse sends the file with loop.sendfile: whole, a byte range,
    and several at once, through iocploop's native sendfile (asyncio's hook
    _sendfile_native), not asyncio's copying fallback."""
    loop = assert_on_iocploop()
    calls = {"sendfile": 0, "native": 0}
    sendfile, native = loop.sendfile, loop._sendfile_native

    async def counting_sendfile(*args, **kwargs):
        calls["sendfile"] += 1
        return await sendfile(*args, **kwargs)

    async def counting_native(*args, **kwargs):
        calls["native"] += 1
        return await native(*args, **kwargs)

    loop.sendfile, loop._sendfile_native = counting_sendfile, counting_native
    content = file_content()
    async with asyncio.timeout(TEST_TIMEOUT), aiohttp.ClientSession(aiohttp_server) as session:
        async with session.get("/file") as resp:
            assert resp.status == 200
            assert resp.content_length == FILE_SIZE
            body = await resp.read()
        assert sha256(body) == sha256(content)
        async with session.get("/file", headers={"Range": "bytes=1000000-1999999"}) as resp:
            assert resp.status == 206
            assert await resp.read() == content[1000000:2000000]

        async def whole():
            async with session.get("/file") as resp:
                return sha256(await resp.read())

        assert await asyncio.gather(*(whole() for _ in range(6))) == [sha256(content)] * 6
    assert calls == {"sendfile": 8, "native": 8}


@pytest.mark.asyncio
async def test_keep_alive_reuses_one_connection(aiohttp_server):
    """A connector limited to one connection: ten requests, one after the
    other, all arrive from the same client port; a new session opens another."""
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT):
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(aiohttp_server, connector=connector) as session:
            peers = []
            for i in range(10):
                async with session.get("/peer") as resp:
                    assert resp.status == 200
                    info = await resp.json()
                    assert info["loop"] == "Loop"
                    peers.append(tuple(info["peer"]))
                # and a body-carrying request on the same connection in between
                async with session.post("/echo", data=b"x" * i) as resp:
                    assert await resp.read() == b"x" * i
        assert len(set(peers)) == 1, peers
        async with aiohttp.ClientSession(aiohttp_server) as session:
            async with session.get("/peer") as resp:
                other = tuple((await resp.json())["peer"])
        assert other != peers[0]


@pytest.mark.asyncio
async def test_client_timeout_and_server_disconnect(aiohttp_server):
    """A read timeout fires on a slow response; the server keeps serving."""
    assert_on_iocploop()
    timeout = aiohttp.ClientTimeout(total=TEST_TIMEOUT, sock_read=0.2)
    async with asyncio.timeout(TEST_TIMEOUT), \
            aiohttp.ClientSession(aiohttp_server, timeout=timeout) as session:
        with pytest.raises(asyncio.TimeoutError):
            async with session.get("/slow") as resp:
                await resp.read()
        async with session.get("/hello") as resp:
            assert await resp.text() == "hello from aiohttp"


@pytest.mark.asyncio
async def test_many_short_connections(aiohttp_server):
    """300 requests, each on a connection of its own (force_close), 100 at a
    time: the listener's accepts and the client's connects churn sockets."""
    assert_on_iocploop()
    connector = aiohttp.TCPConnector(force_close=True, limit=100)
    async with asyncio.timeout(TEST_TIMEOUT), \
            aiohttp.ClientSession(aiohttp_server, connector=connector) as session:
        async def one(i):
            async with session.post("/echo", data=str(i).encode()) as resp:
                assert resp.status == 200
                return int(await resp.read())

        assert await asyncio.gather(*(one(i) for i in range(300))) == list(range(300))


@pytest.mark.asyncio
async def test_localhost_name_and_happy_eyeballs(aiohttp_server):
    """"localhost" goes through the loop's getaddrinfo and aiohappyeyeballs'
    connection attempts (::1 first where it resolves, refused: the server
    listens on 127.0.0.1 only)."""
    assert_on_iocploop()
    port = int(aiohttp_server.rsplit(":", 1)[1])
    async with asyncio.timeout(TEST_TIMEOUT), aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(f"http://localhost:{port}/hello",
                                   headers={"Connection": "close"}) as resp:
                assert resp.status == 200
                assert await resp.text() == "hello from aiohttp"


@pytest.mark.errors_logged_by("aiohttp.server", ConnectionError)
@pytest.mark.asyncio
async def test_client_leaves_in_the_middle_of_a_download(aiohttp_server):
    """A client that reads 1 MiB of the 16 MiB download and closes the
    connection: the handler's next write fails with a ConnectionError (which
    aiohttp logs, as on asyncio's own loops), and the server goes on serving."""
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT):
        for _ in range(3):
            async with aiohttp.ClientSession(aiohttp_server) as session:
                resp = await session.get("/download")
                got = 0
                async for chunk in resp.content.iter_chunked(DOWNLOAD_CHUNK):
                    got += len(chunk)
                    if got >= 1024 * 1024:
                        break
                resp.close()  # drops the connection
        await asyncio.sleep(0.2)
        async with aiohttp.ClientSession(aiohttp_server) as session:
            async with session.get("/hello") as resp:
                assert await resp.text() == "hello from aiohttp"


@pytest.mark.skipif(sys.platform == "win32",
                    reason="web.UnixSite needs loop.create_unix_server: POSIX only")
@pytest.mark.asyncio
async def test_unix_socket_site(tmp_path):
    """aiohttp.web.UnixSite and aiohttp.UnixConnector over an AF_UNIX socket."""
    assert_on_iocploop()
    path = str(tmp_path / "web.sock")
    runner = web.AppRunner(make_aiohttp_app())
    await runner.setup()
    site = web.UnixSite(runner, path)
    await site.start()
    try:
        async with asyncio.timeout(TEST_TIMEOUT), \
                aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session:
            async with session.get("http://unix/hello") as resp:
                assert await resp.text() == "hello from aiohttp"
            body = payload(3 * 1024 * 1024, seed=41)
            async with session.post("http://unix/echo", data=io.BytesIO(body)) as resp:
                assert sha256(await resp.read()) == sha256(body)
    finally:
        await runner.cleanup()
