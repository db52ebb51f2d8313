"""What a donor (or anyone, for the proof) can learn about one donation from the ledger.

The trace (donor or federation admin only) lists the meals the donation paid for (date, slot, canteen, amount,
the elder's age band: never who ate), the money reserved for booked meals, refunds and the unused remainder. The
proof (public for paid donations; it carries no personal data) holds the donation's entries with Merkle paths
to their days' roots, for anyone to recompute against ``GET /api/v1/ledger/digests/{day}``."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.subject import Subject
from app.donations.repository import DonationRepository
from app.exceptions import NotFound
from app.kit.money import format_yuan
from app.ledger.schemas import DonationProofOut, DonationTraceOut, TracedMeal
from app.ledger.service import ledger_service
from app.models import Donation

PAID_STATUSES = {"paid", "partially_refunded", "refunded"}
SLOT_NAMES = {"breakfast": "早餐", "lunch": "午餐", "dinner": "晚餐"}


def _not_found() -> NotFound:
    return NotFound("找不到这笔捐赠", code="DonationNotFound")


def _meal(item: dict[str, Any]) -> TracedMeal:
    return TracedMeal(
        service_date=item.get("service_date"),
        slot=item.get("slot"),
        canteen_id=str(item.get("canteen_id")),
        canteen_name=item.get("canteen_name"),
        age_band=item.get("age_band"),
        amount_fen=int(item["amount_fen"]),
        from_account=str(item.get("from_account")),
        entry_id=item.get("entry_id"),
    )


def _text(trace: dict[str, Any], meals: list[TracedMeal]) -> str:
    if not trace["recorded"]:
        return "这笔捐款尚未到账"
    parts = [f"您的 {format_yuan(trace['paid_fen'])}"]
    if meals:
        first = meals[0]
        where = first.canteen_name or "助老食堂"
        slot = SLOT_NAMES.get(first.slot or "", "长者餐")
        more = "等" if len({m.canteen_name for m in meals}) > 1 else ""
        parts.append(
            f"已为 {len(meals)} 份长者{slot}付款（{where}{more}，共 {format_yuan(trace['spent_fen'])}）"
        )
    if trace["held_fen"]:
        parts.append(f"已为预订的餐次预留 {format_yuan(trace['held_fen'])}")
    if trace["refunded_fen"]:
        parts.append(f"已退款 {format_yuan(trace['refunded_fen'])}")
    parts.append(f"尚未使用 {format_yuan(trace['unused_fen'])}")
    return "，".join(parts)


async def _readable(session: AsyncSession, subject: Subject, donation_id: uuid.UUID) -> Donation:
    repo = DonationRepository(session)
    if subject.is_admin:
        donation = await repo.get(donation_id)
    else:
        donation = await repo.get_for_donor(donation_id, subject.user_id)
    if donation is None:
        raise _not_found()
    return donation


async def donation_trace(session: AsyncSession, subject: Subject, donation_id: uuid.UUID) -> DonationTraceOut:
    donation = await _readable(session, subject, donation_id)
    trace = await ledger_service.donation_trace(session, donation_id=donation.id)
    meals = [_meal(m) for m in trace["meals"]]
    meals.sort(key=lambda m: (m.service_date or "", m.slot or "", m.canteen_name or ""))
    reserved = [_meal(m) for m in trace["reserved"]]
    return DonationTraceOut(
        donation_id=str(donation.id),
        status=donation.status,
        amount_fen=donation.amount_fen,
        recorded=trace["recorded"],
        account=trace["account"],
        paid_fen=trace["paid_fen"],
        spent_fen=trace["spent_fen"],
        held_fen=trace["held_fen"],
        refunded_fen=trace["refunded_fen"],
        unused_fen=trace["unused_fen"],
        meals=meals,
        reserved=reserved,
        text=_text(trace, meals),
    )


async def donation_proof(session: AsyncSession, donation_id: uuid.UUID) -> DonationProofOut:
    donation = await DonationRepository(session).get(donation_id)
    if donation is None or donation.status not in PAID_STATUSES:
        raise _not_found()
    entry_ids = await ledger_service.entry_ids_for_donation(session, donation_id=donation.id)
    if not entry_ids:
        raise _not_found()
    proof = await ledger_service.proof_for_entries(session, entry_ids)
    pending = sorted(day for day, published in proof["published"].items() if not published)
    note = "每笔账目可由 prev_hash 和内容重算 hash，再沿 Merkle 路径算出当日的根，与公布的日根比对"
    if pending:
        note += f"；{'、'.join(pending)} 的日根尚未公布（当日结束后公布），届时请再核对"
    return DonationProofOut(donation_id=str(donation.id), proof=proof, unpublished_days=pending, note=note)
