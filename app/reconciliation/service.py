"""Reconciliation of WeChat Pay trade bills against our donations, refunds and ledger.

One run per bill date. A run streams the bill (downloaded through the WeChat Pay adapter with its SHA1, or
uploaded) into a temporary table, checks it completely (format, amounts, summary, hash) before anything is
kept, matches it in SQL, replaces the date's open discrepancies, posts the day's WeChat fees once (a later run
with a different fee total posts only the difference), and publishes the day's status to the public feed when
it changes: "reconciled" only when no discrepancy is open.

Lock order: run row → discrepancy row → donation/refund rows → ledger chain lock (inside the ledger service).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time as clock
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import IO, Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from app.audit import service as audit
from app.exceptions import BadRequest, Conflict, NotFound
from app.kit.pagination import decode_cursor, encode_cursor, invalid_cursor
from app.kit.time import business_date, shanghai_datetime, utcnow
from app.ledger.service import Posting, account_spec, ledger_service
from app.models import ReconciliationDiscrepancy, ReconciliationRun
from app.models.reconciliation_discrepancy import DiscrepancyStatus, Resolution
from app.models.reconciliation_run import DayStatus
from app.reconciliation.parser import BillError, BillReader, BillRow
from app.reconciliation.repository import ReconciliationRepository
from app.reconciliation.schemas import (
    KINDS,
    BillOut,
    CountsOut,
    DiscrepancyOut,
    ResolveIn,
    RunDetailOut,
    RunOut,
)
from app.wechat.pay import WeChatPayError, WeChatPayGateway

log = structlog.get_logger("app.reconciliation")

FEE_ACCOUNT = "expense:wechat_fee"
CLEARING_ACCOUNT = "wechatpay_clearing"
BILL_HISTORY_DAYS = 92  # WeChat Pay serves trade bills of the last three months
CORRECTABLE_KINDS = frozenset({"asset", "expense", "external", "payable"})


@dataclass(frozen=True)
class Actor:
    """Who runs or resolves: an admin through the API, a staff member in the console, or the system job."""

    user_id: uuid.UUID | None
    label: str
    channel: str = "self"


SYSTEM = Actor(user_id=None, label="system:reconciliation.daily", channel="system")


def _run_not_found() -> NotFound:
    return NotFound("找不到这次对账", code="ReconciliationRunNotFound")


def _discrepancy_not_found() -> NotFound:
    return NotFound("找不到这条对账差异", code="DiscrepancyNotFound")


def bill_error(exc: BillError) -> BadRequest:
    detail: dict[str, Any] = {}
    if exc.line is not None:
        detail["line"] = exc.line
    return BadRequest(f"账单被拒收，没有保存任何内容：{exc.message}", code=exc.code, detail=detail or None)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = shanghai_datetime(day, time.min)
    return start, start + timedelta(days=1)


def repairable(d: ReconciliationDiscrepancy) -> bool:
    if d.status != DiscrepancyStatus.open:
        return False
    if d.kind == "missing_in_ledger" and d.out_refund_no is None:
        return d.donation_id is not None  # an order we placed whose payment we never recorded
    return d.kind == "status_mismatch" and d.refund_id is not None and d.ledger_status == "processing"


def discrepancy_view(d: ReconciliationDiscrepancy) -> DiscrepancyOut:
    return DiscrepancyOut(
        id=d.id,
        run_id=d.run_id,
        kind=d.kind,
        ref_key=d.ref_key,
        out_trade_no=d.out_trade_no,
        transaction_id=d.transaction_id,
        out_refund_no=d.out_refund_no,
        donation_id=d.donation_id,
        refund_id=d.refund_id,
        bill_line=d.bill_line,
        bill_amount_fen=d.bill_amount_fen,
        ledger_amount_fen=d.ledger_amount_fen,
        bill_status=d.bill_status,
        ledger_status=d.ledger_status,
        detail=d.detail or {},
        status=d.status,
        resolution=d.resolution,
        resolution_note=d.resolution_note,
        correction_entry_id=d.correction_entry_id,
        resolved_by=d.resolved_by,
        resolved_at=d.resolved_at,
        repairable=repairable(d),
    )


class ReconciliationService:
    # ================================================================ runs

    async def run_from_api(
        self, session: AsyncSession, gateway: WeChatPayGateway, bill_date: date, actor: Actor
    ) -> RunOut:
        """Download the date's trade bill through the adapter and reconcile it."""
        self._check_date(bill_date, downloading=True)
        try:
            info = await gateway.trade_bill(bill_date.isoformat())
        except WeChatPayError as exc:
            raise Conflict(
                f"微信支付暂时不能提供 {bill_date.isoformat()} 的账单：{exc.message or exc.code}",
                code="BillNotAvailable",
                detail={"wechat_code": exc.code},
            ) from exc
        url, hash_value = info.get("download_url"), info.get("hash_value")
        if (
            not isinstance(url, str)
            or not isinstance(hash_value, str)
            or info.get("hash_type", "SHA1") != "SHA1"
        ):
            raise Conflict("微信支付没有给出账单下载地址或 SHA1 校验值", code="BillNotAvailable")
        content = await gateway.download_bill_file(url)
        return await self.run(
            session,
            io.BytesIO(content),
            bill_date=bill_date,
            expected_sha1=hash_value,
            source="api",
            actor=actor,
        )

    def _check_date(self, bill_date: date, *, downloading: bool) -> None:
        today = business_date()
        if bill_date > today:
            raise BadRequest("账单日期不能晚于今天", code="BillDateInFuture")
        if downloading and bill_date < today - timedelta(days=BILL_HISTORY_DAYS):
            raise BadRequest("微信支付只提供三个月以内的账单，更早的请上传账单文件", code="BillTooOld")

    async def run(
        self,
        session: AsyncSession,
        stream: IO[bytes],
        *,
        bill_date: date | None,
        source: str,
        actor: Actor,
        expected_sha1: str | None = None,
    ) -> RunOut:
        """Parse ``stream`` completely into this transaction's temporary table, then reconcile. A refused bill
        raises ``BadRequest`` (the caller's transaction rolls back: nothing is kept)."""
        if bill_date is not None:
            self._check_date(bill_date, downloading=False)
        repo = ReconciliationRepository(session)
        timings: dict[str, float] = {}
        mark = clock.monotonic()

        def lap(name: str) -> None:
            nonlocal mark
            now_ = clock.monotonic()
            timings[name] = round(now_ - mark, 3)
            mark = now_

        await repo.create_bill_table()
        reader = BillReader(stream, bill_date=bill_date, expected_sha1=expected_sha1)
        batches = reader.batches()

        def next_batch() -> list[BillRow] | None:
            return next(batches, None)

        # the next batch is parsed (in a thread) while PostgreSQL takes the current one
        pending = asyncio.ensure_future(run_in_threadpool(next_batch))
        try:
            while (batch := await pending) is not None:
                pending = asyncio.ensure_future(run_in_threadpool(next_batch))
                await repo.copy_bill_rows(batch)
        except BillError as exc:
            log.warning("bill_refused", code=exc.code, line=exc.line, message=exc.message)
            raise bill_error(exc) from exc
        finally:
            # a failed COPY leaves one batch being parsed: let it finish before the stream is closed
            with contextlib.suppress(BaseException):
                await pending
        parsed = reader.result
        if parsed.bill_date is None:
            raise BadRequest("账单里没有任何交易，请同时给出账单日期 bill_date", code="BillDateRequired")
        self._check_date(parsed.bill_date, downloading=False)
        lap("parse_and_copy")
        await repo.analyze_bill_table()
        duplicate = await repo.duplicate_bill_rows()
        lap("analyze_and_duplicates")
        if duplicate is not None:
            key, first, second = duplicate
            raise bill_error(
                BillError(
                    f"第 {first} 行和第 {second} 行是同一笔交易（{key}）",
                    code="BillDuplicateRow",
                    line=second,
                )
            )

        day = parsed.bill_date
        totals = parsed.totals
        now = utcnow()
        bill_values = {
            "source": source,
            "file_sha1": parsed.sha1,
            "bill_rows": totals.rows,
            "payment_rows": totals.payment_rows,
            "refund_rows": totals.refund_rows,
            "settled_fen": totals.settled_fen,
            "refund_fen": totals.refund_fen,
            "fee_fen": totals.fee_fen,
            "order_fen": totals.order_fen,
            "last_run_at": now,
            "last_run_by": actor.label[:80],
        }
        run, created = await repo.lock_or_create_run(
            day, {**bill_values, "day_status": DayStatus.under_review.value, "run_count": 1}
        )
        before = None if created else self._audit_state(run)
        if not created:
            for key, value in bill_values.items():
                setattr(run, key, value)
            run.run_count += 1
        await repo.delete_open(run.id)
        start, end = day_bounds(day)
        lap("lock_and_clear")
        counts = await repo.classify(run.id, start, end)
        lap("match")
        run.matched_count = counts.get("matched", 0)
        for kind in KINDS:
            setattr(run, f"{kind}_count", counts.get(kind, 0))
        await self._post_fees(session, run, totals.fee_fen)
        await session.flush()
        await self._refresh_day_status(session, run)
        await audit.record(
            session,
            actor_user_id=actor.user_id,
            actor_label=actor.label,
            action="reconciliation.run",
            target_type="reconciliation_run",
            target_id=run.id,
            before=before,
            after=self._audit_state(run),
            channel=actor.channel,
        )
        lap("fees_feed_audit")
        log.info("reconciliation_run", bill_date=day.isoformat(), seconds=timings, **counts)
        return await self._view(session, run)

    @staticmethod
    def _audit_state(run: ReconciliationRun) -> dict[str, Any]:
        return {
            "bill_date": run.bill_date.isoformat(),
            "source": run.source,
            "file_sha1": run.file_sha1,
            "bill_rows": run.bill_rows,
            "matched": run.matched_count,
            **{kind: getattr(run, f"{kind}_count") for kind in KINDS},
            "fee_posted_fen": run.fee_posted_fen,
            "day_status": run.day_status,
        }

    async def _post_fees(self, session: AsyncSession, run: ReconciliationRun, fee_fen: int) -> None:
        """The day's WeChat fees: ``expense:wechat_fee +X / wechatpay_clearing −X``, once per bill date.
        A re-run with the same total posts nothing; a different total posts only the difference."""
        delta = fee_fen - run.fee_posted_fen
        if delta == 0:
            return
        day = run.bill_date.isoformat()
        key = f"wechat_fee:{day}" if run.fee_entries == 0 else f"wechat_fee:{day}:adjust:{run.fee_entries}"
        await ledger_service.post(
            session,
            business_key=key,
            kind="wechat_fee",
            postings=[Posting(FEE_ACCOUNT, delta), Posting(CLEARING_ACCOUNT, -delta)],
            memo=f"微信支付手续费 {day}" if run.fee_entries == 0 else f"微信支付手续费 {day}（账单更正）",
            refs={"bill_date": day, "reconciliation_run_id": str(run.id), "bill_fee_fen": fee_fen},
        )
        run.fee_posted_fen = fee_fen
        run.fee_entries += 1

    async def _refresh_day_status(self, session: AsyncSession, run: ReconciliationRun) -> None:
        """``reconciled`` only when nothing is open; the public feed hears about each change of status."""
        repo = ReconciliationRepository(session)
        open_count = (await repo.count_by_status(run.id)).get(DiscrepancyStatus.open.value, 0)
        run.day_status = DayStatus.reconciled.value if open_count == 0 else DayStatus.under_review.value
        if run.published_status != run.day_status:
            run.published_status = run.day_status
            await repo.add_feed_event(
                {
                    "bill_date": run.bill_date.isoformat(),
                    "status": run.day_status,
                    "bill_rows": run.bill_rows,
                    "matched": run.matched_count,
                    "open_discrepancies": open_count,
                    "amount_fen": run.settled_fen,
                    "refund_fen": run.refund_fen,
                    "fee_fen": run.fee_fen,
                },
                utcnow(),
            )
        await session.flush()

    # ================================================================ reading

    async def _view(self, session: AsyncSession, run: ReconciliationRun) -> RunOut:
        by_status = await ReconciliationRepository(session).count_by_status(run.id)
        return RunOut(
            id=run.id,
            bill_date=run.bill_date,
            source=run.source,
            day_status=run.day_status,
            run_count=run.run_count,
            last_run_at=run.last_run_at,
            last_run_by=run.last_run_by,
            bill=BillOut(
                rows=run.bill_rows,
                payment_rows=run.payment_rows,
                refund_rows=run.refund_rows,
                settled_fen=run.settled_fen,
                refund_fen=run.refund_fen,
                fee_fen=run.fee_fen,
                order_fen=run.order_fen,
                file_sha1=run.file_sha1,
            ),
            counts=CountsOut(
                matched=run.matched_count,
                amount_mismatch=run.amount_mismatch_count,
                missing_in_ledger=run.missing_in_ledger_count,
                missing_in_bill=run.missing_in_bill_count,
                status_mismatch=run.status_mismatch_count,
            ),
            open_discrepancies=by_status.get("open", 0),
            resolved_discrepancies=by_status.get("resolved", 0),
            fee_posted_fen=run.fee_posted_fen,
        )

    async def list_runs(self, session: AsyncSession, limit: int = 60) -> list[RunOut]:
        return [
            await self._view(session, r) for r in await ReconciliationRepository(session).list_runs(limit)
        ]

    async def get_run(
        self,
        session: AsyncSession,
        run_id: uuid.UUID,
        *,
        status: str | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> RunDetailOut:
        repo = ReconciliationRepository(session)
        run = await repo.get_run(run_id)
        if run is None:
            raise _run_not_found()
        after = None
        decoded = decode_cursor(cursor)
        if decoded is not None:
            k, r = decoded.get("k"), decoded.get("r")
            if not isinstance(k, str) or not isinstance(r, str):
                raise invalid_cursor()
            after = (k, r)
        rows = await repo.page_discrepancies(run.id, status=status, kind=kind, after=after, limit=limit + 1)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor({"k": rows[-1].kind, "r": rows[-1].ref_key})
        base = await self._view(session, run)
        return RunDetailOut(
            **base.model_dump(), discrepancies=[discrepancy_view(d) for d in rows], next_cursor=next_cursor
        )

    async def get_discrepancy(self, session: AsyncSession, discrepancy_id: uuid.UUID) -> DiscrepancyOut:
        d = await ReconciliationRepository(session).get_discrepancy(discrepancy_id)
        if d is None:
            raise _discrepancy_not_found()
        return discrepancy_view(d)

    # ================================================================ resolving

    async def resolve(
        self,
        session: AsyncSession,
        gateway: WeChatPayGateway | None,
        discrepancy_id: uuid.UUID,
        payload: ResolveIn,
        actor: Actor,
    ) -> DiscrepancyOut:
        repo = ReconciliationRepository(session)
        found = await repo.get_discrepancy(discrepancy_id)
        if found is None:
            raise _discrepancy_not_found()
        run = await repo.get_run(found.run_id, lock=True)  # run first: the same order as a re-run
        assert run is not None
        d = await repo.get_discrepancy(discrepancy_id, lock=True)
        if d is None:  # replaced by a re-run meanwhile
            raise _discrepancy_not_found()
        if d.status != DiscrepancyStatus.open:
            raise Conflict("这条差异已经处理过了", code="DiscrepancyAlreadyResolved")
        before = {"status": d.status, "kind": d.kind, "ref_key": d.ref_key}
        values: dict[str, Any] = {"resolution_note": payload.note, "resolved_by": actor.label[:80]}
        if payload.action == "note":
            if payload.postings:
                raise BadRequest(
                    "只写备注时不要附带记账行；要更正账目请选 ledger_entry", code="UnexpectedPostings"
                )
            values["resolution"] = Resolution.note.value
        elif payload.action == "ledger_entry":
            entry_id = await self._correct(session, d, payload)
            values.update(resolution=Resolution.ledger_entry.value, correction_entry_id=entry_id)
        else:
            if gateway is None:
                raise Conflict("现在无法连接微信支付，不能修复", code="RepairUnavailable")
            values["detail"] = {**(d.detail or {}), "repair": await self._repair(session, gateway, d)}
            values["resolution"] = Resolution.repaired.value
        values["resolved_at"] = utcnow()
        await repo.resolve(d.id, values)
        await session.flush()
        await self._refresh_day_status(session, run)
        d = await repo.get_discrepancy(discrepancy_id, lock=True)
        assert d is not None
        await audit.record(
            session,
            actor_user_id=actor.user_id,
            actor_label=actor.label,
            action="reconciliation.discrepancy.resolve",
            target_type="reconciliation_discrepancy",
            target_id=d.id,
            before=before,
            after={
                "status": d.status,
                "resolution": d.resolution,
                "note": d.resolution_note,
                "correction_entry_id": str(d.correction_entry_id) if d.correction_entry_id else None,
                "bill_date": run.bill_date.isoformat(),
                "day_status": run.day_status,
            },
            channel=actor.channel,
        )
        return discrepancy_view(d)

    async def _correct(
        self, session: AsyncSession, d: ReconciliationDiscrepancy, payload: ResolveIn
    ) -> uuid.UUID:
        if not payload.postings or len(payload.postings) < 2:
            raise BadRequest(
                "更正分录至少要有两条记账行（借方为正、贷方为负，合计为零）", code="LedgerUnbalanced"
            )
        for p in payload.postings:
            spec = account_spec(p.account)
            if spec.kind not in CORRECTABLE_KINDS:
                raise BadRequest(
                    "资金池和基金的余额只随捐赠、退款和用餐变动，不能用更正分录调整",
                    code="CorrectionAccountNotAllowed",
                    detail={"account": p.account},
                )
        entry = await ledger_service.post(
            session,
            business_key=f"reconciliation:{d.id}:correction",
            kind="reconciliation_correction",
            postings=[Posting(p.account, p.amount_fen) for p in payload.postings],
            memo=payload.note,
            refs={"discrepancy_id": str(d.id), "ref_key": d.ref_key, "kind": d.kind},
        )
        return entry.id

    async def _repair(
        self, session: AsyncSession, gateway: WeChatPayGateway, d: ReconciliationDiscrepancy
    ) -> dict[str, Any]:
        """Ask WeChat Pay and complete what it finished, through the same code as a notification would."""
        from app.donations.repository import DonationRepository

        if not repairable(d):
            raise Conflict(
                "这类差异不能自动修复（只有我们下过单、但没收到支付或退款结果的才能修复），请写备注或用更正分录处理",
                code="NotRepairable",
            )
        try:
            return await self._repair_via(session, gateway, d, DonationRepository(session))
        except WeChatPayError as exc:
            raise Conflict(
                f"微信支付拒绝了查询：{exc.message or exc.code}",
                code="RepairFailed",
                detail={"wechat_code": exc.code},
            ) from exc

    async def _repair_via(
        self, session: AsyncSession, gateway: WeChatPayGateway, d: ReconciliationDiscrepancy, repo: Any
    ) -> dict[str, Any]:
        from app.donations.service import donation_service
        from app.payments.service import parse_success_time, transaction_matches

        if d.refund_id is not None:
            assert d.out_refund_no
            refund = await repo.lock_refund_by_out_refund_no(d.out_refund_no)
            result = await gateway.query_refund(d.out_refund_no)
            if refund is None or result is None or result.get("status") != "SUCCESS":
                raise Conflict("微信支付查询不到这笔已成功的退款，不能修复", code="RepairFailed")
            done = await donation_service.complete_refund(
                session, refund, status="SUCCESS", succeeded_at=parse_success_time(result.get("success_time"))
            )
            return {"refund_status": "SUCCESS", "completed": done}
        assert d.out_trade_no
        donation = await repo.lock_by_out_trade_no(d.out_trade_no)
        order = await gateway.query_order(d.out_trade_no)
        if donation is None or order is None or order.get("trade_state") not in ("SUCCESS", "REFUND"):
            raise Conflict("微信支付查询不到这笔已支付的订单，不能修复", code="RepairFailed")
        problem = transaction_matches(gateway, donation, order)
        if problem:
            raise Conflict(
                f"微信支付的订单与我们的记录不一致（{problem}），不能自动修复，请写备注或用更正分录处理",
                code="RepairFailed",
                detail={"problem": problem},
            )
        done = await donation_service.complete_payment(
            session,
            donation,
            source="wechatpay",
            external_ref=str(order["transaction_id"]),
            paid_at=parse_success_time(order.get("success_time")),
        )
        return {
            "trade_state": order.get("trade_state"),
            "transaction_id": order["transaction_id"],
            "completed": done,
        }


reconciliation_service = ReconciliationService()
