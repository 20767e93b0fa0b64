"""Helpers of the integration suite: the loop check, payloads, the aiohttp
application the aiohttp and httpx tests talk to (no test lives here)."""
from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import socket
import sys

import iocploop
from aiohttp import web

IS_WINDOWS = sys.platform == "win32"
#: Upper bound for one test's network exchange (Wine is slow, CI machines small).
TEST_TIMEOUT = 60.0


def assert_on_iocploop() -> iocploop.Loop:
    """The running loop, which must be iocploop's."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, iocploop.Loop), f"running on {type(loop)!r}, not iocploop.Loop"
    return loop


def payload(size: int, seed: int) -> bytes:
    """size deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------- aiohttp

#: Size of the streamed download and the chunk the server writes it in.
DOWNLOAD_SIZE = 16 * 1024 * 1024
DOWNLOAD_CHUNK = 64 * 1024


@functools.cache
def download_chunk(i: int) -> bytes:
    """The i-th chunk GET /download sends."""
    return payload(DOWNLOAD_CHUNK, 1000 + i)


def make_aiohttp_app(static_file: str | None = None):
    """An aiohttp.web application: plain, JSON, echo, hashing upload,
    streamed download, a route telling the connection's peer, and GET /file
    serving static_file with web.FileResponse (which uses loop.sendfile)."""
    routes = web.RouteTableDef()

    @routes.get("/hello")
    async def hello(request):
        assert_on_iocploop()
        return web.Response(text="hello from aiohttp")

    @routes.get("/json/{n}")
    async def as_json(request):
        n = int(request.match_info["n"])
        return web.json_response({"n": n, "squares": [i * i for i in range(n)]})

    @routes.post("/echo")
    async def echo(request):
        body = await request.read()
        return web.Response(body=body, headers={"X-Body-SHA256": sha256(body)})

    @routes.post("/upload")
    async def upload(request):
        h = hashlib.sha256()
        size = chunks = 0
        async for chunk in request.content.iter_any():
            h.update(chunk)
            size += len(chunk)
            chunks += 1
        return web.json_response({"size": size, "sha256": h.hexdigest(), "chunks": chunks})

    @routes.get("/download")
    async def download(request):
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(int(request.query.get("chunks", DOWNLOAD_SIZE // DOWNLOAD_CHUNK))):
            await resp.write(download_chunk(i))
        await resp.write_eof()
        return resp

    @routes.get("/slow")
    async def slow(request):
        await asyncio.sleep(1.0)
        return web.Response(text="late")

    @routes.get("/peer")
    async def peer(request):
        host, port = request.transport.get_extra_info("peername")[:2]
        tls = request.transport.get_extra_info("ssl_object")
        return web.json_response({"peer": [host, port],
                                  "loop": type(asyncio.get_running_loop()).__qualname__,
                                  "tls": tls.version() if tls else None})

    @routes.get("/file")
    async def file(request):
        return web.FileResponse(static_file)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(routes)
    return app


def expected_download_sha256(chunks: int = DOWNLOAD_SIZE // DOWNLOAD_CHUNK) -> str:
    """sha256 of GET /download?chunks=N."""
    h = hashlib.sha256()
    for i in range(chunks):
        h.update(download_chunk(i))
    return h.hexdigest()


#: Size of the file GET /file serves.
FILE_SIZE = 5 * 1024 * 1024 + 123


def file_content() -> bytes:
    return payload(FILE_SIZE, seed=4242)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
