from __future__ import annotations

import uuid
from datetime import date

from fastapi import APIRouter, Query

from app.auth.auth import CurrentSubject, SessionDep
from app.menus.schemas import MenuOut, MenuPut
from app.menus.service import menu_service
from app.models.canteen_slot import MealSlot

router = APIRouter(tags=["menus"])


@router.get("/canteens/{canteen_id}/menus", response_model=list[MenuOut], summary="食堂菜单（按日期）")
async def list_menus(
    canteen_id: uuid.UUID,
    session: SessionDep,
    from_: date | None = Query(None, alias="from"),
    to: date | None = Query(None),
) -> list[MenuOut]:
    return await menu_service.list(session, canteen_id, from_, to)


@router.put(
    "/canteens/{canteen_id}/menus/{service_date}/{slot}", response_model=MenuOut, summary="发布菜单（食堂）"
)
async def publish_menu(
    canteen_id: uuid.UUID,
    service_date: date,
    slot: MealSlot,
    payload: MenuPut,
    subject: CurrentSubject,
    session: SessionDep,
) -> MenuOut:
    return await menu_service.publish(session, subject, canteen_id, service_date, slot, payload)
