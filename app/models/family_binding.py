from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class FamilyBinding(UUIDPK, Timestamps, Base):
    """A family member (a WeChat user) allowed to book, cancel and see bookings for one elder; the consent
    the member gave is recorded with its time."""

    __tablename__ = "family_bindings"
    __table_args__ = (
        Index(
            "uq_family_bindings_active",
            "elder_id",
            "user_id",
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    elder_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("elders.id"), index=True, nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id"), index=True, nullable=False
    )
    relationship: Mapped[str] = mapped_column(String(16), nullable=False)
    consent_text: Mapped[str] = mapped_column(Text, nullable=False)
    consented_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    invite_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("elder_invites.id"))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
