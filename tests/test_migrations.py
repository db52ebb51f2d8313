from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.db import Database
from app.models import Base
from tests.fixtures.database import alembic_config


def test_one_head(migrated: str) -> None:
    heads = ScriptDirectory.from_config(alembic_config(migrated)).get_heads()
    assert len(heads) == 1, f"migration chain has several heads: {heads}"


async def test_models_match_migrations(database: Database) -> None:
    def diff(sync_conn: Any) -> list[Any]:
        ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))

    async with database.engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == [], f"models and migrations disagree: {changes}"
