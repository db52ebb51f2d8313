from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.console.service import LOGIN_FAILED_MESSAGE
from app.kit.crypto import token_hash
from app.kit.time import utcnow
from app.models import AuditLog, StaffAccount, StaffSession
from tests.console.conftest import PASSWORD, console_login, csrf_of, login_form_token
from tests.fixtures.factories import create_district, create_staff_account


async def _sessions(session: AsyncSession, staff_id: object) -> int:
    return int(
        (await session.execute(select(func.count()).where(StaffSession.staff_id == staff_id))).scalar_one()
    )


async def test_login_success_sets_a_safe_cookie_and_opens_the_console(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    staff = await create_staff_account(session)
    res = await console_login(client, staff.username.upper())  # usernames are case-insensitive
    assert res.status_code == 303
    assert res.headers["location"] == "/admin/"
    cookie = next(h for h in res.headers.get_list("set-cookie") if h.startswith("sangyu_console="))
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/admin" in cookie
    assert "Secure" not in cookie  # PUBLIC_BASE_URL is http in tests
    token = cookie.split(";")[0].split("=", 1)[1]

    row = (await session.execute(select(StaffSession).where(StaffSession.staff_id == staff.id))).scalar_one()
    assert row.token_hash == token_hash(token)
    assert row.token_hash != token  # only the hash is stored
    assert (await client.get("/admin/")).status_code == 200
    listing = await client.get("/admin/canteen/list")
    assert listing.status_code == 200
    # sqladmin's pages carry the session's CSRF token and the script that submits it with every write.
    token_meta = await csrf_of(client)
    assert f'<meta name="csrf-token" content="{token_meta}">' in listing.text
    assert "/admin/assets/console.js" in listing.text
    assert (await client.get("/admin/assets/console.js")).status_code == 200
    logged = (await session.execute(select(AuditLog).where(AuditLog.action == "staff.login"))).scalar_one()
    assert logged.actor_label == f"staff:{staff.username}"


async def test_cookie_is_secure_when_the_site_is_https(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: object
) -> None:
    staff = await create_staff_account(session)
    token = await login_form_token(client)  # fetched over http; the browser would be on https throughout
    monkeypatch.setattr(get_settings(), "PUBLIC_BASE_URL", "https://sangyu.example.org")  # type: ignore[attr-defined]
    res = await client.post(
        "/admin/login", data={"username": staff.username, "password": PASSWORD, "csrf_token": token}
    )
    assert res.status_code == 303
    cookie = next(h for h in res.headers.get_list("set-cookie") if h.startswith("sangyu_console="))
    assert "Secure" in cookie


async def test_wrong_password_and_unknown_user_get_the_same_answer(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    staff = await create_staff_account(session)
    wrong = await console_login(client, staff.username, "not-the-password")
    unknown = await console_login(client, "nobody-here", "not-the-password")
    for res in (wrong, unknown):
        assert res.status_code == 401
        assert LOGIN_FAILED_MESSAGE in res.text
        assert "sangyu_console=" not in res.headers.get("set-cookie", "")
    await session.refresh(staff)
    assert staff.failed_login_count == 1  # kept although the answer was 401
    assert await _sessions(session, staff.id) == 0
    assert (await client.get("/admin/")).status_code == 302


async def test_lockout_after_five_failures_even_with_the_right_password(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    staff = await create_staff_account(session)
    for _ in range(4):
        assert (await console_login(client, staff.username, "wrong-password")).status_code == 401
    await session.refresh(staff)
    assert staff.failed_login_count == 4 and staff.locked_until is None
    assert (await console_login(client, staff.username, "wrong-password")).status_code == 401
    await session.refresh(staff)
    assert staff.locked_until is not None
    assert timedelta(minutes=14) < staff.locked_until - utcnow() <= timedelta(minutes=15)

    locked = await console_login(client, staff.username, PASSWORD)
    assert locked.status_code == 401
    assert LOGIN_FAILED_MESSAGE in locked.text  # the same words: no hint the account exists
    assert await _sessions(session, staff.id) == 0
    assert (
        await session.execute(
            select(AuditLog).where(AuditLog.action == "staff.lock", AuditLog.target_id == str(staff.id))
        )
    ).scalar_one()

    # 15 minutes later the right password works again.
    await session.execute(
        update(StaffAccount)
        .where(StaffAccount.id == staff.id)
        .values(locked_until=utcnow() - timedelta(seconds=1))
    )
    await session.flush()
    assert (await console_login(client, staff.username, PASSWORD)).status_code == 303
    await session.refresh(staff)
    assert staff.failed_login_count == 0 and staff.locked_until is None


async def test_inactive_account_cannot_log_in(client: httpx.AsyncClient, session: AsyncSession) -> None:
    staff = await create_staff_account(session)
    staff.is_active = False
    await session.flush()
    res = await console_login(client, staff.username)
    assert res.status_code == 401
    assert LOGIN_FAILED_MESSAGE in res.text


async def test_login_without_the_form_token_is_refused(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    staff = await create_staff_account(session)
    await login_form_token(client)
    res = await client.post("/admin/login", data={"username": staff.username, "password": PASSWORD})
    assert res.status_code == 403
    assert "安全校验码" in res.text
    forged = await client.post(
        "/admin/login", data={"username": staff.username, "password": PASSWORD, "csrf_token": "forged"}
    )
    assert forged.status_code == 403
    assert await _sessions(session, staff.id) == 0


async def test_logout_revokes_the_session(client: httpx.AsyncClient, session: AsyncSession) -> None:
    staff = await create_staff_account(session)
    await console_login(client, staff.username)
    old_cookie = client.cookies.get("sangyu_console")
    token = await csrf_of(client)

    refused = await client.post("/admin/logout")  # no CSRF token: nothing happens
    assert refused.status_code == 403
    assert (await client.get("/admin/")).status_code == 200

    res = await client.post("/admin/logout", data={"csrf_token": token})
    assert res.status_code == 303
    row = (await session.execute(select(StaffSession).where(StaffSession.staff_id == staff.id))).scalar_one()
    await session.refresh(row)
    assert row.revoked_at is not None
    # The old cookie, replayed, no longer opens anything.
    client.cookies.set("sangyu_console", old_cookie or "", path="/admin")
    replay = await client.get("/admin/canteen/list")
    assert replay.status_code == 302
    assert replay.headers["location"].endswith("/admin/login")


async def test_session_expires_after_eight_idle_hours(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    staff = await create_staff_account(session)
    await console_login(client, staff.username)
    assert (await client.get("/admin/")).status_code == 200
    await session.execute(
        update(StaffSession)
        .where(StaffSession.staff_id == staff.id)
        .values(last_seen_at=utcnow() - timedelta(hours=8, minutes=1))
    )
    await session.flush()
    assert (await client.get("/admin/")).status_code == 302


async def test_unknown_or_garbage_cookie_is_not_a_session(client: httpx.AsyncClient) -> None:
    for value in ("nope", "x" * 500):
        client.cookies.set("sangyu_console", value, path="/admin")
        res = await client.get("/admin/canteen/list")
        assert res.status_code == 302


async def test_login_redirect_target_must_stay_in_the_console(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    staff = await create_staff_account(session)
    token = await login_form_token(client)
    res = await client.post(
        "/admin/login",
        data={
            "username": staff.username,
            "password": PASSWORD,
            "csrf_token": token,
            "next": "//evil.example/",
        },
    )
    assert res.status_code == 303
    assert res.headers["location"] == "/admin/"


async def test_civil_affairs_account_needs_a_real_district(session: AsyncSession) -> None:
    import pytest

    from app.exceptions import NotFound, Unprocessable

    with pytest.raises(Unprocessable):
        await create_staff_account(session, role="civil_affairs")
    with pytest.raises(NotFound):
        await create_staff_account(session, role="civil_affairs", district_code="999999")
    district = await create_district(session)
    staff = await create_staff_account(session, role="civil_affairs", district_code=district.code)
    assert staff.district_code == district.code
