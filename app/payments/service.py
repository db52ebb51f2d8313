"""WeChat Pay notifications: verify → inbox (exactly once) → check against our order → act, in one transaction.

Payment notifications arrive in storms (a televised drive shows the QR code), so each process applies them with
group commit (``payment_batch``): the endpoint verifies and decrypts, hands the notification over and waits; the
batch takes every notification waiting in the process and acts on them in one transaction, then answers each.
WeChat gets 204 only after its notification's effect has committed, exactly as if it had been handled alone.
A batch does not wait for an order another transaction holds (the same payment delivered to another process at
the same moment, the receipt numberer): that notification goes into the next batch, which waits for it if it
has to, and the rest of the batch goes on. Refund notifications are rare and handled one per request."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.donations.repository import DonationRepository, PayableOrder
from app.donations.service import FINAL_REFUND_STATES, PaymentCompletion, donation_service
from app.errors import is_unavailable
from app.kit.background import Again, RequestBatch
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


def transaction_matches(
    gateway: WeChatPayGateway, donation: Donation | PayableOrder, tx: Mapping[str, Any]
) -> str | None:
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


class StoredButUnpaid(Exception):
    """A payment's notification was found stored while its order is still unpaid. Its row commits with the
    payment, and the order's row is locked here, so this does not happen; if it ever does, the batch is run
    again one notification at a time rather than guessed at."""


class OrderBusy:
    """The outcome of a notification left alone because another transaction holds its order (see
    ``handle_payment_notifications``): nothing of it was written."""


ORDER_BUSY = OrderBusy()


class PaymentService:
    async def handle_payment_notifications(
        self,
        session: AsyncSession,
        gateway: WeChatPayGateway,
        notes: list[Notification],
        *,
        unless_busy: Sequence[bool] | None = None,
    ) -> list[str | Exception | OrderBusy]:
        """Act on verified payment notifications in one transaction, with the outcome each would have had
        alone, in order: ``paid``, ``already_paid``, ``duplicate``, ``ignored``, or a ``NotificationRejected``
        (unknown order, not a success, not matching our order), of which nothing is kept, not even its inbox
        row. Two statements before the payments themselves: the donations' row locks (two statements when
        some orders are waited for and others not), then one INSERT of the inbox rows, whose ``ON CONFLICT DO
        NOTHING`` tells which notifications were stored before.

        ``unless_busy`` (one flag per notification): for those flagged, an order another transaction holds is
        not waited for; the notification's outcome is ``ORDER_BUSY`` and nothing of it is written. Such an
        order cannot be told from an unknown one without waiting, so an unknown order is ``ORDER_BUSY`` too.
        The others' orders are locked first, waiting as needed: a transaction waits only in its first
        statement, where it holds nothing yet, so batches never wait for each other in a circle.

        Each notification is checked against its order before the inbox is written. That gives the same
        outcomes as looking the inbox up first: a stored notification passed the same checks against the same
        order (their fields do not change), and a payment's notification is stored in the transaction that
        pays its order, under the order's row lock taken here, so one for an order still unpaid is new."""
        flags = list(unless_busy) if unless_busy is not None else [False] * len(notes)
        if len(flags) != len(notes):
            raise ValueError("one unless_busy flag per notification")
        waiting: set[str] = set()
        skipping: set[str] = set()
        for n, flag in zip(notes, flags, strict=True):
            if n.event_type == "TRANSACTION.SUCCESS" and isinstance(n.resource.get("out_trade_no"), str):
                (skipping if flag else waiting).add(n.resource["out_trade_no"])
        skipping -= waiting
        repo = DonationRepository(session)
        donations = await repo.lock_by_out_trade_nos(sorted(waiting))
        donations.update(await repo.lock_by_out_trade_nos(sorted(skipping), unless_busy=True))
        # per notification: its outcome if it turns out new (a claim), or its final outcome
        planned: list[tuple[str, Notification | None] | Exception | OrderBusy] = []
        claimed: set[str] = set()  # ids claimed earlier in this batch
        completions: dict[str, PaymentCompletion] = {}  # notification id → the payment it makes
        paying: dict[uuid.UUID, str] = {}  # donation → transaction id, paid earlier in this batch
        for note in notes:
            if note.id in claimed:
                planned.append(("duplicate", None))
                continue
            if note.event_type != "TRANSACTION.SUCCESS":
                claimed.add(note.id)
                planned.append(("ignored", note))
                continue
            tx = note.resource
            out_trade_no = tx.get("out_trade_no")
            locked = donations.get(out_trade_no) if isinstance(out_trade_no, str) else None
            if locked is None:
                busy = isinstance(out_trade_no, str) and out_trade_no in skipping
                planned.append(ORDER_BUSY if busy else NotificationRejected("unknown out_trade_no", 404))
                continue
            donation, target = locked
            if tx.get("trade_state") != "SUCCESS":
                planned.append(NotificationRejected("trade_state is not SUCCESS", 400))
                continue
            problem = transaction_matches(gateway, donation, tx)
            if problem is None and paying.get(donation.id, tx["transaction_id"]) != tx["transaction_id"]:
                problem = "transaction_id mismatch"
            if problem:
                log.error("notification_mismatch", donation_id=str(donation.id), problem=problem)
                planned.append(NotificationRejected(problem, 400))
                continue
            claimed.add(note.id)
            if (
                donation.status in (DonationStatus.pending, DonationStatus.closed)
                and donation.id not in paying
            ):
                paying[donation.id] = str(tx["transaction_id"])
                completions[note.id] = PaymentCompletion(
                    donation,
                    source=SOURCE,
                    external_ref=str(tx["transaction_id"]),
                    paid_at=parse_success_time(tx.get("success_time")),
                    target=target,
                )
                planned.append(("paid", note))
            else:
                planned.append(("already_paid", note))
        claims = [p[1] for p in planned if isinstance(p, tuple) and p[1] is not None]
        written = await InboxRepository(session).claim_handled(SOURCE, claims, utcnow())
        if any(note_id not in written for note_id in completions):
            raise StoredButUnpaid()
        outcomes: list[str | Exception | OrderBusy] = []
        for p in planned:
            if not isinstance(p, tuple):
                outcomes.append(p)
            else:
                outcome, claim = p
                outcomes.append(outcome if claim is None or claim.id in written else "duplicate")
        if completions:
            await donation_service.complete_payments(session, list(completions.values()))
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
        if not note.event_type.startswith("REFUND.") or (
            note.event_type.removeprefix("REFUND.") not in FINAL_REFUND_STATES
        ):
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
        done = await donation_service.record_refund_answer(session, refund, r, status=status)
        await inbox.mark_handled(inbox_id, utcnow())
        return "refunded" if done else "already_final"


