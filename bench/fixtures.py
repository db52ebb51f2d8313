"""Arranging data directly in the bench database before the timed part (bulk inserts, not the API: the API is
what is measured, the arranging is not)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.elders.idcard import make_id_number
from app.elders.service import ID_CONTEXT, PHONE_CONTEXT, id_hmac
from app.kit.crypto import encrypt_pii, new_token, token_hash
from app.kit.time import business_date, utcnow
from app.models import AuthSession, Canteen, Elder, Menu, MenuItem, RoleGrant, SlotDay, User
from app.models.role_grant import Role

CATEGORIES: list[list[str]] = [[], ["低保"], ["特困"], ["独居"], ["失能"], []]


def reset_settings() -> None:
    """The orchestrator changed DATABASE_URL after start-up: forget cached settings and engines."""
    from app.config import get_settings
    from app.db import set_database

    get_settings.cache_clear()
    set_database(None)


async def create_elders(
    session: AsyncSession, count: int, *, district_code: str, prefix: str = "bench_elder"
) -> list[tuple[uuid.UUID, str]]:
    """``count`` verified elders, each with a user, the elder role and a live session. Returns (elder_id, token)."""
    now = utcnow()
    users, grants, elders, sessions, out = [], [], [], [], []
    for i in range(count):
        user_id, elder_id, token = uuid.uuid4(), uuid.uuid4(), new_token()
        birth = date(1936, 1, 1) + timedelta(days=(i * 7) % (365 * 28))
        id_number = make_id_number(district_code, birth, i % 1000)
        users.append({"id": user_id, "openid": f"{prefix}_{i}"})
        grants.append({"id": uuid.uuid4(), "user_id": user_id, "role": Role.elder.value})
        elders.append(
            {
                "id": elder_id,
                "user_id": user_id,
                "name": f"长者{i}",
                "id_number_enc": encrypt_pii(id_number, context=ID_CONTEXT),
                "id_number_hmac": id_hmac(id_number),
                "birth_date": birth,
                "gender": "M" if int(id_number[16]) % 2 else "F",
                "phone_enc": encrypt_pii(f"139{i:08d}", context=PHONE_CONTEXT),
                "hukou_district_code": district_code,
                "categories": CATEGORIES[i % len(CATEGORIES)],
                "diet_tags": [],
                "allergens": [],
                "verification_status": "verified",
                "verified_at": now,
                "eligibility_valid_until": date(now.year + 2, 12, 31),
                "registration_channel": "counter",
            }
        )
        sessions.append(
            {
                "id": uuid.uuid4(),
                "user_id": user_id,
                "token_hash": token_hash(token),
                "channel": "miniprogram",
                "expires_at": now + timedelta(days=30),
                "last_seen_at": now,
            }
        )
        out.append((elder_id, token))
    for model, rows in ((User, users), (RoleGrant, grants), (Elder, elders), (AuthSession, sessions)):
        for start in range(0, len(rows), 1000):
            await session.execute(insert(model), rows[start : start + 1000])
    return out


async def lunch_menus(session: AsyncSession, how_many: int) -> list[dict[str, Any]]:
    """Published lunch menus two days ahead (bookable whatever the hour) at the first ``how_many`` canteens of
    the first district: [{canteen_id, district_code, date, menu_item_id}]."""
    day = business_date() + timedelta(days=2)
    canteens = (await session.execute(select(Canteen).order_by(Canteen.code))).scalars().all()
    district = canteens[0].district_code
    out = []
    for c in [c for c in canteens if c.district_code == district][:how_many]:
        menu = (
            await session.execute(
                select(Menu).where(
                    Menu.canteen_id == c.id,
                    Menu.service_date == day,
                    Menu.slot == "lunch",
                    Menu.status == "published",
                )
            )
        ).scalar_one()
        item = (
            (
                await session.execute(
                    select(MenuItem)
                    .where(MenuItem.menu_id == menu.id, MenuItem.stock.is_(None))
                    .order_by(MenuItem.position)
                )
            )
            .scalars()
            .first()
        )
        assert item is not None
        out.append({"canteen_id": c.id, "district_code": district, "date": day, "menu_item_id": item.id})
    return out


async def set_capacity(
    session: AsyncSession, canteen_id: uuid.UUID, day: date, slot: str, capacity: int
) -> None:
    await session.execute(
        update(SlotDay)
        .where(SlotDay.canteen_id == canteen_id, SlotDay.service_date == day, SlotDay.slot == slot)
        .values(capacity=capacity, booked_meals=0)
    )


async def create_pending_donations(session: AsyncSession, count: int, *, prefix: str) -> list[dict[str, Any]]:
    """``count`` WeChat Pay donations waiting for their payment notification, spread over the demo targets.
    Returns [{id, out_trade_no, amount_fen}]."""
    from app.donations.service import donation_service
    from app.models import Donation, DonationTarget

    targets = (await session.execute(select(DonationTarget).order_by(DonationTarget.code))).scalars().all()
    accounts = [(t.id, await donation_service.target_account(session, t)) for t in targets]
    now = utcnow()
    rows, out = [], []
    for i in range(count):
        target_id, account = accounts[i % len(accounts)]
        amount = 1000 * (1 + i % 5) if i % 7 else 1 + (i * 37) % 99_999
        out_trade_no = f"{prefix}{i:010d}"
        donation_id = uuid.uuid4()
        rows.append(
            {
                "id": donation_id,
                "target_id": target_id,
                "target_account": account,
                "channel": "wechatpay",
                "status": "pending",
                "amount_fen": amount,
                "meals": amount // 1000 if amount % 1000 == 0 else None,
                "refunded_fen": 0,
                "anonymous": i % 3 == 0,
                "display_name": None if i % 3 == 0 else f"爱心人士{i}",
                "out_trade_no": out_trade_no,
                "prepay_id": f"wx{i:030d}"[:32],
                "prepay_at": now,
                "expires_at": now + timedelta(hours=2),
            }
        )
        out.append({"id": donation_id, "out_trade_no": out_trade_no, "amount_fen": amount})
    for start in range(0, len(rows), 1000):
        await session.execute(insert(Donation), rows[start : start + 1000])
    return out


def payment_notification(order: dict[str, Any], n: int) -> tuple[str, str]:
    """The body WeChat Pay would POST for this order (the simulator's own envelope and AEAD encryption) and its
    notification id. Sign each delivery separately with ``signed_headers``."""
    from app.config import get_settings
    from app.sandbox.wechatpay import build_notification

    settings = get_settings()
    notification_id = str(uuid.uuid4())
    now = utcnow()
    plaintext = {
        "appid": settings.WECHAT_APPID,
        "mchid": settings.WECHATPAY_MCHID,
        "out_trade_no": order["out_trade_no"],
        "transaction_id": f"4200{now:%Y%m%d}{n:016d}",
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "attach": "",
        "success_time": now.astimezone().isoformat(timespec="seconds"),
        "payer": {"openid": f"bench_donor_{n % 997}"},
        "amount": {
            "total": order["amount_fen"],
            "payer_total": order["amount_fen"],
            "currency": "CNY",
            "payer_currency": "CNY",
        },
    }
    body = build_notification(
        "TRANSACTION.SUCCESS", "transaction", "支付成功", plaintext, notification_id=notification_id
    )
    return body, notification_id


def signed_headers(body: str) -> dict[str, str]:
    """A delivery's headers, signed now with the simulator's platform key exactly as WeChat Pay signs."""
    from app.sandbox.wechatpay import sign_headers

    return {"Content-Type": "application/json", **sign_headers(body)}
