"""Feed pages and stats are cached in Redis, invalidated after each commit that adds or grows an event, and
served from PostgreSQL when Redis is down."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import redis as app_redis
from app.feed import service as feed_module
from app.feed.service import VERSION_KEY
from app.kit.jsontext import json_text
from tests.feed.helpers import create_target, pay, serve_meal
from tests.fixtures.environment import free_port


async def _version() -> int:
    return int(await app_redis.get_redis().get(VERSION_KEY) or 0)


async def _amounts(client: httpx.AsyncClient) -> list[int]:
    res = await client.get("/api/v1/feed", params={"limit": 10})
    assert res.status_code == 200, res.text
    return [i["amount_fen"] for i in res.json()["items"]]


async def test_new_events_invalidate_cached_pages_and_stats(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    target = await create_target(session)
    await pay(session, target, 111)
    await session.commit()
    await feed_module.wait_published()  # the version bump follows the commit
    assert (await _amounts(client))[0] == 111
    stats = (await client.get("/api/v1/feed/stats")).json()["totals"]

    # a row written behind the service's back (no commit hook): the cached page and stats are what is served
    await session.execute(
        text(
            "INSERT INTO feed_events (kind, payload, occurred_at) "
            'VALUES (\'donation_paid\', \'{"donor": "x", "amount_fen": 222}\', now())'
        )
    )
    await session.commit()
    assert (await _amounts(client))[0] == 111, "served from the cache"

    version = await _version()
    await pay(session, target, 333)  # the real path: published and invalidated after commit
    await session.commit()
    assert await _version() == version + 1
    assert (await _amounts(client))[:3] == [333, 222, 111]
    fresh = (await client.get("/api/v1/feed/stats")).json()["totals"]
    assert fresh["donated_fen"] == stats["donated_fen"] + 333

    # growing an aggregate event invalidates too
    await serve_meal(session, target.canteen_id, 100)  # type: ignore[arg-type]
    await session.commit()
    assert (await _amounts(client))[0] == 100
    await serve_meal(session, target.canteen_id, 50)  # type: ignore[arg-type]
    await session.commit()
    assert (await _amounts(client))[0] == 150


async def test_rolled_back_event_is_neither_published_nor_shown(
    client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    async with session_maker() as s:
        target = await create_target(s)
        await s.commit()
    before = await _amounts(client)
    version = await _version()
    async with session_maker() as s:
        await pay(s, target, 4444)
        await s.rollback()
    assert await _version() == version
    assert await _amounts(client) == before
    assert 4444 not in await _amounts(client)


async def test_an_event_of_a_failed_unit_of_work_is_neither_published_nor_shown(
    client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    """A request that fails after paying ends its transaction by closing its session (``unit_of_work``): the
    event it queued for after the commit goes nowhere, and a later commit does not carry it along."""
    from app.db import unit_of_work

    async with session_maker() as s:
        target = await create_target(s)
        await s.commit()
    before = await _amounts(client)
    version = await _version()

    class Refused(Exception):
        pass

    with pytest.raises(Refused):
        async with unit_of_work(session_maker) as s:
            await pay(s, target, 4445)
            raise Refused
    assert await _version() == version
    async with unit_of_work(session_maker) as s:
        await pay(s, target, 4446)
    amounts = await _amounts(client)
    assert 4445 not in amounts and amounts[0] == 4446
    assert amounts[1:] == before[: len(amounts) - 1]


async def test_redis_down_reads_and_writes_still_work(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = await create_target(session)
    await pay(session, target, 500)
    await session.commit()
    assert (await _amounts(client))[0] == 500  # cached while Redis is up

    port = free_port()
    monkeypatch.setattr(
        app_redis,
        "get_redis",
        lambda: aioredis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0)),
    )
    feed_module.breaker.reset()
    try:
        await pay(session, target, 600)  # the commit succeeds although nothing can be published
        await session.commit()
        assert feed_module.breaker.stale
        assert (await _amounts(client))[:2] == [600, 500], "read from PostgreSQL"
        stats = await client.get("/api/v1/feed/stats")
        assert stats.status_code == 200
        feed_module.breaker.reset()  # every call tries Redis again, and still gets the truth
        page = await client.get("/api/v1/feed", params={"limit": 10})
        assert page.status_code == 200 and page.json()["items"][0]["amount_fen"] == 600
        assert (await client.get("/t")).status_code == 200
    finally:
        monkeypatch.undo()
        feed_module.breaker.reset()
    # Redis is back: the page cached before the outage is not served (the lost publish is made up for);
    # this process's one-second copy (read from PostgreSQL during the outage) has run out meanwhile
    feed_module.local_cache.clear()
    assert (await _amounts(client))[:2] == [600, 500]
    assert not feed_module.breaker.stale


def test_local_copy_is_fresh_for_its_second_then_servable_a_little_longer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = feed_module._LocalCache(seconds=1.0)
    clock = [1000.0]
    monkeypatch.setattr(feed_module.time, "monotonic", lambda: clock[0])
    cache.put("page:0:20:", "body")
    clock[0] += 0.99
    assert cache.get("page:0:20:") == "body"
    clock[0] += 0.02
    assert cache.get("page:0:20:") is None  # not fresh…
    assert cache.get_stale("page:0:20:") == "body"  # …but servable while it is being rebuilt
    clock[0] += feed_module.LOCAL_STALE_SECONDS
    assert cache.get_stale("page:0:20:") is None  # too old even for that
    off = feed_module._LocalCache(seconds=0)
    off.put("stats", "x")
    assert off.get("stats") is None and off.get_stale("stats") is None


async def test_events_cost_one_rebuild_per_second_and_no_reader_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from contextlib import asynccontextmanager

    cache = feed_module._LocalCache(seconds=1.0)
    monkeypatch.setattr(feed_module, "local_cache", cache)
    monkeypatch.setattr(feed_module, "_cache_version", _no_version)
    clock = [1000.0]
    monkeypatch.setattr(feed_module.time, "monotonic", lambda: clock[0])
    builds: list[str] = []
    release = asyncio.Event()

    @asynccontextmanager
    async def no_session() -> Any:
        yield None

    async def build(session: Any) -> str:
        builds.append(f"v{len(builds) + 1}")
        if len(builds) > 1:
            await release.wait()  # a slow rebuild
        return builds[-1]

    key = f"test:{uuid.uuid4().hex}"
    assert await feed_module._cached(key, build, 5, no_session) == "v1"
    for _ in range(20):  # events keep arriving within the second: nothing is rebuilt
        await feed_module.publish([])
        assert await feed_module._cached(key, build, 5, no_session) == "v1"
    assert builds == ["v1"]
    clock[0] += 1.5  # the copy has run out: readers get it at once while one task rebuilds it
    answers = await asyncio.gather(*(feed_module._cached(key, build, 5, no_session) for _ in range(10)))
    assert answers == ["v1"] * 10
    assert builds == ["v1", "v2"]
    release.set()
    await asyncio.gather(*feed_module._build_tasks)
    assert await feed_module._cached(key, build, 5, no_session) == "v2"
    clock[0] += 1 + feed_module.LOCAL_STALE_SECONDS  # far too old to serve: the reader waits for the build
    assert await feed_module._cached(key, build, 5, no_session) == "v3"


async def test_concurrent_misses_build_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from contextlib import asynccontextmanager

    feed_module.local_cache.clear()
    monkeypatch.setattr(feed_module, "_cache_version", _no_version)
    builds = 0

    @asynccontextmanager
    async def no_session() -> Any:
        yield None

    async def build(session: Any) -> str:
        nonlocal builds
        builds += 1
        await asyncio.sleep(0.05)
        return '{"built": true}'

    key = f"test:{uuid.uuid4().hex}"
    bodies = await asyncio.gather(*(feed_module._cached(key, build, 5, no_session) for _ in range(20)))
    assert bodies == ['{"built": true}'] * 20
    assert builds == 1

    async def broken(session: Any) -> str:
        raise RuntimeError("database away")

    other = f"test:{uuid.uuid4().hex}"
    results = await asyncio.gather(
        *(feed_module._cached(other, broken, 5, no_session) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert not feed_module._building  # nothing left waiting


async def _no_version() -> None:
    return None


@pytest.mark.parametrize("scripting", [True, False], ids=["lua-script", "pipeline"])
async def test_a_publish_bumps_the_version_once_and_sends_each_message_in_order(
    monkeypatch: pytest.MonkeyPatch, scripting: bool
) -> None:
    """One script call where the server runs scripts, a pipeline where it does not: either way the cache's
    version goes up by one per publish and every message reaches a listener, in order, as its JSON text."""
    redis = app_redis.get_redis()
    if not scripting:
        monkeypatch.setattr(app_redis, "no_scripting", {id(redis)})
    channel = f"test:feed:{uuid.uuid4().hex}"
    monkeypatch.setattr(feed_module, "CHANNEL", channel)
    feed_module.breaker.reset()
    monkeypatch.setattr(feed_module.breaker, "stale", False)
    listener = redis.pubsub()
    await listener.subscribe(channel)
    try:
        assert (await listener.get_message(timeout=1.0) or {}).get("type") == "subscribe"
        messages = [{"op": "new", "event": {"id": n, "text": f"第 {n} 笔"}} for n in range(3)]
        before = await _version()
        await feed_module.publish(messages)
        if scripting and id(redis) in app_redis.no_scripting:
            pytest.skip("this Redis (the in-process stand-in) runs no scripts; the pipeline case covers it")
        assert await _version() == before + 1
        got = []
        while len(got) < 3:
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=2.0)
            assert message is not None, got
            got.append(message["data"])
        assert got == [json_text(m) for m in messages]
        await feed_module.publish([])  # nothing to send: the version still moves
        assert await _version() == before + 2
        assert await listener.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
        assert feed_module.breaker.available() and not feed_module.breaker.stale  # Redis never failed
    finally:
        await listener.unsubscribe(channel)
        await listener.aclose()
