from __future__ import annotations

import enum
import uuid
from datetime import time

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String, Time, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class MealSlot(enum.StrEnum):
    breakfast = "breakfast"
    lunch = "lunch"
    dinner = "dinner"


class CanteenSlot(UUIDPK, Timestamps, Base):
    """A meal a canteen serves: its serving window and booking cutoff (Asia/Shanghai wall time) and the
    default number of meals it can cook. The cutoff is ``cutoff_days_before`` days before the meal date at
    ``cutoff_time``."""

    __tablename__ = "canteen_slots"
    __table_args__ = (
        UniqueConstraint("canteen_id", "slot"),
        CheckConstraint("slot IN ('breakfast','lunch','dinner')", name="slot_known"),
        CheckConstraint("serve_start < serve_end", name="window_ordered"),
        CheckConstraint("cutoff_days_before BETWEEN 0 AND 7", name="cutoff_days_range"),
        CheckConstraint("default_capacity >= 0", name="capacity_nonneg"),
    )

    canteen_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("canteens.id"), index=True, nullable=False
    )
    slot: Mapped[str] = mapped_column(String(16), nullable=False)
    serve_start: Mapped[time] = mapped_column(Time, nullable=False)
    serve_end: Mapped[time] = mapped_column(Time, nullable=False)
    cutoff_days_before: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    cutoff_time: Mapped[time] = mapped_column(Time, nullable=False)
    default_capacity: Mapped[int] = mapped_column(Integer, nullable=False, default=100)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
