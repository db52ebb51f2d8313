from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from app.models.elder import DietTag


class MenuItemIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    kind: Literal["set_meal", "dish"] = "set_meal"
    description: str = Field("", max_length=200)
    price_fen: int = Field(gt=0, le=100_000, description="单价（分）")
    diet_tags: list[DietTag] = Field(default_factory=list, max_length=5)
    allergens: list[str] = Field(default_factory=list, max_length=20)
    is_special: bool = Field(False, description="特惠套餐")
    stock: int | None = Field(None, ge=0, le=100_000, description="限量份数；不填为不限")

    @field_validator("allergens")
    @classmethod
    def _allergens(cls, value: list[str]) -> list[str]:
        cleaned = [v.strip() for v in value if v.strip()]
        if any(len(v) > 32 for v in cleaned):
            raise ValueError("过敏原每项不超过32个字")
        return sorted(set(cleaned))


class MenuPut(BaseModel):
    capacity: int | None = Field(None, ge=0, le=100_000, description="本餐可订份数；不填沿用食堂默认")
    items: list[MenuItemIn] = Field(min_length=1, max_length=50)

    @field_validator("items")
    @classmethod
    def _unique_names(cls, value: list[MenuItemIn]) -> list[MenuItemIn]:
        if len({i.name for i in value}) != len(value):
            raise ValueError("同一份菜单里菜名不能重复")
        return value


class MenuItemOut(BaseModel):
    id: uuid.UUID
    name: str
    kind: str
    description: str
    price_fen: int
    diet_tags: list[str]
    allergens: list[str]
    is_special: bool
    stock: int | None
    remaining: int | None


class MenuOut(BaseModel):
    id: uuid.UUID
    canteen_id: uuid.UUID
    date: date
    slot: str
    version: int
    published_at: datetime
    capacity: int
    booked_meals: int
    remaining_meals: int
    items: list[MenuItemOut]
