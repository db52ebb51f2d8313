"""The daily reconciliation: at 10:30 Asia/Shanghai (WeChat Pay publishes a day's bill after 10:00), download
and reconcile yesterday's trade bill."""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.time import business_date
from app.reconciliation.service import SYSTEM, reconciliation_service
from app.wechat.pay import get_wechatpay
from app.worker import task

log = structlog.get_logger("app.reconciliation.tasks")


@task("reconciliation.daily", cron="30 10 * * *")
async def daily(session: AsyncSession, bill_date: str | None = None) -> None:
    """Reconcile yesterday (or ``bill_date``, YYYY-MM-DD). A refused bill or an unreachable WeChat Pay raises,
    so the job is retried with backoff; nothing of a failed attempt is kept."""
    from datetime import date

    day = date.fromisoformat(bill_date) if bill_date else business_date() - timedelta(days=1)
    run = await reconciliation_service.run_from_api(session, get_wechatpay(), day, SYSTEM)
    log.info(
        "reconciliation_daily",
        bill_date=day.isoformat(),
        day_status=run.day_status,
        open_discrepancies=run.open_discrepancies,
    )
