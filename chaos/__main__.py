"""``python -m chaos [--smoke] [--json FILE]``: fault injection against real processes.

Phases (each counts what it tried and what came back):
  baseline     donations paid through the simulator (every notification delivered twice), bookings
  redis_down   Redis stopped: bookings and payment notifications still succeed, feed reads degrade open,
               donation creation refuses cleanly (503); Redis restarted: the worker is still alive
  pg_restart   PostgreSQL restarted under load: only 2xx/503 answers (never 500), then full recovery
  wechat_slow  the WeChat Pay simulator answers slowly / with 503: donation creation fails cleanly or
  wechat_5xx   succeeds, a client retry with the same Idempotency-Key converges on ONE order
  crash        the server SIGKILLed while a storm of payment notifications is in flight; restarted, every
               order is redelivered (as WeChat retries): each paid exactly once
Then `sangyu ledger-check` must pass and every order the simulator calls paid must be paid in the ledger."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from chaos.services import (
    ROOT,
    AppProcess,
    FaultProxy,
    ScratchPostgres,
    ScratchRedis,
    free_port,
    temp_base,
    wait_for,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos")
    parser.add_argument("--smoke", action="store_true", help="CI-sized run (about a minute or two)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    n = 12 if args.smoke else 120
    started = time.monotonic()
    base = temp_base()
    pg, redis = ScratchPostgres(base), ScratchRedis(base)
    pg.start()
    redis.start()
    port = free_port()
    proxy = FaultProxy(f"http://127.0.0.1:{port}")
    proxy.start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WECHAT", "TEST_DATABASE"))},
        "APP_ENV": "development",
        "DATABASE_URL": pg.url,
        "REDIS_URL": redis.url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "WECHATPAY_API_BASE": f"http://127.0.0.1:{proxy.port}/sandbox/wechatpay",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    for key in [k for k in os.environ if k.startswith("WECHAT") and k not in env]:
        os.environ.pop(key)
    subprocess.run(
        [str(ROOT / ".venv/bin/alembic"), "upgrade", "heads"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    server = AppProcess(["serve"], env, base / "server.log")
    worker = AppProcess(["worker", "--threads", "2"], env, base / "worker.log")
    api = f"http://127.0.0.1:{port}"
    figures: dict[str, Any] = {"mode": "smoke" if args.smoke else "full"}
    try:
        world = _arrange()
        server.start()
        worker.start()
        wait_for(lambda: httpx.get(f"{api}/healthz", timeout=1).status_code == 200, 60, "server")
        run = Run(api, world)
        figures["baseline"] = run.baseline(n)
        figures["redis_down"] = run.redis_down(redis, worker, n)
        figures["pg_restart"] = run.pg_restart(pg, n)
        figures["wechat_slow"] = run.wechat_fault(proxy, "slow", max(3, n // 4))
        figures["wechat_5xx"] = run.wechat_fault(proxy, "5xx", max(3, n // 4))
        figures["crash"] = run.crash(server, api, n * 2)
        figures["final"] = run.final_checks(env)
    finally:
        for proc in (worker, server):
            proc.stop()
        proxy.stop()
        redis.stop()
        pg.stop()
    figures["seconds"] = round(time.monotonic() - started, 1)
    ok = all(phase.get("ok", True) for phase in figures.values() if isinstance(phase, dict))
    figures["ok"] = ok
    text = json.dumps(figures, ensure_ascii=False, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if ok:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"logs kept in {base}", file=sys.stderr)
    return 0 if ok else 1


def _arrange() -> dict[str, Any]:
    """Rows the run needs, written with the app's own code into the scratch database."""
    import asyncio

    from app.db import get_database, unit_of_work
    from app.kit.time import business_date
    from tests.bookings.helpers import arrange
    from tests.donations.helpers import create_target
    from tests.fixtures.factories import create_elder

    async def go() -> dict[str, Any]:
        day = business_date() + timedelta(days=2)
        async with unit_of_work() as s:
            world = await arrange(s, day=day, capacity=10_000)
            target = await create_target(s, "canteen", canteen_id=world.canteen.id)
            elders = []
            for i in range(40):
                openid = f"chaos-elder-{i}-{uuid.uuid4().hex[:6]}"
                elder, _ = await create_elder(s, district_code=world.district, user_openid=openid)
                elders.append((openid, str(elder.id)))  # type: ignore[attr-defined]
            out = {
                "day": day.isoformat(),
                "canteen_id": str(world.canteen.id),
                "item_id": str(world.items[0].id),
                "target": target.code,
                "elders": elders,
            }
        await get_database().dispose_current()
        return out

    return asyncio.run(go())


