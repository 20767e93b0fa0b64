"""asyncpg on iocploop against a real PostgreSQL server (Linux: Debian's
postgres, started per session): type round trips, executemany and COPY, a
cursor, an 8 MiB bytea, a pool under 200 concurrent queries, LISTEN/NOTIFY,
the cancellation of a running query on timeout, and TLS negotiated in the
protocol (asyncpg's SSLRequest, then loop.start_tls)."""
from __future__ import annotations

import asyncio
import datetime
import decimal
import hashlib
import ssl
import sys

import pytest

if sys.platform == "win32":
    pytest.skip("the PostgreSQL tests start Debian's postgres: Linux only",
                allow_module_level=True)

import asyncpg  # noqa: E402

from _integration import TEST_TIMEOUT, assert_on_iocploop, payload, sha256  # noqa: E402

pytestmark = pytest.mark.asyncio


@pytest.fixture
def dsn(postgres_server):
    host, port, user = postgres_server
    return f"postgresql://{user}@{host}:{port}/postgres"


async def test_types_and_statements(dsn):
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT):
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert conn.get_server_version().major >= 12
            now = datetime.datetime(2024, 2, 29, 12, 30, 15, 123456, tzinfo=datetime.timezone.utc)
            row = await conn.fetchrow(
                "SELECT $1::int8 AS i, $2::text AS t, $3::numeric AS n, $4::timestamptz AS ts,"
                " $5::int[] AS a, $6::bytea AS b, $7::bool AS f",
                2**62, "ünïcødé", decimal.Decimal("12345.678901"), now, [1, 2, 3],
                b"\x00\xff", True)
            assert dict(row) == {"i": 2**62, "t": "ünïcødé",
                                 "n": decimal.Decimal("12345.678901"), "ts": now,
                                 "a": [1, 2, 3], "b": b"\x00\xff", "f": True}

            await conn.execute("CREATE TEMP TABLE items (id int PRIMARY KEY, name text)")
            await conn.executemany("INSERT INTO items VALUES ($1, $2)",
                                   [(i, f"item {i}") for i in range(1000)])
            assert await conn.copy_records_to_table(
                "items", records=[(i, f"copied {i}") for i in range(1000, 11000)]) == "COPY 10000"
            assert await conn.fetchval("SELECT count(*) FROM items") == 11000

            stmt = await conn.prepare("SELECT name FROM items WHERE id = $1")
            assert [await stmt.fetchval(i) for i in (0, 999, 1000, 10999)] == \
                ["item 0", "item 999", "copied 1000", "copied 10999"]

            seen = 0
            async with conn.transaction():
                async for record in conn.cursor("SELECT id FROM items ORDER BY id", prefetch=500):
                    assert record["id"] == seen
                    seen += 1
            assert seen == 11000

            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute("INSERT INTO items VALUES (0, 'again')")
            assert await conn.fetchval("SELECT 2") == 2  # still usable
        finally:
            await conn.close()


async def test_big_bytea(dsn):
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT):
        conn = await asyncpg.connect(dsn)
        try:
            big = payload(8 * 1024 * 1024, seed=31)
            got = await conn.fetchval("SELECT $1::bytea", big)
            assert len(got) == len(big) and sha256(got) == sha256(big)
            assert await conn.fetchval("SELECT md5($1::bytea)", big) == \
                hashlib.md5(big).hexdigest()
        finally:
            await conn.close()


async def test_pool_concurrency(dsn):
    """200 queries at once over a pool of at most 5 connections."""
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT), \
            asyncpg.create_pool(dsn, min_size=2, max_size=5) as pool:
        async def query(i):
            async with pool.acquire() as conn:
                return await conn.fetchval("SELECT $1::int * 2 FROM pg_sleep(0.001)", i)

        assert await asyncio.gather(*(query(i) for i in range(200))) == \
            [2 * i for i in range(200)]
        assert pool.get_size() <= 5


async def test_listen_notify(dsn):
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT):
        listener = await asyncpg.connect(dsn)
        sender = await asyncpg.connect(dsn)
        got: list[str] = []
        all_in = asyncio.Event()

        def on_notify(conn, pid, channel, message):
            assert channel == "events"
            got.append(message)
            if len(got) == 20:
                all_in.set()

        try:
            await listener.add_listener("events", on_notify)
            for i in range(20):
                await sender.execute("SELECT pg_notify('events', $1)", f"event {i}")
            await all_in.wait()
            assert got == [f"event {i}" for i in range(20)]
        finally:
            await listener.close()
            await sender.close()


async def test_timeout_cancels_the_query(dsn):
    """A statement timeout makes asyncpg send PostgreSQL a cancel request on
    a second connection; the first connection stays usable."""
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT):
        conn = await asyncpg.connect(dsn)
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(asyncio.TimeoutError):
                await conn.execute("SELECT pg_sleep(30)", timeout=0.3)
            assert loop.time() - start < 10
            assert await conn.fetchval("SELECT 'alive'") == "alive"
        finally:
            await conn.close()


async def test_tls(dsn, pki):
    """TLS with the session CA, hostname checked: the server upgrades the
    connection after PostgreSQL's SSLRequest, through loop.start_tls."""
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT):
        conn = await asyncpg.connect(dsn, ssl=pki.client_context())
        try:
            assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            tls = conn._transport.get_extra_info("ssl_object")
            assert tls is not None and tls.version().startswith("TLSv1.")
            big = payload(4 * 1024 * 1024, seed=32)
            assert sha256(await conn.fetchval("SELECT $1::bytea", big)) == sha256(big)
        finally:
            await conn.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncpg.connect(dsn, ssl=pki.client_context(trust="other_ca"))
