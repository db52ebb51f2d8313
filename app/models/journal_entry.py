from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, ForeignKey, String, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base


class JournalEntry(Base):
    """One balanced ledger entry. Never changed once written: a database trigger refuses every UPDATE and
    DELETE.

    An entry is written inside its business transaction; the sealer (``ledger_service.seal``) chains committed
    entries in batches afterwards, each with a row of ``journal_seals``: its ``seq`` in the hash chain,
    ``prev_hash`` and ``hash = SHA-256(prev_hash || canonical JSON of the entry and its postings)``. Until then
    the entry waits in ``journal_unsealed``, where a trigger puts every new entry. ``day`` is the Asia/Shanghai
    date whose Merkle digest covers the entry."""

    __tablename__ = "journal_entries"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    business_key: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    memo: Mapped[str] = mapped_column(Text, nullable=False, default="")
    refs: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    day: Mapped[date] = mapped_column(Date, nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    # read with the entry; written only by the sealer, as its own row
    seal: Mapped[JournalSeal | None] = relationship(lazy="joined", viewonly=True)

    @property
    def seq(self) -> int | None:
        return self.seal.seq if self.seal is not None else None

    @property
    def prev_hash(self) -> str | None:
        return self.seal.prev_hash if self.seal is not None else None

    @property
    def hash(self) -> str | None:
        return self.seal.hash if self.seal is not None else None


# 64 lowercase hex digits each. Written without a regular expression, which cost a seal 11 µs of PostgreSQL's
# time (more than the rest of the row): ``decode`` refuses a character that is not a hex digit, and 64 characters
# that decode to 32 bytes can hold no whitespace, which it would skip.
HASHES_HEX = (
    "length(hash) = 64 AND octet_length(decode(hash, 'hex')) = 32 AND hash = lower(hash)"
    " AND length(prev_hash) = 64 AND octet_length(decode(prev_hash, 'hex')) = 32 AND prev_hash = lower(prev_hash)"
)


class JournalSeal(Base):
    """An entry's place in the hash chain, written once by the sealer (consecutive ``seq``). Append-only, like
    the entries: a narrow row of its own, so that sealing writes no new version of the entry and its indexes."""

    __tablename__ = "journal_seals"
    __table_args__ = (
        CheckConstraint("seq > 0", name="seq_positive"),
        CheckConstraint(HASHES_HEX, name="hashes_hex"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("journal_entries.id"), unique=True, nullable=False
    )
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)


class UnsealedEntry(Base):
    """The sealer's queue: an entry committed but not chained yet, in the order the sealer takes them. A
    trigger on ``journal_entries`` adds every new entry here, whoever writes it; the sealer deletes the rows it
    chains. No foreign key: the rows come from the inserted entries themselves, in the same statement."""

    __tablename__ = "journal_unsealed"

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    entry_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
