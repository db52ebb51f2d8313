"""The staff console pages for reconciliation: run a bill, resolve a discrepancy with a note (CSRF-protected,
audited), role-scoped to federation admins."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditLog, ReconciliationDiscrepancy, ReconciliationRun
from tests.console.conftest import console_login, csrf_of
from tests.fixtures.factories import create_district, create_staff_account
from tests.reconciliation.helpers import (
    BILL_DAY,
    Line,
    add_donations,
    bill_bytes,
    create_target,
    out_trade_no,
    txn_id,
)

PAGE = "/admin/pages/reconciliation"


async def _planted(session: AsyncSession) -> bytes:
    target = await create_target(session)
    lines = [Line(out_trade_no(), 100 + i, txn_id()) for i in range(5)]
    await add_donations(
        session,
        target,
        [
            {
                "out_trade_no": li.out_trade_no,
                "amount_fen": li.amount_fen,
                "transaction_id": li.transaction_id,
            }
            for li in lines
        ],
    )
    lines.append(Line(out_trade_no(), 990, txn_id()))  # WeChat has it, we don't
    return bill_bytes(lines, gz=True)


async def test_admin_runs_a_bill_and_resolves_a_discrepancy_with_a_note(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    staff = await create_staff_account(session)
    assert (await console_login(client, staff.username)).status_code == 303  # type: ignore[attr-defined]
    token = await csrf_of(client)
    listing = await client.get(PAGE)
    assert listing.status_code == 200 and "下载微信支付账单并对账" in listing.text

    data = await _planted(session)
    res = await client.post(
        f"{PAGE}/run",
        data={"csrf_token": token, "bill_date": BILL_DAY.isoformat()},
        files={"file": ("bill.csv.gz", data, "application/gzip")},
    )
    assert res.status_code == 303, res.text
    run_url = res.headers["location"]
    page = await client.get(run_url)
    assert page.status_code == 200 and "有差异待处理" in page.text and "微信有、我们没有" in page.text
    [action] = re.findall(r'action="([^"]+/resolve)" class="resolve"', page.text)

    # without the CSRF token: refused, nothing changes
    refused = await client.post(action, data={"action": "note", "note": "已核实"})
    assert refused.status_code == 403
    discrepancy = (await session.execute(select(ReconciliationDiscrepancy))).scalar_one()
    assert discrepancy.status == "open"

    done = await client.post(
        action, data={"csrf_token": token, "action": "note", "note": "捐赠人线下确认，已核实"}
    )
    assert done.status_code == 303 and done.headers["location"] == run_url
    await session.refresh(discrepancy)
    assert (discrepancy.status, discrepancy.resolution) == ("resolved", "note")
    assert discrepancy.resolved_by == f"staff:{staff.username}"  # type: ignore[attr-defined]
    run = (await session.execute(select(ReconciliationRun))).scalar_one()
    await session.refresh(run)
    assert run.day_status == "reconciled"
    audit = (
        await session.execute(select(AuditLog).where(AuditLog.action == "reconciliation.discrepancy.resolve"))
    ).scalar_one()
    assert audit.actor_label == f"staff:{staff.username}" and audit.channel == "console"  # type: ignore[attr-defined]
    assert audit.after is not None and audit.after["note"] == "捐赠人线下确认，已核实"
    runs_audit = (
        await session.execute(select(AuditLog).where(AuditLog.action == "reconciliation.run"))
    ).scalar_one()
    assert runs_audit.actor_label == f"staff:{staff.username}"  # type: ignore[attr-defined]
    resolved_page = await client.get(run_url, params={"status": "resolved"})
    assert "捐赠人线下确认，已核实" in resolved_page.text
    again = await client.post(action, data={"csrf_token": token, "action": "note", "note": "再处理一次"})
    assert again.status_code == 409


async def test_bad_console_input_is_refused(client: httpx.AsyncClient, session: AsyncSession) -> None:
    staff = await create_staff_account(session)
    await console_login(client, staff.username)  # type: ignore[attr-defined]
    token = await csrf_of(client)
    for data in (
        {"csrf_token": token},
        {"csrf_token": token, "bill_date": "3月5日"},
        {"csrf_token": token, "bill_date": "2999-01-01"},
    ):
        res = await client.post(f"{PAGE}/run", data=data)
        assert res.status_code == 400
    bad = await client.post(
        f"{PAGE}/run",
        data={"csrf_token": token},
        files={"file": ("bill.csv", b"not,a,bill\r\n", "text/csv")},
    )
    assert bad.status_code == 400 and "表头" in bad.text
    assert (await client.get(f"{PAGE}/runs/not-a-uuid")).status_code == 404
    assert (await session.execute(select(ReconciliationRun))).scalars().all() == []


async def test_civil_affairs_staff_cannot_open_reconciliation(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    district = await create_district(session)
    staff = await create_staff_account(session, role="civil_affairs", district_code=district.code)
    await console_login(client, staff.username)  # type: ignore[attr-defined]
    token = await csrf_of(client)
    assert (await client.get(PAGE)).status_code == 403
    res = await client.post(f"{PAGE}/run", data={"csrf_token": token, "bill_date": BILL_DAY.isoformat()})
    assert res.status_code == 403
    assert (await session.execute(select(ReconciliationRun))).scalars().all() == []
