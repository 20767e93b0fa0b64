"""A UDP echo server for benchmarks/udp.py, on one loop.

    python -m benchmarks.udp_server LOOP

LOOP: asyncio | uvloop | iocploop.  An asyncio.DatagramProtocol bound to
127.0.0.1 (a free port, printed on stdout) sends every datagram back to its
sender with transport.sendto(data, addr); serves until killed.  The first
few error_received calls are reported on stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

from .http_server import loop_arguments, run_on_loop

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


async def serve() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(UDPEcho, local_addr=("127.0.0.1", 0))
    print(transport.get_extra_info("sockname")[1], flush=True)
    await loop.create_future()   # until killed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop_arguments(parser)
    run_on_loop(parser.parse_args(argv), serve())


if __name__ == "__main__":
    main()
