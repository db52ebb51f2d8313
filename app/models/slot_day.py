from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import CheckConstraint, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class SlotDay(UUIDPK, Timestamps, Base):
    """Capacity of one canteen meal on one date. ``booked_meals`` moves only by conditional UPDATEs, so two
    bookings can never both take the last meal; the CHECK is the backstop."""

    __tablename__ = "slot_days"
    __table_args__ = (
        UniqueConstraint("canteen_id", "service_date", "slot"),
        CheckConstraint("booked_meals >= 0 AND booked_meals <= capacity", name="within_capacity"),
    )

    canteen_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("canteens.id"), nullable=False
    )
    service_date: Mapped[date] = mapped_column(Date, nullable=False)
    slot: Mapped[str] = mapped_column(String(16), nullable=False)
    capacity: Mapped[int] = mapped_column(Integer, nullable=False)
    booked_meals: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
