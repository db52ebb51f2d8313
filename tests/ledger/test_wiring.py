"""The booking side's charity hook wired to the ledger: holds at booking, posted at serve, voided at cancel
and no-show; the trace and proof a donor sees; ledger-check's booking-line invariant."""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import time

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.bookings import charity
from app.bookings.service import booking_service
from app.kit.time import shanghai_datetime
from app.ledger import chain
from app.ledger.service import canteen_pool, ledger_service
from app.models import Allocation, Booking
from app.models.role_grant import Role
from tests.bookings.helpers import DAY, MORNING, arrange, body, key, set_now
from tests.fixtures.client import login
from tests.fixtures.factories import grant, unique
from tests.ledger.helpers import pool_free
from tests.settlements.helpers import booking_status, drain_general_pool, hold_of_booking, paid_donation

LUNCH = shanghai_datetime(DAY, time(11, 30))


async def _world(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch, pool_fen: int
) -> tuple[object, object]:
    """An eligible elder (82, 独居: gov 9 of 12, charity pays the last 3) and ``pool_fen`` in the canteen pool."""
    set_now(monkeypatch, MORNING)
    w = await arrange(session, categories=["独居"])
    await drain_general_pool(session, w.other_canteen.id)
    donation = None
    if pool_fen:
        donation = await paid_donation(session, w.canteen.id, pool_fen, donor_openid=unique("donor"))
    return w, donation


async def _ledger_ok(session: AsyncSession) -> None:
    report = await ledger_service.check(session)
    assert report["ok"], report["problems"]


