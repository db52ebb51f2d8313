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
