from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class MealNotification(UUIDPK, Timestamps, Base):
    """A subscribe message about a booking, to one user. Written in the booking's transaction and sent by a
    job after commit; one per (booking, kind, user)."""

    __tablename__ = "meal_notifications"
    __table_args__ = (
        UniqueConstraint("booking_id", "kind", "user_id"),
        CheckConstraint(
            "kind IN ('booking_confirmed','meal_reminder','cancelled_by_canteen')", name="kind_known"
        ),
        CheckConstraint("status IN ('pending','sent','no_quota','failed')", name="status_known"),
    )

    booking_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("bookings.id"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id"), index=True, nullable=False
    )
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    template_id: Mapped[str] = mapped_column(String(64), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    page: Mapped[str | None] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(String(200))
