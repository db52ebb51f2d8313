"""The payment inbox: one row per verified provider notification, inserted ON CONFLICT DO NOTHING."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.sql import insert_or_skip
from app.models import PaymentInbox
from app.wechat.pay import Notification


class InboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(
        self, *, source: str, external_id: str, event_type: str, payload: dict[str, Any]
    ) -> int | None:
        """The new row's id, or None when this notification was already stored (and so already handled:
        the row commits together with its effect). A concurrent duplicate waits here for the first to commit."""
        inserted = await self.session.execute(
            insert_or_skip(PaymentInbox)  # its one unique constraint: (source, external_id)
            .values(source=source, external_id=external_id, event_type=event_type, payload=payload)
            .returning(PaymentInbox.id)
        )
        return inserted.scalar_one_or_none()

    async def stored(self, source: str, external_ids: list[str]) -> set[str]:
        """Which of these notifications are already stored (committed, or written earlier in this transaction)."""
        stmt = select(PaymentInbox.external_id).where(
            PaymentInbox.source == source, PaymentInbox.external_id.in_(external_ids)
        )
        return set((await self.session.execute(stmt)).scalars())

    async def claim_handled(self, source: str, notes: list[Notification], at: datetime) -> set[str]:
        """Store handled notifications in one INSERT; the ids written (one already stored is skipped, having
        waited for a concurrent transaction that holds it)."""
        rows = [
            {
                "source": source,
                "external_id": n.id,
                "event_type": n.event_type,
                "payload": n.resource,
                "handled_at": at,
            }
            for n in notes
        ]
        table = cast(Table, PaymentInbox.__table__)
        result = await self.session.execute(
            insert_or_skip(table).returning(table.c.external_id),
            rows,
        )
        return set(result.scalars())

    async def mark_handled(self, inbox_id: int, at: datetime) -> None:
        await self.session.execute(
            update(PaymentInbox).where(PaymentInbox.id == inbox_id).values(handled_at=at)
        )
