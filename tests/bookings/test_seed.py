from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.bookings.seed import seed_demo_meals
from app.kit.time import business_date
from app.models import Canteen, District, Elder, Menu
from app.seed import CITY, DISTRICTS, _canteens
from tests.fixtures.client import login


async def test_seed_is_idempotent_and_family_can_book(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the districts and canteens of the Dezhou demo (app.seed.seed_base also seeds funds, not needed here)
    for code, name, _, _ in DISTRICTS:
        if await session.get(District, code) is None:
            session.add(District(code=code, name=name, city=CITY))
    await session.flush()
    for row in _canteens():
        session.add(Canteen(**row))
    await session.flush()
    first = await seed_demo_meals(session)
    menus = await session.scalar(select(func.count()).select_from(Menu))
    again = await seed_demo_meals(session)
    assert await session.scalar(select(func.count()).select_from(Menu)) == menus
    assert await session.scalar(select(func.count()).select_from(Elder)) == 4
    assert first and again
    fam = await login(client, "demo_family")
    elders = (await client.get("/api/v1/elders", headers=fam)).json()["items"]
    assert len(elders) == 4 and all(e["verification_status"] == "verified" for e in elders)
    assert all("*" in e["id_number"] for e in elders)
    canteens = (
        await client.get("/api/v1/canteens", params={"lat": 37.4536, "lng": 116.3075, "limit": 3})
    ).json()["items"]
    assert canteens[0]["distance_m"] <= canteens[-1]["distance_m"]
    menus_out = (await client.get(f"/api/v1/canteens/{canteens[0]['id']}/menus")).json()
    assert menus_out and menus_out[0]["date"] >= business_date().isoformat()
