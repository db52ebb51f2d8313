from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class SandboxWeChatPayOrder(Base):
    """State of the WeChat Pay simulator: one JSAPI order (sandbox mode only)."""

    __tablename__ = "sandbox_wechatpay_orders"
    __table_args__ = (UniqueConstraint("mchid", "out_trade_no"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    mchid: Mapped[str] = mapped_column(String(32), nullable=False)
    appid: Mapped[str] = mapped_column(String(32), nullable=False)
    out_trade_no: Mapped[str] = mapped_column(String(32), nullable=False)
    # canonical JSON of the parameters that must match on re-entry
    params_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    request: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    total_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    payer_openid: Mapped[str] = mapped_column(String(128), nullable=False)
    notify_url: Mapped[str] = mapped_column(String(256), nullable=False)
    prepay_id: Mapped[str] = mapped_column(String(64), nullable=False)
    trade_state: Mapped[str] = mapped_column(String(16), nullable=False, default="NOTPAY")
    transaction_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    time_expire: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    success_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refunded_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
