"""redis-py's asyncio client (redis.asyncio) on iocploop against a real Redis
server: commands, pipelines and a transaction, pub/sub, an 8 MiB value, a
thousand commands at once through a small connection pool."""
from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from _integration import TEST_TIMEOUT, assert_on_iocploop, payload, sha256

BIG = 8 * 1024 * 1024


@pytest.fixture
def redis_url(redis_server):
    host, port = redis_server
    return f"redis://{host}:{port}/0"


async def fresh_client(url: str, **kwargs) -> aioredis.Redis:
    """A client of an emptied database."""
    client = aioredis.Redis.from_url(url, **kwargs)
    await client.flushdb()
    return client


@pytest.mark.asyncio
async def test_commands(redis_url):
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT):
        r = await fresh_client(redis_url)
        try:
            assert await r.ping() is True
            assert await r.set("greeting", "hello") is True
            assert await r.get("greeting") == b"hello"
            assert await r.get("missing") is None
            assert await r.incr("counter") == 1
            assert await r.incrby("counter", 41) == 42
            assert await r.hset("h", mapping={"a": "1", "b": "2"}) == 2
            assert await r.hgetall("h") == {b"a": b"1", b"b": b"2"}
            assert await r.rpush("list", *range(10)) == 10
            assert await r.lrange("list", 0, -1) == [str(i).encode() for i in range(10)]
            assert await r.set("temp", "x", px=200) is True
            assert await r.pttl("temp") > 0
            assert await r.delete("greeting", "missing") == 1
            assert await r.exists("greeting") == 0
            info = await r.info("server")
            assert "redis_version" in info
        finally:
            await r.aclose()


@pytest.mark.asyncio
async def test_pipeline_and_transaction(redis_url):
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT):
        r = await fresh_client(redis_url, decode_responses=True)
        try:
            async with r.pipeline(transaction=False) as pipe:
                for i in range(500):
                    pipe.set(f"k{i}", i)
                for i in range(500):
                    pipe.get(f"k{i}")
                results = await pipe.execute()
            assert results[:500] == [True] * 500
            assert results[500:] == [str(i) for i in range(500)]

            async with r.pipeline(transaction=True) as pipe:
                pipe.incr("tx").incr("tx").get("tx")
                assert await pipe.execute() == [1, 2, "2"]

            # optimistic locking: WATCH, a change by another client, EXECABORT
            other = await aioredis.Redis.from_url(redis_url, decode_responses=True)
            try:
                async with r.pipeline(transaction=True) as pipe:
                    await pipe.watch("tx")
                    await other.set("tx", "changed")
                    pipe.multi()
                    pipe.set("tx", "mine")
                    with pytest.raises(aioredis.WatchError):
                        await pipe.execute()
                assert await r.get("tx") == "changed"
            finally:
                await other.aclose()
        finally:
            await r.aclose()


@pytest.mark.asyncio
async def test_pubsub(redis_url):
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT):
        r = await fresh_client(redis_url)
        publisher = aioredis.Redis.from_url(redis_url)
        pubsub = r.pubsub()
        try:
            await pubsub.subscribe("news")
            await pubsub.psubscribe("sport.*")
            confirmations = []
            while len(confirmations) < 2:
                msg = await pubsub.get_message(timeout=5)
                if msg:
                    confirmations.append(msg["type"])
            assert sorted(confirmations) == ["psubscribe", "subscribe"]

            async def publish():
                for i in range(50):
                    assert await publisher.publish("news", f"n{i}") == 1
                    assert await publisher.publish(f"sport.{i % 3}", payload(1000, seed=i)) == 1

            async def receive():
                got = []
                async for msg in pubsub.listen():
                    if msg["type"] in ("message", "pmessage"):
                        got.append((msg["type"], msg["channel"], msg["data"]))
                        if len(got) == 100:
                            return got

            got, _ = await asyncio.gather(receive(), publish())
            news = [data for kind, channel, data in got if channel == b"news"]
            sport = [(channel, data) for kind, channel, data in got if kind == "pmessage"]
            assert news == [f"n{i}".encode() for i in range(50)]
            assert sport == [(f"sport.{i % 3}".encode(), payload(1000, seed=i)) for i in range(50)]
            await pubsub.unsubscribe("news")
            await pubsub.punsubscribe("sport.*")
        finally:
            await pubsub.aclose()
            await publisher.aclose()
            await r.aclose()


@pytest.mark.asyncio
async def test_big_value(redis_url):
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT):
        r = await fresh_client(redis_url)
        try:
            big = payload(BIG, seed=5)
            assert await r.set("big", big) is True
            assert await r.strlen("big") == BIG
            got = await r.get("big")
            assert len(got) == BIG and sha256(got) == sha256(big)
            assert await r.getrange("big", BIG - 10, -1) == big[-10:]
        finally:
            await r.aclose()


@pytest.mark.asyncio
async def test_many_concurrent_commands(redis_url):
    """1000 SETs then 1000 GETs at once over a pool of at most 10 connections."""
    assert_on_iocploop()
    async with asyncio.timeout(TEST_TIMEOUT):
        pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=10, timeout=30,
                                                        client_name="many")
        r = aioredis.Redis(connection_pool=pool)
        try:
            await r.flushdb()
            assert all(await asyncio.gather(*(r.set(f"c{i}", f"v{i}") for i in range(1000))))
            values = await asyncio.gather(*(r.get(f"c{i}") for i in range(1000)))
            assert values == [f"v{i}".encode() for i in range(1000)]
            assert await r.dbsize() == 1000
            ours = [c for c in await r.client_list() if c["name"] == "many"]
            assert 1 <= len(ours) <= 10
        finally:
            await r.aclose()
            await pool.aclose()
