"""Transaction-scoped PostgreSQL advisory locks, named by a string (``"ledger:chain"``): released by the commit
or the rollback of the transaction that took them, so a crashed holder never leaves one behind."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession


async def xact_lock(session: AsyncSession, name: str, *, wait: bool = True) -> bool:
    """Take the lock called ``name`` until the end of the transaction. ``wait=False`` does not queue: False at
    once when another transaction holds it."""
    key = func.hashtextextended(name, 0)
    if wait:
        await session.execute(select(func.pg_advisory_xact_lock(key)))
        return True
    return bool(await session.scalar(select(func.pg_try_advisory_xact_lock(key))))
