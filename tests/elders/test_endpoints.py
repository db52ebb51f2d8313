from __future__ import annotations

from datetime import date

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.elders.idcard import IdNumberError, make_id_number, parse_id_number
from app.models import AuditLog, Elder, FamilyBinding
from app.models.role_grant import Role
from tests.fixtures.client import login
from tests.fixtures.factories import create_district, create_elder, grant, unique


def _payload(district: str, **kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "registrant": "self",
        "name": "赵淑珍",
        "id_number": make_id_number("371402", date(1943, 6, 1), int(unique("")[:3], 16) % 1000),
        "phone": "13912345678",
        "hukou_district_code": district,
        "address": "德城区新湖街道某小区5号楼2单元301",
        "categories": ["独居"],
        "diet_tags": ["低盐"],
        "allergens": ["花生"],
    }
    base.update(kw)
    return base


def test_id_number_rules() -> None:
    good = make_id_number("371402", date(1944, 3, 15), 123)
    assert parse_id_number(good).birth_date == date(1944, 3, 15)
    for bad, words in [
        ("12345", "18位"),
        ("37140219440315123", "18位"),
        ("99140219440315123X", "地区"),
        ("371402194402301230", "出生日期"),
        (good[:17] + ("0" if good[17] != "0" else "1"), "校验位"),
    ]:
        with pytest.raises(IdNumberError, match=words):
            parse_id_number(bad)


async def test_self_registration_grants_elder_role_and_masks_pii(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    district = (await create_district(session)).code
    openid = unique("el")
    headers = await login(client, openid)
    payload = _payload(district)
    res = await client.post("/api/v1/elders", json=payload, headers=headers)
    assert res.status_code == 201, res.text
    out = res.json()
    assert out["name"] == "赵**" and out["phone"] == "139****5678"
    assert payload["id_number"] not in res.text and "5号楼" not in res.text
    assert out["is_80_plus"] and out["verification_status"] == "pending"
    me = (await client.get("/api/v1/me", headers=headers)).json()
    assert "elder" in me["roles"]
    row = await session.get(Elder, out["id"])
    assert row is not None and str(payload["id_number"]).encode() not in row.id_number_enc
    dup = await client.post(
        "/api/v1/elders",
        json=payload | {"registrant": "family", "consent": True, "relationship": "子女"},
        headers=await login(client, unique("x")),
    )
    assert dup.status_code == 409 and dup.json()["error"] == "ElderExists"


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"id_number": "371402194403151234"}, 422),
        ({"id_number": "1" * 40}, 422),
        ({"name": "王" * 500}, 422),
        ({"phone": "123"}, 422),
        ({"categories": ["不存在"]}, 422),
        ({"registrant": "family"}, 400),
    ],
)
async def test_bad_registration_writes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, change: dict[str, object], status: int
) -> None:
    district = (await create_district(session)).code
    payload = _payload(district) | change
    if change.get("id_number") == "371402194403151234":
        valid = make_id_number("371402", date(1944, 3, 15), 123)
        payload["id_number"] = valid[:17] + ("0" if valid[17] != "0" else "1")
    res = await client.post("/api/v1/elders", json=payload, headers=await login(client, unique("el")))
    assert res.status_code == status, res.text
    assert any("\u4e00" <= ch <= "\u9fff" for ch in res.json()["message"])
    assert await session.scalar(select(func.count()).select_from(Elder)) == 0


