from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Boolean,
    Integer,
    Row,
    Select,
    String,
    Table,
    Text,
    and_,
    bindparam,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import live_sessions_of
from app.auth.subject import Subject
from app.elders.repository import acting_for
from app.kit.jsontext import json_text
from app.kit.sql import (
    attach,
    execute_core,
    given_rows,
    insert_or_skip,
    load_entities,
    per_row,
    sql_text,
)
from app.ledger.repository import FREE_FEN
from app.models import (
    Booking,
    BookingLine,
    Canteen,
    CanteenSlot,
    Elder,
    FamilyBinding,
    MealNotification,
    Menu,
    MenuItem,
    SlotDay,
    StandingOrder,
    StandingOrderRun,
    SubscribeQuota,
    SubsidyPolicy,
    SubsidyTier,
)
from app.subsidy.repository import policy_in_force, tiers_from, tiers_of
from app.worker import outbox_insert

LIVE = ("confirmed", "served")


def _constant(value: str) -> Any:
    """A constant written into the statement's text, not bound: PostgreSQL can then use a partial index whose
    condition it matches (the published menu, the elder's live subsidised meal) in the one plan it keeps for
    every execution. Bound, only a plan made for the values given could, so the booking's meal look-up was
    planned again on every execution (about 360 µs of PostgreSQL's time per booking in the lunch rush). Only
    for the code's own status names, never for input."""
    if not value.isidentifier():
        raise ValueError(f"not a status name: {value!r}")
    return literal_column(f"'{value}'")


# Statements built once (bind parameters by name): a booking request runs each of them, and building and
# hashing a statement costs about as much Python as executing it.
_HAS_SUBSIDIZED_MEAL = select(
    exists()
    .where(
        Booking.elder_id == bindparam("elder_id"),
        Booking.service_date == bindparam("service_date"),
        Booking.subsidized.is_(True),
        Booking.status.in_([_constant(status) for status in LIVE]),
    )
    .correlate_except(Booking)  # about the enclosing statement's elder, where one asks it about each row
)

# The users bound to an elder as family (live bindings), as one array (NULL: none)
_FAMILY_USER_IDS = select(func.array_agg(FamilyBinding.user_id)).where(
    FamilyBinding.elder_id == bindparam("elder_id"), FamilyBinding.revoked_at.is_(None)
)


# The meal look-ups of a batch of booking requests, one array per column (``ask``: each request's number,
# canteen, date, slot, elder, caller and whether the caller is staff; ``ask_item``: the chosen items, and
# ``ask_pool``: the pools its meal may draw on, each with its request's number). For each request: the active
# canteen, its configuration of the slot, the meal's published menu (exactly one, a unique index), those of the
# chosen items that are on it (one row per item found, or one row with what there is), whether the elder already
# has a subsidised meal that day, and what donated money the meal can draw on. With them the elder, if the
# caller may book for them: they are the elder, or bound to them as family, or ``staff`` (an operator of the
# canteen, or a job acting on a standing order), and the users bound to the elder as family (who get the
# booking's messages). And the subsidy policy in force for the canteen's district that day, with its tiers as
# one array (``app.subsidy.repository``). No row for a request whose canteen is not active.
def _meal_settings() -> Select[Any]:
    ask = given_rows(
        "ask",
        n=Integer(),
        canteen_id=Canteen.id.type,
        service_date=Menu.service_date.type,
        slot=Menu.slot.type,
        elder_id=Elder.id.type,
        user_id=Elder.id.type,
        staff=Boolean(),
    )
    ask_item = given_rows("ask_item", n=Integer(), item_id=MenuItem.id.type)
    ask_pool = given_rows("ask_pool", n=Integer(), code=String())
    chosen = {
        "elder_id": ask.c.elder_id,
        "service_date": ask.c.service_date,
        "codes": select(func.array_agg(ask_pool.c.code))
        .where(ask_pool.c.n == ask.c.n)
        .correlate(ask)  # its request's row, two sub-selects out
        .scalar_subquery(),
    }

    def of_request(statement: Select[Any]) -> Any:
        """A statement written for one request's parameters, about each request of the batch instead."""
        return per_row(statement, chosen).scalar_subquery()

    return (
        select(
            ask.c.n,
            Canteen,
            CanteenSlot,
            Menu,
            MenuItem,
            of_request(_HAS_SUBSIDIZED_MEAL),
            of_request(FREE_FEN),
            Elder,
            of_request(_FAMILY_USER_IDS),
            SubsidyPolicy,
            tiers_of(SubsidyPolicy.id),
        )
        .select_from(ask)
        .join(Canteen, and_(Canteen.id == ask.c.canteen_id, Canteen.is_active.is_(True)))
        .outerjoin(
            SubsidyPolicy, SubsidyPolicy.id == policy_in_force(Canteen.district_code, ask.c.service_date)
        )
        .outerjoin(Elder, and_(Elder.id == ask.c.elder_id, or_(ask.c.staff, acting_for(ask.c.user_id))))
        .outerjoin(CanteenSlot, and_(CanteenSlot.canteen_id == Canteen.id, CanteenSlot.slot == ask.c.slot))
        .outerjoin(
            Menu,
            and_(
                Menu.canteen_id == Canteen.id,
                Menu.service_date == ask.c.service_date,
                Menu.slot == ask.c.slot,
                Menu.status == _constant("published"),
            ),
        )
        .outerjoin(
            MenuItem,
            and_(
                MenuItem.menu_id == Menu.id,
                MenuItem.id.in_(select(ask_item.c.item_id).where(ask_item.c.n == ask.c.n).correlate(ask)),
            ),
        )
    )


