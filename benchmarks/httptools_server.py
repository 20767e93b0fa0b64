"""An httptools HTTP/1.1 server for benchmarks/http.py's keepalive test, on one loop.

    python -m benchmarks.httptools_server LOOP

LOOP: asyncio | uvloop | rloop | iocploop.  The server of vmbench's
"http-*-httptools" benchmarks, rewritten: an asyncio.Protocol feeds what it
receives to an httptools.HttpRequestParser (a new one per request); when a
request's head is complete it schedules the answer with loop.call_soon, which
writes "200 OK" with a body of N bytes of "X" for GET /N (1024 for GET /),
and closes the connection if the request did not ask to keep it alive.
Prints the port it listens on, then serves until killed.
"""
from __future__ import annotations

import argparse
import asyncio

import httptools

from ._loops import LOOPS, serve, until_killed

_responses: dict[int, bytes] = {}   # body size -> the whole response


def response(size: int) -> bytes:
    if size not in _responses:
        _responses[size] = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                            b"Content-Length: %d\r\n\r\n" % size) + b"X" * size
    return _responses[size]


class HttpProtocol(asyncio.Protocol):
    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.parser = None
        self.url = b""

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.parser = None

    def data_received(self, data):
        if self.parser is None:
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    # httptools callbacks
    def on_url(self, url):
        self.url += url

    def on_headers_complete(self):
        self.loop.call_soon(self.respond, self.url, self.parser.should_keep_alive())

    def respond(self, url, keep_alive):
        if self.transport.is_closing():
            return
        path = httptools.parse_url(url).path.decode("ascii")[1:]
        self.transport.write(response(int(path) if path.isdigit() else 1024))
        if not keep_alive:
            self.transport.close()
        self.parser = None


async def run() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(loop), "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await until_killed()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loop", choices=LOOPS)
    serve(parser.parse_args(argv).loop, run())


if __name__ == "__main__":
    main()
