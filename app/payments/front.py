"""WeChat Pay's payment notifications answered before FastAPI routes them.

A storm of notifications is all one route with no parameters to validate: ``POST`` of the notify endpoint's
exact path. This front calls that endpoint function itself, with the dependencies it declares resolved as
FastAPI would (the app's ``dependency_overrides`` included), so routing, dependency solving and the layers
around a route are skipped; in a notify storm they were about a sixth of the workers' CPU. Nothing else is:
the request keeps its id, its access-log line (labelled with the route, as before) and its metrics
(``RequestContextMiddleware``), and its body limit (``BodySizeLimitMiddleware``), which all sit outside this
one. An error is answered by the app's own exception handlers, as inside the route: a database that is away
is a 503, and an error no handler below ``Exception`` takes goes on to the outermost one. If the dependencies
cannot be resolved (the merchant configuration cannot be loaded), the request goes on to FastAPI untouched,
which answers it as it always has. The route itself stays, for the API's schema and for every other method.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.db import get_session_factory
from app.kit.front import error_response, resolve, route_of
from app.wechat.pay import wechatpay_dependency


class NotifyFront:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # the notify endpoint and its route, looked up at the first POST (the route None: the app has none)
        self._endpoint: Any = None
        self._route: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        fastapi_app = scope["app"]
        if self._endpoint is None:
            from app.payments.endpoints import wechat_notify  # (the endpoints import the app's pieces)

            self._route, self._endpoint = route_of(fastapi_app, wechat_notify), wechat_notify
        if self._route is None or scope["path"] != self._route.path:
            await self.app(scope, receive, send)
            return
        overrides = fastapi_app.dependency_overrides
        try:
            gateway = await resolve(overrides, wechatpay_dependency)
            open_session = await resolve(overrides, get_session_factory)
        except Exception:
            await self.app(scope, receive, send)  # the route answers it, as it always has
            return
        scope["route"] = self._route
        request = Request(scope, receive)
        try:
            response = await self._endpoint(request, gateway, open_session)
        except Exception as exc:
            response = await error_response(fastapi_app, request, exc)
        await response(scope, receive, send)
