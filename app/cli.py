"""``sangyu``: the one console script. ``sangyu --help`` lists the commands.

Domain packages add commands by defining ``register(subparsers)`` in ``app/<domain>/cli.py`` and being listed
in ``COMMAND_MODULES`` below."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

# Modules with a ``register(subparsers)`` function that adds more commands.
COMMAND_MODULES: list[str] = [
    "app.ledger.cli",
    "app.donations.cli",
    "app.console.cli",
    "app.reconciliation.cli",
]


def run_async(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    async def main() -> Any:
        from app.kit.background import drain_all

        try:
            return await fn(*args)
        finally:
            await drain_all()  # what the command committed is sealed and numbered before its loop ends

    return asyncio.run(main())


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.config import check_startable, get_settings
    from app.db import resolve_database_url
    from app.logging import configure_logging
    from app.serving import reuse_port_supported, serve_workers

    settings = get_settings()
    check_startable(settings)
    configure_logging(settings.LOG_LEVEL)
    resolve_database_url(settings)  # starts the embedded PostgreSQL when DATABASE_URL is unset
    workers = args.workers or settings.WEB_CONCURRENCY
    if workers > 1 and settings.inprocess_jobs:
        print("多进程运行需要 REDIS_URL（进程间共享任务队列和缓存）；未设置时只能单进程。", file=sys.stderr)
        return 2
    options: dict[str, Any] = {
        "app": "app.main:create_app",
        "factory": True,
        "host": args.host or settings.HOST,
        "port": args.port or settings.PORT,
        "log_config": None,
        "proxy_headers": True,
        "timeout_keep_alive": 5,
    }
    if workers > 1 and reuse_port_supported():
        # a socket per worker, so the kernel spreads connections evenly (see app/serving.py)
        return serve_workers(workers, log_level_name=settings.LOG_LEVEL, **options)
    uvicorn.run(workers=workers, **options)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from app.config import get_settings
    from app.db import resolve_database_url
    from app.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.LOG_LEVEL)
    if settings.inprocess_jobs:
        print("REDIS_URL 未设置：任务在 Web 进程内运行，无需单独启动 worker。", file=sys.stderr)
        return 2
    resolve_database_url(settings)
    from app.worker import run_worker

    run_worker(args.threads)
    return 0


def _alembic_config() -> Any:
    from alembic.config import Config

    from app.config import PROJECT_ROOT

    return Config(str(PROJECT_ROOT / "alembic.ini"))


def _cmd_migrate(args: argparse.Namespace) -> int:
    from alembic import command

    from app.db import resolve_database_url

    resolve_database_url()
    command.upgrade(_alembic_config(), args.revision)
    return 0


def _cmd_seed_demo(args: argparse.Namespace) -> int:
    from app.db import resolve_database_url
    from app.seed import seed_demo

    resolve_database_url()
    summary = run_async(seed_demo)
    for line in summary:
        print(line)
    return 0


def _cmd_create_admin(args: argparse.Namespace) -> int:
    from app.db import resolve_database_url
    from app.seed import create_admin

    resolve_database_url()
    created = run_async(create_admin, args.openid)
    print(f"已授予 {args.openid} 慈善总会管理员角色" if created else f"{args.openid} 已经是管理员")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sangyu",
        description="桑榆 Sangyu: community elderly meal assistance and 我为老人助一餐 donations.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the HTTP API (uvicorn); in-process jobs when REDIS_URL is unset")
    p.add_argument("--host", help="bind address (default: HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: PORT, 8000)")
    p.add_argument(
        "--workers",
        type=int,
        help="uvicorn worker processes (needs REDIS_URL when > 1); on Linux each accepts on its own "
        "SO_REUSEPORT socket, so connections are spread evenly, and a worker that dies is replaced",
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("worker", help="run Dramatiq job workers and the periodic scheduler (needs REDIS_URL)")
    p.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("migrate", help="apply database migrations (alembic upgrade)")
    p.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("seed-demo", help="load the Dezhou demo data (idempotent: safe to run again)")
    p.set_defaults(func=_cmd_seed_demo)

    p = sub.add_parser("create-admin", help="grant the federation_admin role to a WeChat openid")
    p.add_argument("--openid", required=True, help="the user's openid (sandbox: the part after sbx:)")
    p.set_defaults(func=_cmd_create_admin)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