_MEAL_SETTINGS = _meal_settings()


def _notifications_with_jobs() -> Any:
    """One message row per recipient (``recipient_id``, ``recipient_user_id``, ``recipient_booking_id``,
    ``recipient_data`` as JSON text and ``recipient_page``, one array each), skipping those who already have this kind of message for the booking (the
    table's one unique constraint), with the outbox rows of the transaction's unstaged jobs
    (``app.worker.outbox_insert``) in the same statement. Returns the ids of the rows written."""
    recipients = given_rows(
        "recipient",
        id=MealNotification.id.type,
        user_id=MealNotification.user_id.type,
        booking_id=MealNotification.booking_id.type,
        data=Text(),
        page=MealNotification.page.type,
    )
    values = select(
        recipients.c.id,
        recipients.c.booking_id,
        recipients.c.user_id,
        bindparam("kind", type_=MealNotification.kind.type),
        bindparam("template_id", type_=MealNotification.template_id.type),
        cast_(recipients.c.data, JSONB),
        recipients.c.page,
        literal("pending", MealNotification.status.type),
    )
    table = MealNotification.__table__  # the table, not the entity: parameters bind, not ORM bulk rows
    return (
        insert_or_skip(table)
        .from_select(["id", "booking_id", "user_id", "kind", "template_id", "data", "page", "status"], values)
        .add_cte(outbox_insert().cte("staged"))
        .returning(table.c.id)
    )


_NOTIFY = _notifications_with_jobs()

# No room in the slot for the request's meals as of the last commit, and the request's idempotency key unused (a
# replay of a booking the slot already counts is not refused: it must get its booking back). Written once and
# used by the two statements below, with a batch's requests as columns, the key's owner being the request's own
# or the session look-up's user: constant text, accepted in .bandit-baseline.json (docs/reliability.md).
_FULL_OF = """EXISTS (
            SELECT 1 FROM slot_days
            WHERE canteen_id = {canteen_id} AND service_date = {service_date}
              AND slot = {slot} AND booked_meals + {meals} > capacity
        )"""
_USED_OF = """EXISTS (
            SELECT 1 FROM idempotency_keys
            WHERE scope = CAST(:scope AS varchar) AND owner = {owner} AND key = {key}
        )"""
_NO_ROOM_OF = f"SELECT {_FULL_OF} AND NOT {_USED_OF}"
# the columns the two statements give ``_FULL_OF`` and ``_USED_OF``, of the row of each request
_ROOM_COLUMNS = ("canteen_id", "service_date", "slot", "meals", "owner", "key")
_OF_ASK = {name: f"a.{name}" for name in _ROOM_COLUMNS}

