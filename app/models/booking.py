from __future__ import annotations

import enum
import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class BookingStatus(enum.StrEnum):
    confirmed = "confirmed"
    cancelled = "cancelled"
    served = "served"
    no_show = "no_show"


class BookingMode(enum.StrEnum):
    dine_in = "dine_in"
    pickup = "pickup"
    delivery = "delivery"


class Channel(enum.StrEnum):
    self_ = "self"
    proxy = "proxy"
    counter = "counter"
    phone = "phone"
    standing_order = "standing_order"
    system = "system"


CHANNELS = "('self','proxy','counter','phone','standing_order','system')"


class Booking(UUIDPK, Timestamps, Base):
    """A meal booked for one elder at one canteen meal. Never deleted: it ends cancelled, served or no_show.

    The totals are the sums of its lines and add up (CHECK). At most one *subsidized* live booking per elder
    per business day across all canteens (partial unique index), whatever the concurrency."""

    __tablename__ = "bookings"
    __table_args__ = (
        CheckConstraint("status IN ('confirmed','cancelled','served','no_show')", name="status_known"),
        CheckConstraint("mode IN ('dine_in','pickup','delivery')", name="mode_known"),
        CheckConstraint(f"channel IN {CHANNELS}", name="channel_known"),
        CheckConstraint(
            "list_price_fen >= 0 AND gov_subsidy_fen >= 0 AND charity_subsidy_fen >= 0 "
            "AND delivery_fee_fen >= 0 AND self_pay_fen >= 0",
            name="amounts_nonneg",
        ),
        CheckConstraint(
            "self_pay_fen = list_price_fen + delivery_fee_fen - gov_subsidy_fen - charity_subsidy_fen",
            name="breakdown_adds_up",
        ),
        CheckConstraint("meals > 0", name="meals_positive"),
        Index(
            "uq_bookings_one_subsidized_meal_per_day",
            "elder_id",
            "service_date",
            unique=True,
            postgresql_where=text("subsidized AND status IN ('confirmed','served')"),
        ),
        Index("ix_bookings_canteen_day", "canteen_id", "service_date", "slot"),
        Index("uq_bookings_serve_code", "canteen_id", "service_date", "serve_code", unique=True),
        Index("ix_bookings_elder_day", "elder_id", "service_date"),
    )

    elder_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("elders.id"), nullable=False)
    canteen_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("canteens.id"), nullable=False
    )
    menu_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("menus.id"), nullable=False)
    service_date: Mapped[date] = mapped_column(Date, nullable=False)
    slot: Mapped[str] = mapped_column(String(16), nullable=False)
    mode: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="confirmed")
    meals: Mapped[int] = mapped_column(Integer, nullable=False)
    subsidized: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    policy_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("subsidy_policies.id"))
    serve_code: Mapped[str] = mapped_column(String(6), nullable=False)
    cutoff_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    serve_start_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    serve_end_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    list_price_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    gov_subsidy_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    charity_subsidy_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    delivery_fee_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    self_pay_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)

    booked_by_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    standing_order_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("standing_orders.id")
    )

    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_by_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    cancel_channel: Mapped[str | None] = mapped_column(String(16))
    cancel_reason: Mapped[str | None] = mapped_column(String(200))

    served_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    served_by_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    serve_method: Mapped[str | None] = mapped_column(String(16))
    self_pay_method: Mapped[str | None] = mapped_column(String(16))
    no_show_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
