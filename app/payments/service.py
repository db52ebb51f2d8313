"""WeChat Pay notifications: verify → inbox (exactly once) → check against our order → act, in one transaction.

Payment notifications arrive in storms (a televised drive shows the QR code), so each process applies them with
group commit (``payment_batch``): the endpoint verifies and decrypts, hands the notification over and waits; the
batch takes every notification waiting in the process and acts on them in one transaction, then answers each.
WeChat gets 204 only after its notification's effect has committed, exactly as if it had been handled alone.
Refund notifications are rare and handled one per request."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.donations.repository import DonationRepository
from app.donations.service import PaymentCompletion, donation_service
from app.errors import is_unavailable
from app.kit.background import RequestBatch
from app.kit.time import utcnow
from app.models import Donation
from app.models.donation import DonationStatus
from app.payments.repository import InboxRepository
from app.wechat.pay import Notification, NotificationRejected, WeChatPayGateway, get_wechatpay

log = structlog.get_logger("app.payments")

SOURCE = "wechatpay"


def parse_success_time(value: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return utcnow()
    return parsed if parsed.tzinfo else utcnow()


def transaction_matches(gateway: WeChatPayGateway, donation: Donation, tx: Mapping[str, Any]) -> str | None:
    """Why a WeChat transaction does not belong to this donation (None when it does)."""
    amount = tx.get("amount") if isinstance(tx.get("amount"), dict) else {}
    assert isinstance(amount, dict)
    if tx.get("mchid") != gateway.config.mchid:
        return "mchid mismatch"
    if tx.get("appid") != gateway.config.appid:
        return "appid mismatch"
    if tx.get("out_trade_no") != donation.out_trade_no:
        return "out_trade_no mismatch"
    if amount.get("total") != donation.amount_fen or amount.get("currency", "CNY") != "CNY":
        return "amount mismatch"
    transaction_id = tx.get("transaction_id")
    if not isinstance(transaction_id, str) or not transaction_id:
        return "missing transaction_id"
    if donation.transaction_id and donation.transaction_id != transaction_id:
        return "transaction_id mismatch"
    return None


class InboxRace(Exception):
    """A concurrent delivery of a notification in this batch committed first: run the batch again one by one."""


class PaymentService:
    async def handle_payment_notifications(
        self, session: AsyncSession, gateway: WeChatPayGateway, notes: list[Notification]
    ) -> list[str | Exception]:
        """Act on verified payment notifications in one transaction, with the outcome each would have had
        alone, in order: ``paid``, ``already_paid``, ``duplicate``, ``ignored``, or a ``NotificationRejected``
        (unknown order, not a success, not matching our order), of which nothing is kept, not even its inbox
        row. A few statements per batch: the donations' row locks, the inbox look-up and insert, and
        ``complete_payments``."""
        outcomes: list[str | Exception] = []
        trade_nos = {
            n.resource["out_trade_no"]
            for n in notes
            if n.event_type == "TRANSACTION.SUCCESS" and isinstance(n.resource.get("out_trade_no"), str)
        }
        donations = await DonationRepository(session).lock_by_out_trade_nos(sorted(trade_nos))
        inbox = InboxRepository(session)
        seen = await inbox.stored(SOURCE, [n.id for n in notes])
        claims: list[Notification] = []
        completions: list[PaymentCompletion] = []
        paying: dict[uuid.UUID, str] = {}  # donation → transaction id, paid earlier in this batch
        for note in notes:
            if note.id in seen:
                outcomes.append("duplicate")
                continue
            if note.event_type != "TRANSACTION.SUCCESS":
                seen.add(note.id)
                claims.append(note)
                outcomes.append("ignored")
                continue
            tx = note.resource
            out_trade_no = tx.get("out_trade_no")
            locked = donations.get(out_trade_no) if isinstance(out_trade_no, str) else None
            if locked is None:
                outcomes.append(NotificationRejected("unknown out_trade_no", 404))
                continue
            donation, target = locked
            if tx.get("trade_state") != "SUCCESS":
                outcomes.append(NotificationRejected("trade_state is not SUCCESS", 400))
                continue
            problem = transaction_matches(gateway, donation, tx)
            if problem is None and paying.get(donation.id, tx["transaction_id"]) != tx["transaction_id"]:
                problem = "transaction_id mismatch"
            if problem:
                log.error("notification_mismatch", donation_id=str(donation.id), problem=problem)
                outcomes.append(NotificationRejected(problem, 400))
                continue
            seen.add(note.id)
            claims.append(note)
            if (
                donation.status in (DonationStatus.pending, DonationStatus.closed)
                and donation.id not in paying
            ):
                paying[donation.id] = str(tx["transaction_id"])
                completions.append(
                    PaymentCompletion(
                        donation,
                        source=SOURCE,
                        external_ref=str(tx["transaction_id"]),
                        paid_at=parse_success_time(tx.get("success_time")),
                        target=target,
                    )
                )
                outcomes.append("paid")
            else:
                outcomes.append("already_paid")
        if claims:
            written = await inbox.claim_handled(SOURCE, claims, utcnow())
            if len(written) != len(claims):
                # Another transaction stored one of these meanwhile. A payment's notification cannot race
                # this way (its donation row is locked above), so this is an "ignored" kind delivered twice.
                raise InboxRace()
        if completions:
            await donation_service.complete_payments(session, completions)
        return outcomes

    async def handle_refund_notification(
        self, session: AsyncSession, gateway: WeChatPayGateway, headers: Mapping[str, str], body: bytes
    ) -> str:
        note = gateway.parse_notification(headers, body)
        inbox = InboxRepository(session)
        inbox_id = await inbox.claim(
            source=SOURCE + "_refund", external_id=note.id, event_type=note.event_type, payload=note.resource
        )
        if inbox_id is None:
            return "duplicate"
        r = note.resource
        if note.event_type not in ("REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED"):
            await inbox.mark_handled(inbox_id, utcnow())
            return "ignored"
        out_refund_no = r.get("out_refund_no")
        repo = DonationRepository(session)
        refund = (
            await repo.lock_refund_by_out_refund_no(out_refund_no) if isinstance(out_refund_no, str) else None
        )
        if refund is None:
            raise NotificationRejected("unknown out_refund_no", 404)
        donation = await repo.get(refund.donation_id)
        assert donation is not None
        amount = r.get("amount") if isinstance(r.get("amount"), dict) else {}
        assert isinstance(amount, dict)
        if r.get("mchid") != gateway.config.mchid:
            raise NotificationRejected("mchid mismatch", 400)
        if r.get("out_trade_no") != donation.out_trade_no or amount.get("refund") != refund.amount_fen:
            raise NotificationRejected("refund does not match", 400)
        status = str(r.get("refund_status", note.event_type.removeprefix("REFUND.")))
        if status != note.event_type.removeprefix("REFUND."):
            raise NotificationRejected("refund_status does not match event_type", 400)
        done = await donation_service.complete_refund(
            session, refund, status=status, succeeded_at=parse_success_time(r.get("success_time"))
        )
        await inbox.mark_handled(inbox_id, utcnow())
        return "refunded" if done else "already_final"


payment_service = PaymentService()


async def _apply_payment_notifications(
    session: AsyncSession, notes: list[Notification]
) -> list[str | Exception]:
    return await payment_service.handle_payment_notifications(session, get_wechatpay(), notes)


# one per process: group commit of payment notifications (see the module docstring)
payment_batch: RequestBatch[Notification, str] = RequestBatch(
    "payments.notify", _apply_payment_notifications, shared_failure=is_unavailable
)
