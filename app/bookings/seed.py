"""Demo meal data on top of the Dezhou demo (districts, canteens and funds must exist): serving slots for every
canteen, the subsidy policy (modelled on Guangzhou's 12元 standard), this week's and next week's menus, and
verified demo elders of several categories bound to the demo family account. Idempotent."""

from __future__ import annotations

import uuid
from datetime import date, time, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import AuthRepository
from app.elders.idcard import make_id_number
from app.elders.service import ADDRESS_CONTEXT, CONSENT_TEXT, ID_CONTEXT, PHONE_CONTEXT, ensure_role, id_hmac
from app.kit.crypto import encrypt_pii
from app.kit.time import business_date, utcnow
from app.models import (
    Canteen,
    CanteenSlot,
    District,
    Elder,
    FamilyBinding,
    Menu,
    MenuItem,
    SlotDay,
    SubsidyPolicy,
)
from app.models.role_grant import Role
from app.subsidy.schemas import CharityRule, PolicyIn, TierIn
from app.subsidy.service import subsidy_service

POLICY_NAME = "助餐补贴（参照广州12元标准）"
SLOTS = {
    "breakfast": (time(7, 0), time(9, 0), 1, time(20, 0), 60),
    "lunch": (time(11, 0), time(13, 0), 1, time(16, 0), 120),
    "dinner": (time(17, 0), time(19, 0), 0, time(14, 0), 80),
}
LUNCH_DINNER = [
    ("一小荤两素套餐", "set_meal", 900, ["低盐"], [], False, None, "一小荤两素，米饭、例汤"),
    ("一大荤两素套餐", "set_meal", 1100, [], [], False, None, "一大荤两素，米饭、例汤"),
    ("一大荤一小荤两素套餐", "set_meal", 1300, [], ["鸡蛋"], False, None, "米饭、例汤"),
    ("今日特惠套餐", "set_meal", 800, ["软食"], [], True, 30, "困难长者优先，每日限量"),
    ("清蒸鲈鱼（小份）", "dish", 600, ["低盐"], ["鱼"], False, 20, ""),
    ("白灼青菜（小份）", "dish", 200, ["素食", "低盐", "低糖"], [], False, None, ""),
    ("花生拌菠菜（小份）", "dish", 300, ["素食"], ["花生"], False, None, ""),
]
BREAKFAST = [
    ("小米粥鸡蛋套餐", "set_meal", 300, ["软食", "低糖"], ["鸡蛋"], False, None, "小米粥、煮鸡蛋、小菜"),
    ("豆浆油条套餐", "set_meal", 400, [], ["大豆", "麸质"], False, None, ""),
    ("蒸南瓜（小份）", "dish", 200, ["软食", "素食"], [], False, None, ""),
]
DEMO_ELDERS = [
    # openid, name, birth, categories, diet tags, allergens
    ("demo_elder_1", "王秀英", date(1942, 5, 12), ["独居"], ["低盐"], []),
    ("demo_elder_2", "李建国", date(1957, 9, 3), ["低保"], ["低糖"], ["花生"]),
    ("demo_elder_3", "张桂兰", date(1950, 1, 20), ["特困"], [], []),
    ("demo_elder_4", "刘福生", date(1939, 11, 8), ["失能"], ["软食"], ["鱼"]),
]


async def _policy(session: AsyncSession, city: str) -> str:
    found = (
        await session.execute(
            select(SubsidyPolicy.id).where(SubsidyPolicy.city == city, SubsidyPolicy.name == POLICY_NAME)
        )
    ).first()
    if found:
        return "补贴政策：已存在"
    await subsidy_service.create_policy(
        session,
        None,
        PolicyIn(
            name=POLICY_NAME,
            city=city,
            effective_from=date(2024, 1, 1),
            min_self_pay_fen=100,
            tiers=[
                TierIn(
                    name="困难老人60+",
                    min_age=60,
                    categories=["特困", "低保", "低收入", "优抚"],
                    amount_fen=1100,
                ),
                TierIn(name="80岁以上", min_age=80, amount_fen=900),
                TierIn(name="60-79岁", min_age=60, max_age=79, amount_fen=700),
            ],
            charity_rules=[
                CharityRule(category="特困"),
                CharityRule(category="低保"),
                CharityRule(category="失能"),
                CharityRule(category="独居", min_age=80),
            ],
            charity_cap_fen=300,
        ),
    )
    return "补贴政策：参照广州12元标准（困难60+ 政府补11元/自付1元；80+ 补9元/自付3元；60–79 补7元/自付5元）"


