"""A booking's subscribe messages: one row for the elder (with an account) and one for each family member bound
at the time, each with exactly one send job in the outbox, written in the booking's transaction. The family
is read with the meal's look-up for a booking, and by the message writer itself elsewhere."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.bookings.notifications import queue_booking_messages
from app.kit.time import utcnow
from app.models import Booking, Canteen, Elder, FamilyBinding, JobOutbox, MealNotification, User
from tests.bookings.helpers import MORNING, arrange, body, key, set_now
from tests.fixtures.client import login
from tests.fixtures.factories import create_elder, unique


async def _user_id(session: AsyncSession, openid: str) -> uuid.UUID:
    return (await session.execute(select(User.id).where(User.openid == openid))).scalar_one()


async def _messages(session: AsyncSession, booking_id: object) -> dict[uuid.UUID, uuid.UUID]:
    """Each message's recipient, by the message's id."""
    rows = await session.execute(
        select(MealNotification.id, MealNotification.user_id).where(MealNotification.booking_id == booking_id)
    )
    return {row.id: row.user_id for row in rows}


async def _jobs(session: AsyncSession) -> list[list[object]]:
    """The outbox's send jobs, by their arguments."""
    rows = await session.execute(
        select(JobOutbox.message).where(JobOutbox.actor_name == "bookings.send_notification")
    )
    return [row.message["args"] for row in rows]


async def test_the_elder_and_each_bound_member_get_one_message_with_one_job(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    second = unique("fa")
    revoked = unique("fa")
    elder, _ = await create_elder(
        session,
        district_code=w.district,
        user_openid=unique("el"),
        family_openids=(w.family_openid, second, revoked),
    )
    await session.execute(
        update(FamilyBinding)
        .where(
            FamilyBinding.elder_id == elder.id,  # type: ignore[attr-defined]
            FamilyBinding.user_id == await _user_id(session, revoked),
        )
        .values(revoked_at=utcnow())
    )
    await session.flush()
    res = await client.post(
        "/api/v1/bookings",
        json=body(w) | {"elder_id": str(elder.id)},  # type: ignore[attr-defined]
        headers=await login(client, w.family_openid) | key(),
    )
    assert res.status_code == 201, res.text
    messages = await _messages(session, res.json()["id"])
    expected = {elder.user_id, await _user_id(session, w.family_openid), await _user_id(session, second)}  # type: ignore[attr-defined]
    assert sorted(map(str, messages.values())) == sorted(map(str, expected))  # none for the revoked member
    assert sorted(args[0] for args in await _jobs(session)) == sorted(str(m) for m in messages)


async def test_an_elder_bound_as_their_own_family_gets_one_message(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    openid = unique("el")
    elder, _ = await create_elder(
        session, district_code=w.district, user_openid=openid, family_openids=(openid,)
    )
    res = await client.post(
        "/api/v1/bookings",
        json=body(w) | {"elder_id": str(elder.id)},  # type: ignore[attr-defined]
        headers=await login(client, openid) | key(),
    )
    assert res.status_code == 201, res.text
    assert list((await _messages(session, res.json()["id"])).values()) == [elder.user_id]  # type: ignore[attr-defined]
    assert len(await _jobs(session)) == 1


async def test_written_again_a_message_is_not_repeated_and_the_family_is_read_when_not_given(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a booking (a reminder, a cancellation by the canteen) the writer reads the family itself; a
    recipient who already has this kind of message for the booking gets no second row."""
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    res = await client.post(
        "/api/v1/bookings", json=body(w), headers=await login(client, w.family_openid) | key()
    )
    assert res.status_code == 201, res.text
    booking = await session.get(Booking, uuid.UUID(res.json()["id"]))
    canteen = await session.get(Canteen, w.canteen.id)
    elder = await session.get(Elder, w.elder.id)
    assert booking is not None and canteen is not None and elder is not None
    first = await queue_booking_messages(
        session, kind="meal_reminder", booking=booking, canteen=canteen, elder=elder
    )
    assert len(first) == 2  # the elder and the family member
    again = await queue_booking_messages(
        session, kind="meal_reminder", booking=booking, canteen=canteen, elder=elder
    )
    assert again == []
    reminders = (
        select(func.count()).select_from(MealNotification).where(MealNotification.kind == "meal_reminder")
    )
    assert await session.scalar(reminders) == 2
