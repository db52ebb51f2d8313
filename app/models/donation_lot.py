from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base


class DonationLot(UUIDPK, Base):
    """A paid donation sitting on its target pool or fund: the unit FIFO attribution draws from.

    ``remaining_fen = amount - held - allocated - refunded`` is never negative (checked by the database)."""

    __tablename__ = "donation_lots"
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        CheckConstraint("held_fen >= 0 AND allocated_fen >= 0 AND refunded_fen >= 0", name="parts_nonneg"),
        CheckConstraint("held_fen + allocated_fen + refunded_fen <= amount_fen", name="not_overdrawn"),
        UniqueConstraint("source", "external_ref"),
        Index(
            "ix_donation_lots_fifo",
            "account_code",
            "paid_at",
            "fifo_no",
            postgresql_where=text("remaining_fen > 0"),
        ),
    )

    fifo_no: Mapped[int] = mapped_column(BigInteger, Identity(always=False), unique=True, nullable=False)
    donation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True, nullable=False)
    account_code: Mapped[str] = mapped_column(String(80), ForeignKey("ledger_accounts.code"), nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    external_ref: Mapped[str] = mapped_column(String(128), nullable=False)
    entry_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("journal_entries.id"), nullable=False
    )
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    held_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    allocated_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    remaining_fen: Mapped[int] = mapped_column(
        BigInteger, Computed("amount_fen - held_fen - allocated_fen - refunded_fen", persisted=True)
    )
    paid_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
