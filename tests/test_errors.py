"""The error contract: {"error", "message" (中文), "detail"}; request ids on every response and log line."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from app.auth.auth import SessionDep


def _has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


async def test_unknown_route_is_404_in_our_shape(client: httpx.AsyncClient) -> None:
    res = await client.get("/api/v1/nothing-here")
    assert res.status_code == 404
    body = res.json()
    assert set(body) == {"error", "message", "detail"}
    assert body["error"] == "NotFound" and _has_chinese(body["message"])


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    res = await client.delete("/api/v1/me")
    assert res.status_code == 405
    assert res.json()["error"] == "MethodNotAllowed"


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"{not json", None),
        (b"{}", "code"),
        (b'{"code": ""}', "code"),
        (b'{"code": 12}', "code"),
        ('{"code": "' + "x" * 500 + '"}', "code"),
    ],
)
async def test_malformed_payload_is_422_in_chinese(
    client: httpx.AsyncClient, content: bytes | str, field: str | None
) -> None:
    res = await client.post(
        "/api/v1/auth/wechat/login", content=content, headers={"Content-Type": "application/json"}
    )
    assert res.status_code == 422
    body = res.json()
    assert body["error"] == "ValidationError"
    assert _has_chinese(body["message"])
    assert isinstance(body["detail"], list) and body["detail"]
    if field:
        assert body["detail"][0]["field"] == field


async def test_request_id_is_generated_echoed_and_logged(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    res = await client.get("/healthz")
    generated = res.headers["x-request-id"]
    assert len(generated) == 32

    capsys.readouterr()
    access = logging.getLogger("app.access")  # tests run at WARNING; the access line is INFO
    access.setLevel(logging.INFO)
    try:
        res = await client.get("/api/v1/me", headers={"X-Request-ID": "mini-program-req-0001"})
    finally:
        access.setLevel(logging.NOTSET)
    assert res.headers["x-request-id"] == "mini-program-req-0001"
    written = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    lines = [
        line for line in written if line.get("event") == "request" and line.get("logger") == "app.access"
    ]
    assert any(
        line.get("request_id") == "mini-program-req-0001" and line.get("status") == 401 for line in lines
    )

    # a header that could inject into logs is replaced, not echoed
    res = await client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"})
    assert res.headers["x-request-id"] != "bad id\nwith newline"


async def test_error_responses_carry_request_id(client: httpx.AsyncClient) -> None:
    res = await client.get("/api/v1/me")
    assert res.status_code == 401
    assert res.headers.get("x-request-id")


async def test_nul_character_reaching_postgres_is_a_clean_422(client: httpx.AsyncClient, session) -> None:  # type: ignore[no-untyped-def]
    from app.models.role_grant import Role
    from tests.fixtures.client import login
    from tests.fixtures.factories import create_district, grant, unique

    district = await create_district(session)
    admin = unique("admin")
    await grant(session, admin, Role.federation_admin)
    headers = await login(client, admin)
    res = await client.post(
        "/api/v1/admin/canteens",
        json={
            "code": unique("N")[:10],
            "name": "空字符\u0000食堂",
            "type": "urban_community",
            "district_code": district.code,
            "address": "x",
            "lat": 37.45,
            "lng": 116.3,
        },
        headers=headers,
    )
    assert res.status_code == 422, res.text
    assert res.json()["error"] == "InvalidCharacters"
    assert "字符" in res.json()["message"]
    listed = await client.get("/api/v1/canteens", params={"district": district.code})
    assert listed.status_code == 200 and listed.json()["items"] == []


async def test_a_failed_commit_is_never_reported_as_success() -> None:
    """The session dependency's commit runs before the response is sent: if it fails, the caller is told."""
    from collections.abc import AsyncIterator

    from fastapi import FastAPI
    from sqlalchemy.exc import OperationalError

    from app.db import get_db_session
    from app.errors import install_error_handlers

    probe = FastAPI()
    install_error_handlers(probe)

    @probe.post("/write")
    async def write(session: SessionDep) -> dict[str, bool]:
        return {"saved": True}

    async def failing_commit() -> AsyncIterator[object]:
        yield object()
        raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))

    probe.dependency_overrides[get_db_session] = failing_commit
    transport = httpx.ASGITransport(app=probe, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        res = await c.post("/write")
    assert res.status_code == 503, res.text
    assert res.json()["error"] == "ServiceUnavailable"
