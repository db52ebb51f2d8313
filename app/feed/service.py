"""The public side of the money: the feed, the transparency numbers, the live stream and the donor digest.

Writing: donation payments and refunds insert ``FeedEvent`` rows themselves (app/donations); the other kinds are
written here, by small calls from the service that makes the change, in its transaction:
``record_meal_funded`` (a served meal paid by donations; grows one event per canteen per day),
``record_settlement_paid``, ``record_reconciliation`` (one event per bill date, updated as its status
changes) and ``record_ledger_root`` (one per day).

Publishing: every feed event inserted or grown in a transaction is published on Redis (channel
``sangyu:feed:events``) and the cache version is bumped **after** that transaction commits, never before and
never for a rolled-back one (SQLAlchemy ``after_commit``). Feed pages and stats are cached under that version, so
a new event invalidates them at once; a short TTL bounds staleness if a publish is lost. In front of Redis each
process keeps what it served for ``FEED_LOCAL_CACHE_SECONDS`` (one second), so a burst of public reads costs
neither Redis nor PostgreSQL, and a stream of new events costs one rebuild per page per second in each process
rather than one per event. When that second is up, one task rebuilds the copy while readers keep getting the
one that just ran out (for at most ``LOCAL_STALE_SECONDS`` more), so no reader waits for a rebuild. A change is
therefore on every page within about a second, in every process alike; the live stream (``/feed/stream``) has it
at once. With Redis down every read comes from PostgreSQL and writes still succeed.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, object_session

from app import redis as app_redis
from app.config import get_settings
from app.db import SessionFactory
from app.donations.schemas import DonationOut
from app.exceptions import BadRequest
from app.feed.repository import FEE_ACCOUNT, GENERAL_MEAL_POOL, FeedRepository
from app.feed.schemas import (
    FEED_KINDS,
    CanteenStats,
    DayPoint,
    FeedItem,
    FeedPage,
    FeedStats,
    FundStats,
    MyDonationOut,
    Totals,
    TraceSummary,
)
from app.kit.crypto import mask_id_number, mask_phone
from app.kit.jsontext import json_text
from app.kit.locks import xact_lock
from app.kit.money import format_yuan
from app.kit.pagination import Page, decode_cursor, encode_cursor, invalid_cursor
from app.kit.time import business_date, shanghai_datetime, utcnow
from app.models import FeedEvent

log = structlog.get_logger("app.feed")


def _channel_name() -> str:
    """Pub/sub ignores Redis database numbers, so two deployments sharing one Redis server on different
    databases would hear each other's events: name the channel after the database."""
    from urllib.parse import urlsplit

    url = get_settings().REDIS_URL
    db = (urlsplit(url).path.strip("/") or "0") if url else "local"
    return f"sangyu:feed:events:{db}"


CHANNEL = _channel_name()
VERSION_KEY = "sangyu:feed:version"
CACHE_PREFIX = "sangyu:feed:cache"
PAGE_TTL_SECONDS = 60
LOCAL_STALE_SECONDS = 4.0  # how long past its second a copy may still be served while it is being rebuilt
LOCAL_MAX_ENTRIES = 2048
STATS_TTL_SECONDS = 30
STATS_KEY = "stats"
REDIS_TIMEOUT = 0.5  # seconds; a slow Redis must not hold up a public read or a committed write
ANONYMOUS = "爱心人士"
SLOT_NAMES = {"breakfast": "早餐", "lunch": "午餐", "dinner": "晚餐"}
RECON_TEXT = {
    "pending": "对账进行中",
    "matched": "与微信支付账单核对一致",
    "reconciled": "与微信支付账单核对一致",
    "discrepancy": "发现差异，正在核查",
    "under_review": "发现差异，正在核查",
    "resolved": "差异已核查处理",
}
DIGEST_TEMPLATE = "sangyu_donation_digest"
_PENDING = "sangyu.feed.pending"

# ---------------------------------------------------------------- what the public may see

_PUBLIC_KEYS: dict[str, tuple[str, ...]] = {
    "donation_paid": ("donor", "amount_fen", "meals", "target", "target_kind", "channel"),
    "donation_refunded": ("donor", "amount_fen", "target", "target_kind"),
    "meals_funded": ("canteen", "canteen_code", "district", "day", "meals", "amount_fen", "slots"),
    "settlement_paid": ("canteen", "canteen_code", "district", "month", "meals", "amount_fen"),
    "reconciliation": (
        "day",
        "status",
        "matched",
        "discrepancies",
        "bill_rows",
        "amount_fen",
        "refund_fen",
        "fee_fen",
    ),
    "ledger_root": ("day", "merkle_root", "entry_count"),
}
_PHONE = re.compile(r"1[3-9]\d{9}")
_ID_NUMBER = re.compile(r"\d{17}[\dXx]|\d{15}")
_LONG_DIGITS = re.compile(r"\d{7,}")


