"""Sliding-window rate limits in Redis (a sorted set of request timestamps per key).

When Redis cannot be reached a limit either lets the request through (``fail_open=True``: reads, logins — better an
unthrottled read than an elder locked out) or refuses it with 503 (``fail_open=False``: writes that move money, where
an unthrottled burst is worse than a short refusal). See docs/reliability.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import Request

from app.exceptions import ServiceUnavailable, TooManyRequests

log = structlog.get_logger("app.ratelimit")


@dataclass(frozen=True)
class Limit:
    name: str
    limit: int
    window_seconds: int
    fail_open: bool = True


async def hit(redis: Any, limit: Limit, identity: str, now: float | None = None) -> int | None:
    """Count one request for ``identity``. Returns None when allowed, else seconds until a slot frees up."""
    now = time.time() if now is None else now
    key = f"sangyu:rl:{limit.name}:{identity}"
    member = f"{now:.6f}:{uuid.uuid4().hex[:8]}"
    window_start = now - limit.window_seconds
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, 0, window_start)
        pipe.zadd(key, {member: now})
        pipe.zcard(key)
        pipe.zrange(key, 0, 0, withscores=True)
        pipe.expire(key, limit.window_seconds + 1)
        _, _, count, oldest, _ = await pipe.execute()
    if count <= limit.limit:
        return None
    # refused requests do not count against the caller
    await redis.zrem(key, member)
    oldest_ts = oldest[0][1] if oldest else now
    return max(1, int(oldest_ts + limit.window_seconds - now) + 1)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limit(
    limit: Limit, *, by: Callable[[Request], str] = client_ip
) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency enforcing ``limit`` per caller identity (IP by default)."""

    async def dependency(request: Request) -> None:
        from app.redis import get_redis

        try:
            retry_after = await hit(get_redis(), limit, by(request))
        except Exception as exc:
            if limit.fail_open:
                log.warning("rate_limit_unavailable_fail_open", limit=limit.name, error=type(exc).__name__)
                return
            log.warning("rate_limit_unavailable_fail_closed", limit=limit.name, error=type(exc).__name__)
            raise ServiceUnavailable(
                "系统繁忙，请稍后再试", code="RateLimiterUnavailable", headers={"Retry-After": "5"}
            ) from exc
        if retry_after is not None:
            raise TooManyRequests(
                f"操作太频繁了，请 {retry_after} 秒后再试",
                detail={"limit": limit.limit, "window_seconds": limit.window_seconds},
                headers={"Retry-After": str(retry_after)},
            )

    return dependency


# The limits in one place (per IP unless noted).
LOGIN = Limit("login", limit=60, window_seconds=60, fail_open=True)
DONATION_CREATE = Limit("donation_create", limit=30, window_seconds=60, fail_open=False)
REFUND_REQUEST = Limit("refund_request", limit=10, window_seconds=3600, fail_open=False)
PUBLIC_READ = Limit("public_read", limit=300, window_seconds=60, fail_open=True)
QR_SCAN = Limit("qr_scan", limit=60, window_seconds=60, fail_open=True)
