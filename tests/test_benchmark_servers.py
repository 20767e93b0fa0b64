"""The benchmark tool's echo servers echo what they get, on iocploop and on
asyncio (the reference), in every style and parameterisation.

The C load generator counts bytes, it does not compare them (checking would
cost it the CPU it is short of at 1 KiB): a server that answered with the
right number of wrong bytes would still be timed. This checks the servers
themselves, with messages framed as the load generator frames them (each
line ends with a newline; vmbench's streams requests are 5 lines).
"""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(sys.platform == "win32",
                                reason="the benchmark tool is Linux's (docs/performance.md)")

CASES = [("protocol", "vmbench"), ("buffered", "vmbench"), ("streams", "vmbench"),
         ("streams", "ours"), ("sockets", "vmbench"), ("sockets", "ours")]


def _message(rng: random.Random, size: int, lines: int) -> bytes:
    """size bytes in `lines` newline-terminated lines, no other newline."""
    body = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))
    cut = sorted(rng.sample(range(1, size - 1), lines - 1)) + [size - 1]
    out, start = bytearray(), 0
    for end in cut:
        out += body[start:end] + b"\n"
        start = end + 1
    return bytes(out)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"the server closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


@pytest.mark.parametrize("loop", ["iocploop", "asyncio"])
@pytest.mark.parametrize("style,params", CASES)
def test_echo_server_echoes_every_byte(loop, style, params):
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.echo_server", loop, style,
                               "--params", params], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        rng = random.Random(f"{style}/{params}")
        lines = 5 if (style, params) == ("streams", "vmbench") else 1
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for size in (1024, 10 * 1024, 100 * 1024, 1024):
                for _ in range(3):
                    message = _message(rng, size, lines)
                    sock.sendall(message)
                    assert _recv_exactly(sock, len(message)) == message
    finally:
        server.kill()
        server.wait()