def public_name(name: Any) -> str:
    """A donor's chosen display name as the public sees it. Numbers that look like a phone or an ID number
    are masked even when typed as the name (people do that); anything not a string is 爱心人士."""
    if not isinstance(name, str) or not name.strip():
        return ANONYMOUS
    value = _ID_NUMBER.sub(lambda m: mask_id_number(m.group()), name.strip())
    value = _PHONE.sub(lambda m: mask_phone(m.group()), value)
    return _LONG_DIGITS.sub(lambda m: m.group()[:2] + "*" * (len(m.group()) - 4) + m.group()[-2:], value)


def _md(day: date) -> str:
    return f"{day.month}月{day.day}日"


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _text(kind: str, data: dict[str, Any], day: date) -> str:
    amount = _int(data.get("amount_fen"))
    money = format_yuan(amount) if amount is not None else ""
    if kind == "donation_paid":
        meals = _int(data.get("meals"))
        gift = f"{meals} 餐（{money}）" if meals else money
        return f"{data.get('donor', ANONYMOUS)} 为「{data.get('target', '')}」捐赠 {gift}"
    if kind == "donation_refunded":
        return (
            f"{data.get('donor', ANONYMOUS)} 的捐赠退回 {money}（「{data.get('target', '')}」尚未使用的部分）"
        )
    if kind == "meals_funded":
        slots = data.get("slots") or {}
        meals = _int(data.get("meals")) or 0
        if isinstance(slots, dict) and len(slots) == 1:
            what = f"{meals} 份{SLOT_NAMES.get(next(iter(slots)), '餐')}"
        else:
            what = f"{meals} 份餐"
        on = _day_of(data.get("day")) or day
        return f"{_md(on)} {data.get('district', '')}{data.get('canteen', '')} 爱心善款资助 {what} {money}"
    if kind == "settlement_paid":
        return f"{data.get('canteen', '')} {data.get('month', '')} 爱心助餐结算款 {money} 已支付（{data.get('meals', 0)} 份）"
    if kind == "reconciliation":
        on = _day_of(data.get("day")) or day
        status = RECON_TEXT.get(str(data.get("status")), "对账状态：" + str(data.get("status")))
        rows = _int(data.get("bill_rows"))
        return f"{_md(on)} 的捐款{status}" + (f"（账单 {rows} 笔）" if rows else "")
    if kind == "ledger_root":
        on = _day_of(data.get("day")) or day
        root = str(data.get("merkle_root", ""))
        return f"{_md(on)} 账本已封存：{data.get('entry_count', 0)} 笔记账，Merkle 根 {root[:16]}…"
    return kind


