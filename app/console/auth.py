"""Who is using the console, and the one gate everything under /admin passes through.

``ConsoleGuard`` wraps the whole /admin application (sqladmin and the custom pages):

* one database transaction per request, taken from the same ``get_db_session`` the API uses (so a test's
  dependency override applies here too); committed just before the response starts when the status is below
  400 (or the handler asked for it, e.g. to keep a failed-login count), rolled back otherwise;
* the staff session from the HttpOnly cookie, resolved once and kept on ``request.state``;
* CSRF: every unsafe request (POST, PUT, PATCH, DELETE) must carry the session's token in the ``csrf_token``
  form field or the ``X-CSRF-Token`` header (before login: the login form's double-submit cookie), compared in
  constant time; otherwise 403 and the handler never runs.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI
from sqladmin.authentication import AuthenticationBackend
from sqladmin.authorization import GrantsAuthorizationBackend
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import get_settings
from app.console.schemas import StaffPrincipal
from app.console.service import console_service, csrf_matches
from app.db import get_database, get_db_session
from app.kit.asgi import buffer_body

SESSION_COOKIE = "sangyu_console"
LOGIN_CSRF_COOKIE = "sangyu_console_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
CSRF_MESSAGE = "页面已过期或请求来源不明（缺少安全校验码），没有做任何修改。请刷新页面后重试。"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PASSTHROUGH_PREFIXES = ("/statics/", "/assets/")
_MAX_FORM_BYTES = 2 * 1024 * 1024

_request_session: contextvars.ContextVar[AsyncSession | None] = contextvars.ContextVar(
    "console_request_session", default=None
)


class _Rollback(Exception):
    pass


def cookie_secure() -> bool:
    return get_settings().PUBLIC_BASE_URL.lower().startswith("https://")


def principal_of(request: Request) -> StaffPrincipal | None:
    return getattr(request.state, "console_principal", None)


def session_of(request: Request) -> AsyncSession:
    session = _request_session.get()
    if session is None:
        raise RuntimeError("console request without a database session")
    return session


def force_commit(request: Request) -> None:
    """Keep this request's writes even though it answers with an error status (failed-login counters)."""
    request.state.console_force_commit = True


def set_session_cookie(response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="lax", secure=cookie_secure(), path="/admin"
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/admin", httponly=True, samesite="lax", secure=cookie_secure()
    )


class ConsoleGuard:
    def __init__(self, app: ASGIApp, main_app: FastAPI) -> None:
        self.app = app
        self.main_app = main_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        relative = path[len(root) :] if root and path.startswith(root) else path
        if relative.startswith(_PASSTHROUGH_PREFIXES):
            await self.app(scope, receive, send)
            return

        method = scope["method"].upper()
        if method not in _SAFE_METHODS:
            buffered = await buffer_body(receive, limit=_MAX_FORM_BYTES)
            if buffered is None:
                await _error(scope, 413, "PayloadTooLarge", "提交的内容太大了")(scope, receive, send)
                return
            body, receive = buffered
        else:
            body = b""

        async with self._transaction() as tx:
            session = tx.session
            token_ctx = _request_session.set(session)
            try:
                request = Request(scope, receive)
                principal = await console_service.resolve(session, request.cookies.get(SESSION_COOKIE))
                state = scope.setdefault("state", {})
                state["console_principal"] = principal
                if method not in _SAFE_METHODS:
                    expected = (
                        principal.csrf_token
                        if principal is not None
                        else (request.cookies.get(LOGIN_CSRF_COOKIE) if relative == "/login" else None)
                    )
                    given = _submitted_csrf(scope, body)
                    if not csrf_matches(expected, given):
                        tx.rollback_only = True
                        await _error(scope, 403, "CsrfFailed", CSRF_MESSAGE)(scope, receive, send)
                        return

                async def guarded_send(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        keep = message["status"] < 400 or state.get("console_force_commit", False)
                        await tx.finish(commit=keep)
                    await send(message)

                await self.app(scope, receive, guarded_send)
            finally:
                _request_session.reset(token_ctx)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Tx]:
        dependency = self.main_app.dependency_overrides.get(get_db_session, get_db_session)
        generator: AsyncGenerator[AsyncSession, None] = dependency()
        session = await generator.__anext__()
        tx = _Tx(session, generator)
        try:
            yield tx
        except BaseException as exc:
            await tx.abort(exc)
            raise
        else:
            await tx.finish(commit=not tx.rollback_only)


