"""Donation jobs: recover payments whose notification never came, close orders nobody paid, number receipts,
submit approved refunds to WeChat Pay and recover refunds whose outcome never came."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.donations.service import donation_service
from app.wechat.pay import get_wechatpay
from app.worker import task

log = structlog.get_logger("app.donations.tasks")


@task("donations.poll_pending", cron="* * * * *")
async def poll_pending(session: AsyncSession) -> None:
    """Query WeChat Pay for unpaid orders older than two minutes and complete the paid ones."""
    counts = await donation_service.check_pending(session, get_wechatpay(), close_expired=False)
    if counts["checked"]:
        log.info("donations_polled", **counts)


@task("donations.close_expired", cron="*/5 * * * *")
async def close_expired(session: AsyncSession) -> None:
    """Close orders past their time_expire (after one last query, in case they were paid)."""
    counts = await donation_service.check_pending(session, get_wechatpay(), close_expired=True)
    if counts["checked"]:
        log.info("donations_closed", **counts)


@task("donations.number_receipts", cron="* * * * *")
async def number_receipts(session: AsyncSession) -> None:
    """Every minute: number any paid donation the after-commit numbering left (it yields when busy)."""
    numbered = await donation_service.number_receipts(session)
    if numbered:
        log.info("receipts_numbered", count=numbered)


@task("donations.poll_refunds", cron="*/5 * * * *")
async def poll_refunds(session: AsyncSession) -> None:
    """Every five minutes: ask WeChat Pay about approved refunds whose outcome has not come."""
    counts = await donation_service.check_refunds(session, get_wechatpay())
    if counts["checked"]:
        log.info("refunds_polled", **counts)


@task("donations.submit_refund")
async def submit_refund(session: AsyncSession, refund_id: str) -> None:
    """After an approval commits: ask WeChat Pay for the refund and record its answer. Unreachable or busy,
    it fails and runs again; a refusal releases the reservation (``DonationService.submit_refund``)."""
    outcome = await donation_service.submit_refund(session, get_wechatpay(), uuid.UUID(refund_id))
    log.info("refund_submitted", refund_id=refund_id, outcome=outcome)
