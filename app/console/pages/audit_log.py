"""审计日志: every staff write, newest first, filtered by actor, action, target type and date range."""

from __future__ import annotations

from datetime import date, time, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.console.auth import json_dumps, session_of
from app.console.pages import ConsolePage, PageRoute, register
from app.console.repository import AuditFilters, AuditLogRepository
from app.console.templating import render
from app.kit.time import SHANGHAI, shanghai_datetime
from app.models.staff_account import StaffRole

PAGE_SIZE = 50


class _BadFilter(ValueError):
    pass


def _date(value: str | None, label: str) -> date | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise _BadFilter(f"{label}格式不对，请按 2026-03-05 这样填写") from exc


def _text(params: Any, key: str, limit: int = 64) -> str | None:
    value = (params.get(key) or "").strip()
    if len(value) > limit:
        raise _BadFilter("筛选条件太长了")
    return value or None


def parse_filters(params: Any) -> tuple[AuditFilters, dict[str, str]]:
    date_from = _date(params.get("date_from"), "开始日期")
    date_to = _date(params.get("date_to"), "结束日期")
    if date_from and date_to and date_from > date_to:
        raise _BadFilter("开始日期不能晚于结束日期")
    before = (params.get("before") or "").strip()
    if before and (not before.isdigit() or len(before) > 18):
        raise _BadFilter("翻页参数不对，请回到第一页")
    filters = AuditFilters(
        actor=_text(params, "actor"),
        action=_text(params, "action"),
        target_type=_text(params, "target_type", 32),
        since=shanghai_datetime(date_from, time.min) if date_from else None,
        until=shanghai_datetime(date_to + timedelta(days=1), time.min) if date_to else None,
        before_id=int(before) if before else None,
    )
    echo = {
        k: (params.get(k) or "").strip() for k in ("actor", "action", "target_type", "date_from", "date_to")
    }
    return filters, echo


async def audit_log(request: Request) -> Response:
    repo = AuditLogRepository(session_of(request))
    try:
        filters, echo = parse_filters(request.query_params)
    except _BadFilter as exc:
        return render(request, "message.html", {"title": "筛选条件有误", "message": str(exc)}, 400)
    rows = await repo.page(filters, PAGE_SIZE + 1)
    has_more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    next_query = None
    if has_more:
        query = {k: v for k, v in echo.items() if v}
        query["before"] = str(rows[-1].id)
        next_query = query
    entries = [
        {
            "id": r.id,
            "time": r.created_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
            "actor": r.actor_label,
            "action": r.action,
            "target": f"{r.target_type}:{r.target_id or ''}",
            "channel": r.channel,
            "ip": str(r.ip) if r.ip else "",
            "request_id": r.request_id or "",
            "before": json_dumps(r.before) if r.before is not None else "",
            "after": json_dumps(r.after) if r.after is not None else "",
        }
        for r in rows
    ]
    return render(
        request,
        "audit_log.html",
        {
            "entries": entries,
            "filters": echo,
            "target_types": await repo.target_types(),
            "next_query": next_query,
            "is_first_page": filters.before_id is None,
            "page_title": PAGE.title,
        },
    )


PAGE = register(
    ConsolePage(
        slug="audit-log",
        title="审计日志",
        routes=[PageRoute("", audit_log)],
        roles=frozenset({StaffRole.federation_admin}),
        order=10,
    )
)
