"""Arranging ledger state for tests: paid donations, the general meal pool."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import unit_of_work
from app.kit.time import utcnow
from app.ledger.service import GENERAL_MEAL_POOL, canteen_pool, ledger_service
from app.models import JournalEntry, LedgerAccount
from tests.fixtures.factories import create_canteen, unique

_clock = [utcnow() - timedelta(days=1)]


def next_paid_at() -> datetime:
    """Strictly increasing payment times, so FIFO order is the order of arrangement."""
    _clock[0] += timedelta(seconds=1)
    return _clock[0]


async def donate(
    session: AsyncSession, account: str, amount_fen: int, *, source: str = "wechatpay"
) -> uuid.UUID:
    donation_id = uuid.uuid4()
    await ledger_service.record_donation_payment(
        session,
        donation_id=donation_id,
        target_account=account,
        amount_fen=amount_fen,
        source=source,
        external_ref=unique("tx"),
        paid_at=next_paid_at(),
    )
    return donation_id


async def pool_free(session: AsyncSession, account: str) -> int:
    acc = (
        await session.execute(
            select(LedgerAccount)
            .where(LedgerAccount.code == account)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    return 0 if acc is None else -acc.balance_fen - acc.held_fen


async def entry_count(session: AsyncSession, business_key: str) -> int:
    rows = await session.execute(select(JournalEntry.id).where(JournalEntry.business_key == business_key))
    return len(rows.all())


__all__ = ["GENERAL_MEAL_POOL", "canteen_pool", "donate", "entry_count", "next_paid_at", "pool_free"]


async def canteen_with_money(*amounts: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A committed canteen whose pool holds one paid donation per amount (the general meal pool must be
    empty, so every hold comes from these)."""
    async with unit_of_work() as s:
        assert await pool_free(s, GENERAL_MEAL_POOL) == 0
        canteen = await create_canteen(s)
        donations = [await donate(s, canteen_pool(canteen.id), a) for a in amounts]
        return canteen.id, donations
