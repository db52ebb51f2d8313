"""Booking jobs: standing orders before cutoffs, no-shows after serving windows, next-day reminders, and the
sending of subscribe messages (after the booking's commit)."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.worker import task

log = structlog.get_logger("app.bookings.tasks")


@task("bookings.materialize_standing_orders", cron="5,35 * * * *")
async def materialize_standing_orders(session: AsyncSession) -> None:
    from app.bookings.service import booking_service

    outcomes = await booking_service.materialize_standing_orders(session)
    if outcomes:
        log.info("standing_orders_materialized", **outcomes)


@task("bookings.mark_no_shows", cron="*/10 * * * *")
async def mark_no_shows(session: AsyncSession) -> None:
    from app.bookings.service import booking_service

    count = await booking_service.mark_no_shows(session)
    if count:
        log.info("no_shows_marked", count=count)


@task("bookings.send_reminders", cron="0 18 * * *")
async def send_reminders(session: AsyncSession) -> None:
    from app.bookings.service import booking_service

    await booking_service.queue_reminders(session)


@task("bookings.send_notification", max_retries=3)
async def send_notification(session: AsyncSession, notification_id: str) -> None:
    from app.bookings.notifications import deliver

    await deliver(session, uuid.UUID(notification_id))
