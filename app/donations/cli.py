"""``sangyu qrcodes`` and ``sangyu demo-day`` (the day-in-the-life demo, driven over the public HTTP API)."""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.reconciliation.demo import STEPS as RECONCILIATION_STEPS
from app.settlements.demo import STEPS as MEAL_STEPS


def _cmd_qrcodes(args: argparse.Namespace) -> int:
    from app.cli import run_async
    from app.db import resolve_database_url, unit_of_work
    from app.donations.qrcodes import find_cjk_font, generate_for_targets

    resolve_database_url()

    async def run() -> list[Any]:
        async with unit_of_work() as session:
            return await generate_for_targets(session, args.codes or None)

    files = run_async(run)
    for f in files:
        print(f"{f.code}\t{f.url}\t{f.poster}")
    print(f"共生成 {len(files)} 个捐赠二维码（PNG、SVG 和海报）")
    if find_cjk_font() is None:
        print(
            "警告：未找到中文字体（fonts-wqy-microhei 或 fonts-noto-cjk），海报文字可能显示为方块",
            file=sys.stderr,
        )
    return 0


# ---------------------------------------------------------------- demo-day


@dataclass
class DemoContext:
    """State shared by the steps; later steps (meals, settlement, reconciliation) add to it."""

    client: Any
    donors: int
    times: int
    targets: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    donations: list[dict[str, Any]] = field(default_factory=list)
    meals: dict[str, Any] = field(default_factory=dict)  # app/settlements/demo.py

    def call(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        res = self.client.request(method, path, headers=headers, **kwargs)
        if res.status_code >= 400:
            raise RuntimeError(f"{method} {path} → {res.status_code}: {res.text[:300]}")
        return res


def step_check_server(ctx: DemoContext) -> None:
    health = ctx.call("GET", "/healthz").json()
    if health.get("wechat_mode") != "sandbox":
        raise RuntimeError("demo-day 只能在沙箱模式（WECHAT_MODE=sandbox）下运行：它会在模拟器里“付款”")
    print(f"服务正常（{health.get('env')}，沙箱模式，没有真实资金流动）")


def step_scan_targets(ctx: DemoContext) -> None:
    ctx.targets = ctx.call("GET", "/api/v1/donation-targets").json()
    if not ctx.targets:
        raise RuntimeError("还没有捐赠项目：请先运行 sangyu seed-demo")
    for target in ctx.targets[:3]:
        page = ctx.client.get(f"/q/{target['code']}")
        shown = (
            f"落地页 {len(page.text)} 字节"
            if page.status_code == 200
            else f"落地页不可用：{page.status_code}"
        )
        print(f"扫码 /q/{target['code']}：{target['title']}（{shown}）")


def step_donate_and_pay(ctx: DemoContext) -> None:
    for n in range(ctx.donors):
        openid = f"demo-donor-{n + 1}"
        token = ctx.tokens.get(openid)
        if token is None:
            token = ctx.call("POST", "/api/v1/auth/wechat/login", json={"code": f"sbx:{openid}"}).json()[
                "access_token"
            ]
            ctx.tokens[openid] = token
        target = ctx.targets[n % len(ctx.targets)]
        ctx.call("GET", f"/api/v1/donation-targets/{target['code']}", params={"scan": "true"})
        body: dict[str, Any] = {"target_code": target["code"], "anonymous": n % 3 == 2}
        if n % 2 == 0:
            body["meals"] = n + 1
        else:
            body["amount_fen"] = 520 * (n + 1)
        body["display_name"] = f"爱心市民{n + 1}号"
        body["message"] = "愿老人们吃得好一点"
        donation = ctx.call(
            "POST", "/api/v1/donations", token=token, json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
        ).json()
        paid = ctx.call(
            "POST", f"/sandbox/wechatpay/pay/{donation['out_trade_no']}", params={"times": ctx.times}
        )
        deliveries = paid.json().get("deliveries")
        after = ctx.call("GET", f"/api/v1/donations/{donation['id']}", token=token).json()
        receipt = ctx.call("GET", f"/api/v1/donations/{donation['id']}/receipt", token=token).json()
        ctx.donations.append(after)
        print(
            f"{openid} 捐给「{target['title']}」¥{after['amount_fen'] / 100:.2f}："
            f"通知送达 {len(deliveries or [])} 次 {deliveries}，状态 {after['status']}，收据 {receipt['receipt_no']}"
        )


def step_summary(ctx: DemoContext) -> None:
    total = sum(d["amount_fen"] for d in ctx.donations)
    paid = sum(1 for d in ctx.donations if d["status"] == "paid")
    print(f"共 {len(ctx.donations)} 笔捐赠，{paid} 笔已支付，合计 ¥{total / 100:.2f}")
    for target in ctx.targets[:3]:
        info = ctx.call("GET", f"/api/v1/donation-targets/{target['code']}").json()
        print(f"  {info['title']}：{info['totals']['donations']} 笔，¥{info['totals']['paid_fen'] / 100:.2f}")


# Later issues append their steps (meals served, settlement, reconciliation) here.
STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("检查服务", step_check_server),
    ("扫码", step_scan_targets),
    ("捐赠并支付", step_donate_and_pay),
    ("汇总", step_summary),
    *MEAL_STEPS,
    *RECONCILIATION_STEPS,
]


def _cmd_demo_day(args: argparse.Namespace) -> int:
    import httpx

    with httpx.Client(base_url=args.base_url.rstrip("/"), timeout=60) as client:
        ctx = DemoContext(client=client, donors=args.donors, times=args.times)
        for name, step in STEPS:
            print(f"== {name}")
            try:
                step(ctx)
            except (RuntimeError, httpx.HTTPError) as exc:
                print(f"失败：{exc}", file=sys.stderr)
                return 1
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("qrcodes", help="generate donation QR codes (PNG + SVG) and posters into qrcodes/")
    p.add_argument("codes", nargs="*", help="donation target codes (default: every active target)")
    p.set_defaults(func=_cmd_qrcodes)

    p = sub.add_parser("demo-day", help="drive a demo day through the public HTTP API of a running server")
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="server URL (default %(default)s)")
    p.add_argument("--donors", type=int, default=5, help="how many donors give (default %(default)s)")
    p.add_argument("--times", type=int, default=3, help="deliveries of each payment notification (default 3)")
    p.set_defaults(func=_cmd_demo_day)
