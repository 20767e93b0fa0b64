"""The Starlette application test_uvicorn.py serves with uvicorn, in the test's
process and as `python -m uvicorn _starlette_app:app` (no test lives here)."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

STREAM_CHUNK = 32 * 1024


def stream_chunk(i: int) -> bytes:
    """The i-th chunk GET /stream sends."""
    return random.Random(2000 + i).randbytes(STREAM_CHUNK)


def loop_name() -> str:
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello from starlette")


async def loop_info(request: Request) -> JSONResponse:
    return JSONResponse({"loop": loop_name(), "lifespan_loop": request.app.state.lifespan_loop})


async def square(request: Request) -> JSONResponse:
    n = request.path_params["n"]
    return JSONResponse({"n": n, "square": n * n, "q": request.query_params.get("q")})


async def upload(request: Request) -> JSONResponse:
    h = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        h.update(chunk)
        size += len(chunk)
    return JSONResponse({"size": size, "sha256": h.hexdigest()})


async def stream(request: Request) -> StreamingResponse:
    chunks = int(request.query_params.get("chunks", "64"))

    async def body():
        for i in range(chunks):
            yield stream_chunk(i)
            if i % 16 == 0:
                await asyncio.sleep(0)

    return StreamingResponse(body(), media_type="application/octet-stream")


async def ws_echo(websocket: WebSocket) -> None:
    """Echo text and bytes; "close" closes with code 4002."""
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close":
                await websocket.close(code=4002, reason="asked to")
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    app.state.lifespan_loop = loop_name()
    yield


app = Starlette(
    routes=[
        Route("/", home),
        Route("/loop", loop_info),
        Route("/square/{n:int}", square),
        Route("/upload", upload, methods=["POST"]),
        Route("/stream", stream),
        WebSocketRoute("/ws", ws_echo),
    ],
    lifespan=lifespan,
)
