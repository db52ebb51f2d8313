"""The charity portion of a meal ("我为老人助一餐"). The ledger fills these in (holds on donation lots, FIFO,
canteen pool first, then the general meal pool); until then no charity money is available.

The booking service calls them at fixed moments, inside its own transaction:
- quote and booking: ``available_charity_fen`` (how much donated money could pay, ≤ remaining self-pay);
- booking: ``place_hold`` for the elder's meal line (returns the amount actually held);
- serve: ``on_served`` (post the hold); cancel and no-show: ``on_released`` (void the hold).
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession


async def available_charity_fen(
    session: AsyncSession,
    *,
    elder_id: uuid.UUID,
    canteen_id: uuid.UUID,
    service_date: date,
    eligible: bool,
    remaining_self_pay_fen: int,
) -> int:
    """How much of ``remaining_self_pay_fen`` donated money can pay for this meal (0 when not eligible)."""
    return 0


async def place_hold(
    session: AsyncSession, *, booking_line_id: uuid.UUID, canteen_id: uuid.UUID, amount_fen: int
) -> int:
    """Reserve ``amount_fen`` of donated money for the line; returns the amount actually held."""
    return 0


async def on_served(session: AsyncSession, *, booking_line_id: uuid.UUID) -> None:
    """The meal was served: the hold becomes a payable to the canteen."""
    return None


async def on_released(session: AsyncSession, *, booking_line_id: uuid.UUID) -> None:
    """The meal was cancelled or not collected: the hold is voided."""
    return None
