from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class LedgerDigest(Base):
    """The published Merkle root over one Asia/Shanghai day's journal entries (leaves = entry hashes in seq
    order). Append-only, like the entries it covers."""

    __tablename__ = "ledger_digests"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    entry_count: Mapped[int] = mapped_column(Integer, nullable=False)
    first_seq: Mapped[int | None] = mapped_column(BigInteger)
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    merkle_root: Mapped[str] = mapped_column(String(64), nullable=False)
    chain_head: Mapped[str | None] = mapped_column(String(64))
    computed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
