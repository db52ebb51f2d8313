"""Booking meals: quote, book (idempotent, capacity- and subsidy-safe under concurrency), cancel, serve,
walk-ins, standing orders, no-shows and reminders. Rules from DESIGN 3.4–3.5."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth.auth import invalid_token, subject_of
from app.auth.subject import Subject
from app.bookings import charity
from app.bookings.codes import BadCode, new_serve_code, parse, qr_payload
from app.bookings.notifications import BookingMessage, queue_booking_messages, queue_many_booking_messages
from app.bookings.repository import BookingRepository, CallerAsk, MealAsk, MealSetting, RoomAsk
from app.bookings.schemas import (
    BookingOut,
    BookingRequest,
    CancelRequest,
    ItemRequest,
    LineOut,
    QuoteOut,
    RosterBooking,
    RosterDelivery,
    RosterItem,
    RosterOut,
    ServeRequest,
    StandingOrderIn,
    StandingOrderOut,
    StandingOrderPatch,
    StandingOrderRunOut,
    WalkInRequest,
)
from app.canteens.repository import CanteenRepository
from app.db import SessionFactory, refusals_as_errors, register_refusal
from app.elders.repository import ElderRepository
from app.elders.service import decrypt_address, decrypt_phone, id_hmac
from app.errors import is_unavailable
from app.exceptions import BadRequest, Conflict, Forbidden, NotFound, SangyuError
from app.feed.service import feed_service
from app.kit import idempotency
from app.kit.background import Again, RequestBatch
from app.kit.crypto import mask_name, token_hash
from app.kit.money import format_yuan
from app.kit.pagination import Page, decode_cursor_as, encode_cursor
from app.kit.time import SHANGHAI, business_date, shanghai_datetime, utcnow
from app.ledger.service import meal_pools
from app.menus.repository import MenuRepository
from app.menus.service import require_operated_canteen
from app.models import (
    Booking,
    BookingLine,
    Canteen,
    CanteenSlot,
    Elder,
    Menu,
    MenuItem,
    SlotDay,
    StandingOrder,
    StandingOrderRun,
    SubsidyPolicy,
    SubsidyTier,
)
from app.models.booking import Channel
from app.subsidy.service import decide

MAX_DAYS_AHEAD = 30
# the most booking requests one transaction takes (``booking_batch``)
BATCH_MAX = 64
# the most booking requests whose callers one statement looks up (``caller_batch``)
CALLERS_MAX = 128
# the idempotency keys' scope of booking requests
KEY_SCOPE = "booking"
STAFF_CHANNELS = {Channel.phone.value, Channel.counter.value}


def _room_ask(payload: BookingRequest, *, owner: str, key: str) -> RoomAsk:
    meals = sum(i.quantity for i in payload.items)
    return RoomAsk(payload.canteen_id, payload.date, payload.slot.value, meals, KEY_SCOPE, owner, key)


def now() -> datetime:
    """The service clock (tests move it)."""
    return utcnow()


# ---------------------------------------------------------------- pricing


@dataclass
class PricedLine:
    item: MenuItem
    quantity: int
    is_elder_meal: bool
    list_price_fen: int
    gov_subsidy_fen: int = 0
    charity_subsidy_fen: int = 0
    delivery_fee_fen: int = 0

    @property
    def self_pay_fen(self) -> int:
        return self.list_price_fen + self.delivery_fee_fen - self.gov_subsidy_fen - self.charity_subsidy_fen

    def out(self) -> LineOut:
        return LineOut(
            menu_item_id=self.item.id,
            item_name=self.item.name,
            quantity=self.quantity,
            unit_price_fen=self.item.price_fen,
            is_elder_meal=self.is_elder_meal,
            list_price_fen=self.list_price_fen,
            gov_subsidy_fen=self.gov_subsidy_fen,
            charity_subsidy_fen=self.charity_subsidy_fen,
            delivery_fee_fen=self.delivery_fee_fen,
            self_pay_fen=self.self_pay_fen,
        )


@dataclass
class Priced:
    lines: list[PricedLine]
    policy_id: uuid.UUID | None
    tier_name: str | None
    charity_eligible: bool
    charity_shortfall_fen: int
    notes: list[str] = field(default_factory=list)

    @property
    def subsidized(self) -> bool:
        return any(ln.gov_subsidy_fen or ln.charity_subsidy_fen for ln in self.lines)

    def total(self, attr: str) -> int:
        return sum(getattr(ln, attr) for ln in self.lines)

    @property
    def meals(self) -> int:
        return sum(ln.quantity for ln in self.lines)


@dataclass
class Context:
    """Everything a booking for one elder at one canteen meal is decided from."""

    elder: Elder
    canteen: Canteen
    slot: CanteenSlot
    menu: Menu
    service_date: date
    items: list[tuple[MenuItem, int]]
    mode: str
    cutoff_at: datetime
    serve_start_at: datetime
    serve_end_at: datetime
    subsidized_today: bool  # as read with the rest; the unique index on subsidised meals is what guards it
    charity_free_fen: int  # the meal's pools' free money as read with the rest; the hold is what guards it
    channel: str | None  # self, proxy or phone for a request's caller; None when the caller names it
    family_user_ids: list[uuid.UUID]  # the users bound to the elder as family, as read with the rest
    policy: SubsidyPolicy | None  # the policy in force for the canteen that day, as read with the rest
    tiers: list[SubsidyTier]  # its tiers, largest amount first


def cutoff_for(slot: CanteenSlot, service_date: date) -> datetime:
    return shanghai_datetime(service_date - timedelta(days=slot.cutoff_days_before), slot.cutoff_time)


def _slot_full() -> Conflict:
    return Conflict("这一餐已经订满了，请选择其他餐次或食堂", code="SlotFull")


def _sold_out(menu_item_id: str | None, name: str | None) -> Conflict:
    return Conflict(
        f"“{name}”已经订完了，请换一个菜品" if name else "所选菜品已经订完了，请换一个菜品",
        code="ItemSoldOut",
        detail={"menu_item_id": menu_item_id},
    )


# the constraint triggers that take a slot's capacity and a limited item's stock (migration 0014)
RESERVING_TRIGGERS = "bookings_take_capacity, booking_lines_take_stock"
register_refusal("SlotFull", lambda _detail, _hint: _slot_full())
register_refusal("ItemSoldOut", _sold_out)


def _fmt(at: datetime) -> str:
    return at.astimezone(SHANGHAI).strftime("%m月%d日 %H:%M")


def price(ctx: Context, *, already_subsidized: bool) -> Priced:
    first_item, first_qty = ctx.items[0]
    lines = [PricedLine(item=first_item, quantity=1, is_elder_meal=True, list_price_fen=first_item.price_fen)]
    if first_qty > 1:
        lines.append(
            PricedLine(
                item=first_item,
                quantity=first_qty - 1,
                is_elder_meal=False,
                list_price_fen=first_item.price_fen * (first_qty - 1),
            )
        )
    for item, qty in ctx.items[1:]:
        lines.append(
            PricedLine(item=item, quantity=qty, is_elder_meal=False, list_price_fen=item.price_fen * qty)
        )
    elder_line = lines[0]
    if ctx.mode == "delivery":
        elder_line.delivery_fee_fen = ctx.canteen.delivery_fee_fen
    decision = decide(
        policy=ctx.policy,
        tiers=ctx.tiers,
        elder=ctx.elder,
        canteen=ctx.canteen,
        service_date=ctx.service_date,
        slot=ctx.slot.slot,
        price_fen=elder_line.list_price_fen,
        already_subsidized_today=already_subsidized,
    )
    notes = list(decision.notes)
    elder_line.gov_subsidy_fen = decision.amount_fen
    eligible = decision.charity_eligible
    remaining = elder_line.list_price_fen - elder_line.gov_subsidy_fen
    wanted = min(remaining, decision.charity_cap_fen) if eligible else 0
    available = charity.available_charity_fen(
        free_fen=ctx.charity_free_fen, eligible=eligible, remaining_self_pay_fen=wanted
    )
    elder_line.charity_subsidy_fen = max(0, min(available, wanted))
    shortfall = wanted - elder_line.charity_subsidy_fen
    if eligible and shortfall > 0:
        notes.append(f"爱心助餐资金暂时不足，本餐有 {format_yuan(shortfall)} 需要自付")
    if len(lines) > 1:
        notes.append("除长者本人一份外，其余份数（陪同家属等）按原价")
    return Priced(
        lines=lines,
        policy_id=ctx.policy.id if ctx.policy is not None and elder_line.gov_subsidy_fen else None,
        tier_name=decision.tier_name if elder_line.gov_subsidy_fen else None,
        charity_eligible=eligible,
        charity_shortfall_fen=shortfall,
        notes=notes,
    )


def booking_out(booking: Booking, lines: list[BookingLine]) -> BookingOut:
    return BookingOut(
        id=booking.id,
        status=booking.status,
        elder_id=booking.elder_id,
        canteen_id=booking.canteen_id,
        date=booking.service_date,
        slot=booking.slot,
        mode=booking.mode,
        meals=booking.meals,
        subsidized=booking.subsidized,
        channel=booking.channel,
        serve_code=booking.serve_code,
        qr_payload=qr_payload(booking.id),
        cutoff_at=booking.cutoff_at,
        serve_start_at=booking.serve_start_at,
        serve_end_at=booking.serve_end_at,
        list_price_fen=booking.list_price_fen,
        gov_subsidy_fen=booking.gov_subsidy_fen,
        charity_subsidy_fen=booking.charity_subsidy_fen,
        delivery_fee_fen=booking.delivery_fee_fen,
        self_pay_fen=booking.self_pay_fen,
        lines=[
            LineOut(
                menu_item_id=ln.menu_item_id,
                item_name=ln.item_name,
                quantity=ln.quantity,
                unit_price_fen=ln.unit_price_fen,
                is_elder_meal=ln.is_elder_meal,
                list_price_fen=ln.list_price_fen,
                gov_subsidy_fen=ln.gov_subsidy_fen,
                charity_subsidy_fen=ln.charity_subsidy_fen,
                delivery_fee_fen=ln.delivery_fee_fen,
                self_pay_fen=ln.self_pay_fen,
            )
            for ln in lines
        ],
        created_at=booking.created_at,
        cancelled_at=booking.cancelled_at,
        cancel_reason=booking.cancel_reason,
        served_at=booking.served_at,
        serve_method=booking.serve_method,
        self_pay_method=booking.self_pay_method,
        no_show_at=booking.no_show_at,
    )


@dataclass(frozen=True)
class MealRequest:
    """A booking's meal as asked for, and who asks (``BookingService._contexts``; None: the caller has shown
    it may book for the elder)."""

    elder_id: uuid.UUID
    caller: Subject | None
    canteen_id: uuid.UUID
    service_date: date
    slot: str
    items: list[ItemRequest]
    mode: str


@dataclass(frozen=True)
class BookingAsk:
    """A booking request on its way to its transaction (``BookingService.book_many``)."""

    subject: Subject
    payload: BookingRequest
    room: RoomAsk  # what it asks of its slot, and its idempotency key
    digest: str  # its body's hash, claimed with the key
    booking_id: uuid.UUID  # the id its booking will have, named by the claim


def _ask(subject: Subject, payload: BookingRequest, idempotency_key: str | None) -> BookingAsk:
    key = idempotency.require_key(idempotency_key)
    room = _room_ask(payload, owner=str(subject.user_id), key=key)
    return BookingAsk(subject, payload, room, idempotency.body_hash(payload), uuid.uuid4())


@dataclass(frozen=True)
class NewBooking:
    """A booking decided on and not yet written (``BookingService._create_many``)."""

    ctx: Context
    actor_id: uuid.UUID | None
    channel: str
    booking_id: uuid.UUID | None = None  # the id chosen up front (a request's key names it)
    standing_order_id: uuid.UUID | None = None

    @property
    def meals(self) -> int:
        return sum(q for _, q in self.ctx.items)

    @property
    def slot_key(self) -> tuple[str, date, str]:
        return str(self.ctx.canteen.id), self.ctx.service_date, self.ctx.slot.slot


def _booking_values(new: NewBooking, priced: Priced, booking_id: uuid.UUID) -> dict[str, Any]:
    """A booking's row before its hold: the charity portion still counted in self-pay, a new serve code."""
    ctx = new.ctx
    return dict(
        id=booking_id,
        elder_id=ctx.elder.id,
        canteen_id=ctx.canteen.id,
        menu_id=ctx.menu.id,
        service_date=ctx.service_date,
        slot=ctx.slot.slot,
        mode=ctx.mode,
        status="confirmed",
        meals=new.meals,
        subsidized=priced.subsidized,
        policy_id=priced.policy_id,
        serve_code=new_serve_code(),
        cutoff_at=ctx.cutoff_at,
        serve_start_at=ctx.serve_start_at,
        serve_end_at=ctx.serve_end_at,
        list_price_fen=priced.total("list_price_fen"),
        gov_subsidy_fen=priced.total("gov_subsidy_fen"),
        charity_subsidy_fen=0,
        delivery_fee_fen=priced.total("delivery_fee_fen"),
        self_pay_fen=priced.total("self_pay_fen") + priced.total("charity_subsidy_fen"),
        booked_by_id=new.actor_id,
        channel=new.channel,
        standing_order_id=new.standing_order_id,
    )


