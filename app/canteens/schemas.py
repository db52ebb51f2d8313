from __future__ import annotations

import uuid
from datetime import time

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.models.canteen import CanteenType
from app.models.canteen_slot import MealSlot


class SlotIn(BaseModel):
    slot: MealSlot
    serve_start: time = Field(description="供餐开始（北京时间）")
    serve_end: time = Field(description="供餐结束（北京时间）")
    cutoff_days_before: int = Field(1, ge=0, le=7, description="截止订餐：提前几天")
    cutoff_time: time = Field(description="截止订餐：当天几点（北京时间）")
    default_capacity: int = Field(100, ge=0, le=100_000)
    is_active: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> SlotIn:
        if self.serve_start >= self.serve_end:
            raise ValueError("供餐开始时间应早于结束时间")
        return self


class SlotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    slot: MealSlot
    serve_start: time
    serve_end: time
    cutoff_days_before: int
    cutoff_time: time
    default_capacity: int
    is_active: bool


class CanteenCreate(BaseModel):
    code: str = Field(min_length=2, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")
    name: str = Field(min_length=1, max_length=64)
    type: CanteenType
    district_code: str = Field(pattern=r"^\d{6}$")
    street: str = Field("", max_length=64)
    community: str = Field("", max_length=64)
    address: str = Field("", max_length=200)
    phone: str | None = Field(None, max_length=32)
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    delivery_enabled: bool = False
    delivery_fee_fen: int = Field(0, ge=0, le=100_000)
    delivery_radius_m: int = Field(0, ge=0, le=100_000)
    slots: list[SlotIn] = Field(default_factory=list, max_length=3)

    @model_validator(mode="after")
    def _unique_slots(self) -> CanteenCreate:
        if len({s.slot for s in self.slots}) != len(self.slots):
            raise ValueError("同一餐次只能设置一次")
        return self


class CanteenPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=64)
    type: CanteenType | None = None
    street: str | None = Field(None, max_length=64)
    community: str | None = Field(None, max_length=64)
    address: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=32)
    lat: float | None = Field(None, ge=-90, le=90)
    lng: float | None = Field(None, ge=-180, le=180)
    delivery_enabled: bool | None = None
    delivery_fee_fen: int | None = Field(None, ge=0, le=100_000)
    delivery_radius_m: int | None = Field(None, ge=0, le=100_000)
    is_active: bool | None = None
    slots: list[SlotIn] | None = Field(None, max_length=3, description="按餐次新增或替换")

    @model_validator(mode="after")
    def _unique_slots(self) -> CanteenPatch:
        if self.slots is not None and len({s.slot for s in self.slots}) != len(self.slots):
            raise ValueError("同一餐次只能设置一次")
        return self


class CanteenOut(BaseModel):
    id: uuid.UUID
    code: str
    name: str
    type: str
    district_code: str
    street: str
    community: str
    address: str
    phone: str | None
    lat: float
    lng: float
    delivery_enabled: bool
    delivery_fee_fen: int
    delivery_radius_m: int
    is_active: bool
    distance_m: int | None = None
    slots: list[SlotOut] = Field(default_factory=list)