class _Tx:
    def __init__(self, session: AsyncSession, generator: AsyncGenerator[AsyncSession, None]) -> None:
        self.session = session
        self.generator = generator
        self.done = False
        self.rollback_only = False

    async def finish(self, *, commit: bool) -> None:
        if self.done:
            return
        self.done = True
        if commit:
            with suppress(StopAsyncIteration):
                await self.generator.__anext__()
        else:
            with suppress(_Rollback):
                await self.generator.athrow(_Rollback())

    async def abort(self, exc: BaseException) -> None:
        if self.done:
            return
        self.done = True
        try:
            await self.generator.athrow(exc)
        except BaseException as raised:
            if raised is not exc:
                raise


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _submitted_csrf(scope: Scope, body: bytes) -> str | None:
    header = _header(scope, CSRF_HEADER.encode())
    if header:
        return header
    raw_content_type = _header(scope, b"content-type") or ""
    content_type = raw_content_type.lower()
    if content_type.startswith("application/x-www-form-urlencoded"):
        values = parse_qs(body.decode("utf-8", "replace")).get(CSRF_FIELD)
        return values[0] if values else None
    if content_type.startswith("multipart/form-data"):
        # the boundary is case-sensitive (browsers use mixed case): parse it from the header as sent
        return _multipart_field(raw_content_type, body, CSRF_FIELD)
    return None


def _multipart_field(content_type: str, body: bytes, field: str) -> str | None:
    from python_multipart.multipart import parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        return None
    marker = b'name="' + field.encode() + b'"'
    for part in body.split(b"--" + boundary):
        head, _, value = part.partition(b"\r\n\r\n")
        if marker in head:
            return value.rstrip(b"\r\n").decode("utf-8", "replace")
    return None


def _wants_json(scope: Scope) -> bool:
    accept = (_header(scope, b"accept") or "").lower()
    return "application/json" in accept or bool(_header(scope, CSRF_HEADER.encode()))


def _error(scope: Scope, status: int, code: str, message: str) -> Callable[[Scope, Receive, Send], Any]:
    if _wants_json(scope):
        return JSONResponse({"error": code, "message": message, "detail": None}, status_code=status)
    from app.console.templating import render_message

    return render_message(status, message)


# ---------------------------------------------------------------------- sqladmin glue


class StaffAuthBackend(AuthenticationBackend):
    """sqladmin asks this on every route; the answer is the staff session the guard already resolved."""

    def __init__(self) -> None:
        self.middlewares = []  # no signed-cookie session: our own server-side sessions

    async def login(self, request: Request) -> Response | bool:  # replaced by the console's /login
        return False

    async def logout(self, request: Request) -> Response | bool:  # replaced by the console's /logout
        return False

    async def authenticate(self, request: Request) -> Response | bool:
        return principal_of(request) is not None

    async def get_user_id(self, request: Request) -> Any:
        principal = principal_of(request)
        return principal.label if principal else None


CIVIL_AFFAIRS_GRANTS = {
    ("canteen", "list"),
    ("canteen", "details"),
    ("district", "list"),
    ("district", "details"),
    ("fund", "list"),
    ("fund", "details"),
    ("subsidy-policy", "list"),
    ("subsidy-policy", "details"),
    ("subsidy-tier", "list"),
    ("subsidy-tier", "details"),
}


class StaffAuthorization(GrantsAuthorizationBackend):
    """Federation admins may do everything; civil-affairs staff may read canteens (their district only, see
    the views' queries), districts and funds."""

    async def get_grants(self, request: Request) -> set[tuple[str, str]]:
        principal = principal_of(request)
        if principal is None:
            return set()
        if principal.is_admin:
            return {("*", "*")}
        return set(CIVIL_AFFAIRS_GRANTS)


class RequestSessionMaker:
    """What sqladmin calls to get a session: the guard's request-scoped session (one transaction per request,
    commits become flushes). Outside a console request it falls back to a fresh session of its own."""

    class_ = AsyncSession

    def configure(self, **kwargs: Any) -> None:
        pass

    def __call__(self, **kwargs: Any) -> Any:
        session = _request_session.get()
        if session is None:
            return get_database().sessionmaker(**kwargs)
        return _Borrowed(session)


class _Borrowed:
    def __init__(self, session: AsyncSession) -> None:
        self.proxy = _NoCommitSession(session)

    async def __aenter__(self) -> Any:
        return self.proxy

    async def __aexit__(self, *exc: object) -> None:
        return None


class _NoCommitSession:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def commit(self) -> None:
        await self._session.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)
