"""An echo server for benchmarks/echo.py, in one of four styles, on one loop.

    python -m benchmarks.echo_server LOOP STYLE [CERTFILE KEYFILE]

LOOP: asyncio | uvloop | iocploop.  STYLE: sockets (sock_recv/sock_sendall),
streams (asyncio.start_server), protocol (asyncio.Protocol), buffered
(asyncio.BufferedProtocol).  With CERTFILE and KEYFILE (PEM) it serves TLS
(benchmarks/tls.py): the same code with ssl= an SSLContext holding them
(every style but sockets; buffered returns a bytearray from get_buffer(),
which asyncio's SSLProtocol mishandles, CPython issue #156275).  Prints the
port it listens on, then serves until killed.
"""
from __future__ import annotations

import asyncio
import resource
import socket
import ssl
import sys

from ._loops import loop_factory


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


async def echo_stream(reader, writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            data = await reader.read(256 * 1024)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass   # the load generator resets its connections when it ends
    writer.close()


async def echo_socket(loop, conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        try:
            while True:
                data = await loop.sock_recv(conn, 256 * 1024)
                if not data:
                    break
                await loop.sock_sendall(conn, data)
        except ConnectionError:
            pass   # the load generator resets its connections when it ends


async def serve(style: str, sslcontext: ssl.SSLContext | None = None) -> None:
    loop = asyncio.get_running_loop()
    if style == "sockets":
        if sslcontext is not None:
            sys.exit("echo_server: the sockets style has no TLS")
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        listener.setblocking(False)
        print(listener.getsockname()[1], flush=True)
        tasks = set()
        while True:
            conn, _ = await loop.sock_accept(listener)
            task = loop.create_task(echo_socket(loop, conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    if style == "streams":
        server = await asyncio.start_server(echo_stream, "127.0.0.1", 0, backlog=1024,
                                            ssl=sslcontext)
    else:
        factory = EchoProtocol if style == "protocol" else EchoBufferedProtocol
        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=1024,
                                          ssl=sslcontext)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def main() -> None:
    # Room for many connections (the 1,000-connection runs): soft limit up to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop_name, style = sys.argv[1], sys.argv[2]
    sslcontext = None
    if len(sys.argv) > 3:
        sslcontext = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sslcontext.load_cert_chain(sys.argv[3], sys.argv[4])
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        runner.run(serve(style, sslcontext))


if __name__ == "__main__":
    main()
