"""Jinja2 for the console's own pages (large, plain, no external assets)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from app.config import PROJECT_ROOT

TEMPLATE_DIR = PROJECT_ROOT / "app" / "web" / "templates"
STATIC_DIR = PROJECT_ROOT / "app" / "web" / "static" / "console"
SQLADMIN_OVERRIDES = TEMPLATE_DIR / "console" / "admin"

templates = Jinja2Templates(directory=str(TEMPLATE_DIR))


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    from app.console.auth import principal_of
    from app.console.pages import visible_pages

    principal = principal_of(request)
    base: dict[str, Any] = {
        "principal": principal,
        "csrf_token": principal.csrf_token if principal else "",
        "nav_pages": visible_pages(principal) if principal else [],
    }
    base.update(context or {})
    return templates.TemplateResponse(request, f"console/{name}", base, status_code=status_code)


def render_message(status: int, message: str, title: str = "无法完成操作") -> HTMLResponse:
    """A self-contained error page (used before any request context exists, e.g. CSRF rejections)."""
    html = templates.get_template("console/message.html").render(
        title=title, message=message, status=status, principal=None, nav_pages=[], csrf_token=""
    )
    return HTMLResponse(html, status_code=status)
