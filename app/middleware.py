"""Request id, access log line and Prometheus metrics, as one pure ASGI middleware (streams stay streams)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.kit.context import client_ip_var, request_id_var

log = structlog.get_logger("app.access")

REQUESTS = Counter("sangyu_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "sangyu_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_ACCESS_FIELDS = "sangyu.access_fields"


def on_access_line(scope: Scope, **fields: Any) -> None:
    """Add ``fields`` to this request's access-log line (what became of it, the object it was about), instead
    of a log line of its own. They belong to the request alone: kept in its ASGI scope, not in context
    variables that outlive it."""
    scope.setdefault("state", {}).setdefault(_ACCESS_FIELDS, {}).update(fields)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # one dict for every copy of the scope down the stack
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        client = scope.get("client")
        ip = client[0] if client else None
        rid_token = request_id_var.set(request_id)
        ip_token = client_ip_var.set(ip)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        start = time.perf_counter()
        status_holder: dict[str, Any] = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                hdrs = list(message.get("headers") or [])
                hdrs.append((b"x-request-id", request_id.encode()))
                message["headers"] = hdrs
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            status = status_holder["status"]
            REQUESTS.labels(method, route_path, str(status)).inc()
            LATENCY.labels(method, route_path).observe(elapsed)
            if route_path not in ("/healthz", "/metrics"):
                log.info(
                    "request",
                    method=method,
                    path=scope.get("path"),
                    route=route_path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    **scope["state"].get(_ACCESS_FIELDS, {}),
                )
            structlog.contextvars.unbind_contextvars("request_id")
            request_id_var.reset(rid_token)
            client_ip_var.reset(ip_token)
