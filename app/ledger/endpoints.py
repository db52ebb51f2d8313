from __future__ import annotations

from datetime import date

from fastapi import APIRouter

from app.auth.auth import AdminSubject, SessionDep
from app.ledger.schemas import DigestOut, LedgerCheckReport
from app.ledger.service import ledger_service

router = APIRouter(tags=["ledger"])


@router.get("/ledger/digests/{day}", response_model=DigestOut, summary="某日账目的 Merkle 根（公开）")
async def get_digest(day: date, session: SessionDep) -> DigestOut:
    """Public: the Merkle root over one Asia/Shanghai day's ledger entries, published after the day ends."""
    return DigestOut.model_validate(await ledger_service.digest_for_day(session, day=day))


@router.get("/admin/ledger/check", response_model=LedgerCheckReport, summary="账本校验")
async def check_ledger(subject: AdminSubject, session: SessionDep) -> LedgerCheckReport:
    """Verify the hash chain, the published roots and every ledger invariant."""
    return LedgerCheckReport.from_result(await ledger_service.check(session))
