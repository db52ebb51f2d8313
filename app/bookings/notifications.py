"""Subscribe messages about bookings. Rows are written in the booking's transaction; a job sends each one after
commit (so a rolled-back booking sends nothing), spending one unit of the user's quota for the template."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.bookings.repository import BookingRepository
from app.kit.money import format_yuan
from app.models import Booking, Canteen, Elder

TEMPLATES = {
    "booking_confirmed": "sangyu_booking_confirmed",
    "meal_reminder": "sangyu_meal_reminder",
    "cancelled_by_canteen": "sangyu_cancelled_by_canteen",
}
SLOT_NAMES = {"breakfast": "早餐", "lunch": "午餐", "dinner": "晚餐"}


def _data(kind: str, booking: Booking, canteen: Canteen, elder: Elder, reason: str | None) -> dict[str, str]:
    from app.kit.crypto import mask_name

    data = {
        "thing1": canteen.name[:20],
        "date2": booking.service_date.isoformat(),
        "phrase3": SLOT_NAMES.get(booking.slot, booking.slot),
        "name4": mask_name(elder.name),
    }
    if kind == "cancelled_by_canteen":
        data["thing5"] = (reason or "食堂取消")[:20]
    else:
        data["amount5"] = format_yuan(booking.self_pay_fen)
        data["character_string6"] = booking.serve_code
    return data


@dataclass(frozen=True)
class BookingMessage:
    """One booking's message of some kind, to the elder and their family."""

    booking: Booking
    canteen: Canteen
    elder: Elder
    family_user_ids: Sequence[uuid.UUID] | None = None  # as the caller has just read it; None: read here
    reason: str | None = None


async def queue_booking_messages(
    session: AsyncSession,
    *,
    kind: str,
    booking: Booking,
    canteen: Canteen,
    elder: Elder,
    reason: str | None = None,
    family_user_ids: Sequence[uuid.UUID] | None = None,
) -> list[uuid.UUID]:
    """Create the notification rows for the elder (if they have an account) and every bound family member,
    and enqueue their sending for after commit; the rows and the outbox rows of the transaction's jobs so far
    are one statement. ``family_user_ids``: the family as the caller has just read it (else it is read here).
    A recipient who already has this message gets no second one (its job then finds no row of its own)."""
    message = BookingMessage(booking, canteen, elder, family_user_ids, reason)
    return await queue_many_booking_messages(session, kind=kind, messages=[message])


async def queue_many_booking_messages(
    session: AsyncSession, *, kind: str, messages: Sequence[BookingMessage]
) -> list[uuid.UUID]:
    """``queue_booking_messages`` for several bookings at once: their rows and the outbox rows of the
    transaction's jobs so far in one statement."""
    from app.bookings.tasks import send_notification
    from app.worker import enqueue, take_unstaged_jobs

    repo = BookingRepository(session)
    user_ids: list[uuid.UUID] = []
    bookings: list[Booking] = []
    datas: list[dict[str, str]] = []
    for m in messages:
        family = m.family_user_ids
        if family is None:
            family = await repo.family_user_ids(m.elder.id)
        own = [m.elder.user_id] if m.elder.user_id is not None else []
        recipients = list(dict.fromkeys([*own, *family]))  # a member who is also the elder: one message
        data = _data(kind, m.booking, m.canteen, m.elder, m.reason)
        user_ids += recipients
        bookings += [m.booking] * len(recipients)
        datas += [data] * len(recipients)
    if not user_ids:
        return []
    ids = [uuid.uuid4() for _ in user_ids]
    for nid in ids:
        enqueue(session, send_notification, str(nid))
    jobs = take_unstaged_jobs(session)
    assert jobs is not None  # the messages' own jobs at least
    return await repo.add_notifications(
        kind=kind,
        template_id=TEMPLATES[kind],
        ids=ids,
        user_ids=user_ids,
        booking_ids=[b.id for b in bookings],
        datas=datas,
        pages=[f"pages/bookings/detail?id={b.id}" for b in bookings],
        jobs=jobs,
    )


async def deliver(session: AsyncSession, notification_id: uuid.UUID) -> str:
    """Spend one unit of the user's quota for the template and send; no quota → recorded, not sent.
    A WeChat failure raises, so the quota spend rolls back with the job's transaction and the job retries."""
    from app.kit.time import utcnow
    from app.models import MealNotification, User
    from app.wechat.miniprogram import get_miniprogram

    notification = await session.get(MealNotification, notification_id, with_for_update=True)
    if notification is None or notification.status != "pending":
        return "skipped"
    user = await session.get(User, notification.user_id)
    if user is None:
        notification.status, notification.error = "failed", "user missing"
        return notification.status
    if not await BookingRepository(session).use_quota(notification.user_id, notification.template_id):
        notification.status = "no_quota"
        return notification.status
    await get_miniprogram().send_subscribe_message(
        user.openid, notification.template_id, notification.data, notification.page
    )
    notification.status = "sent"
    notification.sent_at = utcnow()
    return notification.status
