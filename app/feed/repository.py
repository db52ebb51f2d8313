"""SQL for the public feed and the transparency numbers. Reads the ledger's tables (lots, holds, allocations,
accounts) and the donations; writes only feed events, their grow-in-place keys and donor digests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, String, and_, cast, distinct, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger.repository import LedgerRepository
from app.models import (
    Allocation,
    Canteen,
    CharityHold,
    District,
    Donation,
    DonationLot,
    DonationTarget,
    DonorDigest,
    FeedAggregate,
    FeedEvent,
    Fund,
    LedgerAccount,
    Menu,
    MenuItem,
    SubscribeQuota,
    User,
)

PAID_STATUSES = ("paid", "partially_refunded", "refunded")
GENERAL_MEAL_POOL = "pool:general_meal"
FEE_ACCOUNT = "expense:wechat_fee"


def _shanghai_day(column: Any) -> Any:
    return cast(func.timezone("Asia/Shanghai", column), Date)


class FeedRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------ events

    async def page(
        self, *, before_id: int | None, limit: int, kinds: Sequence[str] | None = None
    ) -> list[FeedEvent]:
        """Newest first by id: ids only grow, so a cursor (the last id seen) never skips or repeats an event
        while new ones arrive on top."""
        stmt = select(FeedEvent).order_by(FeedEvent.id.desc()).limit(limit)
        if before_id is not None:
            stmt = stmt.where(FeedEvent.id < before_id)
        if kinds:
            stmt = stmt.where(FeedEvent.kind.in_(kinds))
        return list((await self.session.execute(stmt)).scalars())

    async def after(self, after_id: int, limit: int) -> list[FeedEvent]:
        stmt = select(FeedEvent).where(FeedEvent.id > after_id).order_by(FeedEvent.id).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def for_canteen(self, canteen_code: str, limit: int) -> list[FeedEvent]:
        stmt = (
            select(FeedEvent)
            .where(FeedEvent.payload["canteen_code"].astext == canteen_code)
            .order_by(FeedEvent.id.desc())
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def add_event(self, kind: str, payload: dict[str, Any], occurred_at: datetime) -> FeedEvent:
        event = FeedEvent(kind=kind, payload=payload, occurred_at=occurred_at)
        self.session.add(event)
        await self.session.flush()
        return event

    async def claim_aggregate(self, key: str, event_id: int) -> bool:
        """Link ``key`` to a just-inserted event; False when another transaction already owns the key (the
        caller then updates that event instead). Waits for a concurrent owner to commit or roll back."""
        stmt = (
            insert(FeedAggregate)
            .values(key=key, event_id=event_id)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(FeedAggregate.key)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def aggregate_event_id(self, key: str) -> int | None:
        stmt = select(FeedAggregate.event_id).where(FeedAggregate.key == key).with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def lock_event(self, event_id: int) -> FeedEvent | None:
        stmt = select(FeedEvent).where(FeedEvent.id == event_id).with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def set_payload(self, event_id: int, key: str, payload: dict[str, Any]) -> None:
        await self.session.execute(update(FeedEvent).where(FeedEvent.id == event_id).values(payload=payload))
        await self.session.execute(
            update(FeedAggregate).where(FeedAggregate.key == key).values(updated_at=func.now())
        )

    async def delete_event(self, event: FeedEvent) -> None:
        await self.session.delete(event)
        await self.session.flush()

    # ------------------------------------------------------------ names

    async def canteen_with_district(self, canteen_id: uuid.UUID) -> tuple[Canteen, str] | None:
        stmt = (
            select(Canteen, District.name)
            .join(District, District.code == Canteen.district_code)
            .where(Canteen.id == canteen_id)
        )
        row = (await self.session.execute(stmt)).first()
        return (row[0], row[1]) if row else None

    async def canteen_by_code(self, code: str) -> tuple[Canteen, str] | None:
        stmt = (
            select(Canteen, District.name)
            .join(District, District.code == Canteen.district_code)
            .where(Canteen.code == code, Canteen.is_active.is_(True))
        )
        row = (await self.session.execute(stmt)).first()
        return (row[0], row[1]) if row else None

    # ------------------------------------------------------------ totals

    async def lot_totals(self) -> dict[str, int]:
        stmt = select(
            func.count(DonationLot.id),
            func.coalesce(func.sum(DonationLot.amount_fen), 0),
            func.coalesce(func.sum(DonationLot.allocated_fen), 0),
            func.coalesce(func.sum(DonationLot.held_fen), 0),
            func.coalesce(func.sum(DonationLot.refunded_fen), 0),
        )
        row = (await self.session.execute(stmt)).one()
        return {
            "donations": int(row[0]),
            "donated_fen": int(row[1]),
            "spent_fen": int(row[2]),
            "held_fen": int(row[3]),
            "refunded_fen": int(row[4]),
        }

    async def donors_count(self) -> int:
        who = func.coalesce(
            cast(Donation.donor_user_id, String),
            "d:" + cast(Donation.id, String),
        )
        stmt = select(func.count(distinct(who))).where(Donation.status.in_(PAID_STATUSES))
        return int((await self.session.execute(stmt)).scalar_one())

    async def account_balances(self) -> list[tuple[str, str, int, int]]:
        """(code, kind, balance, held) of every pool, fund and fee account, exact whether or not the latest
        entries are sealed yet (the fee account's balance is summed by the sealer)."""
        stmt = select(
            LedgerAccount.code, LedgerAccount.kind, LedgerAccount.balance_fen, LedgerAccount.held_fen
        ).where(or_(LedgerAccount.kind.in_(("pool", "fund")), LedgerAccount.code == FEE_ACCOUNT))
        rows = [(r[0], r[1], int(r[2]), int(r[3])) for r in await self.session.execute(stmt)]
        pending = await LedgerRepository(self.session).unsealed_sums([FEE_ACCOUNT])
        return [(code, kind, bal + pending.get(code, 0), held) for code, kind, bal, held in rows]

    async def meals_funded(self) -> tuple[int, int]:
        stmt = select(func.count(CharityHold.id), func.coalesce(func.sum(CharityHold.held_fen), 0)).where(
            CharityHold.status == "posted", CharityHold.held_fen > 0
        )
        row = (await self.session.execute(stmt)).one()
        return int(row[0]), int(row[1])

    async def lots_by_account(self) -> dict[str, dict[str, int]]:
        stmt = select(
            DonationLot.account_code,
            func.count(DonationLot.id),
            func.sum(DonationLot.amount_fen),
            func.sum(DonationLot.allocated_fen),
            func.sum(DonationLot.refunded_fen),
        ).group_by(DonationLot.account_code)
        return {
            r[0]: {
                "donations": int(r[1]),
                "donated_fen": int(r[2]),
                "spent_fen": int(r[3]),
                "refunded_fen": int(r[4]),
            }
            for r in await self.session.execute(stmt)
        }

    async def funds(self) -> list[Fund]:
        stmt = (
            select(Fund).where(Fund.is_active.is_(True)).order_by(Fund.is_general_meal_pool.desc(), Fund.code)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def meals_by_canteen(self) -> dict[uuid.UUID, tuple[int, int]]:
        stmt = (
            select(CharityHold.canteen_id, func.count(CharityHold.id), func.sum(CharityHold.held_fen))
            .where(CharityHold.status == "posted", CharityHold.held_fen > 0)
            .group_by(CharityHold.canteen_id)
        )
        return {r[0]: (int(r[1]), int(r[2])) for r in await self.session.execute(stmt)}

    async def canteens(self, ids: Sequence[uuid.UUID]) -> list[tuple[Canteen, str]]:
        if not ids:
            return []
        stmt = (
            select(Canteen, District.name)
            .join(District, District.code == Canteen.district_code)
            .where(Canteen.id.in_(ids))
            .order_by(Canteen.code)
        )
        return [(r[0], r[1]) for r in await self.session.execute(stmt)]

    async def pool_canteen_ids(self) -> list[uuid.UUID]:
        stmt = select(LedgerAccount.canteen_id).where(
            LedgerAccount.kind == "pool", LedgerAccount.canteen_id.is_not(None)
        )
        return [r[0] for r in await self.session.execute(stmt)]

    async def daily_series(self, since: date) -> dict[date, tuple[int, int]]:
        """Per Asia/Shanghai day since ``since``: (donated, spent on meals)."""
        paid_day = _shanghai_day(DonationLot.paid_at)
        donated = (
            select(paid_day.label("day"), func.sum(DonationLot.amount_fen).label("fen"))
            .where(paid_day >= since)
            .group_by(paid_day)
        )
        spent_day = _shanghai_day(CharityHold.resolved_at)
        spent = (
            select(spent_day.label("day"), func.sum(CharityHold.held_fen).label("fen"))
            .where(CharityHold.status == "posted", CharityHold.held_fen > 0, spent_day >= since)
            .group_by(spent_day)
        )
        out: dict[date, tuple[int, int]] = {}
        for day, fen in await self.session.execute(donated):
            out[day] = (int(fen), out.get(day, (0, 0))[1])
        for day, fen in await self.session.execute(spent):
            out[day] = (out.get(day, (0, 0))[0], int(fen))
        return out

    # ------------------------------------------------------------ canteen page

    async def account(self, code: str) -> LedgerAccount | None:
        return await self.session.get(LedgerAccount, code)

    async def week_menus(
        self, canteen_id: uuid.UUID, start: date, end: date
    ) -> list[tuple[Menu, list[MenuItem]]]:
        menus = list(
            (
                await self.session.execute(
                    select(Menu)
                    .where(
                        Menu.canteen_id == canteen_id,
                        Menu.status == "published",
                        Menu.service_date >= start,
                        Menu.service_date <= end,
                    )
                    .order_by(Menu.service_date, Menu.slot)
                )
            ).scalars()
        )
        items: dict[uuid.UUID, list[MenuItem]] = {m.id: [] for m in menus}
        if menus:
            stmt = select(MenuItem).where(MenuItem.menu_id.in_(list(items))).order_by(MenuItem.position)
            for item in (await self.session.execute(stmt)).scalars():
                items[item.menu_id].append(item)
        return [(m, items[m.id]) for m in menus]

    async def canteen_targets(self, canteen_id: uuid.UUID) -> list[DonationTarget]:
        stmt = (
            select(DonationTarget)
            .where(DonationTarget.canteen_id == canteen_id, DonationTarget.is_active.is_(True))
            .order_by(DonationTarget.code)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def recent_donations_to(self, canteen_id: uuid.UUID, limit: int) -> list[Donation]:
        stmt = (
            select(Donation)
            .join(DonationTarget, DonationTarget.id == Donation.target_id)
            .where(DonationTarget.canteen_id == canteen_id, Donation.status.in_(PAID_STATUSES))
            .order_by(Donation.paid_at.desc())
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    # ------------------------------------------------------------ donors

    async def trace_rows(self, donation_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        """Per donation: its lot's parts, the meals it paid (part of) and where."""
        if not donation_ids:
            return {}
        out: dict[uuid.UUID, dict[str, Any]] = {}
        lots = select(DonationLot).where(DonationLot.donation_id.in_(donation_ids))
        for lot in (await self.session.execute(lots)).scalars():
            out[lot.donation_id] = {
                "paid_fen": lot.amount_fen,
                "spent_fen": lot.allocated_fen,
                "held_fen": lot.held_fen,
                "refunded_fen": lot.refunded_fen,
                "meals": 0,
                "canteen_ids": [],
                "last_meal_date": None,
            }
        stmt = (
            select(
                Allocation.donation_id,
                func.count(distinct(Allocation.hold_id)),
                func.array_agg(distinct(CharityHold.canteen_id)),
                func.max(Allocation.meta["service_date"].astext),
            )
            .join(CharityHold, CharityHold.id == Allocation.hold_id)
            .where(Allocation.donation_id.in_(donation_ids), Allocation.status == "posted")
            .group_by(Allocation.donation_id)
        )
        for donation_id, meals, canteen_ids, last in await self.session.execute(stmt):
            if donation_id in out:
                out[donation_id].update(
                    meals=int(meals), canteen_ids=list(canteen_ids or []), last_meal_date=last
                )
        return out

    async def canteen_names(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        if not ids:
            return {}
        stmt = select(Canteen.id, Canteen.name).where(Canteen.id.in_(ids))
        return {r[0]: r[1] for r in await self.session.execute(stmt)}

    async def grant_digest_quota(self, user_id: uuid.UUID, template_id: str) -> int:
        stmt = (
            insert(SubscribeQuota)
            .values(id=uuid.uuid4(), user_id=user_id, template_id=template_id, granted=1, used=0)
            .on_conflict_do_update(
                index_elements=["user_id", "template_id"], set_={"granted": SubscribeQuota.granted + 1}
            )
            .returning(SubscribeQuota.granted - SubscribeQuota.used)
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def digest_quota(self, user_id: uuid.UUID, template_id: str) -> int:
        stmt = select(SubscribeQuota.granted - SubscribeQuota.used).where(
            SubscribeQuota.user_id == user_id, SubscribeQuota.template_id == template_id
        )
        return int((await self.session.execute(stmt)).scalar_one_or_none() or 0)

    async def use_quota(self, user_id: uuid.UUID, template_id: str) -> bool:
        stmt = (
            update(SubscribeQuota)
            .where(
                SubscribeQuota.user_id == user_id,
                SubscribeQuota.template_id == template_id,
                SubscribeQuota.used < SubscribeQuota.granted,
            )
            .values(used=SubscribeQuota.used + 1)
            .returning(SubscribeQuota.id)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def digest_candidates(self, template_id: str, start: datetime, end: datetime) -> list[uuid.UUID]:
        """Donors who allowed the digest (quota left) and whose gifts paid for meals served in [start, end)."""
        stmt = (
            select(distinct(Donation.donor_user_id))
            .join(Allocation, Allocation.donation_id == Donation.id)
            .join(
                SubscribeQuota,
                and_(
                    SubscribeQuota.user_id == Donation.donor_user_id,
                    SubscribeQuota.template_id == template_id,
                    SubscribeQuota.used < SubscribeQuota.granted,
                ),
            )
            .where(
                Donation.donor_user_id.is_not(None),
                Allocation.status == "posted",
                Allocation.resolved_at >= start,
                Allocation.resolved_at < end,
            )
        )
        return [r[0] for r in await self.session.execute(stmt)]

    async def donor_week(self, user_id: uuid.UUID, start: datetime, end: datetime) -> tuple[int, int]:
        """(meals, fen) the donor's gifts paid for in [start, end)."""
        stmt = (
            select(
                func.count(distinct(Allocation.hold_id)), func.coalesce(func.sum(Allocation.amount_fen), 0)
            )
            .join(Donation, Donation.id == Allocation.donation_id)
            .where(
                Donation.donor_user_id == user_id,
                Allocation.status == "posted",
                Allocation.resolved_at >= start,
                Allocation.resolved_at < end,
            )
        )
        row = (await self.session.execute(stmt)).one()
        return int(row[0]), int(row[1])

    async def claim_digest(
        self, user_id: uuid.UUID, week_start: date, meals: int, amount_fen: int
    ) -> uuid.UUID | None:
        stmt = (
            insert(DonorDigest)
            .values(
                id=uuid.uuid4(),
                user_id=user_id,
                week_start=week_start,
                meals=meals,
                amount_fen=amount_fen,
                status="pending",
            )
            .on_conflict_do_nothing(index_elements=["user_id", "week_start"])
            .returning(DonorDigest.id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def set_digest(self, digest_id: uuid.UUID, **values: Any) -> None:
        await self.session.execute(update(DonorDigest).where(DonorDigest.id == digest_id).values(**values))

    async def user(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)
