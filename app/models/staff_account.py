from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, ForeignKey, Integer, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class StaffRole(enum.StrEnum):
    federation_admin = "federation_admin"
    civil_affairs = "civil_affairs"


class StaffAccount(UUIDPK, Timestamps, Base):
    """A person who signs in to the web console at /admin with a password (argon2). Staff may also be WeChat
    users with mini-program roles (``user_id``), but console login never goes through WeChat."""

    __tablename__ = "staff_accounts"
    __table_args__ = (
        CheckConstraint("role IN ('federation_admin','civil_affairs')", name="role_known"),
        CheckConstraint(
            "role <> 'civil_affairs' OR district_code IS NOT NULL", name="civil_affairs_has_district"
        ),
        CheckConstraint("failed_login_count >= 0", name="failed_count_nonneg"),
        CheckConstraint("username = lower(username)", name="username_lowercase"),
    )

    username: Mapped[str] = mapped_column(String(48), unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String(64), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(24), nullable=False)
    district_code: Mapped[str | None] = mapped_column(String(12), ForeignKey("districts.code"), index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    failed_login_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def __str__(self) -> str:
        return f"{self.display_name}（{self.username}）"
