"""References and memory through the TCP transport's compiled hot path.

Two transports of one loop play ping-pong over loopback: each round trip is
two wakeups, two reads (into bytes, or into a BufferedProtocol's buffer)
and two writes sent at once, all in _stream.pxi.  A 1 KiB payload is read
through the loop's scratch buffer, a 48 KiB one (once the read size has
grown) straight into its bytes.  Over 250,000 round trips of 1 KiB (a
million reads and writes; a tenth as many of 48 KiB) on Linux the process's memory (RSS), the
memory Python tracks (tracemalloc) and the reference counts of the payload
and of the protocol's buffer stay flat.

Under Wine (slow, and Windows reads on completions) and under the
AddressSanitizer (its quarantine grows RSS by design) a smaller run checks
tracemalloc and the reference counts.
"""
from __future__ import annotations

import asyncio
import gc
import os
import sys
import tracemalloc

import pytest

import iocploop
from _helpers import IS_LINUX, rss_bytes

UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
FULL = IS_LINUX and not UNDER_ASAN
ROUND_TRIPS = 250_000 if FULL else 3_000
PAYLOADS = {"1KiB": b"x" * 1024, "48KiB": b"y" * (48 * 1024)}


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class BufferedEcho(asyncio.BufferedProtocol):
    def __init__(self):
        self.buffer = bytearray(4096)
        self.view = memoryview(self.buffer)

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        self.transport.write(self.view[:nbytes])


class Pinger(asyncio.Protocol):
    """Sends its payload, waits for all of it to come back, again: `rounds` times
    per `run(rounds)`, then resolves its future."""

    def __init__(self, payload):
        self.payload = payload
        self.pending = 0
        self.left = 0
        self.done = None

    def connection_made(self, transport):
        self.transport = transport

    def run(self, rounds):
        self.left = rounds
        self.done = asyncio.get_running_loop().create_future()
        self._ping()
        return self.done

    def _ping(self):
        self.pending = len(self.payload)
        self.transport.write(self.payload)

    def data_received(self, data):
        self.pending -= len(data)
        if self.pending:
            return
        self.left -= 1
        if self.left:
            self._ping()
        else:
            self.done.set_result(None)


@pytest.mark.parametrize("size", list(PAYLOADS))
@pytest.mark.parametrize("server_protocol", [Echo, BufferedEcho], ids=["protocol", "buffered"])
def test_round_trips_leave_memory_and_references_flat(server_protocol, size):
    payload = PAYLOADS[size]
    rounds = ROUND_TRIPS if len(payload) <= 1024 else ROUND_TRIPS // 10
    loop = iocploop.new_event_loop()
    servers = []

    def make_server():
        servers.append(server_protocol())
        return servers[-1]

    async def main():
        server = await loop.create_server(make_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, pinger = await loop.create_connection(lambda: Pinger(payload),
                                                         "127.0.0.1", port)
        await pinger.run(rounds // 10)
        gc.collect()
        refs_payload = sys.getrefcount(payload)
        buffered = servers[0] if isinstance(servers[0], BufferedEcho) else None
        refs_view = sys.getrefcount(buffered.view) if buffered else None
        rss_before = rss_bytes() if FULL else None
        tracemalloc.start()
        try:
            await pinger.run(rounds // 2)   # settle what tracemalloc sees
            traced_before = tracemalloc.get_traced_memory()[0]
            await pinger.run(rounds // 2)
            traced_after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        gc.collect()
        # (Counted before asserting: pytest's rewritten assert holds its operands.)
        payload_now = sys.getrefcount(payload)
        view_now = sys.getrefcount(buffered.view) if buffered else None
        assert payload_now == refs_payload
        assert view_now == refs_view
        assert traced_after - traced_before < 64 * 1024, (traced_before, traced_after)
        if FULL:
            assert rss_bytes() - rss_before < 4 * 1024 * 1024, "RSS grew by more than 4 MiB"
        transport.close()
        server.close()
        await server.wait_closed()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
