"""10:00 on a weekday: every elder of a district books the same lunch at once.

2,000 distinct elders (quick: 200) race for one lunch slot of capacity 500 (quick: 50) through
``POST /api/v1/bookings`` with their own bearer tokens and Idempotency-Keys; one in ten also books a second
canteen at the same moment (the one-subsidized-meal-per-day rule under concurrency). Correctness: exactly
``capacity`` confirmed at the contested slot, nothing overbooked, nobody subsidised twice, no 5xx."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from sqlalchemy import func, select, text

from bench.fixtures import create_elders, lunch_menus, reset_settings, set_capacity
from bench.harness import Harness

CONCURRENCY = 64


async def _arrange(h: Harness, elders: int, capacity: int) -> dict[str, Any]:
    from app.db import unit_of_work

    async with unit_of_work() as s:
        menus = await lunch_menus(s, 2)
        contested, other = menus
        await set_capacity(s, contested["canteen_id"], contested["date"], "lunch", capacity)
        await set_capacity(s, other["canteen_id"], other["date"], "lunch", elders)
        people = await create_elders(s, elders, district_code=contested["district_code"])
    return {"contested": contested, "other": other, "people": people}


def booking_body(elder_id: uuid.UUID, menu: dict[str, Any]) -> str:
    return json.dumps(
        {
            "elder_id": str(elder_id),
            "canteen_id": str(menu["canteen_id"]),
            "date": menu["date"].isoformat(),
            "slot": "lunch",
            "items": [{"menu_item_id": str(menu["menu_item_id"]), "quantity": 1}],
            "mode": "dine_in",
        }
    )


async def _count(arranged: dict[str, Any], capacity: int) -> dict[str, Any]:
    from app.db import unit_of_work
    from app.models import Booking, SlotDay

    c = arranged["contested"]
    async with unit_of_work() as s:
        confirmed = (
            await s.execute(
                select(func.count(), func.coalesce(func.sum(Booking.meals), 0)).where(
                    Booking.canteen_id == c["canteen_id"],
                    Booking.service_date == c["date"],
                    Booking.slot == "lunch",
                    Booking.status == "confirmed",
                )
            )
        ).one()
        slot = (
            await s.execute(
                select(SlotDay.booked_meals, SlotDay.capacity).where(
                    SlotDay.canteen_id == c["canteen_id"],
                    SlotDay.service_date == c["date"],
                    SlotDay.slot == "lunch",
                )
            )
        ).one()
        double = (
            await s.execute(
                text(
                    "SELECT count(*) FROM (SELECT elder_id FROM bookings WHERE service_date = :d AND subsidized "
                    "AND status <> 'cancelled' GROUP BY elder_id HAVING count(*) > 1) x"
                ),
                {"d": c["date"]},
            )
        ).scalar_one()
        per_elder = (
            await s.execute(
                text(
                    "SELECT count(*) FROM (SELECT elder_id FROM bookings WHERE service_date = :d AND canteen_id = :c "
                    "AND status <> 'cancelled' GROUP BY elder_id HAVING count(*) > 1) x"
                ),
                {"d": c["date"], "c": c["canteen_id"]},
            )
        ).scalar_one()
    return {
        "confirmed": int(confirmed[0]),
        "overbooked": max(0, int(confirmed[1]) - capacity) + max(0, int(slot[0]) - int(slot[1])),
        "double_subsidy": int(double),
        "duplicate_bookings": int(per_elder),
        "slot_counter": int(slot[0]),
    }


def run(h: Harness) -> dict[str, Any]:
    elders, capacity = h.scale(2000), h.scale(500)
    reset_settings()
    arranged = asyncio.run(_arrange(h, elders, capacity))
    requests: list[list[Any]] = []
    for i, (elder_id, token) in enumerate(arranged["people"]):
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        requests.append(
            [
                "book",
                "POST",
                "/api/v1/bookings",
                {**auth, "Idempotency-Key": f"rush-{i:06d}"},
                booking_body(elder_id, arranged["contested"]),
            ]
        )
        if i % 10 == 0:  # the same elder at a second canteen at the same moment
            requests.append(
                [
                    "book",
                    "POST",
                    "/api/v1/bookings",
                    {**auth, "Idempotency-Key": f"rush-b-{i:06d}"},
                    booking_body(elder_id, arranged["other"]),
                ]
            )
    with h.serving():
        ceiling = h.ceiling(len(requests), CONCURRENCY)
        measured = h.load(requests, concurrency=CONCURRENCY)
    counts = asyncio.run(_count(arranged, capacity))
    statuses = measured["by_tag"]["book"]["statuses"]
    errors_5xx = sum(n for s, n in statuses.items() if not s.isdigit() or s.startswith("5"))
    unexpected_4xx = sum(n for s, n in statuses.items() if s.startswith("4") and s != "409")
    fields = {
        **counts,
        "errors_5xx": errors_5xx,
        "unexpected_4xx": unexpected_4xx,
        "elders": elders,
        "capacity": capacity,
        "concurrency": CONCURRENCY,
    }
    ok = (
        counts["confirmed"] == capacity
        and counts["overbooked"] == 0
        and counts["double_subsidy"] == 0
        and counts["duplicate_bookings"] == 0
        and errors_5xx == 0
        and unexpected_4xx == 0
    )
    return h.result(
        ok=ok,
        measured=measured,
        tag="book",
        ceiling=ceiling,
        fields=fields,
        targets=lambda r: {"ratio >= 0.25": (r["ratio"] or 0) >= 0.25},
    )
