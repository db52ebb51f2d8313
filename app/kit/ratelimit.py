"""Sliding-window rate limits in Redis (a sorted set of request timestamps per key).

Exact limits (logins, money writes): one round trip per request. A Lua script trims the window, counts, and
records the request only if it is allowed (refused requests do not count). Where the server cannot run scripts
(the in-process stand-in used when ``REDIS_URL`` is unset) the same steps go as one MULTI/EXEC pipeline.

Batched limits (public reads, ``Limit(batched=True)``): each process decides from what it last heard from Redis
about the caller (how many requests the window held) plus what it has let through since, without a round trip.
Every ``FLUSH_SECONDS`` it adds the requests it let through to the same sorted sets, in one script call for all
callers (a pipeline where the server runs no scripts), and hears back each caller's count (a count older than
``KNOWN_SECONDS`` is asked for again). A flush sends each caller's number of requests, not each request: they
enter the window at the flush's time, at most a flush later than they came, so they leave it that much later
too (the limit errs on the strict side, by 50 ms in a window of a minute). A caller the process knows nothing
about yet is let through and counted the same way, so up to ``limit`` of its first requests to one process are
not checked against the others until the next flush, 50 ms later. A caller spread over several processes may
thus get a little more than the limit for a moment; the limit holds from then on.
Public reads are where that trade is worth it: they are most of the traffic, and they fail open anyway.

When Redis cannot be reached a limit either lets the request through (``fail_open=True``: reads, logins — better an
unthrottled read than an elder locked out) or refuses it with 503 (``fail_open=False``: writes that move money, where
an unthrottled burst is worse than a short refusal). See docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import Request

import app.redis as app_redis
from app.exceptions import ServiceUnavailable, TooManyRequests
from app.redis import run_script, script

log = structlog.get_logger("app.ratelimit")


@dataclass(frozen=True)
class Limit:
    name: str
    limit: int
    window_seconds: int
    fail_open: bool = True
    batched: bool = False  # counted in batches (see the module's docstring)

    def __post_init__(self) -> None:
        if self.batched and not self.fail_open:
            raise ValueError(f"{self.name}: a batched limit lets requests through before Redis hears of them")


# returns {1 if allowed else 0, the oldest request's timestamp or ''}
_SLIDING_WINDOW = """
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, 0, now - window)
local allowed = 0
if redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now, ARGV[4])
    redis.call('EXPIRE', key, window + 1)
    allowed = 1
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2] or ''
return {allowed, oldest}
"""
_script = script(_SLIDING_WINDOW)
_MEMBER_PREFIX = uuid.uuid4().hex[:8]  # this process; with the counters below, members never collide
_members = itertools.count()
_flushes = itertools.count()


def _member(ts: float) -> str:
    """A sorted-set member for one request at ``ts``."""
    return f"{ts:.6f}:{_MEMBER_PREFIX}{next(_members)}"


def _flush_members(base: str, k: int, n: int) -> list[str]:
    """The members a flush adds for its ``k``-th caller's ``n`` requests (``_FLUSH`` makes the same)."""
    return [f"{base}{k}:{j}" for j in range(1, n + 1)]


def _retry_after(oldest: float | None, limit: Limit, now: float) -> int:
    start = now if oldest is None else oldest
    return max(1, int(start + limit.window_seconds - now) + 1)


async def hit(redis: Any, limit: Limit, identity: str, now: float | None = None) -> int | None:
    """Count one request for ``identity`` exactly. Returns None when allowed, else seconds until a slot frees
    up."""
    now = time.time() if now is None else now
    key = f"sangyu:rl:{limit.name}:{identity}"
    member = _member(now)
    allowed, oldest = await run_script(
        redis,
        _script,
        [key],
        [f"{now:.6f}", limit.window_seconds, limit.limit, member],
        lambda: _hit_pipelined(redis, limit, key, member, now),
    )
    return None if int(allowed) else _retry_after(float(oldest) if oldest else None, limit, now)


async def _hit_pipelined(redis: Any, limit: Limit, key: str, member: str, now: float) -> tuple[int, str]:
    window_start = now - limit.window_seconds
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, 0, window_start)
        pipe.zadd(key, {member: now})
        pipe.zcard(key)
        pipe.zrange(key, 0, 0, withscores=True)
        pipe.expire(key, limit.window_seconds + 1)
        _, _, count, oldest, _ = await pipe.execute()
    oldest_ts = str(oldest[0][1]) if oldest else ""
    if count <= limit.limit:
        return 1, oldest_ts
    # refused requests do not count against the caller
    await redis.zrem(key, member)
    return 0, oldest_ts


