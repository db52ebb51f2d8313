from __future__ import annotations

import uuid
from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.exceptions import BadRequest, Conflict, NotFound
from app.ledger.service import GENERAL_MEAL_POOL, canteen_payable, canteen_pool, ledger_service
from app.models import Allocation, CharityHold, LedgerAccount
from app.models import Posting as PostingRow
from tests.fixtures.factories import create_canteen, unique
from tests.ledger.helpers import donate, pool_free

MEAL = {"slot": "lunch", "age_band": "80+"}


async def test_fifo_canteen_pool_first_then_general_pool(session: AsyncSession) -> None:
    canteen = await create_canteen(session)
    pool = canteen_pool(canteen.id)
    general_before = await pool_free(session, GENERAL_MEAL_POOL)
    old = await donate(session, pool, 300)
    new = await donate(session, pool, 300)
    gen = await donate(session, GENERAL_MEAL_POOL, 1000)
    assert await ledger_service.available_for_canteen(session, canteen_id=canteen.id) == 1600 + general_before

    key = unique("line")
    held = await ledger_service.place_hold(session, hold_key=key, canteen_id=canteen.id, amount_fen=500)
    assert held == 500
    assert (await ledger_service.donation_trace(session, donation_id=old))["held_fen"] == 300
    assert (await ledger_service.donation_trace(session, donation_id=new))["held_fen"] == 200
    assert (await ledger_service.donation_trace(session, donation_id=gen))["held_fen"] == 0
    assert await pool_free(session, pool) == 100

    # a bigger meal spills over to the general pool (older general lots first, ours is the newest)
    key2 = unique("line")
    assert (
        await ledger_service.place_hold(session, hold_key=key2, canteen_id=canteen.id, amount_fen=150) == 150
    )
    assert await pool_free(session, pool) == 0
    assert await pool_free(session, GENERAL_MEAL_POOL) == general_before + 1000 - 50

    # replay of the same hold key: same answer, nothing more reserved
    assert (
        await ledger_service.place_hold(session, hold_key=key, canteen_id=canteen.id, amount_fen=500) == 500
    )
    with pytest.raises(Conflict):
        await ledger_service.place_hold(session, hold_key=key, canteen_id=canteen.id, amount_fen=400)
    assert await pool_free(session, pool) == 0


async def test_hold_gets_what_is_left_or_zero(session: AsyncSession) -> None:
    # the general pool may hold other tests' committed money; measure what is free first
    canteen = await create_canteen(session)
    free_general = await pool_free(session, GENERAL_MEAL_POOL)
    await donate(session, canteen_pool(canteen.id), 200)
    ask = 200 + free_general + 1000
    held = await ledger_service.place_hold(
        session, hold_key=unique("h"), canteen_id=canteen.id, amount_fen=ask
    )
    assert held == 200 + free_general
    assert await ledger_service.available_for_canteen(session, canteen_id=canteen.id) == 0
    assert (
        await ledger_service.place_hold(session, hold_key=unique("h"), canteen_id=canteen.id, amount_fen=50)
        == 0
    )
    assert (
        await ledger_service.place_hold(session, hold_key=unique("h"), canteen_id=canteen.id, amount_fen=0)
        == 0
    )


async def test_hold_bad_input(session: AsyncSession) -> None:
    canteen = await create_canteen(session)
    with pytest.raises(NotFound):
        await ledger_service.place_hold(session, hold_key=unique("h"), canteen_id=uuid.uuid4(), amount_fen=1)
    for amount in (-1, 1.5, "3"):
        with pytest.raises(BadRequest):
            await ledger_service.place_hold(
                session, hold_key=unique("h"), canteen_id=canteen.id, amount_fen=amount
            )  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        await ledger_service.place_hold(session, hold_key="", canteen_id=canteen.id, amount_fen=1)


async def test_post_hold_pays_canteen_and_traces_meal(session: AsyncSession) -> None:
    canteen = await create_canteen(session)
    pool = canteen_pool(canteen.id)
    d = await donate(session, pool, 1000)
    key = unique("line")
    await ledger_service.place_hold(session, hold_key=key, canteen_id=canteen.id, amount_fen=300)
    entry = await ledger_service.post_hold(session, hold_key=key, service_date=date(2026, 3, 5), meta=MEAL)
    assert entry is not None and entry.kind == "meal_subsidy"
    rows = (await session.execute(select(PostingRow).where(PostingRow.entry_id == entry.id))).scalars().all()
    assert {(r.account_code, r.amount_fen) for r in rows} == {
        (pool, 300),
        (canteen_payable(canteen.id), -300),
    }
    payable = (await ledger_service.balances(session, [canteen_payable(canteen.id)]))[
        canteen_payable(canteen.id)
    ]
    assert payable.balance_fen == -300
    # kept by the sealer, not by the posting transaction: the cached row catches up when sealed
    await ledger_service.seal(session)
    row = await session.get(LedgerAccount, canteen_payable(canteen.id), populate_existing=True)
    assert row is not None and row.balance_fen == -300

    again = await ledger_service.post_hold(session, hold_key=key, service_date=date(2026, 3, 5), meta=MEAL)
    assert again is not None and again.id == entry.id
    with pytest.raises(Conflict) as err:
        await ledger_service.void_hold(session, hold_key=key)
    assert err.value.error_code == "HoldAlreadyPosted"

    trace = await ledger_service.donation_trace(session, donation_id=d)
    assert trace["paid_fen"] == 1000 and trace["spent_fen"] == 300 and trace["unused_fen"] == 700
    assert trace["meals"] == [
        {
            "slot": "lunch",
            "age_band": "80+",
            "service_date": "2026-03-05",
            "amount_fen": 300,
            "canteen_id": str(canteen.id),
            "from_account": pool,
            "entry_id": str(entry.id),
        }
    ]
    assert await ledger_service.refundable_fen(session, donation_id=d) == 700
    assert (await ledger_service.check(session))["ok"]


