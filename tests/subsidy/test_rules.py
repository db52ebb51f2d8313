from __future__ import annotations

from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Canteen, Elder
from app.subsidy.repository import SubsidyRepository
from app.subsidy.service import decide, load_policy
from tests.fixtures.factories import create_canteen, create_district, create_elder, create_guangzhou_policy

DAY = date(2026, 12, 2)


async def _decide(
    session: AsyncSession, elder: Elder, canteen: Canteen, price: int = 1200, already: bool = False
) -> tuple[int, list[str], bool]:
    policy, tiers = await load_policy(session, canteen, DAY)
    d = decide(
        policy=policy,
        tiers=tiers,
        elder=elder,
        canteen=canteen,
        service_date=DAY,
        slot="lunch",
        price_fen=price,
        already_subsidized_today=already,
    )
    return d.amount_fen, d.notes, d.charity_eligible


async def test_guangzhou_tiers_and_rules(session: AsyncSession) -> None:
    home = (await create_district(session)).code
    away = (await create_district(session)).code
    canteen = await create_canteen(session, district_code=home)
    away_canteen = await create_canteen(session, district_code=away)
    await create_guangzhou_policy(session)
    poor, _ = await create_elder(session, district_code=home, birth=date(1960, 1, 1), categories=["低保"])
    old, _ = await create_elder(session, district_code=home, birth=date(1944, 1, 1), categories=["独居"])
    young, _ = await create_elder(session, district_code=home, birth=date(1960, 1, 1))
    pending, _ = await create_elder(session, district_code=home, verified=False)
    assert (await _decide(session, poor, canteen))[0] == 1100  # 困难60+: gov 11, self 1
    assert (await _decide(session, old, canteen))[0:3:2] == (900, True)  # 80+ 独居: charity-eligible
    assert (await _decide(session, young, canteen))[0:3:2] == (700, False)
    assert (await _decide(session, poor, canteen, price=800))[
        0
    ] == 700  # never below the 1元 minimum self-pay
    assert (await _decide(session, poor, away_canteen))[0] == 0  # 户籍 jurisdiction
    assert (await _decide(session, old, canteen, already=True))[0] == 0  # one subsidized meal a day
    assert (await _decide(session, pending, canteen))[0] == 0  # not verified yet


async def test_district_policy_and_versions_win(session: AsyncSession) -> None:
    district = (await create_district(session)).code
    canteen = await create_canteen(session, district_code=district)
    await create_guangzhou_policy(session, effective_from=date(2020, 1, 1))
    newer = await create_guangzhou_policy(session, effective_from=date(2026, 12, 1))
    repo = SubsidyRepository(session)
    found, tiers = await repo.policy_for_district(district, DAY)
    assert found is not None and found.id == newer.id
    assert [t.amount_fen for t in tiers] == sorted((t.amount_fen for t in tiers), reverse=True) and tiers
    older, _ = await repo.policy_for_district(district, date(2026, 11, 30))
    assert older is not None and older.id != newer.id
    assert await repo.policy_for_district("no-such-district", DAY) == (None, [])
    assert canteen.district_code == district
