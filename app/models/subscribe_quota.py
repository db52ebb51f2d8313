from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class SubscribeQuota(UUIDPK, Timestamps, Base):
    """Subscribe-message sends a user has allowed for one template (each tap on 允许 allows one send)."""

    __tablename__ = "subscribe_quotas"
    __table_args__ = (
        UniqueConstraint("user_id", "template_id"),
        CheckConstraint("used >= 0 AND used <= granted", name="used_within_granted"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    template_id: Mapped[str] = mapped_column(String(64), nullable=False)
    granted: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    used: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
