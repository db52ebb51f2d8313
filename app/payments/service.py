"""WeChat Pay notifications: verify → inbox (exactly once) → check against our order → act, in one transaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.donations.repository import DonationRepository
from app.donations.service import donation_service
from app.kit.time import utcnow
from app.models import Donation
from app.payments.repository import InboxRepository
from app.wechat.pay import NotificationRejected, WeChatPayGateway

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


class PaymentService:
    async def handle_payment_notification(
        self, session: AsyncSession, gateway: WeChatPayGateway, headers: Mapping[str, str], body: bytes
    ) -> str:
        note = gateway.parse_notification(headers, body)
        inbox = InboxRepository(session)
        inbox_id = await inbox.claim(
            source=SOURCE, external_id=note.id, event_type=note.event_type, payload=note.resource
        )
        if inbox_id is None:
            return "duplicate"
        if note.event_type != "TRANSACTION.SUCCESS":
            await inbox.mark_handled(inbox_id, utcnow())
            return "ignored"
        tx = note.resource
        out_trade_no = tx.get("out_trade_no")
        donation = (
            await DonationRepository(session).lock_by_out_trade_no(out_trade_no)
            if isinstance(out_trade_no, str)
            else None
        )
        if donation is None:
            raise NotificationRejected("unknown out_trade_no", 404)
        if tx.get("trade_state") != "SUCCESS":
            raise NotificationRejected("trade_state is not SUCCESS", 400)
        problem = transaction_matches(gateway, donation, tx)
        if problem:
            log.error("notification_mismatch", donation_id=str(donation.id), problem=problem)
            raise NotificationRejected(problem, 400)
        # before the payment: completing it ends with the year's receipt counter, locked until commit
        await inbox.mark_handled(inbox_id, utcnow())
        done = await donation_service.complete_payment(
            session,
            donation,
            source=SOURCE,
            external_ref=str(tx["transaction_id"]),
            paid_at=parse_success_time(tx.get("success_time")),
        )
        return "paid" if done else "already_paid"

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
