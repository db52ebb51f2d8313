from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field

from app.donations.schemas import DonationOut

FEED_KINDS = (
    "donation_paid",
    "donation_refunded",
    "meals_funded",
    "settlement_paid",
    "reconciliation",
    "ledger_root",
)


class FeedItem(BaseModel):
    """One public event. ``data`` holds only public fields of its kind (never an openid, phone, ID number or
    the name of a donor who chose to stay anonymous)."""

    id: int
    kind: str = Field(description="、".join(FEED_KINDS))
    occurred_at: datetime
    day: date = Field(description="Asia/Shanghai date of the event")
    text: str = Field(
        description="one line for people, e.g. 3月5日 德城区某食堂 爱心善款资助 37 份午餐 ¥111.00"
    )
    amount_fen: int | None = None
    meals: int | None = None
    data: dict[str, Any]


class FeedPage(BaseModel):
    items: list[FeedItem]
    next_cursor: str | None = None


class Totals(BaseModel):
    donated_fen: int
    donations: int
    donors: int
    spent_on_meals_fen: int
    meals_funded: int
    reserved_fen: int = Field(description="held for meals booked but not yet served")
    refunded_fen: int
    fees_fen: int = Field(description="WeChat Pay fees (from the daily bills)")
    balance_fen: int = Field(description="what the pools and funds hold, reserved money included")
    available_fen: int = Field(description="balance minus reserved")


class FundStats(BaseModel):
    code: str
    name: str
    purpose: str
    is_general_meal_pool: bool
    donated_fen: int
    donations: int
    spent_on_meals_fen: int
    refunded_fen: int
    balance_fen: int
    available_fen: int


class CanteenStats(BaseModel):
    code: str
    name: str
    district: str
    donated_to_pool_fen: int
    meals_funded: int
    spent_on_meals_fen: int = Field(description="charity money paid for meals here, from any pool")
    pool_balance_fen: int
    pool_available_fen: int


class DayPoint(BaseModel):
    day: date
    donated_fen: int
    spent_on_meals_fen: int


class FeedStats(BaseModel):
    totals: Totals
    funds: list[FundStats]
    canteens: list[CanteenStats]
    series: list[DayPoint] = Field(description="the last 30 Asia/Shanghai days, oldest first")
    generated_at: datetime


class TraceSummary(BaseModel):
    """Where one of my donations went, in a line: meals paid, money reserved, refunded, unused."""

    recorded: bool
    meals_funded: int
    spent_fen: int
    reserved_fen: int
    refunded_fen: int
    unused_fen: int
    canteens: list[str]
    last_meal_date: date | None
    text: str


class DigestSubscription(BaseModel):
    template_id: str
    remaining: int = Field(description="weekly digests the donor has allowed and not yet received")


class MyDonationOut(DonationOut):
    """One of my donations with where it went so far."""

    trace: TraceSummary
