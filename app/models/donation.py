from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class DonationStatus(enum.StrEnum):
    pending = "pending"  # order placed, waiting for WeChat Pay
    paid = "paid"
    closed = "closed"  # never paid; the WeChat order was closed
    partially_refunded = "partially_refunded"
    refunded = "refunded"


class DonationChannel(enum.StrEnum):
    wechatpay = "wechatpay"
    bank = "bank"  # offline bank transfer recorded by an admin


class Donation(UUIDPK, Timestamps, Base):
    """One gift ("我为老人助一餐"): a WeChat Pay order or an offline bank transfer."""

    __tablename__ = "donations"
    __table_args__ = (
        CheckConstraint("amount_fen BETWEEN 1 AND 5000000", name="amount_in_range"),
        CheckConstraint(
            "status IN ('pending','paid','closed','partially_refunded','refunded')", name="status_known"
        ),
        CheckConstraint("channel IN ('wechatpay','bank')", name="channel_known"),
        CheckConstraint("refunded_fen >= 0 AND refunded_fen <= amount_fen", name="refund_within_amount"),
        CheckConstraint(
            "channel <> 'wechatpay' OR out_trade_no IS NOT NULL", name="wechatpay_has_out_trade_no"
        ),
        CheckConstraint("channel <> 'bank' OR voucher_no IS NOT NULL", name="bank_has_voucher"),
        CheckConstraint(
            "status = 'pending' OR status = 'closed' OR paid_at IS NOT NULL", name="paid_has_time"
        ),
        Index("ix_donations_pending_expiry", "expires_at", postgresql_where=text("status = 'pending'")),
        Index("ix_donations_target_paid", "target_id", "status"),
        # paid donations still waiting for their receipt number (numbered right after the payment commits)
        Index(
            "ix_donations_receipt_pending",
            "paid_at",
            "id",
            postgresql_where=text("receipt_no IS NULL AND paid_at IS NOT NULL"),
        ),
    )

    target_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("donation_targets.id"), nullable=False
    )
    target_account: Mapped[str] = mapped_column(String(64), nullable=False)
    donor_user_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id"), index=True
    )
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(24), nullable=False, default=DonationStatus.pending.value)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    meals: Mapped[int | None] = mapped_column(Integer)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    anonymous: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    display_name: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(String(200))

    out_trade_no: Mapped[str | None] = mapped_column(String(32), unique=True)
    prepay_id: Mapped[str | None] = mapped_column(String(64))
    prepay_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    transaction_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    voucher_no: Mapped[str | None] = mapped_column(String(64), unique=True)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    receipt_year: Mapped[int | None] = mapped_column(Integer)
    receipt_seq: Mapped[int | None] = mapped_column(Integer)
    receipt_no: Mapped[str | None] = mapped_column(String(24), unique=True)
    recorded_by_user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
