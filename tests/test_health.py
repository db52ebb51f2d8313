from __future__ import annotations

import httpx


async def test_healthz_says_sandbox_loudly(client: httpx.AsyncClient) -> None:
    res = await client.get("/healthz")
    assert res.status_code == 200
    body = res.json()
    assert body["wechat_mode"] == "sandbox"
    assert "不会有任何真实资金流动" in body["warning"]


async def test_readyz_checks_database_and_redis(client: httpx.AsyncClient) -> None:
    res = await client.get("/readyz")
    assert res.status_code == 200, res.text
    assert res.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_readyz_reports_redis_down(client: httpx.AsyncClient, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app import health

    class Down:
        async def ping(self) -> bool:
            raise ConnectionError("redis is down")

    monkeypatch.setattr(health, "get_redis", lambda: Down())
    res = await client.get("/readyz")
    assert res.status_code == 503
    assert res.json()["checks"]["redis"] == "ConnectionError"
    assert res.json()["checks"]["database"] == "ok"


async def test_metrics_exposes_request_counters(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    res = await client.get("/metrics")
    assert res.status_code == 200
    assert "sangyu_http_requests_total" in res.text
    assert 'route="/healthz"' in res.text
