from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class Posting(Base):
    """One leg of a journal entry: debit positive, credit negative, never zero. Append-only."""

    __tablename__ = "postings"
    __table_args__ = (
        CheckConstraint("amount_fen <> 0", name="amount_nonzero"),
        UniqueConstraint("entry_id", "line_no"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    entry_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("journal_entries.id"), nullable=False
    )
    line_no: Mapped[int] = mapped_column(Integer, nullable=False)
    account_code: Mapped[str] = mapped_column(
        String(80), ForeignKey("ledger_accounts.code"), index=True, nullable=False
    )
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
