"""What the fronts share: ASGI layers that answer one hot route themselves, before FastAPI routes the request,
and give it every other request untouched (``app.payments.front``, ``app.bookings.front``).

A front calls what the route would call, with the dependencies FastAPI would give (the app's
``dependency_overrides`` included), and answers an error with the app's own exception handlers, as inside the
route. It sits inside the request context (request id, access-log line, metrics) and the body limit, and sets
the request's ``route`` so that the access log and the metrics label it by the route's path."""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send


@functools.lru_cache(maxsize=256)
def _yields(provider: Any) -> bool:
    return inspect.isgeneratorfunction(provider) or inspect.isasyncgenfunction(provider)


async def resolve(overrides: dict[Any, Any], dependency: Any) -> Any:
    """What FastAPI would give for ``dependency``: its override's value if the app has one, else its own. A
    generator dependency (one that yields) is FastAPI's to run: ``LookupError`` sends the request to the route."""
    provider = overrides.get(dependency, dependency)
    if _yields(provider):
        raise LookupError(provider)
    value = provider()
    return await value if inspect.isawaitable(value) else value


def route_of(app: Any, endpoint: Any) -> Any:
    """The app's route for ``endpoint``, or None (an app without it: the front then lets everything through)."""
    return next((r for r in app.router.routes if getattr(r, "endpoint", None) is endpoint), None)


def _handler_for(app: Any, exc: Exception) -> Any:
    """The app's handler for ``exc`` among those answered inside the app (Starlette's lookup, by the exception's
    classes in order; ``Exception`` itself is the outermost middleware's)."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


async def error_response(app: Any, request: Request, exc: Exception) -> Response:
    """The response the route would have given for ``exc``; an error no handler below ``Exception`` takes is
    raised again, for the outermost one (a 500), as from inside the route."""
    handler = _handler_for(app, exc)
    if handler is None:
        raise exc
    response: Response = await handler(request, exc)
    return response


class RouteFront(ABC):
    """Passes every request on, except ``POST`` of the exact path of the route whose endpoint ``endpoint()``
    names, which ``answer`` takes. An app without that route is let through altogether. A front gives both."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # the route's endpoint function and the route, looked up at the first POST (the route None: none)
        self.endpoint_function: Any = None
        self.route: Any = None

    @abstractmethod
    def endpoint(self) -> Any:
        """The route's endpoint function (imported when first asked: the endpoints import the app's pieces)."""

    @abstractmethod
    async def answer(self, fastapi_app: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a ``POST`` of the route's path (``self.route``, ``self.endpoint_function``), or hand it on to
        ``self.app`` untouched."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        fastapi_app = scope["app"]
        if self.endpoint_function is None:
            self.endpoint_function = self.endpoint()
            self.route = route_of(fastapi_app, self.endpoint_function)
        if self.route is None or scope["path"] != self.route.path:
            await self.app(scope, receive, send)
            return
        await self.answer(fastapi_app, scope, receive, send)
