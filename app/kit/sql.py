"""SQL constructs the hot paths need that SQLAlchemy does not cache by itself (``insert_or_skip``,
``sql_text``), and a cheaper way to run them (``execute_core``, ``attach``).

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
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

from sqlalchemy import (
    BindParameter,
    Column,
    ColumnElement,
    Executable,
    Insert,
    Result,
    Row,
    Select,
    TextClause,
    bindparam,
    cast,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.dml import OnConflictDoNothing
from sqlalchemy.engine import Dialect, IteratorResult
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Mapper, Session, SessionTransaction, class_mapper, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.visitors import ExternallyTraversible, replacement_traverse
from sqlalchemy.types import TypeEngine

_CONNECTION = "sangyu.core_connection"
Model = TypeVar("Model")
S = TypeVar("S", bound=ClauseElement)  # a statement (``per_row``)


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


async def execute_core(
    session: AsyncSession, statement: Executable, params: Any = None, *, plain_read: bool = False
) -> Result[Any]:
    """Run ``statement`` on ``session``'s connection, in its transaction, as a Core statement: without the
    ORM's execution path (its compile state, its bulk-insert machinery for an entity's ``insert()``, entity
    loading). For statements built once that read columns or write rows the session does not hold; the rows
    come back as ``Row`` tuples, never as ORM objects. Changes pending in the session are flushed first only
    if the session autoflushes, as its own ``execute`` would (the app's sessions do not).

    Measured in-process: an idempotency claim (an entity's insert) 480–670 µs of CPU through the session,
    180 through its connection; a session look-up (columns of a join) 200–300 µs, 140–180.
    ``session.connection()`` itself costs about 100 µs, so the connection is kept for the rest of the
    transaction.

    A statement that needs nothing of SQLAlchemy at execution (see ``_DriverPlan``) then runs on the driver's
    connection itself, in the same transaction; one statement costs about a third of what it costs through
    the connection. Its errors come out as SQLAlchemy's, as from the connection.

    ``plain_read``: the statement only reads (a SELECT without row locks, calling nothing that writes or
    locks). If it is the first statement of its transaction, it runs on the driver on its own, and the
    transaction begins with the next statement instead (see ``_DriverPlan.fetch``), so a request that only
    reads and then fails, such as a refused booking, sends neither BEGIN nor ROLLBACK."""
    connection = await _connection_of(session)
    if isinstance(params, list) and len(params) == 1:  # one set of parameters: executed as one, either way
        params = params[0]
    if params is None or isinstance(params, dict):
        plan = _driver_plan(connection, statement, params)
        if plan is not None:
            return await plan.run(connection, params, plain_read=plain_read)
    return await connection.execute(statement, params)


_PLANS: dict[tuple[int, tuple[str, ...]], tuple[Executable, _DriverPlan | None]] = {}
# an entity's mapped attributes with their column positions, and its primary key's positions; or a plain
# column's position
_Part = int | tuple[Mapper[Any], tuple[tuple[str, int], ...], tuple[int, ...]]
_MAX_PLANS = 256  # statements built once are a few dozen; anything beyond runs through the connection


def _driver_plan(
    connection: AsyncConnection, statement: Executable, params: dict[str, Any] | None
) -> _DriverPlan | None:
    """The statement compiled once for the driver, or None where it must run through SQLAlchemy: while
    anything listens to the connection's or its engine's statements (tests counting them) or echoes them, and for statements
    that need SQLAlchemy at execution (see ``_DriverPlan.of``). Plans are kept by the statement's identity
    (and the parameters' names, which shape an INSERT), with the statement itself, so an id is never
    reused while its plan is kept. A plan is compiled for the first connection's dialect that runs it: every
    engine of the app is made alike (``app.db``)."""
    sync = connection.sync_connection
    if sync is None or sync._has_events or sync.engine._has_events or sync._echo:
        return None
    key = (id(statement), tuple(params) if params else ())
    found = _PLANS.get(key)
    if found is not None and found[0] is statement:
        return found[1]
    if len(_PLANS) >= _MAX_PLANS:
        return None
    plan = _DriverPlan.of(statement, connection.dialect, key[1])
    _PLANS[key] = (statement, plan)
    return plan


class _DriverPlan:
    """A statement's text, parameter order and conversions (a JSON parameter dumped, a boolean checked, an
    array column read as a list, an Enum's text made its member) as SQLAlchemy would send and read them with
    asyncpg, for one that needs nothing else at execution: no parameter is expanded at execution (``IN``
    lists), no default is computed in Python, the statement has no schema translation and no execution
    options (but ``populate_existing``, which only the loading of entities reads: ``load_entities``). Run as SQLAlchemy's asyncpg adapter runs it: under the connection's mutex, beginning the
    adapter's transaction first if this is its first statement, with the adapter's prepared statement for the
    same text (so both ways share one per connection), and with asyncpg's errors translated by the adapter,
    then wrapped as SQLAlchemy wraps them."""

    __slots__ = ("compiled", "conversions", "entities", "metadata", "names", "processors", "sql")

    def __init__(
        self,
        compiled: SQLCompiler,
        sql: str,
        names: tuple[str, ...],
        processors: tuple[Callable[[Any], Any] | None, ...],
        entities: tuple[_Part, ...] | None,
    ) -> None:
        self.compiled = compiled
        self.sql = sql
        self.names = names
        self.processors = processors
        # the columns' conversions, known at the first execution: they depend on the types the server reports
        self.conversions: tuple[Callable[[Any], Any] | None, ...] | bool | None = False
        self.metadata: tuple[Any, tuple[str, ...], SimpleResultMetaData] | None = None
        # for a select of entities (``load_entities``): where each entity's attributes and primary key are among
        # the columns, and where each plain column is; None if they are not each entity's columns in turn
        self.entities = entities

    @classmethod
    def of(cls, statement: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _DriverPlan | None:
        if dialect.driver != "asyncpg" or not isinstance(statement, ClauseElement):
            return None
        if set(statement._execution_options) - {"populate_existing"}:  # asks SQLAlchemy for more (see below)
            return None
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        if not isinstance(compiled, SQLCompiler) or not compiled.positional or compiled.positiontup is None:
            return None
        if (
            compiled.literal_execute_params
            or compiled.post_compile_params
            or compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.schema_translate_map
        ):
            return None
        names = tuple(compiled.positiontup)
        processors: list[Callable[[Any], Any] | None] = []
        for name in names:
            process = compiled._bind_processors.get(name)
            if process is not None and not callable(process):
                return None  # a tuple-valued parameter (one processor per element)
            processors.append(process)
        if compiled._result_columns and (compiled._textual_ordered_columns or not compiled._ordered_columns):
            # text with typed columns: SQLAlchemy matches them to what the server describes by name
            for column in compiled._result_columns:
                try:
                    if column.type._cached_result_processor(dialect, None) is not None:
                        return None
                except Exception:  # a conversion that depends on what the server reports
                    return None
        entities = _layout(statement, compiled._result_columns) if isinstance(statement, Select) else None
        return cls(compiled, compiled.string, names, tuple(processors), entities)

    async def run(
        self, connection: AsyncConnection, params: dict[str, Any] | None, *, plain_read: bool = False
    ) -> Result[Any]:
        records, columns, status = await self.fetch(connection, params, plain_read=plain_read)
        result = _DriverResult(self._metadata(columns), iter(records))
        counted = _ROWCOUNT.match(status or "")
        result.rowcount = int(counted.group(1)) if counted else -1
        return result

    async def fetch(
        self, connection: AsyncConnection, params: dict[str, Any] | None, *, plain_read: bool = False
    ) -> tuple[list[Any], Any, str | None]:
        """The rows (columns converted as SQLAlchemy converts them), the prepared statement's description of
        its columns, and the command tag.

        ``plain_read`` (a SELECT that neither writes nor locks): when the connection's transaction has not
        begun yet and would begin at the server's default isolation, the statement runs without beginning it,
        as a transaction of its own; the adapter begins the transaction at the next statement as usual, and
        its commit or rollback sends nothing if none comes. At READ COMMITTED, PostgreSQL's default, every
        statement of a transaction reads from a snapshot of its own taken when it starts, so a read that comes
        before anything else the transaction does sees exactly what it would have seen inside it. At another
        isolation level (the first statement fixes the transaction's snapshot), read-only or deferrable, the
        transaction begins first as for any statement."""
        values = self.compiled.construct_params(params, escape_names=False)
        assert values is not None
        try:
            args = [
                value if process is None else process(value)
                for value, process in zip([values[name] for name in self.names], self.processors, strict=True)
            ]
        except Exception as error:
            # a value its type refuses: SQLAlchemy's StatementError, as the connection raises it
            raise DBAPIError.instance(
                self.sql, params, error, DBAPIError, dialect=connection.dialect
            ) from error
        sync = connection.sync_connection
        assert sync is not None
        adapted: Any = sync.connection.dbapi_connection
        dialect: Any = connection.dialect
        async with adapted._execute_mutex:
            try:
                if not adapted._started and not (
                    plain_read
                    and adapted.isolation_level in _READ_COMMITTED
                    and not adapted.readonly
                    and not adapted.deferrable
                ):
                    await adapted._start_transaction()
                prepared, columns = await adapted._prepare(self.sql, dialect._invalidate_schema_cache_asof)
                records = await prepared.fetch(*args)
                status = prepared.get_statusmsg()
                failed = None
            except Exception as error:
                failed = error
        if failed is not None:  # outside the mutex: a lost connection is invalidated, which closes it
            await _raise_as_sqlalchemy(connection, adapted, failed, self.sql, args)
        conversions = self.conversions
        if conversions is False:
            conversions = self.conversions = self._conversions(connection.dialect, columns)
        if conversions is not None and not isinstance(conversions, bool):
            records = [
                tuple(
                    value if convert is None else convert(value)
                    for value, convert in zip(record, conversions, strict=True)
                )
                for record in records
            ]
        return records, columns, status

    def _conversions(self, dialect: Dialect, columns: Any) -> tuple[Callable[[Any], Any] | None, ...] | None:
        """What SQLAlchemy does to each column it reads, for the type it expects and the type the server
        reports (as the adapter's cursor describes the columns), as it works it out for its own result."""
        compiled = self.compiled
        expected = compiled._result_columns
        if not expected or compiled._textual_ordered_columns or not compiled._ordered_columns:
            return None  # columns untyped, or typed ones that convert nothing (see ``of``)
        described = list(columns or ())
        types: list[TypeEngine[Any] | None]
        if len(expected) == len(described):  # SQLAlchemy's usual case: one to one, in order
            types = [column.type for column in expected]
        else:  # otherwise it matches them by name
            by_name = {column.keyname: column.type for column in expected}
            types = [by_name.get(column.name) for column in described]
        found = tuple(
            None if type_ is None else type_._cached_result_processor(dialect, column.type.oid)
            for type_, column in zip(types, described, strict=True)
        )
        return found if any(found) else None

    def _metadata(self, columns: Any) -> SimpleResultMetaData:
        """The result's column names, from the prepared statement's description (as the adapter's cursor
        describes it; each connection prepares its own), made into metadata once."""
        kept = self.metadata
        if kept is not None and kept[0] is columns:
            return kept[2]
        names = tuple(column.name for column in columns or ())
        metadata = kept[2] if kept is not None and kept[1] == names else SimpleResultMetaData(names)
        self.metadata = (columns, names, metadata)
        return metadata


# the adapter's isolation level when it is READ COMMITTED: the server's default (None), or set back to it
_READ_COMMITTED = (None, "read_committed")


class _DriverResult(IteratorResult[Any]):
    """The rows, and the statement's row count from its command tag, as the connection's result has it."""

    rowcount: int


_ROWCOUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")  # the adapter's reading of the tag


async def _raise_as_sqlalchemy(
    connection: AsyncConnection, adapted: Any, error: Exception, sql: str, args: list[Any]
) -> NoReturn:
    """What the connection raises for the same failure: the adapter's DBAPI error (with asyncpg's as its
    cause) wrapped in SQLAlchemy's class for it; a lost connection is invalidated first."""
    try:
        adapted._handle_exception(error)  # raises the DBAPI error for asyncpg's
    except adapted.dbapi.Error as translated:
        dialect = connection.dialect
        lost = dialect.is_disconnect(translated, adapted, None)
        if lost:
            await connection.invalidate(translated)
        sync = connection.sync_connection
        raise DBAPIError.instance(
            sql,
            args,
            translated,
            adapted.dbapi.Error,
            hide_parameters=sync is not None and sync.engine.hide_parameters,
            connection_invalidated=lost,
            dialect=dialect,
        ) from translated
    raise error  # not a database error: as it came


def _innermost_transaction(sync: Session) -> SessionTransaction | None:
    """A savepoint's (``begin_nested``) when one is open: it is only emitted when the session is first asked
    for its connection, so a statement inside one must ask too, or it would run outside the savepoint."""
    return sync.get_nested_transaction() or sync.get_transaction()


def planned_once(array: ColumnElement[Any]) -> ColumnElement[Any]:
    """An array parameter passed through a sub-select, ``CAST((SELECT :array) AS type)``, for a statement that
    takes a batch of keys as one array.

    PostgreSQL plans a prepared statement again on each execution while a plan made for the values given
    looks cheaper than one made for any values; with the array in sight it always did, since it could count
    its elements. Behind a sub-select the length is unknown to the planner either way, so after its first five
    executions the statement is planned once per connection. Measured on the payment batch (one payment):
    the donations' row locks spent 180 µs planning against 70 µs running, the UPDATE of the paid orders
    130 µs against 240. For a text statement write ``(SELECT CAST(:name AS type[]))`` by hand."""
    return cast(select(array).scalar_subquery(), array.type)


def per_row(statement: S, columns: Mapping[str, Any]) -> S:
    """``statement``, written for one request's parameters, with the parameters ``columns`` names replaced by
    those columns (or expressions): the same rule, about each row of a batch (``given_rows``) instead. The
    statement is copied; parameters not named stay parameters."""

    def swap(element: ExternallyTraversible, **_: Any) -> ExternallyTraversible | None:
        if isinstance(element, BindParameter):
            found: ExternallyTraversible | None = columns.get(element.key)
            return found
        return None

    no_options: dict[str, Any] = {}
    swapped: Any = replacement_traverse(statement, no_options, swap)  # a copy of ``statement``: its type
    return swapped


def given_rows(name: str, **columns: Any) -> Any:
    """Rows a statement is given as one array parameter per column, ``{name}_{column}`` (``columns``: each
    column's type), each behind ``planned_once``, read as the derived table ``name`` of ``unnest``: a batch's
    rows in one statement and one plan, whatever their number."""
    arrays = (planned_once(bindparam(f"{name}_{c}", type_=ARRAY(t))) for c, t in columns.items())
    return func.unnest(*arrays).table_valued(*columns).render_derived(name=name)


async def load_entities(session: AsyncSession, statement: Select[Any], params: dict[str, Any]) -> list[Any]:
    """The rows of a select of entities (and columns), built once, as ``session.execute(...).all()`` gives
    them: each entity an ORM object in ``session`` (the one the session already holds for that row, as it
    is unless the statement asks for ``populate_existing``), None for an outer join's missing row, each
    column its value. Run on the driver's connection where ``execute_core`` would (see ``_DriverPlan``), with the objects
    made as the ORM's loading makes them, without calling their constructor; through the session otherwise,
    and also when an object the session holds for a row is expired or to be refreshed (the session's
    loading does that).

    Measured in-process: a booking's meal look-up (a canteen, its slot, its menu and an item) 630–710 µs of
    CPU through the session; about 130 µs for the statement on the driver and 50–70 µs for the four
    objects."""
    sync = session.sync_session
    connection = await _connection_of(session)
    plan = _driver_plan(connection, statement, params)
    layout = plan.entities if plan is not None else None
    if plan is None or layout is None:
        return list((await session.execute(statement, params)).all())
    records, _, _ = await plan.fetch(connection, params)
    identities = sync.identity_map
    refresh = bool(statement._execution_options.get("populate_existing"))
    out: list[Any] = []
    for record in records:
        row: list[Any] = []
        for part in layout:
            if isinstance(part, int):
                row.append(record[part])
                continue
            mapper, columns, primary_key = part
            key_values = tuple(record[i] for i in primary_key)
            if all(v is None for v in key_values):
                row.append(None)
                continue
            identity = mapper.identity_key_from_primary_key(key_values)
            obj = identities.get(identity)
            if obj is None:
                obj = _persistent(sync, mapper, {name: record[i] for name, i in columns})
            elif refresh or instance_state(obj).unloaded:
                # to be refreshed, or expired (a rollback): the session's loading overwrites or fills it in
                return list((await session.execute(statement, params)).all())
            row.append(obj)
        out.append(tuple(row))
    return out


def _layout(statement: Select[Any], columns: list[Any]) -> tuple[_Part, ...] | None:
    layout: list[_Part] = []
    at = 0
    for description in statement.column_descriptions:
        entity = description.get("entity")
        if entity is None or description.get("expr") is not entity:  # a column (or an entity's attribute)
            layout.append(at)
            at += 1
            continue
        mapper = inspect(entity)
        names = []
        for prop in mapper.column_attrs:
            if at >= len(columns) or not any(o is prop.columns[0] for o in columns[at].objects):
                return None
            names.append((prop.key, at))
            at += 1
        where = dict(names)
        primary_key = tuple(where[mapper.get_property_by_column(c).key] for c in mapper.primary_key)
        layout.append((mapper, tuple(names), primary_key))
    return tuple(layout) if at == len(columns) else None


async def _connection_of(session: AsyncSession) -> AsyncConnection:
    """The session's connection in its current transaction (or savepoint), kept for the rest of it; pending
    changes flushed first if the session autoflushes, as its own ``execute`` would."""
    sync = session.sync_session
    if sync.autoflush and (sync.new or sync.dirty or sync.deleted):
        await session.flush()
    kept: tuple[object, AsyncConnection] | None = session.info.get(_CONNECTION)
    transaction = _innermost_transaction(sync)
    if kept is not None and transaction is not None and kept[0] is transaction:
        return kept[1]
    connection = await session.connection()  # begins the transaction (or the savepoint) if need be
    session.info[_CONNECTION] = (_innermost_transaction(sync), connection)
    return connection


_COLUMNS_OF: dict[type[Any], tuple[tuple[str, Column[Any]], ...]] = {}


def _columns_of(model: type[Any]) -> tuple[tuple[str, Column[Any]], ...]:
    """Each mapped attribute with its column (an attribute may be named differently from its column)."""
    found = _COLUMNS_OF.get(model)
    if found is None:
        found = _COLUMNS_OF[model] = tuple(
            (attr.key, attr.columns[0]) for attr in inspect(model).column_attrs
        )
    return found


def attach(session: AsyncSession, model: type[Model], row: Row[Any] | Mapping[str, Any]) -> Model:
    """The ORM object for a row a Core statement has just written with ``RETURNING`` every column of
    ``model``'s table (a row, or its values by column name): persistent in ``session`` as if it had been
    loaded, so changes made to it later are flushed as UPDATEs. Writing the row this way skips the ORM's unit
    of work for the INSERT."""
    values = row._mapping if isinstance(row, Row) else row
    mapper = class_mapper(model)
    obj: Model = _persistent(
        session.sync_session, mapper, {key: values[column.name] for key, column in _columns_of(model)}
    )
    return obj


def _persistent(session: Session, mapper: Mapper[Any], values: dict[str, Any]) -> Any:
    """An object of ``mapper`` holding ``values`` as its row's, persistent in ``session``: made as the ORM's
    loading makes one, without calling its constructor (whose attribute events cost more than the rest)."""
    obj = mapper.class_manager.new_instance()
    obj.__dict__.update(values)
    make_transient_to_detached(obj)
    session.add(obj)
    return obj
