from __future__ import annotations

import asyncio

from sqlalchemy import select

from app.db import Database, unit_of_work
from app.kit.time import business_date
from app.models import FeedAggregate, FeedEvent
from tests.feed.helpers import create_target, pay, serve_meal


async def test_concurrent_serves_grow_one_event_exactly(committed: Database) -> None:
    async with unit_of_work() as session:
        target = await create_target(session)
        await pay(session, target, 100_000)
    canteen_id = target.canteen_id
    assert canteen_id is not None

    async def serve(fen: int) -> None:
        async with unit_of_work() as session:
            await serve_meal(session, canteen_id, fen)

    amounts = [300 + i for i in range(20)]
    await asyncio.gather(*(serve(a) for a in amounts))
    async with unit_of_work() as session:
        events = (
            (await session.execute(select(FeedEvent).where(FeedEvent.kind == "meals_funded"))).scalars().all()
        )
        keys = (await session.execute(select(FeedAggregate))).scalars().all()
    assert len(events) == 1 and len(keys) == 1
    assert keys[0].key == f"meals:{canteen_id}:{business_date().isoformat()}"
    assert events[0].payload["meals"] == 20 and events[0].payload["amount_fen"] == sum(amounts)
    assert events[0].payload["slots"] == {"lunch": 20}
