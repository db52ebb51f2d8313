"""The public transparency feed after a broadcast: many people read the feed and the stats while donations keep
arriving.

20,000 (quick: 2,000) public reads — ``GET /api/v1/feed`` (first page, and a second page by cursor) and
``GET /api/v1/feed/stats`` — interleaved with 1,000 (quick: 100) signed payment notifications that create new
feed events during the run. Readers come from many addresses (``X-Forwarded-For`` from the loopback proxy, which
uvicorn trusts), as they would through a load balancer, so the per-IP public-read limit is enforced on every
request but does not refuse a crowd. Targets: reads p99 < 50 ms and reads/s ≥ 0.6 × the ceiling."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bench.fixtures import create_pending_donations, payment_notification, reset_settings, signed_headers
from bench.harness import Harness

CONCURRENCY = 32
NOTIFY = "/api/v1/payments/wechat/notify"


async def _arrange(orders: int) -> list[dict[str, Any]]:
    from app.db import unit_of_work

    async with unit_of_work() as s:
        return await create_pending_donations(s, orders, prefix="BENCHFR")


def _ip(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"}


def run(h: Harness) -> dict[str, Any]:
    reads, writes, history = h.scale(20_000), h.scale(1_000), h.scale(2_000)
    reset_settings()
    orders = asyncio.run(_arrange(history + writes))
    bodies = [payment_notification(o, n)[0] for n, o in enumerate(orders)]
    with h.serving():
        # history: the feed already has events before the readers arrive (not measured)
        pre = [["history", "POST", NOTIFY, signed_headers(b), b] for b in bodies[:history]]
        arranged = h.load(pre, concurrency=16)
        first = h.load(
            [["page", "GET", "/api/v1/feed?limit=20", _ip(0), None]], concurrency=1, keep_bodies=True
        )
        cursor = json.loads(first["responses"][0][1]).get("next_cursor") or ""
        paths = [
            "/api/v1/feed?limit=20",
            "/api/v1/feed/stats",
            "/api/v1/feed?limit=20",
            f"/api/v1/feed?limit=20&cursor={cursor}",
        ]
        ceiling = h.ceiling(reads, CONCURRENCY)
        live = bodies[history:]
        every = max(1, reads // max(1, writes))
        requests: list[list[Any]] = []
        w = 0
        for i in range(reads):
            requests.append(
                ["read", "GET", paths[i % len(paths)], {"Accept": "application/json", **_ip(i // 4)}, None]
            )
            if i % every == every - 1 and w < len(live):
                requests.append(["event", "POST", NOTIFY, signed_headers(live[w]), live[w]])
                w += 1
        measured = h.load(requests, concurrency=CONCURRENCY)
    tags = measured["by_tag"]
    read_statuses = tags["read"]["statuses"]
    event_statuses = tags.get("event", {}).get("statuses", {})
    errors_5xx = sum(n for s, n in {**read_statuses}.items() if not s.isdigit() or s.startswith("5")) + sum(
        n for s, n in event_statuses.items() if not s.isdigit() or s.startswith("5")
    )
    read_non_200 = sum(n for s, n in read_statuses.items() if s != "200")
    result = h.result(
        ok=errors_5xx == 0 and read_non_200 == 0 and event_statuses == {"204": w},
        measured=measured,
        tag="read",
        ceiling=ceiling,
        fields={
            "reads": reads,
            "events_during_run": w,
            "event_p99_ms": tags.get("event", {}).get("p99_ms"),
            "history_events": history,
            "history_statuses": arranged["by_tag"]["history"]["statuses"],
            "errors_5xx": errors_5xx,
            "read_non_200": read_non_200,
            "concurrency": CONCURRENCY,
        },
        targets=lambda r: {"p99_ms < 50": r["p99_ms"] < 50, "ratio >= 0.6": (r["ratio"] or 0) >= 0.6},
    )
    return result
