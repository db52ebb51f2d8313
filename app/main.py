from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from app.bookings.front import BookingFront
from app.config import Environment, Settings, check_startable, get_settings
from app.db import get_database
from app.errors import install_error_handlers
from app.feed.front import FeedFront
from app.health import SANDBOX_WARNING
from app.kit.body_limit import BodySizeLimitMiddleware
from app.kit.collector import settle_for_jobs, settle_long_lived_objects
from app.kit.openapi_errors import document_errors
from app.logging import configure_logging
from app.middleware import RequestContextMiddleware
from app.payments.front import NotifyFront

log = structlog.get_logger("app.main")
DRAIN_SECONDS = 5.0


def _build_wechatpay() -> None:
    """The WeChat Pay gateway is built (its RSA keys parsed: about 0.1 s of CPU) before the first payment
    notification, not by it while others queue behind. A merchant configuration that cannot be loaded is
    reported here and again, as an error, by the first request that needs it."""
    from app.wechat.pay import get_wechatpay

    try:
        get_wechatpay()
    except Exception as exc:
        log.warning("wechatpay_not_ready", error=type(exc).__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_startable(settings)
    configure_logging(settings.LOG_LEVEL)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from app.kit.background import drain_all
        from app.redis import close_redis
        from app.wechat.pay import close_wechatpay
        from app.worker import InProcessWorker

        database = get_database()
        worker = None
        if settings.inprocess_jobs and Environment.testing != settings.APP_ENV:
            worker = InProcessWorker()
            worker.start()
        if settings.is_sandbox:
            log.warning("sandbox_mode", message=SANDBOX_WARNING, wechat_api_base=settings.wechat_api_base)
        log.info("started", env=settings.APP_ENV.value, inprocess_jobs=worker is not None)
        _build_wechatpay()
        if worker is not None:  # this process also runs the jobs (``make run``): settled as a job worker is
            settle_for_jobs()
        else:
            settle_long_lived_objects()
        try:
            yield
        finally:
            # what this process's commits left to do after them (sealing, receipt numbers) is done before it
            # goes, not left to the minutely job; unless another process keeps the lock that long
            try:
                await asyncio.wait_for(drain_all(), DRAIN_SECONDS)
            except TimeoutError:
                log.warning("post_commit_work_left", seconds=DRAIN_SECONDS)
            if worker is not None:
                worker.stop()
            await close_wechatpay()
            await close_redis()
            await database.dispose_current()

    app = FastAPI(
        title="桑榆 Sangyu API",
        version="1.0.0",
        description="社区长者助餐与“我为老人助一餐”微捐赠的小程序后端。错误统一返回 "
        '`{"error": 代码, "message": 中文说明, "detail": 详情}`。',
        lifespan=lifespan,
        debug=settings.DEBUG,
        # metrics are Prometheus (/metrics) and logs are structlog; FastAPI's OpenTelemetry hooks would only
        # look for providers on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    document_errors(app)
    # innermost: inside the request id, access log, metrics and body limit
    app.add_middleware(BookingFront)
    app.add_middleware(NotifyFront)
    app.add_middleware(FeedFront)
    app.add_middleware(
        BodySizeLimitMiddleware,
        default_limit=settings.MAX_BODY_BYTES,
        upload_limit=settings.MAX_UPLOAD_BYTES,
        upload_prefixes=("/api/v1/admin/", "/admin/"),
    )
    app.add_middleware(RequestContextMiddleware)

    from app.api import include_api
    from app.health import router as health_router

    app.include_router(health_router)
    include_api(app)

    from app.donations.endpoints import pages as donation_pages

    app.include_router(donation_pages)

    from starlette.staticfiles import StaticFiles

    from app.feed.endpoints import pages as feed_pages

    app.include_router(feed_pages)
    app.mount(
        "/static/public",
        StaticFiles(directory=str(Path(__file__).resolve().parent / "web" / "static" / "public")),
        name="public-static",
    )
    if settings.is_sandbox:
        from app.sandbox.router import router as sandbox_router

        app.include_router(sandbox_router)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    from app.console.endpoints import mount_console

    mount_console(app)
    return app
