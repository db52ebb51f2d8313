"""Transaction-scoped PostgreSQL advisory locks, named by a string (``"ledger:chain"``): released by the commit
or the rollback of the transaction that took them, so a crashed holder never leaves one behind."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.sql import sql_text


async def xact_lock(session: AsyncSession, name: str, *, wait: bool = True) -> bool:
    """Take the lock called ``name`` until the end of the transaction. ``wait=False`` does not queue: False at
    once when another transaction holds it."""
    key = func.hashtextextended(name, 0)
    if wait:
        await session.execute(select(func.pg_advisory_xact_lock(key)))
        return True
    return bool(await session.scalar(select(func.pg_try_advisory_xact_lock(key))))


async def xact_locks(session: AsyncSession, names: Sequence[str]) -> None:
    """Take the locks called ``names`` until the end of the transaction, in one statement and always in the
    same order (by name), so two transactions taking overlapping sets cannot deadlock on them."""
    if not names:
        return
    await session.execute(
        sql_text(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(n, 0))) "
            "FROM (SELECT DISTINCT n FROM unnest(CAST(:names AS text[])) AS n ORDER BY n) AS ordered"
        ),
        {"names": list(names)},
    )
