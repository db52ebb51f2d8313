"""Government subsidy and charity eligibility for one elder's meal, from the policy in force (DESIGN 3.4).

gov = min(tier amount, price − minimum self-pay), only for verified elders, only at canteens in their 户籍
district when the policy says so, only for subsidized slots, only when the price reaches the minimum spend,
and only for the first subsidized meal of the business day (the caller says whether one exists)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth.subject import Subject
from app.elders.service import effective_categories
from app.exceptions import NotFound
from app.kit.money import format_yuan
from app.kit.time import age_on
from app.models import Canteen, District, Elder, SubsidyPolicy, SubsidyTier
from app.subsidy.repository import SubsidyRepository
from app.subsidy.schemas import PolicyIn, PolicyOut, TierOut


@dataclass
class GovDecision:
    amount_fen: int = 0
    tier_name: str | None = None
    charity_eligible: bool = False
    charity_cap_fen: int = 0
    notes: list[str] = field(default_factory=list)


def best_tier(tiers: Sequence[SubsidyTier], *, age: int, categories: Sequence[str]) -> SubsidyTier | None:
    matching = [
        t
        for t in tiers
        if age >= t.min_age
        and (t.max_age is None or age <= t.max_age)
        and (not t.categories or any(c in categories for c in t.categories))
    ]
    return max(matching, key=lambda t: t.amount_fen, default=None)


def charity_eligible(policy: SubsidyPolicy, *, age: int, categories: Sequence[str]) -> bool:
    for rule in policy.charity_rules or []:
        if rule.get("category") in categories and age >= int(rule.get("min_age") or 0):
            return True
    return False


def decide(
    *,
    policy: SubsidyPolicy | None,
    tiers: Sequence[SubsidyTier],
    elder: Elder,
    canteen: Canteen,
    service_date: date,
    slot: str,
    price_fen: int,
    already_subsidized_today: bool,
) -> GovDecision:
    decision = GovDecision()
    if policy is None:
        decision.notes.append("当地暂无助餐补贴政策，按原价")
        return decision
    if elder.verification_status != "verified":
        decision.notes.append("长者资格尚未核实，暂按原价；核实后即可享受补贴")
        return decision
    if already_subsidized_today:
        decision.notes.append("今天已享受过一次补贴（每人每天限一餐），本餐按原价")
        return decision
    if slot not in (policy.subsidized_slots or []):
        decision.notes.append("该餐次不在补贴范围内，按原价")
        return decision
    if policy.require_hukou_district and elder.hukou_district_code != canteen.district_code:
        decision.notes.append("在户籍所在区县以外就餐不享受政府补贴")
        return decision
    age = age_on(elder.birth_date, service_date)
    categories = effective_categories(elder, service_date)
    if price_fen < policy.min_spend_fen:
        decision.notes.append(f"消费满 {format_yuan(policy.min_spend_fen)} 才能享受补贴")
    else:
        tier = best_tier(tiers, age=age, categories=categories)
        if tier is None:
            decision.notes.append("不符合补贴条件，按原价")
        else:
            decision.amount_fen = max(0, min(tier.amount_fen, price_fen - policy.min_self_pay_fen))
            decision.tier_name = tier.name
    if charity_eligible(policy, age=age, categories=categories):
        decision.charity_eligible = True
        decision.charity_cap_fen = policy.charity_cap_fen
    return decision


async def load_policy(
    session: AsyncSession, canteen: Canteen, on: date
) -> tuple[SubsidyPolicy | None, Sequence[SubsidyTier]]:
    return await SubsidyRepository(session).policy_for_district(canteen.district_code, on)


def policy_out(policy: SubsidyPolicy, tiers: Sequence[SubsidyTier]) -> PolicyOut:
    return PolicyOut(
        id=policy.id,
        name=policy.name,
        city=policy.city,
        district_code=policy.district_code,
        effective_from=policy.effective_from,
        effective_to=policy.effective_to,
        min_self_pay_fen=policy.min_self_pay_fen,
        min_spend_fen=policy.min_spend_fen,
        require_hukou_district=policy.require_hukou_district,
        subsidized_slots=list(policy.subsidized_slots),
        charity_rules=list(policy.charity_rules),
        charity_cap_fen=policy.charity_cap_fen,
        tiers=[
            TierOut(
                name=t.name,
                min_age=t.min_age,
                max_age=t.max_age,
                categories=t.categories,
                amount_fen=t.amount_fen,
            )
            for t in tiers
        ],
    )


class SubsidyService:
    async def create_policy(
        self, session: AsyncSession, subject: Subject | None, payload: PolicyIn
    ) -> PolicyOut:
        if payload.district_code and await session.get(District, payload.district_code) is None:
            raise NotFound("找不到这个区县", code="DistrictNotFound")
        repo = SubsidyRepository(session)
        policy = SubsidyPolicy(
            name=payload.name,
            city=payload.city,
            district_code=payload.district_code,
            effective_from=payload.effective_from,
            effective_to=payload.effective_to,
            min_self_pay_fen=payload.min_self_pay_fen,
            min_spend_fen=payload.min_spend_fen,
            require_hukou_district=payload.require_hukou_district,
            subsidized_slots=[s.value for s in payload.subsidized_slots],
            charity_rules=[r.model_dump(mode="json", exclude_none=True) for r in payload.charity_rules],
            charity_cap_fen=payload.charity_cap_fen,
        )
        repo.add(policy)
        await session.flush()
        tiers = []
        for t in payload.tiers:
            tier = SubsidyTier(
                policy_id=policy.id,
                name=t.name,
                min_age=t.min_age,
                max_age=t.max_age,
                categories=[c.value for c in t.categories],
                amount_fen=t.amount_fen,
            )
            repo.add(tier)
            tiers.append(tier)
        await session.flush()
        await audit.record(
            session,
            actor_user_id=subject.user_id if subject else None,
            actor_label=subject.label if subject else "system",
            action="subsidy_policy.create",
            target_type="subsidy_policy",
            target_id=policy.id,
            after=payload.model_dump(mode="json"),
        )
        return policy_out(policy, tiers)

    async def list_policies(self, session: AsyncSession) -> list[PolicyOut]:
        repo = SubsidyRepository(session)
        return [policy_out(p, await repo.tiers(p.id)) for p in await repo.list_policies()]


subsidy_service = SubsidyService()
