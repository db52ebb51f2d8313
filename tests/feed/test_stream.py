"""GET /api/v1/feed/stream: Server-Sent Events over a real uvicorn server, fed by Redis pub/sub — an event
committed on another connection and event loop, or by another process entirely, reaches the wall screen."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from app import redis as app_redis
from app.config import PROJECT_ROOT
from app.db import Database, unit_of_work
from app.feed import service as feed_module
from app.feed.service import feed_service
from app.main import create_app
from tests.fixtures.client import ServerThread
from tests.fixtures.environment import free_port


@pytest.fixture
def server(committed: Database) -> Iterator[str]:
    port = free_port()
    thread = ServerThread(create_app(), port)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    thread.stop()


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    event: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if "data" in event:
                yield {
                    "sse_id": event.get("id"),
                    "sse_event": event.get("event"),
                    **json.loads(event["data"]),
                }
            event = {}
        elif not line.startswith(":") and ":" in line:
            key, _, value = line.partition(":")
            event[key] = value.lstrip(" ")


async def _next_event(
    stream: AsyncIterator[dict[str, Any]], wait: float = 10, kind: str | None = None
) -> dict[str, Any]:
    """The next event (of ``kind``, when given: events other tests' servers publish are skipped)."""

    async def find() -> dict[str, Any]:
        while True:
            got = await anext(stream)  # type: ignore[call-overload]
            if kind is None or got.get("event", {}).get("kind") == kind:
                return got

    return await asyncio.wait_for(find(), wait)


async def _wait_subscribed(client: aioredis.Redis, wait: float = 5) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        counts = await client.pubsub_numsub(feed_module.CHANNEL)
        if counts and counts[0][1] > 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the stream never subscribed")


async def test_stream_delivers_an_event_committed_elsewhere_and_replays_after_reconnect(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=15) as client:
        async with client.stream("GET", "/api/v1/feed/stream") as res:
            assert res.status_code == 200
            assert res.headers["content-type"].startswith("text/event-stream")
            events = _events(res.aiter_lines())
            await _wait_subscribed(app_redis.get_redis())
            async with unit_of_work() as session:  # this test's loop and connection, not the server's
                await feed_service.record_ledger_root(
                    session, day=date(2026, 3, 5), merkle_root="ab" * 32, entry_count=7
                )
            got = await _next_event(events, kind="ledger_root")
            assert got["sse_event"] == "feed" and got["op"] == "new"
            assert got["event"]["kind"] == "ledger_root" and got["event"]["data"]["entry_count"] == 7
            first_id = int(got["sse_id"])
            assert got["event"]["id"] == first_id
            async with unit_of_work() as session:  # the same day's root again: an update, same id
                await feed_service.record_ledger_root(
                    session, day=date(2026, 3, 5), merkle_root="cd" * 32, entry_count=8
                )
            updated = await _next_event(events, kind="ledger_root")
            assert updated["op"] == "update" and int(updated["sse_id"]) == first_id
            assert updated["event"]["data"]["merkle_root"] == "cd" * 32
        # a wall screen that dropped off gets what it missed from PostgreSQL
        async with unit_of_work() as session:
            await feed_service.record_reconciliation(session, bill_date=date(2026, 3, 5), status="matched")
        async with client.stream(
            "GET", "/api/v1/feed/stream", headers={"Last-Event-ID": str(first_id)}
        ) as res:
            replay = await _next_event(_events(res.aiter_lines()))
            assert replay["op"] == "new" and int(replay["sse_id"]) > first_id
            assert replay["event"]["kind"] == "reconciliation"


@pytest.fixture
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: cross-process pub/sub needs a real Redis")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    import redis as sync_redis

    while True:
        try:
            sync_redis.Redis.from_url(url).ping()
            break
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


async def test_stream_delivers_an_event_published_by_another_process(
    redis_server: str, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients: dict[int, aioredis.Redis] = {}

    def real_redis() -> aioredis.Redis:  # one client per event loop, like app.redis.get_redis
        key = id(asyncio.get_running_loop())
        if key not in clients:
            clients[key] = aioredis.Redis.from_url(redis_server, decode_responses=True)
        return clients[key]

    monkeypatch.setattr(app_redis, "get_redis", real_redis)
    # the publishing process derives its channel from its REDIS_URL (database 0); listen on the same one
    monkeypatch.setattr(feed_module, "CHANNEL", "sangyu:feed:events:0")
    script = textwrap.dedent(
        """
        import asyncio
        from datetime import date
        from app.db import unit_of_work
        from app.feed.service import feed_service

        async def main():
            async with unit_of_work() as session:
                await feed_service.record_ledger_root(
                    session, day=date(2026, 4, 1), merkle_root="ef" * 32, entry_count=42
                )

        asyncio.run(main())
        """
    )
    env = {**os.environ, "REDIS_URL": redis_server, "APP_ENV": "testing"}
    async with (
        httpx.AsyncClient(base_url=server, timeout=15) as client,
        client.stream("GET", "/api/v1/feed/stream") as res,
    ):
        events = _events(res.aiter_lines())
        await _wait_subscribed(real_redis())
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, cwd=str(PROJECT_ROOT), env=env
        )
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        got = await _next_event(events, wait=15)
        assert got["op"] == "new"
        assert got["event"]["kind"] == "ledger_root"
        assert got["event"]["text"].startswith("4月1日 账本已封存：42 笔记账")
    await clients[id(asyncio.get_running_loop())].aclose()  # the server's client goes with its loop
