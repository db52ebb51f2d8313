"""长者核实: the queue of elders waiting for verification. Federation admins see every district (names, ID
numbers, phones and addresses masked, as the API shows them); a civil-affairs account sees only its own
district, in full, and verifies or rejects with categories through ``elder_service.verify`` — the same rule as
``POST /api/v1/admin/elders/{id}/verify``: only civil affairs of the elder's hukou district may decide, anyone
else gets "not found"."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.auth.subject import Subject
from app.console.auth import session_of
from app.console.pages import ConsolePage, PageRoute, register, uuid_or_none
from app.console.pages.common import error_page, message, subject_of
from app.console.templating import render
from app.elders.repository import ElderRepository
from app.elders.schemas import VerifyRequest
from app.elders.service import elder_service, to_out
from app.exceptions import SangyuError
from app.models import Elder
from app.models.elder import ElderCategory
from app.models.staff_account import StaffRole

SLUG = "elders"
BASE = f"/admin/pages/{SLUG}"
QUEUE_LIMIT = 200
STATUS_LABELS = {"pending": "待核实", "verified": "已核实", "rejected": "未通过"}


async def _pending(session: AsyncSession, reader: Subject) -> Sequence[Elder]:
    # the district scope is the repository's own readable_statement (WHERE clause), narrowed to the queue
    stmt = (
        ElderRepository(session)
        .readable_statement(reader)
        .where(Elder.verification_status == "pending")
        .order_by(Elder.created_at, Elder.id)
        .limit(QUEUE_LIMIT)
    )
    return (await session.execute(stmt)).scalars().all()


async def _readable(session: AsyncSession, reader: Subject, elder_id: uuid.UUID) -> Elder | None:
    return await ElderRepository(session).get_readable(reader, elder_id)


def _not_found(request: Request) -> Response:
    return message(request, "找不到", "找不到这位长者（或不在您管辖的区县）", 404)


async def queue_page(request: Request) -> Response:
    reader = subject_of(request, reader=True)
    elders = await _pending(session_of(request), reader)
    return render(
        request,
        "elder_queue.html",
        {
            "page_title": PAGE.title,
            "elders": [to_out(e, reader) for e in elders],
            "limit": QUEUE_LIMIT,
            "base": BASE,
        },
    )


async def elder_page(request: Request) -> Response:
    elder_id = uuid_or_none(request.path_params["elder_id"])
    if elder_id is None:
        return _not_found(request)
    reader = subject_of(request, reader=True)
    elder = await _readable(session_of(request), reader, elder_id)
    if elder is None:
        return _not_found(request)
    return render(
        request,
        "elder_verify.html",
        {
            "page_title": "核实长者",
            "e": to_out(elder, reader),
            "note": elder.verification_note or "",
            "can_decide": reader.governs(elder.hukou_district_code),
            "categories": [c.value for c in ElderCategory],
            "status_labels": STATUS_LABELS,
            "base": BASE,
        },
    )


async def verify(request: Request) -> Response:
    elder_id = uuid_or_none(request.path_params["elder_id"])
    if elder_id is None:
        return _not_found(request)
    form = await request.form(max_files=0, max_fields=20)
    raw_until = str(form.get("valid_until") or "").strip()
    try:
        valid_until = date.fromisoformat(raw_until) if raw_until else None
    except ValueError:
        return message(request, "日期有误", "有效期请按 2027-12-31 这样填写", 400)
    note = str(form.get("note") or "").strip() or None
    categories = [str(c) for c in form.getlist("categories")]
    try:
        payload = VerifyRequest.model_validate(
            {
                "decision": str(form.get("decision") or ""),
                # categories are replaced with what is ticked (none ticked = none) when verifying;
                # a rejection keeps the recorded categories
                "categories": categories if form.get("decision") == "verified" else None,
                "valid_until": valid_until,
                "note": note,
            }
        )
    except ValidationError:
        return message(
            request, "填写有误", "请选择“核实通过”或“不通过”，类别从列表中勾选，备注 200 字以内", 400
        )
    try:
        await elder_service.verify(session_of(request), subject_of(request), elder_id, payload)
    except SangyuError as exc:
        return error_page(request, exc)
    return RedirectResponse(BASE, status_code=303)


PAGE = register(
    ConsolePage(
        slug=SLUG,
        title="长者核实",
        routes=[
            PageRoute("", queue_page),
            PageRoute("/{elder_id}", elder_page),
            PageRoute("/{elder_id}/verify", verify, ("POST",)),
        ],
        roles=frozenset({StaffRole.federation_admin, StaffRole.civil_affairs}),
        order=50,
    )
)
