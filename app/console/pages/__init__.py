"""Custom console pages. One module per page; each declares a ``ConsolePage`` and is listed in ``PAGE_MODULES``.

A page is a set of Starlette handlers mounted at ``/admin/pages/<slug><path>``. Registration adds the login
check (redirect to the login page), the role check (403) and a menu entry; the console's guard already gives
every handler its transaction (``session_of(request)``), the signed-in staff member (``principal_of``) and CSRF
protection on POST. Later pages (reconciliation runs, discrepancies, settlements, fund statements, elder
verification) are new modules here plus one line in ``PAGE_MODULES``."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import wraps

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from app.console.schemas import StaffPrincipal
from app.models.staff_account import StaffRole

Handler = Callable[[Request], Awaitable[Response]]

PAGE_MODULES: list[str] = [
    "app.console.pages.audit_log",
    "app.console.pages.reconciliation",
    "app.console.pages.settlements",
    "app.console.pages.fund_statements",
    "app.console.pages.elder_verification",
    "app.console.pages.refunds",
]


@dataclass(frozen=True)
class PageRoute:
    path: str  # relative to the page, "" for the page itself
    handler: Handler
    methods: tuple[str, ...] = ("GET",)


@dataclass(frozen=True)
class ConsolePage:
    slug: str
    title: str
    routes: Sequence[PageRoute]
    roles: frozenset[StaffRole] = field(default_factory=lambda: frozenset(StaffRole))
    in_menu: bool = True
    order: int = 100

    @property
    def url(self) -> str:
        return f"/admin/pages/{self.slug}"

    def allows(self, principal: StaffPrincipal) -> bool:
        return principal.role in self.roles


def uuid_or_none(value: str) -> uuid.UUID | None:
    """A path parameter as an id, or None (the page answers 404) when it is not one."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


_registry: dict[str, ConsolePage] = {}


def register(page: ConsolePage) -> ConsolePage:
    if page.slug in _registry and _registry[page.slug] is not page:
        raise ValueError(f"console page {page.slug!r} registered twice")
    _registry[page.slug] = page
    return page


def load_pages() -> list[ConsolePage]:
    for name in PAGE_MODULES:
        importlib.import_module(name)
    return sorted(_registry.values(), key=lambda p: (p.order, p.slug))


def visible_pages(principal: StaffPrincipal) -> list[ConsolePage]:
    return [
        p
        for p in sorted(_registry.values(), key=lambda p: (p.order, p.slug))
        if p.in_menu and p.allows(principal)
    ]


def page_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for page in load_pages():
        for r in page.routes:
            routes.append(
                Route(
                    f"/pages/{page.slug}{r.path}",
                    _guarded(page, r.handler),
                    methods=list(r.methods),
                    name=f"page-{page.slug}{r.path.replace('/', '-')}",
                )
            )
    return routes


def _guarded(page: ConsolePage, handler: Handler) -> Handler:
    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        from app.console.auth import principal_of
        from app.console.templating import render

        principal = principal_of(request)
        if principal is None:
            return RedirectResponse(f"/admin/login?next={request.url.path}", status_code=303)
        if not page.allows(principal):
            return render(
                request, "message.html", {"title": "没有权限", "message": "您的账号不能查看这个页面。"}, 403
            )
        return await handler(request)

    return endpoint
