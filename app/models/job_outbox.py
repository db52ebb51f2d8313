from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class JobOutbox(Base):
    """Every job a transaction enqueues is written here in that transaction (a transactional outbox), handed to
    the broker after the commit, and deleted by the job itself in its own transaction when it has run. A row
    still here at ``send_after`` means the job never ran: the broker refused it (Redis down: ``send_after``
    is then set to now), or the process died between the commit and the hand-off. The scheduler's relay sends
    those again (at least once; jobs are idempotent), up to ``MAX_RELAYS`` times."""

    __tablename__ = "job_outbox"
    __table_args__ = (Index("ix_job_outbox_send_after", "send_after"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    actor_name: Mapped[str] = mapped_column(String(128), nullable=False)
    message: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    send_after: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
