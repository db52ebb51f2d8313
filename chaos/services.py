"""Real processes for the chaos run: a scratch PostgreSQL cluster and a Redis server of our own on free
loopback ports (never the machine's shared ones), the Sangyu server and worker, and a fault-injecting proxy
in front of the WeChat Pay simulator."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class ScratchPostgres:
    def __init__(self, base: Path) -> None:
        self.dir = base / "pg"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/sangyu_chaos"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres(["pg_ctl", "-D", str(self.dir), "-l", str(self.dir.parent / "pg.log"), "-w", *args]),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(self.dir.parent, "postgres", "postgres")
        subprocess.run(
            _as_postgres(["initdb", "-D", str(self.dir), "-A", "trust", "-U", "postgres", "-E", "UTF8"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir.parent} -c fsync=off"
        self._ctl("-o", opts, "start")
        subprocess.run(
            [
                "psql",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-c",
                "CREATE DATABASE sangyu_chaos",
            ],
            check=True,
        )

    def restart(self) -> None:
        self._ctl("-m", "fast", "restart")

    def stop(self) -> None:
        with _quiet():
            self._ctl("-m", "immediate", "stop")


class ScratchRedis:
    def __init__(self, base: Path) -> None:
        self.dir = base
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(lambda: socket.create_connection(("127.0.0.1", self.port), 0.2).close() is None, 10, "redis")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class AppProcess:
    """``python -m app.cli serve`` (or ``worker``) with the chaos environment."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *self.args], env=self.env, cwd=ROOT, stdout=out, stderr=out
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class FaultProxy:
    """Forwards to the simulator; ``mode`` = "ok" | "slow" (answers after ``delay`` s) | "5xx" (503 at once)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.mode = "ok"
        self.delay = 3.0
        self.requests = 0
        self.faulted = 0

    def start(self) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def forward(request: Request) -> Response:
            self.requests += 1
            if self.mode == "5xx":
                self.faulted += 1
                return Response(
                    b'{"code":"SYSTEM_ERROR","message":"chaos"}', 503, media_type="application/json"
                )
            if self.mode == "slow":
                self.faulted += 1
                await asyncio.sleep(self.delay)
            async with httpx.AsyncClient(timeout=30) as client:
                upstream = await client.request(
                    request.method,
                    self.upstream + request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                    content=await request.body(),
                    headers=[(k, v) for k, v in request.headers.items() if k.lower() != "host"],
                )
            headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
            }
            return Response(upstream.content, upstream.status_code, headers=headers)

        app = Starlette(
            routes=[Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 10, "fault proxy")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def temp_base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="sangyu-chaos-"))
    base.chmod(0o777)
    return base