def _line_values(priced: Priced) -> list[dict[str, Any]]:
    """A booking's lines' rows before its hold (as ``_booking_values``), each with a new id."""
    return [
        dict(
            id=uuid.uuid4(),
            menu_item_id=pl.item.id,
            item_name=pl.item.name,
            quantity=pl.quantity,
            unit_price_fen=pl.item.price_fen,
            is_elder_meal=pl.is_elder_meal,
            list_price_fen=pl.list_price_fen,
            gov_subsidy_fen=pl.gov_subsidy_fen,
            charity_subsidy_fen=0,
            delivery_fee_fen=pl.delivery_fee_fen,
            self_pay_fen=pl.self_pay_fen + pl.charity_subsidy_fen,
        )
        for pl in priced.lines
    ]


async def _confirm(session: AsyncSession, bookings: list[tuple[Context, Booking]]) -> None:
    """The booking-confirmed messages of bookings whose amounts are final, written with their send jobs'
    outbox rows. Only for bookings that are their requests' whole transaction: a failure after this rolls
    everything back and drops the jobs."""
    if bookings:
        messages = [BookingMessage(b, ctx.canteen, ctx.elder, ctx.family_user_ids) for ctx, b in bookings]
        await queue_many_booking_messages(session, kind="booking_confirmed", messages=messages)


