"""Monthly charity settlement per canteen and the government subsidy claim report (DESIGN 3.7).

A statement is built from served meals whose charity hold was posted (pool → ``payable:canteen:<id>``) in the
month (Asia/Shanghai service dates): one line per meal, amount = what the hold paid. Drafting is idempotent per
canteen and month: it refreshes the one draft, and never touches a confirmed or paid statement; meals served
after a statement was confirmed go on a supplementary statement (next ``seq``). Paying a confirmed statement
posts ``payable:canteen:<id> +X / bank −X`` under the business key ``settlement:<id>:paid``.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth.subject import Subject
from app.exceptions import BadRequest, Conflict, Forbidden, NotFound
from app.feed.service import feed_service
from app.kit.pagination import Page, decode_cursor_as, encode_cursor
from app.kit.time import business_date, utcnow
from app.ledger.service import Posting, canteen_payable, ledger_service
from app.models import Canteen, Settlement
from app.models.settlement import SettlementStatus
from app.settlements.export import yuan
from app.settlements.repository import MealRepository
from app.settlements.schemas import (
    DraftResult,
    SettlementDetail,
    SettlementLineOut,
    SettlementOut,
    SubsidyClaimReport,
    SubsidyClaimRow,
)

SLOT_NAMES = {"breakfast": "早餐", "lunch": "午餐", "dinner": "晚餐"}
STATUS_NAMES = {"draft": "草稿", "confirmed": "已确认", "paid": "已支付"}


def today() -> date:
    """The settlement clock (tests move it)."""
    return business_date()


def month_range(month: str) -> tuple[date, date]:
    """``YYYY-MM`` → [first day, first day of the next month)."""
    try:
        year, mon = (int(p) for p in month.split("-"))
        start = date(year, mon, 1)
    except (ValueError, TypeError) as exc:
        raise BadRequest("月份格式应为 YYYY-MM", code="InvalidMonth", detail={"month": month}) from exc
    end = date(year + (mon == 12), mon % 12 + 1, 1)
    return start, end


def previous_month(today: date | None = None) -> str:
    first = (today or business_date()).replace(day=1)
    return f"{first.year - (first.month == 1)}-{(first.month - 2) % 12 + 1:02d}"


def _not_found() -> NotFound:
    return NotFound("找不到这份结算单", code="SettlementNotFound")


def _out(s: Settlement, canteen: Canteen) -> SettlementOut:
    return SettlementOut(
        id=s.id,
        canteen_id=s.canteen_id,
        canteen_code=canteen.code,
        canteen_name=canteen.name,
        district_code=canteen.district_code,
        month=s.month,
        seq=s.seq,
        status=s.status,
        meals=s.meals,
        amount_fen=s.amount_fen,
        drafted_at=s.drafted_at,
        confirmed_at=s.confirmed_at,
        paid_at=s.paid_at,
        voucher_no=s.voucher_no,
        entry_id=s.entry_id,
    )


def _snapshot(s: Settlement) -> dict[str, Any]:
    return {
        "month": s.month,
        "seq": s.seq,
        "status": s.status,
        "meals": s.meals,
        "amount_fen": s.amount_fen,
        "voucher_no": s.voucher_no,
    }


class SettlementService:
    # ------------------------------------------------------------ drafting

    async def draft_month(self, session: AsyncSession, month: str, *, actor: Subject | None) -> DraftResult:
        start, _ = month_range(month)
        if start > today():
            raise BadRequest("这个月份还没有开始，不能结算", code="MonthInFuture", detail={"month": month})
        repo = MealRepository(session)
        drafted: list[SettlementOut] = []
        unchanged = 0
        for canteen_id in await repo.canteens_with_unsettled_meals(*month_range(month)):
            result = await self._draft_canteen(session, canteen_id, month, actor=actor)
            if result is None:
                unchanged += 1
            else:
                drafted.append(result)
        return DraftResult(month=month, drafted=drafted, unchanged=unchanged)

    async def _draft_canteen(
        self, session: AsyncSession, canteen_id: uuid.UUID, month: str, *, actor: Subject | None
    ) -> SettlementOut | None:
        repo = MealRepository(session)
        await repo.lock_canteen_month(canteen_id, month)
        draft = await repo.draft_for(canteen_id, month)
        # read after the lock: meals on a statement confirmed meanwhile are no longer candidates
        meals = await repo.unsettled_meals(canteen_id, *month_range(month))
        if not meals:
            return None
        meal_count, amount = len(meals), sum(m.amount_fen for m in meals)
        now = utcnow()
        before = None
        if draft is None:
            draft = await repo.add(
                Settlement(
                    canteen_id=canteen_id,
                    month=month,
                    seq=await repo.next_seq(canteen_id, month),
                    status=SettlementStatus.draft.value,
                    meals=meal_count,
                    amount_fen=amount,
                    drafted_at=now,
                )
            )
        else:
            before = _snapshot(draft)
            draft.meals, draft.amount_fen, draft.drafted_at = meal_count, amount, now
            await session.flush()
        await repo.replace_lines(draft.id, meals)
        await audit.record(
            session,
            actor_user_id=actor.user_id if actor else None,
            actor_label=actor.label if actor else "system",
            action="settlement.draft",
            target_type="settlement",
            target_id=draft.id,
            before=before,
            after=_snapshot(draft),
            channel="api" if actor else "system",
        )
        canteen = await repo.canteen(canteen_id)
        assert canteen is not None
        return _out(draft, canteen)

    # ------------------------------------------------------------ reading

    async def _load(self, session: AsyncSession, settlement_id: uuid.UUID) -> tuple[Settlement, Canteen]:
        repo = MealRepository(session)
        settlement = await repo.get(settlement_id)
        if settlement is None:
            raise _not_found()
        canteen = await repo.canteen(settlement.canteen_id)
        assert canteen is not None
        return settlement, canteen

    async def get(self, session: AsyncSession, settlement_id: uuid.UUID) -> SettlementDetail:
        settlement, canteen = await self._load(session, settlement_id)
        repo = MealRepository(session)
        lines = await repo.lines(settlement.id)
        donors = await repo.donations_of_holds({ln.hold_id for ln in lines})
        return SettlementDetail(
            **_out(settlement, canteen).model_dump(),
            lines=[
                SettlementLineOut(
                    booking_id=ln.booking_id,
                    booking_line_id=ln.booking_line_id,
                    service_date=ln.service_date,
                    slot=ln.slot,
                    item_name=ln.item_name,
                    amount_fen=ln.amount_fen,
                    entry_id=ln.entry_id,
                    donation_ids=donors.get(ln.hold_id, []),
                )
                for ln in lines
            ],
        )

    async def list_settlements(
        self,
        session: AsyncSession,
        *,
        month: str | None,
        canteen_id: uuid.UUID | None,
        status: str | None,
        cursor: str | None,
        limit: int,
    ) -> Page[SettlementOut]:
        after = decode_cursor_as(cursor, lambda raw: (str(raw["m"]), str(raw["c"]), int(raw["s"])))
        rows = await MealRepository(session).list_settlements(
            month=month, canteen_id=canteen_id, status=status, after=after, limit=limit + 1
        )
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            s, c = page[-1]
            next_cursor = encode_cursor({"m": s.month, "c": c.code, "s": s.seq})
        return Page[SettlementOut](items=[_out(s, c) for s, c in page], next_cursor=next_cursor)

    def table(self, detail: SettlementDetail) -> list[list[Any]]:
        """The statement as rows for CSV / XLSX: a header block, then one row per meal, then the total."""
        rows: list[list[Any]] = [
            ["爱心助餐月度结算单"],
            ["食堂", detail.canteen_name, "食堂编码", detail.canteen_code, "区县", detail.district_code],
            [
                "月份",
                detail.month,
                "序号",
                detail.seq,
                "状态",
                STATUS_NAMES.get(detail.status, detail.status),
            ],
            ["结算单号", str(detail.id), "付款凭证", detail.voucher_no or ""],
            [],
            ["用餐日期", "餐次", "菜品", "爱心补贴（元）", "amount_fen", "订餐号", "记账分录"],
        ]
        for ln in detail.lines:
            rows.append(
                [
                    ln.service_date.isoformat(),
                    SLOT_NAMES.get(ln.slot, ln.slot),
                    ln.item_name,
                    yuan(ln.amount_fen),
                    ln.amount_fen,
                    str(ln.booking_id),
                    str(ln.entry_id),
                ]
            )
        rows.append(["合计", f"{detail.meals} 份", "", yuan(detail.amount_fen), detail.amount_fen, "", ""])
        return rows

    # ------------------------------------------------------------ state machine

    async def confirm(
        self, session: AsyncSession, subject: Subject, settlement_id: uuid.UUID
    ) -> SettlementOut:
        repo = MealRepository(session)
        found = await repo.get(settlement_id)
        if found is None:
            raise _not_found()
        await repo.lock_canteen_month(found.canteen_id, found.month)
        settlement = await repo.get(settlement_id, lock=True)
        assert settlement is not None
        if settlement.status == SettlementStatus.paid:
            raise Conflict("这份结算单已经付款", code="SettlementAlreadyPaid")
        if settlement.status == SettlementStatus.draft:
            before = _snapshot(settlement)
            await repo.mark(
                settlement.id,
                status=SettlementStatus.confirmed.value,
                confirmed_at=utcnow(),
                confirmed_by_id=subject.user_id,
            )
            settlement = await repo.get(settlement_id)
            assert settlement is not None
            await audit.record(
                session,
                actor_user_id=subject.user_id,
                actor_label=subject.label,
                action="settlement.confirm",
                target_type="settlement",
                target_id=settlement.id,
                before=before,
                after=_snapshot(settlement),
            )
        canteen = await repo.canteen(settlement.canteen_id)
        assert canteen is not None
        return _out(settlement, canteen)

    async def mark_paid(
        self, session: AsyncSession, subject: Subject, settlement_id: uuid.UUID, voucher_no: str
    ) -> SettlementOut:
        repo = MealRepository(session)
        settlement = await repo.get(settlement_id, lock=True)
        if settlement is None:
            raise _not_found()
        canteen = await repo.canteen(settlement.canteen_id)
        assert canteen is not None
        if settlement.status == SettlementStatus.paid:
            if settlement.voucher_no != voucher_no:
                raise Conflict(
                    "这份结算单已经付款（凭证号不同）",
                    code="SettlementAlreadyPaid",
                    detail={"voucher_no": settlement.voucher_no},
                )
            return _out(settlement, canteen)
        if settlement.status != SettlementStatus.confirmed:
            raise Conflict("结算单需要先确认，才能登记付款", code="SettlementNotConfirmed")
        payable = canteen_payable(settlement.canteen_id)
        account = (await ledger_service.balances(session, [payable])).get(payable)
        owed = 0 if account is None else -account.balance_fen
        if owed < settlement.amount_fen:
            raise Conflict(
                "食堂应付款余额不足以支付这份结算单",
                code="PayableInsufficient",
                detail={"payable_fen": owed, "amount_fen": settlement.amount_fen},
            )
        before = _snapshot(settlement)
        entry = await ledger_service.post(
            session,
            business_key=f"settlement:{settlement.id}:paid",
            kind="settlement",
            postings=[Posting(payable, settlement.amount_fen), Posting("bank", -settlement.amount_fen)],
            memo=f"{canteen.name} {settlement.month} 爱心助餐结算付款",
            refs={
                "settlement_id": str(settlement.id),
                "canteen_id": str(settlement.canteen_id),
                "month": settlement.month,
                "seq": settlement.seq,
                "voucher_no": voucher_no,
            },
        )
        now = utcnow()
        await repo.mark(
            settlement.id,
            status=SettlementStatus.paid.value,
            paid_at=now,
            paid_by_id=subject.user_id,
            voucher_no=voucher_no,
            entry_id=entry.id,
        )
        settlement = await repo.get(settlement_id)
        assert settlement is not None
        meals, amount = await repo.paid_totals(settlement.canteen_id, settlement.month)
        await feed_service.record_settlement_paid(
            session,
            canteen_id=settlement.canteen_id,
            month=settlement.month,
            amount_fen=amount,
            meals=meals,
            paid_at=now,
        )
        await audit.record(
            session,
            actor_user_id=subject.user_id,
            actor_label=subject.label,
            action="settlement.mark_paid",
            target_type="settlement",
            target_id=settlement.id,
            before=before,
            after={**_snapshot(settlement), "entry_id": str(entry.id)},
        )
        return _out(settlement, canteen)

    # ------------------------------------------------------------ government subsidy claims

    async def subsidy_claims(
        self, session: AsyncSession, subject: Subject, month: str, district: str | None
    ) -> SubsidyClaimReport:
        start, end = month_range(month)
        districts: list[str] | None
        if subject.is_admin:
            districts = [district] if district else None
        else:
            allowed = sorted(subject.civil_affairs_districts)
            if district is not None and district not in allowed:
                raise Forbidden("只能查看本区县的补贴申报", code="NotYourDistrict")
            districts = [district] if district else allowed
        rows = [
            SubsidyClaimRow(**r) for r in await MealRepository(session).subsidy_claims(start, end, districts)
        ]
        return SubsidyClaimReport(
            month=month,
            districts=districts,
            rows=rows,
            total_meals=sum(r.meals for r in rows),
            total_gov_subsidy_fen=sum(r.gov_subsidy_fen for r in rows),
        )

    def claims_table(self, report: SubsidyClaimReport) -> list[list[Any]]:
        rows: list[list[Any]] = [
            [f"{report.month} 助餐政府补贴申报（已核销餐次）"],
            [],
            [
                "区县",
                "食堂编码",
                "食堂",
                "补贴餐数",
                "政府补贴（元）",
                "gov_subsidy_fen",
                "餐费原价（元）",
                "长者自付（元）",
            ],
        ]
        for r in report.rows:
            rows.append(
                [
                    r.district_code,
                    r.canteen_code,
                    r.canteen_name,
                    r.meals,
                    yuan(r.gov_subsidy_fen),
                    r.gov_subsidy_fen,
                    yuan(r.list_price_fen),
                    yuan(r.self_pay_fen),
                ]
            )
        rows.append(
            [
                "合计",
                "",
                "",
                report.total_meals,
                yuan(report.total_gov_subsidy_fen),
                report.total_gov_subsidy_fen,
            ]
        )
        return rows


settlement_service = SettlementService()
