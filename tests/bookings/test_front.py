"""Booking requests answered before FastAPI routes them (app/bookings/front.py): the same status and the same
bytes as the route, errors by the app's own handlers, and everything not plainly well-formed left to FastAPI
with its body intact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.auth import optional_subject
from app.bookings import service as booking_module
from app.bookings.endpoints import create_booking
from app.middleware import REQUESTS
from app.models import Booking, IdempotencyKey
from tests.bookings.helpers import MORNING, World, arrange, body, key, set_now
from tests.fixtures.client import count_route_calls, login

BOOK = "/api/v1/bookings"


@pytest.fixture
def routed(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time FastAPI's route for the booking endpoint handles a request (the front answered the others)."""
    return count_route_calls(app, create_booking, monkeypatch)


async def _family(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch, **world: Any
) -> tuple[World, dict[str, str]]:
    """A meal world at 10:00, and its elder's family member logged in."""
    set_now(monkeypatch, MORNING)
    w = await arrange(session, **world)
    return w, await login(client, w.family_openid)


async def _bookings(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Booking)) or 0)


async def test_a_booking_its_replay_and_a_refusal_are_the_routes_answers_byte_for_byte(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
    routed: list[str],
) -> None:
    w, headers = await _family(client, session, monkeypatch, capacity=1)
    mine = key()
    counted = REQUESTS.labels("POST", BOOK, "201")
    before = counted._value.get()

    first = await client.post(BOOK, json=body(w), headers=headers | mine)
    assert first.status_code == 201, first.text
    assert first.headers["content-type"] == "application/json" and first.headers["x-request-id"]
    assert routed == []
    assert counted._value.get() == before + 1  # labelled by the route, as before the front
    replay = await client.post(BOOK, json=body(w), headers=headers | mine)
    refused = await client.post(BOOK, json=body(w), headers=headers | key())
    assert routed == []
    assert replay.status_code == 200 and replay.content == first.content
    assert refused.status_code == 409 and refused.json()["error"] == "SlotFull"

    app.dependency_overrides[optional_subject] = optional_subject
    try:
        routed_replay = await client.post(BOOK, json=body(w), headers=headers | mine)
        routed_refusal = await client.post(BOOK, json=body(w), headers=headers | key())
    finally:
        app.dependency_overrides.pop(optional_subject, None)
    assert routed == ["POST", "POST"]
    assert routed_replay.status_code == 200 and routed_replay.content == replay.content
    assert routed_refusal.status_code == 409 and routed_refusal.content == refused.content
    assert await _bookings(session) == 1


async def test_the_routes_errors_come_from_the_apps_handlers_and_write_nothing(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch, routed: list[str]
) -> None:
    w, headers = await _family(client, session, monkeypatch)
    stranger = await login(client, w.other_operator_openid)

    bad_token = await client.post(BOOK, json=body(w), headers={"Authorization": "Bearer nope"} | key())
    assert bad_token.status_code == 401 and bad_token.json()["error"] == "InvalidToken"
    not_theirs = await client.post(BOOK, json=body(w), headers=stranger | key())
    assert not_theirs.status_code == 404 and not_theirs.json()["error"] == "ElderNotFound"
    no_key = await client.post(BOOK, json=body(w), headers=headers)
    assert no_key.status_code == 400 and no_key.json()["error"] == "IdempotencyKeyRequired"
    past = await client.post(BOOK, json=body(w) | {"date": "2020-01-01"}, headers=headers | key())
    assert past.status_code == 400 and past.json()["error"] == "DateInPast"
    assert "不能预订" in past.json()["message"]
    assert routed == []
    assert await _bookings(session) == 0
    assert await session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


