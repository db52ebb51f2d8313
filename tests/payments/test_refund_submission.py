"""An approved refund is reserved in the ledger and committed; a job then asks WeChat Pay, with no row locked
and no connection held while it answers. A refusal, or a refund WeChat Pay closes, puts the reservation back
into the pool; an abnormal refund keeps it for staff; a WeChat Pay that is away is asked again."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from app.db import Database, get_database, unit_of_work
from app.donations.service import donation_service
from app.exceptions import Conflict, NotFound, WeChatUnavailable
from app.kit.background import drain_all
from app.ledger.service import ledger_service
from app.ledger.statements import canteen_pool_statement
from app.models import AuditLog, Donation, DonationRefund, JournalEntry
from app.payments.service import payment_service
from app.wechat.pay import WeChatPayError, get_wechatpay
from app.worker import drain_async
from tests.donations.helpers import committed_target, donate, payment_notification
from tests.fixtures.client import login
from tests.fixtures.factories import unique
from tests.payments.test_notify_batch import _note
from tests.payments.test_refunds import _admin

NOTIFY = "/api/v1/payments/wechat/notify"


async def _donor(client: httpx.AsyncClient) -> tuple[Any, dict[str, str]]:
    """A committed canteen target and a signed-in donor's headers."""
    return await committed_target(), await login(client, unique("o"))


async def _paid_by_notification(
    client: httpx.AsyncClient, headers: dict[str, str], code: str
) -> dict[str, Any]:
    """A donation of 10 yuan paid by a notification the simulator never saw: WeChat Pay will refuse to refund
    it (订单未支付)."""
    donation = (await donate(client, headers, code, amount_fen=1000)).json()
    notify_headers, notify_body = payment_notification(donation["out_trade_no"], 1000)
    paid = await client.post(NOTIFY, content=notify_body, headers=notify_headers)
    assert paid.status_code == 204, paid.text
    return dict(donation)


async def _paid_at_simulator(
    client: httpx.AsyncClient, simulator: str, headers: dict[str, str], code: str, amount_fen: int = 1000
) -> dict[str, Any]:
    donation = (await donate(client, headers, code, amount_fen=amount_fen)).json()
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        res = await sim.post(f"/sandbox/wechatpay/pay/{donation['out_trade_no']}")
    assert res.json()["deliveries"] == [204]
    return donation


async def _approved(
    client: httpx.AsyncClient, donation: dict[str, Any], headers: dict[str, str], amount_fen: int
) -> dict[str, Any]:
    asked = await client.post(
        f"/api/v1/donations/{donation['id']}/refund-requests",
        json={"amount_fen": amount_fen, "reason": "家里有事"},
        headers=headers,
    )
    assert asked.status_code == 201, asked.text
    res = await client.post(
        f"/api/v1/admin/refund-requests/{asked.json()['id']}/approve",
        json={"note": "同意"},
        headers=await _admin(client),
    )
    assert res.status_code == 200, res.text
    assert res.json()["status"] == "processing" and res.json()["failure_reason"] is None
    return dict(res.json())


