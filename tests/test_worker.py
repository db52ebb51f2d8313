"""Jobs go out only after the transaction that asked for them commits; the scheduler fires each slot once."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.auth import SessionDep
from app.db import Database, get_db_session, unit_of_work
from app.exceptions import Conflict
from app.kit.time import utcnow
from app.models import AuthSession, User
from app.worker import SCHEDULE, Scheduler, broker, drain, due_slots, enqueue, task
from tests.fixtures.environment import free_port

RAN: list[str] = []


@task("tests.probe", max_retries=0)
async def probe(session: AsyncSession, marker: str) -> None:
    RAN.append(marker)


@pytest.fixture
def probe_app(session_maker: async_sessionmaker[AsyncSession]) -> FastAPI:
    from app.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/probe")
    async def endpoint(session: SessionDep, marker: str, fail: bool = False) -> dict[str, str]:
        enqueue(session, probe, marker=marker)
        if fail:
            raise Conflict("故意失败")
        return {"ok": marker}

    async def override() -> AsyncIterator[AsyncSession]:
        async with unit_of_work(session_maker) as s:
            yield s

    app.dependency_overrides[get_db_session] = override
    return app


async def test_job_from_rolled_back_request_never_runs(probe_app: FastAPI) -> None:
    drain()
    ok, failed = f"ok-{uuid.uuid4().hex}", f"failed-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=probe_app), base_url="http://t") as c:
        assert (await c.post("/probe", params={"marker": failed, "fail": True})).status_code == 409
        assert (await c.post("/probe", params={"marker": ok})).status_code == 200
    drain()
    assert ok in RAN
    assert failed not in RAN


async def test_unit_of_work_drops_jobs_on_error(session_maker: async_sessionmaker[AsyncSession]) -> None:
    marker = f"uow-{uuid.uuid4().hex}"
    with pytest.raises(RuntimeError):
        async with unit_of_work(session_maker) as s:
            enqueue(s, probe, marker=marker)
            raise RuntimeError("boom")
    drain()
    assert marker not in RAN


def test_due_slots_are_shanghai_wall_time() -> None:
    # 10:30 Asia/Shanghai daily == 02:30 UTC
    after = datetime(2026, 3, 4, 0, 0, tzinfo=UTC)
    slots = due_slots("30 10 * * *", after, after + timedelta(days=2))
    assert [s.astimezone(UTC).hour for s in slots] == [2, 2]
    assert slots[0].astimezone(UTC).minute == 30


async def test_periodic_job_fires_once_and_runs(committed: Database) -> None:
    """The real hourly job (purge expired sessions) fired by two schedulers for the same slot runs once."""
    old = utcnow() - timedelta(days=40)
    async with unit_of_work() as s:
        user = User(openid=f"sched{uuid.uuid4().hex[:10]}")
        s.add(user)
        await s.flush()
        s.add(AuthSession(user_id=user.id, token_hash=uuid.uuid4().hex * 2, expires_at=old))
        s.add(
            AuthSession(
                user_id=user.id, token_hash=uuid.uuid4().hex * 2, expires_at=utcnow() + timedelta(days=1)
            )
        )

    # pick a window containing exactly one "17 * * * *" slot, far from now so no other test collides
    start = datetime(2031, 1, 1, 3, 0, tzinfo=UTC) + timedelta(minutes=uuid.uuid4().int % 10_000 * 60)
    purge = [p for p in Scheduler().schedule if p.actor_name == "auth.purge_expired_sessions"]
    assert purge and purge[0] in SCHEDULE
    a, b = Scheduler(schedule=purge), Scheduler(schedule=purge)
    a._last = b._last = start
    fired_a = a.tick(start + timedelta(minutes=30))
    fired_b = b.tick(start + timedelta(minutes=30))
    assert fired_a == ["auth.purge_expired_sessions"]
    assert fired_b == []
    drain()
    async with unit_of_work() as s:
        left = await s.scalar(
            select(func.count()).select_from(AuthSession).where(AuthSession.user_id == user.id)
        )
    assert left == 1


def test_broker_is_stub_in_tests() -> None:
    from dramatiq.brokers.stub import StubBroker

    assert isinstance(broker, StubBroker)


async def test_jobs_refused_by_a_down_broker_are_parked_and_resent(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis down after a commit: the job waits in job_outbox, due at once; the scheduler's relay sends it."""
    from app.models import JobOutbox
    from app.worker import relay_outbox

    drain()
    marker = f"parked-{uuid.uuid4().hex}"
    real_enqueue = broker.enqueue

    def refuse(message: Any, **kwargs: Any) -> Any:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(broker, "enqueue", refuse)
    async with unit_of_work() as s:
        enqueue(s, probe, marker=marker)
    async with unit_of_work() as s:
        parked = (await s.execute(select(JobOutbox))).scalars().all()
    assert [p.actor_name for p in parked] == ["tests.probe"]
    assert parked[0].send_after <= utcnow()

    # still down: the relay keeps it and counts the attempt
    assert await relay_outbox() == 0
    async with unit_of_work() as s:
        assert (await s.execute(select(JobOutbox.attempts))).scalar_one() == 1

    monkeypatch.setattr(broker, "enqueue", real_enqueue)
    assert await relay_outbox() == 1
    drain()
    assert marker in RAN
    async with unit_of_work() as s:  # the job deleted its row when it ran
        assert await s.scalar(select(func.count()).select_from(JobOutbox)) == 0


