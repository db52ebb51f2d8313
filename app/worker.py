"""Jobs: Dramatiq actors, enqueued only after the transaction that asked for them commits.

- ``REDIS_URL`` set: a Redis broker; ``sangyu worker`` runs the actors and the periodic scheduler.
- ``REDIS_URL`` unset: a stub broker and the same actors run on a worker inside the web process.
- testing: a stub broker; tests drain queues explicitly.

Every actor body runs in one unit of work (one transaction); jobs it enqueues go out after its commit.
Periodic jobs are ordinary actors with a cron schedule (Asia/Shanghai); the scheduler fires each slot once
across any number of schedulers (a Redis ``SET NX`` per slot).
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ParamSpec

import dramatiq
import structlog
from croniter import croniter  # type: ignore[import-untyped,unused-ignore]
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis
from dramatiq.middleware import AsyncIO, CurrentMessage
from redis.commands.core import AsyncScript
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Environment, get_settings
from app.kit.collector import settle_for_jobs
from app.kit.time import SHANGHAI, utcnow
from app.redis import get_redis

log = structlog.get_logger("app.worker")

P = ParamSpec("P")
PENDING_KEY = "sangyu.pending_jobs"
STAGED_KEY = "sangyu.staged_jobs"  # how many of the pending jobs are already in the outbox
RELAY_GRACE = timedelta(minutes=10)  # past Dramatiq's own retries (5, from 2 s, doubling)
MAX_RELAYS = 5


def _build_broker() -> dramatiq.Broker:
    settings = get_settings()
    broker: dramatiq.Broker
    if settings.REDIS_URL and Environment.testing != settings.APP_ENV:
        broker = RedisBroker(url=settings.REDIS_URL, namespace="sangyu-jobs")
    else:
        broker = StubBroker()
        broker.emit_after("process_boot")
    broker.add_middleware(AsyncIO())
    broker.add_middleware(CurrentMessage())
    return broker


broker = _build_broker()
dramatiq.set_broker(broker)
_redis_broker = not isinstance(broker, StubBroker)


@dataclass(frozen=True)
class Periodic:
    actor_name: str
    cron: str  # in Asia/Shanghai wall time


SCHEDULE: list[Periodic] = []


def task(
    name: str, *, cron: str | None = None, max_retries: int = 5, time_limit_ms: int = 10 * 60 * 1000
) -> Callable[[Callable[..., Awaitable[None]]], dramatiq.Actor[..., Any]]:
    """Declare a job. The function receives an ``AsyncSession`` first; its transaction is the job's."""

    def decorate(fn: Callable[..., Awaitable[None]]) -> dramatiq.Actor[..., Any]:
        @functools.wraps(fn)
        async def run(*args: Any, **kwargs: Any) -> None:
            from app.db import unit_of_work

            structlog.contextvars.bind_contextvars(job=name)
            try:
                async with unit_of_work() as session:
                    await fn(session, *args, **kwargs)
                    await _ran(session)
            finally:
                structlog.contextvars.unbind_contextvars("job")

        actor: dramatiq.Actor[..., Any] = dramatiq.actor(
            actor_name=name, max_retries=max_retries, time_limit=time_limit_ms, min_backoff=2000
        )(run)
        if cron is not None:
            croniter(cron)  # validate at import
            SCHEDULE.append(Periodic(name, cron))
        return actor

    return decorate


async def _ran(session: AsyncSession) -> None:
    """In the job's own transaction: its outbox row goes with its effects (kept if the job fails)."""
    from sqlalchemy import delete

    from app.models import JobOutbox

    message = CurrentMessage.get_current_message()
    if message is not None:
        await session.execute(delete(JobOutbox).where(JobOutbox.message_id == message.message_id))


def enqueue(session: AsyncSession, actor: dramatiq.Actor[..., Any], *args: Any, **kwargs: Any) -> None:
    """Send ``actor(*args, **kwargs)`` once ``session``'s transaction commits; dropped if it rolls back."""
    message = actor.message(*args, **kwargs)
    session.info.setdefault(PENDING_KEY, []).append(message)


