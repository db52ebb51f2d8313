"""`make run`-style startup: nothing configured → embedded PostgreSQL, fakeredis, sandbox WeChat, /readyz 200,
and a sandbox login that goes through wechatpy to the server's own simulator over loopback HTTP. Then what a
process does once it has started (its long-lived objects out of the collector's sight) and as it stops (the
work its commits left is finished, within a time limit)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.ext.asyncio import AsyncSession

from app import main as app_main
from app.db import Database
from app.kit.background import PostCommitBatch
from app.main import create_app
from tests.fixtures.environment import free_port


def test_fresh_start_with_nothing_configured() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sy") as data_dir:
        env = {
            k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "WECHAT_API_BASE"}
        }
        env.update(
            {"APP_ENV": "development", "DATA_DIR": data_dir, "PORT": str(port), "LOG_LEVEL": "WARNING"}
        )
        sangyu = [sys.executable, "-m", "app.cli"]
        subprocess.run([*sangyu, "migrate"], env=env, check=True, capture_output=True, timeout=180)
        server = subprocess.Popen(
            [*sangyu, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            ready = None
            while time.monotonic() < deadline:
                try:
                    ready = httpx.get(f"{base}/readyz", timeout=2)
                    if ready.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            assert ready is not None and ready.status_code == 200, (
                ready.text if ready else "server never answered"
            )
            assert httpx.get(f"{base}/healthz").json()["wechat_mode"] == "sandbox"
            login = httpx.post(
                f"{base}/api/v1/auth/wechat/login", json={"code": "sbx:fresh_user"}, timeout=15
            )
            assert login.status_code == 200, login.text
            me = httpx.get(
                f"{base}/api/v1/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
            )
            assert me.json()["openid"] == "fresh_user"
            assert httpx.get(f"{base}/docs").status_code == 200
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


async def test_a_started_app_takes_its_long_lived_objects_out_of_the_collectors_sight(
    database: Database,
) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    # startup garbage: a reference cycle nobody holds any more, which only the cyclic collector frees
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    thresholds = gc.get_threshold()
    application = create_app()
    async with LifespanManager(application):
        # modules, the app and the ORM's mappers: tens of thousands of objects no collection walks again
        assert gc.get_freeze_count() > 20_000
        # collected before the freeze, not kept for the life of the process
        assert gone() is None
        # an API process that runs no jobs keeps the collector's thresholds
        assert gc.get_threshold() == thresholds


@pytest.fixture
def collector_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)


def test_the_job_worker_settles_before_it_takes_jobs(
    collector_restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sangyu worker``: its long-lived objects frozen, startup garbage collected first, and the youngest
    generation collected every 50,000 allocations, all before the first job can start."""
    from app import worker as worker_module
    from app.kit.collector import JOBS_YOUNG_THRESHOLD

    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    seen: dict[str, object] = {}

    class FakeWorker:
        def __init__(self, broker: object, worker_threads: int) -> None:
            seen["threads"] = worker_threads

        def start(self) -> None:  # what the collector looks like when jobs could first run
            seen["threshold"] = gc.get_threshold()
            seen["frozen"] = gc.get_freeze_count()
            seen["garbage_gone"] = gone() is None

        def stop(self) -> None:
            seen["stopped"] = True

    class FakeScheduler:
        def start_thread(self) -> None:
            pass

        def stop(self) -> None:
            pass

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(worker_module.dramatiq, "Worker", FakeWorker)
    monkeypatch.setattr(worker_module, "Scheduler", FakeScheduler)
    monkeypatch.setattr(worker_module.time, "sleep", interrupted)
    worker_module.run_worker(3)
    assert seen["threads"] == 3 and seen["stopped"] is True
    assert seen["threshold"] == (JOBS_YOUNG_THRESHOLD, 10, 10)
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 20_000
    assert seen["garbage_gone"] is True


def test_settling_for_jobs_keeps_the_older_generations_ratios(collector_restored: None) -> None:
    from app.kit.collector import JOBS_YOUNG_THRESHOLD, settle_for_jobs

    gc.set_threshold(700, 20, 5)
    settle_for_jobs()
    assert gc.get_threshold() == (JOBS_YOUNG_THRESHOLD, 20, 5)


async def test_a_started_app_has_its_wechatpay_gateway_ready(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built at startup, not by the first payment notification; a configuration that cannot be loaded does
    not stop the start (the requests that need it fail instead, as before)."""
    from app.wechat import pay

    pay.reset_wechatpay()
    async with LifespanManager(create_app()):
        assert pay._gateway is not None
    pay.reset_wechatpay()

    def broken() -> None:
        raise RuntimeError("no merchant key")

    monkeypatch.setattr(pay, "merchant_config", broken)
    async with LifespanManager(create_app()):
        assert pay._gateway is None
    pay.reset_wechatpay()


async def test_a_stopping_app_finishes_the_work_its_commits_left(database: Database) -> None:
    """Sealing and receipt numbers follow commits, paced under load: a process that stops finishes them first."""
    done: list[int] = []

    async def run_once(session: AsyncSession) -> int:
        done.append(1)
        return 1

    batch = PostCommitBatch("test.on_stop", run_once, window=0.05, pace=0.5)
    application = create_app()
    async with LifespanManager(application):
        batch.poke()  # a commit just before the stop
        assert done == []
    assert done == [1]


async def test_a_stopping_app_does_not_wait_long_for_a_lock_held_elsewhere(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run_once(session: AsyncSession) -> int | None:
        return None  # another process holds the lock, and keeps it

    monkeypatch.setattr(app_main, "DRAIN_SECONDS", 0.3)
    batch = PostCommitBatch("test.busy_on_stop", run_once, window=0.01, pace=0.05, max_busy_retries=1000)
    application = create_app()
    async with LifespanManager(application):
        batch.poke()
        started = time.perf_counter()
    assert time.perf_counter() - started < 2  # the minutely job gets the rest
    for task in batch._tasks.values():
        task.cancel()
