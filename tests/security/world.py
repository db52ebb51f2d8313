"""Two tenants for cross-tenant tests: the *victim* side (an elder with an account and a bound family member,
their canteen and its operator, a civil-affairs officer of their district, a donor with a paid donation and a
refund request, a booking and a standing order) and the *attackers*: an elder, a family member of another elder,
an operator of another canteen and a civil-affairs officer of another district — plus an admin.

Everything is written inside the test's transaction (``session`` + ``client``) and rolled back afterwards."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.role_grant import Role
from tests.bookings.helpers import DAY, MORNING, arrange, set_now
from tests.bookings.helpers import body as booking_body
from tests.donations.helpers import create_target, donate, payment_notification
from tests.fixtures.client import login
from tests.fixtures.factories import create_canteen, create_district, create_elder, grant, unique

ATTACKERS = ("anonymous", "elder", "family", "operator", "civil_affairs")
ROLES = (*ATTACKERS, "admin")


@dataclass
class SecurityWorld:
    ids: dict[str, str]
    headers: dict[str, dict[str, str]]
    booking: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


async def build_world(
    session: AsyncSession, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> SecurityWorld:
    set_now(monkeypatch, MORNING)
    victim = await arrange(session)
    civil_openid, donor_openid, admin_openid = unique("ca"), unique("dn"), unique("ad")
    await grant(session, civil_openid, Role.civil_affairs, district=victim.district)
    await grant(session, admin_openid, Role.federation_admin)
    operator_grant = await grant(session, unique("op"), Role.operator, canteen_id=victim.canteen.id)

    # the attackers live in another district, with their own canteen and elders
    other_district = (await create_district(session)).code
    other_canteen = await create_canteen(session, district_code=other_district, name="别处幸福食堂")
    attacker = {r: unique(r[:2]) for r in ("elder", "family", "operator", "civil_affairs")}
    await create_elder(session, district_code=other_district, user_openid=attacker["elder"])
    await create_elder(session, district_code=other_district, family_openids=(attacker["family"],))
    await grant(session, attacker["operator"], Role.operator, canteen_id=other_canteen.id)
    await grant(session, attacker["civil_affairs"], Role.civil_affairs, district=other_district)

    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    for role, openid in attacker.items():
        headers[role] = await login(client, openid)
    headers["admin"] = await login(client, admin_openid)
    headers["victim_elder"] = await login(client, victim.elder_openid)
    headers["victim_family"] = await login(client, victim.family_openid)
    headers["victim_operator"] = await login(client, victim.operator_openid)
    headers["victim_civil_affairs"] = await login(client, civil_openid)
    headers["victim_donor"] = await login(client, donor_openid)

    booked = await client.post(
        "/api/v1/bookings",
        json=booking_body(victim),
        headers={**headers["victim_elder"], "Idempotency-Key": unique("idem")},
    )
    assert booked.status_code == 201, booked.text
    booking = booked.json()
    standing = await client.post(
        "/api/v1/standing-orders",
        json={
            "elder_id": str(victim.elder.id),
            "canteen_id": str(victim.canteen.id),
            "slot": "lunch",
            "weekdays": [1, 3, 5],
        },
        headers=headers["victim_elder"],
    )
    assert standing.status_code == 201, standing.text

    target = await create_target(session, "canteen", canteen_id=victim.canteen.id)
    donated = await donate(client, headers["victim_donor"], target.code, amount_fen=5000)
    assert donated.status_code == 201, donated.text
    donation = donated.json()
    notify_headers, notify_body = payment_notification(donation["out_trade_no"], 5000)
    paid = await client.post("/api/v1/payments/wechat/notify", content=notify_body, headers=notify_headers)
    assert paid.status_code in (200, 204), paid.text
    refund = await client.post(
        f"/api/v1/donations/{donation['id']}/refund-requests",
        json={"amount_fen": 1000, "reason": "测试退款"},
        headers=headers["victim_donor"],
    )
    assert refund.status_code == 201, refund.text

    ids = {
        "elder_id": str(victim.elder.id),
        "canteen_id": str(victim.canteen.id),
        "canteen_code": victim.canteen.code,
        "other_canteen_id": str(other_canteen.id),
        "district": victim.district,
        "other_district": other_district,
        "booking_id": booking["id"],
        "so_id": standing.json()["id"],
        "donation_id": donation["id"],
        "out_trade_no": donation["out_trade_no"],
        "refund_id": refund.json()["id"],
        "target_code": target.code,
        "grant_id": str(operator_grant.id),
        "day": DAY.isoformat(),
        "menu_item_id": str(victim.items[0].id),
        "id_number": victim.id_number,
        "missing": str(uuid.uuid4()),
        "victim_operator_openid": victim.operator_openid,
    }
    return SecurityWorld(ids=ids, headers=headers, booking=booking, extra={"victim": victim})
