"""Demo data flavoured after 德州市 (Dezhou): its 11 county-level districts, a few dozen canteens of the three types,
31 charity funds over 7 purposes (乐享桑榆 is the general meal pool) and demo accounts. Idempotent: running it again
adds nothing that is already there. Names of canteens, streets and funds are illustrative, not real institutions."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import AuthRepository
from app.auth.schemas import GrantRole
from app.auth.service import auth_service
from app.db import unit_of_work
from app.models import Canteen, District, Fund
from app.models.role_grant import Role

CITY = "德州市"

# code, name, abbreviation for canteen codes, (lat, lng) of the seat
DISTRICTS: list[tuple[str, str, str, tuple[float, float]]] = [
    ("371402", "德城区", "DC", (37.4536, 116.3075)),
    ("371403", "陵城区", "LC", (37.3357, 116.5762)),
    ("371422", "宁津县", "NJ", (37.6522, 116.8003)),
    ("371423", "庆云县", "QY", (37.7756, 117.3854)),
    ("371424", "临邑县", "LY", (37.1899, 116.8665)),
    ("371425", "齐河县", "QH", (36.7950, 116.7583)),
    ("371426", "平原县", "PY", (37.1651, 116.4340)),
    ("371427", "夏津县", "XJ", (36.9484, 116.0019)),
    ("371428", "武城县", "WC", (37.2131, 116.0693)),
    ("371481", "乐陵市", "LL", (37.7300, 117.2310)),
    ("371482", "禹城市", "YC", (36.9340, 116.6380)),
]

_URBAN_STREETS = [
    "新湖街道",
    "天衢街道",
    "广川街道",
    "运河街道",
    "新华街道",
    "宋官屯街道",
    "二屯镇",
    "黄河涯镇",
]
_COUNTY_STREETS = ["城关街道", "市中街道", "胡家街道", "开发区街道"]
_VILLAGES = ["王庄村", "李家寨村", "前屯村", "大柳树村", "后刘村"]

# purpose, names. The first meal fund is the general meal pool.
FUNDS: list[tuple[str, list[str]]] = [
    (
        "meal",
        [
            "乐享桑榆助餐基金",
            "德城区老年助餐慈善基金",
            "陵城区幸福食堂基金",
            "齐河县孝善食堂基金",
            "乐陵市老饭桌基金",
            "禹城市长者饭堂基金",
            "企业冠名爱心午餐基金",
            "社区邻里助餐基金",
        ],
    ),
    (
        "elderly",
        [
            "夕阳红敬老基金",
            "失能老人照护基金",
            "空巢老人关爱基金",
            "百岁老人慰问基金",
            "孝善德州基金",
            "银龄互助基金",
        ],
    ),
    ("medical", ["大病救助基金", "慢病用药援助基金", "康复辅具基金", "眼健康光明基金"]),
    ("education", ["春蕾助学基金", "困境儿童成长基金", "乡村教师关爱基金", "大学新生助学基金"]),
    ("poverty", ["城乡困难群众救助基金", "冬季送温暖基金", "低收入家庭帮扶基金", "临时救助基金"]),
    ("disability", ["残疾人康复基金", "残疾人就业扶持基金", "助残出行基金"]),
    ("disaster", ["防灾救灾应急基金", "灾后重建基金"]),
]

_FUND_PREFIX = {
    "meal": "MEAL",
    "elderly": "ELD",
    "medical": "MED",
    "education": "EDU",
    "poverty": "POV",
    "disability": "DIS",
    "disaster": "DST",
}

DEMO_ACCOUNTS = {
    "demo_admin": "慈善总会管理员（federation_admin）",
    "demo_civil": "德城区民政工作人员（civil_affairs, 371402）",
    "demo_operator": "第一家示范食堂的工作人员（operator）",
    "demo_family": "家属（绑定演示长者）",
    "demo_elder_1": "长者本人",
    "demo_donor": "爱心人士（捐赠者）",
}

# Later domains add their demo data here: "module:function", each an async fn(session) -> list[str].
EXTRA_SEEDS = [
    "app.bookings.seed:seed_demo_meals",
    "app.donations.seed:seed_demo_donations",
]


def _canteens() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for code, name, abbr, (lat, lng) in DISTRICTS:
        urban = code in ("371402", "371403")
        count = 8 if code == "371402" else 3
        for i in range(count):
            if code == "371402":
                kind = "institution" if i == 7 else "urban_community"
                street = _URBAN_STREETS[i % len(_URBAN_STREETS)]
                community = f"{street[:2]}第{i + 1}社区"
            elif i == 0:
                kind = "urban_community"
                street = _COUNTY_STREETS[0]
                community = "城关社区"
            else:
                kind = "rural_happiness_home"
                street = _COUNTY_STREETS[i % len(_COUNTY_STREETS)] if urban else f"{name[:2]}第{i}乡镇"
                community = _VILLAGES[(i + len(abbr)) % len(_VILLAGES)]
            label = {
                "urban_community": "助老幸福食堂",
                "rural_happiness_home": "农村幸福院",
                "institution": "颐养中心食堂",
            }[kind]
            rows.append(
                {
                    "code": f"{abbr}{i + 1:02d}",
                    "name": f"{name}{community}{label}",
                    "type": kind,
                    "district_code": code,
                    "street": street,
                    "community": community,
                    "address": f"{CITY}{name}{street}{community}{10 + i}号",
                    "phone": "12343",
                    # spread around the seat, roughly 0.5–3 km apart
                    "lat": round(lat + 0.009 * ((i % 3) - 1) + 0.004 * (i // 3), 6),
                    "lng": round(lng + 0.011 * ((i % 4) - 1.5), 6),
                    "delivery_enabled": kind != "institution",
                    "delivery_fee_fen": 200 if kind == "urban_community" else 0,
                    "delivery_radius_m": 2000 if kind == "urban_community" else 1000,
                }
            )
    return rows


async def seed_base(session: AsyncSession) -> list[str]:
    added = {"districts": 0, "canteens": 0, "funds": 0}
    for code, name, _, _ in DISTRICTS:
        if await session.get(District, code) is None:
            session.add(District(code=code, name=name, city=CITY))
            added["districts"] += 1
    await session.flush()
    existing = set((await session.execute(select(Canteen.code))).scalars())
    for row in _canteens():
        if row["code"] not in existing:
            session.add(Canteen(**row))
            added["canteens"] += 1
    existing_funds = set((await session.execute(select(Fund.code))).scalars())
    for purpose, names in FUNDS:
        for i, fund_name in enumerate(names):
            code = f"F{_FUND_PREFIX[purpose]}{i + 1:02d}"
            if code in existing_funds:
                continue
            general = purpose == "meal" and i == 0
            session.add(
                Fund(
                    code=code,
                    name=fund_name,
                    purpose=purpose,
                    is_general_meal_pool=general,
                    description="市慈善总会“乐享桑榆”老年助餐公共资金池，捐款按先到先用补贴长者餐费"
                    if general
                    else f"{fund_name}（演示数据）",
                )
            )
            added["funds"] += 1
    await session.flush()
    return [f"区县 +{added['districts']}，食堂 +{added['canteens']}，慈善基金 +{added['funds']}"]


async def _ensure_role(
    session: AsyncSession,
    openid: str,
    role: Role,
    *,
    canteen_code: str | None = None,
    district: str | None = None,
) -> bool:
    repo = AuthRepository(session)
    user = await repo.get_or_create_user(openid)
    canteen_id = None
    if canteen_code:
        canteen_id = (
            await session.execute(select(Canteen.id).where(Canteen.code == canteen_code))
        ).scalar_one()
    if await repo.find_active_grant(user.id, role.value, canteen_id, district):
        return False
    await auth_service.grant_role(
        session,
        None,
        GrantRole(openid=openid, role=role, canteen_id=canteen_id, district=district),
        actor_label="seed-demo",
        channel="system",
    )
    return True


async def seed_accounts(session: AsyncSession) -> list[str]:
    await _ensure_role(session, "demo_admin", Role.federation_admin)
    await _ensure_role(session, "demo_civil", Role.civil_affairs, district="371402")
    await _ensure_role(session, "demo_operator", Role.operator, canteen_code="DC01")
    for openid in DEMO_ACCOUNTS:
        await AuthRepository(session).get_or_create_user(openid)
    lines = [
        f"演示账号：{openid} — {what}（登录 code：sbx:{openid}）" for openid, what in DEMO_ACCOUNTS.items()
    ]
    return lines + await seed_staff(session)


# Console (password) accounts for the demo. Never created in production: seed-demo refuses to run there.
DEMO_STAFF = [
    ("demo_accountant", "慈善总会会计（演示）", "federation_admin", None),
    ("demo_civil_staff", "德城区民政（演示）", "civil_affairs", "371402"),
]
DEMO_STAFF_PASSWORD = "sangyu-demo-2026"


async def seed_staff(session: AsyncSession) -> list[str]:
    from app.console.repository import StaffRepository
    from app.console.schemas import StaffInput
    from app.console.service import console_service
    from app.models.staff_account import StaffRole

    lines = []
    for username, display_name, role, district in DEMO_STAFF:
        if await StaffRepository(session).get_by_username(username) is None:
            await console_service.create_staff(
                session,
                StaffInput(
                    username=username, display_name=display_name, role=StaffRole(role), district_code=district
                ),
                DEMO_STAFF_PASSWORD,
                actor_label="seed-demo",
                channel="system",
            )
        lines.append(f"管理后台 /admin 演示账号：{username} / {DEMO_STAFF_PASSWORD}（{display_name}）")
    return lines


def _extra_seed(path: str) -> Callable[[AsyncSession], Awaitable[list[str]]] | None:
    module_name, fn_name = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # the domain is not installed in this build; any other missing module is a real error
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        return None
    fn: Callable[[AsyncSession], Awaitable[list[str]]] = getattr(module, fn_name)
    return fn


async def seed_demo() -> list[str]:
    from app.config import ConfigurationError, get_settings

    if get_settings().is_production:
        raise ConfigurationError("seed-demo loads demo accounts with known passwords: refused in production")
    lines: list[str] = []
    async with unit_of_work() as session:
        lines += await seed_base(session)
        lines += await seed_accounts(session)
        for path in EXTRA_SEEDS:
            fn = _extra_seed(path)
            if fn is not None:
                lines += await fn(session)
    return lines


async def create_admin(openid: str) -> bool:
    async with unit_of_work() as session:
        return await _ensure_role(session, openid, Role.federation_admin)
