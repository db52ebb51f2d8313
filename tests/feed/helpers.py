"""Arranging public-feed state: paid donations through the real donation path, meals paid from them."""

from __future__ import annotations

import secrets
import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import AuthRepository
from app.donations.service import donation_service, mint_out_trade_no
from app.feed.service import feed_service
from app.kit.time import business_date, utcnow
from app.ledger.service import ledger_service
from app.models import Donation, DonationTarget, Fund
from tests.fixtures.factories import create_canteen, create_fund, unique


async def create_target(session: AsyncSession, kind: str = "canteen", **kwargs: Any) -> DonationTarget:
    values: dict[str, Any] = {"code": unique("q")[:12], "kind": kind, "title": "测试捐赠项目"}
    if kind == "canteen" and "canteen_id" not in kwargs:
        values["canteen_id"] = (await create_canteen(session)).id
    elif kind == "fund" and "fund_id" not in kwargs:
        values["fund_id"] = (await create_fund(session)).id
    values.update(kwargs)
    target = DonationTarget(**values)
    session.add(target)
    await session.flush()
    return target


async def user_id_of(session: AsyncSession, openid: str) -> uuid.UUID:
    return (await AuthRepository(session).get_or_create_user(openid)).id


async def pay(
    session: AsyncSession,
    target: DonationTarget,
    amount_fen: int,
    *,
    donor_user_id: uuid.UUID | None = None,
    anonymous: bool = False,
    display_name: str | None = None,
    message: str | None = None,
) -> Donation:
    """A WeChat Pay donation completed through ``donation_service.complete_payment`` (ledger + feed event)."""
    donation = Donation(
        id=uuid.uuid4(),
        target_id=target.id,
        target_account=await donation_service.target_account(session, target),
        donor_user_id=donor_user_id,
        channel="wechatpay",
        status="pending",
        amount_fen=amount_fen,
        meals=amount_fen // 1000 if amount_fen % 1000 == 0 else None,
        refunded_fen=0,
        anonymous=anonymous,
        display_name=display_name,
        message=message,
        out_trade_no=mint_out_trade_no(),
        expires_at=utcnow() + timedelta(minutes=30),
    )
    session.add(donation)
    await session.flush()
    paid = await donation_service.complete_payment(
        session,
        donation,
        source="wechatpay",
        external_ref="42000" + "".join(secrets.choice("0123456789") for _ in range(23)),
        paid_at=utcnow(),
    )
    assert paid
    return donation


async def serve_meal(
    session: AsyncSession,
    canteen_id: uuid.UUID,
    amount_fen: int,
    *,
    slot: str = "lunch",
    service_date: date | None = None,
) -> int:
    """What a served, donation-paid meal does: hold → post in the ledger, then the feed call the booking
    service makes. Returns the amount paid by donations."""
    key = unique("line")
    held = await ledger_service.place_hold(
        session, hold_key=key, canteen_id=canteen_id, amount_fen=amount_fen, meta={"slot": slot}
    )
    day = service_date or business_date()
    await ledger_service.post_hold(session, hold_key=key, service_date=day, meta={"slot": slot})
    await feed_service.record_meal_funded(
        session, canteen_id=canteen_id, service_date=day, slot=slot, amount_fen=held
    )
    return held


async def general_fund(session: AsyncSession) -> Fund:
    """The one general meal pool fund (乐享桑榆), created if the database has none yet."""
    fund = (
        await session.execute(select(Fund).where(Fund.is_general_meal_pool.is_(True)))
    ).scalar_one_or_none()
    return fund or await create_fund(session, name="乐享桑榆", is_general_meal_pool=True)
