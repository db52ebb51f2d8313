from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base


class DonorDigest(UUIDPK, Base):
    """The weekly "your gift funded N meals" subscribe message to one donor for one week: claimed once per
    (donor, week) so a re-run job never sends twice."""

    __tablename__ = "donor_digests"
    __table_args__ = (
        UniqueConstraint("user_id", "week_start"),
        CheckConstraint("status IN ('pending','sent','no_quota')", name="status_known"),
        CheckConstraint("meals >= 0 AND amount_fen >= 0", name="nonneg"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    week_start: Mapped[date] = mapped_column(Date, nullable=False)
    meals: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
