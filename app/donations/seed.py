"""Demo donation targets: one per canteen, one per meal fund, one for the general meal pool (乐享桑榆)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.donations.repository import DonationRepository
from app.models import Canteen, DonationTarget, Fund

GENERAL_CODE = "lxsy"


async def seed_demo_donations(session: AsyncSession) -> list[str]:
    """Idempotent: only targets that do not exist yet are added. Returns summary lines."""
    repo = DonationRepository(session)
    have_canteens = await repo.canteen_ids_with_targets()
    have_funds = await repo.fund_ids_with_targets()
    taken = {t.code for t in await repo.list_targets()}
    added: list[str] = []

    def code_for(prefix: str, base: str) -> str:
        code = f"{prefix}{base}"[:16]
        n = 1
        while code in taken:
            n += 1
            code = f"{prefix}{base}"[: 16 - len(str(n))] + str(n)
        taken.add(code)
        return code

    canteens = (
        await session.execute(select(Canteen).where(Canteen.is_active.is_(True)).order_by(Canteen.code))
    ).scalars()
    for canteen in canteens:
        if canteen.id in have_canteens:
            continue
        target = DonationTarget(
            code=code_for("c", canteen.code),
            kind="canteen",
            canteen_id=canteen.id,
            title=canteen.name,
            description=f"为{canteen.name}的困难长者助一餐",
            suggested_amounts_fen=[1000, 3000, 10000],
        )
        await repo.add(target)
        added.append(target.code)

    funds = (
        await session.execute(
            select(Fund)
            .where(Fund.is_active.is_(True), Fund.purpose == "meal", Fund.is_general_meal_pool.is_(False))
            .order_by(Fund.code)
        )
    ).scalars()
    for fund in funds:
        if fund.id in have_funds:
            continue
        target = DonationTarget(
            code=code_for("f", fund.code),
            kind="fund",
            fund_id=fund.id,
            title=fund.name,
            description=fund.description or f"{fund.name}：助餐专项",
            suggested_amounts_fen=[1000, 5000, 20000],
        )
        await repo.add(target)
        added.append(target.code)

    if await repo.general_target() is None:
        target = DonationTarget(
            code=code_for("", GENERAL_CODE),
            kind="general",
            title="乐享桑榆助餐总池",
            description="全市长者助餐的公共爱心池，补贴各食堂困难长者的每一餐",
            suggested_amounts_fen=[1000, 3000, 10000],
        )
        await repo.add(target)
        added.append(target.code)

    total = len(taken)
    return [
        f"捐赠项目：新增 {len(added)} 个，共 {total} 个" + (f"（{', '.join(added[:5])}…）" if added else "")
    ]
