"""The charity portion of a meal ("我为老人助一餐"), backed by the ledger: holds on donation lots, FIFO, the
canteen's pool first, then the general meal pool (``app/ledger/service.py``).

The booking service calls them at fixed moments, inside its own transaction:
- quote and booking: ``available_charity_fen`` (how much donated money could pay, ≤ remaining self-pay, which
  the caller has already capped at the policy's per-meal charity cap), from the pools' free money read with
  the meal's look-up;
- booking: ``place_holds`` for the elders' meal lines of the bookings one transaction makes (returns the
  amount actually held per line; the line's charity portion is that amount and the elder pays any shortfall);
- serve: ``on_served`` (post the hold: pool → payable to the canteen); cancel: ``on_released`` (void the
  hold); the no-show job: ``on_released_many`` (void a batch of holds at once).

The hold key is the booking line id. What donors later see of the meal (``meta``) is the date, slot, canteen
and an age band, never who ate it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.time import age_on
from app.ledger.service import ledger_service
from app.settlements.repository import MealRepository


def age_band(age: int) -> str:
    """Ten-year bands ("80-89"), so a donor learns roughly who was fed, never who."""
    if age >= 100:
        return "100+"
    low = max(0, age // 10 * 10)
    return f"{low}-{low + 9}"


def hold_key(booking_line_id: uuid.UUID) -> str:
    return str(booking_line_id)


def available_charity_fen(*, free_fen: int, eligible: bool, remaining_self_pay_fen: int) -> int:
    """How much of ``remaining_self_pay_fen`` donated money can pay for this meal (0 when not eligible), with
    ``free_fen`` what the meal's pools (``app.ledger.service.meal_pools``) could still give when read."""
    if not eligible or remaining_self_pay_fen <= 0:
        return 0
    return max(0, min(remaining_self_pay_fen, free_fen))


def meal_meta(
    *, service_date: date, slot: str, canteen_id: uuid.UUID, canteen_name: str, birth_date: date
) -> dict[str, str]:
    """What donors see of a meal their money paid for: when, where, and an age band."""
    return {
        "service_date": service_date.isoformat(),
        "slot": slot,
        "canteen_id": str(canteen_id),
        "canteen_name": canteen_name,
        "age_band": age_band(age_on(birth_date, service_date)),
    }


@dataclass(frozen=True)
class MealHold:
    """One meal line's charity portion to reserve (``place_holds``); ``meta``: the meal as ``meal_meta``
    describes it (the booking has it at hand, so nothing is read under the locks)."""

    booking_line_id: uuid.UUID
    canteen_id: uuid.UUID
    amount_fen: int
    meta: dict[str, str]


async def place_holds(session: AsyncSession, holds: list[MealHold]) -> dict[uuid.UUID, int]:
    """Reserve each line's ``amount_fen`` of donated money, in order, in one ledger batch; returns what was
    actually held per booking line (the elder pays any shortfall)."""
    wanted = [h for h in holds if h.amount_fen > 0]
    requests = [
        ledger_service.HoldRequest(hold_key(h.booking_line_id), h.canteen_id, h.amount_fen, h.meta)
        for h in wanted
    ]
    held = await ledger_service.place_holds(session, requests) if requests else {}
    return {h.booking_line_id: held.get(hold_key(h.booking_line_id), 0) for h in holds}


async def on_served(session: AsyncSession, *, booking_line_id: uuid.UUID) -> None:
    """The meal was served: the hold becomes a payable to the canteen."""
    meal = await MealRepository(session).meal_of_line(booking_line_id)
    if meal is None:
        return
    await ledger_service.post_hold(
        session, hold_key=hold_key(booking_line_id), service_date=meal.service_date, meta={"served": True}
    )


async def on_released(session: AsyncSession, *, booking_line_id: uuid.UUID) -> None:
    """The meal was cancelled or not collected: the hold is voided."""
    await ledger_service.void_hold(session, hold_key=hold_key(booking_line_id))


async def on_released_many(session: AsyncSession, *, booking_line_ids: list[uuid.UUID]) -> None:
    """``on_released`` for many meals at once (the no-show job), in one ledger batch."""
    if booking_line_ids:
        await ledger_service.void_holds(session, [hold_key(line_id) for line_id in booking_line_ids])
