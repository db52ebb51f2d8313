from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class SubsidyTier(UUIDPK, Timestamps, Base):
    """A government subsidy amount for elders of an age band, optionally only for some categories (any of
    them). An elder gets the most favourable tier that matches."""

    __tablename__ = "subsidy_tiers"
    __table_args__ = (
        CheckConstraint("amount_fen >= 0", name="amount_nonneg"),
        CheckConstraint("max_age IS NULL OR max_age >= min_age", name="ages_ordered"),
    )

    policy_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("subsidy_policies.id"), index=True, nullable=False
    )
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    min_age: Mapped[int] = mapped_column(Integer, nullable=False, default=60)
    max_age: Mapped[int | None] = mapped_column(Integer)
    categories: Mapped[list[str]] = mapped_column(ARRAY(String(16)), nullable=False, default=list)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