async def test_invite_bind_verify_and_roster(client: httpx.AsyncClient, session: AsyncSession) -> None:
    district = (await create_district(session)).code
    elder_h = await login(client, unique("el"))
    payload = _payload(district)
    elder = (await client.post("/api/v1/elders", json=payload, headers=elder_h)).json()
    invite = await client.post(f"/api/v1/elders/{elder['id']}/invites", headers=elder_h)
    assert invite.status_code == 201
    fam_openid = unique("fa")
    fam = await login(client, fam_openid)
    no_consent = await client.post(
        "/api/v1/elders/bind",
        json={"invite_code": invite.json()["invite_code"], "relationship": "子女", "consent": False},
        headers=fam,
    )
    assert no_consent.status_code == 400 and no_consent.json()["error"] == "ConsentRequired"
    bound = await client.post(
        "/api/v1/elders/bind",
        json={"invite_code": invite.json()["invite_code"], "relationship": "子女", "consent": True},
        headers=fam,
    )
    assert bound.status_code == 201, bound.text
    reuse = await client.post(
        "/api/v1/elders/bind",
        json={"invite_code": invite.json()["invite_code"], "relationship": "子女", "consent": True},
        headers=await login(client, unique("z")),
    )
    assert reuse.status_code == 404
    binding = (
        await session.execute(select(FamilyBinding).where(FamilyBinding.elder_id == elder["id"]))
    ).scalar_one()
    assert binding.consent_text and binding.consented_at
    assert (await client.get(f"/api/v1/elders/{elder['id']}", headers=fam)).status_code == 200

    # civil affairs of another district cannot see or verify; of this district sees full PII and verifies
    other_civil = unique("ca")
    await grant(session, other_civil, Role.civil_affairs, district=(await create_district(session)).code)
    oc = await login(client, other_civil)
    assert (await client.get(f"/api/v1/elders/{elder['id']}", headers=oc)).status_code == 404
    assert (
        await client.post(
            f"/api/v1/admin/elders/{elder['id']}/verify", json={"decision": "verified"}, headers=oc
        )
    ).status_code == 404
    civil = unique("ca")
    await grant(session, civil, Role.civil_affairs, district=district)
    ch = await login(client, civil)
    full = await client.get(f"/api/v1/elders/{elder['id']}", headers=ch)
    assert full.json()["id_number"] == payload["id_number"]
    verified = await client.post(
        f"/api/v1/admin/elders/{elder['id']}/verify",
        json={"decision": "verified", "categories": ["独居", "低保"]},
        headers=ch,
    )
    assert verified.status_code == 200 and verified.json()["verification_status"] == "verified"

    csv_text = (
        "id_number,categories,valid_until\n"
        f"{payload['id_number']},特困;独居,2027-12-31\n"
        "371402194403151230,低保,2027-12-31\n"
        f"{payload['id_number']},外星人,2027-12-31\n"
        f"{payload['id_number']},低保,明年\n"
        f"{make_id_number('371402', date(1940, 1, 1), 7)},低保,2027-12-31\n"
    )
    report = await client.post(
        "/api/v1/admin/elders/roster", content=csv_text.encode(), headers=ch | {"Content-Type": "text/csv"}
    )
    assert report.status_code == 200, report.text
    r = report.json()
    assert (r["total"], r["applied"], r["errors"]) == (5, 1, 4)
    assert [row["status"] for row in r["rows"]] == ["applied", "error", "error", "error", "error"]
    assert str(payload["id_number"]) not in report.text
    row = await session.get(Elder, elder["id"])
    await session.refresh(row)
    assert (
        row is not None
        and sorted(row.categories) == sorted(["独居", "特困"])
        and row.eligibility_valid_until == date(2027, 12, 31)
    )
    assert (
        await session.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.target_id == elder["id"])
        )
        >= 2
    )
    logs = (
        (await session.execute(select(AuditLog.after).where(AuditLog.target_id == elder["id"])))
        .scalars()
        .all()
    )
    assert str(payload["id_number"]) not in str(logs)


async def test_roster_import_does_not_reveal_who_is_registered_elsewhere(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    mine, theirs = await create_district(session), await create_district(session)
    _, elsewhere_id = await create_elder(session, district_code=theirs.code)
    civil = unique("civil")
    headers = await login(client, civil)
    await grant(session, civil, Role.civil_affairs, district=mine.code)
    unregistered = make_id_number("371402", date(1941, 2, 3), 5)
    csv_text = (
        f"id_number,categories,valid_until\n{elsewhere_id},低保,2027-12-31\n{unregistered},低保,2027-12-31\n"
    )
    report = await client.post(
        "/api/v1/admin/elders/roster",
        content=csv_text.encode(),
        headers=headers | {"Content-Type": "text/csv"},
    )
    assert report.status_code == 200, report.text
    rows = report.json()["rows"]
    assert [r["status"] for r in rows] == ["error", "error"]
    # registered in another district and not registered at all read the same
    assert rows[0]["message"] == rows[1]["message"]
    elder = await session.scalar(select(Elder).where(Elder.hukou_district_code == theirs.code))
    assert elder is not None and elder.verification_note != "名单导入"  # and nothing changed there
