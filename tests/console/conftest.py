from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from app.redis import get_redis

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
async def _clear_ip_limit() -> AsyncIterator[None]:
    """The per-IP login slowdown lives in (fake) Redis and would carry over between tests."""
    await get_redis().delete("console:login-failures:127.0.0.1")
    yield
    await get_redis().delete("console:login-failures:127.0.0.1")


async def login_form_token(client: httpx.AsyncClient) -> str:
    res = await client.get("/admin/login")
    assert res.status_code == 200, res.text
    match = re.search(r'name="csrf_token" value="([^"]+)"', res.text)
    assert match, res.text
    return match.group(1)


async def console_login(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> httpx.Response:
    token = await login_form_token(client)
    return await client.post(
        "/admin/login", data={"username": username, "password": password, "csrf_token": token}
    )


async def csrf_of(client: httpx.AsyncClient) -> str:
    res = await client.get("/admin/logout")
    assert res.status_code == 200, res.text
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', res.text)
    assert match, res.text
    return match.group(1)
