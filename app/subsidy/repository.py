from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.sql import load_entities
from app.models import District, SubsidyPolicy, SubsidyTier

# built once: every booking request prices its meal through it
_POLICY_FOR_DISTRICT = (
    select(SubsidyPolicy, SubsidyTier)
    .outerjoin(SubsidyTier, SubsidyTier.policy_id == SubsidyPolicy.id)
    .where(
        SubsidyPolicy.id
        == (
            select(SubsidyPolicy.id)
            .join(District, District.city == SubsidyPolicy.city)
            .where(
                District.code == bindparam("district_code"),
                SubsidyPolicy.is_active.is_(True),
                or_(
                    SubsidyPolicy.district_code == bindparam("district_code"),
                    SubsidyPolicy.district_code.is_(None),
                ),
                SubsidyPolicy.effective_from <= bindparam("on"),
                or_(SubsidyPolicy.effective_to.is_(None), SubsidyPolicy.effective_to > bindparam("on")),
            )
            .order_by(SubsidyPolicy.district_code.is_(None), SubsidyPolicy.effective_from.desc())
            .limit(1)
            .scalar_subquery()
        )
    )
    .order_by(SubsidyTier.amount_fen.desc())
)


class SubsidyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def policy_for_district(
        self, district_code: str, on: date
    ) -> tuple[SubsidyPolicy | None, list[SubsidyTier]]:
        """The policy in force for a district on a day: the district's own if it has one, else its city's; the
        latest start wins. With its tiers (largest amount first), in one query."""
        rows = await load_entities(
            self.session, _POLICY_FOR_DISTRICT, {"district_code": district_code, "on": on}
        )
        if not rows:
            return None, []
        return rows[0][0], [row[1] for row in rows if row[1] is not None]

    async def tiers(self, policy_id: object) -> Sequence[SubsidyTier]:
        stmt = (
            select(SubsidyTier)
            .where(SubsidyTier.policy_id == policy_id)
            .order_by(SubsidyTier.amount_fen.desc())
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def list_policies(self) -> Sequence[SubsidyPolicy]:
        stmt = select(SubsidyPolicy).order_by(SubsidyPolicy.city, SubsidyPolicy.effective_from.desc())
        return (await self.session.execute(stmt)).scalars().all()

    def add(self, obj: object) -> None:
        self.session.add(obj)