class Run:
    def __init__(self, api: str, world: dict[str, Any]) -> None:
        self.api, self.world = api, world
        self.http = httpx.Client(base_url=api, timeout=30)
        self.donor = self._login(f"chaos-donor-{uuid.uuid4().hex[:8]}")
        self.elder_tokens = [(self._login(openid), elder_id) for openid, elder_id in world["elders"]]
        self.next_elder = 0
        self.orders: list[str] = []
        # donors scan from many phones: spread donation creation over loopback source addresses, so the
        # per-IP donation limit (30/min) measures abuse, not this load generator
        self.donor_clients = [
            httpx.Client(
                base_url=api, timeout=30, transport=httpx.HTTPTransport(local_address=f"127.0.{i}.1")
            )
            for i in range(1, 33)
        ]
        self.next_donor = 0

    def _login(self, openid: str) -> dict[str, str]:
        res = self.http.post("/api/v1/auth/wechat/login", json={"code": f"sbx:{openid}"})
        res.raise_for_status()
        return {"Authorization": f"Bearer {res.json()['access_token']}"}

    def donate(self, key: str | None = None, client: httpx.Client | None = None) -> httpx.Response:
        if client is None:
            client = self.donor_clients[self.next_donor % len(self.donor_clients)]
            self.next_donor += 1
        return client.post(
            "/api/v1/donations",
            json={"target_code": self.world["target"], "amount_fen": 1000},
            headers={**self.donor, "Idempotency-Key": key or uuid.uuid4().hex},
        )

    def pay(self, out_trade_no: str, times: int = 2) -> httpx.Response:
        return self.http.post(f"/sandbox/wechatpay/pay/{out_trade_no}", params={"times": times})

    def book(self, client: httpx.Client | None = None) -> httpx.Response:
        headers, elder_id = self.elder_tokens[self.next_elder % len(self.elder_tokens)]
        self.next_elder += 1
        return (client or self.http).post(
            "/api/v1/bookings",
            json={
                "elder_id": elder_id,
                "canteen_id": self.world["canteen_id"],
                "date": self.world["day"],
                "slot": "lunch",
                "items": [{"menu_item_id": self.world["item_id"], "quantity": 1}],
                "mode": "dine_in",
            },
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )

    def baseline(self, n: int) -> dict[str, Any]:
        statuses: Counter[int] = Counter()
        for _ in range(n):
            res = self.donate()
            statuses[res.status_code] += 1
            if res.status_code == 201:
                otn = res.json()["out_trade_no"]
                self.orders.append(otn)
                statuses[self.pay(otn).status_code] += 1
        booked = Counter(self.book().status_code for _ in range(min(n, 10)))
        return {"donations": dict(statuses), "bookings": dict(booked), "ok": set(statuses) <= {200, 201}}

    def redis_down(self, redis: ScratchRedis, worker: AppProcess, n: int) -> dict[str, Any]:
        pending = []
        for _ in range(n // 2):
            res = self.donate()
            if res.status_code == 201:
                pending.append(res.json()["out_trade_no"])
        redis.stop()
        bookings = Counter(self.book().status_code for _ in range(min(n, 10)))
        paid = Counter(self.pay(otn).status_code for otn in pending)
        self.orders.extend(pending)
        feed = Counter(self.http.get("/api/v1/feed").status_code for _ in range(5))
        refused = Counter(self.donate().status_code for _ in range(3))
        redis.start()  # same port: the clients reconnect
        time.sleep(1.5)
        after = Counter(self.donate().status_code for _ in range(3))
        ok = (
            set(bookings) == {201}
            and set(paid) == {200}
            and set(feed) == {200}
            and set(refused) == {503}
            and set(after) == {201}
            and worker.alive
        )
        return {
            "bookings_while_down": dict(bookings),
            "payments_while_down": dict(paid),
            "feed_while_down": dict(feed),
            "donations_while_down": dict(refused),
            "donations_after": dict(after),
            "worker_alive": worker.alive,
            "ok": ok,
        }

    def pg_restart(self, pg: ScratchPostgres, n: int) -> dict[str, Any]:
        import threading

        statuses: Counter[int] = Counter()
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=self.api, timeout=30) as client:
                while not stop.is_set():
                    try:
                        statuses[self.book(client).status_code] += 1
                        statuses[client.get("/api/v1/canteens").status_code] += 1
                    except httpx.HTTPError as exc:
                        statuses[type(exc).__name__] += 1  # type: ignore[index]

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        pg.restart()
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join()
        after = Counter(self.book().status_code for _ in range(5))
        bad = {str(k): v for k, v in statuses.items() if not (isinstance(k, int) and (k < 300 or k == 503))}
        return {
            "during": {str(k): v for k, v in statuses.items()},
            "after": dict(after),
            "unclean": bad,
            "ok": not bad and set(after) == {201} and statuses[503] >= 0,
        }

    def wechat_fault(self, proxy: FaultProxy, mode: str, n: int) -> dict[str, Any]:
        keys = [uuid.uuid4().hex for _ in range(n)]
        proxy.mode = mode
        during = Counter(self.donate(k).status_code for k in keys)
        proxy.mode = "ok"
        retried = [self.donate(k) for k in keys]  # the mini-program retries with the same key
        again = [self.donate(k) for k in keys]
        statuses = Counter(r.status_code for r in retried)
        same = all(
            a.json().get("out_trade_no") == b.json().get("out_trade_no")
            for a, b in zip(retried, again, strict=True)
        )
        for r in retried:
            if r.status_code in (200, 201):
                self.orders.append(r.json()["out_trade_no"])
                self.pay(r.json()["out_trade_no"], times=1)
        unclean = {k: v for k, v in during.items() if k >= 500 and k != 503}
        return {
            "during": dict(during),
            "retried": dict(statuses),
            "one_order_per_key": same,
            "proxy_faulted": proxy.faulted,
            "unclean": unclean,
            "ok": not unclean and set(statuses) <= {200, 201} and same,
        }

    def crash(self, server: AppProcess, api: str, n: int) -> dict[str, Any]:
        fresh = []
        for _ in range(n):
            res = self.donate()
            if res.status_code == 201:
                fresh.append(res.json()["out_trade_no"])
        self.orders.extend(fresh)
        outcomes: Counter[str] = Counter()

        def fire(otn: str) -> None:
            try:
                with httpx.Client(base_url=api, timeout=10) as client:
                    outcomes[
                        str(client.post(f"/sandbox/wechatpay/pay/{otn}", params={"times": 1}).status_code)
                    ] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(fire, otn) for otn in fresh]
            time.sleep(0.15)
            server.kill()
            for f in futures:
                f.result()
        server.start()
        wait_for(lambda: httpx.get(f"{api}/healthz", timeout=1).status_code == 200, 60, "server restart")
        redelivered = Counter(self.pay(otn, times=2).status_code for otn in self.orders)  # WeChat's retries
        return {
            "notifications_fired": len(fresh),
            "outcomes_at_kill": dict(outcomes),
            "redelivered": dict(redelivered),
            "ok": set(redelivered) == {200},
        }

    def final_checks(self, env: dict[str, str]) -> dict[str, Any]:
        check = subprocess.run(
            [sys.executable, "-m", "app.cli", "ledger-check"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        mismatched, paid = [], 0
        for otn in self.orders:
            sim = self.http.get(f"/sandbox/wechatpay/orders/{otn}").json()
            state = sim.get("trade_state") or sim.get("order", {}).get("trade_state")
            if state == "SUCCESS":
                paid += 1
        counts = _ledger_counts(self.orders)
        for otn, (status, entries) in counts.items():
            if status != "paid" or entries != 1:
                mismatched.append({"out_trade_no": otn, "status": status, "payment_entries": entries})
        return {
            "ledger_check_rc": check.returncode,
            "ledger_check": check.stdout.strip()[-300:],
            "orders": len(self.orders),
            "paid_in_simulator": paid,
            "not_exactly_once": mismatched[:10],
            "ok": check.returncode == 0 and not mismatched and paid == len(self.orders),
        }


def _ledger_counts(orders: list[str]) -> dict[str, tuple[str, int]]:
    import asyncio

    from sqlalchemy import text

    from app.db import get_database, unit_of_work

    async def go() -> dict[str, tuple[str, int]]:
        async with unit_of_work() as s:
            rows = (
                await s.execute(
                    text(
                        "SELECT d.out_trade_no, d.status, (SELECT count(*) FROM journal_entries e "
                        "WHERE e.business_key LIKE 'donation:%:' || d.transaction_id || :suffix) "
                        "FROM donations d WHERE d.out_trade_no = ANY(:o)"
                    ),
                    {"o": orders, "suffix": ":paid"},
                )
            ).all()
        await get_database().dispose_current()
        return {r[0]: (r[1], int(r[2])) for r in rows}

    return asyncio.run(go())


if __name__ == "__main__":
    raise SystemExit(main())