# ---------------------------------------------------------------- the service


class BookingService:
    # ------------------------------------------------------------ shared checks

    async def _channel_for(
        self, session: AsyncSession, subject: Subject, elder_id: uuid.UUID, canteen_id: uuid.UUID
    ) -> tuple[Elder, str]:
        """Who may book for this elder, and through which channel: the elder (self), a bound family member
        (proxy), or an operator of the canteen taking a phone order (phone)."""
        repo = ElderRepository(session)
        elder = await repo.get_actable(subject, elder_id)
        if elder is not None:
            return elder, Channel.self_.value if elder.user_id == subject.user_id else Channel.proxy.value
        if subject.operates(canteen_id):
            elder = await repo.get(elder_id)
            if elder is not None:
                return elder, Channel.phone.value
        raise NotFound("找不到这位长者", code="ElderNotFound")

    async def _context(
        self,
        session: AsyncSession,
        *,
        elder_id: uuid.UUID,
        caller: Subject | None,
        canteen_id: uuid.UUID,
        service_date: date,
        slot: str,
        items: list[ItemRequest],
        mode: str,
        at: datetime,
        enforce_cutoff: bool = True,
    ) -> Context:
        """Everything the booking is decided from, in one read with the elder. ``caller``: the request's
        subject, who must be the elder, bound family or an operator of the canteen (``_channel_for``'s rule,
        which names the channel); None when the caller has already shown it may book for the elder (a walk-in
        at the counter, a standing order)."""
        meal = MealRequest(elder_id, caller, canteen_id, service_date, slot, items, mode)
        (ctx,) = await self._contexts(session, [meal], at=at, enforce_cutoff=enforce_cutoff)
        if isinstance(ctx, SangyuError):
            raise ctx
        return ctx

    async def _contexts(
        self,
        session: AsyncSession,
        meals: Sequence[MealRequest],
        *,
        at: datetime,
        enforce_cutoff: bool = True,
    ) -> list[Context | SangyuError]:
        """``_context`` for several bookings, their meals read in one statement: each one's context, or its
        refusal."""
        asks = [
            MealAsk(
                m.canteen_id,
                m.service_date,
                m.slot,
                [i.menu_item_id for i in m.items],
                elder_id=m.elder_id,
                user_id=None if m.caller is None else m.caller.user_id,
                staff=m.caller is None or m.caller.operates(m.canteen_id),
                pool_codes=meal_pools(m.canteen_id),
            )
            for m in meals
        ]
        out: list[Context | SangyuError] = []
        for meal, setting in zip(meals, await BookingRepository(session).meal_settings(asks), strict=True):
            try:
                out.append(await self._decide(session, meal, setting, at=at, enforce_cutoff=enforce_cutoff))
            except SangyuError as exc:
                out.append(exc)
        return out

    async def _decide(
        self,
        session: AsyncSession,
        meal: MealRequest,
        setting: MealSetting | None,
        *,
        at: datetime,
        enforce_cutoff: bool,
    ) -> Context:
        """One booking's checks against its meal's look-up (None: no active canteen): its context, or its
        refusal raised."""
        caller, elder_id, canteen_id = meal.caller, meal.elder_id, meal.canteen_id
        service_date, items, mode = meal.service_date, meal.items, meal.mode
        if setting is None:
            if caller is not None:  # the elder's refusal comes first, as it did before the canteen was read
                await self._channel_for(session, caller, elder_id, canteen_id)
            raise NotFound("找不到这个食堂", code="CanteenNotFound")
        elder = setting.elder
        if elder is None:
            raise NotFound("找不到这位长者", code="ElderNotFound")
        channel = None
        if caller is not None:
            if elder.user_id == caller.user_id:
                channel = Channel.self_.value
            else:
                bound = caller.user_id in setting.family_user_ids
                channel = Channel.proxy.value if bound else Channel.phone.value
        canteen, slot_cfg = setting.canteen, setting.slot
        if slot_cfg is None or not slot_cfg.is_active:
            raise Conflict("这个食堂不供应该餐次", code="SlotNotServed")
        today = business_date(at)
        if service_date < today:
            raise BadRequest("不能预订已经过去的日期", code="DateInPast")
        if service_date > today + timedelta(days=MAX_DAYS_AHEAD):
            raise BadRequest(f"最多提前 {MAX_DAYS_AHEAD} 天订餐", code="DateTooFar")
        cutoff_at = cutoff_for(slot_cfg, service_date)
        if enforce_cutoff and at >= cutoff_at:
            raise Conflict(
                f"已过订餐截止时间（{_fmt(cutoff_at)}），如需用餐请到食堂窗口",
                code="BookingClosed",
                detail={"cutoff_at": cutoff_at.isoformat()},
            )
        menu, found = setting.menu, setting.items
        if menu is None:
            raise Conflict("这一餐的菜单还没有发布", code="MenuNotPublished")
        missing = [str(i.menu_item_id) for i in items if i.menu_item_id not in found]
        if missing:
            raise Conflict(
                "所选菜品不在当前菜单上（菜单可能已更新），请刷新后重选",
                code="MenuItemNotFound",
                detail={"menu_item_ids": missing},
            )
        if mode == "delivery":
            if not canteen.delivery_enabled:
                raise Conflict("这个食堂不提供送餐", code="DeliveryUnavailable")
            if elder.address_enc is None:
                raise Conflict("长者没有登记住址，无法送餐", code="AddressRequired")
        return Context(
            elder=elder,
            canteen=canteen,
            slot=slot_cfg,
            menu=menu,
            service_date=service_date,
            items=[(found[i.menu_item_id], i.quantity) for i in items],
            mode=mode,
            cutoff_at=cutoff_at,
            serve_start_at=shanghai_datetime(service_date, slot_cfg.serve_start),
            serve_end_at=shanghai_datetime(service_date, slot_cfg.serve_end),
            subsidized_today=setting.subsidized_today,
            charity_free_fen=setting.charity_free_fen,
            channel=channel,
            family_user_ids=setting.family_user_ids,
            policy=setting.policy,
            tiers=setting.tiers,
        )

    async def _out(self, session: AsyncSession, booking: Booking) -> BookingOut:
        lines = await BookingRepository(session).lines([booking.id])
        return booking_out(booking, lines[booking.id])

    # ------------------------------------------------------------ quote

    async def quote(self, session: AsyncSession, subject: Subject, payload: BookingRequest) -> QuoteOut:
        at = now()
        ctx = await self._context(
            session,
            elder_id=payload.elder_id,
            caller=subject,
            canteen_id=payload.canteen_id,
            service_date=payload.date,
            slot=payload.slot.value,
            items=payload.items,
            mode=payload.mode.value,
            at=at,
        )
        priced = price(ctx, already_subsidized=ctx.subsidized_today)
        return QuoteOut(
            elder_id=ctx.elder.id,
            canteen_id=ctx.canteen.id,
            date=ctx.service_date,
            slot=ctx.slot.slot,
            mode=ctx.mode,
            subsidized=priced.subsidized,
            tier_name=priced.tier_name,
            charity_eligible=priced.charity_eligible,
            charity_shortfall_fen=priced.charity_shortfall_fen,
            cutoff_at=ctx.cutoff_at,
            lines=[ln.out() for ln in priced.lines],
            notes=priced.notes,
            list_price_fen=priced.total("list_price_fen"),
            gov_subsidy_fen=priced.total("gov_subsidy_fen"),
            charity_subsidy_fen=priced.total("charity_subsidy_fen"),
            delivery_fee_fen=priced.total("delivery_fee_fen"),
            self_pay_fen=priced.total("self_pay_fen"),
        )

    # ------------------------------------------------------------ book

    async def book(
        self,
        session: AsyncSession,
        open_session: SessionFactory,
        subject: Subject,
        payload: BookingRequest,
        idempotency_key: str | None,
    ) -> tuple[BookingOut, bool]:
        """Returns the booking and whether this call created it (False: a replay of the same key).

        ``session``, the request's, has authenticated the caller; the booking is made in a transaction of
        ``open_session`` together with this process's other booking requests waiting at that moment
        (``booking_batch``, group commit), each answered as if it had been alone."""
        ask = _ask(subject, payload, idempotency_key)
        await session.commit()  # nothing of the request's own: its connection is not held while it waits
        return await booking_batch.submit(open_session, ask)

    async def book_many(
        self, session: AsyncSession, asks: Sequence[BookingAsk]
    ) -> list[tuple[BookingOut, bool] | Exception | Again[BookingAsk]]:
        """Booking requests in ``session``'s transaction, which the caller commits right after, in a constant
        number of statements. For each: its booking and whether this call made it (False: a replay of its key),
        or its refusal (nothing of it is written), or ``Again`` for a request to run after this batch's commit:
        one whose key an earlier one of the batch also has (it is then that one's replay), or one the slot has
        room for on its own but not after the batch's earlier requests for it (it is then booked or refused as
        the slot stands; without this, the last seats' batch failed its commit and ran again one request at a
        time).

        The first statement claims every request's key unless its slot is full or left for later; the next looks
        up their meals, each booking is decided from its own, and a refused one's claim is taken back. The
        bookings are written with their lines in one statement, their confirmation messages in another. The
        slots' capacity and the items' stock are taken by the commit: a slot that another process's commit
        filled meanwhile fails it, and the batch is then run once more as a whole (``booking_batch``); an item
        sold out, or a slot filled again, and it is run one request at a time."""
        results: list[tuple[BookingOut, bool] | Exception | Again[BookingAsk] | None] = [None] * len(asks)
        first: list[int] = []
        keys: set[tuple[str, str]] = set()
        for i, ask in enumerate(asks):
            if (ask.room.owner, ask.room.key) in keys:
                results[i] = Again(ask)
            else:
                keys.add((ask.room.owner, ask.room.key))
                first.append(i)
        repo = BookingRepository(session)
        claims = await repo.claim_unless_full(
            [asks[i].room for i in first],
            digests=[asks[i].digest for i in first],
            resource_ids=[asks[i].booking_id for i in first],
        )
        claimed: list[tuple[int, uuid.UUID]] = []
        for i, claim in zip(first, claims, strict=True):
            try:
                if claim.no_room:
                    raise _slot_full()
                if claim.later:
                    results[i] = Again(asks[i])
                elif claim.id is None:
                    results[i] = (await self._replay(session, asks[i]), False)
                else:
                    claimed.append((i, claim.id))
            except SangyuError as exc:
                results[i] = exc
        meals = [
            MealRequest(
                p.elder_id, asks[i].subject, p.canteen_id, p.date, p.slot.value, p.items, p.mode.value
            )
            for i, _ in claimed
            for p in (asks[i].payload,)
        ]
        contexts = await self._contexts(session, meals, at=now()) if meals else []
        new: list[tuple[int, NewBooking]] = []
        refused: list[uuid.UUID] = []
        for (i, claim_id), ctx in zip(claimed, contexts, strict=True):
            if isinstance(ctx, SangyuError):
                results[i] = ctx
                refused.append(claim_id)
                continue
            assert ctx.channel is not None  # named for a caller
            new.append(
                (i, NewBooking(ctx, asks[i].subject.user_id, ctx.channel, booking_id=asks[i].booking_id))
            )
        if refused:
            await repo.unclaim(refused)
        made = await self._create_many(
            session, [n for _, n in new], callers=[asks[i].subject for i, _ in new]
        )
        for (i, _), (booking, lines) in zip(new, made, strict=True):
            results[i] = (booking_out(booking, lines), True)
        answered = [r for r in results if r is not None]
        assert len(answered) == len(asks)  # every request is a replay, a refusal, Again or a booking
        return answered

    async def _replay(self, session: AsyncSession, ask: BookingAsk) -> BookingOut:
        """The booking a replay of ``ask``'s key made, or the refusal of a key used for another request."""
        room = ask.room
        claim = await idempotency.existing(
            session, scope=room.scope, owner=room.owner, key=room.key, digest=ask.digest
        )
        assert claim.existing_id is not None  # existing() raises for a key that names nothing yet
        existing = await BookingRepository(session).get_readable(ask.subject, claim.existing_id)
        if existing is None:
            raise NotFound("找不到这笔订餐", code="BookingNotFound")
        return await self._out(session, existing)

    async def book_as_caller(
        self, open_session: SessionFactory, token: str, payload: BookingRequest, idempotency_key: str | None
    ) -> tuple[Subject, tuple[BookingOut, bool]]:
        """``book`` for the booking front, from the bearer ``token``: its caller and the booking (whether this
        call created it). The caller's session is looked up, and, for a request with a valid key, whether its
        slot has room for it (as ``claim_unless_full`` refuses it), in one statement for the process's booking requests waiting at
        that moment (``caller_batch``), a plain read in a session of ``open_session``. An unknown, expired or
        revoked token is a 401; a slot with no room a 409, as ``book`` refuses it; otherwise the booking goes
        to ``booking_batch``. The errors come in ``book``'s order: the token first, then the key."""
        try:
            room = _room_ask(payload, owner="", key=idempotency.require_key(idempotency_key))
        except BadRequest:
            room = None  # refused by ``_ask`` below, once the token is known
        rows = await caller_batch.submit(open_session, CallerAsk(token_hash(token), room))
        subject = subject_of(rows)
        if subject is None:
            raise invalid_token()
        if room is not None and rows[0].no_room:
            raise _slot_full()
        return subject, await booking_batch.submit(open_session, _ask(subject, payload, idempotency_key))

    async def _create(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        actor_id: uuid.UUID | None,
        channel: str,
        standing_order_id: uuid.UUID | None = None,
    ) -> tuple[Booking, list[BookingLine]]:
        """A walk-in's or a standing order's day's booking: ``_create_many`` for one, which takes its capacity,
        stock and hold at once."""
        ((booking, lines),) = await self._create_many(
            session, [NewBooking(ctx, actor_id, channel, standing_order_id=standing_order_id)]
        )
        return booking, lines

    async def _create_many(
        self, session: AsyncSession, new: Sequence[NewBooking], *, callers: Sequence[Subject] | None = None
    ) -> list[tuple[Booking, list[BookingLine]]]:
        """Insert the bookings and their lines, then take the slots' capacity, the items' stock and the charity
        holds: the rows every booking of a slot shares, locked from there to the commit. Returns each booking
        with its lines (elder's meal first), in the order given.

        ``callers``: booking requests' subjects, one per booking. Their transaction commits right after, so
        capacity and stock are taken by the commit itself, and a refusal then comes from the commit
        (``unit_of_work``); before those locks this writes what the requests write besides: the audit record of
        a booking staff took by phone, and the confirmation messages once the amounts are final (for a booking
        drawing on donated money, once its hold is placed, which takes the capacity and stock first). None (a
        walk-in; a standing order's day, inside its savepoint): a full slot is refused from a plain read first,
        capacity and stock are taken here, and a full slot or a sold-out item raises from this call."""
        repo = BookingRepository(session)
        if callers is None:
            # refused from a plain read, without waiting for the row lock; what actually guards capacity is
            # the conditional UPDATE of the capacity trigger (SET CONSTRAINTS below, or the commit)
            for n in new:
                if not await repo.slot_has_room(
                    n.ctx.canteen.id, n.ctx.service_date, n.ctx.slot.slot, n.meals
                ):
                    raise _slot_full()
        priced = [price(n.ctx, already_subsidized=n.ctx.subsidized_today) for n in new]
        if session.new or session.dirty or session.deleted:  # the caller's own rows go first
            with refusals_as_errors():
                await session.flush()
        ids = [n.booking_id or uuid.uuid4() for n in new]
        written: dict[int, tuple[Booking, list[BookingLine]]] = {}
        # Written in the order of their slots: the capacity triggers lock the slots' rows in the order the
        # bookings were written, so two transactions never wait for each other's slots the other way round.
        pending = sorted(range(len(new)), key=lambda i: new[i].slot_key)
        for _attempt in range(8):
            # A unique index may refuse a booking: today's subsidized meal was taken first (possibly at another
            # canteen, possibly by a transaction that just committed, possibly by a booking of this batch), or
            # the serve code is taken at this canteen that day. ON CONFLICT DO NOTHING (every unique index of
            # bookings is one of those two) says so without a savepoint, and its lines are not written; then
            # look which.
            values = [_booking_values(new[i], priced[i], ids[i]) for i in pending]
            lines = [_line_values(priced[i]) for i in pending]
            # refusals: once SET CONSTRAINTS … IMMEDIATE has run in this transaction, inserts fire them
            with refusals_as_errors():
                got = await repo.add_with_lines(values, lines)
            for i, one in zip(pending, got, strict=True):
                if one is not None:
                    written[i] = one
            pending = [i for i in pending if i not in written]
            if not pending:
                break
            for i in pending:
                ctx = new[i].ctx
                if priced[i].subsidized and await repo.has_subsidized_meal(ctx.elder.id, ctx.service_date):
                    priced[i] = price(ctx, already_subsidized=True)
                # otherwise the serve code was taken: the next attempt draws another
        if pending:
            raise Conflict("系统繁忙，请稍后再试", code="BookingRetry")
        if callers is not None:
            for i, n in enumerate(new):
                if n.channel in STAFF_CHANNELS:
                    await self._audit_booking(session, callers[i], written[i][0], "booking.create")
        holds = [
            (i, pl, line)
            for i in range(len(new))
            for pl, line in zip(priced[i].lines, written[i][1], strict=True)
            if pl.charity_subsidy_fen > 0
        ]
        drawing = {i for i, _, _ in holds}
        if callers is not None:
            await _confirm(
                session, [(new[i].ctx, written[i][0]) for i in range(len(new)) if i not in drawing]
            )
        # The shared rows last, so their locks are held from there to the commit only. Lock order everywhere:
        # the slots' capacity rows, then items, then the charity pools (ledger order). The slots' capacity and
        # the limited items' stock are taken by constraint triggers on the rows inserted above (migration
        # 0014), which PostgreSQL fires at the commit: a booking that waits for its slot waits only for the
        # commits ahead of it. Bookings that draw on donated money fire them now, before the pools.
        if holds or callers is None:
            with refusals_as_errors():
                await session.execute(text(f"SET CONSTRAINTS {RESERVING_TRIGGERS} IMMEDIATE"))
        if holds:
            metas = {
                i: charity.meal_meta(
                    service_date=new[i].ctx.service_date,
                    slot=new[i].ctx.slot.slot,
                    canteen_id=new[i].ctx.canteen.id,
                    canteen_name=new[i].ctx.canteen.name,
                    birth_date=new[i].ctx.elder.birth_date,
                )
                for i in drawing
            }
            held = await charity.place_holds(
                session,
                [
                    charity.MealHold(line.id, new[i].ctx.canteen.id, pl.charity_subsidy_fen, metas[i])
                    for i, pl, line in holds
                ],
            )
            for i, pl, line in holds:
                amount = max(0, min(held[line.id], pl.charity_subsidy_fen))
                if amount:
                    booking = written[i][0]
                    line.charity_subsidy_fen = amount
                    line.self_pay_fen -= amount
                    booking.charity_subsidy_fen += amount
                    booking.self_pay_fen -= amount
            await session.flush()
            if callers is not None:
                await _confirm(session, [(new[i].ctx, written[i][0]) for i in sorted(drawing)])
        return [
            (booking, sorted(lines, key=lambda ln: (not ln.is_elder_meal, str(ln.id))))
            for booking, lines in (written[i] for i in range(len(new)))
        ]

    # ------------------------------------------------------------ read

    async def get(self, session: AsyncSession, subject: Subject, booking_id: uuid.UUID) -> BookingOut:
        booking = await BookingRepository(session).get_readable(subject, booking_id)
        if booking is None:
            raise NotFound("找不到这笔订餐", code="BookingNotFound")
        return await self._out(session, booking)

    async def list_bookings(
        self,
        session: AsyncSession,
        subject: Subject,
        *,
        elder_id: uuid.UUID | None,
        cursor: str | None,
        limit: int,
    ) -> Page[BookingOut]:
        if elder_id is not None and await ElderRepository(session).get_actable(subject, elder_id) is None:
            raise NotFound("找不到这位长者", code="ElderNotFound")
        after = decode_cursor_as(
            cursor,
            lambda raw: (
                date.fromisoformat(raw["d"]),
                datetime.fromisoformat(raw["t"]),
                uuid.UUID(raw["id"]),
            ),
        )
        repo = BookingRepository(session)
        rows = await repo.list_for_elders(subject, elder_id=elder_id, limit=limit + 1, after=after)
        page = list(rows[:limit])
        lines = await repo.lines([b.id for b in page])
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = encode_cursor(
                {"d": last.service_date.isoformat(), "t": last.created_at.isoformat(), "id": str(last.id)}
            )
        return Page[BookingOut](items=[booking_out(b, lines[b.id]) for b in page], next_cursor=next_cursor)

    # ------------------------------------------------------------ cancel

    async def cancel(
        self, session: AsyncSession, subject: Subject, booking_id: uuid.UUID, payload: CancelRequest
    ) -> BookingOut:
        repo = BookingRepository(session)
        booking = await repo.get_readable(subject, booking_id, for_update=True)
        if booking is None:
            raise NotFound("找不到这笔订餐", code="BookingNotFound")
        is_operator = subject.operates(booking.canteen_id)
        is_family = await ElderRepository(session).get_actable(subject, booking.elder_id) is not None
        if not (is_operator or is_family):
            raise NotFound("找不到这笔订餐", code="BookingNotFound")
        if booking.status != "confirmed":
            raise Conflict(
                {
                    "cancelled": "这笔订餐已经取消了",
                    "served": "这份餐已经领取，不能取消",
                    "no_show": "这一餐已经结束，不能取消",
                }.get(booking.status, "这笔订餐不能取消"),
                code="BookingNotCancellable",
                detail={"status": booking.status},
            )
        at = now()
        by_canteen = False
        if at >= booking.cutoff_at or (is_operator and not is_family):
            if not is_operator:
                raise Conflict(
                    f"已过退餐截止时间（{_fmt(booking.cutoff_at)}），如需取消请联系食堂", code="CancelClosed"
                )
            by_canteen = True
            reason = (payload.reason or "").strip()
            if len(reason) < 2:
                raise BadRequest("食堂取消订餐需要填写原因", code="ReasonRequired")
        if by_canteen:
            channel = Channel.counter.value
        elif await self._is_self(session, subject, booking.elder_id):
            channel = Channel.self_.value
        else:
            channel = Channel.proxy.value
        ok = await repo.transition(
            booking.id,
            to="cancelled",
            cancelled_at=at,
            cancelled_by_id=subject.user_id,
            cancel_channel=channel,
            cancel_reason=(payload.reason or "").strip() or None,
        )
        if not ok:
            raise Conflict("这笔订餐的状态刚刚变了，请刷新", code="BookingNotCancellable")
        await self._release(session, booking)
        booking = await repo.get_for_update(booking.id)
        assert booking is not None
        if by_canteen:
            await self._audit_booking(
                session, subject, booking, "booking.cancel", before={"status": "confirmed"}
            )
            elder = await ElderRepository(session).get(booking.elder_id)
            canteen = await CanteenRepository(session).get(booking.canteen_id)
            assert elder is not None and canteen is not None
            await queue_booking_messages(
                session,
                kind="cancelled_by_canteen",
                booking=booking,
                canteen=canteen,
                elder=elder,
                reason=booking.cancel_reason,
            )
        return await self._out(session, booking)

    async def _is_self(self, session: AsyncSession, subject: Subject, elder_id: uuid.UUID) -> bool:
        elder = await ElderRepository(session).get(elder_id)
        return elder is not None and elder.user_id == subject.user_id

    async def _release(self, session: AsyncSession, booking: Booking, *, capacity: bool = True) -> None:
        repo = BookingRepository(session)
        lines = (await repo.lines([booking.id]))[booking.id]
        if capacity:
            await repo.release_capacity(booking.canteen_id, booking.service_date, booking.slot, booking.meals)
            for line in sorted(lines, key=lambda ln: ln.menu_item_id):
                await repo.release_stock(line.menu_item_id, line.quantity)
        for line in lines:
            if line.is_elder_meal:
                await charity.on_released(session, booking_line_id=line.id)

    # ------------------------------------------------------------ serve (核销)

    async def serve(
        self, session: AsyncSession, subject: Subject, canteen_id: uuid.UUID, payload: ServeRequest
    ) -> BookingOut:
        canteen = await require_operated_canteen(session, subject, canteen_id)
        if not subject.operates(canteen_id):
            raise Forbidden("只有本食堂的工作人员可以核销", code="NotYourCanteen")
        try:
            parsed = parse(payload.code)
        except BadCode as exc:
            raise BadRequest(str(exc), code="InvalidServeCode") from exc
        at = now()
        today = business_date(at)
        repo = BookingRepository(session)
        if parsed.serve_code is not None:
            booking = await repo.find_by_code(canteen.id, parsed.serve_code, today)
            if booking is None:
                raise NotFound("没有找到这个取餐码，请核对", code="ServeCodeNotFound")
        else:
            assert parsed.booking_id is not None
            booking = await repo.get_for_update(parsed.booking_id)
            if booking is None:
                raise NotFound("没有找到这笔订餐", code="ServeCodeNotFound")
            if booking.canteen_id != canteen.id:
                raise Conflict("这不是本食堂的订餐", code="WrongCanteen")
        self._check_servable(booking, at)
        await self._mark_served(
            session,
            subject,
            booking,
            at,
            method="code" if parsed.serve_code else "qr",
            self_pay_method=payload.self_pay_method,
        )
        return await self._out(session, booking)

    def _check_servable(self, booking: Booking, at: datetime) -> None:
        if booking.status == "served":
            raise Conflict(
                "这份餐已经领取过了",
                code="AlreadyServed",
                detail={"served_at": booking.served_at.isoformat() if booking.served_at else None},
            )
        if booking.status == "cancelled":
            raise Conflict("这笔订餐已经取消，不能领取", code="BookingCancelled")
        if booking.status == "no_show":
            raise Conflict("这一餐的供餐时间已结束", code="BookingExpired")
        if booking.service_date != business_date(at):
            raise Conflict(f"这是 {booking.service_date:%m月%d日} 的订餐，不是今天的", code="WrongDay")
        if at < booking.serve_start_at or at > booking.serve_end_at:
            raise Conflict(
                f"现在不在供餐时间内（{_fmt(booking.serve_start_at)} 至 {booking.serve_end_at.astimezone(SHANGHAI):%H:%M}）",
                code="OutsideServingWindow",
            )

    async def _mark_served(
        self,
        session: AsyncSession,
        subject: Subject,
        booking: Booking,
        at: datetime,
        *,
        method: str,
        self_pay_method: str,
    ) -> None:
        repo = BookingRepository(session)
        ok = await repo.transition(
            booking.id,
            to="served",
            served_at=at,
            served_by_id=subject.user_id,
            serve_method=method,
            self_pay_method="none" if booking.self_pay_fen == 0 else self_pay_method,
        )
        if not ok:
            raise Conflict("这份餐已经领取过了", code="AlreadyServed")
        await session.refresh(booking)
        for line in (await repo.lines([booking.id]))[booking.id]:
            if line.is_elder_meal:
                await charity.on_served(session, booking_line_id=line.id)
                if line.charity_subsidy_fen > 0:  # public feed: "N 份午餐 爱心善款资助" (app/feed)
                    await feed_service.record_meal_funded(
                        session,
                        canteen_id=booking.canteen_id,
                        service_date=booking.service_date,
                        slot=booking.slot,
                        amount_fen=line.charity_subsidy_fen,
                    )
        await audit.record(
            session,
            actor_user_id=subject.user_id,
            actor_label=subject.label,
            action="booking.serve",
            target_type="booking",
            target_id=booking.id,
            before={"status": "confirmed"},
            after={
                "status": "served",
                "method": method,
                "self_pay_method": booking.self_pay_method,
                "self_pay_fen": booking.self_pay_fen,
            },
            channel=Channel.counter.value,
        )

    # ------------------------------------------------------------ walk-ins

    async def walk_in(
        self, session: AsyncSession, subject: Subject, canteen_id: uuid.UUID, payload: WalkInRequest
    ) -> BookingOut:
        canteen = await require_operated_canteen(session, subject, canteen_id)
        if not subject.operates(canteen_id):
            raise Forbidden("只有本食堂的工作人员可以登记窗口就餐", code="NotYourCanteen")
        elder = await ElderRepository(session).get_by_id_hmac(id_hmac(payload.id_number))
        if elder is None:
            raise NotFound("这个身份证号还没有登记，请先为长者登记", code="ElderNotFound")
        at = now()
        ctx = await self._context(
            session,
            elder_id=elder.id,
            caller=None,
            canteen_id=canteen.id,
            service_date=business_date(at),
            slot=payload.slot.value,
            items=payload.items,
            mode=payload.mode,
            at=at,
            enforce_cutoff=False,
        )
        if at < ctx.serve_start_at or at > ctx.serve_end_at:
            raise Conflict("现在不在该餐次的供餐时间内", code="OutsideServingWindow")
        booking, _ = await self._create(session, ctx, actor_id=subject.user_id, channel=Channel.counter.value)
        await self._audit_booking(session, subject, booking, "booking.walk_in")
        await self._mark_served(
            session, subject, booking, at, method="walk_in", self_pay_method=payload.self_pay_method
        )
        return await self._out(session, booking)

    # ------------------------------------------------------------ roster

    async def roster(
        self, session: AsyncSession, subject: Subject, canteen_id: uuid.UUID, service_date: date, slot: str
    ) -> RosterOut:
        canteen = await require_operated_canteen(session, subject, canteen_id)
        repo = BookingRepository(session)
        rows = await repo.roster(canteen.id, service_date, slot)
        lines = await repo.lines([b.id for b, _ in rows])
        days = await MenuRepository(session).slot_days(canteen.id, service_date, service_date)
        slot_day: SlotDay | None = days.get((service_date, slot))
        status_counts: Counter[str] = Counter()
        items: Counter[str] = Counter()
        diets: Counter[str] = Counter()
        allergens: Counter[str] = Counter()
        bookings: list[RosterBooking] = []
        deliveries: list[RosterDelivery] = []
        for booking, elder in rows:
            status_counts[booking.status] += 1
            booking_items = [RosterItem(name=ln.item_name, quantity=ln.quantity) for ln in lines[booking.id]]
            live = booking.status in ("confirmed", "served")
            if live:
                for it in booking_items:
                    items[it.name] += it.quantity
                for tag in elder.diet_tags:
                    diets[tag] += 1
                for a in elder.allergens:
                    allergens[a] += 1
            bookings.append(
                RosterBooking(
                    id=booking.id,
                    elder_name=mask_name(elder.name),
                    status=booking.status,
                    mode=booking.mode,
                    meals=booking.meals,
                    items=booking_items,
                    diet_tags=list(elder.diet_tags),
                    allergens=list(elder.allergens),
                    self_pay_fen=booking.self_pay_fen,
                )
            )
            if booking.mode == "delivery" and booking.status == "confirmed":
                deliveries.append(
                    RosterDelivery(
                        booking_id=booking.id,
                        elder_name=elder.name,
                        phone=decrypt_phone(elder),
                        address=decrypt_address(elder),
                        items=booking_items,
                        self_pay_fen=booking.self_pay_fen,
                    )
                )
        return RosterOut(
            canteen_id=canteen.id,
            date=service_date,
            slot=slot,
            capacity=slot_day.capacity if slot_day else 0,
            booked_meals=slot_day.booked_meals if slot_day else 0,
            status_counts=dict(status_counts),
            items=[RosterItem(name=n, quantity=q) for n, q in items.most_common()],
            diet_tags=dict(diets),
            allergens=dict(allergens),
            bookings=bookings,
            deliveries=deliveries,
        )

    # ------------------------------------------------------------ standing orders

    async def create_standing_order(
        self, session: AsyncSession, subject: Subject, payload: StandingOrderIn
    ) -> StandingOrderOut:
        elder = await ElderRepository(session).get_actable(subject, payload.elder_id)
        if elder is None:
            raise NotFound("找不到这位长者", code="ElderNotFound")
        canteen = await CanteenRepository(session).get(payload.canteen_id, active_only=True)
        if canteen is None:
            raise NotFound("找不到这个食堂", code="CanteenNotFound")
        slot_cfg = await CanteenRepository(session).get_slot(canteen.id, payload.slot.value)
        if slot_cfg is None or not slot_cfg.is_active:
            raise Conflict("这个食堂不供应该餐次", code="SlotNotServed")
        if payload.mode.value == "delivery" and not canteen.delivery_enabled:
            raise Conflict("这个食堂不提供送餐", code="DeliveryUnavailable")
        so = StandingOrder(
            elder_id=elder.id,
            canteen_id=canteen.id,
            slot=payload.slot.value,
            weekdays=payload.weekdays,
            mode=payload.mode.value,
            item_name=payload.item_name,
            pause_until=payload.pause_until,
            is_active=True,
            created_by_id=subject.user_id,
            channel=Channel.self_.value if elder.user_id == subject.user_id else Channel.proxy.value,
        )
        session.add(so)
        await session.flush()
        return self._so_out(so, [])

    def _so_out(self, so: StandingOrder, runs: list[StandingOrderRun]) -> StandingOrderOut:
        return StandingOrderOut(
            id=so.id,
            elder_id=so.elder_id,
            canteen_id=so.canteen_id,
            slot=so.slot,
            weekdays=list(so.weekdays),
            mode=so.mode,
            item_name=so.item_name,
            pause_until=so.pause_until,
            is_active=so.is_active,
            channel=so.channel,
            runs=[
                StandingOrderRunOut(
                    date=r.service_date,
                    outcome=r.outcome,
                    reason_code=r.reason_code,
                    reason=r.reason,
                    booking_id=r.booking_id,
                )
                for r in runs
            ],
        )

    async def get_standing_order(
        self, session: AsyncSession, subject: Subject, so_id: uuid.UUID
    ) -> StandingOrderOut:
        repo = BookingRepository(session)
        so = await repo.readable_standing_order(subject, so_id)
        if so is None:
            raise NotFound("找不到这个长期订餐", code="StandingOrderNotFound")
        return self._so_out(so, list(await repo.standing_order_runs(so.id)))

    async def list_standing_orders(
        self, session: AsyncSession, subject: Subject, elder_id: uuid.UUID | None
    ) -> list[StandingOrderOut]:
        repo = BookingRepository(session)
        return [self._so_out(so, []) for so in await repo.list_standing_orders(subject, elder_id)]

    async def update_standing_order(
        self, session: AsyncSession, subject: Subject, so_id: uuid.UUID, payload: StandingOrderPatch
    ) -> StandingOrderOut:
        repo = BookingRepository(session)
        so = await repo.readable_standing_order(subject, so_id)
        if so is None:
            raise NotFound("找不到这个长期订餐", code="StandingOrderNotFound")
        changes = payload.model_dump(exclude_unset=True)
        for key in ("weekdays", "mode", "is_active"):
            if key in changes and changes[key] is None:
                raise BadRequest("修改的字段不能为空", code="NullField")
        for key, value in changes.items():
            setattr(so, key, value.value if hasattr(value, "value") else value)
        await session.flush()
        return self._so_out(so, list(await repo.standing_order_runs(so.id)))

    async def materialize_standing_orders(
        self, session: AsyncSession, *, at: datetime | None = None, horizon: timedelta = timedelta(hours=24)
    ) -> Counter[str]:
        """Turn standing orders into bookings for every date whose cutoff falls within ``horizon`` from now,
        under the same rules as any booking; record each date's outcome once."""
        at = at or now()
        today = business_date(at)
        repo = BookingRepository(session)
        outcomes: Counter[str] = Counter()
        for so in await repo.active_standing_orders():
            slot_cfg = await CanteenRepository(session).get_slot(so.canteen_id, so.slot)
            if slot_cfg is None:
                continue
            for offset in range(0, 9):
                day = today + timedelta(days=offset)
                if day.isoweekday() not in so.weekdays:
                    continue
                cutoff = cutoff_for(slot_cfg, day)
                if not (at < cutoff <= at + horizon):
                    continue
                if await repo.run_exists(so.id, day):
                    continue
                outcome = await self._materialize_one(session, so, day, at)
                outcomes[outcome] += 1
        return outcomes

    async def _materialize_one(
        self, session: AsyncSession, so: StandingOrder, day: date, at: datetime
    ) -> str:
        run = StandingOrderRun(standing_order_id=so.id, service_date=day)
        if so.pause_until is not None and day <= so.pause_until:
            run.outcome, run.reason_code, run.reason = (
                "skipped",
                "Paused",
                f"已暂停至 {so.pause_until:%m月%d日}",
            )
        else:
            try:
                async with session.begin_nested():
                    booking = await self._book_for_standing_order(session, so, day, at)
                run.outcome, run.booking_id = "booked", booking.id
            except SangyuError as exc:
                run.outcome, run.reason_code, run.reason = "skipped", exc.error_code, exc.message[:200]
        try:
            async with session.begin_nested():
                session.add(run)
                await session.flush()
        except IntegrityError:
            return "duplicate"
        return run.outcome

    async def _book_for_standing_order(
        self, session: AsyncSession, so: StandingOrder, day: date, at: datetime
    ) -> Booking:
        elder = await ElderRepository(session).get(so.elder_id)
        if elder is None:
            raise NotFound("找不到这位长者", code="ElderNotFound")
        menu = await MenuRepository(session).published(so.canteen_id, day, so.slot)
        if menu is None:
            raise Conflict("这一餐的菜单还没有发布", code="MenuNotPublished")
        items = await BookingRepository(session).all_menu_items(menu.id)
        chosen = next((i for i in items if so.item_name and i.name == so.item_name), None)
        chosen = (
            chosen or next((i for i in items if i.kind == "set_meal"), None) or (items[0] if items else None)
        )
        if chosen is None:
            raise Conflict("菜单上没有可订的菜品", code="MenuEmpty")
        ctx = await self._context(
            session,
            elder_id=elder.id,
            caller=None,
            canteen_id=so.canteen_id,
            service_date=day,
            slot=so.slot,
            items=[ItemRequest(menu_item_id=chosen.id, quantity=1)],
            mode=so.mode,
            at=at,
        )
        booking, _ = await self._create(
            session,
            ctx,
            actor_id=so.created_by_id,
            channel=Channel.standing_order.value,
            standing_order_id=so.id,
        )
        # after the booking, inside the caller's savepoint: a skipped day leaves no message behind
        await queue_booking_messages(
            session,
            kind="booking_confirmed",
            booking=booking,
            canteen=ctx.canteen,
            elder=elder,
            family_user_ids=ctx.family_user_ids,
        )
        return booking

    # ------------------------------------------------------------ jobs

    async def mark_no_shows(
        self, session: AsyncSession, *, at: datetime | None = None, batch: int = 1000
    ) -> int:
        """Confirmed bookings whose serving window has ended become no_show; their charity holds are voided.
        Capacity is not given back (the meal is over)."""
        at = at or now()
        repo = BookingRepository(session)
        missed = [
            booking.id
            for booking in await repo.due_no_shows(at, batch)
            if await repo.transition(booking.id, to="no_show", no_show_at=at)
        ]
        if missed:  # every missed meal's charity hold voided in one ledger batch
            lines = await repo.lines(missed)
            await charity.on_released_many(
                session, booking_line_ids=[ln.id for b in missed for ln in lines[b] if ln.is_elder_meal]
            )
        return len(missed)

    async def queue_reminders(self, session: AsyncSession, *, at: datetime | None = None) -> int:
        at = at or now()
        tomorrow = business_date(at) + timedelta(days=1)
        repo = BookingRepository(session)
        sent = 0
        for booking in await repo.confirmed_on(tomorrow):
            elder = await ElderRepository(session).get(booking.elder_id)
            canteen = await CanteenRepository(session).get(booking.canteen_id)
            if elder is None or canteen is None:
                continue
            sent += len(
                await queue_booking_messages(
                    session, kind="meal_reminder", booking=booking, canteen=canteen, elder=elder
                )
            )
        return sent

    # ------------------------------------------------------------ audit

    async def _audit_booking(
        self,
        session: AsyncSession,
        subject: Subject,
        booking: Booking,
        action: str,
        before: dict[str, object] | None = None,
    ) -> None:
        await audit.record(
            session,
            actor_user_id=subject.user_id,
            actor_label=subject.label,
            action=action,
            target_type="booking",
            target_id=booking.id,
            before=before,
            after={
                "status": booking.status,
                "elder_id": booking.elder_id,
                "canteen_id": booking.canteen_id,
                "date": booking.service_date.isoformat(),
                "slot": booking.slot,
                "self_pay_fen": booking.self_pay_fen,
                "reason": booking.cancel_reason,
            },
            channel=booking.cancel_channel or booking.channel,
        )


