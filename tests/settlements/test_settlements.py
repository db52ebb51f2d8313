"""Monthly charity settlement per canteen: statement = served meals × charity portion, to the fen;
draft → confirmed → paid (one ledger entry), supplementary statements, downloads, and who may do what."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import date, time, timedelta
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import unit_of_work
from app.kit.time import business_date, shanghai_datetime
from app.ledger.service import ledger_service
from app.models import AuditLog, FeedEvent, JournalEntry, Settlement, SettlementLine
from app.models.role_grant import Role
from app.settlements import service as settlement_module
from app.settlements import tasks as settlement_tasks
from app.worker import SCHEDULE, drain_async
from tests.bookings.helpers import arrange, body, key, set_now
from tests.fixtures.client import login
from tests.fixtures.factories import create_district, create_menu, grant, unique
from tests.settlements.helpers import drain_general_pool, paid_donation


def _first_of_next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


# Three meal days at the start of next month, so they are in one month whatever today is; bookings are made the
# morning before the first, and the settlement clock stands on the first day of the month after.
DAY = _first_of_next_month(business_date())
DAY2, DAY3 = DAY + timedelta(days=1), DAY + timedelta(days=2)
MONTH = f"{DAY:%Y-%m}"
MORNING = shanghai_datetime(DAY - timedelta(days=1), time(10, 0))  # before the 16:00 cutoff for DAY
SETTLED_ON = _first_of_next_month(DAY)


def lunch(day: date) -> Any:
    return shanghai_datetime(day, time(11, 30))


async def _arrange(session: AsyncSession, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    set_now(monkeypatch, MORNING)
    monkeypatch.setattr(settlement_module, "today", lambda: SETTLED_ON)
    w = await arrange(session, categories=["独居"], day=DAY)
    await drain_general_pool(session, w.other_canteen.id)
    donation = await paid_donation(session, w.canteen.id, 1000, donor_openid=unique("donor"))
    _, items2 = await create_menu(session, w.canteen.id, DAY2)
    _, items3 = await create_menu(session, w.canteen.id, DAY3)
    admin_openid = unique("admin")
    await grant(session, admin_openid, Role.federation_admin)
    return {"w": w, "donation": donation, "items2": items2, "items3": items3, "admin": admin_openid}


async def _book(
    client: httpx.AsyncClient, w: Any, headers: dict[str, str], day: date, items: Any = None
) -> Any:
    res = await client.post("/api/v1/bookings", json=body(w, day=day, items=items), headers=headers | key())
    assert res.status_code == 201, res.text
    return res.json()


async def _serve(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, w: Any, booking: Any, day: date
) -> None:
    set_now(monkeypatch, lunch(day))
    op = await login(client, w.operator_openid)
    res = await client.post(
        f"/api/v1/canteens/{w.canteen.id}/serve", json={"code": booking["qr_payload"]}, headers=op
    )
    assert res.status_code == 200, res.text


async def _entries(session: AsyncSession, business_key: str) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(JournalEntry).where(JournalEntry.business_key == business_key)
        )
        or 0
    )


async def test_statement_matches_served_meals_and_walks_the_state_machine(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await _arrange(session, monkeypatch)
    w = a["w"]
    fam = await login(client, w.family_openid)
    b1 = await _book(client, w, fam, DAY)
    b2 = await _book(client, w, fam, DAY2, a["items2"])
    b3 = await _book(client, w, fam, DAY3, a["items3"])
    assert [b["charity_subsidy_fen"] for b in (b1, b2, b3)] == [300, 300, 300]
    assert (await client.post(f"/api/v1/bookings/{b3['id']}/cancel", json={}, headers=fam)).status_code == 200
    await _serve(client, monkeypatch, w, b1, DAY)
    await _serve(client, monkeypatch, w, b2, DAY2)

    admin = await login(client, a["admin"])
    res = await client.post("/api/v1/admin/settlements", json={"month": MONTH}, headers=admin)
    assert res.status_code == 200, res.text
    drafted = [s for s in res.json()["drafted"] if s["canteen_id"] == str(w.canteen.id)]
    assert len(drafted) == 1
    st = drafted[0]
    assert (st["status"], st["seq"], st["meals"], st["amount_fen"]) == ("draft", 1, 2, 600)
    payable = f"payable:canteen:{w.canteen.id}"
    assert (await ledger_service.balances(session, [payable]))[payable].balance_fen == -600

    detail = (await client.get(f"/api/v1/admin/settlements/{st['id']}", headers=admin)).json()
    assert [(ln["service_date"], ln["amount_fen"]) for ln in detail["lines"]] == [
        (DAY.isoformat(), 300),
        (DAY2.isoformat(), 300),
    ]
    assert sum(ln["amount_fen"] for ln in detail["lines"]) == detail["amount_fen"]
    assert all(ln["donation_ids"] == [str(a["donation"].id)] for ln in detail["lines"])

    # re-running refreshes the same draft: no second statement, no duplicated lines
    again = (await client.post("/api/v1/admin/settlements", json={"month": MONTH}, headers=admin)).json()
    assert [s["id"] for s in again["drafted"] if s["canteen_id"] == str(w.canteen.id)] == [st["id"]]
    lines = await session.scalar(
        select(func.count())
        .select_from(SettlementLine)
        .where(SettlementLine.settlement_id == uuid.UUID(st["id"]))
    )
    assert lines == 2

    paid_path = f"/api/v1/admin/settlements/{st['id']}/mark-paid"
    early = await client.post(paid_path, json={"voucher_no": "BANK-0001"}, headers=admin)
    assert early.status_code == 409 and early.json()["error"] == "SettlementNotConfirmed"

    confirm_path = f"/api/v1/admin/settlements/{st['id']}/confirm"
    confirmed = await client.post(confirm_path, headers=admin)
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "confirmed"
    assert (await client.post(confirm_path, headers=admin)).json()["status"] == "confirmed"
    # a confirmed statement is not redrafted
    after_confirm = (
        await client.post("/api/v1/admin/settlements", json={"month": MONTH}, headers=admin)
    ).json()
    assert [s for s in after_confirm["drafted"] if s["canteen_id"] == str(w.canteen.id)] == []

    paid = await client.post(paid_path, json={"voucher_no": "BANK-0001"}, headers=admin)
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "paid" and paid.json()["voucher_no"] == "BANK-0001"
    replay = await client.post(paid_path, json={"voucher_no": "BANK-0001"}, headers=admin)
    assert replay.status_code == 200
    other = await client.post(paid_path, json={"voucher_no": "BANK-0002"}, headers=admin)
    assert other.status_code == 409 and other.json()["error"] == "SettlementAlreadyPaid"
    assert (await client.post(confirm_path, headers=admin)).status_code == 409
    assert await _entries(session, f"settlement:{st['id']}:paid") == 1
    balances = await ledger_service.balances(session, [payable])
    assert balances[payable].balance_fen == 0

    event = (
        await session.execute(
            select(FeedEvent.payload).where(
                FeedEvent.kind == "settlement_paid",
                FeedEvent.payload["canteen_code"].astext == w.canteen.code,
            )
        )
    ).scalar_one()
    assert (event["month"], event["meals"], event["amount_fen"]) == (MONTH, 2, 600)
    actions = (
        await session.execute(
            select(AuditLog.action).where(AuditLog.target_id == st["id"]).order_by(AuditLog.id)
        )
    ).scalars()
    assert set(actions) == {"settlement.draft", "settlement.confirm", "settlement.mark_paid"}
    report = await ledger_service.check(session)
    assert report["ok"], report["problems"]

    listed = (await client.get("/api/v1/admin/settlements", params={"month": MONTH}, headers=admin)).json()
    assert st["id"] in [s["id"] for s in listed["items"]]

    # downloads parse and carry the same numbers
    csv_res = await client.get(f"/api/v1/admin/settlements/{st['id']}.csv", headers=admin)
    assert csv_res.status_code == 200 and csv_res.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(csv_res.content.decode("utf-8-sig"))))
    assert [r[4] for r in rows if r and r[0] in (DAY.isoformat(), DAY2.isoformat())] == ["300", "300"]
    assert rows[-1][0] == "合计" and rows[-1][4] == "600" and rows[-1][3] == "6.00"
    xlsx_res = await client.get(
        f"/api/v1/admin/settlements/{st['id']}", params={"format": "xlsx"}, headers=admin
    )
    assert xlsx_res.status_code == 200
    sheet = load_workbook(io.BytesIO(xlsx_res.content)).active
    assert sheet is not None
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert values[-1][0] == "合计" and values[-1][4] == 600


async def test_meals_served_after_confirmation_go_on_a_supplementary_statement(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await _arrange(session, monkeypatch)
    w = a["w"]
    fam = await login(client, w.family_openid)
    b1 = await _book(client, w, fam, DAY)
    b2 = await _book(client, w, fam, DAY2, a["items2"])
    await _serve(client, monkeypatch, w, b1, DAY)
    admin = await login(client, a["admin"])
    first = (await client.post("/api/v1/admin/settlements", json={"month": MONTH}, headers=admin)).json()
    (st,) = [s for s in first["drafted"] if s["canteen_id"] == str(w.canteen.id)]
    await client.post(f"/api/v1/admin/settlements/{st['id']}/confirm", headers=admin)

    await _serve(client, monkeypatch, w, b2, DAY2)
    second = (await client.post("/api/v1/admin/settlements", json={"month": MONTH}, headers=admin)).json()
    (sup,) = [s for s in second["drafted"] if s["canteen_id"] == str(w.canteen.id)]
    assert sup["id"] != st["id"] and (sup["seq"], sup["meals"], sup["amount_fen"]) == (2, 1, 300)
    original = await session.get(Settlement, uuid.UUID(st["id"]), populate_existing=True)
    assert original is not None and (original.status, original.meals, original.amount_fen) == (
        "confirmed",
        1,
        300,
    )


async def test_bad_requests_and_roles(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await _arrange(session, monkeypatch)
    admin = await login(client, a["admin"])
    not_begun = f"{_first_of_next_month(SETTLED_ON):%Y-%m}"
    future = await client.post("/api/v1/admin/settlements", json={"month": not_begun}, headers=admin)
    assert future.status_code == 400 and future.json()["error"] == "MonthInFuture"
    for bad in ("2026-13", "2026-1", "abc", 202612):
        res = await client.post("/api/v1/admin/settlements", json={"month": bad}, headers=admin)
        assert res.status_code == 422, bad
    extra = await client.post("/api/v1/admin/settlements", json={"month": MONTH, "x": 1}, headers=admin)
    assert extra.status_code == 422
    missing = uuid.uuid4()
    for path in (f"/api/v1/admin/settlements/{missing}", f"/api/v1/admin/settlements/{missing}.csv"):
        res = await client.get(path, headers=admin)
        assert res.status_code == 404 and res.json()["error"] == "SettlementNotFound"
    assert (
        await client.post(f"/api/v1/admin/settlements/{missing}/confirm", headers=admin)
    ).status_code == 404
    short = await client.post(
        f"/api/v1/admin/settlements/{missing}/mark-paid", json={"voucher_no": "x"}, headers=admin
    )
    assert short.status_code == 422
    op = await login(client, a["w"].operator_openid)
    assert (
        await client.post("/api/v1/admin/settlements", json={"month": MONTH}, headers=op)
    ).status_code == 403
    assert (await client.get("/api/v1/admin/settlements", headers=op)).status_code == 403
    assert (await client.get("/api/v1/admin/settlements")).status_code == 401
    bad_cursor = await client.get("/api/v1/admin/settlements", params={"cursor": "!!"}, headers=admin)
    assert bad_cursor.status_code == 400


async def test_subsidy_claims_per_canteen_and_district_scope(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await _arrange(session, monkeypatch)
    w = a["w"]
    fam = await login(client, w.family_openid)
    b1 = await _book(client, w, fam, DAY)
    b2 = await _book(client, w, fam, DAY2, a["items2"])
    await _book(client, w, fam, DAY3, a["items3"])  # booked, never served: not claimed
    await _serve(client, monkeypatch, w, b1, DAY)
    await _serve(client, monkeypatch, w, b2, DAY2)

    admin = await login(client, a["admin"])
    report = (
        await client.get(
            "/api/v1/admin/subsidy-claims", params={"month": MONTH, "district": w.district}, headers=admin
        )
    ).json()
    (row,) = [r for r in report["rows"] if r["canteen_id"] == str(w.canteen.id)]
    assert (row["meals"], row["gov_subsidy_fen"], row["list_price_fen"]) == (2, 1800, 2400)

    civil, other_civil = unique("civ"), unique("civ")
    await grant(session, civil, Role.civil_affairs, district=w.district)
    await grant(session, other_civil, Role.civil_affairs, district=(await create_district(session)).code)
    mine = (
        await client.get(
            "/api/v1/admin/subsidy-claims", params={"month": MONTH}, headers=await login(client, civil)
        )
    ).json()
    assert mine["districts"] == [w.district] and [r["canteen_id"] for r in mine["rows"]] == [
        str(w.canteen.id)
    ]
    others = await login(client, other_civil)
    theirs = (
        await client.get("/api/v1/admin/subsidy-claims", params={"month": MONTH}, headers=others)
    ).json()
    assert str(w.canteen.id) not in [r["canteen_id"] for r in theirs["rows"]]
    forbidden = await client.get(
        "/api/v1/admin/subsidy-claims", params={"month": MONTH, "district": w.district}, headers=others
    )
    assert forbidden.status_code == 403
    op = await login(client, w.operator_openid)
    assert (
        await client.get("/api/v1/admin/subsidy-claims", params={"month": MONTH}, headers=op)
    ).status_code == 403
    assert (
        await client.get("/api/v1/admin/subsidy-claims", params={"month": "12-2026"}, headers=admin)
    ).status_code == 422

    csv_res = await client.get(
        "/api/v1/admin/subsidy-claims",
        params={"month": MONTH, "district": w.district, "format": "csv"},
        headers=admin,
    )
    rows = list(csv.reader(io.StringIO(csv_res.content.decode("utf-8-sig"))))
    assert next(r for r in rows if len(r) > 1 and r[1] == w.canteen.code)[3:6] == ["2", "18.00", "1800"]
    xlsx = await client.get(
        "/api/v1/admin/subsidy-claims",
        params={"month": MONTH, "district": w.district, "format": "xlsx"},
        headers=admin,
    )
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    assert next(r for r in sheet.iter_rows(values_only=True) if len(r) > 1 and r[1] == w.canteen.code)[3] == 2


async def test_concurrent_drafts_and_payments_settle_once(
    committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = committed_client
    async with unit_of_work() as session:
        a = await _arrange(session, monkeypatch)
    w = a["w"]
    fam = await login(client, w.family_openid)
    b1 = await _book(client, w, fam, DAY)
    await _serve(client, monkeypatch, w, b1, DAY)
    admin = await login(client, a["admin"])

    # the monthly job drafts last month's statement (the 1st, Asia/Shanghai) ...
    monkeypatch.setattr(settlement_tasks, "previous_month", lambda: MONTH)
    settlement_tasks.draft_last_month.send()
    await drain_async()
    async with unit_of_work() as session:
        assert (
            await session.scalar(
                select(func.count()).select_from(Settlement).where(Settlement.canteen_id == w.canteen.id)
            )
            == 1
        )
    # ... and admins re-running it at the same time still leave one statement with one line
    drafts = await asyncio.gather(
        *(client.post("/api/v1/admin/settlements", json={"month": MONTH}, headers=admin) for _ in range(4))
    )
    assert all(r.status_code == 200 for r in drafts), [r.text for r in drafts]
    async with unit_of_work() as session:
        rows = (
            (await session.execute(select(Settlement).where(Settlement.canteen_id == w.canteen.id)))
            .scalars()
            .all()
        )
        assert len(rows) == 1 and rows[0].amount_fen == 300
        assert await session.scalar(select(func.count()).select_from(SettlementLine)) == 1
    sid = rows[0].id
    await client.post(f"/api/v1/admin/settlements/{sid}/confirm", headers=admin)
    paid = await asyncio.gather(
        *(
            client.post(
                f"/api/v1/admin/settlements/{sid}/mark-paid",
                json={"voucher_no": f"BANK-{n % 2}"},
                headers=admin,
            )
            for n in range(4)
        )
    )
    codes = sorted(r.status_code for r in paid)
    assert codes.count(200) >= 1 and set(codes) <= {200, 409}
    vouchers = {r.json()["voucher_no"] for r in paid if r.status_code == 200}
    assert len(vouchers) == 1
    async with unit_of_work() as session:
        assert await _entries(session, f"settlement:{sid}:paid") == 1
        report = await ledger_service.check(session)
        assert report["ok"], report["problems"]


def test_previous_month_and_schedule() -> None:
    assert settlement_module.previous_month(date(2027, 1, 15)) == "2026-12"
    assert settlement_module.previous_month(date(2026, 3, 1)) == "2026-02"
    assert settlement_module.month_range("2026-12") == (date(2026, 12, 1), date(2027, 1, 1))
    job = [p for p in SCHEDULE if p.actor_name == "settlements.draft_last_month"]
    assert job and job[0].cron == "30 2 1 * *"


async def test_operator_reads_only_their_own_canteens_statements(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await _arrange(session, monkeypatch)
    w = a["w"]
    fam = await login(client, w.family_openid)
    booking = await _book(client, w, fam, DAY)
    await _serve(client, monkeypatch, w, booking, DAY)
    admin = await login(client, a["admin"])
    drafted = (await client.post("/api/v1/admin/settlements", json={"month": MONTH}, headers=admin)).json()
    st = next(s for s in drafted["drafted"] if s["canteen_id"] == str(w.canteen.id))

    own = await login(client, w.operator_openid)
    listed = await client.get(f"/api/v1/canteens/{w.canteen.id}/settlements", headers=own)
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()["items"]] == [st["id"]]
    detail = await client.get(f"/api/v1/canteens/{w.canteen.id}/settlements/{st['id']}", headers=own)
    assert detail.status_code == 200 and detail.json()["amount_fen"] == st["amount_fen"]

    stranger_openid = unique("op")
    await grant(session, stranger_openid, Role.operator, canteen_id=w.other_canteen.id)
    stranger = await login(client, stranger_openid)
    for path in (
        f"/api/v1/canteens/{w.canteen.id}/settlements",
        f"/api/v1/canteens/{w.canteen.id}/settlements/{st['id']}",
        # the right statement through the wrong canteen is not there either
        f"/api/v1/canteens/{w.other_canteen.id}/settlements/{st['id']}",
    ):
        res = await client.get(path, headers=stranger)
        assert res.status_code == 404, (path, res.text)
        assert res.json()["error"] == "SettlementNotFound"
    assert (await client.get(f"/api/v1/canteens/{w.canteen.id}/settlements")).status_code == 401
