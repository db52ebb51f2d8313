from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import CheckConstraint, Date, ForeignKey, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class StandingOrderRun(UUIDPK, Timestamps, Base):
    """What a standing order did for one date: booked (with the booking) or skipped (and why). One per date."""

    __tablename__ = "standing_order_runs"
    __table_args__ = (
        UniqueConstraint("standing_order_id", "service_date"),
        CheckConstraint("outcome IN ('booked','skipped')", name="outcome_known"),
    )

    standing_order_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("standing_orders.id"), nullable=False
    )
    service_date: Mapped[date] = mapped_column(Date, nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    reason_code: Mapped[str | None] = mapped_column(String(48))
    reason: Mapped[str | None] = mapped_column(String(200))
    booking_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("bookings.id"))
