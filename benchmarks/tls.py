"""TLS echo benchmark: iocploop vs asyncio vs uvloop, over ssl= servers (Linux).

    python -m benchmarks.tls [--runs 3] [--duration 5] [--warmup 1]
        [--loops asyncio,uvloop,iocploop] [--styles protocol,streams]
        [--sizes 1,100] [--concurrency 1,16] [--json out.json]

The echo benchmark (benchmarks/echo.py) with TLS on the wire.  At startup a
self-signed EC P-256 certificate for "localhost" is made into a temporary
directory (`openssl req -x509`).  Each measurement starts a fresh
benchmarks/echo_server.py on CPU 0 -- asyncio.Protocol (protocol) or
asyncio.start_server (streams), the same code on every loop, serving
ssl= an SSLContext with that certificate -- and the C load generator
benchmarks/tlsgen.c (OpenSSL; compiled on first use with -lssl -lcrypto, so
it needs libssl-dev) on CPU 1.  tlsgen completes every connection's
handshake (verifying the certificate) before its clock starts, then
ping-pongs: each connection sends a message of SIZE KiB and waits for its
echo, which it compares byte for byte with what it sent; at the end each
connection sends close_notify.  Configurations run interleaved, loop after
loop.  The table shows the median requests/s, p50/p99 latency, the CPU share
of the server and of the load generator over the measured window (it
encrypts and decrypts as much as the server: near 100% means it was the
limit), the server's CPU per request and each loop's ratios to uvloop and
rloop (rloop 0.5.0 has no TLS: asked for, its rows say so); the note column
counts wrong echoes and stalled connections (a last echo not back 1 s after
the measured window) over all runs.  The streams server reads as echo's
"ours" parameterisation does (read, write, drain): tlsgen sends no lines.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from ._harness import available, build_c_tool
from .echo import echo_parser, measure, run_echo_suite

# Not sockets (no TLS there), nor buffered: over asyncio's SSLProtocol (asyncio's
# loop and iocploop, which reuses it) a BufferedProtocol whose get_buffer()
# returns a bytearray, as echo_server's does, gets all but the first TLS record
# of each read lost (CPython issue #156275): tlsgen reports wrong echoes there.
STYLES = ("protocol", "streams")


def make_certificate(directory: str) -> tuple[str, str]:
    """A self-signed EC P-256 certificate for localhost / 127.0.0.1 and its key
    (PEM files in directory)."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    return cert, key


def note(runs: list) -> str:
    errors, stalled = (sum(r[key] for r in runs) for key in ("errors", "stalled"))
    notes = [f"WRONG ECHOES {errors}"] if errors else []
    if stalled:
        notes.append(f"STALLED {stalled} (last echo not back 1s after the end)")
    return ", ".join(notes)


def main(argv=None):
    # rloop 0.5.0 has no TLS (create_server(ssl=) raises NotImplementedError):
    # asked for, its rows say so.
    args = echo_parser(__doc__, "protocol,streams", "1,100",
                       "asyncio,uvloop,iocploop").parse_args(argv)
    if not sys.platform.startswith("linux"):
        sys.exit("benchmarks.tls runs on Linux (never read performance from Wine)")
    for style in args.styles.split(","):
        if style not in STYLES:
            sys.exit(f"--styles: {style!r} is not a TLS style; choose from {', '.join(STYLES)}")
    tlsgen = build_c_tool("tlsgen", ["-lssl", "-lcrypto"])
    loops = available(args.loops.split(","))
    with tempfile.TemporaryDirectory(prefix="iocploop-tls-") as directory:
        cert, key = make_certificate(directory)
        samples = run_echo_suite(
            args, loops,
            # Streams as in "ours" (read, write, drain): tlsgen's messages have no lines.
            lambda job: measure(job[4], job[0], job[1], job[2], args.warmup, args.duration,
                                params="ours", server_args=["--tls", cert, key], gen=tlsgen,
                                gen_args=[cert]),
            note=note, footer="TLS handshakes before the clock; streams read(256 KiB); ",
            params=("ours",))
    negotiated = sorted({f"{r['protocol']} {r['cipher']}" for runs in samples.values()
                         for r in runs if "protocol" in r})
    print(f"(negotiated: {', '.join(negotiated)}; EC P-256 certificate)")


if __name__ == "__main__":
    main()
