"""Abuse limits on the endpoints that matter: login, donation creation, refund requests, the public feed and QR
scans — 429 with Retry-After and a Chinese message, nothing written for the refused call; and what each limit
does when Redis is down (reads and logins degrade open, money writes close with 503)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import app.redis as app_redis
from app.feed.service import breaker as feed_breaker
from app.kit import ratelimit
from app.kit.ratelimit import Limit
from app.models import Donation
from tests.bookings.helpers import MORNING, arrange, body, key, set_now
from tests.donations.helpers import create_target, donate, payment_notification
from tests.fixtures.client import login


def _ip(client: httpx.AsyncClient) -> str:
    return str(client._transport.client[0])  # type: ignore[attr-defined]


async def _fill(client: httpx.AsyncClient, limit: Limit) -> None:
    """Use up the caller's window, as ``limit.limit`` earlier requests would have."""
    redis = app_redis.get_redis()
    now = time.time()
    await redis.zadd(
        f"sangyu:rl:{limit.name}:{_ip(client)}", {f"{now - 1:.6f}:{i}": now - 1 for i in range(limit.limit)}
    )
    # as if another process had let them through: this one hears about it at its next flush
    await ratelimit.settle()


def _assert_429(res: httpx.Response) -> None:
    assert res.status_code == 429, res.text
    assert int(res.headers["retry-after"]) >= 1
    body = res.json()
    assert body["error"] == "TooManyRequests" and "频繁" in body["message"]


async def test_login_limit(client: httpx.AsyncClient) -> None:
    await _fill(client, ratelimit.LOGIN)
    _assert_429(await client.post("/api/v1/auth/wechat/login", json={"code": "sbx:someone"}))


async def test_donation_creation_limit_writes_nothing(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    target = await create_target(session)
    headers = await login(client, "rl-donor-" + uuid.uuid4().hex[:8])
    assert (await donate(client, headers, target.code)).status_code == 201
    await _fill(client, ratelimit.DONATION_CREATE)
    before = await session.scalar(select(func.count()).select_from(Donation))
    _assert_429(await donate(client, headers, target.code))
    assert await session.scalar(select(func.count()).select_from(Donation)) == before


async def test_refund_request_limit(client: httpx.AsyncClient, session: AsyncSession) -> None:
    target = await create_target(session)
    headers = await login(client, "rl-refund-" + uuid.uuid4().hex[:8])
    donation = (await donate(client, headers, target.code, amount_fen=3000)).json()
    notify_headers, notify_body = payment_notification(donation["out_trade_no"], 3000)
    assert (
        await client.post("/api/v1/payments/wechat/notify", content=notify_body, headers=notify_headers)
    ).status_code in (200, 204)
    await _fill(client, ratelimit.REFUND_REQUEST)
    res = await client.post(
        f"/api/v1/donations/{donation['id']}/refund-requests", json={"amount_fen": 100}, headers=headers
    )
    _assert_429(res)


async def test_public_feed_limit(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/feed")).status_code == 200
    await _fill(client, ratelimit.PUBLIC_READ)
    for path in ("/api/v1/feed", "/api/v1/feed/stats", "/api/v1/donation-targets"):
        _assert_429(await client.get(path))


async def test_qr_scan_limit(client: httpx.AsyncClient, session: AsyncSession) -> None:
    target = await create_target(session)
    assert (await client.get(f"/q/{target.code}")).status_code == 200
    await _fill(client, ratelimit.QR_SCAN)
    _assert_429(await client.get(f"/api/v1/donation-targets/{target.code}", params={"scan": "true"}))
    res = await client.get(f"/q/{target.code}")
    assert res.status_code == 429 and int(res.headers["retry-after"]) >= 1


async def test_limits_are_per_caller(client: httpx.AsyncClient, app: Any) -> None:
    assert (await client.get("/api/v1/feed")).status_code == 200
    await _fill(client, ratelimit.PUBLIC_READ)
    _assert_429(await client.get("/api/v1/feed"))
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.250.0.1", 1)), base_url="http://testserver"
    )
    async with other:
        assert (await other.get("/api/v1/feed")).status_code == 200


@contextlib.contextmanager
def redis_down() -> Iterator[None]:
    """Every Redis client of this process points at a closed port (works with fakeredis and real Redis)."""
    loop_key = id(asyncio.get_running_loop())
    dead = aioredis.Redis.from_url(
        "redis://127.0.0.1:1/0",
        decode_responses=True,
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    import redis as sync_redis

    dead_sync = sync_redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    saved_async, saved_sync = app_redis._async_clients.get(loop_key), app_redis._sync_client
    app_redis._async_clients[loop_key] = dead
    app_redis._sync_client = dead_sync
    try:
        yield
    finally:
        if saved_async is None:
            app_redis._async_clients.pop(loop_key, None)
        else:
            app_redis._async_clients[loop_key] = saved_async
        app_redis._sync_client = saved_sync
        feed_breaker.reset()  # Redis is back: the feed need not wait out its cool-down in later tests


async def test_redis_down_reads_open_money_writes_closed(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = await create_target(session)
    world = await arrange(session)
    set_now(monkeypatch, MORNING)
    donor = await login(client, "rd-donor-" + uuid.uuid4().hex[:8])
    elder = await login(client, world.elder_openid)
    pending = (await donate(client, donor, target.code, amount_fen=2000)).json()
    donations_before = await session.scalar(select(func.count()).select_from(Donation))
    with redis_down():
        # reads and logins degrade open
        assert (await client.get("/api/v1/feed")).status_code == 200
        assert (await client.get(f"/q/{target.code}")).status_code == 200
        assert (await client.get(f"/api/v1/donation-targets/{target.code}")).status_code == 200
        assert (await client.post("/api/v1/auth/wechat/login", json={"code": "sbx:rd-x"})).status_code == 200
        # money writes close: 503 + Retry-After, nothing written
        res = await donate(client, donor, target.code)
        assert res.status_code == 503 and res.headers["retry-after"] == "5", res.text
        assert res.json()["error"] == "RateLimiterUnavailable" and res.json()["message"]
        assert await session.scalar(select(func.count()).select_from(Donation)) == donations_before
        # …but the meal side and incoming payments keep working
        booked = await client.post("/api/v1/bookings", json=body(world), headers={**elder, **key()})
        assert booked.status_code == 201, booked.text
        notify_headers, notify_body = payment_notification(pending["out_trade_no"], 2000)
        paid = await client.post(
            "/api/v1/payments/wechat/notify", content=notify_body, headers=notify_headers
        )
        assert paid.status_code in (200, 204), paid.text
    donation = await session.get(Donation, uuid.UUID(pending["id"]))
    assert donation is not None
    await session.refresh(donation)
    assert donation.status == "paid"
