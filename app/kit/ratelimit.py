"""Sliding-window rate limits in Redis (a sorted set of request timestamps per key).

One round trip per request: a Lua script trims the window, counts, and records the request only if it is
allowed (refused requests do not count). Where the server cannot run scripts (the in-process stand-in used
when ``REDIS_URL`` is unset) the same steps go as one MULTI/EXEC pipeline.

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
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from app.exceptions import ServiceUnavailable, TooManyRequests

log = structlog.get_logger("app.ratelimit")


@dataclass(frozen=True)
class Limit:
    name: str
    limit: int
    window_seconds: int
    fail_open: bool = True


_SLIDING_WINDOW = """
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, 0, now - window)
if redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now, ARGV[4])
    redis.call('EXPIRE', key, window + 1)
    return ''
end
return redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
"""
_script = AsyncScript(None, _SLIDING_WINDOW.encode())  # type: ignore[arg-type]  # client given per call
_no_scripting: set[int] = set()  # clients (by id) whose server refused EVAL


async def hit(redis: Any, limit: Limit, identity: str, now: float | None = None) -> int | None:
    """Count one request for ``identity``. Returns None when allowed, else seconds until a slot frees up."""
    now = time.time() if now is None else now
    key = f"sangyu:rl:{limit.name}:{identity}"
    member = f"{now:.6f}:{uuid.uuid4().hex[:8]}"
    if id(redis) not in _no_scripting:
        try:
            oldest = await _script(
                keys=[key], args=[f"{now:.6f}", limit.window_seconds, limit.limit, member], client=redis
            )
        except ResponseError as exc:  # no scripting on this server; connection errors propagate
            log.info("rate_limit_without_scripting", error=str(exc)[:80])
            _no_scripting.add(id(redis))
        else:
            if not oldest:
                return None
            return max(1, int(float(oldest) + limit.window_seconds - now) + 1)
    return await _hit_pipelined(redis, limit, key, member, now)


async def _hit_pipelined(redis: Any, limit: Limit, key: str, member: str, now: float) -> int | None:
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
