"""The last steps of ``sangyu demo-day``: reconcile today's WeChat Pay bill (clean), then drop one payment
notification in the simulator, watch reconciliation catch it and repair it through the normal payment path."""

from __future__ import annotations

import uuid
from typing import Any

from app.kit.time import business_date


def _token(ctx: Any, openid: str) -> str:
    token = ctx.tokens.get(openid)
    if token is None:
        res = ctx.call("POST", "/api/v1/auth/wechat/login", json={"code": f"sbx:{openid}"})
        token = res.json()["access_token"]
        ctx.tokens[openid] = token
    return str(token)


def _run(ctx: Any, admin: str) -> dict[str, Any]:
    run: dict[str, Any] = ctx.call(
        "POST",
        "/api/v1/admin/reconciliation/runs",
        token=admin,
        json={"bill_date": business_date().isoformat()},
    ).json()
    c = run["counts"]
    print(
        f"{run['bill_date']} 账单 {run['bill']['rows']} 行：一致 {c['matched']}，金额不一致 {c['amount_mismatch']}，"
        f"微信有我们没有 {c['missing_in_ledger']}，我们有账单没有 {c['missing_in_bill']}，状态不一致 "
        f"{c['status_mismatch']}；待处理 {run['open_discrepancies']} 条（第 {run['run_count']} 次对账）"
    )
    return run


def step_reconcile_clean(ctx: Any) -> None:
    run = _run(ctx, _token(ctx, "demo_admin"))
    if run["open_discrepancies"]:
        raise RuntimeError("今天的账单应当与账本完全一致，却发现了差异：请在 /admin 的「对账」页查看")
    print("当日已对平：微信支付账单与账本一致，手续费已记账，公开动态显示「已对平」")


def step_reconcile_dropped_notification(ctx: Any) -> None:
    admin = _token(ctx, "demo_admin")
    donor = _token(ctx, "demo-donor-1")
    targets = ctx.targets or ctx.call("GET", "/api/v1/donation-targets").json()
    donation = ctx.call(
        "POST",
        "/api/v1/donations",
        token=donor,
        json={"target_code": targets[0]["code"], "meals": 1, "display_name": "爱心市民"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    ).json()
    ctx.call("POST", f"/sandbox/wechatpay/pay/{donation['out_trade_no']}", params={"drop": "true"})
    print(f"故障注入：订单 {donation['out_trade_no']} 已在微信支付付款，但支付通知被丢弃")
    run = _run(ctx, admin)
    detail = ctx.call(
        "GET",
        f"/api/v1/admin/reconciliation/runs/{run['id']}",
        token=admin,
        params={"status": "open", "kind": "missing_in_ledger"},
    ).json()
    caught = [d for d in detail["discrepancies"] if d["out_trade_no"] == donation["out_trade_no"]]
    if not caught:
        raise RuntimeError("对账没有发现被丢弃的支付通知")
    ctx.call(
        "POST",
        f"/api/v1/admin/reconciliation/discrepancies/{caught[0]['id']}/resolve",
        token=admin,
        json={"action": "repair", "note": "支付通知丢失：查询微信支付订单后补记"},
    )
    after = ctx.call("GET", f"/api/v1/donations/{donation['id']}", token=donor).json()
    print(f"已查询微信支付并修复：捐赠状态 {after['status']}")
    final = _run(ctx, admin)
    if final["open_discrepancies"]:
        raise RuntimeError("修复后仍有未处理的对账差异")
    print("再次对账：当日已对平")


STEPS = [
    ("对账：当日账单", step_reconcile_clean),
    ("对账：丢失的支付通知被发现并修复", step_reconcile_dropped_notification),
]
