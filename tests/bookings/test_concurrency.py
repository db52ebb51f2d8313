"""Races against real commits: capacity, item stock, the one-subsidy-per-day rule and double taps."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, unit_of_work
from app.models import Booking, IdempotencyKey, JobOutbox, MealNotification, MenuItem, SlotDay
from tests.bookings.helpers import MORNING, arrange, body, key, set_now
from tests.fixtures.client import login
from tests.fixtures.factories import create_elder, unique


async def _many_elders(n: int, district: str, family_openid: str) -> list[str]:
    ids = []
    async with unit_of_work() as s:
        for i in range(n):
            elder, _ = await create_elder(
                s, district_code=district, family_openids=(family_openid,), name=f"长者{i}"
            )
            ids.append(str(elder.id))
    return ids


async def _book_for(
    client: httpx.AsyncClient, w: Any, elder_id: str, headers: dict[str, str]
) -> httpx.Response:
    """The world's lunch booked for ``elder_id`` (``headers``: the caller's session and Idempotency-Key)."""
    return await client.post("/api/v1/bookings", json=body(w) | {"elder_id": elder_id}, headers=headers)


async def _family_of_elders(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, *, capacity: int, elders: int
) -> tuple[Any, list[str], dict[str, str]]:
    """At 10:00 the day before: a lunch of ``capacity`` seats, and one family member bound to ``elders`` elders
    (the world, the elders' ids, the member's session headers)."""
    set_now(monkeypatch, MORNING)
    async with unit_of_work() as s:
        w = await arrange(s, capacity=capacity)
    family = unique("fam")
    elder_ids = await _many_elders(elders, w.district, family)
    return w, elder_ids, await login(client, family)


async def test_200_concurrent_bookings_for_capacity_50(
    committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, elder_ids, headers = await _family_of_elders(committed_client, monkeypatch, capacity=50, elders=200)

    results = await asyncio.gather(*(_book_for(committed_client, w, e, headers | key()) for e in elder_ids))
    codes = [r.status_code for r in results]
    assert codes.count(201) == 50, codes
    assert codes.count(409) == 150
    assert {r.json()["error"] for r in results if r.status_code == 409} == {"SlotFull"}
    assert all("订满" in r.json()["message"] for r in results if r.status_code == 409)
    async with unit_of_work() as s:
        assert (
            await s.scalar(select(func.count()).select_from(Booking).where(Booking.status == "confirmed"))
            == 50
        )
        assert await s.scalar(select(SlotDay.booked_meals).where(SlotDay.canteen_id == w.canteen.id)) == 50
        codes_unique = await s.scalar(select(func.count(func.distinct(Booking.serve_code))))
        assert codes_unique == 50


async def test_item_stock_under_concurrency(
    committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    async with unit_of_work() as s:
        w = await arrange(
            s,
            items=[
                {"name": "特惠套餐", "kind": "set_meal", "price_fen": 900, "stock": 20, "is_special": True}
            ],
        )
    family = unique("fam")
    elder_ids = await _many_elders(60, w.district, family)
    headers = await login(committed_client, family)
    results = await asyncio.gather(*(_book_for(committed_client, w, e, headers | key()) for e in elder_ids))
    codes = [r.status_code for r in results]
    assert codes.count(201) == 20 and codes.count(409) == 40
    assert {r.json()["error"] for r in results if r.status_code == 409} == {"ItemSoldOut"}
    refused = next(r.json() for r in results if r.status_code == 409)
    assert "特惠套餐" in refused["message"] and refused["detail"]["menu_item_id"] == str(w.items[0].id)
    async with unit_of_work() as s:
        item = (await s.execute(select(MenuItem).where(MenuItem.id == w.items[0].id))).scalar_one()
        assert item.sold == 20
        # capacity given back by the refused bookings (their transactions rolled back)
        assert await s.scalar(select(SlotDay.booked_meals).where(SlotDay.canteen_id == w.canteen.id)) == 20


async def test_same_elder_two_canteens_at_once_gets_one_subsidy(
    committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    async with unit_of_work() as s:
        w = await arrange(s)
    headers = await login(committed_client, w.family_openid)
    for _round in range(3):
        results = await asyncio.gather(
            committed_client.post("/api/v1/bookings", json=body(w), headers=headers | key()),
            committed_client.post(
                "/api/v1/bookings", json=body(w, canteen=w.other_canteen), headers=headers | key()
            ),
        )
        assert all(r.status_code == 201 for r in results), [r.text for r in results]
    async with unit_of_work() as s:
        rows = (await s.execute(select(Booking).where(Booking.elder_id == w.elder.id))).scalars().all()
    assert len(rows) == 6
    subsidized = [b for b in rows if b.subsidized]
    assert len(subsidized) == 1 and subsidized[0].gov_subsidy_fen == 900
    assert all(b.gov_subsidy_fen == 0 and b.self_pay_fen == 1200 for b in rows if not b.subsidized)


async def test_double_tap_same_key_ten_times_makes_one_booking(
    committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    async with unit_of_work() as s:
        w = await arrange(s)
    headers = await login(committed_client, w.family_openid) | key()
    results = await asyncio.gather(
        *(committed_client.post("/api/v1/bookings", json=body(w), headers=headers) for _ in range(10))
    )
    ok = [r for r in results if r.status_code in (200, 201)]
    assert all(r.status_code in (200, 201, 409) for r in results), [r.text for r in results]
    assert [r.status_code for r in results].count(201) == 1
    assert len({r.json()["id"] for r in ok}) == 1
    for r in results:
        if r.status_code == 409:
            assert r.json()["error"] == "RequestInProgress"
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(Booking)) == 1


async def test_a_slot_filled_before_the_commit_refuses_the_booking_at_its_commit_and_keeps_nothing(
    committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot's capacity is taken by the commit itself (a deferred constraint trigger): a booking that saw
    room, wrote its rows and then lost the last seat to another commit gets the plain 409, and nothing of it
    is kept: no booking, no idempotency key, no message, no job."""
    set_now(monkeypatch, MORNING)
    async with unit_of_work() as s:
        w = await arrange(s, capacity=3)
    headers = await login(committed_client, w.family_openid) | key()
    from app.bookings import service as booking_module

    confirm = booking_module._confirm

    async def filling_the_slot_meanwhile(session: AsyncSession, bookings: Any) -> None:
        await confirm(session, bookings)
        async with unit_of_work() as other:  # another transaction takes the last seats and commits
            await other.execute(
                update(SlotDay).where(SlotDay.canteen_id == w.canteen.id).values(booked_meals=3)
            )

    monkeypatch.setattr(booking_module, "_confirm", filling_the_slot_meanwhile)
    res = await committed_client.post("/api/v1/bookings", json=body(w), headers=headers)
    assert res.status_code == 409, res.text
    assert res.json()["error"] == "SlotFull" and "订满" in res.json()["message"]
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(Booking)) == 0
        assert await s.scalar(select(func.count()).select_from(IdempotencyKey)) == 0
        assert await s.scalar(select(func.count()).select_from(MealNotification)) == 0
        assert await s.scalar(select(func.count()).select_from(JobOutbox)) == 0
        assert await s.scalar(select(SlotDay.booked_meals).where(SlotDay.canteen_id == w.canteen.id)) == 3

    monkeypatch.setattr(booking_module, "_confirm", confirm)
    async with unit_of_work() as s:
        await s.execute(update(SlotDay).where(SlotDay.canteen_id == w.canteen.id).values(booked_meals=2))
    res = await committed_client.post("/api/v1/bookings", json=body(w), headers=headers)
    assert res.status_code == 201, res.text  # the same key books once there is room: nothing was kept
    async with unit_of_work() as s:
        assert await s.scalar(select(SlotDay.booked_meals).where(SlotDay.canteen_id == w.canteen.id)) == 3
        notifications = (await s.execute(select(MealNotification.id))).scalars().all()
        outbox = (await s.execute(select(JobOutbox.actor_name))).scalars().all()
    # each message's send job is in the outbox exactly once, though it was written before the commit
    assert len(notifications) >= 1 and len(outbox) == len(notifications)


