"""Console pages for settlements and fund statements: draft → open → confirm → mark paid with a voucher →
download, all over HTTP with the console session and CSRF; every write audited as the staff member; bad input
refused with nothing changed; civil-affairs accounts kept out."""

from __future__ import annotations

import csv
import io
import re
import uuid

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditLog, JournalEntry, Settlement
from tests.console.conftest import console_login, csrf_of
from tests.fixtures.client import login
from tests.fixtures.factories import (
    create_district,
    create_fund,
    create_paid_donation_lot,
    create_staff_account,
)
from tests.settlements.test_settlements import DAY, DAY2, MONTH, _arrange, _book, _serve

PAGE = "/admin/pages/settlements"
FUNDS = "/admin/pages/fund-statements"


async def _admin(client: httpx.AsyncClient, session: AsyncSession) -> tuple[object, str]:
    staff = await create_staff_account(session)
    assert (await console_login(client, staff.username)).status_code == 303  # type: ignore[attr-defined]
    return staff, await csrf_of(client)


async def _served_month(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> uuid.UUID:
    a = await _arrange(session, monkeypatch)
    w = a["w"]
    fam = await login(client, w.family_openid)
    b1 = await _book(client, w, fam, DAY)
    b2 = await _book(client, w, fam, DAY2, a["items2"])
    await _serve(client, monkeypatch, w, b1, DAY)
    await _serve(client, monkeypatch, w, b2, DAY2)
    return w.canteen.id  # type: ignore[no-any-return]


async def _settlement(session: AsyncSession, canteen_id: uuid.UUID) -> Settlement:
    row = (
        await session.execute(
            select(Settlement)
            .where(Settlement.canteen_id == canteen_id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return row


async def _audits(session: AsyncSession, action: str) -> list[AuditLog]:
    return list((await session.execute(select(AuditLog).where(AuditLog.action == action))).scalars())


async def test_draft_confirm_pay_and_download_through_the_console(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    canteen_id = await _served_month(client, session, monkeypatch)
    staff, token = await _admin(client, session)
    label = f"staff:{staff.username}"  # type: ignore[attr-defined]

    listing = await client.get(PAGE, params={"month": MONTH})
    assert listing.status_code == 200 and f"起草（或刷新）{MONTH} 的结算单" in listing.text

    # no CSRF token: refused, nothing drafted
    assert (await client.post(f"{PAGE}/draft", data={"month": MONTH})).status_code == 403
    assert (await session.execute(select(Settlement))).scalars().all() == []
    # malformed month: 400, nothing drafted
    bad = await client.post(f"{PAGE}/draft", data={"csrf_token": token, "month": "2026-13"})
    assert bad.status_code == 400 and "月份" in bad.text
    assert (await session.execute(select(Settlement))).scalars().all() == []

    drafted = await client.post(f"{PAGE}/draft", data={"csrf_token": token, "month": MONTH})
    assert drafted.status_code == 303 and drafted.headers["location"] == f"{PAGE}?month={MONTH}"
    st = await _settlement(session, canteen_id)
    assert (st.status, st.meals, st.amount_fen) == ("draft", 2, 600)
    [draft_audit] = [a for a in await _audits(session, "settlement.draft") if a.target_id == str(st.id)]
    assert draft_audit.actor_label == label

    listing = await client.get(PAGE, params={"month": MONTH})
    assert f"{PAGE}/{st.id}" in listing.text and "¥6.00" in listing.text and "草稿" in listing.text
    detail = await client.get(f"{PAGE}/{st.id}")
    assert detail.status_code == 200 and detail.text.count("¥3.00") == 2 and 'id="confirm"' in detail.text

    # paying before confirming is the service's conflict, shown as 409, nothing posted
    early = await client.post(f"{PAGE}/{st.id}/mark-paid", data={"csrf_token": token, "voucher_no": "BANK-1"})
    assert early.status_code == 409 and "先确认" in early.text

    assert (await client.post(f"{PAGE}/{st.id}/confirm", data={})).status_code == 403
    assert (await _settlement(session, canteen_id)).status == "draft"
    confirmed = await client.post(f"{PAGE}/{st.id}/confirm", data={"csrf_token": token})
    assert confirmed.status_code == 303
    st = await _settlement(session, canteen_id)
    assert st.status == "confirmed"
    [confirm_audit] = await _audits(session, "settlement.confirm")
    assert confirm_audit.actor_label == label and confirm_audit.target_id == str(st.id)

    for voucher in ("", "ab", "凭证123456", "x" * 65, "BANK 0001"):
        res = await client.post(
            f"{PAGE}/{st.id}/mark-paid", data={"csrf_token": token, "voucher_no": voucher}
        )
        assert res.status_code == 400, voucher
    assert (await _settlement(session, canteen_id)).status == "confirmed"

    paid = await client.post(
        f"{PAGE}/{st.id}/mark-paid", data={"csrf_token": token, "voucher_no": "BANK-0001"}
    )
    assert paid.status_code == 303
    st = await _settlement(session, canteen_id)
    assert (st.status, st.voucher_no) == ("paid", "BANK-0001")
    entries = (
        await session.execute(
            select(JournalEntry).where(JournalEntry.business_key == f"settlement:{st.id}:paid")
        )
    ).scalars()
    assert len(list(entries)) == 1
    [paid_audit] = await _audits(session, "settlement.mark_paid")
    assert paid_audit.actor_label == label
    # a different voucher on a paid statement: conflict, unchanged
    again = await client.post(
        f"{PAGE}/{st.id}/mark-paid", data={"csrf_token": token, "voucher_no": "BANK-0002"}
    )
    assert again.status_code == 409
    assert (await _settlement(session, canteen_id)).voucher_no == "BANK-0001"
    assert "BANK-0001" in (await client.get(f"{PAGE}/{st.id}")).text

    xlsx = await client.get(f"{PAGE}/{st.id}/download.xlsx")
    assert xlsx.status_code == 200 and "spreadsheetml" in xlsx.headers["content-type"]
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    values = [[c for c in row] for row in sheet.iter_rows(values_only=True)]
    assert list(values[-1][:5]) == ["合计", "2 份", None, "6.00", 600]
    assert any("BANK-0001" in [str(v) for v in row] for row in values)
    csv_res = await client.get(f"{PAGE}/{st.id}/download.csv")
    rows = list(csv.reader(io.StringIO(csv_res.content.decode("utf-8-sig"))))
    assert rows[-1][:5] == ["合计", "2 份", "", "6.00", "600"]


async def test_unknown_and_malformed_settlements_are_refused(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, token = await _admin(client, session)
    missing = uuid.uuid4()
    assert (await client.get(f"{PAGE}/{missing}")).status_code == 404
    assert (await client.get(f"{PAGE}/not-a-uuid")).status_code == 404
    assert (await client.get(f"{PAGE}/{missing}/download.xlsx")).status_code == 404
    assert (await client.get(f"{PAGE}/{missing}/download.pdf")).status_code == 404
    assert (await client.post(f"{PAGE}/{missing}/confirm", data={"csrf_token": token})).status_code == 404
    assert (await client.get(PAGE, params={"month": "12/2026"})).status_code == 400
    assert (await client.get(PAGE, params={"month": MONTH, "status": "lost"})).status_code == 400
    assert (await client.get(PAGE, params={"month": MONTH, "cursor": "garbage"})).status_code == 400
    future = await client.post(f"{PAGE}/draft", data={"csrf_token": token, "month": "2999-01"})
    assert future.status_code == 400
    assert (await session.execute(select(Settlement))).scalars().all() == []


async def test_fund_statement_page_and_downloads(client: httpx.AsyncClient, session: AsyncSession) -> None:
    fund = await create_fund(session, name="助老专项基金")
    await create_paid_donation_lot(session, f"fund:{fund.id}", 1234)
    await create_paid_donation_lot(session, f"fund:{fund.id}", 766)
    await _admin(client, session)

    chooser = await client.get(FUNDS)
    assert chooser.status_code == 200 and "助老专项基金" in chooser.text
    page = await client.get(FUNDS, params={"fund_id": str(fund.id)})
    assert page.status_code == 200
    donations = re.search(r'id="donations">([^<]+)<', page.text)
    closing = re.search(r'id="closing"><strong>([^<]+)<', page.text)
    assert donations and donations.group(1) == "¥20.00"
    assert closing and closing.group(1) == "¥20.00"

    xlsx = await client.get(FUNDS, params={"fund_id": str(fund.id), "format": "xlsx"})
    assert xlsx.status_code == 200 and "spreadsheetml" in xlsx.headers["content-type"]
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    by_label = {row[0]: row for row in sheet.iter_rows(values_only=True) if row}
    assert by_label["捐赠收入"][2] == 2000 and by_label["捐赠收入"][3] == 2
    assert by_label["期末余额"][2] == 2000
    csv_res = await client.get(FUNDS, params={"fund_id": str(fund.id), "format": "csv"})
    assert csv_res.status_code == 200 and "期末余额,20.00,2000" in csv_res.content.decode("utf-8-sig")

    assert (await client.get(FUNDS, params={"fund_id": str(uuid.uuid4())})).status_code == 404
    assert (await client.get(FUNDS, params={"fund_id": "x"})).status_code == 404
    assert (await client.get(FUNDS, params={"format": "xlsx"})).status_code == 400
    assert (await client.get(FUNDS, params={"fund_id": str(fund.id), "format": "pdf"})).status_code == 400
    assert (await client.get(FUNDS, params={"fund_id": str(fund.id), "date_from": "昨天"})).status_code == 400
    reversed_period = await client.get(
        FUNDS, params={"fund_id": str(fund.id), "date_from": "2026-03-05", "date_to": "2026-03-01"}
    )
    assert reversed_period.status_code == 400 and "开始日期不能晚于结束日期" in reversed_period.text


async def test_civil_affairs_staff_cannot_open_settlements_or_fund_statements(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    district = await create_district(session)
    staff = await create_staff_account(session, role="civil_affairs", district_code=district.code)
    await console_login(client, staff.username)  # type: ignore[attr-defined]
    token = await csrf_of(client)
    assert (await client.get(PAGE)).status_code == 403
    assert (await client.get(FUNDS)).status_code == 403
    res = await client.post(f"{PAGE}/draft", data={"csrf_token": token, "month": MONTH})
    assert res.status_code == 403
    assert (await session.execute(select(Settlement))).scalars().all() == []
    menu = await client.get("/admin/pages/elders")
    assert menu.status_code == 200 and f'href="{PAGE}"' not in menu.text


async def test_signed_out_visitors_are_sent_to_login(client: httpx.AsyncClient) -> None:
    res = await client.get(PAGE)
    assert res.status_code == 303 and res.headers["location"].startswith("/admin/login")
