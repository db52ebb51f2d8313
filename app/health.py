from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.config import get_settings
from app.db import get_database
from app.redis import get_redis

router = APIRouter(tags=["health"])

SANDBOX_WARNING = "沙箱模式：微信接口由内置模拟器提供，不会有任何真实资金流动"


@router.get("/healthz", summary="存活检查")
async def healthz() -> dict[str, Any]:
    settings = get_settings()
    body: dict[str, Any] = {
        "status": "ok",
        "env": settings.APP_ENV.value,
        "wechat_mode": settings.WECHAT_MODE.value if settings.WECHAT_MODE else None,
    }
    if settings.is_sandbox:
        body["warning"] = SANDBOX_WARNING
    return body


async def _check_db() -> str | None:
    try:
        async with get_database().engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=3)
        return None
    except Exception as exc:
        return type(exc).__name__


async def _check_redis() -> str | None:
    try:
        pong: Any = get_redis().ping()
        await asyncio.wait_for(pong, timeout=3)
        return None
    except Exception as exc:
        return type(exc).__name__


@router.get("/readyz", summary="就绪检查（数据库与 Redis）")
async def readyz() -> JSONResponse:
    db_error, redis_error = await asyncio.gather(_check_db(), _check_redis())
    checks = {"database": db_error or "ok", "redis": redis_error or "ok"}
    ready = db_error is None and redis_error is None
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )


@router.get("/metrics", summary="Prometheus 指标", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
