from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class DigestOut(BaseModel):
    day: str = Field(description="Asia/Shanghai date, YYYY-MM-DD")
    entry_count: int
    first_seq: int | None
    last_seq: int | None
    merkle_root: str = Field(description="RFC 6962 Merkle root over the day's entry hashes, in seq order")
    chain_head: str | None = Field(description="hash of the day's last entry")
    computed_at: str | None


class ChainHead(BaseModel):
    seq: int
    hash: str


class LedgerProblem(BaseModel):
    check: str
    message: str
    entry_id: str | None = None
    seq: int | None = None
    business_key: str | None = None
    account: str | None = None
    donation_id: str | None = None
    hold_key: str | None = None
    day: str | None = None


class LedgerCheckReport(BaseModel):
    ok: bool
    entries_checked: int
    digests_checked: int
    accounts_checked: int
    chain_head: ChainHead
    problems: list[LedgerProblem]

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> LedgerCheckReport:
        return cls.model_validate(result)


# ---------------------------------------------------------------- donation trace and proof


class TracedMeal(BaseModel):
    service_date: str | None = None
    slot: str | None = None
    canteen_id: str
    canteen_name: str | None = None
    age_band: str | None = Field(None, description="用餐长者的年龄段（不含任何身份信息）")
    amount_fen: int
    from_account: str
    entry_id: str | None = Field(None, description="已用餐：记账分录（可在 proof 中验证）")


class DonationTraceOut(BaseModel):
    donation_id: str
    status: str
    amount_fen: int
    recorded: bool = Field(description="这笔捐款是否已经入账")
    account: str | None
    paid_fen: int
    spent_fen: int = Field(description="已用于长者用餐")
    held_fen: int = Field(description="已为预订的餐次预留，用餐后计入已用")
    refunded_fen: int
    unused_fen: int
    meals: list[TracedMeal]
    reserved: list[TracedMeal]
    text: str


class DonationProofOut(BaseModel):
    donation_id: str
    proof: dict[str, Any] = Field(
        description="algorithm / entries（账目、prev_hash、hash、Merkle 路径）/ roots / published；"
        "可用 GET /api/v1/ledger/digests/{day} 公布的根复核"
    )
    unpublished_days: list[str] = Field(description="当日尚未结束、日根还没公布的日期（根还会变化）")
    note: str


# ---------------------------------------------------------------- fund and pool statements


class CanteenSubsidies(BaseModel):
    canteen_id: str
    canteen_code: str | None
    canteen_name: str | None
    meals: int
    amount_fen: int


class StatementOut(BaseModel):
    account: str
    kind: str = Field(description="fund / general_meal_pool / canteen_pool")
    owner_id: str
    owner_code: str
    owner_name: str
    date_from: str
    date_to: str
    opening_fen: int
    donations_fen: int
    donations_count: int
    refunds_fen: int
    refunds_count: int
    fees_fen: int
    meal_subsidies_fen: int
    meals: int
    other_fen: int = Field(description="其他变动（净流入为正），如对账更正")
    closing_fen: int
    meal_subsidies_by_canteen: list[CanteenSubsidies]
