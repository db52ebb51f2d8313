from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, String, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class LedgerAccount(Base):
    """An account of the ledger's chart (``pool:canteen:<id>``, ``wechatpay_clearing`` ...).

    Sign convention: debit positive, credit negative. ``balance_fen`` is the cached sum of the account's
    postings, updated in the same transaction as every posting. Pools and funds are credit-normal, so their
    balance is ``<= 0`` and what they can still pay out is ``-balance_fen - held_fen``; ``no_overdraft``
    accounts may never let that go below zero (the row lock in the ledger service is the rule, the check
    constraint is the backstop)."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        CheckConstraint("held_fen >= 0", name="held_nonneg"),
        CheckConstraint("NOT no_overdraft OR -balance_fen - held_fen >= 0", name="no_overdraft"),
    )

    code: Mapped[str] = mapped_column(String(80), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # asset / pool / fund / payable / ...
    fund_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("funds.id"), index=True)
    canteen_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("canteens.id"), index=True
    )
    no_overdraft: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    balance_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    held_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
