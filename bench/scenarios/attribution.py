"""Charity attribution at month scale: 100,000 (quick: 10,000) served meals each draw a 3-yuan charity portion
from 30,000 (quick: 3,000) one-meal donations, FIFO, canteen pool first, then the general meal pool, through
the ledger's own two-phase functions in their batch form (``place_holds`` at booking, ``post_holds`` when
served), in job-sized transactions run by concurrent workers, as the serve jobs would. Timed: placing and
posting every meal (the sealer chains the committed entries meanwhile, as it does in production). Untimed
set-up pays the donations in through ``record_donation_payments``. Correctness: every meal fully funded, one
entry per meal, ``ledger-check`` passes. Target: < 30 s for the full size."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from bench.fixtures import create_pending_donations, reset_settings
from bench.harness import Harness, cpu_snapshot, cpu_split

PORTION_FEN = 300
WORKERS = 2  # concurrent job workers; they queue on the general meal pool row, one batch at a time
# Meals per job: placed in one transaction (booked), then posted in another (served), as they happen. Posting
# in the placing transaction would also make PostgreSQL re-check every foreign key of the rows it updates.
BATCH = 1000


async def _pay_in(donations: list[dict[str, Any]]) -> None:
    from app.db import unit_of_work
    from app.kit.time import utcnow
    from app.ledger.service import DonationPayment, ledger_service
    from app.models import Donation

    paid_at = utcnow() - timedelta(days=1)
    for start in range(0, len(donations), 500):
        chunk = donations[start : start + 500]
        async with unit_of_work() as s:
            ids = [d["id"] for d in chunk]
            rows = await s.execute(select(Donation.id, Donation.target_account).where(Donation.id.in_(ids)))
            targets = {donation_id: account for donation_id, account in rows}
            await ledger_service.record_donation_payments(
                s,
                [
                    DonationPayment(
                        donation_id=d["id"],
                        target_account=targets[d["id"]],
                        amount_fen=d["amount_fen"],
                        source="wechatpay",
                        external_ref=f"4200{n:024d}",
                        paid_at=paid_at + timedelta(seconds=n),
                    )
                    for n, d in enumerate(chunk, start=start)
                ],
            )
            await s.execute(
                update(Donation).where(Donation.id.in_(ids)).values(status="paid", paid_at=paid_at)
            )


async def _arrange(donations: int) -> tuple[list[Any], list[dict[str, Any]]]:
    from app.db import unit_of_work
    from app.models import Canteen, Donation, DonationTarget

    async with unit_of_work() as s:
        made = await create_pending_donations(s, donations, prefix="BENCHAT")
        # every gift is exactly one meal unit (10 yuan) to the general meal pool, which every canteen draws on
        general = (
            await s.execute(select(DonationTarget.id).where(DonationTarget.kind == "general").limit(1))
        ).scalar_one()
        await s.execute(
            update(Donation)
            .where(Donation.id.in_([d["id"] for d in made]))
            .values(amount_fen=1000, meals=1, target_id=general, target_account="pool:general_meal")
        )
        canteens = list((await s.execute(select(Canteen.id).order_by(Canteen.code))).scalars())
    for d in made:
        d["amount_fen"] = 1000
    await _pay_in(made)
    return canteens, made


async def _serve(meals: int, canteens: list[Any]) -> dict[str, Any]:
    from app.db import unit_of_work
    from app.kit.time import business_date
    from app.ledger.service import LedgerService, ledger_service

    day = business_date()
    queue = list(range(meals))
    held_total = 0

    async def worker() -> None:
        nonlocal held_total
        while queue:
            batch = queue[:BATCH]
            del queue[:BATCH]
            keys = [f"bench:meal:{i}" for i in batch]
            async with unit_of_work() as s:  # booked
                held = await ledger_service.place_holds(
                    s,
                    [
                        LedgerService.HoldRequest(
                            hold_key=key,
                            canteen_id=canteens[i % len(canteens)],
                            amount_fen=PORTION_FEN,
                            meta={"service_date": day.isoformat(), "slot": "lunch"},
                        )
                        for i, key in zip(batch, keys, strict=True)
                    ],
                )
            async with unit_of_work() as s:  # served
                await ledger_service.post_holds(
                    s, [LedgerService.ServedMeal(key, day, {"slot": "lunch"}) for key in keys]
                )
            held_total += sum(held.values())

    machine = cpu_snapshot(None)
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    seconds, python_cpu = time.perf_counter() - started, time.process_time() - cpu
    split = cpu_split(machine, cpu_snapshot(None)) or {}
    return {
        "seconds": round(seconds, 2),
        # this process's CPU meanwhile: the jobs' Python and the sealer's (PostgreSQL's is not in it)
        "python_cpu_seconds": round(python_cpu, 2),
        # PostgreSQL's processes meanwhile, where /proc shows them (None elsewhere, e.g. on macOS)
        "postgres_cpu_seconds": round(split["postgres"], 2) if "postgres" in split else None,
        "held_fen": held_total,
    }


async def _check(meals: int) -> dict[str, Any]:
    from app.db import unit_of_work
    from app.ledger.service import ledger_service
    from app.models import Allocation, JournalEntry

    async with unit_of_work() as s:
        posted = (
            await s.execute(select(func.count()).where(JournalEntry.kind == "meal_subsidy"))
        ).scalar_one()
        allocations = (await s.execute(select(func.count()).select_from(Allocation))).scalar_one()
        check = await ledger_service.check(s)
    return {
        "posted_entries": int(posted),
        "allocations": int(allocations),
        "ledger_check": bool(check["ok"]),
        "ledger_problems": check["problems"][:3],
    }


def run(h: Harness) -> dict[str, Any]:
    meals, donations = h.scale(100_000), h.scale(30_000)
    reset_settings()

    async def main() -> dict[str, Any]:
        from app.kit.collector import settle_for_jobs

        settle_for_jobs()  # as the job worker process that runs the serve jobs does once started
        arrange_started = time.perf_counter()
        canteens, _ = await _arrange(donations)
        arrange_seconds = round(time.perf_counter() - arrange_started, 1)
        timed = await _serve(meals, canteens)
        checked = await _check(meals)
        return {**timed, **checked, "arrange_seconds": arrange_seconds}

    out = asyncio.run(main())
    fields = {
        **out,
        "meals": meals,
        "donations": donations,
        "meals_per_second": round(meals / out["seconds"], 1) if out["seconds"] else None,
        "workers": WORKERS,
        "batch": BATCH,
    }
    ok = out["held_fen"] == meals * PORTION_FEN and out["posted_entries"] == meals and out["ledger_check"]
    result = h.result(
        ok=ok,
        measured={},
        tag=None,
        ceiling=None,
        fields=fields,
        targets=None if h.quick else (lambda r: {"seconds < 30": r["seconds"] < 30}),
    )
    result["workers"] = WORKERS  # in-process job workers, not uvicorn workers
    result.pop("redis", None)
    return result
