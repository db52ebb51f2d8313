from __future__ import annotations

from datetime import time, timedelta

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.time import shanghai_datetime
from app.models import AuditLog, Booking, BookingLine, IdempotencyKey, SlotDay
from tests.bookings.helpers import DAY, MORNING, TODAY, arrange, body, key, set_now
from tests.fixtures.client import login
from tests.fixtures.factories import create_canteen_slot, create_menu, unique


async def _count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Booking)) or 0)


async def test_family_books_lunch_with_full_breakdown(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    headers = await login(client, w.family_openid)

    quote = await client.post("/api/v1/bookings/quote", json=body(w), headers=headers)
    assert quote.status_code == 200, quote.text
    q = quote.json()
    # 82 years old, verified, Guangzhou tier 80+: gov 9 of 12, self 3
    assert (q["list_price_fen"], q["gov_subsidy_fen"], q["charity_subsidy_fen"], q["self_pay_fen"]) == (
        1200,
        900,
        0,
        300,
    )
    assert q["subsidized"] and q["tier_name"] == "80岁以上"
    assert await _count(session) == 0  # a quote writes nothing

    res = await client.post("/api/v1/bookings", json=body(w), headers=headers | key())
    assert res.status_code == 201, res.text
    b = res.json()
    assert b["status"] == "confirmed" and b["channel"] == "proxy"
    assert (b["list_price_fen"], b["gov_subsidy_fen"], b["delivery_fee_fen"], b["self_pay_fen"]) == (
        1200,
        900,
        0,
        300,
    )
    assert len(b["serve_code"]) == 6 and b["serve_code"].isdigit()
    assert b["qr_payload"].startswith("SY1.")
    row = await session.get(Booking, b["id"])
    assert row is not None and row.booked_by_id is not None and row.subsidized
    day = await session.scalar(select(SlotDay.booked_meals).where(SlotDay.canteen_id == w.canteen.id))
    assert day == 1

    # the elder sees it in their history, with the same breakdown
    elder_headers = await login(client, w.elder_openid)
    history = await client.get(
        "/api/v1/bookings", params={"elder_id": str(w.elder.id)}, headers=elder_headers
    )
    assert history.status_code == 200
    assert [x["id"] for x in history.json()["items"]] == [b["id"]]


async def test_second_meal_same_day_is_unsubsidized_and_companions_pay_list(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    headers = await login(client, w.family_openid)
    first = await client.post("/api/v1/bookings", json=body(w, quantity=2), headers=headers | key())
    assert first.status_code == 201, first.text
    f = first.json()
    # one subsidized portion for the elder, one companion at list price
    assert f["list_price_fen"] == 2400 and f["gov_subsidy_fen"] == 900 and f["self_pay_fen"] == 1500
    assert [ln["is_elder_meal"] for ln in f["lines"]] == [True, False]
    assert f["lines"][1]["gov_subsidy_fen"] == 0

    second = await client.post(
        "/api/v1/bookings", json=body(w, canteen=w.other_canteen), headers=headers | key()
    )
    assert second.status_code == 201, second.text
    s = second.json()
    assert s["gov_subsidy_fen"] == 0 and s["self_pay_fen"] == 1200 and not s["subsidized"]

    # cancelling the subsidized one frees the day's subsidy again
    cancel = await client.post(f"/api/v1/bookings/{f['id']}/cancel", json={}, headers=headers)
    assert cancel.status_code == 200, cancel.text
    q = await client.post("/api/v1/bookings/quote", json=body(w), headers=headers)
    assert q.json()["gov_subsidy_fen"] == 900


async def test_idempotency_key_rules(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    headers = await login(client, w.family_openid)
    missing = await client.post("/api/v1/bookings", json=body(w), headers=headers)
    assert missing.status_code == 400 and missing.json()["error"] == "IdempotencyKeyRequired"
    k = key()
    one = await client.post("/api/v1/bookings", json=body(w), headers=headers | k)
    two = await client.post("/api/v1/bookings", json=body(w), headers=headers | k)
    assert one.status_code == 201 and two.status_code == 200
    assert one.json()["id"] == two.json()["id"]
    other = await client.post("/api/v1/bookings", json=body(w, quantity=2), headers=headers | k)
    assert other.status_code == 409 and other.json()["error"] == "IdempotencyKeyReused"
    assert await _count(session) == 1


async def test_cutoff_boundaries_in_shanghai_time(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await arrange(session)
    headers = await login(client, w.family_openid)
    cutoff = shanghai_datetime(TODAY, time(16, 0))
    set_now(monkeypatch, cutoff - timedelta(seconds=1))
    ok = await client.post("/api/v1/bookings", json=body(w), headers=headers | key())
    assert ok.status_code == 201, ok.text
    set_now(monkeypatch, cutoff)
    closed = await client.post(
        "/api/v1/bookings", json=body(w, canteen=w.other_canteen), headers=headers | key()
    )
    assert closed.status_code == 409 and closed.json()["error"] == "BookingClosed"
    assert "截止" in closed.json()["message"]
    # cancelling by the family is closed at the same instant; the operator may, with a reason
    cancel = await client.post(f"/api/v1/bookings/{ok.json()['id']}/cancel", json={}, headers=headers)
    assert cancel.status_code == 409 and cancel.json()["error"] == "CancelClosed"
    op = await login(client, w.operator_openid)
    no_reason = await client.post(f"/api/v1/bookings/{ok.json()['id']}/cancel", json={}, headers=op)
    assert no_reason.status_code == 400 and no_reason.json()["error"] == "ReasonRequired"
    by_canteen = await client.post(
        f"/api/v1/bookings/{ok.json()['id']}/cancel", json={"reason": "食材短缺"}, headers=op
    )
    assert by_canteen.status_code == 200 and by_canteen.json()["status"] == "cancelled"
    assert await session.scalar(select(SlotDay.booked_meals).where(SlotDay.canteen_id == w.canteen.id)) == 0
    audit = await session.scalar(
        select(func.count()).select_from(AuditLog).where(AuditLog.action == "booking.cancel")
    )
    assert audit == 1


async def test_cutoff_across_midnight(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await arrange(session)
    # breakfast on DAY closes at 00:00 the same day (Shanghai), i.e. 16:00 UTC the day before
    await create_canteen_slot(
        session,
        w.canteen.id,
        "breakfast",
        serve_start=time(7, 0),
        serve_end=time(9, 0),
        cutoff_days_before=0,
        cutoff_time=time(0, 0),
    )
    _, items = await create_menu(
        session,
        w.canteen.id,
        DAY,
        "breakfast",
        items=[{"name": "粥和鸡蛋", "kind": "set_meal", "price_fen": 500}],
    )
    headers = await login(client, w.family_openid)
    payload = body(w, items=items) | {"slot": "breakfast"}
    midnight = shanghai_datetime(DAY, time(0, 0))
    set_now(monkeypatch, midnight - timedelta(seconds=1))
    assert (await client.post("/api/v1/bookings", json=payload, headers=headers | key())).status_code == 201
    set_now(monkeypatch, midnight)
    late = await client.post(
        "/api/v1/bookings",
        json=payload | {"items": [{"menu_item_id": str(items[0].id), "quantity": 2}]},
        headers=headers | key(),
    )
    assert late.status_code == 409 and late.json()["error"] == "BookingClosed"
    # 00:30 in Shanghai is still the previous day in UTC: yesterday is in the past all the same
    set_now(monkeypatch, midnight + timedelta(minutes=30))
    past = await client.post("/api/v1/bookings", json=body(w, day=TODAY), headers=headers | key())
    assert past.status_code == 400 and past.json()["error"] == "DateInPast"


@pytest.mark.parametrize(
    ("mutate", "status", "error"),
    [
        (lambda b: b["items"][0].update(quantity=-1), 422, "ValidationError"),
        (lambda b: b["items"][0].update(quantity=0), 422, "ValidationError"),
        (
            lambda b: b["items"][0].update(menu_item_id="00000000-0000-0000-0000-000000000001"),
            409,
            "MenuItemNotFound",
        ),
        (lambda b: b.update(items=[]), 422, "ValidationError"),
        (lambda b: b.update(date="2020-01-01"), 400, "DateInPast"),
        (lambda b: b.update(date="not-a-date"), 422, "ValidationError"),
        (lambda b: b.update(slot="x" * 10_000), 422, "ValidationError"),
        (lambda b: b.update(mode="teleport"), 422, "ValidationError"),
        (lambda b: b.update(canteen_id="00000000-0000-0000-0000-000000000002"), 404, "CanteenNotFound"),
        (lambda b: b.update(elder_id="00000000-0000-0000-0000-000000000003"), 404, "ElderNotFound"),
    ],
)
async def test_bad_input_is_4xx_in_chinese_and_writes_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
    mutate: object,
    status: int,
    error: str,
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    headers = await login(client, w.family_openid)
    payload = body(w)
    mutate(payload)  # type: ignore[operator]
    res = await client.post("/api/v1/bookings", json=payload, headers=headers | key())
    assert res.status_code == status, res.text
    assert res.json()["error"] == error
    assert any("\u4e00" <= ch <= "\u9fff" for ch in res.json()["message"])
    assert await _count(session) == 0
    assert int(await session.scalar(select(func.count()).select_from(BookingLine)) or 0) == 0


async def test_item_stock_and_delivery(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(
        session,
        items=[{"name": "特惠套餐", "kind": "set_meal", "price_fen": 1000, "stock": 2, "is_special": True}],
    )
    headers = await login(client, w.family_openid)
    ok = await client.post(
        "/api/v1/bookings", json=body(w, quantity=2, mode="delivery"), headers=headers | key()
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["delivery_fee_fen"] == 200
    assert ok.json()["self_pay_fen"] == 1000 + 200 + 100  # companion portion + delivery + elder's 1元
    sold_out = await client.post("/api/v1/bookings", json=body(w, canteen=w.canteen), headers=headers | key())
    assert sold_out.status_code == 409 and sold_out.json()["error"] == "ItemSoldOut"
    assert "特惠套餐" in sold_out.json()["message"]
    no_delivery = await client.post(
        "/api/v1/bookings", json=body(w, canteen=w.other_canteen, mode="delivery"), headers=headers | key()
    )
    assert no_delivery.status_code == 409 and no_delivery.json()["error"] == "DeliveryUnavailable"


async def test_a_full_slot_still_answers_a_replay_with_its_booking(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full slot is refused from one read before anything else, but never to the request that got the
    last seat: its replay (same key, same body) still gets its booking, and the key reused for a different
    meal is still told so."""
    set_now(monkeypatch, MORNING)
    w = await arrange(session, capacity=1)
    headers = await login(client, w.family_openid)
    mine = key()
    first = await client.post("/api/v1/bookings", json=body(w), headers=headers | mine)
    assert first.status_code == 201, first.text
    replay = await client.post("/api/v1/bookings", json=body(w), headers=headers | mine)
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    reused = await client.post("/api/v1/bookings", json=body(w, quantity=2), headers=headers | mine)
    assert reused.status_code == 409 and reused.json()["error"] == "IdempotencyKeyReused"
    refused_key = key()
    other = await client.post("/api/v1/bookings", json=body(w), headers=headers | refused_key)
    assert other.status_code == 409 and other.json()["error"] == "SlotFull"
    kept = select(func.count()).where(IdempotencyKey.key == refused_key["Idempotency-Key"])
    assert await session.scalar(kept) == 0  # the refusal claimed nothing: the key is free to use again
    missing = await client.post("/api/v1/bookings", json=body(w), headers=headers)
    assert missing.status_code == 400 and missing.json()["error"] == "IdempotencyKeyRequired"
    assert await _count(session) == 1
    assert await session.scalar(select(SlotDay.booked_meals).where(SlotDay.canteen_id == w.canteen.id)) == 1


async def test_a_serve_code_already_taken_that_day_is_drawn_again(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serve codes are unique per canteen and day; a booking that draws a taken one draws again (no savepoint,
    nothing half-written), and one that keeps drawing taken codes is refused plainly."""
    from app.bookings import service as booking_module

    set_now(monkeypatch, MORNING)
    w = await arrange(session, capacity=10)
    headers = await login(client, w.family_openid)
    draws = iter(["111111", "111111", "222222"])
    monkeypatch.setattr(booking_module, "new_serve_code", lambda: next(draws))
    first = await client.post("/api/v1/bookings", json=body(w), headers=headers | key())
    assert first.status_code == 201 and first.json()["serve_code"] == "111111"
    second = await client.post("/api/v1/bookings", json=body(w, quantity=2), headers=headers | key())
    assert second.status_code == 201, second.text
    assert second.json()["serve_code"] == "222222" and not second.json()["subsidized"]
    # the refused draw wrote no lines of its own: the booking and its lines are one statement
    assert [(ln["is_elder_meal"], ln["quantity"]) for ln in second.json()["lines"]] == [(True, 1), (False, 1)]
    assert await session.scalar(select(func.count()).select_from(BookingLine)) == 3

    monkeypatch.setattr(booking_module, "new_serve_code", lambda: "111111")
    stuck = await client.post("/api/v1/bookings", json=body(w, quantity=3), headers=headers | key())
    assert stuck.status_code == 409 and stuck.json()["error"] == "BookingRetry"
    assert await _count(session) == 2
    assert await session.scalar(select(func.count()).select_from(BookingLine)) == 3
    assert await session.scalar(select(SlotDay.booked_meals).where(SlotDay.canteen_id == w.canteen.id)) == 3


async def test_the_full_slot_read_tells_a_stranger_nothing_about_an_elder(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full-slot refusal comes before the elder is looked up, so it must read the same for someone
    else's elder and for an id that does not exist, and write nothing; on a slot with room, the stranger
    still gets the 404 that hides whether the elder exists."""
    import uuid

    set_now(monkeypatch, MORNING)
    w = await arrange(session, capacity=1)
    family = await login(client, w.family_openid)
    assert (await client.post("/api/v1/bookings", json=body(w), headers=family | key())).status_code == 201
    stranger = await login(client, unique("stranger"))
    answers = []
    for elder_id in (str(w.elder.id), str(uuid.uuid4())):
        res = await client.post(
            "/api/v1/bookings", json=body(w) | {"elder_id": elder_id}, headers=stranger | key()
        )
        answers.append((res.status_code, res.json()["error"], res.json()["message"]))
    assert answers[0] == answers[1] and answers[0][:2] == (409, "SlotFull")
    room = await client.post(
        "/api/v1/bookings", json=body(w, canteen=w.other_canteen), headers=stranger | key()
    )
    assert room.status_code == 404 and room.json()["error"] == "ElderNotFound"
    assert await _count(session) == 1


async def test_an_item_from_another_canteens_menu_is_refused_with_the_rest(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chosen items are looked up as one array against this meal's menu: one item of another canteen's menu
    beside a real one is named in the refusal, and nothing is written."""
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    headers = await login(client, w.family_openid)
    payload = body(w)
    foreign = str(w.other_items[0].id)
    payload["items"].append({"menu_item_id": foreign, "quantity": 1})
    res = await client.post("/api/v1/bookings", json=payload, headers=headers | key())
    assert res.status_code == 409 and res.json()["error"] == "MenuItemNotFound", res.text
    assert res.json()["detail"]["menu_item_ids"] == [foreign]
    assert await _count(session) == 0
    assert int(await session.scalar(select(func.count()).select_from(BookingLine)) or 0) == 0


async def test_the_callers_look_up_refuses_as_the_claiming_statement(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """The callers' look-up's ``no_room`` (the refusal before any transaction) and ``claim_unless_full``'s, two
    statements around one condition: they give the same answer for room left, the last seat, a full slot, a
    replayed key, more meals than the seats left, and a slot with no day row yet."""
    import uuid

    from sqlalchemy import update

    from app.bookings.repository import BookingRepository, CallerAsk, RoomAsk
    from app.kit.crypto import token_hash
    from app.kit.time import utcnow
    from app.models import User

    w = await arrange(session, capacity=3)
    repo = BookingRepository(session)
    openid = unique("owner")
    token = (await login(client, openid))["Authorization"].removeprefix("Bearer ")
    owner = str(await session.scalar(select(User.id).where(User.openid == openid)))
    used = RoomAsk(w.canteen.id, DAY, "lunch", 1, scope="booking", owner=owner, key="used")
    await repo.claim_unless_full([used], digests=["d"], resource_ids=[uuid.uuid4()])

    async def both(booked: int, meals: int, key: str, slot: str = "lunch") -> tuple[bool, bool]:
        await session.execute(
            update(SlotDay).where(SlotDay.canteen_id == w.canteen.id).values(booked_meals=booked)
        )
        ask = RoomAsk(w.canteen.id, DAY, slot, meals, scope="booking", owner=owner, key=key)
        ((row,),) = await repo.callers([CallerAsk(token_hash(token), ask)], scope="booking", now=utcnow())
        await session.execute(text("SAVEPOINT probe"))  # the claim writes when there is room: undone below
        (claimed,) = await repo.claim_unless_full([ask], digests=["d"], resource_ids=[uuid.uuid4()])
        await session.execute(text("ROLLBACK TO SAVEPOINT probe"))
        assert not claimed.later  # a request alone is never left for later
        return bool(row.no_room), claimed.no_room

    assert await both(booked=1, meals=1, key="fresh") == (False, False)  # room left
    assert await both(booked=2, meals=1, key="fresh") == (False, False)  # the last seat
    assert await both(booked=3, meals=1, key="fresh") == (True, True)  # full
    assert await both(booked=3, meals=1, key="used") == (False, False)  # a replay must get its booking back
    assert await both(booked=2, meals=2, key="fresh") == (True, True)  # one seat left, two meals asked
    assert await both(booked=3, meals=1, key="fresh", slot="dinner") == (
        False,
        False,
    )  # no day row: not known


async def test_the_policy_in_force_for_the_canteens_district_that_day_prices_the_meal(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy is read with the meal: the city's until the district has its own, the district's from its
    first day, a version that starts after the meal not yet; the booking names the policy it was priced by."""
    from app.subsidy.schemas import PolicyIn, TierIn
    from app.subsidy.service import subsidy_service
    from tests.fixtures.factories import create_guangzhou_policy

    set_now(monkeypatch, MORNING)
    w = await arrange(session, policy=False)  # the elder is 82: the city's 80+ tier, 9元
    headers = await login(client, w.family_openid)

    async def quoted() -> tuple[int, str | None]:
        res = await client.post("/api/v1/bookings/quote", json=body(w), headers=headers)
        assert res.status_code == 200, res.text
        return res.json()["gov_subsidy_fen"], res.json()["tier_name"]

    assert await quoted() == (0, None)  # no policy yet
    await create_guangzhou_policy(session)
    assert await quoted() == (900, "80岁以上")

    async def district_policy(starts: object, amount: int) -> object:
        return await subsidy_service.create_policy(
            session,
            None,
            PolicyIn(
                name=f"区级助餐补贴{amount}",
                city="德州市",
                district_code=w.district,
                effective_from=starts,  # type: ignore[arg-type]
                min_self_pay_fen=100,
                tiers=[TierIn(name=f"区级80岁以上{amount}", min_age=80, amount_fen=amount)],  # type: ignore[call-arg]
            ),
        )

    later_version = await district_policy(DAY + timedelta(days=1), 1100)
    assert await quoted() == (900, "80岁以上")  # starts after the meal: the city's still
    own = await district_policy(DAY, 1000)
    assert await quoted() == (1000, "区级80岁以上1000")
    booked = await client.post("/api/v1/bookings", json=body(w), headers=headers | key())
    assert booked.status_code == 201, booked.text
    assert booked.json()["gov_subsidy_fen"] == 1000
    policy_id = await session.scalar(select(Booking.policy_id).where(Booking.id == booked.json()["id"]))
    assert policy_id == own.id != later_version.id  # type: ignore[attr-defined]
