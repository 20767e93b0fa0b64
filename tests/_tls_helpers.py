"""Certificates, SSL contexts and small helpers for the TLS tests (no test
lives here).

Everything is made at test time with the ``cryptography`` package
(tests/_make_pki.py; under Wine the runner makes them on the Linux side): a CA, a
server certificate for localhost / 127.0.0.1 / ::1, a client certificate, an
expired server certificate, one for another host name, and a second CA that
nobody trusts.  Keys are EC P-256 (fast to make); the whole set is made once
per test session, into a folder of tmp_path_factory, by the session-scoped
``pki`` fixture (import it into a test module to use it).

The rest: outcomes of an awaitable (to compare the two loops), a TLS peer on
a blocking socket in a thread (for behaviour that a loop-side peer cannot
show, such as never answering close_notify), and the end-of-test check that
iocploop has no kernel operation left in flight.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The client certificate's common name (the server checks it in peercert).
CLIENT_CN = "iocploop test client"


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files made by make_pki()."""

    ca: Path                 # trusted CA certificate
    other_ca: Path           # a CA that no context trusts
    server_cert: Path        # localhost, 127.0.0.1, ::1; signed by ca
    server_key: Path
    client_cert: Path        # CN=CLIENT_CN, clientAuth; signed by ca
    client_key: Path
    expired_cert: Path       # localhost, 127.0.0.1; signed by ca, expired
    expired_key: Path
    wrong_host_cert: Path    # only wrong.example; signed by ca
    wrong_host_key: Path
    untrusted_cert: Path     # localhost, 127.0.0.1; signed by other_ca
    untrusted_key: Path

    # -- contexts ----------------------------------------------------------------

    def server_context(self, *, cert: str = "server", require_client_cert: bool = False,
                       max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(getattr(self, f"{cert}_cert"), getattr(self, f"{cert}_key"))
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca)
        if max_version is not None:
            ctx.maximum_version = max_version
        return ctx

    def client_context(self, *, trust: str = "ca", with_cert: bool = False, verify: bool = True,
                       max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        """A verifying client context that trusts only `trust` (no system
        certificates: the result is the same on every machine); with
        verify=False, one that checks nothing."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # CERT_REQUIRED, check_hostname
        if verify:
            ctx.load_verify_locations(getattr(self, trust))
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if with_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        if max_version is not None:
            ctx.maximum_version = max_version
        return ctx


def load_pki(folder: Path) -> Pki:
    """The Pki whose files make_pki() wrote into folder."""
    files = {"ca": folder / "ca.crt", "other_ca": folder / "other_ca.crt"}
    for stem in ("server", "client", "expired", "wrong_host", "untrusted"):
        files[f"{stem}_cert"] = folder / f"{stem}.crt"
        files[f"{stem}_key"] = folder / f"{stem}.key"
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"certificates missing: {missing}")
    return Pki(**files)


_made: Pki | None = None


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """The session's certificates (made once, even when several modules
    import this fixture)."""
    global _made
    if _made is None:
        made_for_us = os.environ.get("IOCPLOOP_TEST_PKI")
        if made_for_us:
            # Under Wine, cryptography's Rust extension does not load: the
            # runner (tools/wine.py) makes this run's certificates on the
            # Linux side with tests/_make_pki.py and names the folder here.
            _made = load_pki(Path(made_for_us))
        else:
            from _make_pki import make_pki
            _made = make_pki(tmp_path_factory.mktemp("tls"))
    return _made


# -- outcomes -------------------------------------------------------------------------------


def open_connections(server) -> int:
    """Connections asyncio's Server still counts as active (3.13 keeps a set
    of transports where 3.11 and 3.12 keep a count)."""
    count = getattr(server, "_active_count", None)
    return count if count is not None else len(server._clients)


async def outcome(aw, timeout: float | None = None):
    """What awaiting aw gives, as a comparable value: ("ok", result) or
    ("raised", exception class).  With timeout: ("pending", None) if aw had
    neither finished nor failed by then (it is cancelled)."""
    task = asyncio.ensure_future(aw)
    if timeout is not None:
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            await asyncio.wait({task})
            return ("pending", None)
    try:
        return ("ok", await task)
    except (Exception, asyncio.CancelledError) as exc:
        return ("raised", type(exc))


def read_outcome(result) -> tuple:
    """outcome() of a read, with data reduced to "eof" (b'') or "data"."""
    kind, value = result
    if kind == "ok":
        return ("ok", "eof" if value == b"" else "data")
    return result


def record_errors(loop=None) -> list:
    """Install an exception handler that records each context it gets."""
    calls: list = []
    (loop or asyncio.get_running_loop()).set_exception_handler(lambda _l, ctx: calls.append(ctx))
    return calls


def describe_errors(calls) -> list:
    return [(ctx.get("message"), repr(ctx.get("exception"))) for ctx in calls]


async def no_ops_in_flight(loop=None, timeout: float = 5.0) -> None:
    """iocploop: wait until its port has no kernel operation in flight
    (`loop._port.pending == 0`); nothing to check on stock asyncio."""
    import iocploop

    loop = loop or asyncio.get_running_loop()
    if not isinstance(loop, iocploop.Loop):
        return
    deadline = time.monotonic() + timeout
    while loop._port.pending:
        assert time.monotonic() < deadline, (
            f"{loop._port.pending} operation(s) still in flight after {timeout} s")
        await asyncio.sleep(0.005)


# -- a TLS peer on a blocking socket, in a thread -----------------------------------------


class ThreadPeer:
    """Listens on 127.0.0.1 and runs target(conn, stop) in a thread for the one
    connection accepted; `await peer.result()` gives what target returned (or
    raises what it raised).  `stop` is set by close(): a target that holds the
    connection open waits on it.  Use as a context manager."""

    def __init__(self, target, timeout: float = 5.0):
        self.timeout = timeout
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(timeout)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.done: concurrent.futures.Future = concurrent.futures.Future()
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.thread.start()

    def _run(self, target):
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(self.timeout)
                result = target(conn, self.stop)
        except BaseException as exc:   # handed to the test through the future
            self.done.set_exception(exc)
        else:
            self.done.set_result(result)

    async def result(self, timeout: float | None = None):
        return await asyncio.wait_for(asyncio.wrap_future(self.done), timeout or self.timeout)

    def close(self):
        self.stop.set()
        self.thread.join(self.timeout)
        self.listener.close()
        assert not self.thread.is_alive(), "the peer thread did not end"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
