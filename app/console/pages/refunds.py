"""退款审批: the donors' refund requests for the federation's staff, by status. A request waiting for a decision
is approved or rejected here with a note, through ``donation_service.approve_refund`` / ``reject_refund``, the
same rules as ``POST /api/v1/admin/refund-requests/{id}/approve|reject``: an approval reserves the money in the
ledger and a job then asks WeChat Pay; one that WeChat Pay refuses or closes shows here as 未成功 with the reason,
its money back in the pool."""

from __future__ import annotations

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.console.auth import session_of
from app.console.pages import ConsolePage, PageRoute, register, uuid_or_none
from app.console.pages.common import error_page, local_time, message, subject_of, yuan
from app.console.templating import render
from app.donations.repository import DonationRepository
from app.donations.service import donation_service
from app.exceptions import SangyuError
from app.models import Donation, DonationTarget
from app.models.donation_refund import RefundStatus
from app.models.staff_account import StaffRole

SLUG = "refunds"
BASE = f"/admin/pages/{SLUG}"
LIMIT = 200
STATUS_LABELS = {
    "requested": "待审批",
    "processing": "退款中",
    "succeeded": "已退款",
    "failed": "未成功",
    "rejected": "已驳回",
}
CHANNELS = {"wechatpay": "微信支付", "bank": "银行转账"}


async def list_page(request: Request) -> Response:
    status = request.query_params.get("status", RefundStatus.requested.value)
    if status not in STATUS_LABELS:
        return message(request, "没有这个状态", "请从页面上方的状态里选择", 400)
    session = session_of(request)
    refunds = await DonationRepository(session).list_refunds(status=status, after=None, limit=LIMIT)
    donations = {
        d.id: (d, t)
        for d, t in (
            await session.execute(
                select(Donation, DonationTarget)
                .join(DonationTarget, DonationTarget.id == Donation.target_id)
                .where(Donation.id.in_([r.donation_id for r in refunds]))
            )
        ).all()
    }
    rows = [
        {
            "r": r,
            "donation": donations[r.donation_id][0],
            "target": donations[r.donation_id][1].title,
            "channel": CHANNELS.get(donations[r.donation_id][0].channel, donations[r.donation_id][0].channel),
        }
        for r in refunds
    ]
    return render(
        request,
        "refunds.html",
        {
            "page_title": PAGE.title,
            "rows": rows,
            "status": status,
            "labels": STATUS_LABELS,
            "limit": LIMIT,
            "base": BASE,
            "yuan": yuan,
            "local_time": local_time,
        },
    )


async def _decide(request: Request, approve: bool) -> Response:
    refund_id = uuid_or_none(request.path_params["refund_id"])
    if refund_id is None:
        return message(request, "找不到", "找不到这个退款申请", 404)
    form = await request.form(max_files=0, max_fields=10)
    note = str(form.get("note") or "").strip()
    if len(note) > 200:
        return message(request, "填写有误", "备注请在 200 字以内", 400)
    decide = donation_service.approve_refund if approve else donation_service.reject_refund
    try:
        await decide(session_of(request), subject_of(request), refund_id, note)
    except SangyuError as exc:
        return error_page(request, exc)
    return RedirectResponse(BASE, status_code=303)


async def approve(request: Request) -> Response:
    return await _decide(request, True)


async def reject(request: Request) -> Response:
    return await _decide(request, False)


PAGE = register(
    ConsolePage(
        slug=SLUG,
        title="退款审批",
        routes=[
            PageRoute("", list_page),
            PageRoute("/{refund_id}/approve", approve, ("POST",)),
            PageRoute("/{refund_id}/reject", reject, ("POST",)),
        ],
        roles=frozenset({StaffRole.federation_admin}),
        order=45,
    )
)