# A batch of booking requests' first statement (``RoomAsk`` columns as arrays, one element per request, in
# order). For each: refuse a full slot from a plain read (``no_room``); or leave it for after this batch's commit
# (``later``) when the requests before it in the batch would fill what room the slot has, counting their meals
# as the commit will (a request the slot has room for on its own is first of those at its next try, so it is
# never left twice for this); or else claim its idempotency key (ON CONFLICT DO NOTHING: a key already there is
# a replay, or a 409). One row per request, in order.
_CLAIM_UNLESS_FULL = sql_text(
    f"""
    WITH ask AS (
        SELECT * FROM unnest(
            (SELECT CAST(:ids AS uuid[])), (SELECT CAST(:canteen_ids AS uuid[])),
            (SELECT CAST(:service_dates AS date[])), (SELECT CAST(:slots AS varchar[])),
            (SELECT CAST(:meals AS integer[])), (SELECT CAST(:owners AS varchar[])),
            (SELECT CAST(:keys AS varchar[])), (SELECT CAST(:request_hashes AS varchar[])),
            (SELECT CAST(:resource_ids AS uuid[]))
        ) WITH ORDINALITY AS a(id, canteen_id, service_date, slot, meals, owner, key, request_hash, resource_id, n)
    ), seen AS (
        SELECT a.*, {_FULL_OF.format(**_OF_ASK)} AS slot_full, {_USED_OF.format(**_OF_ASK)} AS used FROM ask a
    ), counted AS (
        SELECT s.*, sum(s.meals) FILTER (WHERE NOT s.slot_full AND NOT s.used)
            OVER (PARTITION BY s.canteen_id, s.service_date, s.slot ORDER BY s.n) AS up_to
        FROM seen s
    ), decided AS (
        SELECT a.*, a.slot_full AND NOT a.used AS no_room,
            NOT a.slot_full AND NOT a.used AND {_FULL_OF.format(**(_OF_ASK | {"meals": "a.up_to"}))} AS later
        FROM counted a
    ), claimed AS (
        INSERT INTO idempotency_keys (id, scope, owner, key, request_hash, resource_id)
        SELECT id, CAST(:scope AS varchar), owner, key, request_hash, resource_id
        FROM decided WHERE NOT no_room AND NOT later ORDER BY n
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT d.no_room, d.later, EXISTS (SELECT 1 FROM claimed c WHERE c.id = d.id) AS claimed
    FROM decided d ORDER BY d.n
    """
)
_UNCLAIM = sql_text("DELETE FROM idempotency_keys WHERE id = ANY(CAST(:ids AS uuid[]))")


# Booking requests' first read, many in one statement (``CallerAsk``; ``asked``: one row per request, its number,
# its bearer token's hash and, for one with a valid key, its slot, meals and key): each request's session
# look-up (``app.auth.repository.live_sessions_of``) with, on its rows, whether its slot has no room for it
# (``_NO_ROOM_OF``, the key's owner being the session's user: ``RoomAsk.owner`` is ``str(user_id)``, which is
# how PostgreSQL writes a uuid as text; false without a slot).
def _callers() -> Select[Any]:
    asked = given_rows(
        "asked",
        n=Integer(),
        token_hash=String(),
        canteen_id=SlotDay.canteen_id.type,
        service_date=SlotDay.service_date.type,
        slot=SlotDay.slot.type,
        meals=Integer(),
        key=String(),
    )
    columns = {name: f"asked.{name}" for name in _ROOM_COLUMNS} | {"owner": "CAST(users.id AS varchar)"}
    return live_sessions_of(asked, sql_text(f"({_NO_ROOM_OF.format(**columns)}) AS no_room"))


_CALLERS = _callers()


# New bookings and their lines in one statement: the bookings' rows, given as one array per column (ON CONFLICT
# DO NOTHING: every unique index of bookings is today's subsidised meal or the serve code, and the caller looks
# which), then their lines, also one array per column with their booking's id, written only for the bookings
# that were. One row per line written, the booking's columns first.
_BOOKINGS = cast(Table, Booking.__table__)
_LINES = cast(Table, BookingLine.__table__)
BOOKING_FIELDS = (
    "id",
    "elder_id",
    "canteen_id",
    "menu_id",
    "service_date",
    "slot",
    "mode",
    "status",
    "meals",
    "subsidized",
    "policy_id",
    "serve_code",
    "cutoff_at",
    "serve_start_at",
    "serve_end_at",
    "list_price_fen",
    "gov_subsidy_fen",
    "charity_subsidy_fen",
    "delivery_fee_fen",
    "self_pay_fen",
    "booked_by_id",
    "channel",
    "standing_order_id",
)
LINE_FIELDS = (
    "id",
    "menu_item_id",
    "item_name",
    "quantity",
    "unit_price_fen",
    "is_elder_meal",
    "list_price_fen",
    "gov_subsidy_fen",
    "charity_subsidy_fen",
    "delivery_fee_fen",
    "self_pay_fen",
)


