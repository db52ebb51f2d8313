"""Payment notifications answered before FastAPI routes them (app/payments/front.py): the endpoint function
itself, with its dependencies as FastAPI would give them, and errors answered by the app's own handlers."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.db import Database, get_session_factory
from app.exceptions import ServiceUnavailable
from app.payments.endpoints import wechat_notify
from app.wechat.pay import wechatpay_dependency
from tests.donations.helpers import payment_notification
from tests.fixtures.client import count_route_calls
from tests.payments.test_notify_batch import _facts, _pending

NOTIFY = "/api/v1/payments/wechat/notify"


@pytest.fixture
def routed(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time FastAPI's route for the notify endpoint handles a request (the front answered the others)."""
    return count_route_calls(app, wechat_notify, monkeypatch)


async def _notify_with_session_factory(
    app: FastAPI, client: httpx.AsyncClient, donation: dict[str, Any], provider: Any
) -> httpx.Response:
    """A notification for ``donation`` with ``provider`` overriding the app's session factory meanwhile."""
    app.dependency_overrides[get_session_factory] = provider
    try:
        headers, body = payment_notification(donation["out_trade_no"], 1000)
        return await client.post(NOTIFY, content=body, headers=headers)
    finally:
        app.dependency_overrides.pop(get_session_factory, None)


async def test_a_notification_is_answered_without_the_route_and_applied(
    committed_client: httpx.AsyncClient, committed: Database, routed: list[str]
) -> None:
    from app.db import unit_of_work

    (donation,) = await _pending(committed_client, 1)
    headers, body = payment_notification(donation["out_trade_no"], 1000)
    res = await committed_client.post(NOTIFY, content=body, headers=headers)
    assert res.status_code == 204, res.text
    assert res.headers["x-request-id"]  # the request context still wraps it
    assert routed == []
    async with unit_of_work() as s:
        facts = await _facts(s, [donation["id"]])
    assert facts["status"] == {donation["id"]: "paid"} and facts["entries"] == 1
    # a refused one is answered by the endpoint's own rules, in WeChat Pay's shape, still without the route
    refused = await committed_client.post(NOTIFY, content=body)
    assert refused.status_code == 401 and refused.json()["code"] == "FAIL"
    assert routed == []


async def test_other_methods_and_paths_go_to_the_routes(
    committed_client: httpx.AsyncClient, committed: Database, routed: list[str]
) -> None:
    assert (await committed_client.get(NOTIFY)).status_code == 405
    assert (await committed_client.post(NOTIFY + "/")).status_code in (307, 404, 405)
    assert (await committed_client.get("/healthz")).status_code == 200
    assert routed == ["GET"]  # the route itself answers another method (405); the others are not its


async def test_the_apps_dependency_overrides_apply(
    app: FastAPI, committed_client: httpx.AsyncClient, committed: Database, routed: list[str]
) -> None:
    (donation,) = await _pending(committed_client, 1)
    opened: list[str] = []
    from app.db import unit_of_work

    @asynccontextmanager
    async def counted_unit_of_work() -> Any:
        opened.append("unit of work")
        async with unit_of_work() as s:
            yield s

    async def factory() -> Any:
        return counted_unit_of_work

    res = await _notify_with_session_factory(app, committed_client, donation, factory)
    assert res.status_code == 204, res.text
    assert opened and routed == []


async def test_a_gateway_that_cannot_be_built_goes_to_the_route(
    app: FastAPI, committed_client: httpx.AsyncClient, committed: Database, routed: list[str]
) -> None:
    async def broken() -> Any:
        raise ServiceUnavailable("微信支付暂时不可用", code="WeChatPayNotReady")

    app.dependency_overrides[wechatpay_dependency] = broken
    try:
        res = await committed_client.post(NOTIFY, content=b"{}", headers={"Content-Type": "application/json"})
    finally:
        app.dependency_overrides.pop(wechatpay_dependency, None)
    assert routed == ["POST"]  # answered by FastAPI, exactly as before the front
    assert res.status_code == 503 and res.json()["error"] == "WeChatPayNotReady"


async def test_a_database_that_is_away_is_a_503_from_the_apps_handler(
    app: FastAPI, committed_client: httpx.AsyncClient, committed: Database, routed: list[str]
) -> None:
    (donation,) = await _pending(committed_client, 1)

    @asynccontextmanager
    async def away() -> Any:
        raise ConnectionRefusedError("database away")
        yield  # pragma: no cover

    async def factory() -> Any:
        return away

    res = await _notify_with_session_factory(app, committed_client, donation, factory)
    assert res.status_code == 503 and res.json()["error"] == "ServiceUnavailable"
    assert res.headers["retry-after"] == "5"
    assert routed == []


async def test_a_plain_function_override_applies_and_a_yielding_one_goes_to_the_route(
    app: FastAPI, committed_client: httpx.AsyncClient, committed: Database, routed: list[str]
) -> None:
    from app.db import unit_of_work

    donations = await _pending(committed_client, 2)

    def plain() -> Any:  # FastAPI takes a plain function as an override too
        return unit_of_work

    async def yielding() -> Any:
        yield unit_of_work

    outcomes = [
        (await _notify_with_session_factory(app, committed_client, donation, override)).status_code
        for override, donation in ((plain, donations[0]), (yielding, donations[1]))
    ]
    assert outcomes == [204, 204]
    assert routed == ["POST"]  # only the yielding one was FastAPI's to run
    async with unit_of_work() as s:
        facts = await _facts(s, [d["id"] for d in donations])
    assert set(facts["status"].values()) == {"paid"}


async def test_an_app_without_the_notify_route_is_let_through() -> None:
    from app.payments.front import NotifyFront

    bare = FastAPI()

    @bare.post("/api/v1/payments/wechat/notify")
    async def something_else() -> dict[str, str]:
        return {"answered": "by the app's own route"}

    bare.add_middleware(NotifyFront)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://t") as c:
        res = await c.post(NOTIFY, content=b"{}")
    assert res.status_code == 200 and res.json() == {"answered": "by the app's own route"}


@pytest.mark.parametrize(("size", "shape"), [(100 * 1024, "wechat"), (2 * 1024 * 1024, "app")])
async def test_an_oversized_notification_is_refused_and_changes_nothing(
    committed_client: httpx.AsyncClient, committed: Database, routed: list[str], size: int, shape: str
) -> None:
    """Over the notify endpoint's own limit (64 KiB) it answers in WeChat Pay's shape; over the app's body limit
    (1 MiB), outside the front, the app's 413 answers first. Either way nothing is read into a payment."""
    from app.db import unit_of_work

    (donation,) = await _pending(committed_client, 1)
    headers, body = payment_notification(donation["out_trade_no"], 1000)
    padded = body[:-1] + b', "padding": "' + b"x" * size + b'"}'
    res = await committed_client.post(NOTIFY, content=padded, headers=headers)
    assert res.status_code == 413
    assert res.json()["code" if shape == "wechat" else "error"] == (
        "FAIL" if shape == "wechat" else "PayloadTooLarge"
    )
    assert routed == []
    async with unit_of_work() as s:
        facts = await _facts(s, [donation["id"]])
    assert (
        facts["status"] == {donation["id"]: "pending"} and facts["entries"] == 0 and facts["inbox"] == set()
    )
