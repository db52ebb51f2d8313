from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class JournalEntry(Base):
    """One balanced ledger entry. Append-only: a database trigger refuses DELETE, and refuses every UPDATE but
    one, the sealing, which sets ``seq``, ``prev_hash`` and ``hash`` once on an entry that has none and changes
    nothing else.

    An entry is written unsealed inside its business transaction; the sealer (``ledger_service.seal``) chains
    committed entries in batches afterwards. ``seq`` orders the hash chain: ``hash = SHA-256(prev_hash ||
    canonical JSON of the entry and its postings)``; ``day`` is the Asia/Shanghai date whose Merkle digest covers
    the entry."""

    __tablename__ = "journal_entries"
    __table_args__ = (
        CheckConstraint("seq > 0", name="seq_positive"),
        CheckConstraint("hash ~ '^[0-9a-f]{64}$' AND prev_hash ~ '^[0-9a-f]{64}$'", name="hashes_hex"),
        CheckConstraint(
            "(seq IS NULL AND prev_hash IS NULL AND hash IS NULL)"
            " OR (seq IS NOT NULL AND prev_hash IS NOT NULL AND hash IS NOT NULL)",
            name="sealed_together",
        ),
        Index("ix_journal_entries_unsealed", "created_at", "id", postgresql_where=text("seq IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True, nullable=True)
    business_key: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    memo: Mapped[str] = mapped_column(Text, nullable=False, default="")
    refs: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    day: Mapped[date] = mapped_column(Date, nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