async def _one_approved(
    client: httpx.AsyncClient, simulator: str, amount_fen: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A donation of 10 yuan paid at the simulator, and its approved refund of ``amount_fen``."""
    target, headers = await _donor(client)
    donation = await _paid_at_simulator(client, simulator, headers, target.code)
    return donation, await _approved(client, donation, headers, amount_fen)


async def _refund(refund_id: str) -> DonationRefund:
    async with unit_of_work() as s:
        row = await s.get(DonationRefund, uuid.UUID(refund_id))
        assert row is not None
        return row


async def _refundable(donation_id: str) -> int:
    async with unit_of_work() as s:
        return await ledger_service.refundable_fen(s, donation_id=uuid.UUID(donation_id))


async def _statement(s: Any, canteen_id: uuid.UUID | None) -> Any:
    assert canteen_id is not None
    return await canteen_pool_statement(s, canteen_id, date_from=None, date_to=None)


async def _ledger_ok() -> None:
    await drain_all()
    async with unit_of_work() as s:
        check = await ledger_service.check(s)
    assert check["ok"], check["problems"]


async def test_a_refund_wechat_pay_refuses_goes_back_to_the_pool(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    """The order was paid by a notification the simulator never saw, so WeChat Pay answers 订单未支付. The
    approval still answers at once (processing, reserved); the job then marks it failed with WeChat Pay's
    message and releases the reservation, and the donor may ask again."""
    target, headers = await _donor(committed_client)
    donation = await _paid_by_notification(committed_client, headers, target.code)
    async with unit_of_work() as s:
        before = await _statement(s, target.canteen_id)

    refund = await _approved(committed_client, donation, headers, 400)
    assert await _refundable(donation["id"]) == 600  # reserved: meals cannot take it meanwhile

    await drain_async()
    row = await _refund(refund["id"])
    assert row.status == "failed" and row.wechat_refund_id is None
    assert row.failure_reason is not None and row.failure_reason.startswith("微信支付拒绝了退款：")
    assert "未支付" in row.failure_reason
    assert await _refundable(donation["id"]) == 1000
    async with unit_of_work() as s:
        kinds = (
            await s.execute(
                select(JournalEntry.kind)
                .where(JournalEntry.refs["refund_id"].astext == refund["id"])
                .order_by(JournalEntry.created_at)
            )
        ).scalars()
        assert list(kinds) == ["donation_refund", "donation_refund_release"]
        audit = (
            await s.execute(select(AuditLog).where(AuditLog.action == "donation.refund.fail"))
        ).scalar_one()
        assert audit.after is not None and audit.after["released"] is True
        assert audit.after["code"] == "INVALID_REQUEST"
        donation_row = await s.get(Donation, uuid.UUID(donation["id"]))
        assert donation_row is not None and (donation_row.status, donation_row.refunded_fen) == ("paid", 0)
        after = await _statement(s, target.canteen_id)
    # the fund's statement counts no refund and ends where it began
    assert (after.refunds_fen, after.refunds_count) == (before.refunds_fen, before.refunds_count)
    assert after.closing_fen == before.closing_fen
    await _ledger_ok()

    again = await committed_client.post(
        f"/api/v1/donations/{donation['id']}/refund-requests", json={"amount_fen": 1000}, headers=headers
    )
    assert again.status_code == 201, again.text


async def test_closed_refunds_release_their_reservation_and_abnormal_ones_keep_it(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    target, headers = await _donor(committed_client)
    closed_d = await _paid_at_simulator(committed_client, simulator, headers, target.code)
    abnormal_d = await _paid_at_simulator(committed_client, simulator, headers, target.code)
    closed = await _approved(committed_client, closed_d, headers, 300)
    abnormal = await _approved(committed_client, abnormal_d, headers, 500)
    await drain_async()
    for refund in (closed, abnormal):
        row = await _refund(refund["id"])
        assert row.status == "processing" and row.wechat_refund_id  # WeChat Pay took both
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        for refund, status in ((closed, "CLOSED"), (abnormal, "ABNORMAL")):
            res = await sim.post(
                f"/sandbox/wechatpay/refunds/{refund['out_refund_no']}/settle", params={"status": status}
            )
            assert res.json()["deliveries"] == [204], res.text

    closed_row, abnormal_row = await _refund(closed["id"]), await _refund(abnormal["id"])
    assert closed_row.status == abnormal_row.status == "failed"
    assert closed_row.failure_reason and "退回资金池" in closed_row.failure_reason
    assert abnormal_row.failure_reason and "商户平台" in abnormal_row.failure_reason
    assert await _refundable(closed_d["id"]) == 1000
    assert await _refundable(abnormal_d["id"]) == 500  # still owed to the donor
    await _ledger_ok()

    # the closed one can be asked for again, all of it this time, and goes through
    again = await _approved(committed_client, closed_d, headers, 1000)
    await drain_async()
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        res = await sim.post(f"/sandbox/wechatpay/refunds/{again['out_refund_no']}/settle")
        assert res.json()["deliveries"] == [204], res.text
    assert (await _refund(again["id"])).status == "succeeded"
    assert await _refundable(closed_d["id"]) == 0
    async with unit_of_work() as s:
        d = await s.get(Donation, uuid.UUID(closed_d["id"]))
        assert d is not None and (d.status, d.refunded_fen) == ("refunded", 1000)
    await _ledger_ok()


class _HeldGateway:
    """WeChat Pay that answers a refund only when told to, reporting how many connections were checked out
    of the pool while it was asked."""

    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer
        self.asked = asyncio.Event()
        self.go = asyncio.Event()
        self.checked_out: list[int] = []

    async def refund(self, **kwargs: Any) -> dict[str, Any]:
        self.checked_out.append(int(get_database().engine.sync_engine.pool.checkedout()))
        self.asked.set()
        await self.go.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def _submit(gateway: Any, refund_id: str) -> str:
    async with unit_of_work() as s:
        return await donation_service.submit_refund(s, gateway, uuid.UUID(refund_id))


async def test_nothing_waits_for_wechat_pay_while_it_answers_a_refund(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    """A payment to the same pool is applied while the refund's job waits for WeChat Pay (before, the
    approval asked WeChat Pay with the pool's row locked), and the job holds no connection meanwhile."""
    target, headers = await _donor(committed_client)
    donation = await _paid_at_simulator(committed_client, simulator, headers, target.code)
    refund = await _approved(committed_client, donation, headers, 200)
    other = (await donate(committed_client, headers, target.code, amount_fen=700)).json()
    await drain_all()

    gateway = _HeldGateway({"refund_id": "50" + "1" * 27, "status": "PROCESSING"})
    job = asyncio.create_task(_submit(gateway, refund["id"]))
    await asyncio.wait_for(gateway.asked.wait(), 10)
    assert gateway.checked_out == [0]
    async with unit_of_work() as s:
        await s.execute(text("SET LOCAL lock_timeout = '2s'"))
        outcome = await payment_service.handle_payment_notifications(s, get_wechatpay(), [_note(other)])
    assert outcome == ["paid"]
    gateway.go.set()
    assert await asyncio.wait_for(job, 10) == "accepted"
    row = await _refund(refund["id"])
    assert (row.status, row.wechat_refund_id) == ("processing", "50" + "1" * 27)
    assert await _submit(gateway, refund["id"]) == "nothing"  # submitted once
    await _ledger_ok()


@pytest.mark.parametrize(
    "failure",
    [
        WeChatUnavailable("暂时连不上微信支付，请稍后再试"),
        WeChatPayError(429, "FREQUENCY_LIMITED", "频率超限"),
        WeChatPayError(500, "SYSTEM_ERROR", "系统错误"),
    ],
)
async def test_a_wechat_pay_that_is_away_or_busy_is_asked_again(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str, failure: Exception
) -> None:
    donation, refund = await _one_approved(committed_client, simulator, 250)

    gateway = _HeldGateway(failure)
    gateway.go.set()
    with pytest.raises(WeChatUnavailable):  # the job fails, and runs again
        await _submit(gateway, refund["id"])
    row = await _refund(refund["id"])
    assert (row.status, row.wechat_refund_id, row.failure_reason) == ("processing", None, None)
    assert await _refundable(donation["id"]) == 750  # still reserved

    await drain_async()  # the real job, against the simulator
    row = await _refund(refund["id"])
    assert row.status == "processing" and row.wechat_refund_id
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        res = await sim.post(f"/sandbox/wechatpay/refunds/{refund['out_refund_no']}/settle")
    assert res.json()["deliveries"] == [204]
    assert (await _refund(refund["id"])).status == "succeeded"
    await _ledger_ok()


async def test_an_answer_of_success_finishes_the_refund_at_once(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    donation, refund = await _one_approved(committed_client, simulator, 1000)
    gateway = _HeldGateway(
        {"refund_id": "50" + "2" * 27, "status": "SUCCESS", "success_time": "2026-11-29T10:00:00+08:00"}
    )
    gateway.go.set()
    assert await _submit(gateway, refund["id"]) == "accepted"
    row = await _refund(refund["id"])
    assert row.status == "succeeded" and row.succeeded_at is not None
    async with unit_of_work() as s:
        d = await s.get(Donation, uuid.UUID(donation["id"]))
        assert d is not None and (d.status, d.refunded_fen) == ("refunded", 1000)
    await _ledger_ok()


async def test_a_release_matches_its_refund_and_happens_once(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    donation, refund = await _one_approved(committed_client, simulator, 400)
    args = {
        "donation_id": uuid.UUID(donation["id"]),
        "refund_id": uuid.UUID(refund["id"]),
        "source": "wechatpay",
        "external_ref": refund["out_refund_no"],
    }
    async with unit_of_work() as s:
        with pytest.raises(Conflict) as wrong_amount:
            await ledger_service.release_donation_refund(s, amount_fen=300, **args)
        assert wrong_amount.value.error_code == "LedgerKeyReused"
    async with unit_of_work() as s:
        with pytest.raises(Conflict):
            await ledger_service.release_donation_refund(
                s, amount_fen=400, **{**args, "refund_id": uuid.uuid4()}
            )
    async with unit_of_work() as s:
        with pytest.raises(NotFound) as unknown:
            await ledger_service.release_donation_refund(
                s, amount_fen=400, **{**args, "external_ref": "RF" + "0" * 30}
            )
        assert unknown.value.error_code == "RefundNotInLedger"
    async with unit_of_work() as s:
        first = await ledger_service.release_donation_refund(s, amount_fen=400, **args)
    async with unit_of_work() as s:
        second = await ledger_service.release_donation_refund(s, amount_fen=400, **args)
        released = await s.scalar(select(func.count()).where(JournalEntry.kind == "donation_refund_release"))
    assert first.id == second.id and released == 1
    assert await _refundable(donation["id"]) == 1000  # released once, not twice
    await _ledger_ok()


async def test_the_donor_sees_their_refunds_and_staff_see_the_queue(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    target, headers = await _donor(committed_client)
    donation = await _paid_by_notification(committed_client, headers, target.code)
    refused = await _approved(committed_client, donation, headers, 400)  # WeChat Pay will refuse it
    await drain_async()
    waiting = await committed_client.post(
        f"/api/v1/donations/{donation['id']}/refund-requests", json={"amount_fen": 300}, headers=headers
    )
    assert waiting.status_code == 201

    mine = await committed_client.get(f"/api/v1/donations/{donation['id']}/refund-requests", headers=headers)
    assert mine.status_code == 200, mine.text
    assert [(r["id"], r["status"]) for r in mine.json()] == [
        (waiting.json()["id"], "requested"),
        (refused["id"], "failed"),
    ]
    assert mine.json()[1]["failure_reason"].startswith("微信支付拒绝了退款：")
    stranger = await login(committed_client, unique("o"))
    other = await committed_client.get(
        f"/api/v1/donations/{donation['id']}/refund-requests", headers=stranger
    )
    assert other.status_code == 404

    admin = await _admin(committed_client)
    queue = await committed_client.get("/api/v1/admin/refund-requests?status=requested", headers=admin)
    assert queue.status_code == 200
    assert [r["id"] for r in queue.json()["items"]] == [waiting.json()["id"]]
    failed = await committed_client.get("/api/v1/admin/refund-requests?status=failed", headers=admin)
    assert [r["id"] for r in failed.json()["items"]] == [refused["id"]]
    first = await committed_client.get("/api/v1/admin/refund-requests?limit=1", headers=admin)
    assert [r["id"] for r in first.json()["items"]] == [waiting.json()["id"]]
    rest = await committed_client.get(
        "/api/v1/admin/refund-requests",
        params={"limit": 1, "cursor": first.json()["next_cursor"]},
        headers=admin,
    )
    assert [r["id"] for r in rest.json()["items"]] == [refused["id"]] and rest.json()["next_cursor"] is None
    bad = await committed_client.get("/api/v1/admin/refund-requests?status=lost", headers=admin)
    assert bad.status_code == 422 and bad.json()["error"] == "ValidationError"
    assert (await committed_client.get("/api/v1/admin/refund-requests", headers=headers)).status_code == 403


async def test_a_refund_whose_answer_was_lost_is_finished_by_its_notification(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    """WeChat Pay made the refund but the job never heard the answer (a timeout): the refund notification
    finishes it and brings WeChat Pay's refund id; the job, run again, has nothing left to do."""
    donation, refund = await _one_approved(committed_client, simulator, 600)
    made = await get_wechatpay().refund(  # what the job's lost call did at WeChat Pay
        out_trade_no=donation["out_trade_no"],
        out_refund_no=refund["out_refund_no"],
        refund_fen=600,
        total_fen=1000,
        reason="家里有事",
    )
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        res = await sim.post(f"/sandbox/wechatpay/refunds/{refund['out_refund_no']}/settle")
    assert res.json()["deliveries"] == [204]
    row = await _refund(refund["id"])
    assert (row.status, row.wechat_refund_id) == ("succeeded", made["refund_id"])
    await drain_async()  # the job, again: nothing to do
    assert (await _refund(refund["id"])).status == "succeeded"
    assert await _refundable(donation["id"]) == 400
    await _ledger_ok()


async def _check_refunds(gateway: Any = None) -> dict[str, int]:
    from datetime import timedelta

    from app.kit.time import utcnow

    async with unit_of_work() as s:
        return await donation_service.check_refunds(
            s, gateway or get_wechatpay(), now=utcnow() + timedelta(minutes=10)
        )


async def test_a_refund_whose_notification_was_lost_is_finished_by_the_poll(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    target, headers = await _donor(committed_client)
    lost_d = await _paid_at_simulator(committed_client, simulator, headers, target.code)
    waiting_d = await _paid_at_simulator(committed_client, simulator, headers, target.code)
    lost = await _approved(committed_client, lost_d, headers, 700)
    await drain_async()
    unsubmitted = await _approved(committed_client, waiting_d, headers, 300)  # its job has not run yet
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        res = await sim.post(
            f"/sandbox/wechatpay/refunds/{lost['out_refund_no']}/settle", params={"drop": True}
        )
        assert res.json()["dropped"] is True and res.json()["deliveries"] == []
    assert (await _refund(lost["id"])).status == "processing"

    assert await _check_refunds() == {"checked": 2, "completed": 1, "errors": 0}
    row = await _refund(lost["id"])
    assert row.status == "succeeded" and row.succeeded_at is not None
    async with unit_of_work() as s:
        d = await s.get(Donation, uuid.UUID(lost_d["id"]))
        assert d is not None and (d.status, d.refunded_fen) == ("partially_refunded", 700)
    # WeChat Pay does not know the other one yet: it is left to its job
    assert (await _refund(unsubmitted["id"])).status == "processing"
    assert await _check_refunds() == {"checked": 1, "completed": 0, "errors": 0}
    await _ledger_ok()


async def test_the_refund_poll_skips_what_another_transaction_holds_and_survives_wechat_pay_away(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    _, refund = await _one_approved(committed_client, simulator, 500)
    await drain_async()
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        await sim.post(f"/sandbox/wechatpay/refunds/{refund['out_refund_no']}/settle", params={"drop": True})

    class Away:
        async def query_refund(self, out_refund_no: str) -> dict[str, Any]:
            raise WeChatUnavailable("暂时连不上微信支付，请稍后再试")

    assert await _check_refunds(Away()) == {"checked": 1, "completed": 0, "errors": 1}
    assert (await _refund(refund["id"])).status == "processing"

    async with unit_of_work() as holder:  # a notification for it being applied
        await holder.execute(
            select(DonationRefund).where(DonationRefund.id == uuid.UUID(refund["id"])).with_for_update()
        )
        counts = await asyncio.wait_for(_check_refunds(), 10)  # neither waits nor finishes it
        assert counts == {"checked": 1, "completed": 0, "errors": 0}
    assert (await _refund(refund["id"])).status == "processing"
    assert (await _check_refunds())["completed"] == 1
    assert (await _refund(refund["id"])).status == "succeeded"
    await _ledger_ok()


async def test_two_staff_approving_one_refund_at_once_reserve_it_once(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    target, headers = await _donor(committed_client)
    donation = await _paid_at_simulator(committed_client, simulator, headers, target.code)
    asked = await committed_client.post(
        f"/api/v1/donations/{donation['id']}/refund-requests", json={"amount_fen": 600}, headers=headers
    )
    assert asked.status_code == 201
    first_admin, second_admin = await _admin(committed_client), await _admin(committed_client)
    url = f"/api/v1/admin/refund-requests/{asked.json()['id']}/approve"
    results = await asyncio.gather(
        committed_client.post(url, json={"note": "同意"}, headers=first_admin),
        committed_client.post(url, json={"note": "同意"}, headers=second_admin),
    )
    assert sorted(r.status_code for r in results) == [200, 409]
    assert {r.json().get("error") for r in results if r.status_code == 409} == {"RefundAlreadyDecided"}
    assert await _refundable(donation["id"]) == 400  # reserved once
    async with unit_of_work() as s:
        reservations = await s.scalar(
            select(func.count()).where(JournalEntry.refs["refund_id"].astext == asked.json()["id"])
        )
    assert reservations == 1
    await _ledger_ok()


async def test_refund_lists_refuse_a_bad_cursor_and_another_donation(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    admin = await _admin(committed_client)
    bad = await committed_client.get("/api/v1/admin/refund-requests", params={"cursor": "x"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"] == "InvalidCursor"
    _, donor = await _donor(committed_client)
    missing = await committed_client.get(f"/api/v1/donations/{uuid.uuid4()}/refund-requests", headers=donor)
    assert missing.status_code == 404


REFUND_NOTIFY = "/api/v1/payments/wechat/refund-notify"


def _refund_notification(
    donation: dict[str, Any],
    refund: dict[str, Any],
    *,
    event: str = "REFUND.SUCCESS",
    status: str | None = None,
    refund_fen: int | None = None,
    out_refund_no: str | None = None,
    mchid: str | None = None,
) -> tuple[str, dict[str, str]]:
    """A refund notification as WeChat Pay sends it (the simulator's envelope, encrypted and signed)."""
    from app.config import get_settings
    from app.sandbox.wechatpay import build_notification, sign_headers

    plaintext = {
        "mchid": mchid or get_settings().WECHATPAY_MCHID,
        "out_trade_no": donation["out_trade_no"],
        "transaction_id": "4200" + str(uuid.uuid4().int)[:24],
        "out_refund_no": out_refund_no or refund["out_refund_no"],
        "refund_id": "5030" + str(uuid.uuid4().int)[:25],
        "refund_status": status or event.removeprefix("REFUND."),
        "success_time": "2026-11-28T10:00:00+08:00",
        "amount": {"total": 1000, "refund": refund_fen or refund["amount_fen"], "payer_total": 1000},
    }
    body = build_notification(event, "refund", "退款状态", plaintext, notification_id=unique("rn"))
    return body, {"Content-Type": "application/json", **sign_headers(body)}


async def test_forged_or_mismatched_refund_notifications_change_nothing(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    """A refund notification that does not match our refund (amount, merchant, refund number, a status that
    contradicts its event) or whose signature does not verify is refused with a 4xx and leaves nothing behind:
    the refund stays in progress, no inbox row, the reservation as it was. The genuine one, delivered twice,
    finishes the refund once."""
    donation, refund = await _one_approved(committed_client, simulator, 600)

    async def inbox_rows() -> int:
        async with unit_of_work() as s:
            return int(
                await s.scalar(text("SELECT count(*) FROM payment_inbox WHERE source = 'wechatpay_refund'"))
                or 0
            )

    before = await inbox_rows()
    forged = [
        _refund_notification(donation, refund, refund_fen=599),
        _refund_notification(donation, refund, mchid="1900000000"),
        _refund_notification(donation, refund, out_refund_no=unique("R")),
        _refund_notification(donation, refund, event="REFUND.SUCCESS", status="CLOSED"),
    ]
    body, headers = _refund_notification(donation, refund)
    forged.append((body.replace('"REFUND.SUCCESS"', '"REFUND.CLOSED"'), headers))  # signature no longer holds
    for forged_body, forged_headers in forged:
        res = await committed_client.post(REFUND_NOTIFY, content=forged_body, headers=forged_headers)
        assert 400 <= res.status_code < 500, res.text
        assert res.json()["code"] == "FAIL"
    row = await _refund(refund["id"])
    assert (row.status, row.wechat_refund_id) == ("processing", None)
    assert await inbox_rows() == before
    assert await _refundable(donation["id"]) == 400  # 600 reserved, nothing released or doubled

    body, headers = _refund_notification(donation, refund)
    for _ in range(2):
        assert (await committed_client.post(REFUND_NOTIFY, content=body, headers=headers)).status_code == 204
    row = await _refund(refund["id"])
    assert row.status == "succeeded" and row.wechat_refund_id is not None
    assert await inbox_rows() == before + 1
    assert await _refundable(donation["id"]) == 400
    await _ledger_ok()
