from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from app import redis as app_redis
from app.errors import install_error_handlers
from app.kit import ratelimit
from app.kit.body_limit import BodySizeLimitMiddleware
from app.kit.ratelimit import Limit, hit, rate_limit
from app.redis import get_redis


@pytest.mark.parametrize("scripting", [True, False], ids=["lua-script", "pipeline"])
async def test_sliding_window_counts_and_recovers(monkeypatch: pytest.MonkeyPatch, scripting: bool) -> None:
    limit = Limit(f"t{uuid.uuid4().hex[:8]}", limit=3, window_seconds=10)
    redis = get_redis()
    if not scripting:
        monkeypatch.setattr(app_redis, "no_scripting", {id(redis)})
    t0 = 1_000_000.0
    assert await hit(redis, limit, "ip", now=t0) is None
    if scripting and id(redis) in app_redis.no_scripting:
        pytest.skip("this Redis (the in-process stand-in) runs no scripts; the pipeline case covers it")
    assert [await hit(redis, limit, "ip", now=t0 + i) for i in range(1, 3)] == [None, None]
    retry = await hit(redis, limit, "ip", now=t0 + 3)
    assert retry is not None and 1 <= retry <= 8
    # refused hits are not counted: after the first one slides out, exactly one more is allowed
    assert await hit(redis, limit, "ip", now=t0 + 10.5) is None
    assert await hit(redis, limit, "ip", now=t0 + 10.6) is not None
    # other callers are independent
    assert await hit(redis, limit, "other-ip", now=t0 + 3) is None


class _DownRedis:
    def pipeline(self, transaction: bool = True) -> Any:
        raise ConnectionError("redis down")

    async def evalsha(self, *args: Any) -> Any:
        raise ConnectionError("redis down")


@pytest.mark.parametrize(("fail_open", "expected"), [(True, 200), (False, 503)])
async def test_redis_down_fails_open_for_reads_closed_for_money(
    monkeypatch: pytest.MonkeyPatch, fail_open: bool, expected: int
) -> None:
    import app.redis

    monkeypatch.setattr(app.redis, "get_redis", lambda: _DownRedis())
    probe = FastAPI()
    install_error_handlers(probe)
    limit = Limit("probe", limit=1, window_seconds=60, fail_open=fail_open)

    @probe.post("/x", dependencies=[Depends(rate_limit(limit))])
    async def x() -> dict[str, bool]:
        return {"ok": True}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=probe), base_url="http://t") as c:
        res = await c.post("/x")
    assert res.status_code == expected
    if expected == 503:
        assert res.json()["error"] == "RateLimiterUnavailable"


async def test_login_is_rate_limited_with_retry_after(client: httpx.AsyncClient) -> None:
    from app.kit.ratelimit import LOGIN

    statuses = []
    for _ in range(LOGIN.limit + 2):
        res = await client.post("/api/v1/auth/wechat/login", json={"code": "sbx:" + uuid.uuid4().hex[:10]})
        statuses.append(res.status_code)
    assert statuses.count(429) >= 1
    assert set(statuses) <= {200, 429}
    res = await client.post("/api/v1/auth/wechat/login", json={"code": "sbx:whoever"})
    assert res.status_code == 429
    assert int(res.headers["retry-after"]) >= 1
    assert "频繁" in res.json()["message"]


async def test_oversized_bodies_are_refused() -> None:
    probe = FastAPI()

    @probe.post("/api/v1/x")
    async def x(payload: dict[str, str]) -> dict[str, int]:
        return {"n": len(payload)}

    @probe.post("/api/v1/admin/upload")
    async def upload(payload: dict[str, str]) -> dict[str, int]:
        return {"n": len(payload)}

    limited = BodySizeLimitMiddleware(
        probe, default_limit=1000, upload_limit=100_000, upload_prefixes=("/api/v1/admin/",)
    )
    big = {"a": "x" * 5000}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limited), base_url="http://t") as c:
        res = await c.post("/api/v1/x", json=big)
        assert res.status_code == 413
        assert res.json()["error"] == "PayloadTooLarge"
        assert (await c.post("/api/v1/x", json={"a": "b"})).status_code == 200
        assert (await c.post("/api/v1/admin/upload", json=big)).status_code == 200

        async def chunks() -> Any:  # no content-length: counted while streaming
            for _ in range(10):
                yield b"x" * 500

        res = await c.post("/api/v1/x", content=chunks(), headers={"content-type": "application/json"})
        assert res.status_code == 413

        async def small_chunks() -> Any:  # no content-length, within the limit: the app reads it whole
            for part in (b'{"a": ', b'"bc"}'):
                yield part

        res = await c.post("/api/v1/x", content=small_chunks(), headers={"content-type": "application/json"})
        assert res.status_code == 200 and res.json() == {"n": 1}


