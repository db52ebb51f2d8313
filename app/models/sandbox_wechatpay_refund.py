from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class SandboxWeChatPayRefund(Base):
    """State of the WeChat Pay simulator: one refund (sandbox mode only)."""

    __tablename__ = "sandbox_wechatpay_refunds"
    __table_args__ = (UniqueConstraint("mchid", "out_refund_no"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    mchid: Mapped[str] = mapped_column(String(32), nullable=False)
    out_refund_no: Mapped[str] = mapped_column(String(64), nullable=False)
    refund_id: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    out_trade_no: Mapped[str] = mapped_column(String(32), nullable=False)
    transaction_id: Mapped[str] = mapped_column(String(32), nullable=False)
    refund_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    total_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="PROCESSING")
    notify_url: Mapped[str | None] = mapped_column(String(256))
    request: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    success_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
