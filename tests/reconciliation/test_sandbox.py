"""The whole loop in sandbox mode, with real commits: the simulator serves the bill for its own orders (signed
request, gzip, SHA1), injected faults are caught, a dropped notification is repaired through the normal
payment path, the daily job and the CLI run the same code."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from app.db import Database, unit_of_work
from app.kit.time import business_date
from app.models import Donation, FeedEvent, JournalEntry, ReconciliationRun
from app.models.role_grant import Role
from app.reconciliation.service import Actor, reconciliation_service
from app.wechat.pay import WeChatPayGateway, get_wechatpay
from app.worker import SCHEDULE, Periodic, drain
from tests.fixtures.client import login
from tests.fixtures.factories import grant, unique
from tests.reconciliation.helpers import BILL_DAY, Line, bill_bytes, create_target, out_trade_no, txn_id

RUNS = "/api/v1/admin/reconciliation/runs"
RESOLVE = "/api/v1/admin/reconciliation/discrepancies/{}/resolve"


async def _setup(client: httpx.AsyncClient) -> tuple[dict[str, str], dict[str, str], str]:
    admin_openid = unique("admin")
    async with unit_of_work() as s:
        await grant(s, admin_openid, Role.federation_admin)
        target = await create_target(s)
    return await login(client, admin_openid), await login(client, unique("donor")), target.code


async def _donate(client: httpx.AsyncClient, donor: dict[str, str], code: str, fen: int) -> dict[str, Any]:
    res = await client.post(
        "/api/v1/donations",
        json={"target_code": code, "amount_fen": fen},
        headers={**donor, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert res.status_code == 201, res.text
    return res.json()


async def _status(donation_id: str) -> str:
    async with unit_of_work() as s:
        donation = await s.get(Donation, uuid.UUID(donation_id))
        assert donation is not None
        return donation.status


async def test_dropped_notification_and_changed_amount_are_caught_and_the_drop_repaired(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    admin, donor, code = await _setup(committed_client)
    ok = await _donate(committed_client, donor, code, 1000)
    dropped = await _donate(committed_client, donor, code, 2000)
    changed = await _donate(committed_client, donor, code, 3000)
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        assert (await sim.post(f"/sandbox/wechatpay/pay/{ok['out_trade_no']}")).json()["deliveries"] == [204]
        assert (
            await sim.post(f"/sandbox/wechatpay/pay/{dropped['out_trade_no']}", params={"drop": "true"})
        ).json()["dropped"]
        await sim.post(f"/sandbox/wechatpay/pay/{changed['out_trade_no']}")
        fault = await sim.post(
            f"/sandbox/wechatpay/faults/amount/{changed['out_trade_no']}", params={"total_fen": 2999}
        )
        assert fault.json()["ok"] is True
    assert await _status(dropped["id"]) == "pending"

    today = business_date().isoformat()
    res = await committed_client.post(RUNS, headers=admin, json={"bill_date": today})
    assert res.status_code == 200, res.text
    run = res.json()
    assert run["source"] == "api" and run["bill"]["rows"] == 3
    assert run["counts"] == {
        "matched": 1,
        "amount_mismatch": 1,
        "missing_in_ledger": 1,
        "missing_in_bill": 0,
        "status_mismatch": 0,
    }
    detail = (await committed_client.get(f"{RUNS}/{run['id']}", headers=admin)).json()
    by_kind = {d["kind"]: d for d in detail["discrepancies"]}
    assert by_kind["missing_in_ledger"]["out_trade_no"] == dropped["out_trade_no"]
    assert by_kind["missing_in_ledger"]["repairable"] is True
    assert (
        by_kind["amount_mismatch"]["bill_amount_fen"],
        by_kind["amount_mismatch"]["ledger_amount_fen"],
    ) == (2999, 3000)
    assert by_kind["amount_mismatch"]["repairable"] is False

    # repair: query WeChat Pay, complete through the normal payment path (ledger lot, receipt, feed)
    res = await committed_client.post(
        RESOLVE.format(by_kind["missing_in_ledger"]["id"]),
        headers=admin,
        json={"action": "repair", "note": "通知丢失，查询后补记"},
    )
    assert res.status_code == 200, res.text
    assert res.json()["resolution"] == "repaired" and res.json()["detail"]["repair"]["completed"] is True
    assert await _status(dropped["id"]) == "paid"
    # repairing the changed amount is refused: WeChat's order does not match ours
    refused = await committed_client.post(
        RESOLVE.format(by_kind["amount_mismatch"]["id"]),
        headers=admin,
        json={"action": "repair", "note": "x"},
    )
    assert refused.status_code == 409
    res = await committed_client.post(
        RESOLVE.format(by_kind["amount_mismatch"]["id"]),
        headers=admin,
        json={"note": "模拟器注入的金额故障，已核实"},
    )
    assert res.status_code == 200

    again = (await committed_client.post(RUNS, headers=admin, json={"bill_date": today})).json()
    assert again["run_count"] == 2 and again["counts"]["missing_in_ledger"] == 0
    assert again["counts"]["matched"] == 2 and again["counts"]["amount_mismatch"] == 1
    assert again["open_discrepancies"] == 0 and again["day_status"] == "reconciled"
    async with unit_of_work() as s:
        statuses = (
            (
                await s.execute(
                    select(FeedEvent.payload["status"].astext)
                    .where(FeedEvent.kind == "reconciliation")
                    .order_by(FeedEvent.id)
                )
            )
            .scalars()
            .all()
        )
        fees = (
            await s.execute(
                select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "wechat_fee")
            )
        ).scalar_one()
    assert statuses == ["under_review", "reconciled"] and fees == 1


class _TamperedHash(WeChatPayGateway):
    async def trade_bill(self, bill_date: str) -> dict[str, Any]:
        info = await super().trade_bill(bill_date)
        return {**info, "hash_value": "0" * 40}


async def test_downloaded_bill_with_the_wrong_hash_is_refused(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    _admin, donor, code = await _setup(committed_client)
    paid = await _donate(committed_client, donor, code, 1000)
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        await sim.post(f"/sandbox/wechatpay/pay/{paid['out_trade_no']}")
    actor = Actor(user_id=None, label="test")
    try:
        async with unit_of_work() as s:
            await reconciliation_service.run_from_api(
                s, _TamperedHash(get_wechatpay().config), business_date(), actor
            )
    except Exception as exc:
        assert getattr(exc, "error_code", None) == "BillHashMismatch", exc
    else:
        raise AssertionError("a bill whose SHA1 does not match must be refused")
    async with unit_of_work() as s:
        assert (await s.execute(select(func.count()).select_from(ReconciliationRun))).scalar_one() == 0


async def test_concurrent_runs_of_one_date_take_turns_and_post_fees_once(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    admin, _, _ = await _setup(committed_client)
    lines = [Line(out_trade_no(), 1000 + i, txn_id()) for i in range(30)]
    data = bill_bytes(lines, gz=True)
    results = await asyncio.gather(
        *(
            committed_client.post(RUNS, headers=admin, files={"file": ("b.gz", data, "application/gzip")})
            for _ in range(4)
        )
    )
    assert [r.status_code for r in results] == [200] * 4, [r.text for r in results]
    async with unit_of_work() as s:
        run = (await s.execute(select(ReconciliationRun))).scalar_one()
        fees = (
            (await s.execute(select(JournalEntry).where(JournalEntry.kind == "wechat_fee"))).scalars().all()
        )
    assert run.run_count == 4 and run.missing_in_ledger_count == 30
    assert len(fees) == 1 and run.fee_posted_fen == sum((line.amount_fen * 6 + 500) // 1000 for line in lines)


async def test_daily_job_reconciles_through_the_adapter(
    committed_client: httpx.AsyncClient, committed: Database, simulator: str
) -> None:
    from app.reconciliation.tasks import daily

    assert Periodic("reconciliation.daily", "30 10 * * *") in SCHEDULE
    _, donor, code = await _setup(committed_client)
    paid = await _donate(committed_client, donor, code, 1500)
    async with httpx.AsyncClient(base_url=simulator, timeout=60) as sim:
        await sim.post(f"/sandbox/wechatpay/pay/{paid['out_trade_no']}")
    daily.send(bill_date=business_date().isoformat())
    await asyncio.to_thread(drain)
    async with unit_of_work() as s:
        run = (await s.execute(select(ReconciliationRun))).scalar_one()
    assert (run.bill_date, run.source, run.matched_count, run.day_status) == (
        business_date(),
        "api",
        1,
        "reconciled",
    )
    assert run.last_run_by == "system:reconciliation.daily"


async def test_cli_reconciles_a_file_and_refuses_a_bad_one(committed: Database, tmp_path: Any) -> None:
    from app.cli import main

    good = tmp_path / "bill.csv.gz"
    good.write_bytes(bill_bytes([Line(out_trade_no(), 100, txn_id())], gz=True))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(bill_bytes([Line(out_trade_no(), 100, txn_id())])[:-60])
    day = BILL_DAY.isoformat()
    assert await asyncio.to_thread(main, ["reconcile", "--date", day, "--file", str(bad)]) == 2
    assert await asyncio.to_thread(main, ["reconcile", "--date", day, "--file", str(good)]) == 1
    empty = tmp_path / "empty.csv"
    empty.write_bytes(bill_bytes([]))
    other = BILL_DAY.replace(day=1) if BILL_DAY.day != 1 else BILL_DAY.replace(day=2)
    assert (
        await asyncio.to_thread(main, ["reconcile", "--date", other.isoformat(), "--file", str(empty)]) == 0
    )
    async with unit_of_work() as s:
        runs = (
            (await s.execute(select(ReconciliationRun).order_by(ReconciliationRun.bill_date))).scalars().all()
        )
    assert sorted((r.bill_date.isoformat(), r.missing_in_ledger_count) for r in runs) == sorted(
        [(day, 1), (other.isoformat(), 0)]
    )
