from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status

from app.auth.auth import CurrentSubject, SessionDep
from app.bookings.notifications import TEMPLATES
from app.bookings.repository import BookingRepository
from app.bookings.schemas import (
    BookingOut,
    BookingRequest,
    CancelRequest,
    QuoteOut,
    RosterOut,
    ServeRequest,
    StandingOrderIn,
    StandingOrderOut,
    StandingOrderPatch,
    SubscriptionsIn,
    SubscriptionsOut,
    WalkInRequest,
)
from app.bookings.service import booking_service
from app.db import SessionFactory, get_session_factory
from app.exceptions import BadRequest
from app.kit.pagination import Page
from app.models.canteen_slot import MealSlot

router = APIRouter(tags=["bookings"])


@router.post("/bookings/quote", response_model=QuoteOut, summary="询价（不下单）")
async def quote(payload: BookingRequest, subject: CurrentSubject, session: SessionDep) -> QuoteOut:
    return await booking_service.quote(session, subject, payload)


@router.post("/bookings", response_model=BookingOut, status_code=status.HTTP_201_CREATED, summary="订餐")
async def create_booking(
    payload: BookingRequest,
    subject: CurrentSubject,
    session: SessionDep,
    open_session: Annotated[SessionFactory, Depends(get_session_factory)],
    response: Response,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=200),
) -> BookingOut:
    """Same ``Idempotency-Key`` and body → the same booking (200); same key, different body → 409. The
    booking is made with the process's other waiting booking requests in one transaction (group commit)."""
    booking, created = await booking_service.book(session, open_session, subject, payload, idempotency_key)
    if not created:
        response.status_code = status.HTTP_200_OK
    return booking


@router.get("/bookings", response_model=Page[BookingOut], summary="订餐记录")
async def list_bookings(
    subject: CurrentSubject,
    session: SessionDep,
    elder_id: uuid.UUID | None = None,
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(20, ge=1, le=100),
) -> Page[BookingOut]:
    return await booking_service.list_bookings(
        session, subject, elder_id=elder_id, cursor=cursor, limit=limit
    )


@router.get("/bookings/{booking_id}", response_model=BookingOut, summary="订餐详情")
async def get_booking(booking_id: uuid.UUID, subject: CurrentSubject, session: SessionDep) -> BookingOut:
    return await booking_service.get(session, subject, booking_id)


@router.post("/bookings/{booking_id}/cancel", response_model=BookingOut, summary="取消订餐")
async def cancel_booking(
    booking_id: uuid.UUID, subject: CurrentSubject, session: SessionDep, payload: CancelRequest | None = None
) -> BookingOut:
    return await booking_service.cancel(session, subject, booking_id, payload or CancelRequest())


@router.post(
    "/standing-orders",
    response_model=StandingOrderOut,
    status_code=status.HTTP_201_CREATED,
    summary="长期订餐",
)
async def create_standing_order(
    payload: StandingOrderIn, subject: CurrentSubject, session: SessionDep
) -> StandingOrderOut:
    return await booking_service.create_standing_order(session, subject, payload)


@router.get("/standing-orders", response_model=list[StandingOrderOut], summary="长期订餐列表")
async def list_standing_orders(
    subject: CurrentSubject, session: SessionDep, elder_id: uuid.UUID | None = None
) -> list[StandingOrderOut]:
    return await booking_service.list_standing_orders(session, subject, elder_id)


@router.get("/standing-orders/{so_id}", response_model=StandingOrderOut, summary="长期订餐详情（含每天结果）")
async def get_standing_order(
    so_id: uuid.UUID, subject: CurrentSubject, session: SessionDep
) -> StandingOrderOut:
    return await booking_service.get_standing_order(session, subject, so_id)


@router.patch("/standing-orders/{so_id}", response_model=StandingOrderOut, summary="修改 / 暂停长期订餐")
async def update_standing_order(
    so_id: uuid.UUID, payload: StandingOrderPatch, subject: CurrentSubject, session: SessionDep
) -> StandingOrderOut:
    return await booking_service.update_standing_order(session, subject, so_id, payload)


@router.get("/canteens/{canteen_id}/roster", response_model=RosterOut, summary="备餐名单（食堂）")
async def roster(
    canteen_id: uuid.UUID,
    subject: CurrentSubject,
    session: SessionDep,
    date_: date = Query(alias="date"),
    slot: MealSlot = Query(),
) -> RosterOut:
    return await booking_service.roster(session, subject, canteen_id, date_, slot.value)


@router.post("/canteens/{canteen_id}/serve", response_model=BookingOut, summary="核销取餐码（食堂）")
async def serve(
    canteen_id: uuid.UUID, payload: ServeRequest, subject: CurrentSubject, session: SessionDep
) -> BookingOut:
    return await booking_service.serve(session, subject, canteen_id, payload)


@router.post(
    "/canteens/{canteen_id}/walk-ins",
    response_model=BookingOut,
    status_code=status.HTTP_201_CREATED,
    summary="窗口现场就餐（食堂）",
)
async def walk_in(
    canteen_id: uuid.UUID, payload: WalkInRequest, subject: CurrentSubject, session: SessionDep
) -> BookingOut:
    return await booking_service.walk_in(session, subject, canteen_id, payload)


@router.post("/me/subscriptions", response_model=SubscriptionsOut, summary="记录用户允许的订阅消息")
async def subscribe(
    payload: SubscriptionsIn, subject: CurrentSubject, session: SessionDep
) -> SubscriptionsOut:
    known = set(TEMPLATES.values())
    unknown = [t for t in payload.template_ids if t not in known]
    if unknown:
        raise BadRequest("不认识的订阅消息模板", code="UnknownTemplate", detail={"template_ids": unknown})
    repo = BookingRepository(session)
    quotas = {t: await repo.grant_quota(subject.user_id, t) for t in dict.fromkeys(payload.template_ids)}
    return SubscriptionsOut(quotas=quotas)
