"""Feed reads answered from this process's copy before FastAPI routes them (app/feed/front.py): only requests
the endpoint already answered from that copy, still rate-limited, logged and given a request id."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import app.redis as app_redis
from app.feed import front
from app.feed import service as feed_module
from app.kit import ratelimit


@pytest.fixture
def copies() -> Iterator[None]:
    """This process keeps its one-second copies, as in production."""
    feed_module.local_cache.clear()
    front.forget()
    feed_module.local_cache._seconds = 1.0
    yield
    feed_module.local_cache._seconds = None
    feed_module.local_cache.clear()
    front.forget()


@pytest.fixture
def endpoint_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time the feed endpoints run (the front answered the others)."""
    calls: list[str] = []
    page_json, stats_json = feed_module.feed_service.page_json, feed_module.feed_service.stats_json

    async def counted_page(*args: Any, **kwargs: Any) -> str:
        calls.append("page")
        return await page_json(*args, **kwargs)

    async def counted_stats(*args: Any, **kwargs: Any) -> str:
        calls.append("stats")
        return await stats_json(*args, **kwargs)

    monkeypatch.setattr(feed_module.feed_service, "page_json", counted_page)
    monkeypatch.setattr(feed_module.feed_service, "stats_json", counted_stats)
    return calls


async def _window(client: httpx.AsyncClient) -> int:
    ip = client._transport.client[0]  # type: ignore[attr-defined]
    await ratelimit.settle()
    return int(await app_redis.get_redis().zcard(f"sangyu:rl:{ratelimit.PUBLIC_READ.name}:{ip}"))


@pytest.mark.usefixtures("copies")
async def test_a_repeated_read_skips_the_endpoint_but_nothing_else(
    client: httpx.AsyncClient, endpoint_calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    first = await client.get("/api/v1/feed", params={"limit": 5})
    assert first.status_code == 200 and endpoint_calls == ["page"]
    access = logging.getLogger("app.access")
    access.setLevel(logging.INFO)
    capsys.readouterr()
    try:
        again = await client.get(
            "/api/v1/feed", params={"limit": 5}, headers={"X-Request-ID": "front-probe-0001"}
        )
    finally:
        access.setLevel(logging.NOTSET)
    assert endpoint_calls == ["page"], "answered in front of the endpoint"
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert again.headers["x-request-id"] == "front-probe-0001"
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    logged = [x for x in lines if x.get("event") == "request" and x.get("request_id") == "front-probe-0001"]
    assert len(logged) == 1 and logged[0]["status"] == 200
    assert logged[0]["route"] == next(x for x in lines if x.get("event") == "request")["route"]
    assert await _window(client) == 2, "both reads count against the public-read limit"

    # stats likewise; another query string, and a bad one, go to the endpoint
    await client.get("/api/v1/feed/stats")
    await client.get("/api/v1/feed/stats")
    assert endpoint_calls == ["page", "stats"]
    assert (await client.get("/api/v1/feed", params={"limit": 6})).status_code == 200
    assert (await client.get("/api/v1/feed", params={"limit": 0})).status_code == 422
    assert (await client.get("/api/v1/feed", params={"limit": 0})).status_code == 422
    assert endpoint_calls == ["page", "stats", "page"]


@pytest.mark.usefixtures("copies")
async def test_the_front_refuses_over_the_limit_in_the_usual_shape(
    client: httpx.AsyncClient, endpoint_calls: list[str]
) -> None:
    assert (await client.get("/api/v1/feed")).status_code == 200
    ip = client._transport.client[0]  # type: ignore[attr-defined]
    now = time.time()
    await app_redis.get_redis().zadd(
        f"sangyu:rl:{ratelimit.PUBLIC_READ.name}:{ip}",
        {f"{now - 1:.6f}:{i}": now - 1 for i in range(ratelimit.PUBLIC_READ.limit)},
    )
    await ratelimit.settle()
    res = await client.get("/api/v1/feed")
    assert res.status_code == 429, res.text
    assert res.json()["error"] == "TooManyRequests" and "频繁" in res.json()["message"]
    assert int(res.headers["retry-after"]) >= 1


@pytest.mark.usefixtures("copies")
async def test_an_expired_copy_goes_back_to_the_endpoint(
    client: httpx.AsyncClient, endpoint_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await client.get("/api/v1/feed/stats")).status_code == 200
    clock = time.monotonic() + 1.5
    monkeypatch.setattr(feed_module.time, "monotonic", lambda: clock)
    assert (await client.get("/api/v1/feed/stats")).status_code == 200
    assert endpoint_calls == ["stats", "stats"]


@pytest.mark.usefixtures("copies")
async def test_a_replaced_copy_is_sent_as_it_now_is(
    client: httpx.AsyncClient, endpoint_calls: list[str]
) -> None:
    """The copy's bytes are made with the copy: the front sends them until the copy is replaced, then the new
    one's."""
    first = await client.get("/api/v1/feed/stats")
    assert first.status_code == 200
    key = front._known[("/api/v1/feed/stats", b"")][0]
    assert (await client.get("/api/v1/feed/stats")).content == first.content
    for text in ('{"donors":1,"说明":"第一次更新"}', '{"donors":2,"说明":"第二次更新"}'):
        feed_module.local_cache.put(key, text)
        again = await client.get("/api/v1/feed/stats")
        assert again.content == text.encode()
        assert again.headers["content-length"] == str(len(text.encode()))
    assert endpoint_calls == ["stats"]
