"""对账: run a day's WeChat Pay bill (download or upload), read the result, resolve discrepancies."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.console.auth import principal_of, session_of
from app.console.pages import ConsolePage, PageRoute, register, uuid_or_none
from app.console.pages.common import error_page, local_time, yuan
from app.console.templating import render
from app.exceptions import SangyuError
from app.kit.time import business_date
from app.models.staff_account import StaffRole
from app.reconciliation.schemas import KIND_LABELS, ResolveIn
from app.reconciliation.service import Actor, reconciliation_service
from app.wechat.pay import get_wechatpay

SLUG = "reconciliation"
BASE = f"/admin/pages/{SLUG}"
DAY_STATUS_LABELS = {"reconciled": "已对平", "under_review": "有差异待处理"}
RESOLUTION_LABELS = {"note": "备注说明", "ledger_entry": "更正分录", "repaired": "查询后修复"}


def _actor(request: Request) -> Actor:
    principal = principal_of(request)
    assert principal is not None  # the page guard ran
    return Actor(user_id=principal.user_id, label=principal.label, channel="console")


async def runs_page(request: Request) -> Response:
    runs = await reconciliation_service.list_runs(session_of(request), 60)
    return render(
        request,
        "reconciliation_runs.html",
        {
            "page_title": PAGE.title,
            "runs": runs,
            "yesterday": (business_date() - timedelta(days=1)).isoformat(),
            "status_labels": DAY_STATUS_LABELS,
            "yuan": yuan,
        },
    )


async def start_run(request: Request) -> Response:
    form = await request.form(max_files=1, max_fields=10)
    raw_date = str(form.get("bill_date") or "").strip()
    bill_date = None
    if raw_date:
        try:
            bill_date = date.fromisoformat(raw_date)
        except ValueError:
            return render(
                request,
                "message.html",
                {"title": "日期有误", "message": "请按 2026-03-05 这样填写账单日期"},
                400,
            )
    upload = form.get("file")
    session = session_of(request)
    try:
        if isinstance(upload, UploadFile) and upload.filename:
            run = await reconciliation_service.run(
                session, upload.file, bill_date=bill_date, source="upload", actor=_actor(request)
            )
        elif bill_date is None:
            return render(
                request,
                "message.html",
                {"title": "缺少日期", "message": "请填写账单日期，或上传账单文件"},
                400,
            )
        else:
            run = await reconciliation_service.run_from_api(
                session, get_wechatpay(), bill_date, _actor(request)
            )
    except SangyuError as exc:
        return error_page(request, exc)
    return RedirectResponse(f"{BASE}/runs/{run.id}", status_code=303)


async def run_page(request: Request) -> Response:
    run_id = uuid_or_none(request.path_params["run_id"])
    status = request.query_params.get("status") or "open"
    if status not in ("open", "resolved", "all"):
        status = "open"
    cursor = request.query_params.get("cursor") or None
    if run_id is None:
        return render(request, "message.html", {"title": "找不到", "message": "找不到这次对账"}, 404)
    try:
        run = await reconciliation_service.get_run(
            session_of(request), run_id, status=None if status == "all" else status, cursor=cursor, limit=100
        )
    except SangyuError as exc:
        return error_page(request, exc)
    items: list[dict[str, Any]] = []
    for d in run.discrepancies:
        items.append(
            {
                "d": d,
                "kind_label": KIND_LABELS.get(d.kind, d.kind),
                "bill_amount": yuan(d.bill_amount_fen),
                "ledger_amount": yuan(d.ledger_amount_fen),
                "resolution_label": RESOLUTION_LABELS.get(d.resolution or "", ""),
                "resolved_at": local_time(d.resolved_at),
            }
        )
    return render(
        request,
        "reconciliation_run.html",
        {
            "page_title": f"{run.bill_date.isoformat()} 对账",
            "run": run,
            "items": items,
            "status": status,
            "status_labels": DAY_STATUS_LABELS,
            "kind_labels": KIND_LABELS,
            "yuan": yuan,
            "base": BASE,
        },
    )


async def resolve(request: Request) -> Response:
    discrepancy_id = uuid_or_none(request.path_params["discrepancy_id"])
    if discrepancy_id is None:
        return render(request, "message.html", {"title": "找不到", "message": "找不到这条对账差异"}, 404)
    form = await request.form(max_files=0, max_fields=10)
    action = str(form.get("action") or "note")
    note = str(form.get("note") or "").strip()
    if action not in ("note", "repair"):
        return render(request, "message.html", {"title": "操作有误", "message": "不支持这个处理方式"}, 400)
    if not note:
        note = "查询微信支付后修复" if action == "repair" else ""
    if not note or len(note) > 500:
        return render(
            request, "message.html", {"title": "请写备注", "message": "请写明处理说明（500 字以内）"}, 400
        )
    session = session_of(request)
    try:
        found = await reconciliation_service.get_discrepancy(session, discrepancy_id)
        await reconciliation_service.resolve(
            session,
            get_wechatpay() if action == "repair" else None,
            discrepancy_id,
            ResolveIn(action=action, note=note),
            _actor(request),
        )
    except SangyuError as exc:
        return error_page(request, exc)
    return RedirectResponse(f"{BASE}/runs/{found.run_id}", status_code=303)


PAGE = register(
    ConsolePage(
        slug=SLUG,
        title="对账",
        routes=[
            PageRoute("", runs_page),
            PageRoute("/run", start_run, ("POST",)),
            PageRoute("/runs/{run_id}", run_page),
            PageRoute("/discrepancies/{discrepancy_id}/resolve", resolve, ("POST",)),
        ],
        roles=frozenset({StaffRole.federation_admin}),
        order=20,
    )
)
