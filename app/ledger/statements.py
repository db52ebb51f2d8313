"""Fund and pool statements for a period of Asia/Shanghai business days, derived from postings alone.

Pools and funds are credit-normal (a posting of −X is money in), so every figure here is shown the way a reader
expects: opening and closing balances as positive amounts, donations in, refunds / fees / meal subsidies out.
``closing = opening + donations − refunds − fees − meal subsidies + other`` holds by construction: every
posting of the account in the period falls in exactly one of those columns.

The general meal pool fund (乐享桑榆) is the account ``pool:general_meal``; another fund is ``fund:<id>``; a
canteen's designated pool is ``pool:canteen:<id>`` and has its own statement. Meal subsidies are broken down
by the canteen whose meals they paid.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.exceptions import BadRequest, NotFound
from app.kit.time import business_date
from app.ledger.repository import KIND_REFUND, KIND_REFUND_RELEASE, LedgerRepository
from app.ledger.schemas import CanteenSubsidies, StatementOut
from app.ledger.service import canteen_pool, fund_account

MAX_DAYS = 3660
KINDS_IN = {"donation"}
KIND_MEAL = "meal_subsidy"
KINDS_FEE = {"wechat_fee"}


def _period(date_from: date | None, date_to: date | None) -> tuple[date, date]:
    today = business_date()
    last = date_to or today
    first = date_from or last.replace(day=1)
    if first > last:
        raise BadRequest("开始日期不能晚于结束日期", code="InvalidPeriod")
    if (last - first).days > MAX_DAYS:
        raise BadRequest("查询区间最长十年", code="InvalidPeriod")
    return first, last


async def _statement(
    session: AsyncSession,
    *,
    account: str,
    kind: str,
    owner: tuple[str, str, str],
    date_from: date | None,
    date_to: date | None,
) -> StatementOut:
    first, last = _period(date_from, date_to)
    repo = LedgerRepository(session)
    opening = -await repo.account_sum_before(account, first)
    donations = refunds = fees = meals_out = other = 0
    donations_count = refunds_count = meals = 0
    by_canteen: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for entry_kind, canteen_id, total, count in await repo.account_movements(account, first, last):
        if entry_kind in KINDS_IN:
            donations -= total
            donations_count += count
        elif entry_kind == KIND_REFUND:
            refunds += total
            refunds_count += count
        elif entry_kind == KIND_REFUND_RELEASE:  # a refund that was not paid: it counts no more
            refunds += total
            refunds_count -= count
        elif entry_kind in KINDS_FEE:
            fees += total
        elif entry_kind == KIND_MEAL:
            meals_out += total
            meals += count
            by_canteen[canteen_id or ""][0] += count
            by_canteen[canteen_id or ""][1] += total
        else:
            other -= total
    closing = opening + donations - refunds - fees - meals_out + other

    ids = []
    for key in by_canteen:
        try:
            ids.append(uuid.UUID(key))
        except ValueError:
            continue
    names = await repo.canteen_names(ids)
    breakdown = []
    for key, (count, total) in sorted(by_canteen.items()):
        code, name = names.get(uuid.UUID(key), (None, None)) if key else (None, None)
        breakdown.append(
            CanteenSubsidies(
                canteen_id=key, canteen_code=code, canteen_name=name, meals=count, amount_fen=total
            )
        )
    return StatementOut(
        account=account,
        kind=kind,
        owner_id=owner[0],
        owner_code=owner[1],
        owner_name=owner[2],
        date_from=first.isoformat(),
        date_to=last.isoformat(),
        opening_fen=opening,
        donations_fen=donations,
        donations_count=donations_count,
        refunds_fen=refunds,
        refunds_count=refunds_count,
        fees_fen=fees,
        meal_subsidies_fen=meals_out,
        meals=meals,
        other_fen=other,
        closing_fen=closing,
        meal_subsidies_by_canteen=breakdown,
    )


async def fund_statement(
    session: AsyncSession, fund_id: uuid.UUID, *, date_from: date | None, date_to: date | None
) -> StatementOut:
    fund = await LedgerRepository(session).fund(fund_id)
    if fund is None:
        raise NotFound("找不到这个基金", code="FundNotFound")
    return await _statement(
        session,
        account=fund_account(fund.id, is_general_meal_pool=fund.is_general_meal_pool),
        kind="general_meal_pool" if fund.is_general_meal_pool else "fund",
        owner=(str(fund.id), fund.code, fund.name),
        date_from=date_from,
        date_to=date_to,
    )


async def canteen_pool_statement(
    session: AsyncSession, canteen_id: uuid.UUID, *, date_from: date | None, date_to: date | None
) -> StatementOut:
    canteen = await LedgerRepository(session).canteen(canteen_id)
    if canteen is None:
        raise NotFound("找不到这个食堂", code="CanteenNotFound")
    return await _statement(
        session,
        account=canteen_pool(canteen.id),
        kind="canteen_pool",
        owner=(str(canteen.id), canteen.code, canteen.name),
        date_from=date_from,
        date_to=date_to,
    )


def statement_table(s: StatementOut) -> list[list[Any]]:
    from app.settlements.export import yuan

    title = {"canteen_pool": "食堂爱心助餐资金池", "general_meal_pool": "乐享桑榆助餐资金池"}.get(
        s.kind, "慈善基金"
    )
    rows: list[list[Any]] = [
        [f"{title}收支报表"],
        ["名称", s.owner_name, "编码", s.owner_code, "账户", s.account],
        ["期间", f"{s.date_from} 至 {s.date_to}（北京时间）"],
        [],
        ["项目", "金额（元）", "fen", "笔数"],
        ["期初余额", yuan(s.opening_fen), s.opening_fen, ""],
        ["捐赠收入", yuan(s.donations_fen), s.donations_fen, s.donations_count],
        ["捐赠退款", yuan(-s.refunds_fen), -s.refunds_fen, s.refunds_count],
        ["手续费", yuan(-s.fees_fen), -s.fees_fen, ""],
        ["助餐补贴支出", yuan(-s.meal_subsidies_fen), -s.meal_subsidies_fen, s.meals],
        ["其他变动", yuan(s.other_fen), s.other_fen, ""],
        ["期末余额", yuan(s.closing_fen), s.closing_fen, ""],
    ]
    if s.meal_subsidies_by_canteen:
        rows += [[], ["助餐补贴按食堂", "食堂编码", "餐数", "金额（元）", "fen"]]
        for c in s.meal_subsidies_by_canteen:
            rows.append(
                [
                    c.canteen_name or c.canteen_id,
                    c.canteen_code or "",
                    c.meals,
                    yuan(c.amount_fen),
                    c.amount_fen,
                ]
            )
    return rows
