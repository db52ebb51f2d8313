"""``python -m bench.batch``: what one payment batch costs, in Python and in PostgreSQL, by its size.

A notify storm's batches hold about thirty notifications, the feed's four or five, and a batch has a large
fixed cost on both sides; this measures it apart from HTTP. In a fresh database (as the scenarios make one) it
arranges pending donations and their notifications (verified and decrypted by the gateway, as the endpoint
does; not measured), then, for each size, hands that many notifications at once to ``payment_batch.submit``,
the endpoint's own call, and waits for their answers: the batch locks the orders, stores the inbox rows, marks
the orders paid with their feed events, writes the ledger, commits, publishes the feed and runs its post-commit
hooks, exactly as in the server. One batch at a time, on uvloop, with the long-lived objects frozen out of the
garbage collector's sight after start-up (as ``app.main`` does). Log lines go to a temporary file, as the
server's go to its log.

Per size, per batch: this process's CPU (``process_time``: median and quartiles; a batch during which the
post-commit sealing or receipt numbering also ran costs more, hence the median), PostgreSQL's CPU (its
processes' user and system time read from ``/proc`` around the series, the sealing and receipt numbering that
the batches' commits set off included: a payment's share of work after its commit), and the median wall time
from handing the notifications over to their answers. Then
the fixed and per-notification parts, from the smallest and largest sizes. One JSON object on the last line.

The machine's speed drifts from minute to minute: compare only runs made side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from typing import Any

from bench.fixtures import create_pending_donations, payment_notification, reset_settings, signed_headers
from bench.harness import Harness, cpu_snapshot, cpu_split, emit

# batches per size first: every pooled connection prepares the statements and plans them (five runs each)
WARM_UP = 60


async def _arrange(count: int) -> list[Any]:
    from app.db import unit_of_work
    from app.wechat.pay import get_wechatpay

    async with unit_of_work() as s:
        orders = await create_pending_donations(s, count, prefix="BENCHPB")
    gateway = get_wechatpay()
    notes = []
    for n, order in enumerate(orders):
        body, _ = payment_notification(order, n)
        notes.append(gateway.parse_notification(signed_headers(body), body.encode()))
    return notes


async def _measure(sizes: list[int], rounds: int) -> dict[str, Any]:
    from app.db import get_session_factory
    from app.kit.background import drain_all
    from app.payments.service import WaitingNotification, payment_batch

    notes = await _arrange(sum(sizes) * (rounds + WARM_UP))
    open_session = await get_session_factory()
    gc.collect()
    gc.freeze()
    results: dict[str, Any] = {}
    outcomes: set[str] = set()
    at = 0
    for size in sizes:
        cpu: list[float] = []
        walls: list[float] = []
        before = None
        for i in range(WARM_UP + rounds):
            if i == WARM_UP:
                await drain_all()
                before = cpu_snapshot(None)
            batch = notes[at : at + size]
            at += size
            t0, w0 = time.process_time(), time.perf_counter()
            answers = await asyncio.gather(
                *(payment_batch.submit(open_session, WaitingNotification(note)) for note in batch)
            )
            if i >= WARM_UP:
                cpu.append(time.process_time() - t0)
                walls.append(time.perf_counter() - w0)
            outcomes.update(answers)
        await drain_all()  # the post-commit work the series set off, in its PostgreSQL time
        split = cpu_split(before, cpu_snapshot(None))
        cpu.sort()
        postgres = split["postgres"] / rounds * 1000 if split else None
        results[str(size)] = {
            "python_cpu_ms": round(statistics.median(cpu) * 1000, 3),
            "python_cpu_ms_p25_p75": [
                round(cpu[len(cpu) // 4] * 1000, 3),
                round(cpu[3 * len(cpu) // 4] * 1000, 3),
            ],
            "postgres_cpu_ms": round(postgres, 3) if postgres is not None else None,
            "wall_ms": round(statistics.median(walls) * 1000, 3),
        }
    return {"by_size": results, "outcomes": sorted(outcomes)}


def _parts(by_size: dict[str, Any], key: str) -> dict[str, float] | None:
    """A batch's fixed cost and each notification's, by a line through the smallest and largest sizes."""
    sizes = sorted(int(s) for s in by_size)
    small, large = sizes[0], sizes[-1]
    a, b = by_size[str(small)][key], by_size[str(large)][key]
    if a is None or b is None or large == small:
        return None
    each = (b - a) / (large - small)
    return {"fixed_ms": round(a - each * small, 3), "per_notification_ms": round(each, 3)}


def run(sizes: list[int], rounds: int) -> dict[str, Any]:
    h = Harness(scenario="payment_batch", quick=False, workers=1)
    h.prepare()
    reset_settings()
    import uvloop

    from app.logging import configure_logging

    configure_logging("INFO")
    real_stdout = sys.stdout
    with tempfile.TemporaryFile("w", encoding="utf-8") as log:
        sys.stdout = log  # the batches' log lines, written as the server writes its own
        try:
            measured = uvloop.run(_measure(sizes, rounds))
        finally:
            sys.stdout = real_stdout
    by_size = measured["by_size"]
    return {
        "scenario": "payment_batch",
        "ok": measured["outcomes"] == ["paid"],
        "rounds": rounds,
        "by_size": by_size,
        "python": _parts(by_size, "python_cpu_ms"),
        "postgres": _parts(by_size, "postgres_cpu_ms"),
        "outcomes": measured["outcomes"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.batch",
        description="CPU of one payment batch (this process's Python, PostgreSQL's) and its wall time, by its "
        "size, in-process, one batch at a time. Prints one JSON object last.",
    )
    parser.add_argument(
        "--sizes", default="1,5,30", help="notifications per batch, comma-separated (default 1,5,30)"
    )
    parser.add_argument("--rounds", type=int, default=200, help="measured batches per size (default 200)")
    args = parser.parse_args(argv)
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error("--sizes: whole numbers, comma-separated")
    if not sizes or sizes[0] < 1 or sizes[-1] > 200:
        parser.error("--sizes: between 1 and 200 (a batch takes at most 200)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    result = run(sizes, args.rounds)
    emit(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