async def test_job_survives_a_crash_between_commit_and_hand_off(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the commit, before the broker got the job: the outbox row (written in the
    transaction) falls due after the grace period and the relay sends it; once run, it is gone."""
    from app.models import JobOutbox
    from app.worker import RELAY_GRACE, relay_outbox

    drain()
    marker = f"crash-{uuid.uuid4().hex}"

    async def died(session: AsyncSession) -> None:  # the hand-off never happens
        session.info.clear()

    monkeypatch.setattr("app.worker.send_pending_jobs", died)  # unit_of_work looks it up at each commit
    async with unit_of_work() as s:
        enqueue(s, probe, marker=marker)
    monkeypatch.undo()
    drain()
    assert marker not in RAN
    assert await relay_outbox() == 0  # not due yet: it may still be on its way
    assert await relay_outbox(now=utcnow() + RELAY_GRACE + timedelta(seconds=1)) == 1
    drain()
    assert marker in RAN
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(JobOutbox)) == 0


async def test_a_job_that_ran_leaves_nothing_to_relay(committed: Database) -> None:
    from app.models import JobOutbox
    from app.worker import RELAY_GRACE, relay_outbox

    drain()
    marker = f"normal-{uuid.uuid4().hex}"
    async with unit_of_work() as s:
        enqueue(s, probe, marker=marker)
        assert await s.scalar(select(func.count()).select_from(JobOutbox)) == 0  # written at commit
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(JobOutbox)) == 1
    drain()
    assert RAN.count(marker) == 1
    assert await relay_outbox(now=utcnow() + RELAY_GRACE * 3) == 0


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="Dramatiq's Redis broker needs a Redis server")
async def test_a_job_handed_over_on_the_loop_is_consumed_as_one_the_broker_enqueued() -> None:
    """``enqueue_on_loop`` (the API's hand-over with the async client) leaves in Redis what the broker's own
    ``enqueue`` leaves: its workers consume both alike, each with its own Redis id, through the same middleware
    hooks; acked, nothing is left. A Redis that cannot be reached raises, so the job stays due in the outbox."""
    import asyncio

    import dramatiq
    import redis.asyncio as aioredis
    from dramatiq.brokers.redis import RedisBroker

    from app.redis import create_async_redis
    from app.worker import enqueue_on_loop

    hooked: list[tuple[str, str]] = []

    class Hooks(dramatiq.Middleware):
        def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            hooked.append(("before", message.message_id))

        def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            hooked.append(("after", message.message_id))

    namespace = f"sangyu-test-{uuid.uuid4().hex}"
    redis_broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=namespace, middleware=[Hooks()])
    redis_broker.declare_queue("default")
    client = create_async_redis()

    def job(marker: str) -> dramatiq.Message[Any]:
        return dramatiq.Message(
            queue_name="default", actor_name="tests.probe", args=(), kwargs={"marker": marker}, options={}
        )

    ours, theirs = job("loop"), job("thread")

    def consume(n: int) -> list[Any]:
        consumer = redis_broker.consume("default", prefetch=n, timeout=200)
        got: list[Any] = []
        try:
            for _ in range(20):
                message = next(consumer)
                if message is not None:
                    got.append(message)
                    consumer.ack(message)
                if len(got) == n:
                    break
        finally:
            consumer.close()
        return got

    try:
        await enqueue_on_loop(redis_broker, client, ours)
        redis_broker.enqueue(theirs)
        got = await asyncio.to_thread(consume, 2)
        assert sorted((m.message_id, m.kwargs["marker"]) for m in got) == sorted(
            [(ours.message_id, "loop"), (theirs.message_id, "thread")]
        )
        redis_ids = {m.options["redis_message_id"] for m in got}
        assert len(redis_ids) == 2 and not redis_ids & {m.message_id for m in got}  # (a retry gets a new one)
        assert hooked == [
            ("before", ours.message_id),
            ("after", ours.message_id),
            ("before", theirs.message_id),
            ("after", theirs.message_id),
        ]
        assert await client.hlen(f"{namespace}:default.msgs") == 0

        unreachable = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5)
        with pytest.raises(Exception):  # noqa: B017 - any connection error: the caller keeps the job due
            await enqueue_on_loop(redis_broker, unreachable, job("lost"))
        await unreachable.aclose()
    finally:
        for key in await client.keys(f"{namespace}*"):
            await client.delete(key)
        await client.aclose()
        redis_broker.close()


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="Dramatiq's Redis broker needs a Redis server")
async def test_an_api_process_hands_its_jobs_to_a_redis_broker_on_the_loop_or_parks_them(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a commit, an API process with a Redis broker hands the job over on its loop: the job is in the
    broker's queue and its outbox row waits out the grace. With Redis away the commit stands and the job is due
    in the outbox at once, for the relay."""
    import redis.asyncio as aioredis
    from dramatiq.brokers.redis import RedisBroker

    import app.worker as worker_module
    from app.models import JobOutbox
    from app.redis import create_async_redis

    namespace = f"sangyu-test-{uuid.uuid4().hex}"
    redis_broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=namespace)
    reachable = create_async_redis()
    unreachable = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5)
    monkeypatch.setattr(worker_module, "broker", redis_broker)
    monkeypatch.setattr(worker_module, "_redis_broker", True)
    try:
        monkeypatch.setattr(worker_module, "get_redis", lambda: reachable)
        async with unit_of_work() as s:
            enqueue(s, probe, marker="handed-over")
        assert await reachable.hlen(f"{namespace}:default.msgs") == 1
        async with unit_of_work() as s:
            (row,) = (await s.execute(select(JobOutbox))).scalars().all()
            assert row.send_after > utcnow() + timedelta(minutes=5)
            await s.delete(row)

        monkeypatch.setattr(worker_module, "get_redis", lambda: unreachable)
        async with unit_of_work() as s:
            enqueue(s, probe, marker="parked")
        async with unit_of_work() as s:
            (parked,) = (await s.execute(select(JobOutbox))).scalars().all()
        assert parked.actor_name == "tests.probe" and parked.send_after <= utcnow()
        assert await reachable.hlen(f"{namespace}:default.msgs") == 1  # nothing more reached the queue
    finally:
        for key in await reachable.keys(f"{namespace}*"):
            await reachable.delete(key)
        await reachable.aclose()
        await unreachable.aclose()
        redis_broker.close()
