"""我为老人助一餐: donation targets, WeChat Pay orders, payment completion, receipts, refunds, offline gifts.

Money moves in the ledger only through ``app.ledger.service.ledger_service`` (its single entry points); a
public feed event is written in the same transaction as each payment or refund."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, overload

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth.subject import Subject
from app.config import get_settings
from app.db import after_commit, release_connection
from app.donations.repository import DonationRepository, PayableOrder, TargetLabel
from app.donations.schemas import (
    MAX_DONATION_FEN,
    DonationCreate,
    DonationCreated,
    DonationOut,
    DonationTargetOut,
    InvoiceRequestIn,
    InvoiceRequestOut,
    OfflineDonationIn,
    PayParams,
    ReceiptOut,
    RefundOut,
    RefundRequestIn,
    SuggestedAmount,
    TargetTotals,
)
from app.exceptions import Conflict, NotFound, Unprocessable, WeChatUnavailable
from app.kit import idempotency
from app.kit.background import PostCommitBatch
from app.kit.crypto import encrypt_pii, mask_id_number, mask_name
from app.kit.money import fen_to_yuan_text
from app.kit.pagination import Page, decode_cursor_as, encode_cursor
from app.kit.time import SHANGHAI, shanghai_datetime, utcnow
from app.ledger.service import DonationPayment, ledger_service
from app.models import Donation, DonationInvoiceRequest, DonationRefund, DonationTarget, Fund
from app.models.donation import DonationChannel, DonationStatus
from app.models.donation_refund import RefundStatus
from app.wechat.pay import WeChatPayError, WeChatPayGateway

log = structlog.get_logger("app.donations")

# WeChat Pay's refund errors that mean "not now" rather than "no": the job asks again later
RETRYABLE_REFUND_ERRORS = frozenset({"SYSTEM_ERROR", "FREQUENCY_LIMITED"})
# a refund's states after which WeChat Pay does not change it
FINAL_REFUND_STATES = frozenset({"SUCCESS", "CLOSED", "ABNORMAL"})

ANONYMOUS_NAME = "爱心人士"
ISSUER = "德州市慈善总会"
PREPAY_REUSE = timedelta(minutes=90)  # prepay_id lives 2 h; re-enter before that
_OUT_TRADE_NO_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def _not_found() -> NotFound:
    return NotFound("找不到这笔捐赠", code="DonationNotFound")


def _target_not_found() -> NotFound:
    return NotFound("找不到这个捐赠项目，请重新扫码", code="DonationTargetNotFound")


@dataclass(frozen=True)
class PaymentCompletion:
    """A locked donation and the payment that completes it: one item of ``complete_payments``. ``target``: the
    label of the donation's target when the caller has it already (else it is read)."""

    donation: Donation | PayableOrder
    source: str
    external_ref: str
    paid_at: datetime
    target: TargetLabel | None = None


def mint_out_trade_no(now: datetime | None = None) -> str:
    """``SY`` + Shanghai date + 18 random characters: 28 characters from WeChat's allowed set."""
    day = (now or utcnow()).astimezone(SHANGHAI).strftime("%Y%m%d")
    return "SY" + day + "".join(secrets.choice(_OUT_TRADE_NO_ALPHABET) for _ in range(18))


def donor_label(donation: Donation | PayableOrder) -> str:
    if donation.anonymous or not donation.display_name:
        return ANONYMOUS_NAME
    return donation.display_name


