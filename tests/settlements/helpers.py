"""Arranging money for meal tests: paid donations through the real payment path, owned by a donor."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import AuthRepository
from app.donations.service import donation_service, mint_out_trade_no
from app.kit.time import utcnow
from app.ledger.service import GENERAL_MEAL_POOL, ledger_service
from app.models import Booking, BookingLine, CharityHold, Donation, DonationTarget, LedgerAccount
from tests.fixtures.factories import unique


async def paid_donation(
    session: AsyncSession, canteen_id: uuid.UUID, amount_fen: int, *, donor_openid: str | None = None
) -> Donation:
    """A WeChat Pay donation to a canteen's pool, completed through ``donation_service.complete_payment``."""
    target = DonationTarget(code=unique("q")[:12], kind="canteen", canteen_id=canteen_id, title="测试食堂")
    session.add(target)
    await session.flush()
    donor = None
    if donor_openid:
        donor = (await AuthRepository(session).get_or_create_user(donor_openid)).id
    donation = Donation(
        id=uuid.uuid4(),
        target_id=target.id,
        target_account=await donation_service.target_account(session, target),
        donor_user_id=donor,
        channel="wechatpay",
        status="pending",
        amount_fen=amount_fen,
        refunded_fen=0,
        anonymous=False,
        out_trade_no=mint_out_trade_no(),
        expires_at=utcnow() + timedelta(minutes=30),
    )
    session.add(donation)
    await session.flush()
    assert await donation_service.complete_payment(
        session,
        donation,
        source="wechatpay",
        external_ref="42000" + "".join(secrets.choice("0123456789") for _ in range(23)),
        paid_at=utcnow(),
    )
    return donation


async def drain_general_pool(session: AsyncSession, canteen_id: uuid.UUID) -> None:
    """Reserve whatever the general meal pool holds, so a test sees only its own canteen's money."""
    acc = (
        await session.execute(
            select(LedgerAccount)
            .where(LedgerAccount.code == GENERAL_MEAL_POOL)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    free = 0 if acc is None else -acc.balance_fen - acc.held_fen
    if free > 0:
        await ledger_service.place_hold(
            session, hold_key=unique("drain"), canteen_id=canteen_id, amount_fen=free
        )


async def hold_of_booking(session: AsyncSession, booking_id: str) -> tuple[BookingLine, CharityHold | None]:
    line = (
        await session.execute(
            select(BookingLine)
            .where(BookingLine.booking_id == uuid.UUID(booking_id), BookingLine.is_elder_meal.is_(True))
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    hold = (
        await session.execute(
            select(CharityHold)
            .where(CharityHold.hold_key == str(line.id))
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    return line, hold


async def booking_status(session: AsyncSession, booking_id: str) -> str:
    row = await session.execute(
        select(Booking.status)
        .where(Booking.id == uuid.UUID(booking_id))
        .execution_options(populate_existing=True)
    )
    return str(row.scalar_one())