async def test_charity_portion_is_held_and_shown_in_quote_and_booking(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, _ = await _world(session, monkeypatch, 1000)
    fam = await login(client, w.family_openid)
    quote = (await client.post("/api/v1/bookings/quote", json=body(w), headers=fam)).json()
    assert (quote["gov_subsidy_fen"], quote["charity_subsidy_fen"], quote["self_pay_fen"]) == (900, 300, 0)
    assert quote["charity_eligible"] and quote["charity_shortfall_fen"] == 0
    assert await pool_free(session, canteen_pool(w.canteen.id)) == 1000  # a quote reserves nothing

    res = await client.post("/api/v1/bookings", json=body(w), headers=fam | key())
    assert res.status_code == 201, res.text
    b = res.json()
    assert (b["charity_subsidy_fen"], b["self_pay_fen"]) == (300, 0)
    assert b["lines"][0]["charity_subsidy_fen"] == 300
    line, hold = await hold_of_booking(session, b["id"])
    assert line.charity_subsidy_fen == 300
    stored = (
        await session.execute(
            select(Booking.charity_subsidy_fen, Booking.self_pay_fen).where(Booking.id == uuid.UUID(b["id"]))
        )
    ).one()
    assert tuple(stored) == (300, 0)  # the hold's amounts reached the booking row, not only the answer
    assert hold is not None and hold.status == "held" and hold.held_fen == 300
    assert await pool_free(session, canteen_pool(w.canteen.id)) == 700
    meta = (await session.execute(select(Allocation.meta).where(Allocation.hold_id == hold.id))).scalar_one()
    assert meta == {
        "service_date": DAY.isoformat(),
        "slot": "lunch",
        "canteen_id": str(w.canteen.id),
        "canteen_name": "德城区幸福食堂",
        "age_band": "80-89",
    }
    await _ledger_ok(session)


async def test_serve_posts_the_hold_and_the_trace_shows_the_meal(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, donation = await _world(session, monkeypatch, 1000)
    fam = await login(client, w.family_openid)
    b = (await client.post("/api/v1/bookings", json=body(w), headers=fam | key())).json()
    set_now(monkeypatch, LUNCH)
    op = await login(client, w.operator_openid)
    served = await client.post(
        f"/api/v1/canteens/{w.canteen.id}/serve", json={"code": b["serve_code"]}, headers=op
    )
    assert served.status_code == 200, served.text
    _, hold = await hold_of_booking(session, b["id"])
    assert hold is not None and hold.status == "posted" and hold.entry_id is not None
    payable = await ledger_service.balances(session, [f"payable:canteen:{w.canteen.id}"])
    assert payable[f"payable:canteen:{w.canteen.id}"].balance_fen == -300

    # the donor's trace: one lunch at this canteen for ¥3, ¥7 unused, and no elder identity
    assert donation is not None
    donor = (
        await session.execute(text("SELECT openid FROM users WHERE id = :id"), {"id": donation.donor_user_id})
    ).scalar_one()
    trace = await client.get(f"/api/v1/donations/{donation.id}/trace", headers=await login(client, donor))
    assert trace.status_code == 200, trace.text
    t = trace.json()
    assert (t["paid_fen"], t["spent_fen"], t["held_fen"], t["unused_fen"]) == (1000, 300, 0, 700)
    assert len(t["meals"]) == 1 and t["reserved"] == []
    meal = t["meals"][0]
    assert (
        meal["service_date"],
        meal["slot"],
        meal["canteen_name"],
        meal["amount_fen"],
        meal["age_band"],
    ) == (
        DAY.isoformat(),
        "lunch",
        "德城区幸福食堂",
        300,
        "80-89",
    )
    assert "王秀英" not in trace.text and str(w.elder.id) not in trace.text
    assert "1 份长者午餐" in t["text"]
    await _ledger_ok(session)

    # the proof covers the payment and the meal, and recomputes the day's root
    proof = await client.get(f"/api/v1/donations/{donation.id}/proof")
    assert proof.status_code == 200, proof.text
    p = proof.json()
    kinds = sorted(item["entry"]["kind"] for item in p["proof"]["entries"])
    assert kinds == ["donation", "meal_subsidy"]
    assert chain.verify_proof(p["proof"])
    assert p["unpublished_days"] == sorted(p["proof"]["roots"])  # today's root is published tomorrow
    forged = copy.deepcopy(p["proof"])
    forged["entries"][-1]["entry"]["postings"][0]["amount_fen"] += 1
    assert not chain.verify_proof(forged)


async def test_cancel_and_no_show_release_the_hold(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, _ = await _world(session, monkeypatch, 1000)
    fam = await login(client, w.family_openid)
    b = (await client.post("/api/v1/bookings", json=body(w), headers=fam | key())).json()
    assert await pool_free(session, canteen_pool(w.canteen.id)) == 700
    cancelled = await client.post(f"/api/v1/bookings/{b['id']}/cancel", json={}, headers=fam)
    assert cancelled.status_code == 200, cancelled.text
    _, hold = await hold_of_booking(session, b["id"])
    assert hold is not None and hold.status == "voided"
    assert await pool_free(session, canteen_pool(w.canteen.id)) == 1000
    await _ledger_ok(session)

    # book again, never collect: the no-show job voids the hold
    again = (await client.post("/api/v1/bookings", json=body(w), headers=fam | key())).json()
    assert again["charity_subsidy_fen"] == 300
    set_now(monkeypatch, shanghai_datetime(DAY, time(15, 0)))
    await booking_service.mark_no_shows(session)
    assert await booking_status(session, again["id"]) == "no_show"
    _, hold = await hold_of_booking(session, again["id"])
    assert hold is not None and hold.status == "voided"
    assert await pool_free(session, canteen_pool(w.canteen.id)) == 1000
    await _ledger_ok(session)


async def test_the_no_show_job_voids_every_missed_meals_hold_and_only_those(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four elders' lunches each hold 3 yuan of donated money; one is served. The no-show job marks the other
    three in one run, voids their holds in one ledger batch, and leaves the served meal's posting alone."""
    from tests.fixtures.factories import create_elder

    w, _ = await _world(session, monkeypatch, 1200)
    elder_ids = [str(w.elder.id)]
    for i in range(3):
        elder, _ = await create_elder(
            session,
            district_code=w.district,
            birth=w.elder.birth_date,
            categories=["独居"],
            family_openids=(w.family_openid,),
            name=f"长者{i}",
        )
        elder_ids.append(str(elder.id))
    fam = await login(client, w.family_openid)
    booked = []
    for elder_id in elder_ids:
        res = await client.post(
            "/api/v1/bookings", json=body(w) | {"elder_id": elder_id}, headers=fam | key()
        )
        assert res.status_code == 201, res.text
        assert res.json()["charity_subsidy_fen"] == 300
        booked.append(res.json())
    assert await pool_free(session, canteen_pool(w.canteen.id)) == 0

    op = await login(client, w.operator_openid)
    set_now(monkeypatch, LUNCH)
    served = await client.post(
        f"/api/v1/canteens/{w.canteen.id}/serve", json={"code": booked[0]["serve_code"]}, headers=op
    )
    assert served.status_code == 200, served.text

    set_now(monkeypatch, shanghai_datetime(DAY, time(15, 0)))
    assert await booking_service.mark_no_shows(session) == 3
    assert await booking_service.mark_no_shows(session) == 0  # a second run finds nothing more to do
    assert await booking_status(session, booked[0]["id"]) == "served"
    _, kept = await hold_of_booking(session, booked[0]["id"])
    assert kept is not None and kept.status == "posted"
    for b in booked[1:]:
        assert await booking_status(session, b["id"]) == "no_show"
        _, hold = await hold_of_booking(session, b["id"])
        assert hold is not None and hold.status == "voided"
    assert await pool_free(session, canteen_pool(w.canteen.id)) == 900
    await _ledger_ok(session)


async def test_empty_pool_elder_pays_and_partial_pool_pays_part(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, _ = await _world(session, monkeypatch, 0)
    fam = await login(client, w.family_openid)
    quote = (await client.post("/api/v1/bookings/quote", json=body(w), headers=fam)).json()
    assert (quote["charity_subsidy_fen"], quote["self_pay_fen"], quote["charity_shortfall_fen"]) == (
        0,
        300,
        300,
    )
    assert any("爱心助餐资金暂时不足" in n for n in quote["notes"])
    b = (await client.post("/api/v1/bookings", json=body(w), headers=fam | key())).json()
    assert (b["charity_subsidy_fen"], b["self_pay_fen"]) == (0, 300)
    _, hold = await hold_of_booking(session, b["id"])
    assert hold is None

    # ¥1 in the pool: charity pays ¥1, the elder ¥2; the breakdown still adds up
    await paid_donation(session, w.canteen.id, 100)
    await client.post(f"/api/v1/bookings/{b['id']}/cancel", json={}, headers=fam)
    b2 = (await client.post("/api/v1/bookings", json=body(w), headers=fam | key())).json()
    assert (b2["gov_subsidy_fen"], b2["charity_subsidy_fen"], b2["self_pay_fen"]) == (900, 100, 200)
    await _ledger_ok(session)


async def test_booking_honours_what_was_actually_held(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between pricing and the hold another booking may take the money: the line shows what was held."""
    w, _ = await _world(session, monkeypatch, 120)

    def optimistic(**kw: object) -> int:
        return int(kw["remaining_self_pay_fen"]) if kw["eligible"] else 0  # type: ignore[call-overload]

    monkeypatch.setattr(charity, "available_charity_fen", optimistic)
    fam = await login(client, w.family_openid)
    b = (await client.post("/api/v1/bookings", json=body(w), headers=fam | key())).json()
    assert (b["charity_subsidy_fen"], b["self_pay_fen"]) == (120, 180)
    line, hold = await hold_of_booking(session, b["id"])
    assert line.charity_subsidy_fen == 120 and hold is not None and hold.held_fen == 120
    await _ledger_ok(session)


async def test_ineligible_elder_gets_no_charity(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_now(monkeypatch, MORNING)
    w = await arrange(session)  # 82, no category: gov 9, self 3, not charity-eligible
    await paid_donation(session, w.canteen.id, 1000)
    fam = await login(client, w.family_openid)
    b = (await client.post("/api/v1/bookings", json=body(w), headers=fam | key())).json()
    assert (b["charity_subsidy_fen"], b["self_pay_fen"]) == (0, 300)
    assert await pool_free(session, canteen_pool(w.canteen.id)) == 1000


async def test_ledger_check_names_a_line_whose_charity_differs_from_its_hold(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, _ = await _world(session, monkeypatch, 1000)
    fam = await login(client, w.family_openid)
    b = (await client.post("/api/v1/bookings", json=body(w), headers=fam | key())).json()
    line, _ = await hold_of_booking(session, b["id"])
    await session.execute(
        text(
            "UPDATE booking_lines SET charity_subsidy_fen = 200, self_pay_fen = self_pay_fen + 100 WHERE id = :id"
        ),
        {"id": line.id},
    )
    report = await ledger_service.check(session)
    assert not report["ok"]
    assert [p["hold_key"] for p in report["problems"] if p["check"] == "booking_line"] == [str(line.id)]


async def test_trace_and_proof_authorization(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, donation = await _world(session, monkeypatch, 500)
    assert donation is not None
    stranger = await login(client, unique("stranger"))
    assert (await client.get(f"/api/v1/donations/{donation.id}/trace", headers=stranger)).status_code == 404
    assert (await client.get(f"/api/v1/donations/{donation.id}/trace")).status_code == 401
    admin_openid = unique("admin")
    await grant(session, admin_openid, Role.federation_admin)
    admin = await login(client, admin_openid)
    seen = await client.get(f"/api/v1/donations/{donation.id}/trace", headers=admin)
    assert seen.status_code == 200 and seen.json()["paid_fen"] == 500
    missing = await client.get("/api/v1/donations/00000000-0000-0000-0000-000000000000/trace", headers=admin)
    assert missing.status_code == 404
    assert (await client.get("/api/v1/donations/not-a-uuid/trace", headers=admin)).status_code == 422

    # the proof is public for paid donations only
    assert (await client.get(f"/api/v1/donations/{donation.id}/proof")).status_code == 200
    await session.execute(
        text("UPDATE donations SET status = 'pending', paid_at = NULL WHERE id = :id"), {"id": donation.id}
    )
    gone = await client.get(f"/api/v1/donations/{donation.id}/proof")
    assert gone.status_code == 404 and gone.json()["error"] == "DonationNotFound"


async def test_concurrent_serve_and_cancel_have_one_outcome(
    committed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.db import unit_of_work

    client = committed_client
    async with unit_of_work() as session:
        w, _ = await _world(session, monkeypatch, 1000)
    fam = await login(client, w.family_openid)
    b = (await client.post("/api/v1/bookings", json=body(w), headers=fam | key())).json()
    assert b["charity_subsidy_fen"] == 300
    set_now(monkeypatch, LUNCH)
    op = await login(client, w.operator_openid)
    serve, cancel = await asyncio.gather(
        client.post(f"/api/v1/canteens/{w.canteen.id}/serve", json={"code": b["serve_code"]}, headers=op),
        client.post(f"/api/v1/bookings/{b['id']}/cancel", json={"reason": "厨房停电"}, headers=op),
    )
    assert sorted([serve.status_code, cancel.status_code]) == [200, 409], (serve.text, cancel.text)
    async with unit_of_work() as session:
        status = await booking_status(session, b["id"])
        _, hold = await hold_of_booking(session, b["id"])
        assert hold is not None
        assert (status, hold.status) in {("served", "posted"), ("cancelled", "voided")}
        free = await pool_free(session, canteen_pool(w.canteen.id))
        assert free == (700 if status == "served" else 1000)
        report = await ledger_service.check(session)
        assert report["ok"], report["problems"]
