"""Console refund approval: federation staff see the requests by status, approve (the job then asks WeChat Pay)
or reject with a note; every decision needs the CSRF token and is audited as the staff member; civil-affairs
staff do not get the page; a refused refund shows with its reason."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from app.db import Database, unit_of_work
from app.models import AuditLog, DonationRefund
from app.worker import drain_async
from tests.console.conftest import console_login, csrf_of
from tests.donations.helpers import committed_target, donate, payment_notification
from tests.fixtures.client import login
from tests.fixtures.factories import create_district, create_staff_account, unique

PAGE = "/admin/pages/refunds"


async def _asked(client: httpx.AsyncClient, simulator: str, *, at_simulator: bool) -> dict[str, str]:
    """A paid donation and a refund request for part of it; paid at the simulator (so WeChat Pay can refund
    it) or only by a notification the simulator never saw (so WeChat Pay refuses)."""
    target = await committed_target()
    donor = await login(client, unique("o"))
    donation = (await donate(client, donor, target.code, amount_fen=1000)).json()
    if at_simulator:
        async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
            assert (await sim.post(f"/sandbox/wechatpay/pay/{donation['out_trade_no']}")).status_code == 200
    else:
        headers, body = payment_notification(donation["out_trade_no"], 1000)
        paid = await client.post("/api/v1/payments/wechat/notify", content=body, headers=headers)
        assert paid.status_code == 204
    asked = await client.post(
        f"/api/v1/donations/{donation['id']}/refund-requests",
        json={"amount_fen": 400, "reason": "家里急用"},
        headers=donor,
    )
    assert asked.status_code == 201, asked.text
    return {"id": asked.json()["id"], "out_refund_no": asked.json()["out_refund_no"]}


async def _refund(refund_id: str) -> DonationRefund:
    async with unit_of_work() as s:
        row = await s.get(DonationRefund, uuid.UUID(refund_id))
        assert row is not None
        return row


async def test_staff_approve_and_reject_refunds(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    client = committed_client
    good = await _asked(client, simulator, at_simulator=True)
    refused = await _asked(client, simulator, at_simulator=False)
    unwanted = await _asked(client, simulator, at_simulator=True)
    async with unit_of_work() as s:
        staff = await create_staff_account(s)
        civil = await create_staff_account(
            s, role="civil_affairs", district_code=(await create_district(s)).code
        )

    await console_login(client, civil.username)  # type: ignore[attr-defined]
    assert (await client.get(PAGE)).status_code == 403
    client.cookies.clear()
    await console_login(client, staff.username)  # type: ignore[attr-defined]
    token = await csrf_of(client)

    queue = await client.get(PAGE)
    assert queue.status_code == 200
    for r in (good, refused, unwanted):
        assert f'id="approve-{r["id"]}"' in queue.text and "家里急用" in queue.text
    assert (await client.get(PAGE, params={"status": "lost"})).status_code == 400

    # bad input: a refund id that is not one, one that does not exist, a note too long; nothing changes
    for bad in ("not-a-uuid", str(uuid.uuid4())):
        res = await client.post(f"{PAGE}/{bad}/approve", data={"csrf_token": token})
        assert res.status_code == 404 and "找不到" in res.text
    long_note = await client.post(
        f"{PAGE}/{good['id']}/approve", data={"csrf_token": token, "note": "同意" * 101}
    )
    assert long_note.status_code == 400 and "200 字以内" in long_note.text
    assert (await _refund(good["id"])).status == "requested"

    # no CSRF token: refused, unchanged
    url = f"{PAGE}/{good['id']}/approve"
    assert (await client.post(url, data={"note": "同意"})).status_code == 403
    assert (await _refund(good["id"])).status == "requested"

    for r in (good, refused):
        res = await client.post(f"{PAGE}/{r['id']}/approve", data={"csrf_token": token, "note": "同意"})
        assert res.status_code == 303, res.text
    res = await client.post(
        f"{PAGE}/{unwanted['id']}/reject", data={"csrf_token": token, "note": "款项已用于助餐计划"}
    )
    assert res.status_code == 303
    # decided once: a second decision is refused with the reason, nothing changes
    again = await client.post(f"{PAGE}/{unwanted['id']}/approve", data={"csrf_token": token})
    assert again.status_code == 409 and "已经处理过了" in again.text
    assert (await _refund(unwanted["id"])).status == "rejected"

    await drain_async()  # the approvals' jobs ask WeChat Pay
    assert (await _refund(good["id"])).status == "processing"
    failed = await _refund(refused["id"])
    assert failed.status == "failed" and failed.failure_reason
    shown = await client.get(PAGE, params={"status": "failed"})
    assert refused["id"] in shown.text and failed.failure_reason in shown.text
    assert unwanted["id"] in (await client.get(PAGE, params={"status": "rejected"})).text

    async with unit_of_work() as s:
        audits = (
            (await s.execute(select(AuditLog).where(AuditLog.target_type == "donation_refund")))
            .scalars()
            .all()
        )
    decided = {(a.action, str(a.target_id)) for a in audits if a.actor_label == f"staff:{staff.username}"}  # type: ignore[attr-defined]
    assert decided == {
        ("donation.refund.approve", good["id"]),
        ("donation.refund.approve", refused["id"]),
        ("donation.refund.reject", unwanted["id"]),
    }
