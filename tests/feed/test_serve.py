"""End to end through the booking service: serving a meal that donations paid for grows the canteen's
"爱心善款资助 N 份午餐" event in the same transaction."""

from __future__ import annotations

from datetime import time

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.time import shanghai_datetime
from tests.bookings.helpers import DAY, MORNING, arrange, body, key, set_now
from tests.fixtures.client import login
from tests.fixtures.factories import unique
from tests.settlements.helpers import drain_general_pool, paid_donation


async def test_serving_a_donation_paid_meal_shows_in_the_feed(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session, categories=["独居"])
    await drain_general_pool(session, w.other_canteen.id)
    await paid_donation(session, w.canteen.id, 1000, donor_openid=unique("donor"))
    fam = await login(client, w.family_openid)
    booking = (await client.post("/api/v1/bookings", json=body(w), headers=fam | key())).json()
    assert booking["charity_subsidy_fen"] == 300, booking
    set_now(monkeypatch, shanghai_datetime(DAY, time(11, 30)))
    op = await login(client, w.operator_openid)
    served = await client.post(
        f"/api/v1/canteens/{w.canteen.id}/serve", json={"code": booking["serve_code"]}, headers=op
    )
    assert served.status_code == 200, served.text
    items = (await client.get("/api/v1/feed", params={"kind": "meals_funded"})).json()["items"]
    mine = [i for i in items if i["data"]["canteen_code"] == w.canteen.code]
    assert len(mine) == 1
    assert (
        mine[0]["data"]["day"] == DAY.isoformat() and mine[0]["meals"] == 1 and mine[0]["amount_fen"] == 300
    )
    assert mine[0]["text"] == f"{DAY.month}月{DAY.day}日 测试区{w.canteen.name} 爱心善款资助 1 份午餐 ¥3.00"
    assert "王秀英" not in str(items)
    again = await client.post(
        f"/api/v1/canteens/{w.canteen.id}/serve", json={"code": booking["serve_code"]}, headers=op
    )
    assert again.status_code == 409  # served once: the feed does not count it twice
    items = (await client.get("/api/v1/feed", params={"kind": "meals_funded"})).json()["items"]
    assert [i["meals"] for i in items if i["data"]["canteen_code"] == w.canteen.code] == [1]
