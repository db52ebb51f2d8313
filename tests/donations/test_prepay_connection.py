"""Opening a WeChat Pay order holds no database connection: the pool has a fixed size, and a request waiting on
WeChat with a connection in hand keeps it from every other request of its process (in sandbox mode, also from
the simulator answering that very call). What the request writes comes after the call, in one transaction."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update

from app.db import Database, TransactionHasWritten, get_database, release_connection, unit_of_work
from app.exceptions import WeChatUnavailable
from app.kit.background import drain_all
from app.kit.time import utcnow
from app.models import Donation, DonationTarget, IdempotencyKey, SandboxWeChatPayOrder
from app.wechat.pay import WeChatPayGateway
from tests.donations.helpers import committed_target, donate
from tests.fixtures.client import login
from tests.fixtures.factories import unique


def _checked_out() -> int:
    return int(get_database().engine.sync_engine.pool.checkedout())


async def _quiet() -> None:
    """Nothing of this loop (the sealer, the receipt numberer) holds a connection."""
    await drain_all()
    for _ in range(100):
        if _checked_out() == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("connections still checked out before the request")


async def _target_and_donor(client: httpx.AsyncClient) -> tuple[DonationTarget, dict[str, str]]:
    """A committed donation target and a signed-in donor's headers."""
    return await committed_target(), await login(client, unique("o"))


def _spy_on_orders(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Connections checked out of this loop's pool at the moment each order is opened."""
    seen: list[int] = []
    original = WeChatPayGateway.create_jsapi_order

    async def spying(self: WeChatPayGateway, **kwargs: Any) -> str:
        seen.append(_checked_out())
        return await original(self, **kwargs)

    monkeypatch.setattr(WeChatPayGateway, "create_jsapi_order", spying)
    return seen


async def test_a_new_order_is_opened_with_no_connection_held(
    committed_client: httpx.AsyncClient, committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, headers = await _target_and_donor(committed_client)
    seen = _spy_on_orders(monkeypatch)
    await _quiet()
    res = await donate(committed_client, headers, target.code, amount_fen=1500)
    assert res.status_code == 201, res.text
    assert seen == [0]
    body = res.json()
    assert body["pay_params"]["package"].startswith("prepay_id=wx")
    async with unit_of_work() as s:
        row = await s.get(Donation, uuid.UUID(body["id"]))
        assert row is not None and row.prepay_id and row.prepay_at is not None
        assert body["pay_params"]["package"] == f"prepay_id={row.prepay_id}"


async def test_a_replay_that_needs_a_fresh_prepay_id_also_holds_none(
    committed_client: httpx.AsyncClient, committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, headers = await _target_and_donor(committed_client)
    key = uuid.uuid4().hex
    first = await donate(committed_client, headers, target.code, key=key, amount_fen=800)
    assert first.status_code == 201, first.text
    donation_id = uuid.UUID(first.json()["id"])
    async with unit_of_work() as s:  # the first prepay_id is now older than it may be handed out again
        await s.execute(
            update(Donation).where(Donation.id == donation_id).values(prepay_at=utcnow() - timedelta(hours=2))
        )
    seen = _spy_on_orders(monkeypatch)
    await _quiet()
    again = await donate(committed_client, headers, target.code, key=key, amount_fen=800)
    assert again.status_code == 201, again.text
    assert seen == [0]
    assert again.json()["id"] == str(donation_id)
    assert again.json()["out_trade_no"] == first.json()["out_trade_no"]
    async with unit_of_work() as s:
        row = await s.get(Donation, donation_id)
        assert row is not None and row.prepay_at is not None
        assert utcnow() - row.prepay_at < timedelta(minutes=1)  # the fresh one was written
        assert again.json()["pay_params"]["package"] == f"prepay_id={row.prepay_id}"


async def test_when_wechat_pay_fails_nothing_is_written_and_the_key_can_be_used_again(
    committed_client: httpx.AsyncClient, committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, headers = await _target_and_donor(committed_client)
    key = uuid.uuid4().hex

    async def down(self: WeChatPayGateway, **kwargs: Any) -> str:
        raise WeChatUnavailable("暂时连不上微信支付，请稍后再试", detail={"action": "pay"})

    with monkeypatch.context() as patched:
        patched.setattr(WeChatPayGateway, "create_jsapi_order", down)
        failed = await donate(committed_client, headers, target.code, key=key, amount_fen=600)
    assert failed.status_code == 503, failed.text
    assert "微信支付" in failed.json()["message"]
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(Donation)) == 0
        assert await s.scalar(select(func.count()).select_from(IdempotencyKey)) == 0
    ok = await donate(committed_client, headers, target.code, key=key, amount_fen=600)
    assert ok.status_code == 201, ok.text
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(Donation)) == 1


async def test_two_requests_with_one_new_key_racing_past_the_read_make_one_donation(
    committed_client: httpx.AsyncClient, committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both find the key unused and each opens an order; the claim lets one donation through and both
    requests answer with it. The other order was never shown to anyone."""
    target, headers = await _target_and_donor(committed_client)
    key = uuid.uuid4().hex
    inside = 0
    both_inside = asyncio.Event()
    original = WeChatPayGateway.create_jsapi_order

    async def together(self: WeChatPayGateway, **kwargs: Any) -> str:
        nonlocal inside
        inside += 1
        if inside == 2:
            both_inside.set()
        await asyncio.wait_for(both_inside.wait(), 10)
        return await original(self, **kwargs)

    monkeypatch.setattr(WeChatPayGateway, "create_jsapi_order", together)
    results = await asyncio.gather(
        *(donate(committed_client, headers, target.code, key=key, amount_fen=1234) for _ in range(2))
    )
    assert [r.status_code for r in results] == [201, 201], [r.text for r in results]
    first, second = (r.json() for r in results)
    assert first["id"] == second["id"] and first["out_trade_no"] == second["out_trade_no"]
    assert first["pay_params"]["package"] == second["pay_params"]["package"]
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(Donation)) == 1
        opened = (await s.execute(select(SandboxWeChatPayOrder.out_trade_no))).scalars().all()
    assert len(opened) == 2 and first["out_trade_no"] in opened


async def test_release_connection_refuses_a_transaction_that_has_written(committed: Database) -> None:
    async with unit_of_work() as s:
        await s.execute(text("SELECT 1"))
        assert _checked_out() >= 1
        await release_connection(s)  # only read: given back
        assert not s.in_transaction()
        s.add(IdempotencyKey(scope="donation", owner="o", key="k" * 8, request_hash="h"))
        with pytest.raises(TransactionHasWritten):  # not flushed yet
            await release_connection(s)
        await s.flush()
        with pytest.raises(TransactionHasWritten):  # flushed: PostgreSQL has given the transaction an id
            await release_connection(s)
        await s.rollback()
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


async def test_another_donor_with_the_same_key_gets_a_donation_of_their_own(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    """Keys belong to their donor: the read that decides whether a request is a replay never finds someone
    else's donation."""
    target, first_donor = await _target_and_donor(committed_client)
    second_donor = await login(committed_client, unique("o"))
    key = uuid.uuid4().hex
    mine = await donate(committed_client, first_donor, target.code, key=key, amount_fen=700)
    theirs = await donate(committed_client, second_donor, target.code, key=key, amount_fen=700)
    assert mine.status_code == 201 and theirs.status_code == 201, theirs.text
    assert mine.json()["id"] != theirs.json()["id"]
    assert mine.json()["out_trade_no"] != theirs.json()["out_trade_no"]
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(Donation)) == 2
        assert await s.scalar(select(func.count()).select_from(IdempotencyKey)) == 2
