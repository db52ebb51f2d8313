"""The public HTML pages: /t (transparency), /t/screen (the wall display), /t/c/<canteen_code>.

Server-rendered Jinja2 (templates in app/web/templates/public/, static files in app/web/static/public/), large type
and high contrast for older eyes, no external CDN: the chart is an SVG drawn here."""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Path as PathParam
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from app.feed.repository import FeedRepository
from app.feed.schemas import DayPoint
from app.feed.service import SLOT_NAMES, feed_service, item_of, public_name
from app.kit.money import fen_to_yuan_text
from app.kit.time import SHANGHAI, business_date

TEMPLATES = Path(__file__).resolve().parent.parent / "web" / "templates"
CANTEEN_CODE_PATH: Any = PathParam(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")
WEEKDAYS = "一二三四五六日"


def _shanghai(value: Any) -> str:
    return value.astimezone(SHANGHAI).strftime("%m月%d日 %H:%M") if value else ""


@lru_cache
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.filters["yuan"] = fen_to_yuan_text
    env.filters["shanghai"] = _shanghai
    env.globals["slot_name"] = lambda s: SLOT_NAMES.get(s, s)
    return env


def render(name: str, **context: Any) -> str:
    return _env().get_template(name).render(**context)


def _nice_max(value: int) -> int:
    """A round axis maximum (in fen) at or above ``value``."""
    if value <= 0:
        return 10000
    step = 1
    while step * 10 <= value:
        step *= 10
    for m in (1, 2, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def chart_svg(series: list[DayPoint], *, width: int = 720, height: int = 300) -> Markup:
    """Donations vs. meal subsidies per day, as grouped bars with a yuan axis. Self-contained SVG."""
    left, right, top, bottom = 90, 30, 20, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_max(max([max(p.donated_fen, p.spent_on_meals_fen) for p in series] or [0]))
    n = max(len(series), 1)
    slot = plot_w / n
    bar = max(slot * 0.38, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="chart-title" class="chart" data-max-fen="{top_value}">',
        '<title id="chart-title">近30天每日捐赠与助餐补贴（元）</title>',
    ]
    for i in range(5):
        value = top_value * i // 4
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 8}" y="{y + 7:.1f}" text-anchor="end" class="axis">'
            f"{fen_to_yuan_text(value).removesuffix('.00')}</text>"
        )
    for i, point in enumerate(series):
        x = left + i * slot + slot * 0.1
        for j, (fen, css, label) in enumerate(
            ((point.donated_fen, "bar-in", "捐赠"), (point.spent_on_meals_fen, "bar-out", "助餐补贴"))
        ):
            h = plot_h * fen / top_value if top_value else 0
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'class="{css}"><title>{point.day.month}月{point.day.day}日 {label} ¥{fen_to_yuan_text(fen)}'
                "</title></rect>"
            )
        if (n - 1 - i) % 7 == 0:
            parts.append(
                f'<text x="{x + bar:.1f}" y="{height - 12}" text-anchor="middle" class="axis">'
                f"{point.day.month}/{point.day.day}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


async def transparency_page(session: AsyncSession) -> str:
    stats = await feed_service.stats(session)
    page = await feed_service.page(session, before=None, limit=20)
    return render(
        "public/transparency.html",
        stats=stats,
        feed=page.items,
        next_cursor=page.next_cursor,
        chart=chart_svg(stats.series),
        today=business_date(),
    )


async def screen_page(session: AsyncSession) -> str:
    stats = await feed_service.stats(session)
    page = await feed_service.page(session, before=None, limit=12)
    return render("public/screen.html", stats=stats, feed=page.items, today=business_date())


async def canteen_page(session: AsyncSession, code: str) -> tuple[str, int]:
    repo = FeedRepository(session)
    found = await repo.canteen_by_code(code)
    if found is None:
        return render("public/missing.html", code=code), 404
    canteen, district = found
    today = business_date()
    monday = today - timedelta(days=today.weekday())
    menus = await repo.week_menus(canteen.id, monday, monday + timedelta(days=6))
    days: dict[date, list[dict[str, Any]]] = {}
    for menu, items in menus:
        days.setdefault(menu.service_date, []).append({"slot": menu.slot, "items": items})
    pool = await repo.account(f"pool:canteen:{canteen.id}")
    meals, spent = (await repo.meals_by_canteen()).get(canteen.id, (0, 0))
    events = [item_of(e) for e in await repo.for_canteen(canteen.code, 14)]
    donations = [
        {"donor": public_name(_label(d)), "amount_fen": d.amount_fen, "meals": d.meals, "paid_at": d.paid_at}
        for d in await repo.recent_donations_to(canteen.id, 10)
    ]
    return (
        render(
            "public/canteen.html",
            canteen=canteen,
            district=district,
            week=[
                (monday + timedelta(days=i), WEEKDAYS[i], days.get(monday + timedelta(days=i), []))
                for i in range(7)
            ],
            today=today,
            meals_funded=meals,
            spent_fen=spent,
            pool_balance_fen=-pool.balance_fen if pool else 0,
            pool_available_fen=(-pool.balance_fen - pool.held_fen) if pool else 0,
            events=events,
            donations=donations,
            targets=await repo.canteen_targets(canteen.id),
        ),
        200,
    )


def _label(donation: Any) -> str | None:
    from app.donations.service import donor_label

    return donor_label(donation)
