"""A UDP echo server for benchmarks/udp.py, on one loop.

    python -m benchmarks.udp_server LOOP

LOOP: asyncio | uvloop | rloop | iocploop.  An asyncio.DatagramProtocol bound to
127.0.0.1 (a free port, printed on stdout) sends every datagram back to its
sender with transport.sendto(data, addr); serves until killed.  The first
few error_received calls are reported on stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

from ._loops import loop_arguments, serve, until_killed

ERRORS_SHOWN = 5


class UDPEcho(asyncio.DatagramProtocol):
    def __init__(self):
        self.errors = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)

    def error_received(self, exc):
        self.errors += 1
        if self.errors <= ERRORS_SHOWN:
            print(f"udp_server: error_received {exc!r}", file=sys.stderr, flush=True)


async def run() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(UDPEcho, local_addr=("127.0.0.1", 0))
    print(transport.get_extra_info("sockname")[1], flush=True)
    await until_killed()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop_arguments(parser)
    args = parser.parse_args(argv)
    serve(args.loop, run(), socket_reuse=not args.no_socket_reuse)


if __name__ == "__main__":
    main()
