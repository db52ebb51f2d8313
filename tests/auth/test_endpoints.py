from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditLog, AuthSession, RoleGrant, User
from app.models.role_grant import Role
from tests.fixtures.client import login
from tests.fixtures.factories import create_canteen, create_district, grant, unique


async def test_login_creates_user_and_returns_token(client: httpx.AsyncClient, session: AsyncSession) -> None:
    openid = unique("o")
    res = await client.post("/api/v1/auth/wechat/login", json={"code": f"sbx:{openid}"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["access_token"] and body["user"]["roles"] == []
    assert "session_key" not in res.text
    user = (await session.execute(select(User).where(User.openid == openid))).scalar_one()
    assert str(user.id) == body["user"]["id"]
    # only the hash of the token is stored
    stored = (
        await session.execute(select(AuthSession.token_hash).where(AuthSession.user_id == user.id))
    ).scalar_one()
    assert stored != body["access_token"] and len(stored) == 64

    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["openid"] == openid


async def test_returning_user_keeps_id_and_roles(client: httpx.AsyncClient, session: AsyncSession) -> None:
    openid = unique("o")
    first = (await client.post("/api/v1/auth/wechat/login", json={"code": f"sbx:{openid}"})).json()
    await grant(session, openid, Role.family)
    second = (await client.post("/api/v1/auth/wechat/login", json={"code": f"sbx:{openid}"})).json()
    assert second["user"]["id"] == first["user"]["id"]
    assert second["user"]["roles"] == ["family"]
    assert second["access_token"] != first["access_token"]
    count = await session.scalar(select(func.count()).select_from(User).where(User.openid == openid))
    assert count == 1


@pytest.mark.parametrize("code", ["not-a-sandbox-code", "sbx:", "sbx:bad openid!"])
async def test_bad_code_is_401_with_chinese_message(client: httpx.AsyncClient, code: str) -> None:
    res = await client.post("/api/v1/auth/wechat/login", json={"code": code})
    assert res.status_code == 401
    body = res.json()
    assert body["error"] == "InvalidWeChatCode"
    assert "重新打开小程序" in body["message"]


async def test_simulator_down_is_503_not_500(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.wechat import miniprogram
    from tests.fixtures.environment import free_port

    dead = miniprogram.get_miniprogram()
    monkeypatch.setattr(dead.client, "API_BASE_URL", f"http://127.0.0.1:{free_port()}/sandbox/wechat/")
    monkeypatch.setattr(dead.client.wxa, "API_BASE_URL", dead.client.API_BASE_URL)
    dead.client.session.delete(dead.client.access_token_key)
    res = await client.post("/api/v1/auth/wechat/login", json={"code": f"sbx:{unique()}"})
    assert res.status_code == 503
    assert res.json()["error"] == "WeChatUnavailable"
    assert "微信" in res.json()["message"]


async def test_phone_binding_is_encrypted_and_masked(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    openid = unique("o")
    headers = await login(client, openid)
    res = await client.post("/api/v1/auth/wechat/phone", json={"code": "sbx:13812345678"}, headers=headers)
    assert res.status_code == 200, res.text
    assert res.json() == {"phone_masked": "138****5678"}
    user = (await session.execute(select(User).where(User.openid == openid))).scalar_one()
    assert user.phone_enc is not None and b"13812345678" not in user.phone_enc
    me = (await client.get("/api/v1/me", headers=headers)).json()
    assert me["phone_masked"] == "138****5678"
    assert "13812345678" not in str(me)

    bad = await client.post("/api/v1/auth/wechat/phone", json={"code": "sbx:123"}, headers=headers)
    assert bad.status_code == 422
    assert bad.json()["error"] == "InvalidPhoneCode"


async def test_me_requires_token(client: httpx.AsyncClient) -> None:
    res = await client.get("/api/v1/me")
    assert res.status_code == 401
    assert res.json()["error"] == "NotAuthenticated"
    res = await client.get("/api/v1/me", headers={"Authorization": "Bearer not-a-token"})
    assert res.status_code == 401
    assert res.json()["error"] == "InvalidToken"


async def test_logout_revokes_only_that_token(client: httpx.AsyncClient) -> None:
    openid = unique("o")
    a = await login(client, openid)
    b = await login(client, openid)
    assert (await client.post("/api/v1/auth/logout", headers=a)).status_code == 204
    assert (await client.get("/api/v1/me", headers=a)).status_code == 401
    assert (await client.get("/api/v1/me", headers=b)).status_code == 200
    assert (await client.post("/api/v1/auth/logout?everywhere=true", headers=b)).status_code == 204
    assert (await client.get("/api/v1/me", headers=b)).status_code == 401


async def test_expired_session_is_rejected(client: httpx.AsyncClient, session: AsyncSession) -> None:
    from datetime import timedelta

    from app.kit.time import utcnow

    openid = unique("o")
    headers = await login(client, openid)
    user = (await session.execute(select(User).where(User.openid == openid))).scalar_one()
    for s in (await session.execute(select(AuthSession).where(AuthSession.user_id == user.id))).scalars():
        s.expires_at = utcnow() - timedelta(seconds=1)
    await session.flush()
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 401


async def test_admin_grants_roles_with_audit(client: httpx.AsyncClient, session: AsyncSession) -> None:
    admin_openid = unique("admin")
    await grant(session, admin_openid, Role.federation_admin)
    admin = await login(client, admin_openid)
    district = await create_district(session)
    canteen = await create_canteen(session, district.code)

    target = unique("op")
    res = await client.post(
        "/api/v1/admin/roles",
        json={"openid": target, "role": "operator", "canteen_id": str(canteen.id)},
        headers=admin,
    )
    assert res.status_code == 201, res.text
    assert res.json()["canteen_id"] == str(canteen.id)
    again = await client.post(
        "/api/v1/admin/roles",
        json={"openid": target, "role": "operator", "canteen_id": str(canteen.id)},
        headers=admin,
    )
    assert again.status_code == 409
    assert again.json()["error"] == "RoleAlreadyGranted"

    res = await client.post(
        "/api/v1/admin/roles",
        json={"openid": target, "role": "civil_affairs", "district": district.code},
        headers=admin,
    )
    assert res.status_code == 201

    audit = (await session.execute(select(AuditLog).where(AuditLog.action == "role.grant"))).scalars().all()
    assert any(a.after and a.after.get("canteen_id") == str(canteen.id) for a in audit)
    mine = [a for a in audit if a.actor_label.startswith("user:")]
    assert mine and all(a.request_id for a in mine)

    user_headers = await login(client, target)
    me = (await client.get("/api/v1/me", headers=user_headers)).json()
    assert sorted(me["roles"]) == ["civil_affairs", "operator"]

    # revoke
    grant_id = res.json()["id"]
    assert (await client.post(f"/api/v1/admin/roles/{grant_id}/revoke", headers=admin)).status_code == 204
    me = (await client.get("/api/v1/me", headers=user_headers)).json()
    assert me["roles"] == ["operator"]


@pytest.mark.parametrize(
    ("payload", "status", "error"),
    [
        ({"role": "operator"}, 422, "ValidationError"),
        ({"role": "civil_affairs"}, 422, "ValidationError"),
        ({"role": "operator", "canteen_id": "00000000-0000-0000-0000-000000000000"}, 404, "CanteenNotFound"),
        ({"role": "civil_affairs", "district": "999999"}, 404, "DistrictNotFound"),
        ({"role": "family", "district": "371402"}, 422, "ValidationError"),
        ({"role": "emperor"}, 422, "ValidationError"),
    ],
)
async def test_grant_role_rejects_bad_input(
    client: httpx.AsyncClient, session: AsyncSession, payload: dict[str, str], status: int, error: str
) -> None:
    admin_openid = unique("admin")
    await grant(session, admin_openid, Role.federation_admin)
    admin = await login(client, admin_openid)
    before = await session.scalar(select(func.count()).select_from(RoleGrant))
    res = await client.post("/api/v1/admin/roles", json={"openid": unique("x"), **payload}, headers=admin)
    assert res.status_code == status, res.text
    body = res.json()
    assert body["error"] == error
    assert body["message"] and any("\u4e00" <= ch <= "\u9fff" for ch in body["message"])
    assert await session.scalar(select(func.count()).select_from(RoleGrant)) == before


async def test_only_admin_can_grant(client: httpx.AsyncClient, session: AsyncSession) -> None:
    district = await create_district(session)
    canteen = await create_canteen(session, district.code)
    callers = {
        "anonymous": None,
        "plain": unique("u"),
        "elder": unique("e"),
        "family": unique("f"),
        "operator": unique("op"),
        "civil": unique("ca"),
    }
    await grant(session, callers["elder"], Role.elder)  # type: ignore[arg-type]
    await grant(session, callers["family"], Role.family)  # type: ignore[arg-type]
    await grant(session, callers["operator"], Role.operator, canteen_id=canteen.id)  # type: ignore[arg-type]
    await grant(session, callers["civil"], Role.civil_affairs, district=district.code)  # type: ignore[arg-type]
    for name, openid in callers.items():
        headers = await login(client, openid) if openid else {}
        res = await client.post(
            "/api/v1/admin/roles", json={"openid": unique(), "role": "family"}, headers=headers
        )
        expected = 401 if name == "anonymous" else 403
        assert res.status_code == expected, (name, res.text)
        assert res.json()["error"] in {"NotAuthenticated", "RoleRequired"}
