"""Reconciliation through the admin API on real PostgreSQL: planted discrepancies are each found once,
refused bills store nothing, re-runs are idempotent, resolutions are audited and gate the public feed."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger.service import ledger_service
from app.models import (
    AuditLog,
    FeedEvent,
    JournalEntry,
    ReconciliationDiscrepancy,
    ReconciliationRun,
)
from app.models.role_grant import Role
from tests.fixtures.client import login
from tests.fixtures.factories import create_district, grant, unique
from tests.reconciliation.helpers import (
    BILL_DAY,
    Line,
    add_donations,
    add_refund,
    bill_bytes,
    bill_text,
    create_target,
    fee_of,
    out_trade_no,
    txn_id,
)

RUNS = "/api/v1/admin/reconciliation/runs"


async def admin(client: httpx.AsyncClient, session: AsyncSession) -> dict[str, str]:
    openid = unique("admin")
    await grant(session, openid, Role.federation_admin)
    return await login(client, openid)


async def upload(
    client: httpx.AsyncClient, headers: dict[str, str], data: bytes, **form: str
) -> httpx.Response:
    return await client.post(
        RUNS, headers=headers, files={"file": ("bill.csv.gz", data, "application/gzip")}, data=form
    )


async def stored(session: AsyncSession) -> tuple[int, int, int, int]:
    """Rows that a refused bill must not leave: runs, discrepancies, fee entries, reconciliation feed events."""

    async def count(stmt: Any) -> int:
        return int((await session.execute(stmt)).scalar_one())

    return (
        await count(select(func.count()).select_from(ReconciliationRun)),
        await count(select(func.count()).select_from(ReconciliationDiscrepancy)),
        await count(select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "wechat_fee")),
        await count(select(func.count()).select_from(FeedEvent).where(FeedEvent.kind == "reconciliation")),
    )


async def planted_day(session: AsyncSession, n: int = 1000) -> tuple[list[Line], dict[str, str]]:
    """A bill of ``n`` rows against our books, with exactly one discrepancy of each kind planted.
    Returns the bill lines and the ref_key planted for each kind."""
    target = await create_target(session)
    lines: list[Line] = []
    ours: list[dict[str, Any]] = []
    for i in range(n - 3):
        line = Line(out_trade_no(), 100 + i, txn_id())
        lines.append(line)
        ours.append(
            {
                "out_trade_no": line.out_trade_no,
                "amount_fen": line.amount_fen,
                "transaction_id": line.transaction_id,
            }
        )
    # amount_mismatch: the bill says 1 fen more than our donation
    ours[10]["amount_fen"] -= 1
    # missing_in_ledger: WeChat paid it, our notification was lost (still pending)
    lost = Line(out_trade_no(), 1000, txn_id())
    lines.append(lost)
    ours.append({"out_trade_no": lost.out_trade_no, "amount_fen": 1000, "status": "pending"})
    # missing_in_bill: we recorded a payment the bill does not have
    ghost = out_trade_no()
    ours.append({"out_trade_no": ghost, "amount_fen": 500, "transaction_id": txn_id()})
    ids = await add_donations(session, target, ours)
    # a refund that matches, and one WeChat finished while we still think it is processing
    ok_refund = "RFOK" + uuid.uuid4().hex[:10]
    await add_refund(session, ids[0], 50, ok_refund)
    lines.append(
        Line(lines[0].out_trade_no, 50, lines[0].transaction_id, state="REFUND", out_refund_no=ok_refund)
    )
    pending_refund = "RFPD" + uuid.uuid4().hex[:10]
    await add_refund(session, ids[1], 30, pending_refund, status="processing")
    lines.append(
        Line(lines[1].out_trade_no, 30, lines[1].transaction_id, state="REFUND", out_refund_no=pending_refund)
    )
    assert len(lines) == n
    return lines, {
        "amount_mismatch": f"pay:{lines[10].out_trade_no}",
        "missing_in_ledger": f"pay:{lost.out_trade_no}",
        "missing_in_bill": f"pay:{ghost}",
        "status_mismatch": f"refund:{pending_refund}",
    }


async def all_discrepancies(
    client: httpx.AsyncClient, headers: dict[str, str], run_id: str
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        res = await client.get(f"{RUNS}/{run_id}", headers=headers, params=params)
        assert res.status_code == 200, res.text
        items += res.json()["discrepancies"]
        cursor = res.json()["next_cursor"]
        if not cursor:
            return items


async def test_a_thousand_row_bill_finds_each_planted_discrepancy_exactly_once(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    headers = await admin(client, session)
    lines, planted = await planted_day(session)
    res = await upload(client, headers, bill_bytes(lines, gz=True))
    assert res.status_code == 200, res.text
    run = res.json()
    assert run["bill_date"] == BILL_DAY.isoformat() and run["source"] == "upload"
    assert run["bill"]["rows"] == 1000 and run["bill"]["refund_rows"] == 2
    assert run["counts"] == {
        "matched": 997,  # 1000 bill rows − amount, missing_in_ledger and status problems
        "amount_mismatch": 1,
        "missing_in_ledger": 1,
        "missing_in_bill": 1,
        "status_mismatch": 1,
    }
    assert run["day_status"] == "under_review" and run["open_discrepancies"] == 4
    found = await all_discrepancies(client, headers, run["id"])  # paged two at a time
    assert sorted((d["kind"], d["ref_key"]) for d in found) == sorted((k, v) for k, v in planted.items())
    by_kind = {d["kind"]: d for d in found}
    assert (
        by_kind["amount_mismatch"]["bill_amount_fen"],
        by_kind["amount_mismatch"]["ledger_amount_fen"],
    ) == (
        lines[10].amount_fen,
        lines[10].amount_fen - 1,
    )
    assert (
        by_kind["missing_in_ledger"]["repairable"] is True
        and by_kind["missing_in_ledger"]["bill_line"] == 999
    )
    assert by_kind["status_mismatch"]["ledger_status"] == "processing"
    assert by_kind["missing_in_bill"]["bill_line"] is None
    # the day's fees are in the ledger, and the public feed says the day is under review
    fee = sum(fee_of(line.amount_fen) * (-1 if line.state == "REFUND" else 1) for line in lines)
    assert run["bill"]["fee_fen"] == run["fee_posted_fen"] == fee
    assert await _fee_balance(session) == fee
    event = (await session.execute(select(FeedEvent).where(FeedEvent.kind == "reconciliation"))).scalar_one()
    assert event.payload["status"] == "under_review" and event.payload["bill_date"] == BILL_DAY.isoformat()
    audit = (
        await session.execute(select(AuditLog).where(AuditLog.action == "reconciliation.run"))
    ).scalar_one()
    assert audit.target_id == run["id"]


def _tampered_summary(lines: list[Line]) -> bytes:
    return bill_bytes(lines, summary=[str(len(lines)), "0.01", "0.00", "0.00", "0.00", "0.01", "0.00"])


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("hash", "BillHashMismatch"),
        ("truncated", "BillTruncated"),
        ("header", "BillWrongHeader"),
        ("three_decimals", "BillAmountPrecision"),
        ("summary", "BillSummaryMismatch"),
        ("duplicate", "BillDuplicateRow"),
    ],
)
async def test_refused_bills_store_nothing(
    client: httpx.AsyncClient, session: AsyncSession, case: str, code: str
) -> None:
    headers = await admin(client, session)
    lines, _ = await planted_day(session, n=50)
    form: dict[str, str] = {}
    good = bill_bytes(lines, gz=True)
    if case == "hash":
        data, form = good, {"sha1": "a" * 40}
    elif case == "truncated":
        data = good[: len(good) - 30]
    elif case == "header":
        data = bill_bytes(lines, header="交易时间,商户订单号,订单金额")
    elif case == "three_decimals":
        data = bill_text(lines).replace(",`1.05,", ",`1.055,", 1).encode()
    elif case == "summary":
        data = _tampered_summary(lines)
    else:
        data = bill_bytes([*lines, lines[3]])
    before = await stored(session)
    res = await upload(client, headers, data, **form)
    assert res.status_code == 400, res.text
    body = res.json()
    assert body["error"] == code
    assert body["message"].startswith("账单被拒收，没有保存任何内容")
    if code in ("BillWrongHeader", "BillAmountPrecision", "BillSummaryMismatch", "BillDuplicateRow"):
        assert f"第 {body['detail']['line']} 行" in body["message"]
    assert await stored(session) == before == (0, 0, 0, 0)


async def test_running_the_same_date_twice_gives_identical_results_and_one_set_of_fees(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    headers = await admin(client, session)
    lines, _ = await planted_day(session, n=200)
    data = bill_bytes(lines, gz=True)
    first = (await upload(client, headers, data)).json()
    first_items = await all_discrepancies(client, headers, first["id"])
    second_res = await upload(client, headers, data, bill_date=BILL_DAY.isoformat())
    assert second_res.status_code == 200, second_res.text
    second = second_res.json()
    second_items = await all_discrepancies(client, headers, second["id"])

    def comparable(run: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in run.items() if k not in ("run_count", "last_run_at")}

    assert second["id"] == first["id"] and second["run_count"] == 2
    assert comparable(second) == comparable(first)
    key = (
        "kind",
        "ref_key",
        "bill_amount_fen",
        "ledger_amount_fen",
        "bill_status",
        "ledger_status",
        "status",
    )
    assert [tuple(d[k] for k in key) for d in second_items] == [tuple(d[k] for k in key) for d in first_items]
    fees = (
        (await session.execute(select(JournalEntry).where(JournalEntry.kind == "wechat_fee"))).scalars().all()
    )
    assert [e.business_key for e in fees] == [f"wechat_fee:{BILL_DAY.isoformat()}"]
    assert await _fee_balance(session) == first["fee_posted_fen"]
    feed = (
        await session.execute(
            select(func.count()).select_from(FeedEvent).where(FeedEvent.kind == "reconciliation")
        )
    ).scalar_one()
    assert feed == 1  # the day's public status did not change

    # a corrected bill with a different fee total posts only the difference, once
    lines[5].fee_fen = fee_of(lines[5].amount_fen) + 7
    third = (await upload(client, headers, bill_bytes(lines))).json()
    assert third["fee_posted_fen"] == first["fee_posted_fen"] + 7
    fees = (
        (await session.execute(select(JournalEntry.business_key).where(JournalEntry.kind == "wechat_fee")))
        .scalars()
        .all()
    )
    assert sorted(fees) == [
        f"wechat_fee:{BILL_DAY.isoformat()}",
        f"wechat_fee:{BILL_DAY.isoformat()}:adjust:1",
    ]
    assert await _fee_balance(session) == third["fee_posted_fen"]


async def _fee_balance(session: AsyncSession) -> int:
    """The fee account, exact (its cached row is summed by the sealer after the commit)."""
    return (await ledger_service.balances(session, ["expense:wechat_fee"]))["expense:wechat_fee"].balance_fen


async def _run_with_discrepancies(
    client: httpx.AsyncClient, session: AsyncSession
) -> tuple[dict[str, str], dict[str, Any], dict[str, dict[str, Any]]]:
    headers = await admin(client, session)
    lines, _ = await planted_day(session, n=20)
    run = (await upload(client, headers, bill_bytes(lines))).json()
    items = await all_discrepancies(client, headers, run["id"])
    return headers, run, {d["kind"]: d for d in items}


async def test_resolving_every_discrepancy_marks_the_day_reconciled(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    headers, run, by_kind = await _run_with_discrepancies(client, session)
    url = "/api/v1/admin/reconciliation/discrepancies/{}/resolve"
    # a corrective ledger entry: WeChat's 1 fen more is booked as clearing vs donors
    d = by_kind["amount_mismatch"]
    res = await client.post(
        url.format(d["id"]),
        headers=headers,
        json={
            "action": "ledger_entry",
            "note": "微信多收 1 分，已与微信支付核实",
            "postings": [
                {"account": "wechatpay_clearing", "amount_fen": 1},
                {"account": "external:donors", "amount_fen": -1},
            ],
        },
    )
    assert res.status_code == 200, res.text
    assert res.json()["resolution"] == "ledger_entry" and res.json()["correction_entry_id"]
    entry = await session.get(JournalEntry, uuid.UUID(res.json()["correction_entry_id"]))
    assert entry is not None and entry.business_key == f"reconciliation:{d['id']}:correction"
    # resolving twice is refused
    again = await client.post(url.format(d["id"]), headers=headers, json={"note": "再来一次"})
    assert again.status_code == 409 and again.json()["error"] == "DiscrepancyAlreadyResolved"
    for kind in ("missing_in_ledger", "missing_in_bill"):
        res = await client.post(
            url.format(by_kind[kind]["id"]), headers=headers, json={"note": "已核实，见工单 42"}
        )
        assert res.status_code == 200, res.text
    detail = (await client.get(f"{RUNS}/{run['id']}", headers=headers)).json()
    assert detail["day_status"] == "under_review" and detail["open_discrepancies"] == 1
    res = await client.post(
        url.format(by_kind["status_mismatch"]["id"]), headers=headers, json={"note": "退款已到账"}
    )
    assert res.status_code == 200
    detail = (await client.get(f"{RUNS}/{run['id']}", headers=headers)).json()
    assert detail["day_status"] == "reconciled" and detail["open_discrepancies"] == 0
    assert detail["resolved_discrepancies"] == 4
    statuses = (
        (
            await session.execute(
                select(FeedEvent.payload["status"].astext)
                .where(FeedEvent.kind == "reconciliation")
                .order_by(FeedEvent.id)
            )
        )
        .scalars()
        .all()
    )
    assert statuses == ["under_review", "reconciled"]
    audits = (
        (
            await session.execute(
                select(AuditLog).where(AuditLog.action == "reconciliation.discrepancy.resolve")
            )
        )
        .scalars()
        .all()
    )
    assert len(audits) == 4 and all(a.after and a.after["status"] == "resolved" for a in audits)
    # a re-run keeps the resolutions: the day stays reconciled
    lines_again = await client.get(f"{RUNS}/{run['id']}", headers=headers, params={"status": "resolved"})
    assert len(lines_again.json()["discrepancies"]) == 4


async def test_bad_resolutions_are_refused_and_change_nothing(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    headers, run, by_kind = await _run_with_discrepancies(client, session)
    url = "/api/v1/admin/reconciliation/discrepancies/{}/resolve"
    d = by_kind["amount_mismatch"]
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"action": "ledger_entry", "note": "x", "postings": [
            {"account": f"pool:canteen:{uuid.uuid4()}", "amount_fen": 1},
            {"account": "wechatpay_clearing", "amount_fen": -1}]}, 400, "CorrectionAccountNotAllowed"),
        ({"action": "ledger_entry", "note": "x", "postings": [
            {"account": "wechatpay_clearing", "amount_fen": 2},
            {"account": "external:donors", "amount_fen": -1}]}, 400, "LedgerUnbalanced"),
        ({"action": "ledger_entry", "note": "x", "postings": [
            {"account": "no-such-account", "amount_fen": 1},
            {"account": "external:donors", "amount_fen": -1}]}, 400, "LedgerUnknownAccount"),
        ({"action": "ledger_entry", "note": "x"}, 400, "LedgerUnbalanced"),
        ({"action": "repair", "note": "x"}, 409, "NotRepairable"),
        ({"action": "note", "note": "   "}, 422, "ValidationError"),
        ({"action": "note", "note": "x", "postings": [{"account": "bank", "amount_fen": "1"}]}, 422, "ValidationError"),
        ({"action": "delete", "note": "x"}, 422, "ValidationError"),
    ]  # fmt: skip
    for body, status, code in cases:
        res = await client.post(url.format(d["id"]), headers=headers, json=body)
        assert (res.status_code, res.json()["error"]) == (status, code), (body, res.text)
    missing = await client.post(url.format(uuid.uuid4()), headers=headers, json={"note": "x"})
    assert missing.status_code == 404 and missing.json()["error"] == "DiscrepancyNotFound"
    assert (await client.get(f"{RUNS}/{uuid.uuid4()}", headers=headers)).status_code == 404
    bad_cursor = await client.get(f"{RUNS}/{run['id']}", headers=headers, params={"cursor": "!!!"})
    assert bad_cursor.status_code == 400
    detail = (await client.get(f"{RUNS}/{run['id']}", headers=headers)).json()
    assert detail["open_discrepancies"] == 4
    corrections = (
        await session.execute(
            select(func.count())
            .select_from(JournalEntry)
            .where(JournalEntry.kind == "reconciliation_correction")
        )
    ).scalar_one()
    assert corrections == 0


async def test_only_federation_admins_may_reconcile(client: httpx.AsyncClient, session: AsyncSession) -> None:
    headers, run, by_kind = await _run_with_discrepancies(client, session)
    someone = await login(client, unique("donor"))
    civil = unique("civil")
    await grant(session, civil, Role.civil_affairs, district=(await create_district(session)).code)
    civil_headers = await login(client, civil)
    for h, status in ((someone, 403), (civil_headers, 403), ({}, 401)):
        assert (await client.get(f"{RUNS}/{run['id']}", headers=h)).status_code == status
        assert (await client.get(RUNS, headers=h)).status_code == status
        res = await client.post(RUNS, headers=h, json={"bill_date": BILL_DAY.isoformat()})
        assert res.status_code == status
        res = await client.post(
            f"/api/v1/admin/reconciliation/discrepancies/{by_kind['missing_in_bill']['id']}/resolve",
            headers=h,
            json={"note": "x"},
        )
        assert res.status_code == status
    detail = (await client.get(f"{RUNS}/{run['id']}", headers=headers)).json()
    assert detail["open_discrepancies"] == 4 and detail["run_count"] == 1


async def test_malformed_run_requests_are_refused(client: httpx.AsyncClient, session: AsyncSession) -> None:
    headers = await admin(client, session)
    for body in ({}, {"bill_date": "2026-13-01"}, {"bill_date": "x", "extra": 1}):
        res = await client.post(RUNS, headers=headers, json=body)
        assert res.status_code == 422 and res.json()["error"] == "ValidationError"
    res = await client.post(
        RUNS, headers={**headers, "Content-Type": "application/json"}, content=b"{not json"
    )
    assert res.status_code == 422
    future = await client.post(RUNS, headers=headers, json={"bill_date": "2999-01-01"})
    assert future.status_code == 400 and future.json()["error"] == "BillDateInFuture"
    old = await client.post(RUNS, headers=headers, json={"bill_date": "2020-01-01"})
    assert old.status_code == 400 and old.json()["error"] == "BillTooOld"
    no_file = await client.post(
        RUNS, headers=headers, data={"bill_date": "2026-01-01"}, files={"x": ("a", b"1")}
    )
    assert no_file.status_code == 422
    bad_sha = await upload(client, headers, b"", sha1="xyz")
    assert bad_sha.status_code == 422
    empty = await upload(client, headers, bill_bytes([]))
    assert empty.status_code == 400 and empty.json()["error"] == "BillDateRequired"
    empty_dated = await upload(client, headers, bill_bytes([]), bill_date=BILL_DAY.isoformat())
    assert empty_dated.status_code == 200 and empty_dated.json()["day_status"] == "reconciled"
    assert await stored(session) == (1, 0, 0, 1)
