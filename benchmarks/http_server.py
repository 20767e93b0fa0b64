"""A minimal static-file HTTP/1.1 server for benchmarks/http.py, on one loop.

    python -m benchmarks.http_server LOOP MODE DIR [--no-socket-reuse]

LOOP: asyncio | uvloop | rloop | iocploop.  MODE: how a file's body goes out:
sendfile (transport.write(head), then loop.sendfile) or readwrite (f.readinto
a reused buffer, transport.write, drain).  Serves GET /NAME from DIR,
keep-alive (one request at a time per connection) unless the request says
"Connection: close".  GET /_stats answers with JSON: loop.socket_stats() where
the loop has it, and how many bodies went out through loop.sendfile
(sendfile_native) and how many through the readwrite code because the loop
has no sendfile (sendfile_fallback: uvloop, its issue #228).
--no-socket-reuse: iocploop's socket_reuse=False.  Prints the port it
listens on, then serves until killed.

The same code runs on every loop: an asyncio.Protocol parses requests, and
one task per request sends the response.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket

from ._loops import loop_arguments, serve, until_killed

CHUNK = 256 * 1024   # readwrite: bytes per readinto / write
MAX_HEAD = 16 * 1024


class Site:
    """What the connections share: the directory, the mode, the counters."""

    def __init__(self, loop, root: str, mode: str):
        self.loop = loop
        self.root = root
        self.mode = mode
        self.sendfile_native = 0
        self.sendfile_fallback = 0
        self.loop_has_sendfile = True
        self.buffers = []   # readwrite: CHUNK-sized buffers not in use, reused

    def stats(self) -> bytes:
        get_stats = getattr(self.loop, "socket_stats", None)
        return json.dumps({
            "socket_stats": get_stats() if get_stats is not None else None,
            "sendfile_native": self.sendfile_native,
            "sendfile_fallback": self.sendfile_fallback,
        }).encode()


class HTTPProtocol(asyncio.Protocol):
    def __init__(self, site: Site):
        self.site = site
        self.transport = None
        self.pending = bytearray()
        self.busy = False          # a response is being sent
        self.closed = False
        self.paused = False        # the transport asked us to stop writing
        self.drain_waiter = None
        self.task = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.pending += data
        if not self.busy:
            self.next_request()

    def connection_lost(self, exc):
        self.closed = True
        self.wake_drain(ConnectionResetError("connection lost"))

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self.wake_drain(None)

    # -- flow control ---------------------------------------------------------------

    def wake_drain(self, exc):
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    async def drain(self):
        if self.closed:
            raise ConnectionResetError("connection lost")
        if self.paused:
            self.drain_waiter = self.site.loop.create_future()
            await self.drain_waiter

    # -- requests -------------------------------------------------------------------

    def next_request(self):
        end = self.pending.find(b"\r\n\r\n")
        if end < 0:
            if len(self.pending) > MAX_HEAD:
                self.transport.close()
            return
        head = bytes(self.pending[:end])
        del self.pending[:end + 4]
        self.busy = True
        self.task = self.site.loop.create_task(self.respond(head))

    async def respond(self, head: bytes):
        try:
            method, target, _version = head.split(b"\r\n", 1)[0].split(b" ", 2)
            keep_alive = b"connection: close" not in head.lower()
            close = b"" if keep_alive else b"Connection: close\r\n"
            name = target.decode("latin-1").lstrip("/")
            if method != b"GET":
                self.send_small(b"405 Method Not Allowed", b"", close)
            elif name == "_stats":
                self.send_small(b"200 OK", self.site.stats(), close)
            elif "/" in name or name.startswith(".") or not name:
                self.send_small(b"404 Not Found", b"", close)
            else:
                await self.send_file(os.path.join(self.site.root, name), close)
        except (ConnectionError, ValueError):
            keep_alive = False
        except FileNotFoundError:
            self.send_small(b"404 Not Found", b"", close)
        self.busy = False
        if self.closed:
            return
        if not keep_alive:
            self.transport.close()
        elif self.pending:
            self.next_request()

    def send_small(self, status: bytes, body: bytes, close: bytes):
        self.transport.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s"
                             % (status, len(body), close, body))

    async def send_file(self, path: str, close: bytes):
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                                 b"Content-Type: application/octet-stream\r\n%s\r\n"
                                 % (size, close))
            site = self.site
            if site.mode == "sendfile" and site.loop_has_sendfile:
                try:
                    # fallback=False: asyncio's own fallback (16 KiB reads in
                    # the executor) never runs silently; the loop either
                    # sends natively or says it cannot.
                    await site.loop.sendfile(self.transport, f, 0, size, fallback=False)
                    site.sendfile_native += 1
                    return
                except asyncio.SendfileNotAvailableError as exc:
                    # Native sendfile exists but failed before sending
                    # anything: on a regular file, the connection is gone.
                    raise ConnectionError("sendfile failed") from exc
                except (NotImplementedError, RuntimeError):
                    if self.transport.is_closing():
                        raise ConnectionError("closed before sendfile") from None
                    # uvloop has no loop.sendfile (uvloop issue #228): from
                    # now on bodies go out through the readwrite code.
                    site.loop_has_sendfile = False
            await self.copy_body(f, size)
            if site.mode == "sendfile":
                site.sendfile_fallback += 1

    async def copy_body(self, f, size: int):
        buffers = self.site.buffers
        buffer = buffers.pop() if buffers else memoryview(bytearray(CHUNK))
        try:
            left = size
            while left > 0:
                if self.transport.is_closing():
                    raise ConnectionError("connection closed")
                n = f.readinto(buffer[:min(left, CHUNK)])
                if not n:
                    raise ConnectionError(f"{f.name} ended {left} bytes early")
                self.transport.write(buffer[:n])
                left -= n
                await self.drain()
        finally:
            buffers.append(buffer)


async def run(root: str, mode: str) -> None:
    loop = asyncio.get_running_loop()
    site = Site(loop, root, mode)
    server = await loop.create_server(lambda: HTTPProtocol(site), "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await until_killed()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop_arguments(parser)
    parser.add_argument("mode", choices=("sendfile", "readwrite"))
    parser.add_argument("dir")
    args = parser.parse_args(argv)
    serve(args.loop, run(args.dir, args.mode), socket_reuse=not args.no_socket_reuse)


if __name__ == "__main__":
    main()
