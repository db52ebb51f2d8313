from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class Role(enum.StrEnum):
    elder = "elder"
    family = "family"
    operator = "operator"
    federation_admin = "federation_admin"
    civil_affairs = "civil_affairs"


class RoleGrant(UUIDPK, Timestamps, Base):
    """A role held by a user; operators are scoped to a canteen, civil-affairs staff to a district."""

    __tablename__ = "role_grants"
    __table_args__ = (
        CheckConstraint(
            "role IN ('elder','family','operator','federation_admin','civil_affairs')", name="role_known"
        ),
        CheckConstraint("role <> 'operator' OR canteen_id IS NOT NULL", name="operator_has_canteen"),
        CheckConstraint("role <> 'civil_affairs' OR district_code IS NOT NULL", name="civil_has_district"),
        Index(
            "uq_role_grants_active",
            "user_id",
            "role",
            text("coalesce(canteen_id::text, '')"),
            text("coalesce(district_code, '')"),
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    role: Mapped[str] = mapped_column(String(24), nullable=False)
    canteen_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("canteens.id"))
    district_code: Mapped[str | None] = mapped_column(String(12), ForeignKey("districts.code"))
    granted_by_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
