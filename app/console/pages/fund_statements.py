"""基金报表: choose a fund and a period; opening, donations, refunds, fees, meal subsidies and closing balance
from the ledger (``app.ledger.statements``), with CSV / XLSX downloads. Read-only."""

from __future__ import annotations

import uuid
from datetime import date

from starlette.requests import Request
from starlette.responses import Response

from app.console.auth import session_of
from app.console.pages import ConsolePage, PageRoute, register
from app.console.pages.common import error_page, message, yuan
from app.console.templating import render
from app.exceptions import SangyuError
from app.feed.repository import FeedRepository
from app.ledger.statements import fund_statement, statement_table
from app.models.staff_account import StaffRole
from app.settlements.export import download

SLUG = "fund-statements"
BASE = f"/admin/pages/{SLUG}"


class _BadInput(ValueError):
    pass


def _date(value: str | None, label: str) -> date | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise _BadInput(f"{label}格式不对，请按 2026-03-05 这样填写") from exc


async def statement_page(request: Request) -> Response:
    params = request.query_params
    fmt = (params.get("format") or "html").strip()
    raw_fund = (params.get("fund_id") or "").strip()
    if fmt not in ("html", "csv", "xlsx"):
        return message(request, "格式有误", "只能下载 CSV 或 Excel", 400)
    try:
        date_from = _date(params.get("date_from"), "开始日期")
        date_to = _date(params.get("date_to"), "结束日期")
    except _BadInput as exc:
        return message(request, "日期有误", str(exc), 400)
    session = session_of(request)
    funds = await FeedRepository(session).funds()
    statement = None
    if raw_fund:
        try:
            fund_id = uuid.UUID(raw_fund)
        except ValueError:
            return message(request, "找不到", "找不到这个基金", 404)
        try:
            statement = await fund_statement(session, fund_id, date_from=date_from, date_to=date_to)
        except SangyuError as exc:
            return error_page(request, exc)
        if fmt != "html":
            return download(
                statement_table(statement),
                fmt=fmt,
                filename=f"fund-{statement.owner_code}-{statement.date_from}-{statement.date_to}",
                title="基金收支报表",
            )
    elif fmt != "html":
        return message(request, "请选择基金", "请先选择一个基金再下载", 400)
    return render(
        request,
        "fund_statements.html",
        {
            "page_title": PAGE.title,
            "funds": funds,
            "fund_id": raw_fund,
            "date_from": statement.date_from if statement else (params.get("date_from") or ""),
            "date_to": statement.date_to if statement else (params.get("date_to") or ""),
            "st": statement,
            "yuan": yuan,
            "base": BASE,
        },
    )


PAGE = register(
    ConsolePage(
        slug=SLUG,
        title="基金报表",
        routes=[PageRoute("", statement_page)],
        roles=frozenset({StaffRole.federation_admin}),
        order=40,
    )
)