# ---------------------------------------------------------------- batched limits

FLUSH_SECONDS = 0.05  # how often a process adds what it let through to the shared windows
KNOWN_SECONDS = 1.0  # a caller's count older than this is asked for again at the next flush
_PRUNE_ABOVE = 4096  # callers remembered per process before stale ones are dropped


@dataclass
class _Known:
    at: float  # when Redis said so
    count: int  # requests in the window then, this process's flushed ones included
    oldest: float | None
    limit: Limit


@dataclass
class _Pending:
    """A caller's requests let through since the last flush: how many, and when the first came (a flush sends
    only their number, ``_FLUSH``)."""

    first: float
    count: int = 1


@dataclass
class _Batches:
    """One event loop's view (Redis clients are loop-bound)."""

    known: dict[str, _Known] = field(default_factory=dict)
    pending: dict[str, _Pending] = field(default_factory=dict)  # let through, not yet in Redis
    limits: dict[str, Limit] = field(default_factory=dict)
    flush_scheduled: bool = False
    redis: Any = None  # the client the pending requests are for
    flushes: set[asyncio.Task[None]] = field(default_factory=set)


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batches] = weakref.WeakKeyDictionary()


async def hit_batched(redis: Any, limit: Limit, identity: str, now: float | None = None) -> int | None:
    """Like ``hit``, for a ``batched`` limit, without a round trip (see the module's docstring)."""
    now = time.time() if now is None else now
    loop = asyncio.get_running_loop()
    state = _batches.get(loop)
    if state is None:
        state = _batches[loop] = _Batches()
    key = f"sangyu:rl:{limit.name}:{identity}"
    known = state.known.get(key)
    pending = state.pending.get(key)
    state.redis = redis
    if known is not None and now - known.at > KNOWN_SECONDS and key not in state.limits:
        state.limits[key] = limit  # heard about too long ago: ask again at the next flush
        _schedule_flush(state, loop)
    counted = (known.count if known is not None else 0) + (pending.count if pending else 0)
    if counted >= limit.limit:
        oldest = known.oldest if known is not None else None
        if oldest is None and pending is not None:
            oldest = pending.first
        return _retry_after(oldest, limit, now)
    if pending is None:
        state.pending[key] = _Pending(now)
        state.limits[key] = limit
    else:
        pending.count += 1
    _schedule_flush(state, loop)
    return None


def _schedule_flush(state: _Batches, loop: asyncio.AbstractEventLoop) -> None:
    if not state.flush_scheduled:
        state.flush_scheduled = True
        loop.call_later(FLUSH_SECONDS, _start_flush, state)


def _start_flush(state: _Batches) -> None:
    task = asyncio.get_running_loop().create_task(_flush(state, state.redis))
    state.flushes.add(task)
    task.add_done_callback(state.flushes.discard)


# KEYS: the callers' windows. ARGV: now, the flush's member prefix, then per key: window seconds, n. Each of a
# key's n requests enters its window at ``now`` as member ``<prefix><k>:<j>`` (``_flush_members``), added a
# thousand per ZADD. Returns per key {requests in the window, oldest timestamp or ''}.
_FLUSH = """
local now, base = tonumber(ARGV[1]), ARGV[2]
local i = 3
local out = {}
for k = 1, #KEYS do
    local key, window, n = KEYS[k], tonumber(ARGV[i]), tonumber(ARGV[i + 1])
    i = i + 2
    redis.call('ZREMRANGEBYSCORE', key, 0, now - window)
    local j = 1
    while j <= n do
        local add = {}
        for m = j, math.min(n, j + 999) do
            add[#add + 1] = ARGV[1]
            add[#add + 1] = base .. k .. ':' .. m
        end
        redis.call('ZADD', key, unpack(add))
        j = j + 1000
    end
    if n > 0 then
        redis.call('EXPIRE', key, window + 1)
    end
    out[k] = {redis.call('ZCARD', key), redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2] or ''}
end
return out
"""
_flush_script = script(_FLUSH)


