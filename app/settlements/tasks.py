from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.settlements.service import previous_month, settlement_service
from app.worker import task

log = structlog.get_logger("app.settlements")


@task("settlements.draft_last_month", cron="30 2 1 * *")
async def draft_last_month(session: AsyncSession) -> None:
    """On the 1st (Asia/Shanghai, 02:30): draft (or refresh) every canteen's statement for last month."""
    month = previous_month()
    result = await settlement_service.draft_month(session, month, actor=None)
    log.info("settlements_drafted", month=month, drafted=len(result.drafted))
