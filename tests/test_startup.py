"""What a process does once it has started."""

from __future__ import annotations

import gc
import weakref

import pytest
from asgi_lifespan import LifespanManager

from app.db import Database
from app.main import create_app


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


async def test_a_started_app_takes_its_long_lived_objects_out_of_the_collectors_sight(
    database: Database,
) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    # startup garbage: a reference cycle nobody holds any more, which only the cyclic collector frees
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    application = create_app()
    async with LifespanManager(application):
        # modules, the app and the ORM's mappers: tens of thousands of objects no collection walks again
        assert gc.get_freeze_count() > 20_000
        # collected before the freeze, not kept for the life of the process
        assert gone() is None


async def test_a_stopping_app_finishes_the_work_its_commits_left(database: Database) -> None:
    """Sealing and receipt numbers follow commits, paced under load: a process that stops finishes them first."""
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.kit.background import PostCommitBatch

    done: list[int] = []

    async def run_once(session: AsyncSession) -> int:
        done.append(1)
        return 1

    batch = PostCommitBatch("test.on_stop", run_once, window=0.05, pace=0.5)
    application = create_app()
    async with LifespanManager(application):
        batch.poke()  # a commit just before the stop
        assert done == []
    assert done == [1]


async def test_a_stopping_app_does_not_wait_long_for_a_lock_held_elsewhere(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from sqlalchemy.ext.asyncio import AsyncSession

    from app import main
    from app.kit.background import PostCommitBatch

    async def run_once(session: AsyncSession) -> int | None:
        return None  # another process holds the lock, and keeps it

    monkeypatch.setattr(main, "DRAIN_SECONDS", 0.3)
    batch = PostCommitBatch("test.busy_on_stop", run_once, window=0.01, pace=0.05, max_busy_retries=1000)
    application = create_app()
    async with LifespanManager(application):
        batch.poke()
        started = time.perf_counter()
    assert time.perf_counter() - started < 2  # the minutely job gets the rest
    for task in batch._tasks.values():
        task.cancel()
