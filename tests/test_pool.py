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