async def test_void_hold_releases_to_lots(session: AsyncSession) -> None:
    canteen = await create_canteen(session)
    pool = canteen_pool(canteen.id)
    d = await donate(session, pool, 500)
    key = unique("line")
    await ledger_service.place_hold(session, hold_key=key, canteen_id=canteen.id, amount_fen=500)
    assert await ledger_service.refundable_fen(session, donation_id=d) == 0
    await ledger_service.void_hold(session, hold_key=key)
    await ledger_service.void_hold(session, hold_key=key)  # idempotent
    assert await ledger_service.refundable_fen(session, donation_id=d) == 500
    assert await pool_free(session, pool) == 500
    hold = (await session.execute(select(CharityHold).where(CharityHold.hold_key == key))).scalar_one()
    assert hold.status == "voided"
    statuses = (
        await session.execute(select(Allocation.status).where(Allocation.hold_id == hold.id))
    ).scalars()
    assert set(statuses) == {"voided"}
    with pytest.raises(Conflict) as err:
        await ledger_service.post_hold(session, hold_key=key, service_date=date(2026, 3, 5), meta={})
    assert err.value.error_code == "HoldAlreadyVoided"
    with pytest.raises(Conflict):
        await ledger_service.place_hold(session, hold_key=key, canteen_id=canteen.id, amount_fen=500)
    # unknown holds: nothing to do
    assert (
        await ledger_service.post_hold(session, hold_key=unique("x"), service_date=date(2026, 3, 5), meta={})
        is None
    )
    await ledger_service.void_hold(session, hold_key=unique("x"))
    assert (await ledger_service.check(session))["ok"]


async def test_zero_hold_posts_nothing(session: AsyncSession) -> None:
    canteen = await create_canteen(session)
    key = unique("line")
    free_general = await pool_free(session, GENERAL_MEAL_POOL)
    if free_general:
        pytest.skip("general pool has committed money from another test")
    assert await ledger_service.place_hold(session, hold_key=key, canteen_id=canteen.id, amount_fen=100) == 0
    assert (
        await ledger_service.post_hold(session, hold_key=key, service_date=date(2026, 3, 5), meta={}) is None
    )


async def test_fifo_pages_through_many_small_lots(session: AsyncSession) -> None:
    canteen = await create_canteen(session)
    pool = canteen_pool(canteen.id)
    donations = [await donate(session, pool, 2) for _ in range(70)]
    held = await ledger_service.place_hold(
        session, hold_key=unique("h"), canteen_id=canteen.id, amount_fen=121
    )
    assert held == 121
    helds = [(await ledger_service.donation_trace(session, donation_id=d))["held_fen"] for d in donations]
    assert helds == [2] * 60 + [1] + [0] * 9
    assert (await ledger_service.check(session))["ok"]


async def test_reserved_meals_show_in_trace_and_keep_their_meta(session: AsyncSession) -> None:
    canteen = await create_canteen(session)
    d = await donate(session, canteen_pool(canteen.id), 1000)
    key = unique("line")
    placed = {"service_date": "2026-03-06", "slot": "dinner", "age_band": "60-79"}
    await ledger_service.place_hold(session, hold_key=key, canteen_id=canteen.id, amount_fen=250, meta=placed)
    trace = await ledger_service.donation_trace(session, donation_id=d)
    assert trace["held_fen"] == 250 and trace["meals"] == []
    assert trace["reserved"] == [
        {**placed, "amount_fen": 250, "canteen_id": str(canteen.id), "from_account": canteen_pool(canteen.id)}
    ]
    await ledger_service.post_hold(
        session, hold_key=key, service_date=date(2026, 3, 6), meta={"served_by": "code"}
    )
    trace = await ledger_service.donation_trace(session, donation_id=d)
    assert trace["reserved"] == [] and len(trace["meals"]) == 1
    meal = trace["meals"][0]
    assert meal["slot"] == "dinner" and meal["age_band"] == "60-79" and meal["served_by"] == "code"
    assert meal["service_date"] == "2026-03-06" and meal["amount_fen"] == 250
    unknown = await ledger_service.donation_trace(session, donation_id=uuid.uuid4())
    assert unknown["recorded"] is False and unknown["paid_fen"] == 0
