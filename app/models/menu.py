from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, DateTime, ForeignKey, Index, Integer, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class Menu(UUIDPK, Timestamps, Base):
    """The menu of one canteen meal on one date. Republishing a menu that already has bookings supersedes it
    with a new version (the bookings keep pointing at the items they bought); exactly one is published."""

    __tablename__ = "menus"
    __table_args__ = (
        CheckConstraint("status IN ('published','superseded')", name="status_known"),
        Index(
            "uq_menus_published",
            "canteen_id",
            "service_date",
            "slot",
            unique=True,
            postgresql_where=text("status = 'published'"),
        ),
    )

    canteen_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("canteens.id"), nullable=False
    )
    service_date: Mapped[date] = mapped_column(Date, nullable=False)
    slot: Mapped[str] = mapped_column(String(16), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="published")
    published_by_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
