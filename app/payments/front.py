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
from starlette.types import Receive, Scope, Send

from app.db import get_session_factory
from app.kit.front import RouteFront, error_response, resolve
from app.wechat.pay import wechatpay_dependency


class NotifyFront(RouteFront):
    def endpoint(self) -> Any:
        from app.payments.endpoints import wechat_notify

        return wechat_notify

    async def answer(self, fastapi_app: Any, scope: Scope, receive: Receive, send: Send) -> None:
        overrides = fastapi_app.dependency_overrides
        try:
            gateway = await resolve(overrides, wechatpay_dependency)
            open_session = await resolve(overrides, get_session_factory)
        except Exception:
            await self.app(scope, receive, send)  # the route answers it, as it always has
            return
        scope["route"] = self.route
        request = Request(scope, receive)
        try:
            response = await self.endpoint_function(request, gateway, open_session)
        except Exception as exc:
            response = await error_response(fastapi_app, request, exc)
        await response(scope, receive, send)
