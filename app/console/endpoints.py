"""The console's own routes (login, logout) and ``mount_console``, which puts everything under /admin."""

from __future__ import annotations

import secrets

from fastapi import FastAPI
from sqladmin import Admin
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from app.console.admin import VIEWS
from app.console.auth import (
    LOGIN_CSRF_COOKIE,
    ConsoleGuard,
    RequestSessionMaker,
    StaffAuthBackend,
    StaffAuthorization,
    clear_session_cookie,
    cookie_secure,
    force_commit,
    principal_of,
    session_of,
    set_session_cookie,
)
from app.console.pages import page_routes
from app.console.service import LoginFailed, console_service
from app.console.templating import SQLADMIN_OVERRIDES, STATIC_DIR, render
from app.exceptions import TooManyRequests

HOME = "/admin/"


def _safe_next(value: str | None) -> str:
    """Only same-site console paths: never an open redirect."""
    if value and value.startswith("/admin/") and not value.startswith("//") and "\\" not in value:
        return value
    return HOME


def _login_page(request: Request, *, error: str | None = None, status_code: int = 200) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        {
            "login_csrf": token,
            "error": error,
            "next": _safe_next(request.query_params.get("next")),
            "username": "",
        },
        status_code,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="lax", secure=cookie_secure(), path="/admin/login"
    )
    return response


async def login(request: Request) -> Response:
    if request.method == "GET":
        if principal_of(request) is not None:
            return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
        return _login_page(request)
    form = await request.form()
    username = str(form.get("username") or "")
    password = str(form.get("password") or "")
    client = request.client
    try:
        _, token = await console_service.login(
            session_of(request),
            username,
            password,
            ip=client.host if client else None,
            user_agent=request.headers.get("user-agent"),
        )
    except LoginFailed as exc:
        force_commit(request)  # the failed-attempt count must survive this 401
        return _login_page(request, error=exc.message, status_code=401)
    except TooManyRequests as exc:
        return _login_page(request, error=exc.message, status_code=429)
    response = RedirectResponse(_safe_next(str(form.get("next") or "")), status_code=303)
    set_session_cookie(response, token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin/login")
    return response


async def logout(request: Request) -> Response:
    principal = principal_of(request)
    if principal is None:
        response: Response = RedirectResponse("/admin/login", status_code=303)
        clear_session_cookie(response)
        return response
    if request.method == "GET":
        return render(request, "logout.html", {})
    await console_service.logout(session_of(request), principal)
    response = RedirectResponse("/admin/login", status_code=303)
    clear_session_cookie(response)
    return response


def console_routes() -> list[BaseRoute]:
    return [
        Route("/login", login, methods=["GET", "POST"], name="login"),
        Route("/logout", logout, methods=["GET", "POST"], name="logout"),
        Mount("/assets", app=StaticFiles(directory=str(STATIC_DIR)), name="console-assets"),
        *page_routes(),
    ]


def mount_console(app: FastAPI) -> Admin:
    """Mount the staff console at /admin: sqladmin plus the custom pages, all behind ``ConsoleGuard``."""
    admin = Admin(
        app,
        session_maker=RequestSessionMaker(),  # type: ignore[arg-type]
        base_url="/admin",
        title="桑榆 · 工作人员后台",
        templates_dir=str(SQLADMIN_OVERRIDES),
        authentication_backend=StaffAuthBackend(),
        authorization_backend=StaffAuthorization(),
        middlewares=[Middleware(ConsoleGuard, main_app=app)],
    )
    for view in VIEWS:
        admin.add_view(view)
    # Ours first: they replace sqladmin's own /login and /logout (same route names, so its links point here).
    admin.admin.router.routes[0:0] = console_routes()
    return admin
