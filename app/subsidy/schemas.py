from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from pydantic import BaseModel, Field, model_validator

from app.models.canteen_slot import MealSlot
from app.models.elder import ElderCategory


class TierIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    min_age: int = Field(60, ge=0, le=150)
    max_age: int | None = Field(None, ge=0, le=150)
    categories: list[ElderCategory] = Field(default_factory=list, max_length=7)
    amount_fen: int = Field(ge=0, le=100_000)

    @model_validator(mode="after")
    def _ages(self) -> TierIn:
        if self.max_age is not None and self.max_age < self.min_age:
            raise ValueError("最大年龄不能小于最小年龄")
        return self


class CharityRule(BaseModel):
    category: ElderCategory
    min_age: int | None = Field(None, ge=0, le=150)


class PolicyIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    city: str = Field(min_length=1, max_length=32)
    district_code: str | None = Field(None, pattern=r"^\d{6}$")
    effective_from: date
    effective_to: date | None = None
    min_self_pay_fen: int = Field(0, ge=0, le=100_000)
    min_spend_fen: int = Field(0, ge=0, le=100_000)
    require_hukou_district: bool = True
    subsidized_slots: list[MealSlot] = Field(
        default_factory=lambda: list(MealSlot), min_length=1, max_length=3
    )
    charity_rules: list[CharityRule] = Field(default_factory=list, max_length=20)
    charity_cap_fen: int = Field(0, ge=0, le=100_000)
    tiers: list[TierIn] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _period(self) -> PolicyIn:
        if self.effective_to is not None and self.effective_to <= self.effective_from:
            raise ValueError("结束日期应晚于开始日期")
        return self


class TierOut(TierIn):
    pass


class PolicyOut(BaseModel):
    id: uuid.UUID
    name: str
    city: str
    district_code: str | None
    effective_from: date
    effective_to: date | None
    min_self_pay_fen: int
    min_spend_fen: int
    require_hukou_district: bool
    subsidized_slots: list[str]
    charity_rules: list[dict[str, Any]]
    charity_cap_fen: int
    tiers: list[TierOut]
