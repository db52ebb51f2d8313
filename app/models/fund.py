from __future__ import annotations

import enum

from sqlalchemy import Boolean, CheckConstraint, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class FundPurpose(enum.StrEnum):
    meal = "meal"  # 助餐
    elderly = "elderly"  # 助老
    medical = "medical"  # 助医
    education = "education"  # 助学
    poverty = "poverty"  # 助困
    disability = "disability"  # 助残
    disaster = "disaster"  # 救灾


class Fund(UUIDPK, Timestamps, Base):
    """A charity fund (慈善基金). Only meal-purpose funds pay meal subsidies; exactly one is the general meal
    pool (乐享桑榆)."""

    __tablename__ = "funds"
    __table_args__ = (
        CheckConstraint(
            "purpose IN ('meal','elderly','medical','education','poverty','disability','disaster')",
            name="purpose_known",
        ),
        CheckConstraint("NOT is_general_meal_pool OR purpose = 'meal'", name="general_pool_is_meal"),
        Index(
            "uq_funds_one_general_meal_pool",
            "is_general_meal_pool",
            unique=True,
            postgresql_where=text("is_general_meal_pool"),
        ),
    )

    code: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    purpose: Mapped[str] = mapped_column(String(16), nullable=False)
    is_general_meal_pool: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
