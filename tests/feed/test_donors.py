"""A donor's own view: /me/donations with a trace summary per gift, and the weekly "your gift funded N meals"
subscribe message for donors who allowed it."""

from __future__ import annotations

from datetime import time, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.feed.service import DIGEST_TEMPLATE, feed_service
from app.kit.time import business_date, shanghai_datetime, utcnow
from app.models import DonorDigest
from tests.feed.helpers import create_target, pay, serve_meal, user_id_of
from tests.fixtures.client import login
from tests.fixtures.factories import create_canteen, unique


async def test_my_donations_carry_a_trace_summary(client: httpx.AsyncClient, session: AsyncSession) -> None:
    openid, other_openid = unique("o"), unique("o")
    headers = await login(client, openid)
    other_headers = await login(client, other_openid)
    donor = await user_id_of(session, openid)
    canteen = await create_canteen(session, name="追溯食堂")
    target = await create_target(session, canteen_id=canteen.id)
    first = await pay(session, target, 1000, donor_user_id=donor)
    second = await pay(session, target, 500, donor_user_id=donor, anonymous=True, display_name="不公开")
    await pay(session, target, 700, donor_user_id=await user_id_of(session, other_openid))
    for _ in range(3):
        await serve_meal(session, canteen.id, 300)  # 900 of the first gift, FIFO
    await serve_meal(session, canteen.id, 300)  # 100 from the first, 200 from the second
    await session.commit()

    res = await client.get("/api/v1/me/donations", headers=headers)
    assert res.status_code == 200, res.text
    items = {i["id"]: i for i in res.json()["items"]}
    assert set(items) == {str(first.id), str(second.id)}, "only my own donations"
    t1 = items[str(first.id)]["trace"]
    assert t1["recorded"] and t1["meals_funded"] == 4 and t1["spent_fen"] == 1000 and t1["unused_fen"] == 0
    assert t1["canteens"] == ["追溯食堂"] and t1["last_meal_date"] == business_date().isoformat()
    assert t1["text"] == "已资助 4 份长者餐（¥10.00），尚未使用 ¥0.00"
    t2 = items[str(second.id)]["trace"]
    assert t2["meals_funded"] == 1 and t2["spent_fen"] == 200 and t2["unused_fen"] == 300
    other = (await client.get("/api/v1/me/donations", headers=other_headers)).json()["items"]
    assert len(other) == 1 and other[0]["trace"]["unused_fen"] == 700
    assert (await client.get("/api/v1/me/donations")).status_code == 401


async def test_pending_donation_has_an_empty_trace(client: httpx.AsyncClient, session: AsyncSession) -> None:
    openid = unique("o")
    headers = await login(client, openid)
    target = await create_target(session)
    res = await client.post(
        "/api/v1/donations",
        json={"target_code": target.code, "meals": 1},
        headers={**headers, "Idempotency-Key": unique("k")},
    )
    assert res.status_code == 201, res.text
    items = (await client.get("/api/v1/me/donations", headers=headers)).json()["items"]
    assert items[0]["status"] == "pending"
    assert items[0]["trace"] == {
        "recorded": False,
        "meals_funded": 0,
        "spent_fen": 0,
        "reserved_fen": 0,
        "refunded_fen": 0,
        "unused_fen": 0,
        "canteens": [],
        "last_meal_date": None,
        "text": "尚未到账",
    }


async def test_weekly_digest_goes_once_to_donors_who_allowed_it(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    opted, silent = unique("o"), unique("o")
    opted_headers = await login(client, opted)
    await login(client, silent)
    assert (await client.get("/api/v1/me/donation-digest", headers=opted_headers)).json()["remaining"] == 0
    res = await client.post("/api/v1/me/donation-digest", headers=opted_headers)
    assert res.status_code == 200 and res.json() == {"template_id": DIGEST_TEMPLATE, "remaining": 1}
    assert (await client.post("/api/v1/me/donation-digest")).status_code == 401

    canteen = await create_canteen(session, name="周报食堂")
    target = await create_target(session, canteen_id=canteen.id)
    opted_id, silent_id = await user_id_of(session, opted), await user_id_of(session, silent)
    await pay(session, target, 900, donor_user_id=opted_id)
    await pay(session, target, 900, donor_user_id=silent_id)
    for _ in range(4):
        await serve_meal(session, canteen.id, 300)
    await session.flush()

    # next Monday's job looks at this week
    monday, donors = await feed_service.digest_candidates(session, now=utcnow() + timedelta(days=7))
    today = business_date()
    assert monday == today - timedelta(days=today.weekday())
    assert opted_id in donors and silent_id not in donors, "only donors who allowed it"

    assert await feed_service.send_digest(session, user_id=opted_id, week_start=monday) == "sent"
    assert await feed_service.send_digest(session, user_id=opted_id, week_start=monday) == "already_sent"
    assert await feed_service.send_digest(session, user_id=silent_id, week_start=monday) == "no_quota"
    last_week = monday - timedelta(days=7)
    assert await feed_service.send_digest(session, user_id=opted_id, week_start=last_week) == "nothing"
    rows = (await session.execute(select(DonorDigest).where(DonorDigest.user_id == opted_id))).scalars().all()
    assert [(r.status, r.meals, r.amount_fen) for r in rows] == [("sent", 3, 900)]
    # sent this week: at or after Monday 00:00 in Shanghai (which is Sunday 16:00 UTC)
    assert rows[0].sent_at is not None and rows[0].sent_at >= shanghai_datetime(monday, time.min)
    msgs = (await client.get("/sandbox/wechat/messages", params={"touser": opted})).json()["items"]
    assert len(msgs) == 1 and msgs[0]["template_id"] == DIGEST_TEMPLATE
    assert msgs[0]["data"]["thing1"]["value"] == "您的爱心资助了 3 份长者餐"
    assert msgs[0]["data"]["amount2"]["value"] == "¥9.00"
    assert (await client.get("/sandbox/wechat/messages", params={"touser": silent})).json()["items"] == []
    assert (await client.get("/api/v1/me/donation-digest", headers=opted_headers)).json()["remaining"] == 0