def _bookings_with_lines() -> Select[Any]:
    given = given_rows("new_booking", **{n: _BOOKINGS.c[n].type for n in BOOKING_FIELDS})
    booking = (
        insert_or_skip(_BOOKINGS)
        .from_select(list(BOOKING_FIELDS), select(*(given.c[n] for n in BOOKING_FIELDS)))
        .returning(*_BOOKINGS.c)
        .cte("booking")
    )
    given_lines = given_rows("new_line", **{n: _LINES.c[n].type for n in ("booking_id", *LINE_FIELDS)})
    lines = (
        insert(_LINES)
        .from_select(
            ["booking_id", *LINE_FIELDS],
            select(booking.c.id, *(given_lines.c[n] for n in LINE_FIELDS))
            .select_from(booking)
            .join(given_lines, given_lines.c.booking_id == booking.c.id),
        )
        .returning(*_LINES.c)
        .cte("lines")
    )
    return select(*booking.c, *lines.c).select_from(booking).join(lines, lines.c.booking_id == booking.c.id)


_BOOKINGS_WITH_LINES = _bookings_with_lines()
# its columns by position: the booking's, then the line's
_BOOKING_COLUMNS = tuple(c.name for c in _BOOKINGS.c)
_LINE_COLUMNS = tuple(c.name for c in _LINES.c)
_BOOKING_ID_AT = _BOOKING_COLUMNS.index("id")
_LINE_ID_AT = _LINE_COLUMNS.index("id")


@dataclass(frozen=True)
class RoomAsk:
    """What a booking request asks of its slot, and the key it comes with: the refusal both
    ``claim_unless_full`` and ``callers`` decide from (no room for ``meals`` as of the last commit, and the
    key (scope, owner, key) unused)."""

    canteen_id: uuid.UUID
    service_date: date
    slot: str
    meals: int
    scope: str
    owner: str
    key: str


class Claim(NamedTuple):
    """A booking request's answer from ``claim_unless_full``."""

    no_room: bool  # the slot is known and has no room for the request's meals as of the last commit
    later: bool  # the batch's requests before it would fill the room the slot has: to run after their commit
    id: uuid.UUID | None  # the key's claim, made for neither of those; None: the key was already taken


@dataclass(frozen=True)
class CallerAsk:
    """A booking request's first read (``BookingRepository.callers``): the session of its bearer token (by the
    token's hash) and, for a request with a valid key, whether its slot has room for it (``room``; its owner is
    the session's user, whatever ``room.owner`` says)."""

    token_hash: str
    room: RoomAsk | None


@dataclass(frozen=True)
class MealAsk:
    """One booking's meal look-up (``BookingRepository.meal_settings``): the meal, the chosen items, the elder;
    ``user_id`` the caller's, who gets the elder only as the elder or bound family, unless ``staff`` (the caller
    may book for any elder at this canteen); ``pool_codes`` the accounts whose free money the meal may draw on."""

    canteen_id: uuid.UUID
    service_date: date
    slot: str
    item_ids: Sequence[uuid.UUID]
    elder_id: uuid.UUID
    user_id: uuid.UUID | None
    staff: bool
    pool_codes: Sequence[str]


@dataclass
class MealSetting:
    canteen: Canteen
    slot: CanteenSlot | None  # None: the canteen has no configuration of this slot
    menu: Menu | None  # None: no published menu for the meal
    items: dict[uuid.UUID, MenuItem]  # the chosen items found on that menu
    subsidized_today: bool  # the elder already has a subsidised meal (confirmed or served) that day
    charity_free_fen: int  # what the pools named could still give, as of this read
    elder: Elder | None  # None: no such elder, or not one the caller may book for
    family_user_ids: list[uuid.UUID]  # the users bound to the elder as family
    policy: SubsidyPolicy | None  # the subsidy policy in force that day; None: none
    tiers: list[SubsidyTier]  # its tiers, largest amount first


class BookingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------ authorization as WHERE clauses

    def _elder_ids_of(self, subject: Subject) -> Select[tuple[uuid.UUID]]:
        bound = select(FamilyBinding.elder_id).where(
            FamilyBinding.user_id == subject.user_id, FamilyBinding.revoked_at.is_(None)
        )
        own = select(Elder.id).where(Elder.user_id == subject.user_id)
        return own.union(bound)  # type: ignore[return-value]

    def readable_statement(self, subject: Subject) -> Select[tuple[Booking]]:
        """Bookings of the subject's own / bound elders, and of the canteens they operate."""
        clauses = [Booking.elder_id.in_(self._elder_ids_of(subject))]
        if subject.operator_canteen_ids:
            clauses.append(Booking.canteen_id.in_(subject.operator_canteen_ids))
        if subject.is_admin:
            return select(Booking)
        return select(Booking).where(or_(*clauses))

    async def get_readable(
        self, subject: Subject, booking_id: uuid.UUID, *, for_update: bool = False
    ) -> Booking | None:
        stmt = self.readable_statement(subject).where(Booking.id == booking_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_for_elders(
        self,
        subject: Subject,
        *,
        elder_id: uuid.UUID | None,
        limit: int,
        after: tuple[date, datetime, uuid.UUID] | None,
    ) -> Sequence[Booking]:
        stmt = select(Booking).where(Booking.elder_id.in_(self._elder_ids_of(subject)))
        if elder_id is not None:
            stmt = stmt.where(Booking.elder_id == elder_id)
        if after is not None:
            stmt = stmt.where(
                tuple_(Booking.service_date, Booking.created_at, Booking.id)
                < tuple_(literal(after[0]), literal(after[1]), literal(after[2]))
            )
        stmt = stmt.order_by(Booking.service_date.desc(), Booking.created_at.desc(), Booking.id.desc()).limit(
            limit
        )
        return (await self.session.execute(stmt)).scalars().all()

    # ------------------------------------------------------------ capacity, stock, subsidy

    async def slot_has_room(self, canteen_id: uuid.UUID, service_date: date, slot: str, meals: int) -> bool:
        """A plain read (no lock): whether the slot had room for ``meals`` as of the last commit."""
        stmt = select(
            exists().where(
                SlotDay.canteen_id == canteen_id,
                SlotDay.service_date == service_date,
                SlotDay.slot == slot,
                SlotDay.booked_meals + meals <= SlotDay.capacity,
            )
        )
        return bool((await self.session.execute(stmt)).scalar())

    async def claim_unless_full(
        self, asks: Sequence[RoomAsk], *, digests: Sequence[str], resource_ids: Sequence[uuid.UUID]
    ) -> list[Claim]:
        """One statement, first thing for a batch of booking requests (all of one scope), one ``Claim`` for
        each, in order: refused for a full slot, left for after the batch's commit, or its key claimed for its
        ``resource_id`` with the request's digest (``Claim.id`` None: the key was already taken, also by an
        earlier request of the batch). Nothing is written for a request refused or left."""
        ids = [uuid.uuid4() for _ in asks]
        params = {
            "scope": asks[0].scope,
            "ids": ids,
            "canteen_ids": [a.canteen_id for a in asks],
            "service_dates": [a.service_date for a in asks],
            "slots": [a.slot for a in asks],
            "meals": [a.meals for a in asks],
            "owners": [a.owner for a in asks],
            "keys": [a.key for a in asks],
            "request_hashes": list(digests),
            "resource_ids": list(resource_ids),
        }
        assert all(a.scope == params["scope"] for a in asks)
        rows = (await execute_core(self.session, _CLAIM_UNLESS_FULL, params)).all()
        return [
            Claim(bool(row.no_room), bool(row.later), claim if row.claimed else None)
            for row, claim in zip(rows, ids, strict=True)
        ]

    async def unclaim(self, claim_ids: Sequence[uuid.UUID]) -> None:
        """Take back the keys of claims made in this transaction for requests that were refused after all."""
        await execute_core(self.session, _UNCLAIM, {"ids": list(claim_ids)})

    async def callers(self, asks: Sequence[CallerAsk], *, scope: str, now: datetime) -> list[list[Row[Any]]]:
        """Booking requests' first read, one statement for all (``_CALLERS``), a plain read: for each request,
        its session look-up's rows as ``AuthRepository.get_live_session`` gives them (none: the token is not
        live at ``now``), each with ``no_room``: ``claim_unless_full`` would refuse its ``room`` in key
        ``scope`` for a full slot (false without a room)."""
        rooms = [a.room for a in asks]
        assert all(r is None or r.scope == scope for r in rooms)
        params: dict[str, Any] = {
            "now": now,
            "scope": scope,
            "asked_n": list(range(len(asks))),
            "asked_token_hash": [a.token_hash for a in asks],
        }
        for name in ("canteen_id", "service_date", "slot", "meals", "key"):
            params[f"asked_{name}"] = [None if r is None else getattr(r, name) for r in rooms]
        found: list[list[Row[Any]]] = [[] for _ in asks]
        for row in (await execute_core(self.session, _CALLERS, params, plain_read=True)).all():
            found[row.n].append(row)
        return found

    async def release_capacity(
        self, canteen_id: uuid.UUID, service_date: date, slot: str, meals: int
    ) -> None:
        await self.session.execute(
            update(SlotDay)
            .where(
                SlotDay.canteen_id == canteen_id, SlotDay.service_date == service_date, SlotDay.slot == slot
            )
            .values(booked_meals=SlotDay.booked_meals - meals)
        )

    async def release_stock(self, item_id: uuid.UUID, quantity: int) -> None:
        await self.session.execute(
            update(MenuItem)
            .where(MenuItem.id == item_id, MenuItem.stock.is_not(None))
            .values(sold=MenuItem.sold - quantity)
        )

    async def add_with_lines(
        self, bookings: Sequence[dict[str, Any]], lines: Sequence[Sequence[dict[str, Any]]]
    ) -> list[tuple[Booking, list[BookingLine]] | None]:
        """Write new bookings (each a value for each of ``BOOKING_FIELDS``) and each one's ``lines`` (each a
        value for each of ``LINE_FIELDS``) in one statement, and return them as the session's objects, each
        booking's lines in the order given; None for a booking a unique index refused, with nothing written
        for it. The bookings are written in the order given."""
        params: dict[str, Any] = {f"new_booking_{n}": [b[n] for b in bookings] for n in BOOKING_FIELDS}
        params["new_line_booking_id"] = [b["id"] for b, own in zip(bookings, lines, strict=True) for _ in own]
        for name in LINE_FIELDS:
            params[f"new_line_{name}"] = [line[name] for own in lines for line in own]
        rows = (await execute_core(self.session, _BOOKINGS_WITH_LINES, params)).all()
        width = len(_BOOKING_COLUMNS)
        written: dict[uuid.UUID, Booking] = {}
        line_rows: dict[uuid.UUID, dict[str, Any]] = {}
        for row in rows:
            if row[_BOOKING_ID_AT] not in written:
                values = dict(zip(_BOOKING_COLUMNS, row[:width], strict=True))
                written[row[_BOOKING_ID_AT]] = attach(self.session, Booking, values)
            line_rows[row[width + _LINE_ID_AT]] = dict(zip(_LINE_COLUMNS, row[width:], strict=True))
        return [
            (written[b["id"]], [attach(self.session, BookingLine, line_rows[line["id"]]) for line in own])
            if b["id"] in written
            else None
            for b, own in zip(bookings, lines, strict=True)
        ]

    async def has_subsidized_meal(self, elder_id: uuid.UUID, service_date: date) -> bool:
        params = {"elder_id": elder_id, "service_date": service_date}
        return bool((await execute_core(self.session, _HAS_SUBSIDIZED_MEAL, params)).scalar())

    async def meal_settings(self, asks: Sequence[MealAsk]) -> list[MealSetting | None]:
        """What each booking of a batch is made against, in one query (``_MEAL_SETTINGS``), in order; None for
        a request whose canteen is not active."""
        params: dict[str, Any] = {
            "ask_n": list(range(len(asks))),
            "ask_canteen_id": [a.canteen_id for a in asks],
            "ask_service_date": [a.service_date for a in asks],
            "ask_slot": [a.slot for a in asks],
            "ask_elder_id": [a.elder_id for a in asks],
            "ask_user_id": [a.user_id for a in asks],
            "ask_staff": [a.staff for a in asks],
            "ask_item_n": [n for n, a in enumerate(asks) for _ in a.item_ids],
            "ask_item_item_id": [i for a in asks for i in a.item_ids],
            "ask_pool_n": [n for n, a in enumerate(asks) for _ in a.pool_codes],
            "ask_pool_code": [c for a in asks for c in a.pool_codes],
        }
        by_request: dict[int, list[Any]] = {}
        for row in await load_entities(self.session, _MEAL_SETTINGS, params):
            by_request.setdefault(row[0], []).append(row)
        found: list[MealSetting | None] = []
        tiers_of_policy: dict[uuid.UUID, list[SubsidyTier]] = {}  # a batch's requests mostly share one policy
        for n in range(len(asks)):
            rows = by_request.get(n)
            if not rows:
                found.append(None)
                continue
            _, canteen, canteen_slot, menu, _, subsidized_today, free_fen, elder, family, policy, tiers = (
                rows[0]
            )
            if policy is not None and policy.id not in tiers_of_policy:
                tiers_of_policy[policy.id] = tiers_from(tiers)
            found.append(
                MealSetting(
                    canteen=canteen,
                    slot=canteen_slot,
                    menu=menu,
                    items={row[4].id: row[4] for row in rows if row[4] is not None},
                    subsidized_today=bool(subsidized_today),
                    charity_free_fen=int(free_fen),
                    elder=elder,
                    family_user_ids=list(family or ()),
                    policy=policy,
                    tiers=[] if policy is None else tiers_of_policy[policy.id],
                )
            )
        return found

    async def all_menu_items(self, menu_id: uuid.UUID) -> Sequence[MenuItem]:
        stmt = select(MenuItem).where(MenuItem.menu_id == menu_id).order_by(MenuItem.position)
        return (await self.session.execute(stmt)).scalars().all()

    async def lines(self, booking_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[BookingLine]]:
        out: dict[uuid.UUID, list[BookingLine]] = {b: [] for b in booking_ids}
        if not booking_ids:
            return out
        stmt = (
            select(BookingLine)
            .where(BookingLine.booking_id.in_(booking_ids))
            .order_by(BookingLine.is_elder_meal.desc(), BookingLine.created_at, BookingLine.id)
        )
        for line in (await self.session.execute(stmt)).scalars():
            out[line.booking_id].append(line)
        return out

    # ------------------------------------------------------------ serving and status changes

    async def find_by_code(self, canteen_id: uuid.UUID, code: str, today: date) -> Booking | None:
        stmt = (
            select(Booking)
            .where(Booking.canteen_id == canteen_id, Booking.serve_code == code)
            .order_by((Booking.service_date == today).desc(), Booking.service_date.desc())
            .limit(1)
            .with_for_update()
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_for_update(self, booking_id: uuid.UUID) -> Booking | None:
        stmt = select(Booking).where(Booking.id == booking_id).with_for_update()
        return (
            await self.session.execute(stmt, execution_options={"populate_existing": True})
        ).scalar_one_or_none()

    async def transition(self, booking_id: uuid.UUID, *, to: str, **values: object) -> bool:
        """confirmed → ``to``, only if it is still confirmed (a concurrent change wins once)."""
        stmt = (
            update(Booking)
            .where(Booking.id == booking_id, Booking.status == "confirmed")
            .values(status=to, **values)
            .returning(Booking.id)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def due_no_shows(self, now: datetime, limit: int) -> Sequence[Booking]:
        stmt = (
            select(Booking)
            .where(Booking.status == "confirmed", Booking.serve_end_at < now)
            .order_by(Booking.serve_end_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def confirmed_on(self, service_date: date) -> Sequence[Booking]:
        stmt = select(Booking).where(Booking.status == "confirmed", Booking.service_date == service_date)
        return (await self.session.execute(stmt)).scalars().all()

    async def roster(
        self, canteen_id: uuid.UUID, service_date: date, slot: str
    ) -> Sequence[tuple[Booking, Elder]]:
        stmt = (
            select(Booking, Elder)
            .join(Elder, Elder.id == Booking.elder_id)
            .where(
                and_(
                    Booking.canteen_id == canteen_id,
                    Booking.service_date == service_date,
                    Booking.slot == slot,
                )
            )
            .order_by(Booking.created_at)
        )
        return [(r[0], r[1]) for r in (await self.session.execute(stmt)).all()]

    # ------------------------------------------------------------ standing orders

    async def active_standing_orders(self) -> Sequence[StandingOrder]:
        stmt = (
            select(StandingOrder).where(StandingOrder.is_active.is_(True)).order_by(StandingOrder.created_at)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def standing_order_runs(
        self, standing_order_id: uuid.UUID, limit: int = 30
    ) -> Sequence[StandingOrderRun]:
        stmt = (
            select(StandingOrderRun)
            .where(StandingOrderRun.standing_order_id == standing_order_id)
            .order_by(StandingOrderRun.service_date.desc())
            .limit(limit)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def run_exists(self, standing_order_id: uuid.UUID, service_date: date) -> bool:
        stmt = select(
            exists().where(
                StandingOrderRun.standing_order_id == standing_order_id,
                StandingOrderRun.service_date == service_date,
            )
        )
        return bool((await self.session.execute(stmt)).scalar())

    async def readable_standing_order(self, subject: Subject, so_id: uuid.UUID) -> StandingOrder | None:
        stmt = select(StandingOrder).where(
            StandingOrder.id == so_id, StandingOrder.elder_id.in_(self._elder_ids_of(subject))
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_standing_orders(
        self, subject: Subject, elder_id: uuid.UUID | None
    ) -> Sequence[StandingOrder]:
        stmt = select(StandingOrder).where(StandingOrder.elder_id.in_(self._elder_ids_of(subject)))
        if elder_id is not None:
            stmt = stmt.where(StandingOrder.elder_id == elder_id)
        return (await self.session.execute(stmt.order_by(StandingOrder.created_at))).scalars().all()

    # ------------------------------------------------------------ notifications

    async def family_user_ids(self, elder_id: uuid.UUID) -> list[uuid.UUID]:
        """The users bound to the elder as family (live bindings)."""
        found = (await execute_core(self.session, _FAMILY_USER_IDS, {"elder_id": elder_id})).scalar()
        return list(found or ())

    async def add_notifications(
        self,
        *,
        kind: str,
        template_id: str,
        ids: Sequence[uuid.UUID],
        user_ids: Sequence[uuid.UUID],
        booking_ids: Sequence[uuid.UUID],
        datas: Sequence[dict[str, str]],
        pages: Sequence[str | None],
        jobs: dict[str, Any],
    ) -> list[uuid.UUID]:
        """Message rows of ``kind``, one per recipient (the ids ``ids``, each recipient's user, booking, data
        and page at the same position), in one statement with the outbox rows of the transaction's unstaged
        jobs (``jobs``: ``app.worker.take_unstaged_jobs``). A recipient who already has this kind of message
        for the booking is skipped. Returns the ids of the rows written."""
        params = {
            "kind": kind,
            "template_id": template_id,
            "recipient_id": list(ids),
            "recipient_user_id": list(user_ids),
            "recipient_booking_id": list(booking_ids),
            "recipient_data": [json_text(data) for data in datas],
            "recipient_page": list(pages),
        } | jobs
        return list((await execute_core(self.session, _NOTIFY, params)).scalars())

    async def grant_quota(self, user_id: uuid.UUID, template_id: str) -> int:
        stmt = (
            insert(SubscribeQuota)
            .values(id=uuid.uuid4(), user_id=user_id, template_id=template_id, granted=1, used=0)
            .on_conflict_do_update(
                index_elements=["user_id", "template_id"],
                set_={"granted": SubscribeQuota.granted + 1},
            )
            .returning(SubscribeQuota.granted - SubscribeQuota.used)
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def use_quota(self, user_id: uuid.UUID, template_id: str) -> bool:
        stmt = (
            update(SubscribeQuota)
            .where(
                SubscribeQuota.user_id == user_id,
                SubscribeQuota.template_id == template_id,
                SubscribeQuota.used < SubscribeQuota.granted,
            )
            .values(used=SubscribeQuota.used + 1)
            .returning(SubscribeQuota.id)
        )
        return (await self.session.execute(stmt)).first() is not None

    def add(self, obj: object) -> None:
        self.session.add(obj)
