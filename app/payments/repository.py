"""The payment inbox: one row per verified provider notification, inserted ON CONFLICT DO NOTHING."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import PaymentInbox


class InboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(
        self, *, source: str, external_id: str, event_type: str, payload: dict[str, Any]
    ) -> int | None:
        """The new row's id, or None when this notification was already stored (and so already handled:
        the row commits together with its effect). A concurrent duplicate waits here for the first to commit."""
        inserted = await self.session.execute(
            insert(PaymentInbox)
            .values(source=source, external_id=external_id, event_type=event_type, payload=payload)
            .on_conflict_do_nothing(index_elements=["source", "external_id"])
            .returning(PaymentInbox.id)
        )
        return inserted.scalar_one_or_none()

    async def mark_handled(self, inbox_id: int, at: datetime) -> None:
        await self.session.execute(
            update(PaymentInbox).where(PaymentInbox.id == inbox_id).values(handled_at=at)
        )
