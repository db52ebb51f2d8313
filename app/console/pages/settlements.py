"""结算: a canteen's monthly charity statement — draft a month, read its lines, confirm, mark paid with the
bank voucher number, download CSV / XLSX. Every rule lives in ``settlement_service``; this page only maps the
signed-in staff member to the service's ``Subject`` and the forms to its calls."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.console.auth import session_of
from app.console.pages import ConsolePage, PageRoute, register, uuid_or_none
from app.console.pages.common import error_page, local_time, message, subject_of, yuan
from app.console.templating import render
from app.exceptions import SangyuError
from app.models.staff_account import StaffRole
from app.settlements.export import download
from app.settlements.schemas import MONTH_PATTERN
from app.settlements.service import SLOT_NAMES, STATUS_NAMES, previous_month, settlement_service

SLUG = "settlements"
BASE = f"/admin/pages/{SLUG}"
VOUCHER_RE = re.compile(r"^[A-Za-z0-9_\-/]{4,64}$")
_MONTH_RE = re.compile(MONTH_PATTERN)


async def list_page(request: Request) -> Response:
    month = (request.query_params.get("month") or "").strip() or previous_month()
    status = (request.query_params.get("status") or "").strip() or None
    cursor = request.query_params.get("cursor") or None
    if not _MONTH_RE.match(month):
        return message(request, "月份有误", "请按 2026-03 这样填写月份", 400)
    if status not in (None, "draft", "confirmed", "paid"):
        return message(request, "状态有误", "不支持这个状态筛选", 400)
    if cursor is not None and len(cursor) > 200:
        return message(request, "翻页参数有误", "翻页参数不对，请回到第一页", 400)
    try:
        page = await settlement_service.list_settlements(
            session_of(request), month=month, canteen_id=None, status=status, cursor=cursor, limit=50
        )
    except SangyuError as exc:
        return error_page(request, exc)
    return render(
        request,
        "settlements.html",
        {
            "page_title": PAGE.title,
            "month": month,
            "status": status or "",
            "items": page.items,
            "next_cursor": page.next_cursor,
            "status_names": STATUS_NAMES,
            "yuan": yuan,
            "base": BASE,
        },
    )


async def draft(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    month = str(form.get("month") or "").strip()
    if not _MONTH_RE.match(month):
        return message(request, "月份有误", "请按 2026-03 这样填写月份", 400)
    try:
        await settlement_service.draft_month(session_of(request), month, actor=subject_of(request))
    except SangyuError as exc:
        return error_page(request, exc)
    return RedirectResponse(f"{BASE}?month={month}", status_code=303)


async def detail_page(request: Request) -> Response:
    settlement_id = uuid_or_none(request.path_params["settlement_id"])
    if settlement_id is None:
        return message(request, "找不到", "找不到这份结算单", 404)
    try:
        detail = await settlement_service.get(session_of(request), settlement_id)
    except SangyuError as exc:
        return error_page(request, exc)
    return render(
        request,
        "settlement.html",
        {
            "page_title": f"{detail.canteen_name} {detail.month} 结算单",
            "s": detail,
            "status_names": STATUS_NAMES,
            "slot_names": SLOT_NAMES,
            "yuan": yuan,
            "local_time": local_time,
            "base": BASE,
        },
    )


async def confirm(request: Request) -> Response:
    settlement_id = uuid_or_none(request.path_params["settlement_id"])
    if settlement_id is None:
        return message(request, "找不到", "找不到这份结算单", 404)
    try:
        await settlement_service.confirm(session_of(request), subject_of(request), settlement_id)
    except SangyuError as exc:
        return error_page(request, exc)
    return RedirectResponse(f"{BASE}/{settlement_id}", status_code=303)


async def mark_paid(request: Request) -> Response:
    settlement_id = uuid_or_none(request.path_params["settlement_id"])
    if settlement_id is None:
        return message(request, "找不到", "找不到这份结算单", 404)
    form = await request.form(max_files=0, max_fields=10)
    voucher_no = str(form.get("voucher_no") or "").strip()
    if not VOUCHER_RE.match(voucher_no):
        return message(request, "凭证号有误", "请填写银行付款凭证号（4–64 位字母、数字、-、_、/）", 400)
    try:
        await settlement_service.mark_paid(
            session_of(request), subject_of(request), settlement_id, voucher_no
        )
    except SangyuError as exc:
        return error_page(request, exc)
    return RedirectResponse(f"{BASE}/{settlement_id}", status_code=303)


async def export(request: Request) -> Response:
    settlement_id = uuid_or_none(request.path_params["settlement_id"])
    fmt = request.path_params["fmt"]
    if settlement_id is None or fmt not in ("csv", "xlsx"):
        return message(request, "找不到", "找不到这份结算单", 404)
    try:
        detail = await settlement_service.get(session_of(request), settlement_id)
    except SangyuError as exc:
        return error_page(request, exc)
    return download(
        settlement_service.table(detail),
        fmt=fmt,
        filename=f"settlement-{detail.canteen_code}-{detail.month}-{detail.seq}",
        title=f"{detail.month} 结算单",
    )


PAGE = register(
    ConsolePage(
        slug=SLUG,
        title="结算",
        routes=[
            PageRoute("", list_page),
            PageRoute("/draft", draft, ("POST",)),
            PageRoute("/{settlement_id}", detail_page),
            PageRoute("/{settlement_id}/confirm", confirm, ("POST",)),
            PageRoute("/{settlement_id}/mark-paid", mark_paid, ("POST",)),
            PageRoute("/{settlement_id}/download.{fmt}", export),
        ],
        roles=frozenset({StaffRole.federation_admin}),
        order=30,
    )
)
