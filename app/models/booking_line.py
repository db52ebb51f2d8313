from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class BookingLine(UUIDPK, Timestamps, Base):
    """One priced line of a booking. The elder's own meal is the one line that may carry subsidies; extra
    portions (companions) are lines at list price. The breakdown adds up (CHECK)."""

    __tablename__ = "booking_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "list_price_fen >= 0 AND gov_subsidy_fen >= 0 AND charity_subsidy_fen >= 0 "
            "AND delivery_fee_fen >= 0 AND self_pay_fen >= 0",
            name="amounts_nonneg",
        ),
        CheckConstraint(
            "self_pay_fen = list_price_fen + delivery_fee_fen - gov_subsidy_fen - charity_subsidy_fen",
            name="breakdown_adds_up",
        ),
        CheckConstraint(
            "is_elder_meal OR (gov_subsidy_fen = 0 AND charity_subsidy_fen = 0)", name="extras_unsubsidized"
        ),
    )

    booking_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("bookings.id"), index=True, nullable=False
    )
    menu_item_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("menu_items.id"), index=True, nullable=False
    )
    item_name: Mapped[str] = mapped_column(String(64), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    unit_price_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    is_elder_meal: Mapped[bool] = mapped_column(Boolean, nullable=False)
    list_price_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    gov_subsidy_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    charity_subsidy_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    delivery_fee_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    self_pay_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
