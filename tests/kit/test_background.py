"""Work that follows commits: one run soon after a lone commit, and few runs while commits keep coming."""

from __future__ import annotations

import asyncio
import itertools
import time

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database
from app.kit.background import PostCommitBatch


async def test_a_lone_commit_is_followed_at_once_and_a_stream_of_commits_is_paced(database: Database) -> None:
    runs: list[float] = []

    async def run_once(session: AsyncSession) -> int:
        runs.append(time.perf_counter())
        return 1

    batch = PostCommitBatch("test.paced", run_once, window=0.01, pace=0.1)
    started = time.perf_counter()
    batch.poke()
    await batch.drain()
    assert len(runs) == 1 and runs[0] - started < 0.08  # a lone commit: done after the short window

    runs.clear()
    started = time.perf_counter()
    while time.perf_counter() - started < 0.5:  # a commit every 5 ms for half a second
        batch.poke()
        await asyncio.sleep(0.005)
    await batch.drain()
    # about one run per pace, not one per commit (about a hundred)
    assert 3 <= len(runs) <= 8, len(runs)
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert min(gaps) >= 0.09


async def test_a_busy_lock_elsewhere_is_retried_at_the_pace_and_given_up(database: Database) -> None:
    tries: list[float] = []

    async def run_once(session: AsyncSession) -> int | None:
        tries.append(time.perf_counter())
        return None  # another process holds the lock

    batch = PostCommitBatch("test.busy", run_once, window=0.01, pace=0.02, max_busy_retries=3)
    batch.poke()
    await batch.drain()
    assert len(tries) == 4  # the first try and three retries, then the minutely job's turn
    assert min(b - a for a, b in itertools.pairwise(tries)) >= 0.015
