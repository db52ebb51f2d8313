"""``sangyu demo-day`` steps for meals and money (appended to ``app/donations/cli.py``'s STEPS), all over the
public HTTP API: demo elders book (themselves or through demo_family), a donation to the general meal pool
pays their charity portion, demo_operator serves, demo_admin settles the month, and the summary follows one
donation from a statement line back to the meals it paid for, verifies its proof and runs the ledger check.

The demo runs at any hour, so it opens its own demo canteen (all-day lunch window, booking open until
23:59) instead of changing the seeded canteens' real hours."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.kit.time import SHANGHAI, business_date

SLOT_NAMES = {"breakfast": "早餐", "lunch": "午餐", "dinner": "晚餐"}


def _yuan(fen: int) -> str:
    return f"¥{fen / 100:.2f}"


def _token(ctx: Any, openid: str) -> str:
    token = ctx.tokens.get(openid)
    if token is None:
        token = ctx.call("POST", "/api/v1/auth/wechat/login", json={"code": f"sbx:{openid}"}).json()[
            "access_token"
        ]
        ctx.tokens[openid] = token
    return str(token)


def _idem() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def step_open_demo_canteen(ctx: Any) -> None:
    admin = _token(ctx, "demo_admin")
    family = _token(ctx, "demo_family")
    elders = ctx.call("GET", "/api/v1/elders", token=family, params={"limit": 20}).json()["items"]
    if not elders:
        raise RuntimeError("demo_family 没有绑定长者：请先运行 sangyu seed-demo")
    district = elders[0]["hukou_district_code"]
    now = datetime.now(SHANGHAI)
    code = f"D{now:%m%d%H%M%S}"
    canteen = ctx.call(
        "POST",
        "/api/v1/admin/canteens",
        token=admin,
        json={
            "code": code,
            "name": f"演示长者食堂（{now:%m月%d日}）",
            "type": "urban_community",
            "district_code": district,
            "address": "演示地址",
            "lat": 37.4355,
            "lng": 116.3594,
            "slots": [
                {
                    "slot": "lunch",
                    "serve_start": "00:00:00",
                    "serve_end": "23:59:59",
                    "cutoff_days_before": 0,
                    "cutoff_time": "23:59:00",
                    "default_capacity": 50,
                }
            ],
        },
    ).json()
    ctx.call(
        "POST",
        "/api/v1/admin/roles",
        token=admin,
        json={"openid": "demo_operator", "role": "operator", "canteen_id": canteen["id"]},
    )
    operator = _token(ctx, "demo_operator")
    today = business_date()
    menu = ctx.call(
        "PUT",
        f"/api/v1/canteens/{canteen['id']}/menus/{today.isoformat()}/lunch",
        token=operator,
        json={
            "capacity": 50,
            "items": [
                {"name": "一大荤两素套餐", "price_fen": 1200, "description": "米饭、例汤"},
                {"name": "白灼青菜（小份）", "kind": "dish", "price_fen": 200, "diet_tags": ["低盐"]},
            ],
        },
    ).json()
    ctx.meals = {"canteen": canteen, "menu": menu, "elders": elders, "bookings": [], "today": today}
    print(f"开设演示食堂 {code}「{canteen['name']}」（全天供餐），demo_operator 发布今日午餐菜单")

    # money for the meals: a donation to the general meal pool (乐享桑榆)
    general = next((t for t in ctx.targets if t["kind"] == "general"), None)
    if general is None:
        raise RuntimeError("没有乐享桑榆助餐总池的捐赠项目：请先运行 sangyu seed-demo")
    donor = _token(ctx, "demo_donor")
    donation = ctx.call(
        "POST",
        "/api/v1/donations",
        token=donor,
        json={"target_code": general["code"], "meals": 1, "display_name": "演示爱心人士"},
        headers=_idem(),
    ).json()
    ctx.call("POST", f"/sandbox/wechatpay/pay/{donation['out_trade_no']}", params={"times": 1})
    paid = ctx.call("GET", f"/api/v1/donations/{donation['id']}", token=donor).json()
    ctx.meals["donor_donation"] = paid
    print(f"demo_donor 向「{general['title']}」捐赠 {_yuan(paid['amount_fen'])}：{paid['status']}")


def step_book_meals(ctx: Any) -> None:
    canteen, menu = ctx.meals["canteen"], ctx.meals["menu"]
    family = _token(ctx, "demo_family")
    own = _token(ctx, "demo_elder_1")  # demo_elder_1 books for herself, demo_family for the others
    self_ids = {e["id"] for e in ctx.call("GET", "/api/v1/elders", token=own).json()["items"]}
    set_meal = menu["items"][0]["id"]
    for elder in ctx.meals["elders"][:4]:
        token, who = family, "demo_family 代订"
        if elder["id"] in self_ids:
            token, who = own, "demo_elder_1 本人订餐"
        body = {
            "elder_id": elder["id"],
            "canteen_id": canteen["id"],
            "date": ctx.meals["today"].isoformat(),
            "slot": "lunch",
            "items": [{"menu_item_id": set_meal, "quantity": 1}],
            "mode": "dine_in",
        }
        quote = ctx.call("POST", "/api/v1/bookings/quote", token=token, json=body).json()
        booking = ctx.call("POST", "/api/v1/bookings", token=token, json=body, headers=_idem()).json()
        ctx.meals["bookings"].append(booking)
        print(
            f"{elder['name']}（{who}）：原价 {_yuan(booking['list_price_fen'])}，政府补贴 "
            f"{_yuan(booking['gov_subsidy_fen'])}，爱心补贴 {_yuan(booking['charity_subsidy_fen'])}"
            f"（询价 {_yuan(quote['charity_subsidy_fen'])}），自付 {_yuan(booking['self_pay_fen'])}，"
            f"取餐码 {booking['serve_code']}"
        )


def step_serve_meals(ctx: Any) -> None:
    operator = _token(ctx, "demo_operator")
    canteen = ctx.meals["canteen"]
    served = []
    for booking in ctx.meals["bookings"]:
        out = ctx.call(
            "POST",
            f"/api/v1/canteens/{canteen['id']}/serve",
            token=operator,
            json={"code": booking["serve_code"], "self_pay_method": "cash"},
        ).json()
        served.append(out)
    ctx.meals["served"] = served
    charity = sum(b["charity_subsidy_fen"] for b in served)
    print(f"demo_operator 核销 {len(served)} 份午餐，其中爱心善款支付 {_yuan(charity)}")


def step_settle_month(ctx: Any) -> None:
    admin = _token(ctx, "demo_admin")
    canteen = ctx.meals["canteen"]
    month = ctx.meals["today"].strftime("%Y-%m")
    drafted = ctx.call("POST", "/api/v1/admin/settlements", token=admin, json={"month": month}).json()
    mine = [s for s in drafted["drafted"] if s["canteen_id"] == canteen["id"]]
    expected = sum(b["charity_subsidy_fen"] for b in ctx.meals["served"])
    print(f"起草 {month} 结算单 {len(drafted['drafted'])} 份")
    if not mine:
        print(f"  {canteen['name']} 本月没有爱心善款支付的餐（长者今天可能已在别处用过补贴餐）")
        ctx.meals["statement"] = None
        return
    statement = ctx.call("GET", f"/api/v1/admin/settlements/{mine[0]['id']}", token=admin).json()
    if statement["amount_fen"] != expected:
        raise RuntimeError(f"结算金额 {statement['amount_fen']} 分与已核销餐的爱心补贴 {expected} 分不符")
    ctx.call("POST", f"/api/v1/admin/settlements/{statement['id']}/confirm", token=admin)
    paid = ctx.call(
        "POST",
        f"/api/v1/admin/settlements/{statement['id']}/mark-paid",
        token=admin,
        json={"voucher_no": f"DEMO-{canteen['code']}"},
    ).json()
    csv_size = len(ctx.call("GET", f"/api/v1/admin/settlements/{statement['id']}.csv", token=admin).content)
    ctx.meals["statement"] = statement
    print(
        f"  {canteen['name']}：{statement['meals']} 份爱心餐，应付 {_yuan(statement['amount_fen'])}"
        f"（与核销的餐逐分相符），已确认并付款（凭证 {paid['voucher_no']}），CSV {csv_size} 字节"
    )
    civil = _token(ctx, "demo_civil")
    claims = ctx.call("GET", "/api/v1/admin/subsidy-claims", token=civil, params={"month": month}).json()
    row = next((r for r in claims["rows"] if r["canteen_id"] == canteen["id"]), None)
    if row is not None:
        print(f"  政府补贴申报（民政）：{row['meals']} 份，{_yuan(row['gov_subsidy_fen'])}")


def step_trace_donation(ctx: Any) -> None:
    from app.ledger.chain import verify_proof

    admin = _token(ctx, "demo_admin")
    statement = ctx.meals.get("statement")
    donation_id = None
    if statement:
        donation_id = next((d for ln in statement["lines"] for d in ln["donation_ids"]), None)
    if donation_id is None:
        donation_id = ctx.meals["donor_donation"]["id"]
    trace = ctx.call("GET", f"/api/v1/donations/{donation_id}/trace", token=admin).json()
    print(f"捐赠 {donation_id}：{trace['text']}")
    for meal in trace["meals"]:
        print(
            f"  {meal['service_date']} {SLOT_NAMES.get(meal['slot'] or '', meal['slot'])} "
            f"{meal['canteen_name']}，{meal['age_band']} 岁长者，{_yuan(meal['amount_fen'])}"
        )
    proof = ctx.call("GET", f"/api/v1/donations/{donation_id}/proof").json()
    ok = verify_proof(proof["proof"])
    pending = "、".join(proof["unpublished_days"]) or "无"
    print(
        f"  账本证明：{len(proof['proof']['entries'])} 笔账目，Merkle 路径验证{'通过' if ok else '失败'}（待公布日根：{pending}）"
    )
    if not ok:
        raise RuntimeError("捐赠证明验证失败")
    check = ctx.call("GET", "/api/v1/admin/ledger/check", token=admin).json()
    print(f"账本校验：{'通过' if check['ok'] else '失败'}（{check['entries_checked']} 笔分录）")
    if not check["ok"]:
        raise RuntimeError(f"账本校验失败：{check['problems'][:3]}")


STEPS = [
    ("爱心助餐：演示食堂与捐款", step_open_demo_canteen),
    ("长者订餐", step_book_meals),
    ("食堂核销", step_serve_meals),
    ("月度结算", step_settle_month),
    ("捐款去向与账本校验", step_trace_donation),
]
