from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditLog, Canteen, Fund, RoleGrant, StaffAccount, User
from tests.console.conftest import PASSWORD, console_login, csrf_of
from tests.fixtures.factories import create_canteen, create_district, create_staff_account, unique


async def _audit(session: AsyncSession, action: str, target_id: str | None = None) -> list[AuditLog]:
    stmt = select(AuditLog).where(AuditLog.action == action)
    if target_id is not None:
        stmt = stmt.where(AuditLog.target_id == target_id)
    return list((await session.execute(stmt.order_by(AuditLog.id))).scalars())


def _canteen_form(code: str, district_code: str, **extra: str) -> dict[str, str]:
    form = {
        "code": code,
        "name": "新湖街道长者食堂",
        "type": "urban_community",
        "district_code": district_code,
        "street": "新湖街道",
        "community": "新湖社区",
        "address": "德城区新湖大街1号",
        "lat": "37.45",
        "lng": "116.30",
        "delivery_fee_fen": "300",
        "delivery_radius_m": "1500",
        "is_active": "y",
    }
    form.update(extra)
    return form


async def _admin(client: httpx.AsyncClient, session: AsyncSession) -> tuple[StaffAccount, str]:
    staff = await create_staff_account(session)
    assert (await console_login(client, staff.username)).status_code == 303
    return staff, await csrf_of(client)  # type: ignore[return-value]


async def test_a_write_without_the_csrf_token_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await _admin(client, session)
    district = await create_district(session)
    code = unique("K")[:12]
    for headers, data in (
        ({}, _canteen_form(code, district.code)),
        ({}, _canteen_form(code, district.code, csrf_token="forged-token")),
        ({"X-CSRF-Token": "forged-token"}, _canteen_form(code, district.code)),
    ):
        res = await client.post("/admin/canteen/create", data=data, headers=headers)
        assert res.status_code == 403
        assert "没有做任何修改" in res.text
    # sqladmin's delete is a DELETE request: the same rule applies.
    res = await client.delete("/admin/role-grant/delete?pks=00000000-0000-0000-0000-000000000000")
    assert res.status_code == 403
    assert (await session.execute(select(Canteen).where(Canteen.code == code))).scalar_one_or_none() is None
    assert await _audit(session, "canteen.create") == []


