from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class FeedAggregate(Base):
    """One feed event that grows in place instead of being appended again: meals funded at a canteen on a day,
    a day's reconciliation status, a day's ledger root, a canteen's monthly settlement. ``key`` names it
    (``meals:<canteen_id>:<date>``, ``recon:<date>`` ...); the event keeps its place (id) in the feed."""

    __tablename__ = "feed_aggregates"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    event_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("feed_events.id"), unique=True, nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
