from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class SettlementStatus(enum.StrEnum):
    draft = "draft"
    confirmed = "confirmed"
    paid = "paid"


class Settlement(UUIDPK, Timestamps, Base):
    """A monthly charity settlement statement for one canteen: served meals × charity portion (from posted
    holds) → what the federation owes the canteen. draft → confirmed → paid (ledger: payable → bank).

    ``seq`` 1 is the month's statement; meals served after it was confirmed go on a supplementary statement
    (seq 2, ...). At most one draft per canteen and month; a confirmed or paid statement never changes."""

    __tablename__ = "settlements"
    __table_args__ = (
        CheckConstraint("month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'", name="month_format"),
        CheckConstraint("status IN ('draft','confirmed','paid')", name="status_known"),
        CheckConstraint("seq > 0 AND meals >= 0 AND amount_fen >= 0", name="amounts_nonneg"),
        CheckConstraint(
            "status <> 'paid' OR (voucher_no IS NOT NULL AND entry_id IS NOT NULL AND paid_at IS NOT NULL)",
            name="paid_has_voucher",
        ),
        CheckConstraint("status = 'draft' OR confirmed_at IS NOT NULL", name="confirmed_has_time"),
        UniqueConstraint("canteen_id", "month", "seq"),
        Index(
            "uq_settlements_one_draft",
            "canteen_id",
            "month",
            unique=True,
            postgresql_where=text("status = 'draft'"),
        ),
    )

    canteen_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("canteens.id"), index=True, nullable=False
    )
    month: Mapped[str] = mapped_column(String(7), index=True, nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    status: Mapped[str] = mapped_column(String(12), nullable=False, default=SettlementStatus.draft.value)
    meals: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    drafted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confirmed_by_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paid_by_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    voucher_no: Mapped[str | None] = mapped_column(String(64))
    entry_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("journal_entries.id"))
