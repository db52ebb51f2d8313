from __future__ import annotations

from datetime import time, timedelta

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.bookings.service import booking_service
from app.kit.time import shanghai_datetime
from app.models import AuditLog, Booking, MealNotification, StandingOrderRun
from tests.bookings.helpers import DAY, MORNING, TODAY, arrange, body, key, set_now
from tests.fixtures.client import login
from tests.fixtures.factories import create_menu

LUNCH = shanghai_datetime(DAY, time(11, 30))


async def _book(
    client: httpx.AsyncClient, w: object, headers: dict[str, str], **kw: object
) -> dict[str, object]:
    res = await client.post("/api/v1/bookings", json=body(w, **kw), headers=headers | key())  # type: ignore[arg-type]
    assert res.status_code == 201, res.text
    return dict(res.json())


async def test_roster_then_serve_by_code_once(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    fam = await login(client, w.family_openid)
    dine = await _book(client, w, fam)
    op = await login(client, w.operator_openid)

    roster = await client.get(
        f"/api/v1/canteens/{w.canteen.id}/roster",
        params={"date": DAY.isoformat(), "slot": "lunch"},
        headers=op,
    )
    assert roster.status_code == 200, roster.text
    r = roster.json()
    assert r["booked_meals"] == 1 and r["items"] == [{"name": "两荤一素套餐", "quantity": 1}]
    assert r["diet_tags"] == {"低盐": 1} and r["allergens"] == {"花生": 1}
    assert r["bookings"][0]["elder_name"] == "王**"

    start = shanghai_datetime(DAY, time(11, 0))
    end = shanghai_datetime(DAY, time(13, 0))
    set_now(monkeypatch, start - timedelta(seconds=1))
    early = await client.post(
        f"/api/v1/canteens/{w.canteen.id}/serve", json={"code": dine["serve_code"]}, headers=op
    )
    assert early.status_code == 409 and early.json()["error"] == "OutsideServingWindow"
    set_now(monkeypatch, end + timedelta(seconds=1))
    late = await client.post(
        f"/api/v1/canteens/{w.canteen.id}/serve", json={"code": dine["serve_code"]}, headers=op
    )
    assert late.status_code == 409 and late.json()["error"] == "OutsideServingWindow"
    set_now(monkeypatch, end)
    ok = await client.post(
        f"/api/v1/canteens/{w.canteen.id}/serve",
        json={"code": dine["serve_code"], "self_pay_method": "wechat"},
        headers=op,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "served" and ok.json()["self_pay_method"] == "wechat"
    twice = await client.post(
        f"/api/v1/canteens/{w.canteen.id}/serve", json={"code": dine["serve_code"]}, headers=op
    )
    assert twice.status_code == 409 and twice.json()["error"] == "AlreadyServed"
    assert (
        await session.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.action == "booking.serve")
        )
        == 1
    )
    # the elder's history shows it served
    mine = await client.get(f"/api/v1/bookings/{dine['id']}", headers=await login(client, w.elder_openid))
    assert mine.json()["status"] == "served"


