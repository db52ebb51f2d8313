from __future__ import annotations

import uuid
from datetime import date

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.feed.service import feed_service
from app.worker import enqueue, task

log = structlog.get_logger("app.feed")


@task("feed.send_donor_digest", max_retries=5)
async def send_donor_digest(session: AsyncSession, user_id: str, week_start: str) -> None:
    """One donor's "your gift funded N meals" message for one week (at most once)."""
    outcome = await feed_service.send_digest(
        session, user_id=uuid.UUID(user_id), week_start=date.fromisoformat(week_start)
    )
    log.info("donor_digest", user_id=user_id, week_start=week_start, outcome=outcome)


@task("feed.weekly_donor_digest", cron="0 9 * * 1")
async def weekly_donor_digest(session: AsyncSession) -> None:
    """Monday 09:00 (Asia/Shanghai): a digest job per donor who allowed it and whose gifts paid for meals
    last week. Each runs in its own transaction, so one WeChat failure does not hold up the others."""
    monday, donors = await feed_service.digest_candidates(session)
    for user_id in donors:
        enqueue(session, send_donor_digest, str(user_id), monday.isoformat())
    log.info("donor_digest_queued", week_start=monday.isoformat(), donors=len(donors))
