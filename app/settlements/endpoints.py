from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.auth.auth import AdminSubject, CurrentSubject, SessionDep, StaffSubject
from app.auth.subject import Subject
from app.exceptions import NotFound
from app.kit.pagination import Page
from app.settlements.export import download
from app.settlements.schemas import (
    MONTH_PATTERN,
    DraftRequest,
    DraftResult,
    MarkPaidRequest,
    SettlementDetail,
    SettlementOut,
    SubsidyClaimReport,
)
from app.settlements.service import settlement_service

router = APIRouter(tags=["settlements"])

MonthQuery = Annotated[str, Query(pattern=MONTH_PATTERN, description="月份 YYYY-MM（北京时间）")]
_DOWNLOADS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/csv": {},
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
        }
    }
}


@router.post("/admin/settlements", response_model=DraftResult, summary="起草（或刷新）某月的食堂结算单")
async def draft_settlements(payload: DraftRequest, subject: AdminSubject, session: SessionDep) -> DraftResult:
    """For every canteen with served charity-funded meals that month: create its draft statement, or refresh
    the existing draft. Confirmed and paid statements are never changed; meals served after a confirmation go
    on a supplementary statement."""
    return await settlement_service.draft_month(session, payload.month, actor=subject)


@router.get("/admin/settlements", response_model=Page[SettlementOut], summary="结算单列表")
async def list_settlements(
    subject: AdminSubject,
    session: SessionDep,
    month: Annotated[str | None, Query(pattern=MONTH_PATTERN)] = None,
    canteen_id: uuid.UUID | None = None,
    status: Annotated[str | None, Query(pattern="^(draft|confirmed|paid)$")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[SettlementOut]:
    return await settlement_service.list_settlements(
        session, month=month, canteen_id=canteen_id, status=status, cursor=cursor, limit=limit
    )


async def _download(session: SessionDep, settlement_id: uuid.UUID, fmt: str) -> Response:
    detail = await settlement_service.get(session, settlement_id)
    return download(
        settlement_service.table(detail),
        fmt=fmt,
        filename=f"settlement-{detail.canteen_code}-{detail.month}-{detail.seq}",
        title=f"{detail.month} 结算单",
    )


@router.get("/admin/settlements/{settlement_id}.csv", summary="结算单（CSV）", responses=_DOWNLOADS)
async def settlement_csv(settlement_id: uuid.UUID, subject: AdminSubject, session: SessionDep) -> Response:
    return await _download(session, settlement_id, "csv")


@router.get("/admin/settlements/{settlement_id}.xlsx", summary="结算单（Excel）", responses=_DOWNLOADS)
async def settlement_xlsx(settlement_id: uuid.UUID, subject: AdminSubject, session: SessionDep) -> Response:
    return await _download(session, settlement_id, "xlsx")


@router.get(
    "/admin/settlements/{settlement_id}",
    response_model=SettlementDetail,
    summary="结算单明细（每份已核销的爱心餐一行）",
    responses=_DOWNLOADS,
)
async def get_settlement(
    settlement_id: uuid.UUID,
    subject: AdminSubject,
    session: SessionDep,
    format: Annotated[str, Query(pattern="^(json|csv|xlsx)$")] = "json",
) -> SettlementDetail | Response:
    if format != "json":
        return await _download(session, settlement_id, format)
    return await settlement_service.get(session, settlement_id)


@router.post("/admin/settlements/{settlement_id}/confirm", response_model=SettlementOut, summary="确认结算单")
async def confirm_settlement(
    settlement_id: uuid.UUID, subject: AdminSubject, session: SessionDep
) -> SettlementOut:
    return await settlement_service.confirm(session, subject, settlement_id)


@router.post(
    "/admin/settlements/{settlement_id}/mark-paid",
    response_model=SettlementOut,
    summary="登记结算付款（记账：应付食堂款 → 银行）",
)
async def mark_settlement_paid(
    settlement_id: uuid.UUID, payload: MarkPaidRequest, subject: AdminSubject, session: SessionDep
) -> SettlementOut:
    return await settlement_service.mark_paid(session, subject, settlement_id, payload.voucher_no)


@router.get(
    "/admin/subsidy-claims",
    response_model=SubsidyClaimReport,
    summary="政府助餐补贴申报（按食堂，已核销餐次）",
    responses=_DOWNLOADS,
)
async def subsidy_claims(
    subject: StaffSubject,
    session: SessionDep,
    month: MonthQuery,
    district: Annotated[str | None, Query(pattern=r"^\d{6}$")] = None,
    format: Annotated[str, Query(pattern="^(json|csv|xlsx)$")] = "json",
) -> SubsidyClaimReport | Response:
    """Federation admins see every district; civil-affairs staff only their own."""
    report = await settlement_service.subsidy_claims(session, subject, month, district)
    if format == "json":
        return report
    return download(
        settlement_service.claims_table(report),
        fmt=format,
        filename=f"subsidy-claims-{month}",
        title=f"{month} 补贴申报",
    )


def _require_canteen_reader(subject: Subject, canteen_id: uuid.UUID) -> None:
    """The canteen's own operators (and federation admins) read its statements; to anyone else it is not there."""
    if not (subject.is_admin or subject.operates(canteen_id)):
        raise NotFound("找不到这个食堂的结算单", code="SettlementNotFound")


@router.get(
    "/canteens/{canteen_id}/settlements",
    response_model=Page[SettlementOut],
    summary="本食堂的月度结算单（食堂工作人员）",
)
async def canteen_settlements(
    canteen_id: uuid.UUID,
    subject: CurrentSubject,
    session: SessionDep,
    month: Annotated[str | None, Query(pattern=MONTH_PATTERN)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[SettlementOut]:
    _require_canteen_reader(subject, canteen_id)
    return await settlement_service.list_settlements(
        session, month=month, canteen_id=canteen_id, status=None, cursor=cursor, limit=limit
    )


@router.get(
    "/canteens/{canteen_id}/settlements/{settlement_id}",
    response_model=SettlementDetail,
    summary="本食堂的一份结算单（食堂工作人员）",
)
async def canteen_settlement(
    canteen_id: uuid.UUID, settlement_id: uuid.UUID, subject: CurrentSubject, session: SessionDep
) -> SettlementDetail:
    _require_canteen_reader(subject, canteen_id)
    detail = await settlement_service.get(session, settlement_id)
    if detail.canteen_id != canteen_id:
        raise NotFound("找不到这个食堂的结算单", code="SettlementNotFound")
    return detail