async def test_a_full_slot_refuses_from_a_read_without_a_transaction(
    committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A booking for a full slot is refused from the callers' look-up, a plain read that begins no transaction
    and writes nothing. A replay of a booking made before the slot filled still gets its booking back, and a
    seat freed by a cancellation goes to the next booking."""
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

    w, elder_ids, headers = await _family_of_elders(committed_client, monkeypatch, capacity=2, elders=5)
    keys = [key() for _ in elder_ids]

    async def book(i: int) -> httpx.Response:
        return await _book_for(committed_client, w, elder_ids[i], headers | keys[i])

    first, second = await book(0), await book(1)
    assert (first.status_code, second.status_code) == (201, 201)

    begun: list[int] = []
    start = AsyncAdapt_asyncpg_connection._start_transaction

    async def counted(self: AsyncAdapt_asyncpg_connection) -> None:
        begun.append(1)
        await start(self)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "_start_transaction", counted)
    for i in (2, 3):
        refused = await book(i)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "SlotFull" and "订满" in refused.json()["message"]
    assert begun == []  # the look-up and its refusal: one plain read each, no transaction

    replay = await book(0)  # the first booking's key, once the slot is full: its booking back, not a refusal
    assert replay.status_code == 200, replay.text
    assert replay.json()["id"] == first.json()["id"]
    assert begun  # the replay went on to the claiming statement
    assert (await book(3)).status_code == 409

    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(Booking)) == 2
        assert await s.scalar(select(func.count()).select_from(IdempotencyKey)) == 2  # none for a refusal

    cancel = await committed_client.post(
        f"/api/v1/bookings/{second.json()['id']}/cancel", json={}, headers=headers
    )
    assert cancel.status_code == 200, cancel.text
    taken = await book(4)
    assert taken.status_code == 201, taken.text
    assert (await book(3)).status_code == 409  # full again, with the key a refusal left unused
    async with unit_of_work() as s:
        assert await s.scalar(select(SlotDay.booked_meals).where(SlotDay.canteen_id == w.canteen.id)) == 2


async def test_a_refusal_for_a_full_slot_is_one_statement_with_the_session_look_up(
    committed_client: httpx.AsyncClient, committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the booking front, the refusal's read for a full slot rides in the session look-up's
    statement: the whole refused request is one statement. A token that is not live still gets its 401, from
    that same statement, and a request without a key its 400; the key's owner is the session's user, so another
    user's request with the same key is refused, while the key's own user gets the booking back. Nothing of the
    refused requests is written."""
    w, elder_ids, headers = await _family_of_elders(committed_client, monkeypatch, capacity=1, elders=3)
    keys = [key() for _ in elder_ids]
    first = await _book_for(committed_client, w, elder_ids[0], headers | keys[0])
    assert first.status_code == 201, first.text
    assert (await _book_for(committed_client, w, elder_ids[1], headers | keys[1])).status_code == 409
    stranger = await login(committed_client, unique("stranger"))

    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(str(args[2]))

    engine = committed.engine.sync_engine
    # a listener keeps the engine's statements off the driver (``app.kit.sql``) even once removed: not after
    monkeypatch.setattr(engine, "_has_events", engine._has_events)
    event.listen(engine, "before_cursor_execute", count)
    try:
        refused = await _book_for(committed_client, w, elder_ids[2], headers | keys[2])
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "SlotFull"
        assert len(sent) == 1, sent
        assert "auth_sessions" in sent[0] and "slot_days" in sent[0] and "idempotency_keys" in sent[0]

        sent.clear()
        dead = {"Authorization": "Bearer not-a-live-token"}
        unauthorized = await _book_for(committed_client, w, elder_ids[2], dead | keys[2])
        assert unauthorized.status_code == 401, unauthorized.text
        assert unauthorized.json()["error"] == "InvalidToken"
        assert len(sent) == 1

        keyless = await _book_for(committed_client, w, elder_ids[2], headers)  # the key is asked for first
        assert keyless.status_code == 400, keyless.text
        assert keyless.json()["error"] == "IdempotencyKeyRequired"

        others = await _book_for(committed_client, w, elder_ids[0], stranger | keys[0])
        assert others.status_code == 409, others.text  # not the stranger's key: no replay for them
        assert others.json()["error"] == "SlotFull"

        replay = await _book_for(committed_client, w, elder_ids[0], headers | keys[0])
        assert replay.status_code == 200, replay.text
        assert replay.json()["id"] == first.json()["id"]
    finally:
        event.remove(engine, "before_cursor_execute", count)
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(Booking)) == 1
        assert await s.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


