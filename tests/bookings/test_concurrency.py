"""Races against real commits: capacity, item stock, the one-subsidy-per-day rule and double taps."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from app.db import unit_of_work
from app.models import Booking, MenuItem, SlotDay
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


async def test_200_concurrent_bookings_for_capacity_50(
    committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    async with unit_of_work() as s:
        w = await arrange(s, capacity=50)
    family = unique("fam")
    elder_ids = await _many_elders(200, w.district, family)
    headers = await login(committed_client, family)

    async def book(elder_id: str) -> httpx.Response:
        return await committed_client.post(
            "/api/v1/bookings", json=body(w) | {"elder_id": elder_id}, headers=headers | key()
        )

    results = await asyncio.gather(*(book(e) for e in elder_ids))
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
    results = await asyncio.gather(
        *(
            committed_client.post("/api/v1/bookings", json=body(w) | {"elder_id": e}, headers=headers | key())
            for e in elder_ids
        )
    )
    codes = [r.status_code for r in results]
    assert codes.count(201) == 20 and codes.count(409) == 40
    assert {r.json()["error"] for r in results if r.status_code == 409} == {"ItemSoldOut"}
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
