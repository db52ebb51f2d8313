from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, String, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base


class HoldStatus(enum.StrEnum):
    held = "held"
    posted = "posted"
    voided = "voided"


class CharityHold(UUIDPK, Base):
    """A two-phase reservation of donated money for one booking line (``hold_key``): held → posted | voided,
    resolved at most once."""

    __tablename__ = "charity_holds"
    __table_args__ = (
        CheckConstraint("status IN ('held','posted','voided')", name="status_known"),
        CheckConstraint("requested_fen >= 0 AND held_fen >= 0 AND held_fen <= requested_fen", name="amounts"),
    )

    hold_key: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    canteen_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("canteens.id"), index=True, nullable=False
    )
    requested_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    held_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(8), nullable=False, default=HoldStatus.held)
    entry_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("journal_entries.id"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
