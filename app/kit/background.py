"""Batch work that follows commits, done off the request path by one task per process.

A request (or job) that writes work of this kind calls ``batch.after_commit_of(session)``: the batch is poked
once that transaction commits (``app.db.after_commit``), never if it rolls back. The task waits ``window`` seconds so that a burst of commits is handled in one go,
then runs ``run_once(session)`` in a transaction of its own and commits it. ``run_once`` takes its own
transaction-scoped lock without waiting and returns None when another process holds it; the task then tries
again a little later (that process may have looked before these commits), up to ``max_busy_retries`` times.
Whatever is still left is picked up by the batch's minutely job and by readers that need it done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger("app.background")

RunOnce = Callable[[AsyncSession], Awaitable[int | None]]
_batches: list[PostCommitBatch] = []


class PostCommitBatch:
    def __init__(
        self, name: str, run_once: RunOnce, *, window: float = 0.02, max_busy_retries: int = 50
    ) -> None:
        self.name = name
        self.run_once = run_once
        self.window = window
        self.max_busy_retries = max_busy_retries
        # one task per event loop (a web process that also runs jobs has two loops)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._wanted: dict[int, bool] = {}
        _batches.append(self)

    def poke(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop: the minutely job does it
            return
        key = id(loop)
        self._wanted[key] = True
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = loop.create_task(self._run(key))

    def after_commit_of(self, session: AsyncSession) -> None:
        """Poke this batch once ``session``'s transaction has committed."""
        from app.db import after_commit

        after_commit(session, self.name, self._poke_hook)

    async def _poke_hook(self, session: AsyncSession) -> None:
        self.poke()

    async def _run(self, key: int) -> None:
        from app.db import get_database

        busy = 0
        while self._wanted.get(key):
            self._wanted[key] = False
            await asyncio.sleep(self.window)
            try:
                async with get_database().sessionmaker() as session:
                    done = await self.run_once(session)
                    await session.commit()
            except Exception as exc:  # PostgreSQL away: the next poke or the minutely job does it
                log.warning("post_commit_batch_failed", batch=self.name, error=type(exc).__name__)
                return
            if done is None:  # another process holds the lock
                busy += 1
                if busy <= self.max_busy_retries:
                    self._wanted[key] = True
            else:
                busy = 0

    async def drain(self) -> None:
        """Wait until this loop's batch has nothing left to do (CLI commands before their loop ends; tests
        before they block their loop, e.g. to run queued jobs synchronously)."""
        key = id(asyncio.get_running_loop())
        while (task := self._tasks.get(key)) is not None and not task.done():
            await asyncio.shield(task)


async def drain_all() -> None:
    for batch in _batches:
        await batch.drain()
