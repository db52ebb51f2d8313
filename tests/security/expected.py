"""Expected status per route and caller (see test_authorization_matrix.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.security.requests import REQUESTS


@dataclass(frozen=True)
class Row:
    expect: dict[str, int]
    owner: tuple[str, int] | None = None
    may_see: frozenset[str] = field(default_factory=frozenset)


OWNERS = {
    "GET /api/v1/elders/{elder_id}": "victim_elder",
    "POST /api/v1/elders/{elder_id}/invites": "victim_elder",
    "POST /api/v1/admin/elders/{elder_id}/verify": "victim_civil_affairs",
    "POST /api/v1/elders": "victim_civil_affairs",
    "GET /api/v1/donations/{donation_id}": "victim_donor",
    "GET /api/v1/donations/{donation_id}/receipt": "victim_donor",
    "GET /api/v1/donations/{donation_id}/trace": "victim_donor",
    "GET /api/v1/admin/subsidy-claims": "victim_civil_affairs",
    "POST /api/v1/donations/{donation_id}/receipt/invoice-request": "victim_donor",
    "POST /api/v1/donations/{donation_id}/refund-requests": "victim_donor",
    "PUT /api/v1/canteens/{canteen_id}/menus/{service_date}/{slot}": "victim_operator",
    "POST /api/v1/bookings/quote": "victim_family",
    "POST /api/v1/bookings": "victim_family",
    "GET /api/v1/bookings": "victim_family",
    "GET /api/v1/bookings/{booking_id}": "victim_family",
    "POST /api/v1/bookings/{booking_id}/cancel": "victim_family",
    "POST /api/v1/standing-orders": "victim_family",
    "GET /api/v1/standing-orders": "victim_family",
    "GET /api/v1/standing-orders/{so_id}": "victim_family",
    "PATCH /api/v1/standing-orders/{so_id}": "victim_family",
    "GET /api/v1/canteens/{canteen_id}/roster": "victim_operator",
    "POST /api/v1/canteens/{canteen_id}/serve": "victim_operator",
    "POST /api/v1/canteens/{canteen_id}/walk-ins": "victim_operator",
}

MOUNTS = {"/static/public", "/admin"}
EXPECTED: dict[str, Row] = {k: Row({}, owner=(OWNERS[k], 0) if k in OWNERS else None) for k in REQUESTS}
