from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class RefundStatus(enum.StrEnum):
    requested = "requested"  # by the donor, waiting for an admin
    processing = "processing"  # approved and reserved in the ledger; with WeChat Pay (or on its way to it)
    succeeded = "succeeded"  # WeChat Pay's refund notification (or a bank refund) completed it
    rejected = "rejected"  # by an admin
    failed = (
        "failed"  # WeChat Pay refused it, closed it or reported it abnormal (``failure_reason`` says which)
    )


class DonationRefund(UUIDPK, Timestamps, Base):
    __tablename__ = "donation_refunds"
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        CheckConstraint(
            "status IN ('requested','processing','succeeded','rejected','failed')", name="status_known"
        ),
        # one open request per donation at a time
        Index(
            "uq_donation_refunds_one_open",
            "donation_id",
            unique=True,
            postgresql_where=text("status IN ('requested','processing')"),
        ),
    )

    donation_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("donations.id"), index=True, nullable=False
    )
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=RefundStatus.requested.value)
    out_refund_no: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    wechat_refund_id: Mapped[str | None] = mapped_column(String(32))
    requested_by_user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    decided_by_user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decision_note: Mapped[str | None] = mapped_column(String(200))
    succeeded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failure_reason: Mapped[str | None] = mapped_column(String(200))
