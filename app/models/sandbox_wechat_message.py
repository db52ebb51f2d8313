from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class SandboxWeChatMessage(Base):
    """State of the WeChat simulator: a subscribe message 'delivered' to a user (sandbox mode only)."""

    __tablename__ = "sandbox_wechat_messages"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    appid: Mapped[str] = mapped_column(String(32), nullable=False)
    touser: Mapped[str] = mapped_column(String(64), index=True, nullable=False)
    template_id: Mapped[str] = mapped_column(String(64), nullable=False)
    page: Mapped[str | None] = mapped_column(String(256))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    miniprogram_state: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
