"""Payment notifications end to end: the simulator (real uvicorn thread) delivers signed, encrypted
notifications to the app's notify URL, whose transactions commit for real."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from app.db import Database, unit_of_work
from app.donations.service import donation_service
from app.models import Donation, FeedEvent, SandboxWeChatPayOrder
from app.wechat.pay import get_wechatpay, response_sign_message, rsa_sign
from tests.donations.helpers import committed_target, counts, donate, payment_notification, tamper
from tests.fixtures.client import login
from tests.fixtures.factories import unique

NOTIFY = "/api/v1/payments/wechat/notify"


async def _new_donation(client: httpx.AsyncClient, amount_fen: int = 1000) -> dict:
    target = await committed_target()
    headers = await login(client, unique("o"))
    res = await donate(client, headers, target.code, amount_fen=amount_fen)
    assert res.status_code == 201, res.text
    return res.json()


async def _state(donation_id: str) -> dict:
    async with unit_of_work() as s:
        import uuid

        return await counts(s, uuid.UUID(donation_id))


async def test_notification_delivered_five_times_counts_once(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    donation = await _new_donation(committed_client)
    assert donation["status"] == "pending" and donation["pay_params"]["signType"] == "RSA"
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        res = await sim.post(f"/sandbox/wechatpay/pay/{donation['out_trade_no']}", params={"times": 5})
    assert res.status_code == 200, res.text
    assert res.json()["deliveries"] == [204] * 5
    state = await _state(donation["id"])
    assert state["status"] == "paid"
    assert (state["inbox"], state["feed"], state["lots"], state["entries"]) == (1, 1, 1, 1)
    assert state["transaction_id"] == res.json()["transaction_id"] and len(state["transaction_id"]) == 28
    # the receipt number follows the commit within milliseconds (the receipt numberer's batch window)
    deadline = time.monotonic() + 5
    while state["receipt_no"] is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        state = await _state(donation["id"])
    assert state["receipt_no"].startswith("SY")


async def test_five_concurrent_deliveries_one_effect(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    donation = await _new_donation(committed_client, 2345)
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        res = await sim.post(
            f"/sandbox/wechatpay/pay/{donation['out_trade_no']}", params={"times": 5, "concurrent": "true"}
        )
    assert res.json()["deliveries"] == [204] * 5, res.text
    state = await _state(donation["id"])
    assert state["status"] == "paid"
    assert (state["inbox"], state["feed"], state["lots"], state["entries"]) == (1, 1, 1, 1)


async def test_distinct_notifications_for_one_payment_still_count_once(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    """Different notification ids (e.g. a replay with a new id) race for the same order."""
    donation = await _new_donation(committed_client)
    tx = "4200" + "1" * 24
    deliveries = [payment_notification(donation["out_trade_no"], 1000, transaction_id=tx) for _ in range(5)]
    results = await asyncio.gather(
        *(committed_client.post(NOTIFY, content=body, headers=headers) for headers, body in deliveries)
    )
    assert [r.status_code for r in results] == [204] * 5
    state = await _state(donation["id"])
    assert (state["status"], state["feed"], state["lots"], state["entries"]) == ("paid", 1, 1, 1)


def _other_key_headers(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    from app.wechat.pay import load_private_key

    ts, nonce = headers["Wechatpay-Timestamp"], headers["Wechatpay-Nonce"]
    sig = rsa_sign(load_private_key(pem), response_sign_message(ts, nonce, body.decode()))
    return {**headers, "Wechatpay-Signature": sig}


@pytest.mark.parametrize(
    "case",
    ["forged_signature", "wrong_key", "tampered_ciphertext", "stale_timestamp", "wrong_serial", "amount",
     "mchid", "appid", "unknown_out_trade_no", "not_json"],
)  # fmt: skip
async def test_bad_notifications_are_rejected_and_change_nothing(
    committed_client: httpx.AsyncClient, committed: Database, case: str
) -> None:
    donation = await _new_donation(committed_client)
    no, amount = donation["out_trade_no"], 1000
    kwargs = {}
    if case == "amount":
        amount = 1
    elif case == "mchid":
        kwargs["mchid"] = "1900000999"
    elif case == "appid":
        kwargs["appid"] = "wxsomeoneelse000001"
    elif case == "unknown_out_trade_no":
        no = "SY20261128NOSUCHORDER0000000"
    headers, body = payment_notification(no, amount, **kwargs)
    if case == "forged_signature":
        headers["Wechatpay-Signature"] = headers["Wechatpay-Signature"][:-8] + "AAAAAAA="
    elif case == "wrong_key":
        headers = _other_key_headers(body, headers)
    elif case == "tampered_ciphertext":
        body = tamper(body)
        headers = {**headers, **_resign(body)}
    elif case == "stale_timestamp":
        from app.sandbox.wechatpay import keys
        from app.wechat.pay import load_private_key

        ts = str(int(time.time()) - 301)
        sig = rsa_sign(
            load_private_key(keys().platform_private_pem),
            response_sign_message(ts, headers["Wechatpay-Nonce"], body.decode()),
        )
        headers = {**headers, "Wechatpay-Timestamp": ts, "Wechatpay-Signature": sig}
    elif case == "wrong_serial":
        headers["Wechatpay-Serial"] = "PUB_KEY_ID_0000000000000000000000000000000"
    elif case == "not_json":
        body = b"{not json"
        headers = {**headers, **_resign(body)}
    res = await committed_client.post(NOTIFY, content=body, headers=headers)
    assert 400 <= res.status_code < 600, res.text
    assert res.json()["code"] == "FAIL" and res.json()["message"]
    state = await _state(donation["id"])
    assert (state["status"], state["inbox"], state["feed"], state["lots"]) == ("pending", 0, 0, 0)


def _resign(body: bytes) -> dict[str, str]:
    from app.sandbox.wechatpay import sign_headers

    return sign_headers(body.decode())


async def test_lost_notification_is_recovered_by_polling(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    donation = await _new_donation(committed_client)
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        res = await sim.post(f"/sandbox/wechatpay/pay/{donation['out_trade_no']}", params={"drop": "true"})
    assert res.json()["deliveries"] == [] and res.json()["dropped"] is True
    assert (await _state(donation["id"]))["status"] == "pending"
    async with unit_of_work() as s:
        result = await donation_service.check_pending(s, get_wechatpay(), min_age=timedelta(0))
    assert result["completed"] == 1
    state = await _state(donation["id"])
    assert (state["status"], state["lots"], state["feed"]) == ("paid", 1, 1)
    assert state["transaction_id"] == res.json()["transaction_id"]
    # the late notification afterwards changes nothing
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        again = await sim.post(f"/sandbox/wechatpay/pay/{donation['out_trade_no']}", params={"times": 2})
    assert again.json()["deliveries"] == [204, 204]
    state = await _state(donation["id"])
    assert (state["status"], state["lots"], state["feed"], state["entries"]) == ("paid", 1, 1, 1)


async def test_unpaid_order_is_closed_after_expiry(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    donation = await _new_donation(committed_client)
    async with unit_of_work() as s:
        result = await donation_service.check_pending(s, get_wechatpay(), min_age=timedelta(0))
    assert result == {"checked": 1, "completed": 0, "closed": 0, "errors": 0}  # not expired yet
    async with unit_of_work() as s:
        row = (await s.execute(select(Donation).where(Donation.id == donation["id"]))).scalar_one()
        later = row.expires_at + timedelta(seconds=1)
        result = await donation_service.check_pending(s, get_wechatpay(), now=later, min_age=timedelta(0))
    assert result["closed"] == 1
    async with unit_of_work() as s:
        row = (await s.execute(select(Donation).where(Donation.id == donation["id"]))).scalar_one()
        order = (
            await s.execute(
                select(SandboxWeChatPayOrder).where(SandboxWeChatPayOrder.out_trade_no == row.out_trade_no)
            )
        ).scalar_one()
    assert row.status == "closed" and order.trade_state == "CLOSED"
    # the payer cannot pay a closed order
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        res = await sim.post(f"/sandbox/wechatpay/pay/{donation['out_trade_no']}")
    assert res.json()["code"] == "ORDER_CLOSED"


async def test_a_notification_does_not_wait_for_the_poll_asking_wechat_pay(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poll asks WeChat Pay with no row locked: while it waits on a slow query, WeChat Pay's notification
    for that very order is applied at once. The poll then finds the donation paid and leaves it."""
    from app.wechat.pay import WeChatPayGateway

    donation = await _new_donation(committed_client)
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        dropped = await sim.post(
            f"/sandbox/wechatpay/pay/{donation['out_trade_no']}", params={"drop": "true"}
        )
    assert dropped.json()["deliveries"] == []
    asking, answer = asyncio.Event(), asyncio.Event()
    original = WeChatPayGateway.query_order

    async def slow(self: WeChatPayGateway, out_trade_no: str) -> dict | None:
        asking.set()
        await answer.wait()
        return await original(self, out_trade_no)

    monkeypatch.setattr(WeChatPayGateway, "query_order", slow)

    async def poll() -> dict[str, int]:
        async with unit_of_work() as s:
            return await donation_service.check_pending(s, get_wechatpay(), min_age=timedelta(0))

    polling = asyncio.create_task(poll())
    try:
        await asyncio.wait_for(asking.wait(), 10)
        async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:  # WeChat Pay delivers again
            delivered = await asyncio.wait_for(
                sim.post(f"/sandbox/wechatpay/pay/{donation['out_trade_no']}", params={"times": 1}), 5
            )
        assert delivered.json()["deliveries"] == [204]
        assert (await _state(donation["id"]))["status"] == "paid"
    finally:
        answer.set()
        result = await polling
    assert result == {"checked": 1, "completed": 0, "closed": 0, "errors": 0}
    state = await _state(donation["id"])
    assert (state["status"], state["lots"], state["feed"], state["entries"]) == ("paid", 1, 1, 1)


