from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date

from sqlalchemy import delete, exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import BookingLine, Menu, MenuItem, SlotDay


class MenuRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def published(
        self, canteen_id: uuid.UUID, service_date: date, slot: str, *, for_update: bool = False
    ) -> Menu | None:
        stmt = select(Menu).where(
            Menu.canteen_id == canteen_id,
            Menu.service_date == service_date,
            Menu.slot == slot,
            Menu.status == "published",
        )
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def published_between(self, canteen_id: uuid.UUID, start: date, end: date) -> Sequence[Menu]:
        stmt = (
            select(Menu)
            .where(
                Menu.canteen_id == canteen_id,
                Menu.status == "published",
                Menu.service_date >= start,
                Menu.service_date <= end,
            )
            .order_by(Menu.service_date, Menu.slot)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def items(self, menu_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[MenuItem]]:
        out: dict[uuid.UUID, list[MenuItem]] = {m: [] for m in menu_ids}
        if not menu_ids:
            return out
        stmt = select(MenuItem).where(MenuItem.menu_id.in_(menu_ids)).order_by(MenuItem.position)
        for item in (await self.session.execute(stmt)).scalars():
            out[item.menu_id].append(item)
        return out

    async def has_bookings(self, menu_id: uuid.UUID) -> bool:
        stmt = select(
            exists().where(
                BookingLine.menu_item_id.in_(select(MenuItem.id).where(MenuItem.menu_id == menu_id))
            )
        )
        return bool((await self.session.execute(stmt)).scalar())

    async def delete_items(self, menu_id: uuid.UUID) -> None:
        await self.session.execute(delete(MenuItem).where(MenuItem.menu_id == menu_id))

    async def lock_slot_day(
        self, canteen_id: uuid.UUID, service_date: date, slot: str, default_capacity: int
    ) -> SlotDay:
        await self.session.execute(
            insert(SlotDay)
            .values(
                id=uuid.uuid4(),
                canteen_id=canteen_id,
                service_date=service_date,
                slot=slot,
                capacity=default_capacity,
                booked_meals=0,
            )
            .on_conflict_do_nothing(index_elements=["canteen_id", "service_date", "slot"])
        )
        stmt = (
            select(SlotDay)
            .where(
                SlotDay.canteen_id == canteen_id, SlotDay.service_date == service_date, SlotDay.slot == slot
            )
            .with_for_update()
        )
        return (await self.session.execute(stmt, execution_options={"populate_existing": True})).scalar_one()

    async def slot_days(
        self, canteen_id: uuid.UUID, start: date, end: date
    ) -> dict[tuple[date, str], SlotDay]:
        stmt = select(SlotDay).where(
            SlotDay.canteen_id == canteen_id, SlotDay.service_date >= start, SlotDay.service_date <= end
        )
        return {(s.service_date, s.slot): s for s in (await self.session.execute(stmt)).scalars()}

    def add(self, obj: object) -> None:
        self.session.add(obj)