class _CountingRedis:
    """The real client, counting the round trips made through it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.round_trips = 0

    def pipeline(self, transaction: bool = True) -> Any:
        self.round_trips += 1
        return self.inner.pipeline(transaction=transaction)

    async def evalsha(self, *args: Any) -> Any:
        self.round_trips += 1
        return await self.inner.evalsha(*args)

    async def script_load(self, *args: Any) -> Any:
        return await self.inner.script_load(*args)

    async def zrem(self, *args: Any) -> Any:
        self.round_trips += 1
        return await self.inner.zrem(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _window(limit: Limit, identity: str) -> int:
    return int(await get_redis().zcard(f"sangyu:rl:{limit.name}:{identity}"))


async def test_batched_limit_counts_every_request_in_one_round_trip() -> None:
    limit = Limit(f"b{uuid.uuid4().hex[:8]}", limit=50, window_seconds=60, batched=True)
    redis = _CountingRedis(get_redis())
    await ratelimit.hit_batched(redis, limit, "warm-up")  # the first flush learns how this server runs it
    await ratelimit.settle()
    redis.round_trips = 0
    answers = [await ratelimit.hit_batched(redis, limit, "reader") for _ in range(30)]
    assert answers == [None] * 30
    assert redis.round_trips == 0  # decided here
    await ratelimit.settle()
    assert redis.round_trips == 1  # …and added to the shared window in one call, with the warm-up's count
    assert await _window(limit, "reader") == 30


async def test_a_flush_adds_each_request_as_its_own_member_however_many() -> None:
    """A flush sends each caller's number of requests; the window still holds one member per request, also past
    the thousand members the script adds per ZADD, and flushes after it add to it rather than overwrite."""
    limit = Limit(f"b{uuid.uuid4().hex[:8]}", limit=5_000, window_seconds=60, batched=True)
    redis = get_redis()
    for _ in range(2_345):
        assert await ratelimit.hit_batched(redis, limit, "crowd") is None
    asked_at = time.time()
    assert await ratelimit.hit_batched(redis, limit, "single") is None
    await ratelimit.settle()
    assert await _window(limit, "crowd") == 2_345
    assert await _window(limit, "single") == 1
    for _ in range(3):
        assert await ratelimit.hit_batched(redis, limit, "single") is None
    await ratelimit.settle()
    assert await _window(limit, "single") == 4
    # entered at its flush's time: not before the request came, so it leaves the window no sooner than it should
    oldest = await redis.zrange(f"sangyu:rl:{limit.name}:single", 0, 0, withscores=True)
    assert asked_at <= oldest[0][1] <= asked_at + 5


async def test_batched_limit_refuses_at_the_limit_and_refused_requests_do_not_count() -> None:
    limit = Limit(f"b{uuid.uuid4().hex[:8]}", limit=5, window_seconds=60, batched=True)
    redis = get_redis()
    answers = [await ratelimit.hit_batched(redis, limit, "reader") for _ in range(8)]
    assert answers[:5] == [None] * 5
    assert all(a is not None and 1 <= a <= 61 for a in answers[5:])
    await ratelimit.settle()
    assert await _window(limit, "reader") == 5
    retry = await ratelimit.hit_batched(redis, limit, "reader")  # what Redis said: still full
    assert retry is not None and retry >= 1
    await ratelimit.settle()
    assert await _window(limit, "reader") == 5
    assert await ratelimit.hit_batched(redis, limit, "someone-else") is None


async def test_batched_limit_hears_about_other_processes_at_the_next_flush() -> None:
    limit = Limit(f"b{uuid.uuid4().hex[:8]}", limit=10, window_seconds=60, batched=True)
    redis = get_redis()
    assert await ratelimit.hit_batched(redis, limit, "reader") is None
    await ratelimit.settle()  # the window holds 1
    # another process lets 8 requests of the same caller through meanwhile
    now = time.time()
    await redis.zadd(f"sangyu:rl:{limit.name}:reader", {f"{now:.6f}:other{i}": now for i in range(8)})
    assert await ratelimit.hit_batched(redis, limit, "reader") is None  # 1 known + 1 pending: allowed here
    await asyncio.sleep(ratelimit.FLUSH_SECONDS * 4)  # the flush adds it and hears the window holds 10
    assert await _window(limit, "reader") == 10
    assert await ratelimit.hit_batched(redis, limit, "reader") is not None


async def test_a_caller_new_to_this_process_is_let_through_once_then_held_to_the_shared_count() -> None:
    """The trade batched limits make (see app/kit/ratelimit.py): a caller this process knows nothing about is
    counted, not checked, until the next flush."""
    limit = Limit(f"b{uuid.uuid4().hex[:8]}", limit=10, window_seconds=60, batched=True)
    redis = get_redis()
    now = time.time()
    await redis.zadd(f"sangyu:rl:{limit.name}:busy", {f"{now:.6f}:elsewhere{i}": now for i in range(10)})
    assert await ratelimit.hit_batched(redis, limit, "busy") is None
    await asyncio.sleep(ratelimit.FLUSH_SECONDS * 4)
    assert await _window(limit, "busy") == 11
    assert await ratelimit.hit_batched(redis, limit, "busy") is not None
    # a burst to one process is held to the limit even before any flush
    answers = [await ratelimit.hit_batched(redis, limit, "burst") for _ in range(15)]
    assert answers.count(None) == 10


async def test_batched_limit_fails_open_when_redis_goes_away(capsys: pytest.CaptureFixture[str]) -> None:
    limit = Limit(f"b{uuid.uuid4().hex[:8]}", limit=10, window_seconds=60, batched=True)
    down = _DownRedis()
    assert [await ratelimit.hit_batched(down, limit, "reader") for _ in range(3)] == [None] * 3
    await asyncio.sleep(ratelimit.FLUSH_SECONDS * 4)  # the flush cannot reach Redis: logged, nothing raised
    assert "rate_limit_flush_failed" in capsys.readouterr().out
    assert await ratelimit.check(limit, "reader") is None  # and the next request still gets through
    await ratelimit.settle()
    assert await _window(limit, "reader") == 1  # only what reached Redis is counted there


def test_a_money_limit_cannot_be_batched() -> None:
    """Batched counting lets requests through before Redis hears of them: only for limits that fail open."""
    with pytest.raises(ValueError):
        Limit("money", limit=1, window_seconds=60, fail_open=False, batched=True)
