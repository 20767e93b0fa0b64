"""An echo server for benchmarks/echo.py, in one of four styles, on one loop.

    python -m benchmarks.echo_server LOOP STYLE [--params vmbench|ours]
        [--tls CERTFILE KEYFILE]

LOOP: asyncio | uvloop | rloop | iocploop.  STYLE: sockets
(sock_recv/sock_sendall), streams (asyncio.start_server), protocol
(asyncio.Protocol), buffered (asyncio.BufferedProtocol).  --params picks how
the sockets and streams servers read (PARAMS below); protocol and buffered
are the same under both.  With --tls it serves TLS (benchmarks/tls.py): the
same code with ssl= an SSLContext holding the PEM files (every style but
sockets; buffered returns a bytearray from get_buffer(), which asyncio's
SSLProtocol mishandles, CPython issue #156275).  Prints the port it listens
on, then serves until killed.
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import ssl
import sys
from typing import NamedTuple

from ._loops import LOOPS, serve, until_killed


class Params(NamedTuple):
    recv_size: int   # sockets: sock_recv(conn, recv_size)
    streams: str     # "readline": readline() and write; "read": read(recv_size), write, drain
    lines: int       # streams: lines per request the load generator sends (benchmarks/echo.py)


#: vmbench: MagicStack/vmbench's servers/asyncioecho.py, where uvloop's
#:   published figures come from: sock_recv(conn, 102400); its streams
#:   server reads lines (start_server(limit=1 MiB), readline(), write, no
#:   drain) and its client sends 5 lines per request.
#: ours: what this tool did before issue #21: sock_recv(conn, 256 KiB), a
#:   streams server echoing read(256 KiB) with drain, one message per request.
PARAMS = {
    "vmbench": Params(recv_size=102400, streams="readline", lines=5),
    "ours": Params(recv_size=256 * 1024, streams="read", lines=1),
}
STREAMS_LIMIT = 1024 * 1024   # vmbench's readline limit


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = bytearray(256 * 1024)
        self.view = memoryview(self.buffer)

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.transport.write(self.view[:nbytes])


def nodelay(sock) -> None:
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def echo_lines(reader, writer):
    nodelay(writer.get_extra_info("socket"))
    try:
        while line := await reader.readline():
            writer.write(line)
    except ConnectionError:
        pass   # the load generator resets its connections when it ends
    writer.close()


def echo_reads(size: int):
    async def echo_stream(reader, writer):
        nodelay(writer.get_extra_info("socket"))
        try:
            while data := await reader.read(size):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()
    return echo_stream


async def echo_socket(loop, conn, size: int):
    nodelay(conn)
    with conn:
        try:
            while data := await loop.sock_recv(conn, size):
                await loop.sock_sendall(conn, data)
        except ConnectionError:
            pass


async def serve_sockets(size: int) -> None:
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    tasks = set()
    while True:
        conn, _ = await loop.sock_accept(listener)
        task = loop.create_task(echo_socket(loop, conn, size))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def run(style: str, params: Params, sslcontext: ssl.SSLContext | None = None) -> None:
    loop = asyncio.get_running_loop()
    if style == "sockets":
        if sslcontext is not None:
            sys.exit("echo_server: the sockets style has no TLS")
        await serve_sockets(params.recv_size)
    elif style == "streams":
        if params.streams == "readline":
            server = await asyncio.start_server(echo_lines, "127.0.0.1", 0, backlog=1024,
                                                limit=STREAMS_LIMIT, ssl=sslcontext)
        else:
            server = await asyncio.start_server(echo_reads(params.recv_size), "127.0.0.1", 0,
                                                backlog=1024, ssl=sslcontext)
    else:
        factory = EchoProtocol if style == "protocol" else EchoBufferedProtocol
        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=1024,
                                          ssl=sslcontext)
    print(server.sockets[0].getsockname()[1], flush=True)
    await until_killed()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loop", choices=LOOPS)
    parser.add_argument("style", choices=("sockets", "streams", "protocol", "buffered"))
    parser.add_argument("--params", choices=tuple(PARAMS), default="vmbench")
    parser.add_argument("--tls", nargs=2, metavar=("CERTFILE", "KEYFILE"))
    args = parser.parse_args(argv)
    # Room for many connections (the 1,000-connection runs): soft limit up to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sslcontext = None
    if args.tls:
        sslcontext = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sslcontext.load_cert_chain(*args.tls)
    serve(args.loop, run(args.style, PARAMS[args.params], sslcontext))


if __name__ == "__main__":
    main()
