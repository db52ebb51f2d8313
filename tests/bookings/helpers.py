"""A small meal world for booking tests: a district, canteens with lunch, menus, a subsidy policy, elders
with family members and operators — arranged through any session (test transaction or committed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.bookings import service as booking_module
from app.kit.time import business_date, shanghai_datetime
from app.models.role_grant import Role
from tests.fixtures.factories import (
    create_canteen,
    create_canteen_slot,
    create_district,
    create_elder,
    create_guangzhou_policy,
    create_menu,
    grant,
    unique,
)

# The booking clock (``set_now``) stays on the real Asia/Shanghai date the tests start on, so whatever reads the
# real clock (menu publishing, ledger digests, feed statistics) sees DAY as tomorrow, never as a past day.
TODAY = business_date()
DAY = TODAY + timedelta(days=1)  # the meal date most tests book
MORNING = shanghai_datetime(TODAY, time(10, 0))  # before the 16:00 cutoff for DAY


def set_now(monkeypatch: pytest.MonkeyPatch, at: datetime) -> None:
    monkeypatch.setattr(booking_module, "now", lambda: at)


@dataclass
class World:
    district: str
    canteen: Any
    other_canteen: Any
    menu: Any
    items: list[Any]
    other_items: list[Any]
    elder: Any
    id_number: str
    elder_openid: str
    family_openid: str
    operator_openid: str
    other_operator_openid: str
    extra: dict[str, Any] = field(default_factory=dict)


async def arrange(
    session: AsyncSession,
    *,
    capacity: int = 100,
    items: list[dict[str, object]] | None = None,
    policy: bool = True,
    day: date = DAY,
    categories: list[str] | None = None,
) -> World:
    district = (await create_district(session)).code
    canteen = await create_canteen(
        session, district_code=district, name="德城区幸福食堂", delivery_enabled=True, delivery_fee_fen=200
    )
    other = await create_canteen(session, district_code=district, name="新湖幸福食堂")
    for c in (canteen, other):
        await create_canteen_slot(session, c.id, "lunch")
    menu, menu_items = await create_menu(session, canteen.id, day, items=items, capacity=capacity)
    _, other_items = await create_menu(session, other.id, day)
    if policy:
        await create_guangzhou_policy(session)
    elder_openid, family_openid = unique("el"), unique("fa")
    elder, id_number = await create_elder(
        session,
        district_code=district,
        user_openid=elder_openid,
        family_openids=(family_openid,),
        categories=categories,
        diet_tags=["低盐"],
        allergens=["花生"],
    )
    operator, other_operator = unique("op"), unique("op")
    await grant(session, operator, Role.operator, canteen_id=canteen.id)
    await grant(session, other_operator, Role.operator, canteen_id=other.id)
    return World(
        district=district,
        canteen=canteen,
        other_canteen=other,
        menu=menu,
        items=menu_items,
        other_items=other_items,
        elder=elder,
        id_number=id_number,
        elder_openid=elder_openid,
        family_openid=family_openid,
        operator_openid=operator,
        other_operator_openid=other_operator,
    )


def body(
    world: World,
    *,
    canteen: Any = None,
    items: list[Any] | None = None,
    day: date = DAY,
    mode: str = "dine_in",
    quantity: int = 1,
) -> dict[str, Any]:
    canteen = canteen or world.canteen
    chosen = items or (world.items if canteen is world.canteen else world.other_items)
    return {
        "elder_id": str(world.elder.id),
        "canteen_id": str(canteen.id),
        "date": day.isoformat(),
        "slot": "lunch",
        "items": [{"menu_item_id": str(chosen[0].id), "quantity": quantity}],
        "mode": mode,
    }


def key() -> dict[str, str]:
    return {"Idempotency-Key": unique("idem-")}


def later(at: datetime, **kw: float) -> datetime:
    return at + timedelta(**kw)
