"""One concrete request per route, aimed at the *victim's* resources (tests/security/world.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from app.kit.time import business_date
from tests.fixtures.factories import unique

Ids = dict[str, str]
Json = Callable[[Ids], Any] | None

# route path parameter -> which world id fills it
PATH_PARAMS = {
    "grant_id": "grant_id",
    "day": "day",
    "donation_id": "donation_id",
    "code": "target_code",
    "refund_id": "refund_id",
    "elder_id": "elder_id",
    "canteen_id": "canteen_id",
    "booking_id": "booking_id",
    "so_id": "so_id",
    "run_id": "missing",
    "discrepancy_id": "missing",
    "out_trade_no": "out_trade_no",
    "transaction_id": "missing",
    "out_refund_no": "missing",
    "canteen_code": "canteen_code",
    "settlement_id": "missing",
    "fund_id": "missing",
}


@dataclass(frozen=True)
class Req:
    json: Json = None
    params: Callable[[Ids], dict[str, Any]] | None = None
    path: str | None = None  # overrides the route path (same placeholders)
    content: Callable[[Ids], bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent_key: bool = False
    stream: bool = False


def _next_week(ids: Ids) -> str:
    """A week after the world's meal day or after today, whichever is later: a menu can be published for it
    (not in the past, at most 60 days ahead) whatever the real date is."""
    return (max(date.fromisoformat(ids["day"]), business_date()) + timedelta(days=7)).isoformat()


def _month_not_begun(ids: Ids) -> str:
    """The month after this one: drafting its settlements is refused (400) whatever the real date is."""
    return f"{business_date().replace(day=1) + timedelta(days=32):%Y-%m}"


def _booking(ids: Ids) -> dict[str, Any]:
    return {
        "elder_id": ids["elder_id"],
        "canteen_id": ids["canteen_id"],
        "date": ids["day"],
        "slot": "lunch",
        "items": [{"menu_item_id": ids["menu_item_id"], "quantity": 1}],
        "mode": "dine_in",
    }


def _elder(ids: Ids) -> dict[str, Any]:
    from app.elders.idcard import make_id_number

    return {
        "registrant": "staff",
        "name": "李桂兰",
        "id_number": make_id_number("371402", date(1940, 5, 6), int(unique("")[1:4], 16) % 1000),
        "hukou_district_code": ids["district"],
        "address": "德城区测试路9号",
        "categories": ["低保"],
        "consent": True,
    }


def _policy(ids: Ids) -> dict[str, Any]:
    return {
        "name": "测试补贴政策",
        "city": "德州市",
        "district_code": ids["district"],
        "effective_from": "2030-01-01",
        "tiers": [{"name": "60岁以上", "min_age": 60, "amount_fen": 500}],
    }


REQUESTS: dict[str, Req] = {
    "GET /openapi.json": Req(),
    "GET /docs": Req(),
    "GET /docs/oauth2-redirect": Req(),
    "GET /redoc": Req(),
    "GET /healthz": Req(),
    "GET /readyz": Req(),
    "GET /metrics": Req(),
    "GET /": Req(),
    "POST /api/v1/auth/wechat/login": Req(json=lambda ids: {"code": f"sbx:{unique('lg')}"}),
    "POST /api/v1/auth/wechat/phone": Req(json=lambda ids: {"code": "sbx:13800001234"}),
    "POST /api/v1/auth/logout": Req(),
    "GET /api/v1/me": Req(),
    "POST /api/v1/admin/roles": Req(
        json=lambda ids: {"openid": unique("gr"), "role": "operator", "canteen_id": ids["canteen_id"]}
    ),
    "GET /api/v1/admin/roles": Req(params=lambda ids: {"openid": ids["victim_operator_openid"]}),
    "POST /api/v1/admin/roles/{grant_id}/revoke": Req(),
    # the world's meal day is tomorrow: its root is not published yet, to anyone (404)
    "GET /api/v1/ledger/digests/{day}": Req(),
    "GET /api/v1/admin/ledger/check": Req(),
    "GET /api/v1/donation-targets": Req(),
    "GET /api/v1/donation-targets/{code}": Req(),
    "GET /api/v1/donation-targets/{code}/qrcode.{fmt}": Req(
        path="/api/v1/donation-targets/{code}/qrcode.svg"
    ),
    "POST /api/v1/donations": Req(
        json=lambda ids: {"target_code": ids["target_code"], "meals": 1}, idempotent_key=True
    ),
    "GET /api/v1/donations/{donation_id}": Req(),
    "GET /api/v1/me/donations": Req(),
    "GET /api/v1/donations/{donation_id}/receipt": Req(),
    "POST /api/v1/donations/{donation_id}/receipt/invoice-request": Req(
        json=lambda ids: {"donor_type": "person", "name": "张三", "tax_id": "11010519491231002X"}
    ),
    "POST /api/v1/donations/{donation_id}/refund-requests": Req(
        json=lambda ids: {"amount_fen": 100, "reason": "不想捐了"}
    ),
    "GET /api/v1/donations/{donation_id}/refund-requests": Req(),
    "GET /api/v1/admin/refund-requests": Req(params=lambda ids: {"status": "requested"}),
    "POST /api/v1/admin/refund-requests/{refund_id}/approve": Req(json=lambda ids: {"note": "同意"}),
    "POST /api/v1/admin/refund-requests/{refund_id}/reject": Req(json=lambda ids: {"note": "驳回"}),
    "POST /api/v1/admin/donations/offline": Req(
        json=lambda ids: {
            "target_code": ids["target_code"],
            "amount_fen": 100_000,
            "voucher_no": unique("V"),
            "paid_on": "2026-11-02",
        }
    ),
    "POST /api/v1/admin/donation-targets/qrcodes": Req(json=lambda ids: {"codes": [ids["target_code"]]}),
    "POST /api/v1/payments/wechat/notify": Req(json=lambda ids: {"id": "forged", "resource": {}}),
    "POST /api/v1/payments/wechat/refund-notify": Req(json=lambda ids: {"id": "forged", "resource": {}}),
    "POST /api/v1/elders": Req(json=_elder),
    "GET /api/v1/elders": Req(),
    "GET /api/v1/elders/{elder_id}": Req(),
    "POST /api/v1/elders/{elder_id}/invites": Req(),
    "POST /api/v1/elders/bind": Req(
        json=lambda ids: {"invite_code": "ZZZZZZZZ", "relationship": "子女", "consent": True}
    ),
    "POST /api/v1/admin/elders/{elder_id}/verify": Req(
        json=lambda ids: {"decision": "verified", "categories": ["特困"]}
    ),
    "POST /api/v1/admin/elders/roster": Req(
        content=lambda ids: (
            f"id_number,categories,valid_until\n{ids['id_number']},特困,2030-12-31\n".encode()
        ),
        headers={"Content-Type": "text/csv"},
    ),
    "GET /api/v1/canteens": Req(),
    "GET /api/v1/canteens/{canteen_id}": Req(),
    "POST /api/v1/admin/canteens": Req(
        json=lambda ids: {
            "code": unique("N")[:10],
            "name": "新开幸福食堂",
            "type": "urban_community",
            "district_code": ids["district"],
            "lat": 37.45,
            "lng": 116.3,
        }
    ),
    "PATCH /api/v1/admin/canteens/{canteen_id}": Req(json=lambda ids: {"name": "改名的食堂"}),
    "GET /api/v1/canteens/{canteen_id}/menus": Req(params=lambda ids: {"from": ids["day"], "to": ids["day"]}),
    "PUT /api/v1/canteens/{canteen_id}/menus/{service_date}/{slot}": Req(
        path="/api/v1/canteens/{canteen_id}/menus/{next_week}/lunch",
        json=lambda ids: {
            "capacity": 50,
            "items": [{"name": "红烧肉套餐", "kind": "set_meal", "price_fen": 1200}],
        },
    ),
    "GET /api/v1/admin/subsidy-policies": Req(),
    "POST /api/v1/admin/subsidy-policies": Req(json=_policy),
    "POST /api/v1/bookings/quote": Req(json=_booking),
    "POST /api/v1/bookings": Req(json=_booking, idempotent_key=True),
    "GET /api/v1/bookings": Req(params=lambda ids: {"elder_id": ids["elder_id"]}),
    "GET /api/v1/bookings/{booking_id}": Req(),
    "POST /api/v1/bookings/{booking_id}/cancel": Req(json=lambda ids: {"reason": "不吃了"}),
    "POST /api/v1/standing-orders": Req(
        json=lambda ids: {
            "elder_id": ids["elder_id"],
            "canteen_id": ids["canteen_id"],
            "slot": "lunch",
            "weekdays": [2, 4],
        }
    ),
    "GET /api/v1/standing-orders": Req(params=lambda ids: {"elder_id": ids["elder_id"]}),
    "GET /api/v1/standing-orders/{so_id}": Req(),
    "PATCH /api/v1/standing-orders/{so_id}": Req(json=lambda ids: {"is_active": False}),
    "GET /api/v1/canteens/{canteen_id}/roster": Req(params=lambda ids: {"date": ids["day"], "slot": "lunch"}),
    "POST /api/v1/canteens/{canteen_id}/serve": Req(json=lambda ids: {"code": ids["serve_code"]}),
    "POST /api/v1/canteens/{canteen_id}/walk-ins": Req(
        json=lambda ids: {
            "id_number": ids["id_number"],
            "slot": "lunch",
            "items": [{"menu_item_id": ids["menu_item_id"], "quantity": 1}],
        }
    ),
    "POST /api/v1/me/subscriptions": Req(json=lambda ids: {"template_ids": ["sangyu_booking_confirmed"]}),
    "GET /api/v1/feed": Req(),
    "GET /api/v1/feed/stats": Req(),
    "GET /api/v1/feed/stream": Req(stream=True),
    "GET /api/v1/me/donation-digest": Req(),
    "POST /api/v1/me/donation-digest": Req(),
    # a bill date after today, whatever today is: the admin is let through and refused with a 400, and nothing
    # asks WeChat Pay
    "POST /api/v1/admin/reconciliation/runs": Req(
        json=lambda ids: {"bill_date": (business_date() + timedelta(days=2)).isoformat()}
    ),
    "GET /api/v1/admin/reconciliation/runs": Req(),
    "GET /api/v1/admin/reconciliation/runs/{run_id}": Req(),
    "POST /api/v1/admin/reconciliation/discrepancies/{discrepancy_id}/resolve": Req(
        json=lambda ids: {"note": "核对无误"}
    ),
    "GET /api/v1/donations/{donation_id}/trace": Req(),
    "GET /api/v1/donations/{donation_id}/proof": Req(),
    "GET /api/v1/admin/funds/{fund_id}/statement": Req(),
    "GET /api/v1/admin/canteens/{canteen_id}/pool-statement": Req(),
    "POST /api/v1/admin/settlements": Req(json=lambda ids: {"month": _month_not_begun(ids)}),
    "GET /api/v1/admin/settlements": Req(),
    "GET /api/v1/admin/settlements/{settlement_id}": Req(),
    "GET /api/v1/admin/settlements/{settlement_id}.csv": Req(),
    "GET /api/v1/admin/settlements/{settlement_id}.xlsx": Req(),
    "POST /api/v1/admin/settlements/{settlement_id}/confirm": Req(),
    "POST /api/v1/admin/settlements/{settlement_id}/mark-paid": Req(json=lambda ids: {"voucher_no": "V-1"}),
    "GET /api/v1/admin/subsidy-claims": Req(
        params=lambda ids: {"month": ids["day"][:7], "district": ids["district"]}
    ),
    "GET /api/v1/canteens/{canteen_id}/settlements": Req(),
    "GET /api/v1/canteens/{canteen_id}/settlements/{settlement_id}": Req(),
    "GET /q/{code}": Req(),
    "GET /t": Req(),
    "GET /t/screen": Req(),
    "GET /t/c/{canteen_code}": Req(),
    # the WeChat simulator: mounted only in sandbox mode, which production refuses to start with
    "POST /sandbox/wechat/cgi-bin/stable_token": Req(json=lambda ids: {"grant_type": "client_credential"}),
    "GET /sandbox/wechat/sns/jscode2session": Req(),
    "POST /sandbox/wechat/wxa/business/getuserphonenumber": Req(json=lambda ids: {"code": "x"}),
    "POST /sandbox/wechat/cgi-bin/message/subscribe/send": Req(json=lambda ids: {}),
    "GET /sandbox/wechat/messages": Req(),
    "POST /sandbox/wechatpay/v3/pay/transactions/jsapi": Req(json=lambda ids: {}),
    "GET /sandbox/wechatpay/v3/pay/transactions/out-trade-no/{out_trade_no}": Req(),
    "GET /sandbox/wechatpay/v3/pay/transactions/id/{transaction_id}": Req(),
    "POST /sandbox/wechatpay/v3/pay/transactions/out-trade-no/{out_trade_no}/close": Req(json=lambda ids: {}),
    "POST /sandbox/wechatpay/pay/{out_trade_no}": Req(path="/sandbox/wechatpay/pay/nosuchorder"),
    "POST /sandbox/wechatpay/v3/refund/domestic/refunds": Req(json=lambda ids: {}),
    "GET /sandbox/wechatpay/v3/refund/domestic/refunds/{out_refund_no}": Req(),
    "POST /sandbox/wechatpay/refunds/{out_refund_no}/settle": Req(),
    "GET /sandbox/wechatpay/v3/bill/tradebill": Req(),
    "GET /sandbox/wechatpay/v3/billdownload/file": Req(),
    "GET /sandbox/wechatpay/orders/{out_trade_no}": Req(path="/sandbox/wechatpay/orders/nosuchorder"),
    "POST /sandbox/wechatpay/faults/amount/{out_trade_no}": Req(
        path="/sandbox/wechatpay/faults/amount/nosuchorder"
    ),
}
