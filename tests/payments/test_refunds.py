"""Refunds: donor asks, admin approves, WeChat Pay refunds, the refund notification completes it."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import func, select

from app.db import Database, unit_of_work
from app.ledger.service import ledger_service
from app.models import AuditLog, Donation, DonationRefund, FeedEvent
from app.models.role_grant import Role
from app.worker import drain_async
from tests.donations.helpers import committed_target, donate
from tests.fixtures.client import login
from tests.fixtures.factories import grant, unique


async def _paid_donation(
    client: httpx.AsyncClient, simulator: str, amount_fen: int = 1000
) -> tuple[dict, dict]:
    target = await committed_target()
    headers = await login(client, unique("o"))
    donation = (await donate(client, headers, target.code, amount_fen=amount_fen)).json()
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        res = await sim.post(f"/sandbox/wechatpay/pay/{donation['out_trade_no']}")
    assert res.json()["deliveries"] == [204]
    return donation, headers


async def _admin(client: httpx.AsyncClient) -> dict[str, str]:
    openid = unique("admin")
    async with unit_of_work() as s:
        await grant(s, openid, Role.federation_admin)
    return await login(client, openid)


async def test_refund_flow_and_limits(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    donation, headers = await _paid_donation(committed_client, simulator)
    base = f"/api/v1/donations/{donation['id']}/refund-requests"

    too_much = await committed_client.post(base, json={"amount_fen": 1001, "reason": "多了"}, headers=headers)
    assert too_much.status_code == 409 and too_much.json()["error"] == "RefundExceedsRemainder"
    assert "最多可退" in too_much.json()["message"]

    # a meal hold on part of the money: that part is no longer refundable
    async with unit_of_work() as s:
        row = (await s.execute(select(Donation).where(Donation.id == uuid.UUID(donation["id"])))).scalar_one()
        canteen_id = uuid.UUID(row.target_account.removeprefix("pool:canteen:"))
        held = await ledger_service.place_hold(s, hold_key=unique("h"), canteen_id=canteen_id, amount_fen=300)
    assert held == 300
    over = await committed_client.post(base, json={"amount_fen": 701}, headers=headers)
    assert over.status_code == 409 and over.json()["detail"]["refundable_fen"] == 700

    other = await login(committed_client, unique("o"))
    assert (await committed_client.post(base, json={"amount_fen": 100}, headers=other)).status_code == 404

    ok = await committed_client.post(base, json={"amount_fen": 500, "reason": "家里有事"}, headers=headers)
    assert ok.status_code == 201, ok.text
    refund = ok.json()
    twice = await committed_client.post(base, json={"amount_fen": 100}, headers=headers)
    assert twice.status_code == 409 and twice.json()["error"] == "RefundAlreadyOpen"

    approve = f"/api/v1/admin/refund-requests/{refund['id']}/approve"
    assert (await committed_client.post(approve, headers=headers)).status_code == 403
    admin = await _admin(committed_client)
    res = await committed_client.post(approve, json={"note": "同意"}, headers=admin)
    assert res.status_code == 200, res.text
    assert res.json()["status"] == "processing"
    again = await committed_client.post(approve, headers=admin)
    assert again.status_code == 409 and again.json()["error"] == "RefundAlreadyDecided"
    await drain_async()  # the job asks WeChat Pay for the refund

    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        settled = await sim.post(
            f"/sandbox/wechatpay/refunds/{refund['out_refund_no']}/settle", params={"times": 3}
        )
    assert settled.json()["deliveries"] == [204, 204, 204], settled.text

    async with unit_of_work() as s:
        row = (await s.execute(select(Donation).where(Donation.id == uuid.UUID(donation["id"])))).scalar_one()
        r = (
            await s.execute(select(DonationRefund).where(DonationRefund.id == uuid.UUID(refund["id"])))
        ).scalar_one()
        refunded_events = await s.scalar(
            select(func.count()).select_from(FeedEvent).where(FeedEvent.kind == "donation_refunded")
        )
        audits = await s.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.action == "donation.refund.approve")
        )
        refundable = await ledger_service.refundable_fen(s, donation_id=row.id)
    assert (row.status, row.refunded_fen, r.status) == ("partially_refunded", 500, "succeeded")
    assert refunded_events == 1 and audits == 1
    assert refundable == 200  # 1000 − 300 held − 500 refunded

    # what is left can be refunded, but not more
    more = await committed_client.post(base, json={"amount_fen": 201}, headers=headers)
    assert more.status_code == 409


async def test_unpaid_donation_cannot_be_refunded(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    target = await committed_target()
    headers = await login(committed_client, unique("o"))
    donation = (await donate(committed_client, headers, target.code)).json()
    res = await committed_client.post(
        f"/api/v1/donations/{donation['id']}/refund-requests", json={}, headers=headers
    )
    assert res.status_code == 409 and res.json()["error"] == "DonationNotRefundable"
