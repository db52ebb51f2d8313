"""The public pages in a real browser: Playwright driving the system Chromium (never a downloaded one).
Loads /t, /t/c/<code>, /q/<code> and the wall screen, checks the totals against the API, verifies a donation
proof with Web Crypto in the page, and saves screenshots under test-artifacts/."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.db import unit_of_work
from app.kit.time import business_date
from tests.feed.helpers import create_target, pay, serve_meal
from tests.fixtures.browser import ARTIFACTS, chromium_page, requires_browser
from tests.fixtures.factories import create_canteen, create_district, create_menu

pytestmark = requires_browser


@pytest.fixture
def server(live_server: str) -> str:
    return live_server


@pytest.fixture
async def page(server: str) -> AsyncIterator[Any]:
    async with chromium_page(width=430, height=932) as tab:
        yield tab


async def _arrange() -> dict[str, Any]:
    async with unit_of_work() as session:
        district = await create_district(session, name="德城区")
        canteen = await create_canteen(session, district.code, name="新湖幸福食堂", street="新湖街道")
        today = business_date()
        await create_menu(session, canteen.id, today - timedelta(days=today.weekday()))
        if today.weekday():
            await create_menu(session, canteen.id, today)
        target = await create_target(session, canteen_id=canteen.id, title="新湖幸福食堂 · 我为老人助一餐")
        gift = await pay(session, target, 3000, display_name="张阿姨")
        await pay(session, target, 1000, anonymous=True, display_name="不留名")
        for _ in range(3):
            await serve_meal(session, canteen.id, 300)
    return {"canteen_code": canteen.code, "target_code": target.code, "donation_id": str(gift.id)}


async def _stat(tab: Any, selector: str) -> int:
    return int(
        await tab.get_attribute(selector, "data-fen")
        or await tab.get_attribute(selector, "data-count")
        or "x"
    )


async def test_public_pages_in_chromium(server: str, page: Any) -> None:
    data = await _arrange()
    async with httpx.AsyncClient(base_url=server) as api:
        stats = (await api.get("/api/v1/feed/stats")).json()
        target = (await api.get(f"/api/v1/donation-targets/{data['target_code']}")).json()

    # /t: totals as the API says, the chart drawn, the feed listed
    await page.goto(f"{server}/t")
    for stat in ("donated_fen", "spent_on_meals_fen", "balance_fen", "meals_funded"):
        assert await _stat(page, f'.totals [data-stat="{stat}"]') == stats["totals"][stat], stat
    assert await page.locator("svg.chart rect").count() == 60
    assert "张阿姨" in await page.locator("#feed").inner_text()
    assert "不留名" not in await page.content()
    await page.screenshot(path=str(ARTIFACTS / "t.png"), full_page=True)

    # verify a donation: the browser recomputes hashes and the Merkle root itself
    await page.fill("#donation-id", data["donation_id"])
    await page.click("#verify-form button[type=submit]")
    await page.wait_for_selector('#verify-result[data-verified="true"]', timeout=10_000)
    text = await page.inner_text("#verify-result")
    assert "验证通过" in text and "资助一份长者餐" in text
    await page.locator("#verify").screenshot(path=str(ARTIFACTS / "t-verify.png"))

    # … and a proof with one changed byte fails
    async with httpx.AsyncClient(base_url=server) as api:
        proof = (await api.get(f"/api/v1/donations/{data['donation_id']}/proof")).json()
    proof["proof"]["entries"][0]["entry"]["postings"][0]["amount_fen"] += 1
    proof["proof"]["entries"][0]["entry"]["postings"][1]["amount_fen"] -= 1
    await page.fill("#donation-id", "")
    await page.click("#verify summary")
    await page.fill("#proof-json", json.dumps(proof, ensure_ascii=False))
    await page.click("#verify-form button[type=submit]")
    await page.wait_for_selector('#verify-result[data-verified="false"]', timeout=10_000)
    assert "没有通过" in await page.inner_text("#verify-result")

    # /t/c/<code>: this week's menu, meals funded and the pool, as the API says
    mine = next(c for c in stats["canteens"] if c["code"] == data["canteen_code"])
    await page.goto(f"{server}/t/c/{data['canteen_code']}")
    assert await _stat(page, '[data-stat="meals_funded"]') == mine["meals_funded"] == 3
    assert await _stat(page, '[data-stat="pool_balance_fen"]') == mine["pool_balance_fen"]
    assert "两荤一素套餐" in await page.inner_text(".week")
    await page.screenshot(path=str(ARTIFACTS / "t-canteen.png"), full_page=True)

    # /q/<code>: same look, same totals
    await page.goto(f"{server}/q/{data['target_code']}")
    assert await _stat(page, "[data-target-totals]") == target["totals"]["paid_fen"] == 4000
    assert await page.locator('link[href="/static/public/public.css"]').count() == 1
    await page.screenshot(path=str(ARTIFACTS / "q.png"), full_page=True)


async def test_wall_screen_shows_a_new_donation_without_reloading(server: str, page: Any) -> None:
    data = await _arrange()
    await page.set_viewport_size({"width": 1920, "height": 1080})
    await page.goto(f"{server}/t/screen")
    await page.wait_for_selector('body[data-live="open"]', timeout=10_000)
    before = await _stat(page, '[data-stat="donated_fen"]')
    async with unit_of_work() as session:
        from sqlalchemy import select

        from app.models import DonationTarget

        target = (
            await session.execute(select(DonationTarget).where(DonationTarget.code == data["target_code"]))
        ).scalar_one()
        await pay(session, target, 5000, display_name="大屏观众")
    await page.wait_for_selector("#feed li.kind-donation_paid >> text=大屏观众", timeout=10_000)
    await page.wait_for_function(
        f'document.querySelector(\'[data-stat="donated_fen"]\').dataset.fen == "{before + 5000}"',
        timeout=10_000,
    )
    await page.screenshot(path=str(ARTIFACTS / "t-screen.png"))
