"""Receipt numbers: given right after the payment commits, by one numberer, gap-free per year."""

from __future__ import annotations

import asyncio
import random
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import AFTER_COMMIT_KEY, Database, unit_of_work
from app.donations.repository import DonationRepository
from app.donations.service import donation_service, receipts
from app.kit.time import SHANGHAI
from app.models import Donation, DonationTarget, ReceiptCounter
from tests.feed.helpers import pay


async def _paid(target_id: uuid.UUID, amount_fen: int) -> uuid.UUID:
    async with unit_of_work() as s:
        target = await s.get(DonationTarget, target_id)
        assert target is not None
        return (await pay(s, target, amount_fen)).id


async def test_forty_concurrent_payments_get_forty_consecutive_numbers(committed: Database) -> None:
    from tests.donations.helpers import committed_target

    target = await committed_target()
    ids = await asyncio.gather(*(_paid(target.id, 1000 + i) for i in range(40)))
    await receipts.drain()
    async with unit_of_work() as s:
        rows = (
            await s.execute(
                select(Donation.id, Donation.paid_at, Donation.receipt_seq, Donation.receipt_no)
                .where(Donation.id.in_(ids))
                .order_by(Donation.receipt_seq)
            )
        ).all()
    assert len(rows) == 40
    assert [r.receipt_seq for r in rows] == list(range(1, 41))  # no gap, no repeat
    # the year is Asia/Shanghai's: from 16:00 UTC on 31 December it is already the next one
    assert all(r.receipt_no == f"SY{r.paid_at.astimezone(SHANGHAI).year}{r.receipt_seq:08d}" for r in rows)


async def test_a_paid_donation_read_before_numbering_gets_its_number_then(committed: Database) -> None:
    from tests.donations.helpers import committed_target

    target = await committed_target()
    async with unit_of_work() as s:
        t = await s.get(DonationTarget, target.id)
        assert t is not None
        donation = await pay(s, t, 1000)
        # same transaction, before any commit: not numbered yet
        assert donation.receipt_no is None
        s.info.pop(AFTER_COMMIT_KEY, None)  # as if the process died right after the commit
    async with unit_of_work() as s:
        d = await s.get(Donation, donation.id)
        assert d is not None and d.receipt_no is None
        out = await donation_service.view(s, d)
        assert out.receipt_no is not None and out.receipt_no.endswith("00000001")
    # and the numberer has nothing left to do
    async with unit_of_work() as s:
        assert await donation_service.number_receipts(s) == 0


async def test_a_view_does_not_wait_for_a_busy_numberer(committed: Database) -> None:
    from app.db import get_database
    from tests.donations.helpers import committed_target

    target = await committed_target()
    async with unit_of_work() as s:
        t = await s.get(DonationTarget, target.id)
        assert t is not None
        donation = await pay(s, t, 1000)
        s.info.pop(AFTER_COMMIT_KEY, None)  # not numbered after the commit
    async with get_database().sessionmaker() as busy:
        assert await donation_service.number_receipts(busy) == 1  # holds the numberer's lock until commit
        async with unit_of_work() as s:
            d = await s.get(Donation, donation.id)
            assert d is not None
            out = await asyncio.wait_for(donation_service.view(s, d), 5)
            assert out.receipt_no is None  # shown without a number rather than waiting
        await busy.commit()
    async with unit_of_work() as s:
        d = await s.get(Donation, donation.id)
        assert d is not None and d.receipt_no is not None


async def test_a_years_counter_starts_then_advances_by_each_reservation(session: AsyncSession) -> None:
    repo = DonationRepository(session)
    year = random.randrange(3000, 9000)  # a year nobody numbers in; the session is rolled back
    assert await repo.advance_receipt_counter(year, 3) == 3
    assert await repo.advance_receipt_counter(year, 2) == 5
    counter = await session.get(ReceiptCounter, year)
    assert counter is not None and counter.last_seq == 5