def take_unstaged_jobs(session: AsyncSession) -> dict[str, Any] | None:
    """The outbox rows of the jobs ``session``'s transaction has enqueued since it last staged them, as the
    parameters of ``outbox_insert()``, now counted as staged; None if there are none. Each row is due for a
    re-send only after ``RELAY_GRACE`` (by then the job has normally run and deleted its row). For a
    statement that writes them with rows of its own (``outbox_insert()`` as a CTE); ``stage_pending_jobs``
    writes them alone."""
    pending: list[dramatiq.Message[Any]] = session.info.get(PENDING_KEY, [])
    staged = session.info.get(STAGED_KEY, 0)
    messages = pending[staged:]
    if not messages:
        return None
    session.info[STAGED_KEY] = len(pending)
    return {
        "job_message_ids": [m.message_id for m in messages],
        "job_actor_names": [m.actor_name for m in messages],
        "job_messages": [m.encode().decode() for m in messages],  # the broker's own JSON, stored as jsonb
        "job_send_after": utcnow() + RELAY_GRACE,
    }


async def stage_pending_jobs(session: AsyncSession) -> None:
    """Before the commit: write the transaction's jobs to ``job_outbox`` in the same transaction.

    A service may call it early, before it locks shared rows, so the commit has nothing left to write; the
    commit then stages only the jobs enqueued since."""
    from app.kit.sql import execute_core

    params = take_unstaged_jobs(session)
    if params is not None:
        await execute_core(session, outbox_insert(), params)


@functools.cache
def outbox_insert() -> Any:
    """The outbox INSERT of ``take_unstaged_jobs``' rows, one array per column (one statement, and one plan,
    for any number of rows), built once (building it and its cache key cost about 70 µs, a third of running
    it); its one unique constraint is message_id."""
    from sqlalchemy import DateTime, String, Text, bindparam, func, literal, select
    from sqlalchemy import cast as sql_cast
    from sqlalchemy.dialects.postgresql import ARRAY, JSONB

    from app.kit.sql import insert_or_skip, planned_once
    from app.models import JobOutbox

    given = (
        func.unnest(
            planned_once(bindparam("job_message_ids", type_=ARRAY(String))),
            planned_once(bindparam("job_actor_names", type_=ARRAY(String))),
            planned_once(bindparam("job_messages", type_=ARRAY(Text))),
        )
        .table_valued("message_id", "actor_name", "message")
        .render_derived(name="job")
    )
    rows = select(
        given.c.message_id,
        given.c.actor_name,
        sql_cast(given.c.message, JSONB),
        literal(0),
        bindparam("job_send_after", type_=DateTime(timezone=True)),
    )
    return insert_or_skip(JobOutbox.__table__).from_select(
        ["message_id", "actor_name", "message", "attempts", "send_after"], rows
    )


async def send_pending_jobs(session: AsyncSession) -> None:
    """After the commit: hand its jobs to the broker. A job the broker refuses (Redis down) is due at once in
    the outbox, so the scheduler's relay sends it when the broker is back: nothing committed is lost."""
    messages: list[dramatiq.Message[Any]] = session.info.pop(PENDING_KEY, [])
    session.info.pop(STAGED_KEY, None)
    if not messages:
        return
    failed: list[dramatiq.Message[Any]] = []
    for message in messages:
        try:
            if _redis_broker:
                await enqueue_on_loop(broker, get_redis(), message)  # type: ignore[arg-type]
            else:
                broker.enqueue(message)
        except Exception as exc:  # the broker being down must not turn a committed request into an error
            log.warning("job_enqueue_failed", actor=message.actor_name, error=type(exc).__name__)
            failed.append(message)
    if failed:
        await _due_now([m.message_id for m in failed])


_DISPATCH: dict[str, AsyncScript] = {}  # Dramatiq's dispatch script, by its source's digest


