from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class DayStatus(enum.StrEnum):
    reconciled = "reconciled"  # every bill row matched, or every discrepancy resolved
    under_review = "under_review"  # unresolved discrepancies


class ReconciliationRun(UUIDPK, Timestamps, Base):
    """The reconciliation of one WeChat Pay trade bill date (Asia/Shanghai). One row per date: running the
    date again replaces the row's results (counts, bill totals, open discrepancies) and never posts fees twice."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (
        CheckConstraint("source IN ('api','upload')", name="source_known"),
        CheckConstraint("day_status IN ('reconciled','under_review')", name="day_status_known"),
        CheckConstraint("run_count >= 1", name="run_count_positive"),
    )

    bill_date: Mapped[date] = mapped_column(Date, unique=True, nullable=False)
    source: Mapped[str] = mapped_column(String(8), nullable=False)
    file_sha1: Mapped[str] = mapped_column(String(40), nullable=False)
    day_status: Mapped[str] = mapped_column(String(16), nullable=False)
    published_status: Mapped[str | None] = mapped_column(String(16))
    run_count: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    last_run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_run_by: Mapped[str] = mapped_column(String(80), nullable=False)

    # what the bill says (detail rows and the summary block, which was checked against them)
    bill_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    payment_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    refund_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    settled_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    refund_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    fee_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    order_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)

    # what matching found in the latest run
    matched_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    amount_mismatch_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    missing_in_ledger_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    missing_in_bill_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    status_mismatch_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    # WeChat fees posted to the ledger for this date (the sum of every fee entry with a wechat_fee:<date> key)
    fee_posted_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    fee_entries: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
