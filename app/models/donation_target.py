from __future__ import annotations

import enum
import uuid
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, String, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class DonationTargetKind(enum.StrEnum):
    canteen = "canteen"  # the canteen's designated pool
    fund = "fund"  # a charity fund
    general = "general"  # the general meal pool (乐享桑榆)


class DonationTarget(UUIDPK, Timestamps, Base):
    """What a printed QR code gives to. ``code`` is the short part of ``/q/<code>``."""

    __tablename__ = "donation_targets"
    __table_args__ = (
        CheckConstraint("kind IN ('canteen','fund','general')", name="kind_known"),
        CheckConstraint(
            "(kind = 'canteen' AND canteen_id IS NOT NULL AND fund_id IS NULL)"
            " OR (kind = 'fund' AND fund_id IS NOT NULL AND canteen_id IS NULL)"
            " OR (kind = 'general' AND canteen_id IS NULL AND fund_id IS NULL)",
            name="kind_matches_target",
        ),
        CheckConstraint("scans >= 0", name="scans_nonneg"),
    )

    code: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    canteen_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("canteens.id"), index=True
    )
    fund_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("funds.id"), index=True)
    title: Mapped[str] = mapped_column(String(64), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    # suggested amounts in fen, e.g. [1000, 3000, 10000]
    suggested_amounts_fen: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, default=list)
    scans: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
