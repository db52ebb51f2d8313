from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, status

from app.auth.auth import AdminSubject, SessionDep
from app.canteens.schemas import CanteenCreate, CanteenOut, CanteenPatch
from app.canteens.service import canteen_service
from app.kit.pagination import Page

router = APIRouter(tags=["canteens"])


@router.get("/canteens", response_model=Page[CanteenOut], summary="附近的食堂")
async def search_canteens(
    session: SessionDep,
    lat: float | None = Query(None, ge=-90, le=90),
    lng: float | None = Query(None, ge=-180, le=180),
    district: str | None = Query(None, pattern=r"^\d{6}$"),
    radius_m: int | None = Query(None, ge=1, le=200_000),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(20, ge=1, le=100),
) -> Page[CanteenOut]:
    return await canteen_service.search(
        session, lat=lat, lng=lng, district=district, radius_m=radius_m, cursor=cursor, limit=limit
    )


@router.get("/canteens/{canteen_id}", response_model=CanteenOut, summary="食堂详情")
async def get_canteen(canteen_id: uuid.UUID, session: SessionDep) -> CanteenOut:
    return await canteen_service.get(session, canteen_id)


@router.post(
    "/admin/canteens", response_model=CanteenOut, status_code=status.HTTP_201_CREATED, summary="新增食堂"
)
async def create_canteen(payload: CanteenCreate, subject: AdminSubject, session: SessionDep) -> CanteenOut:
    return await canteen_service.create(session, subject, payload)


@router.patch("/admin/canteens/{canteen_id}", response_model=CanteenOut, summary="修改食堂")
async def update_canteen(
    canteen_id: uuid.UUID, payload: CanteenPatch, subject: AdminSubject, session: SessionDep
) -> CanteenOut:
    return await canteen_service.update(session, subject, canteen_id, payload)