async def test_a_booking_is_five_statements(
    committed_client: httpx.AsyncClient, committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A booking request's statements, BEGIN and COMMIT aside: the session look-up; the claim of its key; the
    meal with the elder, the pools' free money, the family and the subsidy policy with its tiers; the booking
    with its lines; the messages with their jobs' outbox rows. Each read or write that joined another one is named here, so
    one that splits off again fails this test."""
    w, elder_ids, headers = await _family_of_elders(committed_client, monkeypatch, capacity=5, elders=1)
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(" ".join(str(args[2]).split()))

    engine = committed.engine.sync_engine
    monkeypatch.setattr(engine, "_has_events", engine._has_events)  # see the test above
    event.listen(engine, "before_cursor_execute", count)
    try:
        booked = await _book_for(committed_client, w, elder_ids[0], headers | key())
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert booked.status_code == 201, booked.text
    assert len(sent) == 5, sent
    session_look_up, claim, meal, booking, messages = sent
    assert "FROM auth_sessions" in session_look_up
    assert "INSERT INTO idempotency_keys" in claim
    read_with_the_meal = ("elders", "ledger_accounts", "family_bindings", "subsidy_policies", "subsidy_tiers")
    assert "JOIN canteens" in meal and all(table in meal for table in read_with_the_meal)
    assert "INSERT INTO bookings" in booking and "INSERT INTO booking_lines" in booking
    assert "INSERT INTO meal_notifications" in messages and "INSERT INTO job_outbox" in messages
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(MealNotification)) == 1  # the family member
        assert await s.scalar(select(func.count()).select_from(JobOutbox)) == 1
