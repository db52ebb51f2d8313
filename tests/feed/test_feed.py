from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.feed.service import feed_service
from app.kit.time import business_date
from app.ledger.service import ledger_service
from app.models import FeedEvent
from tests.feed.helpers import create_target, general_fund, pay, serve_meal, user_id_of
from tests.fixtures.factories import create_canteen, create_district, unique


async def _all_pages(client: httpx.AsyncClient, limit: int, **params: str) -> list[dict]:
    items: list[dict] = []
    cursor = None
    while True:
        res = await client.get(
            "/api/v1/feed", params={"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        )
        assert res.status_code == 200, res.text
        body = res.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def test_donation_events_show_chosen_name_or_anonymous(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    target = await create_target(session, title="德城区幸福食堂助餐")
    named = await pay(session, target, 3000, display_name="张先生")
    hidden = await pay(session, target, 1000, anonymous=True, display_name="李秘密")
    typed_phone = await pay(session, target, 1234, display_name="王13912345678")
    await session.commit()

    res = await client.get("/api/v1/feed", params={"limit": 3})
    assert res.status_code == 200, res.text
    items = res.json()["items"]
    assert [i["kind"] for i in items] == ["donation_paid"] * 3
    by_amount = {i["amount_fen"]: i for i in items}
    assert by_amount[named.amount_fen]["data"]["donor"] == "张先生"
    assert by_amount[named.amount_fen]["text"] == "张先生 为「德城区幸福食堂助餐」捐赠 3 餐（¥30.00）"
    assert by_amount[named.amount_fen]["meals"] == 3
    assert by_amount[hidden.amount_fen]["data"]["donor"] == "爱心人士"
    assert by_amount[typed_phone.amount_fen]["data"]["donor"] == "王139****5678"
    assert "李秘密" not in res.text and "13912345678" not in res.text
    assert set(by_amount[named.amount_fen]["data"]) <= {
        "donor",
        "amount_fen",
        "meals",
        "target",
        "target_kind",
        "channel",
    }


async def test_meals_funded_grow_one_event_per_canteen_per_day(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    district = await create_district(session, name="德城区")
    canteen = await create_canteen(session, district.code, name="新湖幸福食堂")
    other = await create_canteen(session, district.code, name="天衢食堂")
    target = await create_target(session, canteen_id=canteen.id)
    await pay(session, target, 10000)
    for _ in range(3):
        assert await serve_meal(session, canteen.id, 300) == 300
    await serve_meal(session, canteen.id, 200, slot="dinner")
    await pay(session, await create_target(session, canteen_id=other.id), 1000)
    await serve_meal(session, other.id, 300)
    await session.commit()

    items = (await client.get("/api/v1/feed", params={"kind": "meals_funded"})).json()["items"]
    assert len(items) == 2
    mine = next(i for i in items if i["data"]["canteen_code"] == canteen.code)
    assert mine["meals"] == 4 and mine["amount_fen"] == 1100
    assert mine["data"]["slots"] == {"lunch": 3, "dinner": 1}
    today = business_date()
    assert mine["text"] == f"{today.month}月{today.day}日 德城区新湖幸福食堂 爱心善款资助 4 份餐 ¥11.00"
    theirs = next(i for i in items if i["data"]["canteen_code"] == other.code)
    assert theirs["text"].endswith("天衢食堂 爱心善款资助 1 份午餐 ¥3.00")
    # nothing paid by donations → nothing to show
    assert (
        await feed_service.record_meal_funded(
            session, canteen_id=canteen.id, service_date=today, slot="lunch", amount_fen=0
        )
        is None
    )


async def test_pagination_is_stable_while_events_arrive(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    target = await create_target(session)
    for i in range(25):
        await pay(session, target, 100 + i)
    await session.commit()
    first = (await client.get("/api/v1/feed", params={"limit": 10})).json()
    seen = [i["id"] for i in first["items"]]
    for i in range(5):  # new gifts arrive while the reader scrolls
        await pay(session, target, 900 + i)
    await session.commit()
    cursor = first["next_cursor"]
    while cursor:
        page = (await client.get("/api/v1/feed", params={"limit": 10, "cursor": cursor})).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
    ours = [i for i in seen]
    assert len(ours) == len(set(ours)), "an event was shown twice"
    amounts = {}
    for item in await _all_pages(client, 50):
        amounts[item["id"]] = item["amount_fen"]
    old = sorted((i for i in seen if amounts[i] < 900), reverse=True)
    assert len(old) == 25 and seen[: len(old)] == old, "the old events came back complete and in order"
    assert not [i for i in seen if amounts[i] >= 900], "new events appear on top, not inside later pages"
    fresh = (await client.get("/api/v1/feed", params={"limit": 5})).json()["items"]
    assert sorted(i["amount_fen"] for i in fresh) == [900, 901, 902, 903, 904]


async def test_bad_cursor_kind_and_limit(client: httpx.AsyncClient) -> None:
    for cursor in ("!!!", "eyJiZWZvcmUiOiAiMSJ9", "W10", "eyJiZWZvcmUiOi0xfQ"):
        res = await client.get("/api/v1/feed", params={"cursor": cursor})
        assert res.status_code == 400 and res.json()["error"] == "InvalidCursor", (cursor, res.text)
        assert "cursor" in res.json()["message"]
    res = await client.get("/api/v1/feed", params={"kind": "secrets"})
    assert res.status_code == 400 and res.json()["error"] == "UnknownFeedKind"
    for limit in ("0", "101", "x"):
        assert (await client.get("/api/v1/feed", params={"limit": limit})).status_code == 422


async def test_reconciliation_settlement_and_ledger_root_events(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    from datetime import date

    canteen = await create_canteen(session, name="结算食堂")
    day = date(2026, 3, 5)
    await feed_service.record_reconciliation(session, bill_date=day, status="pending")
    await feed_service.record_reconciliation(
        session, bill_date=day, status="discrepancy", matched=40, discrepancies=1
    )
    await feed_service.record_ledger_root(session, day=day, merkle_root="ab" * 32, entry_count=57)
    await feed_service.record_settlement_paid(
        session, canteen_id=canteen.id, month="2026-03", amount_fen=11100, meals=37
    )
    await session.commit()
    items = (await client.get("/api/v1/feed", params={"limit": 3})).json()["items"]
    texts = [i["text"] for i in items]
    assert texts[0] == "结算食堂 2026-03 爱心助餐结算款 ¥111.00 已支付（37 份）"
    assert texts[1] == "3月5日 账本已封存：57 笔记账，Merkle 根 abababababababab…"
    assert texts[2] == "3月5日 的捐款发现差异，正在核查"  # one event per bill date, updated in place
    assert items[2]["data"] == {
        "day": "2026-03-05",
        "status": "discrepancy",
        "matched": 40,
        "discrepancies": 1,
    }
    res = await client.get("/api/v1/feed", params={"kind": "reconciliation"})
    assert len([i for i in res.json()["items"] if i["data"]["day"] == "2026-03-05"]) == 1


async def test_stats_add_up_from_the_ledger(client: httpx.AsyncClient, session: AsyncSession) -> None:
    before = (await client.get("/api/v1/feed/stats")).json()["totals"]
    canteen = await create_canteen(session, name="统计食堂")
    general = await general_fund(session)
    target = await create_target(session, canteen_id=canteen.id)
    pool_target = await create_target(session, kind="fund", fund_id=general.id)
    donor = await user_id_of(session, unique("o"))
    await pay(session, target, 1000, donor_user_id=donor)
    await pay(session, target, 2000, donor_user_id=donor)
    await pay(session, pool_target, 5000)
    await serve_meal(session, canteen.id, 2500)  # 1000 + 1500 from the canteen's pool, FIFO
    await serve_meal(session, canteen.id, 700)  # 500 left in the canteen's pool, 200 from the general pool
    refund = await ledger_service.refundable_fen(session, donation_id=(await pay(session, target, 800)).id)
    await session.commit()

    res = await client.get("/api/v1/feed/stats")
    assert res.status_code == 200, res.text
    stats = res.json()
    totals = stats["totals"]
    assert totals["donated_fen"] - before["donated_fen"] == 8800
    assert totals["donations"] - before["donations"] == 4
    assert totals["donors"] - before["donors"] == 3  # one donor twice, two unnamed gifts
    assert totals["spent_on_meals_fen"] - before["spent_on_meals_fen"] == 3200
    assert totals["meals_funded"] - before["meals_funded"] == 2
    assert totals["balance_fen"] - before["balance_fen"] == 8800 - 3200
    assert totals["available_fen"] == totals["balance_fen"] - totals["reserved_fen"]
    mine = next(c for c in stats["canteens"] if c["code"] == canteen.code)
    assert mine == {
        "code": canteen.code,
        "name": "统计食堂",
        "district": "测试区",
        "donated_to_pool_fen": 3800,
        "meals_funded": 2,
        "spent_on_meals_fen": 3200,
        "pool_balance_fen": 800,
        "pool_available_fen": 800,
    }
    fund = next(f for f in stats["funds"] if f["code"] == general.code)
    assert fund["donated_fen"] == 5000 and fund["spent_on_meals_fen"] == 200 and fund["balance_fen"] == 4800
    assert len(stats["series"]) == 30 and stats["series"][-1]["day"] == business_date().isoformat()
    assert refund == 800


async def test_events_written_by_reconciliation_and_the_ledger(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    from datetime import timedelta

    from app.kit.time import utcnow

    # the reconciliation service's own event shape
    session.add(
        FeedEvent(
            kind="reconciliation",
            payload={
                "bill_date": "2026-03-06",
                "status": "reconciled",
                "bill_rows": 12,
                "matched": 12,
                "open_discrepancies": 0,
                "amount_fen": 12000,
                "refund_fen": 0,
                "fee_fen": 72,
                "operator_note": "internal",
            },
            occurred_at=utcnow(),
        )
    )
    await session.flush()
    day = business_date() - timedelta(days=400)
    digest = await ledger_service.publish_digest(session, day=day)
    await ledger_service.publish_digest(session, day=day)  # idempotent: no second event
    await session.commit()
    items = (await client.get("/api/v1/feed", params={"limit": 2})).json()["items"]
    assert items[0]["kind"] == "ledger_root"
    assert items[0]["data"] == {"day": day.isoformat(), "merkle_root": digest.merkle_root, "entry_count": 0}
    assert items[1]["text"] == "3月6日 的捐款与微信支付账单核对一致（账单 12 笔）"
    assert items[1]["data"]["discrepancies"] == 0 and "operator_note" not in items[1]["data"]
    roots = (await client.get("/api/v1/feed", params={"kind": "ledger_root"})).json()["items"]
    assert len([r for r in roots if r["data"]["day"] == day.isoformat()]) == 1
