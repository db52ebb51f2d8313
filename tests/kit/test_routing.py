"""``include_flat``: the routes are served and documented exactly as ``include_router`` would, without the
included-router node that every request would otherwise be matched through."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.api import ROUTERS
from app.kit.routing import include_flat


class Item(BaseModel):
    id: int
    name: str
    note: str | None = None


async def require_key(x_key: Annotated[str | None, Header()] = None) -> str:
    if x_key != "k":
        raise HTTPException(status_code=401, detail="no key")
    return x_key


async def secret() -> str:
    return "real"


def _router() -> APIRouter:
    router = APIRouter(tags=["items"], dependencies=[Depends(require_key)])

    @router.get("/items/{item_id}", summary="一个条目", response_model_exclude_none=True)
    async def get_item(item_id: int, value: Annotated[str, Depends(secret)]) -> Item:
        """An item."""
        return Item(id=item_id, name=value)

    @router.post("/items", status_code=201, responses={409: {"description": "exists"}})
    async def create_item(item: Item) -> Item:
        return item

    return router


def _apps() -> tuple[FastAPI, FastAPI]:
    nested, flat = FastAPI(), FastAPI()
    nested.include_router(_router(), prefix="/api/v1")
    include_flat(flat, _router(), prefix="/api/v1")
    return nested, flat


async def _call(app: FastAPI, method: str, url: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.request(method, url, **kwargs)  # type: ignore[arg-type]


def test_the_document_is_the_same_as_with_include_router() -> None:
    nested, flat = _apps()
    assert flat.openapi() == nested.openapi()
    assert all(isinstance(r, APIRoute) for r in flat.routes if getattr(r, "path", "").startswith("/api/v1"))


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "body"),
    [
        ("GET", "/api/v1/items/7", {"headers": {"x-key": "k"}}, 200, {"id": 7, "name": "real"}),
        ("GET", "/api/v1/items/7", {}, 401, {"detail": "no key"}),  # the router's own dependency still runs
        ("GET", "/api/v1/items/x", {"headers": {"x-key": "k"}}, 422, None),
        ("POST", "/api/v1/items", {"headers": {"x-key": "k"}, "json": {"id": 1, "name": "a"}}, 201, None),
        ("DELETE", "/api/v1/items/7", {"headers": {"x-key": "k"}}, 405, None),
        ("GET", "/items/7", {"headers": {"x-key": "k"}}, 404, None),  # only under the prefix
    ],
)
async def test_requests_are_answered_the_same(
    method: str, url: str, kwargs: dict[str, object], status: int, body: object
) -> None:
    nested, flat = _apps()
    a, b = await _call(nested, method, url, **kwargs), await _call(flat, method, url, **kwargs)
    assert (b.status_code, b.json()) == (a.status_code, a.json())
    assert b.status_code == status
    if body is not None:
        assert b.json() == body


async def test_the_apps_dependency_overrides_apply() -> None:
    _, flat = _apps()
    flat.dependency_overrides[secret] = lambda: "overridden"
    res = await _call(flat, "GET", "/api/v1/items/1", headers={"x-key": "k"})
    assert res.json() == {"id": 1, "name": "overridden"}


def test_a_router_with_anything_but_api_routes_is_refused() -> None:
    router = APIRouter()
    router.include_router(_router())
    with pytest.raises(TypeError, match="not an API route"):
        include_flat(FastAPI(), router)


def test_the_api_is_served_flat(app: FastAPI) -> None:
    api = [r.path for r in app.routes if isinstance(r, APIRoute) and r.path.startswith("/api/v1/")]
    assert len(api) == sum(len(router.routes) for router in ROUTERS)
    included = [getattr(r, "original_router", None) for r in app.routes]
    assert not [router for router in ROUTERS if router in included]
    assert api[0] == "/api/v1/payments/wechat/notify"  # the storms' routes are tested first