booking_service = BookingService()


async def _callers(
    session: AsyncSession, asks: list[CallerAsk]
) -> list[list[Row[Any]] | Exception | Again[CallerAsk]]:
    return list(await BookingRepository(session).callers(asks, scope=KEY_SCOPE, now=utcnow()))


# one per process: the booking front's requests' session look-ups, with their slots' room, in one statement
# (``BookingService.book_as_caller``)
caller_batch: RequestBatch[CallerAsk, list[Row[Any]]] = RequestBatch(
    "bookings.callers", _callers, max_batch=CALLERS_MAX, shared_failure=is_unavailable
)


def _filled_meanwhile(exc: Exception) -> bool:
    """A batch's commit refused for a slot's capacity: another process's commit took the seats its claims
    counted on. Run again, its claims count that commit (``BookingService.book_many``)."""
    return isinstance(exc, Conflict) and exc.error_code == "SlotFull"


async def _book_batch(
    session: AsyncSession, asks: list[BookingAsk]
) -> list[tuple[BookingOut, bool] | Exception | Again[BookingAsk]]:
    return await booking_service.book_many(session, asks)


# one per process: group commit of booking requests (``BookingService.book``)
booking_batch: RequestBatch[BookingAsk, tuple[BookingOut, bool]] = RequestBatch(
    "bookings.book",
    _book_batch,
    max_batch=BATCH_MAX,
    shared_failure=is_unavailable,
    retry_whole=_filled_meanwhile,
)
