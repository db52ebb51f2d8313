"""Batch work done by one task per process: work that follows commits (``PostCommitBatch``), and group commit
for requests that wait for their own outcome (``RequestBatch``).

``PostCommitBatch``: a request (or job) that writes work of this kind calls ``batch.after_commit_of(session)``:
the batch is poked once that transaction commits (``app.db.after_commit``), never if it rolls back. The task
waits ``window`` seconds so that a burst of commits is handled in one go, then runs ``run_once(session)`` in
a transaction of its own and commits it. While commits keep coming, it runs at most once per ``pace`` seconds:
under a storm each run takes everything committed meanwhile, instead of one short transaction per commit.
``run_once`` takes its own transaction-scoped lock without waiting and returns None when another process
holds it; the task then tries again ``pace`` later (that process may have looked before these commits), up to
``max_busy_retries`` times. Whatever is still left is picked up by the batch's minutely job and by readers
that need it done.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from app.db import SessionFactory

log = structlog.get_logger("app.background")

RunOnce = Callable[[AsyncSession], Awaitable[int | None]]
_batches: list[PostCommitBatch] = []


class PostCommitBatch:
    def __init__(
        self,
        name: str,
        run_once: RunOnce,
        *,
        window: float = 0.02,
        pace: float = 1.0,
        max_busy_retries: int = 50,
    ) -> None:
        self.name = name
        self.run_once = run_once
        self.window = window
        self.pace = pace
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
            # a context of its own: its log lines are not the request's that happened to poke it first
            self._tasks[key] = loop.create_task(self._run(key), context=contextvars.Context())

    def after_commit_of(self, session: AsyncSession) -> None:
        """Poke this batch once ``session``'s transaction has committed."""
        from app.db import after_commit

        after_commit(session, self.name, self._poke_hook)

    async def _poke_hook(self, session: AsyncSession) -> None:
        self.poke()

    async def _run(self, key: int) -> None:
        from app.db import get_database

        busy = 0
        wait = self.window
        while self._wanted.get(key):
            self._wanted[key] = False
            await asyncio.sleep(wait)
            wait = self.pace  # commits kept coming (or another process was at it): gather more per run
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


Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Again(Generic[Item]):
    """A batch's result for an item it left alone (nothing of it was written): ``item`` goes into the next
    batch, and its caller goes on waiting."""

    item: Item


RunBatch = Callable[[AsyncSession, list[Item]], Awaitable[list[Result | Exception | Again[Item]]]]


