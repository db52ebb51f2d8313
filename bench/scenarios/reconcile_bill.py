"""The daily reconciliation of a big day: a generated WeChat Pay trade bill of 1,000,000 rows (quick: 100,000)
in the exact layout the simulator serves (backtick-prefixed CSV, yuan, summary block), reconciled by
``reconciliation_service.run`` against as many paid donations, with discrepancies planted: amounts off by a fen,
payments WeChat has and we do not, and paid donations missing from the bill. The engine runs in its own process so
its peak RSS is its own. Targets: < 60 s, < 300 MB, discrepancies exactly those planted."""

from __future__ import annotations

import asyncio
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.fixtures import reset_settings
from bench.harness import ROOT, Harness

FEE_PER_MILLE = 6


def _planted(n: int) -> dict[str, set[int]]:
    step = max(1, n // 50)
    return {
        "amount_mismatch": set(range(7, n, step)),
        "missing_in_bill": set(range(11, n, step * 2)),
    }


def _amount(g: int) -> int:
    return 1000 + (g % 50) * 100


async def _arrange(n: int, day: date) -> None:
    from sqlalchemy import select, text

    from app.db import unit_of_work
    from app.kit.time import SHANGHAI
    from app.models import DonationTarget

    start = datetime.combine(day, datetime.min.time(), tzinfo=SHANGHAI)
    async with unit_of_work() as s:
        target = (await s.execute(select(DonationTarget).order_by(DonationTarget.code).limit(1))).scalar_one()
        from app.donations.service import donation_service

        account = await donation_service.target_account(s, target)
        await s.execute(
            text(
                "INSERT INTO donations (id, target_id, target_account, channel, status, amount_fen, refunded_fen, "
                "anonymous, out_trade_no, transaction_id, paid_at, created_at, updated_at) "
                "SELECT gen_random_uuid(), :tid, :acct, 'wechatpay', 'paid', 1000 + (g % 50) * 100, 0, false, "
                "'BENCHRB' || lpad(g::text, 12, '0'), '4200' || lpad(g::text, 24, '0'), "
                "CAST(:start AS timestamptz) + make_interval(secs => g % 86000), now(), now() "
                "FROM generate_series(1, :n) g"
            ),
            {"tid": target.id, "acct": account, "start": start, "n": n},
        )


def _write_bill(path: Path, n: int, day: date, planted: dict[str, set[int]], missing_in_ledger: int) -> None:
    from app.config import get_settings

    settings = get_settings()
    appid, mchid = settings.WECHAT_APPID, settings.WECHATPAY_MCHID
    from app.sandbox.wechatpay import BILL_HEADER, BILL_SUMMARY_HEADER

    def y(fen: int) -> str:
        return f"{fen // 100}.{fen % 100:02d}"

    rows = settled = fees = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        fh.write(BILL_HEADER + "\r\n")

        def row(g: int, out_trade_no: str, transaction_id: str, amount: int) -> None:
            nonlocal rows, settled, fees
            fee = (amount * FEE_PER_MILLE + 500) // 1000
            rows += 1
            settled += amount
            fees += fee
            at = f"{day.isoformat()} {(g % 86000) // 3600:02d}:{(g % 3600) // 60:02d}:{g % 60:02d}"
            fields = [
                at, appid, mchid, "0", "", transaction_id, out_trade_no, f"bench_donor_{g % 997}",
                "JSAPI", "SUCCESS", "OTHERS", "CNY", y(amount), "0.00", "0", "0", "0.00", "0.00",
                "", "", "我为老人助一餐", "", y(fee), "0.60%", y(amount), "0.00", "",
            ]  # fmt: skip
            writer.writerow(["`" + f for f in fields])

        for g in range(1, n + 1):
            if g in planted["missing_in_bill"]:
                continue
            amount = _amount(g) + (1 if g in planted["amount_mismatch"] else 0)
            row(g, f"BENCHRB{g:012d}", f"4200{g:024d}", amount)
        for k in range(missing_in_ledger):
            g = n + 1 + k
            row(g, f"BENCHRX{g:012d}", f"4201{g:024d}", 1000)
        fh.write(BILL_SUMMARY_HEADER + "\r\n")
        writer.writerow(
            ["`" + f for f in (str(rows), y(settled), "0.00", "0.00", y(fees), y(settled), "0.00")]
        )


def child(path: str, day: str) -> None:
    """Runs in its own process: the engine on the file, timed, with its peak RSS."""
    from app.db import unit_of_work
    from app.reconciliation.service import Actor, reconciliation_service

    async def go() -> dict[str, Any]:
        started = time.perf_counter()
        fh = open(path, "rb")  # noqa: ASYNC230, SIM115 - the engine reads it in the threadpool
        async with unit_of_work() as s:
            with fh:
                out = await reconciliation_service.run(
                    s,
                    fh,
                    bill_date=date.fromisoformat(day),
                    source="upload",
                    actor=Actor(user_id=None, label="bench", channel="system"),
                )
        seconds = time.perf_counter() - started
        return {"seconds": round(seconds, 2), "run": json.loads(out.model_dump_json())}

    result = asyncio.run(go())
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")


def run(h: Harness) -> dict[str, Any]:
    from app.kit.time import business_date

    n = h.scale(1_000_000)
    reset_settings()
    day = business_date() - timedelta(days=1)
    planted = _planted(n)
    missing_in_ledger = max(1, n // 40_000)
    arrange_started = time.perf_counter()
    asyncio.run(_arrange(n, day))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"bill-{uuid.uuid4().hex}.csv"
        _write_bill(path, n, day, planted, missing_in_ledger)
        arrange_seconds = round(time.perf_counter() - arrange_started, 1)
        size_mb = round(path.stat().st_size / 1e6, 1)
        res = subprocess.run(
            [sys.executable, "-m", "bench.scenarios.reconcile_bill", str(path), day.isoformat()],
            cwd=ROOT,
            env=h.env(),
            capture_output=True,
            text=True,
            timeout=1200,
        )
    if res.returncode != 0:
        raise RuntimeError(f"reconciliation failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    run_view = out["run"]
    expected = {
        "amount_mismatch": len(planted["amount_mismatch"] - planted["missing_in_bill"]),
        "missing_in_bill": len(planted["missing_in_bill"]),
        "missing_in_ledger": missing_in_ledger,
        "status_mismatch": 0,
    }
    found = {k: run_view["counts"][k] for k in expected}
    fields = {
        "seconds": out["seconds"],
        "peak_rss_mb": out["peak_rss_mb"],
        "discrepancies": found,
        "planted": expected,
        "rows": n - len(planted["missing_in_bill"]) + missing_in_ledger,
        "matched": run_view["counts"]["matched"],
        "bill_mb": size_mb,
        "arrange_seconds": arrange_seconds,
    }
    result = h.result(
        ok=found == expected,
        measured={},
        tag=None,
        ceiling=None,
        fields=fields,
        targets=None
        if h.quick
        else (lambda r: {"seconds < 60": r["seconds"] < 60, "peak_rss_mb < 300": r["peak_rss_mb"] < 300}),
    )
    result.pop("workers", None)
    return result


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2])
