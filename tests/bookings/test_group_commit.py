"""Booking requests by group commit: the requests a process has waiting go into one transaction
(``booking_batch``), and each is answered as if it had been alone."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.subject import Subject
from app.bookings import service as booking_module
from app.bookings.schemas import BookingRequest
from app.bookings.service import BookingAsk, booking_batch, booking_service, caller_batch
from app.db import Database, unit_of_work
from app.exceptions import Conflict, NotFound
from app.kit.background import Again
from app.kit.time import utcnow
from app.models import Booking, IdempotencyKey, JobOutbox, MealNotification, SlotDay, User
from tests.bookings.helpers import DAY, MORNING, World, arrange, body, key, set_now
from tests.fixtures.factories import create_elder, unique


async def _subject(session: AsyncSession, openid: str) -> Subject:
    user = (await session.execute(select(User).where(User.openid == openid))).scalar_one()
    return Subject(user.id, openid, uuid.uuid4(), utcnow() + timedelta(hours=1))


def _ask(subject: Subject, request: dict[str, Any], key: str | None = None) -> BookingAsk:
    return booking_module._ask(subject, BookingRequest.model_validate(request), key or unique("idem-"))


async def _keys(session: AsyncSession, *keys: str) -> set[str]:
    found = await session.execute(select(IdempotencyKey.key).where(IdempotencyKey.key.in_(keys)))
    return set(found.scalars())


async def test_each_request_of_a_batch_is_answered_as_if_alone(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction, five requests: a booking; the same key again (it waits for the first one's commit);
    a stranger's request for the elder (404, its key not kept); the elder's second lunch that day, at the other
    canteen (one of the two gets the day's subsidy, the other is at full price, as for two requests at once);
    an item not on the menu (409, its key not kept). Nothing is written for the refused ones."""
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    stranger = unique("stranger")
    await create_elder(session, district_code=w.district, family_openids=(stranger,))
    family = await _subject(session, w.family_openid)
    keys = [unique("idem-") for _ in range(4)]
    not_on_menu = body(w) | {"items": [{"menu_item_id": str(uuid.uuid4()), "quantity": 1}]}
    asks = [
        _ask(family, body(w), keys[0]),
        _ask(family, body(w), keys[0]),
        _ask(await _subject(session, stranger), body(w), keys[1]),
        _ask(family, body(w, canteen=w.other_canteen), keys[2]),
        _ask(family, not_on_menu, keys[3]),
    ]
    first, again, strangers, second, off_menu = await booking_service.book_many(session, asks)

    assert isinstance(first, tuple) and first[1] is True and first[0].canteen_id == w.canteen.id
    assert isinstance(again, Again) and again.item is asks[1]
    assert isinstance(strangers, NotFound) and strangers.error_code == "ElderNotFound"
    assert isinstance(second, tuple) and second[1] is True and second[0].canteen_id == w.other_canteen.id
    subsidized = [b for b, _ in (first, second) if b.subsidized]
    assert len(subsidized) == 1 and subsidized[0].gov_subsidy_fen == 900 and subsidized[0].self_pay_fen == 300
    full_price = next(b for b, _ in (first, second) if not b.subsidized)
    assert full_price.gov_subsidy_fen == 0 and full_price.self_pay_fen == 1200
    assert isinstance(off_menu, Conflict) and off_menu.error_code == "MenuItemNotFound"

    bookings = (await session.execute(select(Booking).where(Booking.elder_id == w.elder.id))).scalars().all()
    assert {b.id for b in bookings} == {first[0].id, second[0].id}
    assert await _keys(session, *keys) == {keys[0], keys[2]}  # the refused requests' keys can be used again
    messages = (await session.execute(select(MealNotification.booking_id))).scalars().all()
    assert sorted(messages) == sorted([first[0].id] * 2 + [second[0].id] * 2)  # the elder and the family
    assert await session.scalar(select(func.count()).select_from(JobOutbox)) == 4  # a send job each


