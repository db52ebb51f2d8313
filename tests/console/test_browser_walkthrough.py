"""The console in a real browser: Playwright driving the system Chromium (never a downloaded one) against a real
server thread. A federation admin signs in at /admin, uploads a day's WeChat Pay bill with a planted
discrepancy (WeChat has a payment we don't), sees it on the run page, resolves it with a note, and the day
turns "reconciled". Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from app.db import unit_of_work
from app.models import AuditLog, ReconciliationDiscrepancy
from tests.console.conftest import PASSWORD
from tests.fixtures.browser import ARTIFACTS, chromium_page, requires_browser
from tests.fixtures.factories import create_staff_account
from tests.reconciliation.helpers import (
    BILL_DAY,
    Line,
    add_donations,
    bill_bytes,
    create_target,
    out_trade_no,
    txn_id,
)

pytestmark = requires_browser


@pytest.fixture
def server(live_server: str) -> str:
    return live_server


@pytest.fixture
async def tab(server: str) -> AsyncIterator[Any]:
    async with chromium_page(width=1280, height=900) as page:
        yield page


async def _arrange() -> tuple[str, str, bytes]:
    """A staff account and a bill: five payments we recorded, plus one WeChat has and we don't."""
    async with unit_of_work() as session:
        staff = await create_staff_account(session, display_name="总会会计")
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
        dropped = Line(out_trade_no(), 990, txn_id())
        lines.append(dropped)
        return staff.username, dropped.out_trade_no, bill_bytes(lines, gz=True)  # type: ignore[attr-defined]


async def test_accountant_resolves_a_planted_discrepancy_in_the_browser(server: str, tab: Any) -> None:
    username, dropped, bill = await _arrange()

    await tab.goto(f"{server}/admin/pages/reconciliation")
    assert "/admin/login" in tab.url  # signed out: sent to the login page
    await tab.fill("input[name=username]", username)
    await tab.fill("input[name=password]", PASSWORD)
    await tab.screenshot(path=str(ARTIFACTS / "console-01-login.png"), full_page=True)
    await tab.click("button:has-text('登录')")
    await tab.wait_for_load_state()
    await tab.goto(f"{server}/admin/pages/reconciliation")
    assert await tab.locator("h1").inner_text() == "对账"

    upload = tab.locator("form[enctype='multipart/form-data']")
    await upload.locator("input[name=bill_date]").fill(BILL_DAY.isoformat())
    await upload.locator("input[name=file]").set_input_files(
        {"name": "bill.csv.gz", "mimeType": "application/gzip", "buffer": bill}
    )
    await tab.screenshot(path=str(ARTIFACTS / "console-02-reconciliation.png"), full_page=True)
    await upload.locator("button[type=submit]").click()
    await tab.wait_for_load_state()
    assert "/runs/" in tab.url, (tab.url, await tab.locator("main").inner_text())
    assert "有差异待处理" in await tab.locator("h1").inner_text()
    row = tab.locator(f"tr[data-ref*='{dropped}'], tr:has-text('{dropped}')").first
    assert "微信有、我们没有" in await row.inner_text()
    await tab.screenshot(path=str(ARTIFACTS / "console-03-discrepancy.png"), full_page=True)

    await row.locator("form.resolve input[name=note]").fill("捐赠人线下确认，已核实")
    await row.locator("form.resolve button").click()
    await tab.wait_for_load_state()
    assert "已对平" in await tab.locator("h1").inner_text()
    assert "没有待处理的差异" in await tab.content()
    await tab.goto(tab.url.split("?")[0] + "?status=resolved")
    assert "捐赠人线下确认，已核实" in await tab.content()
    await tab.screenshot(path=str(ARTIFACTS / "console-04-resolved.png"), full_page=True)

    async with unit_of_work() as session:
        [d] = (await session.execute(select(ReconciliationDiscrepancy))).scalars()
        assert (d.status, d.resolution, d.resolution_note) == ("resolved", "note", "捐赠人线下确认，已核实")
        assert d.out_trade_no == dropped
        actions = {
            a.action
            for a in (
                await session.execute(select(AuditLog).where(AuditLog.actor_label == f"staff:{username}"))
            ).scalars()
        }
        assert {"reconciliation.run", "reconciliation.discrepancy.resolve"} <= actions
