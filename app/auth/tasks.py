from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import auth_service
from app.worker import task

log = structlog.get_logger("app.auth")


@task("auth.purge_expired_sessions", cron="17 * * * *")
async def purge_expired_sessions(session: AsyncSession) -> None:
    """Hourly: delete session tokens that expired or were revoked more than 30 days ago."""
    deleted = await auth_service.purge_expired_sessions(session)
    log.info("expired_sessions_purged", deleted=deleted)
