"""Expected status per route and caller (see test_authorization_matrix.py).

Columns: anonymous, elder (another elder), family (of another elder), operator (of another canteen),
civil_affairs (of another district), admin; ``owner`` is the positive control (the victim side's own user).
Reviewed row by row — an attacker on the victim's resource gets 401 (no login), 403 (wrong role) or 404
(not yours: the resource's existence is not revealed). Notes on the rows that deserve one:

- /sandbox/*: the WeChat simulator, mounted only with WECHAT_MODE=sandbox, which APP_ENV=production refuses
  (tests/test_config.py); its WeChat Pay APIv3 routes check the merchant's request signature (401 for all).
- /api/v1/payments/wechat/*: anyone can reach them (WeChat does); without a valid platform signature: 401.
- verify: civil-affairs only (admins grant roles but do not verify elders); another district → 404.
- roster import: staff; rows for elders outside the importer's district are refused per row
  (test_roster_import_across_districts_changes_nothing).
- subsidy-claims: civil affairs of another district asking for the victim district → 403.
- serve / walk-ins: the canteen's own operators only (admins too get 403); the owner's 409 is "outside the
  serving window" — the request reached the business rules.
- bookings list / standing orders / donations: admins get 404 on another person's donation, booking list
  and standing order (only the donor / elder side reads them); admins read a single booking and a trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("anonymous", "elder", "family", "operator", "civil_affairs", "admin")
EVERYONE = frozenset(ROLES)


@dataclass(frozen=True)
class Row:
    expect: dict[str, int]
    owner: tuple[str, int] | None = None
    may_see: frozenset[str] = field(default_factory=frozenset)


def same(code: int, *, owner: tuple[str, int] | None = None, may_see: frozenset[str] = frozenset()) -> Row:
    """Public (or equally refused): every caller gets ``code``."""
    return Row(dict.fromkeys(ROLES, code), owner, may_see)


def admin_only(admin: int, *, owner: tuple[str, int] | None = None) -> Row:
    return Row({"anonymous": 401, **dict.fromkeys(ROLES[1:-1], 403), "admin": admin}, owner)


def signed_in(others: int, *, admin: int, owner: tuple[str, int] | None = None) -> Row:
    """Needs a login; every signed-in attacker gets ``others``."""
    return Row({"anonymous": 401, **dict.fromkeys(ROLES[1:-1], others), "admin": admin}, owner)


MOUNTS = {"/static/public", "/admin"}  # the staff console has its own password login (tests/console)

EXPECTED: dict[str, Row] = {
    # a canteen's own statements: its operators (and admins); everyone else 404. The settlement id is unknown.
    "GET /api/v1/canteens/{canteen_id}/settlements": signed_in(
        404, admin=200, owner=("victim_operator", 200)
    ),
    "GET /api/v1/canteens/{canteen_id}/settlements/{settlement_id}": signed_in(
        404, admin=404, owner=("victim_operator", 404)
    ),
    "GET /": same(307),
    "GET /api/v1/admin/canteens/{canteen_id}/pool-statement": admin_only(200),
    "GET /api/v1/admin/funds/{fund_id}/statement": admin_only(404),
    "GET /api/v1/admin/ledger/check": admin_only(200),
    "GET /api/v1/admin/reconciliation/runs": admin_only(200),
    "GET /api/v1/admin/reconciliation/runs/{run_id}": admin_only(404),
    "GET /api/v1/admin/refund-requests": admin_only(200),
    "GET /api/v1/admin/roles": admin_only(200),
    "GET /api/v1/admin/settlements": admin_only(200),
    "GET /api/v1/admin/settlements/{settlement_id}": admin_only(404),
    "GET /api/v1/admin/settlements/{settlement_id}.csv": admin_only(404),
    "GET /api/v1/admin/settlements/{settlement_id}.xlsx": admin_only(404),
    "GET /api/v1/admin/subsidy-claims": admin_only(200, owner=("victim_civil_affairs", 200)),
    "GET /api/v1/admin/subsidy-policies": Row(
        {"anonymous": 401, "elder": 403, "family": 403, "operator": 403, "civil_affairs": 200, "admin": 200}
    ),
    "GET /api/v1/bookings": signed_in(404, admin=404, owner=("victim_family", 200)),
    "GET /api/v1/bookings/{booking_id}": signed_in(404, admin=200, owner=("victim_family", 200)),
    "GET /api/v1/canteens": same(200),
    "GET /api/v1/canteens/{canteen_id}": same(200),
    "GET /api/v1/canteens/{canteen_id}/menus": same(200),
    "GET /api/v1/canteens/{canteen_id}/roster": admin_only(200, owner=("victim_operator", 200)),
    "GET /api/v1/donation-targets": same(200),
    "GET /api/v1/donation-targets/{code}": same(200),
    "GET /api/v1/donation-targets/{code}/qrcode.{fmt}": same(200),
    "GET /api/v1/donations/{donation_id}": signed_in(404, admin=404, owner=("victim_donor", 200)),
    "GET /api/v1/donations/{donation_id}/proof": same(
        200, may_see=EVERYONE
    ),  # public proof, no personal data
    "GET /api/v1/donations/{donation_id}/receipt": signed_in(404, admin=404, owner=("victim_donor", 200)),
    "GET /api/v1/donations/{donation_id}/refund-requests": signed_in(
        404, admin=404, owner=("victim_donor", 200)
    ),
    "GET /api/v1/donations/{donation_id}/trace": signed_in(404, admin=200, owner=("victim_donor", 200)),
    "GET /api/v1/elders": signed_in(200, admin=200),
    "GET /api/v1/elders/{elder_id}": signed_in(404, admin=200, owner=("victim_elder", 200)),
    "GET /api/v1/feed": same(200),
    "GET /api/v1/feed/stats": same(200),
    "GET /api/v1/feed/stream": same(200),
    "GET /api/v1/ledger/digests/{day}": same(404),
    "GET /api/v1/me": signed_in(200, admin=200),
    "GET /api/v1/me/donation-digest": signed_in(200, admin=200),
    "GET /api/v1/me/donations": signed_in(200, admin=200),
    "GET /api/v1/standing-orders": signed_in(200, admin=200, owner=("victim_family", 200)),
    "GET /api/v1/standing-orders/{so_id}": signed_in(404, admin=404, owner=("victim_family", 200)),
    "GET /docs": same(200),
    "GET /docs/oauth2-redirect": same(200),
    "GET /healthz": same(200),
    "GET /metrics": same(200),
    "GET /openapi.json": same(200),
    "GET /q/{code}": same(200),
    "GET /readyz": same(200),
    "GET /redoc": same(200),
    "GET /sandbox/wechat/messages": same(200),
    "GET /sandbox/wechat/sns/jscode2session": same(200),
    "GET /sandbox/wechatpay/orders/{out_trade_no}": same(200),
    "GET /sandbox/wechatpay/v3/bill/tradebill": same(401),
    "GET /sandbox/wechatpay/v3/billdownload/file": same(401),
    "GET /sandbox/wechatpay/v3/pay/transactions/id/{transaction_id}": same(401),
    "GET /sandbox/wechatpay/v3/pay/transactions/out-trade-no/{out_trade_no}": same(401),
    "GET /sandbox/wechatpay/v3/refund/domestic/refunds/{out_refund_no}": same(401),
    "GET /t": same(200),
    "GET /t/c/{canteen_code}": same(200),
    "GET /t/screen": same(200),
    "PATCH /api/v1/admin/canteens/{canteen_id}": admin_only(200),
    "PATCH /api/v1/standing-orders/{so_id}": signed_in(404, admin=404, owner=("victim_family", 200)),
    "POST /api/v1/admin/canteens": admin_only(201),
    "POST /api/v1/admin/donation-targets/qrcodes": admin_only(200),
    "POST /api/v1/admin/donations/offline": admin_only(201),
    "POST /api/v1/admin/elders/roster": Row(
        {"anonymous": 401, "elder": 403, "family": 403, "operator": 403, "civil_affairs": 200, "admin": 200}
    ),
    "POST /api/v1/admin/elders/{elder_id}/verify": Row(
        {"anonymous": 401, "elder": 403, "family": 403, "operator": 403, "civil_affairs": 404, "admin": 403},
        owner=("victim_civil_affairs", 200),
    ),
    "POST /api/v1/admin/reconciliation/discrepancies/{discrepancy_id}/resolve": admin_only(404),
    "POST /api/v1/admin/reconciliation/runs": admin_only(400),
    "POST /api/v1/admin/refund-requests/{refund_id}/approve": admin_only(409),
    "POST /api/v1/admin/refund-requests/{refund_id}/reject": admin_only(200),
    "POST /api/v1/admin/roles": admin_only(201),
    "POST /api/v1/admin/roles/{grant_id}/revoke": admin_only(204),
    "POST /api/v1/admin/settlements": admin_only(400),
    "POST /api/v1/admin/settlements/{settlement_id}/confirm": admin_only(404),
    "POST /api/v1/admin/settlements/{settlement_id}/mark-paid": admin_only(422),
    "POST /api/v1/admin/subsidy-policies": admin_only(201),
    "POST /api/v1/auth/logout": signed_in(204, admin=204),
    "POST /api/v1/auth/wechat/login": same(200),
    "POST /api/v1/auth/wechat/phone": signed_in(200, admin=200),
    "POST /api/v1/bookings": signed_in(404, admin=404, owner=("victim_family", 201)),
    "POST /api/v1/bookings/quote": signed_in(404, admin=404, owner=("victim_family", 200)),
    "POST /api/v1/bookings/{booking_id}/cancel": signed_in(404, admin=404, owner=("victim_family", 200)),
    "POST /api/v1/canteens/{canteen_id}/serve": admin_only(403, owner=("victim_operator", 409)),
    "POST /api/v1/canteens/{canteen_id}/walk-ins": admin_only(403, owner=("victim_operator", 409)),
    "POST /api/v1/donations": signed_in(201, admin=201),
    "POST /api/v1/donations/{donation_id}/receipt/invoice-request": signed_in(
        404, admin=404, owner=("victim_donor", 201)
    ),
    "POST /api/v1/donations/{donation_id}/refund-requests": signed_in(
        404, admin=404, owner=("victim_donor", 409)
    ),
    "POST /api/v1/elders": admin_only(201, owner=("victim_civil_affairs", 201)),
    "POST /api/v1/elders/bind": signed_in(404, admin=404),
    "POST /api/v1/elders/{elder_id}/invites": signed_in(404, admin=201, owner=("victim_elder", 201)),
    "POST /api/v1/me/donation-digest": signed_in(200, admin=200),
    "POST /api/v1/me/subscriptions": signed_in(200, admin=200),
    "POST /api/v1/payments/wechat/notify": same(401),
    "POST /api/v1/payments/wechat/refund-notify": same(401),
    "POST /api/v1/standing-orders": signed_in(404, admin=404, owner=("victim_family", 201)),
    "POST /sandbox/wechat/cgi-bin/message/subscribe/send": same(200),
    "POST /sandbox/wechat/cgi-bin/stable_token": same(200),
    "POST /sandbox/wechat/wxa/business/getuserphonenumber": same(200),
    "POST /sandbox/wechatpay/faults/amount/{out_trade_no}": same(422),
    "POST /sandbox/wechatpay/pay/{out_trade_no}": same(200),
    "POST /sandbox/wechatpay/refunds/{out_refund_no}/settle": same(200),
    "POST /sandbox/wechatpay/v3/pay/transactions/jsapi": same(401),
    "POST /sandbox/wechatpay/v3/pay/transactions/out-trade-no/{out_trade_no}/close": same(401),
    "POST /sandbox/wechatpay/v3/refund/domestic/refunds": same(401),
    "PUT /api/v1/canteens/{canteen_id}/menus/{service_date}/{slot}": admin_only(
        200, owner=("victim_operator", 200)
    ),
}
