"""The payment inbox: one row per verified provider notification, inserted ON CONFLICT DO NOTHING."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.jsontext import json_text
from app.kit.sql import execute_core, insert_or_skip
from app.models import PaymentInbox
from app.wechat.pay import Notification

_CLAIM = text(
    """
    INSERT INTO payment_inbox (source, external_id, event_type, payload, handled_at)
    SELECT CAST(:source AS text), v.external_id, v.event_type, CAST(v.payload AS jsonb),
           CAST(:at AS timestamptz)
    FROM unnest(CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:payloads AS text[]))
         AS v(external_id, event_type, payload)
    ORDER BY v.external_id
    ON CONFLICT (source, external_id) DO NOTHING
    RETURNING external_id
    """
)


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

    async def claim_handled(self, source: str, notes: list[Notification], at: datetime) -> set[str]:
        """Store handled notifications in one INSERT; the ids written. One already stored is skipped, after
        waiting for a concurrent transaction that holds it: its effect committed with it. Rows go in id order,
        so two transactions storing overlapping sets never wait on each other both ways. The columns go as
        arrays, so the statement's text is the same for every batch size (prepared once per connection)."""
        if not notes:
            return set()
        result = await execute_core(
            self.session,
            _CLAIM,
            {
                "source": source,
                "at": at,
                "ids": [n.id for n in notes],
                "types": [n.event_type for n in notes],
                "payloads": [json_text(n.resource) for n in notes],
            },
        )
        return set(result.scalars())

    async def mark_handled(self, inbox_id: int, at: datetime) -> None:
        await self.session.execute(
            update(PaymentInbox).where(PaymentInbox.id == inbox_id).values(handled_at=at)
        )
