"""The sealer: entries are written unsealed by their business transaction and chained after it commits."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, get_database, unit_of_work
from app.exceptions import Conflict
from app.ledger.repository import _UNSEALED, LedgerRepository
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


async def test_the_sealers_read_looks_entries_up_by_key_in_a_generic_plan(session: AsyncSession) -> None:
    """The sealer's read runs as a prepared statement, and PostgreSQL soon plans it once for any limit. Such a
    plan must still look each queued entry up by its key: a join that read the whole journal took 20 ms a batch
    at 100,000 entries, and more as the journal grows."""
    await session.execute(
        text(
            """
            INSERT INTO journal_entries (id, business_key, kind, memo, refs, content_hash, day, created_at)
            SELECT gen_random_uuid(), 'plan:' || g, 'test', '', '{}', repeat('a', 64), CURRENT_DATE, now()
            FROM generate_series(1, 3000) AS g
            """
        )
    )
    await session.execute(text("ANALYZE journal_entries"))
    await session.execute(text("ANALYZE journal_unsealed"))
    await session.execute(text("ANALYZE postings"))
    await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
    sql = str(_UNSEALED.compile(dialect=postgresql.dialect())).replace("%(limit)s", "$1")
    await session.execute(text(f"PREPARE sealer_read (bigint) AS {sql}"))
    try:
        plan = "\n".join((await session.execute(text("EXPLAIN EXECUTE sealer_read (500)"))).scalars())
    finally:
        await session.execute(text("DEALLOCATE sealer_read"))
    assert "Seq Scan on journal_entries" not in plan, plan
    assert "Index Scan using pk_journal_entries on journal_entries" in plan, plan
    # and it reads what it should: the oldest queued entries (here all of one moment, so by id), an entry with
    # no postings with no arrays
    rows = await LedgerRepository(session).unsealed(5)
    assert len(rows) == 5 and all(r.business_key.startswith("plan:") for r in rows)
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert all(r.accounts is None and r.amounts is None for r in rows)


async def test_has_unsealed_answers_for_the_entries_asked_about(session: AsyncSession) -> None:
    repo = LedgerRepository(session)
    await ledger_service.seal(session)
    assert not await repo.has_unsealed()
    entry = await ledger_service.post(
        session,
        business_key=unique("k"),
        kind="test",
        postings=[Posting("wechatpay_clearing", 7), Posting("external:donors", -7)],
    )
    unknown = uuid.uuid4()
    assert await repo.has_unsealed()
    assert await repo.has_unsealed([entry.id, unknown])
    assert not await repo.has_unsealed([unknown])  # an entry that does not exist is not waiting to be sealed
    assert await ledger_service.seal(session) == 1
    assert not await repo.has_unsealed()
    assert not await repo.has_unsealed([entry.id])
