"""Console elder verification queue: civil affairs sees and decides only its own district (full PII), a
federation admin sees every district masked and cannot decide (as the API), another district's elder is 404,
every decision is audited as the staff member and needs the CSRF token."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditLog, Elder
from tests.console.conftest import console_login, csrf_of
from tests.fixtures.factories import create_district, create_elder, create_staff_account

PAGE = "/admin/pages/elders"


async def _elder(session: AsyncSession, elder_id: uuid.UUID) -> Elder:
    return (
        await session.execute(
            select(Elder).where(Elder.id == elder_id).execution_options(populate_existing=True)
        )
    ).scalar_one()


async def _world(session: AsyncSession) -> dict[str, object]:
    home = await create_district(session, name="德城区")
    other = await create_district(session, name="陵城区")
    mine, my_id_number = await create_elder(
        session, district_code=home.code, verified=False, name="王秀英", categories=["独居"]
    )
    theirs, their_id_number = await create_elder(
        session, district_code=other.code, verified=False, name="李桂兰"
    )
    done, _ = await create_elder(session, district_code=home.code, verified=True, name="赵淑珍")
    return {
        "home": home.code,
        "other": other.code,
        "mine": mine,
        "my_id": my_id_number,
        "theirs": theirs,
        "their_id": their_id_number,
        "done": done,
    }


async def test_civil_affairs_verifies_its_own_district_only(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    w = await _world(session)
    mine, theirs = w["mine"], w["theirs"]
    staff = await create_staff_account(session, role="civil_affairs", district_code=str(w["home"]))
    await console_login(client, staff.username)  # type: ignore[attr-defined]
    token = await csrf_of(client)

    queue = await client.get(PAGE)
    assert queue.status_code == 200
    assert "王秀英" in queue.text and str(w["my_id"]) in queue.text  # own district: in full
    assert "李桂兰" not in queue.text and str(theirs.id) not in queue.text  # type: ignore[attr-defined]
    assert "赵淑珍" not in queue.text  # already verified: not in the queue

    # another district's elder: not found, to read and to decide
    assert (await client.get(f"{PAGE}/{theirs.id}")).status_code == 404  # type: ignore[attr-defined]
    other = await client.post(
        f"{PAGE}/{theirs.id}/verify",  # type: ignore[attr-defined]
        data={"csrf_token": token, "decision": "verified", "categories": ["特困"]},
    )
    assert other.status_code == 404
    assert (await _elder(session, theirs.id)).verification_status == "pending"  # type: ignore[attr-defined]

    detail = await client.get(f"{PAGE}/{mine.id}")  # type: ignore[attr-defined]
    assert detail.status_code == 200 and 'id="verify"' in detail.text and str(w["my_id"]) in detail.text

    # no CSRF token, unknown decision, unknown category, bad date: refused, unchanged
    url = f"{PAGE}/{mine.id}/verify"  # type: ignore[attr-defined]
    assert (await client.post(url, data={"decision": "verified"})).status_code == 403
    for data in (
        {"decision": "approve"},
        {"decision": "verified", "categories": ["富豪"]},
        {"decision": "verified", "valid_until": "明年"},
        {"decision": "rejected", "note": "长" * 201},
    ):
        res = await client.post(url, data={"csrf_token": token, **data})
        assert res.status_code == 400, data
    assert (await _elder(session, mine.id)).verification_status == "pending"  # type: ignore[attr-defined]
    assert (
        await session.execute(select(AuditLog).where(AuditLog.target_type == "elder"))
    ).scalars().all() == []

    done = await client.post(
        url,
        data={
            "csrf_token": token,
            "decision": "verified",
            "categories": ["低保", "独居"],
            "valid_until": "2027-12-31",
            "note": "入户核实",
        },
    )
    assert done.status_code == 303 and done.headers["location"] == PAGE
    elder = await _elder(session, mine.id)  # type: ignore[attr-defined]
    assert elder.verification_status == "verified"
    assert sorted(elder.categories) == ["低保", "独居"]
    assert str(elder.eligibility_valid_until) == "2027-12-31" and elder.verification_note == "入户核实"
    [audit] = (await session.execute(select(AuditLog).where(AuditLog.action == "elder.verified"))).scalars()
    assert audit.actor_label == f"staff:{staff.username}"  # type: ignore[attr-defined]
    assert audit.target_id == str(elder.id)
    assert "王秀英" not in (await client.get(PAGE)).text  # left the queue


async def test_rejection_keeps_categories(client: httpx.AsyncClient, session: AsyncSession) -> None:
    w = await _world(session)
    mine = w["mine"]
    staff = await create_staff_account(session, role="civil_affairs", district_code=str(w["home"]))
    await console_login(client, staff.username)  # type: ignore[attr-defined]
    token = await csrf_of(client)
    res = await client.post(
        f"{PAGE}/{mine.id}/verify",  # type: ignore[attr-defined]
        data={"csrf_token": token, "decision": "rejected", "note": "户籍不符"},
    )
    assert res.status_code == 303
    elder = await _elder(session, mine.id)  # type: ignore[attr-defined]
    assert (elder.verification_status, list(elder.categories)) == ("rejected", ["独居"])
    [audit] = (await session.execute(select(AuditLog).where(AuditLog.action == "elder.rejected"))).scalars()
    assert audit.actor_label == f"staff:{staff.username}"  # type: ignore[attr-defined]


async def test_federation_admin_sees_every_district_masked_and_cannot_decide(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    w = await _world(session)
    mine, theirs = w["mine"], w["theirs"]
    staff = await create_staff_account(session)
    await console_login(client, staff.username)  # type: ignore[attr-defined]
    token = await csrf_of(client)
    queue = await client.get(PAGE)
    assert queue.status_code == 200
    assert str(mine.id) in queue.text and str(theirs.id) in queue.text  # type: ignore[attr-defined]
    for full in ("王秀英", "李桂兰", str(w["my_id"]), str(w["their_id"])):
        assert full not in queue.text
    detail = await client.get(f"{PAGE}/{mine.id}")  # type: ignore[attr-defined]
    assert detail.status_code == 200 and 'id="verify"' not in detail.text
    assert str(w["my_id"]) not in detail.text and "13800001234" not in detail.text
    res = await client.post(
        f"{PAGE}/{mine.id}/verify",  # type: ignore[attr-defined]
        data={"csrf_token": token, "decision": "verified"},
    )
    assert res.status_code == 404
    assert (await _elder(session, mine.id)).verification_status == "pending"  # type: ignore[attr-defined]


async def test_unknown_elders_are_not_found(client: httpx.AsyncClient, session: AsyncSession) -> None:
    district = await create_district(session)
    staff = await create_staff_account(session, role="civil_affairs", district_code=district.code)
    await console_login(client, staff.username)  # type: ignore[attr-defined]
    token = await csrf_of(client)
    assert (await client.get(f"{PAGE}/{uuid.uuid4()}")).status_code == 404
    assert (await client.get(f"{PAGE}/nope")).status_code == 404
    res = await client.post(f"{PAGE}/nope/verify", data={"csrf_token": token, "decision": "verified"})
    assert res.status_code == 404
