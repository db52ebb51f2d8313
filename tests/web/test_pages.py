"""The public HTML pages: /t, /t/screen, /t/c/<canteen_code>, and /q/<code> sharing their layout."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.time import business_date
from tests.feed.helpers import create_target, pay, serve_meal
from tests.fixtures.factories import create_canteen, create_district, create_menu


def _fen(html: str, stat: str) -> int:
    match = re.search(rf'data-stat="{stat}" data-(?:fen|count)="(-?\d+)"', html)
    assert match, stat
    return int(match.group(1))


async def test_transparency_page_totals_match_the_api(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    target = await create_target(session, title="页面测试食堂助餐")
    await pay(session, target, 2500, display_name="赵阿姨")
    await serve_meal(session, target.canteen_id, 300)  # type: ignore[arg-type]
    await session.commit()
    res = await client.get("/t")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    html = res.text
    totals = (await client.get("/api/v1/feed/stats")).json()["totals"]
    for stat in (
        "donated_fen",
        "spent_on_meals_fen",
        "balance_fen",
        "refunded_fen",
        "fees_fen",
        "meals_funded",
    ):
        assert _fen(html, stat) == totals[stat], stat
    assert "赵阿姨 为「页面测试食堂助餐」捐赠" in html
    assert "爱心善款资助 1 份午餐 ¥3.00" in html
    svg = re.search(r"<svg .*?</svg>", html, re.S)
    assert svg and svg.group().count("<rect") == 60, "30 days × (donations, meal subsidies)"
    assert "¥25.00</title>" in svg.group()
    assert 'id="verify-form"' in html and "/static/public/verify.js" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", ""), "no external assets"
    js = await client.get("/static/public/verify.js")
    assert js.status_code == 200 and "crypto.subtle.digest" in js.text


async def test_screen_mode_is_fed_by_the_stream(client: httpx.AsyncClient) -> None:
    res = await client.get("/t/screen")
    assert res.status_code == 200 and 'class="screen"' in res.text and "/static/public/screen.js" in res.text
    js = (await client.get("/static/public/screen.js")).text
    assert 'new EventSource("/api/v1/feed/stream")' in js


async def test_canteen_page_shows_week_menu_meals_and_pool(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    district = await create_district(session, name="陵城区")
    canteen = await create_canteen(session, district.code, name="幸福院食堂", street="安德街道")
    today = business_date()
    monday = today - timedelta(days=today.weekday())
    await create_menu(
        session, canteen.id, monday, items=[{"name": "清蒸鲈鱼套餐", "kind": "set_meal", "price_fen": 1300}]
    )
    await create_menu(
        session,
        canteen.id,
        monday + timedelta(days=7),
        items=[{"name": "下周的菜", "kind": "dish", "price_fen": 500}],
    )
    target = await create_target(session, canteen_id=canteen.id, title="幸福院助餐")
    await pay(session, target, 1000, anonymous=True, display_name="隐名")
    await serve_meal(session, canteen.id, 400)
    await session.commit()
    res = await client.get(f"/t/c/{canteen.code}")
    assert res.status_code == 200, res.text
    html = res.text
    assert "幸福院食堂" in html and "陵城区" in html and "安德街道" in html
    assert "清蒸鲈鱼套餐" in html and "¥13.00" in html and "下周的菜" not in html
    assert _fen(html, "meals_funded") == 1 and _fen(html, "spent_on_meals_fen") == 400
    assert _fen(html, "pool_balance_fen") == 600
    assert f'href="/q/{target.code}"' in html
    assert "爱心人士 捐赠 ¥10.00" in html and "隐名" not in html
    missing = await client.get("/t/c/NOSUCH")
    assert missing.status_code == 404 and "找不到这个食堂" in missing.text
    assert (await client.get("/t/c/bad%20code")).status_code == 422


async def test_qr_landing_page_shares_the_layout(client: httpx.AsyncClient, session: AsyncSession) -> None:
    target = await create_target(session, title="扫码助餐")
    await pay(session, target, 3000)
    await session.commit()
    res = await client.get(f"/q/{target.code}")
    assert res.status_code == 200
    assert "/static/public/public.css" in res.text and 'href="/t"' in res.text
    assert 'data-fen="3000"' in res.text and "扫码助餐" in res.text
