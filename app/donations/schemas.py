from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

MAX_DONATION_FEN = 5_000_000
MAX_MEALS = 5000

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _clean_text(value: str | None, *, limit: int, what: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if _CONTROL.search(value):
        raise ValueError(f"{what}不能包含控制字符")
    if len(value) > limit:
        raise ValueError(f"{what}最多 {limit} 个字")
    return value or None


class SuggestedAmount(BaseModel):
    amount_fen: int
    meals: int | None
    label: str


class TargetTotals(BaseModel):
    paid_fen: int
    donations: int


class DonationTargetOut(BaseModel):
    code: str
    kind: str
    title: str
    description: str
    canteen_id: uuid.UUID | None
    canteen_name: str | None
    fund_id: uuid.UUID | None
    fund_name: str | None
    meal_unit_fen: int
    suggested_amounts: list[SuggestedAmount]
    totals: TargetTotals
    scans: int
    url: str


class DonationCreate(BaseModel):
    """Give by meals (1 meal = MEAL_UNIT_FEN) or by fen; exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    target_code: str = Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")
    meals: StrictInt | None = None
    amount_fen: StrictInt | None = None
    anonymous: StrictBool = False
    display_name: str | None = None
    message: str | None = None

    @field_validator("display_name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return _clean_text(v, limit=20, what="署名")

    @field_validator("message")
    @classmethod
    def _message(cls, v: str | None) -> str | None:
        return _clean_text(v, limit=100, what="留言")

    @field_validator("amount_fen")
    @classmethod
    def _amount(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= MAX_DONATION_FEN:
            raise ValueError("捐赠金额须在 0.01 元到 50000 元之间")
        return v

    @field_validator("meals")
    @classmethod
    def _meals(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= MAX_MEALS:
            raise ValueError(f"餐数须在 1 到 {MAX_MEALS} 之间")
        return v

    @model_validator(mode="after")
    def _one_amount(self) -> DonationCreate:
        if (self.meals is None) == (self.amount_fen is None):
            raise ValueError("请选择捐几餐，或填写捐赠金额（二选一）")
        return self


class PayParams(BaseModel):
    appId: str
    timeStamp: str
    nonceStr: str
    package: str
    signType: str
    paySign: str


class DonationOut(BaseModel):
    id: uuid.UUID
    target_code: str
    target_title: str
    channel: str
    status: str
    amount_fen: int
    meals: int | None
    refunded_fen: int
    anonymous: bool
    display_name: str | None
    message: str | None
    out_trade_no: str | None
    transaction_id: str | None
    receipt_no: str | None
    created_at: datetime
    paid_at: datetime | None
    expires_at: datetime | None


class DonationCreated(DonationOut):
    pay_params: PayParams | None


class ReceiptOut(BaseModel):
    receipt_no: str
    donation_id: uuid.UUID
    donor: str
    amount_fen: int
    amount_yuan: str
    target_title: str
    channel: str
    paid_at: datetime
    refunded_fen: int
    issuer: str
    invoice_requested: bool


class InvoiceRequestIn(BaseModel):
    """An official 公益事业捐赠票据: the donor's name and ID-card or taxpayer number (stored encrypted)."""

    model_config = ConfigDict(extra="forbid")

    donor_type: Literal["person", "company"]
    name: str = Field(min_length=1, max_length=64)
    tax_id: str = Field(min_length=15, max_length=20, pattern=r"^[0-9A-Za-z]+$")
    email: str | None = Field(None, max_length=128, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvoiceRequestOut(BaseModel):
    donation_id: uuid.UUID
    donor_type: str
    name_masked: str
    tax_id_masked: str
    status: str


class RefundRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_fen: Annotated[StrictInt, Field(ge=1, le=MAX_DONATION_FEN)] | None = None
    reason: str = Field("", max_length=200)


class RefundOut(BaseModel):
    id: uuid.UUID
    donation_id: uuid.UUID
    amount_fen: int
    reason: str
    status: str
    out_refund_no: str
    created_at: datetime
    decided_at: datetime | None
    succeeded_at: datetime | None
    failure_reason: str | None = Field(None, description="退款未成功时的原因")


class RefundDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=200)


class OfflineDonationIn(BaseModel):
    """A bank transfer (companies, 对公转账), recorded by an admin from the bank voucher."""

    model_config = ConfigDict(extra="forbid")

    target_code: str = Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")
    amount_fen: StrictInt
    voucher_no: str = Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9_\-/]+$")
    paid_on: date
    display_name: str | None = None
    anonymous: StrictBool = False
    message: str | None = None

    @field_validator("amount_fen")
    @classmethod
    def _amount(cls, v: int) -> int:
        if not 1 <= v <= MAX_DONATION_FEN:
            raise ValueError("捐赠金额须在 0.01 元到 50000 元之间")
        return v

    @field_validator("display_name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return _clean_text(v, limit=20, what="署名")

    @field_validator("message")
    @classmethod
    def _message(cls, v: str | None) -> str | None:
        return _clean_text(v, limit=100, what="留言")


class QRCodeFiles(BaseModel):
    code: str
    url: str
    png: str
    svg: str
    poster: str


class QRCodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    codes: list[Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")]] | None = (
        Field(None, max_length=500)
    )
