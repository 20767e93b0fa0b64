"""uvicorn serving a Starlette app on iocploop, started four ways: awaited
in the test's own loop (uvicorn.Server.serve, h11 and httptools), by
uvicorn.Server.run with loop="iocploop:new_event_loop" (uvicorn's loop-factory
setting), and in a child process as `python -m uvicorn --loop
iocploop:new_event_loop` or `python -m iocploop -m uvicorn --loop none`.  Each
serves HTTP routes, a streamed request and response, a WebSocket route, and
the lifespan; the child processes stop by --limit-max-requests or SIGINT."""
from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import threading
import time

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

import iocploop
from _integration import TEST_TIMEOUT, assert_on_iocploop, payload
from _starlette_app import app, stream_chunk

HERE = os.path.dirname(os.path.abspath(__file__))
LOOP = "iocploop.loop.Loop"
FACTORY = "iocploop:new_event_loop"
#: HTTP responses exercise() gets (uvicorn's --limit-max-requests counts these).
EXERCISE_REQUESTS = 7


async def exercise(port: int) -> None:
    """Talk to the app with httpx and websockets, asserting every answer."""
    assert_on_iocploop()
    base = f"http://127.0.0.1:{port}"
    # The WebSocket first: after --limit-max-requests HTTP responses (the
    # upgrade is none), uvicorn closes WebSockets with 1012 as it shuts down.
    async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        big = payload(2 * 1024 * 1024, seed=12)
        await ws.send(big)
        assert await ws.recv() == big
        await ws.send("close")
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
        assert (ws.close_code, ws.close_reason) == (4002, "asked to")

    async with httpx.AsyncClient(base_url=base) as client:
        r = await client.get("/")
        assert r.status_code == 200 and r.text == "hello from starlette"
        r = await client.get("/loop")
        assert r.json() == {"loop": LOOP, "lifespan_loop": LOOP}
        r = await client.get("/square/12", params={"q": "ü x"})
        assert r.json() == {"n": 12, "square": 144, "q": "ü x"}
        r = await client.get("/square/nope")
        assert r.status_code == 404

        body = payload(3 * 1024 * 1024 + 5, seed=11)

        async def chunks():
            for i in range(0, len(body), 256 * 1024):
                yield body[i:i + 256 * 1024]

        r = await client.post("/upload", content=chunks())
        assert r.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}

        n = 128  # 4 MiB
        got = hashlib.sha256()
        async with client.stream("GET", "/stream", params={"chunks": n}) as r:
            assert r.status_code == 200
            async for part in r.aiter_bytes():
                got.update(part)
        want = hashlib.sha256(b"".join(stream_chunk(i) for i in range(n)))
        assert got.hexdigest() == want.hexdigest()

        r = await client.post("/", content=b"")
        assert r.status_code == 405


async def wait_started(server: uvicorn.Server, timeout: float = TEST_TIMEOUT) -> int:
    """The port of a uvicorn.Server once it listens."""
    deadline = time.monotonic() + timeout
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.01)
    return server.servers[0].sockets[0].getsockname()[1]


@pytest.mark.parametrize("http", ["h11", "httptools"])
@pytest.mark.asyncio
async def test_server_in_the_running_loop(http):
    """uvicorn.Server.serve() awaited on the test's iocploop loop, with both
    of uvicorn's HTTP parsers (h11 in Python, httptools in C)."""
    assert_on_iocploop()
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=http, ws="websockets-sansio",
                            lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            port = await wait_started(server)
            await exercise(port)
            await asyncio.gather(*(exercise(port) for _ in range(3)))
    finally:
        server.should_exit = True
        async with asyncio.timeout(TEST_TIMEOUT):
            await task


def test_server_run_with_loop_factory():
    """uvicorn.Server.run() makes its loop with loop="iocploop:new_event_loop"
    (a thread here); the client runs on iocploop.run in this thread."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, loop=FACTORY, log_level="warning")
    assert config.get_loop_factory() is iocploop.new_event_loop
    server = uvicorn.Server(config)
    failure = []

    def serve():
        try:
            server.run()
        except BaseException as e:  # noqa: BLE001 - reported below
            failure.append(e)

    thread = threading.Thread(target=serve, name="uvicorn")
    thread.start()

    async def client():
        async with asyncio.timeout(TEST_TIMEOUT):
            port = await wait_started(server)
            await exercise(port)

    try:
        iocploop.run(client())
    finally:
        server.should_exit = True
        thread.join(TEST_TIMEOUT)
    assert not thread.is_alive()
    assert not failure, failure


COMMANDS = {
    # uvicorn's own loop-factory setting
    "loop-factory": ["-m", "uvicorn", "--loop", FACTORY],
    # an unmodified program under iocploop's runner: uvicorn's "none" leaves
    # the loop to asyncio, whose policy the runner set to iocploop's
    "python-m-iocploop": ["-m", "iocploop", "-m", "uvicorn", "--loop", "none"],
}


@pytest.mark.parametrize("stop", [
    "limit",
    pytest.param("sigint", marks=pytest.mark.skipif(sys.platform == "win32",
                                                    reason="SIGINT to a child: POSIX")),
])
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.asyncio
async def test_uvicorn_command_line(command, stop):
    """uvicorn from the command line in a child process (started through
    iocploop's subprocess support), stopped by --limit-max-requests after
    exercise() (every system) or by SIGINT (POSIX); either way it shuts down
    cleanly and exits 0."""
    assert_on_iocploop()
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(iocploop.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    limit = ["--limit-max-requests", str(EXERCISE_REQUESTS)] if stop == "limit" else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *COMMANDS[command], "--app-dir", HERE, "_starlette_app:app",
        "--host", "127.0.0.1", "--port", "0", *limit, "--log-level", "info",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env)
    output: list[str] = []
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            port = None
            while port is None:
                line = (await proc.stdout.readline()).decode(errors="replace")
                assert line, "uvicorn exited before listening:\n" + "".join(output)
                output.append(line)
                if "Uvicorn running on http://127.0.0.1:" in line:
                    port = int(line.split("127.0.0.1:")[1].split()[0])
            await exercise(port)
            if stop == "sigint":
                proc.send_signal(signal.SIGINT)
            rest = await proc.stdout.read()
            output.append(rest.decode(errors="replace"))
            rc = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "".join(output)
    assert rc == 0, text
    if stop == "limit":
        assert "Maximum request limit of %d exceeded" % EXERCISE_REQUESTS in text, text
    assert "Shutting down" in text and "Finished server process" in text, text
    assert "Traceback" not in text, text
