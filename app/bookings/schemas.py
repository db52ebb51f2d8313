from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from app.elders.schemas import _check_id_number
from app.models.booking import BookingMode
from app.models.canteen_slot import MealSlot

SelfPayMethod = Literal["cash", "wechat", "card", "prepaid", "none"]


class ItemRequest(BaseModel):
    menu_item_id: uuid.UUID
    quantity: int = Field(1, ge=1, le=10)


def _unique_items(value: list[ItemRequest]) -> list[ItemRequest]:
    if len({i.menu_item_id for i in value}) != len(value):
        raise ValueError("同一道菜请合并数量，不要重复添加")
    if sum(i.quantity for i in value) > 10:
        raise ValueError("一次最多订 10 份")
    return value


class BookingRequest(BaseModel):
    """The first item (one portion) is the elder's own meal and may be subsidized; everything else is extra
    (companions) at list price."""

    elder_id: uuid.UUID
    canteen_id: uuid.UUID
    date: date
    slot: MealSlot
    items: list[ItemRequest] = Field(min_length=1, max_length=10)
    mode: BookingMode = BookingMode.dine_in

    _items = field_validator("items")(classmethod(lambda cls, v: _unique_items(v)))


class LineOut(BaseModel):
    menu_item_id: uuid.UUID
    item_name: str
    quantity: int
    unit_price_fen: int
    is_elder_meal: bool
    list_price_fen: int
    gov_subsidy_fen: int
    charity_subsidy_fen: int
    delivery_fee_fen: int
    self_pay_fen: int


class Breakdown(BaseModel):
    list_price_fen: int
    gov_subsidy_fen: int
    charity_subsidy_fen: int
    delivery_fee_fen: int
    self_pay_fen: int


class QuoteOut(Breakdown):
    elder_id: uuid.UUID
    canteen_id: uuid.UUID
    date: date
    slot: str
    mode: str
    subsidized: bool
    tier_name: str | None
    charity_eligible: bool
    charity_shortfall_fen: int = Field(description="可由爱心资金支付但资金池暂不足、需自付的金额")
    cutoff_at: datetime
    lines: list[LineOut]
    notes: list[str]


class BookingOut(Breakdown):
    id: uuid.UUID
    status: str
    elder_id: uuid.UUID
    canteen_id: uuid.UUID
    date: date
    slot: str
    mode: str
    meals: int
    subsidized: bool
    channel: str
    serve_code: str
    qr_payload: str
    cutoff_at: datetime
    serve_start_at: datetime
    serve_end_at: datetime
    lines: list[LineOut]
    created_at: datetime
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    served_at: datetime | None = None
    serve_method: str | None = None
    self_pay_method: str | None = None
    no_show_at: datetime | None = None


class CancelRequest(BaseModel):
    reason: str | None = Field(None, max_length=200)


class ServeRequest(BaseModel):
    code: str = Field(min_length=1, max_length=120, description="6位取餐码，或订餐二维码的内容")
    self_pay_method: SelfPayMethod = "cash"


class WalkInRequest(BaseModel):
    id_number: str = Field(min_length=1, max_length=32)
    slot: MealSlot
    items: list[ItemRequest] = Field(min_length=1, max_length=10)
    mode: Literal["dine_in", "pickup"] = "dine_in"
    self_pay_method: SelfPayMethod = "cash"

    _items = field_validator("items")(classmethod(lambda cls, v: _unique_items(v)))

    @field_validator("id_number")
    @classmethod
    def _id_number(cls, value: str) -> str:
        return _check_id_number(value)


class StandingOrderIn(BaseModel):
    elder_id: uuid.UUID
    canteen_id: uuid.UUID
    slot: MealSlot
    weekdays: list[int] = Field(min_length=1, max_length=7, description="1=周一 … 7=周日")
    mode: BookingMode = BookingMode.dine_in
    item_name: str | None = Field(None, max_length=64, description="想订的套餐名；不填则订当天第一个套餐")
    pause_until: date | None = None

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if any(d < 1 or d > 7 for d in value):
            raise ValueError("星期应为 1（周一）到 7（周日）")
        return sorted(set(value))


class StandingOrderPatch(BaseModel):
    weekdays: list[int] | None = Field(None, min_length=1, max_length=7)
    mode: BookingMode | None = None
    item_name: str | None = Field(None, max_length=64)
    pause_until: date | None = None
    is_active: bool | None = None

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if any(d < 1 or d > 7 for d in value):
            raise ValueError("星期应为 1（周一）到 7（周日）")
        return sorted(set(value))


class StandingOrderRunOut(BaseModel):
    date: date
    outcome: str
    reason_code: str | None
    reason: str | None
    booking_id: uuid.UUID | None


class StandingOrderOut(BaseModel):
    id: uuid.UUID
    elder_id: uuid.UUID
    canteen_id: uuid.UUID
    slot: str
    weekdays: list[int]
    mode: str
    item_name: str | None
    pause_until: date | None
    is_active: bool
    channel: str
    runs: list[StandingOrderRunOut] = Field(default_factory=list)


class RosterItem(BaseModel):
    name: str
    quantity: int


class RosterBooking(BaseModel):
    id: uuid.UUID
    elder_name: str
    status: str
    mode: str
    meals: int
    items: list[RosterItem]
    diet_tags: list[str]
    allergens: list[str]
    self_pay_fen: int


class RosterDelivery(BaseModel):
    booking_id: uuid.UUID
    elder_name: str
    phone: str | None
    address: str | None
    items: list[RosterItem]
    self_pay_fen: int


class RosterOut(BaseModel):
    canteen_id: uuid.UUID
    date: date
    slot: str
    capacity: int
    booked_meals: int
    status_counts: dict[str, int]
    items: list[RosterItem]
    diet_tags: dict[str, int]
    allergens: dict[str, int]
    bookings: list[RosterBooking]
    deliveries: list[RosterDelivery]


class SubscriptionsIn(BaseModel):
    template_ids: list[str] = Field(
        min_length=1, max_length=3, description="wx.requestSubscribeMessage 中用户允许的模板"
    )


class SubscriptionsOut(BaseModel):
    quotas: dict[str, int]