def _day_of(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _normalized(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The reconciliation service writes its own events (``bill_date``, ``open_discrepancies``)."""
    if kind == "reconciliation":
        payload = dict(payload)
        payload.setdefault("day", payload.get("bill_date"))
        if "discrepancies" not in payload and "open_discrepancies" in payload:
            payload["discrepancies"] = payload["open_discrepancies"]
    return payload


def public_item(event_id: int, kind: str, payload: dict[str, Any], occurred_at: datetime) -> FeedItem:
    payload = _normalized(kind, payload)
    data = {k: payload[k] for k in _PUBLIC_KEYS.get(kind, ()) if k in payload}
    if "donor" in data:
        data["donor"] = public_name(data["donor"])
    day = business_date(occurred_at)
    return FeedItem(
        id=event_id,
        kind=kind,
        occurred_at=occurred_at,
        day=day,
        text=_text(kind, data, day),
        amount_fen=_int(data.get("amount_fen")),
        meals=_int(data.get("meals")),
        data=data,
    )


def item_of(event_row: FeedEvent) -> FeedItem:
    return public_item(event_row.id, event_row.kind, event_row.payload, event_row.occurred_at)


# ---------------------------------------------------------------- publish after commit


def _queue(session: AsyncSession | Session, op: str, item: FeedItem) -> None:
    session.info.setdefault(_PENDING, []).append({"op": op, "event": item.model_dump(mode="json")})


def publish_after_commit(session: AsyncSession | Session, rows: Iterable[Any]) -> None:
    """Feed events inserted without the ORM (rows with ``id, kind, payload, occurred_at``): published after
    the commit like those the ORM inserts."""
    for row in rows:
        _queue(session, "new", public_item(row.id, row.kind, row.payload, row.occurred_at))


@event.listens_for(FeedEvent, "after_insert")
def _feed_event_inserted(mapper: Any, connection: Any, target: FeedEvent) -> None:
    session = object_session(target)
    if session is None:
        return
    occurred_at = target.__dict__.get("occurred_at") or utcnow()
    _queue(session, "new", public_item(target.id, target.kind, target.payload, occurred_at))


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, previous_transaction: Any) -> None:
    if not previous_transaction.nested:
        session.info.pop(_PENDING, None)


_background: set[asyncio.Task[None]] = set()


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    messages = session.info.pop(_PENDING, None)
    if not messages:
        return
    from sqlalchemy.util.concurrency import await_only, in_greenlet

    if in_greenlet():  # inside AsyncSession.commit(): finish publishing before the request returns
        try:
            await_only(publish(messages))
        except Exception as exc:  # publish() swallows Redis errors; never fail a committed transaction
            log.warning("feed_publish_failed", error=type(exc).__name__)
        return
    try:
        task = asyncio.get_running_loop().create_task(publish(messages))
    except RuntimeError:
        log.warning("feed_publish_no_loop", events=len(messages))
        return
    _background.add(task)
    task.add_done_callback(_background.discard)


class _Breaker:
    """After a Redis failure, skip Redis for a few seconds instead of paying a timeout on every request."""

    def __init__(self, cool_down: float = 5.0) -> None:
        self.cool_down = cool_down
        self.open_until = 0.0
        # a publish may have been lost while Redis was away: bump the cache version once it is back
        self.stale = False

    def available(self) -> bool:
        return time.monotonic() >= self.open_until

    def trip(self, exc: BaseException) -> None:
        self.open_until = time.monotonic() + self.cool_down
        self.stale = True
        log.warning("feed_redis_unavailable", error=type(exc).__name__)

    def reset(self) -> None:
        self.open_until = 0.0


breaker = _Breaker()


# The version's bump and every message's publish in one command. redis-py's pipeline builds, sends and parses
# each command of it in Python: for a payment batch of thirty events it cost about 500 µs of CPU, the script
# about 180 (in-process, one Redis on loopback).
_PUBLISH = app_redis.script(
    """
    redis.call('INCR', KEYS[1])
    for i = 2, #ARGV do
        redis.call('PUBLISH', ARGV[1], ARGV[i])
    end
    return #ARGV - 1
    """
)


async def publish(messages: list[dict[str, Any]]) -> None:
    """Bump the cache version and publish each message (a pipeline where the server runs no scripts). Never
    raises: a committed change stays committed."""
    try:
        client = app_redis.get_redis()
        texts = [json_text(message) for message in messages]

        async def pipelined() -> Any:
            async with client.pipeline(transaction=False) as pipe:
                pipe.incr(VERSION_KEY)
                for text in texts:
                    pipe.publish(CHANNEL, text)
                return await pipe.execute()

        await asyncio.wait_for(
            app_redis.run_script(client, _PUBLISH, [VERSION_KEY], [CHANNEL, *texts], pipelined),
            REDIS_TIMEOUT * 2,
        )
    except Exception as exc:
        breaker.trip(exc)


async def wait_published() -> None:
    """Tests and CLI: wait for publishes scheduled on the loop (outside a session commit)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)


# ---------------------------------------------------------------- cache


class _LocalCache:
    """This process's copy of recently served bodies: fresh for ``FEED_LOCAL_CACHE_SECONDS`` (0: no copies),
    then servable ``LOCAL_STALE_SECONDS`` longer while a rebuild is on its way."""

    def __init__(self, seconds: float | None = None) -> None:
        # key → (fresh until, body, the body's bytes: sent by the feed's front many times, encoded once here)
        self.entries: dict[str, tuple[float, str, bytes]] = {}
        self._seconds = seconds

    @property
    def seconds(self) -> float:
        return get_settings().FEED_LOCAL_CACHE_SECONDS if self._seconds is None else self._seconds

    def get(self, key: str) -> str | None:
        """The body while it is fresh."""
        hit = self._fresh(key)
        return None if hit is None else hit[1]

    def encoded(self, key: str, *, stale: bool) -> bytes | None:
        """The body's bytes while it is fresh, or (``stale``) while it may still be served as it is rebuilt."""
        hit = self._fresh(key) or (self._stale(key) if stale else None)
        return None if hit is None else hit[2]

    def _fresh(self, key: str) -> tuple[float, str, bytes] | None:
        hit = self.entries.get(key)
        return None if hit is None or hit[0] <= time.monotonic() else hit

    def get_stale(self, key: str) -> str | None:
        """The body, fresh or not, unless it is too old to serve even while it is being rebuilt."""
        hit = self._stale(key)
        return None if hit is None else hit[1]

    def _stale(self, key: str) -> tuple[float, str, bytes] | None:
        hit = self.entries.get(key)
        if hit is None:
            return None
        if hit[0] + LOCAL_STALE_SECONDS <= time.monotonic():
            self.entries.pop(key, None)
            return None
        return hit

    def put(self, key: str, body: str) -> None:
        seconds = self.seconds
        if seconds <= 0:
            return
        if len(self.entries) >= LOCAL_MAX_ENTRIES:
            self.entries.clear()
        self.entries[key] = (time.monotonic() + seconds, body, body.encode())

    def clear(self) -> None:
        self.entries.clear()


local_cache = _LocalCache()
_building: dict[tuple[int, str], asyncio.Future[str]] = {}
# builds run in a task of their own: a reader going away stops none
_build_tasks: set[asyncio.Task[None]] = set()


async def _cached(
    key: str, build: Callable[[AsyncSession], Awaitable[str]], ttl: int, open_session: SessionFactory
) -> str:
    """This process's copy, else Redis's (under the current version), else built from PostgreSQL and kept in
    both. Concurrent misses of one key in one process wait for a single build instead of each running it; a
    copy that has just run out is still served while one task rebuilds it."""
    body = local_cache.get(key)
    if body is not None:
        return body
    stale = local_cache.get_stale(key)
    flight = (id(asyncio.get_running_loop()), key)
    pending = _building.get(flight)
    if pending is None:
        pending = _start_build(flight, key, build, ttl, open_session)
    if stale is not None:  # the rebuild goes on without this reader
        return stale
    return await asyncio.shield(pending)


def servable(key: str) -> bytes | None:
    """What a reader may be given at once, as bytes: the fresh copy, or, while its rebuild is on its way, the
    copy that has just run out."""
    return local_cache.encoded(key, stale=(id(asyncio.get_running_loop()), key) in _building)


def _start_build(
    flight: tuple[int, str],
    key: str,
    build: Callable[[AsyncSession], Awaitable[str]],
    ttl: int,
    open_session: SessionFactory,
) -> asyncio.Future[str]:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    _building[flight] = future

    async def run() -> None:
        try:
            version = await _cache_version()
            body = await _cache_get(version, key) if version is not None else None
            if body is None:
                async with open_session() as session:
                    body = await build(session)
                await _cache_set(version, key, body, ttl)
            local_cache.put(key, body)
            future.set_result(body)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters (if any) re-raise it, nobody else has to
            if not isinstance(exc, Exception):
                raise
            log.warning("feed_cache_build_failed", key=key, error=type(exc).__name__)
        finally:
            _building.pop(flight, None)

    task = asyncio.get_running_loop().create_task(run())
    _build_tasks.add(task)
    task.add_done_callback(_build_tasks.discard)
    return future


async def _cache_get(version: str, key: str) -> str | None:
    if not breaker.available():
        return None
    try:
        value = await asyncio.wait_for(
            app_redis.get_redis().get(f"{CACHE_PREFIX}:{version}:{key}"), REDIS_TIMEOUT
        )
    except Exception as exc:
        breaker.trip(exc)
        return None
    return value if isinstance(value, str) else None


async def _cache_version() -> str | None:
    if not breaker.available():
        return None
    try:
        client = app_redis.get_redis()
        if breaker.stale:
            version = await asyncio.wait_for(client.incr(VERSION_KEY), REDIS_TIMEOUT)
            breaker.stale = False
            return str(version)
        return str(await asyncio.wait_for(client.get(VERSION_KEY), REDIS_TIMEOUT) or "0")
    except Exception as exc:
        breaker.trip(exc)
        return None


async def _cache_set(version: str | None, key: str, value: str, ttl: int) -> None:
    if version is None or not breaker.available():
        return
    try:
        await asyncio.wait_for(
            app_redis.get_redis().set(f"{CACHE_PREFIX}:{version}:{key}", value, ex=ttl), REDIS_TIMEOUT
        )
    except Exception as exc:
        breaker.trip(exc)


# ---------------------------------------------------------------- the service


class FeedService:
    # ------------------------------------------------------------ reading

    def _before(self, cursor: str | None) -> int | None:
        decoded = decode_cursor(cursor)
        if decoded is None:
            return None
        before = decoded.get("before")
        if type(before) is not int or before < 1:
            raise invalid_cursor()
        return before

    async def page_json(
        self, open_session: SessionFactory, *, cursor: str | None, limit: int, kind: str | None = None
    ) -> tuple[str, str]:
        """A feed page's cache key and the page as JSON text (what the endpoint sends), from the cache when it
        is fresh. PostgreSQL is asked (in a read transaction of its own) only when neither this process nor Redis
        has it. Refuses an unknown kind or a bad cursor."""
        if kind is not None and kind not in FEED_KINDS:
            raise BadRequest("不认识的动态类型", code="UnknownFeedKind", detail={"kinds": list(FEED_KINDS)})
        before = self._before(cursor)
        key = f"page:{before or 0}:{limit}:{kind or ''}"

        async def build(session: AsyncSession) -> str:
            page = await self.page(session, before=before, limit=limit, kind=kind)
            return page.model_dump_json()

        return key, await _cached(key, build, PAGE_TTL_SECONDS, open_session)

    async def page(
        self, session: AsyncSession, *, before: int | None, limit: int, kind: str | None = None
    ) -> FeedPage:
        rows = await FeedRepository(session).page(
            before_id=before, limit=limit + 1, kinds=[kind] if kind else None
        )
        items = [item_of(r) for r in rows[:limit]]
        next_cursor = encode_cursor({"before": rows[limit - 1].id}) if len(rows) > limit else None
        return FeedPage(items=items, next_cursor=next_cursor)

    async def events_after(self, session: AsyncSession, after_id: int, limit: int = 100) -> list[FeedItem]:
        return [item_of(r) for r in await FeedRepository(session).after(after_id, limit)]

    async def stats_json(self, open_session: SessionFactory) -> tuple[str, str]:
        """The stats' cache key and the stats as JSON text."""

        async def build(session: AsyncSession) -> str:
            return (await self.stats(session)).model_dump_json()

        return STATS_KEY, await _cached(STATS_KEY, build, STATS_TTL_SECONDS, open_session)

    async def stats(self, session: AsyncSession, *, days: int = 30) -> FeedStats:
        repo = FeedRepository(session)
        lots = await repo.lot_totals()
        balances = await repo.account_balances()
        meals, meals_fen = await repo.meals_funded()
        pools = [(code, -bal, held) for code, kind, bal, held in balances if kind in ("pool", "fund")]
        fees = next((bal for code, _, bal, _ in balances if code == FEE_ACCOUNT), 0)
        balance = sum(b for _, b, _ in pools)
        held = sum(h for _, _, h in pools)
        totals = Totals(
            donated_fen=lots["donated_fen"],
            donations=lots["donations"],
            donors=await repo.donors_count(),
            spent_on_meals_fen=meals_fen,
            meals_funded=meals,
            reserved_fen=held,
            refunded_fen=lots["refunded_fen"],
            fees_fen=fees,
            balance_fen=balance,
            available_fen=balance - held,
        )
        by_code = {code: (b, h) for code, b, h in pools}
        by_account = await repo.lots_by_account()
        empty = {"donations": 0, "donated_fen": 0, "spent_fen": 0, "refunded_fen": 0}
        funds = []
        for fund in await repo.funds():
            code = GENERAL_MEAL_POOL if fund.is_general_meal_pool else f"fund:{fund.id}"
            part = by_account.get(code, empty)
            bal, hld = by_code.get(code, (0, 0))
            funds.append(
                FundStats(
                    code=fund.code,
                    name=fund.name,
                    purpose=fund.purpose,
                    is_general_meal_pool=fund.is_general_meal_pool,
                    donated_fen=part["donated_fen"],
                    donations=part["donations"],
                    spent_on_meals_fen=part["spent_fen"],
                    refunded_fen=part["refunded_fen"],
                    balance_fen=bal,
                    available_fen=bal - hld,
                )
            )
        meals_by_canteen = await repo.meals_by_canteen()
        ids = set(meals_by_canteen) | set(await repo.pool_canteen_ids())
        canteens = []
        for canteen, district in await repo.canteens(list(ids)):
            code = f"pool:canteen:{canteen.id}"
            bal, hld = by_code.get(code, (0, 0))
            count, fen = meals_by_canteen.get(canteen.id, (0, 0))
            canteens.append(
                CanteenStats(
                    code=canteen.code,
                    name=canteen.name,
                    district=district,
                    donated_to_pool_fen=by_account.get(code, empty)["donated_fen"],
                    meals_funded=count,
                    spent_on_meals_fen=fen,
                    pool_balance_fen=bal,
                    pool_available_fen=bal - hld,
                )
            )
        canteens.sort(key=lambda c: (-c.meals_funded, -c.donated_to_pool_fen, c.code))
        today = business_date()
        start = today - timedelta(days=days - 1)
        series_rows = await repo.daily_series(start)
        series = [
            DayPoint(
                day=start + timedelta(days=i),
                donated_fen=series_rows.get(start + timedelta(days=i), (0, 0))[0],
                spent_on_meals_fen=series_rows.get(start + timedelta(days=i), (0, 0))[1],
            )
            for i in range(days)
        ]
        return FeedStats(totals=totals, funds=funds, canteens=canteens, series=series, generated_at=utcnow())

    # ------------------------------------------------------------ writing (called from other services)

    async def _grow(
        self,
        session: AsyncSession,
        *,
        key: str,
        kind: str,
        occurred_at: datetime,
        initial: dict[str, Any],
        merge: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> FeedItem:
        """Insert the event named ``key`` or update it in place. Writers of one key take turns (a
        transaction-scoped advisory lock), so concurrent serves at one canteen add up exactly."""
        repo = FeedRepository(session)
        await xact_lock(session, f"feed:{key}")
        event_id = await repo.aggregate_event_id(key)
        if event_id is None:
            row = await repo.add_event(kind, initial, occurred_at)  # queued as "new" by the insert hook
            await repo.claim_aggregate(key, row.id)
            return item_of(row)
        row_locked = await repo.lock_event(event_id)
        assert row_locked is not None
        payload = merge(dict(row_locked.payload))
        await repo.set_payload(event_id, key, payload)
        item = public_item(event_id, kind, payload, row_locked.occurred_at)
        _queue(session.sync_session, "update", item)
        return item

    async def record_meal_funded(
        self,
        session: AsyncSession,
        *,
        canteen_id: uuid.UUID,
        service_date: date,
        slot: str,
        amount_fen: int,
        meals: int = 1,
    ) -> FeedItem | None:
        """A meal paid (partly) by donations was served: grows "<day> <canteen> 爱心善款资助 N 份午餐 ¥x"."""
        if amount_fen <= 0 or meals <= 0:
            return None
        repo = FeedRepository(session)
        found = await repo.canteen_with_district(canteen_id)
        if found is None:
            return None
        canteen, district = found

        def merge(payload: dict[str, Any]) -> dict[str, Any]:
            slots = dict(payload.get("slots") or {})
            slots[slot] = int(slots.get(slot, 0)) + meals
            payload.update(
                meals=int(payload.get("meals", 0)) + meals,
                amount_fen=int(payload.get("amount_fen", 0)) + amount_fen,
                slots=slots,
            )
            return payload

        return await self._grow(
            session,
            key=f"meals:{canteen_id}:{service_date.isoformat()}",
            kind="meals_funded",
            occurred_at=utcnow(),
            initial={
                "canteen": canteen.name,
                "canteen_code": canteen.code,
                "district": district,
                "day": service_date.isoformat(),
                "meals": meals,
                "amount_fen": amount_fen,
                "slots": {slot: meals},
            },
            merge=merge,
        )

    async def record_settlement_paid(
        self,
        session: AsyncSession,
        *,
        canteen_id: uuid.UUID,
        month: str,
        amount_fen: int,
        meals: int,
        paid_at: datetime | None = None,
    ) -> FeedItem | None:
        """A monthly charity settlement was paid to a canteen (once per canteen and month)."""
        found = await FeedRepository(session).canteen_with_district(canteen_id)
        if found is None:
            return None
        canteen, district = found
        payload = {
            "canteen": canteen.name,
            "canteen_code": canteen.code,
            "district": district,
            "month": month,
            "meals": meals,
            "amount_fen": amount_fen,
        }
        return await self._grow(
            session,
            key=f"settlement:{canteen_id}:{month}",
            kind="settlement_paid",
            occurred_at=paid_at or utcnow(),
            initial=payload,
            merge=lambda old: {**old, **payload},
        )

    async def record_reconciliation(
        self,
        session: AsyncSession,
        *,
        bill_date: date,
        status: str,
        matched: int = 0,
        discrepancies: int = 0,
    ) -> FeedItem:
        """A bill date's reconciliation status (pending / matched / discrepancy / resolved); one event per
        date, updated in place as the status changes."""
        if status not in RECON_TEXT:
            raise BadRequest("对账状态不对", code="UnknownReconciliationStatus", detail={"status": status})
        payload = {
            "day": bill_date.isoformat(),
            "status": status,
            "matched": matched,
            "discrepancies": discrepancies,
        }
        return await self._grow(
            session,
            key=f"recon:{bill_date.isoformat()}",
            kind="reconciliation",
            occurred_at=utcnow(),
            initial=payload,
            merge=lambda old: {**old, **payload},
        )

    async def record_ledger_root(
        self, session: AsyncSession, *, day: date, merkle_root: str, entry_count: int
    ) -> FeedItem:
        """A day's ledger Merkle root was published."""
        payload = {"day": day.isoformat(), "merkle_root": merkle_root, "entry_count": entry_count}
        return await self._grow(
            session,
            key=f"root:{day.isoformat()}",
            kind="ledger_root",
            occurred_at=utcnow(),
            initial=payload,
            merge=lambda old: {**old, **payload},
        )

    # ------------------------------------------------------------ donors

    async def trace_summaries(
        self, session: AsyncSession, donation_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, TraceSummary]:
        repo = FeedRepository(session)
        rows = await repo.trace_rows(donation_ids)
        names = await repo.canteen_names(sorted({c for r in rows.values() for c in r["canteen_ids"]}))
        out: dict[uuid.UUID, TraceSummary] = {}
        for donation_id in donation_ids:
            row = rows.get(donation_id)
            if row is None:
                out[donation_id] = TraceSummary(
                    recorded=False,
                    meals_funded=0,
                    spent_fen=0,
                    reserved_fen=0,
                    refunded_fen=0,
                    unused_fen=0,
                    canteens=[],
                    last_meal_date=None,
                    text="尚未到账",
                )
                continue
            unused = row["paid_fen"] - row["spent_fen"] - row["held_fen"] - row["refunded_fen"]
            canteens = sorted(names.get(c, "") for c in row["canteen_ids"])
            parts = []
            if row["meals"]:
                parts.append(f"已资助 {row['meals']} 份长者餐（{format_yuan(row['spent_fen'])}）")
            if row["held_fen"]:
                parts.append(f"已预订待用餐 {format_yuan(row['held_fen'])}")
            if row["refunded_fen"]:
                parts.append(f"已退款 {format_yuan(row['refunded_fen'])}")
            parts.append(f"尚未使用 {format_yuan(unused)}")
            out[donation_id] = TraceSummary(
                recorded=True,
                meals_funded=row["meals"],
                spent_fen=row["spent_fen"],
                reserved_fen=row["held_fen"],
                refunded_fen=row["refunded_fen"],
                unused_fen=unused,
                canteens=canteens,
                last_meal_date=_day_of(row["last_meal_date"]),
                text="，".join(parts),
            )
        return out

    async def with_traces(self, session: AsyncSession, page: Page[DonationOut]) -> Page[MyDonationOut]:
        """``GET /me/donations``: each donation with its trace summary (one query for the whole page)."""
        traces = await self.trace_summaries(session, [d.id for d in page.items])
        return Page[MyDonationOut](
            items=[MyDonationOut(**d.model_dump(), trace=traces[d.id]) for d in page.items],
            next_cursor=page.next_cursor,
        )

    async def subscribe_digest(self, session: AsyncSession, user_id: uuid.UUID) -> int:
        """The donor tapped 允许 on the weekly digest: one more digest may be sent."""
        return await FeedRepository(session).grant_digest_quota(user_id, DIGEST_TEMPLATE)

    async def digest_remaining(self, session: AsyncSession, user_id: uuid.UUID) -> int:
        return await FeedRepository(session).digest_quota(user_id, DIGEST_TEMPLATE)

    @staticmethod
    def last_week(now: datetime | None = None) -> tuple[date, datetime, datetime]:
        """The previous Monday–Sunday (Asia/Shanghai) as (monday, start, end)."""
        today = business_date(now)
        monday = today - timedelta(days=today.weekday() + 7)
        start = shanghai_datetime(monday, datetime.min.time())
        return monday, start, start + timedelta(days=7)

    async def digest_candidates(
        self, session: AsyncSession, now: datetime | None = None
    ) -> tuple[date, list[uuid.UUID]]:
        monday, start, end = self.last_week(now)
        return monday, await FeedRepository(session).digest_candidates(DIGEST_TEMPLATE, start, end)

    async def send_digest(self, session: AsyncSession, *, user_id: uuid.UUID, week_start: date) -> str:
        """One donor's digest for one week: claimed once (a re-run sends nothing), one unit of quota spent.
        A WeChat failure raises, so the claim and the quota roll back with the job and it retries."""
        from app.wechat.miniprogram import get_miniprogram

        repo = FeedRepository(session)
        start = shanghai_datetime(week_start, datetime.min.time())
        meals, fen = await repo.donor_week(user_id, start, start + timedelta(days=7))
        if meals == 0:
            return "nothing"
        digest_id = await repo.claim_digest(user_id, week_start, meals, fen)
        if digest_id is None:
            return "already_sent"
        user = await repo.user(user_id)
        if user is None or not await repo.use_quota(user_id, DIGEST_TEMPLATE):
            await repo.set_digest(digest_id, status="no_quota")
            return "no_quota"
        end = week_start + timedelta(days=6)
        await get_miniprogram().send_subscribe_message(
            user.openid,
            DIGEST_TEMPLATE,
            {
                "thing1": f"您的爱心资助了 {meals} 份长者餐"[:20],
                "amount2": format_yuan(fen),
                "time3": f"{week_start:%Y-%m-%d}~{end:%m-%d}",
                "thing4": "谢谢您！点开看看每一餐的去向"[:20],
            },
            "pages/donations/index",
        )
        await repo.set_digest(digest_id, status="sent", sent_at=utcnow())
        return "sent"

    # ------------------------------------------------------------ live stream

    async def stream(
        self, *, last_event_id: int | None, heartbeat: float = 15.0, poll: float = 3.0
    ) -> AsyncIterator[str]:
        """Server-Sent Events: catch up from ``Last-Event-ID`` (PostgreSQL), then follow Redis pub/sub.
        Without Redis it polls PostgreSQL for new events instead, so the wall screen keeps moving."""
        from app.db import unit_of_work

        yield "retry: 3000\n\n"
        last = last_event_id or 0
        if last_event_id is not None:
            async with unit_of_work() as session:
                for item in await self.events_after(session, last_event_id):
                    last = max(last, item.id)
                    yield _sse({"op": "new", "event": item.model_dump(mode="json")})
        else:
            async with unit_of_work() as session:
                newest = await FeedRepository(session).page(before_id=None, limit=1)
                last = newest[0].id if newest else 0
        pubsub = None
        try:
            try:
                pubsub = app_redis.get_redis().pubsub()
                await pubsub.subscribe(CHANNEL)
            except Exception as exc:
                breaker.trip(exc)
                pubsub = None
            quiet = 0.0
            while True:
                if pubsub is not None:
                    try:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    except Exception as exc:
                        breaker.trip(exc)
                        pubsub = None
                        continue
                    if message is None:
                        quiet += 1.0
                    else:
                        data = message.get("data")
                        try:
                            parsed = json.loads(data)
                            last = max(last, int(parsed["event"]["id"]))
                        except (TypeError, ValueError, KeyError):
                            continue
                        quiet = 0.0
                        yield _sse(parsed)
                else:
                    await asyncio.sleep(poll)
                    quiet += poll
                    async with unit_of_work() as session:
                        for item in await self.events_after(session, last):
                            last = max(last, item.id)
                            quiet = 0.0
                            yield _sse({"op": "new", "event": item.model_dump(mode="json")})
                if quiet >= heartbeat:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
        finally:
            if pubsub is not None:
                try:
                    await pubsub.unsubscribe(CHANNEL)
                    await pubsub.aclose()
                except Exception:
                    log.debug("feed_pubsub_close_failed")


def _sse(message: dict[str, Any]) -> str:
    event_id = message.get("event", {}).get("id", "")
    body = json_text(message)
    return f"id: {event_id}\nevent: feed\ndata: {body}\n\n"


feed_service = FeedService()
