"""The sealer: entries are written unsealed by their business transaction and chained after it commits."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from app.db import Database, get_database, unit_of_work
from app.exceptions import Conflict
from app.ledger.service import Posting, ledger_service, sealer
from app.models import JournalEntry, JournalSeal, LedgerAccount
from tests.fixtures.factories import unique


async def _post(amount: int = 100) -> str:
    async with unit_of_work() as s:
        entry = await ledger_service.post(
            s,
            business_key=unique("k"),
            kind="test",
            postings=[Posting("wechatpay_clearing", amount), Posting("external:donors", -amount)],
        )
        return str(entry.id)


async def test_background_sealer_chains_right_after_commit(committed: Database) -> None:
    entry_id = await _post(250)
    await sealer.drain()
    async with unit_of_work() as s:
        entry = await s.get(JournalEntry, entry_id)
        assert entry is not None and entry.seq is not None and entry.hash is not None
        clearing = await s.get(LedgerAccount, "wechatpay_clearing")
        assert clearing is not None and clearing.balance_fen == 250  # summed by the sealer


async def test_rolled_back_post_is_never_sealed(committed: Database) -> None:
    class Boom(Exception):
        pass

    try:
        async with unit_of_work() as s:
            await ledger_service.post(
                s,
                business_key=unique("k"),
                kind="test",
                postings=[Posting("wechatpay_clearing", 5), Posting("external:donors", -5)],
            )
            raise Boom
    except Boom:
        pass
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(JournalEntry)) == 0


async def test_seal_without_waiting_gives_way_to_a_running_sealer(committed: Database) -> None:
    await _post()
    await sealer.drain()
    entry_id = await _post()
    maker = get_database().sessionmaker
    async with maker() as holder, maker() as other:
        await ledger_service.seal(holder)  # holds the chain lock until it commits
        assert await ledger_service.seal(other, wait=False) is None
        await other.rollback()
        await holder.commit()
    await sealer.drain()
    async with unit_of_work() as s:
        entry = await s.get(JournalEntry, entry_id)
        assert entry is not None and entry.seq is not None


async def test_concurrent_posts_make_one_unbroken_chain(committed: Database) -> None:
    await asyncio.gather(*(_post(10 + i) for i in range(40)))
    await sealer.drain()
    async with unit_of_work() as s:
        report = await ledger_service.check(s)
        assert report["ok"], report["problems"]
        assert report["entries_checked"] == 40
        assert report["chain_head"]["seq"] == 40
        seqs = (await s.execute(select(JournalSeal.seq).order_by(JournalSeal.seq))).scalars().all()
        assert seqs == list(range(1, 41))
        clearing = await s.get(LedgerAccount, "wechatpay_clearing")
        assert clearing is not None and clearing.balance_fen == sum(10 + i for i in range(40))


async def test_ten_concurrent_posts_of_one_key_write_one_entry(committed: Database) -> None:
    """No ledger-wide lock any more: the business key's unique index makes the racers wait for the first and
    return its entry; a racer with other content is refused and changes nothing."""
    key = unique("k")

    async def post(amount: int) -> str:
        async with unit_of_work() as s:
            entry = await ledger_service.post(
                s,
                business_key=key,
                kind="test",
                postings=[Posting("wechatpay_clearing", amount), Posting("external:donors", -amount)],
            )
            return str(entry.id)

    ids = await asyncio.gather(*(post(300) for _ in range(10)))
    assert len(set(ids)) == 1
    with pytest.raises(Conflict) as err:
        await post(301)
    assert err.value.error_code == "LedgerKeyReused"
    await sealer.drain()
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(JournalEntry)) == 1
        report = await ledger_service.check(s)
        assert report["ok"], report["problems"]
        assert (await ledger_service.balances(s, ["wechatpay_clearing"]))[
            "wechatpay_clearing"
        ].balance_fen == 300
