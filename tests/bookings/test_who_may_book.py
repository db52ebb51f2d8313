"""Who may book or quote a meal for an elder, and through which channel: the elder (self), bound family
(proxy), an operator of that canteen (phone). The elder is read in the meal's look-up, so each rule is tried
here through the API, with nothing written when it refuses."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.time import utcnow
from app.models import AuditLog, Booking, FamilyBinding, IdempotencyKey
from tests.bookings.helpers import MORNING, arrange, body, key, set_now
from tests.fixtures.client import login
from tests.fixtures.factories import unique


async def _written(session: AsyncSession) -> tuple[int, int, int]:
    counts = []
    for model in (Booking, IdempotencyKey, AuditLog):
        counts.append(int(await session.scalar(select(func.count()).select_from(model)) or 0))
    return counts[0], counts[1], counts[2]


async def test_the_elder_books_as_self_and_family_as_proxy(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    own = await client.post(
        "/api/v1/bookings", json=body(w), headers=await login(client, w.elder_openid) | key()
    )
    assert own.status_code == 201, own.text
    assert own.json()["channel"] == "self"
    family = await login(client, w.family_openid)
    proxy = await client.post(
        "/api/v1/bookings", json=body(w, canteen=w.other_canteen), headers=family | key()
    )
    assert proxy.status_code == 201, proxy.text
    assert proxy.json()["channel"] == "proxy"


async def test_an_operator_books_by_phone_only_at_their_own_canteen(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    before = await _written(session)
    other = await login(client, w.other_operator_openid)  # operates the other canteen only
    refused = await client.post("/api/v1/bookings", json=body(w), headers=other | key())
    assert refused.status_code == 404 and refused.json()["error"] == "ElderNotFound"
    assert refused.json()["message"] == "找不到这位长者"
    assert await _written(session) == before

    operator = await login(client, w.operator_openid)
    phoned = await client.post("/api/v1/bookings", json=body(w), headers=operator | key())
    assert phoned.status_code == 201, phoned.text
    assert phoned.json()["channel"] == "phone"
    audited = await session.scalar(
        select(func.count()).select_from(AuditLog).where(AuditLog.action == "booking.create")
    )
    assert audited == 1  # a staff channel leaves an audit row; the elder's own booking does not


async def test_a_revoked_binding_and_a_stranger_are_refused_and_write_nothing(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    family = await login(client, w.family_openid)
    stranger = await login(client, unique("stranger"))
    await session.execute(
        update(FamilyBinding).where(FamilyBinding.elder_id == w.elder.id).values(revoked_at=utcnow())
    )
    await session.flush()
    before = await _written(session)
    for headers in (family, stranger):
        for path in ("/api/v1/bookings", "/api/v1/bookings/quote"):
            res = await client.post(path, json=body(w), headers=headers | key())
            assert res.status_code == 404 and res.json()["error"] == "ElderNotFound", (path, res.text)
    assert await _written(session) == before


async def test_the_elders_refusal_comes_before_the_canteens(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a canteen that does not exist, a stranger learns nothing about the canteen either: the elder is
    refused first, as when the elder was read before the meal. Family gets the canteen's 404."""
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    nowhere = body(w) | {"canteen_id": "00000000-0000-0000-0000-000000000002"}
    stranger = await login(client, unique("stranger"))
    res = await client.post("/api/v1/bookings", json=nowhere, headers=stranger | key())
    assert res.status_code == 404 and res.json()["error"] == "ElderNotFound"
    family = await login(client, w.family_openid)
    res = await client.post("/api/v1/bookings", json=nowhere, headers=family | key())
    assert res.status_code == 404 and res.json()["error"] == "CanteenNotFound"
    assert (await _written(session))[0] == 0