async def seed_demo_meals(session: AsyncSession) -> list[str]:
    lines: list[str] = []
    canteens = (await session.execute(select(Canteen).order_by(Canteen.code))).scalars().all()
    if not canteens:
        return ["助餐演示数据：没有食堂，跳过"]
    first = canteens[0]
    district = await session.get(District, first.district_code)
    assert district is not None
    lines.append(await _policy(session, district.city))

    # slots
    existing = {(s.canteen_id, s.slot) for s in (await session.execute(select(CanteenSlot))).scalars()}
    slot_rows = [
        {
            "id": uuid.uuid4(),
            "canteen_id": c.id,
            "slot": slot,
            "serve_start": start,
            "serve_end": end,
            "cutoff_days_before": days,
            "cutoff_time": cutoff,
            "default_capacity": cap,
            "is_active": True,
        }
        for c in canteens
        for slot, (start, end, days, cutoff, cap) in SLOTS.items()
        if (c.id, slot) not in existing
    ]
    if slot_rows:
        await session.execute(insert(CanteenSlot), slot_rows)
    lines.append(f"供餐时段：新增 {len(slot_rows)} 个（早餐 7:00–9:00、午餐 11:00–13:00、晚餐 17:00–19:00）")

    # menus: this week and next week
    today = business_date()
    monday = today - timedelta(days=today.weekday())
    days = [monday + timedelta(days=i) for i in range(14)]
    have = {
        (m.canteen_id, m.service_date, m.slot)
        for m in (
            await session.execute(
                select(Menu).where(Menu.service_date >= days[0], Menu.service_date <= days[-1])
            )
        ).scalars()
    }
    menus, items, slot_days = [], [], []
    now = utcnow()
    for c in canteens:
        for d in days:
            for slot, (_, _, _, _, cap) in SLOTS.items():
                if (c.id, d, slot) in have:
                    continue
                menu_id = uuid.uuid4()
                menus.append(
                    {
                        "id": menu_id,
                        "canteen_id": c.id,
                        "service_date": d,
                        "slot": slot,
                        "version": 1,
                        "status": "published",
                        "published_at": now,
                    }
                )
                slot_days.append(
                    {
                        "id": uuid.uuid4(),
                        "canteen_id": c.id,
                        "service_date": d,
                        "slot": slot,
                        "capacity": cap,
                        "booked_meals": 0,
                    }
                )
                for pos, (name, kind, price, tags, allergens, special, stock, desc) in enumerate(
                    BREAKFAST if slot == "breakfast" else LUNCH_DINNER
                ):
                    items.append(
                        {
                            "id": uuid.uuid4(),
                            "menu_id": menu_id,
                            "position": pos,
                            "name": name,
                            "kind": kind,
                            "description": desc,
                            "price_fen": price,
                            "diet_tags": tags,
                            "allergens": allergens,
                            "is_special": special,
                            "stock": stock,
                            "sold": 0,
                        }
                    )
    if menus:
        await session.execute(insert(Menu), menus)
        await session.execute(
            insert(SlotDay).on_conflict_do_nothing(index_elements=["canteen_id", "service_date", "slot"]),
            slot_days,
        )
        for start in range(0, len(items), 2000):
            await session.execute(insert(MenuItem), items[start : start + 2000])
    lines.append(
        f"菜单：{days[0]:%m月%d日}–{days[-1]:%m月%d日} 新发布 {len(menus)} 份（9/11/13 元套餐、今日特惠套餐、小份菜）"
    )

    # demo elders, verified, bound to demo_family
    auth = AuthRepository(session)
    family = await auth.get_or_create_user("demo_family")
    region = first.district_code if first.district_code[:2] == "37" else "371402"
    for n, (openid, name, birth, categories, tags, allergens) in enumerate(DEMO_ELDERS, start=1):
        id_number = make_id_number(region, birth, 100 + n)
        if (
            await session.execute(select(Elder.id).where(Elder.id_number_hmac == id_hmac(id_number)))
        ).first():
            continue
        user = await auth.get_or_create_user(openid)
        elder = Elder(
            user_id=user.id,
            name=name,
            id_number_enc=encrypt_pii(id_number, context=ID_CONTEXT),
            id_number_hmac=id_hmac(id_number),
            birth_date=birth,
            gender="M" if int(id_number[16]) % 2 else "F",
            phone_enc=encrypt_pii(f"1380534{n:04d}", context=PHONE_CONTEXT),
            hukou_district_code=first.district_code,
            street=first.street,
            community=first.community,
            address_enc=encrypt_pii(f"{first.address}附近{n}号楼{n}单元10{n}", context=ADDRESS_CONTEXT),
            categories=categories,
            diet_tags=tags,
            allergens=allergens,
            verification_status="verified",
            verified_at=now,
            verification_note="演示数据",
            eligibility_valid_until=date(today.year + 1, 12, 31),
            registration_channel="counter",
        )
        session.add(elder)
        await session.flush()
        await ensure_role(session, user.id, Role.elder, None)
        session.add(
            FamilyBinding(
                elder_id=elder.id,
                user_id=family.id,
                relationship="子女",
                consent_text=CONSENT_TEXT,
                consented_at=now,
            )
        )
        await session.flush()
    await ensure_role(session, family.id, Role.family, None)
    lines.append(
        "演示长者：demo_elder_1（82岁独居）、demo_elder_2（低保）、demo_elder_3（特困）、demo_elder_4（失能，软食），"
        f"均已核实，户籍{district.name}，家属账号 demo_family 已绑定；食堂 {first.code} {first.name} 由 demo_operator 负责"
    )
    return lines