async def test_a_batch_writes_each_kind_of_row_in_one_statement(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three bookings in one transaction: one claiming statement, one look-up of their meals, one statement for
    the bookings with their lines and one for the messages with their jobs' outbox rows, then the commit."""
    set_now(monkeypatch, MORNING)
    w, _, subject, elder_ids = await _family_of_elders(3, capacity=100)
    asks = [_ask(subject, body(w) | {"elder_id": e}) for e in elder_ids]
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(" ".join(str(args[2]).split()))

    engine = committed.engine.sync_engine
    monkeypatch.setattr(engine, "_has_events", engine._has_events)  # SQLAlchemy never clears it on removal
    event.listen(engine, "before_cursor_execute", count)
    try:
        async with unit_of_work() as s:
            results = await booking_service.book_many(s, asks)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert all(isinstance(r, tuple) and r[1] for r in results), results
    claim, meals, bookings, messages = sent
    assert "INSERT INTO idempotency_keys" in claim
    assert "JOIN canteens" in meals
    assert "INSERT INTO bookings" in bookings and "INSERT INTO booking_lines" in bookings
    assert "INSERT INTO meal_notifications" in messages and "INSERT INTO job_outbox" in messages
    async with unit_of_work() as s:
        made = (await s.execute(select(Booking).where(Booking.canteen_id == w.canteen.id))).scalars().all()
        assert len(made) == 3 and len({b.serve_code for b in made}) == 3
        assert await s.scalar(select(SlotDay.booked_meals).where(SlotDay.canteen_id == w.canteen.id)) == 3
        assert await s.scalar(select(func.count()).select_from(MealNotification)) == 3  # the family member
        assert await s.scalar(select(func.count()).select_from(JobOutbox)) == 3


async def _family_of_elders(n: int, *, capacity: int) -> tuple[World, str, Subject, list[str]]:
    """A lunch of ``capacity`` seats and a family member bound to ``n`` elders (committed): the world, the
    member's openid and subject, the elders' ids."""
    async with unit_of_work() as s:
        w = await arrange(s, capacity=capacity)
        family = unique("fam")
        elders = [await create_elder(s, district_code=w.district, family_openids=(family,)) for _ in range(n)]
        subject = await _subject(s, family)
    return w, family, subject, [str(elder.id) for elder, _ in elders]


def _sized(monkeypatch: pytest.MonkeyPatch, before_commit: Any = None) -> list[int]:
    """The sizes of the batches ``booking_batch`` runs from here on; ``before_commit(asks)``, if given, is
    awaited after each batch's statements, before its commit."""
    sizes: list[int] = []
    run = booking_batch.run

    async def counted(session: AsyncSession, asks: list[BookingAsk]) -> Any:
        sizes.append(len(asks))
        results = await run(session, asks)
        if before_commit is not None:
            await before_commit(asks)
        return results

    monkeypatch.setattr(booking_batch, "run", counted)
    return sizes


async def _written(w: World, booked: list[tuple[Any, bool]], seats: int) -> None:
    """Only ``booked`` is kept: the seats taken, their bookings, keys, messages and jobs."""
    async with unit_of_work() as s:
        assert await s.scalar(select(SlotDay.booked_meals).where(SlotDay.canteen_id == w.canteen.id)) == seats
        made = (await s.execute(select(Booking.id))).scalars().all()
        assert sorted(made) == sorted(out.id for out, _ in booked)
        assert await s.scalar(select(func.count()).select_from(IdempotencyKey)) == len(booked)
        assert await s.scalar(select(func.count()).select_from(MealNotification)) == len(booked)
        assert await s.scalar(select(func.count()).select_from(JobOutbox)) == len(booked)


async def test_requests_beyond_the_seats_left_wait_for_the_batchs_commit(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five requests waiting together for a slot with three seats: the batch books three and leaves two for
    after its commit, which then find the slot full and get the plain 409. No commit is refused, and nothing of
    the two is kept."""
    set_now(monkeypatch, MORNING)
    w, _, subject, elder_ids = await _family_of_elders(5, capacity=3)
    sizes = _sized(monkeypatch)
    asks = [_ask(subject, body(w) | {"elder_id": e}) for e in elder_ids]
    outcomes = await asyncio.gather(
        *(booking_batch.submit(unit_of_work, ask) for ask in asks), return_exceptions=True
    )
    assert sizes == [5, 2]
    booked = [o for o in outcomes[:3] if isinstance(o, tuple)]
    assert len(booked) == 3 and all(created for _, created in booked)
    refused = outcomes[3:]
    assert all(isinstance(o, Conflict) and o.error_code == "SlotFull" for o in refused), refused
    await _written(w, booked, 3)


async def test_a_seat_an_earlier_request_did_not_take_goes_to_one_left_for_later(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three seats, and a batch of five: a stranger's request for an elder first (the claim counts its seat,
    the meal look-up refuses it: 404), then four of the family's elders. Two are booked with it, two left for
    later; after the commit the first of those takes the seat the stranger did not, and the last, left again,
    runs alone and finds the slot full. Each request runs at most three times, and no seat is lost."""
    set_now(monkeypatch, MORNING)
    w, _, subject, elder_ids = await _family_of_elders(4, capacity=3)
    stranger = unique("stranger")
    async with unit_of_work() as s:
        await create_elder(s, district_code=w.district, family_openids=(stranger,))
        strangers = await _subject(s, stranger)
    sizes = _sized(monkeypatch)
    asks = [_ask(strangers, body(w) | {"elder_id": elder_ids[0]})]
    asks += [_ask(subject, body(w) | {"elder_id": e}) for e in elder_ids]
    outcomes = await asyncio.gather(
        *(booking_batch.submit(unit_of_work, ask) for ask in asks), return_exceptions=True
    )
    assert sizes == [5, 2, 1]
    assert isinstance(outcomes[0], NotFound) and outcomes[0].error_code == "ElderNotFound"
    booked = [o for o in outcomes[1:4] if isinstance(o, tuple)]
    assert len(booked) == 3, outcomes
    assert isinstance(outcomes[4], Conflict) and outcomes[4].error_code == "SlotFull"
    await _written(w, booked, 3)


async def test_a_replay_in_a_batch_takes_no_seat_from_the_requests_after_it(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two seats, one booked. A batch of its replay and another elder's request: the replay gets its booking
    back, and the other takes the last seat in the same batch, not after it."""
    set_now(monkeypatch, MORNING)
    w, _, subject, elder_ids = await _family_of_elders(2, capacity=2)
    sizes = _sized(monkeypatch)
    first = _ask(subject, body(w) | {"elder_id": elder_ids[0]})
    made = await booking_batch.submit(unit_of_work, first)
    again = _ask(subject, body(w) | {"elder_id": elder_ids[0]}, first.room.key)
    other = _ask(subject, body(w) | {"elder_id": elder_ids[1]})
    replayed, booked = await asyncio.gather(
        booking_batch.submit(unit_of_work, again), booking_batch.submit(unit_of_work, other)
    )
    assert sizes == [1, 2]
    assert replayed == (made[0], False) and booked[1] is True
    await _written(w, [made, booked], 2)


def _other_process_books(w: World, seats: int, *, times: int) -> Any:
    """A ``before_commit`` hook: for the first ``times`` batches of three, another process's commit takes
    ``seats`` more seats of the slot between the batch's claim and its commit."""
    done = 0

    async def hook(asks: list[BookingAsk]) -> None:
        nonlocal done
        if len(asks) == 3 and done < times:
            done += 1
            async with unit_of_work() as other:
                await other.execute(
                    update(SlotDay)
                    .where(SlotDay.canteen_id == w.canteen.id)
                    .values(booked_meals=SlotDay.booked_meals + seats)
                )

    return hook


async def test_a_slot_filled_by_another_commit_meanwhile_runs_the_batch_again_as_a_whole(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three requests for three seats, and another process books two of them between the batch's claim and
    its commit: the commit is refused, and the batch runs again as a whole, whose claim now counts those two.
    One is booked, two are left for after its commit and then get the plain 409, and nothing of those two is
    kept."""
    set_now(monkeypatch, MORNING)
    w, _, subject, elder_ids = await _family_of_elders(3, capacity=3)
    sizes = _sized(monkeypatch, _other_process_books(w, 2, times=1))
    asks = [_ask(subject, body(w) | {"elder_id": e}) for e in elder_ids]
    outcomes = await asyncio.gather(
        *(booking_batch.submit(unit_of_work, ask) for ask in asks), return_exceptions=True
    )
    assert sizes == [3, 3, 2]
    booked = [o for o in outcomes if isinstance(o, tuple)]
    assert len(booked) == 1, outcomes
    refused = [o for o in outcomes if not isinstance(o, tuple)]
    assert len(refused) == 2 and all(isinstance(o, Conflict) and o.error_code == "SlotFull" for o in refused)
    await _written(w, booked, 3)


async def test_a_slot_filled_a_seat_at_a_time_meanwhile_is_tried_whole_until_it_is_full(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three seats, three requests, and another process takes one seat before each of the batch's commits:
    each try claims the seats the last commit left, and fails; the fourth finds the slot full and refuses all
    three with the plain 409 from its claim, without a commit to fail. Nothing of them is kept."""
    set_now(monkeypatch, MORNING)
    w, _, subject, elder_ids = await _family_of_elders(3, capacity=3)
    sizes = _sized(monkeypatch, _other_process_books(w, 1, times=3))
    asks = [_ask(subject, body(w) | {"elder_id": e}) for e in elder_ids]
    outcomes = await asyncio.gather(
        *(booking_batch.submit(unit_of_work, ask) for ask in asks), return_exceptions=True
    )
    assert sizes == [3, 3, 3, 3]
    assert all(isinstance(o, Conflict) and o.error_code == "SlotFull" for o in outcomes), outcomes
    await _written(w, [], 3)


def _held_first(monkeypatch: pytest.MonkeyPatch, batch: Any, total: int) -> list[int]:
    """The sizes of ``batch``'s runs from here on; its first run waits until ``total`` items in all are in it
    or waiting behind it."""
    sizes: list[int] = []
    run = batch.run

    async def held(session: AsyncSession, items: list[Any]) -> Any:
        if not sizes:
            for _ in range(1000):
                if len(items) + sum(len(q) for q in batch._queues.values()) >= total:
                    break
                await asyncio.sleep(0.01)
        sizes.append(len(items))
        return await run(session, items)

    monkeypatch.setattr(batch, "run", held)
    return sizes


async def test_requests_that_arrive_together_share_a_transaction(
    committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTP, the requests that arrive while a look-up of callers runs form the next one, and then the
    next transaction. The first look-up is held until all the others wait: they are looked up together and
    booked together, each answered with its own booking."""
    from tests.fixtures.client import login

    set_now(monkeypatch, MORNING)
    w, family, _, elder_ids = await _family_of_elders(12, capacity=50)
    headers = await login(committed_client, family)
    looked_up = _held_first(monkeypatch, caller_batch, 12)
    sizes = _sized(monkeypatch)
    results = await asyncio.gather(
        *(
            committed_client.post(
                "/api/v1/bookings",
                json=body(w) | {"elder_id": e},
                headers=headers | key(),
            )
            for e in elder_ids
        )
    )
    assert [r.status_code for r in results] == [201] * 12, [r.text for r in results]
    assert sum(looked_up) == 12 and max(looked_up) >= 11  # all but perhaps the first in one look-up
    assert sum(sizes) == 12 and len(sizes) <= 2  # twelve requests, at most two transactions
    assert sorted(r.json()["elder_id"] for r in results) == sorted(elder_ids)
    assert len({r.json()["serve_code"] for r in results}) == 12
    async with unit_of_work() as s:
        assert await s.scalar(select(SlotDay.booked_meals).where(SlotDay.canteen_id == w.canteen.id)) == 12


async def test_callers_looked_up_together_are_each_answered_as_themselves(
    committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One look-up for five callers of the same elder's lunch: the family member is booked; a stranger, who
    is looked up as themselves, gets the elder's 404; an unknown token and one logged out get the 401; the
    family member's request without a key gets its 400 once the token is known. Only the one booking is
    written."""
    from tests.fixtures.client import login

    set_now(monkeypatch, MORNING)
    w, family, _, (elder_id,) = await _family_of_elders(1, capacity=50)
    mine = await login(committed_client, family)
    stranger = await login(committed_client, unique("stranger"))
    gone = await login(committed_client, unique("gone"))
    assert (await committed_client.post("/api/v1/auth/logout", headers=gone)).status_code == 204
    looked_up = _held_first(monkeypatch, caller_batch, 5)
    callers = [mine | key(), stranger | key(), {"Authorization": "Bearer nope"} | key(), gone | key(), mine]
    results = await asyncio.gather(
        *(
            committed_client.post("/api/v1/bookings", json=body(w) | {"elder_id": elder_id}, headers=h)
            for h in callers
        )
    )
    answers = [(r.status_code, r.json().get("error")) for r in results]
    assert answers == [
        (201, None),
        (404, "ElderNotFound"),
        (401, "InvalidToken"),
        (401, "InvalidToken"),
        (400, "IdempotencyKeyRequired"),
    ], [r.text for r in results]
    assert sum(looked_up) == 5 and max(looked_up) >= 4
    async with unit_of_work() as s:
        made = (await s.execute(select(Booking.id))).scalars().all()
        assert made == [uuid.UUID(results[0].json()["id"])]
        assert await s.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


async def test_a_full_slot_is_refused_from_the_callers_look_up(
    committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last seat taken, three requests looked up together: a new one gets the plain 409 from the look-up
    and is not sent to a transaction, and the first booking's replay still gets its booking (200)."""
    from tests.fixtures.client import login

    set_now(monkeypatch, MORNING)
    w, family, _, elder_ids = await _family_of_elders(2, capacity=1)
    headers = await login(committed_client, family)
    first_key = key()
    first = await committed_client.post(
        "/api/v1/bookings", json=body(w) | {"elder_id": elder_ids[0]}, headers=headers | first_key
    )
    assert first.status_code == 201, first.text
    looked_up = _held_first(monkeypatch, caller_batch, 3)
    sizes = _sized(monkeypatch)
    requests = [
        (elder_ids[1], key()),
        (elder_ids[0], first_key),
        (elder_ids[1], key()),
    ]
    results = await asyncio.gather(
        *(
            committed_client.post("/api/v1/bookings", json=body(w) | {"elder_id": e}, headers=headers | k)
            for e, k in requests
        )
    )
    assert [r.status_code for r in results] == [409, 200, 409], [r.text for r in results]
    assert results[0].json()["error"] == results[2].json()["error"] == "SlotFull"
    assert results[1].content == first.content
    assert sum(looked_up) == 3 and max(looked_up) >= 2
    assert sizes == [1]  # only the replay went on to a transaction
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(Booking)) == 1
        assert await s.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


async def test_each_request_of_a_batch_is_priced_from_its_own_elder_and_pools(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One look-up reads the meals of the whole batch, each about its own request: an elder who already has
    a subsidised lunch that day is priced at full price without costing another elder of the batch their
    subsidy; two eligible elders share what the canteen's pool holds in the batch's order (the second gets what
    the first left); the ledger stays consistent."""
    from app.ledger.service import canteen_pool, ledger_service
    from tests.ledger.helpers import pool_free
    from tests.settlements.helpers import drain_general_pool, paid_donation

    set_now(monkeypatch, MORNING)
    w = await arrange(session, categories=["独居"])
    await drain_general_pool(session, w.other_canteen.id)
    await paid_donation(session, w.canteen.id, 400, donor_openid=unique("donor"))
    family = await _subject(session, w.family_openid)
    (earlier,) = await booking_service.book_many(session, [_ask(family, body(w, canteen=w.other_canteen))])
    assert isinstance(earlier, tuple) and earlier[0].subsidized  # the world's elder: today's subsidy is taken
    second, _ = await create_elder(
        session, district_code=w.district, family_openids=(w.family_openid,), categories=["独居"]
    )
    third, _ = await create_elder(
        session, district_code=w.district, family_openids=(w.family_openid,), categories=["独居"]
    )
    asks = [_ask(family, body(w)), _ask(family, body(w) | {"elder_id": str(second.id)})]
    asks.append(_ask(family, body(w) | {"elder_id": str(third.id)}))
    taken, first_share, second_share = await booking_service.book_many(session, asks)

    assert isinstance(taken, tuple) and not taken[0].subsidized
    assert (taken[0].gov_subsidy_fen, taken[0].charity_subsidy_fen, taken[0].self_pay_fen) == (0, 0, 1200)
    assert isinstance(first_share, tuple) and isinstance(second_share, tuple)
    amounts = sorted(
        (b.gov_subsidy_fen, b.charity_subsidy_fen, b.self_pay_fen) for b, _ in (first_share, second_share)
    )
    assert amounts == [(900, 100, 200), (900, 300, 0)]  # 400 fen in the pool: 300, then the 100 left
    assert await pool_free(session, canteen_pool(w.canteen.id)) == 0
    report = await ledger_service.check(session)
    assert report["ok"], report["problems"]


async def test_each_request_of_a_batch_is_priced_by_its_own_districts_policy(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch, two elders of one family at canteens in two districts: one district has its own policy (10元
    for 80+), the other the city's (9元). Each booking is priced by, and names, its own district's policy."""
    from app.subsidy.schemas import PolicyIn, TierIn
    from app.subsidy.service import subsidy_service
    from tests.fixtures.factories import create_canteen, create_canteen_slot, create_district, create_menu

    set_now(monkeypatch, MORNING)
    w, family, subject, (near,) = await _family_of_elders(1, capacity=50)
    async with unit_of_work() as s:
        district = (await create_district(s)).code
        own = await subsidy_service.create_policy(
            s,
            None,
            PolicyIn(
                name="区级助餐补贴",
                city="德州市",
                district_code=district,
                effective_from=MORNING.date(),
                min_self_pay_fen=100,
                tiers=[TierIn(name="区级80岁以上", min_age=80, amount_fen=1000)],  # type: ignore[call-arg]
            ),
        )
        canteen = await create_canteen(s, district_code=district, name="另一区的幸福食堂")
        await create_canteen_slot(s, canteen.id, "lunch")
        _, items = await create_menu(s, canteen.id, DAY)
        far, _ = await create_elder(s, district_code=district, family_openids=(family,))
    elsewhere = {
        "elder_id": str(far.id),
        "canteen_id": str(canteen.id),
        "items": [{"menu_item_id": str(items[0].id), "quantity": 1}],
    }
    async with unit_of_work() as s:
        results = await booking_service.book_many(
            s, [_ask(subject, body(w) | {"elder_id": near}), _ask(subject, body(w) | elsewhere)]
        )
    (city, _), (district_own, _) = results  # type: ignore[misc]
    assert (city.gov_subsidy_fen, city.self_pay_fen) == (900, 300)
    assert (district_own.gov_subsidy_fen, district_own.self_pay_fen) == (1000, 200)
    async with unit_of_work() as s:
        named = dict((await s.execute(select(Booking.id, Booking.policy_id))).tuples().all())
    assert named[district_own.id] == own.id != named[city.id]  # type: ignore[attr-defined]


async def test_with_the_database_away_a_batch_is_answered_503_at_once(
    app: FastAPI, committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests whose batch cannot get a connection are answered together, from one attempt, not one retry
    per request against a database that is away; over HTTP that is the 503 in Chinese, and nothing is
    written."""
    from contextlib import asynccontextmanager

    from app.db import get_session_factory
    from tests.fixtures.client import login

    set_now(monkeypatch, MORNING)
    w, family, subject, elder_ids = await _family_of_elders(4, capacity=50)
    opened: list[int] = []

    @asynccontextmanager
    async def away() -> Any:
        opened.append(1)
        raise ConnectionRefusedError("database away")
        yield  # pragma: no cover - never reached

    asks = [_ask(subject, body(w) | {"elder_id": e}) for e in elder_ids]
    outcomes = await asyncio.gather(*(booking_batch.submit(away, a) for a in asks), return_exceptions=True)
    assert all(isinstance(o, ConnectionRefusedError) for o in outcomes), outcomes
    assert opened == [1]  # one batch of four, answered together

    async def factory() -> Any:
        return away

    headers = await login(committed_client, family)
    app.dependency_overrides[get_session_factory] = factory
    try:
        res = await committed_client.post(
            "/api/v1/bookings", json=body(w) | {"elder_id": elder_ids[0]}, headers=headers | key()
        )
    finally:
        app.dependency_overrides.pop(get_session_factory, None)
    assert res.status_code == 503, res.text
    assert res.json()["error"] == "ServiceUnavailable" and not res.json()["message"].isascii()
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(Booking)) == 0
        assert await s.scalar(select(func.count()).select_from(IdempotencyKey)) == 0
