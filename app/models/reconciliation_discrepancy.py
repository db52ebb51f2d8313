from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class DiscrepancyKind(enum.StrEnum):
    amount_mismatch = "amount_mismatch"
    missing_in_ledger = "missing_in_ledger"  # WeChat has it, we don't (e.g. a lost notification)
    missing_in_bill = "missing_in_bill"  # we have it, the bill doesn't
    status_mismatch = "status_mismatch"


class DiscrepancyStatus(enum.StrEnum):
    open = "open"
    resolved = "resolved"


class Resolution(enum.StrEnum):
    note = "note"  # accepted with an explanation
    ledger_entry = "ledger_entry"  # a corrective entry through the ledger service
    repaired = "repaired"  # the order was queried and completed through the normal payment path


class ReconciliationDiscrepancy(UUIDPK, Timestamps, Base):
    """A bill row (or one of our payments/refunds) that does not agree. ``ref_key`` names the business object
    (``pay:<out_trade_no>`` / ``refund:<out_refund_no>``); a re-run keeps resolved rows and replaces open ones."""

    __tablename__ = "reconciliation_discrepancies"
    __table_args__ = (
        UniqueConstraint("run_id", "kind", "ref_key"),  # also the keyset order of a run's list
        CheckConstraint(
            "kind IN ('amount_mismatch','missing_in_ledger','missing_in_bill','status_mismatch')",
            name="kind_known",
        ),
        CheckConstraint("status IN ('open','resolved')", name="status_known"),
        CheckConstraint(
            "resolution IS NULL OR resolution IN ('note','ledger_entry','repaired')", name="resolution_known"
        ),
        CheckConstraint(
            "(status = 'open') = (resolution IS NULL AND resolved_at IS NULL)", name="resolved_has_resolution"
        ),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("reconciliation_runs.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(24, collation="C"), nullable=False)
    ref_key: Mapped[str] = mapped_column(String(80, collation="C"), nullable=False)
    out_trade_no: Mapped[str | None] = mapped_column(String(32))
    transaction_id: Mapped[str | None] = mapped_column(String(32))
    out_refund_no: Mapped[str | None] = mapped_column(String(64))
    donation_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    refund_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    bill_line: Mapped[int | None] = mapped_column(Integer)
    bill_amount_fen: Mapped[int | None] = mapped_column(BigInteger)
    ledger_amount_fen: Mapped[int | None] = mapped_column(BigInteger)
    bill_status: Mapped[str | None] = mapped_column(String(24))
    ledger_status: Mapped[str | None] = mapped_column(String(24))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)

    status: Mapped[str] = mapped_column(String(12), nullable=False, default=DiscrepancyStatus.open.value)
    resolution: Mapped[str | None] = mapped_column(String(16))
    resolution_note: Mapped[str | None] = mapped_column(String(500))
    correction_entry_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    resolved_by: Mapped[str | None] = mapped_column(String(80))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
