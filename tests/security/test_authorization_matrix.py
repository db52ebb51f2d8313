"""The authorization matrix: every route of the app × {anonymous, elder, family of another elder, operator of
another canteen, civil_affairs of another district, admin}, each request aimed at the victim's resources, with
the exact status each caller must get. A positive control (the resource's owner) proves the request itself is
well-formed, so a 404 for an attacker means "not yours", not "bad request".

A route that is not in EXPECTED fails ``test_every_route_is_in_the_matrix``: add a row here when you add one.
Responses to attackers must not contain the victim's identifiers (elder, booking, donation, ID number)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncSession

from tests.security.expected import EXPECTED, MOUNTS, Row
from tests.security.requests import PATH_PARAMS, REQUESTS, Req, _next_week
from tests.security.world import ATTACKERS, ROLES, SecurityWorld, build_world

DISCOVER = os.environ.get("SECURITY_MATRIX_DISCOVER") == "1"


def app_routes(app: FastAPI) -> tuple[set[str], set[str]]:
    """``METHOD path`` for every HTTP route (in the schema or not), and the paths of mounted sub-apps."""
    routes: set[str] = set()
    mounts: set[str] = set()
    for ctx in iter_route_contexts(app.routes):
        methods = getattr(ctx, "methods", None)
        if methods:
            routes.update(f"{m} {ctx.path}" for m in methods if m != "HEAD")
        else:
            mounts.add(ctx.path)
    return routes, mounts


def test_every_route_is_in_the_matrix(app: FastAPI) -> None:
    routes, mounts = app_routes(app)
    missing = sorted(routes - EXPECTED.keys())
    assert not missing, f"routes without a row in tests/security/expected.py: {missing}"
    assert not (missing_req := sorted(routes - REQUESTS.keys())), f"no request in requests.py: {missing_req}"
    stale = sorted(EXPECTED.keys() - routes)
    assert not stale, f"rows for routes that no longer exist: {stale}"
    assert mounts == MOUNTS, f"mounted apps changed: {sorted(mounts ^ MOUNTS)}"
    schema_paths = {f"{m.upper()} {p}" for p, ops in app.openapi()["paths"].items() for m in ops}
    assert schema_paths <= routes


def _fill(template: str, ids: dict[str, str]) -> str:
    values = {param: ids[key] for param, key in PATH_PARAMS.items()}
    values.update(next_week=_next_week(ids), service_date=ids["day"], slot="lunch", fmt="png")
    return template.format(**values)


async def _call(
    client: httpx.AsyncClient, key: str, req: Req, ids: dict[str, str], headers: dict[str, str]
) -> Any:
    method, path = key.split(" ", 1)
    url = _fill(req.path or path, ids)
    hdrs = {**headers, **req.headers}
    if req.idempotent_key:
        from tests.fixtures.factories import unique

        hdrs["Idempotency-Key"] = unique("idem")
    kwargs: dict[str, Any] = {"headers": hdrs}
    if req.params:
        kwargs["params"] = req.params(ids)
    if req.json is not None:
        kwargs["json"] = req.json(ids)
    if req.content is not None:
        kwargs["content"] = req.content(ids)
    if req.stream:
        return await _stream_status(client, method, url, hdrs), ""
    res = await client.request(method, url, **kwargs)
    return res.status_code, res.text


async def _stream_status(client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str]) -> int:
    """The status line of an endless response (SSE): the ASGI transport would wait for its end."""
    app = client._transport.app  # type: ignore[attr-defined]
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    disconnect = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not getattr(receive, "sent", False):
            receive.sent = True  # type: ignore[attr-defined]
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and not started.done():
            started.set_result(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": url,
        "raw_path": url.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.9.9.9", 50000),
        "server": ("testserver", 80),
    }
    task = asyncio.create_task(app(scope, receive, send))
    try:
        return await asyncio.wait_for(started, timeout=10)
    finally:
        disconnect.set()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def _secrets(world: SecurityWorld) -> dict[str, str]:
    ids = world.ids
    return {
        "elder_id": ids["elder_id"],
        "booking_id": ids["booking_id"],
        "so_id": ids["so_id"],
        "donation_id": ids["donation_id"],
        "refund_id": ids["refund_id"],
        "id_number": ids["id_number"],
        "serve_code": world.booking["serve_code"],
    }


# Destructive calls go last, in this order, so that the shared world is intact for everything before them.
LAST = (
    "POST /api/v1/admin/refund-requests/{refund_id}/reject",
    "POST /api/v1/admin/refund-requests/{refund_id}/approve",
    "PATCH /api/v1/standing-orders/{so_id}",
    "POST /api/v1/bookings/{booking_id}/cancel",
    "POST /api/v1/admin/roles/{grant_id}/revoke",
    "POST /api/v1/admin/elders/{elder_id}/verify",
    "PATCH /api/v1/admin/canteens/{canteen_id}",
    "POST /api/v1/auth/logout",
)


def _order(keys: list[str]) -> list[str]:
    first = sorted((k for k in keys if k not in LAST), key=lambda k: (not k.startswith("GET "), k))
    return first + [k for k in LAST if k in keys]


def _contains_token(text: str, value: str) -> bool:
    """``value`` standing on its own in ``text``: a 6-digit serve code inside a longer number (a metric, a
    timestamp) is a coincidence, not a leak."""
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])", text) is not None


async def test_authorization_matrix(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await build_world(session, client, monkeypatch)
    ids = {**world.ids, "serve_code": world.booking["serve_code"]}
    secrets = _secrets(world)
    problems: list[str] = []
    for key in _order(list(EXPECTED)):
        row: Row = EXPECTED[key]
        req = REQUESTS[key]
        order = [*ATTACKERS, "admin"] if row.owner is None else [*ATTACKERS, row.owner[0], "admin"]
        got: dict[str, int] = {}
        leaks: dict[str, list[str]] = {}
        started = time.perf_counter()
        for role in order:
            status, text = await _call(client, key, req, ids, world.headers[role])
            got[role] = status
            if role in ATTACKERS and role not in row.may_see:
                found = [name for name, value in secrets.items() if _contains_token(text, value)]
                if found:
                    leaks[role] = found
        if DISCOVER:
            print(
                "DISCOVER",
                json.dumps(
                    {"key": key, "got": got, "leaks": leaks, "s": round(time.perf_counter() - started, 2)},
                    ensure_ascii=False,
                ),
            )
            continue
        want = {role: row.expect[role] for role in ROLES}
        if row.owner is not None:
            want[row.owner[0]] = row.owner[1]
        if got != want:
            problems.append(f"{key}: got {got}, want {want}")
        if leaks:
            problems.append(f"{key}: victim identifiers in responses to {leaks}")
    assert not problems, "\n".join(problems)


async def test_roster_import_across_districts_changes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """冒领 through the roster: a civil-affairs officer of another district lists the victim's ID number with a
    richer category. The row is refused and the elder's categories stay as they were."""
    from app.models import Elder

    world = await build_world(session, client, monkeypatch)
    elder = await session.get(Elder, uuid.UUID(world.ids["elder_id"]))
    assert elder is not None
    before = (list(elder.categories), elder.eligibility_valid_until)
    csv = f"id_number,categories,valid_until\n{world.ids['id_number']},特困;失能,2030-12-31\n".encode()
    res = await client.post(
        "/api/v1/admin/elders/roster",
        content=csv,
        headers={**world.headers["civil_affairs"], "Content-Type": "text/csv"},
    )
    assert res.status_code == 200, res.text
    report = res.json()
    assert report["applied"] == 0 and report["rows"][0]["status"] == "error"
    assert world.ids["id_number"] not in res.text
    await session.refresh(elder)
    assert (list(elder.categories), elder.eligibility_valid_until) == before
    # the district's own officer can
    res = await client.post(
        "/api/v1/admin/elders/roster",
        content=csv,
        headers={**world.headers["victim_civil_affairs"], "Content-Type": "text/csv"},
    )
    assert res.json()["applied"] == 1
    await session.refresh(elder)
    assert sorted(elder.categories) == ["失能", "特困"]