async def test_serving_refusals_change_nothing(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    _, next_items = await create_menu(session, w.canteen.id, DAY + timedelta(days=1))
    fam = await login(client, w.family_openid)
    today_booking = await _book(client, w, fam)
    tomorrow_booking = await _book(client, w, fam, day=DAY + timedelta(days=1), items=next_items)
    cancelled = await _book(client, w, fam, canteen=w.other_canteen)
    assert (
        await client.post(f"/api/v1/bookings/{cancelled['id']}/cancel", json={}, headers=fam)
    ).status_code == 200
    set_now(monkeypatch, LUNCH)
    op = await login(client, w.operator_openid)
    other_op = await login(client, w.other_operator_openid)
    serve = f"/api/v1/canteens/{w.canteen.id}/serve"

    wrong_day = await client.post(serve, json={"code": tomorrow_booking["qr_payload"]}, headers=op)
    assert wrong_day.status_code == 409 and wrong_day.json()["error"] == "WrongDay"
    wrong_canteen = await client.post(serve, json={"code": cancelled["qr_payload"]}, headers=op)
    assert wrong_canteen.status_code == 409 and wrong_canteen.json()["error"] == "WrongCanteen"
    cancelled_serve = await client.post(
        f"/api/v1/canteens/{w.other_canteen.id}/serve",
        json={"code": cancelled["serve_code"]},
        headers=other_op,
    )
    assert cancelled_serve.status_code == 409 and cancelled_serve.json()["error"] == "BookingCancelled"
    not_mine = await client.post(serve, json={"code": today_booking["serve_code"]}, headers=other_op)
    assert not_mine.status_code == 403
    forged = today_booking["qr_payload"][:-1] + ("0" if today_booking["qr_payload"][-1] != "0" else "1")  # type: ignore[index]
    bad = await client.post(serve, json={"code": forged}, headers=op)
    assert bad.status_code == 400 and bad.json()["error"] == "InvalidServeCode"
    rows = (await session.execute(select(Booking.status).order_by(Booking.created_at))).scalars().all()
    assert sorted(rows) == ["cancelled", "confirmed", "confirmed"]
    qr = await client.post(serve, json={"code": today_booking["qr_payload"]}, headers=op)
    assert qr.status_code == 200 and qr.json()["serve_method"] == "qr"


async def test_walk_in_by_id_number(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await arrange(session, capacity=1)
    set_now(monkeypatch, LUNCH)
    op = await login(client, w.operator_openid)
    payload = {
        "id_number": w.id_number,
        "slot": "lunch",
        "items": [{"menu_item_id": str(w.items[0].id), "quantity": 1}],
        "self_pay_method": "cash",
    }
    res = await client.post(f"/api/v1/canteens/{w.canteen.id}/walk-ins", json=payload, headers=op)
    assert res.status_code == 201, res.text
    assert (
        res.json()["status"] == "served"
        and res.json()["channel"] == "counter"
        and res.json()["gov_subsidy_fen"] == 900
    )
    full = await client.post(f"/api/v1/canteens/{w.canteen.id}/walk-ins", json=payload, headers=op)
    assert full.status_code == 409 and full.json()["error"] == "SlotFull"
    bad_id = await client.post(
        f"/api/v1/canteens/{w.canteen.id}/walk-ins",
        json=payload | {"id_number": w.id_number[:17] + ("1" if w.id_number[17] != "1" else "2")},
        headers=op,
    )
    assert bad_id.status_code == 422 and "校验位" in bad_id.json()["message"]
    assert w.id_number not in res.text


async def test_cross_tenant_matrix(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)
    fam = await login(client, w.family_openid)
    booking = await _book(client, w, fam)
    other = await arrange(session)  # another elder with their own family, canteens and operators
    strangers = {
        "other elder": await login(client, other.elder_openid),
        "other family": await login(client, other.family_openid),
        "other operator": await login(client, other.operator_openid),
        "anonymous": {},
    }
    bid, eid, cid = booking["id"], w.elder.id, w.canteen.id
    menu_put = {"items": [{"name": "x", "price_fen": 100}]}
    calls = [
        ("GET", f"/api/v1/bookings/{bid}", None),
        ("POST", f"/api/v1/bookings/{bid}/cancel", {"reason": "不想吃了"}),
        ("GET", "/api/v1/bookings", {"elder_id": str(eid)}),
        ("POST", "/api/v1/bookings/quote", body(w)),
        ("POST", "/api/v1/bookings", body(w)),
        ("GET", f"/api/v1/elders/{eid}", None),
        ("POST", f"/api/v1/elders/{eid}/invites", None),
        ("POST", f"/api/v1/admin/elders/{eid}/verify", {"decision": "rejected"}),
        ("GET", f"/api/v1/canteens/{cid}/roster", {"date": DAY.isoformat(), "slot": "lunch"}),
        ("POST", f"/api/v1/canteens/{cid}/serve", {"code": booking["serve_code"]}),
        (
            "POST",
            f"/api/v1/canteens/{cid}/walk-ins",
            {"id_number": w.id_number, "slot": "lunch", "items": [{"menu_item_id": str(w.items[0].id)}]},
        ),
        ("PUT", f"/api/v1/canteens/{cid}/menus/{DAY.isoformat()}/lunch", menu_put),
        (
            "POST",
            "/api/v1/standing-orders",
            {"elder_id": str(eid), "canteen_id": str(cid), "slot": "lunch", "weekdays": [1]},
        ),
    ]
    for who, headers in strangers.items():
        for method, url, payload in calls:
            if method == "GET":
                res = await client.get(url, params=payload, headers=headers)
            else:
                res = await client.request(method, url, json=payload, headers=headers | key())
            assert res.status_code in (401, 403, 404), (who, method, url, res.status_code, res.text)
            assert w.id_number not in res.text
    row = await session.get(Booking, bid)
    assert row is not None and row.status == "confirmed"
    assert await session.scalar(select(func.count()).select_from(Booking)) == 1


async def test_jobs_standing_orders_no_shows_and_notifications(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await arrange(session)
    fam = await login(client, w.family_openid)
    set_now(monkeypatch, MORNING)
    # the family allowed one "booking confirmed" message
    sub = await client.post(
        "/api/v1/me/subscriptions", json={"template_ids": ["sangyu_booking_confirmed"]}, headers=fam
    )
    assert sub.status_code == 200 and sub.json()["quotas"] == {"sangyu_booking_confirmed": 1}
    so = await client.post(
        "/api/v1/standing-orders",
        json={
            "elder_id": str(w.elder.id),
            "canteen_id": str(w.canteen.id),
            "slot": "lunch",
            "weekdays": [DAY.isoweekday()],
        },
        headers=fam,
    )
    assert so.status_code == 201, so.text
    outcomes = await booking_service.materialize_standing_orders(session, at=MORNING)
    assert outcomes == {"booked": 1}
    again = await booking_service.materialize_standing_orders(session, at=MORNING)
    assert not again  # one outcome per date
    run = (await session.execute(select(StandingOrderRun))).scalar_one()
    booking = await session.get(Booking, run.booking_id)
    assert booking is not None and booking.channel == "standing_order" and booking.gov_subsidy_fen == 900
    detail = await client.get(f"/api/v1/standing-orders/{so.json()['id']}", headers=fam)
    assert detail.json()["runs"][0]["outcome"] == "booked"

    # notifications were written for the elder and the family member; send them (quota: family only)
    from app.bookings.notifications import deliver

    notes = (
        (await session.execute(select(MealNotification).order_by(MealNotification.created_at)))
        .scalars()
        .all()
    )
    assert {n.kind for n in notes} == {"booking_confirmed"} and len(notes) == 2
    for n in notes:
        await deliver(session, n.id)  # the job body, inside this test's transaction
    await session.flush()
    statuses = {(await session.get(MealNotification, n.id)).status for n in notes}  # type: ignore[union-attr]
    assert statuses == {"sent", "no_quota"}
    msgs = await client.get("/sandbox/wechat/messages", params={"touser": w.family_openid})
    assert msgs.status_code == 200 and len(msgs.json()["items"]) >= 1

    # after the serving window the unserved booking becomes a no-show
    after = shanghai_datetime(DAY, time(13, 0)) + timedelta(seconds=1)
    assert await booking_service.mark_no_shows(session, at=after) == 1
    await session.refresh(booking)
    assert booking.status == "no_show"

    # a paused standing order records why it skipped
    paused = await client.patch(
        f"/api/v1/standing-orders/{so.json()['id']}",
        json={"pause_until": (DAY + timedelta(days=7)).isoformat()},
        headers=fam,
    )
    assert paused.status_code == 200
    next_week = DAY + timedelta(days=7)
    outcomes = await booking_service.materialize_standing_orders(
        session, at=shanghai_datetime(next_week - timedelta(days=1), time(10, 0))
    )
    assert outcomes == {"skipped": 1}
    assert TODAY < DAY
