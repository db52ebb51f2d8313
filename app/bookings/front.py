"""Booking requests answered before FastAPI routes them.

At 10:00 on a weekday a city's elders book lunch at once, and most of them meet a slot that has just filled.
FastAPI's routing through the API's routes, its dependency solving and the layers it wraps around a route cost
about a third of the workers' CPU for such a refusal, and about one millisecond of a booking (measured with
``python -m bench.cost``, docs/performance-rounds.md). This front takes ``POST`` of the booking route's exact
path when the request is plainly well-formed: a JSON body that is a valid ``BookingRequest``, a bearer token,
and an ``Idempotency-Key`` within the route's length, or none. It then does what the route does, with the
session factory the route's group commit uses (``get_session_factory``, or the app's override of it), but
without a session of the request's own: the caller's session is looked up, with the slot's room, in one
statement for the process's booking requests waiting at that moment (``BookingService.book_as_caller``), and
the booking made in their shared transaction. It answers with the status and JSON bytes the route would send;
an error is answered by the app's own exception handlers (``app.kit.front``).

Everything else goes to FastAPI untouched, the body it has read handed on unchanged, so its answers (422 for a
malformed body or header, 401 without a token) stay FastAPI's own; so does every request while the app
overrides the authentication dependencies (the bearer scheme, the subject). The request keeps its id, its
access-log line and its metrics (``RequestContextMiddleware`` sits outside this one) and its body limit. The
route itself stays, for the API's schema and for every other method.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from fastapi import status
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.auth.auth import bearer_scheme, current_subject, optional_subject
from app.bookings.schemas import BookingRequest
from app.bookings.service import booking_service
from app.db import get_session_factory
from app.kit.asgi import buffer_body
from app.kit.front import RouteFront, error_response

# the route's ``Idempotency-Key`` header allows this many characters (a longer one is FastAPI's 422)
KEY_MAX_LENGTH = 200


def _is_json(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"


def _booking_request(body: bytes) -> BookingRequest | None:
    """The body as the route would read it (JSON, then the model), or None when the route would refuse it."""
    try:
        return BookingRequest.model_validate(json.loads(body))
    except Exception:  # any refusal is the route's to word
        return None


class BookingFront(RouteFront):
    def endpoint(self) -> Any:
        from app.bookings.endpoints import create_booking

        return create_booking

    async def answer(self, fastapi_app: Any, scope: Scope, receive: Receive, send: Send) -> None:
        overrides = fastapi_app.dependency_overrides
        session_factory = overrides.get(get_session_factory, get_session_factory)
        headers = Headers(scope=scope)
        scheme, token = get_authorization_scheme_param(headers.get("authorization"))
        key = headers.get("idempotency-key")
        if (
            scheme.lower() != "bearer"
            or not token
            or (key is not None and len(key) > KEY_MAX_LENGTH)
            or not _is_json(headers.get("content-type"))
            or any(
                dependency in overrides for dependency in (bearer_scheme, optional_subject, current_subject)
            )
            or not inspect.iscoroutinefunction(session_factory)
        ):
            await self.app(scope, receive, send)
            return
        body, receive = await buffer_body(receive)  # no limit of its own: the body limit sits outside
        payload = _booking_request(body)
        if payload is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        request = Request(scope, receive)
        try:
            factory = await session_factory()
            subject, (booking, created) = await booking_service.book_as_caller(factory, token, payload, key)
            request.state.subject = subject
            response = Response(
                booking.model_dump_json(by_alias=True).encode(),
                status_code=self.route.status_code if created else status.HTTP_200_OK,
                media_type="application/json",
            )
        except Exception as exc:
            response = await error_response(fastapi_app, request, exc)
        await response(scope, receive, send)
