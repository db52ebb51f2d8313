from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import Database, get_db_session, unit_of_work
from app.donations.seed import seed_demo_donations
from app.errors import install_error_handlers
from app.kit.crypto import decrypt_pii
from app.models import AuditLog, Donation, DonationInvoiceRequest, DonationTarget, FeedEvent
from app.models.role_grant import Role
from tests.donations.helpers import committed_target, create_target, donate
from tests.fixtures.client import login
from tests.fixtures.factories import create_canteen, create_fund, grant, unique


async def _donation_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Donation)) or 0)


async def test_target_info_and_scans(client: httpx.AsyncClient, session: AsyncSession) -> None:
    target = await create_target(session, suggested_amounts_fen=[1000, 2500])
    res = await client.get(f"/api/v1/donation-targets/{target.code}", params={"scan": "true"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["kind"] == "canteen" and body["canteen_name"] == "测试幸福食堂"
    assert body["meal_unit_fen"] == 1000 and body["totals"] == {"paid_fen": 0, "donations": 0}
    assert [s["meals"] for s in body["suggested_amounts"]] == [1, None]
    assert body["url"].endswith(f"/q/{target.code}")
    await client.get(f"/api/v1/donation-targets/{target.code}")  # not a scan
    await session.refresh(target)
    assert target.scans == 1
    missing = await client.get("/api/v1/donation-targets/nosuchcode")
    assert missing.status_code == 404 and missing.json()["error"] == "DonationTargetNotFound"
    assert "重新扫码" in missing.json()["message"]
    bad = await client.get("/api/v1/donation-targets/bad%20code!")
    assert bad.status_code == 422


async def test_qrcode_images(client: httpx.AsyncClient, session: AsyncSession) -> None:
    target = await create_target(session)
    png = await client.get(f"/api/v1/donation-targets/{target.code}/qrcode.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    svg = await client.get(f"/api/v1/donation-targets/{target.code}/qrcode.svg")
    assert svg.status_code == 200 and b"<svg" in svg.content
    assert (await client.get(f"/api/v1/donation-targets/{target.code}/qrcode.gif")).status_code == 404


async def test_create_donation_by_meals_with_pay_params(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    target = await create_target(session)
    headers = await login(client, unique("o"))
    res = await donate(client, headers, target.code, meals=3, display_name=" 张先生 ", message="加油")
    assert res.status_code == 201, res.text
    body = res.json()
    assert body["amount_fen"] == 3000 and body["meals"] == 3 and body["status"] == "pending"
    assert body["display_name"] == "张先生"
    assert len(body["out_trade_no"]) <= 32 and body["out_trade_no"].isalnum()
    pay = body["pay_params"]
    assert pay["package"].startswith("prepay_id=wx") and pay["signType"] == "RSA" and pay["paySign"]
    row = await session.get(Donation, uuid.UUID(body["id"]))
    assert row is not None and row.target_account == f"pool:canteen:{target.canteen_id}"


async def test_same_idempotency_key_same_out_trade_no(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    target = await create_target(session, kind="general")
    headers = await login(client, unique("o"))
    key = uuid.uuid4().hex
    first = await donate(client, headers, target.code, key=key, amount_fen=888)
    second = await donate(client, headers, target.code, key=key, amount_fen=888)
    assert first.status_code == 201 and second.status_code == 201, second.text
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["out_trade_no"] == second.json()["out_trade_no"]
    assert second.json()["pay_params"]["package"] == first.json()["pay_params"]["package"]
    changed = await donate(client, headers, target.code, key=key, amount_fen=999)
    assert changed.status_code == 409 and changed.json()["error"] == "IdempotencyKeyReused"
    row = await session.get(Donation, uuid.UUID(first.json()["id"]))
    assert row is not None and row.target_account == "pool:general_meal"
    missing = await client.post(
        "/api/v1/donations", json={"target_code": target.code, "meals": 1}, headers=headers
    )
    assert missing.status_code == 400 and missing.json()["error"] == "IdempotencyKeyRequired"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"amount_fen": 0}, "0.01 元到 50000 元"),
        ({"amount_fen": 5_000_001}, "0.01 元到 50000 元"),
        ({"amount_fen": -5}, "0.01 元到 50000 元"),
        ({"amount_fen": 10.5}, "整数"),
        ({"amount_fen": 10.0}, "整数"),
        ({"amount_fen": "100"}, "整数"),
        ({"meals": 0}, "餐数"),
        ({"meals": 5001}, "餐数"),
        ({"meals": 1, "amount_fen": 1000}, "二选一"),
        ({"display_name": "名" * 21, "meals": 1}, "署名最多"),
        ({"message": "话" * 101, "meals": 1}, "留言最多"),
        ({"message": "a\x00b", "meals": 1}, "控制字符"),
        ({"meals": 1, "anonymous": "yes"}, "是/否"),
        ({"meals": 1, "openid": "x"}, "不认识"),
    ],
)
async def test_bad_amounts_and_texts_are_422_in_chinese(
    client: httpx.AsyncClient, session: AsyncSession, body: dict, fragment: str
) -> None:
    target = await create_target(session)
    headers = await login(client, unique("o"))
    before = await _donation_count(session)
    res = await client.post(
        "/api/v1/donations",
        json={"target_code": target.code, **body},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert res.status_code == 422, res.text
    assert res.json()["error"] == "ValidationError" and fragment in res.json()["message"], res.json()
    assert await _donation_count(session) == before


async def test_neither_meals_nor_amount(client: httpx.AsyncClient, session: AsyncSession) -> None:
    target = await create_target(session)
    headers = await login(client, unique("o"))
    res = await client.post(
        "/api/v1/donations",
        json={"target_code": target.code},
        headers={**headers, "Idempotency-Key": "k" * 10},
    )
    assert res.status_code == 422 and "二选一" in res.json()["message"]


async def test_unknown_or_inactive_target_and_login_required(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    inactive = await create_target(session, is_active=False)
    headers = await login(client, unique("o"))
    for code in ("nosuch", inactive.code):
        res = await donate(client, headers, code)
        assert res.status_code == 404 and res.json()["error"] == "DonationTargetNotFound"
    anon = await client.post("/api/v1/donations", json={"target_code": inactive.code, "meals": 1})
    assert anon.status_code == 401


async def test_donor_sees_only_own_donations(client: httpx.AsyncClient, session: AsyncSession) -> None:
    target = await create_target(session)
    alice, bob = await login(client, unique("o")), await login(client, unique("o"))
    mine = [(await donate(client, alice, target.code, amount_fen=100 + i)).json() for i in range(3)]
    res = await client.get(f"/api/v1/donations/{mine[0]['id']}", headers=alice)
    assert res.status_code == 200 and res.json()["amount_fen"] == 100
    for path in ("", "/receipt"):
        other = await client.get(f"/api/v1/donations/{mine[0]['id']}{path}", headers=bob)
        assert other.status_code == 404 and other.json()["error"] == "DonationNotFound"
    page = await client.get("/api/v1/me/donations", params={"limit": 2}, headers=alice)
    assert page.status_code == 200
    first = page.json()
    assert [d["amount_fen"] for d in first["items"]] == [102, 101] and first["next_cursor"]
    rest = await client.get(
        "/api/v1/me/donations", params={"limit": 2, "cursor": first["next_cursor"]}, headers=alice
    )
    assert [d["amount_fen"] for d in rest.json()["items"]] == [100] and rest.json()["next_cursor"] is None
    assert (await client.get("/api/v1/me/donations", headers=bob)).json()["items"] == []
    bad = await client.get("/api/v1/me/donations", params={"cursor": "garbage"}, headers=alice)
    assert bad.status_code == 400
    unpaid = await client.get(f"/api/v1/donations/{mine[0]['id']}/receipt", headers=alice)
    assert unpaid.status_code == 409 and unpaid.json()["error"] == "DonationNotPaid"


async def test_offline_bank_donation(client: httpx.AsyncClient, session: AsyncSession) -> None:
    fund = await create_fund(session, name="德州助餐基金")
    target = await create_target(session, kind="fund", fund_id=fund.id, title="德州助餐基金")
    admin = unique("admin")
    await grant(session, admin, Role.federation_admin)
    headers = await login(client, admin)
    body = {
        "target_code": target.code,
        "amount_fen": 5_000_000,
        "voucher_no": unique("V"),
        "paid_on": "2026-11-27",
        "display_name": "某某公司",
    }
    res = await client.post("/api/v1/admin/donations/offline", json=body, headers=headers)
    assert res.status_code == 201, res.text
    out = res.json()
    assert out["status"] == "paid" and out["channel"] == "bank" and out["receipt_no"].startswith("SY2026")
    row = await session.get(Donation, uuid.UUID(out["id"]))
    assert row is not None and row.target_account == f"fund:{fund.id}"
    from app.ledger.service import ledger_service

    assert await ledger_service.refundable_fen(session, donation_id=row.id) == 5_000_000
    feed = (await session.execute(select(FeedEvent).order_by(FeedEvent.id.desc()).limit(1))).scalar_one()
    assert feed.payload["donor"] == "某某公司" and feed.payload["amount_fen"] == 5_000_000
    audits = await session.scalar(
        select(func.count()).select_from(AuditLog).where(AuditLog.action == "donation.offline.record")
    )
    assert audits == 1

    dup = await client.post("/api/v1/admin/donations/offline", json=body, headers=headers)
    assert dup.status_code == 409 and dup.json()["error"] == "VoucherAlreadyRecorded"
    too_big = await client.post(
        "/api/v1/admin/donations/offline", json={**body, "voucher_no": unique("V"), "amount_fen": 5_000_001},
        headers=headers,
    )  # fmt: skip
    assert too_big.status_code == 422
    donor = await login(client, unique("o"))
    forbidden = await client.post("/api/v1/admin/donations/offline", json=body, headers=donor)
    assert forbidden.status_code == 403


async def test_receipt_json_html_and_invoice_request(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    target = await committed_target()
    headers = await login(committed_client, unique("o"))
    donation = (
        await donate(committed_client, headers, target.code, meals=2, anonymous=True, display_name="王")
    ).json()
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        await sim.post(f"/sandbox/wechatpay/pay/{donation['out_trade_no']}", params={"times": 3})
    res = await committed_client.get(f"/api/v1/donations/{donation['id']}/receipt", headers=headers)
    assert res.status_code == 200, res.text
    receipt = res.json()
    assert receipt["donor"] == "爱心人士" and receipt["amount_yuan"] == "20.00"
    assert receipt["receipt_no"].startswith("SY") and receipt["invoice_requested"] is False
    html = await committed_client.get(
        f"/api/v1/donations/{donation['id']}/receipt", params={"format": "html"}, headers=headers
    )
    assert html.status_code == 200 and "捐赠收据" in html.text and receipt["receipt_no"] in html.text

    second = (await donate(committed_client, headers, target.code, meals=1)).json()
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        await sim.post(f"/sandbox/wechatpay/pay/{second['out_trade_no']}")
    second_receipt = (
        await committed_client.get(f"/api/v1/donations/{second['id']}/receipt", headers=headers)
    ).json()
    assert int(second_receipt["receipt_no"][-8:]) == int(receipt["receipt_no"][-8:]) + 1  # sequential

    path = f"/api/v1/donations/{donation['id']}/receipt/invoice-request"
    body = {"donor_type": "person", "name": "王小明", "tax_id": "11010519491231002X"}
    res = await committed_client.post(path, json=body, headers=headers)
    assert res.status_code == 201, res.text
    assert res.json()["name_masked"] == "王**" and "002X" in res.json()["tax_id_masked"]
    assert "11010519491231002X" not in res.text
    again = await committed_client.post(path, json=body, headers=headers)
    assert again.status_code == 409
    async with unit_of_work() as s:
        row = (await s.execute(select(DonationInvoiceRequest))).scalar_one()
    assert b"11010519491231002X" not in row.tax_id_enc
    assert decrypt_pii(row.tax_id_enc, context="donation_invoice.tax_id") == "11010519491231002X"


async def test_landing_page(session_maker: async_sessionmaker[AsyncSession], session: AsyncSession) -> None:
    from app.donations.endpoints import pages

    target = await create_target(session, title="德城区幸福食堂")
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(pages)

    async def override():  # type: ignore[no-untyped-def]
        async with unit_of_work(session_maker) as s:
            yield s

    app.dependency_overrides[get_db_session] = override
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        res = await c.get(f"/q/{target.code}")
        assert res.status_code == 200 and "德城区幸福食堂" in res.text and "我为老人助一餐" in res.text
        missing = await c.get("/q/nosuch")
        assert missing.status_code == 404 and "找不到" in missing.text
    await session.refresh(target)
    assert target.scans == 1


async def test_seed_is_idempotent(session: AsyncSession) -> None:
    canteen = await create_canteen(session, name="种子食堂")
    await create_fund(session, name="种子助餐基金", purpose="meal")
    await create_fund(session, name="种子助学基金", purpose="education")
    await seed_demo_donations(session)
    count = await session.scalar(select(func.count()).select_from(DonationTarget))
    await seed_demo_donations(session)
    assert await session.scalar(select(func.count()).select_from(DonationTarget)) == count
    kinds = {
        t.kind
        for t in (await session.execute(select(DonationTarget))).scalars()
        if t.canteen_id == canteen.id or t.kind != "canteen"
    }
    assert kinds == {"canteen", "fund", "general"}
    titles = {t.title for t in (await session.execute(select(DonationTarget))).scalars()}
    assert "种子助餐基金" in titles and "种子助学基金" not in titles


async def test_admin_generates_qrcode_files(
    client: httpx.AsyncClient, session: AsyncSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import get_settings

    monkeypatch.setattr(get_settings(), "QRCODE_DIR", tmp_path)
    target = await create_target(session, title="二维码食堂")
    admin = unique("admin")
    await grant(session, admin, Role.federation_admin)
    headers = await login(client, admin)
    res = await client.post(
        "/api/v1/admin/donation-targets/qrcodes", json={"codes": [target.code]}, headers=headers
    )
    assert res.status_code == 200, res.text
    files = res.json()
    assert len(files) == 1 and files[0]["url"].endswith(f"/q/{target.code}")
    assert (tmp_path / f"{target.code}.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / f"{target.code}.svg").read_bytes()
    assert (tmp_path / f"{target.code}-poster.png").stat().st_size > 10_000
    missing = await client.post(
        "/api/v1/admin/donation-targets/qrcodes", json={"codes": ["nosuch"]}, headers=headers
    )
    assert missing.status_code == 404
    donor = await login(client, unique("o"))
    assert (await client.post("/api/v1/admin/donation-targets/qrcodes", headers=donor)).status_code == 403