async def test_the_poll_leaves_an_order_whose_row_another_transaction_holds(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    """A paid order whose donation is locked elsewhere (its notification being applied) is neither waited for
    nor paid a second time: the poll skips it, and a later run completes it if nothing else did."""
    donation = await _new_donation(committed_client)
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        dropped = await sim.post(
            f"/sandbox/wechatpay/pay/{donation['out_trade_no']}", params={"drop": "true"}
        )
    assert dropped.json()["deliveries"] == []

    async def poll() -> dict[str, int]:
        async with unit_of_work() as s:
            return await donation_service.check_pending(s, get_wechatpay(), min_age=timedelta(0))

    async with unit_of_work() as holder:
        await holder.execute(select(Donation.id).where(Donation.id == donation["id"]).with_for_update())
        skipped = await asyncio.wait_for(poll(), 10)
        await holder.rollback()
    assert skipped == {"checked": 1, "completed": 0, "closed": 0, "errors": 0}
    assert (await _state(donation["id"]))["status"] == "pending"
    assert await poll() == {"checked": 1, "completed": 1, "closed": 0, "errors": 0}
    state = await _state(donation["id"])
    assert (state["status"], state["lots"], state["feed"], state["entries"]) == ("paid", 1, 1, 1)


async def test_a_paid_notifications_feed_event_names_its_target(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    """The order's lock reads its target's title and kind with it (no object of the target); the feed event of
    a payment applied from a notification shows both, for each kind of target."""
    from tests.donations.helpers import create_target

    for kind in ("canteen", "fund", "general"):
        title = f"通知路径{unique('t')}"[:40]
        async with unit_of_work() as s:
            target = await create_target(s, kind, title=title)
        headers = await login(committed_client, unique("o"))
        res = await donate(committed_client, headers, target.code, amount_fen=1234)
        assert res.status_code == 201, res.text
        async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
            paid = await sim.post(f"/sandbox/wechatpay/pay/{res.json()['out_trade_no']}")
        assert paid.status_code == 200 and paid.json()["deliveries"] == [204], paid.text
        async with unit_of_work() as s:
            events = (
                (
                    await s.execute(
                        select(FeedEvent.payload).where(
                            FeedEvent.kind == "donation_paid", FeedEvent.payload["target"].astext == title
                        )
                    )
                )
                .scalars()
                .all()
            )
        assert len(events) == 1, kind
        assert (events[0]["target_kind"], events[0]["amount_fen"], events[0]["channel"]) == (
            kind,
            1234,
            "wechatpay",
        )
