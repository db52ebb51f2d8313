from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.time import business_date
from app.models import Menu
from app.models.role_grant import Role
from tests.bookings.helpers import set_now
from tests.fixtures.client import login
from tests.fixtures.factories import create_canteen, create_canteen_slot, create_elder, grant, unique


async def test_publish_edit_in_place_then_version_after_bookings(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    canteen = await create_canteen(session)
    await create_canteen_slot(session, canteen.id, "lunch")
    op_openid = unique("op")
    await grant(session, op_openid, Role.operator, canteen_id=canteen.id)
    op = await login(client, op_openid)
    day = business_date() + timedelta(days=3)
    url = f"/api/v1/canteens/{canteen.id}/menus/{day.isoformat()}/lunch"
    items = [
        {"name": "一大荤两素套餐", "price_fen": 1100, "diet_tags": ["低盐"], "allergens": ["鸡蛋"]},
        {"name": "特惠套餐", "price_fen": 800, "is_special": True, "stock": 1},
    ]
    first = await client.put(url, json={"capacity": 2, "items": items}, headers=op)
    assert first.status_code == 200, first.text
    again = await client.put(url, json={"capacity": 2, "items": items}, headers=op)
    assert again.json()["version"] == 1 and again.json()["id"] == first.json()["id"]

    elder, _ = await create_elder(
        session, district_code=canteen.district_code, family_openids=(fam := unique("fa"),)
    )
    from app.kit.time import utcnow

    set_now(monkeypatch, utcnow())
    special = next(i for i in again.json()["items"] if i["is_special"])
    booked = await client.post(
        "/api/v1/bookings",
        json={
            "elder_id": str(elder.id),
            "canteen_id": str(canteen.id),
            "date": day.isoformat(),
            "slot": "lunch",
            "items": [{"menu_item_id": special["id"]}],
        },
        headers=await login(client, fam) | {"Idempotency-Key": unique("k-")},
    )
    assert booked.status_code == 201, booked.text
    too_small = await client.put(url, json={"capacity": 0, "items": items}, headers=op)
    assert too_small.status_code == 409 and too_small.json()["error"] == "CapacityBelowBooked"
    v2 = await client.put(url, json={"capacity": 5, "items": items[:1]}, headers=op)
    assert v2.status_code == 200 and v2.json()["version"] == 2 and v2.json()["booked_meals"] == 1
    statuses = (
        (
            await session.execute(
                select(Menu.status).where(Menu.canteen_id == canteen.id).order_by(Menu.version)
            )
        )
        .scalars()
        .all()
    )
    assert statuses == ["superseded", "published"]
    listed = await client.get(
        f"/api/v1/canteens/{canteen.id}/menus", params={"from": day.isoformat(), "to": day.isoformat()}
    )
    assert [m["version"] for m in listed.json()] == [2]

    other_op = unique("op")
    await grant(session, other_op, Role.operator, canteen_id=(await create_canteen(session)).id)
    denied = await client.put(url, json={"items": items}, headers=await login(client, other_op))
    assert denied.status_code == 403
    past = await client.put(
        f"/api/v1/canteens/{canteen.id}/menus/2020-01-01/lunch", json={"items": items}, headers=op
    )
    assert past.status_code == 400 and past.json()["error"] == "DateInPast"
    negative = await client.put(url, json={"items": [{"name": "x", "price_fen": -5}]}, headers=op)
    assert negative.status_code == 422
    no_slot = await client.put(
        f"/api/v1/canteens/{canteen.id}/menus/{day.isoformat()}/dinner", json={"items": items}, headers=op
    )
    assert no_slot.status_code == 409 and no_slot.json()["error"] == "SlotNotServed"
