from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger.service import ledger_service
from app.worker import task

log = structlog.get_logger("app.ledger")


@task("ledger.publish_daily_digest", cron="5 0 * * *")
async def publish_daily_digest(session: AsyncSession) -> None:
    """Just after midnight (Asia/Shanghai): publish yesterday's Merkle root, and any day still missing one."""
    days = await ledger_service.publish_missing_digests(session)
    log.info("ledger_digests_published", days=[d.isoformat() for d in days])


@task("ledger.seal", cron="* * * * *")
async def seal_ledger(session: AsyncSession) -> None:
    """Every minute: chain any committed entry the after-commit sealing skipped (it yields when busy)."""
    sealed = await ledger_service.seal(session, wait=True)
    if sealed:
        log.info("ledger_sealed", entries=sealed)
