from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import bindparam, func, literal, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.sql import load_entities
from app.models import District, SubsidyPolicy, SubsidyTier


def policy_in_force(district_code: Any, on: Any) -> Any:
    """The id of the policy in force for a district on a day (expressions: parameters, or a column of the
    statement it is part of): the district's own if it has one, else its city's; the latest start wins."""
    return (
        select(SubsidyPolicy.id)
        .join(District, District.city == SubsidyPolicy.city)
        .where(
            District.code == district_code,
            SubsidyPolicy.is_active.is_(True),
            or_(SubsidyPolicy.district_code == district_code, SubsidyPolicy.district_code.is_(None)),
            SubsidyPolicy.effective_from <= on,
            or_(SubsidyPolicy.effective_to.is_(None), SubsidyPolicy.effective_to > on),
        )
        .order_by(SubsidyPolicy.district_code.is_(None), SubsidyPolicy.effective_from.desc())
        .limit(1)
        .scalar_subquery()
    )


# A policy's tiers as one JSON array, largest amount first (NULL: none): a column of a statement that reads the
# policy itself as a row, so its rows do not multiply by the tiers
TIER_FIELDS = ("name", "min_age", "max_age", "categories", "amount_fen")


def tiers_of(policy_id: Any) -> Any:
    fields = [part for name in TIER_FIELDS for part in (literal(name), getattr(SubsidyTier, name))]
    return (
        select(
            func.jsonb_agg(
                aggregate_order_by(func.jsonb_build_object(*fields), SubsidyTier.amount_fen.desc())
            )
        )
        .where(SubsidyTier.policy_id == policy_id)
        .scalar_subquery()
    )


def tiers_from(found: list[dict[str, Any]] | None) -> list[SubsidyTier]:
    """``tiers_of``'s array as tiers to decide from (not in any session; nothing reads or writes them
    back)."""
    return [SubsidyTier(**{name: tier[name] for name in TIER_FIELDS}) for tier in found or ()]


# built once
_POLICY_FOR_DISTRICT = select(SubsidyPolicy, tiers_of(SubsidyPolicy.id)).where(
    SubsidyPolicy.id == policy_in_force(bindparam("district_code"), bindparam("on"))
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
        return rows[0][0], tiers_from(rows[0][1])

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
