from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

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
        monkeypatch.setattr(ratelimit, "_no_scripting", {id(redis)})
    t0 = 1_000_000.0
    assert await hit(redis, limit, "ip", now=t0) is None
    if scripting and id(redis) in ratelimit._no_scripting:
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
