"""SQL for served meals and the money they carry: the charity hook's meal facts, settlement statements and
their lines, and government subsidy claims. A charity hold is keyed by its booking line id
(``charity_holds.hold_key = booking_lines.id::text``)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import String, and_, cast, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.locks import xact_lock
from app.models import (
    Allocation,
    Booking,
    BookingLine,
    Canteen,
    CharityHold,
    Elder,
    Settlement,
    SettlementLine,
)
from app.models.charity_hold import HoldStatus


@dataclass(frozen=True)
class MealFacts:
    service_date: date
    slot: str
    canteen_id: uuid.UUID
    canteen_name: str
    birth_date: date


@dataclass(frozen=True)
class ServedCharityMeal:
    booking_line_id: uuid.UUID
    booking_id: uuid.UUID
    canteen_id: uuid.UUID
    service_date: date
    slot: str
    item_name: str
    hold_id: uuid.UUID
    entry_id: uuid.UUID
    amount_fen: int


def _line_hold_join() -> Any:
    return CharityHold.hold_key == cast(BookingLine.id, String)


class MealRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def meal_of_line(self, booking_line_id: uuid.UUID) -> MealFacts | None:
        stmt = (
            select(Booking.service_date, Booking.slot, Canteen.id, Canteen.name, Elder.birth_date)
            .select_from(BookingLine)
            .join(Booking, Booking.id == BookingLine.booking_id)
            .join(Canteen, Canteen.id == Booking.canteen_id)
            .join(Elder, Elder.id == Booking.elder_id)
            .where(BookingLine.id == booking_line_id)
        )
        row = (await self.session.execute(stmt)).first()
        return None if row is None else MealFacts(row[0], row[1], row[2], row[3], row[4])

    # ------------------------------------------------------------ settlement sources

    def _served_charity(self, start: date, end: date) -> Any:
        settled_elsewhere = (
            select(SettlementLine.id)
            .join(Settlement, Settlement.id == SettlementLine.settlement_id)
            .where(SettlementLine.booking_line_id == BookingLine.id, Settlement.status != "draft")
            .exists()
        )
        return (
            select(
                BookingLine.id,
                Booking.id,
                Booking.canteen_id,
                Booking.service_date,
                Booking.slot,
                BookingLine.item_name,
                CharityHold.id,
                CharityHold.entry_id,
                CharityHold.held_fen,
            )
            .select_from(Booking)
            .join(BookingLine, BookingLine.booking_id == Booking.id)
            .join(CharityHold, _line_hold_join())
            .where(
                Booking.status == "served",
                Booking.service_date >= start,
                Booking.service_date < end,
                BookingLine.is_elder_meal.is_(True),
                CharityHold.status == HoldStatus.posted.value,
                CharityHold.held_fen > 0,
                CharityHold.entry_id.is_not(None),
                ~settled_elsewhere,
            )
        )

    async def canteens_with_unsettled_meals(self, start: date, end: date) -> list[uuid.UUID]:
        sub = self._served_charity(start, end).subquery()
        stmt = select(sub.c.canteen_id).distinct().order_by(sub.c.canteen_id)
        return list((await self.session.execute(stmt)).scalars())

    async def unsettled_meals(self, canteen_id: uuid.UUID, start: date, end: date) -> list[ServedCharityMeal]:
        stmt = self._served_charity(start, end).where(Booking.canteen_id == canteen_id)
        stmt = stmt.order_by(Booking.service_date, Booking.slot, Booking.served_at, BookingLine.id)
        return [ServedCharityMeal(*row) for row in (await self.session.execute(stmt)).all()]

    # ------------------------------------------------------------ statements

    async def lock_canteen_month(self, canteen_id: uuid.UUID, month: str) -> None:
        """Serializes drafting and confirming of one canteen's month (transaction-scoped)."""
        await xact_lock(self.session, f"settlement:{canteen_id}:{month}")

    async def draft_for(self, canteen_id: uuid.UUID, month: str) -> Settlement | None:
        stmt = (
            select(Settlement)
            .where(
                Settlement.canteen_id == canteen_id, Settlement.month == month, Settlement.status == "draft"
            )
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def next_seq(self, canteen_id: uuid.UUID, month: str) -> int:
        stmt = select(func.coalesce(func.max(Settlement.seq), 0)).where(
            Settlement.canteen_id == canteen_id, Settlement.month == month
        )
        return int((await self.session.execute(stmt)).scalar_one()) + 1

    async def add(self, settlement: Settlement) -> Settlement:
        self.session.add(settlement)
        await self.session.flush()
        return settlement

    async def replace_lines(self, settlement_id: uuid.UUID, meals: Sequence[ServedCharityMeal]) -> None:
        await self.session.execute(
            delete(SettlementLine).where(SettlementLine.settlement_id == settlement_id)
        )
        if meals:
            await self.session.execute(
                insert(SettlementLine),
                [
                    {
                        "id": uuid.uuid4(),
                        "settlement_id": settlement_id,
                        "booking_line_id": m.booking_line_id,
                        "booking_id": m.booking_id,
                        "hold_id": m.hold_id,
                        "entry_id": m.entry_id,
                        "service_date": m.service_date,
                        "slot": m.slot,
                        "item_name": m.item_name,
                        "amount_fen": m.amount_fen,
                    }
                    for m in meals
                ],
            )

    async def get(self, settlement_id: uuid.UUID, *, lock: bool = False) -> Settlement | None:
        stmt = select(Settlement).where(Settlement.id == settlement_id)
        if lock:
            stmt = stmt.with_for_update()
        stmt = stmt.execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_settlements(
        self,
        *,
        month: str | None,
        canteen_id: uuid.UUID | None,
        status: str | None,
        after: tuple[str, str, int] | None,
        limit: int,
    ) -> list[tuple[Settlement, Canteen]]:
        stmt = select(Settlement, Canteen).join(Canteen, Canteen.id == Settlement.canteen_id)
        if month is not None:
            stmt = stmt.where(Settlement.month == month)
        if canteen_id is not None:
            stmt = stmt.where(Settlement.canteen_id == canteen_id)
        if status is not None:
            stmt = stmt.where(Settlement.status == status)
        if after is not None:
            a_month, a_code, a_seq = after
            stmt = stmt.where(
                (Settlement.month < a_month)
                | and_(Settlement.month == a_month, Canteen.code > a_code)
                | and_(Settlement.month == a_month, Canteen.code == a_code, Settlement.seq > a_seq)
            )
        stmt = stmt.order_by(Settlement.month.desc(), Canteen.code, Settlement.seq).limit(limit)
        return [(s, c) for s, c in (await self.session.execute(stmt)).all()]

    async def lines(self, settlement_id: uuid.UUID) -> list[SettlementLine]:
        stmt = (
            select(SettlementLine)
            .where(SettlementLine.settlement_id == settlement_id)
            .order_by(SettlementLine.service_date, SettlementLine.slot, SettlementLine.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def donations_of_holds(self, hold_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
        """Which donations paid each (posted) hold: the link from a statement line back to the donors."""
        out: dict[uuid.UUID, list[str]] = {h: [] for h in hold_ids}
        if not hold_ids:
            return out
        stmt = (
            select(Allocation.hold_id, Allocation.donation_id)
            .where(Allocation.hold_id.in_(list(hold_ids)), Allocation.status == HoldStatus.posted.value)
            .order_by(Allocation.hold_id, Allocation.created_at)
        )
        for hold_id, donation_id in (await self.session.execute(stmt)).all():
            out[hold_id].append(str(donation_id))
        return out

    async def canteen(self, canteen_id: uuid.UUID) -> Canteen | None:
        return await self.session.get(Canteen, canteen_id)

    async def paid_totals(self, canteen_id: uuid.UUID, month: str) -> tuple[int, int]:
        stmt = select(
            func.coalesce(func.sum(Settlement.meals), 0), func.coalesce(func.sum(Settlement.amount_fen), 0)
        ).where(Settlement.canteen_id == canteen_id, Settlement.month == month, Settlement.status == "paid")
        row = (await self.session.execute(stmt)).one()
        return int(row[0]), int(row[1])

    async def mark(self, settlement_id: uuid.UUID, **values: Any) -> None:
        await self.session.execute(update(Settlement).where(Settlement.id == settlement_id).values(**values))

    # ------------------------------------------------------------ government subsidy claims

    async def subsidy_claims(
        self, start: date, end: date, districts: Collection[str] | None
    ) -> list[dict[str, Any]]:
        stmt = (
            select(
                Canteen.id,
                Canteen.code,
                Canteen.name,
                Canteen.district_code,
                func.count(BookingLine.id),
                func.sum(BookingLine.gov_subsidy_fen),
                func.sum(BookingLine.list_price_fen),
                func.sum(BookingLine.self_pay_fen),
            )
            .select_from(Booking)
            .join(BookingLine, BookingLine.booking_id == Booking.id)
            .join(Canteen, Canteen.id == Booking.canteen_id)
            .where(
                Booking.status == "served",
                Booking.service_date >= start,
                Booking.service_date < end,
                BookingLine.is_elder_meal.is_(True),
                BookingLine.gov_subsidy_fen > 0,
            )
            .group_by(Canteen.id, Canteen.code, Canteen.name, Canteen.district_code)
            .order_by(Canteen.district_code, Canteen.code)
        )
        if districts is not None:
            stmt = stmt.where(Canteen.district_code.in_(list(districts)))
        return [
            {
                "canteen_id": r[0],
                "canteen_code": r[1],
                "canteen_name": r[2],
                "district_code": r[3],
                "meals": int(r[4]),
                "gov_subsidy_fen": int(r[5] or 0),
                "list_price_fen": int(r[6] or 0),
                "self_pay_fen": int(r[7] or 0),
            }
            for r in (await self.session.execute(stmt)).all()
        ]
