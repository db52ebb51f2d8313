"""The pool pings a connection only after it has sat idle; a dead one is then replaced before use, and one
that dies while in constant use fails one request and is replaced for the next."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app import db as db_module
from app.db import Database, create_engine


async def _backend_pid(engine) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _kill(database: Database, pid: int) -> None:
    async with database.engine.connect() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


async def test_an_idle_dead_connection_is_replaced_before_use(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(database.url, pool_size=1, max_overflow=0)
    try:
        first = await _backend_pid(engine)
        await _kill(database, first)
        monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)  # it has been idle "long enough"
        second = await _backend_pid(engine)  # no error: the ping found it dead and the pool reconnected
        assert second != first
    finally:
        await engine.dispose()


async def test_a_connection_in_constant_use_is_not_pinged_and_fails_once_if_it_died(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    engine = create_engine(database.url, pool_size=1, max_overflow=0)
    statements: list[str] = []
    try:
        first = await _backend_pid(engine)
        from sqlalchemy import event

        event.listen(
            engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(str(a[2]).strip())
        )
        assert await _backend_pid(engine) == first
        assert statements == ["SELECT pg_backend_pid()"]  # no ping before it
        await _kill(database, first)
        with pytest.raises(DBAPIError) as failed:
            await _backend_pid(engine)
        assert failed.value.connection_invalidated  # the error handler turns this into a 503
        assert await _backend_pid(engine) != first
    finally:
        await engine.dispose()


async def test_a_request_that_finds_every_connection_busy_waits_then_is_told_unavailable(
    database: Database,
) -> None:
    """The pool has a fixed size: no connection above it is opened, a caller waits for one to come back, and
    after the pool's timeout gets an error that the error handler answers with a 503."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from app.config import get_settings
    from app.errors import is_unavailable

    assert get_settings().DATABASE_MAX_OVERFLOW == 0
    engine = create_engine(database.url, pool_size=1, pool_timeout=0.2)
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            with pytest.raises(PoolTimeout) as waited:
                await _backend_pid(engine)
            assert is_unavailable(waited.value)
        assert await _backend_pid(engine) > 0  # returned: the next caller gets it
        assert engine.sync_engine.pool.checkedout() == 0 and engine.sync_engine.pool.overflow() <= 0
    finally:
        await engine.dispose()


async def test_a_request_that_waits_too_long_for_a_connection_is_answered_503(database: Database) -> None:
    """Through the error handlers: the pool's timeout is the service being busy, told in Chinese, not a 500."""
    import httpx
    from fastapi import FastAPI

    from app.errors import install_error_handlers

    engine = create_engine(database.url, pool_size=1, pool_timeout=0.2)
    probe = FastAPI()
    install_error_handlers(probe)

    @probe.get("/busy")
    async def busy() -> dict[str, int]:
        return {"pid": await _backend_pid(engine)}

    transport = httpx.ASGITransport(app=probe, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            async with engine.connect() as held:
                await held.execute(text("SELECT 1"))
                res = await c.get("/busy")
            assert res.status_code == 503, res.text
            assert res.json()["error"] == "ServiceUnavailable" and "稍后再试" in res.json()["message"]
            assert (await c.get("/busy")).status_code == 200  # the connection is back: served again
    finally:
        await engine.dispose()


class _Refused(Exception):
    pass


async def test_a_failed_unit_of_work_keeps_nothing_and_gives_its_connection_back_outside_a_transaction(
    database: Database,
) -> None:
    """The production path (a session of its own, not joined to a test's transaction): what a request wrote
    before failing is gone, its connection is back in the pool idle (not idle in a transaction), and the next
    request on that connection starts clean."""
    from app.db import make_sessionmaker, unit_of_work

    engine = create_engine(database.url, pool_size=1, max_overflow=0)
    maker = make_sessionmaker(engine)
    table = "uow_failure_probe"
    try:
        async with database.engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE {table} (n int)"))
        with pytest.raises(_Refused):
            async with unit_of_work(maker) as s:
                await s.execute(text(f"INSERT INTO {table} VALUES (1)"))
                pid = int((await s.execute(text("SELECT pg_backend_pid()"))).scalar_one())
                raise _Refused
        async with database.engine.connect() as conn:
            state = (
                await conn.execute(text("SELECT state FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid})
            ).scalar_one()
            kept = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
        assert state == "idle"
        assert kept == 0
        async with unit_of_work(maker) as s:  # the same pooled connection, in a transaction of its own
            again = int((await s.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            seen = (await s.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            await s.execute(text(f"INSERT INTO {table} VALUES (2)"))
        assert again == pid and seen == 0
        async with database.engine.connect() as conn:
            rows = (await conn.execute(text(f"SELECT n FROM {table}"))).scalars().all()
        assert rows == [2]
    finally:
        async with database.engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await engine.dispose()


async def test_a_failed_unit_of_work_joined_to_a_callers_transaction_rolls_back_to_its_savepoint(
    session_maker,  # type: ignore[no-untyped-def]
    connection,  # type: ignore[no-untyped-def]
) -> None:
    """Tests join requests to one outer transaction: a failed one is undone there too, and what came before it
    stays."""
    from app.db import unit_of_work

    await connection.execute(text("CREATE TEMPORARY TABLE uow_joined_probe (n int)"))
    async with unit_of_work(session_maker) as s:
        await s.execute(text("INSERT INTO uow_joined_probe VALUES (1)"))
    with pytest.raises(_Refused):
        async with unit_of_work(session_maker) as s:
            await s.execute(text("INSERT INTO uow_joined_probe VALUES (2)"))
            raise _Refused
    rows = (await connection.execute(text("SELECT n FROM uow_joined_probe ORDER BY n"))).scalars().all()
    assert rows == [1]
