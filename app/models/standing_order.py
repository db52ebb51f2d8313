from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import Boolean, CheckConstraint, Date, ForeignKey, String
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.dialects.postgresql import INTEGER as PGInteger
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class StandingOrder(UUIDPK, Timestamps, Base):
    """长期订餐: book this elder's meal at this canteen on these ISO weekdays (1 = Monday), materialized into
    ordinary bookings by a job before each cutoff, unless paused."""

    __tablename__ = "standing_orders"
    __table_args__ = (
        CheckConstraint("slot IN ('breakfast','lunch','dinner')", name="slot_known"),
        CheckConstraint("mode IN ('dine_in','pickup','delivery')", name="mode_known"),
        CheckConstraint("cardinality(weekdays) BETWEEN 1 AND 7", name="weekdays_present"),
    )

    elder_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("elders.id"), index=True, nullable=False
    )
    canteen_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("canteens.id"), nullable=False
    )
    slot: Mapped[str] = mapped_column(String(16), nullable=False)
    weekdays: Mapped[list[int]] = mapped_column(ARRAY(PGInteger), nullable=False)
    mode: Mapped[str] = mapped_column(String(16), nullable=False, default="dine_in")
    item_name: Mapped[str | None] = mapped_column(String(64))
    pause_until: Mapped[date | None] = mapped_column(Date)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