class RequestBatch(Generic[Item, Result]):
    """Group commit for requests that each wait for their own outcome.

    Concurrent callers in one process hand over an item and wait. One task per event loop and session factory
    takes everything waiting (up to ``max_batch``), runs ``run(session, items)`` as one transaction, commits,
    and answers each caller with its result, or raises its exception (an ``Exception`` in the result list is
    that item's own failure: nothing of it was written). A lone item runs at once, and whatever arrives while
    a batch runs forms the next one, with one exception (``linger``): right after a batch of n is answered,
    with m items waiting, the next batch waits, at most ``linger`` seconds, until three quarters of n + m are
    waiting. Under a steady load the callers a batch answers come back with their next items a moment later;
    without the wait, the few that queued meanwhile would go alone and the rest after them, and a process's
    callers would settle into two batches per round (measured in a notify storm: batches of 6 and 30 in
    turn, the small one costing nearly as much as the large; with a wait for three quarters of n alone, 15
    and 14). A lone item after a quiet spell does not wait. When a batch fails as a whole (an error, or its
    commit), each of its items is run again alone in a transaction of its own, so one bad item fails only its
    own caller; a failure ``retry_whole`` names first runs the whole batch again, up to ``WHOLE_RETRIES``
    times. An item answered ``Again`` goes, as the item it names, to the front of the next batch (``run``
    must not answer ``Again`` forever). A caller that goes away does not stop its item: it is committed or not
    like the others."""

    def __init__(
        self,
        name: str,
        run: RunBatch[Item, Result],
        *,
        max_batch: int = 200,
        shared_failure: Callable[[Exception], bool] = lambda exc: False,
        linger: float = 0.0,
        retry_whole: Callable[[Exception], bool] = lambda exc: False,
    ) -> None:
        self.name = name
        self.run = run
        self.max_batch = max_batch
        # failures that would fail every item alone as well (the database is away): answered to all at once
        self.shared_failure = shared_failure
        self.linger = linger
        # failures that the batch run once more as a whole would likely not meet (a row another process's commit
        # changed meanwhile, which the batch's statements then read): run again whole before it is split
        self.retry_whole = retry_whole
        self._queues: dict[tuple[int, SessionFactory], list[tuple[Item, asyncio.Future[Result]]]] = {}
        self._tasks: dict[tuple[int, SessionFactory], asyncio.Task[None]] = {}
        # per key: how many callers its last round had (the batch's and those waiting when it was answered)
        # and when (loop time); kept after the key's task ends, since the callers come back after it
        self._last: dict[tuple[int, SessionFactory], tuple[int, float]] = {}
        # per key, while its task lingers: how many waiting items end the wait, and the wait's future
        self._gathering: dict[tuple[int, SessionFactory], tuple[int, asyncio.Future[None]]] = {}

    async def submit(self, open_session: SessionFactory, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        key = (id(loop), open_session)
        future: asyncio.Future[Result] = loop.create_future()
        queue = self._queues.setdefault(key, [])
        queue.append((item, future))
        gathering = self._gathering.get(key)
        if gathering is not None and len(queue) >= gathering[0]:
            _settle(gathering[1])
        task = self._tasks.get(key)
        if task is None or task.done():
            # a context of its own: a batch serves many requests, and its log lines are none of theirs
            self._tasks[key] = loop.create_task(self._work(key, open_session), context=contextvars.Context())
        return await future

    async def _work(self, key: tuple[int, SessionFactory], open_session: SessionFactory) -> None:
        queue = self._queues[key]
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while queue:
                await self._gather(key, queue)
                batch = queue[: self.max_batch]
                del queue[: self.max_batch]
                queue[:0] = await self._answer_batch(open_session, batch)
                if len(self._last) > 64:  # keys of event loops long gone (tests)
                    self._last.clear()
                # the callers of this round: those just answered, who come back, and those already waiting
                self._last[key] = (len(batch) + len(queue), asyncio.get_running_loop().time())
                batch = []
        finally:  # cancelled (shutdown): nobody is left waiting forever, in flight or queued
            for _, future in [*batch, *queue]:
                _answer(future, RuntimeError(f"{self.name} stopped"))
            queue.clear()
            self._queues.pop(key, None)
            self._tasks.pop(key, None)

    async def _gather(
        self, key: tuple[int, SessionFactory], queue: list[tuple[Item, asyncio.Future[Result]]]
    ) -> None:
        """Right after a batch, wait (at most ``linger``) until three quarters of its round's callers are back."""
        if not self.linger or key not in self._last:
            return
        size, answered = self._last[key]
        wanted = min(self.max_batch, size * 3 // 4)
        loop = asyncio.get_running_loop()
        if len(queue) >= wanted or loop.time() - answered > RECENT_LINGERS * self.linger:
            return
        ready: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(self.linger, _settle, ready)
        self._gathering[key] = (wanted, ready)
        try:
            await ready
        finally:
            timer.cancel()
            self._gathering.pop(key, None)

    async def _answer_batch(
        self, open_session: SessionFactory, batch: list[tuple[Item, asyncio.Future[Result]]]
    ) -> list[tuple[Item, asyncio.Future[Result]]]:
        """Run ``batch`` and answer its callers; returns the items to run again (``Again``), in order."""
        items = [item for item, _ in batch]
        try:
            results = await self._attempt(open_session, items)
        except Exception as exc:
            failure = exc
            for _ in range(WHOLE_RETRIES):
                if len(batch) == 1 or self.shared_failure(failure) or not self.retry_whole(failure):
                    break
                log.info(
                    "request_batch_retry", batch=self.name, size=len(batch), error=type(failure).__name__
                )
                try:
                    return self._answer_results(batch, await self._attempt(open_session, items))
                except Exception as again:
                    failure = again
            if len(batch) == 1 or self.shared_failure(failure):
                for _, future in batch:
                    _answer(future, failure)
                return []
            log.warning("request_batch_split", batch=self.name, size=len(batch), error=type(failure).__name__)
            results = []
            for item, _ in batch:
                try:
                    (result,) = await self._attempt(open_session, [item])
                except Exception as one:
                    result = one
                results.append(result)
        return self._answer_results(batch, results)

    def _answer_results(
        self,
        batch: list[tuple[Item, asyncio.Future[Result]]],
        results: list[Result | Exception | Again[Item]],
    ) -> list[tuple[Item, asyncio.Future[Result]]]:
        again: list[tuple[Item, asyncio.Future[Result]]] = []
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, Again):
                again.append((result.item, future))
            else:
                _answer(future, result)
        return again

    async def _attempt(
        self, open_session: SessionFactory, items: list[Item]
    ) -> list[Result | Exception | Again[Item]]:
        async with open_session() as session:
            results = await self.run(session, items)
        if len(results) != len(items):
            raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
        return results


# how many times a failure ``retry_whole`` names runs a batch again as a whole before it is split
WHOLE_RETRIES = 3

# how long after a batch (in lingers) the next one still waits for the callers it answered to come back
RECENT_LINGERS = 10


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _answer(future: asyncio.Future[Result], result: Result | Exception) -> None:
    if future.done():  # its caller went away
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
