from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.auth.auth import AdminSubject, CurrentSubject, SessionDep
from app.ledger import statements, trace
from app.ledger.schemas import (
    DigestOut,
    DonationProofOut,
    DonationTraceOut,
    LedgerCheckReport,
    StatementOut,
)
from app.ledger.service import ledger_service
from app.settlements.export import download

router = APIRouter(tags=["ledger"])

FormatQuery = Annotated[str, Query(pattern="^(json|csv|xlsx)$", description="json（默认）/ csv / xlsx")]
FromQuery = Annotated[date | None, Query(alias="from", description="开始日期（含），默认本月 1 日")]
ToQuery = Annotated[date | None, Query(alias="to", description="结束日期（含），默认今天")]
_DOWNLOADS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/csv": {},
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
        }
    }
}


@router.get("/ledger/digests/{day}", response_model=DigestOut, summary="某日账目的 Merkle 根（公开）")
async def get_digest(day: date, session: SessionDep) -> DigestOut:
    """Public: the Merkle root over one Asia/Shanghai day's ledger entries, published after the day ends."""
    return DigestOut.model_validate(await ledger_service.digest_for_day(session, day=day))


@router.get("/admin/ledger/check", response_model=LedgerCheckReport, summary="账本校验")
async def check_ledger(subject: AdminSubject, session: SessionDep) -> LedgerCheckReport:
    """Verify the hash chain, the published roots and every ledger invariant."""
    return LedgerCheckReport.from_result(await ledger_service.check(session))


@router.get(
    "/donations/{donation_id}/trace", response_model=DonationTraceOut, summary="我的捐款去向（资助了哪些餐）"
)
async def donation_trace(
    donation_id: uuid.UUID, subject: CurrentSubject, session: SessionDep
) -> DonationTraceOut:
    """The donor who made it, or a federation admin: meals funded (date, slot, canteen, amount, age band),
    money reserved for booked meals, refunds and the unused remainder. Anyone else gets 404."""
    return await trace.donation_trace(session, subject, donation_id)


@router.get(
    "/donations/{donation_id}/proof",
    response_model=DonationProofOut,
    summary="捐款的账本证明（公开，可验证）",
)
async def donation_proof(donation_id: uuid.UUID, session: SessionDep) -> DonationProofOut:
    """Public for paid donations (no personal data): the donation's ledger entries with Merkle paths to their
    days' roots; ``unpublished_days`` lists days whose root is not published yet."""
    return await trace.donation_proof(session, donation_id)


@router.get(
    "/admin/funds/{fund_id}/statement",
    response_model=StatementOut,
    summary="基金收支报表（期初、捐赠、退款、手续费、助餐补贴、期末）",
    responses=_DOWNLOADS,
)
async def fund_statement(
    fund_id: uuid.UUID,
    subject: AdminSubject,
    session: SessionDep,
    date_from: FromQuery = None,
    date_to: ToQuery = None,
    format: FormatQuery = "json",
) -> StatementOut | Response:
    out = await statements.fund_statement(session, fund_id, date_from=date_from, date_to=date_to)
    return _render(out, format, f"fund-{out.owner_code}-{out.date_from}-{out.date_to}")


@router.get(
    "/admin/canteens/{canteen_id}/pool-statement",
    response_model=StatementOut,
    summary="食堂爱心资金池收支报表",
    responses=_DOWNLOADS,
)
async def canteen_pool_statement(
    canteen_id: uuid.UUID,
    subject: AdminSubject,
    session: SessionDep,
    date_from: FromQuery = None,
    date_to: ToQuery = None,
    format: FormatQuery = "json",
) -> StatementOut | Response:
    out = await statements.canteen_pool_statement(session, canteen_id, date_from=date_from, date_to=date_to)
    return _render(out, format, f"canteen-pool-{out.owner_code}-{out.date_from}-{out.date_to}")


def _render(out: StatementOut, fmt: str, filename: str) -> StatementOut | Response:
    if fmt == "json":
        return out
    return download(statements.statement_table(out), fmt=fmt, filename=filename, title="收支报表")