payment_service = PaymentService()


@dataclass(frozen=True)
class WaitingNotification:
    """A verified payment notification in ``payment_batch``. ``left_once``: a batch left it because another
    transaction held its order; the next batch waits for that order rather than leave it again."""

    note: Notification
    left_once: bool = False


async def _apply_payment_notifications(
    session: AsyncSession, items: list[WaitingNotification]
) -> list[str | Exception | Again[WaitingNotification]]:
    outcomes = await payment_service.handle_payment_notifications(
        session, get_wechatpay(), [i.note for i in items], unless_busy=[not i.left_once for i in items]
    )
    return [
        Again(WaitingNotification(i.note, left_once=True)) if isinstance(o, OrderBusy) else o
        for i, o in zip(items, outcomes, strict=True)
    ]


# At most this long, a batch that follows a larger one waits for the notifications the larger one answered to
# come back (``RequestBatch``). In a notify storm it took the median from 1,964 to 2,261 notifications/s over
# nine pairs of runs side by side (docs/performance-rounds.md); a lone notification after a quiet spell does
# not wait.
LINGER_SECONDS = 0.003

# one per process: group commit of payment notifications (see the module docstring)
payment_batch: RequestBatch[WaitingNotification, str] = RequestBatch(
    "payments.notify", _apply_payment_notifications, shared_failure=is_unavailable, linger=LINGER_SECONDS
)
