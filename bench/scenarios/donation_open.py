"""The moment a televised charity drive shows the QR code: donors open their WeChat Pay orders.

2,000 (quick: 200) donors, each with a bearer token and an address of their own (``X-Forwarded-For``, as behind
the load balancer; the per-address limit on opening orders still counts every request), POST
``/api/v1/donations`` once; one in ten sends the same request again later (a retry after a lost answer), which
must get the same donation back without a second order. The server opens each order through the real
wechatpayv3 client, signing the request and verifying the answer, against the built-in WeChat Pay simulator of
the same server (sandbox mode), so it does both sides' work, and the simulator's writes share the pool.

Correctness: every request answered 201, one donation per donor with a prepay_id and its own out_trade_no,
each retry answered with its first donation. A retry that races its first request may open an order of its
own, which loses the key's claim and is never shown to anyone (``orders_never_shown``, at most one per
retry). No DESIGN.md target: the rate
feeds the 99公益日 arithmetic in docs/performance.md."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import func, select

from bench.fixtures import create_elders, reset_settings
from bench.harness import Harness

CONCURRENCY = 64
PATH = "/api/v1/donations"


async def _arrange(donors: int) -> tuple[str, list[tuple[Any, str]]]:
    from app.db import unit_of_work
    from app.models import DonationTarget

    async with unit_of_work() as s:
        code = (
            await s.execute(
                select(DonationTarget.code)
                .where(DonationTarget.kind == "general", DonationTarget.is_active.is_(True))
                .order_by(DonationTarget.code)
                .limit(1)
            )
        ).scalar_one()
        # any signed-in user may give; these happen to be elders' accounts, which changes nothing here
        people = await create_elders(s, donors, district_code="371402", prefix="bench_donor")
    return code, people


def _request(i: int, token: str, code: str) -> list[Any]:
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Idempotency-Key": f"open-{i:06d}",
        "X-Forwarded-For": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
    }
    return ["open", "POST", PATH, headers, json.dumps({"target_code": code, "meals": 1 + i % 3})]


async def _count() -> dict[str, Any]:
    from app.db import unit_of_work
    from app.models import Donation, SandboxWeChatPayOrder

    async with unit_of_work() as s:
        donations, prepaid, trade_nos = (
            await s.execute(
                select(
                    func.count(),
                    func.count(Donation.prepay_id),
                    func.count(func.distinct(Donation.out_trade_no)),
                ).where(Donation.channel == "wechatpay")
            )
        ).one()
        orders = (await s.execute(select(func.count()).select_from(SandboxWeChatPayOrder))).scalar_one()
    return {
        "donations": int(donations),
        "with_prepay_id": int(prepaid),
        "distinct_out_trade_nos": int(trade_nos),
        "simulator_orders": int(orders),
    }


def run(h: Harness) -> dict[str, Any]:
    donors = h.scale(2000)
    reset_settings()
    code, people = asyncio.run(_arrange(donors))
    requests = [_request(i, token, code) for i, (_, token) in enumerate(people)]
    retried = list(range(0, donors, 10))
    requests += [_request(i, people[i][1], code) for i in retried]  # after every first request was sent
    with h.serving():
        ceiling = h.ceiling(len(requests), CONCURRENCY)
        measured = h.load(requests, concurrency=CONCURRENCY, keep_bodies=True)
    counts = asyncio.run(_count())
    # [status, body] per request; None where the request got no answer (counted in statuses)
    answers = [answer if answer and answer[0] == 201 else None for answer in measured.pop("responses")]
    first_ids = [json.loads(a[1])["id"] if a else None for a in answers[:donors]]
    same_on_retry = sum(
        1
        for n, i in enumerate(retried)
        if (a := answers[donors + n]) is not None and first_ids[i] and json.loads(a[1])["id"] == first_ids[i]
    )
    statuses = measured["by_tag"]["open"]["statuses"]
    fields = {
        **counts,
        # a retry racing its first request opens an order too, which loses the key's claim and is never shown
        "orders_never_shown": counts["simulator_orders"] - counts["donations"],
        "retries": len(retried),
        "retries_same_donation": same_on_retry,
        "errors_5xx": sum(n for s, n in statuses.items() if not s.isdigit() or s.startswith("5")),
        "not_201": sum(n for s, n in statuses.items() if s != "201"),
        "donors": donors,
        "concurrency": CONCURRENCY,
    }
    ok = (
        fields["not_201"] == 0
        and counts["donations"] == donors
        and counts["with_prepay_id"] == donors
        and counts["distinct_out_trade_nos"] == donors
        and donors <= counts["simulator_orders"] <= donors + len(retried)
        and same_on_retry == len(retried)
    )
    return h.result(ok=ok, measured=measured, tag="open", ceiling=ceiling, fields=fields, targets=None)
