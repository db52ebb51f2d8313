"""The minutes after a televised charity drive: payment notifications pour in.

10,000 (quick: 1,000) WeChat Pay APIv3 payment notifications for 7,000 (quick: 700) pending donations, each
body encrypted (AEAD_AES_256_GCM) and every delivery signed (RSA-SHA256) by the simulator's own code, POSTed
straight to ``/api/v1/payments/wechat/notify``. 30% are re-deliveries: half of them right next to the first
delivery (so they race it), half later. Correctness: every order paid once, one ledger entry per order, ledger
check passes, no 5xx."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from sqlalchemy import func, select

from bench.fixtures import create_pending_donations, payment_notification, reset_settings, signed_headers
from bench.harness import Harness

CONCURRENCY = 64
PATH = "/api/v1/payments/wechat/notify"


async def _arrange(orders: int) -> list[dict[str, Any]]:
    from app.db import unit_of_work

    async with unit_of_work() as s:
        return await create_pending_donations(s, orders, prefix="BENCHNS")


async def _count(ids: list[Any]) -> dict[str, Any]:
    from app.db import unit_of_work
    from app.ledger.service import ledger_service
    from app.models import Donation, JournalEntry, PaymentInbox

    async with unit_of_work() as s:
        paid = (
            await s.execute(select(func.count()).where(Donation.id.in_(ids), Donation.status == "paid"))
        ).scalar_one()
        entries = (await s.execute(select(func.count()).where(JournalEntry.kind == "donation"))).scalar_one()
        inbox = (await s.execute(select(func.count()).select_from(PaymentInbox))).scalar_one()
        receipts = (
            await s.execute(
                select(func.count(func.distinct(Donation.receipt_no))).where(Donation.id.in_(ids))
            )
        ).scalar_one()
        check = await ledger_service.check(s)
    return {
        "paid_orders": int(paid),
        "ledger_entries": int(entries),
        "inbox_rows": int(inbox),
        "receipts": int(receipts),
        "ledger_check": bool(check["ok"]),
        "ledger_problems": check["problems"][:3],
    }


def run(h: Harness) -> dict[str, Any]:
    total, orders_n = h.scale(10_000), h.scale(7_000)
    reset_settings()
    orders = asyncio.run(_arrange(orders_n))
    bodies = [payment_notification(o, n)[0] for n, o in enumerate(orders)]
    rng = random.Random(8)
    duplicates = total - orders_n
    racing = set(rng.sample(range(orders_n), duplicates // 2))
    late = [rng.randrange(orders_n) for _ in range(duplicates - len(racing))]
    sequence: list[int] = []
    for i in range(orders_n):
        sequence.append(i)
        if i in racing:
            sequence.append(i)
    for i in late:  # re-deliveries arriving later, scattered through the second half
        sequence.insert(rng.randrange(len(sequence) // 2, len(sequence) + 1), i)
    with h.serving():
        ceiling = h.ceiling(total, CONCURRENCY)
        # Every delivery is signed right before the load, which is one stream, as a storm is: WeChat Pay's
        # timestamps are valid 5 minutes, and signing all of them takes seconds (a delivery signed too long
        # ago is refused, and a refused delivery fails the run).
        signed = time.perf_counter()
        requests = [["notify", "POST", PATH, signed_headers(bodies[i]), bodies[i]] for i in sequence]
        signing_seconds = round(time.perf_counter() - signed, 1)
        measured = h.load(requests, concurrency=CONCURRENCY, keep_latencies=True)
    counts = asyncio.run(_count([o["id"] for o in orders]))
    statuses = measured["by_tag"]["notify"]["statuses"]
    errors_5xx = sum(n for s, n in statuses.items() if not s.isdigit() or s.startswith("5"))
    rejected = sum(n for s, n in statuses.items() if s.startswith("4"))
    fields = {
        **counts,
        "notifications": len(sequence),
        "orders": orders_n,
        "duplicates": duplicates,
        "errors_5xx": errors_5xx,
        "rejected_4xx": rejected,
        "concurrency": CONCURRENCY,
        "signing_seconds": signing_seconds,
    }
    ok = (
        counts["paid_orders"] == orders_n
        and counts["ledger_entries"] == orders_n
        and counts["receipts"] == orders_n
        and counts["ledger_check"]
        and errors_5xx == 0
        and rejected == 0
    )
    return h.result(
        ok=ok,
        measured=measured,
        tag="notify",
        ceiling=ceiling,
        fields=fields,
        targets=lambda r: {"ratio >= 0.25": (r["ratio"] or 0) >= 0.25},
    )