async def enqueue_on_loop(redis_broker: RedisBroker, client: Any, message: dramatiq.Message[Any]) -> None:
    """``redis_broker.enqueue(message)`` (no delay) done on the event loop with the async Redis ``client``
    (``app.redis.get_redis``, the same server and database): the same copy of the message with its own Redis id,
    the same middleware hooks, and the broker's own dispatch script called with the arguments its ``enqueue``
    gives it, so its workers consume the message as any other.

    Dramatiq's Redis broker is synchronous. Handing a request's jobs to it from a thread cost a booking 8–22 %
    of the workers' CPU under load, in hand-offs between the threads and their contention for the interpreter
    (``python -m bench.cost booking`` with and without it, docs/performance-rounds.md); on the loop the call
    is one round trip.
    Its errors propagate (a connection refused or timed out: ``send_pending_jobs`` leaves the job due in the
    outbox)."""
    if type(redis_broker)._max_unpack_size_val is None:  # found once per process, by a blocking call
        await asyncio.to_thread(redis_broker._max_unpack_size)
    registered = redis_broker.scripts["dispatch"]
    dispatch = _DISPATCH.get(registered.sha)
    if dispatch is None:  # the same source for the async client, which is given at each call
        dispatch = _DISPATCH[registered.sha] = AsyncScript(None, registered.script)  # type: ignore[arg-type]
    message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
    redis_broker.emit_before("enqueue", message, None)
    args = [
        "enqueue",
        current_millis(),
        message.queue_name,
        redis_broker.broker_id,
        redis_broker.heartbeat_timeout,
        redis_broker.dead_message_ttl,
        redis_broker._should_do_maintenance("enqueue"),
        redis_broker._max_unpack_size(),
        message.options["redis_message_id"],
        message.encode(),
    ]
    await dispatch(keys=[redis_broker.namespace], args=args, client=client)
    redis_broker.emit_after("enqueue", message, None)


async def _due_now(message_ids: list[str]) -> None:
    from sqlalchemy import update

    from app.db import get_database
    from app.models import JobOutbox

    try:
        async with get_database().sessionmaker() as s:
            await s.execute(
                update(JobOutbox).where(JobOutbox.message_id.in_(message_ids)).values(send_after=utcnow())
            )
            await s.commit()
        log.warning("jobs_due_for_relay", count=len(message_ids))
    except Exception as exc:  # they stay in the outbox and fall due after RELAY_GRACE anyway
        log.warning("jobs_due_later", count=len(message_ids), error=type(exc).__name__)


