from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


class DraftRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    month: str = Field(pattern=MONTH_PATTERN, description="结算月份 YYYY-MM（北京时间）")


class MarkPaidRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    voucher_no: str = Field(
        min_length=4, max_length=64, pattern=r"^[A-Za-z0-9_\-/]+$", description="银行付款凭证号"
    )


class SettlementLineOut(BaseModel):
    booking_id: uuid.UUID
    booking_line_id: uuid.UUID
    service_date: date
    slot: str
    item_name: str
    amount_fen: int
    entry_id: uuid.UUID = Field(description="把这笔补贴记入食堂应付款的账目")
    donation_ids: list[str] = Field(description="出资的捐赠（可查其去向）")


class SettlementOut(BaseModel):
    id: uuid.UUID
    canteen_id: uuid.UUID
    canteen_code: str
    canteen_name: str
    district_code: str
    month: str
    seq: int = Field(description="1 为当月结算单；之后的为补充结算单")
    status: str
    meals: int
    amount_fen: int
    drafted_at: datetime
    confirmed_at: datetime | None
    paid_at: datetime | None
    voucher_no: str | None
    entry_id: uuid.UUID | None


class SettlementDetail(SettlementOut):
    lines: list[SettlementLineOut]


class DraftResult(BaseModel):
    month: str
    drafted: list[SettlementOut] = Field(description="本次新建或刷新的草稿")
    unchanged: int = Field(description="没有新的已核销爱心餐、无需起草的食堂数")


class SubsidyClaimRow(BaseModel):
    canteen_id: uuid.UUID
    canteen_code: str
    canteen_name: str
    district_code: str
    meals: int
    gov_subsidy_fen: int
    list_price_fen: int
    self_pay_fen: int


class SubsidyClaimReport(BaseModel):
    month: str
    districts: list[str] | None = Field(description="限定的区县；null 表示全部")
    rows: list[SubsidyClaimRow]
    total_meals: int
    total_gov_subsidy_fen: int
