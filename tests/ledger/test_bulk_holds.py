"""The batch forms of the holds (``place_holds``, ``post_holds``, ``void_holds``) on real PostgreSQL: a batch
must leave exactly what calling the single functions one by one leaves (same FIFO, same rows, same entries),
refuse as a whole, and stay exact when batches race."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import date
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, unit_of_work
from app.exceptions import BadRequest, Conflict, NotFound
from app.ledger.service import (
    GENERAL_MEAL_POOL,
    LedgerService,
    canteen_payable,
    canteen_pool,
    ledger_service,
)
from app.models import Allocation, CharityHold, DonationLot, JournalEntry, LedgerAccount
from app.models import Posting as PostingRow
from tests.fixtures.factories import create_canteen, unique
from tests.ledger.helpers import canteen_with_money, donate, pool_free

Hold = LedgerService.HoldRequest
Meal = LedgerService.ServedMeal
DAY = date(2026, 3, 5)


async def _check_ok(session: AsyncSession) -> None:
    report = await ledger_service.check(session)
    assert report["ok"], report["problems"]


async def _snapshot(
    session: AsyncSession, keys: list[str], accounts: list[str], donations: list[uuid.UUID]
) -> dict[str, Any]:
    """Everything the holds write, keyed by what does not depend on generated ids or clocks."""
    holds = (
        await session.execute(
            select(
                CharityHold.hold_key,
                CharityHold.canteen_id,
                CharityHold.requested_fen,
                CharityHold.held_fen,
                CharityHold.status,
                CharityHold.entry_id.is_not(None),
                CharityHold.resolved_at.is_not(None),
            ).where(CharityHold.hold_key.in_(keys))
        )
    ).all()
    allocations = (
        await session.execute(
            select(
                CharityHold.hold_key,
                Allocation.donation_id,
                Allocation.account_code,
                Allocation.amount_fen,
                Allocation.status,
                Allocation.meta,
                Allocation.entry_id.is_not(None),
                Allocation.resolved_at.is_not(None),
            )
            .join(CharityHold, CharityHold.id == Allocation.hold_id)
            .where(CharityHold.hold_key.in_(keys))
        )
    ).all()
    lots = (
        await session.execute(
            select(
                DonationLot.donation_id,
                DonationLot.held_fen,
                DonationLot.allocated_fen,
                DonationLot.refunded_fen,
            ).where(DonationLot.donation_id.in_(donations))
        )
    ).all()
    entries = (
        await session.execute(
            select(
                JournalEntry.business_key,
                JournalEntry.kind,
                JournalEntry.memo,
                JournalEntry.refs,
                JournalEntry.content_hash,
                PostingRow.line_no,
                PostingRow.account_code,
                PostingRow.amount_fen,
            )
            .join(PostingRow, PostingRow.entry_id == JournalEntry.id)
            .where(JournalEntry.business_key.in_([f"hold:{k}:posted" for k in keys]))
        )
    ).all()
    balances = await ledger_service.balances(session, accounts)
    return {
        "holds": sorted(tuple(r) for r in holds),
        "allocations": sorted(
            (*r[:5], json.dumps(r[5], sort_keys=True, ensure_ascii=False), *r[6:]) for r in allocations
        ),
        "lots": sorted(tuple(r) for r in lots),
        "entries": sorted(
            (*r[:3], json.dumps(r[3], sort_keys=True, ensure_ascii=False), *r[4:]) for r in entries
        ),
        "accounts": {code: (b.balance_fen, b.held_fen) for code, b in balances.items()},
    }


async def _hold_row(session: AsyncSession, key: str) -> CharityHold | None:
    stmt = select(CharityHold).where(CharityHold.hold_key == key).execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


# ---------------------------------------------------------------- one by one == in a batch


async def test_a_batch_leaves_exactly_what_one_by_one_leaves(session: AsyncSession) -> None:
    rng = random.Random(20261128)
    canteens = [(await create_canteen(session)).id for _ in range(3)]
    foreign = await pool_free(session, GENERAL_MEAL_POOL)  # other tests' committed money, if any
    lots: list[tuple[uuid.UUID, str, int]] = []  # FIFO order
    for account, count, low, high in [
        (canteen_pool(canteens[0]), 4, 50, 700),
        (canteen_pool(canteens[1]), 4, 50, 700),
        (GENERAL_MEAL_POOL, 5, 100, 900),
    ]:  # the third canteen has no pool of its own: it draws on the general pool only
        for _ in range(count):
            amount = rng.randint(low, high)
            lots.append((await donate(session, account, amount), account, amount))
    donations = [d for d, _, _ in lots]
    accounts = (
        [canteen_pool(c) for c in canteens[:2]] + [GENERAL_MEAL_POOL] + [canteen_payable(c) for c in canteens]
    )
    available = sum([await pool_free(session, a) for a in accounts[:3]])
    requests = [
        Hold(unique("line"), rng.choice(canteens), rng.choice([0, 150, 300, 300, 450, 1200]), {"n": i})
        for i in range(40)
    ]
    # then two that ask for more than there is: every pool runs dry
    requests += [Hold(unique("line"), c, available + 1, {"n": "big"}) for c in canteens[:2]]
    keys = [r.hold_key for r in requests]
    served = [Meal(k, DAY, {"served": True, "n": i}) for i, k in enumerate(keys) if i % 3 == 0]
    voided = [k for i, k in enumerate(keys) if i % 3 == 1]

    one_by_one = await session.begin_nested()
    expected_held = {
        r.hold_key: await ledger_service.place_hold(
            session, hold_key=r.hold_key, canteen_id=r.canteen_id, amount_fen=r.amount_fen, meta=r.meta
        )
        for r in requests
    }
    placed = await _snapshot(session, keys, accounts, donations)
    expected_entries = {
        m.hold_key: await ledger_service.post_hold(
            session, hold_key=m.hold_key, service_date=m.service_date, meta=m.meta or {}
        )
        for m in served
    }
    for key in voided:
        await ledger_service.void_hold(session, hold_key=key)
    resolved = await _snapshot(session, keys, accounts, donations)
    await one_by_one.rollback()

    assert sum(expected_held.values()) == available  # every pool ran dry
    assert any(0 < expected_held[r.hold_key] < r.amount_fen for r in requests)  # partly funded
    assert any(expected_held[r.hold_key] == 0 < r.amount_fen for r in requests)  # not funded at all
    held = await ledger_service.place_holds(session, requests)
    assert held == expected_held
    assert await _snapshot(session, keys, accounts, donations) == placed
    if not foreign:  # and both are what FIFO over these lots gives, worked out by hand
        left = {d: amount for d, _, amount in lots}
        expected: list[tuple[str, uuid.UUID, int]] = []
        for r in requests:
            need = r.amount_fen
            for pool in (canteen_pool(r.canteen_id), GENERAL_MEAL_POOL):
                for d, account, _ in lots:
                    take = min(need, left[d]) if account == pool else 0
                    if take:
                        expected.append((r.hold_key, d, take))
                        left[d] -= take
                        need -= take
            assert held[r.hold_key] == r.amount_fen - need
        assert sorted((a[0], a[1], a[3]) for a in placed["allocations"]) == sorted(expected)
    entries = await ledger_service.post_holds(session, served)
    assert {k: e is None for k, e in entries.items()} == {k: e is None for k, e in expected_entries.items()}
    await ledger_service.void_holds(session, voided)
    assert await _snapshot(session, keys, accounts, donations) == resolved
    await _check_ok(session)


async def test_a_batch_spans_lots_and_runs_the_pools_dry(session: AsyncSession) -> None:
    canteen = (await create_canteen(session)).id
    pool = canteen_pool(canteen)
    free_general = await pool_free(session, GENERAL_MEAL_POOL)  # other tests' committed money comes first
    a = await donate(session, pool, 250)
    b = await donate(session, pool, 100)
    c = await donate(session, pool, 400)
    g = await donate(session, GENERAL_MEAL_POOL, 500)
    keys = [unique("line") for _ in range(7)]
    asks = [300, 300, 300, free_general + 200, 300, 300, 0]
    held = await ledger_service.place_holds(
        session, [Hold(k, canteen, ask, {"slot": "lunch"}) for k, ask in zip(keys, asks, strict=True)]
    )
    # 750 in the canteen's pool (a, b, c oldest first), then the general pool; the elder pays what is missing
    assert [held[k] for k in keys] == [300, 300, 300, free_general + 200, 150, 0, 0]
    assert await ledger_service.available_for_canteen(session, canteen_id=canteen) == 0

    rows = (
        await session.execute(
            select(CharityHold.hold_key, DonationLot.donation_id, Allocation.amount_fen)
            .join(CharityHold, CharityHold.id == Allocation.hold_id)
            .join(DonationLot, DonationLot.id == Allocation.lot_id)
            .where(CharityHold.hold_key.in_(keys[:3]))
        )
    ).all()
    assert sorted((keys.index(k), d, f) for k, d, f in rows if d in (a, b, c)) == sorted(
        [(0, a, 250), (0, b, 50), (1, b, 50), (1, c, 250), (2, c, 150)]
    )
    assert {(keys.index(k), f) for k, d, f in rows if d == g} == ({(2, 150)} if free_general == 0 else set())

    entries = await ledger_service.post_holds(session, [Meal(k, DAY, {"served": True}) for k in keys])
    assert entries[keys[5]] is None and entries[keys[6]] is None
    spanning = entries[keys[2]]
    assert spanning is not None and spanning.business_key == f"hold:{keys[2]}:posted"
    lines = (
        await session.execute(
            select(PostingRow.account_code, PostingRow.amount_fen).where(PostingRow.entry_id == spanning.id)
        )
    ).all()
    assert sorted(lines) == sorted([(pool, 150), (GENERAL_MEAL_POOL, 150), (canteen_payable(canteen), -300)])
    traces = {d: await ledger_service.donation_trace(session, donation_id=d) for d in (a, b, c, g)}
    assert [traces[d]["spent_fen"] for d in (a, b, c, g)] == [250, 100, 400, 500]
    assert all(t["held_fen"] == 0 and t["unused_fen"] == 0 for t in traces.values())
    assert [m["service_date"] for m in traces[a]["meals"]] == [DAY.isoformat()]
    payable = await ledger_service.balances(session, [canteen_payable(canteen)])
    assert payable[canteen_payable(canteen)].balance_fen == -(1250 + free_general)
    await _check_ok(session)


# ---------------------------------------------------------------- replays and refusals


async def test_replays_inside_and_across_batches(session: AsyncSession) -> None:
    canteen = (await create_canteen(session)).id
    other = (await create_canteen(session)).id
    pool = canteen_pool(canteen)
    if await pool_free(session, GENERAL_MEAL_POOL):
        pytest.skip("general pool has committed money from another test")
    await donate(session, pool, 1000)
    k1, k2, k3, k4, k5 = (unique("line") for _ in range(5))

    # a key given twice in one batch is a replay of its first request
    first = [Hold(k1, canteen, 300), Hold(k2, canteen, 300), Hold(k1, canteen, 300), Hold(k3, canteen, 0)]
    assert await ledger_service.place_holds(session, first) == {k1: 300, k2: 300, k3: 0}
    assert await pool_free(session, pool) == 400
    count = select(func.count()).select_from(CharityHold).where(CharityHold.hold_key.in_([k1, k2, k3]))
    assert await session.scalar(count) == 3
    assert (
        await session.scalar(
            select(func.count()).select_from(Allocation).join(CharityHold).where(CharityHold.hold_key == k1)
        )
        == 1
    )

    # across batches: the replays answer what they got, only the new key reserves (what is left)
    again = [Hold(k2, canteen, 300), Hold(k4, canteen, 500), Hold(k1, canteen, 300)]
    assert await ledger_service.place_holds(session, again) == {k2: 300, k4: 400, k1: 300}
    assert await ledger_service.place_hold(session, hold_key=k4, canteen_id=canteen, amount_fen=500) == 400
    assert await pool_free(session, pool) == 0
    before = await _snapshot(session, [k1, k2, k3, k4, k5], [pool], [])

    # refused as a whole: nothing of the batch stays behind, not even the new key's hold row
    for bad in (
        [Hold(k5, canteen, 100), Hold(k5, canteen, 200)],
        [Hold(k5, canteen, 100), Hold(k1, canteen, 299)],
        [Hold(k5, canteen, 100), Hold(k1, other, 300)],
    ):
        with pytest.raises(Conflict) as err:
            await ledger_service.place_holds(session, bad)
        assert err.value.error_code == "HoldKeyReused"
        assert await _hold_row(session, k5) is None
    await ledger_service.void_holds(session, [k2])
    with pytest.raises(Conflict) as err:
        await ledger_service.place_holds(session, [Hold(k5, canteen, 100), Hold(k2, canteen, 300)])
    assert err.value.error_code == "HoldAlreadyVoided"
    # the first refused request in order decides the answer, as one by one would
    with pytest.raises(Conflict) as err:
        await ledger_service.place_holds(session, [Hold(k2, canteen, 300), Hold(k1, canteen, 1)])
    assert err.value.error_code == "HoldAlreadyVoided"
    with pytest.raises(Conflict) as err:
        await ledger_service.place_holds(session, [Hold(k1, canteen, 1), Hold(k2, canteen, 300)])
    assert err.value.error_code == "HoldKeyReused"
    # bad input or an unknown canteen anywhere refuses before anything is claimed
    with pytest.raises(BadRequest):
        await ledger_service.place_holds(session, [Hold(k5, canteen, 100), Hold("", canteen, 1)])
    with pytest.raises(BadRequest):
        await ledger_service.place_holds(session, [Hold(k5, canteen, 100), Hold(unique("l"), canteen, -1)])
    with pytest.raises(NotFound):
        await ledger_service.place_holds(
            session, [Hold(k5, canteen, 100), Hold(unique("l"), uuid.uuid4(), 1)]
        )
    assert await _hold_row(session, k5) is None
    after = await _snapshot(session, [k1, k2, k3, k4, k5], [pool], [])
    assert after["holds"] == [h if h[0] != k2 else (*h[:4], "voided", *h[5:6], True) for h in before["holds"]]
    assert await pool_free(session, pool) == 300  # k2's reservation went back
    assert await ledger_service.place_holds(session, []) == {}
    await _check_ok(session)


async def test_posting_a_mix_of_held_posted_zero_unknown_and_voided(session: AsyncSession) -> None:
    canteen = (await create_canteen(session)).id
    pool = canteen_pool(canteen)
    if await pool_free(session, GENERAL_MEAL_POOL):
        pytest.skip("general pool has committed money from another test")
    d = await donate(session, pool, 1000)
    held, posted, zero, voided, unknown = (unique("line") for _ in range(5))
    placed = await ledger_service.place_holds(
        session,
        [
            Hold(held, canteen, 300, {"slot": "lunch"}),
            Hold(posted, canteen, 200, {"slot": "dinner"}),
            Hold(zero, canteen, 0),
            Hold(voided, canteen, 100),
        ],
    )
    assert placed == {held: 300, posted: 200, zero: 0, voided: 100}
    earlier = await ledger_service.post_hold(session, hold_key=posted, service_date=DAY, meta={})
    assert earlier is not None
    await ledger_service.void_hold(session, hold_key=voided)
    trace_before = await ledger_service.donation_trace(session, donation_id=d)

    # a voided hold anywhere refuses the whole batch before anything is written
    with pytest.raises(Conflict) as err:
        await ledger_service.post_holds(session, [Meal(held, DAY), Meal(posted, DAY), Meal(voided, DAY)])
    assert err.value.error_code == "HoldAlreadyVoided"
    assert await ledger_service.donation_trace(session, donation_id=d) == trace_before
    row = await _hold_row(session, held)
    assert row is not None and row.status == "held"

    out = await ledger_service.post_holds(
        session,
        [
            Meal(held, DAY, {"served": True}),
            Meal(posted, DAY),
            Meal(zero, DAY),
            Meal(unknown, DAY),
            Meal(held, date(2026, 3, 6), {"other": True}),  # a replay of the first: changes nothing
        ],
    )
    assert set(out) == {held, posted, zero, unknown}
    assert out[posted] is not None and out[posted].id == earlier.id
    assert out[zero] is None and out[unknown] is None
    entry = out[held]
    assert entry is not None and entry.business_key == f"hold:{held}:posted" and entry.kind == "meal_subsidy"
    assert entry.memo == "助餐补贴（已用餐）"
    assert entry.refs == {
        "hold_key": held,
        "canteen_id": str(canteen),
        "service_date": DAY.isoformat(),
        "donations": [str(d)],
    }
    lines = (
        await session.execute(
            select(PostingRow.line_no, PostingRow.account_code, PostingRow.amount_fen)
            .where(PostingRow.entry_id == entry.id)
            .order_by(PostingRow.line_no)
        )
    ).all()
    assert [tuple(r) for r in lines] == [(1, pool, 300), (2, canteen_payable(canteen), -300)]
    zero_row = await _hold_row(session, zero)
    assert zero_row is not None and zero_row.status == "posted" and zero_row.entry_id is None
    trace = await ledger_service.donation_trace(session, donation_id=d)
    assert trace["spent_fen"] == 500 and trace["held_fen"] == 0 and trace["unused_fen"] == 500
    meal = next(m for m in trace["meals"] if m["entry_id"] == str(entry.id))
    assert meal["slot"] == "lunch" and meal["served"] is True and "other" not in meal
    assert meal["service_date"] == DAY.isoformat()

    again = await ledger_service.post_holds(session, [Meal(posted, DAY), Meal(held, DAY)])
    assert {k: e.id for k, e in again.items() if e} == {posted: earlier.id, held: entry.id}
    assert (
        await session.scalar(
            select(func.count())
            .select_from(JournalEntry)
            .where(JournalEntry.kind == "meal_subsidy")
            .where(JournalEntry.business_key.in_([f"hold:{k}:posted" for k in (held, posted, zero)]))
        )
        == 2
    )

    # voiding: a posted hold anywhere refuses the whole batch; the rest is voided once
    later = unique("line")
    assert await ledger_service.place_hold(session, hold_key=later, canteen_id=canteen, amount_fen=100) == 100
    with pytest.raises(Conflict) as err:
        await ledger_service.void_holds(session, [later, held])
    assert err.value.error_code == "HoldAlreadyPosted"
    assert await pool_free(session, pool) == 400
    await ledger_service.void_holds(session, [later, unknown, voided, later])
    assert await pool_free(session, pool) == 500
    later_row = await _hold_row(session, later)
    assert later_row is not None and later_row.status == "voided"
    await _check_ok(session)


async def test_a_batch_costs_the_same_statements_as_one(session: AsyncSession) -> None:
    canteen = (await create_canteen(session)).id
    await donate(session, canteen_pool(canteen), 100_000)
    warm = unique("line")  # the canteen's payable account exists from here on
    await ledger_service.place_hold(session, hold_key=warm, canteen_id=canteen, amount_fen=10)
    await ledger_service.post_hold(session, hold_key=warm, service_date=DAY, meta={})
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sync = (await session.connection()).sync_connection
    assert sync is not None
    event.listen(sync, "before_cursor_execute", count)
    try:
        costs = []
        for size in (1, 60):
            keys = [unique("line") for _ in range(size)]
            del statements[:]
            await ledger_service.place_holds(session, [Hold(k, canteen, 300, {"n": 1}) for k in keys])
            placing = len(statements)
            del statements[:]
            await ledger_service.post_holds(session, [Meal(k, DAY) for k in keys])
            costs.append((placing, len(statements)))
    finally:
        event.remove(sync, "before_cursor_execute", count)
    assert costs[0] == costs[1], costs
    assert costs[0][0] <= 8 and costs[0][1] <= 13, costs
    await _check_ok(session)


async def test_the_no_show_job_voids_its_meals_holds_in_one_batch(session: AsyncSession) -> None:
    """``charity.on_released_many`` (the no-show job): every missed meal's hold is voided and its money is free
    again; meals held for others are untouched; no meals, no work."""
    from app.bookings import charity

    canteen = (await create_canteen(session)).id
    pool = canteen_pool(canteen)
    await donate(session, pool, 1000)
    lines = [uuid.uuid4() for _ in range(4)]
    await ledger_service.place_holds(session, [Hold(charity.hold_key(line), canteen, 200) for line in lines])
    assert await pool_free(session, pool) == 200

    await charity.on_released_many(session, booking_line_ids=[])
    await charity.on_released_many(session, booking_line_ids=lines[:3])
    statuses = dict(
        (
            await session.execute(
                select(CharityHold.hold_key, CharityHold.status).where(
                    CharityHold.hold_key.in_([charity.hold_key(line) for line in lines])
                )
            )
        ).all()
    )
    assert statuses == {
        **{charity.hold_key(line): "voided" for line in lines[:3]},
        charity.hold_key(lines[3]): "held",
    }
    assert await pool_free(session, pool) == 800
    await _check_ok(session)


# ---------------------------------------------------------------- races on real commits


async def _check_committed() -> None:
    async with unit_of_work() as s:
        await _check_ok(s)


async def test_concurrent_batches_on_one_pool_never_overdraw(committed: Database) -> None:
    canteen, donations = await canteen_with_money(700, 500, 300, 1000)  # 2,500 fen in four lots

    async def place(tag: str) -> dict[str, int]:
        async with unit_of_work() as s:
            return await ledger_service.place_holds(s, [Hold(f"{tag}-{i}", canteen, 300) for i in range(6)])

    results = await asyncio.gather(*(place(tag) for tag in "abcd"))
    amounts = [v for r in results for v in r.values()]
    assert sum(amounts) == 2500
    assert sorted(v for v in amounts if v) == [100] + [300] * 8
    for r in results:  # within a batch, FIFO in request order: full, then the rest, then nothing
        assert list(r.values()) == sorted(r.values(), reverse=True)
    async with unit_of_work() as s:
        lots = (await s.execute(select(DonationLot).where(DonationLot.donation_id.in_(donations)))).scalars()
        assert all(lot.held_fen == lot.amount_fen for lot in lots)
        acc = await s.get(LedgerAccount, canteen_pool(canteen))
        assert acc is not None and acc.held_fen == 2500 and -acc.balance_fen == 2500
    await _check_committed()


async def test_concurrent_batches_with_the_same_keys_in_any_order_do_not_deadlock(
    committed: Database,
) -> None:
    canteen, _ = await canteen_with_money(1000, 1000)
    keys = [f"line-{i:02d}" for i in range(30)]

    async def place(order: list[str]) -> dict[str, int]:
        async with unit_of_work() as s:
            return await ledger_service.place_holds(s, [Hold(k, canteen, 50) for k in order])

    first, second = await asyncio.gather(place(keys), place(keys[::-1]))
    assert first == second == {k: 50 for k in keys}  # one placed them, the other replayed them
    async with unit_of_work() as s:
        assert await pool_free(s, canteen_pool(canteen)) == 2000 - 30 * 50

    async def post(order: list[str]) -> dict[str, uuid.UUID | None]:
        async with unit_of_work() as s:
            out = await ledger_service.post_holds(s, [Meal(k, DAY) for k in order])
            return {k: e.id if e else None for k, e in out.items()}

    a, b = await asyncio.gather(post(keys[:20]), post(keys[10:][::-1]))
    assert {k: a[k] for k in keys[10:20]} == {k: b[k] for k in keys[10:20]}  # the overlap posted once
    async with unit_of_work() as s:
        entries = await s.scalar(
            select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "meal_subsidy")
        )
    assert entries == 30
    await _check_committed()


async def test_big_batches_claiming_the_same_keys_in_opposite_orders_do_not_deadlock(
    committed: Database,
) -> None:
    async with unit_of_work() as s:
        canteen = (await create_canteen(s)).id
    keys = [f"line-{i:04d}" for i in range(3000)]  # long enough statements to overlap

    async def place(order: list[str]) -> dict[str, int]:
        async with unit_of_work() as s:
            return await ledger_service.place_holds(s, [Hold(k, canteen, 0) for k in order])

    for _ in range(3):
        random.shuffle(keys)
        first, second = await asyncio.gather(place(keys), place(keys[::-1]))
        assert first == second == {k: 0 for k in keys}
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(CharityHold)) == 3000


async def test_a_batch_post_racing_a_batch_void_has_one_outcome(committed: Database) -> None:
    canteen, donations = await canteen_with_money(3000)
    keys = [f"line-{i:02d}" for i in range(10)]
    async with unit_of_work() as s:
        await ledger_service.place_holds(s, [Hold(k, canteen, 300) for k in keys])

    async def post() -> str:
        async with unit_of_work() as s:
            await ledger_service.post_holds(s, [Meal(k, DAY) for k in keys])
        return "posted"

    async def void() -> str:
        async with unit_of_work() as s:
            await ledger_service.void_holds(s, keys[::-1])
        return "voided"

    results = await asyncio.gather(post(), void(), return_exceptions=True)
    outcomes = [r for r in results if isinstance(r, str)]
    assert len(outcomes) == 1, results
    refused = [r for r in results if not isinstance(r, str)]
    assert len(refused) == 1 and isinstance(refused[0], Conflict)
    assert refused[0].error_code == ("HoldAlreadyVoided" if outcomes == ["voided"] else "HoldAlreadyPosted")
    async with unit_of_work() as s:
        statuses = (
            await s.execute(select(CharityHold.status).where(CharityHold.hold_key.in_(keys)))
        ).scalars()
        assert set(statuses) == {outcomes[0]}
        trace = await ledger_service.donation_trace(s, donation_id=donations[0])
    assert trace["held_fen"] == 0
    assert trace["spent_fen"] == (3000 if outcomes == ["posted"] else 0)
    await _check_committed()


async def test_concurrent_posts_and_placements_on_one_pool_do_not_deadlock(committed: Database) -> None:
    """Each post inserts postings on the pool (a key-share lock on its row) and then locks the pool to move
    the held money: with ``FOR UPDATE`` two such posts deadlocked; ``FOR NO KEY UPDATE`` does not."""
    canteen, _ = await canteen_with_money(*([1000] * 40))
    async with unit_of_work() as s:
        await ledger_service.place_holds(s, [Hold(f"p-{i:03d}", canteen, 100) for i in range(200)])

    async def post(keys: list[str]) -> None:
        async with unit_of_work() as s:
            await ledger_service.post_holds(s, [Meal(k, DAY) for k in keys])

    async def place(keys: list[str]) -> None:
        async with unit_of_work() as s:
            await ledger_service.place_holds(s, [Hold(k, canteen, 100) for k in keys])

    for round_ in range(4):
        posted = [f"p-{i:03d}" for i in range(round_ * 50, round_ * 50 + 50)]
        await asyncio.gather(
            post(posted[:25]),
            post(posted[25:]),
            place([f"n-{round_}-{i}" for i in range(25)]),
            place([f"m-{round_}-{i}" for i in range(25)]),
        )
    async with unit_of_work() as s:
        entries = await s.scalar(
            select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "meal_subsidy")
        )
        acc = await s.get(LedgerAccount, canteen_pool(canteen))
    assert entries == 200
    assert acc is not None and -acc.balance_fen == 40_000 - 200 * 100 and acc.held_fen == 200 * 100
    await _check_committed()