class DonationService:
    # ---------------------------------------------------------------- targets

    async def target_account(self, session: AsyncSession, target: DonationTarget) -> str:
        if target.kind == "canteen":
            return f"pool:canteen:{target.canteen_id}"
        if target.kind == "fund":
            fund = await session.get(Fund, target.fund_id)
            if fund is not None and fund.is_general_meal_pool:
                return "pool:general_meal"
            return f"fund:{target.fund_id}"
        return "pool:general_meal"

    def target_url(self, code: str) -> str:
        return get_settings().PUBLIC_BASE_URL.rstrip("/") + f"/q/{code}"

    async def target_view(self, session: AsyncSession, target: DonationTarget) -> DonationTargetOut:
        repo = DonationRepository(session)
        canteen_name, fund_name = await repo.target_names(target)
        paid_fen, count = await repo.target_totals(target.id)
        unit = get_settings().MEAL_UNIT_FEN
        suggestions = []
        for fen in target.suggested_amounts_fen or [unit, unit * 3, unit * 10]:
            meals = fen // unit if fen % unit == 0 else None
            label = f"{meals}餐 ¥{fen_to_yuan_text(fen)}" if meals else f"¥{fen_to_yuan_text(fen)}"
            suggestions.append(SuggestedAmount(amount_fen=int(fen), meals=meals, label=label))
        return DonationTargetOut(
            code=target.code,
            kind=target.kind,
            title=target.title,
            description=target.description,
            canteen_id=target.canteen_id,
            canteen_name=canteen_name,
            fund_id=target.fund_id,
            fund_name=fund_name,
            meal_unit_fen=unit,
            suggested_amounts=suggestions,
            totals=TargetTotals(paid_fen=paid_fen, donations=count),
            scans=target.scans,
            url=self.target_url(target.code),
        )

    async def list_targets(self, session: AsyncSession) -> list[DonationTargetOut]:
        return [await self.target_view(session, t) for t in await DonationRepository(session).list_targets()]

    async def get_target(self, session: AsyncSession, code: str, *, scan: bool = False) -> DonationTargetOut:
        repo = DonationRepository(session)
        if scan:
            await repo.count_scan(code)
        target = await repo.get_target(code)
        if target is None:
            raise _target_not_found()
        return await self.target_view(session, target)

    # ---------------------------------------------------------------- orders

    async def view(self, session: AsyncSession, donation: Donation) -> DonationOut:
        donation = await self._with_receipt(session, donation, wait=False)
        target = await DonationRepository(session).get_target_by_id(donation.target_id)
        assert target is not None
        return DonationOut(
            id=donation.id,
            target_code=target.code,
            target_title=target.title,
            channel=donation.channel,
            status=donation.status,
            amount_fen=donation.amount_fen,
            meals=donation.meals,
            refunded_fen=donation.refunded_fen,
            anonymous=donation.anonymous,
            display_name=donation.display_name,
            message=donation.message,
            out_trade_no=donation.out_trade_no,
            transaction_id=donation.transaction_id,
            receipt_no=donation.receipt_no,
            created_at=donation.created_at,
            paid_at=donation.paid_at,
            expires_at=donation.expires_at,
        )

    async def _prepay(
        self, gateway: WeChatPayGateway, donation: Donation, target: DonationTarget, openid: str
    ) -> str:
        assert donation.out_trade_no and donation.expires_at
        try:
            return await gateway.create_jsapi_order(
                out_trade_no=donation.out_trade_no,
                description=f"我为老人助一餐-{target.title}"[:127],
                amount_fen=donation.amount_fen,
                payer_openid=openid,
                time_expire=donation.expires_at,
                attach=str(donation.id),
            )
        except WeChatPayError as exc:
            if exc.code == "ORDERPAID":
                raise Conflict("这笔捐赠已经支付过了，谢谢您！", code="DonationAlreadyPaid") from exc
            if exc.code == "ORDER_CLOSED":
                raise Conflict("这笔捐赠订单已过期关闭，请重新发起", code="DonationClosed") from exc
            log.error("wechatpay_order_rejected", code=exc.code, status=exc.status)
            raise WeChatUnavailable("微信支付下单失败，请稍后再试", detail={"code": exc.code}) from exc

    async def create(
        self,
        session: AsyncSession,
        gateway: WeChatPayGateway,
        subject: Subject,
        payload: DonationCreate,
        idempotency_key: str | None,
    ) -> DonationCreated:
        """Open the WeChat Pay order, then write the donation and its key's claim in one transaction.

        The order is opened while the request holds no database connection (``release_connection``): before
        it the request has only read (the target, whether the key was used), and what it writes comes after.
        A WeChat Pay failure therefore writes nothing. Two requests racing with one new key may each open an
        order; the claim lets one donation through, and the other request answers with it. The order that lost
        is never shown to anyone, so nobody can pay it, and WeChat Pay closes it at ``time_expire``."""
        repo = DonationRepository(session)
        target = await repo.get_target(payload.target_code)
        if target is None:
            raise _target_not_found()
        key = idempotency.require_key(idempotency_key)
        owner = str(subject.user_id)
        digest = idempotency.body_hash(payload)
        seen = await idempotency.find(session, scope="donation", owner=owner, key=key, digest=digest)
        if seen is not None:
            return await self._replay(session, gateway, subject, seen, target)

        unit = get_settings().MEAL_UNIT_FEN
        amount = payload.amount_fen if payload.amount_fen is not None else (payload.meals or 0) * unit
        if not 1 <= amount <= MAX_DONATION_FEN:
            raise Unprocessable("捐赠金额须在 0.01 元到 50000 元之间", code="AmountOutOfRange")
        now = utcnow().replace(microsecond=0)
        donation = Donation(
            id=uuid.uuid4(),
            target_id=target.id,
            target_account=await self.target_account(session, target),
            donor_user_id=subject.user_id,
            channel=DonationChannel.wechatpay.value,
            status=DonationStatus.pending.value,
            amount_fen=amount,
            meals=payload.meals
            if payload.meals is not None
            else (amount // unit if amount % unit == 0 else None),
            refunded_fen=0,
            anonymous=payload.anonymous,
            display_name=payload.display_name,
            message=payload.message,
            out_trade_no=mint_out_trade_no(now),
            created_at=utcnow(),  # the request's own time, not the transaction's (list order)
            expires_at=now + timedelta(minutes=get_settings().WECHATPAY_ORDER_EXPIRE_MINUTES),
        )
        await release_connection(session)
        donation.prepay_id = await self._prepay(gateway, donation, target, subject.openid)
        donation.prepay_at = now
        claim = await idempotency.claim(
            session, scope="donation", owner=owner, key=key, digest=digest, resource_id=donation.id
        )
        if claim.existing_id is not None:  # a request with the same key claimed it meanwhile
            return await self._replay(session, gateway, subject, claim, target)
        await repo.add(donation)
        await session.refresh(donation)
        return await self._created(session, gateway, donation, target, subject.openid, fresh=True)

    async def _replay(
        self,
        session: AsyncSession,
        gateway: WeChatPayGateway,
        subject: Subject,
        claim: idempotency.Claim,
        target: DonationTarget,
    ) -> DonationCreated:
        assert claim.existing_id is not None
        existing = await DonationRepository(session).get_for_donor(claim.existing_id, subject.user_id)
        if existing is None:
            raise _not_found()
        return await self._created(session, gateway, existing, target, subject.openid)

    async def _created(
        self,
        session: AsyncSession,
        gateway: WeChatPayGateway,
        donation: Donation,
        target: DonationTarget,
        openid: str,
        *,
        fresh: bool = False,
    ) -> DonationCreated:
        pay_params = None
        now = utcnow()
        if donation.status == DonationStatus.pending and donation.expires_at and donation.expires_at > now:
            if not fresh and (donation.prepay_at is None or now - donation.prepay_at > PREPAY_REUSE):
                # same out_trade_no, identical parameters → WeChat Pay hands out a fresh prepay_id; asked with
                # no connection held, as for a new order (only reads came before)
                await release_connection(session)
                donation.prepay_id = await self._prepay(gateway, donation, target, openid)
                donation.prepay_at = now
                await session.flush()
            assert donation.prepay_id
            pay_params = PayParams(**gateway.pay_params(donation.prepay_id))
        base = await self.view(session, donation)
        return DonationCreated(**base.model_dump(), pay_params=pay_params)

    async def get_for_donor(
        self, session: AsyncSession, subject: Subject, donation_id: uuid.UUID
    ) -> DonationOut:
        donation = await DonationRepository(session).get_for_donor(donation_id, subject.user_id)
        if donation is None:
            raise _not_found()
        return await self.view(session, donation)

    async def list_for_donor(
        self, session: AsyncSession, subject: Subject, cursor: str | None, limit: int
    ) -> Page[DonationOut]:
        after = None
        after = decode_cursor_as(cursor, lambda raw: (datetime.fromisoformat(raw["t"]), uuid.UUID(raw["id"])))
        rows = await DonationRepository(session).list_for_donor(subject.user_id, after=after, limit=limit + 1)
        items = [await self.view(session, d) for d in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor({"t": last.created_at.isoformat(), "id": str(last.id)})
        return Page[DonationOut](items=items, next_cursor=next_cursor)

    # ---------------------------------------------------------------- payment

    async def complete_payment(
        self,
        session: AsyncSession,
        donation: Donation,
        *,
        source: str,
        external_ref: str,
        paid_at: datetime,
    ) -> bool:
        """Mark a locked donation paid, post it to the ledger and emit the feed event, all in the caller's
        transaction; the receipt number follows right after the commit (``number_receipts``). False (and
        nothing changes) when it is already paid."""
        done = await self.complete_payments(
            session, [PaymentCompletion(donation, source=source, external_ref=external_ref, paid_at=paid_at)]
        )
        return done[0]

    async def complete_payments(self, session: AsyncSession, items: list[PaymentCompletion]) -> list[bool]:
        """``complete_payment`` for a batch of locked donations, in the order given (a donation that appears
        twice is paid by the first): the donations' UPDATE, the ledger's batch, the feed events and the
        receipt poke cost a few statements per batch, not per payment."""
        done: list[PaymentCompletion] = []
        paying: set[uuid.UUID] = set()
        for item in items:
            donation = item.donation
            if (
                donation.status not in (DonationStatus.pending, DonationStatus.closed)
                or donation.id in paying
            ):
                continue
            paying.add(donation.id)
            done.append(item)
        if not done:
            return [False] * len(items)
        await session.flush()  # whatever the caller changed first (nothing, for a batch of notifications)
        repo = DonationRepository(session)
        targets = {item.donation.target_id: item.target for item in done if item.target is not None}
        read = await repo.targets_by_ids({item.donation.target_id for item in done if item.target is None})
        targets.update({target_id: TargetLabel(t.title, t.kind) for target_id, t in read.items()})
        await repo.mark_paid(
            [
                (
                    item.donation,
                    item.paid_at,
                    item.external_ref if item.source == "wechatpay" else None,
                    {
                        "donor": donor_label(item.donation),
                        "amount_fen": item.donation.amount_fen,
                        "meals": item.donation.meals,
                        "target": targets[item.donation.target_id].title,
                        "target_kind": targets[item.donation.target_id].kind,
                        "channel": item.donation.channel,
                    },
                )
                for item in done
            ]
        )
        # the ledger last: it ends with the UPDATE of the receiving pools, locked from there to the commit
        await ledger_service.record_donation_payments(
            session,
            [
                DonationPayment(
                    donation_id=item.donation.id,
                    target_account=item.donation.target_account,
                    amount_fen=item.donation.amount_fen,
                    source=item.source,
                    external_ref=item.external_ref,
                    paid_at=item.paid_at,
                )
                for item in done
            ],
            unpaid_and_locked=True,  # every item's donation is locked by the caller and was seen unpaid above
        )
        receipts.after_commit_of(session)
        paid_lines = [
            {
                "donation_id": str(item.donation.id),
                "out_trade_no": item.donation.out_trade_no,
                "source": item.source,
                "transaction_id": item.external_ref,
                "amount_fen": item.donation.amount_fen,
            }
            for item in done
        ]

        async def log_paid(_: AsyncSession) -> None:
            for fields in paid_lines:
                log.info("donation_paid", **fields)

        # once the payments are kept: a batch that fails at its commit, and is then applied one notification
        # at a time, must not have logged them as paid the first time
        after_commit(session, f"donations.paid_log:{id(paid_lines)}", log_paid)
        paid = {id(item) for item in done}
        return [id(item) in paid for item in items]

    async def check_pending(
        self,
        session: AsyncSession,
        gateway: WeChatPayGateway,
        *,
        now: datetime | None = None,
        min_age: timedelta = timedelta(minutes=2),
        limit: int = 100,
        close_expired: bool = True,
    ) -> dict[str, int]:
        """Query WeChat Pay for unpaid orders whose notification has not come: complete the paid ones, close
        the expired ones.

        WeChat Pay is asked with no connection held and no row locked: a notification for one of these orders
        must not wait behind this job's queries of the others (up to ``limit`` of them, each up to the WeChat
        timeout). So the candidates are read, the connection is given back (``release_connection``), every
        order is queried (and an expired one closed at WeChat Pay), and then what came back is applied in the
        job's one writing transaction: each donation locked and looked at again first. One that changed
        meanwhile (its notification came, another run closed it) is left as it is; one whose row another
        transaction holds (its notification being applied) is left to that transaction."""
        from app.payments.service import parse_success_time, transaction_matches

        now = now or utcnow()
        counts = {"checked": 0, "completed": 0, "closed": 0, "errors": 0}
        repo = DonationRepository(session)
        candidates = await repo.pending_to_check(created_before=now - min_age, limit=limit)
        await release_connection(session)
        paid: list[tuple[Donation, dict[str, Any]]] = []
        expired: list[Donation] = []
        for donation in candidates:
            counts["checked"] += 1
            assert donation.out_trade_no
            try:
                order = await gateway.query_order(donation.out_trade_no)
                if order and order.get("trade_state") in ("SUCCESS", "REFUND"):
                    problem = transaction_matches(gateway, donation, order)
                    if problem:
                        log.error("poll_mismatch", donation_id=str(donation.id), problem=problem)
                        counts["errors"] += 1
                        continue
                    paid.append((donation, order))
                elif close_expired and donation.expires_at is not None and donation.expires_at <= now:
                    if order is not None and order.get("trade_state") != "CLOSED":
                        try:
                            await gateway.close_order(donation.out_trade_no)
                        except WeChatPayError as exc:
                            if exc.code == "ORDERPAID":  # paid at the last second: next run completes it
                                continue
                            if exc.code != "ORDER_NOT_EXIST":
                                raise
                    expired.append(donation)
            except (WeChatUnavailable, WeChatPayError) as exc:
                counts["errors"] += 1
                log.warning("poll_failed", donation_id=str(donation.id), error=str(exc))
        if not paid and not expired:
            return counts
        locked = await repo.lock_unless_busy([d.id for d, _ in paid] + [d.id for d in expired])
        completions = [
            PaymentCompletion(
                locked[donation.id],
                source="wechatpay",
                external_ref=str(order["transaction_id"]),
                paid_at=parse_success_time(order.get("success_time")),
            )
            for donation, order in paid
            if donation.id in locked
        ]
        if completions:  # complete_payments passes over a donation that is no longer pending or closed
            counts["completed"] += sum(await self.complete_payments(session, completions))
        for donation in expired:
            current = locked.get(donation.id)
            if current is not None and current.status == DonationStatus.pending:
                current.status = DonationStatus.closed.value
                current.closed_at = now
                counts["closed"] += 1
        return counts

    async def check_refunds(
        self,
        session: AsyncSession,
        gateway: WeChatPayGateway,
        *,
        now: datetime | None = None,
        min_age: timedelta = timedelta(minutes=5),
        limit: int = 100,
    ) -> dict[str, int]:
        """Query WeChat Pay for approved refunds whose outcome has not come (a refund notification lost, say)
        and finish those it has decided, as their notification would have.

        As for orders, WeChat Pay is asked with no connection held and no row locked; each refund is then
        locked and looked at again, skipping one another transaction holds (its notification being applied).
        A refund WeChat Pay does not know yet is left to its submission job (and the outbox's relay)."""
        now = now or utcnow()
        counts = {"checked": 0, "completed": 0, "errors": 0}
        repo = DonationRepository(session)
        candidates = [
            (r.id, r.out_refund_no)
            for r in await repo.refunds_to_check(decided_before=now - min_age, limit=limit)
        ]
        await release_connection(session)
        answers: list[tuple[uuid.UUID, dict[str, Any]]] = []
        for refund_id, out_refund_no in candidates:
            counts["checked"] += 1
            try:
                result = await gateway.query_refund(out_refund_no)
            except (WeChatUnavailable, WeChatPayError) as exc:
                counts["errors"] += 1
                log.warning("refund_poll_failed", refund_id=str(refund_id), error=str(exc))
                continue
            if result is not None:
                answers.append((refund_id, result))
        if not answers:
            return counts
        locked = await repo.lock_refunds_unless_busy([refund_id for refund_id, _ in answers])
        for refund_id, result in answers:
            refund = locked.get(refund_id)
            if refund is not None and await self.record_refund_answer(session, refund, result):
                counts["completed"] += 1
        return counts

    # ---------------------------------------------------------------- receipts

    @overload
    async def number_receipts(self, session: AsyncSession, *, wait: Literal[True] = True) -> int: ...

    @overload
    async def number_receipts(self, session: AsyncSession, *, wait: bool) -> int | None: ...

    async def number_receipts(self, session: AsyncSession, *, wait: bool = True) -> int | None:
        """Give every paid donation that has none its receipt number, ``SY<year><8 digits>``, gap-free per
        year, in the order payments commit (by payment time within a batch). One numberer at a time (a
        transaction-scoped lock held to the caller's commit); with ``wait=False``, None at once when another
        transaction is numbering. The year's counter row is touched once per batch, here and nowhere else, so
        no payment waits for it."""
        repo = DonationRepository(session)
        if not await repo.lock_receipts(wait=wait):
            return None
        numbered = 0
        while True:
            pending = await repo.receipts_pending(limit=1000)
            if not pending:
                return numbered
            by_year: dict[int, list[uuid.UUID]] = {}
            for donation_id, paid_at in pending:
                by_year.setdefault(paid_at.astimezone(SHANGHAI).year, []).append(donation_id)
            rows: list[tuple[uuid.UUID, int, int]] = []
            for year, ids in sorted(by_year.items()):
                last = await repo.advance_receipt_counter(year, len(ids))
                first = last - len(ids) + 1
                rows += [(donation_id, year, first + i) for i, donation_id in enumerate(ids)]
            await repo.set_receipts(rows)
            numbered += len(rows)
            if len(pending) < 1000:
                return numbered

    async def _with_receipt(
        self, session: AsyncSession, donation: Donation, *, wait: bool = True
    ) -> Donation:
        """A paid donation read in the moment between its payment and its numbering gets its number now.
        ``wait=False`` (plain views): when the numberer is busy, the view shows no number yet rather than wait."""
        pending = donation.paid_at is not None and donation.receipt_no is None
        if pending and await self.number_receipts(session, wait=wait) is not None:
            await session.refresh(donation)
        return donation

    async def receipt(self, session: AsyncSession, subject: Subject, donation_id: uuid.UUID) -> ReceiptOut:
        repo = DonationRepository(session)
        donation = await repo.get_for_donor(donation_id, subject.user_id)
        if donation is None:
            raise _not_found()
        donation = await self._with_receipt(session, donation)
        if donation.receipt_no is None or donation.paid_at is None:
            raise Conflict("这笔捐赠还没有支付成功，暂时没有收据", code="DonationNotPaid")
        target = await repo.get_target_by_id(donation.target_id)
        assert target is not None
        invoice = await repo.get_invoice_request(donation.id)
        return ReceiptOut(
            receipt_no=donation.receipt_no,
            donation_id=donation.id,
            donor=donor_label(donation),
            amount_fen=donation.amount_fen,
            amount_yuan=fen_to_yuan_text(donation.amount_fen),
            target_title=target.title,
            channel=donation.channel,
            paid_at=donation.paid_at,
            refunded_fen=donation.refunded_fen,
            issuer=ISSUER,
            invoice_requested=invoice is not None,
        )

    async def request_invoice(
        self, session: AsyncSession, subject: Subject, donation_id: uuid.UUID, payload: InvoiceRequestIn
    ) -> InvoiceRequestOut:
        repo = DonationRepository(session)
        donation = await repo.get_for_donor(donation_id, subject.user_id, lock=True)
        if donation is None:
            raise _not_found()
        donation = await self._with_receipt(session, donation)
        if donation.receipt_no is None:
            raise Conflict("这笔捐赠还没有支付成功，不能申请捐赠票据", code="DonationNotPaid")
        if await repo.get_invoice_request(donation.id) is not None:
            raise Conflict("这笔捐赠已经申请过捐赠票据", code="InvoiceAlreadyRequested")
        context = "donation_invoice"
        request = DonationInvoiceRequest(
            donation_id=donation.id,
            donor_type=payload.donor_type,
            name_enc=encrypt_pii(payload.name, context=f"{context}.name"),
            tax_id_enc=encrypt_pii(payload.tax_id.upper(), context=f"{context}.tax_id"),
            email_enc=encrypt_pii(payload.email, context=f"{context}.email") if payload.email else None,
            status="requested",
        )
        await repo.add(request)
        return InvoiceRequestOut(
            donation_id=donation.id,
            donor_type=payload.donor_type,
            name_masked=mask_name(payload.name),
            tax_id_masked=mask_id_number(payload.tax_id.upper()),
            status="requested",
        )

    # ---------------------------------------------------------------- refunds

    @staticmethod
    def refund_view(refund: DonationRefund) -> RefundOut:
        return RefundOut(
            id=refund.id,
            donation_id=refund.donation_id,
            amount_fen=refund.amount_fen,
            reason=refund.reason,
            status=refund.status,
            out_refund_no=refund.out_refund_no,
            created_at=refund.created_at,
            decided_at=refund.decided_at,
            succeeded_at=refund.succeeded_at,
            failure_reason=refund.failure_reason,
        )

    async def refunds_for_donor(
        self, session: AsyncSession, subject: Subject, donation_id: uuid.UUID
    ) -> list[RefundOut]:
        """The refund requests of one of the donor's donations, newest first (another person's: 404)."""
        repo = DonationRepository(session)
        if await repo.get_for_donor(donation_id, subject.user_id) is None:
            raise _not_found()
        return [self.refund_view(r) for r in await repo.refunds_of_donation(donation_id)]

    async def list_refunds(
        self, session: AsyncSession, *, status: RefundStatus | None, cursor: str | None, limit: int
    ) -> Page[RefundOut]:
        """Staff's queue: every refund request, newest first, optionally of one status."""
        after = decode_cursor_as(cursor, lambda raw: (datetime.fromisoformat(raw["t"]), uuid.UUID(raw["id"])))
        rows = await DonationRepository(session).list_refunds(
            status=status.value if status else None, after=after, limit=limit + 1
        )
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor({"t": last.created_at.isoformat(), "id": str(last.id)})
        return Page[RefundOut](items=[self.refund_view(r) for r in rows[:limit]], next_cursor=next_cursor)

    async def _refundable(self, session: AsyncSession, donation: Donation) -> int:
        return await ledger_service.refundable_fen(session, donation_id=donation.id)

    async def request_refund(
        self, session: AsyncSession, subject: Subject, donation_id: uuid.UUID, payload: RefundRequestIn
    ) -> RefundOut:
        repo = DonationRepository(session)
        donation = await repo.get_for_donor(donation_id, subject.user_id, lock=True)
        if donation is None:
            raise _not_found()
        if donation.status not in (DonationStatus.paid, DonationStatus.partially_refunded):
            raise Conflict("只有支付成功、尚未全部退款的捐赠才能申请退款", code="DonationNotRefundable")
        if await repo.open_refund(donation.id) is not None:
            raise Conflict("这笔捐赠已有一个退款申请在处理中", code="RefundAlreadyOpen")
        refundable = await self._refundable(session, donation)
        amount = payload.amount_fen if payload.amount_fen is not None else refundable
        if refundable <= 0:
            raise Conflict("这笔捐赠已经全部用于长者用餐，没有可退的金额", code="NothingRefundable")
        if amount > refundable:
            raise Conflict(
                f"最多可退 {fen_to_yuan_text(refundable)} 元（已用于长者用餐的部分不能退）",
                code="RefundExceedsRemainder",
                detail={"refundable_fen": refundable},
            )
        refund = DonationRefund(
            id=uuid.uuid4(),
            donation_id=donation.id,
            amount_fen=amount,
            reason=payload.reason.strip(),
            status=RefundStatus.requested.value,
            out_refund_no="RF" + uuid.uuid4().hex.upper()[:30],
            requested_by_user_id=subject.user_id,
        )
        await repo.add(refund)
        await session.refresh(refund)
        return self.refund_view(refund)

    async def approve_refund(
        self, session: AsyncSession, admin: Subject, refund_id: uuid.UUID, note: str
    ) -> RefundOut:
        """Admin approval: reserve the refund in the ledger, so the money cannot be spent on meals meanwhile.
        A WeChat Pay refund is then ``processing``: a job asks WeChat Pay once this transaction has committed
        (``submit_refund``), so no lock is held while WeChat Pay answers. A bank transfer is recorded as made
        (the admin has sent the money back by bank)."""
        repo = DonationRepository(session)
        refund = await repo.get_refund(refund_id, lock=True)
        if refund is None:
            raise NotFound("找不到这个退款申请", code="RefundNotFound")
        if refund.status != RefundStatus.requested:
            raise Conflict("这个退款申请已经处理过了", code="RefundAlreadyDecided")
        donation = await repo.get(refund.donation_id, lock=True)
        assert donation is not None
        refundable = await self._refundable(session, donation)
        if refund.amount_fen > refundable:
            raise Conflict(
                f"最多可退 {fen_to_yuan_text(refundable)} 元，申请金额超过了尚未使用的部分",
                code="RefundExceedsRemainder",
                detail={"refundable_fen": refundable},
            )
        now = utcnow()
        refund.decided_by_user_id = admin.user_id
        refund.decided_at = now
        refund.decision_note = note or None
        if donation.channel == DonationChannel.wechatpay:
            from app.donations.tasks import submit_refund
            from app.worker import enqueue

            refund.status = RefundStatus.processing.value
            enqueue(session, submit_refund, str(refund.id))
        else:
            await self._finish_refund(session, refund, donation, now)
        await session.flush()
        await audit.record(
            session,
            actor_user_id=admin.user_id,
            actor_label=admin.label,
            action="donation.refund.approve",
            target_type="donation_refund",
            target_id=refund.id,
            before={"status": RefundStatus.requested.value},
            after={"status": refund.status, "amount_fen": refund.amount_fen, "note": note},
            channel="self",
        )
        # the pool's row is locked from here to the commit: the ledger goes last
        await ledger_service.record_donation_refund(
            session,
            donation_id=donation.id,
            refund_id=refund.id,
            amount_fen=refund.amount_fen,
            source=donation.channel,
            external_ref=refund.out_refund_no,
        )
        await session.refresh(refund)
        return self.refund_view(refund)

    async def submit_refund(
        self, session: AsyncSession, gateway: WeChatPayGateway, refund_id: uuid.UUID
    ) -> str:
        """The job after an approval: ask WeChat Pay to make the refund, with no row locked and no connection
        held while it answers, then record its answer in a transaction of its own.

        - accepted: the refund keeps ``processing`` with WeChat Pay's refund id (and is finished at once if
          WeChat Pay says it already succeeded); the refund notification completes it;
        - refused (a 4xx business error, e.g. the order was never paid or is too old): the refund is ``failed``
          with WeChat Pay's message, and its reservation goes back to the pool;
        - WeChat Pay unreachable, a 5xx, or "too frequent": the job fails and is run again (WeChat Pay keys the
          refund by ``out_refund_no``, so asking twice makes one refund).

        Returns what happened: ``accepted``, ``refused`` or ``nothing`` (already submitted, or decided
        meanwhile)."""
        repo = DonationRepository(session)
        refund = await repo.get_refund(refund_id)
        if refund is None or refund.status != RefundStatus.processing or refund.wechat_refund_id:
            return "nothing"
        donation = await repo.get(refund.donation_id)
        assert donation is not None and donation.out_trade_no
        out_trade_no, out_refund_no = donation.out_trade_no, refund.out_refund_no
        amount_fen, total_fen = refund.amount_fen, donation.amount_fen
        reason = refund.reason or "捐赠人申请退款"
        await release_connection(session)
        try:
            result = await gateway.refund(
                out_trade_no=out_trade_no,
                out_refund_no=out_refund_no,
                refund_fen=amount_fen,
                total_fen=total_fen,
                reason=reason,
            )
        except WeChatPayError as exc:
            if exc.status == 429 or exc.code in RETRYABLE_REFUND_ERRORS:
                raise WeChatUnavailable(
                    "微信支付暂时不能受理退款，稍后重试", detail={"code": exc.code}
                ) from exc
            return await self._refund_refused(session, refund_id, exc)
        refund = await repo.get_refund(refund_id, lock=True)
        assert refund is not None
        await self.record_refund_answer(session, refund, result)
        return "accepted"

    async def _refund_refused(self, session: AsyncSession, refund_id: uuid.UUID, exc: WeChatPayError) -> str:
        repo = DonationRepository(session)
        refund = await repo.get_refund(refund_id, lock=True)
        if refund is None or refund.status != RefundStatus.processing or refund.wechat_refund_id:
            return "nothing"
        donation = await repo.get(refund.donation_id, lock=True)
        assert donation is not None
        log.warning("refund_refused", refund_id=str(refund.id), code=exc.code, status=exc.status)
        await self._fail_refund(
            session,
            refund,
            donation,
            reason=f"微信支付拒绝了退款：{exc.message or exc.code}"[:200],
            release=True,
            detail={"code": exc.code},
        )
        return "refused"

    async def _fail_refund(
        self,
        session: AsyncSession,
        refund: DonationRefund,
        donation: Donation,
        *,
        reason: str,
        release: bool,
        detail: dict[str, Any],
    ) -> None:
        """Mark a refund that will not be paid, audited; with ``release`` its reservation goes back to the
        pool (the ledger last, as everywhere money goes into a pool)."""
        refund.status = RefundStatus.failed.value
        refund.failure_reason = reason
        await session.flush()
        await audit.record(
            session,
            actor_user_id=None,
            actor_label="微信支付",
            action="donation.refund.fail",
            target_type="donation_refund",
            target_id=refund.id,
            before={"status": RefundStatus.processing.value},
            after={"status": refund.status, "reason": reason, "released": release, **detail},
            channel="system",
        )
        if release:
            await ledger_service.release_donation_refund(
                session,
                donation_id=donation.id,
                refund_id=refund.id,
                amount_fen=refund.amount_fen,
                source=donation.channel,
                external_ref=refund.out_refund_no,
            )

    async def reject_refund(
        self, session: AsyncSession, admin: Subject, refund_id: uuid.UUID, note: str
    ) -> RefundOut:
        repo = DonationRepository(session)
        refund = await repo.get_refund(refund_id, lock=True)
        if refund is None:
            raise NotFound("找不到这个退款申请", code="RefundNotFound")
        if refund.status != RefundStatus.requested:
            raise Conflict("这个退款申请已经处理过了", code="RefundAlreadyDecided")
        refund.status = RefundStatus.rejected.value
        refund.decided_by_user_id = admin.user_id
        refund.decided_at = utcnow()
        refund.decision_note = note or None
        await session.flush()
        await audit.record(
            session,
            actor_user_id=admin.user_id,
            actor_label=admin.label,
            action="donation.refund.reject",
            target_type="donation_refund",
            target_id=refund.id,
            before={"status": "requested"},
            after={"status": "rejected", "note": note},
            channel="self",
        )
        await session.refresh(refund)
        return self.refund_view(refund)

    async def _finish_refund(
        self, session: AsyncSession, refund: DonationRefund, donation: Donation, at: datetime
    ) -> None:
        refund.status = RefundStatus.succeeded.value
        refund.succeeded_at = at
        donation.refunded_fen += refund.amount_fen
        donation.status = (
            DonationStatus.refunded.value
            if donation.refunded_fen >= donation.amount_fen
            else DonationStatus.partially_refunded.value
        )
        await session.flush()
        target = await DonationRepository(session).get_target_by_id(donation.target_id)
        assert target is not None
        await DonationRepository(session).add_feed_event(
            "donation_refunded",
            {
                "donor": donor_label(donation),
                "amount_fen": refund.amount_fen,
                "target": target.title,
                "target_kind": target.kind,
            },
            at,
        )

    async def record_refund_answer(
        self,
        session: AsyncSession,
        refund: DonationRefund,
        answer: Mapping[str, Any],
        *,
        status: str | None = None,
    ) -> bool:
        """WeChat Pay's word on a locked refund (its answer to the submission or to a query, or the refund
        notification, whose ``status`` is given): keep WeChat Pay's refund id if the refund has none yet (the
        job may not have heard the answer), and finish the refund if the status is final
        (``complete_refund``). True if it was finished now."""
        from app.payments.service import parse_success_time

        wechat_id = answer.get("refund_id")
        if refund.wechat_refund_id is None and isinstance(wechat_id, str) and wechat_id:
            refund.wechat_refund_id = wechat_id[:32]
        status = status or answer.get("status")
        if status not in FINAL_REFUND_STATES:
            return False
        return await self.complete_refund(
            session, refund, status=str(status), succeeded_at=parse_success_time(answer.get("success_time"))
        )

    async def complete_refund(
        self, session: AsyncSession, refund: DonationRefund, *, status: str, succeeded_at: datetime
    ) -> bool:
        """WeChat Pay's refund notification (or its answer) reached a final state. False if already final.

        ``SUCCESS`` finishes it. ``CLOSED``: WeChat Pay will not pay it, so its reservation goes back to the
        pool. ``ABNORMAL`` (the donor's card was closed, say): WeChat Pay still holds the money for the donor
        and staff finish the refund in the merchant platform, so the reservation stays; the refund is marked
        failed with that reason for staff and reconciliation to see."""
        if refund.status != RefundStatus.processing:
            return False
        donation = await DonationRepository(session).get(refund.donation_id, lock=True)
        assert donation is not None
        if status == "SUCCESS":
            await self._finish_refund(session, refund, donation, succeeded_at)
        elif status == "CLOSED":
            await self._fail_refund(
                session,
                refund,
                donation,
                reason="微信支付关闭了这笔退款，款项已退回资金池",
                release=True,
                detail={"refund_status": status},
            )
        else:
            await self._fail_refund(
                session,
                refund,
                donation,
                reason="退款异常（如银行卡已注销），需工作人员在微信支付商户平台处理；款项仍为这笔退款保留",
                release=False,
                detail={"refund_status": status},
            )
            log.error("refund_abnormal", refund_id=str(refund.id), status=status)
        return True

    # ---------------------------------------------------------------- offline (bank transfer)

    async def record_offline(
        self, session: AsyncSession, admin: Subject, payload: OfflineDonationIn
    ) -> DonationOut:
        repo = DonationRepository(session)
        target = await repo.get_target(payload.target_code)
        if target is None:
            raise _target_not_found()
        if await repo.voucher_exists(payload.voucher_no):
            raise Conflict("这个银行凭证号已经登记过了", code="VoucherAlreadyRecorded")
        paid_at = shanghai_datetime(payload.paid_on, datetime.min.time().replace(hour=12))
        if paid_at > utcnow() + timedelta(days=1):
            raise Unprocessable("到账日期不能晚于今天", code="PaidOnInFuture")
        unit = get_settings().MEAL_UNIT_FEN
        donation = Donation(
            id=uuid.uuid4(),
            target_id=target.id,
            target_account=await self.target_account(session, target),
            donor_user_id=None,
            channel=DonationChannel.bank.value,
            status=DonationStatus.pending.value,
            amount_fen=payload.amount_fen,
            meals=payload.amount_fen // unit if payload.amount_fen % unit == 0 else None,
            refunded_fen=0,
            anonymous=payload.anonymous,
            display_name=payload.display_name,
            message=payload.message,
            voucher_no=payload.voucher_no,
            recorded_by_user_id=admin.user_id,
        )
        try:
            async with session.begin_nested():  # two admins entering the same voucher at once
                await repo.add(donation)
        except IntegrityError as exc:
            raise Conflict("这个银行凭证号已经登记过了", code="VoucherAlreadyRecorded") from exc
        await self.complete_payment(
            session, donation, source="bank", external_ref=payload.voucher_no, paid_at=paid_at
        )
        await audit.record(
            session,
            actor_user_id=admin.user_id,
            actor_label=admin.label,
            action="donation.offline.record",
            target_type="donation",
            target_id=donation.id,
            after={
                "amount_fen": donation.amount_fen,
                "voucher_no": donation.voucher_no,
                "target": target.code,
                "display_name": donation.display_name,
            },
            channel="self",
        )
        await session.refresh(donation)
        return await self.view(session, donation)


donation_service = DonationService()


async def _number_without_waiting(session: AsyncSession) -> int | None:
    return await donation_service.number_receipts(session, wait=False)


# Numbers receipts shortly after the payments commit (see app/kit/background.py).
receipts = PostCommitBatch("donations.receipts", _number_without_waiting)
