from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class User(UUIDPK, Timestamps, Base):
    """A WeChat user of the mini-program (elder, family member, operator, donor, staff)."""

    __tablename__ = "users"

    openid: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    unionid: Mapped[str | None] = mapped_column(String(64))
    nickname: Mapped[str | None] = mapped_column(String(64))
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_hmac: Mapped[str | None] = mapped_column(String(64), index=True)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
