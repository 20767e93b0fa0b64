"""Integration suite: well-known asyncio libraries with their real network code
on iocploop (aiohttp, websockets, httpx, uvicorn + Starlette, redis-py, asyncpg).

Run by tools/integration.sh (Linux) and `tools/wine.py test tests/integration`
(Windows under Wine); the main run leaves this folder out.  Every asyncio test
and fixture here runs on iocploop only: the hook below is the one a project
uses to put its own async tests on iocploop.
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

try:
    import pwd
except ImportError:  # Windows
    pwd = None

import pytest
import pytest_asyncio

import iocploop
from _tls_helpers import pki  # noqa: F401 - the session PKI (tests/_tls_helpers.py)
from _integration import (IS_WINDOWS, assert_on_iocploop, file_content, free_port,
                          make_aiohttp_app)


def pytest_asyncio_loop_factories(config, item):
    """pytest-asyncio (>= 1.5) hook: these tests run on iocploop alone."""
    return {"iocploop": iocploop.new_event_loop}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "errors_logged_by(logger, exception_type): errors that logger may log "
        "with an exception of that type (for example aiohttp.server's for a client that left)")


@pytest.fixture(autouse=True)
def no_logged_errors(request, caplog):
    """A test fails if asyncio or a library logged an error meanwhile (an
    exception in a callback, a handler, a transport), even if it passed;
    @pytest.mark.errors_logged_by(logger, type) lets the expected ones through."""
    caplog.set_level(logging.WARNING)
    yield
    allowed = [m.args for m in request.node.iter_markers("errors_logged_by")]

    def expected(record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return any(record.name == name and isinstance(exc, kind) for name, kind in allowed)

    errors = [r for r in caplog.get_records("call") + caplog.get_records("teardown")
              if r.levelno >= logging.ERROR and not expected(r)]
    assert not errors, "errors logged:\n" + "\n".join(
        f"{r.name}: {r.getMessage()}" + (f"\n{r.exc_text}" if r.exc_text else "")
        for r in errors)


@pytest_asyncio.fixture
async def aiohttp_server(tmp_path):
    """An aiohttp.web server on iocploop at 127.0.0.1 (port 0); yields its base URL."""
    from aiohttp import web

    assert_on_iocploop()
    static = tmp_path / "static.bin"
    static.write_bytes(file_content())
    runner = web.AppRunner(make_aiohttp_app(str(static)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------- PostgreSQL

def _postgres_bindir() -> str | None:
    """Debian's PostgreSQL programs (newest major version), or what PATH has."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    on_path = shutil.which("postgres")
    return os.path.dirname(on_path) if on_path else None


@pytest.fixture(scope="session")
def postgres_server(pki):
    """(host, port, user) of a throwaway PostgreSQL cluster: initdb into a
    temporary folder, `postgres` on a free port (no fsync; TLS offered with
    the session PKI's server certificate), stopped and removed at teardown.
    PostgreSQL refuses to run as root: as root, both run as Debian's
    "postgres" user (Popen's user=/group=, so signals reach postgres)."""
    if IS_WINDOWS:
        pytest.skip("the PostgreSQL tests start Debian's postgres: Linux only")
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL not installed (Debian: apt-get install postgresql; "
                    "tools/integration.sh installs it)")
    as_user: dict = {}
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip('running as root and there is no "postgres" user to run PostgreSQL as')
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    folder = tempfile.mkdtemp(prefix="iocploop-pg-")
    if as_user:
        os.chown(folder, as_user["user"], as_user["group"])
    data = os.path.join(folder, "data")
    user = "iocploop"
    proc = None
    try:
        init = subprocess.run([os.path.join(bindir, "initdb"), "-D", data, "-U", user,
                               "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              cwd=folder, **as_user)
        if init.returncode != 0:
            pytest.fail(f"initdb failed:\n{init.stdout}{init.stderr}")
        for name, source in (("server.crt", pki.server_cert), ("server.key", pki.server_key)):
            shutil.copyfile(source, os.path.join(folder, name))
            os.chmod(os.path.join(folder, name), 0o600)
            if as_user:
                os.chown(os.path.join(folder, name), as_user["user"], as_user["group"])
        port = free_port()
        log = open(os.path.join(folder, "postgres.log"), "w+")
        proc = subprocess.Popen(
            [os.path.join(bindir, "postgres"), "-D", data, "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={folder}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=50", "-c", "ssl=on",
             "-c", f"ssl_cert_file={os.path.join(folder, 'server.crt')}",
             "-c", f"ssl_key_file={os.path.join(folder, 'server.key')}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=folder, **as_user)
        deadline = time.monotonic() + 30
        while subprocess.run([os.path.join(bindir, "pg_isready"), "-q", "-h", "127.0.0.1",
                              "-p", str(port), "-U", user, "-d", "postgres"]).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"postgres did not start (exit {proc.poll()}):\n{log.read()[-3000:]}")
            time.sleep(0.1)
        yield "127.0.0.1", port, user
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect clients
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------ Redis

def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server():
    """(host, port) of a real Redis server.

    IOCPLOOP_TEST_REDIS=host:port names one that is already running (tools/wine.py
    starts the host's redis-server for the Windows Python under Wine, which
    cannot start a Linux program).  Otherwise Debian's redis-server is started
    here on a free port, without persistence, and stopped at teardown."""
    given = os.environ.get("IOCPLOOP_TEST_REDIS")
    if given:
        host, _, port = given.rpartition(":")
        yield host, int(port)
        return
    if IS_WINDOWS:
        pytest.skip("no Redis server: set IOCPLOOP_TEST_REDIS=host:port "
                    "(tools/wine.py does when the host has redis-server)")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (Debian: apt-get install redis-server; "
                    "tools/integration.sh installs it)")
    log = tempfile.TemporaryFile("w+")
    for _attempt in range(3):  # the free port may be taken meanwhile
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
             "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline and not _redis_answers(port):
            time.sleep(0.05)
        if proc.poll() is None and _redis_answers(port):
            break
        proc.kill()
        proc.wait()
    else:
        log.seek(0)
        pytest.fail(f"redis-server did not start:\n{log.read()[-3000:]}")
    try:
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
