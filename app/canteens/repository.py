from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, Float, case, cast, func, null, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Canteen, CanteenSlot

EARTH_RADIUS_M = 6_371_000.0


def distance_expr(lat: float, lng: float) -> ColumnElement[float]:
    """Great-circle distance in metres (haversine), computed in SQL."""
    dlat = func.radians(Canteen.lat - lat)
    dlng = func.radians(Canteen.lng - lng)
    a = func.power(func.sin(dlat / 2), 2) + func.cos(func.radians(lat)) * func.cos(
        func.radians(Canteen.lat)
    ) * func.power(func.sin(dlng / 2), 2)
    return cast(2 * EARTH_RADIUS_M * func.asin(func.least(1.0, func.sqrt(a))), Float)


class CanteenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def search(
        self,
        *,
        lat: float | None,
        lng: float | None,
        district: str | None,
        radius_m: int | None,
        offset: int,
        limit: int,
    ) -> Sequence[tuple[Canteen, float | None]]:
        if lat is not None and lng is not None:
            dist = distance_expr(lat, lng)
            stmt = select(Canteen, dist.label("distance")).where(Canteen.is_active.is_(True))
            if radius_m is not None:
                stmt = stmt.where(dist <= radius_m)
            stmt = stmt.order_by(dist, Canteen.id)
        else:
            stmt = select(Canteen, cast(null(), Float).label("distance")).where(Canteen.is_active.is_(True))
            stmt = stmt.order_by(Canteen.code, Canteen.id)
        if district:
            stmt = stmt.where(Canteen.district_code == district)
        rows = (await self.session.execute(stmt.offset(offset).limit(limit))).all()
        return [(r[0], r[1]) for r in rows]

    async def get(self, canteen_id: uuid.UUID, *, active_only: bool = False) -> Canteen | None:
        stmt = select(Canteen).where(Canteen.id == canteen_id)
        if active_only:
            stmt = stmt.where(Canteen.is_active.is_(True))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_by_code(self, code: str) -> Canteen | None:
        return (await self.session.execute(select(Canteen).where(Canteen.code == code))).scalar_one_or_none()

    async def slots(self, canteen_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[CanteenSlot]]:
        out: dict[uuid.UUID, list[CanteenSlot]] = {cid: [] for cid in canteen_ids}
        if not canteen_ids:
            return out
        order = case({"breakfast": 0, "lunch": 1, "dinner": 2}, value=CanteenSlot.slot, else_=3)
        stmt = select(CanteenSlot).where(CanteenSlot.canteen_id.in_(canteen_ids)).order_by(order)
        for slot in (await self.session.execute(stmt)).scalars():
            out[slot.canteen_id].append(slot)
        return out

    async def get_slot(self, canteen_id: uuid.UUID, slot: str) -> CanteenSlot | None:
        stmt = select(CanteenSlot).where(CanteenSlot.canteen_id == canteen_id, CanteenSlot.slot == slot)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    def add(self, obj: object) -> None:
        self.session.add(obj)
