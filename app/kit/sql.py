"""SQL constructs the hot paths need that SQLAlchemy does not cache by itself: ``insert_or_skip`` and ``sql_text``.

SQLAlchemy 2.0 never caches the compiled form of its PostgreSQL ``insert()`` (the dialect's ``Insert`` sets
``inherit_cache = False``), so a statement written with ``sqlalchemy.dialects.postgresql.insert`` is compiled
again on every execution: about a millisecond of CPU for an ORM insert, several times per booking request.

``insert_or_skip`` is the standard, cached ``Insert`` rendering ``ON CONFLICT DO NOTHING`` with no conflict
target: a row that would break any unique constraint of the table is skipped, and ``RETURNING`` then returns
nothing for it. Use it where every unique constraint of the table is one whose conflict means "already there"
(an idempotency key, a message id, an inbox entry). The clause is fixed for the class, and the class is part
of SQLAlchemy's cache key, so a plain ``insert()`` of the same shape never shares its compiled form.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Insert, TextClause, text
from sqlalchemy.dialects.postgresql.dml import OnConflictDoNothing


class _SkipAnyConflict(OnConflictDoNothing):
    """``ON CONFLICT DO NOTHING`` without a target: nothing about it varies, so the class is its cache key."""

    _traverse_internals = []  # noqa: RUF012  (no state: the class alone is the cache key)

    def __init__(self) -> None:
        super().__init__()


class InsertOrSkip(Insert):
    inherit_cache = True
    _post_values_clause = _SkipAnyConflict()


def insert_or_skip(table: Any) -> InsertOrSkip:
    """``INSERT INTO table … ON CONFLICT DO NOTHING``, compiled once and cached like any other statement."""
    return InsertOrSkip(table)


@functools.lru_cache(maxsize=512)
def sql_text(statement: str) -> TextClause:
    """``text(statement)``, built once per distinct statement. ``text()`` parses the bind parameters out of the
    string with a regular expression every time it is called, which costs more Python than sending a short
    statement. A ``TextClause`` is immutable (``bindparams()`` returns a copy), so one can serve every call."""
    return text(statement)
