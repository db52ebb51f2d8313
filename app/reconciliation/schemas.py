from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

KINDS = ("amount_mismatch", "missing_in_ledger", "missing_in_bill", "status_mismatch")
KIND_LABELS = {
    "matched": "一致",
    "amount_mismatch": "金额不一致",
    "missing_in_ledger": "微信有、我们没有",
    "missing_in_bill": "我们有、微信账单没有",
    "status_mismatch": "状态不一致",
}


class RunRequest(BaseModel):
    """Download the bill of ``bill_date`` from WeChat Pay and reconcile it."""

    model_config = ConfigDict(extra="forbid")

    bill_date: date


class BillOut(BaseModel):
    rows: int
    payment_rows: int
    refund_rows: int
    settled_fen: int
    refund_fen: int
    fee_fen: int
    order_fen: int
    file_sha1: str


class CountsOut(BaseModel):
    matched: int
    amount_mismatch: int
    missing_in_ledger: int
    missing_in_bill: int
    status_mismatch: int


class DiscrepancyOut(BaseModel):
    id: uuid.UUID
    run_id: uuid.UUID
    kind: str
    ref_key: str
    out_trade_no: str | None
    transaction_id: str | None
    out_refund_no: str | None
    donation_id: uuid.UUID | None
    refund_id: uuid.UUID | None
    bill_line: int | None
    bill_amount_fen: int | None
    ledger_amount_fen: int | None
    bill_status: str | None
    ledger_status: str | None
    detail: dict[str, Any]
    status: str
    resolution: str | None
    resolution_note: str | None
    correction_entry_id: uuid.UUID | None
    resolved_by: str | None
    resolved_at: datetime | None
    repairable: bool = Field(description="the order can be queried at WeChat Pay and completed as paid")


class RunOut(BaseModel):
    id: uuid.UUID
    bill_date: date
    source: str
    day_status: str = Field(description="reconciled | under_review (unresolved discrepancies)")
    run_count: int
    last_run_at: datetime
    last_run_by: str
    bill: BillOut
    counts: CountsOut
    open_discrepancies: int
    resolved_discrepancies: int
    fee_posted_fen: int


class RunDetailOut(RunOut):
    discrepancies: list[DiscrepancyOut]
    next_cursor: str | None = None


class PostingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str = Field(min_length=1, max_length=80)
    amount_fen: StrictInt = Field(description="debit positive, credit negative (fen)")


class ResolveIn(BaseModel):
    """``note``: accept with an explanation; ``ledger_entry``: post a corrective entry (postings sum to zero;
    pools and funds cannot be corrected this way); ``repair``: query the order at WeChat Pay and complete it
    through the normal payment path (missing_in_ledger payments, and refunds WeChat finished but we did not)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["note", "ledger_entry", "repair"] = "note"
    note: str = Field(min_length=1, max_length=500)
    postings: list[PostingIn] | None = Field(default=None, max_length=10)

    @field_validator("note")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("note must not be blank")
        return value
