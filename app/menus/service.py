from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth.subject import Subject
from app.canteens.repository import CanteenRepository
from app.exceptions import BadRequest, Conflict, Forbidden, NotFound
from app.kit.time import business_date, utcnow
from app.menus.repository import MenuRepository
from app.menus.schemas import MenuItemOut, MenuOut, MenuPut
from app.models import Canteen, Menu, MenuItem, SlotDay
from app.models.canteen_slot import MealSlot

MAX_RANGE_DAYS = 31


def item_out(item: MenuItem) -> MenuItemOut:
    return MenuItemOut(
        id=item.id,
        name=item.name,
        kind=item.kind,
        description=item.description,
        price_fen=item.price_fen,
        diet_tags=list(item.diet_tags),
        allergens=list(item.allergens),
        is_special=item.is_special,
        stock=item.stock,
        remaining=None if item.stock is None else max(item.stock - item.sold, 0),
    )


def menu_out(menu: Menu, items: list[MenuItem], slot_day: SlotDay | None) -> MenuOut:
    capacity = slot_day.capacity if slot_day else 0
    booked = slot_day.booked_meals if slot_day else 0
    return MenuOut(
        id=menu.id,
        canteen_id=menu.canteen_id,
        date=menu.service_date,
        slot=menu.slot,
        version=menu.version,
        published_at=menu.published_at,
        capacity=capacity,
        booked_meals=booked,
        remaining_meals=max(capacity - booked, 0),
        items=[item_out(i) for i in items],
    )


async def require_operated_canteen(session: AsyncSession, subject: Subject, canteen_id: uuid.UUID) -> Canteen:
    """The canteen, if the subject operates it (federation admins manage all); otherwise 404/403."""
    canteen = await CanteenRepository(session).get(canteen_id)
    if canteen is None:
        raise NotFound("找不到这个食堂", code="CanteenNotFound")
    if not (subject.operates(canteen_id) or subject.is_admin):
        raise Forbidden("您不是这个食堂的工作人员", code="NotYourCanteen")
    return canteen


class MenuService:
    async def list(
        self, session: AsyncSession, canteen_id: uuid.UUID, start: date | None, end: date | None
    ) -> list[MenuOut]:
        if await CanteenRepository(session).get(canteen_id) is None:
            raise NotFound("找不到这个食堂", code="CanteenNotFound")
        start = start or business_date()
        end = end or start + timedelta(days=6)
        if end < start:
            raise BadRequest("结束日期不能早于开始日期", code="DateRangeInvalid")
        if (end - start).days >= MAX_RANGE_DAYS:
            raise BadRequest(f"一次最多查询 {MAX_RANGE_DAYS} 天的菜单", code="DateRangeTooLong")
        repo = MenuRepository(session)
        menus = await repo.published_between(canteen_id, start, end)
        items = await repo.items([m.id for m in menus])
        days = await repo.slot_days(canteen_id, start, end)
        order = {"breakfast": 0, "lunch": 1, "dinner": 2}
        menus = sorted(menus, key=lambda m: (m.service_date, order.get(m.slot, 9)))
        return [menu_out(m, items[m.id], days.get((m.service_date, m.slot))) for m in menus]

    async def publish(
        self,
        session: AsyncSession,
        subject: Subject,
        canteen_id: uuid.UUID,
        service_date: date,
        slot: MealSlot,
        payload: MenuPut,
    ) -> MenuOut:
        canteen = await require_operated_canteen(session, subject, canteen_id)
        slot_cfg = await CanteenRepository(session).get_slot(canteen.id, slot.value)
        if slot_cfg is None or not slot_cfg.is_active:
            raise Conflict("这个食堂没有开设该餐次，请先在食堂设置里添加", code="SlotNotServed")
        if service_date < business_date():
            raise BadRequest("不能发布过去日期的菜单", code="DateInPast")
        if service_date > business_date() + timedelta(days=60):
            raise BadRequest("最多提前 60 天发布菜单", code="DateTooFar")
        repo = MenuRepository(session)
        slot_day = await repo.lock_slot_day(canteen.id, service_date, slot.value, slot_cfg.default_capacity)
        before_capacity = slot_day.capacity
        if payload.capacity is not None:
            if payload.capacity < slot_day.booked_meals:
                raise Conflict(
                    f"已经订出 {slot_day.booked_meals} 份，可订份数不能少于这个数",
                    code="CapacityBelowBooked",
                    detail={"booked_meals": slot_day.booked_meals},
                )
            slot_day.capacity = payload.capacity
        current = await repo.published(canteen.id, service_date, slot.value, for_update=True)
        now = utcnow()
        versioned = False
        if current is not None and not await repo.has_bookings(current.id):
            await repo.delete_items(current.id)
            menu = current
            menu.published_at = now
            menu.published_by_id = subject.user_id
        else:
            version = 1
            if current is not None:
                current.status = "superseded"
                version = current.version + 1
                versioned = True
                await session.flush()
            menu = Menu(
                canteen_id=canteen.id,
                service_date=service_date,
                slot=slot.value,
                version=version,
                status="published",
                published_by_id=subject.user_id,
                published_at=now,
            )
            repo.add(menu)
            await session.flush()
        items = []
        for position, spec in enumerate(payload.items):
            item = MenuItem(
                menu_id=menu.id,
                position=position,
                name=spec.name,
                kind=spec.kind,
                description=spec.description,
                price_fen=spec.price_fen,
                diet_tags=[d.value for d in spec.diet_tags],
                allergens=spec.allergens,
                is_special=spec.is_special,
                stock=spec.stock,
                sold=0,
            )
            repo.add(item)
            items.append(item)
        await session.flush()
        await audit.record(
            session,
            actor_user_id=subject.user_id,
            actor_label=subject.label,
            action="menu.publish",
            target_type="menu",
            target_id=menu.id,
            before={"capacity": before_capacity},
            after={
                "canteen_id": canteen.id,
                "date": service_date.isoformat(),
                "slot": slot.value,
                "version": menu.version,
                "versioned": versioned,
                "capacity": slot_day.capacity,
                "items": [f"{i.name} {i.price_fen}" for i in items],
            },
        )
        return menu_out(menu, items, slot_day)


menu_service = MenuService()
