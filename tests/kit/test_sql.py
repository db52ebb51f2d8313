"""``insert_or_skip``: ON CONFLICT DO NOTHING that SQLAlchemy caches, and never lends its form to a plain insert."""

from __future__ import annotations

import enum
import uuid

import pytest
from sqlalchemy import (
    ARRAY,
    Boolean,
    Enum,
    Integer,
    Numeric,
    String,
    Text,
    and_,
    bindparam,
    event,
    func,
    insert,
    inspect,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine.interfaces import CacheStats
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database
from app.kit.sql import attach, execute_core, insert_or_skip, load_entities, sql_text
from app.models import Canteen, CanteenSlot, IdempotencyKey
from tests.fixtures.factories import create_canteen, create_canteen_slot


def _key(key: str) -> dict[str, object]:
    return {"id": uuid.uuid4(), "scope": "test", "owner": "sql", "key": key, "request_hash": "h"}


async def test_a_conflicting_row_is_skipped_and_the_compiled_form_is_reused(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    hits: list[CacheStats] = []

    def seen(conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if "idempotency_keys" in statement:
            hits.append(context.cache_hit)

    engine = session.bind.engine.sync_engine  # type: ignore[union-attr]
    # a listener keeps the engine's statements off the driver (``app.kit.sql``) even once removed: not after
    monkeypatch.setattr(engine, "_has_events", engine._has_events)
    event.listen(engine, "after_cursor_execute", seen)
    try:
        returned = []
        for values in (_key("k-1"), _key("k-1"), _key("k-2")):
            stmt = insert_or_skip(IdempotencyKey).values(**values).returning(IdempotencyKey.key)
            returned.append((await session.execute(stmt)).scalar_one_or_none())
    finally:
        event.remove(engine, "after_cursor_execute", seen)
    assert returned == ["k-1", None, "k-2"]  # the second k-1 broke the unique key: skipped, nothing returned
    assert hits[1:] == [CacheStats.CACHE_HIT, CacheStats.CACHE_HIT]
    count = select(func.count()).select_from(IdempotencyKey).where(IdempotencyKey.owner == "sql")
    assert await session.scalar(count) == 2


async def test_a_plain_insert_of_the_same_shape_still_fails_on_a_conflict(session: AsyncSession) -> None:
    """The ON CONFLICT clause belongs to the class, which is part of the cache key: a plain insert compiled
    after it must not pick up its compiled form and silently skip a duplicate."""
    await session.execute(insert_or_skip(IdempotencyKey).values(**_key("k-3")).returning(IdempotencyKey.key))
    with pytest.raises(IntegrityError):
        async with session.begin_nested():
            await session.execute(insert(IdempotencyKey).values(**_key("k-3")).returning(IdempotencyKey.key))
    with pytest.raises(IntegrityError):
        async with session.begin_nested():
            await session.execute(insert(IdempotencyKey), [_key("k-3")])


async def test_executemany_skips_the_rows_that_conflict(session: AsyncSession) -> None:
    await session.execute(insert_or_skip(IdempotencyKey), [_key("m-1"), _key("m-2")])
    await session.execute(insert_or_skip(IdempotencyKey), [_key("m-2"), _key("m-3")])
    keys = select(IdempotencyKey.key).where(IdempotencyKey.owner == "sql").order_by(IdempotencyKey.key)
    assert list((await session.execute(keys)).scalars()) == ["m-1", "m-2", "m-3"]


# ---------------------------------------------------------------- execute_core

_TXID = text("SELECT txid_current()")


async def test_execute_core_runs_in_the_sessions_transaction(session: AsyncSession) -> None:
    """What it writes is the session's: visible to the session's next query, gone with its rollback."""
    inserted = await execute_core(session, insert_or_skip(IdempotencyKey.__table__), _key("core-1"))
    assert inserted.rowcount == 1
    same = select(IdempotencyKey.key).where(IdempotencyKey.owner == "sql")
    assert list((await session.execute(same)).scalars()) == ["core-1"]
    assert (await execute_core(session, _TXID)).scalar() == (await session.execute(_TXID)).scalar()
    await session.rollback()
    assert list((await session.execute(same)).scalars()) == []


async def test_execute_core_follows_the_session_into_its_next_transaction(committed: Database) -> None:
    """The connection it keeps belongs to one transaction: after a commit or a rollback the next call runs in
    the session's new transaction, not in the old one (nor outside any)."""
    async with committed.sessionmaker() as s:
        first = (await execute_core(s, _TXID)).scalar()
        assert (await execute_core(s, _TXID)).scalar() == first  # kept for the rest of the transaction
        await execute_core(s, insert_or_skip(IdempotencyKey.__table__), _key("core-2"))
        await s.commit()
        second = (await execute_core(s, _TXID)).scalar()
        assert second != first
        assert (await s.execute(_TXID)).scalar() == second
        await execute_core(s, insert_or_skip(IdempotencyKey.__table__), _key("core-3"))
        await s.rollback()
        third = (await execute_core(s, _TXID)).scalar()
        assert third not in (first, second)
        await s.rollback()
    async with committed.sessionmaker() as s:
        keys = select(IdempotencyKey.key).where(IdempotencyKey.owner == "sql")
        assert list((await s.execute(keys)).scalars()) == ["core-2"]  # committed; core-3 rolled back


_BACKEND = text("SELECT pg_backend_pid()")
_STATE = text("SELECT state FROM pg_stat_activity WHERE pid = :pid")


async def _state(database: Database, pid: int) -> str:
    async with database.engine.connect() as watcher:
        return str((await watcher.execute(_STATE, {"pid": pid})).scalar_one())


async def test_a_plain_read_first_begins_no_transaction(committed: Database) -> None:
    """A plain read as its transaction's first statement runs on its own: the connection stays idle, not idle
    in a transaction. The transaction begins with the next statement, which it then keeps: a plain read after
    it runs inside, and sees what the transaction wrote; a rollback takes the write away."""
    keys = select(IdempotencyKey.key).where(IdempotencyKey.owner == "sql")
    async with committed.sessionmaker() as s:
        pid = int((await execute_core(s, _BACKEND, plain_read=True)).scalar_one())
        assert await _state(committed, pid) == "idle"
        assert list((await execute_core(s, keys, plain_read=True)).scalars()) == []
        assert await _state(committed, pid) == "idle"
        await execute_core(s, insert_or_skip(IdempotencyKey.__table__), _key("plain-1"))
        assert await _state(committed, pid) == "idle in transaction"
        assert int((await execute_core(s, _BACKEND, plain_read=True)).scalar_one()) == pid
        assert list((await execute_core(s, keys, plain_read=True)).scalars()) == ["plain-1"]
        await s.rollback()
        assert await _state(committed, pid) == "idle"
    async with committed.sessionmaker() as s:
        assert list((await s.execute(keys)).scalars()) == []
        await execute_core(s, _BACKEND, plain_read=True)
        await s.commit()  # nothing begun: the commit sends nothing and fails nothing


async def test_a_listener_on_the_engine_sees_every_statement(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While anything listens to the engine's statements (instrumentation, a test counting them), statements
    run through SQLAlchemy, so it sees them all; with nothing listening they run on the driver."""
    from app.kit.sql import _driver_plan

    engine = committed.engine.sync_engine
    monkeypatch.setattr(engine, "_has_events", engine._has_events)
    seen: list[str] = []

    def count(*args: object) -> None:
        seen.append(str(args[2]))

    async with committed.sessionmaker() as s:
        assert _driver_plan(await s.connection(), _BACKEND, None) is not None
    event.listen(engine, "before_cursor_execute", count)
    try:
        async with committed.sessionmaker() as s:
            await execute_core(s, _BACKEND, plain_read=True)
            await execute_core(s, insert_or_skip(IdempotencyKey.__table__), _key("listened"))
            await s.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(seen) == 2 and "pg_backend_pid" in seen[0] and "idempotency_keys" in seen[1], seen


async def test_a_plain_read_begins_the_transaction_at_another_isolation_level(committed: Database) -> None:
    """At REPEATABLE READ the first statement fixes the transaction's snapshot, so a plain read begins it as any
    statement does: a row committed meanwhile by another transaction stays unseen."""
    from app.db import create_engine, make_sessionmaker

    engine = create_engine(committed.url, isolation_level="REPEATABLE READ", pool_size=1, max_overflow=0)
    keys = select(IdempotencyKey.key).where(IdempotencyKey.owner == "sql")
    try:
        async with make_sessionmaker(engine)() as s:
            pid = int((await execute_core(s, _BACKEND, plain_read=True)).scalar_one())
            assert await _state(committed, pid) == "idle in transaction"
            assert list((await execute_core(s, keys, plain_read=True)).scalars()) == []
            async with committed.sessionmaker() as other:
                await execute_core(other, insert_or_skip(IdempotencyKey.__table__), _key("rr-1"))
                await other.commit()
            assert list((await execute_core(s, keys, plain_read=True)).scalars()) == []
    finally:
        await engine.dispose()


async def test_execute_core_runs_inside_a_savepoint(committed: Database) -> None:
    """Inside ``begin_nested`` it writes in the savepoint: a rollback to it takes the row away and keeps what
    came before, also when it is the savepoint's first statement (which is what emits the SAVEPOINT)."""
    keys = select(IdempotencyKey.key).where(IdempotencyKey.owner == "sql").order_by(IdempotencyKey.key)
    async with committed.sessionmaker() as s:
        await execute_core(s, insert_or_skip(IdempotencyKey.__table__), _key("core-sp-1"))
        with pytest.raises(RuntimeError):
            async with s.begin_nested():
                await execute_core(s, insert_or_skip(IdempotencyKey.__table__), _key("core-sp-2"))
                raise RuntimeError("undo")
        async with s.begin_nested():  # a savepoint that is released keeps its row
            await execute_core(s, insert_or_skip(IdempotencyKey.__table__), _key("core-sp-3"))
        with pytest.raises(RuntimeError):
            async with s.begin_nested():
                async with s.begin_nested():
                    await execute_core(s, insert_or_skip(IdempotencyKey.__table__), _key("core-sp-4"))
                raise RuntimeError("undo the outer one")
        await execute_core(s, insert_or_skip(IdempotencyKey.__table__), _key("core-sp-5"))
        assert list((await execute_core(s, keys)).scalars()) == ["core-sp-1", "core-sp-3", "core-sp-5"]
        await s.commit()
    async with committed.sessionmaker() as s:
        assert list((await s.execute(keys)).scalars()) == ["core-sp-1", "core-sp-3", "core-sp-5"]


async def test_execute_core_flushes_only_where_the_session_autoflushes(committed: Database) -> None:
    count = select(func.count()).select_from(IdempotencyKey).where(IdempotencyKey.owner == "sql")
    for autoflush, seen in ((False, 0), (True, 1)):
        async with committed.sessionmaker() as s:
            s.sync_session.autoflush = autoflush
            s.add(IdempotencyKey(**_key(f"core-flush-{autoflush}")))
            assert (await execute_core(s, count)).scalar() == seen
            await s.rollback()


async def test_attach_makes_a_row_written_by_core_an_object_of_the_session(session: AsyncSession) -> None:
    """As if loaded: the session's identity map holds it (no second object, no query), the server's defaults
    came back with it, and a change to it is flushed as an UPDATE."""
    table = IdempotencyKey.__table__
    written = await execute_core(session, insert(table).returning(*table.c), _key("attach-1"))
    key = attach(session, IdempotencyKey, written.one())
    assert key.created_at is not None
    assert not session.new and not session.dirty
    assert await session.get(IdempotencyKey, key.id) is key
    resource = uuid.uuid4()
    key.resource_id = resource
    await session.flush()
    stored = select(table.c.resource_id).where(table.c.id == key.id)
    assert (await execute_core(session, stored)).scalar() == resource


# ---------------------------------------------------------------- execute_core on the driver's connection

_ROWS = sql_text(
    "SELECT k.key, k.resource_id, k.created_at FROM idempotency_keys AS k "
    "WHERE k.owner = 'sql' AND k.key LIKE :prefix ORDER BY k.key"
)
_NONE = sql_text("SELECT k.key, k.id FROM idempotency_keys AS k WHERE k.owner = :owner")
_TOUCH = sql_text("UPDATE idempotency_keys SET request_hash = :h WHERE owner = 'sql' AND key LIKE :prefix")


def _through_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.kit.sql

    monkeypatch.setattr(app.kit.sql, "_driver_plan", lambda *args: None)


async def test_the_hot_statements_run_on_the_driver() -> None:
    """The statements the booking, the session look-up and the payment batch run most often need nothing of
    SQLAlchemy at execution but their parameters' conversions; one that converts a column it returns (JSON)
    or computes a default in Python does."""
    from sqlalchemy.dialects.postgresql.asyncpg import dialect

    from app.auth.repository import _LIVE_SESSION
    from app.bookings.repository import _BOOKINGS_WITH_LINES, _CLAIM_UNLESS_FULL, _MEAL_SETTINGS, _NOTIFY
    from app.donations.repository import _MARK_PAID
    from app.kit.sql import _DriverPlan
    from app.ledger.repository import _INSERT_ENTRIES
    from app.payments.repository import _CLAIM
    from app.worker import outbox_insert

    hot = (
        _LIVE_SESSION,
        _CLAIM_UNLESS_FULL,
        _MARK_PAID,
        _INSERT_ENTRIES,
        _CLAIM,
        _NOTIFY,
        _BOOKINGS_WITH_LINES,
        outbox_insert(),
        _ROWS,
    )
    for statement in hot:
        assert _DriverPlan.of(statement, dialect(), ()) is not None, statement
    meal = _DriverPlan.of(_MEAL_SETTINGS, dialect(), ())  # its entities are made on the driver too
    assert meal is not None and meal.entities is not None
    items = select(IdempotencyKey).where(IdempotencyKey.key.in_(bindparam("keys", expanding=True)))
    assert _DriverPlan.of(items, dialect(), ()) is None  # an IN list is written out at each execution
    from app.donations.repository import _LOCK_BY_OUT_TRADE_NOS

    assert _DriverPlan.of(_LOCK_BY_OUT_TRADE_NOS, dialect(), ()) is not None  # columns, FOR UPDATE OF
    assert _DriverPlan.of(_ROWS.execution_options(stream_results=True), dialect(), ()) is None
    from app.models import Booking

    booking = insert(Booking.__table__).values(id=uuid.uuid4())
    assert _DriverPlan.of(booking, dialect(), ()) is None  # its status has a default computed in Python


async def test_the_driver_answers_as_the_connection_does(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same rows, same column names, same types, same row counts, with rows and without."""
    for n in range(3):
        await execute_core(session, insert_or_skip(IdempotencyKey.__table__), _key(f"same-{n}"))
    answers = []
    for way in ("driver", "connection"):
        if way == "connection":
            _through_connection(monkeypatch)
        rows = await execute_core(session, _ROWS, {"prefix": "same-%"})
        keys = list(rows.keys())
        listed = [tuple(row) for row in rows]
        empty = await execute_core(session, _NONE, {"owner": "nobody"})
        touched = await execute_core(session, _TOUCH, {"h": way, "prefix": "same-%"})
        answers.append((keys, listed, list(empty.keys()), empty.all(), touched.rowcount))  # type: ignore[attr-defined]
    assert answers[0] == answers[1]
    keys, listed, empty_keys, empty_rows, touched = answers[0]
    assert keys == ["key", "resource_id", "created_at"] and empty_keys == ["key", "id"]
    assert [row[0] for row in listed] == ["same-0", "same-1", "same-2"]
    assert listed[0][2].tzinfo is not None and empty_rows == [] and touched == 3


async def test_a_database_error_on_the_driver_is_sqlalchemys(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unique key broken on the driver comes out as the connection would raise it: SQLAlchemy's
    IntegrityError around the adapter's error, with the SQLSTATE and asyncpg's error as its cause, which is
    what the refusals and the batches read. The session then rolls back and goes on."""
    import asyncpg

    plain = sql_text(
        "INSERT INTO idempotency_keys (id, scope, owner, key, request_hash) "
        "VALUES (:id, :scope, :owner, :key, :request_hash)"
    )
    raised = []
    for way in ("driver", "connection"):
        if way == "connection":
            _through_connection(monkeypatch)
        await execute_core(session, plain, _key("twice"))
        with pytest.raises(IntegrityError) as caught:
            await execute_core(session, plain, _key("twice"))
        orig = caught.value.orig
        raised.append((type(orig).__name__, getattr(orig, "sqlstate", None), type(orig.__cause__)))
        await session.rollback()
        assert (await execute_core(session, _NONE, {"owner": "sql"})).all() == []  # nothing kept, usable
    assert raised[0] == raised[1] == ("IntegrityError", "23505", asyncpg.UniqueViolationError)


async def test_a_parameter_is_converted_on_the_driver_as_through_the_connection(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JSON parameter is dumped by the dialect's serializer and a boolean checked, both ways alike: the same
    document is stored, and a value that is not a boolean is refused before anything is sent."""
    from app.kit.sql import insert_or_skip
    from app.models import JobOutbox

    outbox = insert_or_skip(JobOutbox.__table__)
    document = {"actor": "送餐提醒", "args": [1, "二"], "nested": {"ok": True}}
    stored = []
    for way in ("driver", "connection"):
        if way == "connection":
            _through_connection(monkeypatch)
        row = {"message_id": f"json-{way}", "actor_name": "a", "message": document, "attempts": 0}
        await execute_core(session, outbox, row)
        text_of = select(func.cast(JobOutbox.message, Text)).where(JobOutbox.message_id == f"json-{way}")
        stored.append((await session.execute(text_of)).scalar_one())
        with pytest.raises(StatementError):
            await execute_core(session, _CHECKED, {"flag": "yes"})
    assert stored[0] == stored[1] and "送餐提醒" in stored[0]


_CHECKED = select(bindparam("flag", type_=Boolean))


class _Kind(enum.Enum):
    meal = "meal"


async def test_columns_are_converted_on_the_driver_as_through_the_connection(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What SQLAlchemy does to a column it reads is done on the driver too, for the type the server reports:
    an Enum's text becomes its member, a float column stays a float read as Numeric(asdecimal=False)."""
    statement = select(
        bindparam("kind", type_=Enum(_Kind, native_enum=False)).label("kind"),
        func.cast(bindparam("n", type_=Integer), Numeric(asdecimal=False)).label("n"),
        literal_column("ARRAY['a', 'b']", type_=ARRAY(String)).label("letters"),
    )
    typed_text = text("""SELECT 2 AS a, CAST('{"x": "一"}' AS jsonb) AS payload""").columns(payload=JSONB)
    answers = []
    for way in ("driver", "connection"):
        if way == "connection":
            _through_connection(monkeypatch)
        answers.append(tuple((await execute_core(session, statement, {"kind": _Kind.meal, "n": 3})).one()))
        answers.append(tuple((await execute_core(session, typed_text)).one()))
    assert answers[0] == answers[2] == (_Kind.meal, 3.0, ["a", "b"])
    assert answers[1] == answers[3] == (2, {"x": "一"})  # text with typed columns, matched by name
    assert type(answers[0][1]) is float


# ---------------------------------------------------------------- load_entities

_SETTING = (
    select(Canteen, CanteenSlot, literal_column("41", type_=Integer).label("n"))
    .outerjoin(CanteenSlot, and_(CanteenSlot.canteen_id == Canteen.id, CanteenSlot.slot == bindparam("slot")))
    .where(Canteen.id == bindparam("canteen_id"))
)


async def test_entities_load_on_the_driver_as_through_the_session(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same objects with the same values as the ORM loads (a float column included), None for an outer
    join's missing row, plain columns as values; the objects are the session's: found by ``get`` without a
    query, and a change to one is flushed as an UPDATE."""
    from app.kit.sql import _driver_plan

    async with committed.sessionmaker() as s:
        canteen = await create_canteen(s)
        await create_canteen_slot(s, canteen.id, "lunch")
        await s.commit()
        canteen_id = canteen.id
    loaded = []
    for way in ("driver", "session"):
        if way == "session":
            _through_connection(monkeypatch)
        async with committed.sessionmaker() as s:
            if way == "driver":
                assert _driver_plan(await s.connection(), _SETTING, {"slot": "x", "canteen_id": canteen_id})
            rows = [
                await load_entities(s, _SETTING, {"slot": slot, "canteen_id": canteen_id})
                for slot in ("lunch", "dinner")
            ]
            (found, slot, n), (again, missing, _) = rows[0][0], rows[1][0]
            assert again is found and missing is None and n == 41
            assert await s.get(Canteen, canteen_id) is found  # in the identity map
            loaded.append((_values(found), _values(slot)))
            found.name = f"改名{way}"
            await s.commit()
        async with committed.sessionmaker() as s:
            assert (await s.get(Canteen, canteen_id)).name == f"改名{way}"  # type: ignore[union-attr]
    assert loaded[0][0] | {"name": None, "updated_at": None} == loaded[1][0] | {
        "name": None,
        "updated_at": None,
    }
    assert loaded[0][1] == loaded[1][1]
    assert isinstance(loaded[0][0]["lat"], float)


async def test_an_object_the_session_holds_is_returned_as_it_is(session: AsyncSession) -> None:
    """As a query without ``populate_existing``: the session's object, with its unflushed change kept."""
    canteen = await create_canteen(session)
    canteen.name = "还没写入"
    ((found, _, _),) = await load_entities(session, _SETTING, {"slot": "lunch", "canteen_id": canteen.id})
    assert found is canteen and found.name == "还没写入"


async def test_an_expired_object_the_session_holds_is_filled_in_again(session: AsyncSession) -> None:
    """A rolled-back or refreshed object has no values until loaded again: as the session's loading does, the
    row fills it in (reading it afterwards must not need the database)."""
    canteen = await create_canteen(session)
    canteen_id = canteen.id
    session.expire(canteen)
    ((found, _, _),) = await load_entities(session, _SETTING, {"slot": "lunch", "canteen_id": canteen_id})
    assert found is canteen and not inspect(found).unloaded
    assert found.name == "测试幸福食堂"


async def test_populate_existing_overwrites_what_the_session_holds(session: AsyncSession) -> None:
    """As the session's loading: a statement that asks for ``populate_existing`` gets the row's values over an
    unflushed change; the same object, fresh."""
    canteen = await create_canteen(session)
    canteen.name = "还没写入"
    fresh = _SETTING.execution_options(populate_existing=True)
    ((found, _, _),) = await load_entities(session, fresh, {"slot": "lunch", "canteen_id": canteen.id})
    assert found is canteen and found.name == "测试幸福食堂"


def _values(obj: object) -> dict[str, object]:
    return {attr.key: getattr(obj, attr.key) for attr in inspect(obj).mapper.column_attrs}  # type: ignore[union-attr]


async def test_per_row_asks_a_one_request_statement_about_each_row_of_a_batch(session: AsyncSession) -> None:
    """``per_row`` swaps the named parameters for a batch's columns and leaves the others parameters: the
    statement written for one canteen answers for each row, and the original is unchanged."""
    from sqlalchemy import Integer, String, bindparam, select

    from app.kit.sql import given_rows, per_row

    one = await create_canteen(session, name="甲食堂")
    two = await create_canteen(session, name="乙食堂")
    named = select(Canteen.name).where(
        Canteen.code == bindparam("code"), Canteen.is_active == bindparam("on")
    )
    rows = given_rows("wanted", n=Integer(), code=String())
    batch = select(rows.c.n, per_row(named, {"code": rows.c.code}).scalar_subquery()).order_by(rows.c.n)
    found = await execute_core(
        session, batch, {"wanted_n": [0, 1, 2], "wanted_code": [two.code, "nope", one.code], "on": True}
    )
    assert found.all() == [(0, "乙食堂"), (1, None), (2, "甲食堂")]
    alone = await execute_core(session, named, {"code": one.code, "on": True})
    assert alone.scalar() == "甲食堂"