async def _flush(state: _Batches, redis: Any, also: dict[str, Limit] | None = None) -> None:
    """Add every pending request to its window, and bring those callers' counts (and those of ``also``) up to
    date: one script call for them all (a pipeline where the server runs no scripts)."""
    state.flush_scheduled = False
    pending, state.pending = state.pending, {}
    limits, state.limits = state.limits, {}
    for key, limit in (also or {}).items():
        limits.setdefault(key, limit)
    if not limits:
        return
    now = time.time()
    keys = list(limits)
    base = f"{_MEMBER_PREFIX}.{next(_flushes)}:"
    args: list[Any] = [f"{now:.6f}", base]
    for key in keys:
        waiting = pending.get(key)
        args += (limits[key].window_seconds, waiting.count if waiting else 0)
    try:
        counts = await run_script(
            redis,
            _flush_script,
            keys,
            args,
            lambda: _flush_pipelined(redis, keys, limits, pending, now, base),
        )
    except Exception as exc:  # batched limits fail open: these requests were let through already
        log.warning("rate_limit_flush_failed", callers=len(keys), error=type(exc).__name__)
        return
    for key, (count, oldest) in zip(keys, counts, strict=True):
        state.known[key] = _Known(
            at=now, count=int(count), oldest=float(oldest) if oldest else None, limit=limits[key]
        )
    if len(state.known) > _PRUNE_ABOVE:
        stale = [k for k, v in state.known.items() if now - v.at > KNOWN_SECONDS and k not in state.pending]
        for k in stale:
            del state.known[k]


async def _flush_pipelined(
    redis: Any,
    keys: list[str],
    limits: dict[str, Limit],
    pending: dict[str, _Pending],
    now: float,
    base: str,
) -> list[tuple[int, str]]:
    async with redis.pipeline(transaction=False) as pipe:
        for k, key in enumerate(keys, start=1):
            limit = limits[key]
            pipe.zremrangebyscore(key, 0, now - limit.window_seconds)
            waiting = pending.get(key)
            if waiting:
                pipe.zadd(key, dict.fromkeys(_flush_members(base, k, waiting.count), now))
                pipe.expire(key, limit.window_seconds + 1)
            pipe.zcard(key)
            pipe.zrange(key, 0, 0, withscores=True)
        replies = iter(await pipe.execute())
    counts = []
    for key in keys:
        next(replies)
        if pending.get(key):
            next(replies), next(replies)
        count, oldest = next(replies), next(replies)
        counts.append((int(count), str(oldest[0][1]) if oldest else ""))
    return counts


async def settle() -> None:
    """Tests: finish this loop's flushes, then hear again from Redis about every caller this process knows, as
    the next flush would."""
    state = _batches.get(asyncio.get_running_loop())
    if state is None:
        return
    while state.flushes:
        await asyncio.gather(*list(state.flushes), return_exceptions=True)
    if state.known or state.pending:
        await _flush(state, state.redis, {key: known.limit for key, known in state.known.items()})


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limit(
    limit: Limit, *, by: Callable[[Request], str] = client_ip
) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency enforcing ``limit`` per caller identity (IP by default)."""

    async def dependency(request: Request) -> None:
        retry_after = await check(limit, by(request))
        if retry_after is not None:
            raise TooManyRequests(
                f"操作太频繁了，请 {retry_after} 秒后再试",
                detail={"limit": limit.limit, "window_seconds": limit.window_seconds},
                headers={"Retry-After": str(retry_after)},
            )

    return dependency


async def check(limit: Limit, identity: str) -> int | None:
    """Count one request: None when allowed, else seconds to wait. Redis away: None for a fail-open limit,
    503 for the others."""
    try:
        if limit.batched:
            return await hit_batched(app_redis.get_redis(), limit, identity)
        return await hit(app_redis.get_redis(), limit, identity)
    except Exception as exc:
        if limit.fail_open:
            log.warning("rate_limit_unavailable_fail_open", limit=limit.name, error=type(exc).__name__)
            return None
        log.warning("rate_limit_unavailable_fail_closed", limit=limit.name, error=type(exc).__name__)
        raise ServiceUnavailable(
            "系统繁忙，请稍后再试", code="RateLimiterUnavailable", headers={"Retry-After": "5"}
        ) from exc


# The limits in one place (per IP unless noted).
LOGIN = Limit("login", limit=60, window_seconds=60, fail_open=True)
DONATION_CREATE = Limit("donation_create", limit=30, window_seconds=60, fail_open=False)
REFUND_REQUEST = Limit("refund_request", limit=10, window_seconds=3600, fail_open=False)
PUBLIC_READ = Limit("public_read", limit=300, window_seconds=60, fail_open=True, batched=True)
QR_SCAN = Limit("qr_scan", limit=60, window_seconds=60, fail_open=True)