async def test_every_console_write_lands_in_the_audit_log(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    staff, token = await _admin(client, session)
    actor = f"staff:{staff.username}"
    district = await create_district(session)

    # Canteen: create, then edit.
    code = unique("K")[:12]
    res = await client.post(
        "/admin/canteen/create", data=_canteen_form(code, district.code, csrf_token=token)
    )
    assert res.status_code == 302, res.text
    canteen = (await session.execute(select(Canteen).where(Canteen.code == code))).scalar_one()
    assert canteen.delivery_fee_fen == 300 and canteen.district_code == district.code
    [created] = await _audit(session, "canteen.create", str(canteen.id))
    assert created.actor_label == actor and created.channel == "console"
    assert created.after is not None and created.after["code"] == code
    assert created.after["address"] != "德城区新湖大街1号"  # masked

    res = await client.post(
        f"/admin/canteen/edit/{canteen.id}",
        data=_canteen_form(code, district.code, csrf_token=token, delivery_fee_fen="500"),
    )
    assert res.status_code == 302, res.text
    await session.refresh(canteen)
    assert canteen.delivery_fee_fen == 500
    [updated] = await _audit(session, "canteen.update", str(canteen.id))
    assert updated.actor_label == actor
    assert updated.before == {"delivery_fee_fen": 300} and updated.after == {"delivery_fee_fen": 500}

    # Fund.
    fund_code = unique("F")[:12]
    res = await client.post(
        "/admin/fund/create",
        data={
            "code": fund_code,
            "name": "助餐专项基金",
            "purpose": "meal",
            "description": "",
            "csrf_token": token,
        },
    )
    assert res.status_code == 302, res.text
    fund = (await session.execute(select(Fund).where(Fund.code == fund_code))).scalar_one()
    assert [a.actor_label for a in await _audit(session, "fund.create", str(fund.id))] == [actor]

    # Staff account: the password is hashed and never reaches the audit log.
    new_username = unique("ca")
    res = await client.post(
        "/admin/staff-account/create",
        data={
            "username": new_username,
            "display_name": "李民政",
            "role": "civil_affairs",
            "district_code": district.code,
            "is_active": "y",
            "new_password": "a-long-enough-password",
            "csrf_token": token,
        },
    )
    assert res.status_code == 302, res.text
    other = (
        await session.execute(select(StaffAccount).where(StaffAccount.username == new_username))
    ).scalar_one()
    assert other.password_hash.startswith("$argon2id$")
    [staff_created] = await _audit(session, "staff.create", str(other.id))
    assert staff_created.actor_label == actor
    assert "password" not in str(staff_created.after) and "argon2" not in str(staff_created.after)
    page = await client.get(f"/admin/staff-account/details/{other.id}")
    assert page.status_code == 200 and "argon2" not in page.text

    res = await client.post(
        f"/admin/staff-account/edit/{other.id}",
        data={
            "username": new_username,
            "display_name": "李民政",
            "role": "civil_affairs",
            "district_code": district.code,
            "is_active": "y",
            "new_password": "another-long-password",
            "csrf_token": token,
        },
    )
    assert res.status_code == 302, res.text
    [staff_updated] = await _audit(session, "staff.update", str(other.id))
    assert staff_updated.after is not None and staff_updated.after["password_changed"] is True
    assert "argon2" not in str(staff_updated.after)

    # Role grant, then revoke (sqladmin's delete).
    openid = unique("o")
    res = await client.post(
        "/admin/role-grant/create",
        data={"openid": openid, "role": "operator", "canteen_id": str(canteen.id), "csrf_token": token},
    )
    assert res.status_code == 302, res.text
    user = (await session.execute(select(User).where(User.openid == openid))).scalar_one()
    grant = (await session.execute(select(RoleGrant).where(RoleGrant.user_id == user.id))).scalar_one()
    assert [a.actor_label for a in await _audit(session, "role.grant", str(user.id))] == [actor]
    res = await client.delete(f"/admin/role-grant/delete?pks={grant.id}", headers={"X-CSRF-Token": token})
    assert res.status_code == 200, res.text
    await session.refresh(grant)
    assert grant.revoked_at is not None
    [revoked] = await _audit(session, "role.revoke", str(user.id))
    assert revoked.actor_label == actor

    # All of it is on the audit-log page.
    page = await client.get("/admin/pages/audit-log", params={"actor": staff.username})
    assert page.status_code == 200
    for action in (
        "canteen.create",
        "canteen.update",
        "fund.create",
        "staff.create",
        "staff.update",
        "role.grant",
        "role.revoke",
    ):
        assert action in page.text


async def test_a_rejected_write_changes_nothing(client: httpx.AsyncClient, session: AsyncSession) -> None:
    _, token = await _admin(client, session)
    existing = await create_canteen(session)
    district = await create_district(session)
    # Duplicate code: refused with a message, no row, no audit entry.
    res = await client.post(
        "/admin/canteen/create", data=_canteen_form(existing.code, district.code, csrf_token=token)
    )
    assert res.status_code == 400
    assert "冲突" in res.text
    # Unknown district.
    res = await client.post(
        "/admin/canteen/create", data=_canteen_form(unique("K")[:12], "999999", csrf_token=token)
    )
    assert res.status_code == 400
    assert "找不到这个区县" in res.text
    # Malformed numbers never reach the database.
    res = await client.post(
        "/admin/canteen/create",
        data=_canteen_form(unique("K")[:12], district.code, csrf_token=token, lat="abc"),
    )
    assert res.status_code == 400
    assert await _audit(session, "canteen.create") == []
    # A password that is too short.
    res = await client.post(
        "/admin/staff-account/create",
        data={
            "username": unique("u"),
            "display_name": "王",
            "role": "federation_admin",
            "new_password": "short",
            "csrf_token": token,
        },
    )
    assert res.status_code == 400
    assert "至少需要 10 个字符" in res.text
    assert [a for a in await _audit(session, "staff.create") if a.actor_label != "test"] == []


async def test_civil_affairs_sees_only_its_own_district(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    mine = await create_district(session, code="371402", name="德城区")
    theirs = await create_district(session, code="371403", name="陵城区")
    own = await create_canteen(session, district_code=mine.code, name="本区食堂")
    other = await create_canteen(session, district_code=theirs.code, name="外区食堂")
    staff = await create_staff_account(session, role="civil_affairs", district_code=mine.code)
    assert (await console_login(client, staff.username, PASSWORD)).status_code == 303
    token = await csrf_of(client)

    listing = await client.get("/admin/canteen/list")
    assert listing.status_code == 200
    assert own.code in listing.text
    assert other.code not in listing.text
    searched = await client.get("/admin/canteen/list", params={"search": other.code})
    assert "外区食堂" not in searched.text
    assert (await client.get(f"/admin/canteen/details/{own.id}")).status_code == 200
    assert (await client.get(f"/admin/canteen/details/{other.id}")).status_code == 404

    # Read-only: no edits, no staff or role administration, no audit log.
    assert (await client.get(f"/admin/canteen/edit/{own.id}")).status_code == 403
    res = await client.post(
        f"/admin/canteen/edit/{own.id}",
        data=_canteen_form(own.code, mine.code, csrf_token=token, name="改名"),
    )
    assert res.status_code == 403
    await session.refresh(own)
    assert own.name == "本区食堂"
    assert (await client.get("/admin/staff-account/list")).status_code == 403
    assert (await client.get("/admin/role-grant/list")).status_code == 403
    assert (await client.get("/admin/pages/audit-log")).status_code == 403


async def test_audit_log_page_filters_and_pages(client: httpx.AsyncClient, session: AsyncSession) -> None:
    from app.audit import service as audit

    await _admin(client, session)
    marker = unique("act")
    for i in range(55):
        await audit.record(
            session,
            actor_user_id=None,
            actor_label=f"staff:{marker}",
            action="canteen.update",
            target_type="canteen",
            target_id=str(i),
        )
    await audit.record(
        session,
        actor_user_id=None,
        actor_label=f"staff:{marker}",
        action="fund.create",
        target_type="fund",
        target_id="f",
    )

    first = await client.get("/admin/pages/audit-log", params={"actor": marker})
    assert first.status_code == 200
    assert first.text.count(f"staff:{marker}") == 50
    assert 'rel="next"' in first.text
    import re

    next_href = re.search(r'href="\?([^"]+)" rel="next"', first.text)
    assert next_href
    second = await client.get("/admin/pages/audit-log?" + next_href.group(1).replace("&amp;", "&"))
    assert second.text.count(f"staff:{marker}") == 6
    assert 'rel="next"' not in second.text

    only_funds = await client.get("/admin/pages/audit-log", params={"actor": marker, "target_type": "fund"})
    assert only_funds.text.count(f"staff:{marker}") == 1
    by_action = await client.get("/admin/pages/audit-log", params={"actor": marker, "action": "fund."})
    assert by_action.text.count(f"staff:{marker}") == 1
    past = await client.get("/admin/pages/audit-log", params={"actor": marker, "date_to": "2020-01-01"})
    assert past.text.count(f"staff:{marker}") == 0

    for bad in (
        {"date_from": "2026-13-40"},
        {"date_from": "2026-03-05", "date_to": "2026-03-01"},
        {"before": "abc"},
    ):
        res = await client.get("/admin/pages/audit-log", params=bad)
        assert res.status_code == 400
        assert "请" in res.text or "不能" in res.text


async def test_pages_need_a_login(client: httpx.AsyncClient) -> None:
    res = await client.get("/admin/pages/audit-log")
    assert res.status_code == 303
    assert res.headers["location"].startswith("/admin/login")
    assert (await client.get("/admin/canteen/list")).status_code == 302


async def test_subsidy_policies_are_shown_read_only(client: httpx.AsyncClient, session: AsyncSession) -> None:
    """Policy versions are published through the API (validated, versioned); the console only shows them."""
    from datetime import date

    from app.models import SubsidyPolicy, SubsidyTier

    policy = SubsidyPolicy(
        name=unique("政策"),
        city="德州市",
        effective_from=date(2026, 1, 1),
        min_self_pay_fen=100,
        charity_cap_fen=500,
    )
    session.add(policy)
    await session.flush()
    session.add(SubsidyTier(policy_id=policy.id, name="80岁以上", min_age=80, amount_fen=900, categories=[]))
    await session.flush()
    _, token = await _admin(client, session)

    listing = await client.get("/admin/subsidy-policy/list")
    assert listing.status_code == 200 and policy.name in listing.text
    assert (await client.get(f"/admin/subsidy-policy/details/{policy.id}")).status_code == 200
    assert "80岁以上" in (await client.get("/admin/subsidy-tier/list")).text
    for path in ("/admin/subsidy-policy/create", f"/admin/subsidy-policy/edit/{policy.id}"):
        assert (await client.get(path)).status_code in (403, 404)
        res = await client.post(path, data={"name": "改掉", "csrf_token": token})
        assert res.status_code in (403, 404)
    await session.refresh(policy)
    assert policy.min_self_pay_fen == 100
