"""Redis clients. ``REDIS_URL`` unset → fakeredis in-process (one shared fake server for the async and
sync clients, so wechatpy's token storage and our code see the same keys)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError
from redis.retry import Retry

from app.config import Settings, get_settings

log = structlog.get_logger("app.redis")
_lock = threading.RLock()
_fake_server: Any = None
_sync_client: redis.Redis | None = None


def _fake() -> Any:
    global _fake_server
    import fakeredis

    with _lock:
        if _fake_server is None:
            _fake_server = fakeredis.FakeServer()
        return _fake_server


def create_async_redis(settings: Settings | None = None) -> aioredis.Redis:
    settings = settings or get_settings()
    if settings.REDIS_URL:
        # No retries with backoff: when Redis is down, callers fall back (caches, read limits) or refuse
        # (money-write limits) at once instead of stalling every request.
        return aioredis.Redis.from_url(
            settings.REDIS_URL,
            decode_responses=True,
            socket_timeout=2,
            socket_connect_timeout=0.5,
            retry=AsyncRetry(NoBackoff(), 0),
        )
    import fakeredis

    return fakeredis.FakeAsyncRedis(server=_fake(), decode_responses=True)


def script(source: str) -> AsyncScript:
    """A Lua script for ``run_script``, its client given at each call."""
    return AsyncScript(None, source.encode())  # type: ignore[arg-type]  # client given per call


no_scripting: set[int] = set()  # clients (by id) whose server refused EVAL


async def run_script(
    client: Any, lua: AsyncScript, keys: list[str], args: list[Any], steps: Callable[[], Awaitable[Any]]
) -> Any:
    """``lua`` on ``client`` (EVALSHA, or EVAL the first time the server sees it), or the same ``steps`` as a
    pipeline where the server runs no scripts (the in-process stand-in). Connection errors propagate."""
    if id(client) not in no_scripting:
        try:
            return await lua(keys=keys, args=args, client=client)
        except ResponseError as exc:
            log.info("redis_without_scripting", error=str(exc)[:80])
            no_scripting.add(id(client))
    return await steps()


def get_sync_redis(settings: Settings | None = None) -> redis.Redis:
    """Sync client for sync libraries (wechatpy's token storage, Dramatiq's scheduler locks)."""
    global _sync_client
    settings = settings or get_settings()
    with _lock:
        if _sync_client is None:
            if settings.REDIS_URL:
                _sync_client = redis.Redis.from_url(
                    settings.REDIS_URL,
                    socket_timeout=2,
                    socket_connect_timeout=0.5,
                    retry=Retry(NoBackoff(), 0),
                )
            else:
                import fakeredis

                _sync_client = fakeredis.FakeRedis(server=_fake_server or _fake())
        return _sync_client


_async_clients: dict[int, aioredis.Redis] = {}


def get_redis() -> aioredis.Redis:
    """The async client for the running event loop (redis.asyncio connections are loop-bound)."""
    key = id(asyncio.get_running_loop())
    client = _async_clients.get(key)  # a dict read needs no lock; only making a client does
    if client is None:
        with _lock:
            client = _async_clients.get(key)
            if client is None:
                client = _async_clients[key] = create_async_redis()
    return client


async def close_redis() -> None:
    key = id(asyncio.get_running_loop())
    with _lock:
        client = _async_clients.pop(key, None)
    if client is not None:
        await client.aclose()


def reset_redis_clients() -> None:
    """For tests that switch settings."""
    global _sync_client, _fake_server
    with _lock:
        _async_clients.clear()
        _sync_client = None
        _fake_server = None
