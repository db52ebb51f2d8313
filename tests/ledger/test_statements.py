"""Fund and canteen-pool statements: opening + donations − refunds − fees − meal subsidies (+ other) = closing,
from postings alone, over Asia/Shanghai business days; JSON, CSV and XLSX."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.time import business_date, utcnow
from app.ledger import service as ledger_module
from app.ledger.service import canteen_pool, ledger_service
from app.models import Fund
from app.models.role_grant import Role
from tests.fixtures.client import login
from tests.fixtures.factories import create_canteen, create_fund, grant, unique
from tests.ledger.helpers import donate


def _adds_up(s: dict[str, int]) -> bool:
    return s["closing_fen"] == (
        s["opening_fen"]
        + s["donations_fen"]
        - s["refunds_fen"]
        - s["fees_fen"]
        - s["meal_subsidies_fen"]
        + s["other_fen"]
    )


async def test_canteen_pool_and_fund_statements(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    canteen = await create_canteen(session)
    fund = await create_fund(session)
    pool = canteen_pool(canteen.id)
    three_days_ago = utcnow() - timedelta(days=3)
    monkeypatch.setattr(ledger_module, "utcnow", lambda: three_days_ago)
    first = await donate(session, pool, 1000)
    await donate(session, f"fund:{fund.id}", 400)
    monkeypatch.undo()

    await donate(session, pool, 500)
    key = unique("line")
    assert (
        await ledger_service.place_hold(session, hold_key=key, canteen_id=canteen.id, amount_fen=300) == 300
    )
    await ledger_service.post_hold(
        session, hold_key=key, service_date=business_date(), meta={"slot": "lunch"}
    )
    await ledger_service.record_donation_refund(
        session,
        donation_id=first,
        refund_id=uuid.uuid4(),
        amount_fen=200,
        source="wechatpay",
        external_ref=unique("rf"),
    )
    admin_openid = unique("admin")
    await grant(session, admin_openid, Role.federation_admin)
    admin = await login(client, admin_openid)
    today = business_date()
    path = f"/api/v1/admin/canteens/{canteen.id}/pool-statement"

    recent = await client.get(
        path, params={"from": (today - timedelta(days=1)).isoformat(), "to": today.isoformat()}, headers=admin
    )
    assert recent.status_code == 200, recent.text
    s = recent.json()
    assert (s["account"], s["kind"], s["owner_code"]) == (pool, "canteen_pool", canteen.code)
    assert (s["opening_fen"], s["donations_fen"], s["refunds_fen"], s["meal_subsidies_fen"]) == (
        1000,
        500,
        200,
        300,
    )
    assert (s["donations_count"], s["refunds_count"], s["meals"], s["fees_fen"], s["other_fen"]) == (
        1,
        1,
        1,
        0,
        0,
    )
    assert s["closing_fen"] == 1000 and _adds_up(s)
    assert s["closing_fen"] == -(await ledger_service.balances(session, [pool]))[pool].balance_fen
    assert s["meal_subsidies_by_canteen"] == [
        {
            "canteen_id": str(canteen.id),
            "canteen_code": canteen.code,
            "canteen_name": canteen.name,
            "meals": 1,
            "amount_fen": 300,
        }
    ]

    whole = (
        await client.get(path, params={"from": (today - timedelta(days=3)).isoformat()}, headers=admin)
    ).json()
    assert (whole["opening_fen"], whole["donations_fen"], whole["closing_fen"]) == (0, 1500, 1000)
    earlier = (
        await client.get(
            path,
            params={
                "from": (today - timedelta(days=10)).isoformat(),
                "to": (today - timedelta(days=5)).isoformat(),
            },
            headers=admin,
        )
    ).json()
    assert (earlier["opening_fen"], earlier["donations_fen"], earlier["closing_fen"]) == (0, 0, 0)
    before_today = (
        await client.get(
            path,
            params={
                "from": (today - timedelta(days=3)).isoformat(),
                "to": (today - timedelta(days=1)).isoformat(),
            },
            headers=admin,
        )
    ).json()
    assert (before_today["donations_fen"], before_today["closing_fen"]) == (1000, 1000)

    f = (
        await client.get(
            f"/api/v1/admin/funds/{fund.id}/statement",
            params={"from": (today - timedelta(days=7)).isoformat()},
            headers=admin,
        )
    ).json()
    assert (f["account"], f["kind"], f["donations_fen"], f["closing_fen"]) == (
        f"fund:{fund.id}",
        "fund",
        400,
        400,
    )

    # downloads
    csv_res = await client.get(
        path, params={"from": (today - timedelta(days=1)).isoformat(), "format": "csv"}, headers=admin
    )
    assert csv_res.status_code == 200 and csv_res.headers["content-type"].startswith("text/csv")
    rows = {r[0]: r for r in csv.reader(io.StringIO(csv_res.content.decode("utf-8-sig"))) if r}
    assert rows["期初余额"][2] == "1000" and rows["期末余额"][1] == "10.00" and rows["助餐补贴支出"][3] == "1"
    xlsx = await client.get(
        path, params={"from": (today - timedelta(days=1)).isoformat(), "format": "xlsx"}, headers=admin
    )
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    cells = {r[0]: r for r in sheet.iter_rows(values_only=True) if r and r[0]}
    assert cells["期末余额"][2] == 1000 and cells["捐赠退款"][2] == -200


async def test_general_meal_pool_fund_maps_to_the_pool(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    general = (
        await session.execute(select(Fund).where(Fund.is_general_meal_pool.is_(True)))
    ).scalar_one_or_none()
    general = general or await create_fund(session, name="乐享桑榆", is_general_meal_pool=True)
    await donate(session, "pool:general_meal", 700)
    admin_openid = unique("admin")
    await grant(session, admin_openid, Role.federation_admin)
    admin = await login(client, admin_openid)
    s = (await client.get(f"/api/v1/admin/funds/{general.id}/statement", headers=admin)).json()
    assert (s["account"], s["kind"]) == ("pool:general_meal", "general_meal_pool")
    assert s["donations_fen"] >= 700 and _adds_up(s)


async def test_statement_rejects_bad_input_and_non_admins(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    fund = await create_fund(session)
    admin_openid = unique("admin")
    await grant(session, admin_openid, Role.federation_admin)
    admin = await login(client, admin_openid)
    url = f"/api/v1/admin/funds/{fund.id}/statement"
    backwards = await client.get(url, params={"from": "2026-11-10", "to": "2026-11-01"}, headers=admin)
    assert backwards.status_code == 400 and backwards.json()["error"] == "InvalidPeriod"
    assert (await client.get(url, params={"from": "2026-02-30"}, headers=admin)).status_code == 422
    assert (await client.get(url, params={"format": "pdf"}, headers=admin)).status_code == 422
    unknown = await client.get(f"/api/v1/admin/funds/{uuid.uuid4()}/statement", headers=admin)
    assert unknown.status_code == 404 and unknown.json()["error"] == "FundNotFound"
    no_canteen = await client.get(f"/api/v1/admin/canteens/{uuid.uuid4()}/pool-statement", headers=admin)
    assert no_canteen.status_code == 404
    someone = await login(client, unique("u"))
    assert (await client.get(url, headers=someone)).status_code == 403
    assert (await client.get(url)).status_code == 401