async def relay_outbox(limit: int = 100, *, now: datetime | None = None) -> int:
    """Send the jobs that are due again (never ran), oldest first; each stays in the outbox, due again after
    ``RELAY_GRACE``, until the job deletes it. Stops at the first refusal (the broker is still down). A job
    relayed ``MAX_RELAYS`` times stays for an operator (logged), it is not sent again."""
    from sqlalchemy import select

    from app.db import get_database
    from app.models import JobOutbox

    now = now or utcnow()
    sent = 0
    async with get_database().sessionmaker() as s:
        rows = (
            (
                await s.execute(
                    select(JobOutbox)
                    .where(JobOutbox.send_after <= now, JobOutbox.attempts < MAX_RELAYS)
                    .order_by(JobOutbox.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for row in rows:
            row.attempts += 1
            try:
                broker.enqueue(dramatiq.Message.decode(json.dumps(row.message).encode()))
            except Exception as exc:
                row.last_error = type(exc).__name__
                break
            row.send_after = now + RELAY_GRACE
            if row.attempts >= MAX_RELAYS:
                log.error("outbox_job_given_up", actor=row.actor_name, message_id=row.message_id)
            sent += 1
        await s.commit()
    if sent:
        log.info("outbox_jobs_resent", count=sent)
    return sent


def discard_pending_jobs(session: AsyncSession) -> None:
    dropped = session.info.pop(PENDING_KEY, [])
    session.info.pop(STAGED_KEY, None)
    if dropped:
        log.info("jobs_dropped_on_rollback", count=len(dropped))


# ---------------------------------------------------------------- scheduler


def due_slots(cron: str, after: datetime, until: datetime) -> list[datetime]:
    """Cron fire times in (after, until], evaluated in Asia/Shanghai."""
    it = croniter(cron, after.astimezone(SHANGHAI))
    slots: list[datetime] = []
    while True:
        nxt: datetime = it.get_next(datetime)
        if nxt > until:
            return slots
        slots.append(nxt)


class Scheduler:
    """Fires periodic actors. Safe to run in several processes: each slot is claimed once in Redis."""

    def __init__(self, interval_seconds: float = 5.0, schedule: list[Periodic] | None = None) -> None:
        import_all_tasks()
        self.schedule = SCHEDULE if schedule is None else schedule
        self.interval = interval_seconds
        self._stop = threading.Event()
        self._last = utcnow()

    def tick(self, now: datetime | None = None) -> list[str]:
        from app.redis import get_sync_redis

        now = now or utcnow()
        fired: list[str] = []
        redis_client = get_sync_redis()
        for periodic in self.schedule:
            for slot in due_slots(periodic.cron, self._last, now):
                key = f"sangyu:sched:{periodic.actor_name}:{slot.isoformat()}"
                try:
                    claimed = redis_client.set(key, "1", nx=True, ex=int(timedelta(days=2).total_seconds()))
                except Exception:
                    log.exception("scheduler_redis_unavailable")
                    return fired
                if claimed:
                    broker.enqueue(broker.get_actor(periodic.actor_name).message())
                    fired.append(periodic.actor_name)
                    log.info("periodic_job_fired", actor=periodic.actor_name, slot=slot.isoformat())
        self._last = now
        return fired

    def run_forever(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        from app.db import get_database

        try:
            while not self._stop.is_set():
                await asyncio.sleep(self.interval)
                try:
                    self.tick()
                except Exception:
                    log.exception("scheduler_tick_failed")
                try:
                    await relay_outbox()
                except Exception:
                    log.exception("outbox_relay_failed")
        finally:
            await get_database().dispose_current()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="sangyu-scheduler", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


class InProcessWorker:
    """The web process's own worker when there is no Redis to share a queue through."""

    def __init__(self) -> None:
        self.worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=200)
        self.scheduler = Scheduler()

    def start(self) -> None:
        import_all_tasks()
        self.worker.start()
        self.scheduler.start_thread()

    def stop(self) -> None:
        self.scheduler.stop()
        self.worker.stop(timeout=5000)


def import_all_tasks() -> None:
    """Import every module that declares actors so the broker knows them."""
    import app.tasks  # noqa: F401


def run_worker(processes_threads: int = 4) -> None:
    """``sangyu worker``: consume the Redis queues and run the scheduler until interrupted."""
    import_all_tasks()
    settle_for_jobs()
    worker = dramatiq.Worker(broker, worker_threads=processes_threads)
    scheduler = Scheduler()
    worker.start()
    scheduler.start_thread()
    log.info("worker_started", actors=sorted(broker.get_declared_actors()), periodic=len(SCHEDULE))
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.stop()
        worker.stop()


def drain(timeout_ms: int = 30_000) -> None:
    """Tests: run every queued message to completion on a temporary worker (stub broker only). It blocks the
    calling thread's event loop meanwhile; from async code use ``drain_async``."""
    assert isinstance(broker, StubBroker)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        for queue in list(broker.queues):
            broker.join(queue, timeout=timeout_ms, fail_fast=True)
        worker.join()
    finally:
        worker.stop()


async def drain_async(timeout_ms: int = 30_000) -> None:
    """Tests: ``drain`` with the calling loop kept running, so that its post-commit batches (ledger sealing,
    receipt numbering), which may hold the locks the jobs need, finish instead of waiting for ``drain``."""
    from app.kit.background import drain_all

    await drain_all()
    await asyncio.to_thread(drain, timeout_ms)


def run_sync(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]