async def test_an_unexpected_error_is_the_outermost_handlers_500(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
    routed: list[str],
) -> None:
    w, headers = await _family(client, session, monkeypatch)
    # the outermost layer answers 500, then raises the error again for the server to log: take the answer
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    answering = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(booking_module.booking_service, "book_as_caller", broken)
    async with answering:
        res = await answering.post(BOOK, json=body(w), headers=headers | key())
    assert res.status_code == 500 and res.json()["error"] == "InternalError", res.text
    assert "a bug" not in res.text
    assert routed == []


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("no token", 401, "NotAuthenticated"),
        ("not bearer", 401, "NotAuthenticated"),
        ("malformed JSON", 422, "ValidationError"),
        ("a field missing", 422, "ValidationError"),
        ("no items", 422, "ValidationError"),
        ("a key too long", 422, "ValidationError"),
        ("a form", 422, "ValidationError"),
    ],
)
async def test_what_is_not_plainly_well_formed_is_fastapis_to_answer_with_its_body_intact(
    client: httpx.AsyncClient,
    session: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
    routed: list[str],
    case: str,
    status: int,
    error: str,
) -> None:
    w, headers = await _family(client, session, monkeypatch)
    headers |= key()
    good = body(w)
    requests: dict[str, dict[str, Any]] = {
        "no token": {"json": good, "headers": key()},
        "not bearer": {
            "json": good,
            "headers": key() | {"Authorization": "Basic " + headers["Authorization"]},
        },
        "malformed JSON": {
            "content": b'{"elder_id": ',
            "headers": headers | {"Content-Type": "application/json"},
        },
        "a field missing": {"json": {k: v for k, v in good.items() if k != "slot"}, "headers": headers},
        "no items": {"json": good | {"items": []}, "headers": headers},
        "a key too long": {"json": good, "headers": headers | {"Idempotency-Key": "k" * 201}},
        "a form": {"data": {"elder_id": good["elder_id"]}, "headers": headers},
    }
    async with asyncio.timeout(10):  # a body not handed on would leave FastAPI waiting for it
        res = await client.post(BOOK, **requests[case])
    assert res.status_code == status and res.json()["error"] == error, res.text
    assert routed == ["POST"]
    if case == "malformed JSON":  # FastAPI read the very bytes sent: it points at where the JSON breaks
        assert "JSON" in res.text
    if case == "a field missing":
        assert "slot" in res.text
    assert await _bookings(session) == 0


async def test_an_override_of_the_bearer_scheme_is_fastapis_to_apply(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the bearer scheme overridden (here: no credentials, whatever is sent), the request is FastAPI's, and
    the override decides: not logged in."""
    from app.auth.auth import bearer_scheme

    w, headers = await _family(client, session, monkeypatch)
    app.dependency_overrides[bearer_scheme] = lambda: None
    try:
        res = await client.post(BOOK, json=body(w), headers=headers | key())
    finally:
        app.dependency_overrides.pop(bearer_scheme, None)
    assert res.status_code == 401 and res.json()["error"] == "NotAuthenticated", res.text
    assert await _bookings(session) == 0


async def test_a_booking_goes_through_the_apps_session_factory_override(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front opens its sessions from the app's override of the session factory, as the route's group commit
    does: the test client's, in which the caller's session is looked up and the booking written. It opens no
    session of the request's own."""
    from app.db import SessionFactory, get_db_session, get_session_factory

    w, headers = await _family(client, session, monkeypatch)
    factory_override = app.dependency_overrides[get_session_factory]
    session_override = app.dependency_overrides[get_db_session]
    opened: list[str] = []

    async def counted_factory() -> SessionFactory:
        open_session = await factory_override()

        def counted() -> Any:
            opened.append("factory")
            return open_session()

        return counted

    async def counted_session() -> AsyncIterator[AsyncSession]:
        opened.append("request")
        async for s in session_override():
            yield s

    app.dependency_overrides[get_session_factory] = counted_factory
    app.dependency_overrides[get_db_session] = counted_session
    try:
        res = await client.post(BOOK, json=body(w), headers=headers | key())
    finally:
        app.dependency_overrides[get_session_factory] = factory_override
        app.dependency_overrides[get_db_session] = session_override
    assert res.status_code == 201, res.text
    assert opened == ["factory", "factory"]  # the callers' look-up, then the bookings' transaction
    assert await _bookings(session) == 1


async def test_other_methods_and_paths_go_to_their_routes(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch, routed: list[str]
) -> None:
    w, headers = await _family(client, session, monkeypatch)
    listed = await client.get(BOOK, headers=headers)
    assert listed.status_code == 200 and listed.json()["items"] == []
    quote = await client.post(BOOK + "/quote", json=body(w), headers=headers)
    assert quote.status_code == 200 and quote.json()["self_pay_fen"] == 300
    assert "serve_code" not in quote.json()  # a quote, from the quote's route
    assert routed == []  # neither was the booking route's to answer, nor the front's


async def test_an_app_without_the_booking_route_is_let_through() -> None:
    from app.bookings.front import BookingFront

    bare = FastAPI()

    @bare.post(BOOK)
    async def something_else() -> dict[str, str]:
        return {"answered": "by the app's own route"}

    bare.add_middleware(BookingFront)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://t") as c:
        res = await c.post(BOOK, json={}, headers={"Authorization": "Bearer x"})
    assert res.status_code == 200 and res.json() == {"answered": "by the app's own route"}
